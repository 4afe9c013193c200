//! Results that no server has acknowledged yet. A result stays here from the moment its run
//! ends until a `FinishedAck` for it arrives, and is sent again after every reconnect and,
//! within a session, when it has waited too long for its ack (the server leaves a result
//! unacknowledged when it could not record it yet, and expects it again). Results are kept
//! in the agent's store too, so those of an agent that stopped before their ack are sent
//! after it starts again.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use windflow_protocol::RunId;
use windflow_protocol::messages::TaskFinished;

use crate::store::{Store, StoreError};

#[derive(Debug)]
struct Entry {
    finished: TaskFinished,
    /// The session it was last sent in, and when.
    sent: Option<(u64, Instant)>,
}

pub(crate) struct Outbox {
    entries: Mutex<BTreeMap<RunId, Entry>>,
    store: Store,
}

impl Outbox {
    /// The outbox as the store left it.
    pub fn open(store: Store) -> Result<Outbox, StoreError> {
        let entries = store
            .outbox()?
            .into_iter()
            .map(|finished| {
                let entry = Entry {
                    finished,
                    sent: None,
                };
                (entry.finished.run, entry)
            })
            .collect();
        Ok(Outbox {
            entries: Mutex::new(entries),
            store,
        })
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, BTreeMap<RunId, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps a result until it is acknowledged: in the store, where the run's record gives
    /// way to it in the same batch, and here. Should the store fail, the result is still
    /// sent from memory (and lost only if the agent stops before its ack).
    /// True when the store has it.
    pub fn insert(&self, finished: TaskFinished) -> bool {
        let stored = match self.store.finish_run(&finished) {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(run = %finished.run, error = %e, "cannot keep the result on disk");
                false
            }
        };
        self.entries().insert(
            finished.run,
            Entry {
                finished,
                sent: None,
            },
        );
        stored
    }

    pub fn contains(&self, run: RunId) -> bool {
        self.entries().contains_key(&run)
    }

    /// Forgets an acknowledged result; false when it was not here.
    pub fn ack(&self, run: RunId) -> bool {
        let known = self.entries().remove(&run).is_some();
        if known && let Err(e) = self.store.ack(run) {
            tracing::warn!(%run, error = %e, "cannot forget the acknowledged result on disk");
        }
        known
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

    fn outbox() -> (tempfile::TempDir, Outbox) {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(Store::open(dir.path()).unwrap()).unwrap();
        (dir, outbox)
    }

    #[test]
    fn results_are_sent_once_per_session_until_acknowledged() {
        let (_dir, outbox) = outbox();
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
        let (_dir, outbox) = outbox();
        let t0 = Instant::now();
        outbox.insert(finished(1));
        assert_eq!(runs(&outbox.due(1, t0, RESEND)), [1]);
        assert!(outbox.due(1, t0 + RESEND / 2, RESEND).is_empty());
        assert_eq!(runs(&outbox.due(1, t0 + RESEND, RESEND)), [1]);
        assert!(outbox.due(1, t0 + RESEND + RESEND / 2, RESEND).is_empty());
    }

    #[test]
    fn unacknowledged_results_outlive_the_agent() {
        let dir = tempfile::tempdir().unwrap();
        {
            let outbox = Outbox::open(Store::open(dir.path()).unwrap()).unwrap();
            outbox.insert(finished(1));
            outbox.insert(finished(2));
            assert_eq!(runs(&outbox.due(1, Instant::now(), RESEND)), [1, 2]);
            assert!(outbox.ack(RunId(1)));
        }
        let outbox = Outbox::open(Store::open(dir.path()).unwrap()).unwrap();
        assert!(outbox.contains(RunId(2)) && !outbox.contains(RunId(1)));
        assert_eq!(
            runs(&outbox.due(1, Instant::now(), RESEND)),
            [2],
            "sent again by the next agent, as in a new session"
        );
    }
}
