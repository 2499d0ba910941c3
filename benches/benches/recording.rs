//! Recording: encoding 1 million output events in asciicast v2 and v3 (events per second), to
//! nothing (the encoder alone) and to a file on local disk (as the agent writes, batched).

use std::hint::black_box;
use std::io;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use kdbg_recordings::{Format, Header, Recorder};

/// Events per measured recording.
pub const EVENTS: u64 = 1_000_000;

/// One line of a program's output, as a terminal gets it.
const LINE: &[u8] =
    b"2026-11-30T07:12:03.123Z INFO served GET /api/v1/items/12345 status=200 in 3.2ms\r\n";

fn encode<W: io::Write>(format: Format, out: W, batch: usize) -> Duration {
    let start = Instant::now();
    let mut recording = Recorder::new(format, out)
        .batched(batch)
        .start(&Header::new(80, 24))
        .expect("header");
    for i in 0..EVENTS {
        let at = Duration::from_micros(i * 250);
        recording.write_output(at, black_box(LINE)).expect("event");
    }
    recording.finish().expect("finish");
    start.elapsed()
}

fn encoding(c: &mut Criterion) {
    let mut group = c.benchmark_group("record");
    group.throughput(Throughput::Elements(EVENTS));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    let dir = kdbg_benches::figures_dir().join("scratch");
    std::fs::create_dir_all(&dir).expect("scratch directory");
    for (name, format) in [("v2", Format::V2), ("v3", Format::V3)] {
        group.bench_function(BenchmarkId::new("encode", name), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| encode(format, io::sink(), 64 << 10))
                    .sum()
            })
        });
        let path = dir.join(format!("bench.{name}.cast"));
        group.bench_function(BenchmarkId::new("file", name), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        let file = std::fs::File::create(&path).expect("bench file");
                        let took = encode(format, file, 64 << 10);
                        let _ = std::fs::remove_file(&path);
                        took
                    })
                    .sum()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, encoding);
criterion_main!(benches);
