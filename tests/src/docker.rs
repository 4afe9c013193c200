//! The real Docker Engine of this machine, for the docker driver's suites: a test image
//! made with `docker import` from Debian's static busybox (no registry is reachable), and
//! the removal of the containers a test's agents leave (by their `windflow.agent` label).

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};

use serde_json::Value;

/// The test image: busybox as `sh`, `httpd`, `nc`, `sleep`, `echo`…, and `/www/index.html`.
pub const IMAGE: &str = "windflow-test/busybox:1";
/// What `/www/index.html` of [`IMAGE`] says.
pub const INDEX_HTML: &str = "hello from windflow's busybox\n";
const BUSYBOX: &str = "/bin/busybox";
const APPLETS: &[&str] = &[
    "sh", "httpd", "nc", "sleep", "echo", "cat", "ls", "env", "kill", "wget", "true", "false",
];

/// Runs `docker ARGS`.
pub fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run `docker {}`: {e}", args.join(" ")))
}

/// `docker ARGS`, which must succeed; its stdout.
pub fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "`docker {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Fails the test, clearly, when the engine is not usable here: these suites never skip.
pub fn require_engine() {
    let out = Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .output();
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "the docker suites need a running Docker Engine: `docker version` says {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => panic!("the docker suites need the docker CLI and a running engine: {e}"),
    }
}

/// Makes [`IMAGE`] once (per test process) unless the engine has it.
pub fn image() -> &'static str {
    static MADE: OnceLock<()> = OnceLock::new();
    MADE.get_or_init(|| {
        require_engine();
        if docker(&["image", "inspect", IMAGE]).status.success() {
            return;
        }
        assert!(
            Path::new(BUSYBOX).exists(),
            "{BUSYBOX} is missing: apt-get install busybox-static (.ci/run does)"
        );
        let root = tempfile::tempdir().unwrap();
        let bin = root.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::copy(BUSYBOX, bin.join("busybox")).unwrap();
        for applet in APPLETS {
            std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
        }
        for dir in ["www", "tmp", "data"] {
            std::fs::create_dir_all(root.path().join(dir)).unwrap();
        }
        std::fs::write(root.path().join("www/index.html"), INDEX_HTML).unwrap();
        let tar = root.path().join("rootfs.tar");
        let status = Command::new("tar")
            .arg("-C")
            .arg(root.path())
            .arg("-cf")
            .arg(&tar)
            .args(["bin", "www", "tmp", "data"])
            .status()
            .unwrap();
        assert!(status.success(), "tar of the image's root failed");
        let out = Command::new("docker")
            .arg("import")
            .arg(&tar)
            .arg(IMAGE)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "docker import failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
    IMAGE
}

/// The IDs of the containers of agent `agent` (its node's `driver.docker.agent`), running
/// or not.
pub fn containers_of(agent: &str) -> Vec<String> {
    let filter = format!("label=windflow.agent={agent}");
    docker_ok(&["ps", "-aq", "--no-trunc", "--filter", &filter])
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The running containers of allocation `alloc`, by agent.
pub fn running_of_alloc(agent: &str, alloc: &str) -> Vec<String> {
    let a = format!("label=windflow.agent={agent}");
    let b = format!("label=windflow.alloc={alloc}");
    docker_ok(&["ps", "-q", "--no-trunc", "--filter", &a, "--filter", &b])
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Removes, when dropped, every container of the agents it was told of. Declare it before
/// the fleet, so that the fleet's agents are gone (and restart nothing) by then.
#[derive(Default)]
pub struct Cleanup {
    agents: Mutex<Vec<String>>,
}

impl Cleanup {
    /// Every node's `driver.docker.agent` from `GET /v1/nodes`; nodes without docker fail
    /// the test.
    pub fn watch_nodes(&self, nodes: &[Value]) -> Vec<String> {
        let ids: Vec<String> = nodes
            .iter()
            .map(|n| {
                n["attributes"]["driver.docker.agent"]
                    .as_str()
                    .unwrap_or_else(|| panic!("node without the docker driver: {n}"))
                    .to_owned()
            })
            .collect();
        self.agents
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(ids.iter().cloned());
        ids
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let agents = self.agents.lock().unwrap_or_else(|p| p.into_inner());
        for agent in agents.iter() {
            let ids = containers_of(agent);
            if !ids.is_empty() {
                let mut args = vec!["rm", "-f"];
                args.extend(ids.iter().map(String::as_str));
                let _ = docker(&args);
            }
        }
    }
}
