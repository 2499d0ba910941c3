//! Keystroke round trips through a command that echoes its stdin (`cat`): one byte written to
//! its stdin, read back from its stdout, `N` times after 200 unmeasured ones. Prints the
//! median and the 99th percentile in microseconds as JSON.
//!
//! `echo-latency N -- COMMAND ARGS...`, e.g. `echo-latency 2000 -- docker exec -i T cat`.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const WARMUP: usize = 200;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: echo-latency N -- COMMAND ARGS...";
    let n: usize = args.first().and_then(|n| n.parse().ok()).expect(usage);
    let command = args
        .iter()
        .position(|a| a == "--")
        .map(|i| &args[i + 1..])
        .filter(|c| !c.is_empty())
        .expect(usage);
    let mut child = Command::new(&command[0])
        .args(&command[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting the command");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut times = Vec::with_capacity(n);
    let mut byte = [0u8; 1];
    for i in 0..WARMUP + n {
        let start = Instant::now();
        stdin.write_all(b"k").expect("typing");
        stdin.flush().expect("typing");
        stdout.read_exact(&mut byte).expect("the echo");
        if i >= WARMUP {
            times.push(start.elapsed());
        }
    }
    drop(stdin);
    let _ = child.wait();
    times.sort_unstable();
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "{{\"n\": {n}, \"p50_us\": {:.1}, \"p99_us\": {:.1}}}",
        us(at(0.5)),
        us(at(0.99))
    );
}
