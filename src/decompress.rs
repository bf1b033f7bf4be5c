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
    let layer = tower_http::decompression::DecompressionLayer::new();
    DecompressLayer(if on {
        layer
    } else {
        layer.no_gzip().no_deflate().no_br().no_zstd()
    })
}

/// tower-http's layer, its undecoded bodies made to report their end.
///
/// `DecompressionBody` does not forward `is_end_stream`, so a body passed
/// through never said it was over after its last frame, and whoever checks
/// (a proxying server, the facade's `Body`) had to poll once more to learn
/// it. A body tower-http passed through (the response still has its
/// `Content-Encoding`, or its `Content-Length`, which a decoded one loses)
/// reports the transport body's end again.
#[cfg(any(
    feature = "gzip",
    feature = "deflate",
    feature = "brotli",
    feature = "zstd"
))]
mod end_aware {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll, ready};

    use bytes::Bytes;
    use http::header::{CONTENT_ENCODING, CONTENT_LENGTH};
    use http::{Request, Response};
    use http_body::{Body, Frame, SizeHint};
    use parapet_core::BoxError;
    use pin_project_lite::pin_project;
    use tower::{Layer, Service};
    use tower_http::decompression::{Decompression, DecompressionBody, DecompressionLayer};

    #[derive(Debug, Clone)]
    pub(crate) struct DecompressLayer(pub(crate) DecompressionLayer);

    impl<S> Layer<S> for DecompressLayer {
        type Service = Decompress<S>;

        fn layer(&self, inner: S) -> Self::Service {
            Decompress(self.0.layer(inner))
        }
    }

    #[derive(Debug, Clone)]
    pub(crate) struct Decompress<S>(Decompression<S>);

    impl<S, R, B> Service<Request<R>> for Decompress<S>
    where
        S: Service<Request<R>, Response = Response<B>>,
        B: Body,
    {
        type Response = Response<Decoded<B>>;
        type Error = S::Error;
        type Future = DecompressFuture<tower_http::decompression::ResponseFuture<S::Future>>;

        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
            self.0.poll_ready(cx)
        }

        fn call(&mut self, req: Request<R>) -> Self::Future {
            DecompressFuture {
                f: self.0.call(req),
            }
        }
    }

    pin_project! {
        pub(crate) struct DecompressFuture<F> {
            #[pin]
            f: F,
        }
    }

    impl<F, B, E> Future for DecompressFuture<F>
    where
        F: Future<Output = Result<Response<DecompressionBody<B>>, E>>,
        B: Body,
    {
        type Output = Result<Response<Decoded<B>>, E>;

        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            let res = ready!(self.project().f.poll(cx))?;
            let passed = res.headers().contains_key(CONTENT_ENCODING)
                || res.headers().contains_key(CONTENT_LENGTH);
            Poll::Ready(Ok(res.map(|inner| Decoded { inner, passed })))
        }
    }

    pin_project! {
        pub(crate) struct Decoded<B>
        where
            B: Body,
        {
            #[pin]
            inner: DecompressionBody<B>,
            passed: bool,
        }
    }

    impl<B> Body for Decoded<B>
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            self.project().inner.poll_frame(cx)
        }

        fn is_end_stream(&self) -> bool {
            self.passed && self.inner.get_ref().is_end_stream()
        }

        fn size_hint(&self) -> SizeHint {
            self.inner.size_hint()
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
    /// (no allocation) and a response body one more wrapper; a compressed body
    /// costs its decoder. (The in-memory bench, whose responses have no
    /// header at all, counts two allocations more: tower-http's look for
    /// `Content-Encoding` allocates an empty header map. A response off the
    /// network always has headers.) `decompress(false)` keeps the wrapper but sends no
    /// `Accept-Encoding` and decodes nothing. Built without any of the four
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
