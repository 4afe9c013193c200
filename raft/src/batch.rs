//! Proposer-side batching: writes that arrive while one raft entry is in flight go out
//! together as one [`Command::Batch`], so a disk flush and a replication round serve many
//! writers. One writer alone sees no delay: a batch is whatever is queued when the previous
//! one is done.

use std::sync::Weak;

use tokio::sync::{mpsc, oneshot};

use crate::command::{Applied, Command};
use crate::node::{Inner, RaftNode};
use crate::{WriteError, encode};

/// The most commands in one entry.
const MAX_COMMANDS: usize = 256;
/// The most encoded bytes in one entry, well under a replication frame.
const MAX_BYTES: usize = 4 * 1024 * 1024;

pub(crate) struct Queued {
    pub cmd: Command,
    pub reply: oneshot::Sender<Result<Applied, WriteError>>,
}

/// Starts the batcher of a node; it stops when the node is dropped.
pub(crate) fn spawn(node: Weak<Inner>) -> mpsc::Sender<Queued> {
    let (tx, mut rx) = mpsc::channel::<Queued>(4 * MAX_COMMANDS);
    tokio::spawn(async move {
        let mut carry: Option<Queued> = None;
        loop {
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
            propose(&RaftNode::from_inner(inner), batch).await;
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
