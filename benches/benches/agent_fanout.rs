//! Agent fan-out: N real agent sessions (QUIC, mutual TLS, ALPN `windflow/1`) against one
//! real `windflow server` process, each sending a heartbeat every second; the server's CPU
//! share and memory over a steady window, read from `/proc`.
//!
//! Every session is a real node: the bench mints one agent join token with N uses and
//! enrolls N identities through the real enrollment exchange (a fresh key and CSR each, the
//! server spends a use through raft and signs `node-N<id>`). Each session then says Hello
//! (the server records it through raft), waits for Welcome, and heartbeats; the server's
//! HeartbeatAck is counted, anything else it sends is ignored. The sessions are spread over
//! a few client endpoints in this process, which is the load generator; its own CPU is
//! reported too, since it shares the machine with the server.
//!
//! Run: `cargo bench -p windflow-benches --bench agent_fanout`. Environment:
//! `FANOUT_SESSIONS` (levels, ascending, default `1000,5000`; each level adds sessions to
//! the previous one), `FANOUT_WINDOW` (seconds measured per level, 30), `FANOUT_SETTLE`
//! (seconds between the last session up and the window, 10), `FANOUT_ENDPOINTS` (client
//! UDP sockets, 8), `FANOUT_DIR` (where the server's data goes, default `target/`; a tmpfs
//! such as `/dev/shm` takes fsync out of enrollment when the disk is busy), `WINDFLOW_BIN`
//! (default `target/release/windflow`, built if missing).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use windflow_benches::cluster::{env_or, fmt_dur, loadavg, percentile, target_dir, windflow_bin};
use windflow_benches::server::{ProcSample, SingleServer, proc_sample};
use windflow_benches::sim_agent::{ENROLL_ATTEMPTS, enroll_all, handshake};
use windflow_certs::TlsIdentity;
use windflow_certs::wire::{read_frame, write_frame};
use windflow_protocol::enroll::JoinToken;
use windflow_protocol::messages::{AgentMessage, Heartbeat, ServerMessage};

/// Session handshakes in flight at once.
const CONCURRENCY: usize = 64;
/// A session whose handshake fails (timed out on a busy machine) is opened again.
const HANDSHAKE_ATTEMPTS: usize = 3;
const HEARTBEAT: Duration = Duration::from_secs(1);
const UP_DEADLINE: Duration = Duration::from_secs(300);

/// What the sessions saw, shared by all of them.
#[derive(Default)]
struct Stats {
    heartbeats: AtomicU64,
    acks: AtomicU64,
    /// Sessions whose stream or connection ended.
    lost: AtomicU64,
    /// Handshakes tried again.
    retried: AtomicU64,
    /// Heartbeat round trips, recorded while `measuring`.
    measuring: AtomicBool,
    rtts: Mutex<Vec<Duration>>,
}

