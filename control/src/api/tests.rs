//! The API driven through `app()` with `oneshot`: no socket, a real single-server raft store.

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::server::{self, RunningServer, ServerConfig};

mod hardening;
mod import;
mod schedules;

pub(super) struct Harness {
    pub(super) server: RunningServer,
    pub(super) token: String,
    pub(super) dir: tempfile::TempDir,
}

impl Harness {
    pub(super) async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub(super) async fn start_with(configure: impl FnOnce(&mut ServerConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = ServerConfig::new(dir.path());
        configure(&mut config);
        config.http_addr = "127.0.0.1:0".parse().unwrap();
        config.quic_addr = "127.0.0.1:0".parse().unwrap();
        let server = server::start(config).await.unwrap();
        let token = server
            .new_admin
            .as_ref()
            .expect("first start creates the admin")
            .token
            .clone();
        Harness { server, token, dir }
    }

    pub(super) fn app(&self) -> Router {
        self.server.app()
    }

    pub(super) async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.call_as(Some(&self.token), method, path, body).await
    }

    async fn call_as(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let body = body.map_or_else(Body::empty, |b| Body::from(b.to_string()));
        let res = self.app().oneshot(req.body(body).unwrap()).await.unwrap();
        let status = res.status();
        let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .unwrap();
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        (status, value)
    }
}

