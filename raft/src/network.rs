//! Raft RPCs between servers over QUIC (ALPN `windflow-raft/1`, mutual TLS set up by the
//! caller's endpoint): one bidirectional stream per RPC, a request frame and a response
//! frame in the protocol crate's codec.

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use windflow_certs::wire::{WireError, read_frame, write_frame};
use windflow_protocol::codec;

use crate::leader::{ForwardError, MembershipChange};
use crate::{BasicNode, Command, Raft, Response, ServerId, TypeConfig};

/// The most an append-entries frame carries. A batch of large entries (a context is up to
/// 1 MiB) could outgrow the codec's frame limit, so a longer batch is cut, sent as a
/// prefix, and reported to openraft as a partial success.
const APPEND_FRAME_BUDGET: usize = codec::MAX_FRAME_LEN / 2;

/// Cuts `rpc.entries` to a prefix (at least one entry) of at most
/// [`APPEND_FRAME_BUDGET`] encoded bytes; returns the last kept log id if it cut.
fn fit_in_frame(rpc: &mut AppendEntriesRequest<TypeConfig>) -> Option<openraft::LogId<ServerId>> {
    let mut total = 0usize;
    for (i, entry) in rpc.entries.iter().enumerate() {
        let mut size = bincode::enc::write::SizeWriter::default();
        // An entry that cannot be measured will fail to encode below, with a real error.
        let _ = bincode::serde::encode_into_writer(entry, &mut size, bincode::config::standard());
        total = total.saturating_add(size.bytes_written);
        if total > APPEND_FRAME_BUDGET && i > 0 {
            rpc.entries.truncate(i);
            return rpc.entries.last().map(|e| e.log_id);
        }
    }
    None
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum PeerRequest {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<ServerId>),
    Snapshot(InstallSnapshotRequest<TypeConfig>),
    /// A follower forwards a client write; the receiver proposes it if it leads.
    ClientWrite(Command),
    /// A follower asks the leader for the log index a linearizable read must wait for.
    ReadIndex,
    /// A follower forwards a membership change.
    Membership(MembershipChange),
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum PeerResponse {
    Append(Result<AppendEntriesResponse<ServerId>, RaftError<ServerId>>),
    Vote(Result<VoteResponse<ServerId>, RaftError<ServerId>>),
    Snapshot(Result<InstallSnapshotResponse<ServerId>, RaftError<ServerId, InstallSnapshotError>>),
    ClientWrite(Result<Response, ForwardError>),
    /// The index to be applied up to (`None`: nothing committed yet).
    ReadIndex(Result<Option<u64>, ForwardError>),
    Membership(Result<(), ForwardError>),
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum LinkError {
    #[error("connecting: {0}")]
    Connect(#[from] quinn::ConnectError),
    #[error("connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("the peer closed the stream without a frame")]
    Ended,
    #[error("stream closed: {0}")]
    Closed(#[from] quinn::ClosedStream),
    #[error("bad address `{0}`")]
    Address(String),
    #[error("the peer answered a different RPC")]
    Mismatch,
    #[error("server {0} is cut off by an injected fault")]
    Blocked(ServerId),
}

/// Injected network faults, for partition tests: the peers this server is cut off from.
///
/// It exists for fault tests. A blocked peer is cut both ways: RPCs to it (openraft's and
/// forwarded client requests) fail as unreachable without dialing, and RPCs from it (known
/// by its certificate name, `server-<name>`) are dropped unanswered. By default nothing is
/// blocked, and a check costs one uncontended lock read. Clones share the same set.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Blocked peers: server ID → certificate name (without `server-`).
    blocked: Arc<RwLock<BTreeMap<ServerId, String>>>,
}

impl Faults {
    /// Cuts this server off from server `id`, whose certificate names it `server-<name>`.
    pub fn block(&self, id: ServerId, name: impl Into<String>) {
        self.write().insert(id, name.into());
    }

    /// Restores the link to server `id`.
    pub fn unblock(&self, id: ServerId) {
        self.write().remove(&id);
    }

    /// Restores every link.
    pub fn heal(&self) {
        self.write().clear();
    }

    /// Whether RPCs to server `id` are cut.
    pub fn blocks(&self, id: ServerId) -> bool {
        let blocked = self.blocked.read().unwrap_or_else(|e| e.into_inner());
        !blocked.is_empty() && blocked.contains_key(&id)
    }

    /// Whether RPCs from the server whose certificate names it `server-<name>` are cut.
    pub fn blocks_name(&self, name: &str) -> bool {
        let blocked = self.blocked.read().unwrap_or_else(|e| e.into_inner());
        !blocked.is_empty() && blocked.values().any(|n| n == name)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<ServerId, String>> {
        self.blocked.write().unwrap_or_else(|e| e.into_inner())
    }
}

pub(crate) async fn read_one<T: serde::de::DeserializeOwned>(
    recv: &mut quinn::RecvStream,
) -> Result<T, LinkError> {
    read_frame(recv).await?.ok_or(LinkError::Ended)
}

/// Opens raft links to peers from this server's QUIC endpoint.
#[derive(Clone)]
pub struct QuicNetwork {
    endpoint: quinn::Endpoint,
    client_config: quinn::ClientConfig,
    faults: Faults,
}

impl QuicNetwork {
    /// `client_config` must present this server's certificate and offer ALPN `windflow-raft/1`.
    pub fn new(endpoint: quinn::Endpoint, client_config: quinn::ClientConfig) -> Self {
        QuicNetwork {
            endpoint,
            client_config,
            faults: Faults::default(),
        }
    }

    /// The fault-injection handle this network consults (nothing blocked unless a test
    /// blocks it). It exists for fault tests: pass it to
    /// [`serve_peer_connection_with_faults`] to cut incoming RPCs as well.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// Fails when an injected fault cuts this server off from `id`.
    pub(crate) fn check_reachable(&self, id: ServerId) -> Result<(), LinkError> {
        if self.faults.blocks(id) {
            Err(LinkError::Blocked(id))
        } else {
            Ok(())
        }
    }

    /// Dials the peer at `addr` (`host:port`).
    pub(crate) async fn connect(&self, addr: &str) -> Result<quinn::Connection, LinkError> {
        let sock = addr
            .parse()
            .map_err(|_| LinkError::Address(addr.to_owned()))?;
        Ok(self
            .endpoint
            .connect_with(
                self.client_config.clone(),
                sock,
                windflow_certs::SERVER_NAME,
            )?
            .await?)
    }
}

/// One RPC on `conn`: a request frame out, a response frame back, on a new stream.
pub(crate) async fn rpc(
    conn: &quinn::Connection,
    req: &PeerRequest,
) -> Result<PeerResponse, LinkError> {
    let (mut send, mut recv) = conn.open_bi().await?;
    write_frame(&mut send, req).await?;
    send.finish()?;
    read_one(&mut recv).await
}

/// A link to one peer; reconnects on the next RPC after a failure.
pub struct PeerLink {
    target: ServerId,
    addr: String,
    network: QuicNetwork,
    conn: Option<quinn::Connection>,
}

impl RaftNetworkFactory<TypeConfig> for QuicNetwork {
    type Network = PeerLink;

    async fn new_client(&mut self, target: ServerId, node: &BasicNode) -> PeerLink {
        PeerLink {
            target,
            addr: node.addr.clone(),
            network: self.clone(),
            conn: None,
        }
    }
}

impl PeerLink {
    async fn connection(&mut self) -> Result<quinn::Connection, LinkError> {
        if let Some(conn) = &self.conn
            && conn.close_reason().is_none()
        {
            return Ok(conn.clone());
        }
        let conn = self.network.connect(&self.addr).await?;
        self.conn = Some(conn.clone());
        Ok(conn)
    }

    async fn call(&mut self, req: &PeerRequest) -> Result<PeerResponse, LinkError> {
        self.network.check_reachable(self.target)?;
        let conn = self.connection().await?;
        let result = rpc(&conn, req).await;
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    fn failure<E: std::error::Error>(&self, e: LinkError) -> RPCError<ServerId, BasicNode, E> {
        match e {
            LinkError::Connect(_)
            | LinkError::Connection(_)
            | LinkError::Address(_)
            | LinkError::Blocked(_) => RPCError::Unreachable(Unreachable::new(&e)),
            other => RPCError::Network(NetworkError::new(&other)),
        }
    }
}

type RpcResult<T, E = RaftError<ServerId>> = Result<T, RPCError<ServerId, BasicNode, E>>;

impl RaftNetwork<TypeConfig> for PeerLink {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<ServerId>> {
        let mut rpc = rpc;
        let cut_at = fit_in_frame(&mut rpc);
        match self.call(&PeerRequest::Append(rpc)).await {
            Ok(PeerResponse::Append(Ok(AppendEntriesResponse::Success))) if cut_at.is_some() => {
                Ok(AppendEntriesResponse::PartialSuccess(cut_at))
            }
            Ok(PeerResponse::Append(r)) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(_) => Err(self.failure(LinkError::Mismatch)),
            Err(e) => Err(self.failure(e)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<ServerId>, RaftError<ServerId, InstallSnapshotError>>
    {
        match self.call(&PeerRequest::Snapshot(rpc)).await {
            Ok(PeerResponse::Snapshot(r)) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(_) => Err(self.failure(LinkError::Mismatch)),
            Err(e) => Err(self.failure(e)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<ServerId>,
        _: RPCOption,
    ) -> RpcResult<VoteResponse<ServerId>> {
        match self.call(&PeerRequest::Vote(rpc)).await {
            Ok(PeerResponse::Vote(r)) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(_) => Err(self.failure(LinkError::Mismatch)),
            Err(e) => Err(self.failure(e)),
        }
    }
}

/// Serves raft RPCs arriving on one accepted peer connection until it closes: openraft's
/// own (append, vote, snapshot) and what followers forward to the leader (client writes,
/// read-index requests, membership changes). A forwarded request that reaches a server
/// that does not lead is answered with that server's own "not the leader" and its hint.
///
/// Only servers take part in raft: an agent's certificate comes from the same CA, so a
/// peer whose certificate is not a server's (`server-<name>`) is closed before any RPC
/// is read.
pub async fn serve_peer_connection(raft: Raft, conn: quinn::Connection) {
    serve_peer_connection_with_faults(raft, conn, Faults::default()).await;
}

/// [`serve_peer_connection`], dropping unanswered every RPC from a peer that `faults`
/// blocks (for fault tests; see [`QuicNetwork::faults`]).
pub async fn serve_peer_connection_with_faults(
    raft: Raft,
    conn: quinn::Connection,
    faults: Faults,
) {
    let peer = match windflow_certs::peer_identity(&conn) {
        Ok(windflow_certs::PeerIdentity::Server(name)) => name,
        other => {
            tracing::warn!(remote = %conn.remote_address(), identity = ?other, "refused a raft peer that is not a server");
            conn.close(2u32.into(), b"raft peers must be servers");
            return;
        }
    };
    loop {
        let (mut send, mut recv) = match conn.accept_bi().await {
            Ok(streams) => streams,
            Err(e) => {
                tracing::debug!(error = %e, "raft peer connection closed");
                return;
            }
        };
        if faults.blocks_name(&peer) {
            // Cut off by an injected fault: the RPC is dropped, as a partition would.
            let _ = send.reset(0u32.into());
            let _ = recv.stop(0u32.into());
            continue;
        }
        let raft = raft.clone();
        tokio::spawn(async move {
            let request = match read_one::<PeerRequest>(&mut recv).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "unreadable raft RPC");
                    return;
                }
            };
            let response = match request {
                PeerRequest::Append(r) => PeerResponse::Append(raft.append_entries(r).await),
                PeerRequest::Vote(r) => PeerResponse::Vote(raft.vote(r).await),
                PeerRequest::Snapshot(r) => PeerResponse::Snapshot(raft.install_snapshot(r).await),
                PeerRequest::ClientWrite(cmd) => {
                    PeerResponse::ClientWrite(crate::leader::write(&raft, cmd).await)
                }
                PeerRequest::ReadIndex => {
                    PeerResponse::ReadIndex(crate::leader::read_index(&raft).await)
                }
                PeerRequest::Membership(change) => {
                    PeerResponse::Membership(crate::leader::change_membership(&raft, change).await)
                }
            };
            let sent = write_frame(&mut send, &response)
                .await
                .map_err(LinkError::from);
            if let Err(e) = sent.and_then(|()| send.finish().map_err(LinkError::from)) {
                tracing::debug!(error = %e, "raft RPC answer not delivered");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Vote};
    use windflow_protocol::{HumanDuration, NodeId, RunId, RunOutcome, Timestamp};

    use super::*;
    use crate::Command;

    fn request(entries: usize, stdout_bytes: usize) -> AppendEntriesRequest<TypeConfig> {
        let entries = (1..=entries as u64)
            .map(|index| Entry {
                log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
                payload: EntryPayload::Normal(Command::RunFinished {
                    run: RunId(index),
                    node: NodeId(1),
                    outcome: RunOutcome::Succeeded,
                    exit_code: Some(0),
                    attempts: 1,
                    started_at: Timestamp(1),
                    duration: HumanDuration::from_millis(1),
                    stdout: "x".repeat(stdout_bytes),
                    stdout_truncated: false,
                    stderr_tail: String::new(),
                    error: None,
                    at: Timestamp(2),
                }),
            })
            .collect();
        AppendEntriesRequest {
            vote: Vote::new_committed(1, 1),
            prev_log_id: None,
            leader_commit: None,
            entries,
        }
    }

    fn roundtrip(r: &PeerResponse) -> PeerResponse {
        let frame = codec::encode(r).unwrap();
        bincode::serde::decode_from_slice(&frame[codec::HEADER_LEN..], bincode::config::standard())
            .unwrap()
            .0
    }

    #[test]
    fn forwarded_answers_and_their_errors_cross_the_wire() {
        let not_leader = ForwardError::NotLeader {
            leader: Some((2, "127.0.0.1:7001".into())),
        };
        match roundtrip(&PeerResponse::ClientWrite(Err(not_leader.clone()))) {
            PeerResponse::ClientWrite(Err(e)) => assert_eq!(e, not_leader),
            other => panic!("{other:?}"),
        }
        let refused = Err(crate::ApplyError::not_found("job", "J9"));
        match roundtrip(&PeerResponse::ClientWrite(Ok(refused.clone()))) {
            PeerResponse::ClientWrite(Ok(r)) => assert_eq!(r, refused),
            other => panic!("{other:?}"),
        }
        match roundtrip(&PeerResponse::ReadIndex(Ok(Some(42)))) {
            PeerResponse::ReadIndex(Ok(Some(42))) => {}
            other => panic!("{other:?}"),
        }
        match roundtrip(&PeerResponse::Membership(Err(ForwardError::Raft(
            "x".into(),
        )))) {
            PeerResponse::Membership(Err(ForwardError::Raft(m))) => assert_eq!(m, "x"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn faults_block_a_peer_both_ways_until_healed() {
        let faults = Faults::default();
        assert!(!faults.blocks(2) && !faults.blocks_name("s2"));
        let shared = faults.clone();
        shared.block(2, "s2");
        shared.block(3, "s3");
        assert!(faults.blocks(2) && faults.blocks_name("s2") && !faults.blocks(1));
        faults.unblock(2);
        assert!(!faults.blocks(2) && !faults.blocks_name("s2") && faults.blocks(3));
        faults.heal();
        assert!(!shared.blocks(3) && !shared.blocks_name("s3"));
    }

    #[test]
    fn small_batches_go_whole() {
        let mut rpc = request(64, 1024);
        assert_eq!(fit_in_frame(&mut rpc), None);
        assert_eq!(rpc.entries.len(), 64);
    }

    #[test]
    fn a_batch_of_large_entries_is_cut_to_fit_one_frame() {
        // 20 contexts of 1 MiB would be a 20 MiB frame, over the codec's 16 MiB limit.
        let mut whole = request(20, 1024 * 1024);
        assert!(codec::encode(&PeerRequest::Append(whole)).is_err());
        whole = request(20, 1024 * 1024);
        let cut = fit_in_frame(&mut whole).expect("cut");
        assert_eq!(whole.entries.len(), 7);
        assert_eq!(cut.index, 7);
        let frame = codec::encode(&PeerRequest::Append(whole)).unwrap();
        assert!(frame.len() <= APPEND_FRAME_BUDGET + codec::HEADER_LEN + 64);
        // One entry is always sent, whatever its size.
        let mut one = request(1, 9 * 1024 * 1024);
        assert_eq!(fit_in_frame(&mut one), None);
        assert_eq!(one.entries.len(), 1);
    }
}
