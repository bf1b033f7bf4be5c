//! Per-request overrides: settings a [`RequestBuilder`] carries in the
//! request's extensions (or headers), which the client's layers read for
//! that call only. [`Client`](crate::Client) used as a `tower::Service`
//! honours the same extensions, so a request built by hand gets the same
//! behaviour by inserting them.
//!
//! | Builder method | Carried as | Read by |
//! |---|---|---|
//! | [`RequestBuilder::deadline`] | [`parapet_core::Deadline`] | the deadline (the earlier of the two applies) |
//! | [`RequestBuilder::attempt_timeout`] | [`parapet_timeout::AttemptLimit`] | the attempt timeout (replaces the client's) |
//! | [`RequestBuilder::max_attempts`] | [`parapet_retry::MaxAttempts`] | retry (replaces the client's count) |
//! | [`RequestBuilder::retry`] | [`parapet_core::Idempotency`] | retry |
//! | [`RequestBuilder::redirect`] | [`RedirectPolicy`](crate::RedirectPolicy) | redirects |
//! | [`RequestBuilder::body_limit`] | [`BodyLimit`] | the facade (response body) |
//! | [`RequestBuilder::bearer_auth`], [`RequestBuilder::basic_auth`] | an `Authorization` header, sensitive | auth: skipped for that request |

use std::time::Duration;

use base64::Engine as _;
use http::HeaderValue;
use http::header::AUTHORIZATION;

use crate::client::RequestBuilder;
use crate::error::Error;

/// The most response body bytes a call may read: a request extension the
/// facade honours in place of [`DEFAULT_BODY_LIMIT`](crate::DEFAULT_BODY_LIMIT).
///
/// With it, every read of the response body stops with a body error once
/// the body passes `0` bytes (decoded bytes, after decompression): the
/// whole-body readers ([`Response::bytes`](crate::Response::bytes),
/// `text`, `json`), the streams, and the body [`Client`](crate::Client)
/// returns as a `tower::Service`. Without it, whole-body readers stop at
/// `DEFAULT_BODY_LIMIT` and a stream or a `Service` body is not bounded.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use http_body_util::BodyExt as _;
/// use parapet_testkit::{Reply, Server};
/// use tower::ServiceExt as _;
///
/// let api = Server::start().await;
/// api.on("/big").reply(Reply::ok().body(vec![b'x'; 4096]));
/// let client = parapet::Client::new().unwrap();
/// let mut req = http::Request::get(api.url("/big")).body(String::new()).unwrap();
/// req.extensions_mut().insert(parapet::BodyLimit(1024));
/// let resp = client.oneshot(req).await.unwrap();
/// assert!(resp.into_body().collect().await.is_err());
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BodyLimit(pub usize);

impl BodyLimit {
    /// The limit in these (request) extensions, if any.
    #[must_use]
    pub fn get(ext: &http::Extensions) -> Option<usize> {
        ext.get::<Self>().map(|l| l.0)
    }
}

impl RequestBuilder {
    /// The attempt timeout for this request, in place of the client's
    /// ([`ClientBuilder::attempt_timeout`](crate::ClientBuilder::attempt_timeout)):
    /// each attempt (each retry and redirect hop) gets this long for its
    /// response headers. The call's deadline still bounds it.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use std::time::Duration;
    /// use parapet_testkit::{Reply, Server};
    ///
    /// let api = Server::start().await;
    /// api.on("/slow").reply(Reply::ok().delay(Duration::from_secs(5)));
    /// let client = parapet::Client::new().unwrap();
    /// let err = client
    ///     .get(&api.url("/slow"))
    ///     .attempt_timeout(Duration::from_millis(50))
    ///     .max_attempts(1)
    ///     .send()
    ///     .await
    ///     .unwrap_err();
    /// assert!(err.is_timeout());
    /// # }
    /// ```
    pub fn attempt_timeout(self, timeout: Duration) -> Self {
        self.with(|req| {
            req.extensions_mut()
                .insert(parapet_timeout::AttemptLimit(timeout));
            Ok(())
        })
    }

