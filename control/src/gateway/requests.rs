//! Asking a connected agent for something bulky (an allocation's logs, its stats): each
//! request opens a bi-directional stream of its own on the agent's connection, so the
//! control stream stays free of bulk data. The agent answers `Accepted` or `Refused`, then
//! streams its answer and finishes the stream; dropping the [`AgentAnswer`] cancels it.

use std::time::Duration;

use windflow_certs::wire::{WireError, read_frame, write_frame};
use windflow_protocol::NodeId;
use windflow_protocol::messages::{AgentReply, AgentRequest};

use super::Sessions;

/// How long an agent has to accept or refuse a request.
const ACCEPT_WITHIN: Duration = Duration::from_secs(15);

/// Why a request to an agent got no answer.
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    #[error("node {0}'s agent has no session with this server")]
    NotConnected(NodeId),
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
}

impl AgentAnswer {
    /// The next frame; `None` once the agent finished the stream.
    pub async fn next(&mut self) -> Result<Option<AgentReply>, WireError> {
        read_frame(&mut self.recv).await
    }
}

impl Sessions {
    /// Sends `request` to node `node`'s agent on a new stream and waits for it to be
    /// accepted.
    pub async fn ask(&self, node: NodeId, request: &AgentRequest) -> Result<AgentAnswer, AskError> {
        let conn = self.connection(node).ok_or(AskError::NotConnected(node))?;
        let unreachable = |why: String| AskError::Unreachable { node, why };
        let opened = async {
            let (mut send, mut recv) = conn
                .open_bi()
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            write_frame(&mut send, request)
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            match read_frame::<AgentReply>(&mut recv).await {
                Ok(Some(AgentReply::Accepted)) => Ok(AgentAnswer { recv, _send: send }),
                Ok(Some(AgentReply::Refused { reason, missing })) => {
                    Err(AskError::Refused { reason, missing })
                }
                Ok(Some(_)) => Err(unreachable("it answered before accepting".into())),
                Ok(None) => Err(unreachable("it closed the stream without answering".into())),
                Err(e) => Err(unreachable(e.to_string())),
            }
        };
        tokio::time::timeout(ACCEPT_WITHIN, opened)
            .await
            .map_err(|_| AskError::TimedOut { node })?
    }
}
