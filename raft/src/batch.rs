//! Proposer-side batching: writes that arrive while raft entries are in flight go out
//! together as one [`Command::Batch`], so a disk flush and a replication round serve many
//! writers. One writer alone sees no delay: a batch is whatever is queued when an in-flight
//! slot frees up. Up to [`MAX_IN_FLIGHT`] entries are proposed at once, so the leader's
//! flush of one overlaps the replication of the one before.

use std::sync::{Arc, Weak};

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

pub(crate) struct Queued {
    pub cmd: Command,
    pub reply: oneshot::Sender<Result<Applied, WriteError>>,
}

/// Starts the batcher of a node; it stops when the node is dropped.
pub(crate) fn spawn(node: Weak<Inner>) -> mpsc::Sender<Queued> {
    let (tx, mut rx) = mpsc::channel::<Queued>(4 * MAX_COMMANDS);
    tokio::spawn(async move {
        let mut carry: Option<Queued> = None;
        let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        loop {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let first = match carry.take() {
                Some(q) => q,
                None => match rx.recv().await {
                    Some(q) => q,
                    None => return,
                },
            };
            let mut bytes = size(&first.cmd);
            let mut batch = vec![first];
            while batch.len() < MAX_COMMANDS {
                let Ok(next) = rx.try_recv() else { break };
                let next_bytes = size(&next.cmd);
                if bytes + next_bytes > MAX_BYTES {
                    carry = Some(next);
                    break;
                }
                bytes += next_bytes;
                batch.push(next);
            }
            let Some(inner) = node.upgrade() else { return };
            tokio::spawn(async move {
                propose(&RaftNode::from_inner(inner), batch).await;
                drop(slot);
            });
        }
    });
    tx
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
    tracing::trace!(commands = cmds.len(), "proposing a batch");
    match node.propose(Command::Batch(cmds)).await {
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
