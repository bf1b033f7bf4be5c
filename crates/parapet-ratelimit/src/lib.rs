//! parapet-ratelimit (docs to come).

mod authority;
mod clock;
mod concurrency;
mod error;
mod quota;
mod ratelimit;
mod throttle;
mod wait;

pub use concurrency::{
    ConcurrencyLimit, ConcurrencyLimitBody, ConcurrencyLimitFuture, ConcurrencyLimitLayer,
};
pub use error::{ConcurrencyLimited, RateLimited, Throttled};
pub use quota::Quota;
pub use ratelimit::{RateLimit, RateLimitFuture, RateLimitLayer};
pub use throttle::{DEFAULT_MAX_SERVER_WAIT, Throttle, ThrottleFuture, ThrottleLayer};
