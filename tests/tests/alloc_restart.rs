//! Agent restarts lose nothing, against real processes: one `windflow server` with a short
//! heartbeat grace and real `windflow-agent`s, each from its own 127.0.0.x. A killed
//! agent's node goes down and its allocation is replaced elsewhere; when the agent comes
//! back, the duplicate it still runs is stopped. An agent stopped (or killed) and started
//! again within the grace period takes its running allocations back: same processes, no
//! restart, and a later `job delete` still stops them.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;
use windflow_tests::fleet::{Fleet, LIVENESS, PATIENT};
use windflow_tests::{process_is_dead, stderr};

fn id(a: &Value) -> String {
    a["id"].as_str().unwrap().to_owned()
}

fn count_events(a: &Value, kind: &str) -> usize {
    a["events"]
        .as_array()
        .map_or(0, |e| e.iter().filter(|e| e["kind"] == kind).count())
}

#[test]
fn a_killed_agents_duplicate_is_stopped_when_it_comes_back() {
    let mut f = Fleet::start(3, LIVENESS);
    let job = f.service("web", 3);
    let placed = f.running(&job, 3);
    let victim = placed[0].clone();
    let victim_id = id(&victim);
    let node = victim["node"].as_str().unwrap().to_owned();
    let old_pid = f.pid_of(&victim).unwrap();
    let agent = f.agent_of(&node);

    f.agents[agent].kill();
    f.wait("the killed agent's node to be down", |f| {
        (f.node(&node)["status"] == "down").then_some(())
    });
    f.wait("its allocation to be lost", |f| {
        (f.alloc(&victim_id)["client"] == "lost").then_some(())
    });
    // The agent's death did not take its task with it: it now runs twice.
    assert!(!process_is_dead(old_pid), "the task died with its agent");
    let live = f.running(&job, 3);
    let replacement = live
        .iter()
        .find(|a| a["previous"] == victim_id.as_str())
        .unwrap_or_else(|| panic!("no replacement of {victim_id}: {live:?}"))
        .clone();
    assert_ne!(replacement["node"], node.as_str(), "{replacement}");
    let new_pid = f.pid_of(&replacement).unwrap();
    assert!(!process_is_dead(new_pid));
    assert_ne!(new_pid, old_pid);

    // Back on its data dir: it takes its task back, hears it was replaced, stops it.
    f.agents[agent].restart().unwrap();
    f.wait("the duplicate to be stopped", |_| {
        process_is_dead(old_pid).then_some(())
    });
    f.wait("the node to be ready again", |f| {
        (f.node(&node)["status"] == "ready").then_some(())
    });
    let log = f.agents[agent].log_of_this_start();
    assert!(log.contains("re-attached to the running task"), "{log}");
    let old = f.wait("the old allocation to end", |f| {
        let a = f.alloc(&victim_id);
        matches!(a["client"].as_str(), Some("lost" | "complete" | "failed")).then_some(a)
    });
    assert_eq!(old["desired"], "stop", "{old}");
    // Exactly three run, the replacement untouched.
    let live = f.running(&job, 3);
    let running = f
        .allocs(&job)
        .iter()
        .filter(|a| a["client"] == "running")
        .count();
    assert_eq!(running, 3, "{live:?}");
    for a in &live {
        assert!(!process_is_dead(f.pid_of(a).unwrap()), "{a}");
    }
    assert_eq!(f.pid_of(&replacement), Some(new_pid));
}

#[test]
fn an_agent_restarted_while_its_allocations_run_takes_them_back() {
    let mut f = Fleet::start(2, PATIENT);
    let job = f.service("web", 2);
    let before = f.running(&job, 2);
    let pids: BTreeMap<String, u32> = before
        .iter()
        .map(|a| (id(a), f.pid_of(a).unwrap()))
        .collect();
    let node_names: Vec<String> = f.agents.iter().map(|a| a.spec.hostname.clone()).collect();

    // Stopped gently, then (the other agent) killed: each started again at once.
    f.agents[0].terminate(Duration::from_secs(20)).unwrap();
    for pid in pids.values() {
        assert!(!process_is_dead(*pid), "a task died with its agent");
    }
    f.agents[0].restart().unwrap();
    f.agents[1].kill();
    for pid in pids.values() {
        assert!(!process_is_dead(*pid), "a task died with its agent");
    }
    f.agents[1].restart().unwrap();

    for (i, name) in node_names.iter().enumerate() {
        f.wait(&format!("{name} to take its allocation back"), |f| {
            let log = f.agents[i].log_of_this_start();
            let reattached = log.contains("re-attached to the running task");
            let connected = f
                .nodes()
                .iter()
                .any(|n| n["name"] == name.as_str() && n["connected"] == true);
            (reattached && connected).then_some(())
        });
        let log = f.agents[i].log_of_this_start();
        assert!(!log.contains("starting the allocation"), "{log}");
    }
    // Within the grace period: no node went down, nothing was lost or restarted.
    for n in f.nodes() {
        assert_eq!(n["status"], "ready", "{n}");
    }
    let after = f.running(&job, 2);
    for a in &after {
        assert_eq!(f.pid_of(a), pids.get(&id(a)).copied(), "{a}");
        assert!(!process_is_dead(f.pid_of(a).unwrap()));
        assert_eq!(a["restarts"], 0, "{a}");
        assert_eq!(count_events(a, "started"), 1, "{a}");
        assert_eq!(a["client"], "running", "{a}");
    }

    // The servers' word still stops them.
    let out = f.cli(&["job", "delete", "web"]);
    assert!(out.status.success(), "{}", stderr(&out));
    f.wait("the processes to stop", |_| {
        pids.values().all(|p| process_is_dead(*p)).then_some(())
    });
    f.wait("the allocations to be complete", |f| {
        f.allocs(&job)
            .iter()
            .all(|a| a["client"] == "complete")
            .then_some(())
    });
}
