//! The response future: a stored answer at once, or the inner call and what
//! the cache does with its answer.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http::header::{AGE, CONTENT_LENGTH};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body::Body;
use http_cache_semantics::{AfterResponse, CachePolicy};
use pin_project_lite::pin_project;

use crate::body::{CacheBody, Recorder};
use crate::layer::Config;
use crate::service::variant;
use crate::status::CacheStatus;
use crate::store::{CacheKey, CachedResponse, Store, headers_size};

/// The largest `Age` the cache believes (RFC 9111 §1.2.2: a larger
/// delta-seconds counts as 2^31).
const MAX_AGE_SECS: u64 = 1 << 31;

/// What to do with the inner service's answer.
pub(crate) enum Ctx {
    /// Nothing: pass it on.
    Bypass,
    /// An unsafe method: on a non-error status, forget the URI.
    Invalidate {
        store: Arc<dyn Store>,
        keys: [CacheKey; 2],
    },
    /// A GET or HEAD that missed or is being revalidated.
    Lookup(Box<Lookup>),
    /// Taken: the future has completed.
    Done,
}

pub(crate) struct Lookup {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) config: Arc<Config>,
    pub(crate) key: CacheKey,
    /// The request as its caller sent it, without the body.
    pub(crate) sent: Request<()>,
    /// The stale response being revalidated, if any.
    pub(crate) stale: Option<Arc<CachedResponse>>,
    pub(crate) credentials: Option<u64>,
}

pin_project! {
    /// The response future of [`Cache`](crate::Cache).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use parapet_cache::{CacheStatus, future::ResponseFuture};
    /// use tower::{Service, ServiceBuilder};
    ///
    /// let mut svc = ServiceBuilder::new()
    ///     .layer(parapet_cache::CacheLayer::in_memory(1 << 20))
    ///     .service_fn(|_req: http::Request<()>| async {
    ///         Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
    ///     });
    /// let req = http::Request::post("http://example.com/").body(()).unwrap();
    /// let future = svc.call(req);
    /// let res = future.await.unwrap();
    /// assert_eq!(CacheStatus::of(&res), Some(CacheStatus::Bypass));
    /// # }
    /// ```
    #[must_use = "futures do nothing unless polled"]
    pub struct ResponseFuture<F, B> {
        #[pin]
        state: State<F, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B> {
        Hit { response: Option<Response<CacheBody<B>>> },
        Call {
            #[pin]
            future: F,
            ctx: Ctx,
        },
    }
}

impl<F, B> ResponseFuture<F, B> {
    pub(crate) fn hit(response: Response<CacheBody<B>>) -> Self {
        Self {
            state: State::Hit {
                response: Some(response),
            },
        }
    }

    pub(crate) fn call(future: F, ctx: Ctx) -> Self {
        Self {
            state: State::Call { future, ctx },
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body<Data = Bytes>,
{
    type Output = Result<Response<CacheBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            // NOTE: polled again after completion, a hit has nothing left;
            // it answers with an empty response rather than panic.
            StateProj::Hit { response } => Poll::Ready(Ok(response
                .take()
                .unwrap_or_else(|| Response::new(CacheBody::stored(Bytes::new()))))),
            StateProj::Call { future, ctx } => {
                let res = ready!(future.poll(cx))?;
                let out = match std::mem::replace(ctx, Ctx::Done) {
                    Ctx::Bypass | Ctx::Done => bypass(res),
                    Ctx::Invalidate { store, keys } => {
                        // RFC 9111 §4.4: a non-error status to an unsafe
                        // method invalidates the target URI.
                        if res.status().as_u16() < 400 {
                            for key in &keys {
                                store.remove(key);
                            }
                        }
                        bypass(res)
                    }
                    Ctx::Lookup(lookup) => answer(*lookup, res),
                };
                Poll::Ready(Ok(out))
            }
        }
    }
}

fn bypass<B>(res: Response<B>) -> Response<CacheBody<B>> {
    let mut res = res.map(CacheBody::inner);
    res.extensions_mut().insert(CacheStatus::Bypass);
    res
}

/// Clamps an `Age` the cache could not add to without overflowing.
fn clamp_age<B>(res: &mut Response<B>) {
    let too_old =
        res.headers().get_all(AGE).iter().any(|v| {
            v.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok()) > Some(MAX_AGE_SECS)
        });
    if too_old {
        res.headers_mut()
            .insert(AGE, HeaderValue::from(MAX_AGE_SECS));
    }
}

/// What the cache makes of the inner answer to a GET or HEAD.
fn answer<B: Body<Data = Bytes>>(lookup: Lookup, mut res: Response<B>) -> Response<CacheBody<B>> {
    let Lookup {
        store,
        config,
        key,
        sent,
        stale,
        credentials,
    } = lookup;
    clamp_age(&mut res);
    let now = (config.clock)();

    if let Some(stale) = stale.filter(|_| res.status() == StatusCode::NOT_MODIFIED) {
        if let AfterResponse::NotModified(policy, parts) =
            stale.policy.after_response(&sent, &res, now)
        {
            if policy.is_storable() {
                let variant = variant(&config, sent.headers(), &parts.headers, credentials);
                let headers =
                    headers_size(&parts.headers).saturating_add(headers_size(sent.headers()));
                let entry = CachedResponse::new(
                    policy,
                    parts.status,
                    stale.body.clone(),
                    variant,
                    credentials,
                    headers.saturating_add(key.as_str().len()),
                );
                store.put(key, Arc::new(entry));
            }
            // The 304's own extensions (connection info, what the layers
            // below recorded) go with the answer.
            let extensions = res.into_parts().0.extensions;
            let mut out = Response::from_parts(parts, CacheBody::stored(stale.body.clone()));
            *out.extensions_mut() = extensions;
            out.extensions_mut().insert(CacheStatus::Revalidated);
            return out;
        }
        // A 304 that matches nothing stored: the caller gets it as it is.
    }

    let policy = CachePolicy::new_options(&sent, &res, now, config.options());
    let declared_len = res
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    // A HEAD answer's Content-Length is the GET body's: its own body is empty.
    let fits = *sent.method() == Method::HEAD
        || declared_len
            .is_none_or(|n| n <= u64::try_from(config.max_body_size).unwrap_or(u64::MAX));
    let mut res = if policy.is_storable() && fits {
        let status = res.status();
        let variant = variant(&config, sent.headers(), res.headers(), credentials);
        let headers = headers_size(res.headers())
            .saturating_add(headers_size(sent.headers()))
            .saturating_add(key.as_str().len());
        let recorder = Box::new(Recorder {
            store,
            key,
            policy,
            status,
            variant,
            credentials,
            headers,
            buf: BytesMut::new(),
            limit: config.max_body_size,
        });
        res.map(|body| CacheBody::recording(body, recorder))
    } else {
        res.map(CacheBody::inner)
    };
    res.extensions_mut().insert(CacheStatus::Miss);
    res
}

impl<F, B> fmt::Debug for ResponseFuture<F, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Hit { .. } => "hit",
            State::Call { .. } => "call",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}
