//! Which node each allocation change was on, by modify index, kept in memory for the
//! gateway's feed (it wakes only the sessions of the nodes concerned). Not replicated state:
//! it is filled as entries are applied on this server and starts empty, so it answers only
//! for changes after the index it started from; for older ones the feed wakes every
//! session, and each session reads its own node's changes from the store by index, which
//! is what makes delivery exact. Keeping this out of the tree saves apply two writes per
//! allocation change.

use std::collections::{BTreeSet, VecDeque};

use windflow_protocol::NodeId;

/// How many changes are kept; older ones are forgotten (a feed that far behind wakes all).
const KEPT: usize = 1 << 20;

#[derive(Debug, Default)]
pub(crate) struct AllocChanges {
    /// Every change with a higher index is in `changes`.
    known_after: u64,
    /// Ascending by index.
    changes: VecDeque<(u64, NodeId)>,
}

impl AllocChanges {
    /// A log that knows the changes after `index`.
    pub(crate) fn after(index: u64) -> Self {
        AllocChanges {
            known_after: index,
            changes: VecDeque::new(),
        }
    }

    /// Changes about to be committed, in index order.
    pub(crate) fn record(&mut self, changes: impl IntoIterator<Item = (u64, NodeId)>) {
        for (index, node) in changes {
            if index <= self.known_after || self.changes.back().is_some_and(|(i, _)| *i >= index) {
                continue;
            }
            self.changes.push_back((index, node));
        }
        while self.changes.len() > KEPT {
            if let Some((index, _)) = self.changes.pop_front() {
                self.known_after = index;
            }
        }
    }

    /// The tree was replaced (a snapshot installed, a backup restored): nothing before
    /// `index` is known any more.
    pub(crate) fn reset(&mut self, index: u64) {
        *self = AllocChanges::after(index);
    }

    /// The nodes with a change in `(after, upto]`, or `None` when some of those changes
    /// are not known here.
    pub(crate) fn nodes(&self, after: u64, upto: u64) -> Option<BTreeSet<NodeId>> {
        if after < self.known_after {
            return None;
        }
        let start = self.changes.partition_point(|(i, _)| *i <= after);
        Some(
            self.changes
                .range(start..)
                .take_while(|(i, _)| *i <= upto)
                .map(|(_, n)| *n)
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_only_for_what_it_saw() {
        let mut log = AllocChanges::after(10);
        log.record([(11, NodeId(1)), (12, NodeId(2)), (13, NodeId(1))]);
        assert_eq!(log.nodes(9, 13), None, "index 10 was never seen");
        assert_eq!(log.nodes(10, 13), Some([NodeId(1), NodeId(2)].into()));
        assert_eq!(log.nodes(11, 12), Some([NodeId(2)].into()));
        assert_eq!(log.nodes(13, 13), Some(BTreeSet::new()));
        log.reset(20);
        assert_eq!(log.nodes(13, 20), None);
        log.record([(21, NodeId(3))]);
        assert_eq!(log.nodes(20, 21), Some([NodeId(3)].into()));
    }

    #[test]
    fn forgets_the_oldest_past_its_size() {
        let mut log = AllocChanges::after(0);
        log.record((1..=KEPT as u64 + 5).map(|i| (i, NodeId(i % 7))));
        assert_eq!(log.nodes(0, 10), None);
        assert_eq!(log.nodes(5, 6), Some([NodeId(6)].into()));
    }
}
