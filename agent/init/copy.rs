//! `kdbg-init pack` and `kdbg-init unpack`: the debug container's end of `kubectl-debug cp`
//! (the archive itself is [`crate::archive`]).
//!
//! - `kdbg-init pack [--root DIR] [--size] PATH`: a tar of the target's `PATH` on stdout;
//!   with `--size`, first `kdbg-cp: size BYTES` on stderr (for a progress bar).
//! - `kdbg-init unpack [--root DIR] [--into] PATH`: a tar from stdin into the target's
//!   `PATH`, as `cp` would (into it if it is a directory, else as it); with `--into`, into
//!   directory `PATH` as the archive names its entries (`kubectl-debug cp - POD:DIR`).
//!
//! The target's root is DIR, else `$TARGET_ROOT` (which `kdbg-init run` sets), else
//! `/proc/<$KDBG_TARGET_PID or 1>/root`, which the process enters (`chroot(2)`) when it may.
//! Messages are one line each on stderr, prefixed with
//! [`crate::archive::MESSAGE_PREFIX`]; exit 1 when something could not be copied, 2 on a
//! usage error.

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::archive;
use crate::target_root;

/// Runs `pack` (`unpack` if `unpacking`) with the arguments after the verb.
pub fn main(unpacking: bool, args: &[OsString]) -> ExitCode {
    let mut root: Option<PathBuf> = None;
    let mut into = false;
    let mut size = false;
    let mut path: Option<&OsString> = None;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_bytes() {
            b"--root" => match rest.next() {
                Some(dir) => root = Some(dir.into()),
                None => return usage(),
            },
            b"--into" if unpacking => into = true,
            b"--size" if !unpacking => size = true,
            _ if path.is_none() => path = Some(arg),
            _ => return usage(),
        }
    }
    let Some(path) = path else {
        return usage();
    };
    let targets = root.is_none();
    let root = root.unwrap_or_else(|| match std::env::var_os("TARGET_ROOT") {
        Some(root) if !root.is_empty() => root.into(),
        _ => target_root::proc_root(target_root::target_pid(
            std::env::var(target_root::TARGET_PID_ENV).ok().as_deref(),
        ))
        .into(),
    });
    // In the target's root, the kernel keeps every path inside it, even one a process of the
    // target changes meanwhile; without CAP_SYS_CHROOT (a debug image's user other than
    // root), paths are resolved inside it here (archive::resolve_in), as they are anyway.
    let root = match std::os::unix::fs::chroot(&root).and_then(|()| std::env::set_current_dir("/"))
    {
        Ok(()) => PathBuf::from("/"),
        Err(_) => {
            // Said once, with the way out, rather than as every path's own failure.
            if targets
                && let Err(e) = std::fs::read_dir(&root)
                && e.kind() == std::io::ErrorKind::PermissionDenied
            {
                eprintln!(
                    "{}{}: cannot reach the target's files: {} ({})",
                    archive::MESSAGE_PREFIX,
                    archive::show(path.as_bytes()),
                    archive::plain(&e),
                    target_root::NEEDS_PTRACE
                );
                return ExitCode::from(1);
            }
            root
        }
    };
    let path = path.as_bytes();
    let mut stderr = std::io::stderr();
    let mut warn = |line: String| {
        let _ = writeln!(stderr, "{}{line}", archive::MESSAGE_PREFIX);
    };
    let ok = if unpacking {
        let (dir, rename) = match archive::destination(&root, path, into) {
            Ok(found) => found,
            Err(e) => {
                warn(format!("{}: {}", archive::show(path), archive::plain(&e)));
                return ExitCode::from(1);
            }
        };
        let mut stdin = std::io::stdin().lock();
        let shown_dir = if rename.is_some() {
            path.rsplit_once_slash()
        } else {
            path.to_vec()
        };
        match archive::unpack(&mut stdin, &dir, rename.as_deref(), 0o7777, &shown_dir, &mut warn) {
            Ok(ok) => ok,
            Err(stop) => {
                warn(format!("{}: {stop}", archive::show(path)));
                false
            }
        }
    } else {
        if size && let Ok(found) = archive::resolve_in(&root, path, path.ends_with(b"/")) {
            warn(format!("size {}", archive::size_of(&found.real)));
        }
        let stdout = std::io::stdout().lock();
        let mut out = std::io::BufWriter::with_capacity(128 * 1024, stdout);
        match archive::pack(&root, path, path, &mut out, &mut warn) {
            Ok(ok) => ok,
            Err(e) => {
                warn(format!("{}: {}", archive::show(path), archive::plain(&e)));
                false
            }
        }
    };
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// The directory part of a path as the user wrote it (`/` for a top-level name, `.` for a
/// bare one).
trait Parent {
    fn rsplit_once_slash(&self) -> Vec<u8>;
}

impl Parent for [u8] {
    fn rsplit_once_slash(&self) -> Vec<u8> {
        let trimmed = self.strip_suffix(b"/").unwrap_or(self);
        match trimmed.iter().rposition(|&b| b == b'/') {
            Some(0) => b"/".to_vec(),
            Some(at) => trimmed[..at].to_vec(),
            None => b".".to_vec(),
        }
    }
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: kdbg-init pack [--root DIR] [--size] PATH | unpack [--root DIR] [--into] PATH"
    );
    ExitCode::from(2)
}
