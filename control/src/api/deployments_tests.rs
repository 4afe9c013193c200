//! Job versions, scaling and deployments through `app()` against a real single-server store.

use axum::http::StatusCode;
use serde_json::{Value, json};

use super::tests::Harness;

fn service(command: &str) -> Value {
    json!({
        "name": "web", "command": command, "type": "service", "count": 2,
        "update": {"max_parallel": 1, "min_healthy_time": "1s", "healthy_deadline": "5s",
                   "progress_deadline": "1m", "auto_revert": true},
        "checks": [{"type": "http", "path": "/", "interval": "1s", "timeout": "500ms"},
                   {"type": "command", "command": "true"}],
    })
}

#[tokio::test]
async fn versions_deployments_and_scaling_through_the_api() {
    let h = Harness::start().await;
    let (status, job) = h.call("POST", "/v1/jobs", Some(service("sleep 100"))).await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
    assert_eq!(job["version"], 1);
    assert_eq!(
        job["spec"]["groups"][0]["checks"][0]["kind"]["http"]["path"],
        "/"
    );

    let (status, same) = h
        .call("PUT", "/v1/jobs/web", Some(service("sleep 100")))
        .await;
    assert_eq!(
        (status, &same["changed"]),
        (StatusCode::OK, &json!(false)),
        "{same}"
    );
    let (status, up) = h
        .call("PUT", "/v1/jobs/web", Some(service("sleep 200")))
        .await;
    assert_eq!(status, StatusCode::OK, "{up}");
    assert_eq!(
        (&up["changed"], &up["job"]["version"]),
        (&json!(true), &json!(2))
    );
    let d = up["deployment"]["id"].as_str().unwrap().to_owned();

    let (_, list) = h.call("GET", "/v1/deployments?job=web", None).await;
    let statuses: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["running", "cancelled"], "{list}");
    let (status, shown) = h.call("GET", &format!("/v1/deployments/{d}"), None).await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    assert_eq!(shown["groups"][0]["desired"], 2, "{shown}");

    let (status, failed) = h
        .call("POST", &format!("/v1/deployments/{d}/fail"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{failed}");
    assert_eq!(failed["status"], "failed");
    let (status, again) = h
        .call("POST", &format!("/v1/deployments/{d}/promote"), None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{again}");

    let (status, scaled) = h
        .call("POST", "/v1/jobs/web/scale", Some(json!({"count": 4})))
        .await;
    assert_eq!(status, StatusCode::OK, "{scaled}");
    assert_eq!(scaled["spec"]["groups"][0]["count"], 4);
    let (_, versions) = h.call("GET", "/v1/jobs/web/versions", None).await;
    assert_eq!(versions.as_array().unwrap().len(), 2, "{versions}");
    h.server.stop().await;
}

#[tokio::test]
async fn bad_rollout_fields_are_named() {
    let h = Harness::start().await;
    let cases = [
        (
            json!({"update": {"max_parallel": 0}}),
            "update.max_parallel",
        ),
        (json!({"update": {"canary": 3}}), "update.canary"),
        (
            json!({"update": {"min_healthy_time": "10m", "healthy_deadline": "1m"}}),
            "update.healthy_deadline",
        ),
        (json!({"checks": [{"type": "ping"}]}), "checks[0].type"),
        (
            json!({"checks": [{"type": "http", "path": "x"}]}),
            "checks[0].path",
        ),
        (
            json!({"checks": [{"type": "tcp", "port": 70000}]}),
            "checks[0].port",
        ),
        (
            json!({"checks": [{"type": "command"}]}),
            "checks[0].command",
        ),
        (
            json!({"checks": [{"type": "tcp", "interval": "1s", "timeout": "2s"}]}),
            "checks[0].timeout",
        ),
        (
            json!({"checks": [{"type": "tcp", "bogus": 1}]}),
            "checks[0].bogus",
        ),
    ];
    for (extra, field) in cases {
        let mut body = json!({"name": "web", "command": "true", "type": "service", "count": 2});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (status, err) = h.call("POST", "/v1/jobs", Some(body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{field}: {err}");
        let message = err["error"]["message"].as_str().unwrap();
        assert!(message.contains(field), "{field}: {message}");
    }
    let (status, err) = h
        .call(
            "POST",
            "/v1/jobs",
            Some(json!({"name": "b", "command": "true", "checks": [{"type": "tcp"}]})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    h.server.stop().await;
}
