//! Proposer-side batching: writes that arrive while raft entries are in flight go out
//! together as one [`Command::Batch`], so a disk flush and a replication round serve many
//! writers. One writer alone sees no delay: a batch is whatever is queued when an in-flight
//! slot frees up. Up to [`MAX_IN_FLIGHT`] entries are proposed at once, so the leader's
//! flush of one overlaps the replication of the one before.
//!
//! Lazy writes (bookkeeping nobody waits on, such as audit entries) take no entry of their
//! own while real writes keep coming: they ride in the next batch, and go alone only when
//! no write arrives within [`LAZY_WAIT`].

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::command::{Applied, Command};
use crate::node::{Inner, RaftNode};
use crate::{WriteError, encode};

/// The most commands in one entry.
const MAX_COMMANDS: usize = 256;
/// The most encoded bytes in one entry, well under a replication frame.
const MAX_BYTES: usize = 4 * 1024 * 1024;
/// The most batches one server has proposed and not yet seen answered.
const MAX_IN_FLIGHT: usize = 3;
/// How long a lazy write waits for a real one to share its entry.
pub(crate) const LAZY_WAIT: Duration = Duration::from_millis(20);

pub(crate) struct Queued {
    pub cmd: Command,
    pub reply: oneshot::Sender<Result<Applied, WriteError>>,
}

/// Where a node's batchable writes queue: `eager` for writes someone waits on, `lazy` for
/// those that may wait for company.
pub(crate) struct Queues {
    pub eager: mpsc::Sender<Queued>,
    pub lazy: mpsc::Sender<Queued>,
}

/// Starts the batcher of a node; it stops when the node is dropped.
pub(crate) fn spawn(node: Weak<Inner>) -> Queues {
    let (tx, mut rx) = mpsc::channel::<Queued>(4 * MAX_COMMANDS);
    let (lazy_tx, mut lazy) = mpsc::channel::<Queued>(4 * MAX_COMMANDS);
    tokio::spawn(async move {
        let mut carry: Option<Queued> = None;
        let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        loop {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let mut batch = Vec::new();
            let mut bytes = 0;
            match carry.take() {
                Some(q) => batch.push(q),
                None => {
                    let Some(first) = first(&mut rx, &mut lazy).await else {
                        return;
                    };
                    batch.extend(first);
                }
            }
            for q in &batch {
                bytes += size(&q.cmd);
            }
            // Eager writes first, then lazy ones, while the entry has room.
            for queue in [&mut rx, &mut lazy] {
                while batch.len() < MAX_COMMANDS && carry.is_none() {
                    let Ok(next) = queue.try_recv() else { break };
                    let next_bytes = size(&next.cmd);
                    if bytes + next_bytes > MAX_BYTES {
                        carry = Some(next);
                        break;
                    }
                    bytes += next_bytes;
                    batch.push(next);
                }
            }
            let Some(inner) = node.upgrade() else { return };
            tokio::spawn(async move {
                propose(&RaftNode::from_inner(inner), batch).await;
                drop(slot);
            });
        }
    });
    Queues {
        eager: tx,
        lazy: lazy_tx,
    }
}

/// What starts the next batch: an eager write as soon as one comes; a lazy one waits up to
/// [`LAZY_WAIT`] for an eager one to go with. `None` once the node is gone.
async fn first(
    eager: &mut mpsc::Receiver<Queued>,
    lazy: &mut mpsc::Receiver<Queued>,
) -> Option<Vec<Queued>> {
    let waiting = tokio::select! {
        biased;
        q = eager.recv() => return q.map(|q| vec![q]),
        q = lazy.recv() => q?,
    };
    match tokio::time::timeout(LAZY_WAIT, eager.recv()).await {
        Ok(Some(q)) => Some(vec![q, waiting]),
        Ok(None) => None,
        Err(_) => Some(vec![waiting]),
    }
}

fn size(cmd: &Command) -> usize {
    encode(cmd).map_or(MAX_BYTES, |v| v.len())
}

async fn propose(node: &RaftNode, mut batch: Vec<Queued>) {
    if batch.len() == 1 {
        let q = batch.remove(0);
        let _ = q.reply.send(node.propose(q.cmd).await);
        return;
    }
    let (cmds, replies): (Vec<Command>, Vec<_>) =
        batch.into_iter().map(|q| (q.cmd, q.reply)).unzip();
    let (commands, started) = (cmds.len(), std::time::Instant::now());
    tracing::trace!(commands, "proposing a batch");
    let answer = node.propose(Command::Batch(cmds)).await;
    tracing::trace!(
        commands,
        elapsed_us = started.elapsed().as_micros() as u64,
        "batch answered"
    );
    match answer {
        Ok(Applied::Batch(responses)) if responses.len() == replies.len() => {
            for (reply, response) in replies.into_iter().zip(responses) {
                let _ = reply.send(response.map_err(WriteError::Rejected));
            }
        }
        Ok(other) => {
            for reply in replies {
                let _ = reply.send(Err(WriteError::Raft(format!(
                    "a batch was answered with {other:?}"
                ))));
            }
        }
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(e.duplicate()));
            }
        }
    }
}
