//! `/v1/cluster/members`: the raft members as this server sees them, joins and removals;
//! `/v1/cluster/ca`: the cluster CA certificate, for a CLI to pin.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Serialize;
use windflow_raft::{MemberRole, RaftNodeError, ServerId};

use super::body::Fields;
use super::{ApiError, AppState, read_barrier};
use crate::cluster::server_id;

/// One member of the raft group.
#[derive(Debug, Serialize)]
pub struct MemberView {
    pub id: ServerId,
    /// The server's name, when this server knows it (from the initial member list).
    pub name: Option<String>,
    pub address: String,
    /// `voter` or `learner`.
    pub role: &'static str,
    pub leader: bool,
    /// The last log index known to be on that member (known by the leader only).
    pub matched_index: Option<u64>,
    /// How many entries it is behind the leader's log (known by the leader only).
    pub lag: Option<u64>,
    /// The last index applied here, on the answering server's own entry.
    pub last_applied: Option<u64>,
}

/// `GET /v1/cluster/ca` (public): the cluster CA certificate and its SHA-256 fingerprint.
/// Public because a CLI needs it before it can trust the server; it proves nothing by
/// itself: the CLI shows the fingerprint to be checked, or compares it with one it was
/// given, before it trusts the certificate.
pub async fn ca(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "ca_pem": &*state.ca_pem,
        "fingerprint_sha256": &*state.ca_fingerprint,
    }))
}

pub async fn members(
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Vec<MemberView>>, ApiError> {
    read_barrier(&state, &q).await?;
    let metrics = state.raft.metrics().borrow().clone();
    let last_log = metrics.last_log_index;
    let applied = metrics.last_applied.map(|l| l.index);
    let views = state
        .raft
        .members()
        .into_iter()
        .map(|m| MemberView {
            name: state.server_names.get(&m.id).cloned(),
            lag: m
                .matched_index
                .zip(last_log)
                .map(|(matched, last)| last.saturating_sub(matched)),
            last_applied: (m.id == state.raft.id()).then_some(applied).flatten(),
            id: m.id,
            address: m.addr,
            role: match m.role {
                MemberRole::Voter => "voter",
                MemberRole::Learner => "learner",
            },
            leader: m.is_leader,
            matched_index: m.matched_index,
        })
        .collect();
    Ok(Json(views))
}

fn membership_error(e: RaftNodeError) -> ApiError {
    match e {
        RaftNodeError::NotLeader { .. } | RaftNodeError::NoLeader(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_leader",
            format!("{e}; retry shortly"),
        ),
        other => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "membership_change_failed",
            other.to_string(),
        ),
    }
}

/// `POST /v1/cluster/members` with `{"name", "address"}`: adds a server started with
/// `--join`: first as a learner (returns once it has caught up), then as a voter.
pub async fn join(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<(StatusCode, Json<Vec<MemberView>>), ApiError> {
    let mut f = Fields::parse(&body)?;
    let name = f.required_str("name")?;
    let address = f.required_str("address")?;
    f.finish()?;
    if name.trim().is_empty() {
        return Err(ApiError::invalid_field("name", "must not be empty"));
    }
    let addr: SocketAddr = address.parse().map_err(|_| {
        ApiError::invalid_field(
            "address",
            format!("`{address}` is not an IP:PORT QUIC address"),
        )
    })?;
    let id = server_id(&name);
    if state.raft.members().iter().any(|m| m.id == id) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_member",
            format!("server `{name}` is already a member"),
        ));
    }
    tracing::info!(%name, id, %addr, "adding a server: learner first");
    state
        .raft
        .add_learner(id, addr.to_string())
        .await
        .map_err(membership_error)?;
    let mut voters: BTreeSet<ServerId> = state
        .raft
        .members()
        .into_iter()
        .filter(|m| m.role == MemberRole::Voter)
        .map(|m| m.id)
        .collect();
    voters.insert(id);
    state
        .raft
        .change_voters(voters)
        .await
        .map_err(membership_error)?;
    tracing::info!(%name, id, "server is now a voter");
    let Json(members) = members(State(state), Query(HashMap::new())).await?;
    Ok((StatusCode::CREATED, Json(members)))
}

/// `DELETE /v1/cluster/members/{name}` (a server name or raft ID): the server leaves the group.
pub async fn remove(
    State(state): State<AppState>,
    Path(key): Path<String>,
) -> Result<Json<Vec<MemberView>>, ApiError> {
    let current = state.raft.members();
    let id = key
        .parse::<ServerId>()
        .ok()
        .filter(|id| current.iter().any(|m| m.id == *id))
        .unwrap_or_else(|| server_id(&key));
    if !current.iter().any(|m| m.id == id) {
        return Err(ApiError::not_found("cluster member", &key));
    }
    if current
        .iter()
        .filter(|m| m.role == MemberRole::Voter && m.id != id)
        .count()
        == 0
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "last_voter",
            "cannot remove the last voting member",
        ));
    }
    state
        .raft
        .remove_server(id)
        .await
        .map_err(membership_error)?;
    tracing::info!(server = %key, id, "server removed from the cluster");
    members(State(state), Query(HashMap::new())).await
}
