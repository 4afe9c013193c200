//! Secrets at rest against real processes: a secret env var reaches the task that uses it,
//! while no file under any server's (or the agent's) data dir, nor any log, holds its value;
//! the API shows only its name; a key rotation re-encrypts it and the task still sees it.
//! The key ring reaches every server of a static set and a server that joins later, over
//! the servers' mTLS link.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use windflow_tests::cluster::Cluster;
use windflow_tests::{DevServer, http_json, stderr, stdout, wait_for};

/// A long random value, so finding it on disk cannot be a coincidence.
fn random_value() -> String {
    format!("sv-{}", windflow_control::auth::random_hex(32).unwrap())
}

fn sha256_hex(value: &str) -> String {
    windflow_control::auth::token_hash(value)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Every file under `dir` whose bytes hold `needle` (what `grep -r` would find).
fn files_holding(dir: &Path, needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    let mut files = 0;
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                files += 1;
                if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                    found.push(path.display().to_string());
                }
            }
        }
    }
    assert!(
        files > 5,
        "searched only {files} files under {}",
        dir.display()
    );
    found
}

/// The command the job runs: prints the SHA-256 of `$DB_PASS`, never the value itself (the
/// command is stored in plain text).
const COMMAND: &str = r#"printf %s "$DB_PASS" | sha256sum | cut -d' ' -f1"#;

fn json_of(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", stdout(out), stderr(out)))
}

fn secret_env(job: &Value) -> &Value {
    &job["spec"]["groups"][0]["tasks"][0]["secret_env"]
}

#[test]
fn a_task_sees_its_secret_env_while_no_file_holds_it_and_rotation_keeps_it_working() {
    let dev = DevServer::start().unwrap();
    let value = random_value();
    let created = dev.cli(&[
        "job",
        "create",
        "db",
        "--cmd",
        COMMAND,
        "--secret-env",
        &format!("DB_PASS={value}"),
        "--output",
        "json",
    ]);
    assert!(created.status.success(), "{}", stderr(&created));
    assert!(
        !stdout(&created).contains(&value),
        "the create answer shows the value"
    );
    let job = json_of(&created);
    assert_eq!(secret_env(&job)["DB_PASS"]["redacted"], true, "{job}");
    let first_key = secret_env(&job)["DB_PASS"]["key"]
        .as_str()
        .unwrap()
        .to_owned();

    let run = dev.cli(&["job", "run", "db", "--wait"]);
    assert_eq!(
        run.status.code(),
        Some(0),
        "{}\n{}",
        stderr(&run),
        dev.log()
    );
    assert_eq!(
        stdout(&run).trim(),
        sha256_hex(&value),
        "the task saw another value"
    );

    for path in ["/v1/jobs/db", "/v1/jobs"] {
        let (status, body) = http_json(dev.http_addr, "GET", path, Some(&dev.token), None).unwrap();
        assert_eq!(status, 200);
        assert!(!body.to_string().contains(&value), "{path} shows the value");
    }
    let shown = json_of(&dev.cli(&["job", "show", "db", "--output", "json"]));
    assert_eq!(secret_env(&shown)["DB_PASS"]["key"], first_key.as_str());
    let table = stdout(&dev.cli(&["job", "list"]));
    assert!(
        table.contains("DB_PASS") && !table.contains(&value),
        "{table}"
    );

    // Rotation: a new key, the stored value re-encrypted under it, the task still sees it.
    let rotated = dev.cli(&["secrets", "rotate-key", "--output", "json"]);
    assert!(
        rotated.status.success(),
        "{}\n{}",
        stderr(&rotated),
        dev.log()
    );
    let rotated = json_of(&rotated);
    assert_eq!(rotated["previous"], first_key.as_str(), "{rotated}");
    assert_eq!(rotated["resealed_values"], 1, "{rotated}");
    let new_key = rotated["key"].as_str().unwrap().to_owned();
    assert_ne!(new_key, first_key);
    let shown = json_of(&dev.cli(&["job", "show", "db", "--output", "json"]));
    assert_eq!(secret_env(&shown)["DB_PASS"]["key"], new_key.as_str());
    let keyring = std::fs::read_to_string(dev.data_dir.join("keyring")).unwrap();
    assert!(keyring.contains(&format!("current {new_key}")), "{keyring}");

    let run = dev.cli(&["job", "run", "db", "--wait"]);
    assert_eq!(
        run.status.code(),
        Some(0),
        "{}\n{}",
        stderr(&run),
        dev.log()
    );
    assert_eq!(stdout(&run).trim(), sha256_hex(&value));

    // The old key is unused now: dropped from the ring, the value still reaches the task,
    // also after a restart (the ring is read back from the data dir).
    let dropped = json_of(&dev.cli(&["secrets", "drop-old-keys", "--output", "json"]));
    assert_eq!(dropped["dropped"], json!([first_key]), "{dropped}");
    let keyring = std::fs::read_to_string(dev.data_dir.join("keyring")).unwrap();
    assert!(!keyring.contains(&first_key), "{keyring}");
    let (home, data_dir) = dev.into_parts();
    let mut dev = DevServer::start_in(home, data_dir).unwrap();
    let run = dev.cli(&["job", "run", "db", "--wait"]);
    assert_eq!(
        run.status.code(),
        Some(0),
        "{}\n{}",
        stderr(&run),
        dev.log()
    );
    assert_eq!(stdout(&run).trim(), sha256_hex(&value));

    // The server's raft log and state, its snapshot, the agent's files and every log: no
    // file holds the value. Stopped first, so sled has flushed everything it keeps.
    dev.stop().unwrap();
    let leaks = files_holding(dev.home.path(), &value);
    assert!(leaks.is_empty(), "the plaintext is on disk in {leaks:?}");
    // The check itself can fail: the hash the task printed is in the stored context.
    let hash = sha256_hex(&value);
    assert!(
        !files_holding(dev.home.path(), &hash).is_empty(),
        "the search found not even the run's output"
    );
}

