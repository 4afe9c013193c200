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
use serde::{Deserialize, Serialize};
use windflow_protocol::codec::{self, CodecError, HEADER_LEN};

use crate::{BasicNode, Raft, ServerId, TypeConfig};

#[derive(Debug, Serialize, Deserialize)]
enum PeerRequest {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<ServerId>),
    Snapshot(InstallSnapshotRequest<TypeConfig>),
}

#[derive(Debug, Serialize, Deserialize)]
enum PeerResponse {
    Append(Result<AppendEntriesResponse<ServerId>, RaftError<ServerId>>),
    Vote(Result<VoteResponse<ServerId>, RaftError<ServerId>>),
    Snapshot(Result<InstallSnapshotResponse<ServerId>, RaftError<ServerId, InstallSnapshotError>>),
}

#[derive(Debug, thiserror::Error)]
enum LinkError {
    #[error("connecting: {0}")]
    Connect(#[from] quinn::ConnectError),
    #[error("connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
    #[error("writing: {0}")]
    Write(#[from] quinn::WriteError),
    #[error("reading: {0}")]
    Read(#[from] quinn::ReadExactError),
    #[error("stream closed: {0}")]
    Closed(#[from] quinn::ClosedStream),
    #[error("bad address `{0}`")]
    Address(String),
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error("the peer answered a different RPC")]
    Mismatch,
}

async fn read_frame<T: serde::de::DeserializeOwned>(
    recv: &mut quinn::RecvStream,
) -> Result<T, LinkError> {
    let mut header = [0u8; HEADER_LEN];
    recv.read_exact(&mut header).await?;
    let mut payload = vec![0u8; codec::decode_len(header)?];
    recv.read_exact(&mut payload).await?;
    Ok(codec::decode_payload(&payload)?)
}

/// Opens raft links to peers from this server's QUIC endpoint.
#[derive(Clone)]
pub struct QuicNetwork {
    endpoint: quinn::Endpoint,
    client_config: quinn::ClientConfig,
}

impl QuicNetwork {
    /// `client_config` must present this server's certificate and offer ALPN `windflow-raft/1`.
    pub fn new(endpoint: quinn::Endpoint, client_config: quinn::ClientConfig) -> Self {
        QuicNetwork {
            endpoint,
            client_config,
        }
    }
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
        let addr = self
            .addr
            .parse()
            .map_err(|_| LinkError::Address(self.addr.clone()))?;
        let conn = self
            .network
            .endpoint
            .connect_with(
                self.network.client_config.clone(),
                addr,
                windflow_certs::SERVER_NAME,
            )?
            .await?;
        self.conn = Some(conn.clone());
        Ok(conn)
    }

    async fn call(&mut self, req: &PeerRequest) -> Result<PeerResponse, LinkError> {
        let conn = self.connection().await?;
        let result = async {
            let (mut send, mut recv) = conn.open_bi().await?;
            send.write_all(&codec::encode(req)?).await?;
            send.finish()?;
            read_frame(&mut recv).await
        }
        .await;
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    fn failure<E: std::error::Error>(&self, e: LinkError) -> RPCError<ServerId, BasicNode, E> {
        match e {
            LinkError::Connect(_) | LinkError::Connection(_) | LinkError::Address(_) => {
                RPCError::Unreachable(Unreachable::new(&e))
            }
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
        match self.call(&PeerRequest::Append(rpc)).await {
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

/// Serves raft RPCs arriving on one accepted peer connection until it closes.
pub async fn serve_peer_connection(raft: Raft, conn: quinn::Connection) {
    loop {
        let (mut send, mut recv) = match conn.accept_bi().await {
            Ok(streams) => streams,
            Err(e) => {
                tracing::debug!(error = %e, "raft peer connection closed");
                return;
            }
        };
        let raft = raft.clone();
        tokio::spawn(async move {
            let request = match read_frame::<PeerRequest>(&mut recv).await {
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
            };
            let sent = match codec::encode(&response) {
                Ok(frame) => send.write_all(&frame).await.map_err(LinkError::from),
                Err(e) => Err(e.into()),
            };
            if let Err(e) = sent.and_then(|()| send.finish().map_err(LinkError::from)) {
                tracing::debug!(error = %e, "raft RPC answer not delivered");
            }
        });
    }
}
