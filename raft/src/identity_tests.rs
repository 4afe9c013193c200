//! `apply`'s rules for users, tokens and the audit log, on a real sled tree.

use windflow_protocol::{JobSpec, Namespace, Role, TaskSpec, Timestamp, TokenKind};

use crate::apply_tests::Fixture;
use crate::command::{Applied, ApplyError, Command, NewToken};

fn token(name: &str, hash: &[u8], user: Option<&str>, role: Role) -> Command {
    Command::CreateToken(NewToken {
        name: name.into(),
        kind: TokenKind::Api,
        role,
        user: user.map(Into::into),
        namespace: None,
        hash: hash.to_vec(),
        prefix: "wf_x".into(),
        expires_at: None,
        at: Timestamp(1),
    })
}

fn user(name: &str, role: Role) -> Command {
    Command::CreateUser {
        name: name.into(),
        role,
        namespace: None,
        password_hash: "$argon2id$fake".into(),
        at: Timestamp(1),
    }
}

#[test]
fn tokens_are_found_by_hash_and_names_are_unique() {
    let f = Fixture::new();
    assert!(f.apply(token("admin", b"h1", None, Role::Admin)).is_ok());
    assert!(matches!(
        f.apply(token("admin", b"h2", None, Role::Admin)),
        Err(ApplyError::NameTaken { .. })
    ));
    assert_eq!(
        f.reader.token_by_hash(b"h1").unwrap().unwrap().view.name,
        "admin"
    );
    assert!(f.reader.token_by_hash(b"h2").unwrap().is_none());
    // Sessions are not named: many may share one.
    for hash in [b"s1", b"s2"] {
        let mut session = token("login ann", hash, None, Role::Reader);
        if let Command::CreateToken(t) = &mut session {
            t.kind = TokenKind::Session;
        }
        assert!(f.apply(session).is_ok());
    }
}

#[test]
fn a_rotated_token_keeps_its_name_and_only_the_new_secret_works() {
    let f = Fixture::new();
    let Ok(Applied::Token(t)) = f.apply(token("ci", b"old", None, Role::Writer)) else {
        panic!()
    };
    let Ok(Applied::Token(r)) = f.apply(Command::RotateToken {
        id: t.id,
        hash: b"new".to_vec(),
        prefix: "wf_n".into(),
        at: Timestamp(2),
    }) else {
        panic!()
    };
    assert_eq!((r.id, &r.name, r.role), (t.id, &t.name, t.role));
    assert_eq!(r.rotated_at, Some(Timestamp(2)));
    assert!(f.reader.token_by_hash(b"old").unwrap().is_none());
    assert_eq!(
        f.reader.token_by_hash(b"new").unwrap().unwrap().view.id,
        t.id
    );
    f.apply(Command::RevokeToken {
        id: t.id,
        at: Timestamp(3),
    })
    .unwrap();
    assert!(matches!(
        f.apply(Command::RotateToken {
            id: t.id,
            hash: b"newer".to_vec(),
            prefix: "wf_m".into(),
            at: Timestamp(4),
        }),
        Err(ApplyError::Refused(_))
    ));
}

#[test]
fn a_users_token_cannot_outrank_it_and_goes_with_it() {
    let f = Fixture::new();
    f.apply(user("ann", Role::Writer)).unwrap();
    assert!(matches!(
        f.apply(user("ann", Role::Reader)),
        Err(ApplyError::NameTaken { .. })
    ));
    assert!(matches!(
        f.apply(token("ann-admin", b"a0", Some("ann"), Role::Admin)),
        Err(ApplyError::Refused(_))
    ));
    assert!(matches!(
        f.apply(token("ghost", b"g", Some("nobody"), Role::Reader)),
        Err(ApplyError::NotFound { .. })
    ));
    f.apply(token("ann-ci", b"a1", Some("ann"), Role::Writer))
        .unwrap();
    f.apply(token("ann-ro", b"a2", Some("ann"), Role::Reader))
        .unwrap();
    f.apply(token("other", b"o1", None, Role::Reader)).unwrap();
    f.apply(Command::DeleteUser {
        name: "ann".into(),
        at: Timestamp(9),
    })
    .unwrap();
    assert!(f.reader.user_by_name("ann").unwrap().is_none());
    for hash in [b"a1", b"a2"] {
        let t = f.reader.token_by_hash(hash).unwrap().unwrap();
        assert_eq!(t.view.revoked_at, Some(Timestamp(9)), "{}", t.view.name);
    }
    let other = f.reader.token_by_hash(b"o1").unwrap().unwrap();
    assert_eq!(other.view.revoked_at, None);
}

