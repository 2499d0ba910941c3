//! `kdbg-init`, built by the build script from `init/kdbg-init.rs` and embedded here: the
//! agent writes it where the node's runtime can bind-mount it into every debug container
//! (`runtime.initDir`), as its main process (`hold`) and around every session's command
//! (`run`).

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The binary.
pub const BINARY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/kdbg-init"));

/// Why `kdbg-init` could not be put in place.
#[derive(Debug, thiserror::Error)]
#[error(
    "writing kdbg-init into {dir} (runtime.initDir; the node's runtime must see the same path)"
)]
pub struct InstallError {
    /// The directory.
    pub dir: String,
    /// Why.
    pub source: std::io::Error,
}

/// Writes `kdbg-init` into `dir` (made, mode 0755, if need be), unless the same binary is
/// there already; returns its path. The file is replaced atomically (written aside, then
/// renamed), so containers that bind-mounted an older one keep theirs. What a copy of a pod
/// holds still with (`--install-init`): one binary in a directory of its own.
pub fn install(dir: &Path) -> Result<PathBuf, InstallError> {
    install_as(dir, "kdbg-init")
}

/// [`install`] under a name of this build's own, `kdbg-init-<hash of the binary>`: what the
/// agent bind-mounts into debug containers from `runtime.initDir`, which every agent of the
/// node shares. Two agents of different versions on one node (a rolling upgrade, an agent
/// started on demand beside the DaemonSet's) each give their containers their own binary,
/// instead of the last to start replacing the other's under it.
pub fn install_own(dir: &Path) -> Result<PathBuf, InstallError> {
    let digest = ring::digest::digest(&ring::digest::SHA256, BINARY);
    let hex: String = digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    install_as(dir, &format!("kdbg-init-{hex}"))
}

