//! Unit tests of `alloc_logs`: parameters and the task choice.

use super::*;

fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn every_parameter_is_checked_by_name() {
    let now = Timestamp(1_000_000_000);
    let ok = LogsQuery::parse(
        &q(&[
            ("task", "web"),
            ("stream", "stderr"),
            ("follow", "true"),
            ("since", "10m"),
            ("tail", "5"),
        ]),
        now,
    )
    .unwrap();
    assert_eq!(
        ok,
        LogsQuery {
            task: Some("web".into()),
            stream: OutputStream::Stderr,
            follow: true,
            since: Some(Timestamp(1_000_000_000 - 600_000)),
            tail: Some(5),
        }
    );
    let at = LogsQuery::parse(&q(&[("since", "2026-12-02T17:00:00Z")]), now).unwrap();
    assert_eq!(
        at.since,
        Some(Timestamp::parse_rfc3339("2026-12-02T17:00:00Z").unwrap())
    );
    for (param, value) in [
        ("stream", "both"),
        ("follow", "maybe"),
        ("since", "yesterday"),
        ("tail", "-1"),
        ("tail", "100001"),
        ("tial", "5"),
    ] {
        let e = LogsQuery::parse(&q(&[(param, value)]), now).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(
            e.message.starts_with(&format!("`{param}`")),
            "{}",
            e.message
        );
    }
}

#[test]
fn the_task_is_named_or_the_only_one() {
    let alloc: Allocation = serde_json::from_value(serde_json::json!({
        "id": "AL3", "job": "J1", "namespace": "default", "group": "g", "index": 0,
        "node": "N1", "resources": {"cpu_mhz": 1, "memory_mb": 1},
        "desired": "run", "client": "running", "eval": "EV1",
        "created_at": "2026-01-01T00:00:00Z", "modified_at": "2026-01-01T00:00:00Z"
    }))
    .unwrap_or_else(|e| panic!("{e}"));
    let one = vec![("web".to_owned(), DriverKind::Exec)];
    assert_eq!(pick_task(&alloc, &one, None).unwrap().0, "web");
    let two = vec![
        ("web".to_owned(), DriverKind::Exec),
        ("db".to_owned(), DriverKind::Docker),
    ];
    let e = pick_task(&alloc, &two, None).unwrap_err();
    assert_eq!(e.status, StatusCode::BAD_REQUEST);
    assert!(e.message.contains("`web`, `db`"), "{}", e.message);
    let e = pick_task(&alloc, &two, Some("cache")).unwrap_err();
    assert_eq!(e.status, StatusCode::NOT_FOUND);
    assert!(
        e.message
            .contains("task `cache` is not a task of AL3; its tasks: `web`, `db`"),
        "{}",
        e.message
    );
    assert_eq!(
        pick_task(&alloc, &two, Some("db")).unwrap().1,
        DriverKind::Docker
    );
}
