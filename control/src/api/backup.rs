//! Backups: `GET /v1/cluster/snapshot` downloads the whole state, `POST /v1/cluster/restore`
//! puts one back through raft.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::{Value, json};
use windflow_protocol::Timestamp;
use windflow_raft::Applied;
use windflow_raft::backup::Backup;

use super::{ApiError, AppState};

/// The largest backup `restore` takes.
pub const MAX_BACKUP_BYTES: usize = 1 << 30;

/// `GET /v1/cluster/snapshot`: a linearizable copy of the replicated state, as a file.
pub async fn save(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    state.raft.linearizable().await?;
    let bytes = state.raft.reader().backup(Timestamp::now())?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"windflow.backup\"",
            ),
        ],
        bytes,
    ))
}

/// `POST /v1/cluster/restore` with a backup file as the body. Only into a cluster that holds
/// no jobs yet, so a mistaken restore cannot wipe a working cluster.
pub async fn restore(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let backup =
        Backup::read(&body).map_err(|e| ApiError::bad_request("invalid_backup", e.to_string()))?;
    state.raft.linearizable().await?;
    if state.raft.reader().job_count()? > 0 {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_empty",
            "this cluster already holds jobs; restore into a fresh one",
        ));
    }
    let taken_at = backup.taken_at;
    match state.raft.write(backup.into_command()).await? {
        Applied::Restored { keys } => {
            tracing::warn!(keys, %taken_at, "state replaced from a backup");
            Ok((
                StatusCode::OK,
                Json(json!({ "restored_keys": keys, "taken_at": taken_at })),
            ))
        }
        other => Err(super::jobs::unexpected(other)),
    }
}
