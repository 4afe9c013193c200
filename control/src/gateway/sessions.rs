//! The agents with a live session on this server, and a way to send them messages.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, watch};
use windflow_protocol::messages::ServerMessage;
use windflow_protocol::{DriverKind, NodeId, Timestamp};

#[derive(Clone)]
pub struct Sessions {
    inner: Arc<Mutex<HashMap<NodeId, Entry>>>,
    /// How agents connected to other servers are reached (set once the server has its
    /// endpoint; unset in unit tests).
    relay: Arc<std::sync::OnceLock<super::Relay>>,
    /// Bumped whenever an agent joins or leaves, to wake the dispatcher.
    changed: Arc<watch::Sender<u64>>,
}

struct Entry {
    session: u64,
    tx: mpsc::Sender<ServerMessage>,
    /// The agent's connection, on which requests for logs and stats open streams of their
    /// own (`None` in unit tests).
    conn: Option<quinn::Connection>,
    drivers: Vec<DriverKind>,
    /// When its agent was last heard: the session opening, then each heartbeat.
    heard: Timestamp,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions {
            inner: Arc::default(),
            relay: Arc::default(),
            changed: Arc::new(watch::channel(0).0),
        }
    }
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<NodeId, Entry>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    pub fn is_connected(&self, node: NodeId) -> bool {
        self.lock().contains_key(&node)
    }

    /// Registers a session; a newer session of the same node replaces the older one.
    pub(super) fn insert(
        &self,
        node: NodeId,
        session: u64,
        tx: mpsc::Sender<ServerMessage>,
        conn: Option<quinn::Connection>,
        drivers: Vec<DriverKind>,
    ) {
        self.lock().insert(
            node,
            Entry {
                session,
                tx,
                conn,
                drivers,
                heard: Timestamp::now(),
            },
        );
        self.changed.send_modify(|n| *n += 1);
    }

    /// Forgets a session, unless the node has opened a newer one since.
    pub(super) fn remove(&self, node: NodeId, session: u64) {
        let mut map = self.lock();
        if map.get(&node).is_some_and(|e| e.session == session) {
            map.remove(&node);
            drop(map);
            self.changed.send_modify(|n| *n += 1);
        }
    }

    /// The node's agent sent a heartbeat on its current session.
    pub(super) fn heard(&self, node: NodeId) {
        if let Some(e) = self.lock().get_mut(&node) {
            e.heard = Timestamp::now();
        }
    }

    /// The nodes whose agents were heard at `since` or later, and when last: what this
    /// server reports through raft each heartbeat interval. A connection whose agent died
    /// without closing it lingers until QUIC's idle timeout, but falls silent at once.
    pub fn heard_since(&self, since: Timestamp) -> Vec<(NodeId, Timestamp)> {
        let mut heard: Vec<(NodeId, Timestamp)> = self
            .lock()
            .iter()
            .filter(|(_, e)| e.heard >= since)
            .map(|(node, e)| (*node, e.heard))
            .collect();
        heard.sort();
        heard
    }

    /// The connected nodes offering `driver`, by ID.
    pub fn offering(&self, driver: DriverKind) -> Vec<NodeId> {
        let mut nodes: Vec<NodeId> = self
            .lock()
            .iter()
            .filter(|(_, e)| e.drivers.contains(&driver))
            .map(|(node, _)| *node)
            .collect();
        nodes.sort();
        nodes
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The connected node offering `driver` with the fewest runs in `load`.
    pub fn pick(&self, driver: DriverKind, load: &HashMap<NodeId, usize>) -> Option<NodeId> {
        self.lock()
            .iter()
            .filter(|(_, e)| e.drivers.contains(&driver))
            .min_by_key(|(node, _)| (load.get(node).copied().unwrap_or(0), **node))
            .map(|(node, _)| *node)
    }

    /// Reaches agents connected to other servers through them from now on.
    pub fn set_relay(&self, relay: super::Relay) {
        if self.relay.set(relay).is_err() {
            tracing::warn!("the relay to peer servers was set twice; keeping the first");
        }
    }

    pub(super) fn relay(&self) -> Option<&super::Relay> {
        self.relay.get()
    }

    /// The connection of the node's agent, when it has a session with this server.
    pub fn connection(&self, node: NodeId) -> Option<quinn::Connection> {
        self.lock().get(&node).and_then(|e| e.conn.clone())
    }

    /// Queues `msg` for the node's agent; false when it has no session.
    pub async fn send(&self, node: NodeId, msg: ServerMessage) -> bool {
        let tx = self.lock().get(&node).map(|e| e.tx.clone());
        match tx {
            Some(tx) => tx.send(msg).await.is_ok(),
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_least_loaded_node_with_the_driver() {
        let s = Sessions::default();
        let (tx, _rx) = mpsc::channel(1);
        s.insert(NodeId(1), 1, tx.clone(), None, vec![DriverKind::Exec]);
        s.insert(NodeId(2), 2, tx.clone(), None, vec![DriverKind::Exec]);
        s.insert(NodeId(3), 3, tx.clone(), None, vec![DriverKind::Docker]);
        let load = HashMap::from([(NodeId(1), 2)]);
        assert_eq!(s.pick(DriverKind::Exec, &load), Some(NodeId(2)));
        assert_eq!(s.pick(DriverKind::Libvirt, &load), None);
        s.remove(NodeId(2), 99); // stale session: ignored
        assert!(s.is_connected(NodeId(2)));
        s.remove(NodeId(2), 2);
        assert_eq!(s.pick(DriverKind::Exec, &load), Some(NodeId(1)));
        assert_eq!(s.offering(DriverKind::Exec), [NodeId(1)]);
    }

    #[test]
    fn only_agents_heard_since_a_time_are_reported() {
        let s = Sessions::default();
        let (tx, _rx) = mpsc::channel(1);
        s.insert(NodeId(1), 1, tx.clone(), None, vec![DriverKind::Exec]);
        s.insert(NodeId(2), 2, tx, None, vec![DriverKind::Exec]);
        let later = Timestamp(Timestamp::now().0 + 60_000);
        assert_eq!(s.heard_since(later), []);
        s.lock().get_mut(&NodeId(2)).unwrap().heard = later;
        assert_eq!(s.heard_since(later), [(NodeId(2), later)]);
        assert_eq!(s.heard_since(Timestamp(0)).len(), 2);
    }
}
