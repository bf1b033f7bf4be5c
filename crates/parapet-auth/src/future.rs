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
    /// With static credentials it is the inner future. With a token cache
    /// it waits for a token when none is cached, and after a 401 gets a
    /// fresh token and sends the request once more.
    #[must_use = "futures do nothing unless polled"]
    pub struct ResponseFuture<S>
    where
        S: Service<Request<ReplayBody>>,
    {
        #[pin]
        state: State<S::Future>,
        svc: Option<S>,
        pending: Option<Request<ReplayBody>>,
        replay: Option<Replay>,
        used: Option<CachedToken>,
        cache: Option<TokenCache>,
        on_401: On401,
        unauthorized: Option<S::Response>,
    }
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
    fn with(state: State<S::Future>) -> Self {
        Self {
            state,
            svc: None,
            pending: None,
            replay: None,
            used: None,
            cache: None,
            on_401: On401::Return,
            unauthorized: None,
        }
    }

    pub(crate) fn direct(fut: S::Future) -> Self {
        Self::with(State::First { fut })
    }

    pub(crate) fn failed(error: BoxError) -> Self {
        Self::with(State::Failed { error: Some(error) })
    }

    pub(crate) fn sent(
        fut: S::Future,
        token: CachedToken,
        svc: Option<S>,
        replay: Option<Replay>,
        cache: TokenCache,
        on_401: On401,
    ) -> Self {
        Self {
            state: State::First { fut },
            svc,
            pending: None,
            replay,
            used: Some(token),
            cache: Some(cache),
            on_401,
            unauthorized: None,
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
            svc: Some(svc),
            pending: Some(req),
            replay,
            used: None,
            cache: Some(cache),
            on_401,
            unauthorized: None,
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
                    let (Some(mut req), Some(svc)) = (this.pending.take(), this.svc.as_mut())
                    else {
                        return Poll::Ready(Err(internal("waiting")));
                    };
                    req.headers_mut()
                        .insert(AUTHORIZATION, token.header_value().clone());
                    let fut = svc.call(req);
                    *this.used = Some(token);
                    if this.replay.is_none() {
                        *this.svc = None;
                    }
                    this.state.set(State::First { fut });
                }
                StateProj::First { fut } => {
                    let resp = ready!(fut.poll(cx)).map_err(Into::into)?;
                    if resp.status() != StatusCode::UNAUTHORIZED
                        || !wants_refresh(*this.on_401, resp.headers())
                    {
                        return Poll::Ready(Ok(resp));
                    }
                    let (Some(replay), Some(cache), Some(used)) = (
                        this.replay.as_ref(),
                        this.cache.as_ref(),
                        this.used.as_ref(),
                    ) else {
                        return Poll::Ready(Ok(resp));
                    };
                    if !replay.body.can_replay() {
                        tracing::debug!("401, but the request body cannot be sent again");
                        return Poll::Ready(Ok(resp));
                    }
                    tracing::debug!(
                        generation = used.generation(),
                        "401: sending the request once more with a fresh token"
                    );
                    cache.invalidate(used);
                    match cache.acquire() {
                        Acquire::Ready(t) => {
                            *this.used = Some(t);
                            this.state.set(State::Ready);
                        }
                        Acquire::Failed(e) => {
                            tracing::debug!(error = %e, "no fresh token: returning the 401");
                            return Poll::Ready(Ok(resp));
                        }
                        Acquire::Wait(rx) => {
                            *this.unauthorized = Some(resp);
                            this.state.set(State::Refreshing {
                                wait: Box::pin(wait(rx)),
                            });
                        }
                    }
                }
                StateProj::Refreshing { wait } => {
                    let result = ready!(wait.as_mut().poll(cx));
                    match result {
                        Ok(t) => {
                            *this.used = Some(t);
                            this.state.set(State::Ready);
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "no fresh token: returning the 401");
                            return Poll::Ready(
                                this.unauthorized
                                    .take()
                                    .ok_or_else(|| internal("refreshing")),
                            );
                        }
                    }
                }
                StateProj::Ready => {
                    let Some(svc) = this.svc.as_mut() else {
                        return Poll::Ready(Err(internal("ready")));
                    };
                    ready!(svc.poll_ready(cx)).map_err(Into::into)?;
                    let (Some(replay), Some(token)) = (this.replay.take(), this.used.as_ref())
                    else {
                        return Poll::Ready(Err(internal("ready")));
                    };
                    // The 401 is no longer needed: let its connection go.
                    drop(this.unauthorized.take());
                    let fut = svc.call(replay.into_request(token));
                    this.state.set(State::Second { fut });
                }
                StateProj::Second { fut } => {
                    return fut.poll(cx).map_err(Into::into);
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
            .field("token", &self.used)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
