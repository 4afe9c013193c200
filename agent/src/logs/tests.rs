use std::time::Duration;

use windflow_protocol::messages::OutputStream::{Stderr, Stdout};
use windflow_protocol::{AllocId, Timestamp};

use super::*;

fn target(dir: &std::path::Path, max_files: u32, max_file_bytes: u64) -> LogTarget {
    LogTarget {
        dir: dir.join("task"),
        policy: LogPolicy {
            max_files,
            max_file_bytes,
            retention: Duration::from_secs(3600),
        },
    }
}

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap()
}

#[test]
fn lines_come_back_as_written_with_partial_lines_joined() {
    let dir = tempfile::tempdir().unwrap();
    let t = target(dir.path(), 5, 1 << 20);
    let mut w = LogWriter::open(&t, Stdout).unwrap();
    w.write(Timestamp(1000), b"one\ntw").unwrap();
    w.write(Timestamp(2000), b"o\n\nthree").unwrap();
    assert_eq!(
        text(history(&t.dir, Stdout, None, None)),
        "one\ntwo\n\nthree"
    );
    // `two` is one line, read first at 1000: kept whole by a cut at 1000, dropped at 1001.
    assert_eq!(
        text(history(&t.dir, Stdout, Some(Timestamp(1000)), None)),
        "one\ntwo\n\nthree"
    );
    assert_eq!(
        text(history(&t.dir, Stdout, Some(Timestamp(1001)), None)),
        "\nthree"
    );
    assert_eq!(text(history(&t.dir, Stdout, None, Some(2))), "\nthree");
    assert_eq!(text(history(&t.dir, Stdout, None, Some(0))), "");
    // The other stream is apart.
    assert_eq!(text(history(&t.dir, Stderr, None, None)), "");
}

#[test]
fn tail_and_since_cut_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let t = target(dir.path(), 5, 1 << 20);
    let mut w = LogWriter::open(&t, Stdout).unwrap();
    for i in 0..100u64 {
        w.write(
            Timestamp(10_000 + i * 100),
            format!("line {i}\n").as_bytes(),
        )
        .unwrap();
    }
    let last5: String = (95..100).map(|i| format!("line {i}\n")).collect();
    assert_eq!(text(history(&t.dir, Stdout, None, Some(5))), last5);
    // Since the 50th line's instant: lines 50..100.
    let since = Some(Timestamp(10_000 + 50 * 100));
    let from50: String = (50..100).map(|i| format!("line {i}\n")).collect();
    assert_eq!(text(history(&t.dir, Stdout, since, None)), from50);
    // Both: the last 3 of those.
    let last3: String = (97..100).map(|i| format!("line {i}\n")).collect();
    assert_eq!(text(history(&t.dir, Stdout, since, Some(3))), last3);
    // A tail longer than what is there: all of it.
    assert_eq!(text(history(&t.dir, Stdout, since, Some(1000))), from50);
    // A cut after everything: nothing.
    assert_eq!(
        text(history(&t.dir, Stdout, Some(Timestamp(99_999_999)), None)),
        ""
    );
}

#[test]
fn files_rotate_by_size_and_the_oldest_go_past_the_count() {
    let dir = tempfile::tempdir().unwrap();
    let t = target(dir.path(), 3, 200);
    let mut w = LogWriter::open(&t, Stdout).unwrap();
    for i in 0..100u64 {
        w.write(Timestamp(1_000 + i), format!("line {i:03}\n").as_bytes())
            .unwrap();
    }
    let files = stream_files(&t.dir, Stdout);
    assert_eq!(files.len(), 3, "{files:?}");
    for (_, path) in &files {
        let len = std::fs::metadata(path).unwrap().len();
        assert!(len <= 200, "{} has {len} bytes", path.display());
    }
    // What is left is the newest lines, in order, ending with the last one.
    let kept = text(history(&t.dir, Stdout, None, None));
    let lines: Vec<&str> = kept.lines().collect();
    assert!(lines.len() > 10 && lines.len() < 100, "{lines:?}");
    assert_eq!(lines.last(), Some(&"line 099"));
    let first: u64 = lines[0][5..].parse().unwrap();
    let expected: Vec<String> = (first..100).map(|i| format!("line {i:03}")).collect();
    assert_eq!(lines, expected);
    // A writer opened again (the task restarted) goes on in the newest file.
    let newest = files.last().unwrap().0;
    let mut again = LogWriter::open(&t, Stdout).unwrap();
    again.write(Timestamp(5_000), b"after restart\n").unwrap();
    assert_eq!(stream_files(&t.dir, Stdout).last().unwrap().0, newest);
    assert!(text(history(&t.dir, Stdout, None, Some(1))).contains("after restart"));
}

