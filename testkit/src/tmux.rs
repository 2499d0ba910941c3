//! A real terminal for interactive tests: a tmux server of the test's own, whose windows run
//! commands and whose screens the test reads.

use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::text;

/// A tmux server (its own socket), killed when dropped.
pub struct Tmux {
    socket: String,
}

impl Tmux {
    /// A new server; `tag` names it in `tmux ls`.
    pub fn new(tag: &str) -> Tmux {
        static N: AtomicUsize = AtomicUsize::new(0);
        Tmux {
            socket: format!(
                "kdbg-{tag}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ),
        }
    }

    /// Runs tmux with `args` on this server.
    pub fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("tmux")
    }

    /// A new session `name`, `cols` x `rows`, running `command` (a shell line).
    pub fn start(&self, name: &str, cols: u16, rows: u16, command: &str) {
        let out = self.run(&[
            "new-session",
            "-d",
            "-s",
            name,
            "-x",
            &cols.to_string(),
            "-y",
            &rows.to_string(),
            command,
        ]);
        assert!(out.status.success(), "tmux: {}", text(&out.stderr));
    }

    /// What session `name`'s screen shows.
    pub fn screen(&self, name: &str) -> String {
        text(&self.run(&["capture-pane", "-t", name, "-p"]).stdout)
    }

    /// Waits (at most 20 s) until session `name`'s screen shows `needle`; returns the screen.
    pub fn wait_for(&self, name: &str, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let s = self.screen(name);
            if s.contains(needle) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "{name} never showed {needle:?}:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Types `line` into session `name`, again every second, until its screen shows `needle`
    /// (at most 20 s); returns the screen. For what takes effect a moment after the test acts,
    /// such as a resize reaching the terminal of a process in a container.
    pub fn retype_until(&self, name: &str, line: &str, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            self.line(name, line);
            let typed = Instant::now();
            while typed.elapsed() < Duration::from_secs(1) {
                let s = self.screen(name);
                if s.contains(needle) {
                    return s;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            assert!(
                Instant::now() < deadline,
                "{name} never showed {needle:?} after {line:?}:\n{}",
                self.screen(name)
            );
        }
    }

    /// Types `keys` (tmux key names, e.g. `Enter`) into session `name`.
    pub fn keys(&self, name: &str, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", name];
        args.extend(keys);
        self.run(&args);
    }

    /// Types a line and Enter into session `name`.
    pub fn line(&self, name: &str, line: &str) {
        self.keys(name, &[line, "Enter"]);
    }

    /// Resizes session `name`'s window.
    pub fn resize(&self, name: &str, cols: u16, rows: u16) {
        self.run(&[
            "resize-window",
            "-t",
            name,
            "-x",
            &cols.to_string(),
            "-y",
            &rows.to_string(),
        ]);
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        self.run(&["kill-server"]);
    }
}

/// `command` as one shell line: its environment, program and arguments, quoted.
pub fn shell_line(command: &Command) -> String {
    let quote = |s: &std::ffi::OsStr| format!("'{}'", s.to_string_lossy().replace('\'', "'\\''"));
    let mut words = vec!["env".to_owned()];
    for (key, value) in command.get_envs() {
        if let Some(value) = value {
            words.push(quote(
                format!("{}={}", key.to_string_lossy(), value.to_string_lossy()).as_ref(),
            ));
        }
    }
    words.push(quote(command.get_program()));
    words.extend(command.get_args().map(quote));
    words.join(" ")
}
