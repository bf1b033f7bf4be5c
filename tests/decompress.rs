//! Response decompression through the facade, against a loopback server
//! that answers with bodies compressed here (async-compression's encoders,
//! the same codecs tower-http decodes with).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::pin::Pin;
use std::time::Duration;

use async_compression::tokio::bufread::{BrotliEncoder, GzipEncoder, ZlibEncoder, ZstdEncoder};
use bytes::Bytes;
use futures_core::Stream;
use parapet::Client;
use parapet_testkit::{Reply, Server};
use tokio::io::{AsyncRead, AsyncReadExt};

/// What the client offers: every encoding compiled in, in tower-http's
/// order.
fn offered() -> Vec<&'static str> {
    let mut v = Vec::new();
    if cfg!(feature = "zstd") {
        v.push("zstd");
    }
    if cfg!(feature = "gzip") {
        v.push("gzip");
    }
    if cfg!(feature = "deflate") {
        v.push("deflate");
    }
    if cfg!(feature = "brotli") {
        v.push("br");
    }
    v
}

async fn read_all(mut r: impl AsyncRead + Unpin) -> Bytes {
    let mut out = Vec::new();
    r.read_to_end(&mut out).await.unwrap();
    Bytes::from(out)
}

/// `data` compressed with `encoding` (its `Content-Encoding` name).
async fn compress(encoding: &str, data: &[u8]) -> Bytes {
    match encoding {
        "gzip" => read_all(GzipEncoder::new(data)).await,
        "deflate" => read_all(ZlibEncoder::new(data)).await,
        "br" => read_all(BrotliEncoder::new(data)).await,
        "zstd" => read_all(ZstdEncoder::new(data)).await,
        other => panic!("no encoder for {other}"),
    }
}

fn client() -> parapet::ClientBuilder {
    Client::builder()
        .deadline(Duration::from_secs(10))
        .attempt_timeout(Duration::from_secs(5))
}

const TEXT: &str = "{\"items\": [\"the same words, again and again, compress well\"]}\n";

