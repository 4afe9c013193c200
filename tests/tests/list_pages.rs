//! Paged and filtered lists on a real `windflow server`: `?limit=&cursor=` walks a list
//! of a few thousand jobs exactly once, in ID order, while jobs are created behind the
//! cursor; `?name=` and `?status=` filter before the page is cut; bad parameters are
//! refused naming them. (The 100,000-job timings are in `benches/benches/list_load.rs`.)

use std::collections::BTreeSet;
use std::net::SocketAddr;

use serde_json::{Value, json};
use windflow_tests::cluster::Cluster;
use windflow_tests::{UNLIMITED_TOKEN_RATE, http_json, http_request};

const JOBS: usize = 2_000;

fn create_jobs(addr: SocketAddr, token: &str, names: impl Iterator<Item = String> + Send) {
    let names: Vec<String> = names.collect();
    std::thread::scope(|s| {
        for chunk in names.chunks(names.len().div_ceil(8).max(1)) {
            s.spawn(move || {
                for name in chunk {
                    let body = json!({"name": name, "command": "true"}).to_string();
                    let (status, answer) =
                        http_json(addr, "POST", "/v1/jobs", Some(token), Some(&body)).unwrap();
                    assert_eq!(status, 201, "{name}: {answer}");
                }
            });
        }
    });
}

/// Every page of `path` (which has a `?`), following the next-cursor header.
fn walk(addr: SocketAddr, token: &str, path: &str) -> (Vec<Value>, usize) {
    let mut items = Vec::new();
    let mut pages = 0;
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(c) => format!("{path}&cursor={c}"),
            None => path.to_owned(),
        };
        let page = http_request(addr, "GET", &url, Some(token), None).unwrap();
        assert_eq!(page.status, 200, "{url}: {}", page.json);
        pages += 1;
        items.extend(page.json.as_array().unwrap().iter().cloned());
        match page.header("x-windflow-next-cursor") {
            Some(next) => cursor = Some(next.to_owned()),
            None => return (items, pages),
        }
    }
}

fn id_number(v: &Value) -> u64 {
    v["id"].as_str().unwrap()[1..].parse().unwrap()
}

