//! The agent's stream reader: its own connection to Redis for the follower's `XREAD`, parsing
//! each reply straight from its read buffer. An agent decodes every entry of the stream; the
//! `redis` crate would first build a `redis::Value` tree of it (an allocation per bulk string
//! and array, a third of an apply's CPU in the profile of BENCHMARKS.md's Fleet section), so
//! this reader hands out the entries' ids and (field, value) pairs as text borrowed from the
//! buffer instead. Everything else (snapshot, heartbeats, ACL probe, publisher) stays on the
//! `redis` crate.
//!
//! The connection is made from the same `redis::Client` (address, `redis://USER:PASSWORD@`,
//! database, RESP2 or `?protocol=resp3`) and the same TLS settings (`rediss://`, `[fleet]
//! tls_ca_file` or the system's roots) as the crate's; errors are `redis::RedisError`s of the
//! kinds the crate gives (I/O, timeout, a server's `-ERR`/`-NOAUTH`/`-NOPERM` through the
//! crate's own parser), so the follower counts and reconnects as before. Replies are bounded:
//! a bulk string over [`MAX_BULK`], an aggregate over [`MAX_ITEMS`] or nested deeper than
//! [`MAX_DEPTH`], or a reply over [`MAX_REPLY`] is a parse error (the follower reconnects),
//! never an allocation of what a hostile length says.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use redis::{ConnectionAddr, ErrorKind, ProtocolVersion, RedisError, RedisResult, ServerErrorKind};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{FleetConfig, CONNECT_TIMEOUT, RESPONSE_TIMEOUT};

/// Longest bulk string accepted (an event is a few hundred bytes; its limits are far below).
pub const MAX_BULK: usize = 4 << 20;
/// Most elements of one array or map (a read asks for at most a thousand entries).
pub const MAX_ITEMS: usize = 1 << 20;
/// Deepest nesting of aggregates (an XREAD reply nests four deep).
pub const MAX_DEPTH: usize = 8;
/// Largest reply accepted.
pub const MAX_REPLY: usize = 64 << 20;
/// Longest line (a simple string, error or header) accepted.
const MAX_LINE: usize = 64 << 10;
/// Bytes asked of the socket per read at least.
const READ_CHUNK: usize = 64 << 10;

/// Why a reply is not acceptable RESP.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Bad {
    /// A line without `\r\n`, an unknown type byte or a length that is not a number.
    #[error("malformed reply: {0}")]
    Syntax(&'static str),
    /// A length or size past its bound.
    #[error("reply too large: {0}")]
    TooLarge(&'static str),
}

impl From<Bad> for RedisError {
    fn from(bad: Bad) -> RedisError {
        RedisError::from((ErrorKind::Parse, "bad reply from Redis", bad.to_string()))
    }
}

/// Finds where one complete reply ends in a buffer that fills over several reads, resuming
/// where the previous call stopped (so a reply read in many pieces is scanned once), and
/// checking every bound on the way.
#[derive(Debug, Default)]
pub struct Scanner {
    /// Where the next value starts.
    pos: usize,
    /// Elements still to come of each open aggregate, outermost first.
    open: Vec<usize>,
}

impl Scanner {
    /// The length of the complete reply at the start of `buf`, or None while it is incomplete
    /// (call again with more bytes appended).
    pub fn scan(&mut self, buf: &[u8]) -> Result<Option<usize>, Bad> {
        loop {
            let Some((kind, body, after)) = line(buf, self.pos)? else {
                return Ok(None);
            };
            match kind {
                b'+' | b'-' | b':' | b',' | b'#' | b'(' | b'_' => self.pos = after,
                b'$' | b'=' | b'!' => match bulk_len(kind, body)? {
                    None => self.pos = after,
                    Some(len) => {
                        let end = after + len;
                        if end > MAX_REPLY {
                            return Err(Bad::TooLarge("reply"));
                        }
                        if buf.len() < end + 2 {
                            return Ok(None);
                        }
                        if &buf[end..end + 2] != b"\r\n" {
                            return Err(Bad::Syntax("bulk string without \\r\\n"));
                        }
                        self.pos = end + 2;
                    }
                },
                b'*' | b'~' | b'>' | b'%' => {
                    self.pos = after;
                    if let Some(n) = aggregate_len(kind, body)? {
                        if n > 0 {
                            if self.open.len() >= MAX_DEPTH {
                                return Err(Bad::TooLarge("nesting"));
                            }
                            self.open.push(n);
                            continue;
                        }
                    }
                }
                _ => return Err(Bad::Syntax("unknown type byte")),
            }
            // A value is complete: so is every aggregate it was the last element of.
            loop {
                match self.open.last_mut() {
                    None => {
                        let len = self.pos;
                        *self = Scanner::default();
                        return Ok(Some(len));
                    }
                    Some(n) => {
                        *n -= 1;
                        if *n > 0 {
                            break;
                        }
                        self.open.pop();
                    }
                }
            }
        }
    }
}

/// A line of a reply: its type byte, its body (without the type and `\r\n`) and where the next
/// byte after it is.
type Line<'a> = (u8, &'a [u8], usize);

