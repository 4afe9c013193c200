//! Allocation logs end to end, on one real server and one real agent: a service whose task
//! prints a numbered line every 100 ms on stdout (`line N`) and on stderr (`err N`).
//! `alloc logs --tail 5` gives exactly the last 5 lines, `--since` drops the lines before
//! the cut, `--stderr` gives stderr alone, `--follow` prints lines written after it
//! started; the API checks its parameters by name; an agent that is away is a 503 naming
//! its node, and once it is back the lines its task wrote meanwhile are there; stats name
//! the task's memory and CPU; `--follow` ends when the allocation is stopped. The same for a docker task (busybox from
//! `tests/src/docker.rs`, read from the engine), skipped, saying why, when no Docker
//! Engine answers here.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use windflow_protocol::Timestamp;
use windflow_tests::docker::{self, Cleanup};
use windflow_tests::fleet::{Fleet, PATIENT};
use windflow_tests::{stderr, stdout, windflow_bin};

/// Prints `line N` on stdout and `err N` on stderr every 100 ms, N from 1.
const COUNTER: &str =
    "i=0; while true; do i=$((i+1)); echo \"line $i\"; echo \"err $i\" >&2; sleep 0.1; done";

/// The numbers of the lines of `text` that read `<prefix> N`; panics on any other line.
fn numbers(text: &str, prefix: &str) -> Vec<u64> {
    text.lines()
        .map(|l| {
            l.strip_prefix(prefix)
                .and_then(|n| n.strip_prefix(' '))
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("unexpected line {l:?} in:\n{text}"))
        })
        .collect()
}

fn assert_consecutive(ns: &[u64], what: &str) {
    for w in ns.windows(2) {
        assert_eq!(w[1], w[0] + 1, "{what}: a gap or a repeat in {ns:?}");
    }
}

/// `GET /v1/allocations/{alloc}/logs{query}`: the status, and the body as text (an error
/// as its JSON).
fn api_logs(f: &Fleet, alloc: &str, query: &str) -> (u16, Value) {
    api_logs_at(f, 0, alloc, query)
}

/// [`api_logs`] through server `server` of the fleet's cluster.
fn api_logs_at(f: &Fleet, server: usize, alloc: &str, query: &str) -> (u16, Value) {
    let path = format!("/v1/allocations/{alloc}/logs{query}");
    let (status, body) = get_text(f, server, &path).unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let body = serde_json::from_str(&body).unwrap_or(Value::String(body));
    (status, body)
}

/// One HTTP/1.1 `GET` to server `server`, read to its end, its chunked body decoded.
fn get_text(f: &Fleet, server: usize, path: &str) -> anyhow::Result<(u16, String)> {
    use std::io::{Read, Write};
    let addr = f.cluster.servers[server].http_addr;
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAuthorization: Bearer {}\r\n\r\n",
        f.admin
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8(raw)?;
    let (head, mut body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("no end of headers"))?;
    let status = head.get(9..12).unwrap_or_default().parse()?;
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Ok((status, body.to_owned()));
    }
    let mut decoded = String::new();
    loop {
        let (size, rest) = body
            .split_once("\r\n")
            .ok_or_else(|| anyhow::anyhow!("a chunk without its size"))?;
        let size = usize::from_str_radix(size.trim(), 16)?;
        if size == 0 {
            return Ok((status, decoded));
        }
        decoded.push_str(
            rest.get(..size)
                .ok_or_else(|| anyhow::anyhow!("a short chunk"))?,
        );
        body = rest.get(size + 2..).unwrap_or_default();
    }
}

/// The body of a logs request that must succeed.
fn logs_text(f: &Fleet, alloc: &str, query: &str) -> String {
    let (status, body) = api_logs(f, alloc, query);
    assert_eq!(status, 200, "{query}: {body}");
    match body {
        Value::String(s) => s,
        other => panic!("{query}: not text: {other}"),
    }
}

