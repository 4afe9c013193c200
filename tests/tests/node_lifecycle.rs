//! A node's life against real processes: `windflow server` with a short heartbeat grace
//! and real `windflow-agent`s, each from its own 127.0.0.x address. A killed agent's node
//! goes down after the grace period, its service allocations are lost and replaced on the
//! other nodes (the lost ones told to stop), and it is ready again when the agent comes
//! back. A drained node's service allocations are replaced elsewhere, no new run goes
//! there, and it ends ineligible with its drain complete. In a cluster of three, a new
//! leader takes no node down: every node gets a fresh grace period.

use std::net::IpAddr;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use windflow_tests::agent::{Agent, AgentSpec};
use windflow_tests::cluster::Cluster;
use windflow_tests::{http_json, stderr, stdout, wait_for, windflow_bin};

const DEADLINE: Duration = Duration::from_secs(60);
const LIVENESS: &[&str] = &["--heartbeat-interval", "500ms", "--heartbeat-grace", "3s"];

struct Setup {
    cluster: Cluster,
    admin: String,
    agents: Vec<Agent>,
    names: Vec<String>,
    /// The server the API calls go to.
    api: usize,
    /// The servers the agents connect to.
    agent_servers: Vec<std::net::SocketAddr>,
}

impl Setup {
    /// One server and `n` enrolled agents, all ready.
    fn start(n: usize) -> Setup {
        let cluster = Cluster::start_with(1, LIVENESS).unwrap();
        let servers = vec![cluster.servers[0].quic_addr];
        Self::with(cluster, 0, servers, n)
    }

    /// `n` agents enrolled into `cluster` through `agent_servers`, all ready.
    fn with(
        cluster: Cluster,
        api: usize,
        agent_servers: Vec<std::net::SocketAddr>,
        n: usize,
    ) -> Setup {
        let admin = cluster.token();
        let mut s = Setup {
            cluster,
            admin,
            agents: Vec::new(),
            names: Vec::new(),
            api,
            agent_servers,
        };
        let (status, token) = s.call(
            "POST",
            "/v1/agent/tokens",
            Some(json!({"uses": n, "ttl": "10m"})),
        );
        assert_eq!(status, 201, "{token}");
        let token = token["token"].as_str().unwrap().to_owned();
        for i in 0..n {
            let name = format!("host-{i}");
            let spec = s.spec(&name, i, Some(&token));
            s.agents.push(Agent::start(spec).unwrap());
            s.names.push(name);
        }
        s.wait("every node to be ready", |s| {
            let nodes = s.nodes();
            (nodes.len() == n && nodes.iter().all(|n| n["status"] == "ready")).then_some(())
        });
        s
    }

