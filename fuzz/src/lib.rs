//! What each fuzz target does with the fuzzer's bytes, kept apart from the `afl::fuzz!` loops in
//! `src/bin/` so that every target is one line there and all of them read alike here.
//!
//! Every function hands the bytes to a parser that reads input from outside the process (a
//! WebSocket peer, an HTTP client, a registry, a recording on disk, an operator's file) and
//! drives it the way production code does. The property is the same for all: the parser returns
//! `Ok` or `Err` and never panics, whatever the bytes. Results are dropped on purpose: any
//! value is acceptable, only a panic (which `afl::fuzz!` turns into an abort, a crash to AFL++)
//! is a finding.
//!
//! Run them with `scripts/fuzz`; replay one input by piping it into a target built by
//! `cargo afl build --release`: `fuzz/target/release/relay_frame < input`.

use bytes::Bytes;

/// One binary WebSocket message through [`kdbg_relay::codec::Frame::decode`], and a decoded
/// frame back through `encode`, as the session pump does with what a peer sends.
pub fn relay_frame(data: &[u8]) {
    if let Ok(Some(frame)) = kdbg_relay::codec::Frame::decode(Bytes::copy_from_slice(data)) {
        let _ = frame.channel();
        let _ = frame.encode();
    }
}

/// The resize channel's JSON stream through one [`kdbg_relay::resize::ResizeDecoder`].
///
/// The first byte picks a separator; the rest is cut after every occurrence of it and fed
/// chunk by chunk, so the fuzzer chooses where messages split values (mid-key, mid-number,
/// several values to a chunk), which is the decoder's only state. The separator stays in
/// the stream, so the bytes fed are exactly the rest. Feeding stops at the first error, as the
/// session does.
///
/// Every size decoded is offered to a [`kdbg_relay::Tap`] keeping the recent events, as the
/// session offers it to the screen kept for watchers: what the tap keeps must stay within
/// `TerminalSize::MAX_KEPT` and within the buffer's cap, whatever sizes come.
pub fn relay_resize(data: &[u8]) {
    use kdbg_relay::TerminalSize;
    use kdbg_relay::observer::{EVENT_OVERHEAD, EventKind};
    let Some((&separator, stream)) = data.split_first() else {
        return;
    };
    let mut decoder = kdbg_relay::resize::ResizeDecoder::default();
    let tap = kdbg_relay::Tap::new(None);
    let cap = 16 * EVENT_OVERHEAD;
    let recent = tap.keep_recent(cap);
    for chunk in stream.split_inclusive(|&b| b == separator) {
        let Ok(sizes) = decoder.feed(chunk) else {
            return;
        };
        for size in sizes {
            tap.offer(EventKind::Resize(size));
            let kept = tap.size().unwrap_or(TerminalSize::MAX_KEPT);
            assert!(kept.cols <= TerminalSize::MAX_KEPT.cols && kept.rows <= TerminalSize::MAX_KEPT.rows);
        }
    }
    assert!(recent.take(0).events.len() <= cap / EVENT_OVERHEAD);
}

/// A live view as `kubectl-debug watch` reads it: the first line through the recordings'
/// header reader, every later line through [`kdbg_api::view::ViewEvent::parse`]. What a
/// watcher reads comes from an agent over the network.
pub fn watch_view(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.lines();
    let Some(header) = lines.next() else {
        return;
    };
    let _ = kdbg_recordings::Reader::new(header.as_bytes());
    for line in lines {
        let _ = kdbg_api::view::ViewEvent::parse(line);
    }
}

/// One URL query through all four of the agent's query parsers: each reads a query string
/// from any HTTP client that reaches the agent, and all four share `form_urlencoded`.
///
/// Bytes that are not UTF-8 are replaced (a real query arrives as `&str`); percent-escapes
/// still give the parsers any bytes after decoding.
pub fn api_query(data: &[u8]) {
    let query = String::from_utf8_lossy(data);
    let _ = kdbg_api::DebugRequest::from_query(&query);
    let _ = kdbg_api::PullRequest::from_query(&query);
    let _ = kdbg_api::PodScope::from_query(&query);
    let _ = kdbg_api::WatchRequest::from_query(&query);
}

/// A recording file through [`kdbg_recordings::Reader`]: the header, then every event until
/// the end or the first error, as a replay does. Files on disk may be cut short or edited by
/// hand, so any bytes are fair.
pub fn recordings_reader(data: &[u8]) {
    let Ok(mut reader) = kdbg_recordings::Reader::new(data) else {
        return;
    };
    let _ = (reader.format(), reader.header());
    // `next_event` returns `Ok(None)` for ever after an error or the end; stopping at the first
    // of either keeps one input one pass.
    while let Ok(Some(_)) = reader.next_event() {}
    let _ = reader.is_truncated();
}

/// An image reference through [`kdbg_model::Reference::parse`] (a request's `image`
/// parameter), and a parsed one back through `Display`.
pub fn image_reference(data: &[u8]) {
    let image = String::from_utf8_lossy(data);
    if let Ok(reference) = kdbg_model::Reference::parse(&image) {
        let _ = reference.to_string();
    }
}

/// A registry's `WWW-Authenticate` header through
/// [`kdbg_runtimes::containerd::registry::auth::parse_challenge`]. Header values are visible
/// ASCII in practice, but a hostile registry sends whatever it likes, and the parser takes
/// `&str`.
pub fn registry_challenge(data: &[u8]) {
    let header = String::from_utf8_lossy(data);
    let _ = kdbg_runtimes::containerd::registry::auth::parse_challenge(&header);
}

/// The agent's YAML configuration through [`kdbg_agent::config::Config::parse`] (YAML
/// decoding and the checks after it). It is an operator's file, not an attacker's, but a typo
/// must give a message, not a panic.
pub fn agent_config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = kdbg_agent::config::Config::parse(&text);
}