fn install_as(dir: &Path, name: &str) -> Result<PathBuf, InstallError> {
    let failed = |source| InstallError {
        dir: dir.display().to_string(),
        source,
    };
    let path = dir.join(name);
    if std::fs::read(&path).is_ok_and(|current| current == BINARY) {
        return Ok(path);
    }
    std::fs::create_dir_all(dir).map_err(failed)?;
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let aside = dir.join(format!(".kdbg-init.{}.{n}", std::process::id()));
    let written = (|| {
        let mut file = std::fs::File::create(&aside)?;
        file.write_all(BINARY)?;
        file.set_permissions(std::fs::Permissions::from_mode(0o755))?;
        file.sync_all()?;
        std::fs::rename(&aside, &path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&aside);
        return Err(failed(e));
    }
    Ok(path)
}

/// `kdbg-init`'s pure part: `/target` and the `PATH` of `--chroot` sessions.
#[cfg(test)]
#[path = "../init/target_root.rs"]
mod target_root;

/// `kdbg-init`'s pure part: what its spawner reads.
#[cfg(test)]
#[path = "../init/spawn_request.rs"]
mod spawn_request;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_root_and_the_path_of_chroot_sessions() {
        use target_root::*;
        assert_eq!(TARGET_PID_ENV, kdbg_runtimes::init::TARGET_PID_ENV);
        assert_eq!(TARGET_LINK, "/target");
        assert_eq!(target_pid(None), 1);
        assert_eq!(target_pid(Some("4242")), 4242);
        for bad in ["", "0", "-3", "x"] {
            assert_eq!(target_pid(Some(bad)), 1, "{bad:?}");
        }
        assert_eq!(proc_root(7), "/proc/7/root");
        assert_eq!(
            chroot_path(Some("/usr/bin:/bin/:relative"), "/proc/9/root"),
            "/usr/bin:/bin/:relative:/proc/9/root/usr/bin:/proc/9/root/bin"
        );
        let default = chroot_path(None, "/proc/9/root");
        assert!(default.starts_with(DEFAULT_PATH), "{default}");
        assert!(
            default.ends_with(":/proc/9/root/sbin:/proc/9/root/bin"),
            "{default}"
        );
        assert_eq!(chroot_path(Some(""), "/d"), chroot_path(None, "/d"));
        // The way out it names is true: exactly the profiles with CAP_SYS_PTRACE.
        for profile in kdbg_runtimes::Profile::ALL {
            assert_eq!(
                NEEDS_PTRACE.contains(profile.name()),
                profile.capabilities().contains(&"SYS_PTRACE"),
                "{profile}"
            );
        }
    }

    #[test]
    fn the_spawner_reads_what_the_runtimes_ask() {
        use kdbg_runtimes::ProcessSpec;
        use spawn_request::{MAX_REQUEST, Request, SPAWN_DIR, SPAWN_SOCKET, decode};
        assert_eq!(SPAWN_DIR, kdbg_runtimes::init::SPAWN_DIR);
        assert_eq!(
            SPAWN_SOCKET,
            format!("{SPAWN_DIR}/{}", kdbg_runtimes::init::SPAWN_SOCKET)
        );
        let mut process = ProcessSpec {
            session: "s1".into(),
            command: vec!["sh".into(), "-c".into(), String::new(), "x=1".into()],
            tty: false,
            stdin: true,
            stdout: true,
            stderr: true,
            grace: std::time::Duration::from_secs(3),
            target_pid: Some(42),
            chroot: false,
        };
        let read = |process: &ProcessSpec| {
            let request = kdbg_runtimes::init::spawn_request(process);
            let len = u32::from_le_bytes(request[..4].try_into().unwrap()) as usize;
            assert_eq!(len, request.len() - 4);
            assert!(len < MAX_REQUEST);
            decode(&request[4..]).unwrap()
        };
        // Empty arguments and arguments with '=' stay arguments.
        assert_eq!(
            read(&process),
            Request {
                tty: false,
                streams: [true, true, true],
                args: kdbg_runtimes::init::run_args(&process),
                env: vec!["KDBG_TARGET_PID=42".into()],
            }
        );
        assert_eq!(read(&process).descriptors(), 3);
        process.tty = true;
        process.target_pid = None;
        let terminal = read(&process);
        assert!(terminal.tty);
        assert_eq!(
            terminal.descriptors(),
            0,
            "a terminal is the spawner's to open"
        );
        assert_eq!(terminal.env, ["TERM=xterm"]);
        process.tty = false;
        process.stdin = false;
        process.stderr = false;
        assert_eq!(read(&process).streams, [false, true, false]);
        assert_eq!(read(&process).descriptors(), 1);
        process.stdout = false;
        assert_eq!(read(&process).descriptors(), 0);
        // What is not a request is refused, saying why.
        for (bad, why) in [
            ("2|-|1|sh|", "version"),
            ("1|x|1|sh|", "streams"),
            ("1|-|3|sh|", "fewer"),
            ("1|-|1|sh|NOEQUALS|", "'='"),
            ("1|-|1|sh", "NUL"),
            ("1|-|0|", "none"),
        ] {
            let error = decode(bad.replace('|', "\0").as_bytes()).unwrap_err();
            assert!(error.contains(why), "{error}");
        }
    }

    #[test]
    fn the_embedded_init_is_a_static_executable_that_installs_once() {
        assert_eq!(&BINARY[..4], b"\x7fELF");
        let dir = std::env::temp_dir().join(format!("kdbg-init-test-{}", std::process::id()));
        let path = install(&dir).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
        // Another test forking meanwhile may hold our write descriptor for a moment (until its
        // child execs): "text file busy" then, so a few tries.
        let out = (0..50)
            .find_map(|_| {
                match std::process::Command::new(&path)
                    .args([
                        "run",
                        "--session",
                        "t",
                        "--grace",
                        "1",
                        "--",
                        "sh",
                        "-c",
                        "exit 7",
                    ])
                    .status()
                {
                    Err(e) if e.raw_os_error() == Some(26) => {
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        None
                    }
                    other => Some(other.unwrap()),
                }
            })
            .expect("kdbg-init stayed busy");
        assert_eq!(out.code(), Some(7));
        // A second install of the same binary leaves the file alone.
        let inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&path).unwrap());
        install(&dir).unwrap();
        let again = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&path).unwrap());
        assert_eq!(inode, again);
        // The agent's own name is this build's: another build's binary is left alone.
        let own = install_own(&dir).unwrap();
        assert_ne!(own, path);
        assert!(
            own.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("kdbg-init-")
        );
        assert_eq!(std::fs::read(&own).unwrap(), BINARY);
        assert_eq!(install_own(&dir).unwrap(), own);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
