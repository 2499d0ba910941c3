//! Tests' own directories under the temporary directory, removed when the test is done.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A directory of one test's own, `kdbg-NAME-PID-N` under the temporary directory, made
/// empty. Dropped, it is removed; when the test is failing it is kept and named, for a look.
/// Declared before the agent or container that uses it, it outlives them.
pub struct Scratch(PathBuf);

impl Scratch {
    /// A new, empty directory for the test that calls it.
    pub fn new(name: &str) -> Scratch {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "kdbg-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot make {}: {e}", dir.display()));
        Scratch(dir)
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept for a look: {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Scratch;

    #[test]
    fn a_scratch_directory_is_new_and_gone_when_dropped() {
        let a = Scratch::new("scratch-test");
        let b = Scratch::new("scratch-test");
        assert_ne!(a.path(), b.path());
        std::fs::write(a.join("file"), "x").unwrap();
        std::fs::create_dir(a.join("dir")).unwrap();
        let path = a.path().to_owned();
        drop(a);
        assert!(!path.exists());
        assert!(b.is_dir());
    }
}
