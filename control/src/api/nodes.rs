//! `/v1/nodes`: registered nodes, their liveness, drains and eligibility.
//!
//! A node is named by its ID (`N3`) or by a name only one node has, on every route.
//! `POST /v1/nodes/{id}/drain` (`{"deadline": "1h"}`, or no body) starts a drain and
//! `DELETE /v1/nodes/{id}/drain` cancels it; either way the node stays ineligible until
//! `PUT /v1/nodes/{id}/eligibility` (`{"eligibility": "eligible"}`).

use std::collections::HashMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use serde::Serialize;
use serde_json::Value;
use windflow_protocol::{Allocation, Eligibility, Node, NodeId, Resources, Timestamp};
use windflow_raft::{Applied, Command, DrainChange};

use super::body::Fields;
use super::{ApiError, AppState, read_barrier};

/// The longest drain deadline accepted.
const MAX_DRAIN_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);

/// A node as the API shows it: the node's fields, with `status` (`initializing`, `ready`,
/// `down`, or `revoked` once its certificates are) and whether its agent holds a session
/// with this server.
#[derive(Debug, Serialize)]
pub struct NodeView(Value);

/// `GET /v1/nodes/{id}`: a node, what its live allocations hold, and its allocations.
#[derive(Debug, Serialize)]
pub struct NodeDetail {
    #[serde(flatten)]
    pub node: NodeView,
    pub used: Resources,
    /// When a server last heard its agent.
    pub last_heard_at: Option<Timestamp>,
    pub allocations: Vec<Allocation>,
}

pub async fn list(
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Vec<NodeView>>, ApiError> {
    read_barrier(&state, &q).await?;
    let nodes = state.raft.reader().nodes()?;
    nodes
        .into_iter()
        .map(|node| view(&state, node))
        .collect::<Result<_, _>>()
        .map(Json)
}

fn view(state: &AppState, node: Node) -> Result<NodeView, ApiError> {
    let connected = state.sessions.is_connected(node.id);
    let revoked = node.revoked_at.is_some();
    let mut v = serde_json::to_value(&node).map_err(|e| ApiError::internal(e.to_string()))?;
    if let Value::Object(map) = &mut v {
        if revoked {
            map.insert("status".into(), "revoked".into());
        }
        map.insert("connected".into(), connected.into());
    }
    Ok(NodeView(v))
}

/// The node a path names: `N3`, or the name of exactly one node.
fn resolve(state: &AppState, id: &str) -> Result<NodeId, ApiError> {
    if let Ok(node) = id.parse::<NodeId>() {
        return Ok(node);
    }
    let nodes = state.raft.reader().nodes()?;
    let mut named = nodes.iter().filter(|n| n.name == id);
    match (named.next(), named.next()) {
        (Some(n), None) => Ok(n.id),
        (Some(_), Some(_)) => Err(ApiError::bad_request(
            "ambiguous_node",
            format!("several nodes are named `{id}`: give its ID (N…)"),
        )),
        (None, _) => Err(ApiError::not_found("node", id)),
    }
}

/// `GET /v1/nodes/{id}`.
pub async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<NodeDetail>, ApiError> {
    read_barrier(&state, &q).await?;
    let node_id = resolve(&state, &id)?;
    let reader = state.raft.reader();
    let node = reader
        .node(node_id)?
        .ok_or_else(|| ApiError::not_found("node", &id))?;
    let last_heard_at = reader
        .node_liveness()?
        .into_iter()
        .find(|(n, _)| *n == node_id)
        .and_then(|(_, l)| l.last_heard);
    Ok(Json(NodeDetail {
        used: reader.node_used(node_id)?,
        last_heard_at,
        allocations: reader.allocations_of_node(node_id)?,
        node: view(&state, node)?,
    }))
}

async fn write_node(state: &AppState, cmd: Command) -> Result<Json<NodeView>, ApiError> {
    let applied = state.raft.write(cmd).await?;
    let Applied::Node(node) = applied else {
        return Err(ApiError::internal(format!(
            "a node change was answered with {applied:?}"
        )));
    };
    Ok(Json(view(state, node)?))
}

/// `POST /v1/nodes/{id}/revoke`: every certificate issued to the node goes on the
/// revocation list; its agent is refused at the TLS handshake from then on and its live
/// session is closed.
pub async fn revoke(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<NodeView>, ApiError> {
    let node = resolve(&state, &id)?;
    let answer = write_node(
        &state,
        Command::RevokeNode {
            node,
            at: Timestamp::now(),
        },
    )
    .await?;
    tracing::warn!(%node, "node revoked");
    Ok(answer)
}

/// `POST /v1/nodes/{id}/drain` with `{"deadline"?: "1h"}` (or no body: no deadline). The
/// node is ineligible at once; its service allocations move elsewhere, running batch runs
/// finish; at the deadline what is left is stopped. Again on a draining node: the new
/// deadline applies.
pub async fn drain(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<NodeView>, ApiError> {
    let mut f = Fields::parse_or_empty(&body)?;
    let deadline = f.optional_duration("deadline", MAX_DRAIN_DEADLINE)?;
    f.finish()?;
    let node = resolve(&state, &id)?;
    let at = Timestamp::now();
    let deadline = deadline.map(|d| Timestamp(at.0.saturating_add(d.as_millis() as u64)));
    let answer = write_node(
        &state,
        Command::SetNodeDrain {
            node,
            change: DrainChange::Start { deadline },
            at,
        },
    )
    .await?;
    tracing::info!(%node, ?deadline, "node drain started");
    Ok(answer)
}

/// `DELETE /v1/nodes/{id}/drain`: cancels a drain (409 if none); the node stays
/// ineligible.
pub async fn cancel_drain(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<NodeView>, ApiError> {
    let node = resolve(&state, &id)?;
    write_node(
        &state,
        Command::SetNodeDrain {
            node,
            change: DrainChange::Cancel,
            at: Timestamp::now(),
        },
    )
    .await
}

/// `PUT /v1/nodes/{id}/eligibility` with `{"eligibility": "eligible"|"ineligible"}`:
/// whether new work may be placed there (409 for `eligible` while it drains).
pub async fn eligibility(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<NodeView>, ApiError> {
    let mut f = Fields::parse(&body)?;
    let eligibility = match f.required_str("eligibility")?.as_str() {
        "eligible" => Eligibility::Eligible,
        "ineligible" => Eligibility::Ineligible,
        other => {
            return Err(ApiError::invalid_field(
                "eligibility",
                format!("must be eligible or ineligible, not `{other}`"),
            ));
        }
    };
    f.finish()?;
    let node = resolve(&state, &id)?;
    write_node(
        &state,
        Command::SetNodeEligibility {
            node,
            eligibility,
            at: Timestamp::now(),
        },
    )
    .await
}
