//! What a batch job says about its runs: where they go and how long they are kept.

use serde::{Deserialize, Serialize};

use crate::ids::NodeId;
use crate::time::{HumanDuration, Timestamp};

/// Which node a batch job's run goes to. Only nodes open to new work (ready, eligible,
/// not draining, not revoked) with a connected agent offering the task's driver count.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunTarget {
    /// Any node: the one with the fewest runs in flight.
    #[default]
    Any,
    /// That node only; the run waits while it cannot take it.
    Node(NodeId),
    /// Nodes whose label `key` is `value`.
    Label { key: String, value: String },
    /// The node with the smallest share of its CPU and memory in use (allocations and
    /// running runs).
    LeastLoaded,
}

impl std::fmt::Display for RunTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunTarget::Any => write!(f, "any node"),
            RunTarget::Node(n) => write!(f, "node {n}"),
            RunTarget::Label { key, value } => write!(f, "nodes labelled {key}={value}"),
            RunTarget::LeastLoaded => write!(f, "the least loaded node"),
        }
    }
}

/// Which finished runs of a job are kept: each limit that is set prunes what is past it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RunRetention {
    /// Keep at most this many finished runs (the newest).
    pub keep_last: Option<u32>,
    /// Drop finished runs that ended longer ago than this.
    pub max_age: Option<HumanDuration>,
}

impl RunRetention {
    pub fn is_unlimited(&self) -> bool {
        self.keep_last.is_none() && self.max_age.is_none()
    }

    /// Of finished runs given oldest first as `(position, finished_at)`, the positions to
    /// drop at `now`.
    pub fn prune(&self, finished: &[(usize, Timestamp)], now: Timestamp) -> Vec<usize> {
        let over = self
            .keep_last
            .map(|n| finished.len().saturating_sub(n as usize))
            .unwrap_or(0);
        let cutoff = self
            .max_age
            .map(|age| now.0.saturating_sub(age.0.as_millis() as u64));
        finished
            .iter()
            .enumerate()
            .filter(|(i, (_, at))| *i < over || cutoff.is_some_and(|c| at.0 < c))
            .map(|(_, (pos, _))| *pos)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_limit_prunes_what_is_past_it() {
        let runs: Vec<(usize, Timestamp)> =
            (0..5).map(|i| (i, Timestamp(i as u64 * 1000))).collect();
        let keep3 = RunRetention {
            keep_last: Some(3),
            max_age: None,
        };
        assert_eq!(keep3.prune(&runs, Timestamp(10_000)), [0, 1]);
        let young = RunRetention {
            keep_last: None,
            max_age: Some(HumanDuration::from_secs(2)),
        };
        // Cutoff at 2000: runs ended at 0 and 1000 go.
        assert_eq!(young.prune(&runs, Timestamp(4_000)), [0, 1]);
        let both = RunRetention {
            keep_last: Some(4),
            max_age: Some(HumanDuration::from_secs(2)),
        };
        assert_eq!(both.prune(&runs, Timestamp(5_000)), [0, 1, 2]);
        assert!(
            RunRetention::default()
                .prune(&runs, Timestamp(1 << 40))
                .is_empty()
        );
    }
}
