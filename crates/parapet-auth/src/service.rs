//! `Auth<S>`: the service the layer makes.

use std::fmt;
use std::task::{Context, Poll};

use http::header::AUTHORIZATION;
use http::uri::PathAndQuery;
use http::{Request, Response, Uri};
use http_body::Body;
use parapet_core::{BoxError, ReplayBody};
use tower_service::Service;

use crate::cache::Acquire;
use crate::future::{Replay, ResponseFuture};
use crate::layer::Credential;
use crate::{AuthLayer, InvalidCredential, On401};

/// Puts credentials on each request, and sends a request once more with a
/// fresh token after a 401; made by [`AuthLayer`].
///
/// The request body is passed inward as a [`ReplayBody`] (an existing one is
/// reused as it is, so a retry layer outside and this one share a
/// recording).
///
/// `Clone` is cheap: the configuration and the token cache are shared.
#[derive(Clone)]
pub struct Auth<S> {
    inner: S,
    layer: AuthLayer,
}

impl<S> Auth<S> {
    /// Wraps `inner` with the credentials `layer` describes.
    pub fn new(inner: S, layer: AuthLayer) -> Self {
        Self { inner, layer }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes this service, returning the inner one.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: fmt::Debug> fmt::Debug for Auth<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("inner", &self.inner)
            .field("layer", &self.layer)
            .finish()
    }
}

impl<S, B, RB> Service<Request<B>> for Auth<S>
where
    S: Service<Request<ReplayBody>, Response = Response<RB>> + Clone,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = Response<RB>;
    type Error = BoxError;
    type Future = ResponseFuture<S>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let config = &*self.layer.config;
        // Static credentials have nothing to refresh: a 401 is returned as
        // it is, so nothing is kept for a re-send and the future is the
        // inner one.
        let cache = match &config.credential {
            Credential::Header(name, value) => {
                let mut req = req.map(|b| ReplayBody::new(b, config.replay_cap));
                req.headers_mut().insert(name.clone(), value.clone());
                return ResponseFuture::direct(self.inner.call(req));
            }
            Credential::Query(pair) => {
                return match with_query_pair(req.uri(), pair.expose()) {
                    Ok(uri) => {
                        let mut req = req.map(|b| ReplayBody::new(b, config.replay_cap));
                        *req.uri_mut() = uri;
                        ResponseFuture::direct(self.inner.call(req))
                    }
                    Err(e) => ResponseFuture::failed(e.into()),
                };
            }
            Credential::Tokens(cache) => cache,
        };
        let (mut parts, body) = req.into_parts();
        let body = ReplayBody::new(body, config.replay_cap);
        let replay = if config.on_401 == On401::Return {
            None
        } else {
            body.try_replay().ok().map(|b| Replay::new(&parts, b))
        };
        match cache.acquire() {
            Acquire::Ready(token) => {
                parts
                    .headers
                    .insert(AUTHORIZATION, token.header_value().clone());
                match replay {
                    // The clone is called again (after poll_ready)
                    // only for the one re-send after a 401.
                    Some(replay) => {
                        let spare = self.inner.clone();
                        let fut = self.inner.call(Request::from_parts(parts, body));
                        ResponseFuture::sent(
                            fut,
                            token,
                            spare,
                            replay,
                            cache.clone(),
                            config.on_401,
                        )
                    }
                    // A 401 is returned as it is: nothing to keep.
                    None => {
                        ResponseFuture::direct(self.inner.call(Request::from_parts(parts, body)))
                    }
                }
            }
            Acquire::Failed(e) => ResponseFuture::failed(Box::new(e)),
            Acquire::Wait(rx) => {
                // `inner` is ready (poll_ready); it waits in the
                // future for the token, a clone takes its place.
                let clone = self.inner.clone();
                let ready = std::mem::replace(&mut self.inner, clone);
                ResponseFuture::waiting(
                    rx,
                    Request::from_parts(parts, body),
                    ready,
                    replay,
                    cache.clone(),
                    config.on_401,
                )
            }
        }
    }
}

/// `uri` with `pair` appended to its query.
fn with_query_pair(uri: &Uri, pair: &str) -> Result<Uri, InvalidCredential> {
    let pq = uri.path_and_query().map_or("/", PathAndQuery::as_str);
    let joined = match uri.query() {
        None => format!("{pq}?{pair}"),
        Some("") => format!("{pq}{pair}"),
        Some(_) => format!("{pq}&{pair}"),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query =
        Some(PathAndQuery::try_from(joined).map_err(|_| InvalidCredential::unusable_uri())?);
    Uri::from_parts(parts).map_err(|_| InvalidCredential::unusable_uri())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_pairs_are_appended() {
        let u = |s: &str| {
            with_query_pair(&s.parse().unwrap(), "k=v")
                .unwrap()
                .to_string()
        };
        assert_eq!(u("http://h/p"), "http://h/p?k=v");
        assert_eq!(u("http://h/p?"), "http://h/p?k=v");
        assert_eq!(u("http://h/p?a=1"), "http://h/p?a=1&k=v");
        assert_eq!(u("http://h"), "http://h/?k=v");
        assert_eq!(u("/rel?x"), "/rel?x&k=v");
    }
}
