//! Live output of runs as this server receives it from agents: memory only, bounded.
//! The final stdout is kept in the run's context; this is for watching a run as it goes.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use windflow_protocol::RunId;

/// Bytes kept per run (the newest).
pub const OUTPUT_BYTES_PER_RUN: usize = 256 * 1024;
/// Runs whose output is kept; the oldest is forgotten first.
pub const OUTPUT_RUNS_KEPT: usize = 1024;

#[derive(Clone, Default)]
pub struct RunOutputs {
    inner: Arc<Mutex<Buffers>>,
}

#[derive(Default)]
struct Buffers {
    by_run: HashMap<RunId, Vec<u8>>,
    order: VecDeque<RunId>,
}

impl RunOutputs {
    pub fn append(&self, run: RunId, data: &[u8]) {
        let mut b = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if !b.by_run.contains_key(&run) {
            if b.order.len() == OUTPUT_RUNS_KEPT
                && let Some(old) = b.order.pop_front()
            {
                b.by_run.remove(&old);
            }
            b.order.push_back(run);
        }
        let buf = b.by_run.entry(run).or_default();
        buf.extend_from_slice(data);
        if buf.len() > OUTPUT_BYTES_PER_RUN {
            let cut = buf.len() - OUTPUT_BYTES_PER_RUN;
            buf.drain(..cut);
        }
    }

    pub fn text(&self, run: RunId) -> String {
        let b = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        b.by_run
            .get(&run)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_bytes_of_the_newest_runs() {
        let outputs = RunOutputs::default();
        outputs.append(RunId(1), &vec![b'a'; OUTPUT_BYTES_PER_RUN]);
        outputs.append(RunId(1), b"zz");
        let text = outputs.text(RunId(1));
        assert_eq!(text.len(), OUTPUT_BYTES_PER_RUN);
        assert!(text.ends_with("azz"));
        for n in 2..=(OUTPUT_RUNS_KEPT as u64 + 1) {
            outputs.append(RunId(n), b"x");
        }
        assert_eq!(outputs.text(RunId(1)), "");
        assert_eq!(outputs.text(RunId(2)), "x");
    }
}
