//! `/v1/nodes`: registered nodes and whether their agent is connected.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::Serialize;
use windflow_protocol::{Node, NodeId, Timestamp};
use windflow_raft::{Applied, Command};

use super::{ApiError, AppState, read_barrier};

/// A node as the API shows it.
#[derive(Debug, Serialize)]
pub struct NodeView {
    #[serde(flatten)]
    pub node: Node,
    /// `ready` while its agent holds a session with this server, `revoked` once its
    /// certificates are, else `down`.
    pub status: &'static str,
    /// Whether its agent holds a session with this server right now.
    pub connected: bool,
}

pub async fn list(
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Vec<NodeView>>, ApiError> {
    read_barrier(&state, &q).await?;
    let nodes = state.raft.reader().nodes()?;
    Ok(Json(
        nodes.into_iter().map(|node| view(&state, node)).collect(),
    ))
}

fn view(state: &AppState, node: Node) -> NodeView {
    let connected = state.sessions.is_connected(node.id);
    let status = match (node.revoked_at, connected) {
        (Some(_), _) => "revoked",
        (None, true) => "ready",
        (None, false) => "down",
    };
    NodeView {
        node,
        status,
        connected,
    }
}

/// `POST /v1/nodes/{id}/revoke` (ID `N3`, or a name only one node has): every certificate
/// issued to the node goes on the revocation list; its agent is refused at the TLS
/// handshake from then on and its live session is closed.
pub async fn revoke(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<NodeView>, ApiError> {
    let node = match id.parse::<NodeId>() {
        Ok(node) => node,
        Err(_) => {
            let nodes = state.raft.reader().nodes()?;
            let mut named = nodes.iter().filter(|n| n.name == id);
            match (named.next(), named.next()) {
                (Some(n), None) => n.id,
                (Some(_), Some(_)) => {
                    return Err(ApiError::bad_request(
                        "ambiguous_node",
                        format!("several nodes are named `{id}`: give its ID (N…)"),
                    ));
                }
                (None, _) => return Err(ApiError::not_found("node", &id)),
            }
        }
    };
    let applied = state
        .raft
        .write(Command::RevokeNode {
            node,
            at: Timestamp::now(),
        })
        .await?;
    let Applied::Node(node) = applied else {
        return Err(ApiError::internal(format!(
            "revoking a node was answered with {applied:?}"
        )));
    };
    tracing::warn!(node = %node.id, name = %node.name, "node revoked");
    Ok(Json(view(&state, node)))
}
