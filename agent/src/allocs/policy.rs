//! A task's restart policy on the node: up to `attempts` restarts within `interval`, each
//! after `delay`; past that, fail or (mode `delay`) wait out the interval and start over.

use std::time::Duration;

use tokio::time::Instant;
use windflow_protocol::{RestartMode, RestartPolicy};

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
    pub(crate) fn new(policy: RestartPolicy) -> Self {
        RestartTracker {
            policy,
            window: None,
        }
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
    fn no_attempts_fails_at_the_first_exit() {
        let mut t = RestartTracker::new(policy(0, RestartMode::Fail));
        assert_eq!(t.on_exit(Instant::now()), Decision::Fail);
    }
}
