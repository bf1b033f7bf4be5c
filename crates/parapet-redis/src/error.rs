//! [`RedisUnavailable`]: Redis did not answer in time, and the layer fails
//! closed.

use std::error::Error;
use std::fmt;
use std::time::Duration;

/// Redis could not be reached, answered with an error, or did not answer
/// within the store's call timeout; or the URL given to
/// [`RedisStore::open`](crate::RedisStore::open) was not valid.
///
/// A layer that fails closed ([`Fallback::Closed`](crate::Fallback::Closed))
/// returns it instead of sending the call: nothing was sent. The message
/// never contains the Redis URL or its password.
///
/// ```
/// use parapet_redis::{RedisStore, RedisUnavailable};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let err: RedisUnavailable = RedisStore::open("nosuchscheme://x").unwrap_err();
/// assert!(err.to_string().starts_with("redis unavailable"));
/// # }
/// ```
#[derive(Debug)]
pub struct RedisUnavailable {
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    /// Marked unreachable by an earlier call; not tried again yet.
    Skipped,
    TimedOut(Duration),
    Redis(redis::RedisError),
}

impl RedisUnavailable {
    pub(crate) fn skipped() -> Self {
        Self {
            kind: Kind::Skipped,
        }
    }

    pub(crate) fn timed_out(after: Duration) -> Self {
        Self {
            kind: Kind::TimedOut(after),
        }
    }

    pub(crate) fn from_redis(err: redis::RedisError) -> Self {
        Self {
            kind: Kind::Redis(err),
        }
    }

    /// Whether the call timed out (as opposed to an error from Redis or
    /// the connection, or Redis already known to be down).
    #[must_use]
    pub fn is_timeout(&self) -> bool {
        matches!(self.kind, Kind::TimedOut(_))
    }
}

impl fmt::Display for RedisUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Skipped => f.write_str("redis unavailable: unreachable since an earlier call"),
            Kind::TimedOut(after) => write!(f, "redis unavailable: no answer within {after:?}"),
            Kind::Redis(err) => write!(f, "redis unavailable: {:?}", err.kind()),
        }
    }
}

impl Error for RedisUnavailable {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match &self.kind {
            Kind::Redis(err) => Some(err),
            _ => None,
        }
    }
}
