//! Serving `windflow-relay/1`: a peer server passes on a request for an agent connected to
//! this server ([`RelayRequest`]); this server asks its own session only (never another
//! peer), and copies the agent's frames back until either side is done. Only servers'
//! certificates are served: an agent shares the CA but may not ask another agent.

use std::time::Duration;

use windflow_certs::PeerIdentity;
use windflow_certs::wire::{WireError, read_frame, write_frame};
use windflow_protocol::messages::{AgentReply, RelayRequest};

use super::{AskError, Gateway};

/// How long a peer has to send its request once it opened a stream.
const REQUEST_WITHIN: Duration = Duration::from_secs(10);

impl Gateway {
    /// Serves relay requests on one accepted `windflow-relay/1` connection until it closes.
    pub(super) async fn serve_relay(&self, conn: quinn::Connection) {
        let peer = match windflow_certs::peer_identity(&conn) {
            Ok(PeerIdentity::Server(name)) => name,
            other => {
                tracing::warn!(remote = %conn.remote_address(), identity = ?other, "refused a relay request from a non-server");
                conn.close(2u32.into(), b"only servers may relay");
                return;
            }
        };
        while let Ok((send, recv)) = conn.accept_bi().await {
            let gateway = self.clone();
            let peer = peer.clone();
            tokio::spawn(async move {
                if let Err(e) = gateway.relay_one(send, recv).await {
                    tracing::debug!(%peer, error = %e, "a relayed request ended early");
                }
            });
        }
    }

    async fn relay_one(
        &self,
        mut send: quinn::SendStream,
        mut recv: quinn::RecvStream,
    ) -> Result<(), WireError> {
        let relayed =
            match tokio::time::timeout(REQUEST_WITHIN, read_frame::<RelayRequest>(&mut recv)).await
            {
                Ok(Ok(Some(r))) => r,
                Ok(Ok(None)) | Err(_) => return Ok(()),
                Ok(Err(e)) => return Err(e),
            };
        let mut answer = match self.sessions.ask_here(relayed.node, &relayed.request).await {
            Ok(answer) => answer,
            Err(AskError::NotConnected(_)) => {
                write_frame(&mut send, &AgentReply::NoSession).await?;
                let _ = send.finish();
                return Ok(());
            }
            Err(AskError::Refused { reason, missing }) => {
                write_frame(&mut send, &AgentReply::Refused { reason, missing }).await?;
                let _ = send.finish();
                return Ok(());
            }
            Err(e) => {
                let reply = AgentReply::Refused {
                    reason: e.to_string(),
                    missing: false,
                };
                write_frame(&mut send, &reply).await?;
                let _ = send.finish();
                return Ok(());
            }
        };
        tracing::debug!(node = %relayed.node, "relaying a request to an agent for a peer");
        write_frame(&mut send, &AgentReply::Accepted).await?;
        let stopped = send.stopped();
        tokio::pin!(stopped);
        loop {
            let frame = tokio::select! {
                // The asking server went away: dropping `answer` stops the agent's side.
                _ = &mut stopped => return Ok(()),
                frame = answer.next() => frame,
            };
            match frame {
                Ok(Some(frame)) => write_frame(&mut send, &frame).await?,
                Ok(None) | Err(_) => break,
            }
        }
        let _ = send.finish();
        Ok(())
    }
}
