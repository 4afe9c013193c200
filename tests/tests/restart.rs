//! State survives a kill -9: every acknowledged write is there after a restart on the same
//! data dir, and IDs are never reused.

use serde_json::Value;
use windflow_tests::{DevServer, stderr, stdout};

fn json(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", stdout(out), stderr(out)))
}

#[test]
fn jobs_and_contexts_survive_a_kill_and_ids_are_not_reused() {
    let dev = DevServer::start().unwrap();
    for (name, cmd) in [("a", "echo a-out"), ("b", "echo b-out"), ("c", "true")] {
        let out = dev.cli(&["job", "create", name, "--cmd", cmd]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let run = dev.cli(&["job", "run", "a", "--wait"]);
    assert_eq!(stdout(&run), "a-out\n", "{}", stderr(&run));
    assert!(dev.cli(&["job", "delete", "c"]).status.success());

    // SIGKILL: whatever was acknowledged must already be on disk.
    let (home, data_dir) = dev.into_parts();
    let dev = DevServer::start_in(home, data_dir).unwrap();

    let jobs = json(&dev.cli(&["job", "list", "--output", "json"]));
    let names: Vec<&str> = jobs
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["spec"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(stdout(&dev.cli(&["context", "show", "a"])), "a-out\n");

    let d = json(&dev.cli(&[
        "job",
        "create",
        "d",
        "--cmd",
        "echo d-out",
        "--output",
        "json",
    ]));
    assert_eq!(d["id"], "J4", "the deleted J3 is not reused");
    let runs = json(&dev.cli(&["job", "runs", "a", "--output", "json"]));
    assert_eq!(runs[0]["id"], "R1");

    // The agent comes back with its identity and runs work again.
    let run = dev.cli(&["job", "run", "b", "--wait"]);
    assert_eq!(stdout(&run), "b-out\n", "{}\n{}", stderr(&run), dev.log());
    let b_runs = json(&dev.cli(&["job", "runs", "b", "--output", "json"]));
    assert_eq!(b_runs[0]["id"], "R2", "run IDs continue after the restart");
}
