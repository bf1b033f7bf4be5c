//! One connection: read requests, play their replies.
//!
//! Nothing a client sends may panic this code: every parse failure becomes a
//! `400` (or `413`) and a close, every I/O error the end of the connection.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

use crate::arrival::{Arrival, body_hash};
use crate::reply::{Action, Reply};
use crate::server::{Plan, Shared};

/// The longest request head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// The most header lines accepted.
const MAX_HEADERS: usize = 128;
/// The largest request body accepted.
const MAX_BODY: usize = 64 * 1024 * 1024;
/// The longest chunk-size or trailer line accepted.
const MAX_LINE: usize = 8 * 1024;
/// How long a closing connection waits for the client to close its side.
const LINGER: Duration = Duration::from_secs(1);
/// The body of the `404` for paths without a route.
const NO_ROUTE: &[u8] = b"parapet-testkit: no route for this path\n";

/// A request head, owned.
struct Head {
    method: Method,
    path: String,
    query: Option<String>,
    headers: HeaderMap,
    http10: bool,
}

/// Why a request could not be read.
enum ReadError {
    /// The client went away or the socket failed: drop the connection.
    Gone,
    /// The request is malformed (or too large): answer with this status and
    /// close.
    Bad(u16),
}

/// How a request's body is delimited.
enum BodyKind {
    Length(usize),
    Chunked,
}

/// What happens after a reply.
enum Next {
    /// Read the next request.
    KeepAlive,
    /// Send FIN, drain what the client still sends, close.
    Close,
    /// Close with `SO_LINGER` 0, which sends RST.
    Reset,
    /// Drop the socket now (the client is gone).
    Drop,
}

/// A request in flight; leaves the count when released or dropped.
///
/// The flag is shared with the server's registry of waiting requests, so
/// that whichever notices first that the request is over (this task, or a
/// sweep from another connection) takes it out of the count, once.
struct InFlight {
    shared: Arc<Shared>,
    live: Arc<AtomicBool>,
}

impl InFlight {
    fn enter(shared: &Arc<Shared>) -> Self {
        Self {
            shared: Arc::clone(shared),
            live: shared.enter(),
        }
    }

    fn release(&mut self) {
        self.shared.leave(&self.live);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.release();
    }
}

struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    id: u64,
    shared: Arc<Shared>,
}

/// Serve one accepted connection until it ends.
pub(crate) async fn serve(stream: TcpStream, id: u64, shared: Arc<Shared>) {
    // Small writes (drips) must leave at once.
    let _ = stream.set_nodelay(true);
    let mut conn = Conn {
        stream,
        buf: BytesMut::with_capacity(8 * 1024),
        id,
        shared,
    };
    let next = loop {
        let next = conn.one_request().await;
        if !matches!(next, Next::KeepAlive) {
            break next;
        }
    };
    match next {
        Next::KeepAlive | Next::Drop => {}
        Next::Close => conn.close().await,
        Next::Reset => conn.reset(),
    }
}