/// The line at `pos`; None while the buffer ends before its `\n`.
fn line(buf: &[u8], pos: usize) -> Result<Option<Line<'_>>, Bad> {
    let rest = buf.get(pos..).unwrap_or_default();
    let Some(nl) = memchr::memchr(b'\n', &rest[..rest.len().min(MAX_LINE)]) else {
        if rest.len() >= MAX_LINE {
            return Err(Bad::TooLarge("line"));
        }
        return Ok(None);
    };
    if nl < 2 || rest[nl - 1] != b'\r' {
        return Err(Bad::Syntax("line without \\r\\n"));
    }
    if pos + nl + 1 > MAX_REPLY {
        return Err(Bad::TooLarge("reply"));
    }
    Ok(Some((rest[0], &rest[1..nl - 1], pos + nl + 1)))
}

/// A length: decimal digits with an optional `-` (only `-1`, a nil, is ever negative).
fn number(body: &[u8]) -> Result<i64, Bad> {
    let (negative, digits) = match body.split_first() {
        Some((b'-', d)) => (true, d),
        _ => (false, body),
    };
    if digits.is_empty() || digits.len() > 18 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(Bad::Syntax("length is not a number"));
    }
    let n = digits
        .iter()
        .fold(0i64, |n, d| n * 10 + i64::from(d - b'0'));
    Ok(if negative { -n } else { n })
}

/// A bulk string's length; None for RESP2's nil (`$-1`).
fn bulk_len(kind: u8, body: &[u8]) -> Result<Option<usize>, Bad> {
    match number(body)? {
        -1 if kind == b'$' => Ok(None),
        n if n < 0 => Err(Bad::Syntax("negative length")),
        n if n as u64 > MAX_BULK as u64 => Err(Bad::TooLarge("bulk string")),
        n => Ok(Some(n as usize)),
    }
}

/// The values an aggregate holds (a map's pairs count twice); None for RESP2's nil (`*-1`).
fn aggregate_len(kind: u8, body: &[u8]) -> Result<Option<usize>, Bad> {
    let n = match number(body)? {
        -1 if kind == b'*' => return Ok(None),
        n if n < 0 => return Err(Bad::Syntax("negative length")),
        n if n as u64 > MAX_ITEMS as u64 => return Err(Bad::TooLarge("aggregate")),
        n => n as usize,
    };
    Ok(Some(if kind == b'%' { n * 2 } else { n }))
}

/// One value of a complete, scanned reply, as the walk sees it.
enum Item<'a> {
    /// A bulk or simple string (the bytes).
    Text(&'a [u8]),
    /// An array, set or push of this many values, or a map of half as many pairs.
    Aggregate(u8, usize),
    /// Anything else (nil, number, error, other string kinds), already skipped.
    Other,
}

/// Reads the value at `*pos` of a scanned reply and moves past its header (and past its body
/// for strings); aggregates leave their elements to be read next.
fn item<'a>(reply: &'a [u8], pos: &mut usize) -> Item<'a> {
    // The reply was scanned: every line and length is there and well formed.
    let Ok(Some((kind, body, after))) = line(reply, *pos) else {
        *pos = reply.len();
        return Item::Other;
    };
    *pos = after;
    match kind {
        b'+' => Item::Text(body),
        b'$' | b'=' | b'!' => match bulk_len(kind, body) {
            Ok(Some(len)) => {
                *pos = after + len + 2;
                if kind == b'$' {
                    Item::Text(&reply[after..after + len])
                } else {
                    Item::Other
                }
            }
            _ => Item::Other,
        },
        b'*' | b'~' | b'>' | b'%' => match aggregate_len(kind, body) {
            Ok(Some(n)) => Item::Aggregate(kind, n),
            _ => Item::Other,
        },
        _ => Item::Other,
    }
}

/// Moves past the value at `*pos`, whatever it holds.
fn skip(reply: &[u8], pos: &mut usize) {
    let mut left = 1usize;
    while left > 0 && *pos < reply.len() {
        left -= 1;
        if let Item::Aggregate(_, n) = item(reply, pos) {
            left += n;
        }
    }
}

