//! `/v1/nodes`: registered nodes and whether their agent is connected.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Query, State};
use serde::Serialize;
use windflow_protocol::Node;

use super::{ApiError, AppState, read_barrier};

/// A node as the API shows it.
#[derive(Debug, Serialize)]
pub struct NodeView {
    #[serde(flatten)]
    pub node: Node,
    /// `ready` while its agent holds a session with this server, else `down`.
    pub status: &'static str,
}

pub async fn list(
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Vec<NodeView>>, ApiError> {
    read_barrier(&state, &q).await?;
    let nodes = state.raft.reader().nodes()?;
    Ok(Json(
        nodes
            .into_iter()
            .map(|node| {
                let status = if state.sessions.is_connected(node.id) {
                    "ready"
                } else {
                    "down"
                };
                NodeView { node, status }
            })
            .collect(),
    ))
}
