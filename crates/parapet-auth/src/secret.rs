//! A string that never prints itself.

use std::fmt;
use std::sync::Arc;

/// A secret string (a token, a password, an API key) whose `Debug` prints
/// `[REDACTED]`.
///
/// It has no `Display`, so it cannot end up in a log line by accident: the
/// value is reached only through [`expose`](Self::expose). Cloning it copies
/// a reference count, not the bytes.
///
/// ```
/// use parapet_auth::SecretString;
///
/// let s = SecretString::new("hunter2");
/// assert_eq!(s.expose(), "hunter2");
/// assert_eq!(format!("{s:?}"), "SecretString([REDACTED])");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(Arc<str>);

impl SecretString {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(Arc::from(secret.into()))
    }

    /// The secret itself. Every call site is a place where it may leak:
    /// keep them few.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The length of the secret, in bytes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the secret is the empty string.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString([REDACTED])")
    }
}

impl From<String> for SecretString {
    fn from(s: String) -> Self {
        Self::new(s)
    }
}

impl From<&str> for SecretString {
    fn from(s: &str) -> Self {
        Self::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted_even_when_nested() {
        let s = SecretString::from("planted-secret-value");
        let nested = Some(vec![s.clone()]);
        assert!(!format!("{nested:?} {nested:#?}").contains("planted"));
        assert_eq!(s.len(), 20);
        assert!(!s.is_empty());
    }
}
