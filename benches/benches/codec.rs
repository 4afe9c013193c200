//! Frame codec throughput: encode and decode of the messages that dominate a session.
//! Run: `cargo bench -p windflow-benches --bench codec`

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use windflow_benches::{sample_output, sample_run_task};
use windflow_protocol::codec;
use windflow_protocol::messages::{AgentMessage, ServerMessage};

fn codec_benches(c: &mut Criterion) {
    let task = sample_run_task();
    let frame = codec::encode(&task).unwrap();
    let mut g = c.benchmark_group("codec/run_task");
    g.throughput(Throughput::Elements(1));
    g.bench_function("encode", |b| {
        b.iter(|| codec::encode(black_box(&task)).unwrap())
    });
    g.bench_function("decode", |b| {
        b.iter(|| codec::decode_frame::<ServerMessage>(black_box(&frame)).unwrap())
    });
    g.finish();

    for len in [1024usize, 64 * 1024] {
        let out = sample_output(len);
        let frame = codec::encode(&out).unwrap();
        let mut g = c.benchmark_group(format!("codec/output_{}k", len / 1024));
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_function("encode", |b| {
            b.iter(|| codec::encode(black_box(&out)).unwrap())
        });
        g.bench_function("decode", |b| {
            b.iter(|| codec::decode_frame::<AgentMessage>(black_box(&frame)).unwrap())
        });
        g.finish();
    }
}

criterion_group!(benches, codec_benches);
criterion_main!(benches);
