//! The scheduler against `windflow dev` (one server, one agent that fingerprints this
//! host): a service job is placed within the node's capacity, one that fits nowhere stays
//! blocked with the reason for each node, and a deleted job's allocations stop.

use std::time::Duration;

use serde_json::{Value, json};
use windflow_tests::{DevServer, http_json, stderr, stdout, wait_for};

fn call(dev: &DevServer, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let body = body.map(|b| b.to_string());
    http_json(
        dev.http_addr,
        method,
        path,
        Some(&dev.token),
        body.as_deref(),
    )
    .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

fn create(dev: &DevServer, body: Value) -> Value {
    let (status, job) = call(dev, "POST", "/v1/jobs", Some(body));
    assert_eq!(status, 201, "{job}");
    job
}

fn allocs(dev: &DevServer, job: &str) -> Vec<Value> {
    let (status, list) = call(dev, "GET", &format!("/v1/allocations?job={job}"), None);
    assert_eq!(status, 200, "{list}");
    list.as_array().cloned().unwrap_or_default()
}

/// The job's newest evaluation once it is no longer pending.
fn settled_eval(dev: &DevServer, job: &str) -> Value {
    wait_for("the evaluation to settle", Duration::from_secs(30), || {
        let (_, evals) = call(dev, "GET", &format!("/v1/jobs/{job}/evaluations"), None);
        evals
            .as_array()?
            .first()
            .filter(|e| e["status"] != "pending")
            .cloned()
    })
    .unwrap()
}

#[test]
fn services_are_placed_within_capacity_and_what_fits_nowhere_says_why() {
    let dev = DevServer::start().unwrap();
    // The dev node has said Hello with this host's fingerprint.
    let node = wait_for("the node's fingerprint", Duration::from_secs(30), || {
        let (_, nodes) = call(&dev, "GET", "/v1/nodes", None);
        nodes
            .as_array()?
            .first()
            .filter(|n| n["resources"]["memory_mb"].as_u64() > Some(0))
            .cloned()
    })
    .unwrap();
    assert_eq!(node["attributes"]["os"], "linux", "{node}");
    let memory = node["resources"]["memory_mb"].as_u64().unwrap();

    let web = create(
        &dev,
        json!({"name": "web", "command": "sleep 1000", "type": "service", "count": 3,
               "resources": {"cpu_mhz": 10, "memory_mb": 16},
               "constraints": [{"attribute": "os", "operator": "=", "value": "linux"},
                               {"attribute": "kernel", "operator": "version", "value": ">= 3"}]}),
    );
    let web_id = web["id"].as_str().unwrap();
    assert_eq!(settled_eval(&dev, web_id)["status"], "complete");
    let placed = allocs(&dev, web_id);
    assert_eq!(placed.len(), 3, "{placed:?}");
    let mut indexes: Vec<u64> = placed
        .iter()
        .map(|a| a["index"].as_u64().unwrap())
        .collect();
    indexes.sort();
    assert_eq!(indexes, [0, 1, 2]);
    assert!(
        placed
            .iter()
            .all(|a| a["node"] == node["id"] && a["desired"] == "run")
    );
    let (status, answer) = call(&dev, "POST", &format!("/v1/jobs/{web_id}/run"), None);
    assert_eq!(status, 409, "{answer}");

    // Twice the node's memory in one instance, and a constraint no node meets.
    let huge = create(
        &dev,
        json!({"name": "huge", "command": "true", "type": "service", "count": 2,
               "resources": {"memory_mb": memory * 2}}),
    );
    let eval = settled_eval(&dev, huge["id"].as_str().unwrap());
    assert_eq!(eval["status"], "blocked", "{eval}");
    let why = eval["unplaced"].to_string();
    assert!(
        why.contains("2 of 2") && why.contains("N1: memory exhausted"),
        "{why}"
    );
    let elsewhere = create(
        &dev,
        json!({"name": "elsewhere", "command": "true", "type": "service",
               "constraints": [{"attribute": "os", "operator": "=", "value": "windows"}]}),
    );
    let eval = settled_eval(&dev, elsewhere["id"].as_str().unwrap());
    assert!(
        eval["unplaced"]
            .to_string()
            .contains("constraint `os = windows` not met"),
        "{eval}"
    );
    // `job show` says the same.
    let out = dev.cli(&["job", "show", "huge"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("Placed: 0 of 2"), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("memory exhausted"),
        "{}",
        stdout(&out)
    );
    let out = dev.cli(&["alloc", "list", "--job", "web"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).lines().count(), 4, "{}", stdout(&out));

    // A deleted service's allocations stop, and free the node.
    let (status, _) = call(&dev, "DELETE", &format!("/v1/jobs/{web_id}"), None);
    assert_eq!(status, 200);
    assert!(allocs(&dev, web_id).iter().all(|a| a["desired"] == "stop"));
}

#[test]
fn placement_fields_are_checked_by_name() {
    let dev = DevServer::start().unwrap();
    for (body, field) in [
        (json!({"name": "a", "command": "x", "count": 2}), "`count`"),
        (
            json!({"name": "a", "command": "x", "type": "service", "count": 0}),
            "`count`",
        ),
        (
            json!({"name": "a", "command": "x", "type": "cron"}),
            "`type`",
        ),
        (
            json!({"name": "a", "command": "x", "resources": {"memory_mb": "lots"}}),
            "`resources.memory_mb`",
        ),
        (
            json!({"name": "a", "command": "x", "resources": {"gpus": 1}}),
            "`resources.gpus`",
        ),
        (
            json!({"name": "a", "command": "x",
                   "constraints": [{"attribute": "os", "operator": "~", "value": "linux"}]}),
            "`constraints[0].operator`",
        ),
        (
            json!({"name": "a", "command": "x",
                   "constraints": [{"attribute": "kernel", "operator": "version", "value": "new"}]}),
            "`constraints[0]`",
        ),
        (
            json!({"name": "a", "command": "x", "placement": "random"}),
            "`placement`",
        ),
    ] {
        let (status, answer) = call(&dev, "POST", "/v1/jobs", Some(body.clone()));
        assert_eq!(status, 400, "{body}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(field), "{body}: {message}");
    }
    let out = dev.cli(&["job", "create", "w", "--cmd", "true", "--constraint", "os"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("ATTRIBUTE OPERATOR VALUE"),
        "{}",
        stderr(&out)
    );
    let out = dev.cli(&[
        "job",
        "create",
        "w",
        "--cmd",
        "true",
        "--type",
        "service",
        "--count",
        "2",
        "--memory",
        "8",
        "--constraint",
        "os = linux",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
}