/// `windflow alloc logs ARGS`: its stdout, which must succeed.
fn cli_logs(f: &Fleet, args: &[&str]) -> String {
    let mut all = vec!["alloc", "logs"];
    all.extend_from_slice(args);
    let out = f.cli(&all);
    assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    stdout(&out)
}

/// The one running allocation of `job`, once its stdout has at least `lines` lines.
fn running_alloc(f: &Fleet, job: &str, lines: usize) -> String {
    let alloc = f.wait(&format!("{job}'s allocation to run"), |f| {
        f.allocs(job)
            .into_iter()
            .find(|a| a["client"] == "running")
            .map(|a| a["id"].as_str().unwrap().to_owned())
    });
    f.wait(&format!("{lines} lines of {alloc}"), |f| {
        let (status, body) = api_logs(f, &alloc, "");
        (status == 200 && body.as_str().is_some_and(|s| s.lines().count() >= lines)).then_some(())
    });
    alloc
}

/// `alloc logs ALLOC --follow` as a child whose lines arrive on a channel.
struct Follow {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Follow {
    fn start(f: &Fleet, alloc: &str, extra: &[&str]) -> Follow {
        Follow::start_at(f, 0, alloc, extra)
    }

    /// `alloc logs --follow` against server `server` of the fleet's cluster.
    fn start_at(f: &Fleet, server: usize, alloc: &str, extra: &[&str]) -> Follow {
        let mut child = Command::new(windflow_bin())
            .args(["alloc", "logs", alloc, "--follow"])
            .args(extra)
            .env("HOME", f.cluster.root.path())
            .env(
                "WINDFLOW_ADDR",
                format!("http://{}", f.cluster.servers[server].http_addr),
            )
            .env("WINDFLOW_TOKEN", &f.admin)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting alloc logs --follow");
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Follow { child, lines }
    }

    /// Lines until one numbered above `beyond` arrives (all of them, that one included).
    fn until_above(&self, prefix: &str, beyond: u64, deadline: Duration) -> Vec<u64> {
        let end = Instant::now() + deadline;
        let mut got = Vec::new();
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).unwrap_or_else(|e| {
                panic!("no line above {beyond} within {deadline:?} ({e}); got {got:?}")
            });
            let n = numbers(&line, prefix)[0];
            got.push(n);
            if n > beyond {
                return got;
            }
        }
    }
}

impl Follow {
    /// SIGINT, as Ctrl-C sends: the CLI exits 0 within a few seconds.
    fn interrupt(mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
        let status = windflow_tests::wait_for(
            "alloc logs to end on SIGINT",
            Duration::from_secs(10),
            || self.child.try_wait().ok().flatten(),
        )
        .unwrap();
        assert!(status.success(), "{status}");
    }
}

