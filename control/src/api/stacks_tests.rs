//! `/v1/stacks` and `/v1/templates` through `app()` against a real single-server store
//! (no agent: what needs a docker node is in `tests/tests/stacks.rs`).

use axum::http::StatusCode;
use serde_json::json;

use super::tests::Harness;

const WEB: &str = "services:\n  web: {image: busybox}\n";

#[tokio::test]
async fn stack_requests_are_checked_before_anything_is_made() {
    let h = Harness::start().await;
    let cases = [
        (json!({"compose": WEB}), "`name`"),
        (json!({"name": "J4", "compose": WEB}), "looks like a job ID"),
        (json!({"name": "s"}), "`compose`"),
        (
            json!({"name": "s", "compose": WEB, "base_dir": "rel"}),
            "`base_dir`",
        ),
        (
            json!({"name": "s", "compose": WEB, "variables": {"A": 1}}),
            "`variables.A`",
        ),
        (
            json!({"name": "s", "compose": WEB, "node": "nowhere"}),
            "no node is named",
        ),
        (
            json!({"name": "s", "compose": "services: ["}),
            "not valid YAML",
        ),
        (
            json!({"name": "s", "compose": "services:\n  web: {image: \"${TAG}\"}"}),
            "`TAG` is not set",
        ),
        (
            json!({"name": "s", "compose": WEB, "colour": "red"}),
            "`colour`",
        ),
    ];
    for (body, expected) in cases {
        let (status, answer) = h.call("POST", "/v1/stacks", Some(body.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(expected), "{body}: {message}");
    }
    let (status, answer) = h
        .call(
            "POST",
            "/v1/stacks",
            Some(json!({"name": "s", "compose": "services:\n  web: {image: a, build: ., networks: [x]}"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(answer["error"]["code"], "unsupported_compose_keys");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("services.web.build, services.web.networks")
    );
    // No docker node to run it on.
    let (status, answer) = h
        .call(
            "POST",
            "/v1/stacks",
            Some(json!({"name": "s", "compose": WEB})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    assert_eq!(answer["error"]["code"], "no_docker_node");
    // A plain job's name is not taken over.
    let (status, _) = h
        .call(
            "POST",
            "/v1/jobs",
            Some(json!({"name": "web", "command": "true"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, answer) = h
        .call(
            "POST",
            "/v1/stacks",
            Some(json!({"name": "web", "compose": WEB})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    assert_eq!(answer["error"]["code"], "not_a_stack");
    // A plain job is no stack.
    let (status, list) = h.call("GET", "/v1/stacks", None).await;
    assert_eq!((status, list), (StatusCode::OK, json!([])));
    let (status, _) = h.call("GET", "/v1/stacks/web", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = h.call("DELETE", "/v1/stacks/web", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_catalog_is_listed_shown_and_its_variables_checked() {
    let h = Harness::start().await;
    let (status, all) = h.call("GET", "/v1/templates", None).await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "postgres",
            "redis",
            "mysql",
            "wordpress",
            "nginx",
            "monitoring",
            "minio"
        ]
    );
    let (status, pg) = h.call("GET", "/v1/templates/postgres", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        pg["compose"]
            .as_str()
            .unwrap()
            .contains("image: postgres:16")
    );
    let password = pg["variables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "POSTGRES_PASSWORD")
        .unwrap();
    assert_eq!(password["generated"], true);
    let (status, _) = h.call("GET", "/v1/templates/oracle", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = h
        .call("POST", "/v1/templates/oracle/deploy", Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, answer) = h
        .call(
            "POST",
            "/v1/templates/redis/deploy",
            Some(json!({"set": {"PORT": "1", "SIZE": "xl", "COLOUR": "red"}})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(message.contains("COLOUR, SIZE"), "{message}");
}
