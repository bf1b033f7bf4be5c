//! Response decompression: tower-http's `Decompression`, innermost; the
//! public account is on [`ClientBuilder::decompress`].

#[cfg(any(
    feature = "gzip",
    feature = "deflate",
    feature = "brotli",
    feature = "zstd"
))]
use parapet_core::BoxError;

use crate::builder::ClientBuilder;

/// Whether any decoder is compiled in.
pub(crate) const COMPILED_IN: bool = cfg!(any(
    feature = "gzip",
    feature = "deflate",
    feature = "brotli",
    feature = "zstd"
));

/// The decompression layer of the stack.
#[cfg(any(
    feature = "gzip",
    feature = "deflate",
    feature = "brotli",
    feature = "zstd"
))]
pub(crate) use end_aware::DecompressLayer;

/// Without decoders, no layer.
#[cfg(not(any(
    feature = "gzip",
    feature = "deflate",
    feature = "brotli",
    feature = "zstd"
)))]
pub(crate) type DecompressLayer = tower::layer::util::Identity;

/// The layer, offering and decoding every compiled-in encoding when `on`,
/// none otherwise.
#[cfg(any(
    feature = "gzip",
    feature = "deflate",
    feature = "brotli",
    feature = "zstd"
))]
pub(crate) fn layer(on: bool) -> DecompressLayer {
    DecompressLayer { on }
}

/// tower-http's decompression, reached only by responses that need it.
///
/// A request gets the `Accept-Encoding` tower-http's `Decompression` would
/// give it (asked of tower-http once per process), and goes straight to the
/// inner service. A response without `Content-Encoding`, which tower-http
/// would pass through untouched, is passed on as it is, at its own size: no
/// decoder state in the body that every layer above moves, and no look-up
/// that allocates an empty header map. A response with one goes through
/// tower-http's `Decompression` (over a service that hands it back), which
/// decodes it or passes it through as before, its body boxed.
///
/// `DecompressionBody` does not forward `is_end_stream`, so a body tower-http
/// passed through never said it was over after its last frame, and whoever
/// checks (a proxying server, the facade's `Body`) had to poll once more to
/// learn it. A body tower-http passed through (the response still has its
/// `Content-Encoding`, or its `Content-Length`, which a decoded one loses)
/// reports the transport body's end again; a body with no `Content-Encoding`
/// is the transport's own and reports its end.
#[cfg(any(
    feature = "gzip",
    feature = "deflate",
    feature = "brotli",
    feature = "zstd"
))]
mod end_aware {
    use std::convert::Infallible;
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::OnceLock;
    use std::task::{Context, Poll, ready};

    use bytes::Bytes;
    use http::header::{ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_LENGTH};
    use http::{HeaderValue, Request, Response};
    use http_body::{Body, Frame, SizeHint};
    use http_body_util::Empty;
    use parapet_core::BoxError;
    use pin_project_lite::pin_project;
    use tower::{Layer, Service};
    use tower_http::decompression::{DecompressionBody, DecompressionLayer};

    /// Decoding every compiled-in encoding when `on`, none otherwise.
    #[derive(Debug, Clone, Copy)]
    pub(crate) struct DecompressLayer {
        pub(crate) on: bool,
    }

    impl<S> Layer<S> for DecompressLayer {
        type Service = Decompress<S>;

        fn layer(&self, inner: S) -> Self::Service {
            Decompress { inner, on: self.on }
        }
    }

    /// tower-http's layer, offering and decoding every compiled-in encoding
    /// when `on`, none otherwise.
    fn tower_layer(on: bool) -> DecompressionLayer {
        let layer = DecompressionLayer::new();
        if on {
            layer
        } else {
            layer.no_gzip().no_deflate().no_br().no_zstd()
        }
    }

