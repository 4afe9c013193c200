//! Users, roles, tokens and the audit log against a real server process.
//!
//! The first test walks every `/v1` route with no token, an expired token, a reader, a
//! writer, an admin and a writer bound to another namespace, and checks each status; its
//! expectation table must match the
//! server's declared route table exactly, so a new route without a permission (or without
//! a row here) fails it. Routes added outside the declaring builder answer 500 for
//! everyone (`api::access::guard` fails closed).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use windflow_control::api::access::Access;
use windflow_protocol::Role;
use windflow_tests::cluster::Cluster;
use windflow_tests::{HttpAnswer, http_request, wait_for};

/// Who may call a route, as this test expects it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Public,
    Authenticated,
    /// Any caller for themselves, a cluster-wide admin for anyone (the path names someone
    /// else).
    SelfOrAdmin,
    /// Work inside a namespace, with at least this role.
    Role(Role),
    /// The whole cluster: at least this role, and not bound to a namespace.
    Cluster(Role),
}

use Expect::*;
const R: Expect = Role(windflow_protocol::Role::Reader);
const W: Expect = Role(windflow_protocol::Role::Writer);
const CR: Expect = Cluster(windflow_protocol::Role::Reader);
const A: Expect = Cluster(windflow_protocol::Role::Admin);
/// An admin of the request's namespace (webhooks).
const NA: Expect = Role(windflow_protocol::Role::Admin);

