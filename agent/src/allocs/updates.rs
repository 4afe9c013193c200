//! What the servers have yet to hear: at most one update in flight per allocation, sent
//! again after a reconnect or when its ack is late; what changed meanwhile goes in the next.

use std::time::{Duration, Instant};

use windflow_protocol::messages::AllocUpdate;
use windflow_protocol::{AllocHealth, AllocId, AllocPort, ClientStatus};

use super::Allocs;

/// The update sent and not yet acknowledged.
pub(super) struct InFlight {
    pub session: u64,
    pub at: Instant,
    pub client: ClientStatus,
    pub restarts: u32,
    /// How many of `unacked` it carried (the oldest ones).
    pub events: usize,
    pub ports: Vec<AllocPort>,
    pub health: AllocHealth,
}

impl Allocs {
    /// The updates to send now in session `session`: for each allocation with news and no
    /// update in flight in this session (or one in flight for longer than `resend_after`).
    pub(crate) fn due(
        &self,
        session: u64,
        now: Instant,
        resend_after: Duration,
    ) -> Vec<AllocUpdate> {
        let mut st = self.lock();
        let mut due = Vec::new();
        for (id, e) in st.entries.iter_mut() {
            if !e.dirty() {
                continue;
            }
            if let Some(f) = &e.in_flight
                && f.session == session
                && now.saturating_duration_since(f.at) < resend_after
            {
                continue;
            }
            let ports = e.all_ports();
            e.in_flight = Some(InFlight {
                session,
                at: now,
                client: e.client,
                restarts: e.restarts,
                events: e.unacked.len(),
                ports: ports.clone(),
                health: e.health.clone(),
            });
            due.push(AllocUpdate {
                alloc: *id,
                client: e.client,
                restarts: e.restarts,
                events: e.unacked.clone(),
                ports,
                health: e.health.clone(),
            });
        }
        due
    }

    /// A server recorded the update in flight with status `client`.
    pub(crate) fn ack(&self, alloc: AllocId, client: ClientStatus) {
        let mut st = self.lock();
        let Some(e) = st.entries.get_mut(&alloc) else {
            return;
        };
        let Some(f) = e.in_flight.take_if(|f| f.client == client) else {
            tracing::debug!(%alloc, ?client, "ignoring an ack for no update in flight");
            return;
        };
        let n = f.events.min(e.unacked.len());
        e.unacked.drain(..n);
        e.acked = Some((f.client, f.restarts));
        e.acked_ports = f.ports;
        e.acked_health = f.health;
        let more = e.dirty();
        if e.forgettable() {
            st.entries.remove(&alloc);
            self.forget(alloc);
        } else {
            self.save(e);
        }
        drop(st);
        if more {
            self.changed.notify_one();
        }
    }
}
