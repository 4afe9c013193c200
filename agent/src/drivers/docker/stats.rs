//! One sample of a container's resource use from the engine (`stream=false`: the engine
//! measures over about a second, so CPU use has a previous reading to compare with).

use bollard::models::ContainerStatsResponse;
use bollard::query_parameters::StatsOptionsBuilder;
use futures_util::StreamExt;
use windflow_protocol::messages::TaskStats;

use super::{Container, DockerDriver, DockerError};

impl DockerDriver {
    /// CPU %, memory use and limit, network and block I/O of container `c`, for `task`.
    pub async fn stats(&self, c: &Container, task: &str) -> Result<TaskStats, DockerError> {
        let docker = self.client().await?;
        let options = StatsOptionsBuilder::default().stream(false).build();
        let mut samples = docker.stats(&c.id, Some(options));
        let sample = samples
            .next()
            .await
            .ok_or_else(|| DockerError::Engine {
                what: "report the container's stats",
                why: "it answered nothing".into(),
            })?
            .map_err(DockerError::engine("report the container's stats"))?;
        Ok(task_stats(task, &sample))
    }
}

/// The engine's figures as a task's: CPU as `docker stats` computes it, memory without the
/// page cache the kernel may drop (`inactive_file`), every network and device summed.
fn task_stats(task: &str, s: &ContainerStatsResponse) -> TaskStats {
    let cpu = s.cpu_stats.as_ref();
    let pre = s.precpu_stats.as_ref();
    let total = |c: Option<&bollard::models::ContainerCpuStats>| {
        c.and_then(|c| c.cpu_usage.as_ref()?.total_usage)
    };
    let system =
        |c: Option<&bollard::models::ContainerCpuStats>| c.and_then(|c| c.system_cpu_usage);
    let cpu_percent = match (total(cpu), total(pre), system(cpu), system(pre)) {
        (Some(t), Some(pt), Some(sy), Some(psy)) if sy > psy => {
            let cpus = cpu.and_then(|c| c.online_cpus).unwrap_or(1).max(1);
            Some(t.saturating_sub(pt) as f64 / (sy - psy) as f64 * f64::from(cpus) * 100.0)
        }
        _ => None,
    };
    let memory = s.memory_stats.as_ref();
    let cache = memory
        .and_then(|m| m.stats.as_ref())
        .and_then(|st| {
            st.get("inactive_file")
                .or_else(|| st.get("total_inactive_file"))
        })
        .copied()
        .unwrap_or(0);
    let networks = s.networks.as_ref();
    let net = |f: fn(&bollard::models::ContainerNetworkStats) -> Option<u64>| {
        networks.map(|n| n.values().filter_map(f).sum())
    };
    let blkio = s
        .blkio_stats
        .as_ref()
        .and_then(|b| b.io_service_bytes_recursive.as_ref());
    let block = |op: &str| {
        blkio.map(|entries| {
            entries
                .iter()
                .filter(|e| e.op.as_deref().is_some_and(|o| o.eq_ignore_ascii_case(op)))
                .filter_map(|e| e.value)
                .sum()
        })
    };
    TaskStats {
        task: task.to_owned(),
        cpu_percent,
        memory_bytes: memory
            .and_then(|m| m.usage)
            .map(|u| u.saturating_sub(cache)),
        memory_limit_bytes: memory.and_then(|m| m.limit),
        network_rx_bytes: net(|n| n.rx_bytes),
        network_tx_bytes: net(|n| n.tx_bytes),
        block_read_bytes: block("read"),
        block_write_bytes: block("write"),
        error: None,
    }
}
