//! Marking a local refusal that a retry must not repeat.

use std::error::Error;
use std::fmt;
use std::time::Duration;

/// How deep a source chain is followed before giving up.
const MAX_DEPTH: usize = 32;

/// The mark of an error that refused a request locally, on purpose, before
/// it left: an open circuit, a limiter in reject mode. Sending the request
/// again now would be refused the same way, so a retry layer returns such
/// an error at once instead of spending attempts and backoff on it.
///
/// A layer that refuses puts a `FailFast` in its error's `source()` chain
/// (or returns it directly); [`is_fail_fast`] finds it. It carries, when
/// the refusing layer knows it, how long until a request would be let
/// through again.
///
/// ```
/// use std::error::Error;
/// use std::time::Duration;
/// use parapet_core::{FailFast, is_fail_fast};
///
/// let refused = FailFast::new(Some(Duration::from_secs(3)));
/// assert!(is_fail_fast(&refused));
/// assert_eq!(refused.retry_after(), Some(Duration::from_secs(3)));
///
/// let other = std::io::Error::other("boom");
/// assert!(!is_fail_fast(&other));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FailFast {
    retry_after: Option<Duration>,
}

impl FailFast {
    /// A refusal; `retry_after` is how long until the refusing layer would
    /// let a request through, when it knows.
    #[must_use]
    pub const fn new(retry_after: Option<Duration>) -> Self {
        Self { retry_after }
    }

    /// How long until the refusing layer would let a request through, when
    /// it knows.
    #[must_use]
    pub const fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
}

impl fmt::Display for FailFast {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("refused locally before sending; not retried")
    }
}

impl Error for FailFast {}

/// Whether `error` or an error in its `source()` chain (up to 32 levels) is
/// a [`FailFast`] refusal.
#[must_use]
pub fn is_fail_fast(error: &(dyn Error + 'static)) -> bool {
    let mut cur = Some(error);
    for _ in 0..MAX_DEPTH {
        let Some(e) = cur else { return false };
        if e.is::<FailFast>() {
            return true;
        }
        cur = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Wrapper(FailFast);

    impl fmt::Display for Wrapper {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("circuit open")
        }
    }

    impl Error for Wrapper {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn found_in_the_chain() {
        let wrapped = Wrapper(FailFast::default());
        assert!(is_fail_fast(&wrapped));
        let boxed: Box<dyn Error + Send + Sync> = Box::new(wrapped);
        assert!(is_fail_fast(boxed.as_ref()));
        assert!(!is_fail_fast(&std::io::Error::from(
            std::io::ErrorKind::ConnectionReset
        )));
    }
}
