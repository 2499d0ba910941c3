//! Tar archives of files and directory trees, written and read with the standard library
//! alone: `kdbg-init pack` and `kdbg-init unpack` (`kubectl-debug cp` in the debug
//! container), and the plugin's own end of `cp` (which includes this file as a module), so
//! that neither the target nor the debug image needs `tar`.
//!
//! The format is GNU tar's: ustar headers, with `././@LongLink` entries for names and link
//! targets longer than 100 bytes and base-256 numbers for sizes past 8 GiB; any `tar` reads
//! it. Names are bytes (newlines and non-UTF-8 bytes kept). The reader also takes POSIX pax
//! archives (`path`, `linkpath`, `size`, `mtime` records), as `tar` and `bsdtar` write them.
//!
//! Paths are resolved inside a root (the target's, `/proc/<pid>/root`; `/` on the plugin's
//! side) as if it were `/`: a symlink, absolute or with `..`, never leads out of it
//! ([`resolve_in`]). Packing never follows a symlink in the tree (it is archived as a
//! symlink); unpacking refuses a name that is absolute or has a `..` component, never writes
//! through a symlink (an existing one in the way is replaced, one in the middle of a name
//! refused), and keeps modes and modification times (not owners: files belong to whoever
//! unpacks them).

use std::ffi::OsStr;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const BLOCK: usize = 512;
/// Symlinks followed in one resolution before giving up, as Linux does (`ELOOP`).
const MAX_LINKS: usize = 40;
const ELOOP: i32 = 40;
const ENOTDIR: i32 = 20;
const EISDIR: i32 = 21;
#[cfg(any(target_arch = "aarch64", target_arch = "arm"))]
const O_NOFOLLOW: i32 = 0o100000;
#[cfg(not(any(target_arch = "aarch64", target_arch = "arm")))]
const O_NOFOLLOW: i32 = 0o400000;

/// The prefix of every message `pack` and `unpack` write on stderr in the debug container, so
/// the plugin tells them from other output: `kdbg-cp: PATH: reason`, or
/// `kdbg-cp: warning: ...`.
pub const MESSAGE_PREFIX: &str = "kdbg-cp: ";

/// The components of `path`, without empty ones and `.`.
fn components(path: &[u8]) -> Vec<Vec<u8>> {
    path.split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .map(<[u8]>::to_vec)
        .collect()
}

fn under(root: &Path, parts: &[Vec<u8>]) -> PathBuf {
    let mut path = root.to_path_buf();
    for part in parts {
        path.push(OsStr::from_bytes(part));
    }
    path
}

/// `path` as a message shows it: one line, control bytes escaped, other bytes as UTF-8 where
/// they are.
pub fn show(path: &[u8]) -> String {
    let mut shown = String::new();
    for chunk in path.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\n' => shown.push_str("\\n"),
                '\\' => shown.push_str("\\\\"),
                c if c.is_control() => shown.push_str(&format!("\\x{:02x}", c as u32)),
                c => shown.push(c),
            }
        }
        for b in chunk.invalid() {
            shown.push_str(&format!("\\x{b:02x}"));
        }
    }
    shown
}

/// A path found inside a root.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// Where it is from here: under the root.
    pub real: PathBuf,
    /// Its components below the root (empty: the root itself).
    pub inside: Vec<Vec<u8>>,
}

/// Resolves `path` inside `root` as if `root` were `/`: `..` stops at the root, and symlinks
/// are followed relative to it (an absolute one from the root), so none leads out. The last
/// component is followed only if `follow_last`; it may be missing (the caller finds out).
pub fn resolve_in(root: &Path, path: &[u8], follow_last: bool) -> io::Result<Resolved> {
    let mut pending: Vec<Vec<u8>> = components(path);
    pending.reverse();
    let mut inside: Vec<Vec<u8>> = Vec::new();
    let mut links = 0;
    while let Some(part) = pending.pop() {
        if part == b".." {
            inside.pop();
            continue;
        }
        let last = pending.is_empty();
        if last && !follow_last {
            inside.push(part);
            break;
        }
        let candidate = under(root, &inside).join(OsStr::from_bytes(&part));
        match fs::symlink_metadata(&candidate) {
            Ok(meta) if meta.file_type().is_symlink() => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(io::Error::from_raw_os_error(ELOOP));
                }
                let target = fs::read_link(&candidate)?;
                let target = target.as_os_str().as_bytes();
                if target.starts_with(b"/") {
                    inside.clear();
                }
                for part in components(target).into_iter().rev() {
                    pending.push(part);
                }
            }
            Ok(meta) => {
                if !last && !meta.is_dir() {
                    return Err(io::Error::from_raw_os_error(ENOTDIR));
                }
                inside.push(part);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound && last => inside.push(part),
            Err(e) => return Err(e),
        }
    }
    Ok(Resolved {
        real: under(root, &inside),
        inside,
    })
}

