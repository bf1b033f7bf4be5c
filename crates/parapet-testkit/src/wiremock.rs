//! Helpers for tests that use [wiremock](https://docs.rs/wiremock) as the
//! upstream (feature `wiremock`).
//!
//! wiremock answers at the HTTP level: statuses, headers, bodies, a delay
//! before the answer. These add the answers a resilient client must be
//! tested against, and assertions on what arrived:
//!
//! | need | helper |
//! |---|---|
//! | fail N times, then answer | [`FailTimes`] (a responder with an atomic counter) |
//! | "wait": `Retry-After` in seconds or as an HTTP-date | [`retry_after`], [`retry_after_date`] |
//! | "wait": `X-RateLimit-*`, IETF `RateLimit` | [`x_ratelimit`], [`x_ratelimit_epoch`], [`ratelimit`] |
//! | an OAuth 2.0 token endpoint that issues, expires and revokes tokens and counts fetches | [`TokenIssuer`], its API side [`RequireBearer`] |
//! | all attempts of one call share a request id | [`assert_one_request_id`] |
//! | a POST arrived once | [`assert_arrived_once`], [`assert_key_arrived_once`] |
//! | arrivals were spaced at least d apart | [`ArrivalTimes`] |
//!
//! **Slow answers** are wiremock's own `ResponseTemplate::set_delay`: the
//! whole answer (headers and body) waits. **Dripping bodies** are beyond
//! wiremock: it writes a template's body in one piece after the delay. For
//! a body that arrives a few bytes at a time (to test body idle and total
//! timeouts), use this crate's own server: [`Reply::drip`](crate::Reply::drip).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use std::time::Duration;
//! use parapet_testkit::wiremock::{ArrivalTimes, FailTimes, assert_one_request_id, retry_after};
//! use wiremock::{Mock, MockServer, ResponseTemplate, matchers::path};
//!
//! // Arrange: 429 "wait 1 s" once, then 200; arrival times recorded.
//! let upstream = MockServer::start().await;
//! let times = ArrivalTimes::new();
//! let busy_once = FailTimes::new(1, retry_after(429, Duration::from_secs(1)), ResponseTemplate::new(200));
//! Mock::given(path("/v1/report")).respond_with(times.record(busy_once)).mount(&upstream).await;
//!
//! // Act: a client that honours Retry-After (here, by hand).
//! # let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
//! #     .build_http::<String>();
//! let attempt = || http::Request::get(format!("{}/v1/report", upstream.uri()))
//!     .header("x-request-id", "call-1").body(String::new()).unwrap();
//! let first = http.request(attempt()).await.unwrap();
//! let wait: u64 = first.headers()["retry-after"].to_str().unwrap().parse().unwrap();
//! tokio::time::sleep(Duration::from_secs(wait)).await;
//! assert_eq!(http.request(attempt()).await.unwrap().status(), 200);
//!
//! // Assert, from the upstream's side.
//! let received = upstream.received_requests().await.unwrap();
//! assert_eq!(assert_one_request_id(&received), "call-1");
//! times.assert_spaced_at_least(Duration::from_secs(1));
//! # }
//! ```
//!
//! wiremock runs on real sockets: use these from tests on real time, never
//! with `tokio::time::pause`.

mod assert;
mod oauth;
mod respond;

pub use assert::{
    ArrivalTimes, Timed, assert_arrived_once, assert_key_arrived_once, assert_one_request_id,
};
pub use oauth::{DEFAULT_EXPIRES_IN, RequireBearer, TokenIssuer};
pub use respond::{
    FailTimes, ratelimit, retry_after, retry_after_date, x_ratelimit, x_ratelimit_epoch,
};
