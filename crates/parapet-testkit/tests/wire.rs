//! Byte-level checks over raw TCP: request framing the server must read,
//! the exact bytes and TCP events of each fault, and shutdown.

// Test helpers outside #[test] functions may fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::io::ErrorKind;
use std::time::Duration;

use parapet_testkit::{Reply, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

/// Generous bound for things that should happen at once.
const SOON: Duration = Duration::from_secs(5);

/// A raw client connection that keeps what it over-read.
struct Wire {
    tcp: TcpStream,
    buf: Vec<u8>,
}

impl Wire {
    async fn open(server: &Server) -> Self {
        Self {
            tcp: TcpStream::connect(server.addr()).await.unwrap(),
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.tcp.write_all(bytes).await.unwrap();
    }

    /// Read more; `Ok(0)` at EOF.
    async fn fill(&mut self) -> std::io::Result<usize> {
        let mut chunk = [0u8; 4096];
        let n = timeout(SOON, self.tcp.read(&mut chunk))
            .await
            .expect("read timed out")?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Read one response head (up to the blank line) as text.
    async fn head(&mut self) -> String {
        loop {
            if let Some(at) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head: Vec<u8> = self.buf.drain(..at + 4).collect();
                return String::from_utf8(head).unwrap();
            }
            assert!(self.fill().await.unwrap() > 0, "EOF before a full head");
        }
    }

    /// Read one whole response with a content-length.
    async fn response(&mut self) -> (String, Vec<u8>) {
        let head = self.head().await;
        let len = content_length(&head).expect("content-length");
        while self.buf.len() < len {
            assert!(self.fill().await.unwrap() > 0, "EOF inside the body");
        }
        let body = self.buf.drain(..len).collect();
        (head, body)
    }

    /// Read until EOF or error; what was read, and how it ended.
    async fn until_end(&mut self) -> (Vec<u8>, std::io::Result<()>) {
        loop {
            match self.fill().await {
                Ok(0) => return (std::mem::take(&mut self.buf), Ok(())),
                Ok(_) => {}
                Err(e) => return (std::mem::take(&mut self.buf), Err(e)),
            }
        }
    }
}

fn content_length(head: &str) -> Option<usize> {
    head.lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().to_owned())
        })
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn chunked_request_bodies_are_decoded() {
    let server = Server::start().await;
    server.on("/up").reply(Reply::ok().body("got it"));
    let mut wire = Wire::open(&server).await;

    wire.send(
        b"POST /up HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n\
          5;name=value\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nx-trailer: t\r\n\r\n",
    )
    .await;
    let (head, body) = wire.response().await;

    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert_eq!(body, b"got it");
    let seen = &server.arrivals()[0];
    assert_eq!(seen.body, "hello world");
    assert_eq!(seen.body_len, 11);
    assert_eq!(seen.body_hash, parapet_testkit::body_hash(b"hello world"));
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let server = Server::start().await;
    server.on("/a").reply(Reply::ok().body("A"));
    server.on("/b").reply(Reply::ok().body("B"));
    let mut wire = Wire::open(&server).await;

    wire.send(
        b"GET /a HTTP/1.1\r\nhost: t\r\n\r\n\
          POST /b HTTP/1.1\r\nhost: t\r\ncontent-length: 3\r\n\r\nxyz\
          POST /a HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
    )
    .await;
    let bodies = [
        wire.response().await.1,
        wire.response().await.1,
        wire.response().await.1,
    ];

    assert_eq!(bodies, [b"A", b"B", b"A"]);
    let seen = server.arrivals();
    let summary: Vec<_> = seen
        .iter()
        .map(|a| (a.path.as_str(), a.body_text(), a.connection))
        .collect();
    assert_eq!(
        summary,
        [
            ("/a", String::new(), 1),
            ("/b", "xyz".into(), 1),
            ("/a", "hi".into(), 1)
        ]
    );
}

