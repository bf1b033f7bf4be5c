//! The response future of [`Auth`](crate::Auth).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use http::{Extensions, HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use parapet_core::{BoxError, ReplayBody};
use tokio::sync::watch;
use tower_service::Service;

use crate::cache::{Acquire, WaitFuture, wait};
#[cfg(feature = "metrics")]
use crate::metrics::Refusal;
use crate::{CachedToken, On401, TokenCache, TokenError};

/// What is needed to send a request again: its head (without the
/// credentials) and a replay of its body.
pub(crate) struct Replay {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    extensions: Extensions,
    body: ReplayBody,
}

impl Replay {
    pub(crate) fn new(parts: &http::request::Parts, body: ReplayBody) -> Self {
        Self {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            version: parts.version,
            headers: parts.headers.clone(),
            extensions: parts.extensions.clone(),
            body,
        }
    }

    fn into_request(self, token: &CachedToken) -> Request<ReplayBody> {
        let mut req = Request::new(self.body);
        *req.method_mut() = self.method;
        *req.uri_mut() = self.uri;
        *req.version_mut() = self.version;
        *req.headers_mut() = self.headers;
        *req.extensions_mut() = self.extensions;
        req.headers_mut()
            .insert(AUTHORIZATION, token.header_value().clone());
        req
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`Auth`](crate::Auth).
    ///
    /// With static credentials, or a cached token when a 401 is returned
    /// as it is, it is the inner future and one pointer. With a token cache
    /// it waits for a token when none is cached, and after a 401 gets a
    /// fresh token and sends the request once more; what that needs (the
    /// request, its copy for the re-send, a spare inner service, the token
    /// used) lives in one box that only those requests allocate.
    #[must_use = "futures do nothing unless polled"]
    pub struct ResponseFuture<S>
    where
        S: Service<Request<ReplayBody>>,
    {
        #[pin]
        state: State<S::Future>,
        extra: Option<Box<Extra<S>>>,
    }
}

/// The rare states, kept out of line so that the common future stays the
/// size of the inner one.
struct Extra<S>
where
    S: Service<Request<ReplayBody>>,
{
    // The inner service: the ready one while waiting for the first token,
    // a spare clone for the re-send after a 401.
    svc: Option<S>,
    // The request, while waiting for the first token.
    pending: Option<Request<ReplayBody>>,
    // What the re-send after a 401 needs.
    replay: Option<Replay>,
    // The token the request was (or will be) sent with.
    used: Option<CachedToken>,
    cache: TokenCache,
    on_401: On401,
    // The 401, kept while waiting for a fresh token.
    unauthorized: Option<S::Response>,
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<F> {
        // Waiting for a token before the first send.
        Waiting { wait: WaitFuture },
        // The first send.
        First { #[pin] fut: F },
        // A 401 came back; waiting for a fresh token.
        Refreshing { wait: WaitFuture },
        // Waiting for the inner service to be ready for the re-send.
        Ready,
        // The one re-send.
        Second { #[pin] fut: F },
        Failed { error: Option<BoxError> },
    }
}

impl<S> ResponseFuture<S>
where
    S: Service<Request<ReplayBody>>,
{
    pub(crate) fn direct(fut: S::Future) -> Self {
        Self {
            state: State::First { fut },
            extra: None,
        }
    }

    pub(crate) fn failed(error: BoxError) -> Self {
        Self {
            state: State::Failed { error: Some(error) },
            extra: None,
        }
    }

    /// Sent with a cached token; `svc` and `replay` (both present) arm the
    /// one re-send after a 401.
    pub(crate) fn sent(
        fut: S::Future,
        token: CachedToken,
        svc: S,
        replay: Replay,
        cache: TokenCache,
        on_401: On401,
    ) -> Self {
        Self {
            state: State::First { fut },
            extra: Some(Box::new(Extra {
                svc: Some(svc),
                pending: None,
                replay: Some(replay),
                used: Some(token),
                cache,
                on_401,
                unauthorized: None,
            })),
        }
    }

    pub(crate) fn waiting(
        rx: watch::Receiver<Option<Result<CachedToken, TokenError>>>,
        req: Request<ReplayBody>,
        svc: S,
        replay: Option<Replay>,
        cache: TokenCache,
        on_401: On401,
    ) -> Self {
        Self {
            state: State::Waiting {
                wait: Box::pin(wait(rx)),
            },
            extra: Some(Box::new(Extra {
                svc: Some(svc),
                pending: Some(req),
                replay,
                used: None,
                cache,
                on_401,
                unauthorized: None,
            })),
        }
    }
}

/// Whether a 401 with these headers calls for a fresh token.
fn wants_refresh(on_401: On401, headers: &HeaderMap) -> bool {
    match on_401 {
        On401::Return => false,
        On401::Refresh => true,
        On401::RefreshIfInvalidToken => headers
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(says_invalid_token),
    }
}

/// Whether a `WWW-Authenticate` value carries `error="invalid_token"`.
fn says_invalid_token(challenge: &str) -> bool {
    challenge.split([',', ' ']).any(|part| {
        part.trim().split_once('=').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("error")
                && v.trim()
                    .trim_matches('"')
                    .eq_ignore_ascii_case("invalid_token")
        })
    })
}

