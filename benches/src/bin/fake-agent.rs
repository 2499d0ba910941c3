//! `fake-agent LISTEN linger|echo`: the real agent (HTTP endpoints, sessions, relay, reaper)
//! over the in-tree fake runtime, as its own process, so a benchmark can measure what an agent
//! process holds per session without a container engine's cost in the figures. Prints
//! `ready` once it listens; ends on stdin's EOF.

use kdbg_agent::Settings;
use kdbg_runtimes::AnyRuntime;
use kdbg_runtimes::fake::{FakeRuntime, Script};
use tokio::io::AsyncReadExt;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, listen, mode] = &args[..] else {
        eprintln!("usage: fake-agent LISTEN linger|echo");
        std::process::exit(2);
    };
    let script = match mode.as_str() {
        "linger" => Script {
            linger: true,
            ..Script::default()
        },
        "echo" => Script {
            echo_stdin: true,
            ..Script::default()
        },
        other => {
            eprintln!("fake-agent: unknown mode {other:?}");
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async move {
        let fake = FakeRuntime::new(script);
        fake.add_target("t1", "running");
        fake.add_image("tools:1");
        let listener = tokio::net::TcpListener::bind(listen.as_str())
            .await
            .expect("listening");
        let settings = Settings {
            init_dir: std::env::temp_dir().join("kdbg-bench-init"),
            // Every session of the run at once, whoever and wherever: no policy limit.
            policy: kdbg_agent::config::Policy {
                max_sessions: kdbg_agent::config::MaxSessions::UNLIMITED,
                ..Default::default()
            },
            ..Settings::default()
        };
        let (agent, _) = kdbg_agent::spawn(AnyRuntime::Fake(fake), settings, listener)
            .expect("starting the agent");
        println!("ready");
        let mut stdin = tokio::io::stdin();
        let mut sink = [0u8; 64];
        while stdin.read(&mut sink).await.is_ok_and(|n| n > 0) {}
        agent.cancel();
    });
}
