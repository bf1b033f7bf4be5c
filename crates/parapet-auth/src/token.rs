//! Tokens and where they come from.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::{SecretString, TokenError};

/// An access token and, when known, the instant it stops being valid.
///
/// ```
/// use std::time::Duration;
/// use parapet_auth::Token;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let t = Token::new("abc").with_expires_in(Duration::from_secs(3600));
/// assert_eq!(t.secret().expose(), "abc");
/// assert!(t.expires_at().is_some());
/// assert!(!format!("{t:?}").contains("abc"));
/// # }
/// ```
#[derive(Clone)]
pub struct Token {
    secret: SecretString,
    expires_at: Option<Instant>,
}

impl Token {
    /// A token with no known expiry: it is used until a 401 says otherwise.
    pub fn new(secret: impl Into<SecretString>) -> Self {
        Self {
            secret: secret.into(),
            expires_at: None,
        }
    }

    /// Sets the expiry to `lifetime` from now (OAuth's `expires_in`), on
    /// tokio's clock.
    #[must_use]
    pub fn with_expires_in(mut self, lifetime: Duration) -> Self {
        let now = Instant::now();
        self.expires_at = Some(
            now.checked_add(lifetime)
                .unwrap_or_else(|| parapet_core::far_future(now)),
        );
        self
    }

    /// Sets the instant the token expires.
    #[must_use]
    pub fn with_expires_at(mut self, at: Instant) -> Self {
        self.expires_at = Some(at);
        self
    }

    /// The token itself.
    #[must_use]
    pub fn secret(&self) -> &SecretString {
        &self.secret
    }

    /// When the token expires, if known.
    #[must_use]
    pub fn expires_at(&self) -> Option<Instant> {
        self.expires_at
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("secret", &self.secret)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// The future a [`ProvideToken`] returns.
pub type TokenFuture<'a> = Pin<Box<dyn Future<Output = Result<Token, TokenError>> + Send + 'a>>;

/// A source of access tokens: an OAuth 2.0 grant
/// ([`ClientCredentialsGrant`](crate::ClientCredentialsGrant),
/// [`RefreshTokenGrant`](crate::RefreshTokenGrant)), a cloud metadata
/// service, a file a sidecar rewrites...
///
/// Each call fetches a new token; caching, single-flight, refresh ahead of
/// expiry, timeouts and retries belong to the [`TokenCache`](crate::TokenCache)
/// that wraps the provider, so an implementation stays a plain fetch. The
/// trait is object safe (the cache holds an `Arc<dyn ProvideToken>`); the
/// boxed future costs one allocation per fetch, which is rare.
///
/// [`provider_fn`] turns an async closure into a provider.
///
/// ```
/// use std::time::Duration;
/// use parapet_auth::{ProvideToken, Token, TokenError, TokenFuture};
///
/// struct FromEnv;
///
/// impl ProvideToken for FromEnv {
///     fn fetch_token(&self) -> TokenFuture<'_> {
///         Box::pin(async {
///             let t = std::env::var("MY_API_TOKEN").unwrap_or_else(|_| "dev-token".into());
///             Ok(Token::new(t).with_expires_in(Duration::from_secs(300)))
///         })
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let token = FromEnv.fetch_token().await.unwrap();
/// assert!(token.expires_at().is_some());
/// # }
/// ```
pub trait ProvideToken: Send + Sync + 'static {
    /// Fetches a new token.
    ///
    /// # Errors
    ///
    /// A [`TokenError`]; say whether it is worth retrying with
    /// [`TokenError::transient`] or [`TokenError::permanent`]. A request
    /// that spends something (a rotating refresh token, a one-time code)
    /// must not be repeated once it may have reached the server: report
    /// such a failure as permanent unless
    /// [`parapet_core::request_never_sent`] proves it never left, as
    /// [`RefreshTokenGrant`](crate::RefreshTokenGrant) does.
    fn fetch_token(&self) -> TokenFuture<'_>;
}

impl<P: ProvideToken + ?Sized> ProvideToken for Arc<P> {
    fn fetch_token(&self) -> TokenFuture<'_> {
        (**self).fetch_token()
    }
}

impl<P: ProvideToken + ?Sized> ProvideToken for Box<P> {
    fn fetch_token(&self) -> TokenFuture<'_> {
        (**self).fetch_token()
    }
}

/// A [`ProvideToken`] from a closure returning a future.
///
/// ```
/// use std::time::Duration;
/// use parapet_auth::{provider_fn, ProvideToken, Token, TokenError};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let provider = provider_fn(|| async {
///     Ok::<_, TokenError>(Token::new("t0k3n").with_expires_in(Duration::from_secs(60)))
/// });
/// assert_eq!(provider.fetch_token().await.unwrap().secret().expose(), "t0k3n");
/// # }
/// ```
pub fn provider_fn<F, Fut>(f: F) -> FnProvider<F>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Token, TokenError>> + Send + 'static,
{
    FnProvider(f)
}

/// A [`ProvideToken`] made by [`provider_fn`].
#[derive(Clone)]
pub struct FnProvider<F>(F);

impl<F> fmt::Debug for FnProvider<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FnProvider")
    }
}

impl<F, Fut> ProvideToken for FnProvider<F>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Token, TokenError>> + Send + 'static,
{
    fn fetch_token(&self) -> TokenFuture<'_> {
        Box::pin((self.0)())
    }
}

/// Whether every byte is visible ASCII (no space, no control character):
/// what a token, API key or client id may hold.
pub(crate) fn is_visible_ascii(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_graphic())
}
