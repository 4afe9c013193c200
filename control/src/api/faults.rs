//! `PUT /v1/debug/faults` (only with `windflow server --fault-injection`): cuts this server's
//! raft links to the named servers, both ways, for partition tests. `[]` heals.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use serde_json::{Value, json};

use super::body::Fields;
use super::{ApiError, AppState};
use crate::cluster::server_id;

/// `{"isolate_from": ["s2", "s3"]}` replaces what is cut.
pub async fn set(State(state): State<AppState>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let mut f = Fields::parse(&body)?;
    let names = f.required_string_list("isolate_from")?;
    f.finish()?;
    let faults = state.raft.faults();
    faults.heal();
    for name in &names {
        faults.block(server_id(name), name.clone());
    }
    tracing::warn!(?names, "fault injection: raft links cut");
    Ok(Json(json!({ "isolated_from": names })))
}
