//! The API over HTTPS against a real `windflow server` process: with a certificate issued
//! from the cluster CA (`--tls-from-ca`) and with one given as files (`--tls-cert`,
//! `--tls-key`); clients that trust the right CA get in, others are refused by TLS; the
//! CLI trusts a CA given with `--ca-cert`, or pinned at login by its fingerprint.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use windflow_certs::ClusterCa;
use windflow_tests::cluster::Cluster;
use windflow_tests::{http_status, https_request, stderr, stdout, windflow_bin};

/// Runs the CLI with `home` as `HOME` and only the given environment of ours.
fn cli(home: &Path, env: &[(&str, &str)], args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(windflow_bin());
    cmd.args(args)
        .env("HOME", home)
        .env_remove("WINDFLOW_ADDR")
        .env_remove("WINDFLOW_TOKEN")
        .env_remove("WINDFLOW_CA_CERT")
        .envs(env.iter().copied())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("running the windflow CLI");
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().expect("stdin");
        pipe.write_all(text.as_bytes()).expect("writing stdin");
    }
    child.wait_with_output().expect("waiting for the CLI")
}

#[test]
fn the_api_serves_https_from_the_cluster_ca_and_the_cli_trusts_it_by_ca_or_fingerprint() {
    let cluster = Cluster::start_https(1, &["--tls-from-ca"], None).unwrap();
    let addr = cluster.servers[0].http_addr;
    let token = cluster.token();
    let ca_path = cluster.ca_cert();
    let ca_pem = std::fs::read_to_string(&ca_path).unwrap();

    // A client trusting the cluster CA gets in, and is told to stay on HTTPS.
    let a = https_request(addr, Some(&ca_pem), "GET", "/v1/whoami", Some(&token), None).unwrap();
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.json["user"], "admin");
    assert!(
        a.header("strict-transport-security")
            .is_some_and(|v| v.starts_with("max-age=")),
        "{a:?}"
    );
    // One that does not is refused by TLS, before any HTTP.
    let err = https_request(addr, None, "GET", "/v1/whoami", Some(&token), None)
        .unwrap_err()
        .to_string();
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    // Plain HTTP on the HTTPS port gets nowhere.
    assert_ne!(http_status(addr, "/healthz").ok(), Some(200));

    let url = format!("https://{addr}");
    let ca_arg = ca_path.to_str().unwrap();
    let home = tempfile::tempdir().unwrap();
    let env = [("WINDFLOW_ADDR", url.as_str()), ("WINDFLOW_TOKEN", &token)];

    // The CLI with the CA given works; without it, it says what to do.
    let out = cli(home.path(), &env, &["--ca-cert", ca_arg, "whoami"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("admin"), "{}", stdout(&out));
    let mut with_env = env.to_vec();
    with_env.push(("WINDFLOW_CA_CERT", ca_arg));
    let out = cli(home.path(), &with_env, &["job", "list"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = cli(home.path(), &env, &["job", "list"], None);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("not trusted") && err.contains("--ca-cert"),
        "{err}"
    );

    // Login pins the CA by its fingerprint: a wrong one stores nothing.
    let password =
        std::fs::read_to_string(cluster.servers[0].data_dir.join("bootstrap-password")).unwrap();
    let fingerprint = windflow_certs::pem_fingerprint_sha256(&ca_pem).unwrap();
    let addr_only = [("WINDFLOW_ADDR", url.as_str())];
    let login = |fp: Option<&str>| {
        let mut args = vec!["login", "--user", "admin", "--password-stdin"];
        if let Some(fp) = fp {
            args.extend(["--ca-fingerprint", fp]);
        }
        cli(home.path(), &addr_only, &args, Some(&password))
    };
    let out = login(Some(&"0".repeat(64)));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&fingerprint) && err.contains("not trusting"),
        "{err}"
    );
    let pinned = home.path().join(".windflow").join("ca.crt");
    assert!(!pinned.exists(), "a refused CA is not stored");
    // Without a fingerprint and no terminal to ask at, it shows the one to check.
    let out = login(None);
    assert!(!out.status.success());
    assert!(stderr(&out).contains(&fingerprint), "{}", stderr(&out));

    let colons: Vec<String> = fingerprint
        .as_bytes()
        .chunks(2)
        .map(|c| String::from_utf8_lossy(c).to_uppercase())
        .collect();
    let out = login(Some(&colons.join(":")));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&pinned).unwrap(), ca_pem);

    // From now on the CLI needs nothing but its config.
    for args in [&["whoami"][..], &["job", "list"][..]] {
        let out = cli(home.path(), &[], args, None);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }
    let out = cli(home.path(), &[], &["whoami"], None);
    assert!(stdout(&out).contains("admin"), "{}", stdout(&out));

    // Over TLS the server still knows the caller's address: the login was audited with it.
    let logins = windflow_tests::wait_for(
        "the login's audit entry",
        std::time::Duration::from_secs(10),
        || {
            let a = https_request(
                addr,
                Some(&ca_pem),
                "GET",
                "/v1/audit?action=login",
                Some(&token),
                None,
            )
            .ok()?;
            let entries = a.json.as_array()?.clone();
            (!entries.is_empty()).then_some(entries)
        },
    )
    .unwrap();
    assert!(
        logins.iter().all(|e| e["source"] == "127.0.0.1"),
        "{logins:?}"
    );
}

