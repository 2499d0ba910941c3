//! Files read from inside a target's root filesystem, without ever leaving it.
//!
//! The debug container gets a copy of the target's `/etc/resolv.conf` and `/etc/hosts`, so
//! names resolve as the target resolves them. The target's owner controls those paths: a
//! symlink `/etc/resolv.conf -> /etc/shadow`, followed from the node's root (as a bind mount of
//! `/proc/<pid>/root/etc/resolv.conf` would be), would hand the node's file to whoever debugs.
//! So the file is opened with `openat2(RESOLVE_IN_ROOT)` (symlinks resolve inside the target's
//! root) as a path only, must be a regular file before anything reads it, is size-capped, and
//! is copied, never bind-mounted.

use std::io::{self, Read};
use std::path::{Path, PathBuf};

use std::os::fd::AsRawFd;

use rustix::fs::{FileType, Mode, OFlags, ResolveFlags, fstat, open, openat2};

/// The most read from one file.
const MAX_BYTES: u64 = 64 * 1024;

/// `relative` (e.g. `etc/resolv.conf`) read inside the root of process `pid`.
pub(super) fn read_in_root(pid: u32, relative: &str) -> io::Result<Vec<u8>> {
    read_under(Path::new(&format!("/proc/{pid}/root")), relative)
}

fn read_under(root: &Path, relative: &str) -> io::Result<Vec<u8>> {
    let root = open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    // Found as a path only (O_PATH opens nothing: no device driver runs, no FIFO blocks),
    // checked to be a regular file, and only then opened for reading through our own fd.
    let found = openat2(
        &root,
        relative,
        OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )?;
    if FileType::from_raw_mode(fstat(&found)?.st_mode) != FileType::RegularFile {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{relative} is not a regular file"),
        ));
    }
    let file = std::fs::File::from(open(
        format!("/proc/self/fd/{}", found.as_raw_fd()),
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::empty(),
    )?);
    let mut data = Vec::new();
    file.take(MAX_BYTES).read_to_end(&mut data)?;
    Ok(data)
}

/// Copies the target's name-resolution files into `dir`; returns `(copy, destination)` pairs
/// for the files the target has. Files it lacks (or that are not regular files) are skipped.
pub(super) fn copy_name_resolution(pid: u32, dir: &Path) -> Vec<(PathBuf, &'static str)> {
    let mut mounts = Vec::new();
    for (relative, destination) in [
        ("etc/resolv.conf", "/etc/resolv.conf"),
        ("etc/hosts", "/etc/hosts"),
    ] {
        let copy = dir.join(relative.replace('/', "-"));
        match read_in_root(pid, relative).and_then(|data| std::fs::write(&copy, data)) {
            Ok(()) => mounts.push((copy, destination)),
            Err(e) => {
                tracing::debug!(pid, file = relative, error = %e, "not copying from the target")
            }
        }
    }
    mounts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_resolve_inside_the_root_and_only_regular_files_are_read() {
        let root = std::env::temp_dir().join(format!("kdbg-root-{}", std::process::id()));
        let etc = root.join("etc");
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(etc.join("hosts"), b"10.0.0.1 db\n").unwrap();
        std::fs::write(etc.join("passwd"), b"inside\n").unwrap();
        // Absolute and climbing links: followed from the node's root they would reach its files.
        std::os::unix::fs::symlink("/etc/passwd", etc.join("resolv.conf")).unwrap();
        std::os::unix::fs::symlink("../../../../../../etc/passwd", etc.join("climb")).unwrap();
        std::fs::create_dir_all(etc.join("dir")).unwrap();

        assert_eq!(read_under(&root, "etc/hosts").unwrap(), b"10.0.0.1 db\n");
        assert_eq!(read_under(&root, "etc/resolv.conf").unwrap(), b"inside\n");
        assert_eq!(read_under(&root, "etc/climb").unwrap(), b"inside\n");
        assert!(read_under(&root, "etc/dir").is_err());
        assert!(read_under(&root, "etc/absent").is_err());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
