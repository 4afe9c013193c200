//! Single-server raft writes: `CreateJob` commands through `RaftNode::write` (openraft
//! `client_write`, the log flushed to disk with sled before each acknowledgement), against
//! the floor of the same storage: one sled insert plus flush per write.
//! Run: `cargo bench -p windflow-benches --bench raft_write`

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use windflow_benches::{create_job_command, single_server};

const CONCURRENT: usize = 16;

fn raft_write(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let node = rt.block_on(single_server(dir.path()));

    let mut g = c.benchmark_group("raft_write");
    g.sample_size(20).measurement_time(Duration::from_secs(8));
    g.throughput(Throughput::Elements(1));
    g.bench_function("sequential", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    node.write(create_job_command()).await.unwrap();
                }
                start.elapsed()
            })
        })
    });
    g.throughput(Throughput::Elements(CONCURRENT as u64));
    g.bench_function(format!("{CONCURRENT}_concurrent_writers"), |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let writes: Vec<_> = (0..CONCURRENT)
                        .map(|_| {
                            let node = node.clone();
                            tokio::spawn(
                                async move { node.write(create_job_command()).await.unwrap() },
                            )
                        })
                        .collect();
                    for w in writes {
                        w.await.unwrap();
                    }
                }
                start.elapsed()
            })
        })
    });

    // The storage floor: what one durable write costs without raft.
    let floor_dir = tempfile::tempdir().unwrap();
    let db = sled::open(floor_dir.path()).unwrap();
    let tree = db.open_tree("floor").unwrap();
    let value = vec![7u8; 400];
    let mut key = 0u64;
    g.throughput(Throughput::Elements(1));
    g.bench_function("sled_insert_flush_floor", |b| {
        b.iter(|| {
            key += 1;
            tree.insert(key.to_be_bytes(), value.as_slice()).unwrap();
            db.flush().unwrap();
        })
    });
    g.finish();
    rt.block_on(node.shutdown()).unwrap();
}

criterion_group!(benches, raft_write);
criterion_main!(benches);
