//! Webhooks end to end: a receiver on loopback gets the signed payload of a real run's
//! end, the signature verifies; a receiver that answers 500 twice gets the event on the
//! third try, and the delivery log shows all three attempts.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ring::hmac;
use serde_json::Value;
use windflow_tests::{DevServer, stderr, stdout, wait_for};

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// An HTTP receiver on 127.0.0.1 that answers the statuses of `script` in turn (then 200).
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    fn start(script: Vec<u16>) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let seen = got.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                let mut headers = Vec::new();
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
                        break;
                    }
                    if let Some((n, v)) = h.trim().split_once(':') {
                        headers.push((n.trim().to_ascii_lowercase(), v.trim().to_owned()));
                    }
                }
                let len: usize = headers
                    .iter()
                    .find(|(n, _)| n == "content-length")
                    .and_then(|(_, v)| v.parse().ok())
                    .unwrap_or(0);
                let mut body = vec![0; len];
                if reader.read_exact(&mut body).is_err() {
                    continue;
                }
                let n = {
                    let mut all = seen.lock().unwrap();
                    all.push(Received { headers, body });
                    all.len()
                };
                let status = script.get(n - 1).copied().unwrap_or(200);
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
            }
        });
        Receiver { url, got }
    }

    fn wait(&self, n: usize, dev: &DevServer) -> Vec<Received> {
        wait_for(
            &format!("{n} request(s) at the receiver"),
            Duration::from_secs(60),
            || {
                let all = self.got.lock().unwrap().clone();
                (all.len() >= n).then_some(all)
            },
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", dev.log()))
    }
}

fn json_of(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", stdout(out), stderr(out)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A webhook on `events` to `url`, and its secret.
fn webhook(dev: &DevServer, name: &str, url: &str, events: &str) -> (String, String) {
    let out = dev.cli(&[
        "webhook", "create", name, "--url", url, "--events", events, "--output", "json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let w = json_of(&out);
    (
        w["id"].as_str().unwrap().to_owned(),
        w["secret"].as_str().unwrap().to_owned(),
    )
}

fn run_job(dev: &DevServer, name: &str, cmd: &str) {
    let out = dev.cli(&["job", "create", name, "--cmd", cmd]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = dev.cli(&["job", "run", name, "--wait"]);
    assert!(out.status.code().is_some(), "{}", stderr(&out));
}

#[test]
fn a_receiver_gets_the_signed_event_and_the_signature_verifies() {
    let dev = DevServer::start().unwrap();
    let receiver = Receiver::start(Vec::new());
    let bad = dev.cli(&[
        "webhook",
        "create",
        "x",
        "--url",
        "ftp://h/",
        "--events",
        "job.failed",
    ]);
    assert!(stderr(&bad).contains("`url`"), "{}", stderr(&bad));
    let bad = dev.cli(&[
        "webhook",
        "create",
        "x",
        "--url",
        &receiver.url,
        "--events",
        "job.done",
    ]);
    assert!(stderr(&bad).contains("`events[0]`"), "{}", stderr(&bad));

    let (id, secret) = webhook(&dev, "ops", &receiver.url, "job.succeeded");
    run_job(&dev, "hello", "echo hello");
    let got = receiver.wait(1, &dev);
    let req = &got[0];
    let signature = req.header("x-windflow-signature").expect("signed");
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    assert_eq!(signature, hex(hmac::sign(&key, &req.body).as_ref()));
    let wrong = hmac::Key::new(hmac::HMAC_SHA256, b"not the secret");
    assert_ne!(signature, hex(hmac::sign(&wrong, &req.body).as_ref()));

    let body: Value = serde_json::from_slice(&req.body).unwrap();
    assert_eq!(body["webhook"], id.as_str());
    assert_eq!(body["kind"], "job.succeeded");
    assert_eq!(body["job"], "J1");
    assert_eq!(body["run"], "R1");
    assert_eq!(body["exit_code"], 0);
    assert_eq!(req.header("x-windflow-event"), Some("job.succeeded"));
    assert_eq!(req.header("x-windflow-attempt"), Some("1"));

    let log = wait_for("the delivery recorded", Duration::from_secs(30), || {
        let log = json_of(&dev.cli(&["webhook", "deliveries", &id, "--output", "json"]));
        (log[0]["outcome"] == "delivered").then_some(log)
    })
    .unwrap();
    assert_eq!(log.as_array().unwrap().len(), 1);
    assert_eq!(log[0]["status"], 200);
    // The secret is never shown again, nor logged.
    let listed = stdout(&dev.cli(&["webhook", "list", "--output", "json"]));
    assert!(!listed.contains(&secret), "{listed}");
    assert!(!dev.log().contains(&secret));
}

#[test]
fn a_receiver_answering_500_twice_gets_it_on_the_third_try() {
    let dev = DevServer::start().unwrap();
    let receiver = Receiver::start(vec![500, 500]);
    let (id, secret) = webhook(&dev, "flaky", &receiver.url, "job.failed");
    run_job(&dev, "broken", "exit 3");
    let got = receiver.wait(3, &dev);
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    for (i, req) in got.iter().enumerate() {
        assert_eq!(
            req.body, got[0].body,
            "every attempt carries the same event"
        );
        assert_eq!(
            req.header("x-windflow-signature"),
            Some(hex(hmac::sign(&key, &req.body).as_ref()).as_str())
        );
        assert_eq!(
            req.header("x-windflow-attempt"),
            Some((i + 1).to_string().as_str())
        );
    }
    let body: Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(body["kind"], "job.failed");
    assert_eq!(body["exit_code"], 3);

    let log = wait_for("three attempts in the log", Duration::from_secs(30), || {
        let log = json_of(&dev.cli(&["webhook", "deliveries", "flaky", "--output", "json"]));
        (log.as_array()?.len() == 3 && log[0]["outcome"] == "delivered").then_some(log)
    })
    .unwrap();
    let attempts: Vec<(u64, u64, &str)> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["attempt"].as_u64().unwrap(),
                d["status"].as_u64().unwrap(),
                d["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        attempts,
        [
            (3, 200, "delivered"),
            (2, 500, "retrying"),
            (1, 500, "retrying")
        ]
    );
    let table = stdout(&dev.cli(&["webhook", "deliveries", &id]));
    assert!(
        table.contains("retrying") && table.contains("delivered"),
        "{table}"
    );
}
