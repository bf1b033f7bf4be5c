//! HTTP/2 with prior knowledge (h2c) against a loopback hyper server that
//! speaks only HTTP/2 over plain TCP.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use parapet::Client;
use tokio::net::TcpListener;

/// An HTTP/2-only server; answers with the request's version and counts
/// the requests that it understood.
async fn h2_only_server() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&served);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let count = Arc::clone(&count);
            tokio::spawn(async move {
                let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    count.fetch_add(1, Ordering::SeqCst);
                    let body = format!("{:?} {}", req.version(), req.uri().path());
                    async move { Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(body)))) }
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    (format!("http://{addr}"), served)
}

#[tokio::test]
async fn prior_knowledge_speaks_http2_over_plain_tcp() {
    let (url, served) = h2_only_server().await;
    let client = Client::builder()
        .http2_prior_knowledge()
        .proxy_from_env(false)
        .build()
        .unwrap();

    for _ in 0..3 {
        let resp = client.get(&format!("{url}/h2c")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.version(), http::Version::HTTP_2);
        // The server saw HTTP/2 too.
        assert_eq!(resp.text().await.unwrap(), "HTTP/2.0 /h2c");
    }
    assert_eq!(served.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn without_prior_knowledge_an_h2_only_server_is_a_typed_error() {
    let (url, served) = h2_only_server().await;
    let client = Client::builder()
        .proxy_from_env(false)
        .retry_off()
        .build()
        .unwrap();

    let err = client.get(&format!("{url}/h2c")).send().await.unwrap_err();
    // HTTP/1.1 was sent; the server did not understand it and hung up.
    assert!(!err.is_status(), "{err:?}");
    assert!(!err.is_connect(), "{err:?}");
    // The cause is hyper's, reachable by downcasting the source chain.
    let source = std::error::Error::source(&err).unwrap();
    assert!(source.is::<hyper_util::client::legacy::Error>(), "{err:?}");
    assert_eq!(served.load(Ordering::SeqCst), 0);
}

#[test]
fn prior_knowledge_with_http2_turned_off_is_a_config_error() {
    let err = Client::builder()
        .http2(false)
        .http2_prior_knowledge()
        .build()
        .unwrap_err();
    assert!(err.message().contains("http2_prior_knowledge"), "{err}");
}