/// Every `/v1` route (no fault injection), with a concrete path to call it with.
const ROUTES: &[(&str, &str, Expect, &str)] = &[
    ("POST", "/v1/login", Public, "/v1/login"),
    ("GET", "/v1/cluster/ca", Public, "/v1/cluster/ca"),
    ("POST", "/v1/logout", Authenticated, "/v1/logout"),
    ("GET", "/v1/whoami", Authenticated, "/v1/whoami"),
    ("GET", "/v1/jobs", R, "/v1/jobs"),
    ("POST", "/v1/jobs", W, "/v1/jobs"),
    ("GET", "/v1/jobs/{id}", R, "/v1/jobs/J999999"),
    ("DELETE", "/v1/jobs/{id}", W, "/v1/jobs/J999999"),
    ("POST", "/v1/jobs/{id}/run", W, "/v1/jobs/J999999/run"),
    ("GET", "/v1/jobs/{id}/runs", R, "/v1/jobs/J999999/runs"),
    // Compose stacks and the template catalog (issue 6).
    ("GET", "/v1/stacks", R, "/v1/stacks"),
    ("POST", "/v1/stacks", W, "/v1/stacks"),
    ("GET", "/v1/stacks/{name}", R, "/v1/stacks/nope"),
    ("DELETE", "/v1/stacks/{name}", W, "/v1/stacks/nope"),
    ("GET", "/v1/templates", R, "/v1/templates"),
    ("GET", "/v1/templates/{name}", R, "/v1/templates/nope"),
    (
        "POST",
        "/v1/templates/{name}/deploy",
        W,
        "/v1/templates/nope/deploy",
    ),
    // Job versions, scaling and deployments.
    ("PUT", "/v1/jobs/{id}", W, "/v1/jobs/J999999"),
    ("POST", "/v1/jobs/{id}/scale", W, "/v1/jobs/J999999/scale"),
    (
        "GET",
        "/v1/jobs/{id}/versions",
        R,
        "/v1/jobs/J999999/versions",
    ),
    ("GET", "/v1/deployments", R, "/v1/deployments"),
    ("GET", "/v1/deployments/{id}", R, "/v1/deployments/D999999"),
    (
        "POST",
        "/v1/deployments/{id}/fail",
        W,
        "/v1/deployments/D999999/fail",
    ),
    (
        "POST",
        "/v1/deployments/{id}/promote",
        W,
        "/v1/deployments/D999999/promote",
    ),
    (
        "GET",
        "/v1/jobs/{id}/evaluations",
        R,
        "/v1/jobs/J999999/evaluations",
    ),
    ("GET", "/v1/allocations", R, "/v1/allocations"),
    ("GET", "/v1/schedules", R, "/v1/schedules"),
    ("POST", "/v1/schedules", W, "/v1/schedules"),
    ("GET", "/v1/schedules/{id}", R, "/v1/schedules/S999999"),
    ("DELETE", "/v1/schedules/{id}", W, "/v1/schedules/S999999"),
    (
        "POST",
        "/v1/schedules/{id}/enable",
        W,
        "/v1/schedules/S999999/enable",
    ),
    (
        "POST",
        "/v1/schedules/{id}/disable",
        W,
        "/v1/schedules/S999999/disable",
    ),
    (
        "GET",
        "/v1/schedules/{id}/next",
        R,
        "/v1/schedules/S999999/next",
    ),
    (
        "GET",
        "/v1/schedules/{id}/fires",
        R,
        "/v1/schedules/S999999/fires",
    ),
    ("GET", "/v1/webhooks", R, "/v1/webhooks"),
    ("POST", "/v1/webhooks", NA, "/v1/webhooks"),
    ("GET", "/v1/webhooks/{id}", R, "/v1/webhooks/W999999"),
    ("DELETE", "/v1/webhooks/{id}", NA, "/v1/webhooks/W999999"),
    (
        "GET",
        "/v1/webhooks/{id}/deliveries",
        R,
        "/v1/webhooks/W999999/deliveries",
    ),
    ("GET", "/v1/allocations/{id}", R, "/v1/allocations/AL999999"),
    (
        "GET",
        "/v1/allocations/{id}/logs",
        R,
        "/v1/allocations/AL999999/logs",
    ),
    (
        "GET",
        "/v1/allocations/{id}/stats",
        R,
        "/v1/allocations/AL999999/stats",
    ),
    ("GET", "/v1/runs/{id}", R, "/v1/runs/R999999"),
    ("GET", "/v1/runs/{id}/output", R, "/v1/runs/R999999/output"),
    ("GET", "/v1/contexts/{id}", R, "/v1/contexts/CJ999999"),
    // Pipelines, contexts, job copies and run retention (issue 7).
    ("POST", "/v1/jobs/{id}/copy", W, "/v1/jobs/J999999/copy"),
    ("GET", "/v1/contexts", R, "/v1/contexts"),
    (
        "POST",
        "/v1/contexts/{id}/reset",
        W,
        "/v1/contexts/CJ999999/reset",
    ),
    ("GET", "/v1/pipelines", R, "/v1/pipelines"),
    ("POST", "/v1/pipelines", W, "/v1/pipelines"),
    ("GET", "/v1/pipelines/{id}", R, "/v1/pipelines/P999999"),
    ("DELETE", "/v1/pipelines/{id}", W, "/v1/pipelines/P999999"),
    (
        "POST",
        "/v1/pipelines/{id}/run",
        W,
        "/v1/pipelines/P999999/run",
    ),
    (
        "GET",
        "/v1/pipelines/{id}/runs",
        R,
        "/v1/pipelines/P999999/runs",
    ),
    (
        "GET",
        "/v1/pipeline-runs/{id}",
        R,
        "/v1/pipeline-runs/PR999999",
    ),
    (
        "POST",
        "/v1/pipeline-runs/{id}/retry",
        W,
        "/v1/pipeline-runs/PR999999/retry",
    ),
    ("GET", "/v1/run-retention", CR, "/v1/run-retention"),
    ("PUT", "/v1/run-retention", A, "/v1/run-retention"),
    ("GET", "/v1/namespaces", R, "/v1/namespaces"),
    ("POST", "/v1/namespaces", A, "/v1/namespaces"),
    ("GET", "/v1/namespaces/{name}", R, "/v1/namespaces/nowhere"),
    (
        "DELETE",
        "/v1/namespaces/{name}",
        A,
        "/v1/namespaces/nowhere",
    ),
    ("GET", "/v1/nodes", CR, "/v1/nodes"),
    ("GET", "/v1/nodes/{id}", CR, "/v1/nodes/N999999"),
    ("POST", "/v1/nodes/{id}/drain", A, "/v1/nodes/N999999/drain"),
    (
        "DELETE",
        "/v1/nodes/{id}/drain",
        A,
        "/v1/nodes/N999999/drain",
    ),
    (
        "PUT",
        "/v1/nodes/{id}/eligibility",
        A,
        "/v1/nodes/N999999/eligibility",
    ),
    (
        "POST",
        "/v1/nodes/{id}/revoke",
        A,
        "/v1/nodes/N999999/revoke",
    ),
    ("GET", "/v1/agent/tokens", A, "/v1/agent/tokens"),
    ("POST", "/v1/agent/tokens", A, "/v1/agent/tokens"),
    (
        "DELETE",
        "/v1/agent/tokens/{id}",
        A,
        "/v1/agent/tokens/JT999999",
    ),
    ("GET", "/v1/users", A, "/v1/users"),
    ("POST", "/v1/users", A, "/v1/users"),
    ("GET", "/v1/users/{name}", A, "/v1/users/nobody-here"),
    ("DELETE", "/v1/users/{name}", A, "/v1/users/nobody-here"),
    (
        "PUT",
        "/v1/users/{name}/password",
        SelfOrAdmin,
        "/v1/users/nobody-here/password",
    ),
    ("GET", "/v1/tokens", A, "/v1/tokens"),
    ("POST", "/v1/tokens", A, "/v1/tokens"),
    ("DELETE", "/v1/tokens/{id}", A, "/v1/tokens/T999999"),
    (
        "POST",
        "/v1/tokens/{id}/rotate",
        A,
        "/v1/tokens/T999999/rotate",
    ),
    ("GET", "/v1/audit", A, "/v1/audit"),
    ("POST", "/v1/secrets/rotate", A, "/v1/secrets/rotate"),
    (
        "POST",
        "/v1/secrets/drop-old-keys",
        A,
        "/v1/secrets/drop-old-keys",
    ),
    ("GET", "/v1/agent/log-level", A, "/v1/agent/log-level"),
    ("PUT", "/v1/agent/log-level", A, "/v1/agent/log-level"),
    ("GET", "/v1/cluster/members", CR, "/v1/cluster/members"),
    ("POST", "/v1/cluster/members", A, "/v1/cluster/members"),
    (
        "DELETE",
        "/v1/cluster/members/{name}",
        A,
        "/v1/cluster/members/nobody-here",
    ),
    ("GET", "/v1/cluster/tokens", A, "/v1/cluster/tokens"),
    ("POST", "/v1/cluster/tokens", A, "/v1/cluster/tokens"),
    (
        "DELETE",
        "/v1/cluster/tokens/{id}",
        A,
        "/v1/cluster/tokens/JT999999",
    ),
    ("GET", "/v1/cluster/snapshot", A, "/v1/cluster/snapshot"),
    ("POST", "/v1/cluster/restore", A, "/v1/cluster/restore"),
    // Export and import (issue 7).
    ("GET", "/v1/export", R, "/v1/export"),
    ("POST", "/v1/import", W, "/v1/import"),
];

