//! Linearizability of a grow-only set's history: what the partition suites record (adds of
//! unique job names and reads of every name, each with its invocation and completion
//! times) and check.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

/// One operation on the register (the set of job names) as a client saw it.
#[derive(Debug, Clone)]
pub struct Op {
    pub client: usize,
    pub invoke: Instant,
    pub complete: Instant,
    pub kind: OpKind,
}

#[derive(Debug, Clone)]
pub enum OpKind {
    /// Adds a job name; `acked` when the write was acknowledged. A failed write is
    /// indeterminate (it may have been applied), except where the test knows better.
    Add { name: String, acked: bool },
    /// A linearizable read of every job name; `None` when the read failed.
    Read(Option<BTreeSet<String>>),
}

/// Checks a history of a grow-only set (adds of unique elements, reads of the whole set)
/// for linearizability:
/// - a read returns only elements whose add was invoked before the read completed;
/// - a read returns every element whose add was acknowledged before the read was invoked;
/// - any two reads return sets ordered by inclusion (the set only grows, in one order),
///   and a read that completed before another was invoked returns a subset of it.
///
/// Together these let the adds and reads be put in one order that respects real time:
/// reads by inclusion, each add just before the first read that holds its element.
pub fn check_grow_only_set(history: &[Op]) -> Result<(), String> {
    let adds: BTreeMap<&str, &Op> = history
        .iter()
        .filter_map(|op| match &op.kind {
            OpKind::Add { name, .. } => Some((name.as_str(), op)),
            OpKind::Read(_) => None,
        })
        .collect();
    let reads: Vec<(&Op, &BTreeSet<String>)> = history
        .iter()
        .filter_map(|op| match &op.kind {
            OpKind::Read(Some(set)) => Some((op, set)),
            _ => None,
        })
        .collect();
    for (read, set) in &reads {
        for name in *set {
            let Some(add) = adds.get(name.as_str()) else {
                return Err(format!("client {} read {name}, never added", read.client));
            };
            if add.invoke > read.complete {
                return Err(format!(
                    "client {} read {name} before its add was invoked",
                    read.client
                ));
            }
        }
        for (name, add) in &adds {
            if matches!(add.kind, OpKind::Add { acked: true, .. })
                && add.complete < read.invoke
                && !set.contains(*name)
            {
                return Err(format!(
                    "client {} missed {name}, acknowledged before the read began",
                    read.client
                ));
            }
        }
    }
    for (a, sa) in &reads {
        for (b, sb) in &reads {
            if !(sa.is_subset(sb) || sb.is_subset(sa)) {
                return Err(format!(
                    "reads by clients {} and {} saw incomparable sets: {:?} vs {:?}",
                    a.client,
                    b.client,
                    sa.symmetric_difference(sb).collect::<Vec<_>>(),
                    sb.len()
                ));
            }
            if a.complete < b.invoke && !sa.is_subset(sb) {
                return Err(format!(
                    "client {} read {:?}, missing from a later read by client {}",
                    a.client,
                    sa.difference(sb).collect::<Vec<_>>(),
                    b.client
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_checker_catches_stale_and_lost_reads() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let add = |name: &str, from, to, acked| Op {
            client: 0,
            invoke: at(from),
            complete: at(to),
            kind: OpKind::Add {
                name: name.into(),
                acked,
            },
        };
        let read = |from, to, names: &[&str]| Op {
            client: 1,
            invoke: at(from),
            complete: at(to),
            kind: OpKind::Read(Some(names.iter().map(|n| n.to_string()).collect())),
        };
        let good = vec![
            add("a", 0, 10, true),
            read(5, 8, &[]),
            read(11, 12, &["a"]),
            add("b", 20, 30, false),
            read(25, 26, &["a", "b"]),
        ];
        assert_eq!(check_grow_only_set(&good), Ok(()));
        // An acknowledged add missing from a later read.
        let lost = vec![add("a", 0, 10, true), read(11, 12, &[])];
        assert!(check_grow_only_set(&lost).is_err());
        // A stale read after a read that saw more.
        let stale = vec![
            add("a", 0, 100, false),
            read(10, 20, &["a"]),
            read(30, 40, &[]),
        ];
        assert!(check_grow_only_set(&stale).is_err());
        // Two reads that disagree on the order of two adds.
        let split = vec![
            add("a", 0, 100, false),
            add("b", 0, 100, false),
            read(10, 20, &["a"]),
            read(10, 20, &["b"]),
        ];
        assert!(check_grow_only_set(&split).is_err());
    }
}
