//! Builds `kdbg-init` (init/kdbg-init.rs), the small init every debug container runs, as a
//! static binary the agent embeds: `rustc` alone, no crates, `crt-static`, so it runs in any
//! image. See the file's own documentation for what it does.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let source = "init/kdbg-init.rs";
    println!("cargo:rerun-if-changed={source}");
    println!("cargo:rerun-if-changed=init/target_root.rs");
    println!("cargo:rerun-if-changed=init/archive.rs");
    println!("cargo:rerun-if-changed=init/copy.rs");
    println!("cargo:rerun-if-changed=init/spawn_request.rs");
    println!("cargo:rerun-if-changed=init/spawner.rs");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let target = std::env::var("TARGET").expect("cargo sets TARGET");
    let status = Command::new(&rustc)
        .args([
            "--edition",
            "2024",
            "--crate-name",
            "kdbg_init",
            "--target",
            &target,
        ])
        .args(["-C", "target-feature=+crt-static"])
        .args([
            "-C",
            "opt-level=s",
            "-C",
            "panic=abort",
            "-C",
            "strip=symbols",
        ])
        .arg("-o")
        .arg(out.join("kdbg-init"))
        .arg(source)
        .status()
        .unwrap_or_else(|e| panic!("running {rustc} for {source}: {e}"));
    assert!(status.success(), "{rustc} could not build {source}");
}
