//! `/metrics` in the Prometheus text format. Figures that live in the replicated state
//! (jobs, runs) are read from it at scrape time, so every server reports the same totals.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};
use windflow_protocol::{DeploymentStatus, Eligibility, NodeStatus, RunStatus};
use windflow_raft::RaftNode;

use crate::gateway::Sessions;

/// The server's metrics registry.
pub struct Metrics {
    registry: Registry,
}

impl Metrics {
    pub fn new(raft: RaftNode, sessions: Sessions) -> Arc<Self> {
        let mut registry = Registry::default();
        let timings = raft.reader().timings().clone();
        registry.register_with_unit(
            "windflow_raft_commit_latency",
            "From a write's proposal to apply's answer on this server: commit by a quorum, then apply.",
            Unit::Seconds,
            timings.commit,
        );
        registry.register_with_unit(
            "windflow_raft_apply_latency",
            "Applying one committed entry to this server's state machine, its disk batch included.",
            Unit::Seconds,
            timings.apply,
        );
        registry.register_collector(Box::new(StateCollector { raft, sessions }));
        Arc::new(Metrics { registry })
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

struct StateCollector {
    raft: RaftNode,
    sessions: Sessions,
}

impl std::fmt::Debug for StateCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StateCollector")
    }
}

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: i64) -> std::fmt::Result {
    let metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(value).encode(metric)
}

impl Collector for StateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let reader = self.raft.reader();
        // A failed read is reported as an absent metric, not a failed scrape.
        if let Ok(jobs) = reader.job_count() {
            gauge(
                &mut encoder,
                "windflow_jobs",
                "Jobs registered in the cluster.",
                jobs as i64,
            )?;
        }
        if let Ok(counts) = reader.run_counts() {
            let mut metric = encoder.encode_descriptor(
                "windflow_runs",
                "Runs that ended, by final status.",
                None,
                MetricType::Counter,
            )?;
            for (status, n) in counts.iter().filter(|(s, _)| s.is_finished()) {
                let labels = [("status", status.as_str())];
                ConstCounter::new(*n).encode(metric.encode_family(&labels)?)?;
            }
            let mut metric = encoder.encode_descriptor(
                "windflow_runs_active",
                "Runs waiting for a node or running, by status.",
                None,
                MetricType::Gauge,
            )?;
            for status in [RunStatus::Pending, RunStatus::Running] {
                let n = counts
                    .iter()
                    .find(|(s, _)| *s == status)
                    .map_or(0, |(_, n)| *n);
                let labels = [("status", status.as_str())];
                ConstGauge::new(n as i64).encode(metric.encode_family(&labels)?)?;
            }
        }
        // Pipelines (issue 7).
        if let Ok(pipelines) = reader.pipeline_count() {
            gauge(
                &mut encoder,
                "windflow_pipelines",
                "Pipelines registered in the cluster.",
                pipelines as i64,
            )?;
        }
        if let Ok(counts) = reader.pipeline_run_counts() {
            let mut metric = encoder.encode_descriptor(
                "windflow_pipeline_runs",
                "Pipeline runs, by status (a retried run moves from failed back to running).",
                None,
                MetricType::Gauge,
            )?;
            for (status, n) in counts {
                let labels = [("status", status.as_str())];
                ConstGauge::new(n as i64).encode(metric.encode_family(&labels)?)?;
            }
        }
        // Rollouts (issue 6): deployments by status.
        if let Ok(all) = reader.deployments() {
            let mut metric = encoder.encode_descriptor(
                "windflow_deployments",
                "Deployments of service job versions, by status.",
                None,
                MetricType::Gauge,
            )?;
            for status in [
                DeploymentStatus::Running,
                DeploymentStatus::Successful,
                DeploymentStatus::Failed,
                DeploymentStatus::Cancelled,
            ] {
                let n = all.iter().filter(|d| d.status == status).count();
                let labels = [("status", status.as_str())];
                ConstGauge::new(n as i64).encode(metric.encode_family(&labels)?)?;
            }
        }
        if let Ok(nodes) = reader.nodes() {
            let mut metric = encoder.encode_descriptor(
                "windflow_nodes",
                "Registered nodes, by status (as the replicated state says).",
                None,
                MetricType::Gauge,
            )?;
            for status in [
                NodeStatus::Initializing,
                NodeStatus::Ready,
                NodeStatus::Down,
            ] {
                let n = nodes.iter().filter(|n| n.status == status).count();
                let labels = [("status", node_status(status))];
                ConstGauge::new(n as i64).encode(metric.encode_family(&labels)?)?;
            }
            gauge(
                &mut encoder,
                "windflow_nodes_draining",
                "Nodes whose drain is under way.",
                nodes.iter().filter(|n| n.drain.is_some()).count() as i64,
            )?;
            gauge(
                &mut encoder,
                "windflow_nodes_ineligible",
                "Nodes marked ineligible for new work (draining ones included).",
                nodes
                    .iter()
                    .filter(|n| n.eligibility == Eligibility::Ineligible)
                    .count() as i64,
            )?;
        }
        let m = self.raft.metrics().borrow().clone();
        gauge(
            &mut encoder,
            "windflow_raft_term",
            "This server's current raft term.",
            m.current_term as i64,
        )?;
        let applied = m.last_applied.map_or(0, |l| l.index);
        gauge(
            &mut encoder,
            "windflow_raft_last_applied_index",
            "The last log index applied to this server's state machine.",
            applied as i64,
        )?;
        gauge(
            &mut encoder,
            "windflow_raft_is_leader",
            "Whether this server is the raft leader (1) or not (0).",
            i64::from(m.current_leader == Some(self.raft.id())),
        )?;
        for (name, help, value) in [
            (
                "windflow_raft_last_log_index",
                "The last index in this server's raft log.",
                m.last_log_index,
            ),
            (
                "windflow_raft_snapshot_index",
                "The log index of this server's last snapshot.",
                m.snapshot.map(|l| l.index),
            ),
            (
                "windflow_raft_purged_index",
                "The log index this server's log is purged up to.",
                m.purged.map(|l| l.index),
            ),
        ] {
            gauge(&mut encoder, name, help, value.unwrap_or(0) as i64)?;
        }
        let metric = encoder.encode_descriptor(
            "windflow_raft_snapshots",
            "Snapshots this server has built or installed since it started.",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(self.raft.reader().snapshots_total()).encode(metric)?;
        gauge(
            &mut encoder,
            "windflow_agents_connected",
            "Agents with a live session on this server.",
            self.sessions.len() as i64,
        )?;
        Ok(())
    }
}

fn node_status(s: NodeStatus) -> &'static str {
    match s {
        NodeStatus::Initializing => "initializing",
        NodeStatus::Ready => "ready",
        NodeStatus::Down => "down",
    }
}
