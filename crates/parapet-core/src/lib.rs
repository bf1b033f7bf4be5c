//! The vocabulary every parapet layer shares. No I/O happens here.
//!
//! parapet is a set of independent `tower` layers that make an outbound HTTP
//! client resilient. Each layer crate depends on this one and on nothing
//! else of ours, so that the rules below are written once:
//!
//! - **Idempotency** ([`IdempotencyRules`], [`Idempotency`], [`IdempotencyKey`]):
//!   which requests may be sent more than once (RFC 9110 §9.2.2), with a
//!   per-request override and an opt-in rule for `Idempotency-Key`.
//! - **`Retry-After`** ([`retry_after`], [`parse_retry_after`],
//!   [`parse_http_date`]): both forms, all three date formats, against a
//!   `now` the caller gives; garbage is "absent", never a panic.
//! - **Server rate-limit signals** ([`ServerLimit`]): `X-RateLimit-*`
//!   (epoch or delta resets), the IETF `RateLimit` / `RateLimit-Policy`
//!   fields and GitHub's conventions, as one parsed answer.
//! - **Replayable bodies** ([`ReplayBody`]): stream once, keep a copy up to a
//!   cap, send again byte for byte.
//! - **What layers share about a call** ([`Deadline`], [`Attempt`]): in the
//!   request's extensions, or, for the call's deadline, in scope while the
//!   deadline layer calls and polls its inner service ([`Deadline::current`]);
//!   and one clock read for a call's set-up ([`clock`]).
//! - **Jitter** ([`Jitter`]): random in production, scripted in tests.
//! - **Never sent** ([`request_never_sent`]): whether a failure proves the
//!   request never left, so any method may be sent again; with the feature
//!   `hyper-util`, hyper-util's own `is_connect()` decides.
//!
//! Time is always `tokio::time`, so tests pause and advance it.
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use http::{Request, StatusCode, HeaderMap, HeaderValue};
//! use parapet_core::{IdempotencyRules, IdempotencyKey, ServerLimit};
//!
//! // May this POST be retried? Only with a key, and only when opted in.
//! let mut req = Request::post("https://api.example.com/charges").body(()).unwrap();
//! let rules = IdempotencyRules::new().trust_idempotency_key(true);
//! assert!(!rules.is_idempotent(&req));
//! IdempotencyKey::ensure(&mut req);
//! assert!(rules.is_idempotent(&req));
//!
//! // The server said 429 with Retry-After: how long must we wait?
//! let mut headers = HeaderMap::new();
//! headers.insert("retry-after", HeaderValue::from_static("7"));
//! let limit = ServerLimit::from_response(StatusCode::TOO_MANY_REQUESTS, &headers, SystemTime::now());
//! assert_eq!(limit.and_then(|l| l.wait()), Some(Duration::from_secs(7)));
//! ```

pub mod authority;
pub mod clock;
mod extensions;
mod fail_fast;
mod hash;
mod httpdate;
mod idempotency;
mod never_sent;
pub mod otel;
mod random;
mod replay;
mod retry_after;
mod rounded;
mod server_limit;
mod sf;

pub use extensions::{Attempt, Deadline, DeadlineScope, far_future};
pub use fail_fast::{FailFast, is_fail_fast};
pub use hash::{HostHashBuilder, HostHasher};
pub use httpdate::{fmt_http_date, parse_http_date};
pub use idempotency::{
    IDEMPOTENCY_KEY, Idempotency, IdempotencyKey, IdempotencyRules, is_idempotent_method,
    is_safe_method,
};
pub use never_sent::request_never_sent;
pub use random::{Jitter, format_uuid, random_u64};
pub use replay::{BoxError, DEFAULT_REPLAY_CAP, ReplayBody, ReplayError};
pub use retry_after::{parse_retry_after, retry_after};
pub use rounded::RoundedDuration;
pub use server_limit::{
    LimitSource, RATELIMIT, RATELIMIT_POLICY, ServerLimit, X_RATELIMIT_LIMIT,
    X_RATELIMIT_REMAINING, X_RATELIMIT_RESET, X_RATELIMIT_RESET_AFTER,
};
