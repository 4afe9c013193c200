//! `/v1/schedules` and `/v1/webhooks` through `app()`: validation names the field, the
//! preview, enable/disable, and a webhook's secret shown once.

use axum::http::StatusCode;
use serde_json::json;

use super::Harness;

#[tokio::test]
async fn schedules_are_validated_previewed_toggled_and_deleted() {
    let h = Harness::start().await;
    let (status, _) = h
        .call(
            "POST",
            "/v1/jobs",
            Some(json!({"name": "nightly", "command": "true"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = h
        .call(
            "POST",
            "/v1/jobs",
            Some(json!({"name": "web", "command": "sleep 100", "type": "service"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);

    let bad = |body: serde_json::Value, field: &'static str| {
        let h = &h;
        async move {
            let (status, e) = h.call("POST", "/v1/schedules", Some(body)).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{e}");
            let message = e["error"]["message"].as_str().unwrap().to_owned();
            assert!(message.contains(field), "{field}: {message}");
        }
    };
    let ok = json!({"name": "s", "cron": "0 2 * * *", "targets": [{"job": "nightly"}]});
    let with = |k: &str, v: serde_json::Value| {
        let mut b = ok.clone();
        b[k] = v;
        b
    };
    bad(with("cron", json!("0 2 * *")), "`cron`").await;
    bad(with("cron", json!("@reboot")), "`cron`").await;
    bad(with("timezone", json!("Europe/Nowhere")), "`timezone`").await;
    bad(with("overlap", json!("queue")), "`overlap`").await;
    bad(with("catch_up", json!("maybe")), "`catch_up`").await;
    bad(with("targets", json!([])), "`targets`").await;
    bad(
        with("targets", json!([{"job": "missing"}])),
        "`targets[0].job`",
    )
    .await;
    bad(with("targets", json!([{"job": "web"}])), "service job").await;
    bad(
        with("targets", json!([{"pipeline": "P1"}])),
        "`targets[0].pipeline`",
    )
    .await;
    bad(
        with("targets", json!([{"job": "J1", "pipeline": "P1"}])),
        "`targets[0]`",
    )
    .await;
    bad(
        with("targets", json!([{"job": "J1"}, {"job": "nightly"}])),
        "`targets[1]`",
    )
    .await;
    bad(with("name", json!("S4")), "schedule ID").await;
    bad(with("every", json!("day")), "`every`").await;

    let (status, s) = h
        .call(
            "POST",
            "/v1/schedules",
            Some(with("timezone", json!("Europe/Paris"))),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{s}");
    assert_eq!(s["id"], "S1");
    assert_eq!(s["enabled"], true);
    assert!(s["next_due"].is_string());
    let (status, again) = h.call("POST", "/v1/schedules", Some(ok.clone())).await;
    assert_eq!(status, StatusCode::CONFLICT, "{again}");

    let (status, next) = h.call("GET", "/v1/schedules/s/next?count=3", None).await;
    assert_eq!(status, StatusCode::OK, "{next}");
    let next = next.as_array().unwrap();
    assert_eq!(next.len(), 3);
    // 02:00 in Paris, whatever the season.
    for d in next {
        let local = d["local"].as_str().unwrap();
        assert!(local.contains(" 02:00:00 "), "{local}");
    }
    let (status, _) = h.call("GET", "/v1/schedules/S1/next?count=0", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (_, off) = h.call("POST", "/v1/schedules/S1/disable", None).await;
    assert_eq!(off["enabled"], false);
    assert!(off["next_due"].is_null());
    let (_, on) = h.call("POST", "/v1/schedules/s/enable", None).await;
    assert_eq!(on["enabled"], true);
    let (status, shown) = h.call("GET", "/v1/schedules/S1", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(shown["recent_fires"], json!([]));
    let (status, _) = h.call("DELETE", "/v1/schedules/S1", None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = h.call("GET", "/v1/schedules/S1", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_webhook_secret_is_shown_once_and_sealed() {
    let h = Harness::start().await;
    let bad = |body: serde_json::Value, field: &'static str| {
        let h = &h;
        async move {
            let (status, e) = h.call("POST", "/v1/webhooks", Some(body)).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{e}");
            let message = e["error"]["message"].as_str().unwrap().to_owned();
            assert!(message.contains(field), "{field}: {message}");
        }
    };
    bad(
        json!({"name": "a", "url": "mailto:x@y", "events": ["job.failed"]}),
        "`url`",
    )
    .await;
    bad(
        json!({"name": "a", "url": "http://u:p@h/", "events": ["job.failed"]}),
        "`url`",
    )
    .await;
    bad(
        json!({"name": "a", "url": "http://h/", "events": []}),
        "`events`",
    )
    .await;
    bad(
        json!({"name": "a", "url": "http://h/", "events": ["job.ok"]}),
        "`events[0]`",
    )
    .await;
    bad(
        json!({"name": "a", "url": "http://h/", "events": ["job.failed"], "secret": "short"}),
        "`secret`",
    )
    .await;

    let (status, w) = h
        .call(
            "POST",
            "/v1/webhooks",
            Some(json!({"name": "ops", "url": "http://127.0.0.1:9/", "events": ["job.failed", "schedule.fired"]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{w}");
    let secret = w["secret"].as_str().unwrap().to_owned();
    assert_eq!(secret.len(), 64);
    assert_eq!(w["secret"].as_str(), Some(secret.as_str()));
    let (_, listed) = h.call("GET", "/v1/webhooks", None).await;
    assert!(!listed.to_string().contains(&secret), "{listed}");
    assert_eq!(listed[0]["secret"]["redacted"], true);
    let (status, log) = h.call("GET", "/v1/webhooks/ops/deliveries", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(log, json!([]));
    let (status, _) = h.call("DELETE", "/v1/webhooks/W1", None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = h.call("GET", "/v1/webhooks/W1", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
