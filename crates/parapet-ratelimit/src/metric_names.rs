//! The names of the metrics these layers report with the cargo feature
//! `metrics` (see the [crate docs](crate#metrics) for kinds, units, labels
//! and when each moves).
//!
//! The constants exist with the feature off too, so that other crates (an
//! exporter's bucket setup, dashboards as code) can name the metrics
//! without turning it on.
//!
//! ```
//! use parapet_ratelimit::metric_names;
//!
//! assert_eq!(metric_names::THROTTLE_WAIT, "parapet.client.throttle.wait");
//! ```

/// `parapet.client.throttle.closures`: counter; a response said "wait"
/// (`Retry-After`, or rate-limit fields with nothing remaining) and closed
/// its authority's gate. Labels `server.address`, `server.port`, `source`
/// (`retry_after` or `rate_limit`).
pub const THROTTLE_CLOSURES: &str = "parapet.client.throttle.closures";

/// `parapet.client.throttle.held`: histogram, seconds; how long such a
/// response closed the gate for (after the layer's `max_server_wait` cap),
/// recorded as it closes. Labels as [`THROTTLE_CLOSURES`].
pub const THROTTLE_HELD: &str = "parapet.client.throttle.held";

/// `parapet.client.throttle.wait`: histogram, seconds; how long a request
/// waited at its authority's gate (closed, or pacing the last requests of a
/// window) before it went on; only waits above zero. Labels
/// `server.address`, `server.port`.
pub const THROTTLE_WAIT: &str = "parapet.client.throttle.wait";

/// `parapet.client.throttle.rejections`: counter; a request the throttle
/// failed with [`Throttled`](crate::Throttled) (reject mode, or the gate
/// opening past `max_wait` or the deadline). Labels `server.address`,
/// `server.port`.
pub const THROTTLE_REJECTIONS: &str = "parapet.client.throttle.rejections";

/// `parapet.client.rate_limit.wait`: histogram, seconds; how long a request
/// waited for its turn at the client-side rate limit before it went on;
/// only waits above zero. Labels `server.address`, `server.port`.
pub const RATE_LIMIT_WAIT: &str = "parapet.client.rate_limit.wait";

/// `parapet.client.rate_limit.rejections`: counter; a request the rate
/// limiter failed with [`RateLimited`](crate::RateLimited). Labels
/// `server.address`, `server.port`.
pub const RATE_LIMIT_REJECTIONS: &str = "parapet.client.rate_limit.rejections";

/// `parapet.client.concurrency.queue`: histogram, seconds; how long a
/// request that found every slot taken queued before it got one. Labels
/// `server.address`, `server.port`.
pub const CONCURRENCY_QUEUE: &str = "parapet.client.concurrency.queue";

/// `parapet.client.concurrency.rejections`: counter; a request the
/// concurrency limiter failed with
/// [`ConcurrencyLimited`](crate::ConcurrencyLimited). Labels
/// `server.address`, `server.port`.
pub const CONCURRENCY_REJECTIONS: &str = "parapet.client.concurrency.rejections";
