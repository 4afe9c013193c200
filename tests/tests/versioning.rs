//! Versioning against the real gateway: an enrolled agent whose protocol range does not
//! meet the server's is refused with a reason naming both ranges, and the agent stops with
//! that error instead of reconnecting forever.

use std::time::Duration;

use serde_json::json;
use windflow_agent::drivers::exec::SupervisorCommand;
use windflow_agent::{AgentConfig, AgentError};
use windflow_protocol::messages::{PROTOCOL_VERSION, VersionRange};
use windflow_tests::cluster::Cluster;
use windflow_tests::{http_json, strip_ansi, wait_for};

const DEADLINE: Duration = Duration::from_secs(30);

#[test]
fn an_agent_of_another_protocol_range_is_refused_naming_both_and_stops() {
    let cluster = Cluster::start(1).unwrap();
    let admin = cluster.token();
    let (status, token) = http_json(
        cluster.servers[0].http_addr,
        "POST",
        "/v1/agent/tokens",
        Some(&admin),
        Some(&json!({"uses": 1}).to_string()),
    )
    .unwrap();
    assert_eq!(status, 201, "{token}");
    let token = token["token"].as_str().unwrap().parse().unwrap();
    let servers = vec![cluster.servers[0].quic_addr];
    let data_dir = cluster.root.path().join("future-agent");

    let future = VersionRange {
        min: PROTOCOL_VERSION + 1,
        max: PROTOCOL_VERSION + 2,
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let result = runtime.block_on(async {
        // Enrollment is its own exchange; the session's Hello is where versions meet.
        let (_, identity) =
            windflow_agent::enroll::enroll_agent(&token, &servers, "future", None, &data_dir)
                .await
                .unwrap();
        let mut config = AgentConfig::new(servers.clone(), identity, "future");
        config.data_dir = Some(data_dir.clone());
        config.supervisor = Some(SupervisorCommand::new(windflow_tests::agent::agent_bin()));
        config.versions = future;
        config.reconnect_max_backoff = Duration::from_millis(200);
        let stop = tokio_util::sync::CancellationToken::new();
        tokio::time::timeout(DEADLINE, windflow_agent::run(config, stop)).await
    });
    let result = result.expect("the agent kept retrying instead of stopping");
    let reason = match result {
        Err(AgentError::Refused { reason }) => reason,
        other => panic!("expected a refusal, got {other:?}"),
    };
    let expected = format!(
        "protocol version mismatch: agent speaks {future}, server speaks {}",
        VersionRange::SUPPORTED
    );
    assert_eq!(reason, expected);

    // Refused once: the agent did not come back for more.
    let refusals = || {
        strip_ansi(&cluster.servers[0].log())
            .matches("refusing agent session")
            .count()
    };
    wait_for("the refusal in the server log", DEADLINE, || {
        (refusals() >= 1).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()));
    assert_eq!(refusals(), 1, "{}", cluster.logs());
}