impl Conn {
    /// Read one request and play its reply.
    async fn one_request(&mut self) -> Next {
        let head = match self.read_head().await {
            Ok(Some(head)) => head,
            Ok(None) | Err(ReadError::Gone) => return Next::Drop,
            Err(ReadError::Bad(status)) => return self.bad_request(status).await,
        };
        let keep_alive = wants_keep_alive(&head);
        let plan = self.shared.plan(&head.path);

        // Reset before reading: the body is never read.
        if let Plan::Reply(reply) = &plan {
            if reply.action == Action::Reset {
                let arrival = self.arrival(head, Bytes::new());
                self.shared.record(arrival);
                let mut ticket = InFlight::enter(&self.shared);
                if let Some(wait) = reply.delay {
                    if !self.pause(wait, &ticket).await {
                        return Next::Drop;
                    }
                }
                ticket.release();
                return Next::Reset;
            }
        }

        let body = match self.read_body(&head).await {
            Ok(body) => body,
            Err(ReadError::Gone) => return Next::Drop,
            Err(ReadError::Bad(status)) => return self.bad_request(status).await,
        };
        let is_head = head.method == Method::HEAD;
        let arrival = self.arrival(head, body);
        let reply = match plan {
            Plan::Reply(reply) => reply,
            Plan::NotFound => Arc::new(Reply::status(404).body(NO_ROUTE)),
            Plan::Handler(handler) => {
                // Recorded first, so a panicking handler still leaves a trace.
                self.shared.record(arrival.clone());
                let ticket = InFlight::enter(&self.shared);
                let reply = handler(&arrival);
                return self.play(&reply, is_head, keep_alive, ticket).await;
            }
        };
        self.shared.record(arrival);
        let ticket = InFlight::enter(&self.shared);
        self.play(&reply, is_head, keep_alive, ticket).await
    }

    /// Build the arrival record of a request.
    fn arrival(&self, head: Head, body: Bytes) -> Arrival {
        Arrival {
            at: Instant::now(),
            connection: self.id,
            method: head.method,
            path: head.path,
            query: head.query,
            headers: head.headers,
            body_len: body.len(),
            body_hash: body_hash(&body),
            body,
        }
    }

    /// Play a reply to a request that has been read.
    async fn play(
        &mut self,
        reply: &Reply,
        is_head: bool,
        keep_alive: bool,
        mut ticket: InFlight,
    ) -> Next {
        if let Some(wait) = reply.delay {
            if !self.pause(wait, &ticket).await {
                return Next::Drop;
            }
        }
        match reply.action {
            Action::Close => {
                ticket.release();
                return Next::Close;
            }
            Action::Reset => {
                ticket.release();
                return Next::Reset;
            }
            Action::Hang => {
                self.watch_peer(&ticket).await;
                return Next::Drop;
            }
            Action::Respond | Action::ResetAfterHeaders => {}
        }

        let full = reply.body.len();
        let (sent, truncated) = if is_head {
            (0, false)
        } else if reply.action == Action::ResetAfterHeaders {
            (reply.truncate.unwrap_or(0).min(full), false)
        } else {
            match reply.truncate {
                Some(n) => (n.min(full), true),
                None => (full, false),
            }
        };
        let closing = reply.close_after || !keep_alive;
        let announce_close = reply.action == Action::Respond && !truncated && closing;
        let head = response_head(reply, announce_close);
        let body = reply.body.slice(..sent);

        match reply.drip {
            Some((chunk, every)) if !body.is_empty() => {
                if self.stream.write_all(&head).await.is_err() {
                    return Next::Drop;
                }
                let mut rest = body;
                while !rest.is_empty() {
                    if !self.pause(every, &ticket).await {
                        return Next::Drop;
                    }
                    let piece = rest.split_to(chunk.min(rest.len()));
                    if rest.is_empty() {
                        ticket.release();
                    }
                    if self.stream.write_all(&piece).await.is_err() {
                        return Next::Drop;
                    }
                }
            }
            _ => {
                let mut out = head;
                out.extend_from_slice(&body);
                ticket.release();
                if self.stream.write_all(&out).await.is_err() {
                    return Next::Drop;
                }
            }
        }

        if reply.action == Action::ResetAfterHeaders {
            Next::Reset
        } else if truncated || closing {
            Next::Close
        } else {
            Next::KeepAlive
        }
    }

    /// Answer a malformed request and close.
    async fn bad_request(&mut self, status: u16) -> Next {
        let reply = Reply::status(status).body("parapet-testkit: malformed request\n");
        let head = response_head(&reply, true);
        let mut out = head;
        out.extend_from_slice(&reply.body);
        if self.stream.write_all(&out).await.is_err() {
            return Next::Drop;
        }
        Next::Close
    }