/// The value at `*pos` as UTF-8 text (a bulk or simple string), moving past it.
fn text<'a>(reply: &'a [u8], pos: &mut usize) -> Option<&'a str> {
    let start = *pos;
    match item(reply, pos) {
        Item::Text(bytes) => std::str::from_utf8(bytes).ok(),
        Item::Other => None,
        Item::Aggregate(..) => {
            *pos = start;
            skip(reply, pos);
            None
        }
    }
}

/// The entries of one `XREAD` reply, in order, borrowed from the reply: RESP2 (an array of
/// [stream, entries] pairs, `*-1` when a blocking read timed out) or RESP3 (a map, `_`).
/// What the `redis` crate's values would have given is given here: an entry that is not an
/// [id, fields] pair, or whose id is not text, is passed over; a field or value that is not
/// text is left out of its entry (which then fails validation, counted by the follower).
pub struct Entries<'a> {
    reply: &'a [u8],
    pos: usize,
    /// Streams not yet started.
    streams: usize,
    /// True for a RESP3 map (stream name, entries) rather than an array of pairs.
    map: bool,
    /// Entries left of the current stream.
    entries: usize,
}

impl<'a> Entries<'a> {
    /// The entries of `reply` (one complete reply, as [`Scanner::scan`] delimited it).
    pub fn new(reply: &'a [u8]) -> Entries<'a> {
        let mut pos = 0;
        let (streams, map) = match item(reply, &mut pos) {
            Item::Aggregate(b'%', n) => (n / 2, true),
            Item::Aggregate(b'*', n) => (n, false),
            _ => (0, false),
        };
        Entries {
            reply,
            pos,
            streams,
            map,
            entries: 0,
        }
    }

    /// Starts the next stream's entries; false when there are no more streams.
    fn next_stream(&mut self) -> bool {
        let reply = self.reply;
        while self.streams > 0 {
            self.streams -= 1;
            if !self.map {
                match item(reply, &mut self.pos) {
                    Item::Aggregate(_, 2) => {}
                    Item::Aggregate(_, n) => {
                        for _ in 0..n {
                            skip(reply, &mut self.pos);
                        }
                        continue;
                    }
                    _ => continue,
                }
            }
            // The stream's name, then its entries.
            skip(reply, &mut self.pos);
            let start = self.pos;
            match item(reply, &mut self.pos) {
                Item::Aggregate(b'*', n) => {
                    self.entries = n;
                    return true;
                }
                Item::Aggregate(..) => {
                    self.pos = start;
                    skip(reply, &mut self.pos);
                }
                _ => {}
            }
        }
        false
    }

    /// The next entry's id, with its (field, value) pairs in `fields` (cleared first); None
    /// when the reply holds no more.
    pub fn next_entry(&mut self, fields: &mut Vec<(&'a str, &'a str)>) -> Option<&'a str> {
        let reply = self.reply;
        loop {
            while self.entries == 0 {
                if !self.next_stream() {
                    return None;
                }
            }
            self.entries -= 1;
            let start = self.pos;
            let Item::Aggregate(b'*', 2) = item(reply, &mut self.pos) else {
                self.pos = start;
                skip(reply, &mut self.pos);
                continue;
            };
            let Some(id) = text(reply, &mut self.pos) else {
                skip(reply, &mut self.pos);
                continue;
            };
            fields.clear();
            let start = self.pos;
            match item(reply, &mut self.pos) {
                Item::Aggregate(b'*', n) => {
                    for _ in 0..n / 2 {
                        let k = text(reply, &mut self.pos);
                        let v = text(reply, &mut self.pos);
                        if let (Some(k), Some(v)) = (k, v) {
                            fields.push((k, v));
                        }
                    }
                    if n % 2 == 1 {
                        skip(reply, &mut self.pos);
                    }
                }
                Item::Aggregate(..) => {
                    self.pos = start;
                    skip(reply, &mut self.pos);
                }
                _ => {}
            }
            return Some(id);
        }
    }
}

/// An entry copied out of a reply: its id and (field, value) pairs.
pub type OwnedEntry = (String, Vec<(String, String)>);

impl Entries<'_> {
    /// Every entry left, copied out of the reader's buffer: for tests and tools that keep a
    /// reply past the next read (the follower decodes from the borrowed text instead).
    pub fn into_owned(mut self) -> Vec<OwnedEntry> {
        let mut fields = Vec::new();
        let mut out = Vec::new();
        while let Some(id) = self.next_entry(&mut fields) {
            let f = fields
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            out.push((id.to_string(), f));
        }
        out
    }
}

