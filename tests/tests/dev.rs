//! `windflow dev` as a new user runs it: no `--data-dir`, so a temporary one. Stopping it
//! must not leave the tasks of its agent running (an agent on a kept data dir leaves them
//! running, to take them back when it starts again; a temporary one is never started again).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use windflow_tests::{free_tcp_addr, free_udp_addr, process_is_dead, wait_for, windflow_bin};

fn cli(home: &Path, args: &[&str]) -> String {
    let out = Command::new(windflow_bin())
        .args(args)
        .env("HOME", home)
        .env_remove("WINDFLOW_ADDR")
        .env_remove("WINDFLOW_TOKEN")
        .stdin(Stdio::null())
        .output()
        .expect("running the windflow CLI");
    assert!(
        out.status.success(),
        "windflow {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn stopping_dev_on_a_temporary_data_dir_stops_its_tasks() {
    let home = tempfile::tempdir().unwrap();
    let pids = home.path().join("pids");
    std::fs::create_dir(&pids).unwrap();
    let log = std::fs::File::create(home.path().join("dev.log")).unwrap();
    let mut dev = Command::new(windflow_bin())
        .arg("dev")
        .args(["--http-addr", &free_tcp_addr().to_string()])
        .args(["--quic-addr", &free_udp_addr().to_string()])
        .env("HOME", home.path())
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    // `windflow dev` writes the CLI's config once it serves.
    let config = home.path().join(".windflow").join("config");
    wait_for(
        "windflow dev to write the CLI config",
        Duration::from_secs(60),
        || config.exists().then_some(()),
    )
    .unwrap();
    let command = format!(
        "echo $$ > {}/$WINDFLOW_ALLOC_ID.pid; exec sleep 1000",
        pids.display()
    );
    wait_for("the job to be created", Duration::from_secs(30), || {
        let out = Command::new(windflow_bin())
            .args([
                "job", "create", "web", "--cmd", &command, "--type", "service",
            ])
            .args(["--count", "2", "--cpu", "10", "--memory", "16"])
            .env("HOME", home.path())
            .env_remove("WINDFLOW_ADDR")
            .env_remove("WINDFLOW_TOKEN")
            .output()
            .ok()?;
        out.status.success().then_some(())
    })
    .unwrap();
    let running: Vec<u32> = wait_for("both tasks to start", Duration::from_secs(30), || {
        let found: Vec<u32> = std::fs::read_dir(&pids)
            .ok()?
            .flatten()
            .filter_map(|f| std::fs::read_to_string(f.path()).ok()?.trim().parse().ok())
            .collect();
        (found.len() == 2).then_some(found)
    })
    .unwrap();
    assert!(cli(home.path(), &["alloc", "list", "--job", "web"]).contains("running"));
    assert!(running.iter().all(|pid| !process_is_dead(*pid)));

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(dev.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = wait_for("windflow dev to exit", Duration::from_secs(30), || {
        dev.try_wait().ok().flatten()
    })
    .unwrap();
    assert!(status.success(), "windflow dev exited with {status}");
    wait_for("the tasks to be stopped", Duration::from_secs(30), || {
        running
            .iter()
            .all(|pid| process_is_dead(*pid))
            .then_some(())
    })
    .unwrap();
}
