//! Agent enrollment against real processes: agents holding only a join token, each from
//! its own 127.0.0.x address, enroll with one server and show up as labelled nodes; a
//! used-up token is refused by name; a revoked node is refused at the TLS handshake while
//! the others stay connected; an enrolled agent restarts from its saved identity.

use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use serde_json::{Value, json};
use windflow_tests::agent::{Agent, AgentSpec};
use windflow_tests::cluster::Cluster;
use windflow_tests::{http_json, strip_ansi, wait_for};

const DEADLINE: Duration = Duration::from_secs(60);

fn create_token(cluster: &Cluster, admin: &str, body: Value) -> Value {
    let (status, created) = http_json(
        cluster.servers[0].http_addr,
        "POST",
        "/v1/agent/tokens",
        Some(admin),
        Some(&body.to_string()),
    )
    .unwrap();
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["kind"], "agent", "{created}");
    created
}

fn nodes(cluster: &Cluster, admin: &str) -> Vec<Value> {
    let (status, nodes) = http_json(
        cluster.servers[0].http_addr,
        "GET",
        "/v1/nodes",
        Some(admin),
        None,
    )
    .unwrap();
    assert_eq!(status, 200, "{nodes}");
    nodes.as_array().cloned().unwrap_or_default()
}

fn node_named<'a>(nodes: &'a [Value], name: &str) -> Option<&'a Value> {
    nodes.iter().find(|n| n["name"] == name)
}

