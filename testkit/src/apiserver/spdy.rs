//! `pods/{name}/portforward` as kubectl speaks it: SPDY/3.1 carrying `portforward.k8s.io`,
//! either over the upgraded HTTP connection itself (`Upgrade: SPDY/3.1`) or tunnelled in
//! WebSocket binary messages (subprotocol `SPDY/3.1+portforward.k8s.io`: kubectl 1.31 and
//! later try this first and fall back to the former when the upgrade fails).
//!
//! For each connection to its local port, kubectl opens two streams with the headers
//! `streamtype` (`error`, then `data`), `port` and `requestid`, and waits for a SYN_REPLY to
//! each. The server carries the data stream to the pod's port and ends both streams when the
//! pod's side ends; when the port cannot be reached it writes why on the error stream first.
//! Header blocks are zlib with SPDY/3's dictionary, one compression context per direction for
//! the whole connection (draft-mbelshe-httpbis-spdy-00, section 2.6.10).

use std::collections::HashMap;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// The `Upgrade` header of an SPDY port-forward request.
pub const UPGRADE: &str = "SPDY/3.1";
/// The stream protocol (`X-Stream-Protocol-Version`).
pub const PROTOCOL: &str = "portforward.k8s.io";
/// The WebSocket subprotocol that tunnels it.
pub const TUNNELLED: &str = "SPDY/3.1+portforward.k8s.io";

const VERSION: u16 = 3;
const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const FLAG_FIN: u8 = 0x01;
/// RST_STREAM status: PROTOCOL_ERROR.
const PROTOCOL_ERROR: u32 = 1;
/// Lengths are 24 bits.
const MAX_PAYLOAD: usize = (1 << 24) - 1;

/// SPDY/3's header dictionary (section 2.6.10.1): names and values, each after its length as
/// 4 bytes big-endian, then a run of status lines, dates and media types.
pub fn dictionary() -> Vec<u8> {
    const WORDS: &[&str] = &[
        "options",
        "head",
        "post",
        "put",
        "delete",
        "trace",
        "accept",
        "accept-charset",
        "accept-encoding",
        "accept-language",
        "accept-ranges",
        "age",
        "allow",
        "authorization",
        "cache-control",
        "connection",
        "content-base",
        "content-encoding",
        "content-language",
        "content-length",
        "content-location",
        "content-md5",
        "content-range",
        "content-type",
        "date",
        "etag",
        "expect",
        "expires",
        "from",
        "host",
        "if-match",
        "if-modified-since",
        "if-none-match",
        "if-range",
        "if-unmodified-since",
        "last-modified",
        "location",
        "max-forwards",
        "pragma",
        "proxy-authenticate",
        "proxy-authorization",
        "range",
        "referer",
        "retry-after",
        "server",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
        "vary",
        "via",
        "warning",
        "www-authenticate",
        "method",
        "get",
        "status",
        "200 OK",
        "version",
        "HTTP/1.1",
        "url",
        "public",
        "set-cookie",
        "keep-alive",
        "origin",
    ];
    const TAIL: &str = concat!(
        "100101201202205206300302303304305306307402405406407408409410411412413414415416417",
        "502504505",
        "203 Non-Authoritative Information",
        "204 No Content",
        "301 Moved Permanently",
        "400 Bad Request",
        "401 Unauthorized",
        "403 Forbidden",
        "404 Not Found",
        "500 Internal Server Error",
        "501 Not Implemented",
        "503 Service Unavailable",
        "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 ",
        "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT",
        "chunked,text/html,image/png,image/jpg,image/gif,application/xml,",
        "application/xhtml+xml,text/plain,text/javascript,public",
        "privatemax-age=gzip,deflate,sdch",
        "charset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
    );
    let mut dictionary = Vec::with_capacity(1423);
    for word in WORDS {
        dictionary.put_u32(word.len() as u32);
        dictionary.put_slice(word.as_bytes());
    }
    dictionary.put_slice(TAIL.as_bytes());
    dictionary
}

