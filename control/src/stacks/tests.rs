//! The compose translator: short and long forms, interpolation, refusals, and every
//! template of the catalog converted to a job.

use std::collections::{BTreeMap, BTreeSet};

use windflow_protocol::{
    CheckKind, DependencyCondition, DriverConfig, JobType, MountKind, Namespace, PortProtocol,
    RestartMode,
};

use super::*;

fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn read_with(
    text: &str,
    variables: &BTreeMap<String, String>,
    env_files: &BTreeMap<String, String>,
) -> Result<Compose, StackError> {
    parse(&Input {
        text,
        variables,
        secret_variables: &BTreeSet::new(),
        env_files,
        base_dir: Some("/srv/app"),
    })
}

fn read(text: &str) -> Result<Compose, StackError> {
    read_with(text, &BTreeMap::new(), &BTreeMap::new())
}

fn invalid_path(text: &str) -> String {
    match read(text) {
        Err(StackError::Invalid { path, .. }) => path,
        other => panic!("not an invalid value: {other:?}"),
    }
}

#[test]
fn short_and_long_forms_read_alike() {
    let c = read_with(
        r#"
version: "3.9"
name: shop
services:
  web:
    image: nginx:${TAG:-1.27}
    command: httpd -f -p "80 80"
    entrypoint: ["/bin/sh", "-c"]
    environment:
      MODE: prod
      COUNT: 3
    env_file: ./web.env
    ports:
      - "8080:80"
      - "81"
      - "127.0.0.1:5353:53/udp"
      - 82
      - target: 443
        published: "8443"
        host_ip: 127.0.0.1
        protocol: tcp
        name: https
    volumes:
      - /var/log:/logs:ro
      - ./site:/usr/share/site
      - data:/data
      - type: bind
        source: /etc/ssl
        target: /ssl
        read_only: true
      - type: volume
        source: data
        target: /more
    labels:
      - team=web
    deploy:
      replicas: 1
      resources:
        limits: {memory: 1g, cpus: "0.5"}
    restart: on-failure:4
  db:
    image: postgres:16
    environment:
      - POSTGRES_DB=app
      - FROM_SHELL
    labels: {tier: db}
    healthcheck:
      test: pg_isready
      interval: 5s
      timeout: 2s
      start_period: 1m
      retries: 3
    restart: always
  worker:
    image: busybox
    depends_on: [db]
    deploy: {replicas: 3}
  api:
    image: busybox
    depends_on:
      db: {condition: service_healthy}
      worker: {condition: service_started}
    healthcheck:
      test: ["CMD", "true"]
volumes:
  data:
"#,
        &vars(&[("FROM_SHELL", "x")]),
        &BTreeMap::from([(
            "./web.env".to_owned(),
            "# c\nMODE=dev\nEXTRA=\"q\"\n".to_owned(),
        )]),
    )
    .unwrap();
    let web = &c.services["web"];
    assert_eq!(web.image, "nginx:1.27");
    assert_eq!(
        web.command.as_deref().unwrap(),
        ["httpd", "-f", "-p", "80 80"]
    );
    assert_eq!(web.entrypoint.as_deref().unwrap(), ["/bin/sh", "-c"]);
    // `environment` wins over the env_file.
    assert_eq!(web.env["MODE"], "prod");
    assert_eq!(web.env["EXTRA"], "q");
    assert_eq!(web.env["COUNT"], "3");
    let p = &web.ports;
    assert_eq!((p[0].host_port, p[0].container_port), (Some(8080), 80));
    assert_eq!((p[1].host_port, p[1].container_port), (None, 81));
    assert_eq!(p[2].protocol, PortProtocol::Udp);
    assert_eq!(p[2].host_ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(
        (p[2].host_port, p[2].label.as_str()),
        (Some(5353), "53-udp")
    );
    assert_eq!(p[3].container_port, 82);
    assert_eq!(p[4].label, "https");
    assert_eq!((p[4].host_port, p[4].container_port), (Some(8443), 443));
    let v = &web.volumes;
    assert_eq!((v[0].kind, v[0].read_only), (MountKind::Bind, true));
    assert_eq!(v[1].source, "/srv/app/site");
    assert_eq!(
        (v[2].kind, v[2].source.as_str()),
        (MountKind::Volume, "data")
    );
    assert_eq!((v[3].kind, v[3].read_only), (MountKind::Bind, true));
    assert_eq!(v[4].kind, MountKind::Volume);
    assert_eq!(web.labels["team"], "web");
    assert_eq!((web.memory_mb, web.cpu_mhz), (Some(1024), Some(500)));
    assert_eq!(
        (web.restart.attempts, web.restart.mode),
        (4, RestartMode::Fail)
    );

    let db = &c.services["db"];
    assert_eq!(db.env["POSTGRES_DB"], "app");
    assert_eq!(db.env["FROM_SHELL"], "x");
    assert_eq!(db.labels["tier"], "db");
    let h = db.healthcheck.as_ref().unwrap();
    assert_eq!(h.test, ["CMD-SHELL", "pg_isready"]);
    assert_eq!(h.start_period.unwrap().0.as_secs(), 60);
    assert_eq!(h.retries, Some(3));
    assert_eq!(db.restart.mode, RestartMode::Delay);
    assert_eq!(web.restart.attempts, 4);
    let no = syntax::restart_policy("no", "r").unwrap();
    assert_eq!((no.attempts, no.mode), (0, RestartMode::Fail));
    assert_eq!(syntax::restart_policy("false", "r").unwrap(), no);
    assert_eq!(
        syntax::restart_policy("on-failure", "r").unwrap().attempts,
        3
    );
    assert_eq!(c.services["worker"].replicas, 3);
    assert_eq!(
        c.services["worker"].depends_on,
        [("db".to_owned(), DependencyCondition::Started)]
    );
    assert_eq!(
        c.services["api"].depends_on,
        [
            ("db".to_owned(), DependencyCondition::Healthy),
            ("worker".to_owned(), DependencyCondition::Started)
        ]
    );
    assert_eq!(c.volumes, BTreeSet::from(["data".to_owned()]));
}

#[test]
fn unsupported_keys_are_refused_together_by_path() {
    let e = read(
        "services:\n  web:\n    image: a\n    build: .\n  db:\n    image: b\n    networks: [x]\n",
    )
    .unwrap_err();
    assert_eq!(
        e,
        StackError::Unsupported(vec![
            "services.web.build".to_owned(),
            "services.db.networks".to_owned()
        ])
    );
    assert!(
        e.to_string()
            .contains("services.web.build, services.db.networks")
    );
}

#[test]
fn bad_values_name_their_path() {
    let cases = [
        ("services: {}", "services"),
        ("services:\n  web: {command: x}", "services.web.image"),
        ("services:\n  Web: {image: a}", "services.Web"),
        (
            "services:\n  web: {image: a, ports: [\"80-90:80-90\"]}",
            "services.web.ports[0]",
        ),
        (
            "services:\n  web: {image: a, ports: [\"x:80\"]}",
            "services.web.ports[0]",
        ),
        (
            "services:\n  web: {image: a, ports: [\"80/sctp\"]}",
            "services.web.ports[0]",
        ),
        (
            "services:\n  web: {image: a, ports: [{published: 80}]}",
            "services.web.ports[0].target",
        ),
        (
            "services:\n  web: {image: a, volumes: [\"/data\"]}",
            "services.web.volumes[0]",
        ),
        (
            "services:\n  web: {image: a, volumes: [\"nope:/data\"]}",
            "services.web.volumes[0]",
        ),
        (
            "services:\n  web: {image: a, volumes: [\"/a:rel\"]}",
            "services.web.volumes[0]",
        ),
        (
            "services:\n  web: {image: a, volumes: [{type: tmpfs, target: /t}]}",
            "services.web.volumes[0].type",
        ),
        (
            "services:\n  web: {image: a, depends_on: [db]}",
            "services.web.depends_on.db",
        ),
        (
            "services:\n  web: {image: a, depends_on: [web]}",
            "services.web.depends_on.web",
        ),
        (
            "services:\n  web: {image: a, depends_on: {db: {condition: service_healthy}}}\n  db: {image: b}",
            "services.web.depends_on.db",
        ),
        (
            "services:\n  web: {image: a, depends_on: {db: {condition: service_completed_successfully}}}\n  db: {image: b}",
            "services.web.depends_on.db.condition",
        ),
        (
            "services:\n  a: {image: a, depends_on: [b]}\n  b: {image: b, depends_on: [a]}",
            "depends_on",
        ),
        (
            "services:\n  web: {image: a, restart: sometimes}",
            "services.web.restart",
        ),
        (
            "services:\n  web: {image: a, depends_on: [db]}\n  db: {image: b, deploy: {replicas: 0}}",
            "services.web.depends_on.db",
        ),
        (
            "services:\n  web: {image: a, healthcheck: {test: [\"RUN\", \"x\"]}}",
            "services.web.healthcheck.test",
        ),
        (
            "services:\n  web: {image: a, healthcheck: {test: \"x\", interval: soon}}",
            "services.web.healthcheck.interval",
        ),
        (
            "services:\n  web: {image: a, deploy: {replicas: -1}}",
            "services.web.deploy.replicas",
        ),
        (
            "services:\n  web: {image: a, labels: {windflow.alloc: x}}",
            "services.web.labels.windflow.alloc",
        ),
        (
            "services:\n  web: {image: \"${NOPE}\"}",
            "services.web.image",
        ),
        (
            "services:\n  web: {image: a, environment: {1X: y}}",
            "services.web.environment.1X",
        ),
        (
            "services:\n  web: {image: a, env_file: missing.env}",
            "services.web.env_file[0]",
        ),
        (
            "services:\n  web: {image: a, deploy: {resources: {limits: {memory: lots}}}}",
            "services.web.deploy.resources.limits.memory",
        ),
    ];
    for (text, path) in cases {
        assert_eq!(invalid_path(text), path, "{text}");
    }
    assert!(matches!(read("services: [a"), Err(StackError::Yaml(_))));
    // An optional env_file may be missing.
    read("services:\n  web: {image: a, env_file: [{path: x.env, required: false}]}").unwrap();
}

#[test]
fn the_cycle_and_unset_variables_are_explained() {
    let e = read("services:\n  a: {image: a, depends_on: [b]}\n  b: {image: b, depends_on: [a]}")
        .unwrap_err()
        .to_string();
    assert!(e.contains("a → b → a"), "{e}");
    let e = read("services:\n  web: {image: \"app:${TAG}\"}")
        .unwrap_err()
        .to_string();
    assert!(e.contains("`TAG` is not set"), "{e}");
}

#[test]
fn secret_variables_go_to_sealed_env_only() {
    let values = vars(&[("PW", "hunter2"), ("USER", "app")]);
    let secret = BTreeSet::from(["PW".to_owned()]);
    let no_files = BTreeMap::new();
    let input = |text| Input {
        text,
        variables: &values,
        secret_variables: &secret,
        env_files: &no_files,
        base_dir: None,
    };
    let c = parse(&input(
        "services:\n  db:\n    image: postgres\n    environment:\n      USER: ${USER}\n      URL: \"pg://${USER}:${PW}@db\"\n",
    ))
    .unwrap();
    let db = &c.services["db"];
    assert_eq!(db.env["USER"], "app");
    assert!(!db.env.contains_key("URL"));
    assert_eq!(db.secret_env["URL"], "pg://app:hunter2@db");
    let e = parse(&input(
        "services:\n  db:\n    image: postgres\n    command: run ${PW}\n",
    ))
    .unwrap_err();
    let StackError::Invalid { path, message } = e else {
        panic!("{e:?}")
    };
    assert_eq!(path, "services.db.command");
    assert!(message.contains("secret variable `PW`"), "{message}");
    assert!(!message.contains("hunter2"));
}

#[test]
fn a_stack_becomes_one_service_job_on_one_node_and_network() {
    let c = read(
        r#"
services:
  web:
    image: busybox
    command: ["httpd", "-f"]
    healthcheck: {test: "wget -q -O- http://127.0.0.1/", start_period: 2s}
    deploy: {replicas: 2}
    ports: ["80"]
  client:
    image: busybox
    depends_on: {web: {condition: service_healthy}}
    volumes: ["data:/data"]
volumes: {data: {}}
"#,
    )
    .unwrap();
    let ns = Namespace::default();
    let job = to_job("shop", &ns, &c, Some("node-a")).unwrap();
    let spec = &job.spec;
    assert_eq!(spec.name, "shop");
    assert_eq!(spec.job_type, JobType::Service);
    assert!(is_stack(spec));
    assert_eq!(pinned_node(spec), Some("node-a"));
    let web = spec.groups.iter().find(|g| g.name == "web").unwrap();
    assert_eq!(web.count, 2);
    assert_eq!(web.constraints[0].value, "node-a");
    assert!(matches!(&web.checks[0].kind, CheckKind::Container { task } if task == "web"));
    assert_eq!(web.checks[0].grace.0.as_secs(), 2);
    let DriverConfig::Docker(d) = &web.tasks[0].driver else {
        panic!("not docker")
    };
    assert_eq!(d.aliases, ["web"]);
    assert_eq!(d.network.as_deref(), Some("default_shop"));
    assert_eq!(d.labels[convert::LABEL_PROJECT], "shop");
    assert_eq!(d.cmd().unwrap(), ["httpd", "-f"]);
    let client = spec.groups.iter().find(|g| g.name == "client").unwrap();
    let DriverConfig::Docker(d) = &client.tasks[0].driver else {
        panic!("not docker")
    };
    assert_eq!(d.depends_on[0].task, "web");
    assert_eq!(d.depends_on[0].condition, DependencyCondition::Healthy);
    assert_eq!(d.mounts[0].source, "shop_data");
    assert!(client.checks.is_empty());
    // A fixed host port cannot be shared by replicas on one node.
    let c =
        read("services:\n  web: {image: a, ports: [\"80:80\"], deploy: {replicas: 2}}").unwrap();
    let e = to_job("s", &ns, &c, None).unwrap_err().to_string();
    assert!(e.contains("services.web.ports[0]"), "{e}");
}

#[test]
fn every_template_renders_to_a_valid_job() {
    let all = templates::all().unwrap();
    let names: Vec<&str> = all.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "postgres",
            "redis",
            "mysql",
            "wordpress",
            "nginx",
            "monitoring",
            "minio"
        ]
    );
    for t in &all {
        assert!(!t.description.is_empty(), "{}", t.name);
        let rendered = t.render(&BTreeMap::new()).unwrap();
        assert!(
            !rendered.generated.is_empty() || t.name == "nginx",
            "{} generates no password",
            t.name
        );
        for p in rendered.generated.values() {
            assert_eq!(p.len(), templates::GENERATED_LEN);
            assert!(p.bytes().all(|b| b.is_ascii_alphanumeric()));
        }
        let compose = parse(&Input {
            text: &t.compose,
            variables: &rendered.variables,
            secret_variables: &rendered.secret,
            env_files: &BTreeMap::new(),
            base_dir: None,
        })
        .unwrap_or_else(|e| panic!("{}: {e}", t.name));
        let job = to_job(&t.name, &Namespace::default(), &compose, Some("n"))
            .unwrap_or_else(|e| panic!("{}: {e}", t.name));
        assert!(is_stack(&job.spec));
        for g in &job.spec.groups {
            crate::scheduler::feasible::Checks::of(g).unwrap();
        }
        // Every generated password reaches a task only as secret env, never in plain
        // sight anywhere in the spec.
        let shown = serde_json::to_string(&job.spec).unwrap();
        for (name, p) in &rendered.generated {
            assert!(
                !shown.contains(p.as_str()),
                "{}: {name} in plain sight",
                t.name
            );
            assert!(
                job.secret_env
                    .values()
                    .any(|env| env.values().any(|v| v.contains(p.as_str()))),
                "{}: {name} reaches no task",
                t.name
            );
        }
        let images: Vec<String> = job
            .spec
            .tasks()
            .map(|t| match &t.driver {
                DriverConfig::Docker(d) => d.image.clone(),
                DriverConfig::Exec(_) => String::new(),
            })
            .collect();
        assert!(images.iter().all(|i| !i.is_empty()), "{images:?}");
    }
    let wp = templates::get("wordpress").unwrap();
    let r = wp.render(&BTreeMap::new()).unwrap();
    let c = parse(&Input {
        text: &wp.compose,
        variables: &r.variables,
        secret_variables: &r.secret,
        env_files: &BTreeMap::new(),
        base_dir: None,
    })
    .unwrap();
    // WordPress and MySQL share the one generated password.
    assert_eq!(
        c.services["wordpress"].secret_env["WORDPRESS_DB_PASSWORD"],
        c.services["db"].secret_env["MYSQL_PASSWORD"]
    );
    assert_eq!(
        c.services["wordpress"].depends_on,
        [("db".to_owned(), DependencyCondition::Healthy)]
    );
}

#[test]
fn template_variables_are_checked() {
    let pg = templates::get("postgres").unwrap();
    let e = pg
        .render(&vars(&[
            ("PORT", "5433"),
            ("COLOUR", "red"),
            ("SIZE", "xl"),
        ]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("COLOUR, SIZE"), "{e}");
    let r = pg
        .render(&vars(&[("PORT", "5433"), ("POSTGRES_PASSWORD", "mine")]))
        .unwrap();
    assert_eq!(r.variables["PORT"], "5433");
    assert_eq!(r.variables["POSTGRES_PASSWORD"], "mine");
    assert!(r.secret.contains("POSTGRES_PASSWORD"));
    assert!(r.generated.is_empty(), "a given password is not generated");
    assert!(!format!("{r:?}").contains("mine"));
    assert!(templates::get("oracle").is_err());
    assert_ne!(
        templates::password().unwrap(),
        templates::password().unwrap()
    );
}