    /// Read more bytes into the buffer. `Err(Gone)` on EOF or error.
    async fn fill(&mut self) -> Result<(), ReadError> {
        if self.buf.capacity() - self.buf.len() < 4096 {
            self.buf.reserve(8 * 1024);
        }
        match self.stream.read_buf(&mut self.buf).await {
            Ok(0) | Err(_) => Err(ReadError::Gone),
            Ok(_) => Ok(()),
        }
    }

    /// Read a request head. `Ok(None)` when the client closed between
    /// requests.
    async fn read_head(&mut self) -> Result<Option<Head>, ReadError> {
        loop {
            if !self.buf.is_empty() {
                if let Some((head, len)) = parse_head(&self.buf)? {
                    self.buf.advance(len);
                    return Ok(Some(head));
                }
                if self.buf.len() > MAX_HEAD {
                    return Err(ReadError::Bad(431));
                }
            }
            if self.fill().await.is_err() {
                // EOF before any byte of a request is the normal end of a
                // keep-alive connection; mid-head it is a client gone.
                return if self.buf.iter().all(|b| matches!(b, b'\r' | b'\n')) {
                    Ok(None)
                } else {
                    Err(ReadError::Gone)
                };
            }
        }
    }

    /// Read the body the head announces.
    async fn read_body(&mut self, head: &Head) -> Result<Bytes, ReadError> {
        let kind = body_kind(&head.headers)?;
        let expects_body = match kind {
            BodyKind::Length(n) => n > 0,
            BodyKind::Chunked => true,
        };
        let continue_needed = expects_body && !head.http10 && expects_continue(&head.headers);
        if continue_needed
            && self
                .stream
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await
                .is_err()
        {
            return Err(ReadError::Gone);
        }
        match kind {
            BodyKind::Length(n) => self.read_exact(n).await,
            BodyKind::Chunked => self.read_chunked().await,
        }
    }

    /// Take exactly `n` bytes.
    async fn read_exact(&mut self, n: usize) -> Result<Bytes, ReadError> {
        while self.buf.len() < n {
            // Grow with what arrives, not with what the client announced.
            let want = (n - self.buf.len()).min(1024 * 1024);
            if self.buf.capacity() - self.buf.len() < want {
                self.buf.reserve(want);
            }
            self.fill().await?;
        }
        Ok(self.buf.split_to(n).freeze())
    }

    /// Take one line (without its line ending; a bare LF is tolerated).
    async fn read_line(&mut self) -> Result<Bytes, ReadError> {
        loop {
            if let Some(at) = self.buf.iter().position(|&b| b == b'\n') {
                let mut line = self.buf.split_to(at + 1);
                line.truncate(at);
                if line.last() == Some(&b'\r') {
                    line.truncate(at - 1);
                }
                return Ok(line.freeze());
            }
            if self.buf.len() > MAX_LINE {
                return Err(ReadError::Bad(400));
            }
            self.fill().await?;
        }
    }

    /// Decode a chunked body; trailers are read and dropped.
    async fn read_chunked(&mut self) -> Result<Bytes, ReadError> {
        let mut body = BytesMut::new();
        loop {
            let line = self.read_line().await?;
            let size = parse_chunk_size(&line).ok_or(ReadError::Bad(400))?;
            if size == 0 {
                // Trailer section, up to the empty line.
                while !self.read_line().await?.is_empty() {}
                return Ok(body.freeze());
            }
            if size > MAX_BODY - body.len() {
                return Err(ReadError::Bad(413));
            }
            let data = self.read_exact(size).await?;
            body.extend_from_slice(&data);
            if !self.read_line().await?.is_empty() {
                return Err(ReadError::Bad(400));
            }
        }
    }

    /// Wait `wait` while watching the connection. `false` when the client
    /// went away meanwhile.
    async fn pause(&mut self, wait: Duration, ticket: &InFlight) -> bool {
        timeout(wait, self.watch_peer(ticket)).await.is_err()
    }

