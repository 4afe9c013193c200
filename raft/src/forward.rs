//! Reaching the leader from any server: where it is, and the peer-link exchange with it,
//! bounded so that a dead leader costs an election, not a transport timeout.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::leader::ForwardError;
use crate::network::{self, PeerRequest, PeerResponse};
use crate::node::RaftNode;
use crate::{Raft, ServerId};

/// How many servers one request visits looking for the leader (this one, the leader it
/// names, the leader that one names) before it gives up: never a loop.
const MAX_HOPS: usize = 3;
/// How long a request waits for a leader to be known when none is.
const LEADER_WAIT: Duration = Duration::from_secs(2);
/// The longest a forwarded request waits for the leader's answer: its commit wait and then some.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a request for the leader goes.
enum Target {
    Local,
    Remote(ServerId, String),
}

fn mismatch() -> ForwardError {
    ForwardError::Raft("the leader answered a different request".into())
}

impl RaftNode {
    /// Runs an operation on the leader: `local` here when this server leads, else
    /// `request` over the peer link to the leader. A server that turns out not to lead
    /// names the leader it knows, which is tried next, at most [`MAX_HOPS`] servers in all.
    pub(crate) async fn on_leader<T, L, F>(
        &self,
        local: L,
        request: impl Fn() -> PeerRequest,
        answer: impl Fn(PeerResponse) -> Option<Result<T, ForwardError>>,
    ) -> Result<T, ForwardError>
    where
        L: Fn(Raft) -> F,
        F: Future<Output = Result<T, ForwardError>>,
    {
        let mut hint = None;
        for _ in 0..MAX_HOPS {
            let Some(target) = self.target(hint.take()).await else {
                break;
            };
            let result = match target {
                Target::Local => local(self.inner.raft.clone()).await,
                Target::Remote(id, addr) => {
                    tracing::debug!(leader = id, %addr, "forwarding to the leader");
                    self.forward(id, &addr, &request())
                        .await
                        .and_then(|r| answer(r).unwrap_or_else(|| Err(mismatch())))
                }
            };
            match result {
                Err(ForwardError::NotLeader { leader }) => hint = leader,
                other => return other,
            }
        }
        Err(ForwardError::NotLeader { leader: hint })
    }

    /// Where the leader is: the `hint` a server gave, else the leader this server knows,
    /// waiting up to [`LEADER_WAIT`] for one; `None` if none became known.
    async fn target(&self, hint: Option<(ServerId, String)>) -> Option<Target> {
        if let Some((id, addr)) = hint {
            return Some(if id == self.inner.id {
                Target::Local
            } else {
                Target::Remote(id, addr)
            });
        }
        let deadline = Instant::now() + LEADER_WAIT;
        let mut metrics = self.inner.raft.metrics();
        loop {
            {
                let m = metrics.borrow_and_update();
                if let Some(leader) = m.current_leader {
                    if leader == self.inner.id {
                        return Some(Target::Local);
                    }
                    if let Some(node) = m.membership_config.membership().get_node(&leader) {
                        return Some(Target::Remote(leader, node.addr.clone()));
                    }
                }
            }
            match tokio::time::timeout_at(deadline, metrics.changed()).await {
                Ok(Ok(())) => {}
                _ => return None,
            }
        }
    }

    /// Sends `req` to server `id` at `addr` and returns its answer.
    async fn forward(
        &self,
        id: ServerId,
        addr: &str,
        req: &PeerRequest,
    ) -> Result<PeerResponse, ForwardError> {
        let unreachable = |e: network::LinkError| {
            ForwardError::Raft(format!(
                "forwarding to the leader (server {id} at {addr}): {e}"
            ))
        };
        self.inner
            .network
            .check_reachable(id)
            .map_err(unreachable)?;
        // A leader that died looks alive on a cached connection until QUIC's idle timeout,
        // and a new connection to it waits as long for a handshake. Give up as soon as this
        // server sees leadership move, or after FORWARD_TIMEOUT.
        let mut metrics = self.inner.raft.metrics();
        let leader_then = metrics.borrow_and_update().current_leader;
        let leadership_moved = async move {
            while metrics.changed().await.is_ok() {
                if metrics.borrow_and_update().current_leader != leader_then {
                    return;
                }
            }
            std::future::pending::<()>().await
        };
        let exchange = async {
            let cached = self
                .inner
                .peers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(addr)
                .filter(|c| c.close_reason().is_none())
                .cloned();
            let conn = match cached {
                Some(conn) => conn,
                None => {
                    let conn = self
                        .inner
                        .network
                        .connect(addr)
                        .await
                        .map_err(unreachable)?;
                    self.inner
                        .peers
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(addr.to_owned(), conn.clone());
                    conn
                }
            };
            network::rpc(&conn, req).await.map_err(unreachable)
        };
        let result = tokio::select! {
            r = tokio::time::timeout(FORWARD_TIMEOUT, exchange) => r.unwrap_or_else(|_| Err(ForwardError::Raft(format!(
                "server {id} at {addr} did not answer within {FORWARD_TIMEOUT:?}; the request may or may not have been applied"
            )))),
            () = leadership_moved => Err(ForwardError::Raft(format!(
                "leadership moved away from server {id} while the request was in flight; it may or may not have been applied, retry"
            ))),
        };
        if result.is_err() {
            self.inner
                .peers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(addr);
        }
        result
    }
}