fn internal(what: &'static str) -> BoxError {
    // NOTE: unreachable by construction; an error rather than a panic.
    format!("parapet-auth: response future polled in an impossible state ({what})").into()
}

impl<S, RB> Future for ResponseFuture<S>
where
    S: Service<Request<ReplayBody>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
{
    type Output = Result<Response<RB>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Waiting { wait } => {
                    let token = match ready!(wait.as_mut().poll(cx)) {
                        Ok(t) => t,
                        Err(e) => return Poll::Ready(Err(Box::new(e))),
                    };
                    let Some(extra) = this.extra.as_deref_mut() else {
                        return Poll::Ready(Err(internal("waiting")));
                    };
                    let (Some(mut req), Some(svc)) = (extra.pending.take(), extra.svc.as_mut())
                    else {
                        return Poll::Ready(Err(internal("waiting")));
                    };
                    req.headers_mut()
                        .insert(AUTHORIZATION, token.header_value().clone());
                    let fut = svc.call(req);
                    if extra.replay.is_none() {
                        // No re-send possible: let the service and the
                        // cache go now.
                        *this.extra = None;
                    } else {
                        extra.used = Some(token);
                    }
                    this.state.set(State::First { fut });
                }
                StateProj::First { fut } => {
                    let Some(extra) = this.extra.as_deref_mut() else {
                        // Nothing armed for a 401: the inner future's answer.
                        return fut.poll(cx).map_err(Into::into);
                    };
                    let resp = ready!(fut.poll(cx)).map_err(Into::into)?;
                    if resp.status() != StatusCode::UNAUTHORIZED {
                        return Poll::Ready(Ok(resp));
                    }
                    if !wants_refresh(extra.on_401, resp.headers()) {
                        return Poll::Ready(Ok(resp));
                    }
                    let (Some(replay), Some(used)) = (extra.replay.as_ref(), extra.used.as_ref())
                    else {
                        return Poll::Ready(Ok(resp));
                    };
                    if !replay.body.can_replay() {
                        tracing::debug!("401, but the request body cannot be sent again");
                        #[cfg(feature = "metrics")]
                        crate::metrics::reauth_refused(Refusal::BodyNotReplayable);
                        return Poll::Ready(Ok(resp));
                    }
                    let Some(next) = extra.cache.reauth(used) else {
                        tracing::debug!(
                            generation = used.generation(),
                            "401 to a token fetched after a 401 moments ago: returning it"
                        );
                        #[cfg(feature = "metrics")]
                        crate::metrics::reauth_refused(Refusal::ReauthCooldown);
                        return Poll::Ready(Ok(resp));
                    };
                    tracing::debug!(
                        generation = used.generation(),
                        "401: sending the request once more with a fresh token"
                    );
                    match next {
                        Acquire::Ready(t) => {
                            extra.used = Some(t);
                            this.state.set(State::Ready);
                        }
                        Acquire::Failed(e) => {
                            tracing::debug!(error = %e, "no fresh token: returning the 401");
                            #[cfg(feature = "metrics")]
                            crate::metrics::reauth_refused(Refusal::NoToken);
                            return Poll::Ready(Ok(resp));
                        }
                        Acquire::Wait(rx) => {
                            extra.unauthorized = Some(resp);
                            this.state.set(State::Refreshing {
                                wait: Box::pin(wait(rx)),
                            });
                        }
                    }
                }
                StateProj::Refreshing { wait } => {
                    let result = ready!(wait.as_mut().poll(cx));
                    let Some(extra) = this.extra.as_deref_mut() else {
                        return Poll::Ready(Err(internal("refreshing")));
                    };
                    match result {
                        Ok(t) => {
                            extra.used = Some(t);
                            this.state.set(State::Ready);
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "no fresh token: returning the 401");
                            #[cfg(feature = "metrics")]
                            crate::metrics::reauth_refused(Refusal::NoToken);
                            return Poll::Ready(
                                extra
                                    .unauthorized
                                    .take()
                                    .ok_or_else(|| internal("refreshing")),
                            );
                        }
                    }
                }
                StateProj::Ready => {
                    let Some(extra) = this.extra.as_deref_mut() else {
                        return Poll::Ready(Err(internal("ready")));
                    };
                    let Some(svc) = extra.svc.as_mut() else {
                        return Poll::Ready(Err(internal("ready")));
                    };
                    ready!(svc.poll_ready(cx)).map_err(Into::into)?;
                    let (Some(replay), Some(token)) = (extra.replay.take(), extra.used.as_ref())
                    else {
                        return Poll::Ready(Err(internal("ready")));
                    };
                    // The 401 is no longer needed: let its connection go.
                    drop(extra.unauthorized.take());
                    #[cfg(feature = "metrics")]
                    crate::metrics::reauth(&replay.uri);
                    let fut = svc.call(replay.into_request(token));
                    this.state.set(State::Second { fut });
                }
                StateProj::Second { fut } => {
                    let result = ready!(fut.poll(cx)).map_err(Into::into);
                    #[cfg(feature = "metrics")]
                    if result
                        .as_ref()
                        .is_ok_and(|r| r.status() == StatusCode::UNAUTHORIZED)
                    {
                        crate::metrics::reauth_refused(Refusal::AlreadyReauthed);
                    }
                    return Poll::Ready(result);
                }
                StateProj::Failed { error } => {
                    return Poll::Ready(Err(error.take().unwrap_or_else(|| internal("failed"))));
                }
            }
        }
    }
}

