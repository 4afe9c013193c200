//! One `windflow server` with short heartbeats and several real `windflow-agent`s, each
//! from its own 127.0.0.x with a given memory, plus service jobs whose tasks write their pid
//! to `PIDS/<alloc id>`, so a test can find each allocation's process on the host.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::agent::{Agent, AgentSpec};
use crate::cluster::Cluster;
use crate::{http_json, wait_for, windflow_bin};

pub const DEADLINE: Duration = Duration::from_secs(60);
/// Heartbeats every 500 ms, down after 3 s of silence: for tests that wait for a node to
/// go down.
pub const LIVENESS: &[&str] = &["--heartbeat-interval", "500ms", "--heartbeat-grace", "3s"];
/// Down only after 20 s of silence: for tests in which no node may go down, even on a
/// loaded machine that stalls a server for seconds.
pub const PATIENT: &[&str] = &["--heartbeat-interval", "500ms", "--heartbeat-grace", "20s"];

pub struct Fleet {
    pub cluster: Cluster,
    pub admin: String,
    token: String,
    pub agents: Vec<Agent>,
    /// Where the tasks write their pids.
    pub pids: PathBuf,
}

impl Fleet {
    /// A server started with `liveness` ([`LIVENESS`] or [`PATIENT`]), and room for
    /// `agents` to enroll (none started yet).
    pub fn new(agents: usize, liveness: &[&str]) -> Fleet {
        Fleet::with_servers(1, agents, liveness)
    }

    /// [`Fleet::new`] with a cluster of `servers`; agents connect to the first one only.
    pub fn with_servers(servers: usize, agents: usize, liveness: &[&str]) -> Fleet {
        let cluster = Cluster::start_with(servers, liveness).unwrap();
        let admin = cluster.token();
        let pids = cluster.root.path().join("pids");
        std::fs::create_dir(&pids).unwrap();
        let mut f = Fleet {
            cluster,
            admin,
            token: String::new(),
            agents: Vec::new(),
            pids,
        };
        let (status, token) = f.call(
            "POST",
            "/v1/agent/tokens",
            Some(json!({"uses": agents, "ttl": "10m"})),
        );
        assert_eq!(status, 201, "{token}");
        f.token = token["token"].as_str().unwrap().to_owned();
        f
    }

    /// A server and `n` ready agents of 512 MB each, `host-0`… from 127.0.0.2….
    pub fn start(n: usize, liveness: &[&str]) -> Fleet {
        let mut f = Fleet::new(n, liveness);
        for _ in 0..n {
            f.add_agent();
        }
        f
    }

    /// Enrolls one more agent (`host-<i>` from 127.0.0.<i+2>, 512 MB) and waits for its
    /// node to be ready; its index in `agents`.
    pub fn add_agent(&mut self) -> usize {
        let i = self.agents.len();
        let name = format!("host-{i}");
        let spec = AgentSpec {
            servers: vec![self.cluster.servers[0].quic_addr],
            data_dir: self.cluster.root.path().join(&name),
            hostname: name.clone(),
            bind: Some(format!("127.0.0.{}", i + 2).parse::<IpAddr>().unwrap()),
            token: Some(self.token.clone()),
        };
        let args = [
            "--memory-mb",
            "512",
            "--cpu-mhz",
            "4000",
            "--kill-grace",
            "2s",
        ];
        self.agents
            .push(Agent::start_with_args(spec, &args).unwrap());
        self.wait(&format!("{name} to be ready"), |f| {
            f.nodes()
                .iter()
                .any(|n| n["name"] == name.as_str() && n["status"] == "ready")
                .then_some(())
        });
        i
    }

    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let body = body.map(|b| b.to_string());
        http_json(
            self.cluster.servers[0].http_addr,
            method,
            path,
            Some(&self.admin),
            body.as_deref(),
        )
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// A `GET` through server `server` of the cluster.
    pub fn cluster_call(&self, server: usize, path: &str) -> (u16, Value) {
        http_json(
            self.cluster.servers[server].http_addr,
            "GET",
            path,
            Some(&self.admin),
            None,
        )
        .unwrap_or_else(|e| panic!("GET {path} on server {server}: {e}"))
    }

