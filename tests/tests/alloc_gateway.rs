//! The gateway's allocation sync against a hand-driven agent session on a real server: a
//! Hello naming an index gets exactly the node's changes after it, a change is pushed at
//! once, and what an untrusted agent sends (another node's allocation, `lost`, floods of
//! events, unknown IDs, garbage frames) is dropped or capped without harm.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use windflow_certs::{ClusterCa, TlsIdentity};
use windflow_protocol::codec;
use windflow_protocol::messages::{
    ALPN_AGENT, AgentMessage, AllocSync, AllocUpdate, Hello, ServerMessage, VersionRange,
};
use windflow_protocol::{
    AllocEvent, AllocEventKind, AllocId, ClientStatus, DesiredStatus, DriverKind, NodeId, Timestamp,
};
use windflow_tests::agent::{Agent, AgentSpec};
use windflow_tests::cluster::Cluster;
use windflow_tests::{http_json, wait_for};

const DEADLINE: Duration = Duration::from_secs(60);

fn call(cluster: &Cluster, admin: &str, method: &str, path: &str, body: Option<Value>) -> Value {
    let body = body.map(|b| b.to_string());
    let (status, answer) = http_json(
        cluster.servers[0].http_addr,
        method,
        path,
        Some(admin),
        body.as_deref(),
    )
    .unwrap();
    assert!(
        (200..300).contains(&status),
        "{method} {path}: {status} {answer}"
    );
    answer
}

/// The agent side of one session, driven by hand.
struct Fake {
    _endpoint: quinn::Endpoint,
    conn: quinn::Connection,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    /// Messages read while waiting for something else (a change can be pushed before the
    /// ack of the update that caused it).
    unread: std::collections::VecDeque<ServerMessage>,
}

impl Fake {
    async fn connect(identity: &TlsIdentity, server: SocketAddr, alloc_index: u64) -> Fake {
        let client = windflow_certs::quinn_client_config(identity, ALPN_AGENT).unwrap();
        let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        endpoint.set_default_client_config(client);
        let conn = endpoint
            .connect(server, windflow_certs::SERVER_NAME)
            .unwrap()
            .await
            .unwrap();
        let (send, recv) = conn.open_bi().await.unwrap();
        let mut fake = Fake {
            _endpoint: endpoint,
            conn,
            send,
            recv,
            unread: Default::default(),
        };
        fake.send(&AgentMessage::Hello(Hello {
            versions: VersionRange::SUPPORTED,
            hostname: "fake".into(),
            agent_version: "0".into(),
            drivers: vec![DriverKind::Exec],
            fingerprint: Default::default(),
            alloc_index,
        }))
        .await;
        match fake.recv().await {
            ServerMessage::Welcome(_) => fake,
            other => panic!("expected Welcome, got {other:?}"),
        }
    }

    async fn send(&mut self, msg: &AgentMessage) {
        self.send
            .write_all(&codec::encode(msg).unwrap())
            .await
            .unwrap();
    }

    async fn recv(&mut self) -> ServerMessage {
        if let Some(msg) = self.unread.pop_front() {
            return msg;
        }
        self.read().await
    }

    async fn read(&mut self) -> ServerMessage {
        tokio::time::timeout(DEADLINE, async {
            let mut header = [0u8; codec::HEADER_LEN];
            self.recv.read_exact(&mut header).await.unwrap();
            let mut payload = vec![0u8; codec::decode_len(header).unwrap()];
            self.recv.read_exact(&mut payload).await.unwrap();
            codec::decode_payload(&payload).unwrap()
        })
        .await
        .expect("a message from the server")
    }

    async fn next_sync(&mut self) -> AllocSync {
        loop {
            if let ServerMessage::Allocations(sync) = self.recv().await {
                return sync;
            }
        }
    }

    /// Sends an update and waits for its ack (servers ack what they drop too).
    async fn update(&mut self, update: AllocUpdate) {
        let (alloc, client) = (update.alloc, update.client);
        self.send(&AgentMessage::AllocUpdate(update)).await;
        loop {
            match self.read().await {
                ServerMessage::AllocUpdateAck {
                    alloc: a,
                    client: c,
                } if (a, c) == (alloc, client) => return,
                other => self.unread.push_back(other),
            }
        }
    }
}