#[test]
fn a_follower_goes_on_across_rotations() {
    let dir = tempfile::tempdir().unwrap();
    let t = target(dir.path(), 2, 100);
    let mut f = Follower::new(&t.dir, Stdout);
    assert_eq!(f.poll(1 << 20), (vec![], true), "no files yet");
    let mut w = LogWriter::open(&t, Stdout).unwrap();
    let mut seen = String::new();
    for i in 0..50u64 {
        w.write(Timestamp(i), format!("n{i:02}\n").as_bytes())
            .unwrap();
        // Reading after every few lines keeps up with files rotated away behind it.
        if i % 3 == 0 {
            let (records, caught_up) = f.poll(1 << 20);
            assert!(caught_up);
            seen.push_str(&text(render(&records)));
        }
    }
    let (records, _) = f.poll(1 << 20);
    seen.push_str(&text(render(&records)));
    let expected: String = (0..50).map(|i| format!("n{i:02}\n")).collect();
    assert_eq!(seen, expected);
}

#[test]
fn very_long_lines_are_split_into_pieces_and_joined_back() {
    let dir = tempfile::tempdir().unwrap();
    let t = target(dir.path(), 5, 1 << 20);
    let mut w = LogWriter::open(&t, Stderr).unwrap();
    let long = "x".repeat(100_000);
    w.write(Timestamp(1), format!("{long}\nshort\n").as_bytes())
        .unwrap();
    assert_eq!(
        text(history(&t.dir, Stderr, None, Some(2))),
        format!("{long}\nshort\n")
    );
    assert_eq!(text(history(&t.dir, Stderr, None, Some(1))), "short\n");
}

#[test]
fn task_names_cannot_leave_the_allocation_directory() {
    assert_eq!(dir_name("web-1_a"), "web-1_a");
    assert_eq!(dir_name(".."), "%2E%2E");
    assert_eq!(dir_name("a/b"), "a%2Fb");
    assert_eq!(dir_name(""), "%");
    let root = LogRoot::new(std::path::Path::new("/data"), LogPolicy::default());
    assert_eq!(
        root.task_dir(AllocId(3), "../x"),
        std::path::Path::new("/data/alloc-logs/AL3/%2E%2E%2Fx")
    );
}

#[test]
fn ended_allocations_logs_go_after_the_retention_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut root = LogRoot::new(dir.path(), LogPolicy::default());
    for alloc in [AllocId(1), AllocId(2)] {
        let mut w = LogWriter::open(&root.target(alloc, "t"), Stdout).unwrap();
        w.write(Timestamp::now(), b"hi\n").unwrap();
    }
    // Freshly written: kept, held or not.
    assert_eq!(root.sweep(|a| a == AllocId(1)), 0);
    // Past the retention: only the one no longer held goes.
    root.policy.retention = Duration::ZERO;
    assert_eq!(root.sweep(|a| a == AllocId(1)), 1);
    assert!(root.alloc_dir(AllocId(1)).exists());
    assert!(!root.alloc_dir(AllocId(2)).exists());
}

#[test]
fn a_tail_reads_only_the_newest_files_and_cuts_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let t = target(dir.path(), 10, 300);
    let mut w = LogWriter::open(&t, Stdout).unwrap();
    // Lines of 60 bytes, the last few written in pieces across a rotation.
    for i in 0..60u64 {
        w.write(
            Timestamp(i),
            format!("{i:03} {}\n", "y".repeat(40)).as_bytes(),
        )
        .unwrap();
    }
    w.write(Timestamp(100), "z".repeat(200).as_bytes()).unwrap();
    w.write(
        Timestamp(101),
        format!("{}\nlast\n", "z".repeat(200)).as_bytes(),
    )
    .unwrap();
    let files = stream_files(&t.dir, Stdout);
    assert!(files.len() >= 5, "{files:?}");
    let all = text(history(&t.dir, Stdout, None, None));
    let lines: Vec<&str> = all.split_inclusive('\n').collect();
    for n in [0, 1, 2, 3, 5, 8, 13, lines.len(), lines.len() + 5] {
        let expected: String = lines[lines.len().saturating_sub(n)..].concat();
        assert_eq!(
            text(history(&t.dir, Stdout, None, Some(n))),
            expected,
            "tail {n}"
        );
    }
    // A short tail starts late: not at the oldest file.
    let f = Follower::for_cut(&t.dir, Stdout, None, Some(1));
    assert!(f.from > files[0].0, "{}", f.from);
}
