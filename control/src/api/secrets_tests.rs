//! Secret env vars through the API: sealed before raft, redacted in every view, re-sealed
//! by a rotation. Driven through `app()` on a real single-server store.

use std::path::Path;

use axum::http::StatusCode;
use serde_json::{Value, json};

use super::tests::Harness;

const VALUE: &str = "pw-8f1c2e9a7b3d4c5e6f708192a3b4c5d6";

/// Every file under `dir` whose bytes hold `needle`.
fn files_holding(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path)
                && bytes.windows(needle.len()).any(|w| w == needle)
            {
                found.push(path.display().to_string());
            }
        }
    }
    found
}

fn secret_env_of(job: &Value) -> &Value {
    &job["spec"]["groups"][0]["tasks"][0]["secret_env"]
}

#[tokio::test]
async fn secret_env_is_sealed_before_raft_and_redacted_in_every_view() {
    let h = Harness::start().await;
    let (status, job) = h
        .call(
            "POST",
            "/v1/jobs",
            Some(json!({"name": "db", "command": "true", "secret_env": {"DB_PASS": VALUE}})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
    let current = h.server.secrets.current_key().unwrap().to_string();
    let marker = json!({"DB_PASS": {"redacted": true, "key": current}});
    assert_eq!(secret_env_of(&job), &marker, "the create answer: {job}");
    let (_, shown) = h.call("GET", "/v1/jobs/db", None).await;
    let (_, listed) = h.call("GET", "/v1/jobs", None).await;
    for view in [&job, &shown, &listed[0]] {
        assert_eq!(secret_env_of(view), &marker);
        assert!(!view.to_string().contains(VALUE), "{view}");
        assert!(
            view["spec"]["groups"][0]["tasks"][0]["env"]
                .get("DB_PASS")
                .is_none()
        );
    }

    // What raft stored is a ciphertext that opens to the value, for that name only.
    let stored = h
        .server
        .raft
        .reader()
        .job_by_name(&Default::default(), "db")
        .unwrap()
        .unwrap();
    let sealed = &stored.spec.tasks().next().unwrap().secret_env["DB_PASS"];
    assert!(!sealed.is_redacted());
    assert_eq!(
        h.server.secrets.open_env("DB_PASS", sealed).await.unwrap(),
        VALUE
    );
    assert!(h.server.secrets.open_env("OTHER", sealed).await.is_err());
    h.server.raft.raft().trigger().snapshot().await.unwrap();
    let leaks = files_holding(h.dir.path(), VALUE.as_bytes());
    assert!(leaks.is_empty(), "the plaintext is on disk in {leaks:?}");
    h.server.stop().await;
}

#[tokio::test]
async fn a_rotation_reseals_stored_values_under_a_new_current_key() {
    let h = Harness::start().await;
    h.call(
        "POST",
        "/v1/jobs",
        Some(json!({"name": "db", "command": "true", "secret_env": {"A": VALUE, "B": "two"}})),
    )
    .await;
    h.call(
        "POST",
        "/v1/jobs",
        Some(json!({"name": "plain", "command": "true"})),
    )
    .await;
    let before = h.server.secrets.current_key().unwrap();
    let (status, rotated) = h.call("POST", "/v1/secrets/rotate", None).await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let after = h.server.secrets.current_key().unwrap();
    assert_ne!(after, before);
    assert_eq!(rotated["key"], after.to_string());
    assert_eq!(rotated["previous"], before.to_string());
    assert_eq!(
        (
            rotated["resealed_values"].as_u64(),
            rotated["resealed_tasks"].as_u64()
        ),
        (Some(2), Some(1))
    );

    let stored = h
        .server
        .raft
        .reader()
        .job_by_name(&Default::default(), "db")
        .unwrap()
        .unwrap();
    let task = stored.spec.tasks().next().unwrap();
    assert!(task.secret_env.values().all(|s| s.key == after));
    let revealed = h.server.secrets.reveal(task).await.unwrap();
    assert_eq!(
        (revealed.env["A"].as_str(), revealed.env["B"].as_str()),
        (VALUE, "two")
    );
    assert!(revealed.secret_env.is_empty());
    let (_, shown) = h.call("GET", "/v1/jobs/db", None).await;
    assert_eq!(secret_env_of(&shown)["A"]["key"], after.to_string());

    // The old key is no longer used: it can be dropped, and the values still open.
    let (status, dropped) = h.call("POST", "/v1/secrets/drop-old-keys", None).await;
    assert_eq!(status, StatusCode::OK, "{dropped}");
    assert_eq!(dropped["dropped"], json!([before.to_string()]));
    assert_eq!(dropped["keys"], json!([after.to_string()]));
    assert_eq!(h.server.secrets.reveal(task).await.unwrap().env["A"], VALUE);

    // A second rotation makes a new key and moves both values; until it has, a key in use
    // is never dropped.
    let (_, again) = h.call("POST", "/v1/secrets/rotate", None).await;
    assert_eq!(again["resealed_values"].as_u64(), Some(2), "{again}");
    let (_, dropped) = h.call("POST", "/v1/secrets/drop-old-keys", None).await;
    assert_eq!(dropped["dropped"], json!([after.to_string()]), "{dropped}");
    h.server.stop().await;
}

#[tokio::test]
async fn a_bad_secret_env_is_a_400_that_names_the_field_not_the_value() {
    let h = Harness::start().await;
    let (status, err) = h
        .call(
            "POST",
            "/v1/jobs",
            Some(json!({"name": "x", "command": "true", "secret_env": {"9BAD": VALUE}})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let message = err["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("`secret_env.9BAD`") && !message.contains(VALUE),
        "{message}"
    );
    h.server.stop().await;
}