#[test]
fn the_api_serves_a_certificate_from_files_trusted_through_its_own_ca() {
    let dir = tempfile::tempdir().unwrap();
    let other_ca = ClusterCa::create(&dir.path().join("web-ca")).unwrap();
    let issued = other_ca
        .issue_https("web", &[], &["127.0.0.1".parse().unwrap()])
        .unwrap();
    let (cert, key) = (dir.path().join("api.crt"), dir.path().join("api.key"));
    std::fs::write(&cert, &issued.cert_pem).unwrap();
    std::fs::write(&key, &issued.key_pem).unwrap();
    let web_ca = dir.path().join("web-ca").join("ca.crt");
    let (cert_arg, key_arg) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let cluster = Cluster::start_https(
        1,
        &["--tls-cert", cert_arg, "--tls-key", key_arg],
        Some(web_ca.clone()),
    )
    .unwrap();
    let addr = cluster.servers[0].http_addr;
    let token = cluster.token();

    let web_pem = std::fs::read_to_string(&web_ca).unwrap();
    let a = https_request(addr, Some(&web_pem), "GET", "/v1/jobs", Some(&token), None).unwrap();
    assert_eq!(a.status, 200, "{a:?}");
    // The cluster CA did not issue this certificate.
    let cluster_pem = std::fs::read_to_string(cluster.ca_cert()).unwrap();
    let err = https_request(addr, Some(&cluster_pem), "GET", "/v1/jobs", None, None)
        .unwrap_err()
        .to_string();
    assert!(err.to_lowercase().contains("certificate"), "{err}");

    let url = format!("https://{addr}");
    let home = tempfile::tempdir().unwrap();
    let env = [("WINDFLOW_ADDR", url.as_str()), ("WINDFLOW_TOKEN", &token)];
    let out = cli(
        home.path(),
        &env,
        &["--ca-cert", web_ca.to_str().unwrap(), "job", "list"],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // Pinning the cluster CA the server serves does not make this certificate trusted.
    let fingerprint = windflow_certs::pem_fingerprint_sha256(&cluster_pem).unwrap();
    let out = cli(
        home.path(),
        &env,
        &[
            "login",
            "--user",
            "admin",
            "--password-stdin",
            "--ca-fingerprint",
            &fingerprint,
        ],
        Some("irrelevant\n"),
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("does not present a certificate of the CA it serves"),
        "{}",
        stderr(&out)
    );
    assert!(!home.path().join(".windflow").join("ca.crt").exists());
}

#[test]
fn an_unreadable_certificate_stops_the_server_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.crt");
    let out = Command::new(windflow_bin())
        .args(["server", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--http-addr", "127.0.0.1:0", "--quic-addr", "127.0.0.1:0"])
        .arg("--tls-cert")
        .arg(&missing)
        .arg("--tls-key")
        .arg(&missing)
        .env("HOME", dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("--tls-cert") && err.contains("missing.crt"),
        "{err}"
    );
}