#[tokio::test]
async fn expect_100_continue_is_answered_before_the_body_is_sent() {
    let server = Server::start().await;
    server.on("/big").reply(Reply::status(201));
    let mut wire = Wire::open(&server).await;

    wire.send(b"PUT /big HTTP/1.1\r\nhost: t\r\nexpect: 100-continue\r\ncontent-length: 4\r\n\r\n")
        .await;
    let interim = wire.head().await;
    wire.send(b"data").await;
    let (last, _) = wire.response().await;

    assert_eq!(interim, "HTTP/1.1 100 Continue\r\n\r\n");
    assert!(last.starts_with("HTTP/1.1 201 Created\r\n"), "{last}");
    assert_eq!(server.arrivals()[0].body, "data");
}

#[tokio::test]
async fn malformed_requests_get_400_and_a_close_and_are_not_recorded() {
    let server = Server::start().await;
    server.on("/").reply(Reply::ok());

    for garbage in [
        &b"NOT HTTP AT ALL\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\ncontent-length: ten\r\n\r\n",
        b"GET / HTTP/1.1\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
        b"POST / HTTP/1.1\r\ntransfer-encoding: gzip\r\n\r\n",
        b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
        b"GET / HTTP/1.1\r\nna me: v\r\n\r\n",
    ] {
        let mut wire = Wire::open(&server).await;
        wire.send(garbage).await;
        let (answer, end) = wire.until_end().await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "{answer}"
        );
        assert!(answer.contains("connection: close\r\n"), "{answer}");
        assert!(end.is_ok(), "a clean close, not a reset: {end:?}");
    }

    assert!(server.arrivals().is_empty());
    // The server still serves well-formed requests.
    let mut wire = Wire::open(&server).await;
    wire.send(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n").await;
    assert!(wire.response().await.0.starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn an_oversized_head_gets_431() {
    let server = Server::start().await;
    let mut wire = Wire::open(&server).await;

    let mut huge = b"GET / HTTP/1.1\r\nx-big: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 70 * 1024));
    // The server may answer and close before reading all of it.
    let _ = wire.tcp.write_all(&huge).await;
    let (answer, _) = wire.until_end().await;

    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 431 "));
}

#[tokio::test]
async fn random_bytes_never_stop_the_server() {
    let server = Server::start().await;
    server.on("/ok").reply(Reply::ok());
    // A fixed pseudo-random sequence (xorshift), so failures reproduce.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    for round in 0..40 {
        let mut junk = Vec::new();
        if round % 2 == 0 {
            junk.extend_from_slice(b"POST /ok HTTP/1.1\r\n");
        }
        for _ in 0..(64 + round * 16) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            junk.push(state.to_le_bytes()[0]);
        }
        junk.extend_from_slice(b"\r\n\r\n");
        let mut wire = Wire::open(&server).await;
        let _ = wire.tcp.write_all(&junk).await;
        let _ = wire.tcp.shutdown().await;
        let _ = wire.until_end().await;
    }

    let mut wire = Wire::open(&server).await;
    wire.send(b"GET /ok HTTP/1.1\r\nhost: t\r\n\r\n").await;
    assert!(wire.response().await.0.starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn http_1_0_and_connection_close_end_the_connection_after_the_answer() {
    let server = Server::start().await;
    server.on("/").reply(Reply::ok().body("x"));

    for request in [
        &b"GET / HTTP/1.0\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n",
    ] {
        let mut wire = Wire::open(&server).await;
        wire.send(request).await;
        let (head, body) = wire.response().await;
        assert!(head.contains("connection: close\r\n"), "{head}");
        assert_eq!(body, b"x");
        let (rest, end) = wire.until_end().await;
        assert!(rest.is_empty() && end.is_ok(), "then EOF: {rest:?} {end:?}");
    }
}

#[tokio::test]
async fn close_sends_nothing_and_ends_the_connection_cleanly() {
    let server = Server::start().await;
    server.on("/").reply(Reply::close());
    let mut wire = Wire::open(&server).await;

    wire.send(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n").await;
    let (bytes, end) = wire.until_end().await;

    assert!(bytes.is_empty());
    assert!(end.is_ok(), "FIN, not RST: {end:?}");
    assert_eq!(server.hits("/"), 1);
}

#[tokio::test]
async fn reset_sends_rst_without_reading_the_body() {
    let server = Server::start().await;
    server.on("/").reply(Reply::reset());
    let mut wire = Wire::open(&server).await;

    // The body is announced but only partly sent: the server must not wait
    // for it.
    wire.send(b"POST / HTTP/1.1\r\nhost: t\r\ncontent-length: 100\r\n\r\npartial")
        .await;
    let (bytes, end) = wire.until_end().await;

    assert!(bytes.is_empty());
    assert_eq!(end.unwrap_err().kind(), ErrorKind::ConnectionReset);
    assert_eq!(server.arrivals()[0].body_len, 0);
    assert_eq!(server.in_flight(), 0);
}

#[tokio::test]
async fn reset_after_headers_sends_the_head_and_any_truncated_part_then_rst() {
    let server = Server::start().await;
    server.on("/").reply(
        Reply::reset_after_headers()
            .with_status(206)
            .body("0123456789")
            .truncate_body(4),
    );
    let mut wire = Wire::open(&server).await;

    wire.send(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n").await;
    let head = wire.head().await;
    let (rest, end) = wire.until_end().await;

    assert!(
        head.starts_with("HTTP/1.1 206 Partial Content\r\n"),
        "{head}"
    );
    assert_eq!(content_length(&head), Some(10));
    assert_eq!(rest, b"0123");
    assert_eq!(end.unwrap_err().kind(), ErrorKind::ConnectionReset);
}

#[tokio::test]
async fn truncate_body_sends_fewer_bytes_than_announced_then_fin() {
    let server = Server::start().await;
    server
        .on("/")
        .reply(Reply::ok().body("0123456789").truncate_body(3));
    let mut wire = Wire::open(&server).await;

    wire.send(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n").await;
    let head = wire.head().await;
    let (rest, end) = wire.until_end().await;

    assert_eq!(content_length(&head), Some(10));
    assert!(
        !head.contains("connection: close"),
        "a truncation is not announced"
    );
    assert_eq!(rest, b"012");
    assert!(end.is_ok(), "FIN: {end:?}");
}

#[tokio::test]
async fn drip_spaces_the_chunks() {
    let server = Server::start().await;
    let every = Duration::from_millis(40);
    server
        .on("/")
        .reply(Reply::ok().body("aaaabbbbcccc").drip(4, every));
    let mut wire = Wire::open(&server).await;

    wire.send(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n").await;
    let sent = Instant::now();
    wire.head().await;
    let mut pieces = Vec::new();
    while wire.buf.len() < 12 {
        assert!(wire.fill().await.unwrap() > 0);
        pieces.push((sent.elapsed(), wire.buf.len()));
    }

    assert_eq!(wire.buf, b"aaaabbbbcccc");
    assert!(pieces.len() >= 2, "the body came in one piece: {pieces:?}");
    let (whole_at, _) = pieces[pieces.len() - 1];
    assert!(
        whole_at >= every * 3,
        "three chunks, one interval before each: {pieces:?}"
    );
    // No chunk may come before its interval has passed.
    for &(at, len) in &pieces {
        let chunks = u32::try_from(len.div_ceil(4)).unwrap();
        assert!(at >= every * chunks, "{len} bytes after {at:?}: {pieces:?}");
    }
}

#[tokio::test]
async fn a_hanging_request_stays_in_flight_until_the_client_leaves() {
    let server = Server::start().await;
    server.on("/").reply(Reply::hang());
    let mut wire = Wire::open(&server).await;

    wire.send(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n").await;
    server.wait_for_arrivals(1).await;
    assert_eq!(server.in_flight(), 1);
    let nothing = timeout(Duration::from_millis(50), wire.tcp.read(&mut [0u8; 1])).await;
    assert!(nothing.is_err(), "no byte may come");

    drop(wire);
    timeout(SOON, server.wait_idle())
        .await
        .expect("the server sees the client leave");
    assert_eq!(server.max_in_flight(), 1);
}

#[tokio::test]
async fn a_client_leaving_during_a_delay_ends_the_request_at_once() {
    let server = Server::start().await;
    server
        .on("/")
        .reply(Reply::ok().delay(Duration::from_secs(30)));
    let mut wire = Wire::open(&server).await;

    wire.send(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n").await;
    server.wait_for_arrivals(1).await;
    assert_eq!(server.in_flight(), 1);
    drop(wire);

    timeout(SOON, server.wait_idle())
        .await
        .expect("not after the 30 s delay");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_request_is_not_counted_with_the_next_one() {
    // The client gives up on a hanging request, closes its connection, and
    // only then sends its retry: never two in flight at once.
    let server = Server::start().await;
    server.on("/").replies([Reply::hang(), Reply::ok()]);

    for round in 1..=20 {
        server.on("/").replies([Reply::hang(), Reply::ok()]);
        let mut abandoned = Wire::open(&server).await;
        abandoned.send(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n").await;
        server.wait_for_arrivals(2 * round - 1).await;
        drop(abandoned);
        let mut retry = Wire::open(&server).await;
        retry.send(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n").await;
        assert!(retry.response().await.0.starts_with("HTTP/1.1 200"));
    }

    assert_eq!(server.max_in_flight(), 1);
}

#[tokio::test]
async fn dropping_the_server_refuses_new_connections() {
    let server = Server::start().await;
    let addr = server.addr();
    assert!(TcpStream::connect(addr).await.is_ok());

    drop(server);

    let err = TcpStream::connect(addr).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused);
}

#[tokio::test]
async fn dropping_the_server_ends_open_connections() {
    let server = Server::start().await;
    server.on("/").reply(Reply::hang());
    let mut wire = Wire::open(&server).await;
    wire.send(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n").await;
    server.wait_for_arrivals(1).await;

    drop(server);

    // EOF (or a reset) instead of hanging forever.
    let (bytes, _end) = wire.until_end().await;
    assert!(bytes.is_empty());
}

#[tokio::test]
async fn shutdown_waits_until_every_connection_is_closed() {
    let server = Server::start().await;
    server.on("/").reply(Reply::hang());
    let mut idle = Wire::open(&server).await;
    let mut hanging = Wire::open(&server).await;
    hanging.send(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n").await;
    server.wait_for_arrivals(1).await;
    let addr = server.addr();

    timeout(SOON, server.shutdown())
        .await
        .expect("shutdown ends");

    // Both sockets are already closed on the server side: EOF is waiting.
    for wire in [&mut idle, &mut hanging] {
        let mut byte = [0u8; 1];
        let read = timeout(Duration::from_millis(500), wire.tcp.read(&mut byte)).await;
        assert!(matches!(read, Ok(Ok(0) | Err(_))), "{read:?}");
    }
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn connections_are_counted_and_numbered_in_accept_order() {
    let server = Server::start().await;
    server.on("/").reply(Reply::ok());
    let mut first = Wire::open(&server).await;
    let mut second = Wire::open(&server).await;

    second.send(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n").await;
    second.response().await;
    first.send(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n").await;
    first.response().await;

    let ids: Vec<u64> = server.arrivals().iter().map(|a| a.connection).collect();
    assert_eq!(ids, [2, 1]);
    assert_eq!(server.connections(), 2);
}

#[tokio::test]
async fn wait_for_arrivals_returns_once_enough_have_been_read() {
    let server = Server::start().await;
    server.on("/").reply(Reply::ok());
    let addr = server.addr();
    let sender = tokio::spawn(async move {
        for _ in 0..3 {
            let mut tcp = TcpStream::connect(addr).await.unwrap();
            tcp.write_all(b"GET / HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")
                .await
                .unwrap();
            let mut sink = Vec::new();
            tcp.read_to_end(&mut sink).await.unwrap();
        }
    });

    let seen = timeout(SOON, server.wait_for_arrivals(3)).await.unwrap();

    assert_eq!(seen.len(), 3);
    sender.await.unwrap();
}

#[tokio::test]
async fn scripted_headers_are_written_byte_for_byte() {
    let server = Server::start().await;
    server.on("/").reply(
        Reply::status(429)
            .header("Retry-After", "1")
            .header("x-dup", "a")
            .header("x-dup", "b")
            .body("slow down"),
    );
    let mut wire = Wire::open(&server).await;

    wire.send(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n").await;
    let (head, body) = wire.response().await;

    assert_eq!(
        head,
        "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nx-dup: a\r\nx-dup: b\r\ncontent-length: 9\r\n\r\n"
    );
    assert_eq!(body, b"slow down");
}
