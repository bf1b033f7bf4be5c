//! Issue 15, must-fix 3, through the client and a real socket: a request
//! body streamed from a channel, answered 503 before the server read it.
//! hyper may go on writing attempt 1's body while the retry's re-send reads
//! the same source; neither may be left unwoken. Checked from the server's
//! side: the re-send arrives with the whole body, and the call ends well
//! within its attempt timeout.
//!
//! The testkit server reads a request's body before it answers, so this
//! test runs its own small HTTP/1.1 server on a loopback socket.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// A channel's receiving end as a `Stream` of body chunks.
struct Chunks(mpsc::Receiver<Bytes>);

impl futures_core::Stream for Chunks {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx).map(|c| c.map(Ok))
    }
}

/// Reads until the end of the request head; returns the head and what was
/// read past it.
async fn read_head(sock: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            return Some((head, buf[end + 4..].to_vec()));
        }
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Reads a chunked body to its end (`0\r\n\r\n`) and decodes it.
async fn read_chunked(sock: &mut TcpStream, mut buf: Vec<u8>) -> Vec<u8> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(body) = decode_chunked(&buf) {
            return body;
        }
        let n = sock.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the re-send's body ended early");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The decoded body, once `buf` holds a whole chunked body.
fn decode_chunked(mut buf: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = buf.windows(2).position(|w| w == b"\r\n")?;
        let size = usize::from_str_radix(std::str::from_utf8(&buf[..line_end]).ok()?, 16).ok()?;
        buf = &buf[line_end + 2..];
        if size == 0 {
            return buf.starts_with(b"\r\n").then_some(out);
        }
        if buf.len() < size + 2 {
            return None;
        }
        out.extend_from_slice(&buf[..size]);
        buf = &buf[size + 2..];
    }
}

#[tokio::test]
async fn a_streamed_body_answered_early_is_re_sent_whole_and_nothing_stalls() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let seen = Arc::clone(&received);
    tokio::spawn(async move {
        let mut connection = 0;
        loop {
            let (mut sock, _) = listener.accept().await.unwrap();
            connection += 1;
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                let Some((_head, mut rest)) = read_head(&mut sock).await else {
                    return;
                };
                if connection == 1 {
                    // Read the first 2 KiB of the body, so hyper is mid-way
                    // through writing it when the answer comes.
                    let mut chunk = [0u8; 1024];
                    while rest.len() < 2048 {
                        match sock.read(&mut chunk).await {
                            Ok(n @ 1..) => rest.extend_from_slice(&chunk[..n]),
                            _ => return,
                        }
                    }
                    // Answer before reading the body, then read on (slowly
                    // draining what hyper still writes) until it stops.
                    sock.write_all(
                        b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n",
                    )
                    .await
                    .unwrap();
                    let mut sink = [0u8; 1024];
                    while let Ok(1..) = sock.read(&mut sink).await {}
                } else {
                    let body = read_chunked(&mut sock, rest).await;
                    seen.lock().unwrap().push(body);
                    sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\ndone")
                        .await
                        .unwrap();
                }
            });
        }
    });

    // 16 chunks of 1 KiB, one every 10 ms: the 503 arrives while the
    // source is still producing.
    let (tx, rx) = mpsc::channel(1);
    let expected: Vec<u8> = (0..16u8).flat_map(|i| vec![b'a' + i; 1024]).collect();
    tokio::spawn(async move {
        for i in 0..16u8 {
            if tx.send(Bytes::from(vec![b'a' + i; 1024])).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });

    let client = parapet::Client::builder()
        .retry(
            parapet::retry::RetryPolicy::builder()
                .base_delay(Duration::from_millis(5))
                .max_delay(Duration::from_millis(20))
                .classify(parapet::retry_classifier)
                .build()
                .unwrap(),
        )
        .throttle(None)
        .attempt_timeout(Duration::from_secs(5))
        .deadline(Duration::from_secs(10))
        .build()
        .unwrap();
    let started = tokio::time::Instant::now();
    let resp = client
        .put(&format!("http://{addr}/upload"))
        .body_stream(Chunks(rx))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "after {:?}", started.elapsed());
    assert_eq!(resp.attempts(), 2);
    assert_eq!(resp.text().await.unwrap(), "done");
    let received = received.lock().unwrap();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0], expected);
    // A stranded waker would have left the call to the attempt timeout
    // (5 s); the source itself takes 160 ms.
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}
