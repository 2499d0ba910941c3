//! Keystroke round trip over loopback: 1 byte of stdin -> echo -> stdout, p50 and p99.
//! Criterion reports means and medians only, so this target measures its own quantiles and
//! leaves them for the report.

use kdbg_benches::{figures_dir, keystrokes, quantile, runtime};

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not, and then one quick pass
    // proves the target works without pretending to measure.
    let measuring = std::env::args().any(|a| a == "--bench");
    let (n, warmup) = if measuring {
        (20_000, 2_000)
    } else {
        (200, 20)
    };
    let rt = runtime();
    let mut times = rt.block_on(keystrokes(n, warmup));
    let p50 = quantile(&mut times, 0.50);
    let p99 = quantile(&mut times, 0.99);
    println!("keystroke round trip over {n} keystrokes: p50 {p50:?}, p99 {p99:?}");
    if measuring {
        let dir = figures_dir();
        std::fs::create_dir_all(&dir).expect("figures dir");
        let json = serde_json::json!({
            "n": n,
            "p50_us": p50.as_secs_f64() * 1e6,
            "p99_us": p99.as_secs_f64() * 1e6,
        });
        std::fs::write(dir.join("keystroke.json"), json.to_string()).expect("write figures");
    }
}
