//! `/v1/nodes/{id}`, its drain and eligibility, and the policy fields of `POST /v1/jobs`,
//! through `app()` with `oneshot`.

use axum::http::StatusCode;
use serde_json::{Value, json};
use windflow_protocol::{DriverKind, Timestamp};
use windflow_raft::{Applied, Command};

use super::tests::Harness;

async fn register(h: &Harness, name: &str) -> String {
    match h
        .server
        .raft
        .write(Command::RegisterNode {
            name: name.into(),
            drivers: vec![DriverKind::Exec],
            at: Timestamp::now(),
        })
        .await
        .unwrap()
    {
        Applied::Node(n) => n.id.to_string(),
        other => panic!("{other:?}"),
    }
}

/// Puts a running batch run on the node.
async fn keep_busy(h: &Harness, node: &str) {
    let node: windflow_protocol::NodeId = node.parse().unwrap();
    let spec = windflow_protocol::JobSpec::exec(
        "keeps-the-node-busy",
        windflow_protocol::TaskSpec::exec("t", "sleep 1000"),
    );
    let job = match h
        .server
        .raft
        .write(Command::CreateJob {
            spec,
            at: Timestamp::now(),
        })
        .await
        .unwrap()
    {
        Applied::Job(j) => j.id,
        other => panic!("{other:?}"),
    };
    let run = match h
        .server
        .raft
        .write(Command::CreateRun {
            job,
            at: Timestamp::now(),
        })
        .await
        .unwrap()
    {
        Applied::Run(r) => r.id,
        other => panic!("{other:?}"),
    };
    h.server
        .raft
        .write(Command::RunDispatched {
            run,
            node,
            at: Timestamp::now(),
        })
        .await
        .unwrap();
}

