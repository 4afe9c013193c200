//! A task's restart policy on the node: up to `attempts` restarts within `interval`, each
//! after `delay`; past that, fail or (mode `delay`) wait out the interval and start over.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use windflow_protocol::{RestartMode, RestartPolicy, Timestamp};

/// A tracker's current interval on the wall clock, to keep across agent restarts (a
/// monotonic instant means nothing to the next process).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RestartWindow {
    /// When the interval began (in delay mode, possibly in the future).
    pub start: Timestamp,
    /// Restarts counted in it.
    pub used: u32,
}

/// What follows a task's exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Start it again after this wait.
    Restart(Duration),
    /// Attempts are used up for this interval: start it again once the interval is over.
    WaitInterval(Duration),
    /// Attempts are used up: the allocation fails.
    Fail,
}

/// Counts one task's restarts within the policy's interval.
#[derive(Debug)]
pub(crate) struct RestartTracker {
    policy: RestartPolicy,
    /// When the current interval began (the first restart in it), and restarts in it.
    window: Option<(Instant, u32)>,
}

impl RestartTracker {
    #[cfg(test)]
    pub(crate) fn new(policy: RestartPolicy) -> Self {
        RestartTracker {
            policy,
            window: None,
        }
    }

    /// A tracker that goes on from a window kept by an earlier agent process; one whose
    /// interval is over by now is no window at all.
    pub(crate) fn resume(policy: RestartPolicy, window: Option<RestartWindow>) -> Self {
        let (now_wall, now) = (Timestamp::now().0, Instant::now());
        let window = window.and_then(|w| {
            if w.start.0 > now_wall {
                return Some((now + Duration::from_millis(w.start.0 - now_wall), w.used));
            }
            let ago = Duration::from_millis(now_wall - w.start.0);
            (ago < policy.interval.0)
                .then(|| now.checked_sub(ago).map(|start| (start, w.used)))
                .flatten()
        });
        RestartTracker { policy, window }
    }

    /// The current window, on the wall clock.
    pub(crate) fn window(&self) -> Option<RestartWindow> {
        let (start, used) = self.window?;
        let (now_wall, now) = (Timestamp::now().0, Instant::now());
        let start = if start <= now {
            now_wall.saturating_sub((now - start).as_millis() as u64)
        } else {
            now_wall + (start - now).as_millis() as u64
        };
        Some(RestartWindow {
            start: Timestamp(start),
            used,
        })
    }

    /// The task exited at `now`: what now.
    pub(crate) fn on_exit(&mut self, now: Instant) -> Decision {
        let interval = self.policy.interval.0;
        let (start, used) = match self.window {
            Some((start, used)) if now.saturating_duration_since(start) < interval => (start, used),
            _ => (now, 0),
        };
        if used < self.policy.attempts {
            self.window = Some((start, used + 1));
            return Decision::Restart(self.policy.delay.0);
        }
        match self.policy.mode {
            RestartMode::Fail => {
                self.window = Some((start, used));
                Decision::Fail
            }
            RestartMode::Delay => {
                let left = (start + interval).saturating_duration_since(now);
                let wait = left.max(self.policy.delay.0);
                // The restart after the wait is the first of a new interval.
                self.window = Some((now + wait, 1));
                Decision::WaitInterval(wait)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use windflow_protocol::HumanDuration;

    fn policy(attempts: u32, mode: RestartMode) -> RestartPolicy {
        RestartPolicy {
            attempts,
            interval: HumanDuration::from_secs(60),
            delay: HumanDuration::from_secs(2),
            mode,
        }
    }

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn restarts_up_to_attempts_within_the_interval_then_fails() {
        let t0 = Instant::now();
        let mut t = RestartTracker::new(policy(2, RestartMode::Fail));
        assert_eq!(t.on_exit(t0), Decision::Restart(2 * S));
        assert_eq!(t.on_exit(t0 + 5 * S), Decision::Restart(2 * S));
        assert_eq!(t.on_exit(t0 + 10 * S), Decision::Fail);
    }

    #[test]
    fn a_new_interval_gives_the_attempts_back() {
        let t0 = Instant::now();
        let mut t = RestartTracker::new(policy(1, RestartMode::Fail));
        assert_eq!(t.on_exit(t0), Decision::Restart(2 * S));
        // The interval that began at t0 is over: a fresh count.
        assert_eq!(t.on_exit(t0 + 61 * S), Decision::Restart(2 * S));
        assert_eq!(t.on_exit(t0 + 62 * S), Decision::Fail);
    }

    #[test]
    fn delay_mode_waits_out_the_interval_and_starts_over() {
        let t0 = Instant::now();
        let mut t = RestartTracker::new(policy(1, RestartMode::Delay));
        assert_eq!(t.on_exit(t0), Decision::Restart(2 * S));
        assert_eq!(t.on_exit(t0 + 10 * S), Decision::WaitInterval(50 * S));
        // Restarted at t0 + 60s as the first of a new interval: the next exit is past it.
        assert_eq!(t.on_exit(t0 + 65 * S), Decision::WaitInterval(55 * S));
    }

    #[test]
    fn a_resumed_tracker_keeps_the_restarts_of_its_interval() {
        let p = policy(1, RestartMode::Fail);
        let mut t = RestartTracker::new(p);
        assert_eq!(t.on_exit(Instant::now()), Decision::Restart(2 * S));
        let kept = t.window().unwrap();
        assert_eq!(kept.used, 1);
        let mut again = RestartTracker::resume(p, Some(kept));
        assert_eq!(again.on_exit(Instant::now()), Decision::Fail);
        // An interval that is over gives its attempts back.
        let old = RestartWindow {
            start: Timestamp(Timestamp::now().0 - 61_000),
            used: 1,
        };
        let mut fresh = RestartTracker::resume(p, Some(old));
        assert_eq!(fresh.on_exit(Instant::now()), Decision::Restart(2 * S));
    }

    #[test]
    fn no_attempts_fails_at_the_first_exit() {
        let mut t = RestartTracker::new(policy(0, RestartMode::Fail));
        assert_eq!(t.on_exit(Instant::now()), Decision::Fail);
    }
}
