//! A drain with no deadline, against real processes: a node runs a service allocation and
//! a batch run; drained, its service allocation's replacement runs on another node before
//! the old one is stopped, the batch run finishes by itself (not killed), no new run goes
//! there, and the drain completes by itself with the node left ineligible.

use serde_json::{Value, json};
use windflow_protocol::Timestamp;
use windflow_tests::fleet::{Fleet, PATIENT};
use windflow_tests::{process_is_dead, stderr};

/// When the allocation's first event of `kind` happened.
fn event_at(a: &Value, kind: &str) -> Option<Timestamp> {
    let e = a["events"].as_array()?.iter().find(|e| e["kind"] == kind)?;
    serde_json::from_value(e["at"].clone()).ok()
}

#[test]
fn a_drained_node_moves_its_service_first_finishes_its_batch_run_and_ends_ineligible() {
    let mut f = Fleet::new(2, PATIENT);
    // One node at first, so that both the service and the run land on it.
    f.add_agent();
    let job = f.service("web", 1);
    let old = f.running(&job, 1).remove(0);
    let old_id = old["id"].as_str().unwrap().to_owned();
    let drained = old["node"].as_str().unwrap().to_owned();
    let old_pid = f.pid_of(&old).unwrap();
    let (status, batch) = f.call(
        "POST",
        "/v1/jobs",
        Some(json!({"name": "slow", "command": "sleep 5; echo done"})),
    );
    assert_eq!(status, 201, "{batch}");
    let batch_id = batch["id"].as_str().unwrap().to_owned();
    let run_on = |f: &Fleet| {
        let (status, run) = f.call("POST", &format!("/v1/jobs/{batch_id}/run"), None);
        assert_eq!(status, 202, "{run}");
        let run_id = run["id"].as_str().unwrap().to_owned();
        let run = f.wait("the run to be dispatched", |f| {
            let run = f.get(&format!("/v1/runs/{run_id}"));
            (!run["node"].is_null()).then_some(run)
        });
        (run_id, run["node"].as_str().unwrap().to_owned())
    };
    let (slow_run, slow_node) = run_on(&f);
    assert_eq!(slow_node, drained);
    f.wait("the slow run to be running", |f| {
        (f.get(&format!("/v1/runs/{slow_run}"))["status"] == "running").then_some(())
    });
    f.add_agent();

    let out = f.cli(&["node", "drain", &drained]);
    assert!(out.status.success(), "{}", stderr(&out));
    let node = f.node(&drained);
    assert_eq!(node["eligibility"], "ineligible", "{node}");
    assert!(node["drain"]["deadline"].is_null(), "{node}");

    // The replacement runs elsewhere, and only then is the old one stopped.
    let replacement = f.wait("the replacement to run elsewhere", |f| {
        f.allocs(&job)
            .into_iter()
            .find(|a| a["previous"] == old_id.as_str() && a["client"] == "running")
            .filter(|a| f.pid_of(a).is_some())
    });
    assert_ne!(replacement["node"], drained.as_str(), "{replacement}");
    assert!(!process_is_dead(f.pid_of(&replacement).unwrap()));
    f.wait("the old allocation's process to stop", |_| {
        process_is_dead(old_pid).then_some(())
    });
    let stopped = f.wait("the old allocation to be complete", |f| {
        let a = f.alloc(&old_id);
        (a["client"] == "complete").then_some(a)
    });
    assert_eq!(stopped["desired"], "stop", "{stopped}");
    let replacement = f.alloc(replacement["id"].as_str().unwrap());
    let started = event_at(&replacement, "started").expect("the replacement's start");
    let ended = event_at(&stopped, "stopped").expect("the old one's stop");
    assert!(
        started <= ended,
        "stopped at {ended:?} before its replacement started at {started:?}"
    );

    // While the batch run runs, the drain waits for it.
    let node = f.node(&drained);
    if f.get(&format!("/v1/runs/{slow_run}"))["status"] == "running" {
        assert!(
            node["drain"].is_object(),
            "the drain ended under a running run: {node}"
        );
    }
    // No new run goes to the draining node.
    let (_, other_node) = run_on(&f);
    assert_ne!(other_node, drained);
    // The batch run finishes by itself.
    let run = f.wait("the slow run to finish", |f| {
        let run = f.get(&format!("/v1/runs/{slow_run}"));
        (run["status"] != "running" && run["status"] != "pending").then_some(run)
    });
    assert_eq!(run["status"], "succeeded", "{run}");
    // The drain completes by itself; the node stays ineligible.
    let node = f.wait("the drain to complete", |f| {
        let n = f.node(&drained);
        n["drain"].is_null().then_some(n)
    });
    assert_eq!(node["eligibility"], "ineligible", "{node}");
    assert_eq!(f.running(&job, 1)[0]["id"], replacement["id"]);
}
