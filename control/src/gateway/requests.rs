//! Asking a connected agent for something bulky (an allocation's logs, its stats): each
//! request opens a bi-directional stream of its own on the agent's connection, so the
//! control stream stays free of bulk data. The agent answers `Accepted` or `Refused`, then
//! streams its answer and finishes the stream; dropping the [`AgentAnswer`] cancels it.
//!
//! An agent connected to another server is reached through that server: this one asks
//! each peer in turn on `windflow-relay/1` (servers' certificates only), and the one
//! holding the agent's session passes the request on and the agent's frames back
//! (`relay.rs`). A relayed request is never relayed again.

use std::net::SocketAddr;
use std::time::Duration;

use windflow_certs::SERVER_NAME;
use windflow_certs::wire::{WireError, read_frame, write_frame};
use windflow_protocol::NodeId;
use windflow_protocol::messages::{AgentReply, AgentRequest, RelayRequest};
use windflow_raft::{RaftNode, ServerId};

use super::Sessions;

/// How long an agent has to accept or refuse a request.
const ACCEPT_WITHIN: Duration = Duration::from_secs(15);
/// How long a peer server may take to connect.
const PEER_CONNECT_WITHIN: Duration = Duration::from_secs(5);

/// Why a request to an agent got no answer.
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    #[error("node {0}'s agent has no session with this server")]
    NotConnected(NodeId),
    /// Neither this server nor any peer that answered holds the agent's session.
    #[error("node {node}'s agent has no session with any server of the cluster")]
    NoServerHasIt {
        node: NodeId,
        /// The servers asked (this one included), and those that could not be asked, why.
        asked: Vec<ServerId>,
        unreachable: Vec<(ServerId, String)>,
    },
    #[error("node {node}'s agent cannot be asked: {why}")]
    Unreachable { node: NodeId, why: String },
    #[error("node {node}'s agent did not answer within {}s", ACCEPT_WITHIN.as_secs())]
    TimedOut { node: NodeId },
    /// The agent refused; `missing` when what was asked for is not on its node.
    #[error("{reason}")]
    Refused { reason: String, missing: bool },
}

/// An agent's answer to a request, read frame by frame after its `Accepted`. Dropping it
/// stops the agent's side (it stops following).
pub struct AgentAnswer {
    recv: quinn::RecvStream,
    // Kept so the stream stays open both ways while the answer is read.
    _send: quinn::SendStream,
    /// The connection to the relaying server, when the agent is connected to another one.
    _relay: Option<quinn::Connection>,
}

impl AgentAnswer {
    /// The next frame; `None` once the agent finished the stream.
    pub async fn next(&mut self) -> Result<Option<AgentReply>, WireError> {
        read_frame(&mut self.recv).await
    }
}

/// How this server reaches its peers' agents.
pub struct Relay {
    pub endpoint: quinn::Endpoint,
    /// Presents this server's certificate, offers ALPN `windflow-relay/1`.
    pub client: quinn::ClientConfig,
    /// Who the peers are (the raft members) and who this server is.
    pub raft: RaftNode,
}

/// What came of sending a request on a fresh stream.
enum Opened {
    Accepted(quinn::SendStream, quinn::RecvStream),
    NoSession,
}

/// Writes `request` on a new stream of `conn` and reads the first answer.
async fn open<T: serde::Serialize>(
    conn: &quinn::Connection,
    request: &T,
) -> Result<Opened, AskError> {
    let unreachable = |why: String| AskError::Unreachable {
        node: NodeId(0),
        why,
    };
    let (mut send, mut recv) = conn
        .open_bi()
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    write_frame(&mut send, request)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    match read_frame::<AgentReply>(&mut recv).await {
        Ok(Some(AgentReply::Accepted)) => Ok(Opened::Accepted(send, recv)),
        Ok(Some(AgentReply::NoSession)) => Ok(Opened::NoSession),
        Ok(Some(AgentReply::Refused { reason, missing })) => {
            Err(AskError::Refused { reason, missing })
        }
        Ok(Some(_)) => Err(unreachable("it answered before accepting".into())),
        Ok(None) => Err(unreachable("it closed the stream without answering".into())),
        Err(e) => Err(unreachable(e.to_string())),
    }
}