impl<S> fmt::Debug for ResponseFuture<S>
where
    S: Service<Request<ReplayBody>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Waiting { .. } => "waiting for a token",
            State::First { .. } => "sent",
            State::Refreshing { .. } => "refreshing after a 401",
            State::Ready => "waiting to send again",
            State::Second { .. } => "sent again",
            State::Failed { .. } => "failed",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .field("token", &self.extra.as_ref().and_then(|e| e.used.as_ref()))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in inner service whose future is `N` bytes of payload.
    #[derive(Clone)]
    struct Inner<const N: usize>;

    struct Fut<const N: usize>([u8; N]);

    impl<const N: usize> Future for Fut<N> {
        type Output = Result<Response<()>, BoxError>;

        fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Self::Output> {
            Poll::Ready(Ok(Response::new(())))
        }
    }

    impl<const N: usize> Service<Request<ReplayBody>> for Inner<N> {
        type Response = Response<()>;
        type Error = BoxError;
        type Future = Fut<N>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: Request<ReplayBody>) -> Fut<N> {
            Fut([0; N])
        }
    }

    #[test]
    fn the_future_is_the_inner_one_and_two_words() {
        // The rare states (waiting for a token, the 401 re-send) are boxed:
        // what the layer adds is a discriminant and one pointer, whatever
        // the credentials.
        fn check<const N: usize>() {
            let size = size_of::<ResponseFuture<Inner<N>>>();
            let inner = size_of::<Fut<N>>().max(16);
            assert!(size <= inner + 16, "{size} bytes over an inner {N}");
        }
        check::<0>();
        check::<8>();
        check::<144>();
        check::<1024>();
        assert!(size_of::<ResponseFuture<Inner<144>>>() <= 160);
    }

    #[test]
    fn invalid_token_challenges_are_recognised() {
        assert!(says_invalid_token(
            r#"Bearer realm="example", error="invalid_token", error_description="The access token expired""#
        ));
        assert!(says_invalid_token("Bearer error=invalid_token"));
        assert!(!says_invalid_token(r#"Bearer realm="example""#));
        assert!(!says_invalid_token(r#"Bearer error="insufficient_scope""#));
        assert!(!says_invalid_token(
            r#"Bearer error_description="invalid_token""#
        ));
    }
}