impl Drop for Follow {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What every driver must do: tail, since, stderr, follow, checked parameters.
fn check_cuts(f: &Fleet, alloc: &str) {
    // --tail 5: exactly five lines, consecutive, the newest ones.
    let before = numbers(&logs_text(f, alloc, ""), "line");
    assert_consecutive(&before, "the whole stdout");
    assert_eq!(before[0], 1, "the log starts at the first line");
    let tail = numbers(&cli_logs(f, &[alloc, "--tail", "5"]), "line");
    assert_eq!(tail.len(), 5, "{tail:?}");
    assert_consecutive(&tail, "--tail 5");
    assert!(
        tail[0] > *before.last().unwrap() - 5,
        "{tail:?} after {before:?}"
    );
    assert_eq!(
        numbers(&logs_text(f, alloc, "?tail=0"), "line"),
        Vec::<u64>::new()
    );

    // --since: the lines before the cut are gone, those after it all there.
    let seen = *numbers(&logs_text(f, alloc, ""), "line").last().unwrap();
    let cut = Timestamp::now();
    f.wait("lines after the cut", |f| {
        let n = numbers(&logs_text(f, alloc, ""), "line");
        (*n.last().unwrap() >= seen + 5).then_some(())
    });
    // Every line above this one was written after the cut.
    let seen_after = *numbers(&logs_text(f, alloc, ""), "line").last().unwrap();
    let since = numbers(&cli_logs(f, &[alloc, "--since", &cut.to_string()]), "line");
    assert!(
        since[0] > seen,
        "line {} was there before the cut",
        since[0]
    );
    assert!(
        since[0] <= seen_after + 1,
        "lines written after the cut are missing: {since:?}, line {seen_after} was there"
    );
    assert_consecutive(&since, "--since");
    // A duration back from now: everything the task wrote in the last 10 minutes.
    let ten = numbers(&cli_logs(f, &[alloc, "--since", "10m"]), "line");
    assert_eq!(ten[0], 1);
    // Both: the last 3 of the lines after the cut.
    let both = numbers(
        &cli_logs(f, &[alloc, "--since", &cut.to_string(), "--tail", "3"]),
        "line",
    );
    assert_eq!(both.len(), 3, "{both:?}");
    assert!(both[0] > seen);

    // --stderr: stderr's lines only.
    let err = numbers(&cli_logs(f, &[alloc, "--stderr", "--tail", "4"]), "err");
    assert_eq!(err.len(), 4, "{err:?}");
    assert_consecutive(&err, "--stderr");

    // --follow: lines written after it started arrive, in order, none twice.
    // With `--tail 0`, nothing written before it started comes.
    let present = *numbers(&logs_text(f, alloc, ""), "line").last().unwrap();
    let follow = Follow::start(f, alloc, &["--tail", "0"]);
    let got = follow.until_above("line", present + 10, Duration::from_secs(30));
    assert_consecutive(&got, "--follow");
    assert!(got[0] > present, "{got:?}: line {present} was there before");
    // Ctrl-C ends it, cleanly.
    follow.interrupt();
    // With `--tail 3`: the last three lines, then on without a gap.
    let follow = Follow::start(f, alloc, &["--tail", "3"]);
    let present = *numbers(&logs_text(f, alloc, ""), "line").last().unwrap();
    let got = follow.until_above("line", present + 5, Duration::from_secs(30));
    assert_consecutive(&got, "--follow --tail 3");
    let follow_err = Follow::start(f, alloc, &["--stderr", "--tail", "0"]);
    let present = *numbers(&logs_text(f, alloc, "?stream=stderr"), "err")
        .last()
        .unwrap();
    let got = follow_err.until_above("err", present + 5, Duration::from_secs(30));
    assert_consecutive(&got, "--follow --stderr");

    // Bad input is named.
    for (query, names) in [
        ("?tail=many", "`tail`"),
        ("?stream=both", "`stream`"),
        ("?since=yesterday", "`since`"),
        ("?follow=perhaps", "`follow`"),
        ("?lines=3", "`lines`"),
    ] {
        let (status, body) = api_logs(f, alloc, query);
        assert_eq!(status, 400, "{query}: {body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(names), "{query}: {body}");
    }
    let (status, body) = api_logs(f, alloc, "?task=nope");
    assert_eq!(status, 404, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("`nope`") && message.contains("`counter`"),
        "{body}"
    );
    let (status, body) = api_logs(f, "AL999999", "");
    assert_eq!(status, 404, "{body}");
}

#[test]
fn exec_task_logs_cut_follow_and_survive_an_agent_restart() {
    let mut f = Fleet::start(1, PATIENT);
    let (status, job) = f.call(
        "POST",
        "/v1/jobs",
        Some(
            json!({"name": "counter", "command": COUNTER, "type": "service", "count": 1,
                    "resources": {"cpu_mhz": 10, "memory_mb": 8}}),
        ),
    );
    assert_eq!(status, 201, "{job}");
    let job = job["id"].as_str().unwrap().to_owned();
    let alloc = running_alloc(&f, &job, 20);
    check_cuts(&f, &alloc);

    // Stats: the task's process group, from /proc.
    let (status, stats) = f.call("GET", &format!("/v1/allocations/{alloc}/stats"), None);
    assert_eq!(status, 200, "{stats}");
    let task = &stats["tasks"][0];
    assert_eq!(task["task"], "counter", "{stats}");
    assert!(
        task["memory_bytes"].as_u64().is_some_and(|m| m > 0),
        "{stats}"
    );
    assert!(task["cpu_percent"].as_f64().is_some(), "{stats}");
    let out = f.cli(&["alloc", "stats", &alloc]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("counter"), "{}", stdout(&out));

    // The agent goes away: a clear 503 naming the node. Its task goes on writing.
    let node = f.alloc(&alloc)["node"].as_str().unwrap().to_owned();
    let last_before = *numbers(&logs_text(&f, &alloc, ""), "line").last().unwrap();
    f.agents[0].terminate(Duration::from_secs(20)).unwrap();
    let away = f.wait("the server to see the agent gone", |f| {
        let (status, body) = api_logs(f, &alloc, "");
        (status == 503).then_some(body)
    });
    let message = away["error"]["message"].as_str().unwrap();
    assert!(message.contains(&node), "{away}");
    let out = f.cli(&["alloc", "logs", &alloc]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains(&node), "{}", stderr(&out));
    let down_at = Instant::now();
    f.wait("a second of output while the agent is away", |_| {
        (down_at.elapsed() > Duration::from_secs(1)).then_some(())
    });

    // Back again: everything is there, the lines written meanwhile included.
    f.agents[0].restart().unwrap();
    let after = f.wait("the logs to be served again", |f| {
        let (status, body) = api_logs(f, &alloc, "");
        (status == 200).then(|| numbers(body.as_str().unwrap(), "line"))
    });
    assert_eq!(after[0], 1);
    assert_consecutive(&after, "across the agent restart");
    assert!(
        *after.last().unwrap() >= last_before + 8,
        "lines written while the agent was away are missing: {} then {}",
        last_before,
        after.last().unwrap()
    );
    let mut follow = Follow::start(&f, &alloc, &["--tail", "0"]);
    let present = *after.last().unwrap();
    follow.until_above("line", present + 3, Duration::from_secs(30));

    // Following ends by itself once the allocation is stopped; its logs stay readable.
    let (status, body) = f.call("DELETE", &format!("/v1/jobs/{job}"), None);
    assert!((200..300).contains(&status), "{body}");
    let exited = windflow_tests::wait_for(
        "--follow to end with its allocation",
        Duration::from_secs(60),
        || follow.child.try_wait().ok().flatten(),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", f.logs()));
    assert!(exited.success(), "{exited}");
    // The job is gone: the task is named (unnamed, a 400 says to).
    let (status, body) = api_logs(&f, &alloc, "");
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`task`"),
        "{body}"
    );
    let kept = numbers(&logs_text(&f, &alloc, "?task=counter"), "line");
    assert_eq!(kept[0], 1);
    assert_consecutive(&kept, "after the allocation stopped");
}

#[test]
fn logs_are_reached_through_the_server_the_agent_is_connected_to() {
    // Three servers; the agent knows only the first.
    let mut f = Fleet::with_servers(3, 1, PATIENT);
    f.add_agent();
    let (status, job) = f.call(
        "POST",
        "/v1/jobs",
        Some(
            json!({"name": "counter", "command": COUNTER, "type": "service", "count": 1,
                    "resources": {"cpu_mhz": 10, "memory_mb": 8}}),
        ),
    );
    assert_eq!(status, 201, "{job}");
    let job = job["id"].as_str().unwrap().to_owned();
    let alloc = running_alloc(&f, &job, 10);
    for server in [1, 2] {
        let (status, body) = api_logs_at(&f, server, &alloc, "?tail=5");
        assert_eq!(status, 200, "through server {server}: {body}");
        let lines = numbers(body.as_str().unwrap(), "line");
        assert_eq!(lines.len(), 5, "{lines:?}");
        assert_consecutive(&lines, "relayed --tail 5");
        let (status, stats) = f.cluster_call(server, &format!("/v1/allocations/{alloc}/stats"));
        assert_eq!(status, 200, "through server {server}: {stats}");
        assert_eq!(stats["tasks"][0]["task"], "counter", "{stats}");
    }
    // Errors come back through the relay as they are.
    let (status, body) = api_logs_at(&f, 2, &alloc, "?task=nope");
    assert_eq!(status, 404, "{body}");

    // Followed through a server that relays: lines written after it started.
    let present = *numbers(&logs_text(&f, &alloc, ""), "line").last().unwrap();
    let follow = Follow::start_at(&f, 1, &alloc, &["--tail", "0"]);
    let got = follow.until_above("line", present + 5, Duration::from_secs(30));
    assert!(got[0] > present, "{got:?}");
    assert_consecutive(&got, "relayed --follow");
    drop(follow);

    // No server holds the agent's session: a 503 naming the node and the servers asked.
    let node = f.alloc(&alloc)["node"].as_str().unwrap().to_owned();
    f.agents[0].terminate(Duration::from_secs(20)).unwrap();
    let away = f.wait("the servers to see the agent gone", |f| {
        let (status, body) = api_logs_at(f, 1, &alloc, "");
        (status == 503).then_some(body)
    });
    let message = away["error"]["message"].as_str().unwrap();
    assert!(message.contains(&node), "{away}");
    for s in &f.cluster.servers {
        assert!(message.contains(&s.name), "{} is not named: {away}", s.name);
    }
}

/// Whether a Docker Engine answers here; the docker test is skipped (saying so) if not.
fn engine_answers() -> bool {
    match Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .output()
    {
        Ok(o) if o.status.success() => true,
        Ok(o) => {
            eprintln!(
                "skipping: no Docker Engine answers ({})",
                String::from_utf8_lossy(&o.stderr).trim()
            );
            false
        }
        Err(e) => {
            eprintln!("skipping: the docker CLI cannot run ({e})");
            false
        }
    }
}

#[test]
fn docker_task_logs_cut_and_follow_from_the_engine() {
    if !engine_answers() {
        return;
    }
    let cleanup = Cleanup::default();
    docker::image();
    let mut f = Fleet::start(1, PATIENT);
    cleanup.watch_nodes(&f.nodes());
    let (status, job) = f.call(
        "POST",
        "/v1/jobs",
        Some(json!({
            "name": "counter", "type": "service", "count": 1, "driver": "docker",
            "docker": {"image": docker::IMAGE, "command": "sh", "args": ["-c", COUNTER]},
            "resources": {"cpu_mhz": 10, "memory_mb": 32}
        })),
    );
    assert_eq!(status, 201, "{job}");
    let job = job["id"].as_str().unwrap().to_owned();
    let alloc = running_alloc(&f, &job, 20);
    check_cuts(&f, &alloc);

    let (status, stats) = f.call("GET", &format!("/v1/allocations/{alloc}/stats"), None);
    assert_eq!(status, 200, "{stats}");
    let task = &stats["tasks"][0];
    assert!(
        task["memory_bytes"].as_u64().is_some_and(|m| m > 0),
        "{stats}"
    );
    assert!(
        task["memory_limit_bytes"].as_u64().is_some_and(|m| m > 0),
        "{stats}"
    );
    assert!(task["error"].is_null(), "{stats}");

    // The engine keeps the container and its log while the agent is away.
    let last_before = *numbers(&logs_text(&f, &alloc, ""), "line").last().unwrap();
    f.agents[0].terminate(Duration::from_secs(20)).unwrap();
    f.wait("the server to see the agent gone", |f| {
        (api_logs(f, &alloc, "").0 == 503).then_some(())
    });
    f.agents[0].restart().unwrap();
    let after = f.wait("the logs to be served again", |f| {
        let (status, body) = api_logs(f, &alloc, "");
        (status == 200).then(|| numbers(body.as_str().unwrap(), "line"))
    });
    assert_eq!(after[0], 1);
    assert_consecutive(&after, "across the agent restart");
    assert!(*after.last().unwrap() > last_before, "{after:?}");
}