    pub fn get(&self, path: &str) -> Value {
        let (status, v) = self.call("GET", path, None);
        assert_eq!(status, 200, "{path}: {v}");
        v
    }

    pub fn nodes(&self) -> Vec<Value> {
        self.get("/v1/nodes")
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub fn node(&self, id: &str) -> Value {
        self.get(&format!("/v1/nodes/{id}"))
    }

    pub fn allocs(&self, job: &str) -> Vec<Value> {
        self.get(&format!("/v1/allocations?job={job}"))
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub fn alloc(&self, id: &str) -> Value {
        self.get(&format!("/v1/allocations/{id}"))
    }

    /// The index in `agents` of the agent of node `node_id`.
    pub fn agent_of(&self, node_id: &str) -> usize {
        let node = self.node(node_id);
        let name = node["name"].as_str().unwrap();
        self.agents
            .iter()
            .position(|a| a.spec.hostname == name)
            .unwrap_or_else(|| panic!("no agent for {node}"))
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(windflow_bin())
            .args(args)
            .env("HOME", self.cluster.root.path())
            .env(
                "WINDFLOW_ADDR",
                format!("http://{}", self.cluster.servers[0].http_addr),
            )
            .env("WINDFLOW_TOKEN", &self.admin)
            .stdin(Stdio::null())
            .output()
            .expect("running the windflow CLI")
    }

    /// Waits for `f` with [`DEADLINE`]; on a timeout, panics with every log.
    pub fn wait<T>(&self, what: &str, mut f: impl FnMut(&Fleet) -> Option<T>) -> T {
        wait_for(what, DEADLINE, || f(self)).unwrap_or_else(|e| panic!("{e}\n{}", self.logs()))
    }

    pub fn logs(&self) -> String {
        let agents: Vec<String> = self
            .agents
            .iter()
            .map(|a| format!("--- {} ---\n{}", a.spec.hostname, a.log()))
            .collect();
        format!("{}\n{}", agents.join("\n"), self.cluster.logs())
    }

    /// The pid allocation `alloc`'s task wrote.
    pub fn pid_of(&self, alloc: &Value) -> Option<u32> {
        let id = alloc["id"].as_str()?;
        std::fs::read_to_string(self.pids.join(id))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Creates a service of `count` instances spread over the nodes, each writing its pid
    /// and sleeping as that process, replaced 1 s after a loss; its ID once all run.
    pub fn service(&self, name: &str, count: usize) -> String {
        let command = format!(
            "echo $$ > {d}/$WINDFLOW_ALLOC_ID.tmp; mv {d}/$WINDFLOW_ALLOC_ID.tmp {d}/$WINDFLOW_ALLOC_ID; exec sleep 1000",
            d = self.pids.display()
        );
        let (status, job) = self.call(
            "POST",
            "/v1/jobs",
            Some(json!({"name": name, "command": command, "type": "service",
                        "count": count, "placement": "spread",
                        "resources": {"cpu_mhz": 10, "memory_mb": 8},
                        "reschedule": {"unlimited": true, "delay": "1s", "max_delay": "4s"}})),
        );
        assert_eq!(status, 201, "{job}");
        let id = job["id"].as_str().unwrap().to_owned();
        self.running(&id, count);
        id
    }

    /// The job's desired-`run` allocations once exactly `count` of them are running with
    /// their pid written.
    pub fn running(&self, job: &str, count: usize) -> Vec<Value> {
        self.wait(&format!("{count} running allocations of {job}"), |f| {
            let live: Vec<Value> = f
                .allocs(job)
                .into_iter()
                .filter(|a| a["desired"] == "run")
                .collect();
            let ready = live.len() == count
                && live
                    .iter()
                    .all(|a| a["client"] == "running" && f.pid_of(a).is_some());
            ready.then_some(live)
        })
    }
}

impl Drop for Fleet {
    /// Stopped or killed, agents leave their tasks running: those are stopped too.
    fn drop(&mut self) {
        for agent in &mut self.agents {
            agent.kill();
            agent.stop_tasks();
        }
    }
}
