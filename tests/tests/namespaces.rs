//! Namespaces against `windflow dev` (one server, one agent): a token bound to one
//! namespace sees nothing of another (lists omit it, direct reads and writes get 404, not
//! 403), names are unique per namespace, and a namespace that holds jobs is not deleted.

use std::time::Duration;

use serde_json::{Value, json};
use windflow_tests::{DevServer, http_json, stderr, stdout, wait_for};

struct Api<'a> {
    dev: &'a DevServer,
}

impl Api<'_> {
    fn call(&self, token: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let body = body.map(|b| b.to_string());
        http_json(
            self.dev.http_addr,
            method,
            path,
            Some(token),
            body.as_deref(),
        )
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// A call that must succeed; its answer.
    fn ok(&self, token: &str, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, answer) = self.call(token, method, path, body);
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {answer}"
        );
        answer
    }

    fn status(&self, token: &str, method: &str, path: &str, body: Option<Value>) -> u16 {
        self.call(token, method, path, body).0
    }
}

fn names(list: &Value) -> Vec<String> {
    let mut names: Vec<String> = list
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|j| {
            format!(
                "{}/{}",
                j["spec"]["namespace"].as_str().unwrap_or("?"),
                j["spec"]["name"].as_str().unwrap_or("?")
            )
        })
        .collect();
    names.sort();
    names
}

