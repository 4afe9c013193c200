//! Which process a pid is: a pid alone is reused by the kernel, so a process the agent
//! remembers across its own restarts is named by its pid *and* its start time (field 22 of
//! `/proc/<pid>/stat`, clock ticks since boot), which no later process with that pid shares.

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

/// One process, for as long as it lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessIdentity {
    pub pid: u32,
    /// When it started, in clock ticks since boot.
    pub start_ticks: u64,
}

/// What `/proc/<pid>/stat` says about a pid right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    state: char,
    start_ticks: u64,
}

/// Parses a `/proc/<pid>/stat` line. The command name (field 2) is in parentheses and may
/// hold spaces and parentheses itself, so fields are counted after the last `)`.
fn parse_stat(line: &str) -> Option<Stat> {
    let (_, rest) = line.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    // Field 3 is the state; field 22 the start time, 19 fields further.
    let state = fields.next()?.chars().next()?;
    let start_ticks = fields.nth(18)?.parse().ok()?;
    Some(Stat { state, start_ticks })
}

fn stat(pid: u32) -> Option<Stat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

impl ProcessIdentity {
    /// The identity of a live process; `None` when there is no such process.
    pub fn of(pid: u32) -> Option<ProcessIdentity> {
        let s = stat(pid)?;
        Some(ProcessIdentity {
            pid,
            start_ticks: s.start_ticks,
        })
    }

    /// This process.
    pub fn current() -> Option<ProcessIdentity> {
        ProcessIdentity::of(std::process::id())
    }

    /// True while this very process runs: a pid now held by another process (a different
    /// start time), a zombie waiting to be reaped, or no process at all are all "not alive".
    pub fn is_alive(&self) -> bool {
        stat(self.pid)
            .is_some_and(|s| s.start_ticks == self.start_ticks && !matches!(s.state, 'Z' | 'X'))
    }

    /// Sends `signal` to this process if it is still this process.
    pub fn signal(&self, signal: Signal) -> bool {
        self.is_alive() && kill(Pid::from_raw(self.pid as i32), signal).is_ok()
    }

    /// Sends `signal` to the process group this process leads, if it is still alive.
    pub fn signal_group(&self, signal: Signal) -> bool {
        self.is_alive() && killpg(Pid::from_raw(self.pid as i32), signal).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use std::process::{Command, Stdio};

    use super::*;

    #[test]
    fn parses_stat_lines_whose_name_holds_spaces_and_parentheses() {
        let line = "4242 (sh -c (x)) S 1 4242 4242 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 \
                    987654 2334720 300 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 1 0 0";
        assert_eq!(
            parse_stat(line),
            Some(Stat {
                state: 'S',
                start_ticks: 987654
            })
        );
        assert_eq!(parse_stat("4242 (sh) S 1 2"), None, "too short");
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn a_live_process_is_itself_and_a_reused_pid_is_not() {
        let mut child = Command::new("sleep")
            .arg("300")
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let me = ProcessIdentity::of(child.id()).expect("the child runs");
        assert!(me.is_alive());
        // The same pid with another start time is what a reused pid looks like.
        let reused = ProcessIdentity {
            pid: me.pid,
            start_ticks: me.start_ticks + 1,
        };
        assert!(!reused.is_alive(), "a reused pid was taken for the process");
        assert!(!reused.signal(Signal::SIGKILL), "nothing was sent to it");
        assert!(me.is_alive(), "the real process was left alone");

        child.kill().unwrap();
        // Killed but not reaped: a zombie is not alive.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while me.is_alive() {
            assert!(std::time::Instant::now() < deadline, "SIGKILL did not land");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        child.wait().unwrap();
        assert!(!me.is_alive());
        assert_eq!(ProcessIdentity::of(me.pid).filter(|p| *p == me), None);
    }

    #[test]
    fn the_current_process_is_alive() {
        let me = ProcessIdentity::current().unwrap();
        assert_eq!(me.pid, std::process::id());
        assert!(me.is_alive());
    }
}