fn get(cluster: &Cluster, i: usize, token: &str, path: &str) -> Value {
    let (status, body) =
        http_json(cluster.servers[i].http_addr, "GET", path, Some(token), None).unwrap();
    assert_eq!(status, 200, "{path} on server {i}: {body}");
    body
}

fn keyring(cluster: &Cluster, i: usize) -> Option<String> {
    std::fs::read_to_string(cluster.servers[i].data_dir.join("keyring")).ok()
}

/// Waits until every listed server holds the same key ring with `current` current.
fn wait_same_ring(cluster: &Cluster, servers: &[usize], current: Option<&str>) -> String {
    wait_for(
        "every server to hold the key ring",
        Duration::from_secs(60),
        || {
            let rings: Vec<String> = servers
                .iter()
                .map(|&i| keyring(cluster, i))
                .collect::<Option<_>>()?;
            let same = rings.iter().all(|r| *r == rings[0]);
            let current_ok = current.is_none_or(|c| rings[0].contains(&format!("current {c}\n")));
            (same && current_ok).then(|| rings[0].clone())
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()))
}

#[test]
fn every_server_gets_the_key_ring_over_mtls_and_holds_only_ciphertext() {
    let mut cluster = Cluster::start(3).unwrap();
    let admin = cluster.token();
    // s1 made the ring; s2 and s3 fetched it from it.
    let ring = wait_same_ring(&cluster, &[0, 1, 2], None);
    assert!(
        cluster
            .logs()
            .contains("got the cluster key ring from a peer")
    );

    let value = random_value();
    let body = json!({"name": "db", "command": COMMAND, "secret_env": {"DB_PASS": value}});
    let (status, job) = http_json(
        cluster.servers[2].http_addr,
        "POST",
        "/v1/jobs",
        Some(&admin),
        Some(&body.to_string()),
    )
    .unwrap();
    assert_eq!(status, 201, "{job}");
    let first_key = secret_env(&job)["DB_PASS"]["key"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(ring.contains(&format!("current {first_key}")));

    // A server that joins later fetches the ring from the members once it is added.
    let s4 = cluster.start_joining("s4").unwrap();
    let (status, answer) = cluster.join(0, &admin, s4);
    assert_eq!(status, 201, "{answer}");
    wait_same_ring(&cluster, &[0, 1, 2, s4], None);

    // And one that enrolls with a join token gets it through the server it enrolled with.
    let (status, created) = http_json(
        cluster.servers[0].http_addr,
        "POST",
        "/v1/cluster/tokens",
        Some(&admin),
        Some("{}"),
    )
    .unwrap();
    assert_eq!(status, 201, "{created}");
    let via = cluster.servers[0].quic_addr;
    let s5 = cluster
        .start_with_join_token("s5", created["token"].as_str().unwrap(), via)
        .unwrap();
    cluster.wait_serving(s5).unwrap();
    let (status, answer) = cluster.join(0, &admin, s5);
    assert_eq!(status, 201, "{answer}");
    let all = [0, 1, 2, s4, s5];
    wait_same_ring(&cluster, &all, None);

    // Rotation through a follower or the leader alike: every server takes the new key.
    let (status, rotated) = http_json(
        cluster.servers[1].http_addr,
        "POST",
        "/v1/secrets/rotate",
        Some(&admin),
        None,
    )
    .unwrap();
    assert_eq!(status, 200, "{rotated}\n{}", cluster.logs());
    let new_key = rotated["key"].as_str().unwrap().to_owned();
    assert_ne!(new_key, first_key);
    assert_eq!(rotated["resealed_values"], 1, "{rotated}");
    wait_same_ring(&cluster, &all, Some(&new_key));
    for i in all {
        let job = get(&cluster, i, &admin, "/v1/jobs/db?consistent=true");
        assert_eq!(
            secret_env(&job)["DB_PASS"]["key"],
            new_key.as_str(),
            "server {i}"
        );
        assert!(!job.to_string().contains(&value));
    }
    let (status, dropped) = http_json(
        cluster.servers[2].http_addr,
        "POST",
        "/v1/secrets/drop-old-keys",
        Some(&admin),
        None,
    )
    .unwrap();
    assert_eq!(status, 200, "{dropped}");
    assert_eq!(dropped["dropped"], json!([first_key]), "{dropped}");
    let ring = wait_same_ring(&cluster, &all, Some(&new_key));
    assert!(!ring.contains(&first_key), "{ring}");

    for i in 0..cluster.servers.len() {
        cluster.stop(i).unwrap();
    }
    // Every server's data dir, and the logs next to them.
    let leaks = files_holding(cluster.root.path(), &value);
    assert!(leaks.is_empty(), "the plaintext is on disk in {leaks:?}");
}

/// Asks the server at `addr` for its key ring on ALPN `windflow-keys/1` as `identity`.
async fn ask_for_keys(
    identity: &windflow_certs::TlsIdentity,
    addr: std::net::SocketAddr,
) -> anyhow::Result<windflow_protocol::secret::KeyResponse> {
    use windflow_protocol::secret::{ALPN_KEYS, KeyRequest, KeyResponse};
    windflow_certs::install_crypto_provider();
    let client = windflow_certs::quinn_client_config(identity, ALPN_KEYS)?;
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
    endpoint.set_default_client_config(client);
    let conn = endpoint.connect(addr, windflow_certs::SERVER_NAME)?.await?;
    let (mut send, mut recv) = conn.open_bi().await?;
    windflow_certs::wire::write_frame(&mut send, &KeyRequest::Fetch).await?;
    send.finish()?;
    let answer = windflow_certs::wire::read_frame::<KeyResponse>(&mut recv).await?;
    answer.ok_or_else(|| anyhow::anyhow!("no answer"))
}

#[tokio::test(flavor = "multi_thread")]
async fn only_a_server_certificate_is_handed_the_key_ring() {
    use windflow_certs::{ClusterCa, TlsIdentity};
    use windflow_protocol::secret::KeyResponse;
    let dev = tokio::task::spawn_blocking(DevServer::start)
        .await
        .unwrap()
        .unwrap();
    let ca = ClusterCa::load(&dev.data_dir.join("ca")).unwrap();
    let deadline = Duration::from_secs(15);
    // An agent's certificate from the cluster CA passes mTLS but is closed unanswered.
    let agent = TlsIdentity {
        ca_pem: ca.cert_pem().to_owned(),
        cert: ca.issue_node(windflow_protocol::NodeId(1)).unwrap(),
    };
    let refused = tokio::time::timeout(deadline, ask_for_keys(&agent, dev.quic_addr)).await;
    assert!(
        matches!(refused, Ok(Err(_))),
        "an agent certificate got an answer: {refused:?}"
    );
    // A server's certificate gets the ring this server keeps in its data dir.
    let server = TlsIdentity {
        ca_pem: ca.cert_pem().to_owned(),
        cert: ca
            .issue_server("peer", &[], &["127.0.0.1".parse().unwrap()])
            .unwrap(),
    };
    let answer = tokio::time::timeout(deadline, ask_for_keys(&server, dev.quic_addr))
        .await
        .unwrap()
        .unwrap();
    let KeyResponse::Ring(ring) = answer else {
        panic!("expected the ring, got {answer:?}");
    };
    let file = std::fs::read_to_string(dev.data_dir.join("keyring")).unwrap();
    assert!(
        file.contains(&format!("current {}\n", ring.current)),
        "{file}"
    );
    assert!(ring.keys.iter().all(|k| k.secret.len() == 32));
    wait_for("the refusal in the server log", deadline, || {
        dev.log()
            .contains("refused a key ring request from a non-server")
            .then_some(())
    })
    .unwrap();
}