/// Where `unpack` puts an archive for destination `path` inside `root`, like `cp`: into
/// `path` if it is a directory (the archive's names kept), else into its parent, the
/// archive's top entry renamed to `path`'s last component. `into`: `path` must be a
/// directory (a tar stream unpacked as it is).
pub fn destination(root: &Path, path: &[u8], into: bool) -> io::Result<(PathBuf, Option<Vec<u8>>)> {
    let found = resolve_in(root, path, true)?;
    match fs::metadata(&found.real) {
        Ok(meta) if meta.is_dir() => return Ok((found.real, None)),
        Ok(_) if into => return Err(io::Error::from_raw_os_error(ENOTDIR)),
        Ok(_) => {}
        Err(e) if into || e.kind() != io::ErrorKind::NotFound => return Err(e),
        Err(_) => {}
    }
    let mut parent = found.inside;
    let name = parent
        .pop()
        .ok_or_else(|| io::Error::from_raw_os_error(ENOTDIR))?;
    let dir = under(root, &parent);
    if !fs::metadata(&dir)?.is_dir() {
        return Err(io::Error::from_raw_os_error(ENOTDIR));
    }
    Ok((dir, Some(name)))
}

/// The bytes of the regular files at or under `path` (symlinks not followed): what a copy of
/// it moves, but for the archive's headers.
pub fn size_of(path: &Path) -> u64 {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return 0;
    };
    if meta.is_dir() {
        fs::read_dir(path)
            .into_iter()
            .flatten()
            .flatten()
            .map(|entry| size_of(&entry.path()))
            .sum()
    } else if meta.is_file() {
        meta.len()
    } else {
        0
    }
}

/// What a copy met that did not stop it.
pub type Warn<'a> = &'a mut dyn FnMut(String);

/// Writes a tar of `path` (inside `root`; a symlink as the last component is archived as
/// such unless `path` ends with `/`) to `out`, its top entry named after `path`'s last
/// component. `Err` when `path` itself cannot be read; otherwise whether every entry below it
/// could be (each failure reported to `warn`, naming `shown` and the entry).
pub fn pack(
    root: &Path,
    path: &[u8],
    shown: &[u8],
    out: &mut dyn Write,
    warn: Warn<'_>,
) -> io::Result<bool> {
    let found = resolve_in(root, path, path.ends_with(b"/"))?;
    fs::symlink_metadata(&found.real)?;
    let name = found
        .inside
        .last()
        .cloned()
        .unwrap_or_else(|| b".".to_vec());
    let mut packer = Packer {
        out,
        shown: shown.to_vec(),
        ok: true,
        warn,
    };
    packer.entry(&found.real, &name, b"")?;
    packer.out.write_all(&[0; BLOCK * 2])?;
    packer.out.flush()?;
    Ok(packer.ok)
}

struct Packer<'a, 'w> {
    out: &'a mut dyn Write,
    shown: Vec<u8>,
    ok: bool,
    warn: Warn<'w>,
}

impl Packer<'_, '_> {
    fn failed(&mut self, below: &[u8], e: &io::Error) {
        let mut shown = self.shown.clone();
        shown.extend_from_slice(below);
        (self.warn)(format!("{}: {}", show(&shown), plain(e)));
        self.ok = false;
    }

