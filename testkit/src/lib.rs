//! Test support shared by the end-to-end tests and the benchmarks: the real engines, target
//! containers, the real binaries, and the Kubernetes API stand-in.
//!
//! The tests need the test world `scripts/test-world` sets up (a Docker engine and containerd on
//! private sockets, loopback registries, the test image) and every binary of the workspace
//! built. Every helper that needs it checks it first ([`require_world`]): without it, the test
//! process ends at once with one line that says to run `scripts/test`, rather than with a
//! panic per test deep in here.

pub mod apiserver;
pub mod engine;
pub mod images;
pub mod tmux;
pub mod token;
pub mod users;
pub mod ws;

mod checks;
mod process;
mod scratch;
mod targets;
mod wait;
mod world;

pub use checks::*;
pub use process::*;
pub use scratch::Scratch;
pub use targets::*;
pub use wait::*;
pub use world::*;

pub use kdbg_runtimes::containerd::DEBUG_NAMESPACE;
pub use kdbg_runtimes::label::TARGET as LABEL_TARGET;