#[tokio::test]
async fn jobs_are_created_listed_found_by_name_and_deleted() {
    let h = Harness::start().await;
    let (status, job) = h
        .call(
            "POST",
            "/v1/jobs",
            Some(json!({"name": "backup", "command": "true", "timeout": "30s"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
    assert_eq!(job["id"], "J1");
    assert_eq!(job["spec"]["groups"][0]["tasks"][0]["timeout"], "30s");

    let (status, again) = h
        .call(
            "POST",
            "/v1/jobs",
            Some(json!({"name": "backup", "command": "true"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(again["error"]["code"], "name_taken");

    let (_, list) = h.call("GET", "/v1/jobs?consistent=true", None).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    let (status, by_name) = h.call("GET", "/v1/jobs/backup", None).await;
    assert_eq!((status, &by_name["id"]), (StatusCode::OK, &json!("J1")));

    let (status, ctx) = h.call("GET", "/v1/contexts/CJ1", None).await;
    assert_eq!((status, &ctx["value"]), (StatusCode::OK, &json!("")));

    let (status, _) = h.call("DELETE", "/v1/jobs/J1", None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, gone) = h.call("GET", "/v1/jobs/J1", None).await;
    assert_eq!(
        (status, &gone["error"]["code"]),
        (StatusCode::NOT_FOUND, &json!("not_found"))
    );
    let (status, _) = h.call("GET", "/v1/contexts/CJ1", None).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a deleted job's context goes with it"
    );
    h.server.stop().await;
}

#[tokio::test]
async fn a_run_waits_pending_while_no_agent_is_connected() {
    let h = Harness::start().await;
    h.call(
        "POST",
        "/v1/jobs",
        Some(json!({"name": "x", "command": "true"})),
    )
    .await;
    let (status, run) = h.call("POST", "/v1/jobs/x/run", None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{run}");
    assert_eq!(
        (run["id"].as_str(), run["status"].as_str()),
        (Some("R1"), Some("pending"))
    );
    let (status, run) = h.call("GET", "/v1/runs/R1?wait=200ms", None).await;
    assert_eq!(
        (status, run["status"].as_str()),
        (StatusCode::OK, Some("pending"))
    );
    let (_, runs) = h.call("GET", "/v1/jobs/x/runs", None).await;
    assert_eq!(runs[0]["id"], "R1");
    let (status, err) = h.call("GET", "/v1/runs/R1?wait=soon", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    let (status, _) = h.call("GET", "/v1/runs/R9", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = h.call("GET", "/v1/runs/J1", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    h.server.stop().await;
}

#[tokio::test]
async fn every_v1_route_wants_a_token() {
    let h = Harness::start().await;
    for (method, path) in [
        ("GET", "/v1/jobs"),
        ("POST", "/v1/jobs"),
        ("GET", "/v1/nodes"),
        ("GET", "/v1/runs/R1"),
        ("GET", "/v1/contexts/CJ1"),
        ("DELETE", "/v1/jobs/J1"),
    ] {
        for token in [None, Some("wf_wrong")] {
            let (status, body) = h.call_as(token, method, path, None).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}");
            assert_eq!(body["error"]["code"], "unauthorized");
        }
    }
    h.server.stop().await;
}

#[tokio::test]
async fn probes_metrics_and_unknown_routes() {
    let h = Harness::start().await;
    let (status, _) = h.call_as(None, "GET", "/healthz", None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = h.call_as(None, "GET", "/readyz", None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, metrics) = h.call_as(None, "GET", "/metrics", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        metrics.as_str().unwrap().contains("windflow_jobs 0"),
        "{metrics}"
    );
    let (status, body) = h.call("GET", "/v1/nope", None).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (StatusCode::NOT_FOUND, &json!("no_route"))
    );
    let (status, body) = h.call("GET", "/v1/jobs?consistent=maybe", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, page) = h.call_as(None, "GET", "/", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.as_str().unwrap().contains("Windflow"));
    h.server.stop().await;
}

/// Polls `check` every 50 ms until it holds, for at most `secs` seconds.
async fn eventually(secs: u64, mut check: impl AsyncFnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn audit_entries_past_the_retention_are_pruned_by_the_leader() {
    let h = Harness::start_with(|c| c.audit_retention = std::time::Duration::from_secs(2)).await;
    let (status, _) = h
        .call(
            "POST",
            "/v1/jobs",
            Some(json!({"name": "audited", "command": "true"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let recorded = eventually(10, async || {
        let (_, entries) = h.call("GET", "/v1/audit?action=jobs.create", None).await;
        entries.as_array().is_some_and(|e| e.len() == 1)
    })
    .await;
    assert!(recorded, "the create was never audited");
    let pruned = eventually(15, async || {
        let (_, entries) = h.call("GET", "/v1/audit?action=jobs.create", None).await;
        entries.as_array().is_some_and(|e| e.is_empty())
    })
    .await;
    assert!(pruned, "the entry outlived its retention");
}

#[tokio::test]
async fn the_log_level_changes_at_run_time_and_bad_levels_are_named() {
    // Unit tests install no subscriber of their own; this one is the process's.
    let _guard = crate::logging::init(crate::logging::Verbosity::Silent, None);
    let h = Harness::start().await;
    let (status, body) = h
        .call("PUT", "/v1/agent/log-level", Some(json!({"level": "loud"})))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`level`"),
        "{body}"
    );
    let (status, body) = h
        .call("PUT", "/v1/agent/log-level", Some(json!({"level": "warn"})))
        .await;
    assert_eq!(
        (status, &body["level"]),
        (StatusCode::OK, &json!("warn")),
        "{body}"
    );
    let (_, shown) = h.call("GET", "/v1/agent/log-level", None).await;
    assert_eq!(shown["level"], "warn");
}

#[tokio::test]
async fn answers_carry_a_request_id_and_security_headers() {
    let h = Harness::start().await;
    let req = Request::builder()
        .uri("/v1/whoami")
        .header("authorization", format!("Bearer {}", h.token))
        .body(Body::empty())
        .unwrap();
    let res = h.app().oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let headers = res.headers();
    assert!(headers.get("x-request-id").is_some());
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["x-frame-options"], "DENY");
    let body = axum::body::to_bytes(res.into_body(), 1 << 16)
        .await
        .unwrap();
    let me: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (&me["user"], &me["role"]),
        (&json!("admin"), &json!("admin"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_tokens_carry_labels_and_stay_apart_from_server_tokens() {
    let h = Harness::start().await;
    let body = json!({"uses": 3, "labels": {"rack": "r1", "zone/eu": "west 1"}});
    let (status, agent) = h.call("POST", "/v1/agent/tokens", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{agent}");
    assert_eq!(agent["kind"], "agent");
    assert_eq!(agent["labels"], json!({"rack": "r1", "zone/eu": "west 1"}));
    assert!(agent["token"].as_str().unwrap().starts_with("wfjoin1."));
    let (status, server) = h.call("POST", "/v1/cluster/tokens", None).await;
    assert_eq!(status, StatusCode::CREATED, "{server}");

    for (labels, field) in [
        (json!({"a b": "x"}), "labels.a b"),
        (json!({"": "x"}), "labels."),
        (json!({"k": 1}), "labels.k"),
        (json!(["k=v"]), "labels"),
    ] {
        let (status, err) = h
            .call(
                "POST",
                "/v1/agent/tokens",
                Some(json!({ "labels": labels })),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
        assert!(err.to_string().contains(field), "{field}: {err}");
    }
    // Server tokens take no labels.
    let (status, _) = h
        .call(
            "POST",
            "/v1/cluster/tokens",
            Some(json!({"labels": {"k": "v"}})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (_, listed) = h.call("GET", "/v1/agent/tokens", None).await;
    let ids: Vec<&Value> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|t| &t["id"])
        .collect();
    assert_eq!(ids, [&agent["id"]]);
    let server_id = server["id"].as_str().unwrap();
    let (status, _) = h
        .call("DELETE", &format!("/v1/agent/tokens/{server_id}"), None)
        .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a server token is not revoked here"
    );
    let agent_id = agent["id"].as_str().unwrap();
    let (status, revoked) = h
        .call("DELETE", &format!("/v1/agent/tokens/{agent_id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{revoked}");
    assert!(revoked["revoked_at"].is_string(), "{revoked}");
    let (status, _) = h.call("POST", "/v1/nodes/N99/revoke", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