    /// Archives `real` as `name`; `below` is its path below the top, for messages. Errors
    /// are the output's; the input's are reported and skipped.
    fn entry(&mut self, real: &Path, name: &[u8], below: &[u8]) -> io::Result<()> {
        let meta = match fs::symlink_metadata(real) {
            Ok(meta) => meta,
            Err(e) => {
                self.failed(below, &e);
                return Ok(());
            }
        };
        let mode = meta.mode() & 0o7777;
        let mtime = meta.mtime().max(0) as u64;
        let kind = meta.file_type();
        if kind.is_dir() {
            let mut dir_name = name.to_vec();
            dir_name.push(b'/');
            let children = fs::read_dir(real).and_then(|entries| {
                let mut names: Vec<Vec<u8>> = Vec::new();
                for entry in entries {
                    names.push(entry?.file_name().as_bytes().to_vec());
                }
                Ok(names)
            });
            write_header(self.out, &dir_name, b'5', mode, 0, mtime, b"")?;
            let mut children = match children {
                Ok(children) => children,
                Err(e) => {
                    self.failed(below, &e);
                    return Ok(());
                }
            };
            children.sort();
            for child in children {
                let mut child_name = dir_name.clone();
                child_name.extend_from_slice(&child);
                let mut child_below = below.to_vec();
                child_below.push(b'/');
                child_below.extend_from_slice(&child);
                self.entry(
                    &real.join(OsStr::from_bytes(&child)),
                    &child_name,
                    &child_below,
                )?;
            }
        } else if kind.is_symlink() {
            match fs::read_link(real) {
                Ok(target) => write_header(
                    self.out,
                    name,
                    b'2',
                    mode,
                    0,
                    mtime,
                    target.as_os_str().as_bytes(),
                )?,
                Err(e) => self.failed(below, &e),
            }
        } else if kind.is_file() {
            // Not through a symlink put there since: O_NOFOLLOW.
            let opened = fs::OpenOptions::new()
                .read(true)
                .custom_flags(O_NOFOLLOW)
                .open(real)
                .and_then(|file| {
                    let meta = file.metadata()?;
                    if meta.is_file() {
                        Ok((file, meta))
                    } else {
                        Err(io::Error::from_raw_os_error(EISDIR))
                    }
                });
            let (file, meta) = match opened {
                Ok(opened) => opened,
                Err(e) => {
                    self.failed(below, &e);
                    return Ok(());
                }
            };
            let size = meta.len();
            write_header(self.out, name, b'0', mode, size, mtime, b"")?;
            let mut copied = 0u64;
            let mut read_failed = false;
            let mut source = file.take(size);
            let mut buffer = vec![0u8; 64 * 1024];
            loop {
                match source.read(&mut buffer) {
                    Ok(0) => break,
                    Ok(n) => {
                        self.out.write_all(&buffer[..n])?;
                        copied += n as u64;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        self.failed(below, &e);
                        read_failed = true;
                        break;
                    }
                }
            }
            if copied < size {
                if !read_failed {
                    self.failed(below, &io::Error::other("it shrank while being copied"));
                }
                write_zeros(self.out, size - copied)?;
            }
            write_zeros(self.out, padding(size))?;
        } else {
            let mut shown = self.shown.clone();
            shown.extend_from_slice(below);
            (self.warn)(format!(
                "warning: {}: skipped: not a file, directory or symlink",
                show(&shown)
            ));
        }
        Ok(())
    }
}

