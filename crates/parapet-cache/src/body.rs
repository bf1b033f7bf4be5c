//! The response body: a stored body, or the inner one (recorded for the
//! store while it streams, up to the per-entry limit).

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http::StatusCode;
use http_body::{Body, Frame, SizeHint};
use http_cache_semantics::CachePolicy;
use pin_project_lite::pin_project;

use crate::store::{CacheKey, CachedResponse, Store};

pin_project! {
    /// The body of a response that went through [`Cache`](crate::Cache):
    /// either a stored body, whole in memory (a hit or a revalidation), or
    /// the inner service's body, streamed as it arrives.
    ///
    /// A streamed body that may be stored is copied as it passes, up to the
    /// layer's [`max_body_size`](crate::CacheLayer::max_body_size), and
    /// stored when it ends; a larger one, one that fails, or one dropped
    /// before its end is not stored. Its frames and errors are the inner
    /// body's, unchanged.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use http_body_util::BodyExt;
    /// use parapet_cache::{CacheLayer, CacheStatus, MemoryStore};
    /// use tower::{Service, ServiceBuilder, ServiceExt};
    ///
    /// let mut svc = ServiceBuilder::new()
    ///     .layer(CacheLayer::new(MemoryStore::new(1 << 20)))
    ///     .service_fn(|_req: http::Request<()>| async {
    ///         let res = http::Response::builder()
    ///             .header("cache-control", "max-age=60")
    ///             .body(String::from("hello"))
    ///             .unwrap();
    ///         Ok::<_, std::convert::Infallible>(res)
    ///     });
    /// for expected in [CacheStatus::Miss, CacheStatus::Hit] {
    ///     let req = http::Request::get("http://example.com/").body(()).unwrap();
    ///     let res = svc.ready().await.unwrap().call(req).await.unwrap();
    ///     assert_eq!(CacheStatus::of(&res), Some(expected));
    ///     // Either way, the body reads the same.
    ///     assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "hello");
    /// }
    /// # }
    /// ```
    pub struct CacheBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Stored { data: Option<Bytes> },
        Inner {
            #[pin]
            body: B,
            recorder: Option<Box<Recorder>>,
        },
    }
}

/// What it takes to store a body once it has ended.
pub(crate) struct Recorder {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) key: CacheKey,
    pub(crate) policy: CachePolicy,
    pub(crate) status: StatusCode,
    pub(crate) variant: u64,
    pub(crate) credentials: Option<u64>,
    /// The stored headers' bytes.
    pub(crate) headers: usize,
    pub(crate) buf: BytesMut,
    pub(crate) limit: usize,
}

impl Recorder {
    /// Stores the entry with the recorded body.
    fn finish(self: Box<Self>) {
        let Recorder {
            store,
            key,
            policy,
            status,
            variant,
            credentials,
            headers,
            buf,
            ..
        } = *self;
        let entry =
            CachedResponse::new(policy, status, buf.freeze(), variant, credentials, headers);
        store.put(key, Arc::new(entry));
    }
}

impl<B> CacheBody<B> {
    pub(crate) fn stored(data: Bytes) -> Self {
        Self {
            kind: Kind::Stored {
                data: (!data.is_empty()).then_some(data),
            },
        }
    }

    pub(crate) fn inner(body: B) -> Self {
        Self {
            kind: Kind::Inner {
                body,
                recorder: None,
            },
        }
    }

    /// Whether this body comes from the store.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use parapet_cache::{CacheLayer, MemoryStore};
    /// use tower::{Service, ServiceBuilder, ServiceExt};
    ///
    /// let mut svc = ServiceBuilder::new()
    ///     .layer(CacheLayer::new(MemoryStore::new(1 << 20)))
    ///     .service_fn(|_req: http::Request<()>| async {
    ///         Ok::<_, std::convert::Infallible>(http::Response::new(String::from("fresh")))
    ///     });
    /// let req = http::Request::get("http://example.com/").body(()).unwrap();
    /// let res = svc.ready().await.unwrap().call(req).await.unwrap();
    /// assert!(!res.body().is_stored());
    /// # }
    /// ```
    #[must_use]
    pub fn is_stored(&self) -> bool {
        matches!(self.kind, Kind::Stored { .. })
    }
}

impl<B: Body> CacheBody<B> {
    /// The inner body, recorded for the store as it streams. A body that has
    /// already ended is stored at once.
    pub(crate) fn recording(body: B, recorder: Box<Recorder>) -> Self {
        if body.is_end_stream() {
            recorder.finish();
            return Self::inner(body);
        }
        Self {
            kind: Kind::Inner {
                body,
                recorder: Some(recorder),
            },
        }
    }
}

impl<B> Body for CacheBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            KindProj::Stored { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            KindProj::Inner { body, recorder } => {
                let frame = ready!(body.poll_frame(cx));
                match &frame {
                    Some(Ok(f)) => {
                        if let (Some(data), Some(rec)) = (f.data_ref(), recorder.as_mut()) {
                            if rec.buf.len().saturating_add(data.len()) > rec.limit {
                                // Too large to store: stream on, keep nothing.
                                *recorder = None;
                            } else {
                                rec.buf.extend_from_slice(data);
                            }
                        }
                    }
                    // A body that failed is not stored.
                    Some(Err(_)) => *recorder = None,
                    None => {
                        if let Some(rec) = recorder.take() {
                            rec.finish();
                        }
                    }
                }
                Poll::Ready(frame)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Stored { data } => data.is_none(),
            Kind::Inner { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Stored { data } => SizeHint::with_exact(
                data.as_ref()
                    .map_or(0, |d| u64::try_from(d.len()).unwrap_or(u64::MAX)),
            ),
            Kind::Inner { body, .. } => body.size_hint(),
        }
    }
}

impl<B> fmt::Debug for CacheBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Stored { data } => f
                .debug_struct("CacheBody::Stored")
                .field("remaining", &data.as_ref().map_or(0, Bytes::len))
                .finish(),
            Kind::Inner { recorder, .. } => f
                .debug_struct("CacheBody::Inner")
                .field("recording", &recorder.is_some())
                .finish_non_exhaustive(),
        }
    }
}