/// Names the node in an error [`open`] made without knowing it.
fn for_node(e: AskError, node: NodeId) -> AskError {
    match e {
        AskError::Unreachable { why, .. } => AskError::Unreachable { node, why },
        other => other,
    }
}

impl Relay {
    /// Asks each peer server in turn to pass `request` to node `node`'s agent.
    async fn ask(&self, node: NodeId, request: &AgentRequest) -> Result<AgentAnswer, AskError> {
        let me = self.raft.id();
        let mut asked = vec![me];
        let mut unreachable = Vec::new();
        let relayed = RelayRequest {
            node,
            request: request.clone(),
        };
        for peer in self.raft.members().into_iter().filter(|m| m.id != me) {
            match self.ask_peer(&peer.addr, &relayed).await {
                Ok(Some(answer)) => {
                    tracing::debug!(%node, peer = peer.id, "asked the agent through a peer");
                    return Ok(answer);
                }
                Ok(None) => asked.push(peer.id),
                Err(AskError::Refused { reason, missing }) => {
                    return Err(AskError::Refused { reason, missing });
                }
                Err(e) => unreachable.push((peer.id, e.to_string())),
            }
        }
        Err(AskError::NoServerHasIt {
            node,
            asked,
            unreachable,
        })
    }

    /// The agent's answer through the server at `addr`; `None` when it has no session.
    async fn ask_peer(
        &self,
        addr: &str,
        relayed: &RelayRequest,
    ) -> Result<Option<AgentAnswer>, AskError> {
        let node = relayed.node;
        let unreachable = |why: String| AskError::Unreachable { node, why };
        let sock: SocketAddr = addr
            .parse()
            .map_err(|_| unreachable(format!("`{addr}` is not an IP:PORT address")))?;
        let connecting = self
            .endpoint
            .connect_with(self.client.clone(), sock, SERVER_NAME)
            .map_err(|e| unreachable(e.to_string()))?;
        let conn = tokio::time::timeout(PEER_CONNECT_WITHIN, connecting)
            .await
            .map_err(|_| unreachable(format!("{addr} did not answer")))?
            .map_err(|e| unreachable(e.to_string()))?;
        // The peer waits up to ACCEPT_WITHIN for its agent; a little more for the hop.
        let opened =
            tokio::time::timeout(ACCEPT_WITHIN + PEER_CONNECT_WITHIN, open(&conn, relayed))
                .await
                .map_err(|_| AskError::TimedOut { node })?
                .map_err(|e| for_node(e, node));
        match opened {
            Ok(Opened::Accepted(send, recv)) => Ok(Some(AgentAnswer {
                recv,
                _send: send,
                _relay: Some(conn),
            })),
            Ok(Opened::NoSession) => {
                conn.close(0u32.into(), b"done");
                Ok(None)
            }
            Err(e) => {
                conn.close(0u32.into(), b"done");
                Err(e)
            }
        }
    }
}

impl Sessions {
    /// Sends `request` to node `node`'s agent and waits for it to be accepted: on this
    /// server's session with it, else through the peer server that has one.
    pub async fn ask(&self, node: NodeId, request: &AgentRequest) -> Result<AgentAnswer, AskError> {
        match (self.ask_here(node, request).await, self.relay()) {
            (Err(AskError::NotConnected(_)), Some(relay)) => relay.ask(node, request).await,
            (result, _) => result,
        }
    }

    /// [`Sessions::ask`] on this server's own session only.
    pub(super) async fn ask_here(
        &self,
        node: NodeId,
        request: &AgentRequest,
    ) -> Result<AgentAnswer, AskError> {
        let conn = self.connection(node).ok_or(AskError::NotConnected(node))?;
        let opened = tokio::time::timeout(ACCEPT_WITHIN, open(&conn, request))
            .await
            .map_err(|_| AskError::TimedOut { node })?
            .map_err(|e| for_node(e, node))?;
        match opened {
            Opened::Accepted(send, recv) => Ok(AgentAnswer {
                recv,
                _send: send,
                _relay: None,
            }),
            Opened::NoSession => Err(AskError::Unreachable {
                node,
                why: "the agent answered as a relay would".into(),
            }),
        }
    }
}