    fn spec(&self, name: &str, i: usize, token: Option<&str>) -> AgentSpec {
        AgentSpec {
            servers: self.agent_servers.clone(),
            data_dir: self.cluster.root.path().join(name),
            hostname: name.to_owned(),
            bind: Some(format!("127.0.0.{}", i + 2).parse::<IpAddr>().unwrap()),
            token: token.map(str::to_owned),
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let body = body.map(|b| b.to_string());
        http_json(
            self.cluster.servers[self.api].http_addr,
            method,
            path,
            Some(&self.admin),
            body.as_deref(),
        )
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    fn get(&self, path: &str) -> Value {
        let (status, v) = self.call("GET", path, None);
        assert_eq!(status, 200, "{path}: {v}");
        v
    }

    fn nodes(&self) -> Vec<Value> {
        self.get("/v1/nodes")
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    fn node(&self, id: &str) -> Value {
        self.get(&format!("/v1/nodes/{id}"))
    }

    fn allocs(&self, job: &str) -> Vec<Value> {
        self.get(&format!("/v1/allocations?job={job}"))
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    fn cli(&self, args: &[&str]) -> Output {
        Command::new(windflow_bin())
            .args(args)
            .env("HOME", self.cluster.root.path())
            .env(
                "WINDFLOW_ADDR",
                format!("http://{}", self.cluster.servers[self.api].http_addr),
            )
            .env("WINDFLOW_TOKEN", &self.admin)
            .stdin(Stdio::null())
            .output()
            .expect("running the windflow CLI")
    }

    fn wait<T>(&self, what: &str, mut f: impl FnMut(&Setup) -> Option<T>) -> T {
        wait_for(what, DEADLINE, || f(self)).unwrap_or_else(|e| {
            let agents: Vec<String> = self.agents.iter().map(Agent::log).collect();
            panic!("{e}\n{}\n{}", agents.join("\n"), self.cluster.logs())
        })
    }

    /// A service of `count` instances spread over the nodes, replaced 1 s after a loss.
    fn service(&self, name: &str, count: u32) -> String {
        let (status, job) = self.call(
            "POST",
            "/v1/jobs",
            Some(
                json!({"name": name, "command": "sleep 1000", "type": "service",
                        "count": count, "placement": "spread",
                        "resources": {"cpu_mhz": 10, "memory_mb": 8},
                        "reschedule": {"unlimited": true, "delay": "1s", "max_delay": "4s"}}),
            ),
        );
        assert_eq!(status, 201, "{job}");
        let id = job["id"].as_str().unwrap().to_owned();
        self.wait("the service to be placed", |s| {
            let live = s.allocs(&id).iter().filter(|a| is_live(a)).count();
            (live == count as usize).then_some(())
        });
        id
    }
}

impl Drop for Setup {
    /// Stopped or killed, agents leave their tasks running: those are stopped too.
    fn drop(&mut self) {
        for agent in &mut self.agents {
            agent.kill();
            agent.stop_tasks();
        }
    }
}

fn is_live(a: &Value) -> bool {
    a["desired"] == "run" && matches!(a["client"].as_str(), Some("pending" | "running"))
}

fn kinds(a: &Value) -> Vec<String> {
    a["events"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| e["kind"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn a_killed_agents_node_goes_down_its_allocations_are_replaced_and_it_comes_back() {
    let mut s = Setup::start(3);
    let job = s.service("web", 3);
    let placed = s.allocs(&job);
    let victim = placed[0]["node"].as_str().unwrap().to_owned();
    let on_victim: Vec<String> = placed
        .iter()
        .filter(|a| a["node"] == victim.as_str())
        .map(|a| a["id"].as_str().unwrap().to_owned())
        .collect();
    let i = s
        .nodes()
        .iter()
        .position(|n| n["id"] == victim.as_str())
        .unwrap();
    let name = s.nodes()[i]["name"].as_str().unwrap().to_owned();
    let agent = s.names.iter().position(|n| *n == name).unwrap();

    let killed = std::time::Instant::now();
    s.agents[agent].kill();
    s.wait("the killed agent's node to be down", |s| {
        (s.node(&victim)["status"] == "down").then_some(())
    });
    // Not at once: after the grace period (3 s from its last heartbeat, at most 500 ms
    // before the kill).
    assert!(
        killed.elapsed() >= Duration::from_millis(2400),
        "down after {:?}",
        killed.elapsed()
    );
    for id in &on_victim {
        let a = s.get(&format!("/v1/allocations/{id}"));
        assert_eq!(a["client"], "lost", "{a}");
        assert!(kinds(&a).contains(&"lost".to_owned()), "{a}");
    }
    // Replacements on the other nodes, after the 1 s reschedule delay; the lost ones are
    // told to stop, so their agent stops them when it comes back.
    let live = s.wait("the lost allocations to be replaced elsewhere", |s| {
        let allocs = s.allocs(&job);
        let live: Vec<Value> = allocs.into_iter().filter(is_live).collect();
        (live.len() == 3).then_some(live)
    });
    assert!(
        live.iter().all(|a| a["node"] != victim.as_str()),
        "{live:?}"
    );
    for id in &on_victim {
        let replacement = live
            .iter()
            .find(|a| a["previous"] == id.as_str())
            .unwrap_or_else(|| panic!("no replacement of {id}: {live:?}"));
        assert_eq!(replacement["reschedules"], 1, "{replacement}");
        let old = s.get(&format!("/v1/allocations/{id}"));
        assert_eq!(old["desired"], "stop", "{old}");
        assert!(kinds(&old).contains(&"rescheduled".to_owned()), "{old}");
    }
    let out = s.cli(&["alloc", "show", &on_victim[0]]);
    assert!(out.status.success(), "{}", stderr(&out));
    let shown = stdout(&out);
    assert!(
        shown.contains("Status:       lost") && shown.contains("rescheduled"),
        "{shown}"
    );
    let (_, metrics) = s.call("GET", "/metrics", None);
    let metrics = metrics.as_str().unwrap_or_default().to_owned();
    assert!(
        metrics.contains("windflow_nodes{status=\"down\"} 1"),
        "{metrics}"
    );

    // The agent comes back from its data dir: the node is ready again.
    let spec = s.spec(&name, i, None);
    s.agents[agent] = Agent::start(spec).unwrap();
    s.wait("the node to be ready again", |s| {
        (s.node(&victim)["status"] == "ready").then_some(())
    });
    let out = s.cli(&["node", "show", &name]);
    assert!(out.status.success(), "{}", stderr(&out));
    let shown = stdout(&out);
    assert!(
        shown.contains("Status:       ready") && shown.contains("lost"),
        "{shown}"
    );
    // Nothing more was placed: the job has its three.
    assert_eq!(s.allocs(&job).iter().filter(|a| is_live(a)).count(), 3);
}

#[test]
fn a_drained_nodes_service_allocations_move_and_it_ends_ineligible() {
    let s = Setup::start(2);
    let job = s.service("api", 2);
    let placed = s.allocs(&job);
    let drained = placed[0]["node"].as_str().unwrap().to_owned();
    let moving: Vec<String> = placed
        .iter()
        .filter(|a| a["node"] == drained.as_str())
        .map(|a| a["id"].as_str().unwrap().to_owned())
        .collect();

    let out = s.cli(&["node", "drain", &drained, "--deadline", "5s"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("draining"), "{}", stdout(&out));
    let node = s.node(&drained);
    assert_eq!(node["eligibility"], "ineligible", "{node}");
    assert!(node["drain"].is_object(), "{node}");

    // Each of its allocations gets a replacement on the other node first (a move, not a
    // reschedule).
    let replacements = s.wait("replacements placed elsewhere", |s| {
        let allocs = s.allocs(&job);
        let found: Vec<Value> = moving
            .iter()
            .filter_map(|id| {
                allocs
                    .iter()
                    .find(|a| a["previous"] == id.as_str() && is_live(a))
                    .cloned()
            })
            .collect();
        (found.len() == moving.len()).then_some(found)
    });
    for r in &replacements {
        assert_ne!(r["node"], drained.as_str(), "{r}");
        assert_eq!(r["reschedules"], 0, "{r}");
    }
    // No new run goes to the draining node.
    let (status, batch) = s.call(
        "POST",
        "/v1/jobs",
        Some(json!({"name": "once", "command": "echo hi"})),
    );
    assert_eq!(status, 201, "{batch}");
    let (status, run) = s.call(
        "POST",
        &format!("/v1/jobs/{}/run", batch["id"].as_str().unwrap()),
        None,
    );
    assert_eq!(status, 202, "{run}");
    let run_id = run["id"].as_str().unwrap().to_owned();
    let run = s.wait("the run to be dispatched", |s| {
        let run = s.get(&format!("/v1/runs/{run_id}"));
        (!run["node"].is_null()).then_some(run)
    });
    assert_ne!(run["node"], drained.as_str(), "{run}");

    // The old allocations do not run anywhere the agents report yet, so the drain ends
    // at its deadline: what was left is stopped, the drain is complete, the node stays
    // ineligible.
    let node = s.wait("the drain to be complete", |s| {
        let n = s.node(&drained);
        n["drain"].is_null().then_some(n)
    });
    assert_eq!(node["eligibility"], "ineligible", "{node}");
    for id in &moving {
        let old = s.get(&format!("/v1/allocations/{id}"));
        assert_eq!(old["desired"], "stop", "{old}");
    }
    let live: Vec<Value> = s.allocs(&job).into_iter().filter(is_live).collect();
    assert_eq!(live.len(), 2, "{live:?}");
    assert!(
        live.iter().all(|a| a["node"] != drained.as_str()),
        "{live:?}"
    );
    let out = s.cli(&["node", "eligibility", &drained, "on"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(s.node(&drained)["eligibility"], "eligible");
    let out = s.cli(&["node", "list"]);
    assert!(stdout(&out).contains("eligible"), "{}", stdout(&out));

    // The policies from the CLI's flags, and a flag the server refuses by field.
    let out = s.cli(&[
        "job",
        "create",
        "svc",
        "--cmd",
        "sleep 100",
        "--type",
        "service",
        "--restart-attempts",
        "1",
        "--restart-mode",
        "delay",
        "--reschedule-attempts",
        "2",
        "--reschedule-interval",
        "10m",
        "--reschedule-delay",
        "2s",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (_, job) = s.call("GET", "/v1/jobs/svc", None);
    let group = &job["spec"]["groups"][0];
    assert_eq!(group["restart"]["attempts"], 1, "{job}");
    assert_eq!(group["restart"]["mode"], "delay", "{job}");
    assert_eq!(
        group["reschedule"]["limit"],
        json!({"attempts": {"attempts": 2, "interval": "10m"}}),
        "{job}"
    );
    let out = s.cli(&[
        "job",
        "create",
        "bad",
        "--cmd",
        "true",
        "--type",
        "service",
        "--restart-mode",
        "never",
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("restart.mode"), "{}", stderr(&out));
}

#[test]
fn a_new_leader_gives_every_node_a_fresh_grace_period() {
    let cluster = Cluster::start_with(3, LIVENESS).unwrap();
    let leader = cluster.wait_for_leader(DEADLINE).unwrap();
    // The agents hold their sessions with one follower, which stays up throughout.
    let others: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let (kept, restarted) = (others[0], others[1]);
    let servers = vec![cluster.servers[kept].quic_addr];
    let mut s = Setup::with(cluster, kept, servers, 3);
    let job = s.service("web", 3);

    // No quorum: nothing commits, so what the cluster knows of the nodes' heartbeats ages
    // past the grace period while their agents keep heartbeating to the kept server.
    s.cluster.kill(leader);
    s.cluster.kill(restarted);
    s.wait(
        "every recorded heartbeat to be older than the grace period",
        |s| {
            let stale = windflow_protocol::Timestamp(windflow_protocol::Timestamp::now().0 - 4000);
            s.nodes()
                .iter()
                .all(|n| {
                    let heard = s.node(n["id"].as_str().unwrap())["last_heard_at"].clone();
                    serde_json::from_value::<windflow_protocol::Timestamp>(heard)
                        .is_ok_and(|t| t < stale)
                })
                .then_some(())
        },
    );
    s.cluster.restart(restarted).unwrap();
    s.cluster.wait_for_leader(DEADLINE).unwrap();
    let elected = windflow_protocol::Timestamp::now();
    // Once every node was heard well past the new leader's own grace period, its monitor
    // has looked: nothing went down, so nothing was lost.
    let past = windflow_protocol::Timestamp(elected.0 + 4000);
    s.wait("every node heard past the new leader's grace period", |s| {
        s.nodes()
            .iter()
            .all(|n| {
                let heard = s.node(n["id"].as_str().unwrap())["last_heard_at"].clone();
                serde_json::from_value::<windflow_protocol::Timestamp>(heard)
                    .is_ok_and(|t| t >= past)
            })
            .then_some(())
    });
    for n in s.nodes() {
        assert_eq!(n["status"], "ready", "{n}");
    }
    let allocs = s.allocs(&job);
    assert_eq!(allocs.len(), 3, "{allocs:?}");
    assert!(allocs.iter().all(is_live), "{allocs:?}");
}