    /// Return when the client has closed or reset the connection. Anything
    /// it sends meanwhile (a pipelined request) is kept for later.
    ///
    /// Meanwhile the request is in the server's registry of waiting
    /// requests, so that a new request can first check whether this one's
    /// client has already gone (see [`Shared::enter`]).
    async fn watch_peer(&mut self, ticket: &InFlight) {
        let _registered = self.shared.watch(&self.stream, &ticket.live);
        loop {
            if self.buf.len() > MAX_HEAD + MAX_BODY {
                // A client flooding a paused connection: stop reading and
                // just wait (the pause, or the server's drop, ends this).
                std::future::pending::<()>().await;
            }
            if self.fill().await.is_err() {
                return;
            }
        }
    }

    /// Half-close, give the client a moment to read and close its side, then
    /// close. Draining first keeps the kernel from turning the close into a
    /// reset because of unread bytes.
    async fn close(mut self) {
        let _ = self.stream.shutdown().await;
        let mut sink = [0u8; 4096];
        let _ = timeout(LINGER, async {
            let mut drained = 0usize;
            while drained < MAX_HEAD {
                match self.stream.read(&mut sink).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => drained += n,
                }
            }
        })
        .await;
    }

    /// Close with RST.
    fn reset(self) {
        // NOTE: `set_linger` is deprecated because a non-zero linger blocks
        // the dropping thread; a zero linger never blocks, it discards the
        // send queue and sends RST, which is the point here.
        #[allow(deprecated)]
        let _ = self.stream.set_linger(Some(Duration::ZERO));
        drop(self.stream);
    }
}

/// Parse a complete request head from the start of `buf`, with its length.
/// `Ok(None)` when more bytes are needed.
fn parse_head(buf: &[u8]) -> Result<Option<(Head, usize)>, ReadError> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut slots);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(ReadError::Bad(431)),
        Err(_) => return Err(ReadError::Bad(400)),
    };
    let method = req
        .method
        .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
        .ok_or(ReadError::Bad(400))?;
    let target = req.path.ok_or(ReadError::Bad(400))?;
    let (path, query) = split_target(target).ok_or(ReadError::Bad(400))?;
    let mut headers = HeaderMap::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| ReadError::Bad(400))?;
        let mut value = HeaderValue::from_bytes(h.value).map_err(|_| ReadError::Bad(400))?;
        if name == http::header::AUTHORIZATION
            || name == http::header::PROXY_AUTHORIZATION
            || name == http::header::COOKIE
        {
            value.set_sensitive(true);
        }
        headers.append(name, value);
    }
    let http10 = req.version == Some(0);
    Ok(Some((
        Head {
            method,
            path,
            query,
            headers,
            http10,
        },
        len,
    )))
}

/// Split a request target into path and query. Origin form (`/a?b`),
/// asterisk form (`*`) and absolute form (`http://h/a?b`) are understood.
fn split_target(target: &str) -> Option<(String, Option<String>)> {
    let origin = if target.starts_with('/') || target == "*" {
        target
    } else {
        // Absolute form: skip "scheme://authority".
        let after_scheme = target.split_once("://")?.1;
        match after_scheme.find(['/', '?']) {
            Some(at) => after_scheme.get(at..)?,
            None => "",
        }
    };
    let (path, query) = match origin.split_once('?') {
        Some((p, q)) => (p, Some(q.to_owned())),
        None => (origin, None),
    };
    let path = if path.is_empty() { "/" } else { path };
    Some((path.to_owned(), query))
}