/// An error as one plain phrase: "No such file or directory", without "(os error 2)".
pub fn plain(e: &io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error ") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

fn padding(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

fn write_zeros(out: &mut dyn Write, mut count: u64) -> io::Result<()> {
    let zeros = [0u8; BLOCK];
    while count > 0 {
        let n = count.min(BLOCK as u64) as usize;
        out.write_all(&zeros[..n])?;
        count -= n as u64;
    }
    Ok(())
}

/// A number in a header field: octal, or base-256 when it does not fit.
fn put_number(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    if digits >= 22 || value < 1 << (3 * digits) {
        let text = format!("{value:0digits$o}");
        field[..digits].copy_from_slice(text.as_bytes());
        field[digits] = 0;
    } else {
        field.fill(0);
        field[0] = 0x80;
        let bytes = value.to_be_bytes();
        let len = field.len();
        field[len - 8..].copy_from_slice(&bytes);
    }
}

fn header_block(
    name: &[u8],
    kind: u8,
    mode: u32,
    size: u64,
    mtime: u64,
    link: &[u8],
) -> [u8; BLOCK] {
    let mut block = [0u8; BLOCK];
    let name = &name[..name.len().min(100)];
    block[..name.len()].copy_from_slice(name);
    put_number(&mut block[100..108], u64::from(mode));
    put_number(&mut block[108..116], 0);
    put_number(&mut block[116..124], 0);
    put_number(&mut block[124..136], size);
    put_number(&mut block[136..148], mtime);
    block[156] = kind;
    let link = &link[..link.len().min(100)];
    block[157..157 + link.len()].copy_from_slice(link);
    block[257..265].copy_from_slice(b"ustar  \0");
    block[148..156].fill(b' ');
    let sum: u32 = block.iter().map(|&b| u32::from(b)).sum();
    block[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    block
}

fn write_header(
    out: &mut dyn Write,
    name: &[u8],
    kind: u8,
    mode: u32,
    size: u64,
    mtime: u64,
    link: &[u8],
) -> io::Result<()> {
    for (long, flag) in [(link, b'K'), (name, b'L')] {
        if long.len() > 100 {
            let len = long.len() as u64 + 1;
            out.write_all(&header_block(b"././@LongLink", flag, 0o644, len, 0, b""))?;
            out.write_all(long)?;
            write_zeros(out, 1 + padding(len))?;
        }
    }
    out.write_all(&header_block(name, kind, mode, size, mtime, link))
}

/// Why an unpack stopped.
#[derive(Debug)]
pub enum Stop {
    /// The archive ended early, or could not be read: with the partial file removed, if one
    /// was being written (its path as shown).
    Truncated(Option<String>, io::Error),
    /// The archive is not one, or names a path that would leave the destination.
    Refused(String),
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stop::Truncated(Some(partial), e) => write!(
                f,
                "the copy ended early ({}); the partial file {partial} was removed",
                plain(e)
            ),
            Stop::Truncated(None, e) => write!(f, "the copy ended early ({})", plain(e)),
            Stop::Refused(why) => f.write_str(why),
        }
    }
}

/// An entry's header, after long names and pax records.
struct Header {
    name: Vec<u8>,
    link: Vec<u8>,
    kind: u8,
    mode: u32,
    size: u64,
    mtime: u64,
}

fn field_text(field: &[u8]) -> &[u8] {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    &field[..end]
}

fn number(field: &[u8]) -> Option<u64> {
    if field[0] & 0x80 != 0 {
        let mut value: u64 = u64::from(field[0] & 0x7f);
        for &b in &field[1..] {
            value = value.checked_mul(256)?.checked_add(u64::from(b))?;
        }
        return Some(value);
    }
    let text = field_text(field);
    let text = std::str::from_utf8(text)
        .ok()?
        .trim_matches(|c| c == ' ' || c == '\0');
    if text.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(text, 8).ok()
}

fn read_block(input: &mut dyn Read, block: &mut [u8; BLOCK]) -> io::Result<bool> {
    let mut filled = 0;
    while filled < BLOCK {
        match input.read(&mut block[filled..]) {
            Ok(0) if filled == 0 => return Ok(false),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

fn read_data(input: &mut dyn Read, size: u64) -> io::Result<Vec<u8>> {
    if size > 1 << 24 {
        return Err(io::Error::other("an extended header of more than 16 MiB"));
    }
    let mut data = vec![0u8; size as usize];
    input.read_exact(&mut data)?;
    skip(input, padding(size))?;
    Ok(data)
}

fn skip(input: &mut dyn Read, count: u64) -> io::Result<()> {
    let copied = io::copy(&mut input.take(count), &mut io::sink())?;
    if copied < count {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

/// The next entry's header; `None` at the end of the archive.
fn next_header(input: &mut dyn Read) -> Result<Option<Header>, Stop> {
    let mut long_name: Option<Vec<u8>> = None;
    let mut long_link: Option<Vec<u8>> = None;
    let mut pax_size: Option<u64> = None;
    let mut pax_mtime: Option<u64> = None;
    let mut block = [0u8; BLOCK];
    loop {
        match read_block(input, &mut block) {
            Ok(true) => {}
            Ok(false) => {
                return Err(Stop::Truncated(
                    None,
                    io::Error::other("the archive has no end"),
                ));
            }
            Err(e) => return Err(Stop::Truncated(None, e)),
        }
        if block.iter().all(|&b| b == 0) {
            return Ok(None);
        }
        let stored = number(&block[148..156]);
        let mut copy = block;
        copy[148..156].fill(b' ');
        let sum: u64 = copy.iter().map(|&b| u64::from(b)).sum();
        if stored != Some(sum) {
            return Err(Stop::Refused(
                "not a tar archive (a header's checksum is wrong)".into(),
            ));
        }
        let bad = || Stop::Refused("not a tar archive (a header's number is not one)".into());
        let size = pax_size
            .take()
            .map_or_else(|| number(&block[124..136]), Some)
            .ok_or_else(bad)?;
        // No file is an exabyte: a size that large is a tampered header, whose padding
        // would overflow the arithmetic that skips it.
        if size > 1 << 60 {
            return Err(Stop::Refused(format!(
                "not a tar archive (an entry of {size} bytes)"
            )));
        }
        let kind = block[156];
        let truncated = |e| Stop::Truncated(None, e);
        match kind {
            b'L' => {
                long_name = Some(field_text(&read_data(input, size).map_err(truncated)?).to_vec())
            }
            b'K' => {
                long_link = Some(field_text(&read_data(input, size).map_err(truncated)?).to_vec())
            }
            b'x' | b'g' => {
                let data = read_data(input, size).map_err(truncated)?;
                if kind == b'x' {
                    for (key, value) in pax_records(&data) {
                        match key {
                            b"path" => long_name = Some(value.to_vec()),
                            b"linkpath" => long_link = Some(value.to_vec()),
                            b"size" => {
                                pax_size =
                                    std::str::from_utf8(value).ok().and_then(|v| v.parse().ok())
                            }
                            b"mtime" => {
                                pax_mtime = std::str::from_utf8(value)
                                    .ok()
                                    .and_then(|v| v.split('.').next()?.parse::<i64>().ok())
                                    .map(|t| t.max(0) as u64)
                            }
                            _ => {}
                        }
                    }
                }
            }
            _ => {
                let name = long_name.take().unwrap_or_else(|| {
                    let name = field_text(&block[..100]);
                    let prefix = field_text(&block[345..500]);
                    if &block[257..263] == b"ustar\0" && !prefix.is_empty() {
                        let mut full = prefix.to_vec();
                        full.push(b'/');
                        full.extend_from_slice(name);
                        full
                    } else {
                        name.to_vec()
                    }
                });
                let link = long_link
                    .take()
                    .unwrap_or_else(|| field_text(&block[157..257]).to_vec());
                let mode = number(&block[100..108]).ok_or_else(bad)? as u32 & 0o7777;
                let mtime = match pax_mtime.take() {
                    Some(mtime) => mtime,
                    None => number(&block[136..148]).ok_or_else(bad)?,
                };
                return Ok(Some(Header {
                    name,
                    link,
                    kind,
                    mode,
                    size,
                    mtime,
                }));
            }
        }
    }
}

/// The `key=value` records of a pax extended header.
fn pax_records(mut data: &[u8]) -> Vec<(&[u8], &[u8])> {
    let mut records = Vec::new();
    while let Some(space) = data.iter().position(|&b| b == b' ') {
        let Some(len) = std::str::from_utf8(&data[..space])
            .ok()
            .and_then(|l| l.parse::<usize>().ok())
        else {
            break;
        };
        if len <= space + 1 || len > data.len() {
            break;
        }
        let record = &data[space + 1..len - 1];
        if let Some(eq) = record.iter().position(|&b| b == b'=') {
            records.push((&record[..eq], &record[eq + 1..]));
        }
        data = &data[len..];
    }
    records
}

/// An entry's name as components below the destination, with its top renamed to `rename`;
/// `None` for the destination itself. Refuses names that would leave it.
fn safe_name(name: &[u8], rename: Option<&[u8]>) -> Result<Option<Vec<Vec<u8>>>, Stop> {
    if name.starts_with(b"/") {
        return Err(Stop::Refused(format!(
            "{}: refused: an absolute name would leave the destination",
            show(name)
        )));
    }
    let mut parts: Vec<Vec<u8>> = Vec::new();
    for (i, part) in name.split(|&b| b == b'/').enumerate() {
        match part {
            b"" => {}
            b"." if i > 0 || rename.is_none() => {}
            b".." => {
                return Err(Stop::Refused(format!(
                    "{}: refused: a name with .. would leave the destination",
                    show(name)
                )));
            }
            part => parts.push(part.to_vec()),
        }
    }
    if let (Some(rename), Some(top)) = (rename, parts.first_mut()) {
        *top = rename.to_vec();
    }
    Ok((!parts.is_empty()).then_some(parts))
}

/// Unpacks the tar `input` into directory `dir` (its top entry renamed to `rename`): see the
/// module's documentation for the rules. Modes are the archive's within `mask` (the plugin
/// keeps no setuid, setgid or sticky bit and honours the umask; the pod's end keeps all);
/// only directories this unpack makes get the archive's mode and time. Messages name entries
/// under `shown` (the destination as the user wrote it). `Ok(false)` when some entries could
/// not be written (each reported to `warn`); the input is read to its end either way.
pub fn unpack(
    input: &mut dyn Read,
    dir: &Path,
    rename: Option<&[u8]>,
    mask: u32,
    shown: &[u8],
    warn: Warn<'_>,
) -> Result<bool, Stop> {
    let mut ok = true;
    // Directories' modes and times, set last: a read-only one must take its entries first,
    // and each entry written in a directory changes its time.
    let mut dirs: Vec<(PathBuf, u32, u64, String)> = Vec::new();
    let shown_of = |parts: &[Vec<u8>]| {
        let mut path = shown.to_vec();
        for part in parts {
            if !path.ends_with(b"/") {
                path.push(b'/');
            }
            path.extend_from_slice(part);
        }
        show(&path)
    };
    while let Some(header) = next_header(input)? {
        let Some(parts) = safe_name(&header.name, rename)? else {
            skip(input, header.size + padding(header.size))
                .map_err(|e| Stop::Truncated(None, e))?;
            continue;
        };
        let path = under(dir, &parts);
        // The data of entries other than files (a hard link's, a device's) is skipped.
        let data_size = header.size;
        let written = match prepare(dir, &parts) {
            Err(e) => Err(e),
            Ok(()) => match header.kind {
                b'0' | 0 | b'7' => {
                    match write_file(input, &path, &header) {
                        Ok(()) => {
                            ok &= finish(&path, &header, mask, &shown_of(&parts), &mut *warn);
                            continue;
                        }
                        Err(Written::Input(e)) => {
                            return Err(Stop::Truncated(Some(shown_of(&parts)), e));
                        }
                        Err(Written::Output(e)) => {
                            // The rest of its data is skipped below.
                            (warn)(format!("{}: {}", shown_of(&parts), plain(&e.0)));
                            ok = false;
                            skip(input, e.1 + padding(header.size))
                                .map_err(|e| Stop::Truncated(None, e))?;
                            continue;
                        }
                    }
                }
                b'5' => make_dir(&path).map(|made| {
                    if made {
                        let mode = header.mode & mask;
                        dirs.push((path.clone(), mode, header.mtime, shown_of(&parts)))
                    }
                }),
                b'2' => replace(&path).and_then(|()| {
                    std::os::unix::fs::symlink(OsStr::from_bytes(&header.link), &path)
                }),
                b'1' => match safe_name(&header.link, rename)? {
                    Some(target) => {
                        let target_path = under(dir, &target);
                        prepare(dir, &target)
                            .and_then(|()| replace(&path))
                            .and_then(|()| fs::hard_link(&target_path, &path))
                    }
                    None => Err(io::Error::from_raw_os_error(EISDIR)),
                },
                _ => {
                    (warn)(format!(
                        "warning: {}: skipped: not a file, directory or symlink",
                        shown_of(&parts)
                    ));
                    Ok(())
                }
            },
        };
        if let Err(e) = written {
            (warn)(format!("{}: {}", shown_of(&parts), plain(&e)));
            ok = false;
        }
        skip(input, data_size + padding(data_size)).map_err(|e| Stop::Truncated(None, e))?;
    }
    for (path, mode, mtime, shown) in dirs.into_iter().rev() {
        let set = fs::set_permissions(&path, fs::Permissions::from_mode(mode))
            .and_then(|()| set_mtime(&fs::File::open(&path)?, mtime));
        if let Err(e) = set {
            (warn)(format!("warning: {shown}: {}", plain(&e)));
        }
    }
    // What follows the end (tar pads its output to 10 KiB) is read, so the writer never
    // meets a closed pipe.
    let _ = io::copy(input, &mut io::sink());
    Ok(ok)
}

fn set_mtime(file: &fs::File, mtime: u64) -> io::Result<()> {
    // A time past what the system can hold is the archive's nonsense: the file keeps now.
    let Some(time) = UNIX_EPOCH.checked_add(Duration::from_secs(mtime)) else {
        return Ok(());
    };
    file.set_times(
        fs::FileTimes::new()
            .set_modified(time)
            .set_accessed(SystemTime::now()),
    )
}

/// Makes sure the directories above `parts` are real directories under `dir` (creating the
/// missing ones): never a symlink, which could lead out.
fn prepare(dir: &Path, parts: &[Vec<u8>]) -> io::Result<()> {
    let mut path = dir.to_path_buf();
    for part in &parts[..parts.len() - 1] {
        path.push(OsStr::from_bytes(part));
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => {}
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(io::Error::other(format!(
                    "refused: {} is a symlink, not followed",
                    show(part)
                )));
            }
            Ok(_) => return Err(io::Error::from_raw_os_error(ENOTDIR)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => fs::create_dir(&path)?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Removes what is at `path`, unless a directory, so that an entry is written there and not
/// through it.
fn replace(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => Err(io::Error::from_raw_os_error(EISDIR)),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// A directory at `path`, made unless one is there; whether it was made.
fn make_dir(path: &Path) -> io::Result<bool> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => Ok(false),
        Ok(_) => fs::remove_file(path)
            .and_then(|()| fs::create_dir(path))
            .map(|()| true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => fs::create_dir(path).map(|()| true),
        Err(e) => Err(e),
    }
}

enum Written {
    /// The archive could not be read: the partial file is removed.
    Input(io::Error),
    /// The file could not be written; the data not yet read.
    Output((io::Error, u64)),
}

fn write_file(input: &mut dyn Read, path: &Path, header: &Header) -> Result<(), Written> {
    let mut file = replace(path)
        .and_then(|()| {
            fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
        })
        .map_err(|e| Written::Output((e, header.size)))?;
    let mut left = header.size;
    let mut buffer = vec![0u8; 64 * 1024];
    while left > 0 {
        let want = left.min(buffer.len() as u64) as usize;
        let n = match input.read(&mut buffer[..want]) {
            Ok(0) => {
                drop(file);
                let _ = fs::remove_file(path);
                return Err(Written::Input(io::ErrorKind::UnexpectedEof.into()));
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                drop(file);
                let _ = fs::remove_file(path);
                return Err(Written::Input(e));
            }
        };
        left -= n as u64;
        if let Err(e) = file.write_all(&buffer[..n]) {
            drop(file);
            let _ = fs::remove_file(path);
            return Err(Written::Output((e, left)));
        }
    }
    if let Err(e) = skip(input, padding(header.size)) {
        drop(file);
        let _ = fs::remove_file(path);
        return Err(Written::Input(e));
    }
    Ok(())
}

/// Sets a written file's mode and time; whether it could.
fn finish(path: &Path, header: &Header, mask: u32, shown: &str, warn: Warn<'_>) -> bool {
    let set = fs::OpenOptions::new()
        .write(true)
        .custom_flags(O_NOFOLLOW)
        .open(path)
        .and_then(|file| {
            file.set_permissions(fs::Permissions::from_mode(header.mode & mask))?;
            set_mtime(&file, header.mtime)
        });
    match set {
        Ok(()) => true,
        Err(e) => {
            (warn)(format!("{shown}: {}", plain(&e)));
            false
        }
    }
}
