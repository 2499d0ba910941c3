//! Relay throughput against a raw loopback TCP copy measured in the same run, and the codec.

use bytes::{Bytes, BytesMut};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use kdbg_benches::{Observed, PatternReader, raw_tcp, relay_observed, relay_stdout, runtime};
use kdbg_relay::codec::{self, Frame};
use std::hint::black_box;
use std::time::Duration;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Bytes moved per measured transfer.
const TRANSFER: u64 = 64 * 1024 * 1024;

fn stdout_throughput(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("stdout");
    group.throughput(Throughput::Bytes(TRANSFER));
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(8));
    for chunk in [4 * 1024, 32 * 1024, 128 * 1024] {
        let kib = chunk / 1024;
        group.bench_with_input(BenchmarkId::new("raw_tcp", kib), &chunk, |b, &chunk| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| rt.block_on(raw_tcp(TRANSFER, chunk)))
                    .sum()
            })
        });
        group.bench_with_input(BenchmarkId::new("relay", kib), &chunk, |b, &chunk| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| rt.block_on(relay_stdout(TRANSFER, chunk, false)))
                    .sum()
            })
        });
        group.bench_with_input(BenchmarkId::new("relay_tap", kib), &chunk, |b, &chunk| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| rt.block_on(relay_stdout(TRANSFER, chunk, true)))
                    .sum()
            })
        });
    }
    group.finish();
}

/// A session printing text, observed as the agent observes sessions: nothing, its recorder
/// (asciicast v2 to a file on local disk), its screen keeper, the keeper with a watcher. The
/// recorder must keep the whole session: how many recordings came out incomplete is written
/// to `recording-outcomes.json` beside the figures, for the report.
fn observed_throughput(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("observed");
    group.throughput(Throughput::Bytes(TRANSFER));
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(8));
    let dir = kdbg_benches::figures_dir().join("scratch");
    std::fs::create_dir_all(&dir).expect("scratch directory");
    let path = dir.join("relay-bench.cast");
    let mut outcomes = serde_json::Map::new();
    for chunk in [4 * 1024, 32 * 1024] {
        let kib = chunk / 1024;
        let cases = [
            ("plain", Observed::Nothing),
            ("recorded", Observed::Recorded(path.clone())),
            ("screen", Observed::Screen(0)),
            ("watched", Observed::Screen(1)),
        ];
        for (name, observed) in cases {
            let mut incomplete = 0u64;
            let mut runs = 0u64;
            group.bench_with_input(BenchmarkId::new(name, kib), &chunk, |b, &chunk| {
                b.iter_custom(|iters| {
                    (0..iters)
                        .map(|_| {
                            let reader = PatternReader::text(TRANSFER, chunk);
                            let (took, outcome) =
                                rt.block_on(relay_observed(reader, TRANSFER, observed.clone()));
                            runs += 1;
                            if matches!(outcome, Some(kdbg_agent::record::Outcome::Incomplete(_))) {
                                incomplete += 1;
                            }
                            let _ = std::fs::remove_file(&path);
                            took
                        })
                        .sum()
                })
            });
            outcomes.insert(
                format!("{name}/{kib}"),
                serde_json::json!({"runs": runs, "incomplete": incomplete}),
            );
        }
    }
    group.finish();
    let figures = kdbg_benches::figures_dir();
    std::fs::create_dir_all(&figures).expect("figures directory");
    std::fs::write(
        figures.join("recording-outcomes.json"),
        serde_json::Value::Object(outcomes).to_string(),
    )
    .expect("writing recording outcomes");
}

fn codec(c: &mut Criterion) {
    let mut group = c.benchmark_group("codec");
    let payload = vec![b'x'; 32 * 1024];
    group.throughput(Throughput::Bytes(payload.len() as u64));
    let mut message = BytesMut::new();
    codec::begin_frame(&mut message, codec::STDOUT, payload.len());
    message.extend_from_slice(&payload);
    let message = message.freeze();
    group.bench_function("decode_32k", |b| {
        b.iter(|| Frame::decode(black_box(message.clone())).unwrap())
    });
    let mut buf = BytesMut::new();
    group.bench_function("encode_32k_read_behind_channel_byte", |b| {
        b.iter(|| {
            codec::begin_frame(&mut buf, codec::STDOUT, payload.len());
            buf.extend_from_slice(black_box(&payload));
            black_box(buf.split().freeze())
        })
    });
    let frame = Frame::Stdout(Bytes::from(payload.clone()));
    group.bench_function("encode_32k_copying", |b| {
        b.iter(|| black_box(&frame).encode())
    });
    group.finish();
}

criterion_group!(benches, codec, stdout_throughput, observed_throughput);
criterion_main!(benches);
