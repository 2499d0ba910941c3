//! What the agent asks of `kdbg-init hold`'s spawner (spawner.rs): one session's process to
//! start. Pure functions of `kdbg-init` (a module of it; the agent's tests include it too, to
//! check it reads what `kdbg_runtimes::init::spawn_request` writes).
//!
//! A request is a little-endian `u32` length, then that many bytes: NUL-terminated fields,
//! `1` (the version), the streams (`t` for a terminal, `i`, `o`, `e` for stdin, stdout and
//! stderr attached, or `-`), the number of arguments, the arguments, then environment entries
//! (`NAME=value`) to the end. Without a terminal, the descriptors of the attached streams come
//! with it (`SCM_RIGHTS`), in the order stdin, stdout, stderr.

/// The directory the agent mounts into each debug container for its spawner.
pub const SPAWN_DIR: &str = "/.kubectl-debug/spawn";

/// The spawner's socket, in [`SPAWN_DIR`].
pub const SPAWN_SOCKET: &str = "/.kubectl-debug/spawn/sock";

/// The largest request read: arguments and environment of one command.
pub const MAX_REQUEST: usize = 1024 * 1024;

/// A session's process to start.
#[derive(Debug, PartialEq, Eq)]
pub struct Request {
    /// Run it in a new terminal (its master goes back to the agent).
    pub tty: bool,
    /// Which of stdin, stdout and stderr come as descriptors (without a terminal).
    pub streams: [bool; 3],
    /// The command (`kdbg-init run ...`).
    pub args: Vec<String>,
    /// Entries to add to (or replace in) the container's environment.
    pub env: Vec<String>,
}

impl Request {
    /// How many descriptors come with the request.
    pub fn descriptors(&self) -> usize {
        if self.tty {
            0
        } else {
            self.streams.iter().filter(|s| **s).count()
        }
    }
}

/// Reads a request's payload (without its length).
pub fn decode(payload: &[u8]) -> Result<Request, String> {
    let text = std::str::from_utf8(payload).map_err(|_| "the request is not UTF-8".to_owned())?;
    let mut fields = text
        .strip_suffix('\0')
        .ok_or("the request does not end with NUL")?
        .split('\0');
    if fields.next() != Some("1") {
        return Err("the request's version is not 1".into());
    }
    let streams = fields.next().ok_or("the request has no streams")?;
    if streams.is_empty() || !streams.chars().all(|c| "tioe-".contains(c)) {
        return Err(format!(
            "the request's streams {streams:?} are not [tioe] or -"
        ));
    }
    let argc: usize = fields
        .next()
        .and_then(|n| n.parse().ok())
        .ok_or("the request has no argument count")?;
    let args: Vec<String> = fields.by_ref().take(argc).map(str::to_owned).collect();
    if args.len() != argc || argc == 0 {
        return Err("the request's arguments are fewer than it says, or none".into());
    }
    let env: Vec<String> = fields.map(str::to_owned).collect();
    if let Some(bad) = env.iter().find(|e| !e.contains('=')) {
        return Err(format!(
            "the request's environment entry {bad:?} has no '='"
        ));
    }
    Ok(Request {
        tty: streams.contains('t'),
        streams: [
            streams.contains('i'),
            streams.contains('o'),
            streams.contains('e'),
        ],
        args,
        env,
    })
}
