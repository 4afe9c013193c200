//! Compose stacks on the real Docker Engine (skipped, saying why, when no engine answers):
//! `web` (busybox httpd, slow to start, with a health check) and `client` (depends on web
//! being healthy, fetches `http://web:8080/` by service name): the client's container
//! starts only once web is healthy and prints web's page; `stack rm` removes the
//! containers and their network. A file with `build:` and `networks:` is refused naming
//! both. A template's generated password is stored sealed and shown once.

use std::process::Command;

use serde_json::{Value, json};
use windflow_protocol::Timestamp;
use windflow_tests::docker::{self, Cleanup, INDEX_HTML};
use windflow_tests::fleet::{Fleet, PATIENT};
use windflow_tests::{stderr, stdout};

/// Whether the engine answers; when not, says so (the test then does nothing).
fn engine_answers(test: &str) -> bool {
    match Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .output()
    {
        Ok(o) if o.status.success() => true,
        Ok(o) => {
            eprintln!(
                "skipping {test}: no Docker Engine answers: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            );
            false
        }
        Err(e) => {
            eprintln!("skipping {test}: no docker CLI: {e}");
            false
        }
    }
}

/// The containers of `agent` for compose service `service`, running or not.
fn containers_of_service(agent: &str, service: &str) -> Vec<String> {
    let a = format!("label=windflow.agent={agent}");
    let s = format!("label=com.docker.compose.service={service}");
    docker::docker_ok(&["ps", "-aq", "--no-trunc", "--filter", &a, "--filter", &s])
        .lines()
        .map(str::to_owned)
        .collect()
}

fn inspect(id: &str, format: &str) -> String {
    docker::docker_ok(&["inspect", "-f", format, id])
}

/// The networks `agent` made.
fn networks_of(agent: &str) -> Vec<String> {
    let a = format!("label=windflow.agent={agent}");
    docker::docker_ok(&["network", "ls", "-q", "--filter", &a])
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Removes the agents' networks when dropped. Declare it first: it then goes after the
/// fleet (whose agents could make them again) and the containers' cleanup.
#[derive(Default)]
struct NetworkCleanup(std::sync::Mutex<Vec<String>>);

impl NetworkCleanup {
    fn watch(&self, agents: &[String]) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(agents.iter().cloned());
    }
}

impl Drop for NetworkCleanup {
    fn drop(&mut self) {
        let agents = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for agent in agents.iter() {
            for n in networks_of(agent) {
                let _ = docker::docker(&["network", "rm", &n]);
            }
        }
    }
}

const COMPOSE: &str = r#"
name: shop
services:
  web:
    image: windflow-test/busybox:1
    # Slow to come up: healthy no sooner than 3 s after its start.
    command: ["sh", "-c", "sleep 3; exec httpd -f -p ${WEB_PORT:-8080} -h /www"]
    healthcheck:
      test: ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/"]
      interval: 1s
      timeout: 2s
      retries: 30
    restart: always
    deploy:
      replicas: 2
      resources:
        limits: {memory: 32M}
  client:
    image: windflow-test/busybox:1
    command: sh -c 'echo "$$GREETING"; wget -q -O- http://web:8080/ && echo FETCHED-BY-NAME; exec sleep 3600'
    env_file: client.env
    depends_on:
      web:
        condition: service_healthy
    restart: always
    deploy:
      resources:
        limits: {memory: 32M}
"#;

#[test]
fn a_client_starts_after_web_is_healthy_and_reaches_it_by_name() {
    if !engine_answers("a_client_starts_after_web_is_healthy_and_reaches_it_by_name") {
        return;
    }
    docker::image();
    let networks = NetworkCleanup::default();
    let cleanup = Cleanup::default();
    let f = Fleet::start(1, PATIENT);
    let agents = cleanup.watch_nodes(&f.nodes());
    networks.watch(&agents);
    let agent = &agents[0];
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("docker-compose.yml");
    std::fs::write(&file, COMPOSE).unwrap();
    std::fs::write(
        dir.path().join("client.env"),
        "GREETING=hello-from-env-file\n",
    )
    .unwrap();

    let out = f.cli(&["stack", "deploy", "shop", "-f", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).contains("Created stack shop"),
        "{}",
        stdout(&out)
    );

    // Two web replicas start together, on the one network the agent made for the stack.
    let webs = f.wait("web's two containers", |_| {
        let ids = containers_of_service(agent, "web");
        (ids.len() == 2).then_some(ids)
    });
    let client = f.wait("the client's container", |_| {
        containers_of_service(agent, "client").into_iter().next()
    });
    let healthy: Vec<String> = webs
        .iter()
        .map(|w| inspect(w, "{{.State.Health.Status}}"))
        .collect();
    assert!(healthy.iter().any(|h| h == "healthy"), "{healthy:?}");
    let started = |id: &str| {
        let t = inspect(id, "{{.State.StartedAt}}");
        Timestamp::parse_rfc3339(&t).unwrap_or_else(|e| panic!("{t}: {e}"))
    };
    let web_at = webs.iter().map(|w| started(w)).min().unwrap();
    let client_at = started(&client);
    assert!(
        client_at.0 >= web_at.0 + 3_000,
        "the client started {} ms after web, before web could be healthy",
        client_at.0 as i64 - web_at.0 as i64
    );
    let logs = f.wait("the client's output", |_| {
        let out = docker::docker(&["logs", &client]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.contains("FETCHED-BY-NAME").then_some(text)
    });
    assert!(logs.contains(INDEX_HTML.trim()), "{logs}");
    assert!(logs.contains("hello-from-env-file"), "{logs}");

    // The wait is told in the client's allocation events; the stack shows both running.
    let stack = f.get("/v1/stacks/shop");
    let job = stack["job"].as_str().unwrap().to_owned();
    let client_alloc = f
        .allocs(&job)
        .into_iter()
        .find(|a| a["group"] == "client")
        .unwrap();
    let events = client_alloc["events"].to_string();
    assert!(events.contains("waiting for web to be healthy"), "{events}");
    f.wait("both services running and healthy", |f| {
        let s = f.get("/v1/stacks/shop");
        let services = s["services"].as_array().cloned().unwrap_or_default();
        services
            .iter()
            .all(|v| {
                v["running"] == v["replicas"] && v["healthy"] == v["running"]
                    || v["name"] == "client" && v["running"] == 1
            })
            .then_some(())
    });
    // The same file again changes nothing; a changed env file is the next version.
    let out = f.cli(&["stack", "deploy", "shop", "-f", file.to_str().unwrap()]);
    assert!(
        stdout(&out).contains("Unchanged: stack shop"),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    std::fs::write(dir.path().join("client.env"), "GREETING=second-version\n").unwrap();
    let out = f.cli(&[
        "-o",
        "json",
        "stack",
        "deploy",
        "shop",
        "-f",
        file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let answer: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(answer["changed"], true, "{answer}");
    assert_eq!(answer["stack"]["version"], 2, "{answer}");
    assert!(answer["deployment"]["id"].is_string(), "{answer}");
    let listed = f.cli(&["stack", "list"]);
    assert!(stdout(&listed).contains("shop"), "{}", stdout(&listed));
    assert_eq!(networks_of(agent).len(), 1);

    let out = f.cli(&["stack", "rm", "shop"]);
    assert!(out.status.success(), "{}", stderr(&out));
    f.wait("the stack's containers removed", |_| {
        docker::containers_of(agent).is_empty().then_some(())
    });
    f.wait("the stack's network removed", |_| {
        networks_of(agent).is_empty().then_some(())
    });
    let (status, _) = f.call("GET", "/v1/stacks/shop", None);
    assert_eq!(status, 404);
}

#[test]
fn a_file_with_build_and_networks_is_refused_naming_both() {
    let f = Fleet::start(1, PATIENT);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("docker-compose.yml");
    std::fs::write(
        &file,
        "services:\n  web:\n    image: nginx\n    build: .\n  db:\n    image: postgres\n    networks: [back]\n",
    )
    .unwrap();
    let out = f.cli(&["stack", "deploy", "bad", "-f", file.to_str().unwrap()]);
    assert!(!out.status.success(), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(err.contains("services.web.build"), "{err}");
    assert!(err.contains("services.db.networks"), "{err}");
    let (status, answer) = f.call(
        "POST",
        "/v1/stacks",
        Some(json!({"name": "bad", "compose": "services:\n  a: {image: x, container_name: y}\n"})),
    );
    assert_eq!(status, 400, "{answer}");
    assert_eq!(
        answer["error"]["code"], "unsupported_compose_keys",
        "{answer}"
    );
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("services.a.container_name"),
        "{answer}"
    );
    // Nothing was made.
    assert_eq!(f.get("/v1/stacks"), json!([]));
    assert_eq!(f.get("/v1/jobs"), json!([]));
}

#[test]
fn a_templates_password_is_stored_sealed_and_shown_once() {
    if !engine_answers("a_templates_password_is_stored_sealed_and_shown_once") {
        return;
    }
    docker::image();
    let networks = NetworkCleanup::default();
    let cleanup = Cleanup::default();
    let f = Fleet::start(1, PATIENT);
    networks.watch(&cleanup.watch_nodes(&f.nodes()));
    let (status, answer) = f.call(
        "POST",
        "/v1/templates/postgres/deploy",
        Some(json!({"name": "pg", "set": {"COLOUR": "red"}})),
    );
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("COLOUR"),
        "{answer}"
    );

    let out = f.cli(&[
        "template",
        "deploy",
        "postgres",
        "--name",
        "pg",
        "--set",
        "PORT=15432",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let shown = stdout(&out);
    let password = shown
        .lines()
        .find_map(|l| l.trim().strip_prefix("POSTGRES_PASSWORD="))
        .unwrap_or_else(|| panic!("no password shown: {shown}"))
        .to_owned();
    assert_eq!(password.len(), 24, "{shown}");

    let stack: Value = f.get("/v1/stacks/pg");
    let job = f.get(&format!("/v1/jobs/{}", stack["job"].as_str().unwrap()));
    for seen in [stack.to_string(), job.to_string()] {
        assert!(
            !seen.contains(&password),
            "the password is in plain sight: {seen}"
        );
    }
    let task = &job["spec"]["groups"][0]["tasks"][0];
    assert_eq!(
        task["secret_env"]["POSTGRES_PASSWORD"]["redacted"], true,
        "{task}"
    );
    assert!(task["env"].get("POSTGRES_PASSWORD").is_none(), "{task}");
    assert_eq!(task["env"]["POSTGRES_USER"], "app", "{task}");
    let ports = task["driver"]["docker"]["ports"].to_string();
    assert!(ports.contains("15432"), "{ports}");
    // Shown once: a second deploy of the template is refused, and shows nothing.
    let again = f.cli(&["template", "deploy", "postgres", "--name", "pg"]);
    assert!(!again.status.success());
    assert!(stderr(&again).contains("exists"), "{}", stderr(&again));
    assert!(!stdout(&again).contains("POSTGRES_PASSWORD="));
    // Redeployed from the template's file with the values in the environment: the same
    // ones change nothing; a new password is the next version, and stays sealed.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pg.yml");
    let template = f.get("/v1/templates/postgres");
    std::fs::write(&file, template["compose"].as_str().unwrap()).unwrap();
    let redeploy = |pw: &str| {
        Command::new(windflow_tests::windflow_bin())
            .args(["stack", "deploy", "pg", "-f", file.to_str().unwrap()])
            .env("HOME", f.cluster.root.path())
            .env(
                "WINDFLOW_ADDR",
                format!("http://{}", f.cluster.servers[0].http_addr),
            )
            .env("WINDFLOW_TOKEN", &f.admin)
            .envs([
                ("POSTGRES_USER", "app"),
                ("POSTGRES_DB", "app"),
                ("POSTGRES_PASSWORD", pw),
                ("PORT", "15432"),
                ("MEMORY", "512M"),
            ])
            .output()
            .unwrap()
    };
    let out = redeploy(&password);
    assert!(
        stdout(&out).contains("Unchanged: stack pg"),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let out = redeploy("a-new-password");
    assert!(
        stdout(&out).contains("Updated stack pg"),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let job = f.get(&format!("/v1/jobs/{}", stack["job"].as_str().unwrap()));
    assert_eq!(job["version"], 2, "{job}");
    assert!(!job.to_string().contains("a-new-password"), "{job}");
    let task = &job["spec"]["groups"][0]["tasks"][0];
    assert_eq!(
        task["secret_env"]["POSTGRES_PASSWORD"]["redacted"], true,
        "{task}"
    );
    let out = f.cli(&["template", "show", "postgres"]);
    assert!(
        stdout(&out).contains("POSTGRES_PASSWORD"),
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains("image: postgres:16"),
        "{}",
        stdout(&out)
    );
    let out = f.cli(&["stack", "rm", "pg"]);
    assert!(out.status.success(), "{}", stderr(&out));
}