#[test]
fn audit_entries_get_ids_and_prune_drops_the_old_ones() {
    let f = Fixture::new();
    for at in [10, 20, 30] {
        let entry = windflow_protocol::AuditEntry {
            id: windflow_protocol::AuditId(0),
            at: Timestamp(at),
            user: Some("ann".into()),
            token: None,
            source: "127.0.0.1".into(),
            action: "jobs.create".into(),
            resource: "/v1/jobs".into(),
            outcome: windflow_protocol::AuditOutcome::Success,
            status: 201,
            request_id: format!("r{at}"),
        };
        f.apply(Command::RecordAudit(entry)).unwrap();
    }
    let all = f.reader.audit(10, |_| true).unwrap();
    let ids: Vec<String> = all.iter().map(|e| e.id.to_string()).collect();
    assert_eq!(ids, ["A3", "A2", "A1"], "newest first");
    assert_eq!(
        f.apply(Command::PruneAudit {
            before: Timestamp(25)
        }),
        Ok(Applied::Pruned(2))
    );
    let left = f.reader.audit(10, |_| true).unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].request_id, "r30");
}

fn ns(name: &str) -> Namespace {
    Namespace::parse(name).unwrap()
}

fn job_in(namespace: &str, name: &str) -> Command {
    let mut spec = JobSpec::exec(name, TaskSpec::exec(name, "true"));
    spec.namespace = ns(namespace);
    Command::CreateJob {
        spec,
        at: Timestamp(1),
    }
}

#[test]
fn job_names_are_unique_per_namespace_and_a_namespace_with_jobs_stays() {
    let f = Fixture::new();
    assert!(matches!(
        f.apply(job_in("team-a", "backup")),
        Err(ApplyError::NotFound { .. })
    ));
    f.apply(Command::CreateNamespace {
        name: ns("team-a"),
        description: String::new(),
        at: Timestamp(1),
    })
    .unwrap();
    assert!(matches!(
        f.apply(Command::CreateNamespace {
            name: ns("team-a"),
            description: String::new(),
            at: Timestamp(2),
        }),
        Err(ApplyError::NameTaken { .. })
    ));
    let Ok(Applied::Job(a)) = f.apply(job_in("team-a", "backup")) else {
        panic!()
    };
    let Ok(Applied::Job(d)) = f.apply(job_in("default", "backup")) else {
        panic!()
    };
    assert!(matches!(
        f.apply(job_in("team-a", "backup")),
        Err(ApplyError::NameTaken { .. })
    ));
    assert_eq!(
        f.reader
            .job_by_name(&ns("team-a"), "backup")
            .unwrap()
            .unwrap()
            .id,
        a.id
    );
    assert_eq!(
        f.reader
            .job_by_name(&ns("default"), "backup")
            .unwrap()
            .unwrap()
            .id,
        d.id
    );
    let Ok(Applied::Run(run)) = f.apply(Command::CreateRun {
        job: a.id,
        at: Timestamp(3),
    }) else {
        panic!()
    };
    assert_eq!(run.namespace, ns("team-a"));

    assert!(matches!(
        f.apply(Command::DeleteNamespace { name: ns("team-a") }),
        Err(ApplyError::Refused(_))
    ));
    assert!(matches!(
        f.apply(Command::DeleteNamespace {
            name: ns("default")
        }),
        Err(ApplyError::Refused(_))
    ));
    f.apply(Command::DeleteJob {
        job: a.id,
        at: Timestamp(4),
    })
    .unwrap();
    assert_eq!(f.reader.namespace_job_count(&ns("team-a")).unwrap(), 0);
    f.apply(Command::DeleteNamespace { name: ns("team-a") })
        .unwrap();
    let names: Vec<String> = f
        .reader
        .namespaces()
        .unwrap()
        .into_iter()
        .map(|n| n.name.to_string())
        .collect();
    assert_eq!(names, ["default"]);
}

#[test]
fn a_token_of_a_bound_user_is_bound_to_the_same_namespace() {
    let f = Fixture::new();
    f.apply(Command::CreateNamespace {
        name: ns("team-a"),
        description: String::new(),
        at: Timestamp(1),
    })
    .unwrap();
    let mut bound = user("ann", Role::Writer);
    if let Command::CreateUser { namespace, .. } = &mut bound {
        *namespace = Some(ns("team-a"));
    }
    f.apply(bound).unwrap();
    let with_ns = |namespace: Option<&str>, hash: &[u8]| {
        let mut t = token("ann-ci", hash, Some("ann"), Role::Writer);
        if let Command::CreateToken(t) = &mut t {
            t.namespace = namespace.map(ns);
        }
        t
    };
    assert!(matches!(
        f.apply(with_ns(None, b"t1")),
        Err(ApplyError::Refused(_))
    ));
    assert!(matches!(
        f.apply(with_ns(Some("default"), b"t2")),
        Err(ApplyError::Refused(_))
    ));
    assert!(matches!(
        f.apply(with_ns(Some("nowhere"), b"t3")),
        Err(ApplyError::NotFound { .. })
    ));
    let Ok(Applied::Token(t)) = f.apply(with_ns(Some("team-a"), b"t4")) else {
        panic!()
    };
    assert_eq!(t.namespace, Some(ns("team-a")));
}