fn main() {
    let levels: Vec<usize> = std::env::var("FANOUT_SESSIONS")
        .unwrap_or_else(|_| "1000,5000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let max = *levels
        .iter()
        .max()
        .expect("FANOUT_SESSIONS names at least one level");
    let window = Duration::from_secs(env_or("FANOUT_WINDOW", 30));
    let settle = Duration::from_secs(env_or("FANOUT_SETTLE", 10));
    let endpoints = env_or("FANOUT_ENDPOINTS", 8usize).max(1);
    let bin = windflow_bin();
    let dir =
        tempfile::tempdir_in(std::env::var_os("FANOUT_DIR").map_or_else(target_dir, Into::into))
            .expect("bench dir");
    let server = SingleServer::start(&bin, dir.path());
    let pid = server.pid().to_string();
    println!(
        "agent fan-out: server pid {pid}, {}; load average {}",
        bin.display(),
        loadavg()
    );

    let (status, body) = server
        .api(
            "POST",
            "/v1/agent/tokens",
            // Room for the uses of enrollments retried after a commit timeout: such a
            // write may still be applied later.
            &format!(r#"{{"uses": {}, "ttl": "2h"}}"#, max * ENROLL_ATTEMPTS),
        )
        .expect("creating the agent token");
    assert_eq!(status, 201, "agent token: {body}");
    let created: serde_json::Value = serde_json::from_str(&body).expect("token JSON");
    let token: JoinToken = created["token"]
        .as_str()
        .expect("token")
        .parse()
        .expect("a join token");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        windflow_certs::install_crypto_provider();
        let started = Instant::now();
        let identities = enroll_all(&token, server.quic, "fanout", max).await;
        println!(
            "{max} agents enrolled in {:.1} s (one token, the real enrollment exchange)",
            started.elapsed().as_secs_f64()
        );
        let before = proc_sample(&pid);
        println!(
            "server before any session: RSS {} MiB, {} threads",
            before.rss_kib / 1024,
            before.threads
        );

        let clients: Vec<quinn::Endpoint> = (0..endpoints)
            .map(|_| quinn::Endpoint::client(([127, 0, 0, 1], 0).into()).expect("endpoint"))
            .collect();
        let stats = Arc::new(Stats::default());
        let mut conns = Vec::with_capacity(max);
        let mut rows: Vec<Row> = Vec::new();
        print_header();
        for &n in &levels {
            let started = Instant::now();
            let ramp_cpu = proc_sample(&pid).cpu;
            let opened = open_sessions(
                &clients,
                server.quic,
                &identities[conns.len()..n],
                conns.len(),
                &stats,
            )
            .await;
            conns.extend(opened);
            let srv = &server;
            let up = tokio::task::block_in_place(|| {
                windflow_benches::cluster::try_wait_until(UP_DEADLINE, || {
                    srv.metric("windflow_agents_connected") == Some(n as f64)
                })
            });
            assert!(
                up,
                "the server reports {:?} agents connected, not {n}",
                server.metric("windflow_agents_connected")
            );
            let ramp = started.elapsed();
            println!(
                "{n} sessions up in {:.1} s (this level's new ones; server CPU {:.0} % of one \
                 core meanwhile; {} handshakes retried so far)",
                ramp.as_secs_f64(),
                100.0 * (proc_sample(&pid).cpu - ramp_cpu).as_secs_f64() / ramp.as_secs_f64(),
                stats.retried.load(Ordering::Relaxed)
            );
            tokio::time::sleep(settle).await;
            let row = measure(&server, &pid, &stats, n, window).await;
            print_row(&row);
            rows.push(row);
        }
        println!(
            "\nwindow {} s per level; server RSS before any session {} MiB; load average now {}",
            window.as_secs(),
            before.rss_kib / 1024,
            loadavg()
        );
        print_header();
        for row in &rows {
            print_row(row);
        }
        for c in &conns {
            c.close(0u32.into(), b"bench over");
        }
    });
}

/// Opens a session per identity (numbered from `first`), spread over `clients`; each one's
/// heartbeats start at its own offset within the second, as agents that connected at
/// different times would.
async fn open_sessions(
    clients: &[quinn::Endpoint],
    server: SocketAddr,
    identities: &[TlsIdentity],
    first: usize,
    stats: &Arc<Stats>,
) -> Vec<quinn::Connection> {
    let gate = Arc::new(Semaphore::new(CONCURRENCY));
    let n = identities.len().max(1);
    let tasks: Vec<_> = identities
        .iter()
        .enumerate()
        .map(|(i, identity)| {
            let identity = identity.clone();
            let endpoint = clients[(first + i) % clients.len()].clone();
            let (gate, stats) = (gate.clone(), stats.clone());
            let phase = HEARTBEAT.mul_f64(i as f64 / n as f64);
            tokio::spawn(async move {
                let _permit = gate.acquire_owned().await.expect("semaphore");
                let mut attempt = 1;
                let (conn, send, recv) = loop {
                    let hostname = format!("fanout-{}", first + i);
                    match handshake(&endpoint, &identity, server, hostname).await {
                        Ok(session) => break session,
                        Err(e) if attempt < HANDSHAKE_ATTEMPTS => {
                            eprintln!(
                                "session {}, attempt {attempt}: {e}; trying again",
                                first + i
                            );
                            stats.retried.fetch_add(1, Ordering::Relaxed);
                            attempt += 1;
                        }
                        Err(e) => panic!("session {}: {e}", first + i),
                    }
                };
                tokio::spawn(heartbeats(send, phase, stats.clone()));
                tokio::spawn(read_acks(recv, stats));
                conn
            })
        })
        .collect();
    let mut conns = Vec::with_capacity(tasks.len());
    for t in tasks {
        conns.push(t.await.expect("session task"));
    }
    conns
}

/// Where heartbeat sequence numbers count from: each one is its send time in µs since
/// this instant, so the ack's echo of it times the round trip without shared state.
static EPOCH: OnceLock<Instant> = OnceLock::new();