/// How the body of a request with these headers is delimited.
fn body_kind(headers: &HeaderMap) -> Result<BodyKind, ReadError> {
    let mut te = headers
        .get_all(http::header::TRANSFER_ENCODING)
        .iter()
        .peekable();
    if te.peek().is_some() {
        // The last coding must be chunked; anything else cannot be framed.
        let last = te
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .last();
        return match last {
            Some(c) if c.eq_ignore_ascii_case("chunked") => Ok(BodyKind::Chunked),
            _ => Err(ReadError::Bad(400)),
        };
    }
    let mut length: Option<usize> = None;
    for value in headers.get_all(http::header::CONTENT_LENGTH) {
        let text = value.to_str().map_err(|_| ReadError::Bad(400))?;
        for part in text.split(',') {
            let part = part.trim();
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(ReadError::Bad(400));
            }
            let n: usize = part.parse().map_err(|_| ReadError::Bad(413))?;
            match length {
                Some(prev) if prev != n => return Err(ReadError::Bad(400)),
                _ => length = Some(n),
            }
        }
    }
    match length {
        Some(n) if n > MAX_BODY => Err(ReadError::Bad(413)),
        Some(n) => Ok(BodyKind::Length(n)),
        None => Ok(BodyKind::Length(0)),
    }
}

/// The size of a chunk from its size line (extensions ignored).
fn parse_chunk_size(line: &[u8]) -> Option<usize> {
    let digits = line.split(|&b| b == b';').next()?.trim_ascii();
    if digits.is_empty() || digits.len() > 15 {
        return None;
    }
    digits.iter().try_fold(0usize, |acc, &b| {
        let d = char::from(b).to_digit(16)?;
        acc.checked_mul(16)?.checked_add(d as usize)
    })
}