/// The frames a port-forward server reads and writes.
#[derive(Debug, PartialEq)]
pub enum Frame {
    /// A new stream; its header block still compressed.
    SynStream {
        /// The stream.
        id: u32,
        /// Whether the sender's side ends with it.
        fin: bool,
        /// The compressed header block.
        headers: Bytes,
    },
    /// The answer to a SYN_STREAM; its header block compressed.
    SynReply {
        /// The stream.
        id: u32,
        /// The compressed header block.
        headers: Bytes,
    },
    /// A stream's bytes; `fin` ends the sender's side.
    Data {
        /// The stream.
        id: u32,
        /// Whether the sender's side ends with these bytes.
        fin: bool,
        /// The bytes.
        data: Bytes,
    },
    /// A stream abandoned.
    RstStream {
        /// The stream.
        id: u32,
        /// Why (`PROTOCOL_ERROR`, ...).
        status: u32,
    },
    /// A liveness check, answered with the same frame.
    Ping(u32),
    /// The end of the session.
    GoAway,
    /// SETTINGS, WINDOW_UPDATE, HEADERS and the like: nothing a port-forward needs.
    Other(u16),
}

/// A frame that breaks the protocol, and how.
#[derive(Debug)]
pub struct Malformed(pub String);

impl Frame {
    /// Decodes the first frame of `buf`, consuming it; `Ok(None)` until a whole frame is there.
    pub fn decode(buf: &mut BytesMut) -> Result<Option<Frame>, Malformed> {
        if buf.len() < 8 {
            return Ok(None);
        }
        let length = u32::from_be_bytes([0, buf[5], buf[6], buf[7]]) as usize;
        if buf.len() < 8 + length {
            return Ok(None);
        }
        let first = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        let flags = buf[4];
        buf.advance(8);
        let mut payload = buf.split_to(length).freeze();
        if first & 0x8000_0000 == 0 {
            return Ok(Some(Frame::Data {
                id: first,
                fin: flags & FLAG_FIN != 0,
                data: payload,
            }));
        }
        let version = ((first >> 16) & 0x7fff) as u16;
        if version != VERSION {
            return Err(Malformed(format!("SPDY version {version}, not 3")));
        }
        let kind = (first & 0xffff) as u16;
        let need = |n: usize| {
            if payload.len() < n {
                Err(Malformed(format!("control frame {kind} of {length} bytes")))
            } else {
                Ok(())
            }
        };
        Ok(Some(match kind {
            SYN_STREAM => {
                need(10)?;
                let id = payload.get_u32() & 0x7fff_ffff;
                payload.advance(6); // associated stream, priority, slot
                Frame::SynStream {
                    id,
                    fin: flags & FLAG_FIN != 0,
                    headers: payload,
                }
            }
            SYN_REPLY => {
                need(4)?;
                let id = payload.get_u32() & 0x7fff_ffff;
                Frame::SynReply {
                    id,
                    headers: payload,
                }
            }
            RST_STREAM => {
                need(8)?;
                Frame::RstStream {
                    id: payload.get_u32() & 0x7fff_ffff,
                    status: payload.get_u32(),
                }
            }
            PING => {
                need(4)?;
                Frame::Ping(payload.get_u32())
            }
            GOAWAY => Frame::GoAway,
            other => Frame::Other(other),
        }))
    }

    /// Appends the frame to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        let control = |out: &mut BytesMut, kind: u16, flags: u8, length: usize| {
            out.put_u16(0x8000 | VERSION);
            out.put_u16(kind);
            out.put_u32((u32::from(flags) << 24) | length as u32);
        };
        match self {
            Frame::SynStream { id, fin, headers } => {
                control(out, SYN_STREAM, u8::from(*fin), 10 + headers.len());
                out.put_u32(*id);
                out.put_u32(0);
                out.put_u16(0);
                out.put_slice(headers);
            }
            Frame::SynReply { id, headers } => {
                control(out, SYN_REPLY, 0, 4 + headers.len());
                out.put_u32(*id);
                out.put_slice(headers);
            }
            Frame::Data { id, fin, data } => {
                out.put_u32(*id & 0x7fff_ffff);
                out.put_u32((u32::from(u8::from(*fin)) << 24) | data.len() as u32);
                out.put_slice(data);
            }
            Frame::RstStream { id, status } => {
                control(out, RST_STREAM, 0, 8);
                out.put_u32(*id);
                out.put_u32(*status);
            }
            Frame::Ping(id) => {
                control(out, PING, 0, 4);
                out.put_u32(*id);
            }
            Frame::GoAway => {
                control(out, GOAWAY, 0, 8);
                out.put_u32(0);
                out.put_u32(0);
            }
            Frame::Other(kind) => control(out, *kind, 0, 0),
        }
    }
}

/// A header block: pairs, names in lower case, several values of one name joined by NUL.
pub type Headers = Vec<(String, String)>;