fn message(v: &Value) -> &str {
    v["error"]["message"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn a_node_is_shown_drained_and_made_eligible_again_by_id_or_name() {
    let h = Harness::start().await;
    let id = register(&h, "rack-7").await;
    let (status, node) = h.call("GET", &format!("/v1/nodes/{id}"), None).await;
    assert_eq!(status, StatusCode::OK, "{node}");
    assert_eq!(node["status"], "initializing");
    assert_eq!(node["eligibility"], "eligible");
    assert_eq!(node["connected"], false);
    assert_eq!(
        node["used"],
        json!({"cpu_mhz": 0, "memory_mb": 0, "disk_mb": 0})
    );
    assert_eq!(node["allocations"], json!([]));
    let (status, by_name) = h.call("GET", "/v1/nodes/rack-7", None).await;
    assert_eq!((status, &by_name["id"]), (StatusCode::OK, &node["id"]));
    let (status, _) = h.call("GET", "/v1/nodes/nowhere", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let drain = format!("/v1/nodes/{id}/drain");
    for (body, field) in [
        (json!({"deadline": "soon"}), "`deadline`"),
        (json!({"deadline": 60}), "`deadline`"),
        (json!({"deadline": "0s"}), "`deadline`"),
        (json!({"deadline": "1h", "force": true}), "`force`"),
    ] {
        let (status, answer) = h.call("POST", &drain, Some(body.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert!(message(&answer).contains(field), "{body}: {answer}");
    }
    // A batch run still running there keeps the drain open (the leader's drain watcher
    // would otherwise complete it at once, racing the checks below).
    keep_busy(&h, &id).await;
    let (status, drained) = h
        .call(
            "POST",
            "/v1/nodes/rack-7/drain",
            Some(json!({"deadline": "1h"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{drained}");
    assert_eq!(drained["eligibility"], "ineligible");
    assert!(drained["drain"]["deadline"].is_string(), "{drained}");

    let eligibility = format!("/v1/nodes/{id}/eligibility");
    let (status, answer) = h
        .call(
            "PUT",
            &eligibility,
            Some(json!({"eligibility": "eligible"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    assert!(message(&answer).contains("draining"), "{answer}");
    let (status, answer) = h
        .call("PUT", &eligibility, Some(json!({"eligibility": "maybe"})))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(message(&answer).contains("`eligibility`"), "{answer}");

    let (status, cancelled) = h.call("DELETE", &drain, None).await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    assert_eq!(cancelled["drain"], Value::Null);
    assert_eq!(cancelled["eligibility"], "ineligible");
    let (status, answer) = h.call("DELETE", &drain, None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    assert!(message(&answer).contains("not draining"), "{answer}");
    let (status, on) = h
        .call(
            "PUT",
            &eligibility,
            Some(json!({"eligibility": "eligible"})),
        )
        .await;
    assert_eq!(
        (status, &on["eligibility"]),
        (StatusCode::OK, &json!("eligible"))
    );
    // A drain with no body has no deadline.
    let (status, drained) = h.call("POST", &drain, None).await;
    assert_eq!(status, StatusCode::OK, "{drained}");
    assert_eq!(drained["drain"]["deadline"], Value::Null);
    let (status, _) = h.call("POST", "/v1/nodes/N99/drain", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn restart_and_reschedule_policies_are_read_field_by_field() {
    let h = Harness::start().await;
    let service = |extra: Value| {
        let mut body = json!({"name": "web", "command": "sleep 100", "type": "service"});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    for (body, field) in [
        (
            json!({"name": "b", "command": "x", "restart": {"attempts": 1}}),
            "`restart`",
        ),
        (service(json!({"restart": "often"})), "`restart`"),
        (
            service(json!({"restart": {"attempts": -1}})),
            "`restart.attempts`",
        ),
        (
            service(json!({"restart": {"attempts": 5000}})),
            "`restart.attempts`",
        ),
        (
            service(json!({"restart": {"interval": "0s"}})),
            "`restart.interval`",
        ),
        (
            service(json!({"restart": {"delay": "soon"}})),
            "`restart.delay`",
        ),
        (
            service(json!({"restart": {"delay": "2h", "interval": "1h"}})),
            "`restart.delay`",
        ),
        (
            service(json!({"restart": {"mode": "retry"}})),
            "`restart.mode`",
        ),
        (service(json!({"restart": {"tries": 1}})), "`restart.tries`"),
        (
            service(json!({"reschedule": {"unlimited": true, "attempts": 3}})),
            "`reschedule.attempts`",
        ),
        (
            service(json!({"reschedule": {"unlimited": "yes"}})),
            "`reschedule.unlimited`",
        ),
        (
            service(json!({"reschedule": {"interval": "1h"}})),
            "`reschedule.interval`",
        ),
        (
            service(json!({"reschedule": {"delay": "10m", "max_delay": "1m"}})),
            "`reschedule.max_delay`",
        ),
        (
            service(json!({"reschedule": {"delay": "30d"}})),
            "`reschedule.delay`",
        ),
    ] {
        let (status, answer) = h.call("POST", "/v1/jobs", Some(body.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert!(message(&answer).contains(field), "{body}: {answer}");
    }
    let (status, job) = h
        .call(
            "POST",
            "/v1/jobs",
            Some(service(json!({
                "restart": {"attempts": 2, "interval": "30m", "delay": "15s", "mode": "fail"},
                "reschedule": {"attempts": 3, "interval": "1h", "delay": "5s", "max_delay": "1m"},
            }))),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
    let group = &job["spec"]["groups"][0];
    assert_eq!(
        group["restart"],
        json!({"attempts": 2, "interval": "30m", "delay": "15s", "mode": "fail"})
    );
    assert_eq!(
        group["reschedule"],
        json!({"limit": {"attempts": {"attempts": 3, "interval": "1h"}}, "delay": "5s", "max_delay": "1m"})
    );
    let (status, job) = h
        .call(
            "POST",
            "/v1/jobs",
            Some(json!({"name": "api", "command": "x", "type": "service",
                        "reschedule": {"unlimited": true, "delay": "5s"}})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
    let group = &job["spec"]["groups"][0];
    assert_eq!(group["reschedule"]["limit"], "unlimited");
    assert_eq!(group["reschedule"]["max_delay"], "1h");
}