    /// At most `attempts` attempts for this request, in place of the
    /// client's count (1: no retry). Whether the request may be retried at
    /// all is still the retry policy's call (idempotent methods, or
    /// [`retry(true)`](Self::retry)); the retry budget, backoff and
    /// `Retry-After` still apply.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use parapet_testkit::{Reply, Server};
    ///
    /// let api = Server::start().await;
    /// api.on("/flaky").reply(Reply::status(503));
    /// let client = parapet::Client::new().unwrap();
    /// let resp = client.get(&api.url("/flaky")).max_attempts(1).send().await.unwrap();
    /// assert_eq!(resp.status(), 503);
    /// assert_eq!(api.hits("/flaky"), 1);
    /// # }
    /// ```
    pub fn max_attempts(self, attempts: u32) -> Self {
        self.with(|req| {
            req.extensions_mut()
                .insert(parapet_retry::MaxAttempts(attempts));
            Ok(())
        })
    }

    /// Bounds every read of this call's response body to `bytes` (decoded)
    /// bytes, in place of [`DEFAULT_BODY_LIMIT`](crate::DEFAULT_BODY_LIMIT):
    /// see [`BodyLimit`]. Larger than the default lets
    /// [`Response::bytes`](crate::Response::bytes) read a large download
    /// whole; smaller refuses a body the caller knows is wrong early.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use parapet_testkit::{Reply, Server};
    ///
    /// let api = Server::start().await;
    /// api.on("/big").reply(Reply::ok().body(vec![b'x'; 4096]));
    /// let client = parapet::Client::new().unwrap();
    /// let resp = client.get(&api.url("/big")).body_limit(1024).send().await.unwrap();
    /// assert!(resp.bytes().await.unwrap_err().is_body());
    /// # }
    /// ```
    pub fn body_limit(self, bytes: usize) -> Self {
        self.with(|req| {
            req.extensions_mut().insert(BodyLimit(bytes));
            Ok(())
        })
    }

    /// `Authorization: Bearer <token>`, marked sensitive (never in Debug
    /// output or traces). A request carrying its own `Authorization` is sent
    /// with it: the client's auth layer, if any, is skipped for it. Dropped
    /// on a redirect to another origin.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use parapet_testkit::{Reply, Server};
    ///
    /// let api = Server::start().await;
    /// api.on("/me").reply(Reply::ok());
    /// let client = parapet::Client::new().unwrap();
    /// client.get(&api.url("/me")).bearer_auth("t0ken").send().await.unwrap();
    /// assert_eq!(api.arrivals()[0].header("authorization"), Some("Bearer t0ken"));
    /// # }
    /// ```
    pub fn bearer_auth(self, token: impl std::fmt::Display) -> Self {
        self.with(move |req| {
            let value = sensitive(format!("Bearer {token}"))?;
            req.headers_mut().insert(AUTHORIZATION, value);
            Ok(())
        })
    }

    /// `Authorization: Basic <base64(user:password)>` (RFC 7617), marked
    /// sensitive; `password` may be `None` (then `user:`). As with
    /// [`bearer_auth`](Self::bearer_auth), the client's auth layer is
    /// skipped for this request.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use parapet_testkit::{Reply, Server};
    ///
    /// let api = Server::start().await;
    /// api.on("/me").reply(Reply::ok());
    /// let client = parapet::Client::new().unwrap();
    /// client.get(&api.url("/me")).basic_auth("aladdin", Some("open sesame")).send().await.unwrap();
    /// assert_eq!(
    ///     api.arrivals()[0].header("authorization"),
    ///     Some("Basic YWxhZGRpbjpvcGVuIHNlc2FtZQ==")
    /// );
    /// # }
    /// ```
    pub fn basic_auth(
        self,
        user: impl std::fmt::Display,
        password: Option<impl std::fmt::Display>,
    ) -> Self {
        self.with(move |req| {
            let credentials = match password {
                Some(p) => format!("{user}:{p}"),
                None => format!("{user}:"),
            };
            let encoded = base64::engine::general_purpose::STANDARD.encode(credentials);
            let value = sensitive(format!("Basic {encoded}"))?;
            req.headers_mut().insert(AUTHORIZATION, value);
            Ok(())
        })
    }
}

/// A sensitive header value; the error does not repeat the secret.
fn sensitive(value: String) -> Result<HeaderValue, Error> {
    let mut value = HeaderValue::try_from(value)
        .map_err(|_| Error::request("credentials contain a character not allowed in a header"))?;
    value.set_sensitive(true);
    Ok(value)
}
