//! An exec task's resource use from `/proc`: its process group's CPU time over a short
//! sample and its resident memory, summed over every process of the group.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use windflow_protocol::messages::TaskStats;

use crate::drivers::exec::{ExecDir, read_value};
use crate::process::ProcessIdentity;

/// How long CPU time is measured over.
const SAMPLE: Duration = Duration::from_millis(500);
/// `/proc`'s clock ticks per second (`USER_HZ`, fixed by the kernel's ABI).
const TICKS_PER_SEC: f64 = 100.0;

/// The use of the task running in `exec_dir` (an allocation's `task-<k>`).
pub(super) async fn exec_stats(task: &str, exec_dir: &Path) -> TaskStats {
    let mut stats = TaskStats {
        task: task.to_owned(),
        ..TaskStats::default()
    };
    let dir = ExecDir::new(exec_dir);
    let leader = read_value::<ProcessIdentity>(&dir.group(1)).ok().flatten();
    let Some(leader) = leader.filter(|l| l.is_alive()) else {
        stats.error = Some("the task is not running".into());
        return stats;
    };
    let pgid = leader.pid;
    let before = group_usage(pgid);
    let start = Instant::now();
    tokio::time::sleep(SAMPLE).await;
    let after = group_usage(pgid);
    let elapsed = start.elapsed().as_secs_f64();
    // Only processes seen both times: one that ended meanwhile took its ticks with it.
    let ticks: u64 = after
        .iter()
        .filter_map(|(pid, (t, _))| Some(t.saturating_sub(before.get(pid)?.0)))
        .sum();
    stats.cpu_percent = Some(ticks as f64 / TICKS_PER_SEC / elapsed * 100.0);
    stats.memory_bytes = Some(after.values().map(|(_, rss)| rss).sum());
    stats
}

/// For each process of group `pgid`: its CPU ticks (user + system) and resident bytes.
fn group_usage(pgid: u32) -> HashMap<u32, (u64, u64)> {
    let mut usage = HashMap::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return usage;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(p.path().join("stat")) else {
            continue;
        };
        // Fields after the parenthesised name: state is field 3, pgrp 5, utime 14, stime
        // 15.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
        if field(5) != Some(u64::from(pgid)) {
            continue;
        }
        let ticks = field(14).unwrap_or(0) + field(15).unwrap_or(0);
        usage.insert(pid, (ticks, resident_bytes(&p.path())));
    }
    usage
}

/// `VmRSS` of `/proc/<pid>/status`, in bytes (0 for a kernel thread or a zombie).
fn resident_bytes(proc_dir: &Path) -> u64 {
    let Ok(status) = std::fs::read_to_string(proc_dir.join("status")) else {
        return 0;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}
