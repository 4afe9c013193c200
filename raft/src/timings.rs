//! Latency histograms of the raft path, for the server's `/metrics`.

use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

/// Buckets from 100 µs to about 6.5 s, doubling.
fn buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.000_1, 2.0, 17)
}

/// How long the replicated path takes on this server. Cheap to clone; clones observe into
/// the same histograms.
#[derive(Clone, Debug)]
pub struct RaftTimings {
    /// From `RaftNode::write` to apply's answer: commit by a quorum, then apply.
    pub commit: Histogram,
    /// Applying one committed entry to the state machine, its disk batch included.
    pub apply: Histogram,
}

impl Default for RaftTimings {
    fn default() -> Self {
        RaftTimings {
            commit: Histogram::new(buckets()),
            apply: Histogram::new(buckets()),
        }
    }
}
