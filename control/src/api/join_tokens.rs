//! `/v1/cluster/tokens` (server join tokens) and `/v1/agent/tokens` (agent join tokens,
//! which may carry labels for the nodes they enroll). The secret is shown once, in the
//! answer to the call that created it; the servers keep only its SHA-256.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Serialize;
use windflow_protocol::enroll::{JoinKind, JoinToken};
use windflow_protocol::{HumanDuration, JoinTokenId, Timestamp};
use windflow_raft::{Applied, Command, JoinTokenRecord};

use super::body::Fields;
use super::{ApiError, AppState};
use crate::auth;

/// How long a server join token lives unless `ttl` says otherwise, in seconds.
const DEFAULT_TTL_SECS: u64 = 3600;
/// The longest a join token may live: a token is a key to the CA.
const MAX_TTL_SECS: u64 = 30 * 24 * 3600;

/// A new join token, with its secret: shown this once.
#[derive(Debug, Serialize)]
pub struct CreatedJoinToken {
    #[serde(flatten)]
    pub record: JoinTokenRecord,
    pub token: String,
}

/// `POST /v1/cluster/tokens` with `{"ttl": "1h", "uses": 1}` (both optional; `uses: 0`
/// allows any number): a token a new server uses to get its certificate and the CA.
pub async fn create(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<(StatusCode, Json<CreatedJoinToken>), ApiError> {
    create_kind(state, JoinKind::Server, body).await
}

/// `POST /v1/agent/tokens` with `{"ttl", "uses", "labels": {"k": "v"}}` (all optional):
/// a token agents use to enroll; the nodes it enrolls get its labels.
pub async fn create_agent(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<(StatusCode, Json<CreatedJoinToken>), ApiError> {
    create_kind(state, JoinKind::Agent, body).await
}

/// The most labels a token may carry, and the longest key or value.
const MAX_LABELS: usize = 64;
const MAX_LABEL_LEN: usize = 253;

fn validate_labels(labels: &BTreeMap<String, String>) -> Result<(), ApiError> {
    if labels.len() > MAX_LABELS {
        return Err(ApiError::invalid_field(
            "labels",
            format!("at most {MAX_LABELS} labels"),
        ));
    }
    for (k, v) in labels {
        let key_ok = !k.is_empty()
            && k.len() <= MAX_LABEL_LEN
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b));
        if !key_ok {
            return Err(ApiError::invalid_field(
                &format!("labels.{k}"),
                "a label key is 1 to 253 letters, digits, `-`, `_`, `.` or `/`",
            ));
        }
        if v.len() > MAX_LABEL_LEN || v.chars().any(char::is_control) {
            return Err(ApiError::invalid_field(
                &format!("labels.{k}"),
                "a label value is at most 253 characters, none of them control characters",
            ));
        }
    }
    Ok(())
}

async fn create_kind(
    state: AppState,
    kind: JoinKind,
    body: Bytes,
) -> Result<(StatusCode, Json<CreatedJoinToken>), ApiError> {
    let mut f = Fields::parse_or_empty(&body)?;
    let ttl = match f.optional_str("ttl")? {
        None => HumanDuration::from_secs(DEFAULT_TTL_SECS),
        Some(text) => text
            .parse::<HumanDuration>()
            .map_err(|e| ApiError::invalid_field("ttl", e))?,
    };
    if ttl.as_std().is_zero() || ttl.as_std().as_secs() > MAX_TTL_SECS {
        return Err(ApiError::invalid_field(
            "ttl",
            "must be more than 0 and at most 30 days",
        ));
    }
    let uses = match f.optional_u32("uses")? {
        None => Some(1),
        Some(0) => None,
        Some(n) => Some(n),
    };
    let labels = match kind {
        JoinKind::Agent => f.optional_string_map("labels")?,
        JoinKind::Server => BTreeMap::new(),
    };
    validate_labels(&labels)?;
    f.finish()?;
    let secret = auth::random_hex(32)
        .map_err(|_| ApiError::internal("no system randomness for a join token"))?;
    let now = Timestamp::now();
    let expires_at = Timestamp(now.0.saturating_add(ttl.as_std().as_millis() as u64));
    let applied = state
        .raft
        .write(Command::CreateJoinToken {
            kind,
            hash: auth::token_hash(&secret),
            expires_at: Some(expires_at),
            uses,
            labels,
            at: now,
        })
        .await?;
    let Applied::JoinToken(record) = applied else {
        return Err(ApiError::internal(format!(
            "creating a join token was answered with {applied:?}"
        )));
    };
    let token = JoinToken {
        ca_fingerprint: state.ca_fingerprint.to_string(),
        secret,
    };
    tracing::info!(id = %record.id, %kind, "join token created");
    Ok((
        StatusCode::CREATED,
        Json(CreatedJoinToken {
            record,
            token: token.to_string(),
        }),
    ))
}

/// `GET /v1/cluster/tokens`: every join token, without secrets.
pub async fn list(State(state): State<AppState>) -> Result<Json<Vec<JoinTokenRecord>>, ApiError> {
    Ok(Json(state.raft.reader().join_tokens()?))
}

/// `GET /v1/agent/tokens`: the agent join tokens, without secrets.
pub async fn list_agent(
    State(state): State<AppState>,
) -> Result<Json<Vec<JoinTokenRecord>>, ApiError> {
    let mut tokens = state.raft.reader().join_tokens()?;
    tokens.retain(|t| t.kind == JoinKind::Agent);
    Ok(Json(tokens))
}

/// `DELETE /v1/cluster/tokens/{id}`: the token enrolls nobody from now on.
pub async fn revoke(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<JoinTokenRecord>, ApiError> {
    revoke_kind(state, None, id).await
}

/// `DELETE /v1/agent/tokens/{id}`: like [`revoke`], for agent tokens only (another kind's
/// ID is not found here).
pub async fn revoke_agent(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<JoinTokenRecord>, ApiError> {
    revoke_kind(state, Some(JoinKind::Agent), id).await
}

async fn revoke_kind(
    state: AppState,
    only: Option<JoinKind>,
    id: String,
) -> Result<Json<JoinTokenRecord>, ApiError> {
    let parsed: JoinTokenId = id
        .parse()
        .map_err(|e| ApiError::bad_request("invalid_id", format!("{e}")))?;
    if let Some(kind) = only {
        let tokens = state.raft.reader().join_tokens()?;
        if !tokens.iter().any(|t| t.id == parsed && t.kind == kind) {
            return Err(ApiError::not_found(
                &format!("{kind} join token"),
                &parsed.to_string(),
            ));
        }
    }
    let applied = state
        .raft
        .write(Command::RevokeJoinToken {
            id: parsed,
            at: Timestamp::now(),
        })
        .await?;
    match applied {
        Applied::JoinToken(record) => Ok(Json(record)),
        other => Err(ApiError::internal(format!(
            "revoking a join token was answered with {other:?}"
        ))),
    }
}
