//! A loopback HTTP/1.1 server with scripted faults, for testing HTTP clients.
//!
//! Testing a resilient client means making a server misbehave on cue: answer
//! 503 twice and then 200, say 429 with `Retry-After`, stall before its
//! headers, drip its body, reset the connection halfway, close without a
//! word, or never answer at all. Mock servers built on a full HTTP stack
//! cannot do most of that; this one writes its bytes itself over plain TCP,
//! so every fault is exact. It also records every request that arrived (when,
//! on which connection, with which headers and body), so a test can assert
//! from the server's side what the client really sent.
//!
//! It serves parapet's own tests, examples and benchmarks, and your tests
//! of code built on parapet (or on any HTTP/1.1 client).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use std::time::Duration;
//! use parapet_testkit::{Reply, Server};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! let server = Server::start().await; // 127.0.0.1, a free port
//! server.on("/charge").replies([
//!     Reply::status(503),                                   // 1st request
//!     Reply::status(429).header("retry-after", "1"),        // 2nd
//!     Reply::ok().body("charged").delay(Duration::from_millis(10)), // 3rd and later
//! ]);
//! server.on("/flaky").reply(Reply::reset_after_headers());
//!
//! // Any client will do; here, three requests on one raw connection.
//! let mut tcp = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
//! let request = b"POST /charge HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}";
//! let mut statuses = Vec::new();
//! for _ in 0..3 {
//!     tcp.write_all(request).await.unwrap();
//!     let mut buf = [0u8; 256];
//!     let n = tcp.read(&mut buf).await.unwrap(); // each answer is one write
//!     statuses.push(String::from_utf8_lossy(&buf[9..12]).into_owned());
//!     assert!(n > 12);
//! }
//! assert_eq!(statuses, ["503", "429", "200"]);
//!
//! // What the server saw: three POSTs with the same body, on one connection.
//! let seen = server.arrivals_for("/charge");
//! assert_eq!(seen.len(), 3);
//! assert!(seen.iter().all(|a| a.connection == 1 && a.body == "{}"));
//! assert_eq!(server.connections(), 1);
//! # }
//! ```
//!
//! # What a script can say
//!
//! Per path ([`Server::on`]), and per request number on that path
//! ([`Route::replies`]: the n-th request gets the n-th reply, the last one
//! repeats), a [`Reply`] can:
//!
//! | fault | how |
//! |---|---|
//! | answer with a status, headers and a body | [`Reply::status`], [`Reply::header`], [`Reply::body`] |
//! | wait before the headers | [`Reply::delay`] |
//! | drip the body slowly | [`Reply::drip`] |
//! | send a body shorter than its `content-length`, then close | [`Reply::truncate_body`] |
//! | send the headers, then reset (RST) | [`Reply::reset_after_headers`] |
//! | close (FIN) without answering | [`Reply::close`] |
//! | reset (RST) before reading the body | [`Reply::reset`] |
//! | never answer, hold the connection | [`Reply::hang`] |
//! | close the connection after answering | [`Reply::then_close`] |
//! | fail N times, then succeed | [`Route::fail_times`] |
//! | decide from the request | [`Route::handle`] |
//!
//! # What it records
//!
//! [`Server::arrivals`] lists an [`Arrival`] per request (time, connection
//! id, method, path, query, headers, body, body length and
//! [`body_hash`]). [`Server::connections`] counts accepted connections, and
//! [`Server::max_in_flight`] the most requests served at once, for tests of
//! concurrency limits.
//!
//! # Time
//!
//! The server runs on tokio's clock with real sockets: use it from tests on
//! real time (a plain `#[tokio::test]`), never with paused time.
//!
//! # Features
//!
//! - `wiremock`: [`wiremock`](mod@wiremock) helpers for tests with wiremock as the
//!   upstream: "fail N times", `Retry-After` and rate-limit answers, a mock
//!   OAuth 2.0 token endpoint, and assertions on what arrived.
//! - `chaos`: [`chaos::ChaosLayer`], a tower layer that injects latency,
//!   errors and statuses at seeded rates, for staging tests.

mod arrival;
mod conn;
mod reply;
mod rng;
mod server;

#[cfg(feature = "chaos")]
pub mod chaos;
#[cfg(feature = "wiremock")]
pub mod wiremock;

pub use arrival::{Arrival, body_hash};
pub use reply::Reply;
pub use rng::Rng;
pub use server::{FailTimes, Route, Server};