fn micros_since_epoch() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_micros() as u64
}

/// A heartbeat a second, as an agent sends them.
async fn heartbeats(mut send: quinn::SendStream, phase: Duration, stats: Arc<Stats>) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + phase, HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let hb = AgentMessage::Heartbeat(Heartbeat {
            seq: micros_since_epoch(),
            running: Vec::new(),
        });
        if write_frame(&mut send, &hb).await.is_err() {
            stats.lost.fetch_add(1, Ordering::Relaxed);
            return;
        }
        stats.heartbeats.fetch_add(1, Ordering::Relaxed);
    }
}

/// Counts the server's acks (timing them while measuring); ignores anything else.
async fn read_acks(mut recv: quinn::RecvStream, stats: Arc<Stats>) {
    loop {
        match read_frame::<ServerMessage>(&mut recv).await {
            Ok(Some(ServerMessage::HeartbeatAck { seq })) => {
                stats.acks.fetch_add(1, Ordering::Relaxed);
                if stats.measuring.load(Ordering::Relaxed) {
                    let rtt = Duration::from_micros(micros_since_epoch().saturating_sub(seq));
                    stats.rtts.lock().expect("rtts").push(rtt);
                }
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => {
                stats.lost.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
    }
}

struct Row {
    sessions: usize,
    server: ProcSample,
    server_cpu: Duration,
    generator_cpu: Duration,
    elapsed: Duration,
    rss_max_kib: u64,
    acks: u64,
    heartbeats: u64,
    lost: u64,
    rtt_p50: Duration,
    rtt_p99: Duration,
}

/// Samples the server over `window`: CPU time at both ends, RSS every second.
async fn measure(
    server: &SingleServer,
    pid: &str,
    stats: &Stats,
    sessions: usize,
    window: Duration,
) -> Row {
    let (s0, g0, t0) = (proc_sample(pid), proc_sample("self"), Instant::now());
    let (a0, h0) = (
        stats.acks.load(Ordering::Relaxed),
        stats.heartbeats.load(Ordering::Relaxed),
    );
    stats.measuring.store(true, Ordering::Relaxed);
    let mut rss_max = s0.rss_kib;
    while t0.elapsed() < window {
        tokio::time::sleep(Duration::from_secs(1).min(window)).await;
        rss_max = rss_max.max(proc_sample(pid).rss_kib);
    }
    let (s1, g1, elapsed) = (proc_sample(pid), proc_sample("self"), t0.elapsed());
    stats.measuring.store(false, Ordering::Relaxed);
    let mut rtts = std::mem::take(&mut *stats.rtts.lock().expect("rtts"));
    rtts.sort();
    let connected = server.metric("windflow_agents_connected");
    assert_eq!(
        connected,
        Some(sessions as f64),
        "sessions dropped during the window"
    );
    Row {
        sessions,
        server: s1,
        server_cpu: s1.cpu - s0.cpu,
        generator_cpu: g1.cpu - g0.cpu,
        elapsed,
        rss_max_kib: rss_max.max(s1.rss_kib),
        acks: stats.acks.load(Ordering::Relaxed) - a0,
        heartbeats: stats.heartbeats.load(Ordering::Relaxed) - h0,
        lost: stats.lost.load(Ordering::Relaxed),
        rtt_p50: percentile(&rtts, 0.5),
        rtt_p99: percentile(&rtts, 0.99),
    }
}

fn print_header() {
    println!(
        "| sessions | server CPU (% of one core) | server RSS | RSS max in window | server threads | heartbeats/s sent | acks/s | ack RTT p50 | ack RTT p99 | generator CPU (% of one core) | sessions lost |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
}

fn print_row(r: &Row) {
    let secs = r.elapsed.as_secs_f64();
    let pct = |d: Duration| 100.0 * d.as_secs_f64() / secs;
    println!(
        "| {} | {:.1} % | {} MiB | {} MiB | {} | {:.0} | {:.0} | {} | {} | {:.1} % | {} |",
        r.sessions,
        pct(r.server_cpu),
        r.server.rss_kib / 1024,
        r.rss_max_kib / 1024,
        r.server.threads,
        r.heartbeats as f64 / secs,
        r.acks as f64 / secs,
        fmt_dur(r.rtt_p50),
        fmt_dur(r.rtt_p99),
        pct(r.generator_cpu),
        r.lost
    );
}
