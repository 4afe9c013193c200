//! Windflow's replicated store.
//!
//! Every change to cluster state is a [`Command`] proposed through openraft, appended to a
//! sled-backed log, and applied by one deterministic function (`state::apply`) to typed
//! tables in one sled tree. [`StateReader`] reads those tables; [`RaftNode`] is the handle
//! the server holds; [`QuicNetwork`] carries raft RPCs between servers over mutual-TLS QUIC.

mod alloc_changes;
mod allocs;
pub mod backup;
mod batch;
mod command;
mod deployments;
mod deployments_reader;
mod error;
mod forward;
mod identity;
mod import;
mod join_tokens;
mod leader;
mod log_store;
mod namespaces;
mod network;
mod node;
mod node_certs;
mod nodes;
pub mod page;
#[cfg(test)]
mod pipeline_tests;
mod pipelines;
mod pipelines_reader;
mod reader;
mod run_retention;
mod schedules;
mod schedules_reader;
mod secrets;
mod state;
mod state_machine;
mod timings;
mod webhooks;

pub use command::{
    AllocReport, Applied, ApplyError, Command, DeploymentEnd, DrainChange, DrainEnd,
    JoinTokenRecord, JoinTokenRefusal, KeyValue, NewAlloc, NewToken, NodeCert, Plan, PlanResult,
    Rejection, ReplaceKind, Replacement, Response, StopAlloc, TokenRecord, UserRecord,
};
pub use error::{RaftNodeError, StoreError, WriteError};
pub use import::{ImportSet, ImportWebhook};
pub use network::{Faults, QuicNetwork, serve_peer_connection, serve_peer_connection_with_faults};
pub use node::{MemberInfo, MemberRole, RaftConfig, RaftNode};
pub use nodes::NodeLiveness;
pub use openraft::BasicNode;
pub use reader::StateReader;
pub use timings::RaftTimings;

/// A server's ID in the raft group.
pub type ServerId = u64;

openraft::declare_raft_types!(
    /// The raft types of a Windflow cluster.
    pub TypeConfig:
        D = Command,
        R = Response,
        NodeId = ServerId,
        Node = BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = std::io::Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The openraft handle of a Windflow server.
pub type Raft = openraft::Raft<TypeConfig>;

/// bincode as the store uses it (no limit: it reads only what it wrote).
pub(crate) fn encode<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    bincode::serde::encode_to_vec(v, bincode::config::standard())
        .map_err(|e| StoreError::Encode(e.to_string()))
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    what: &'static str,
) -> Result<T, StoreError> {
    bincode::serde::decode_from_slice(bytes, bincode::config::standard())
        .map(|(v, _)| v)
        .map_err(|e| StoreError::Decode {
            what,
            why: e.to_string(),
        })
}

#[cfg(test)]
mod alloc_sync_tests;
#[cfg(test)]
mod alloc_tests;
#[cfg(test)]
mod apply_tests;
#[cfg(test)]
mod deployment_tests;
#[cfg(test)]
mod identity_tests;
#[cfg(test)]
mod import_tests;
#[cfg(test)]
mod schedule_tests;
