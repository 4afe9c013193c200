//! The scheduler: evaluations become plans. [`worker::Scheduler`] runs on the leader,
//! takes pending evaluations, plans each job against a view of the cluster
//! ([`plan::plan_job`], with [`feasible`] deciding which nodes can take what) and proposes
//! the plan through raft, where `apply` re-checks every placement.

mod deploy;
pub mod deploy_watch;
pub mod feasible;
pub mod plan;
mod reconcile;
pub mod worker;
