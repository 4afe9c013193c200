//! Where the cron loop reads the time: the wall clock in the server, a hand-moved one in
//! tests.

use windflow_protocol::Timestamp;

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
}

/// The wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A clock that moves only when told to.
#[cfg(test)]
#[derive(Debug, Default)]
pub struct ManualClock(std::sync::atomic::AtomicU64);

#[cfg(test)]
impl ManualClock {
    pub fn at(t: Timestamp) -> Self {
        ManualClock(std::sync::atomic::AtomicU64::new(t.0))
    }

    pub fn set(&self, t: Timestamp) {
        self.0.store(t.0, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn advance(&self, d: std::time::Duration) {
        self.0
            .fetch_add(d.as_millis() as u64, std::sync::atomic::Ordering::SeqCst);
    }
}

#[cfg(test)]
impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(std::sync::atomic::Ordering::SeqCst))
    }
}
