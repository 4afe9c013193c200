//! Acknowledged writes survive SIGKILL: a child process (this test binary, re-run as a
//! writer) writes jobs and reports each acknowledgement; the parent kills it with SIGKILL
//! mid-stream, reopens its data dir and finds every acknowledged job.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command as Process, Stdio};

mod common;

use windflow_raft::{Applied, RaftNode};

const CHILD_DIR: &str = "WINDFLOW_RAFT_KILL_TEST_DIR";

async fn open(dir: &Path) -> RaftNode {
    common::single_server(dir, 30).await.0
}

/// The writer half: runs only when the parent re-runs this binary with [`CHILD_DIR`] set.
#[tokio::test(flavor = "multi_thread")]
async fn child_writer() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    let node = open(Path::new(&dir)).await;
    for i in 0.. {
        match node
            .write(common::create_job(&format!("job-{i}")))
            .await
            .unwrap()
        {
            Applied::Job(j) => println!("ACK {} {}", j.id.0, j.spec.name),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Process::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_writer", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut acked = Vec::new();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // Enough writes to cross a few snapshots (every 30 entries) before the kill.
    while acked.len() < 120 {
        let line = lines.next().expect("the writer ended early").unwrap();
        if let Some(rest) = line.strip_prefix("ACK ") {
            let (id, name) = rest.split_once(' ').unwrap();
            acked.push((id.parse::<u64>().unwrap(), name.to_owned()));
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    drop(lines);

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let node = open(dir.path()).await;
        let reader = node.reader();
        for (id, name) in &acked {
            let job = reader.job_by_name(&Default::default(), name).unwrap();
            assert_eq!(job.map(|j| j.id.0), Some(*id), "acknowledged {name} lost");
        }
        // IDs continue after the last one the killed process handed out.
        let next = match node.write(common::create_job("after-kill")).await.unwrap() {
            Applied::Job(j) => j.id.0,
            other => panic!("{other:?}"),
        };
        assert!(next > acked.last().unwrap().0);
        node.shutdown().await.unwrap();
    });
}
