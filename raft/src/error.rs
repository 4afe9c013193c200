use crate::{ApplyError, ServerId};

/// Reading or writing the local sled store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    #[error("decoding {what}: {why}")]
    Decode { what: &'static str, why: String },
    #[error("encoding: {0}")]
    Encode(String),
    /// The snapshot file, which lives next to sled's files.
    #[error("snapshot file: {0}")]
    Io(#[from] std::io::Error),
}

/// Opening or running the raft node failed.
#[derive(Debug, thiserror::Error)]
pub enum RaftNodeError {
    #[error("opening the raft store: {0}")]
    Store(#[from] StoreError),
    #[error("invalid raft config: {0}")]
    Config(String),
    #[error("raft: {0}")]
    Raft(String),
    #[error("no raft leader within {0:?}")]
    NoLeader(std::time::Duration),
    /// No leader could be reached: none is known (an election is under way), or the
    /// servers kept naming one another. The last leader named, if any.
    #[error("{}", not_leader_message(leader))]
    NotLeader { leader: Option<(ServerId, String)> },
}

/// A proposal did not become an applied command.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Committed and applied, and `apply` refused it.
    #[error(transparent)]
    Rejected(#[from] ApplyError),
    /// This server is not the leader; the leader, if known, is named.
    ///
    /// A follower forwards to the leader, so this comes back only when no leader is known
    /// (an election is under way; retry shortly) or it could not be found in a few hops.
    #[error("{}", not_leader_message(leader))]
    NotLeader { leader: Option<(ServerId, String)> },
    #[error("raft: {0}")]
    Raft(String),
}

fn not_leader_message(leader: &Option<(ServerId, String)>) -> String {
    match leader {
        Some((id, addr)) => format!("not the raft leader; the leader is server {id} at {addr}"),
        None => "no raft leader is known (an election may be under way); retry shortly".into(),
    }
}

impl WriteError {
    /// The same error for another waiter of one failed proposal.
    pub(crate) fn duplicate(&self) -> WriteError {
        match self {
            WriteError::Rejected(e) => WriteError::Rejected(e.clone()),
            WriteError::NotLeader { leader } => WriteError::NotLeader {
                leader: leader.clone(),
            },
            WriteError::Raft(e) => WriteError::Raft(e.clone()),
        }
    }
}
