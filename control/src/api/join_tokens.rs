//! `/v1/cluster/tokens`: server join tokens. The secret is shown once, in the answer to
//! the call that created it; the servers keep only its SHA-256.

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
    f.finish()?;
    let secret = auth::random_hex(32)
        .map_err(|_| ApiError::internal("no system randomness for a join token"))?;
    let now = Timestamp::now();
    let expires_at = Timestamp(now.0.saturating_add(ttl.as_std().as_millis() as u64));
    let applied = state
        .raft
        .write(Command::CreateJoinToken {
            kind: JoinKind::Server,
            hash: auth::token_hash(&secret),
            expires_at: Some(expires_at),
            uses,
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
    tracing::info!(id = %record.id, "server join token created");
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

/// `DELETE /v1/cluster/tokens/{id}`: the token enrolls nobody from now on.
pub async fn revoke(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<JoinTokenRecord>, ApiError> {
    let parsed: JoinTokenId = id
        .parse()
        .map_err(|e| ApiError::bad_request("invalid_id", format!("{e}")))?;
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