#[tokio::test(flavor = "current_thread")]
async fn every_compiled_in_encoding_is_offered_and_decoded() {
    let api = Server::start().await;
    let plain = TEXT.repeat(200);
    let encodings = offered();
    assert!(encodings.contains(&"gzip"), "gzip is a default feature");
    for enc in &encodings {
        let packed = compress(enc, plain.as_bytes()).await;
        assert!(packed.len() < plain.len() / 10);
        api.on(&format!("/{enc}"))
            .reply(Reply::ok().header("content-encoding", *enc).body(packed));
    }
    let client = client().build().unwrap();

    for enc in &encodings {
        let resp = client
            .get(&api.url(&format!("/{enc}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        // The headers that described the encoded bytes are gone.
        assert!(resp.headers().get("content-encoding").is_none(), "{enc}");
        assert!(resp.headers().get("content-length").is_none(), "{enc}");
        assert_eq!(resp.text().await.unwrap(), plain, "{enc}");
    }
    for arrival in api.arrivals() {
        assert_eq!(
            arrival.header("accept-encoding"),
            Some(encodings.join(",").as_str())
        );
    }
}

#[tokio::test(flavor = "current_thread")]
async fn an_unknown_encoding_and_a_plain_body_pass_through_untouched() {
    let api = Server::start().await;
    api.on("/odd").reply(
        Reply::ok()
            .header("content-encoding", "x-custom")
            .body("as sent"),
    );
    api.on("/plain").reply(Reply::ok().body("plain"));
    let client = client().build().unwrap();

    let resp = client.get(&api.url("/odd")).send().await.unwrap();
    assert_eq!(resp.headers()["content-encoding"], "x-custom");
    assert_eq!(resp.headers()["content-length"], "7");
    assert_eq!(resp.text().await.unwrap(), "as sent");
    let resp = client.get(&api.url("/plain")).send().await.unwrap();
    assert_eq!(resp.headers()["content-length"], "5");
    assert_eq!(resp.text().await.unwrap(), "plain");
}

#[tokio::test(flavor = "current_thread")]
async fn decompress_false_sends_no_accept_encoding_and_passes_bytes_through() {
    let api = Server::start().await;
    let packed = compress("gzip", TEXT.as_bytes()).await;
    api.on("/gz").reply(
        Reply::ok()
            .header("content-encoding", "gzip")
            .body(packed.clone()),
    );
    let client = client().decompress(false).build().unwrap();

    let resp = client.get(&api.url("/gz")).send().await.unwrap();

    assert_eq!(resp.headers()["content-encoding"], "gzip");
    assert_eq!(resp.bytes().await.unwrap(), packed);
    assert!(api.arrivals()[0].header("accept-encoding").is_none());
}

#[tokio::test(flavor = "current_thread")]
async fn a_request_that_sets_accept_encoding_keeps_it() {
    let api = Server::start().await;
    api.on("/id").reply(Reply::ok().body("x"));
    let client = client().build().unwrap();

    client
        .get(&api.url("/id"))
        .header("accept-encoding", "identity")
        .send()
        .await
        .unwrap();

    assert_eq!(
        api.arrivals()[0].header("accept-encoding"),
        Some("identity")
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_gzip_bomb_is_a_body_error_at_the_decoded_limit() {
    let api = Server::start().await;
    // 10 MiB of zeros: about 10 KiB of gzip.
    let bomb = compress("gzip", &vec![0u8; 10 * 1024 * 1024]).await;
    assert!(bomb.len() < 64 * 1024, "{}", bomb.len());
    api.on("/bomb")
        .reply(Reply::ok().header("content-encoding", "gzip").body(bomb));
    let client = client().build().unwrap();

    let resp = client.get(&api.url("/bomb")).send().await.unwrap();
    let err = resp.bytes_limited(1024 * 1024).await.unwrap_err();
    assert!(err.is_body(), "{err:?}");

    // Decoded as it streams, in small frames: memory holds what the reader
    // keeps, never the whole 10 MiB at once.
    let resp = client.get(&api.url("/bomb")).send().await.unwrap();
    let mut stream = resp.bytes_stream();
    let (mut seen, mut largest) = (0, 0);
    while seen < 1024 * 1024 {
        let chunk = std::future::poll_fn(|cx| Pin::new(&mut stream).poll_next(cx))
            .await
            .unwrap()
            .unwrap();
        seen += chunk.len();
        largest = largest.max(chunk.len());
    }
    assert!(largest <= 64 * 1024, "a decoded frame of {largest} bytes");

    // Within the limit, the same body decodes whole.
    let resp = client.get(&api.url("/bomb")).send().await.unwrap();
    let all = resp.bytes_limited(11 * 1024 * 1024).await.unwrap();
    assert_eq!(all.len(), 10 * 1024 * 1024);
}

#[tokio::test(flavor = "current_thread")]
async fn corrupt_gzip_is_a_body_error() {
    let api = Server::start().await;
    let mut packed = compress("gzip", TEXT.repeat(50).as_bytes()).await.to_vec();
    let mid = packed.len() / 2;
    packed.truncate(mid);
    api.on("/cut")
        .reply(Reply::ok().header("content-encoding", "gzip").body(packed));

    let resp = client()
        .build()
        .unwrap()
        .get(&api.url("/cut"))
        .send()
        .await
        .unwrap();
    let err = resp.text().await.unwrap_err();
    assert!(err.is_body(), "{err:?}");
}

#[tokio::test(flavor = "current_thread")]
async fn head_with_a_gzip_content_encoding_and_no_body_is_fine() {
    let api = Server::start().await;
    api.on("/head").reply(
        Reply::ok()
            .header("content-encoding", "gzip")
            .header("content-length", "0"),
    );

    let resp = client()
        .build()
        .unwrap()
        .request(http::Method::HEAD, &api.url("/head"))
        .send()
        .await
        .unwrap();

    assert_eq!(resp.status(), 200);
    assert!(resp.bytes().await.unwrap().is_empty());
}

#[tokio::test(flavor = "current_thread")]
async fn retries_and_redirect_hops_offer_the_encodings_too() {
    let api = Server::start().await;
    api.on("/moved")
        .reply(Reply::status(302).header("location", "/flaky"));
    let packed = compress("gzip", TEXT.as_bytes()).await;
    api.on("/flaky").replies([
        Reply::status(503),
        Reply::ok().header("content-encoding", "gzip").body(packed),
    ]);
    let client = client()
        .retry(
            parapet::retry::RetryPolicy::builder()
                .base_delay(Duration::from_millis(5))
                .max_delay(Duration::from_millis(10))
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();

    let resp = client.get(&api.url("/moved")).send().await.unwrap();

    assert_eq!(resp.text().await.unwrap(), TEXT);
    let arrivals = api.arrivals();
    assert_eq!(arrivals.len(), 4);
    assert!(
        arrivals
            .iter()
            .all(|a| a.header("accept-encoding").is_some())
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_body_passed_through_reports_its_end_after_its_last_frame() {
    use http_body::Body as _;
    use http_body_util::BodyExt as _;

    let api = Server::start().await;
    api.on("/plain").reply(Reply::ok().body("plain"));
    let resp = client()
        .build()
        .unwrap()
        .get(&api.url("/plain"))
        .send()
        .await
        .unwrap();
    let mut body = resp.into_inner().into_body();

    let frame = body.frame().await.unwrap().unwrap();
    assert_eq!(frame.into_data().unwrap(), "plain");
    assert!(body.is_end_stream());
}
