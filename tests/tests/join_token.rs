//! Server join tokens against real processes: a server started with only a token (no CA
//! files) gets its certificate and the CA from a running cluster, is added, and serves the
//! replicated state; a spent, revoked or foreign token is refused with a clear error and
//! issues nothing.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use serde_json::{Value, json};
use windflow_tests::cluster::Cluster;
use windflow_tests::{http_json, wait_for};

const EXIT_DEADLINE: Duration = Duration::from_secs(60);

fn create_token(cluster: &Cluster, token: &str, body: Value) -> Value {
    let (status, created) = http_json(
        cluster.servers[0].http_addr,
        "POST",
        "/v1/cluster/tokens",
        Some(token),
        Some(&body.to_string()),
    )
    .unwrap();
    assert_eq!(status, 201, "{created}");
    created
}

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn a_server_joins_with_a_token_and_a_spent_or_revoked_token_is_refused() {
    let mut cluster = Cluster::start(1).unwrap();
    let admin = cluster.token();
    let via = cluster.servers[0].quic_addr;
    let (status, _) = http_json(
        cluster.servers[0].http_addr,
        "POST",
        "/v1/jobs",
        Some(&admin),
        Some(&json!({"name": "before-join", "command": "true"}).to_string()),
    )
    .unwrap();
    assert_eq!(status, 201);

    // A single-use token, as `windflow cluster token create` makes by default.
    let created = create_token(&cluster, &admin, json!({}));
    let secret = created["token"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("wfjoin1."), "{created}");
    assert_eq!(created["uses_allowed"], 1);

    let s2 = cluster.start_with_join_token("s2", &secret, via).unwrap();
    cluster.wait_serving(s2).unwrap();
    let dir = cluster.servers[s2].data_dir.clone();
    assert_eq!(mode(&dir.join("ca/ca.key")), 0o600);
    assert_eq!(mode(&dir.join("tls/server.key")), 0o600);

    // The enrolled server speaks raft under the cluster CA: it is added and catches up.
    let (status, answer) = cluster.join(0, &admin, s2);
    assert_eq!(status, 201, "{answer}\n{}", cluster.logs());
    wait_for("s2 to hold the job", Duration::from_secs(30), || {
        let jobs = cluster.jobs(s2, &admin)?;
        jobs.iter()
            .any(|j| j["spec"]["name"] == "before-join")
            .then_some(())
    })
    .unwrap();

    // The token is spent: the same secret enrolls nobody else, and nothing is written.
    let s3 = cluster.start_with_join_token("s3", &secret, via).unwrap();
    let status = cluster.wait_exit(s3, EXIT_DEADLINE).unwrap();
    assert!(!status.success());
    let log = cluster.servers[s3].log();
    assert!(log.contains("is used up"), "{log}");
    assert!(!cluster.servers[s3].data_dir.join("ca/ca.key").exists());

    // A revoked token is refused by name.
    let created = create_token(&cluster, &admin, json!({"uses": 0, "ttl": "10m"}));
    let id = created["id"].as_str().unwrap();
    let (status, revoked) = http_json(
        cluster.servers[0].http_addr,
        "DELETE",
        &format!("/v1/cluster/tokens/{id}"),
        Some(&admin),
        None,
    )
    .unwrap();
    assert_eq!(status, 200, "{revoked}");
    let s4 = cluster
        .start_with_join_token("s4", created["token"].as_str().unwrap(), via)
        .unwrap();
    assert!(!cluster.wait_exit(s4, EXIT_DEADLINE).unwrap().success());
    let log = cluster.servers[s4].log();
    assert!(log.contains(&format!("token {id} was revoked")), "{log}");

    // The list shows both tokens with their use counts, and never a secret.
    let (status, list) = http_json(
        cluster.servers[0].http_addr,
        "GET",
        "/v1/cluster/tokens",
        Some(&admin),
        None,
    )
    .unwrap();
    assert_eq!(status, 200);
    let list = list.as_array().unwrap().clone();
    assert_eq!(list.len(), 2, "{list:?}");
    assert_eq!(list[0]["uses"], 1);
    assert_eq!(list[0]["last_used_by"], "s2");
    assert!(!list[1]["revoked_at"].is_null());
    assert!(
        !serde_json::to_string(&list)
            .unwrap()
            .contains(&secret[60..])
    );
}

#[test]
fn a_token_for_another_cluster_is_refused_before_anything_is_sent() {
    let mut cluster = Cluster::start(1).unwrap();
    let admin = cluster.token();
    let created = create_token(&cluster, &admin, json!({}));
    let real = created["token"].as_str().unwrap();
    // Same secret, another CA's fingerprint: the newcomer must not trust this server.
    let (_, rest) = real.split_once('.').unwrap();
    let (_, secret) = rest.split_once('.').unwrap();
    let forged = format!("wfjoin1.{}.{secret}", "ab".repeat(32));
    let via = cluster.servers[0].quic_addr;
    let i = cluster.start_with_join_token("s2", &forged, via).unwrap();
    assert!(!cluster.wait_exit(i, EXIT_DEADLINE).unwrap().success());
    let log = cluster.servers[i].log();
    assert!(log.contains("fingerprint"), "{log}");
    // The secret never reached the server: the token is still unused.
    let (_, list) = http_json(
        cluster.servers[0].http_addr,
        "GET",
        "/v1/cluster/tokens",
        Some(&admin),
        None,
    )
    .unwrap();
    assert_eq!(list[0]["uses"], 0, "{list}");
}

#[test]
fn bad_token_requests_name_the_field() {
    let cluster = Cluster::start(1).unwrap();
    let admin = cluster.token();
    for (body, field) in [
        (json!({"ttl": "forever"}), "ttl"),
        (json!({"ttl": "0s"}), "ttl"),
        (json!({"ttl": "90d"}), "ttl"),
        (json!({"uses": -1}), "uses"),
        (json!({"kind": "agent"}), "kind"),
    ] {
        let (status, answer) = http_json(
            cluster.servers[0].http_addr,
            "POST",
            "/v1/cluster/tokens",
            Some(&admin),
            Some(&body.to_string()),
        )
        .unwrap();
        assert_eq!(status, 400, "{body}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(field), "{body}: {answer}");
    }
}