/// A body that is well-formed JSON but invalid for every route that takes one, so that
/// allowed calls change nothing (they answer 400) and a denied call is told so first.
const BODY: &str = r#"{"no_such_field": true}"#;

struct Server<'a> {
    cluster: &'a Cluster,
}

impl Server<'_> {
    fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> HttpAnswer {
        http_request(self.cluster.servers[0].http_addr, method, path, token, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    fn admin(&self, method: &str, path: &str, body: Value) -> Value {
        let a = self.call(
            method,
            path,
            Some(&self.cluster.token()),
            Some(&body.to_string()),
        );
        assert!((200..300).contains(&a.status), "{method} {path}: {a:?}");
        a.json
    }

    fn create_user(&self, name: &str, role: &str) {
        self.admin(
            "POST",
            "/v1/users",
            json!({"name": name, "password": format!("{name}-password"), "role": role}),
        );
    }

    fn login(&self, name: &str) -> String {
        let body = json!({"user": name, "password": format!("{name}-password")}).to_string();
        let a = self.call("POST", "/v1/login", None, Some(&body));
        assert_eq!(a.status, 201, "{a:?}");
        a.json["token"].as_str().unwrap().to_owned()
    }
}

fn access_of(e: Expect) -> Access {
    match e {
        Public => Access::Public,
        Authenticated | SelfOrAdmin => Access::Authenticated,
        Role(r) => Access::Role(r),
        Cluster(r) => Access::Cluster(r),
    }
}

/// Whether a caller's token is bound to a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reach {
    WholeCluster,
    OtherNamespace,
}

/// The status a caller with `role` (`None`: no valid token) should get, or `None` for
/// "allowed": anything but 401 and 403.
fn expected(e: Expect, role: Option<Role>, reach: Reach) -> Option<u16> {
    let bound = reach == Reach::OtherNamespace;
    match (e, role) {
        (Public, _) => None,
        (_, None) => Some(401),
        (Authenticated, Some(_)) => None,
        (SelfOrAdmin, Some(r)) => (r < Role::Admin || bound).then_some(403),
        (Role(need), Some(r)) => (r < need).then_some(403),
        (Cluster(need), Some(r)) => (r < need || bound).then_some(403),
    }
}

