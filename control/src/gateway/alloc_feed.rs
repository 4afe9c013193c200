//! One task per server that follows allocation changes for every agent session: on each
//! applied entry it reads which nodes changed since it last looked (the state reader's
//! in-memory change log) and wakes the sessions of the nodes concerned. A session then reads its own
//! node's changes; a node with nothing new costs nothing, however many sessions there are.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use windflow_protocol::NodeId;
use windflow_raft::StateReader;

/// How long the feed waits before reading again after a store error.
const RETRY_AFTER: Duration = Duration::from_millis(500);

/// Per connected node, the highest allocation index known to hold a change of its.
#[derive(Clone, Default)]
pub struct AllocFeed {
    nodes: Arc<Mutex<HashMap<NodeId, watch::Sender<u64>>>>,
}

/// A session's subscription; the node's entry goes with its last subscriber.
pub(super) struct Subscription {
    feed: AllocFeed,
    node: NodeId,
    pub(super) changed: watch::Receiver<u64>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut nodes = self.feed.lock();
        // This receiver is still alive here: the last one leaves a count of one.
        if nodes
            .get(&self.node)
            .is_some_and(|tx| tx.receiver_count() <= 1)
        {
            nodes.remove(&self.node);
        }
    }
}

impl AllocFeed {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<NodeId, watch::Sender<u64>>> {
        self.nodes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wakes on every change of the node's allocations from now on. Subscribe before
    /// reading what changed, so nothing falls between the read and the first wake.
    pub(super) fn subscribe(&self, node: NodeId) -> Subscription {
        let changed = self
            .lock()
            .entry(node)
            .or_insert_with(|| watch::channel(0).0)
            .subscribe();
        Subscription {
            feed: self.clone(),
            node,
            changed,
        }
    }

    /// How many nodes have a subscribed session.
    #[cfg(test)]
    fn subscribed(&self) -> usize {
        self.lock().len()
    }

    /// Follows the store until `shutdown`.
    pub async fn follow(self, reader: StateReader, shutdown: CancellationToken) {
        let mut applied = reader.subscribe();
        // Sessions read what came before they subscribed themselves.
        let mut cursor = loop {
            match reader.alloc_index() {
                Ok(i) => break i,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the allocation index");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(RETRY_AFTER) => {}
                    }
                }
            }
        };
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                r = applied.changed() => if r.is_err() { return },
            }
            match self.wake(&reader, cursor) {
                Ok(upto) => cursor = upto,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read allocation changes");
                    tokio::time::sleep(RETRY_AFTER).await;
                }
            }
        }
    }

    /// Wakes the sessions of the nodes whose allocations changed after `cursor`; returns
    /// the index read up to.
    fn wake(&self, reader: &StateReader, cursor: u64) -> Result<u64, windflow_raft::StoreError> {
        let upto = reader.alloc_index()?;
        if upto <= cursor {
            return Ok(cursor);
        }
        let nodes = self.lock();
        match reader.nodes_with_alloc_changes(cursor, upto) {
            Some(changed) => {
                for node in changed {
                    if let Some(tx) = nodes.get(&node) {
                        tx.send_replace(upto);
                    }
                }
            }
            // This server does not know where those changes were (its state was replaced
            // by a snapshot or a restore): every session looks for itself.
            None => {
                for tx in nodes.values() {
                    tx.send_replace(upto);
                }
            }
        }
        Ok(upto)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_entry_lives_as_long_as_a_session_subscribes() {
        let feed = AllocFeed::default();
        let first = feed.subscribe(NodeId(1));
        let second = feed.subscribe(NodeId(1));
        let other = feed.subscribe(NodeId(2));
        assert_eq!(feed.subscribed(), 2);
        drop(first);
        assert_eq!(feed.subscribed(), 2, "node 1 still has a session");
        feed.lock()[&NodeId(1)].send_replace(7);
        assert_eq!(*second.changed.borrow(), 7);
        drop(second);
        drop(other);
        assert_eq!(feed.subscribed(), 0);
    }
}