/// Stops the agents gently when the test ends, however it ends: they stop their tasks.
struct Agents(Vec<Agent>);

impl Drop for Agents {
    fn drop(&mut self) {
        for agent in &mut self.0 {
            let _ = agent.stop(Duration::from_secs(10));
            agent.stop_tasks();
        }
    }
}

fn alloc_id(a: &Value) -> AllocId {
    a["id"].as_str().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_gateway_sends_exactly_the_changes_after_the_index_and_distrusts_the_agent() {
    let cluster = tokio::task::spawn_blocking(|| Cluster::start(1).unwrap())
        .await
        .unwrap();
    let admin = cluster.token();
    let created = call(
        &cluster,
        &admin,
        "POST",
        "/v1/agent/tokens",
        Some(json!({"uses": 2})),
    );
    let token = created["token"].as_str().unwrap().to_owned();
    let mut agents = Agents(
        ["a", "b"]
            .iter()
            .zip(["127.0.0.2", "127.0.0.3"])
            .map(|(name, bind)| {
                let spec = AgentSpec {
                    servers: vec![cluster.servers[0].quic_addr],
                    data_dir: cluster.root.path().join(name),
                    hostname: (*name).into(),
                    bind: Some(bind.parse().unwrap()),
                    token: Some(token.clone()),
                };
                Agent::start_with_args(spec, &["--memory-mb", "250", "--cpu-mhz", "4000"]).unwrap()
            })
            .collect(),
    );
    // 250 MB each: two instances of 100 MB per node, so both nodes hold some.
    let job = call(
        &cluster,
        &admin,
        "POST",
        "/v1/jobs",
        Some(
            json!({"name": "web", "command": "sleep 1000", "type": "service", "count": 4,
                    "resources": {"cpu_mhz": 100, "memory_mb": 100}}),
        ),
    );
    let job = job["id"].as_str().unwrap().to_owned();
    let allocs = wait_for("four running allocations", DEADLINE, || {
        let list = call(
            &cluster,
            &admin,
            "GET",
            &format!("/v1/allocations?job={job}"),
            None,
        );
        let list = list.as_array().cloned().unwrap_or_default();
        (list.len() == 4 && list.iter().all(|a| a["client"] == "running")).then_some(list)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()));
    let nodes = call(&cluster, &admin, "GET", "/v1/nodes", None);
    let node_of = |name: &str| -> NodeId {
        let n = nodes
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == name)
            .unwrap();
        n["id"].as_str().unwrap().parse().unwrap()
    };
    let (node_a, node_b) = (node_of("a"), node_of("b"));

    // Agent b stops (its tasks with it); a hand-driven session takes its place.
    agents.0[1].stop(DEADLINE).unwrap();
    let ca = ClusterCa::load(&cluster.root.path().join("ca")).unwrap();
    let identity = TlsIdentity {
        ca_pem: ca.cert_pem().to_owned(),
        cert: ca.issue_node(node_b).unwrap(),
    };
    let mut on_b: Vec<&Value> = allocs
        .iter()
        .filter(|a| a["node"] == node_b.to_string())
        .collect();
    on_b.sort_by_key(|a| a["modify_index"].as_u64());
    let on_a: Vec<&Value> = allocs
        .iter()
        .filter(|a| a["node"] == node_a.to_string())
        .collect();
    assert_eq!((on_a.len(), on_b.len()), (2, 2), "{allocs:?}");
    let latest = allocs
        .iter()
        .filter_map(|a| a["modify_index"].as_u64())
        .max()
        .unwrap();

    // From the first of b's changes: only the second; from 0: both; from the latest: none.
    let since = on_b[0]["modify_index"].as_u64().unwrap();
    for (from, expect) in [
        (since, vec![alloc_id(on_b[1])]),
        (0, on_b.iter().map(|a| alloc_id(a)).collect()),
        (latest, vec![]),
    ] {
        let mut fake = Fake::connect(&identity, cluster.servers[0].quic_addr, from).await;
        let sync = fake.next_sync().await;
        let got: Vec<AllocId> = sync.allocs.iter().map(|a| a.alloc.id).collect();
        assert_eq!(got, expect, "from index {from}");
        assert_eq!(sync.index, latest, "from index {from}");
        for a in &sync.allocs {
            assert_eq!(a.alloc.node, node_b);
            assert_eq!(a.alloc.desired, DesiredStatus::Run);
            assert_eq!(
                a.tasks.len(),
                1,
                "a running allocation comes with its tasks"
            );
        }
        fake.conn.close(0u32.into(), b"done");
    }

    // An agent claiming an index the cluster never reached gets nothing, and keeps it.
    let mut liar = Fake::connect(&identity, cluster.servers[0].quic_addr, u64::MAX).await;
    let sync = liar.next_sync().await;
    assert!(sync.allocs.is_empty());
    assert_eq!(sync.index, u64::MAX);
    liar.conn.close(0u32.into(), b"done");

    let mut fake = Fake::connect(&identity, cluster.servers[0].quic_addr, latest).await;
    assert!(fake.next_sync().await.allocs.is_empty());
    let mine = alloc_id(on_b[0]);
    let theirs = alloc_id(on_a[0]);
    let event = |kind, message: String| AllocEvent {
        at: Timestamp::now(),
        kind,
        message,
    };
    // Another node's allocation, a status only servers set, an unknown allocation: all
    // acknowledged, none recorded.
    for (alloc, client) in [
        (theirs, ClientStatus::Failed),
        (mine, ClientStatus::Lost),
        (AllocId(999_999), ClientStatus::Failed),
    ] {
        fake.update(AllocUpdate {
            alloc,
            client,
            restarts: 9,
            events: vec![event(AllocEventKind::Failed, "forged".into())],
            ports: Vec::new(),
            health: Default::default(),
        })
        .await;
    }
    // A flood of events: the newest 32 kept, each cut to 1 KiB; and the change is pushed
    // back down at once, with the new index.
    let flood = (0..100)
        .map(|i| {
            event(
                AllocEventKind::Restarting,
                format!("{i:03}{}", "x".repeat(10_000)),
            )
        })
        .collect();
    fake.update(AllocUpdate {
        alloc: mine,
        client: ClientStatus::Running,
        restarts: 3,
        events: flood,
        ports: Vec::new(),
        health: Default::default(),
    })
    .await;
    let pushed = fake.next_sync().await;
    assert_eq!(pushed.allocs.len(), 1, "{:?}", pushed.index);
    let got = &pushed.allocs[0].alloc;
    assert_eq!(got.id, mine);
    assert!(pushed.index > latest && got.modify_index == pushed.index);
    assert_eq!(got.restarts, 3);
    assert_eq!(got.client, ClientStatus::Running);
    let restarting: Vec<_> = got
        .events
        .iter()
        .filter(|e| e.kind == AllocEventKind::Restarting)
        .collect();
    assert!(restarting.len() <= 32 && restarting.iter().all(|e| e.message.len() <= 1024));
    assert!(restarting.last().unwrap().message.starts_with("099"));
    assert!(
        got.events.iter().all(|e| e.message != "forged"),
        "{:?}",
        got.events
    );
    let other = call(
        &cluster,
        &admin,
        "GET",
        &format!("/v1/allocations/{theirs}"),
        None,
    );
    assert_eq!(other["client"], "running", "{other}");
    assert!(!other.to_string().contains("forged"), "{other}");

    // Garbage ends the session, not the server: agent a stays connected and the API answers.
    fake.send
        .write_all(&[0, 0, 0, 4, 0xff, 0xfe, 0xfd, 0xfc])
        .await
        .unwrap();
    tokio::time::timeout(DEADLINE, fake.conn.closed())
        .await
        .unwrap();
    let nodes = call(&cluster, &admin, "GET", "/v1/nodes", None);
    let a = nodes
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "a")
        .unwrap();
    assert_eq!(a["connected"], true, "{a}");
}