/// The value of `name` in `headers`.
pub fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Inflates the header blocks one side of a connection sends.
pub struct Inflater {
    zlib: Decompress,
    dictionary: Vec<u8>,
}

impl Default for Inflater {
    fn default() -> Self {
        Inflater {
            zlib: Decompress::new(true),
            dictionary: dictionary(),
        }
    }
}

impl Inflater {
    /// The pairs of one compressed header block.
    pub fn headers(&mut self, block: &[u8]) -> Result<Headers, Malformed> {
        let mut plain = Vec::with_capacity(block.len() * 4 + 64);
        let mut used = 0;
        loop {
            let before = (self.zlib.total_in(), self.zlib.total_out());
            match self
                .zlib
                .decompress_vec(&block[used..], &mut plain, FlushDecompress::Sync)
            {
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.zlib
                        .set_dictionary(&self.dictionary)
                        .map_err(|e| Malformed(format!("header dictionary: {e}")))?;
                }
                Err(e) => return Err(Malformed(format!("header block: {e}"))),
            }
            used += (self.zlib.total_in() - before.0) as usize;
            let progress = (self.zlib.total_in(), self.zlib.total_out()) != before;
            if used == block.len() && plain.len() < plain.capacity() {
                break;
            }
            if plain.len() == plain.capacity() {
                plain.reserve(plain.capacity());
            } else if !progress {
                return Err(Malformed("a header block that inflates to nothing".into()));
            }
        }
        parse_headers(&plain)
    }
}

fn parse_headers(mut plain: &[u8]) -> Result<Headers, Malformed> {
    let short = || Malformed("a truncated header block".into());
    let string = |plain: &mut &[u8]| -> Result<String, Malformed> {
        if plain.len() < 4 {
            return Err(short());
        }
        let n = plain.get_u32() as usize;
        if plain.len() < n {
            return Err(short());
        }
        let s = String::from_utf8_lossy(&plain[..n]).into_owned();
        plain.advance(n);
        Ok(s)
    };
    if plain.len() < 4 {
        return Err(short());
    }
    let count = plain.get_u32();
    let mut headers = Vec::new();
    for _ in 0..count {
        let name = string(&mut plain)?.to_ascii_lowercase();
        let value = string(&mut plain)?;
        headers.push((name, value));
    }
    Ok(headers)
}

/// Deflates the header blocks this side sends.
pub struct Deflater {
    zlib: Compress,
}

impl Default for Deflater {
    fn default() -> Self {
        let mut zlib = Compress::new(Compression::default(), true);
        zlib.set_dictionary(&dictionary())
            .expect("a fresh zlib stream takes a dictionary");
        Deflater { zlib }
    }
}

impl Deflater {
    /// One header block, compressed and flushed so that it ends with its frame.
    pub fn block(&mut self, headers: &[(&str, &str)]) -> Bytes {
        let mut plain = Vec::new();
        plain.put_u32(headers.len() as u32);
        for (name, value) in headers {
            plain.put_u32(name.len() as u32);
            plain.put_slice(name.to_ascii_lowercase().as_bytes());
            plain.put_u32(value.len() as u32);
            plain.put_slice(value.as_bytes());
        }
        let mut packed = Vec::with_capacity(plain.len() + 64);
        let mut used = 0;
        loop {
            let before = self.zlib.total_in();
            self.zlib
                .compress_vec(&plain[used..], &mut packed, FlushCompress::Sync)
                .expect("deflate into memory");
            used += (self.zlib.total_in() - before) as usize;
            if used == plain.len() && packed.len() < packed.capacity() {
                return packed.into();
            }
            packed.reserve(packed.capacity().max(64));
        }
    }
}

/// What the session's writer sends.
enum Out {
    Reply(u32),
    Data(u32, Bytes, bool),
    Reset(u32),
    Ping(u32),
}

/// A request's streams until both are open: the error stream, the data stream and its port.
type Pair = (Option<u32>, Option<(u32, String)>);