fn spec(cluster: &Cluster, name: &str, bind: Option<&str>, token: Option<&str>) -> AgentSpec {
    AgentSpec {
        servers: vec![cluster.servers[0].quic_addr],
        data_dir: cluster.root.path().join(name),
        hostname: name.to_owned(),
        bind: bind.map(|b| b.parse::<IpAddr>().unwrap()),
        token: token.map(str::to_owned),
    }
}

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn agents_enroll_with_a_token_and_a_revoked_node_is_refused_at_the_handshake() {
    let cluster = Cluster::start(1).unwrap();
    let admin = cluster.token();
    let created = create_token(
        &cluster,
        &admin,
        json!({"uses": 3, "ttl": "10m", "labels": {"rack": "r1", "zone": "test"}}),
    );
    let token = created["token"].as_str().unwrap().to_owned();
    let token_id = created["id"].as_str().unwrap().to_owned();
    assert!(token.starts_with("wfjoin1."), "{created}");

    // Three agents, each from its own loopback address, enroll with the one token.
    let names = ["agent-a", "agent-b", "agent-c"];
    let binds = ["127.0.0.2", "127.0.0.3", "127.0.0.4"];
    let mut agents: Vec<Agent> = names
        .iter()
        .zip(binds)
        .map(|(name, bind)| Agent::start(spec(&cluster, name, Some(bind), Some(&token))).unwrap())
        .collect();
    let all = wait_for("three enrolled agents to be connected", DEADLINE, || {
        let nodes = nodes(&cluster, &admin);
        let ready = names
            .iter()
            .all(|name| node_named(&nodes, name).is_some_and(|n| n["status"] == "ready"));
        ready.then_some(nodes)
    })
    .unwrap_or_else(|e| {
        let logs: Vec<String> = agents.iter().map(Agent::log).collect();
        panic!("{e}\n{}\n{}", logs.join("\n"), cluster.logs())
    });
    assert_eq!(all.len(), 3, "{all:?}");
    for n in &all {
        assert_eq!(n["labels"], json!({"rack": "r1", "zone": "test"}), "{n}");
        // exec always; docker too where the engine answers (CI has one).
        assert_eq!(n["drivers"][0], json!("exec"), "{n}");
    }
    for agent in &agents {
        let dir = &agent.spec.data_dir;
        assert_eq!(mode(&dir.join("node.key")), 0o600);
        assert_eq!(mode(dir), 0o700);
        assert!(dir.join("node.crt").is_file() && dir.join("ca.crt").is_file());
    }
    // Each came from its own address.
    let server_log = strip_ansi(&cluster.servers[0].log());
    for bind in binds {
        assert!(
            server_log.contains(&format!("remote={bind}:")),
            "no connection from {bind}:\n{server_log}"
        );
    }

    // A fourth enrollment: the token is used up, and the refusal names it.
    let mut fourth = Agent::start(spec(&cluster, "agent-d", None, Some(&token))).unwrap();
    let status = fourth.wait_exit(DEADLINE).unwrap();
    assert!(!status.success());
    let log = strip_ansi(&fourth.log());
    assert!(
        log.contains(&format!("token {token_id} is used up")),
        "{log}"
    );
    assert!(!fourth.spec.data_dir.join("node.key").exists());
    assert_eq!(nodes(&cluster, &admin).len(), 3);

    // A single-use token enrolls once, and is refused the second time.
    let single = create_token(&cluster, &admin, json!({"uses": 1}));
    let single_token = single["token"].as_str().unwrap().to_owned();
    let single_id = single["id"].as_str().unwrap().to_owned();
    let once = Agent::start(spec(&cluster, "agent-e", None, Some(&single_token))).unwrap();
    wait_for("the single-use agent to be connected", DEADLINE, || {
        let nodes = nodes(&cluster, &admin);
        node_named(&nodes, "agent-e")
            .is_some_and(|n| n["status"] == "ready" && n["labels"] == json!({}))
            .then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", once.log()));
    let mut twice = Agent::start(spec(&cluster, "agent-f", None, Some(&single_token))).unwrap();
    assert!(!twice.wait_exit(DEADLINE).unwrap().success());
    let log = strip_ansi(&twice.log());
    assert!(
        log.contains(&format!(
            "token {single_id} is used up (it allowed 1 use(s))"
        )),
        "{log}"
    );

    // Revoke agent-a's node: its session is closed and its next handshakes fail; the
    // others stay connected.
    let revoked_id = node_named(&all, "agent-a").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, revoked) = http_json(
        cluster.servers[0].http_addr,
        "POST",
        &format!("/v1/nodes/{revoked_id}/revoke"),
        Some(&admin),
        None,
    )
    .unwrap();
    assert_eq!(status, 200, "{revoked}");
    assert_eq!(revoked["status"], "revoked");
    wait_for("the revoked agent to be disconnected", DEADLINE, || {
        let nodes = nodes(&cluster, &admin);
        (node_named(&nodes, "agent-a")?["connected"] == false).then_some(())
    })
    .unwrap();
    wait_for(
        "a handshake of the revoked agent to be refused",
        DEADLINE,
        || {
            strip_ansi(&cluster.servers[0].log())
                .lines()
                .filter(|l| l.contains("refused connection at the TLS handshake"))
                .any(|l| l.contains("remote=127.0.0.2:") && l.contains("Revoked"))
                .then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}\n{}", agents[0].log(), cluster.servers[0].log()));
    // The agent is told, and stops: retrying cannot help a revoked certificate.
    let status = agents[0].wait_exit(DEADLINE).unwrap();
    assert!(!status.success());
    let log = strip_ansi(&agents[0].log());
    assert!(
        log.contains("refused at the TLS handshake; stopping")
            && log.contains("it was revoked (windflow node revoke)"),
        "{log}"
    );
    let nodes_now = nodes(&cluster, &admin);
    assert_eq!(
        node_named(&nodes_now, "agent-a").unwrap()["connected"],
        false
    );
    for name in ["agent-b", "agent-c"] {
        assert_eq!(
            node_named(&nodes_now, name).unwrap()["status"],
            "ready",
            "{name}"
        );
    }

    // An enrolled agent restarts from its saved identity, without the token (which is
    // used up anyway), as the same node.
    let b_before = node_named(&nodes_now, "agent-b").unwrap().clone();
    agents[1].kill();
    agents[1] = Agent::start(spec(&cluster, "agent-b", Some("127.0.0.3"), None)).unwrap();
    wait_for(
        "agent-b to reconnect with its saved certificate",
        DEADLINE,
        || {
            let nodes = nodes(&cluster, &admin);
            let b = node_named(&nodes, "agent-b")?;
            let hello_again = b["last_seen_at"] != b_before["last_seen_at"];
            (hello_again && b["status"] == "ready" && b["id"] == b_before["id"]).then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", agents[1].log()));
    assert_eq!(
        nodes(&cluster, &admin).len(),
        4,
        "no node was added by the restart"
    );
}

/// The serial of the certificate an agent keeps in its data dir.
fn serial_on_disk(dir: &std::path::Path) -> Option<String> {
    let pem = std::fs::read_to_string(dir.join("node.crt")).ok()?;
    let der =
        <rustls_pki_types::CertificateDer<'_> as rustls_pki_types::pem::PemObject>::from_pem_slice(
            pem.as_bytes(),
        )
        .ok()?;
    windflow_certs::serial_of(&der).ok()
}

#[test]
fn an_agent_renews_its_certificate_before_it_expires() {
    // 30 s certificates: renewed about 20 s after issue, expired 30 s after.
    let cluster = Cluster::start_with(1, &["--node-cert-validity", "30s"]).unwrap();
    let admin = cluster.token();
    let created = create_token(&cluster, &admin, json!({"uses": 1}));
    let token = created["token"].as_str().unwrap().to_owned();
    let mut agent = Agent::start(spec(&cluster, "renewer", None, Some(&token))).unwrap();
    let dir = agent.spec.data_dir.clone();
    let first = wait_for("the agent to enroll", DEADLINE, || serial_on_disk(&dir))
        .unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
    let enrolled_at = std::time::Instant::now();

    let renewed = wait_for("the certificate to be renewed", DEADLINE, || {
        serial_on_disk(&dir).filter(|s| *s != first)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}\n{}", agent.log(), cluster.servers[0].log()));
    assert!(
        enrolled_at.elapsed() < Duration::from_secs(30),
        "renewed only after the first certificate expired"
    );
    assert_eq!(mode(&dir.join("node.key")), 0o600);
    let server_log = strip_ansi(&cluster.servers[0].log());
    assert!(
        server_log.contains("agent certificate renewed node=") && server_log.contains(&renewed),
        "{server_log}"
    );

    // Once the first certificate has expired, a fresh start from the files still gets in:
    // the files hold a renewed one.
    wait_for("the first certificate to expire", DEADLINE, || {
        (enrolled_at.elapsed() > Duration::from_secs(32)).then_some(())
    })
    .unwrap();
    let before = nodes(&cluster, &admin)[0]["last_seen_at"].clone();
    agent.kill();
    let agent = Agent::start(spec(&cluster, "renewer", None, None)).unwrap();
    wait_for(
        "the restarted agent to connect with its renewed certificate",
        DEADLINE,
        || {
            let nodes = nodes(&cluster, &admin);
            let n = node_named(&nodes, "renewer")?;
            (n["status"] == "ready" && n["last_seen_at"] != before).then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
    assert_eq!(nodes(&cluster, &admin).len(), 1);
}

#[test]
fn the_dev_node_can_be_revoked_too() {
    // `windflow dev` issues its agent's certificate itself; its serial is recorded all the
    // same, so revoking the node keeps its agent out.
    let dev = windflow_tests::DevServer::start().unwrap();
    let (status, revoked) = http_json(
        dev.http_addr,
        "POST",
        "/v1/nodes/N1/revoke",
        Some(&dev.token),
        None,
    )
    .unwrap();
    assert_eq!(status, 200, "{revoked}");
    wait_for(
        "the dev agent to be refused at the handshake",
        DEADLINE,
        || {
            strip_ansi(&dev.log())
                .lines()
                .any(|l| {
                    l.contains("refused connection at the TLS handshake") && l.contains("Revoked")
                })
                .then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", dev.log()));
}

#[test]
fn in_a_cluster_an_agent_enrolls_through_a_follower_and_every_server_refuses_it_once_revoked() {
    let cluster = Cluster::start(3).unwrap();
    let admin = cluster.token();
    let leader = cluster.wait_for_leader(DEADLINE).unwrap();
    let follower = (0..3).find(|i| *i != leader).unwrap();
    let created = create_token(
        &cluster,
        &admin,
        json!({"uses": 1, "labels": {"via": "follower"}}),
    );
    let token = created["token"].as_str().unwrap().to_owned();
    // The agent knows only the follower: its enrollment is written through the leader.
    let mut only_follower = spec(&cluster, "far", None, Some(&token));
    only_follower.servers = vec![cluster.servers[follower].quic_addr];
    let mut agent = Agent::start(only_follower).unwrap();
    let follower_http = cluster.servers[follower].http_addr;
    let node = wait_for("the agent to connect to the follower", DEADLINE, || {
        let (_, nodes) = http_json(follower_http, "GET", "/v1/nodes", Some(&admin), None).ok()?;
        let n = nodes
            .as_array()?
            .iter()
            .find(|n| n["name"] == "far")?
            .clone();
        (n["status"] == "ready" && n["labels"] == json!({"via": "follower"})).then_some(n)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}\n{}", agent.log(), cluster.logs()));

    // Revoked through the leader; the follower holding the session applies it and closes
    // the door.
    let id = node["id"].as_str().unwrap();
    let (status, revoked) = http_json(
        cluster.servers[leader].http_addr,
        "POST",
        &format!("/v1/nodes/{id}/revoke"),
        Some(&admin),
        None,
    )
    .unwrap();
    assert_eq!(status, 200, "{revoked}");
    assert!(!agent.wait_exit(DEADLINE).unwrap().success());
    let follower_log = strip_ansi(&cluster.servers[follower].log());
    assert!(
        follower_log
            .lines()
            .any(|l| l.contains("refused connection at the TLS handshake") && l.contains("Revoked")),
        "{follower_log}"
    );
    // Every server refuses it: started against each alone, it gets in nowhere.
    for server in &cluster.servers {
        let mut one = spec(&cluster, "far", None, None);
        one.servers = vec![server.quic_addr];
        let mut again = Agent::start(one).unwrap();
        assert!(
            !again.wait_exit(DEADLINE).unwrap().success(),
            "{}",
            server.name
        );
        let log = strip_ansi(&again.log_of_this_start());
        assert!(log.contains("it was revoked"), "{}: {log}", server.name);
    }
}