#[test]
fn a_token_bound_to_a_namespace_sees_nothing_of_another() {
    let dev = DevServer::start().unwrap();
    let api = Api { dev: &dev };
    let admin = dev.token.clone();
    for ns in ["team-a", "team-b"] {
        api.ok(&admin, "POST", "/v1/namespaces", Some(json!({"name": ns})));
    }
    assert_eq!(
        api.status(
            &admin,
            "POST",
            "/v1/namespaces",
            Some(json!({"name": "Team A"}))
        ),
        400
    );
    // Amy logs in as a writer of team-a; team-b has a CI token of its own.
    api.ok(
        &admin,
        "POST",
        "/v1/users",
        Some(json!({"name": "amy", "password": "amy-password", "role": "writer", "namespace": "team-a"})),
    );
    let amy = api.ok(
        "",
        "POST",
        "/v1/login",
        Some(json!({"user": "amy", "password": "amy-password"})),
    )["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let b_ci = api.ok(
        &admin,
        "POST",
        "/v1/tokens",
        Some(json!({"name": "b-ci", "role": "writer", "namespace": "team-b"})),
    )["token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        api.ok(&amy, "GET", "/v1/whoami", None)["namespace"],
        "team-a"
    );

    // The same name in three namespaces: each job lands where its creator may work.
    let job = |name: &str| json!({"name": name, "command": format!("echo {name}")});
    let default_job = api.ok(&admin, "POST", "/v1/jobs", Some(job("report")));
    let a_job = api.ok(&amy, "POST", "/v1/jobs", Some(job("report")));
    let b_job = api.ok(&b_ci, "POST", "/v1/jobs", Some(job("report")));
    assert_eq!(default_job["spec"]["namespace"], "default");
    assert_eq!(a_job["spec"]["namespace"], "team-a");
    assert_eq!(b_job["spec"]["namespace"], "team-b");
    assert_eq!(
        api.status(&amy, "POST", "/v1/jobs", Some(job("report"))),
        409
    );

    // Lists omit the others.
    assert_eq!(
        names(&api.ok(&amy, "GET", "/v1/jobs", None)),
        ["team-a/report"]
    );
    assert_eq!(
        names(&api.ok(&b_ci, "GET", "/v1/jobs", None)),
        ["team-b/report"]
    );
    assert_eq!(
        names(&api.ok(&admin, "GET", "/v1/jobs", None)),
        ["default/report", "team-a/report", "team-b/report"]
    );
    assert_eq!(
        names(&api.ok(&admin, "GET", "/v1/jobs?namespace=team-b", None)),
        ["team-b/report"]
    );
    let visible = api.ok(&amy, "GET", "/v1/namespaces", None);
    let visible: Vec<&str> = visible
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["name"].as_str())
        .collect();
    assert_eq!(visible, ["team-a"]);

    // Names resolve in the caller's namespace.
    assert_eq!(
        api.ok(&amy, "GET", "/v1/jobs/report", None)["id"],
        a_job["id"]
    );
    assert_eq!(
        api.ok(&admin, "GET", "/v1/jobs/report", None)["id"],
        default_job["id"]
    );
    assert_eq!(
        api.ok(&admin, "GET", "/v1/jobs/report?namespace=team-a", None)["id"],
        a_job["id"]
    );

    // A run in default, finished by the agent, with a context.
    let d = default_job["id"].as_str().unwrap();
    let run = api.ok(&admin, "POST", &format!("/v1/jobs/{d}/run"), None);
    let run_id = run["id"].as_str().unwrap();
    let finished = wait_for("the default run to end", Duration::from_secs(30), || {
        let r = api.ok(&admin, "GET", &format!("/v1/runs/{run_id}"), None);
        (r["status"] == "succeeded").then_some(r)
    })
    .unwrap();
    assert_eq!(finished["namespace"], "default");

    // Everything of default is 404 to amy, by ID, by name, and by naming the namespace.
    let b = b_job["id"].as_str().unwrap();
    for (method, path, body) in [
        ("GET", format!("/v1/jobs/{d}"), None),
        ("GET", format!("/v1/jobs/{b}"), None),
        ("DELETE", format!("/v1/jobs/{d}"), None),
        ("POST", format!("/v1/jobs/{d}/run"), None),
        ("GET", format!("/v1/jobs/{d}/runs"), None),
        ("GET", format!("/v1/runs/{run_id}"), None),
        ("GET", format!("/v1/runs/{run_id}/output"), None),
        ("GET", format!("/v1/contexts/CJ{}", &d[1..]), None),
        ("GET", "/v1/jobs?namespace=default".into(), None),
        ("GET", "/v1/jobs/report?namespace=team-b".into(), None),
        ("GET", "/v1/namespaces/team-b".into(), None),
        ("GET", "/v1/namespaces/nowhere".into(), None),
        (
            "POST",
            "/v1/jobs".into(),
            Some(json!({"name": "sneak", "command": "true", "namespace": "default"})),
        ),
    ] {
        let (status, answer) = api.call(&amy, method, &path, body);
        assert_eq!(status, 404, "{method} {path} as amy: {answer}");
    }
    // The same calls as the admin find what is there.
    assert_eq!(
        api.status(&admin, "GET", &format!("/v1/jobs/{b}"), None),
        200
    );
    assert_eq!(
        api.ok(&admin, "GET", &format!("/v1/contexts/CJ{}", &d[1..]), None)["value"],
        "report\n"
    );
    // Cluster-wide routes are refused to a bound token whatever its role.
    assert_eq!(api.status(&amy, "GET", "/v1/nodes", None), 403);
    assert_eq!(api.status(&amy, "GET", "/v1/cluster/members", None), 403);
    // The job amy could not delete is still there.
    assert_eq!(
        api.status(&admin, "GET", &format!("/v1/jobs/{d}"), None),
        200
    );

    // The CLI works in the namespace it is given.
    let out = dev.cli(&["--namespace", "team-b", "--output", "json", "job", "list"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let listed: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(names(&listed), ["team-b/report"]);
    let out = dev.cli(&["namespace", "list"]);
    assert!(out.status.success(), "{}", stderr(&out));
    for ns in ["default", "team-a", "team-b"] {
        assert!(stdout(&out).contains(ns), "{}", stdout(&out));
    }

    // A namespace with jobs stays; once empty it goes, and the CLI says why it stayed.
    let out = dev.cli(&["namespace", "delete", "team-a"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("still holds 1 job"),
        "{}",
        stderr(&out)
    );
    let a = a_job["id"].as_str().unwrap();
    api.ok(&amy, "DELETE", &format!("/v1/jobs/{a}"), None);
    let out = dev.cli(&["namespace", "delete", "team-a"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        api.status(&admin, "GET", "/v1/namespaces/team-a", None),
        404
    );
    assert_eq!(
        api.status(&admin, "DELETE", "/v1/namespaces/default", None),
        409
    );
}
