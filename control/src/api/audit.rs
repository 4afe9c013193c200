//! `GET /v1/audit`: the audit log, newest first, filtered.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Query, State};
use windflow_protocol::{AuditEntry, AuditOutcome, HumanDuration, Timestamp};

use super::{ApiError, AppState};

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 10_000;

/// `?since=1h&user=U&action=A&outcome=denied&limit=N`: entries newer than `since`, of
/// that user, action (exact, or a prefix ending in `.`, like `jobs.`) and outcome.
pub async fn list(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Vec<AuditEntry>>, ApiError> {
    let mut known = ["since", "user", "action", "outcome", "limit", "consistent"].into_iter();
    if let Some(bad) = query.keys().find(|k| !known.any(|q| q == k.as_str())) {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("unknown query parameter `{bad}` (since, user, action, outcome, limit)"),
        ));
    }
    let since = match query.get("since") {
        None => None,
        Some(text) => {
            let d = text
                .parse::<HumanDuration>()
                .map_err(|e| ApiError::bad_request("invalid_query", format!("`since`: {e}")))?;
            Some(Timestamp(
                Timestamp::now()
                    .0
                    .saturating_sub(d.as_std().as_millis() as u64),
            ))
        }
    };
    let outcome = match query.get("outcome") {
        None => None,
        Some(text) => Some(
            text.parse::<AuditOutcome>()
                .map_err(|e| ApiError::bad_request("invalid_query", format!("`outcome`: {e}")))?,
        ),
    };
    let limit = match query.get("limit") {
        None => DEFAULT_LIMIT,
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_query",
                    format!("`limit` must be a number from 1 to {MAX_LIMIT}, not `{text}`"),
                )
            })?,
    };
    super::read_barrier(&state, &query).await?;
    let user = query.get("user");
    let action = query.get("action");
    let entries = state.raft.reader().audit(limit, |e| {
        since.is_none_or(|s| e.at >= s)
            && user.is_none_or(|u| e.user.as_ref() == Some(u))
            && action.is_none_or(|a| {
                e.action == *a || (a.ends_with('.') && e.action.starts_with(a.as_str()))
            })
            && outcome.is_none_or(|o| e.outcome == o)
    })?;
    Ok(Json(entries))
}