/// Whether the request carries `expect: 100-continue`.
fn expects_continue(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

/// Whether the connection stays open after this request's reply.
fn wants_keep_alive(head: &Head) -> bool {
    let has = |token: &str| {
        head.headers
            .get_all(http::header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    if head.http10 {
        has("keep-alive")
    } else {
        !has("close")
    }
}

/// The status line and headers of a reply.
fn response_head(reply: &Reply, announce_close: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(128 + reply.headers.len() * 32);
    let reason = http::StatusCode::from_u16(reply.status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    out.extend_from_slice(format!("HTTP/1.1 {:03} {reason}\r\n", reply.status).as_bytes());
    for (name, value) in &reply.headers {
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    let framed = reply.sets_header("content-length") || reply.sets_header("transfer-encoding");
    if !framed && (!reply.body.is_empty() || !reply.bodiless_status()) {
        out.extend_from_slice(format!("content-length: {}\r\n", reply.body.len()).as_bytes());
    }
    if announce_close && !reply.sets_header("connection") {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head_of(raw: &[u8]) -> Result<Option<(Head, usize)>, ReadError> {
        parse_head(raw)
    }

    #[test]
    fn targets_split_into_path_and_query() {
        let s = |t: &str| split_target(t);
        assert_eq!(s("/a/b?x=1&y"), Some(("/a/b".into(), Some("x=1&y".into()))));
        assert_eq!(s("/a"), Some(("/a".into(), None)));
        assert_eq!(s("/a?"), Some(("/a".into(), Some(String::new()))));
        assert_eq!(s("*"), Some(("*".into(), None)));
        assert_eq!(s("http://h:1/p?q"), Some(("/p".into(), Some("q".into()))));
        assert_eq!(s("http://h:1"), Some(("/".into(), None)));
        assert_eq!(s("http://h?q"), Some(("/".into(), Some("q".into()))));
        assert_eq!(s("nonsense"), None);
    }

    #[test]
    fn chunk_sizes_parse_and_garbage_is_refused() {
        assert_eq!(parse_chunk_size(b"1a"), Some(26));
        assert_eq!(parse_chunk_size(b"A;ext=1"), Some(10));
        assert_eq!(parse_chunk_size(b" 0 "), Some(0));
        assert_eq!(parse_chunk_size(b""), None);
        assert_eq!(parse_chunk_size(b"-1"), None);
        assert_eq!(parse_chunk_size(b"zz"), None);
        assert_eq!(parse_chunk_size(b"ffffffffffffffffffff"), None);
    }

    #[test]
    fn body_framing_follows_rfc_9112() {
        let map = |pairs: &[(&'static str, &'static str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.append(*k, HeaderValue::from_static(v));
            }
            m
        };
        assert!(matches!(body_kind(&map(&[])), Ok(BodyKind::Length(0))));
        assert!(matches!(
            body_kind(&map(&[("content-length", "12")])),
            Ok(BodyKind::Length(12))
        ));
        assert!(matches!(
            body_kind(&map(&[("content-length", "3"), ("content-length", "3")])),
            Ok(BodyKind::Length(3))
        ));
        assert!(matches!(
            body_kind(&map(&[("content-length", "3, 4")])),
            Err(ReadError::Bad(400))
        ));
        assert!(matches!(
            body_kind(&map(&[("content-length", "-1")])),
            Err(ReadError::Bad(400))
        ));
        assert!(matches!(
            body_kind(&map(&[("content-length", "+1")])),
            Err(ReadError::Bad(400))
        ));
        assert!(matches!(
            body_kind(&map(&[("content-length", "99999999999999999999999")])),
            Err(ReadError::Bad(413))
        ));
        assert!(matches!(
            body_kind(&map(&[
                ("transfer-encoding", "gzip, chunked"),
                ("content-length", "5")
            ])),
            Ok(BodyKind::Chunked)
        ));
        assert!(matches!(
            body_kind(&map(&[("transfer-encoding", "chunked, gzip")])),
            Err(ReadError::Bad(400))
        ));
    }

    #[test]
    fn heads_parse_and_mark_credentials_sensitive() {
        let raw = b"GET /p?q=1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret\r\n\r\nrest";
        let Ok(Some((head, len))) = head_of(raw) else {
            panic!("head did not parse")
        };
        assert_eq!(&raw[len..], b"rest");
        assert_eq!(head.method, Method::GET);
        assert_eq!(head.path, "/p");
        assert_eq!(head.query.as_deref(), Some("q=1"));
        assert!(!head.http10);
        assert!(head.headers["authorization"].is_sensitive());
        assert!(!format!("{:?}", head.headers).contains("s3cret"));
    }

    #[test]
    fn partial_and_malformed_heads() {
        assert!(matches!(head_of(b"GET / HTTP/1.1\r\nHost:"), Ok(None)));
        assert!(matches!(
            head_of(b"GET / HTTP/9.9\r\n\r\n"),
            Err(ReadError::Bad(400))
        ));
        assert!(matches!(
            head_of(b"\x00\x01\x02 / HTTP/1.1\r\n\r\n"),
            Err(ReadError::Bad(400))
        ));
        assert!(matches!(
            head_of(b"GET / HTTP/1.1\r\nbad header\r\n\r\n"),
            Err(ReadError::Bad(400))
        ));
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("h{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert!(matches!(head_of(&many), Err(ReadError::Bad(431))));
    }

    #[test]
    fn response_heads_add_framing_only_when_missing() {
        let text = |r: &Reply, close| String::from_utf8(response_head(r, close)).unwrap();
        assert_eq!(
            text(
                &Reply::status(503).header("retry-after", "1").body("busy"),
                false
            ),
            "HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\ncontent-length: 4\r\n\r\n"
        );
        assert_eq!(
            text(&Reply::status(204), true),
            "HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n"
        );
        assert_eq!(
            text(
                &Reply::ok()
                    .header("Content-Length", "99")
                    .header("Connection", "keep-alive"),
                true
            ),
            "HTTP/1.1 200 OK\r\nContent-Length: 99\r\nConnection: keep-alive\r\n\r\n"
        );
        assert_eq!(
            text(&Reply::status(42), false),
            "HTTP/1.1 042 \r\ncontent-length: 0\r\n\r\n"
        );
    }
}
