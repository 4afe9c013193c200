//! `/v1/cluster/members`: the raft members as this server sees them.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Query, State};
use serde::Serialize;
use windflow_raft::{MemberRole, ServerId};

use super::{ApiError, AppState, read_barrier};

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