/// Appends one command, as the RESP array of bulk strings Redis reads.
fn command(out: &mut Vec<u8>, args: &[&[u8]]) {
    use std::io::Write as _;
    let _ = write!(out, "*{}\r\n", args.len());
    for a in args {
        let _ = write!(out, "${}\r\n", a.len());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// The TLS settings of a `rediss://` fleet: the CA file's roots, or the system's as the
/// `redis` crate takes them.
pub fn tls_config(config: &FleetConfig) -> RedisResult<Option<Arc<rustls::ClientConfig>>> {
    if !config.redis.starts_with("rediss://") {
        return Ok(None);
    }
    let mut roots = rustls::RootCertStore::empty();
    match &config.tls_ca_file {
        Some(path) => {
            let shown = || format!("fleet.tls_ca_file {}", path.display());
            let certs = crate::pem::certificates(path)
                .map_err(|e| io::Error::other(format!("{}: {e}", shown())))?;
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| io::Error::other(format!("{}: {e}", shown())))?;
            }
        }
        None => {
            let mut found = rustls_native_certs::load_native_certs();
            if let Some(error) = found.errors.pop() {
                return Err(io::Error::other(error.to_string()).into());
            }
            for cert in found.certs {
                roots.add(cert)?;
            }
        }
    }
    // The same provider as the syslog listener's, not whichever the process installed.
    let builder = rustls::ClientConfig::builder_with_provider(crate::pem::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| io::Error::other(e.to_string()))?;
    Ok(Some(Arc::new(
        builder.with_root_certificates(roots).with_no_client_auth(),
    )))
}

/// The reader's transport.
enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Io {
    async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Io::Plain(s) => s.write_all(bytes).await,
            Io::Tls(s) => {
                s.write_all(bytes).await?;
                s.flush().await
            }
        }
    }

    async fn read_into(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        match self {
            Io::Plain(s) => read_some(s, buf).await,
            Io::Tls(s) => read_some(s, buf).await,
        }
    }
}

async fn read_some<S: AsyncRead + Unpin>(s: &mut S, buf: &mut Vec<u8>) -> io::Result<usize> {
    buf.reserve(READ_CHUNK);
    let n = s.read_buf(buf).await?;
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "Redis closed the connection",
        ));
    }
    Ok(n)
}

/// A connection that reads the stream with `XREAD`, one reply at a time.
pub struct StreamReader {
    io: Io,
    /// Bytes read; the reply last handed out is at its start, `used` bytes long.
    buf: Vec<u8>,
    used: usize,
    scanner: Scanner,
    /// The command being written (reused).
    out: Vec<u8>,
}

