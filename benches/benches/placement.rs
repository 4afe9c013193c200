//! Placement throughput: nodes registered through the real commands (`RegisterNode`, then
//! `NodeHello` with a fingerprint), service jobs created through raft, and the leader's
//! real scheduling loop planning them and proposing the plans, which raft applies with the
//! per-placement capacity re-check. One server, fsync on.
//!
//! Run: `cargo bench -p windflow-benches --bench placement`. Environment:
//! `PLACEMENT_NODES` (default 5000), `PLACEMENT_JOBS` (1000), `PLACEMENT_COUNT` (100
//! instances per job).

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use windflow_benches::server::proc_sample;
use windflow_benches::single_server;
use windflow_control::scheduler::worker::Scheduler;
use windflow_protocol::{
    DriverKind, EvalStatus, Fingerprint, JobSpec, JobType, Resources, TaskSpec, Timestamp,
};
use windflow_raft::{Applied, Command};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

const NODE: Resources = Resources {
    cpu_mhz: 8 * 2500,
    memory_mb: 32 * 1024,
    disk_mb: 100 * 1024,
};
const TASK: Resources = Resources {
    cpu_mhz: 100,
    memory_mb: 128,
    disk_mb: 0,
};

fn service(i: usize, count: u32) -> Command {
    let mut task = TaskSpec::exec("web", "httpd -f");
    task.resources = TASK;
    let mut spec = JobSpec::exec(format!("svc-{i}"), task);
    spec.job_type = JobType::Service;
    spec.groups[0].count = count;
    Command::CreateJob {
        spec,
        at: Timestamp::now(),
    }
}

fn main() {
    let nodes = env_or("PLACEMENT_NODES", 5000);
    let jobs = env_or("PLACEMENT_JOBS", 1000);
    let count = env_or("PLACEMENT_COUNT", 100) as u32;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    rt.block_on(async {
        let raft = single_server(dir.path()).await;
        let started = Instant::now();
        let registering: Vec<_> = (0..nodes)
            .map(|i| {
                let raft = raft.clone();
                tokio::spawn(async move {
                    let Ok(Applied::Node(n)) = raft
                        .write(Command::RegisterNode {
                            name: format!("node-{i}"),
                            drivers: vec![DriverKind::Exec],
                            at: Timestamp::now(),
                        })
                        .await
                    else {
                        panic!("registering node {i}");
                    };
                    raft.write(Command::NodeHello {
                        node: n.id,
                        hostname: format!("node-{i}"),
                        drivers: vec![DriverKind::Exec],
                        agent_version: "bench".into(),
                        fingerprint: Fingerprint {
                            resources: NODE,
                            attributes: [("os".to_owned(), "linux".to_owned())].into(),
                        },
                        at: Timestamp::now(),
                    })
                    .await
                    .expect("hello");
                })
            })
            .collect();
        for r in registering {
            r.await.expect("register");
        }
        println!("{nodes} nodes registered in {:.2?}", started.elapsed());

        let stop = CancellationToken::new();
        tokio::spawn(Scheduler::new(raft.clone()).run(stop.clone()));
        let cpu_before = proc_sample("self").cpu;
        let started = Instant::now();
        let creating: Vec<_> = (0..jobs)
            .map(|i| {
                let raft = raft.clone();
                tokio::spawn(async move { raft.write(service(i, count)).await.expect("job") })
            })
            .collect();
        for c in creating {
            c.await.expect("create");
        }
        let created = started.elapsed();
        let reader = raft.reader();
        loop {
            if reader.pending_evaluations().expect("evals").is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let total = started.elapsed();
        let cpu = proc_sample("self").cpu - cpu_before;
        stop.cancel();

        let evals = reader.evaluations().expect("evals");
        let blocked = evals
            .iter()
            .filter(|e| e.status != EvalStatus::Complete)
            .count();
        let allocs = reader.allocations().expect("allocs");
        let live = allocs.iter().filter(|a| a.is_live()).count();
        let overcommitted = reader
            .node_usage()
            .expect("usage")
            .iter()
            .filter(|(_, used)| used.exceeds(&NODE).is_some())
            .count();
        let placements = jobs * count as usize;
        assert_eq!(live, placements, "every instance placed");
        assert_eq!((blocked, overcommitted), (0, 0));
        println!(
            "{jobs} service jobs x {count} instances over {nodes} nodes: {placements} placements \
             in {total:.2?} ({:.0} placements/s); jobs created in {created:.2?}; \
             {} evaluations, none blocked; no node overcommitted; CPU (user + system, all \
             threads) {cpu:.2?}, {:.1} µs per placement",
            placements as f64 / total.as_secs_f64(),
            evals.len(),
            cpu.as_secs_f64() * 1e6 / placements as f64
        );
    });
}
