//! Security headers, the same-origin policy, body limits and per-token rate limits, driven
//! through `app()` with `oneshot`.

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use serde_json::Value;
use tower::ServiceExt;

use super::Harness;
use crate::api::hardening::{CONTENT_SECURITY_POLICY, DEFAULT_BODY_LIMIT};
use crate::rate_limit::RateLimit;

async fn send(h: &Harness, req: Request<Body>) -> (StatusCode, HeaderMap, Value) {
    let res = h.app().oneshot(req).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .unwrap();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, headers, value)
}

fn request(h: &Harness, method: &str, path: &str) -> axum::http::request::Builder {
    Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, "127.0.0.1:7480")
        .header(header::AUTHORIZATION, format!("Bearer {}", h.token))
}

fn assert_security_headers(what: &str, headers: &HeaderMap) {
    let get = |name: header::HeaderName| {
        headers
            .get(&name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    assert_eq!(
        get(header::X_CONTENT_TYPE_OPTIONS).as_deref(),
        Some("nosniff"),
        "{what}"
    );
    assert_eq!(
        get(header::X_FRAME_OPTIONS).as_deref(),
        Some("DENY"),
        "{what}"
    );
    assert_eq!(
        get(header::REFERRER_POLICY).as_deref(),
        Some("no-referrer"),
        "{what}"
    );
    assert_eq!(
        get(header::CONTENT_SECURITY_POLICY).as_deref(),
        Some(CONTENT_SECURITY_POLICY),
        "{what}"
    );
    assert!(
        get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none(),
        "{what}: no CORS grant"
    );
    // Plain HTTP here: HSTS only when serving HTTPS.
    assert!(get(header::STRICT_TRANSPORT_SECURITY).is_none(), "{what}");
}

#[tokio::test]
async fn every_answer_carries_the_security_headers_and_only_the_own_origin_may_call() {
    let h = Harness::start().await;
    for (method, path, origin) in [
        ("GET", "/healthz", None),
        ("GET", "/", None),
        ("GET", "/ui/app.js", None),
        ("GET", "/v1/jobs", None),
        ("GET", "/v1/no-such-route", None),
        ("POST", "/v1/jobs", Some("https://evil.example")),
    ] {
        let mut req = request(&h, method, path);
        if let Some(o) = origin {
            req = req.header(header::ORIGIN, o);
        }
        let (status, headers, _) = send(&h, req.body(Body::empty()).unwrap()).await;
        assert_security_headers(&format!("{method} {path}: {status}"), &headers);
    }

    // A cross-origin call, and its preflight, are refused before anything runs.
    let body = r#"{"name": "from-evil", "command": "true"}"#;
    for (method, origin) in [
        ("POST", "https://evil.example"),
        ("OPTIONS", "https://evil.example"),
        ("POST", "null"),
        // Same host, another port: another origin.
        ("POST", "http://127.0.0.1:7481"),
    ] {
        let req = request(&h, method, "/v1/jobs")
            .header(header::ORIGIN, origin)
            .header("access-control-request-method", "POST")
            .body(Body::from(body))
            .unwrap();
        let (status, _, answer) = send(&h, req).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} from {origin}");
        assert_eq!(answer["error"]["code"], "cross_origin", "{answer}");
    }
    let (_, _, jobs) = send(
        &h,
        request(&h, "GET", "/v1/jobs").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(jobs, serde_json::json!([]), "no refused call created a job");

    // The UI (its own origin) and the CLI (no Origin) get through.
    let own = request(&h, "POST", "/v1/jobs")
        .header(header::ORIGIN, "http://127.0.0.1:7480")
        .body(Body::from(body))
        .unwrap();
    assert_eq!(send(&h, own).await.0, StatusCode::CREATED);
    let cli = request(&h, "GET", "/v1/jobs").body(Body::empty()).unwrap();
    assert_eq!(send(&h, cli).await.0, StatusCode::OK);
    h.server.stop().await;
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_with_the_api_error_naming_it() {
    let h = Harness::start().await;
    let limit = DEFAULT_BODY_LIMIT.to_string();
    // Declared too large: refused before the body is read.
    let declared = request(&h, "POST", "/v1/jobs")
        .header(header::CONTENT_LENGTH, DEFAULT_BODY_LIMIT + 1)
        .body(Body::from("{}"))
        .unwrap();
    let (status, _, answer) = send(&h, declared).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");
    assert_eq!(answer["error"]["code"], "body_too_large");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&limit),
        "{answer}"
    );
    // Undeclared, and larger than the limit once read: the same answer.
    let big = format!(
        r#"{{"name": "x", "command": "{}"}}"#,
        "a".repeat(DEFAULT_BODY_LIMIT)
    );
    let streamed = request(&h, "POST", "/v1/jobs")
        .body(Body::from(big.clone()))
        .unwrap();
    let (status, _, answer) = send(&h, streamed).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");
    assert_eq!(answer["error"]["code"], "body_too_large");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&limit),
        "{answer}"
    );
    // A restore takes more: the same body is read, and refused as a backup instead.
    let restore = request(&h, "POST", "/v1/cluster/restore")
        .header(header::CONTENT_LENGTH, big.len())
        .body(Body::from(big))
        .unwrap();
    let (status, _, answer) = send(&h, restore).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(answer["error"]["code"], "invalid_backup");
    h.server.stop().await;
}

#[tokio::test]
async fn a_token_over_its_rate_gets_429_with_retry_after() {
    let h = Harness::start_with(|c| c.rate_limit = RateLimit::new(0.5, 3).unwrap()).await;
    for i in 0..3 {
        let req = request(&h, "GET", "/v1/jobs").body(Body::empty()).unwrap();
        assert_eq!(send(&h, req).await.0, StatusCode::OK, "request {i}");
    }
    let req = request(&h, "GET", "/v1/jobs").body(Body::empty()).unwrap();
    let (status, headers, answer) = send(&h, req).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{answer}");
    assert_eq!(answer["error"]["code"], "rate_limited");
    // At 0.5 request/s the next permit is about 2 s away.
    let retry: u64 = headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    // Public routes take no token, so no token's budget.
    let (status, _, ca) = send(
        &h,
        Request::builder()
            .uri("/v1/cluster/ca")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{ca}");
    assert_eq!(ca["fingerprint_sha256"], h.server.ca.fingerprint_sha256());
    assert_eq!(ca["ca_pem"], h.server.ca.cert_pem());
    h.server.stop().await;
}

#[tokio::test]
async fn a_rate_limited_write_does_nothing_and_a_flood_is_audited_once() {
    let h = Harness::start_with(|c| c.rate_limit = RateLimit::new(0.001, 1).unwrap()).await;
    let create = |name: &str| {
        request(&h, "POST", "/v1/jobs")
            .body(Body::from(format!(
                r#"{{"name": "{name}", "command": "true"}}"#
            )))
            .unwrap()
    };
    assert_eq!(send(&h, create("a")).await.0, StatusCode::CREATED);
    for name in ["b", "c", "d"] {
        let (status, _, answer) = send(&h, create(name)).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{answer}");
    }
    let reader = &h.server.raft.reader();
    for name in ["b", "c", "d"] {
        assert!(
            reader
                .job_by_name(&Default::default(), name)
                .unwrap()
                .is_none(),
            "{name}"
        );
    }
    let refused = |reader: &windflow_raft::StateReader| {
        reader
            .audit(1000, |e| e.action == "jobs.create" && e.status == 429)
            .unwrap()
    };
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while refused(reader).is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the refusal was never audited"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let entries = refused(reader);
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0].outcome, windflow_protocol::AuditOutcome::Denied);
    h.server.stop().await;
}
