//! Service allocations really run: one `windflow server` and agents of different sizes
//! (each from its own 127.0.0.x, `--memory-mb`), a count-6 service whose processes exist
//! on the host within every node's capacity, a job that fits nowhere until a big enough
//! node joins, resuming by index across a server restart (nothing restarted, a change made
//! meanwhile picked up), and `job delete` stopping the processes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};
use windflow_tests::agent::{Agent, AgentSpec};
use windflow_tests::cluster::Cluster;
use windflow_tests::{
    http_json, process_is_dead, stderr, stdout, strip_ansi, wait_for, windflow_bin,
};

const DEADLINE: Duration = Duration::from_secs(60);

struct Env {
    cluster: Cluster,
    admin: String,
    token: String,
    pids: PathBuf,
    agents: Vec<Agent>,
}

impl Env {
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
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

    fn cli(&self, args: &[&str]) -> Output {
        Command::new(windflow_bin())
            .args(args)
            .env("HOME", self.cluster.root.path())
            .env(
                "WINDFLOW_ADDR",
                format!("http://{}", self.cluster.servers[0].http_addr),
            )
            .env("WINDFLOW_TOKEN", &self.admin)
            .output()
            .expect("running the windflow CLI")
    }

    /// An agent enrolled with the shared token, from `bind`, offering `memory_mb`.
    fn start_agent(&mut self, name: &str, bind: &str, memory_mb: u64) {
        let spec = AgentSpec {
            servers: vec![self.cluster.servers[0].quic_addr],
            data_dir: self.cluster.root.path().join(name),
            hostname: name.to_owned(),
            bind: Some(bind.parse().unwrap()),
            token: Some(self.token.clone()),
        };
        let memory = memory_mb.to_string();
        let args = [
            "--memory-mb",
            &memory,
            "--cpu-mhz",
            "4000",
            "--kill-grace",
            "2s",
        ];
        self.agents
            .push(Agent::start_with_args(spec, &args).unwrap());
    }

    fn agent(&self, name: &str) -> &Agent {
        self.agents
            .iter()
            .find(|a| a.spec.hostname == name)
            .unwrap()
    }

    fn nodes(&self) -> Vec<Value> {
        let (status, nodes) = self.call("GET", "/v1/nodes", None);
        assert_eq!(status, 200, "{nodes}");
        nodes.as_array().cloned().unwrap_or_default()
    }

    fn allocs(&self, job: &str) -> Vec<Value> {
        let (status, list) = self.call("GET", &format!("/v1/allocations?job={job}"), None);
        assert_eq!(status, 200, "{list}");
        list.as_array().cloned().unwrap_or_default()
    }

