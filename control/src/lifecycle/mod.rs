//! A node's life on the servers: every server reports the agents it hears
//! ([`heartbeats`]), the leader marks silent nodes down ([`monitor`]) and ends drains
//! ([`drain`]). What apply does with each report is in `windflow_raft`'s `nodes` module.

pub mod drain;
pub mod heartbeats;
pub mod monitor;

use std::time::Duration;

/// How often agents are heard and how long a node may stay silent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Liveness {
    /// Agents send a heartbeat this often; servers report them to raft as often.
    pub interval: Duration,
    /// A node not heard from for this long is marked down.
    pub grace: Duration,
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness {
            interval: Duration::from_secs(2),
            grace: Duration::from_secs(10),
        }
    }
}

impl Liveness {
    /// How often the leader's loops look: often enough that a node goes down within a
    /// fraction of the grace period after it ends.
    pub fn tick(&self) -> Duration {
        self.interval
            .min(self.grace / 2)
            .max(Duration::from_millis(100))
    }
}

const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// The next wait of a loop: its tick after success, a doubling backoff (capped) after a
/// failure.
fn next_wait(ok: bool, tick: Duration, backoff: &mut Duration) -> Duration {
    if ok {
        *backoff = tick;
        tick
    } else {
        *backoff = (*backoff * 2).min(MAX_BACKOFF.max(tick));
        *backoff
    }
}