    /// The `Accept-Encoding` tower-http's `Decompression` puts on a request
    /// that has none when on (off, it puts none): asked of tower-http once.
    fn accept_encoding() -> Option<&'static HeaderValue> {
        static ACCEPT: OnceLock<Option<HeaderValue>> = OnceLock::new();
        ACCEPT
            .get_or_init(|| {
                let mut seen = tower_layer(true).layer(Keep(None));
                drop(seen.call(Request::new(())));
                seen.get_mut().0.take()
            })
            .as_ref()
    }

    /// A service answering with the response it is given as the request's
    /// body: tower-http's decoding for a response already in hand.
    struct Echo;

    impl<B> Service<Request<Response<B>>> for Echo {
        type Response = Response<B>;
        type Error = Infallible;
        type Future = std::future::Ready<Result<Response<B>, Infallible>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, req: Request<Response<B>>) -> Self::Future {
            std::future::ready(Ok(req.into_body()))
        }
    }

    /// A service keeping the `Accept-Encoding` of the request it is given.
    struct Keep(Option<HeaderValue>);

    impl Service<Request<()>> for Keep {
        type Response = Response<Empty<Bytes>>;
        type Error = Infallible;
        type Future = std::future::Ready<Result<Response<Empty<Bytes>>, Infallible>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, req: Request<()>) -> Self::Future {
            self.0 = req.headers().get(ACCEPT_ENCODING).cloned();
            std::future::ready(Ok(Response::new(Empty::new())))
        }
    }

    #[derive(Debug, Clone)]
    pub(crate) struct Decompress<S> {
        inner: S,
        on: bool,
    }

    impl<S, R, B> Service<Request<R>> for Decompress<S>
    where
        S: Service<Request<R>, Response = Response<B>>,
        B: Body,
    {
        type Response = Response<Decoded<B>>;
        type Error = S::Error;
        type Future = DecompressFuture<S::Future>;

        #[inline]
        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
            self.inner.poll_ready(cx)
        }

        #[inline]
        fn call(&mut self, mut req: Request<R>) -> Self::Future {
            if self.on && !req.headers().contains_key(ACCEPT_ENCODING) {
                if let Some(accept) = accept_encoding() {
                    req.headers_mut().insert(ACCEPT_ENCODING, accept.clone());
                }
            }
            DecompressFuture {
                f: self.inner.call(req),
                on: self.on,
            }
        }
    }

    pin_project! {
        pub(crate) struct DecompressFuture<F> {
            #[pin]
            f: F,
            on: bool,
        }
    }

    impl<F, B, E> Future for DecompressFuture<F>
    where
        F: Future<Output = Result<Response<B>, E>>,
        B: Body,
    {
        type Output = Result<Response<Decoded<B>>, E>;

        #[inline]
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            let this = self.project();
            let res = ready!(this.f.poll(cx))?;
            if !res.headers().contains_key(CONTENT_ENCODING) {
                return Poll::Ready(Ok(res.map(|inner| Decoded::Plain { inner })));
            }
            Poll::Ready(Ok(decode(*this.on, res)))
        }
    }

    /// A response with a `Content-Encoding`, through tower-http.
    #[cold]
    fn decode<B: Body>(on: bool, res: Response<B>) -> Response<Decoded<B>> {
        let mut svc = tower_layer(on).layer(Echo);
        let mut fut = std::pin::pin!(svc.call(Request::new(res)));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let res = match fut.as_mut().poll(&mut cx) {
            Poll::Ready(Ok(res)) => res,
            Poll::Ready(Err(never)) => match never {},
            // NOTE: tower-http's future polls `Echo`'s ready future once and
            // is ready with it.
            Poll::Pending => unreachable!("tower-http's decompression future over a ready one"),
        };
        let passed = res.headers().contains_key(CONTENT_ENCODING)
            || res.headers().contains_key(CONTENT_LENGTH);
        res.map(|inner| Decoded::Tower {
            inner: Box::pin(inner),
            passed,
        })
    }

    pin_project! {
        /// A response body: the transport's own when it had no
        /// `Content-Encoding`, else tower-http's (decoded or passed), boxed.
        #[project = DecodedProj]
        pub(crate) enum Decoded<B>
        where
            B: Body,
        {
            Plain { #[pin] inner: B },
            Tower { inner: Pin<Box<DecompressionBody<B>>>, passed: bool },
        }
    }

    impl<B> Body for Decoded<B>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<BoxError>,
    {
        type Data = Bytes;
        type Error = BoxError;

        #[inline]
        fn poll_frame(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            match self.project() {
                DecodedProj::Plain { inner } => inner.poll_frame(cx).map_err(Into::into),
                DecodedProj::Tower { inner, .. } => inner.as_mut().poll_frame(cx),
            }
        }

        #[inline]
        fn is_end_stream(&self) -> bool {
            match self {
                Self::Plain { inner } => inner.is_end_stream(),
                Self::Tower { inner, passed } => *passed && inner.get_ref().is_end_stream(),
            }
        }

        #[inline]
        fn size_hint(&self) -> SizeHint {
            match self {
                Self::Plain { inner } => inner.size_hint(),
                Self::Tower { inner, .. } => inner.size_hint(),
            }
        }
    }
}
/// Without decoders, no layer.
#[cfg(not(any(
    feature = "gzip",
    feature = "deflate",
    feature = "brotli",
    feature = "zstd"
)))]
pub(crate) fn layer(_on: bool) -> DecompressLayer {
    tower::layer::util::Identity::new()
}