    /// The job's allocations once `count` of them run, each with its pid file written.
    fn running(&self, job: &str, count: usize) -> Vec<Value> {
        wait_for(
            &format!("{count} running allocations of {job}"),
            DEADLINE,
            || {
                let live: Vec<Value> = self
                    .allocs(job)
                    .into_iter()
                    .filter(|a| a["desired"] == "run")
                    .collect();
                let ready = live.len() == count
                    && live
                        .iter()
                        .all(|a| a["client"] == "running" && pid_of(&self.pids, a).is_some());
                ready.then_some(live)
            },
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", self.logs()))
    }

    fn create(&self, body: Value) -> String {
        let (status, job) = self.call("POST", "/v1/jobs", Some(body));
        assert_eq!(status, 201, "{job}");
        job["id"].as_str().unwrap().to_owned()
    }

    fn logs(&self) -> String {
        let agents: Vec<String> = self
            .agents
            .iter()
            .map(|a| format!("--- {} ---\n{}", a.spec.hostname, a.log()))
            .collect();
        format!("{}\n{}", agents.join("\n"), self.cluster.logs())
    }
}

impl Drop for Env {
    /// Stopped or killed, agents leave their tasks running: those are stopped too.
    fn drop(&mut self) {
        for agent in &mut self.agents {
            let _ = agent.stop(Duration::from_secs(10));
            agent.stop_tasks();
        }
    }
}

/// The pid the allocation's task wrote (it is the process group's leader).
fn pid_of(dir: &Path, alloc: &Value) -> Option<u32> {
    let id = alloc["id"].as_str()?;
    std::fs::read_to_string(dir.join(id))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// A service that writes its pid to `DIR/<alloc id>` and then sleeps as that process.
fn service(dir: &Path, name: &str, count: u32, memory_mb: u64) -> Value {
    let command = format!(
        "echo $$ > {d}/$WINDFLOW_ALLOC_ID.tmp; mv {d}/$WINDFLOW_ALLOC_ID.tmp {d}/$WINDFLOW_ALLOC_ID; exec sleep 1000",
        d = dir.display()
    );
    json!({"name": name, "command": command, "type": "service", "count": count,
           "resources": {"cpu_mhz": 100, "memory_mb": memory_mb}})
}

fn started_events(alloc: &Value) -> usize {
    alloc["events"]
        .as_array()
        .map_or(0, |e| e.iter().filter(|e| e["kind"] == "started").count())
}

#[test]
fn service_allocations_run_on_agents_within_capacity_and_resume_by_index() {
    let cluster = Cluster::start(1).unwrap();
    let admin = cluster.token();
    let (status, created) = http_json(
        cluster.servers[0].http_addr,
        "POST",
        "/v1/agent/tokens",
        Some(&admin),
        Some(&json!({"uses": 4, "ttl": "10m"}).to_string()),
    )
    .unwrap();
    assert_eq!(status, 201, "{created}");
    let pids = cluster.root.path().join("pids");
    std::fs::create_dir(&pids).unwrap();
    let mut env = Env {
        token: created["token"].as_str().unwrap().to_owned(),
        cluster,
        admin,
        pids,
        agents: Vec::new(),
    };
    // Room for 4, 2 and 1 instances of 100 MB.
    let sizes = [
        ("big", "127.0.0.2", 450),
        ("mid", "127.0.0.3", 250),
        ("small", "127.0.0.4", 150),
    ];
    for (name, bind, memory) in sizes {
        env.start_agent(name, bind, memory);
    }
    let nodes = wait_for("three nodes with their memory", DEADLINE, || {
        let nodes = env.nodes();
        let ready = sizes.iter().all(|(name, _, memory)| {
            nodes.iter().any(|n| {
                n["name"] == *name
                    && n["status"] == "ready"
                    && n["resources"]["memory_mb"] == *memory
            })
        });
        ready.then_some(nodes)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", env.logs()));
    let capacity: HashMap<String, u64> = nodes
        .iter()
        .map(|n| {
            (
                n["id"].as_str().unwrap().to_owned(),
                n["resources"]["memory_mb"].as_u64().unwrap(),
            )
        })
        .collect();

    let web = env.create(service(&env.pids, "web", 6, 100));
    let placed = env.running(&web, 6);
    let mut used: HashMap<String, u64> = HashMap::new();
    for a in &placed {
        *used
            .entry(a["node"].as_str().unwrap().to_owned())
            .or_default() += a["resources"]["memory_mb"].as_u64().unwrap();
    }
    for (node, used) in &used {
        assert!(
            used <= &capacity[node],
            "{node} holds {used} MB of {}",
            capacity[node]
        );
    }
    let web_pids: Vec<u32> = placed
        .iter()
        .map(|a| pid_of(&env.pids, a).unwrap())
        .collect();
    assert!(
        web_pids.iter().all(|p| !process_is_dead(*p)),
        "{web_pids:?}"
    );

    // Fits nowhere: blocked, and `job show` says why for every node.
    let huge = env.create(service(&env.pids, "huge", 1, 600));
    let why = wait_for("the huge job to be blocked", DEADLINE, || {
        let out = env.cli(&["job", "show", "huge"]);
        let text = stdout(&out);
        (out.status.success() && text.contains("memory exhausted")).then_some(text)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", env.logs()));
    assert!(why.contains("Placed: 0 of 1"), "{why}");
    for node in capacity.keys() {
        assert!(why.contains(&format!("{node}: memory exhausted")), "{why}");
    }
    assert!(env.allocs(&huge).is_empty());
    // A node big enough joins: the job is placed there and runs.
    env.start_agent("huge-host", "127.0.0.5", 1000);
    let huge_alloc = env.running(&huge, 1).remove(0);
    let huge_node = env
        .nodes()
        .into_iter()
        .find(|n| n["name"] == "huge-host")
        .unwrap();
    assert_eq!(huge_alloc["node"], huge_node["id"]);

    // A second service, on one agent; that agent is frozen, the server restarts, and the
    // service is deleted while the agent is away.
    let side = env.create(service(&env.pids, "side", 1, 10));
    let side_alloc = env.running(&side, 1).remove(0);
    let side_pid = pid_of(&env.pids, &side_alloc).unwrap();
    let side_host = env
        .nodes()
        .into_iter()
        .find(|n| n["id"] == side_alloc["node"])
        .unwrap()["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let frozen = Pid::from_raw(env.agent(&side_host).pid().unwrap() as i32);
    kill(frozen, Signal::SIGSTOP).unwrap();
    env.cluster.stop(0).unwrap();
    env.cluster.restart(0).unwrap();
    env.cluster.wait_ready().unwrap();
    let (status, answer) = env.call("DELETE", &format!("/v1/jobs/{side}"), None);
    assert_eq!(status, 200, "{answer}");
    kill(frozen, Signal::SIGCONT).unwrap();
    wait_for("the deleted service's process to stop", DEADLINE, || {
        process_is_dead(side_pid).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", env.logs()));
    wait_for(
        "the deleted service's allocation to be complete",
        DEADLINE,
        || (env.allocs(&side)[0]["client"] == "complete").then_some(()),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", env.logs()));
    // Every agent is back with the new server process, and nothing that ran was started
    // again: the same processes, one start each.
    wait_for("all agents reconnected", DEADLINE, || {
        let nodes = env.nodes();
        (nodes.len() == 4 && nodes.iter().all(|n| n["connected"] == true)).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", env.logs()));
    // Each resumed from the index it had seen, not from the start.
    let log = strip_ansi(&env.cluster.servers[0].log());
    for name in ["big", "mid", "small", "huge-host"] {
        let hello = log
            .lines()
            .rfind(|l| l.contains("agent connected") && l.contains(&format!("hostname={name} ")))
            .unwrap_or_else(|| panic!("no session of {name}:\n{log}"));
        let index: u64 = hello
            .split("alloc_index=")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no index in {hello}"));
        assert!(index > 0, "{hello}");
    }
    let after = env.running(&web, 6);
    for (a, pid) in placed.iter().zip(&web_pids) {
        let now = after.iter().find(|b| b["id"] == a["id"]).unwrap();
        assert_eq!(pid_of(&env.pids, now), Some(*pid), "{now}");
        assert!(!process_is_dead(*pid));
        assert_eq!(started_events(now), 1, "{now}");
    }

    // Deleting the job stops its processes.
    let out = env.cli(&["job", "delete", "web"]);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_for("the web processes to stop", DEADLINE, || {
        web_pids.iter().all(|p| process_is_dead(*p)).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", env.logs()));
    wait_for("the web allocations to be complete", DEADLINE, || {
        env.allocs(&web)
            .iter()
            .all(|a| a["client"] == "complete")
            .then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", env.logs()));
    let huge_pid = pid_of(&env.pids, &huge_alloc).unwrap();
    assert!(
        !process_is_dead(huge_pid),
        "another job's process was stopped"
    );
}
