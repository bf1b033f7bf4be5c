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
pub(crate) type DecompressLayer = tower_http::decompression::DecompressionLayer;

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
    let layer = DecompressLayer::new();
    if on {
        layer
    } else {
        layer.no_gzip().no_deflate().no_br().no_zstd()
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
    /// costs its decoder. `decompress(false)` keeps the wrapper but sends no
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
