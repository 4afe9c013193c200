//! `/v1/export` and `/v1/import` through `app()`: every bad entry named at once with
//! nothing changed, a dry run that writes nothing, and secret env that stays behind.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use tower::ServiceExt;

use super::Harness;

/// A raw (YAML) body, answered as text.
async fn raw(h: &Harness, method: &str, path: &str, body: &str) -> (StatusCode, String) {
    raw_as(h, &h.token, method, path, body).await
}

async fn raw_as(
    h: &Harness,
    token: &str,
    method: &str,
    path: &str,
    body: &str,
) -> (StatusCode, String) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {token}"))
        .body(Body::from(body.to_owned()))
        .unwrap();
    let res = h.app().oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    // An error reads as its message.
    let message = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_owned));
    (status, message.unwrap_or(text))
}

async fn job_count(h: &Harness) -> usize {
    let (_, jobs) = h.call("GET", "/v1/jobs", None).await;
    jobs.as_array().unwrap().len()
}

#[tokio::test]
async fn every_bad_entry_is_named_and_nothing_changes() {
    let h = Harness::start().await;
    let file = r#"
jobs:
  - name: ok
    command: "true"
  - name: backup
    command: pg_dump
    timeout: soon
  - name: ok
    command: "false"
pipelines:
  - name: chain
    steps:
      - job: ok
      - job: missing
        depends_on: [ok]
schedules:
  - name: nightly
    cron: "61 * * * *"
    targets: [{job: ok}]
webhooks:
  - name: ops
    url: ftp://nowhere/
    events: [job.failed]
"#;
    let (status, answer) = raw(&h, "POST", "/v1/import", file).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    for named in [
        r#"jobs[1] "backup": field `timeout`"#,
        r#"jobs[2] "ok": the file holds another job `ok`"#,
        r#"pipelines[0] "chain": field `steps[1].job`: no job `missing`"#,
        r#"schedules[0] "nightly": field `cron`"#,
        r#"webhooks[0] "ops": field `url`"#,
    ] {
        assert!(answer.contains(named), "{named} in {answer}");
    }
    assert_eq!(job_count(&h).await, 0, "nothing was created");

    let (status, answer) = raw(&h, "POST", "/v1/import", "jobs: {}").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(answer.contains("not an export file"), "{answer}");
    let (status, answer) = raw(&h, "POST", "/v1/import", "version: 9\n").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(answer.contains("`version`"), "{answer}");
}

