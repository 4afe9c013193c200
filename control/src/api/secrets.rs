//! `/v1/secrets`: rotating the cluster key (admins only).

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;

use super::body::Fields;
use super::{ApiError, AppState};
use crate::secrets::SecretError;
use crate::secrets::rotate::{Retirement, RotateError, Rotation};

/// `POST /v1/secrets/rotate` (empty body or `{}`): a new current key on every server,
/// every stored secret re-encrypted under it. Answers with the new key's ID and what was
/// re-encrypted.
pub async fn rotate(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Json<Rotation>, ApiError> {
    Fields::parse_or_empty(&body)?.finish()?;
    state.secrets.rotate().await.map(Json).map_err(rotate_error)
}

fn rotate_error(e: RotateError) -> ApiError {
    match e {
        RotateError::Write(w) => w.into(),
        RotateError::Store(s) => s.into(),
        other @ (RotateError::NotDistributed(_)
        | RotateError::NotCurrent(_)
        | RotateError::Secret(SecretError::NoKeyRing)) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "key_ring_unavailable",
            other.to_string(),
        ),
        other => ApiError::internal(other.to_string()),
    }
}

/// `POST /v1/secrets/drop-old-keys` (empty body or `{}`): drops from every server's key
/// ring the keys no stored value uses, never the current one.
pub async fn drop_old_keys(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Json<Retirement>, ApiError> {
    Fields::parse_or_empty(&body)?.finish()?;
    state
        .secrets
        .drop_unused_keys()
        .await
        .map(Json)
        .map_err(rotate_error)
}

/// A sealing failure as the API answers it.
pub(super) fn seal_error(e: SecretError) -> ApiError {
    match e {
        SecretError::NoKeyRing => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "key_ring_unavailable",
            format!("{e}; retry shortly"),
        ),
        other => ApiError::internal(format!("sealing a secret: {other}")),
    }
}
