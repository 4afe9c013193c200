//! The Windflow server and the `windflow` CLI.
//!
//! A server is four things around one replicated store ([`windflow_raft::RaftNode`]):
//! the HTTP API ([`api`]), the QUIC gateway that agents and peer servers dial ([`gateway`]),
//! the leader's loops ([`leader`], [`dispatch`]) and its observability ([`metrics`], [`logging`]).
//! [`server::start`] wires them together; [`dev`] adds an in-process agent; [`cli`] is the client.

pub mod api;
pub mod audit_retention;
pub mod auth;
pub mod cli;
pub mod cluster;
pub mod cron;
pub mod dev;
pub mod dispatch;
pub mod gateway;
pub mod https;
pub mod join;
pub mod leader;
pub mod lifecycle;
pub mod logging;
pub mod metrics;
pub mod password;
pub mod pipeline_timer;
pub mod rate_limit;
pub mod refs;
pub mod run_retention;
pub mod scheduler;
pub mod secrets;
pub mod server;
pub mod stacks;
pub mod webhooks;