#[tokio::test]
async fn a_dry_run_plans_and_writes_nothing_then_the_import_does_it() {
    let h = Harness::start().await;
    let file = "jobs:\n  - name: a\n    command: echo a\n  - name: b\n    command: echo b\n\
                pipelines:\n  - name: ab\n    steps:\n      - job: a\n      - job: b\n        depends_on: [a]\n";
    let (status, plan) = raw(&h, "POST", "/v1/import?dry_run=true", file).await;
    assert_eq!(status, StatusCode::OK, "{plan}");
    let plan: Value = serde_json::from_str(&plan).unwrap();
    assert_eq!(plan["dry_run"], true);
    let actions: Vec<&str> = plan["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["create", "create", "create"]);
    assert_eq!(job_count(&h).await, 0);

    let (status, done) = raw(&h, "POST", "/v1/import", file).await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(job_count(&h).await, 2);
    let (status, again) = raw(&h, "POST", "/v1/import?dry_run=true", file).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert!(
        !again.contains("\"create\"") && again.contains("\"unchanged\""),
        "{again}"
    );
}

#[tokio::test]
async fn secret_env_stays_in_the_cluster_and_is_kept_on_import() {
    let h = Harness::start().await;
    let (status, job) = h
        .call(
            "POST",
            "/v1/jobs",
            Some(
                json!({"name": "db", "command": "true", "secret_env": {"DB_PASS": "s3cret-value"}}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
    let (status, yaml) = raw(&h, "GET", "/v1/export", "").await;
    assert_eq!(status, StatusCode::OK, "{yaml}");
    assert!(!yaml.contains("s3cret-value"), "{yaml}");
    assert!(yaml.contains("secret_env_omitted:\n  - DB_PASS"), "{yaml}");

    // The same file back: the job keeps its sealed value, no new version.
    let (status, answer) = raw(&h, "POST", "/v1/import", &yaml).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert!(answer.contains("\"unchanged\""), "{answer}");
    let (_, after) = h.call("GET", "/v1/jobs/db", None).await;
    assert_eq!(after["version"], 1);
    assert_eq!(
        after["spec"]["groups"][0]["tasks"][0]["secret_env"],
        job["spec"]["groups"][0]["tasks"][0]["secret_env"]
    );

    // A new job cannot keep what was never sealed here.
    let renamed = yaml.replace("name: db", "name: db2");
    let (status, answer) = raw(&h, "POST", "/v1/import", &renamed).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(
        answer.contains(r#"jobs[0] "db2": field `secret_env_omitted`: `DB_PASS`"#),
        "{answer}"
    );
}

#[tokio::test]
async fn webhooks_take_an_admin_and_namespaces_are_kept() {
    let h = Harness::start().await;
    let (status, t) = h
        .call(
            "POST",
            "/v1/tokens",
            Some(json!({"name": "ci", "role": "writer"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{t}");
    let writer = t["token"].as_str().unwrap().to_owned();
    let hooks =
        "webhooks:\n  - name: ops\n    url: http://127.0.0.1:9/\n    events: [job.failed]\n";
    let (status, answer) = raw_as(&h, &writer, "POST", "/v1/import", hooks).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    let (_, listed) = h.call("GET", "/v1/webhooks", None).await;
    assert!(listed.as_array().unwrap().is_empty());

    let file = "jobs:\n  - name: a\n    namespace: team-a\n    command: 'true'\n\
                schedules:\n  - name: s\n    namespace: team-a\n    cron: '@daily'\n    targets: [{job: a}]\n";
    let (status, answer) = raw_as(&h, &writer, "POST", "/v1/import", file).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(
        answer.contains(r#"jobs[0] "a": namespace `team-a` does not exist"#),
        "{answer}"
    );
    let (status, _) = h
        .call("POST", "/v1/namespaces", Some(json!({"name": "team-a"})))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, answer) = raw_as(&h, &writer, "POST", "/v1/import", file).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (status, yaml) = raw(&h, "GET", "/v1/export", "").await;
    assert_eq!(status, StatusCode::OK, "{yaml}");
    assert!(yaml.contains("- name: a\n  namespace: team-a\n"), "{yaml}");
    assert!(yaml.contains("- name: s\n  namespace: team-a\n"), "{yaml}");
    let (status, json) = raw(&h, "GET", "/v1/export?format=json", "").await;
    assert_eq!(status, StatusCode::OK, "{json}");
    let json: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["schedules"][0]["targets"][0]["job"], "a");

    // A webhook with its secret in the file: the same secret again changes nothing, a
    // new one updates it; the secret is never echoed.
    let given = "webhooks:\n  - name: ops\n    url: http://127.0.0.1:9/\n    events: [job.failed]\n    secret: 0123456789abcdef-given\n";
    for expected in ["\"create\"", "\"unchanged\""] {
        let (status, answer) = raw(&h, "POST", "/v1/import", given).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert!(answer.contains(expected), "{expected}: {answer}");
        assert!(!answer.contains("0123456789abcdef-given"), "{answer}");
    }
    let other = given.replace("-given", "-other");
    let (status, answer) = raw(&h, "POST", "/v1/import", &other).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert!(answer.contains("\"update\""), "{answer}");
    let (_, yaml) = raw(&h, "GET", "/v1/export", "").await;
    assert!(!yaml.contains("0123456789abcdef"), "{yaml}");
}

#[tokio::test]
async fn what_cannot_be_written_is_listed_and_the_rest_imports() {
    let h = Harness::start().await;
    for name in ["x", "y"] {
        let (status, _) = h
            .call(
                "POST",
                "/v1/jobs",
                Some(json!({"name": name, "command": "true"})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let (status, s) = h
        .call(
            "POST",
            "/v1/schedules",
            Some(json!({"name": "s", "cron": "@hourly", "targets": [{"job": "x"}, {"job": "y"}]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{s}");
    let (status, _) = h.call("DELETE", "/v1/jobs/x", None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, yaml) = raw(&h, "GET", "/v1/export", "").await;
    assert_eq!(status, StatusCode::OK, "{yaml}");
    assert!(
        yaml.contains("left_out:\n- 'schedule s (S1): target J1, a deleted job'"),
        "{yaml}"
    );
    assert!(yaml.contains("  targets:\n  - job: y\n"), "{yaml}");
    // Read back as it is: the schedule is now what the file says.
    let (status, answer) = raw(&h, "POST", "/v1/import", &yaml).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (_, s) = h.call("GET", "/v1/schedules/s", None).await;
    assert_eq!(s["spec"]["targets"], json!([{"job": "J2"}]), "{s}");
}