/// A transport response body with its errors boxed: the decoders keep the
/// body's error in their state, which must be `Send`.
#[cfg(any(
    feature = "gzip",
    feature = "deflate",
    feature = "brotli",
    feature = "zstd"
))]
pub(crate) type TransportBody<B> =
    http_body_util::combinators::MapErr<B, fn(<B as http_body::Body>::Error) -> BoxError>;

/// What [`transport`] maps each response with.
#[cfg(any(
    feature = "gzip",
    feature = "deflate",
    feature = "brotli",
    feature = "zstd"
))]
pub(crate) type BoxErrors<B> = fn(http::Response<B>) -> http::Response<TransportBody<B>>;

/// The transport, its response bodies' errors boxed for the decoders.
#[cfg(any(
    feature = "gzip",
    feature = "deflate",
    feature = "brotli",
    feature = "zstd"
))]
pub(crate) fn transport<S, B>(transport: S) -> tower::util::MapResponse<S, BoxErrors<B>>
where
    B: http_body::Body,
    B::Error: Into<BoxError>,
{
    fn box_errors<B>(res: http::Response<B>) -> http::Response<TransportBody<B>>
    where
        B: http_body::Body,
        B::Error: Into<BoxError>,
    {
        use http_body_util::BodyExt as _;
        let into: fn(B::Error) -> BoxError = Into::into;
        res.map(|b| b.map_err(into))
    }
    tower::util::MapResponse::new(transport, box_errors)
}

/// Without decoders, the transport as it is.
#[cfg(not(any(
    feature = "gzip",
    feature = "deflate",
    feature = "brotli",
    feature = "zstd"
)))]
pub(crate) fn transport<S>(transport: S) -> S {
    transport
}

impl ClientBuilder {
    /// Offer the compiled-in encodings (cargo features `gzip`, on by
    /// default, `deflate`, `brotli` and `zstd`) in `Accept-Encoding` on
    /// every request that does not set that header itself, and decode the
    /// responses that use one. Default: on when any of the four features
    /// is compiled in.
    ///
    /// A response whose `Content-Encoding` is one of them is decoded as it
    /// streams, and loses its `Content-Encoding` and `Content-Length`
    /// (which described the encoded bytes); any other response passes
    /// through untouched, headers included. A request that sets
    /// `Accept-Encoding` itself keeps its value. `false` sends no
    /// `Accept-Encoding` and passes every body through as it came.
    ///
    /// # Where it sits
    ///
    /// ```text
    /// ... → concurrency limit → attempt timeout → DECOMPRESSION → transport
    /// ```
    ///
    /// Innermost, right above the transport: every request that leaves, each
    /// retry and each redirect hop included, carries `Accept-Encoding`, and
    /// every layer above sees the decoded body. That is what the response
    /// readers bound: [`Response::bytes`](crate::Response::bytes) and the
    /// others stop at [`DEFAULT_BODY_LIMIT`](crate::DEFAULT_BODY_LIMIT) (or the
    /// limit given) of *decoded* bytes, so a decompression bomb (10 MiB of
    /// zeros in 10 KiB of gzip) is a body error once the limit is passed, and
    /// memory stays at the limit plus one decoder buffer. The attempt
    /// timeout's body idle timeout, when set, measures the pauses between
    /// decoded frames.
    ///
    /// # Cost
    ///
    /// With decompression on, a request gets a static `Accept-Encoding` value
    /// (no allocation); a response without `Content-Encoding` passes through
    /// as it is (no allocation, no decoder state in its body); one with a
    /// `Content-Encoding` costs a boxed body and its decoder.
    /// `decompress(false)` keeps the layer but sends no `Accept-Encoding` and
    /// decodes nothing. Built without any of the four
    /// features, the layer is not there at all.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use parapet_testkit::{Reply, Server};
    ///
    /// let api = Server::start().await;
    /// api.on("/raw").reply(Reply::ok().header("content-encoding", "gzip").body("not really gzip"));
    /// let client = parapet::Client::builder().decompress(false).build().unwrap();
    /// let resp = client.get(&api.url("/raw")).send().await.unwrap();
    /// assert_eq!(resp.headers()["content-encoding"], "gzip");
    /// assert_eq!(resp.text().await.unwrap(), "not really gzip");
    /// assert!(api.arrivals()[0].header("accept-encoding").is_none());
    /// # }
    /// ```
    pub fn decompress(mut self, on: bool) -> Self {
        self.layers.decompress = on && COMPILED_IN;
        self
    }
}
