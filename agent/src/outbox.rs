//! Results that no server has acknowledged yet. A result stays here from the moment its run
//! ends until a `FinishedAck` for it arrives, and is sent again after every reconnect and,
//! within a session, when it has waited too long for its ack (the server leaves a result
//! unacknowledged when it could not record it yet, and expects it again).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use windflow_protocol::RunId;
use windflow_protocol::messages::TaskFinished;

#[derive(Debug)]
struct Entry {
    finished: TaskFinished,
    /// The session it was last sent in, and when.
    sent: Option<(u64, Instant)>,
}

#[derive(Debug, Default)]
pub(crate) struct Outbox {
    entries: Mutex<BTreeMap<RunId, Entry>>,
}

impl Outbox {
    fn entries(&self) -> std::sync::MutexGuard<'_, BTreeMap<RunId, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps a result until it is acknowledged.
    pub fn insert(&self, finished: TaskFinished) {
        self.entries().insert(
            finished.run,
            Entry {
                finished,
                sent: None,
            },
        );
    }

    pub fn contains(&self, run: RunId) -> bool {
        self.entries().contains_key(&run)
    }

    /// Forgets an acknowledged result; false when it was not here.
    pub fn ack(&self, run: RunId) -> bool {
        self.entries().remove(&run).is_some()
    }

    pub fn len(&self) -> usize {
        self.entries().len()
    }

    /// The results to send now in session `session`: those not sent in it yet, and those
    /// sent more than `resend_after` ago. They are marked sent at `now`.
    pub fn due(&self, session: u64, now: Instant, resend_after: Duration) -> Vec<TaskFinished> {
        let mut due = Vec::new();
        for entry in self.entries().values_mut() {
            let send = match entry.sent {
                Some((s, at)) if s == session => now.saturating_duration_since(at) >= resend_after,
                _ => true,
            };
            if send {
                entry.sent = Some((session, now));
                due.push(entry.finished.clone());
            }
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use windflow_protocol::{HumanDuration, RunOutcome, Timestamp};

    use super::*;

    fn finished(run: u64) -> TaskFinished {
        TaskFinished {
            run: RunId(run),
            outcome: RunOutcome::Succeeded,
            exit_code: Some(0),
            attempts: 1,
            started_at: Timestamp::now(),
            duration: HumanDuration::from_millis(5),
            stdout: b"out".to_vec(),
            stdout_truncated: false,
            stderr_tail: Vec::new(),
            error: None,
        }
    }

    fn runs(v: &[TaskFinished]) -> Vec<u64> {
        v.iter().map(|f| f.run.0).collect()
    }

    const RESEND: Duration = Duration::from_secs(10);

    #[test]
    fn results_are_sent_once_per_session_until_acknowledged() {
        let outbox = Outbox::default();
        let t0 = Instant::now();
        outbox.insert(finished(1));
        outbox.insert(finished(2));
        assert_eq!(runs(&outbox.due(1, t0, RESEND)), [1, 2]);
        assert!(outbox.due(1, t0, RESEND).is_empty(), "already sent");
        outbox.insert(finished(3));
        assert_eq!(runs(&outbox.due(1, t0, RESEND)), [3]);
        // A new session sends everything unacknowledged again.
        assert!(outbox.ack(RunId(2)));
        assert!(!outbox.ack(RunId(2)));
        assert_eq!(runs(&outbox.due(2, t0, RESEND)), [1, 3]);
        assert!(outbox.contains(RunId(1)) && !outbox.contains(RunId(2)));
        assert_eq!(outbox.len(), 2);
    }

    #[test]
    fn a_result_waiting_too_long_for_its_ack_is_sent_again() {
        let outbox = Outbox::default();
        let t0 = Instant::now();
        outbox.insert(finished(1));
        assert_eq!(runs(&outbox.due(1, t0, RESEND)), [1]);
        assert!(outbox.due(1, t0 + RESEND / 2, RESEND).is_empty());
        assert_eq!(runs(&outbox.due(1, t0 + RESEND, RESEND)), [1]);
        assert!(outbox.due(1, t0 + RESEND + RESEND / 2, RESEND).is_empty());
    }
}
