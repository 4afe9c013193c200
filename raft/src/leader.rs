//! What a leader does for a follower: the operations a follower forwards over the peer link,
//! run against this server's openraft handle. They run the same way for a local caller
//! (on the leader) and for a forwarded one, so both get the same answers.

use std::collections::BTreeSet;
use std::time::Duration;

use openraft::error::{CheckIsLeaderError, ClientWriteError, ForwardToLeader, RaftError};
use openraft::{BasicNode, ChangeMembers};
use serde::{Deserialize, Serialize};

use crate::{Command, Raft, Response, ServerId};

/// Why a server could not do what was asked of the leader. Crosses the wire, so it is
/// plain data (externally tagged, no flattening).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub(crate) enum ForwardError {
    /// The server that got the request does not lead; the leader it knows, if any.
    #[error("not the raft leader")]
    NotLeader { leader: Option<(ServerId, String)> },
    #[error("{0}")]
    Raft(String),
}

/// A membership change, as a follower forwards it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum MembershipChange {
    /// Add `id` at `addr` as a learner and wait until it has caught up.
    AddLearner { id: ServerId, addr: String },
    /// Make exactly these servers voters (they must be members already); voters not in
    /// the set stay on as learners.
    ChangeVoters(BTreeSet<ServerId>),
    /// Drop a server from the voters and the learners.
    RemoveServer(ServerId),
}

fn not_leader(f: ForwardToLeader<ServerId, BasicNode>) -> ForwardError {
    ForwardError::NotLeader {
        leader: f.leader_id.zip(f.leader_node.map(|n| n.addr)),
    }
}

fn write_error(e: RaftError<ServerId, ClientWriteError<ServerId, BasicNode>>) -> ForwardError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => not_leader(f),
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            ForwardError::Raft(format!("membership change refused: {e}"))
        }
        RaftError::Fatal(e) => ForwardError::Raft(e.to_string()),
    }
}

/// How long a leader waits for a proposed write to be committed and applied. A leader cut
/// off from the majority cannot commit, and its caller must hear so rather than hang.
pub(crate) const WRITE_COMMIT_WAIT: Duration = Duration::from_secs(5);

/// Proposes `cmd` here and returns what `apply` answered.
///
/// Fails after [`WRITE_COMMIT_WAIT`] if it was not committed by then; the proposal stays
/// in this server's log and is applied later only if this server regains a majority
/// before another leader overwrites it.
pub(crate) async fn write(raft: &Raft, cmd: Command) -> Result<Response, ForwardError> {
    match tokio::time::timeout(WRITE_COMMIT_WAIT, raft.client_write(cmd)).await {
        Ok(r) => r.map(|r| r.data).map_err(write_error),
        Err(_) => Err(ForwardError::Raft(format!(
            "the leader did not commit the write within {WRITE_COMMIT_WAIT:?}: it cannot \
             reach a majority of the servers (a partition, or servers down); the write was \
             not acknowledged and is applied only if this leader regains a majority"
        ))),
    }
}

/// Confirms this server still leads (a quorum round) and returns the index every
/// linearizable read must see applied.
pub(crate) async fn read_index(raft: &Raft) -> Result<Option<u64>, ForwardError> {
    match raft.ensure_linearizable().await {
        Ok(log_id) => Ok(log_id.map(|l| l.index)),
        Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => Err(not_leader(f)),
        Err(e) => Err(ForwardError::Raft(e.to_string())),
    }
}

/// Runs one membership change here (if this server leads).
pub(crate) async fn change_membership(
    raft: &Raft,
    change: MembershipChange,
) -> Result<(), ForwardError> {
    let result = match change {
        MembershipChange::AddLearner { id, addr } => {
            raft.add_learner(id, BasicNode::new(addr), true).await
        }
        MembershipChange::ChangeVoters(voters) => {
            raft.change_membership(ChangeMembers::ReplaceAllVoters(voters), true)
                .await
        }
        MembershipChange::RemoveServer(id) => {
            let membership = raft.metrics().borrow().membership_config.clone();
            let is_voter = membership.voter_ids().any(|v| v == id);
            let is_member = membership.nodes().any(|(n, _)| *n == id);
            let change = if is_voter {
                // Without `retain`, a removed voter leaves the nodes as well.
                ChangeMembers::RemoveVoters(BTreeSet::from([id]))
            } else if is_member {
                ChangeMembers::RemoveNodes(BTreeSet::from([id]))
            } else {
                // Not a member here; make sure "here" is the leader before saying so.
                read_index(raft).await?;
                return Ok(());
            };
            raft.change_membership(change, false).await
        }
    };
    result.map(|_| ()).map_err(write_error)
}