impl StreamReader {
    /// Connects as `client` would (address, user and password, database, protocol), with
    /// `tls` for `rediss://` (from [`tls_config`]), within the connect timeout.
    pub async fn connect(
        client: &redis::Client,
        tls: Option<&Arc<rustls::ClientConfig>>,
    ) -> RedisResult<StreamReader> {
        match tokio::time::timeout(CONNECT_TIMEOUT, Self::open(client, tls)).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "connection timed out").into()),
        }
    }

    async fn open(
        client: &redis::Client,
        tls: Option<&Arc<rustls::ClientConfig>>,
    ) -> RedisResult<StreamReader> {
        let info = client.get_connection_info();
        let io = match info.addr() {
            ConnectionAddr::Tcp(host, port) => {
                let tcp = TcpStream::connect((host.as_str(), *port)).await?;
                tcp.set_nodelay(true)?;
                Io::Plain(tcp)
            }
            ConnectionAddr::TcpTls {
                host,
                port,
                insecure,
                ..
            } => {
                let Some(tls) = tls.filter(|_| !insecure) else {
                    return Err((
                        ErrorKind::InvalidClientConfig,
                        "the stream reader needs a verified TLS configuration for rediss://",
                    )
                        .into());
                };
                let tcp = TcpStream::connect((host.as_str(), *port)).await?;
                tcp.set_nodelay(true)?;
                let name = rustls_pki_types::ServerName::try_from(host.clone())?;
                let stream = tokio_rustls::TlsConnector::from(tls.clone())
                    .connect(name, tcp)
                    .await?;
                Io::Tls(Box::new(stream))
            }
            _ => {
                return Err((
                    ErrorKind::InvalidClientConfig,
                    "the fleet speaks to Redis over TCP only",
                )
                    .into())
            }
        };
        let mut reader = StreamReader {
            io,
            buf: Vec::with_capacity(READ_CHUNK),
            used: 0,
            scanner: Scanner::default(),
            out: Vec::with_capacity(256),
        };
        reader.setup(info.redis_settings()).await?;
        Ok(reader)
    }

    /// Sets the connection up as the `redis` crate does, with its error kinds: HELLO 3 (with
    /// AUTH) for RESP3, else AUTH when there is a password (again without the user name when
    /// a Redis older than ACLs refuses two arguments); then SELECT when the database is not 0.
    async fn setup(&mut self, redis: &redis::RedisConnectionInfo) -> RedisResult<()> {
        if redis.protocol() == ProtocolVersion::RESP3 {
            let mut hello: Vec<&[u8]> = vec![b"HELLO", b"3"];
            if let Some(password) = redis.password() {
                hello.extend([
                    b"AUTH".as_slice(),
                    redis.username().unwrap_or("default").as_bytes(),
                    password.as_bytes(),
                ]);
            }
            if let Err(error) = self.call(&hello).await {
                if error
                    .detail()
                    .is_some_and(|d| d.starts_with("unknown command `HELLO`"))
                {
                    return Err((
                        ErrorKind::RESP3NotSupported,
                        "Redis Server doesn't support HELLO command therefore resp3 cannot be used",
                    )
                        .into());
                }
                return Err(error);
            }
        } else if let Some(password) = redis.password() {
            let failed = || -> RedisError {
                (
                    ErrorKind::AuthenticationFailed,
                    "Password authentication failed",
                )
                    .into()
            };
            let with_user = match redis.username() {
                Some(user) => vec![b"AUTH".as_slice(), user.as_bytes(), password.as_bytes()],
                None => vec![b"AUTH".as_slice(), password.as_bytes()],
            };
            match self.call(&with_user).await {
                Ok(()) => {}
                Err(e) if e.kind() != ErrorKind::Io && !e.is_timeout() => {
                    let old_redis = e.detail().is_some_and(|d| {
                        d.contains("wrong number of arguments for 'auth' command")
                    });
                    if !old_redis || redis.username().is_none() {
                        return Err(failed());
                    }
                    self.call(&[b"AUTH", password.as_bytes()])
                        .await
                        .map_err(|_| failed())?;
                }
                Err(e) => return Err(e),
            }
        }
        if redis.db() != 0 {
            let db = redis.db().to_string();
            if let Err(error) = self.call(&[b"SELECT", db.as_bytes()]).await {
                if error.kind() == ErrorKind::Io {
                    return Err(error);
                }
                return Err(match error.detail() {
                    Some(detail) => (
                        ServerErrorKind::ResponseError.into(),
                        "Redis server refused to switch database",
                        detail.to_string(),
                    )
                        .into(),
                    None => (
                        ServerErrorKind::ResponseError.into(),
                        "Redis server refused to switch database",
                    )
                        .into(),
                });
            }
        }
        Ok(())
    }

    /// Sends one command and reads its reply, which must not be an error.
    async fn call(&mut self, args: &[&[u8]]) -> RedisResult<()> {
        self.out.clear();
        command(&mut self.out, args);
        self.io.write_all(&self.out).await?;
        self.reply().await.map(drop)
    }

    /// Reads the next complete reply into the buffer (after the one handed out before);
    /// returns it, or the server's error reply as the `redis` crate's error.
    async fn reply(&mut self) -> RedisResult<&[u8]> {
        self.buf.drain(..self.used);
        self.used = 0;
        let len = loop {
            if let Some(len) = self.scanner.scan(&self.buf)? {
                break len;
            }
            self.io.read_into(&mut self.buf).await?;
        };
        self.used = len;
        let reply = &self.buf[..len];
        if reply.first() == Some(&b'-') || reply.first() == Some(&b'!') {
            // An error reply: the crate's parser names its kind (NOAUTH, NOPERM, ...).
            return match redis::parse_redis_value(reply)?.extract_error() {
                Err(error) => Err(error),
                Ok(_) => Err(Bad::Syntax("error reply").into()),
            };
        }
        Ok(reply)
    }

    /// `XREAD COUNT count BLOCK block STREAMS key from`: the entries after `from`, none when
    /// the block ran out. Bounded by the response timeout beyond `block`.
    pub async fn xread(
        &mut self,
        key: &str,
        from: &str,
        count: usize,
        block: Duration,
    ) -> RedisResult<Entries<'_>> {
        let (count, ms) = (count.to_string(), block.as_millis().to_string());
        self.out.clear();
        command(
            &mut self.out,
            &[
                b"XREAD",
                b"COUNT",
                count.as_bytes(),
                b"BLOCK",
                ms.as_bytes(),
                b"STREAMS",
                key.as_bytes(),
                from.as_bytes(),
            ],
        );
        let bound = RESPONSE_TIMEOUT + block;
        let read = async {
            self.io.write_all(&self.out).await?;
            self.reply().await.map(|_| ())
        };
        match tokio::time::timeout(bound, read).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "no reply to XREAD").into())
            }
        }
        Ok(Entries::new(&self.buf[..self.used]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An XREAD reply (RESP2) of one stream with these (id, fields) entries.
    fn xread_reply(entries: &[(&str, &[(&str, &str)])]) -> Vec<u8> {
        let mut out = b"*1\r\n*2\r\n$8\r\nj:events\r\n".to_vec();
        out.extend(format!("*{}\r\n", entries.len()).bytes());
        for (id, fields) in entries {
            out.extend(format!("*2\r\n${}\r\n{id}\r\n*{}\r\n", id.len(), fields.len() * 2).bytes());
            for (k, v) in *fields {
                out.extend(format!("${}\r\n{k}\r\n${}\r\n{v}\r\n", k.len(), v.len()).bytes());
            }
        }
        out
    }

    fn all(reply: &[u8]) -> Vec<OwnedEntry> {
        Entries::new(reply).into_owned()
    }

    fn scan_all(buf: &[u8]) -> Result<Option<usize>, Bad> {
        Scanner::default().scan(buf)
    }

    fn owned(e: &[(&str, &[(&str, &str)])]) -> Vec<(String, Vec<(String, String)>)> {
        e.iter()
            .map(|(id, f)| {
                (
                    id.to_string(),
                    f.iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                )
            })
            .collect()
    }

    #[test]
    fn a_reply_split_at_every_byte_is_found_once_whole() {
        let entries: &[(&str, &[(&str, &str)])] = &[
            (
                "1700000000000-0",
                &[("v", "2"), ("e", "ban sshd 192.0.2.1/32")],
            ),
            ("1700000000000-1", &[("v", "2"), ("e", "a\r\nb")]),
            ("1700000000001-0", &[]),
        ];
        let reply = xread_reply(entries);
        let mut with_next = reply.clone();
        with_next.extend_from_slice(b"+OK\r\n");
        for split in 0..reply.len() {
            let mut scanner = Scanner::default();
            assert_eq!(
                scanner.scan(&with_next[..split]),
                Ok(None),
                "split at {split}"
            );
            assert_eq!(
                scanner.scan(&with_next),
                Ok(Some(reply.len())),
                "split at {split}"
            );
        }
        // Fed one byte at a time into one scanner.
        let mut scanner = Scanner::default();
        for end in 1..reply.len() {
            assert_eq!(scanner.scan(&reply[..end]), Ok(None));
        }
        assert_eq!(scanner.scan(&reply), Ok(Some(reply.len())));
        assert_eq!(all(&reply), owned(entries));
    }

    #[test]
    fn nil_replies_of_a_block_timeout_have_no_entries() {
        for nil in [&b"*-1\r\n"[..], b"_\r\n", b"$-1\r\n", b"*0\r\n", b"%0\r\n"] {
            assert_eq!(scan_all(nil), Ok(Some(nil.len())));
            assert!(all(nil).is_empty());
        }
    }

    #[test]
    fn resp3_maps_and_nested_values_read_as_the_crate_values_would() {
        // RESP3: a map of stream name to entries.
        let mut reply = b"%1\r\n$8\r\nj:events\r\n*1\r\n*2\r\n$3\r\n1-0\r\n*4\r\n".to_vec();
        reply.extend_from_slice(b"$1\r\nv\r\n$1\r\n2\r\n+e\r\n$3\r\nban\r\n");
        assert_eq!(scan_all(&reply), Ok(Some(reply.len())));
        assert_eq!(
            all(&reply),
            vec![(
                "1-0".to_string(),
                vec![("v".into(), "2".into()), ("e".into(), "ban".into())]
            )]
        );
        // Values that are not text are left out; entries that are not pairs or have no text
        // id are passed over; an odd field list drops its last; two streams are read in turn.
        let mut reply = b"*2\r\n*2\r\n$1\r\na\r\n*4\r\n".to_vec();
        reply.extend_from_slice(b"*2\r\n$3\r\n1-0\r\n*5\r\n$1\r\nk\r\n*2\r\n:1\r\n:2\r\n$1\r\nx\r\n$1\r\ny\r\n$1\r\nz\r\n");
        reply.extend_from_slice(b"*3\r\n$3\r\n2-0\r\n*0\r\n*0\r\n");
        reply.extend_from_slice(b"*2\r\n:5\r\n*2\r\n$1\r\nk\r\n$1\r\nv\r\n");
        reply.extend_from_slice(b"*2\r\n$3\r\n3-0\r\n$-1\r\n");
        reply.extend_from_slice(
            b"*2\r\n$1\r\nb\r\n*1\r\n*2\r\n$3\r\n4-0\r\n*2\r\n$1\r\nk\r\n-ERR no\r\n",
        );
        assert_eq!(scan_all(&reply), Ok(Some(reply.len())));
        assert_eq!(
            all(&reply),
            vec![
                ("1-0".to_string(), vec![("x".into(), "y".into())]),
                ("3-0".to_string(), vec![]),
                ("4-0".to_string(), vec![]),
            ]
        );
        // Invalid UTF-8 is not text.
        let reply =
            b"*1\r\n*2\r\n$1\r\na\r\n*1\r\n*2\r\n$3\r\n1-0\r\n*2\r\n$1\r\nk\r\n$1\r\n\xff\r\n";
        assert_eq!(all(reply), vec![("1-0".to_string(), vec![])]);
        // Deeply nested but within the bound.
        let deep = b"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n";
        assert_eq!(scan_all(deep), Ok(Some(deep.len())));
        assert!(all(deep).is_empty());
    }

    #[test]
    fn errors_and_bounds() {
        assert_eq!(scan_all(b"-NOPERM no\r\n"), Ok(Some(12)));
        // Lengths past the bounds are refused before anything is allocated or awaited.
        let huge = format!("${}\r\n", MAX_BULK + 1);
        assert_eq!(scan_all(huge.as_bytes()), Err(Bad::TooLarge("bulk string")));
        assert_eq!(
            scan_all(b"$99999999999999999999\r\n"),
            Err(Bad::Syntax("length is not a number"))
        );
        let many = format!("*{}\r\n", MAX_ITEMS + 1);
        assert_eq!(scan_all(many.as_bytes()), Err(Bad::TooLarge("aggregate")));
        let deep = "*1\r\n".repeat(MAX_DEPTH + 1);
        assert_eq!(scan_all(deep.as_bytes()), Err(Bad::TooLarge("nesting")));
        let long = vec![b'+'; MAX_LINE + 1];
        assert_eq!(scan_all(&long), Err(Bad::TooLarge("line")));
        // Malformed.
        assert_eq!(scan_all(b"?x\r\n"), Err(Bad::Syntax("unknown type byte")));
        assert_eq!(scan_all(b"+OK\n"), Err(Bad::Syntax("line without \\r\\n")));
        assert_eq!(scan_all(b"$-2\r\n"), Err(Bad::Syntax("negative length")));
        assert_eq!(
            scan_all(b"*x\r\n"),
            Err(Bad::Syntax("length is not a number"))
        );
        assert_eq!(
            scan_all(b"$2\r\nabcd\r\n"),
            Err(Bad::Syntax("bulk string without \\r\\n"))
        );
        // The redis crate's error kinds, from its own parser.
        let e: RedisError = Bad::TooLarge("bulk string").into();
        assert_eq!(e.kind(), ErrorKind::Parse);
    }

    /// The walk the follower made over the `redis` crate's values before this reader: the
    /// reference the reader must match.
    fn crate_walk(reply: &[u8]) -> Vec<(String, Vec<(String, String)>)> {
        use redis::Value;
        fn txt(v: &Value) -> Option<String> {
            match v {
                Value::BulkString(b) => std::str::from_utf8(b).ok().map(str::to_string),
                Value::SimpleString(s) => Some(s.clone()),
                _ => None,
            }
        }
        let value = redis::parse_redis_value(reply).expect("the crate parses it");
        let lists: Vec<&Value> = match &value {
            Value::Array(items) => items
                .iter()
                .filter_map(|i| match i {
                    Value::Array(pair) if pair.len() == 2 => Some(&pair[1]),
                    _ => None,
                })
                .collect(),
            Value::Map(pairs) => pairs.iter().map(|(_, v)| v).collect(),
            _ => Vec::new(),
        };
        let mut out = Vec::new();
        for list in lists {
            let Value::Array(items) = list else { continue };
            for item in items {
                let Value::Array(pair) = item else { continue };
                let [id, fields] = pair.as_slice() else {
                    continue;
                };
                let Some(id) = txt(id) else { continue };
                let mut f = Vec::new();
                if let Value::Array(kv) = fields {
                    for chunk in kv.chunks(2) {
                        if let [k, v] = chunk {
                            if let (Some(k), Some(v)) = (txt(k), txt(v)) {
                                f.push((k, v));
                            }
                        }
                    }
                }
                out.push((id, f));
            }
        }
        out
    }

    /// The tests' generator, so a failure names its seed.
    use crate::jail::test_rng::Rng;

    /// A value of any type, nested at most `depth` more.
    fn any_value(rng: &mut Rng, depth: u32, out: &mut Vec<u8>) {
        let kinds = if depth == 0 { 8 } else { 11 };
        match rng.below(kinds) {
            0 => out.extend_from_slice(b"$-1\r\n"),
            1 => out.extend_from_slice(b"_\r\n"),
            2 => out.extend_from_slice(b":42\r\n"),
            3 => out.extend_from_slice(b"-ERR inner\r\n"),
            4 => out.extend_from_slice(b"$2\r\n\xff\xfe\r\n"),
            5 => out.extend_from_slice(b"+simple\r\n"),
            6 => out.extend_from_slice(b"=7\r\ntxt:abc\r\n"),
            7 => {
                let text = ["k", "v", "1-0", "ban sshd", ""][rng.below(5) as usize];
                out.extend(format!("${}\r\n{text}\r\n", text.len()).bytes());
            }
            k => {
                let n = rng.below(4);
                let head = [b'*', b'~', b'%'][(k - 8) as usize];
                out.extend(format!("{}{n}\r\n", head as char).bytes());
                for _ in 0..n * if head == b'%' { 2 } else { 1 } {
                    any_value(rng, depth - 1, out);
                }
            }
        }
    }

    /// An XREAD-shaped reply whose every part may be replaced by a value of another type.
    fn shaped(rng: &mut Rng) -> Vec<u8> {
        let mut out = Vec::new();
        let odd = |rng: &mut Rng| rng.below(6) == 0;
        let map = rng.below(3) == 0;
        let streams = rng.below(3);
        out.extend(format!("{}{streams}\r\n", if map { '%' } else { '*' }).bytes());
        for _ in 0..streams {
            if !map {
                if odd(rng) {
                    any_value(rng, 2, &mut out);
                    continue;
                }
                out.extend_from_slice(b"*2\r\n");
            }
            out.extend_from_slice(b"$1\r\ns\r\n");
            if odd(rng) {
                any_value(rng, 2, &mut out);
                continue;
            }
            let entries = rng.below(4);
            out.extend(format!("*{entries}\r\n").bytes());
            for _ in 0..entries {
                if odd(rng) {
                    any_value(rng, 2, &mut out);
                    continue;
                }
                let len = if rng.below(8) == 0 { rng.below(4) } else { 2 };
                out.extend(format!("*{len}\r\n").bytes());
                for slot in 0..len {
                    if odd(rng) {
                        any_value(rng, 2, &mut out);
                    } else if slot == 0 {
                        out.extend_from_slice(b"$3\r\n7-1\r\n");
                    } else {
                        let n = rng.below(5);
                        out.extend(format!("*{n}\r\n").bytes());
                        for _ in 0..n {
                            if odd(rng) {
                                any_value(rng, 1, &mut out);
                            } else {
                                out.extend_from_slice(b"$1\r\ne\r\n");
                            }
                        }
                    }
                }
            }
        }
        out
    }

    #[test]
    fn entries_are_what_the_crate_values_gave_for_any_reply() {
        for seed in 1..20_000u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
            let reply = if seed % 5 == 0 {
                let mut out = Vec::new();
                any_value(&mut rng, 3, &mut out);
                out
            } else {
                shaped(&mut rng)
            };
            assert_eq!(
                scan_all(&reply),
                Ok(Some(reply.len())),
                "seed {seed}: {}",
                String::from_utf8_lossy(&reply)
            );
            if reply.first() == Some(&b'-') {
                continue;
            }
            assert_eq!(
                all(&reply),
                crate_walk(&reply),
                "seed {seed}: {}",
                String::from_utf8_lossy(&reply)
            );
        }
    }

    #[test]
    fn commands_are_resp_arrays() {
        let mut out = Vec::new();
        command(&mut out, &[b"XREAD", b"COUNT", b"10"]);
        assert_eq!(out, b"*3\r\n$5\r\nXREAD\r\n$5\r\nCOUNT\r\n$2\r\n10\r\n");
    }
}
