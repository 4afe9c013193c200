//! The one place that runs the leader's loops: started when this server becomes raft leader,
//! stopped when it stops being leader, so no two servers act as leader at once.

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use windflow_raft::RaftNode;

use std::time::Duration;

use crate::audit_retention::AuditRetention;
use crate::cron::runner::CronLoop;
use crate::dispatch::Dispatcher;
use crate::gateway::Sessions;
use crate::lifecycle::Liveness;
use crate::lifecycle::drain::DrainWatcher;
use crate::lifecycle::monitor::NodeMonitor;
use crate::pipeline_timer::PipelineTimer;
use crate::run_retention::RunRetentionLoop;
use crate::scheduler::deploy_watch::DeploymentWatcher;
use crate::scheduler::worker::Scheduler;
use crate::secrets::Secrets;
use crate::webhooks::WebhookDelivery;

/// Watches raft and runs [`Dispatcher`], [`Scheduler`], [`AuditRetention`], [`NodeMonitor`],
/// [`DrainWatcher`], [`PipelineTimer`], [`RunRetentionLoop`], [`DeploymentWatcher`],
/// [`CronLoop`] and [`WebhookDelivery`] while leader.
pub fn spawn(
    raft: RaftNode,
    sessions: Sessions,
    secrets: std::sync::Arc<Secrets>,
    audit_retention: Duration,
    liveness: Liveness,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut metrics = raft.metrics();
        let mut term: Option<CancellationToken> = None;
        loop {
            let leading = metrics.borrow().current_leader == Some(raft.id());
            match (leading, &term) {
                (true, None) => {
                    tracing::info!("became leader: starting leader loops");
                    let token = shutdown.child_token();
                    let dispatcher =
                        Dispatcher::new(raft.clone(), sessions.clone(), secrets.clone());
                    tokio::spawn(dispatcher.clone().run(token.clone()));
                    let retention = AuditRetention::new(raft.clone(), audit_retention);
                    tokio::spawn(retention.run(token.clone()));
                    tokio::spawn(Scheduler::new(raft.clone()).run(token.clone()));
                    tokio::spawn(NodeMonitor::new(raft.clone(), liveness).run(token.clone()));
                    tokio::spawn(DrainWatcher::new(raft.clone(), liveness).run(token.clone()));
                    tokio::spawn(PipelineTimer::new(raft.clone()).run(token.clone()));
                    tokio::spawn(RunRetentionLoop::new(raft.clone()).run(token.clone()));
                    tokio::spawn(DeploymentWatcher::new(raft.clone()).run(token.clone()));
                    // Schedules and webhooks (issue 7).
                    let clock = std::sync::Arc::new(crate::cron::SystemClock);
                    let cron = CronLoop::new(raft.clone(), clock).placing_with(dispatcher);
                    tokio::spawn(cron.run(token.clone()));
                    match WebhookDelivery::new(raft.clone(), secrets.clone()) {
                        Ok(delivery) => {
                            tokio::spawn(delivery.run(token.clone()));
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "webhook delivery cannot start: no HTTP client")
                        }
                    }
                    term = Some(token);
                }
                (false, Some(token)) => {
                    tracing::info!("no longer leader: stopping leader loops");
                    token.cancel();
                    term = None;
                }
                _ => {}
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                changed = metrics.changed() => if changed.is_err() { break },
            }
        }
        if let Some(token) = term {
            token.cancel();
        }
    })
}