#[test]
fn every_route_checks_its_role_and_every_mutating_call_is_audited_once() {
    // The expectation table is the declared table, route for route.
    let declared: BTreeSet<(String, String, String)> = windflow_control::api::route_table(false)
        .into_iter()
        .map(|d| (d.method.to_string(), d.path, format!("{:?}", d.access)))
        .collect();
    let expected_table: BTreeSet<(String, String, String)> = ROUTES
        .iter()
        .map(|(m, p, e, _)| (m.to_string(), p.to_string(), format!("{:?}", access_of(*e))))
        .collect();
    assert_eq!(
        declared.difference(&expected_table).collect::<Vec<_>>(),
        Vec::<&(String, String, String)>::new(),
        "routes declared by the server but missing from this test's table"
    );
    assert_eq!(
        expected_table.difference(&declared).collect::<Vec<_>>(),
        Vec::<&(String, String, String)>::new(),
        "rows of this test's table the server does not declare (or declares otherwise)"
    );

    let cluster = Cluster::start(1).unwrap();
    let s = Server { cluster: &cluster };
    s.create_user("rita", "reader");
    s.create_user("walt", "writer");
    s.create_user("ada", "admin");
    s.admin("POST", "/v1/namespaces", json!({"name": "other"}));
    s.admin(
        "POST",
        "/v1/users",
        json!({"name": "nina", "password": "nina-password", "role": "writer", "namespace": "other"}),
    );
    let expired = s.admin(
        "POST",
        "/v1/tokens",
        json!({"name": "short-lived", "role": "reader", "expires": "1s"}),
    )["token"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_for(
        "the short-lived token to expire",
        Duration::from_secs(10),
        || (s.call("GET", "/v1/whoami", Some(&expired), None).status == 401).then_some(()),
    )
    .unwrap();

    // (request ID, user, outcome) of every mutating call made below.
    let mut audited: Vec<(String, Option<String>, &str, String)> = Vec::new();
    use Reach::*;
    let callers: [(&str, Option<&str>, Option<Role>, Reach); 6] = [
        ("no token", None, None, WholeCluster),
        ("expired", Some("expired"), None, WholeCluster),
        ("reader", Some("rita"), Some(Role::Reader), WholeCluster),
        ("writer", Some("walt"), Some(Role::Writer), WholeCluster),
        ("admin", Some("ada"), Some(Role::Admin), WholeCluster),
        (
            "writer of another namespace",
            Some("nina"),
            Some(Role::Writer),
            OtherNamespace,
        ),
    ];
    for (method, route, expect, path) in ROUTES {
        for (who, user, role, reach) in callers {
            // A fresh session per call: logout revokes the token it is called with.
            let token = match user {
                None => None,
                Some("expired") => Some(expired.clone()),
                Some(u) => Some(s.login(u)),
            };
            let body = (*method != "GET").then_some(BODY);
            let a = s.call(method, path, token.as_deref(), body);
            let what = format!("{method} {route} as {who}: {} {}", a.status, a.json);
            match expected(*expect, role, reach) {
                Some(status) => assert_eq!(a.status, status, "{what}"),
                None => assert!(
                    a.status != 401 && a.status != 403 && a.status < 500,
                    "{what}"
                ),
            }
            if *method != "GET" {
                let outcome = match a.status {
                    401 | 403 => "denied",
                    200..=299 => "success",
                    _ => "failed",
                };
                // Login is audited as the user it names; this body names none.
                let user = match (*expect, role) {
                    (Public, _) | (_, None) => None,
                    _ => user.map(str::to_owned),
                };
                let id = a.header("x-request-id").expect("x-request-id").to_owned();
                audited.push((id, user, outcome, what));
            }
        }
    }

    let admin = cluster.token();
    let entries: Vec<Value> = wait_for("every audit entry", Duration::from_secs(30), || {
        let a = s.call("GET", "/v1/audit?limit=10000", Some(&admin), None);
        let entries = a.json.as_array()?.clone();
        audited
            .iter()
            .all(|(id, ..)| entries.iter().any(|e| e["request_id"] == id.as_str()))
            .then_some(entries)
    })
    .unwrap();
    for (id, user, outcome, what) in &audited {
        let matching: Vec<&Value> = entries
            .iter()
            .filter(|e| e["request_id"] == id.as_str())
            .collect();
        assert_eq!(matching.len(), 1, "{what}: {matching:?}");
        let e = matching[0];
        assert_eq!(e["outcome"], *outcome, "{what}: {e}");
        assert_eq!(e["user"].as_str(), user.as_deref(), "{what}: {e}");
        assert_eq!(e["source"], "127.0.0.1", "{what}: {e}");
    }
    // Reads are not audited.
    assert!(entries.iter().all(|e| e["action"] != "jobs.list"));
}

#[test]
fn ten_wrong_passwords_are_rate_limited_and_the_right_one_works_past_the_window() {
    let window = Duration::from_secs(3);
    let cluster = Cluster::start_with(1, &["--login-window", "3s"]).unwrap();
    let s = Server { cluster: &cluster };
    s.create_user("ann", "writer");
    let attempt = |password: &str| {
        let body = json!({"user": "ann", "password": password}).to_string();
        s.call("POST", "/v1/login", None, Some(&body))
    };
    let first_failure = Instant::now();
    let statuses: Vec<u16> = (0..10).map(|_| attempt("wrong-password").status).collect();
    assert_eq!(&statuses[..5], &[401; 5], "{statuses:?}");
    assert_eq!(&statuses[5..], &[429; 5], "{statuses:?}");
    let limited = attempt("ann-password");
    assert_eq!(limited.status, 429, "the right password inside the window");
    assert!(limited.header("retry-after").is_some(), "{limited:?}");
    let ok = wait_for("a login past the window", Duration::from_secs(20), || {
        let a = attempt("ann-password");
        assert!(a.status == 201 || a.status == 429, "{a:?}");
        (a.status == 201).then_some(a)
    })
    .unwrap();
    assert!(first_failure.elapsed() >= window);
    assert_eq!(ok.json["role"], "writer");
    // The failures, the refusals and the success are all in the audit log.
    let admin = cluster.token();
    let logins = wait_for("the login audit", Duration::from_secs(10), || {
        let a = s.call(
            "GET",
            "/v1/audit?action=login&user=ann&limit=100",
            Some(&admin),
            None,
        );
        let entries = a.json.as_array()?.clone();
        // Audit entries are proposed without holding up the answer: wait for the success.
        let succeeded = entries.iter().any(|e| e["outcome"] == "success");
        (entries.len() >= 12 && succeeded).then_some(entries)
    })
    .unwrap();
    let count = |o: &str| logins.iter().filter(|e| e["outcome"] == o).count();
    assert!(count("denied") >= 11 && count("success") >= 1, "{logins:?}");
}

#[test]
fn a_rotated_token_keeps_its_name_and_role_and_the_old_secret_stops_at_once() {
    let cluster = Cluster::start(1).unwrap();
    let s = Server { cluster: &cluster };
    let created = s.admin(
        "POST",
        "/v1/tokens",
        json!({"name": "ci", "role": "writer"}),
    );
    let old = created["token"].as_str().unwrap().to_owned();
    assert_eq!(s.call("GET", "/v1/whoami", Some(&old), None).status, 200);
    // Writers write, and cannot manage tokens.
    let job = json!({"name": "built-by-ci", "command": "true"}).to_string();
    assert_eq!(
        s.call("POST", "/v1/jobs", Some(&old), Some(&job)).status,
        201
    );
    assert_eq!(s.call("GET", "/v1/tokens", Some(&old), None).status, 403);

    let rotated = s.admin("POST", "/v1/tokens/ci/rotate", json!({}));
    let new = rotated["token"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    assert_eq!(
        (&rotated["id"], &rotated["name"], &rotated["role"]),
        (&created["id"], &created["name"], &created["role"])
    );
    // No wait: the rotation was acknowledged after it applied on this server.
    assert_eq!(s.call("GET", "/v1/whoami", Some(&old), None).status, 401);
    let me = s.call("GET", "/v1/whoami", Some(&new), None);
    assert_eq!(
        (me.status, &me.json["token_name"], &me.json["role"]),
        (200, &json!("ci"), &json!("writer"))
    );

    // Listing shows the prefix, never a secret.
    let list = s.admin("GET", "/v1/tokens", json!({}));
    let text = list.to_string();
    assert!(!text.contains(&new) && !text.contains(&old), "{text}");
    let ci = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "ci")
        .unwrap();
    assert!(new.starts_with(ci["prefix"].as_str().unwrap()), "{ci}");

    // Revoked: 401 at once; logout revokes a session the same way.
    s.admin("DELETE", "/v1/tokens/ci", json!({}));
    assert_eq!(s.call("GET", "/v1/whoami", Some(&new), None).status, 401);
    s.create_user("lou", "reader");
    let session = s.login("lou");
    assert_eq!(
        s.call("POST", "/v1/logout", Some(&session), None).status,
        200
    );
    assert_eq!(
        s.call("GET", "/v1/whoami", Some(&session), None).status,
        401
    );
}