#[test]
fn job_pages_walk_the_list_once_and_filters_cut_before_the_page() {
    let cluster = Cluster::start_with(1, UNLIMITED_TOKEN_RATE).unwrap();
    let addr = cluster.servers[0].http_addr;
    let token = cluster.token();
    create_jobs(addr, &token, (0..JOBS).map(|i| format!("job-{i:05}")));

    let (all, pages) = walk(addr, &token, "/v1/jobs?limit=300");
    assert_eq!(all.len(), JOBS);
    assert_eq!(pages, JOBS.div_ceil(300));
    let ids: Vec<u64> = all.iter().map(id_number).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "pages are in ID order");
    let page = http_request(addr, "GET", "/v1/jobs?limit=1", Some(&token), None).unwrap();
    assert_eq!(page.json.as_array().unwrap().len(), 1);
    let second = page.header("x-windflow-next-cursor").unwrap();
    assert_eq!(second, all[1]["id"].as_str().unwrap());

    // Jobs created while a walk is under way come after its cursor: the walk sees each job
    // once, old and new.
    let first = http_request(addr, "GET", "/v1/jobs?limit=1000", Some(&token), None).unwrap();
    let cursor = first.header("x-windflow-next-cursor").unwrap().to_owned();
    create_jobs(addr, &token, (0..50).map(|i| format!("late-{i}")));
    let (rest, _) = walk(addr, &token, &format!("/v1/jobs?limit=400&cursor={cursor}"));
    let seen: BTreeSet<u64> = first
        .json
        .as_array()
        .unwrap()
        .iter()
        .chain(&rest)
        .map(id_number)
        .collect();
    assert_eq!(seen.len(), JOBS + 50, "every job once");

    // `name` filters before the limit cuts: a page of 5 holds 5 matches, not 5 jobs of which
    // some match.
    let (named, _) = walk(addr, &token, "/v1/jobs?limit=5&name=JOB-0019");
    let names: Vec<&str> = named
        .iter()
        .map(|j| j["spec"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 10, "{names:?}");
    assert!(names.iter().all(|n| n.starts_with("job-0019")), "{names:?}");
    let none = http_json(addr, "GET", "/v1/jobs?name=nosuch", Some(&token), None).unwrap();
    assert_eq!(none.1, json!([]));

    // `status` is the newest run's: with no agent, a run stays pending.
    for name in ["job-00007", "job-01234"] {
        let (status, run) = http_json(
            addr,
            "POST",
            &format!("/v1/jobs/{name}/run"),
            Some(&token),
            None,
        )
        .unwrap();
        assert!(status == 201 || status == 202, "{run}");
    }
    let (_, pending) =
        http_json(addr, "GET", "/v1/jobs?status=pending", Some(&token), None).unwrap();
    let pending: Vec<&str> = pending
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["spec"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(pending, ["job-00007", "job-01234"]);
    let (never, _) = walk(addr, &token, "/v1/jobs?limit=700&status=never");
    assert_eq!(never.len(), JOBS + 50 - 2);
    let (_, runs) = http_json(
        addr,
        "GET",
        "/v1/jobs/job-00007/runs?status=pending&limit=10",
        Some(&token),
        None,
    )
    .unwrap();
    assert_eq!(runs.as_array().unwrap().len(), 1, "{runs}");

    for (path, field) in [
        ("/v1/jobs?limit=0", "`limit`"),
        ("/v1/jobs?limit=many", "`limit`"),
        ("/v1/jobs?limit=10001", "`limit`"),
        ("/v1/jobs?cursor=P4", "`cursor`"),
        ("/v1/jobs?status=done", "`status`"),
        ("/v1/jobs?type=cron", "`type`"),
        ("/v1/pipelines?status=ok", "`status`"),
        ("/v1/schedules?status=on", "`status`"),
    ] {
        let (status, answer) = http_json(addr, "GET", path, Some(&token), None).unwrap();
        assert_eq!(status, 400, "{path}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(field), "{path}: {message}");
    }
}

#[test]
fn pipeline_pages_and_filters() {
    let cluster = Cluster::start_with(1, UNLIMITED_TOKEN_RATE).unwrap();
    let addr = cluster.servers[0].http_addr;
    let token = cluster.token();
    create_jobs(addr, &token, ["a", "b"].into_iter().map(String::from));
    let pipelines: Vec<String> = (0..120).map(|i| format!("flow-{i:03}")).collect();
    std::thread::scope(|s| {
        for chunk in pipelines.chunks(30) {
            let token = &token;
            s.spawn(move || {
                for name in chunk {
                    let body = json!({"name": name, "steps": [
                        {"job": "a"}, {"job": "b", "depends_on": ["a"]}
                    ]})
                    .to_string();
                    let (status, answer) =
                        http_json(addr, "POST", "/v1/pipelines", Some(token), Some(&body)).unwrap();
                    assert_eq!(status, 201, "{name}: {answer}");
                }
            });
        }
    });
    let (all, pages) = walk(addr, &token, "/v1/pipelines?limit=50");
    assert_eq!((all.len(), pages), (120, 3));
    let (named, _) = walk(addr, &token, "/v1/pipelines?limit=3&name=flow-01");
    assert_eq!(named.len(), 10);
    let (status, run) = http_json(
        addr,
        "POST",
        "/v1/pipelines/flow-042/run",
        Some(&token),
        None,
    )
    .unwrap();
    assert!(status == 201 || status == 202, "{run}");
    let (_, running) = http_json(
        addr,
        "GET",
        "/v1/pipelines?status=running",
        Some(&token),
        None,
    )
    .unwrap();
    let running: Vec<&str> = running
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["spec"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(running, ["flow-042"]);
    let (_, runs) = http_json(
        addr,
        "GET",
        "/v1/pipelines/flow-042/runs?status=succeeded",
        Some(&token),
        None,
    )
    .unwrap();
    assert_eq!(runs, json!([]));
}
