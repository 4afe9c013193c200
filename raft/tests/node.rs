//! A single-server raft group on disk: initialisation once, writes that survive a restart,
//! and snapshots with log compaction.

use std::time::Duration;

use windflow_protocol::JobId;
mod common;

use windflow_raft::RaftNode;

async fn open(dir: &std::path::Path, snapshot_after_logs: u64) -> (RaftNode, bool) {
    common::single_server(dir, snapshot_after_logs).await
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_survive_a_restart_and_the_group_initialises_once() {
    let dir = tempfile::tempdir().unwrap();
    let (node, initialized) = open(dir.path(), 10_000).await;
    assert!(initialized);
    for i in 1..=20u64 {
        assert_eq!(
            common::write_job(&node, &format!("job-{i}")).await,
            JobId(i)
        );
    }
    assert!(matches!(
        node.write(common::create_job("job-1")).await,
        Err(windflow_raft::WriteError::Rejected(_))
    ));
    node.linearizable().await.unwrap();
    node.shutdown().await.unwrap();
    drop(node);

    let (node, initialized) = open(dir.path(), 10_000).await;
    assert!(!initialized, "a restart must not initialise again");
    assert_eq!(node.reader().job_count().unwrap(), 20);
    assert_eq!(common::write_job(&node, "after-restart").await, JobId(21));
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshots_compact_the_log_and_restore_on_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (node, _) = open(dir.path(), 50).await;
    for i in 0..200 {
        common::write_job(&node, &format!("j{i}")).await;
    }
    let metrics = node
        .raft()
        .wait(Some(Duration::from_secs(30)))
        .metrics(
            |m| m.snapshot.is_some_and(|s| s.index >= 150),
            "a snapshot past entry 150",
        )
        .await
        .unwrap();
    assert!(
        metrics.purged.is_some(),
        "the log is purged behind the snapshot"
    );
    node.shutdown().await.unwrap();
    drop(node);

    let (node, _) = open(dir.path(), 50).await;
    assert_eq!(node.reader().job_count().unwrap(), 200);
    assert_eq!(
        node.reader()
            .job_by_name(&Default::default(), "j0")
            .unwrap()
            .unwrap()
            .id,
        JobId(1)
    );
    assert_eq!(common::write_job(&node, "next").await, JobId(201));
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_writes_share_entries_and_each_gets_its_answer() {
    let dir = tempfile::tempdir().unwrap();
    let (node, _) = common::single_server(dir.path(), 10_000).await;
    let before = node.metrics().borrow().last_log_index.unwrap_or(0);
    let writers: Vec<_> = (0..64)
        .map(|i| {
            let node = node.clone();
            tokio::spawn(async move { common::write_job(&node, &format!("w{i}")).await })
        })
        .collect();
    let mut ids = std::collections::BTreeSet::new();
    for w in writers {
        ids.insert(w.await.unwrap());
    }
    assert_eq!(
        ids,
        (1..=64).map(JobId).collect(),
        "64 writes, 64 distinct answers"
    );
    let entries = node.metrics().borrow().last_log_index.unwrap_or(0) - before;
    assert!(
        entries < 64,
        "64 concurrent writes took {entries} entries: nothing was batched"
    );
    // A refusal inside a batch reaches its own writer only.
    let (a, b) = tokio::join!(
        node.write(common::create_job("w1")),
        node.write(common::create_job("fresh"))
    );
    assert!(matches!(a, Err(windflow_raft::WriteError::Rejected(_))));
    assert!(matches!(b, Ok(windflow_raft::Applied::Job(_))));
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lazy_write_rides_in_the_next_entry_or_goes_alone_when_none_comes() {
    let dir = tempfile::tempdir().unwrap();
    let (node, _) = common::single_server(dir.path(), 10_000).await;
    let last = |node: &RaftNode| node.metrics().borrow().last_log_index.unwrap_or(0);

    // Alone, it is still committed: after its short wait, in an entry of its own.
    let before = last(&node);
    let answer = node.write_lazily(common::create_job("lazy-alone")).await;
    assert!(
        matches!(answer, Ok(windflow_raft::Applied::Job(_))),
        "{answer:?}"
    );
    assert_eq!(last(&node) - before, 1);

    // Followed by a real write, both share one entry, and each gets its own answer.
    let before = last(&node);
    // Polled in this order, the lazy write is queued first and waits for company.
    let (lazy, eager) = tokio::join!(
        node.write_lazily(common::create_job("lazy-1")),
        node.write(common::create_job("eager-1"))
    );
    assert!(
        matches!(eager, Ok(windflow_raft::Applied::Job(_))),
        "{eager:?}"
    );
    assert!(
        matches!(lazy, Ok(windflow_raft::Applied::Job(_))),
        "{lazy:?}"
    );
    assert_eq!(
        last(&node) - before,
        1,
        "a lazy write and the write after it took more than one entry"
    );
    let reader = node.reader();
    for name in ["lazy-alone", "lazy-1", "eager-1"] {
        assert!(
            reader
                .job_by_name(&Default::default(), name)
                .unwrap()
                .is_some(),
            "{name}"
        );
    }
    node.shutdown().await.unwrap();
}
