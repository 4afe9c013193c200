//! What this host offers: CPU, memory and disk, and the facts constraints match on (`os`,
//! `arch`, `kernel`, `cpu.cores`, `cpu.mhz`, `hostname`). Read from `/proc` and `statvfs`,
//! once per session.

use std::collections::BTreeMap;

use windflow_protocol::{Fingerprint, Resources};

/// The MHz a core is counted at when `/proc/cpuinfo` gives no speed (some VMs and ARM).
const FALLBACK_MHZ: u64 = 1000;

/// This host's fingerprint.
pub fn host() -> Fingerprint {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    let mhz = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| cpu_mhz(&c))
        .unwrap_or(FALLBACK_MHZ);
    let memory_mb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| mem_total_mb(&m))
        .unwrap_or(0);
    let disk_mb = nix::sys::statvfs::statvfs("/")
        .map(|s| s.blocks_available() * s.fragment_size() / (1024 * 1024))
        .unwrap_or(0);
    let mut attributes = BTreeMap::from([
        ("os".to_owned(), std::env::consts::OS.to_owned()),
        ("arch".to_owned(), std::env::consts::ARCH.to_owned()),
        ("cpu.cores".to_owned(), cores.to_string()),
        ("cpu.mhz".to_owned(), mhz.to_string()),
    ]);
    if let Ok(kernel) = std::fs::read_to_string("/proc/sys/kernel/osrelease") {
        attributes.insert("kernel".into(), kernel.trim().to_owned());
    }
    Fingerprint {
        resources: Resources {
            cpu_mhz: cores * mhz,
            memory_mb,
            disk_mb,
        },
        attributes,
    }
}

/// The first core's speed in `/proc/cpuinfo`.
fn cpu_mhz(cpuinfo: &str) -> Option<u64> {
    cpuinfo
        .lines()
        .find(|l| l.starts_with("cpu MHz"))
        .and_then(|l| l.split(':').nth(1))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|mhz| mhz as u64)
        .filter(|mhz| *mhz > 0)
}

/// `MemTotal` of `/proc/meminfo`, in MiB.
fn mem_total_mb(meminfo: &str) -> Option<u64> {
    meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb / 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_are_read() {
        let cpuinfo = "processor\t: 0\nmodel name\t: X\ncpu MHz\t\t: 2894.562\n";
        assert_eq!(cpu_mhz(cpuinfo), Some(2894));
        assert_eq!(cpu_mhz("processor : 0\n"), None);
        let meminfo = "MemTotal:       24570368 kB\nMemFree:  1 kB\n";
        assert_eq!(mem_total_mb(meminfo), Some(23994));
    }

    #[test]
    fn this_host_offers_something() {
        let f = host();
        assert!(
            f.resources.cpu_mhz > 0 && f.resources.memory_mb > 0,
            "{f:?}"
        );
        assert_eq!(f.attributes["os"], "linux");
    }
}