/// Serves one port-forward connection: each stream pair to a port of `pod`.
pub async fn serve<S>(io: S, pod: super::portforward::Upstream)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut read, write) = tokio::io::split(io);
    let (out, to_send) = mpsc::channel(64);
    let writer = tokio::spawn(write_frames(write, to_send));
    let mut inflater = Inflater::default();
    let mut waiting: HashMap<String, Pair> = HashMap::new();
    let mut to_pod: HashMap<u32, mpsc::Sender<Bytes>> = HashMap::new();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    'read: loop {
        let frame = match Frame::decode(&mut buf) {
            Ok(Some(frame)) => frame,
            Ok(None) => {
                buf.reserve(32 * 1024);
                match read.read_buf(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => continue,
                }
            }
            Err(_) => break,
        };
        match frame {
            Frame::SynStream { id, headers, .. } => {
                let Ok(headers) = inflater.headers(&headers) else {
                    break 'read;
                };
                if out.send(Out::Reply(id)).await.is_err() {
                    break;
                }
                let request = header(&headers, "requestid").unwrap_or("").to_owned();
                let port = header(&headers, "port").unwrap_or("").to_owned();
                let pair = waiting.entry(request.clone()).or_default();
                match header(&headers, "streamtype") {
                    Some("error") => pair.0 = Some(id),
                    Some("data") => pair.1 = Some((id, port)),
                    _ => {
                        let _ = out.send(Out::Reset(id)).await;
                        continue;
                    }
                }
                if let (Some(error), Some((data, port))) = pair.clone() {
                    waiting.remove(&request);
                    let (tx, rx) = mpsc::channel(16);
                    to_pod.insert(data, tx);
                    tokio::spawn(forward(pod.clone(), port, error, data, rx, out.clone()));
                }
            }
            Frame::Data { id, fin, data } => {
                if let Some(tx) = to_pod.get(&id) {
                    if !data.is_empty() && tx.send(data).await.is_err() {
                        to_pod.remove(&id);
                    }
                    if fin {
                        to_pod.remove(&id);
                    }
                }
            }
            Frame::RstStream { id, .. } => {
                to_pod.remove(&id);
            }
            Frame::Ping(id) => {
                if out.send(Out::Ping(id)).await.is_err() {
                    break;
                }
            }
            Frame::GoAway => break,
            Frame::SynReply { .. } | Frame::Other(_) => {}
        }
    }
    drop((out, to_pod));
    let _ = writer.await;
}

/// Carries one stream pair to `port` of `pod`.
async fn forward(
    pod: super::portforward::Upstream,
    port: String,
    error: u32,
    data: u32,
    mut from_client: mpsc::Receiver<Bytes>,
    out: mpsc::Sender<Out>,
) {
    let connected = match port.parse::<u16>() {
        Ok(n) => pod.connect(n).await,
        Err(_) => Err(format!("invalid port {port:?} in the stream's headers")),
    };
    let tcp = match connected {
        Ok(tcp) => tcp,
        Err(message) => {
            let _ = out.send(Out::Data(error, message.into(), false)).await;
            let _ = out.send(Out::Data(error, Bytes::new(), true)).await;
            let _ = out.send(Out::Data(data, Bytes::new(), true)).await;
            return;
        }
    };
    let (mut read, mut write) = tcp.into_split();
    let up = async move {
        while let Some(chunk) = from_client.recv().await {
            if write.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = write.shutdown().await;
    };
    let down = async {
        let mut buf = BytesMut::new();
        loop {
            buf.reserve(32 * 1024);
            match read.read_buf(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let chunk = buf.split().freeze();
                    if out.send(Out::Data(data, chunk, false)).await.is_err() {
                        return;
                    }
                }
            }
        }
        // The pod's side ended: so do both streams, as the kubelet ends them.
        let _ = out.send(Out::Data(data, Bytes::new(), true)).await;
        let _ = out.send(Out::Data(error, Bytes::new(), true)).await;
    };
    tokio::join!(up, down);
}

async fn write_frames<W: AsyncWrite + Unpin>(mut write: W, mut to_send: mpsc::Receiver<Out>) {
    let mut deflater = Deflater::default();
    let mut buf = BytesMut::new();
    while let Some(next) = to_send.recv().await {
        let frame = match next {
            Out::Reply(id) => Frame::SynReply {
                id,
                headers: deflater.block(&[]),
            },
            Out::Data(id, data, fin) => {
                debug_assert!(data.len() <= MAX_PAYLOAD);
                Frame::Data { id, fin, data }
            }
            Out::Reset(id) => Frame::RstStream {
                id,
                status: PROTOCOL_ERROR,
            },
            Out::Ping(id) => Frame::Ping(id),
        };
        frame.encode(&mut buf);
        if to_send.is_empty() || buf.len() >= 256 * 1024 {
            if write.write_all(&buf).await.is_err() || write.flush().await.is_err() {
                break;
            }
            buf.clear();
        }
    }
    let _ = write.shutdown().await;
}
