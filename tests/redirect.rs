//! Redirects through the facade, against loopback servers (two of them for
//! two origins, and a loopback TLS server for https → http). Every test
//! captures a TRACE log and checks that no planted secret is in it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod reliability;

use std::error::Error as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body::Frame;
use parapet::auth::AuthLayer;
use parapet::{
    Client, InsecureRedirect, NotFollowedReason, RedirectLoop, RedirectNotFollowed, RedirectPolicy,
    TooManyRedirects,
};
use parapet_testkit::{Reply, Server, body_hash};
use reliability::{BEARER, capture};
use tower::ServiceExt;

/// A planted cookie and proxy credential (the capture fails a test that
/// logs either).
const COOKIE: &str = "session=PLANTED-cookie-4d1";
const PROXY_AUTH: &str = "Basic UExBTlRFRC1wcm94eQ==";

fn redirect_to(location: &str, status: u16) -> Reply {
    Reply::status(status).header("location", location)
}

/// The URL that answered, as the redirect layer records it.
fn final_url(ext: &http::Extensions) -> Option<String> {
    ext.get::<tower_http::follow_redirect::RequestUri>()
        .map(|u| u.0.to_string())
}

fn client() -> parapet::ClientBuilder {
    Client::builder()
        .deadline(Duration::from_secs(5))
        .attempt_timeout(Duration::from_secs(2))
}

#[tokio::test(flavor = "current_thread")]
async fn a_302_is_followed_with_the_same_request_id_on_every_hop() {
    let logs = capture();
    let api = Server::start().await;
    api.on("/start").reply(redirect_to("/middle", 302));
    api.on("/middle").reply(redirect_to(&api.url("/end"), 301));
    api.on("/end").reply(Reply::ok().body("arrived"));

    let resp = client()
        .build()
        .unwrap()
        .get(&api.url("/start"))
        .send()
        .await
        .unwrap();

    assert_eq!(resp.status(), 200);
    assert_eq!(final_url(resp.extensions()), Some(api.url("/end")));
    assert!(RedirectNotFollowed::get(resp.extensions()).is_none());
    assert_eq!(resp.text().await.unwrap(), "arrived");
    let arrivals = api.arrivals();
    let paths: Vec<_> = arrivals.iter().map(|a| a.path.as_str()).collect();
    assert_eq!(paths, ["/start", "/middle", "/end"]);
    let id = arrivals[0].header("x-request-id").unwrap();
    assert!(
        arrivals
            .iter()
            .all(|a| a.header("x-request-id") == Some(id))
    );
    // Each hop is a resend in its own attempt span, in one call span.
    let text = logs.text();
    assert!(text.contains("http.request.resend_count=1"), "{text}");
    assert!(text.contains("http.request.resend_count=2"), "{text}");
    assert!(text.contains("attempts=3"), "{text}");
}

#[tokio::test(flavor = "current_thread")]
async fn post_after_303_or_302_becomes_a_get_without_its_body() {
    let _logs = capture();
    let api = Server::start().await;
    api.on("/orders").reply(redirect_to("/orders/7", 303));
    api.on("/login").reply(redirect_to("/home", 302));
    api.on("/orders/7").reply(Reply::ok());
    api.on("/home").reply(Reply::ok());
    let client = client().build().unwrap();

    for (path, target) in [("/orders", "/orders/7"), ("/login", "/home")] {
        let resp = client
            .post(&api.url(path))
            .header("content-type", "application/json")
            .body(r#"{"item":1}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let first = &api.arrivals_for(path)[0];
        assert_eq!(first.method, "POST");
        assert_eq!(first.body, r#"{"item":1}"#);
        let hop = &api.arrivals_for(target)[0];
        assert_eq!(hop.method, "GET");
        assert!(hop.body.is_empty());
        assert!(hop.header("content-type").is_none());
        assert!(hop.header("content-length").is_none());
    }
}

#[tokio::test(flavor = "current_thread")]
async fn put_after_307_is_sent_again_with_the_same_body() {
    let _logs = capture();
    let api = Server::start().await;
    api.on("/v1/doc").reply(redirect_to("/v2/doc", 307));
    api.on("/v2/doc").reply(Reply::ok());
    // Far over the replay cap, but in memory: always replayable.
    let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();

    let resp = client()
        .replay_cap(1024)
        .build()
        .unwrap()
        .put(&api.url("/v1/doc"))
        .body(body.clone())
        .send()
        .await
        .unwrap();

    assert_eq!(resp.status(), 200);
    let first = &api.arrivals_for("/v1/doc")[0];
    let hop = &api.arrivals_for("/v2/doc")[0];
    assert_eq!(hop.method, "PUT");
    assert_eq!(first.body_hash, body_hash(&body));
    assert_eq!(hop.body_hash, body_hash(&body));
}

/// A body streamed in `n` chunks of `size` bytes, not known in advance.
struct Chunks {
    left: usize,
    size: usize,
}

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        self.left -= 1;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![b'x'; self.size])))))
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_307_whose_streamed_body_passed_the_replay_cap_is_returned_with_the_reason() {
    let _logs = capture();
    let api = Server::start().await;
    api.on("/upload").reply(redirect_to("/elsewhere", 307));
    api.on("/elsewhere").reply(Reply::ok());
    let client = client().replay_cap(1024).build().unwrap();

    let req = Request::put(api.url("/upload"))
        .body(Chunks {
            left: 8,
            size: 1024,
        })
        .unwrap();
    let resp = client.clone().oneshot(req).await.unwrap();

    assert_eq!(resp.status(), 307);
    let why = RedirectNotFollowed::get(resp.extensions()).unwrap();
    assert_eq!(why.reason(), NotFollowedReason::BodyNotReplayable);
    assert_eq!(api.arrivals_for("/upload")[0].body_len, 8 * 1024);
    assert_eq!(api.hits("/elsewhere"), 0);

    // Under the cap, the same streamed body is sent again.
    let req = Request::put(api.url("/upload"))
        .body(Chunks { left: 2, size: 256 })
        .unwrap();
    let resp = client.oneshot(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(api.arrivals_for("/elsewhere")[0].body_len, 512);
}

/// Sends GET `path` of `a` with a bearer token (auth layer), a cookie and
/// a proxy credential (headers); returns the response status.
async fn with_credentials(a: &Server, path: &str) -> u16 {
    let client = client()
        .auth(AuthLayer::bearer(BEARER).unwrap())
        .build()
        .unwrap();
    let resp = client
        .get(&a.url(path))
        .header("cookie", COOKIE)
        .header("proxy-authorization", PROXY_AUTH)
        .send()
        .await
        .unwrap();
    resp.status().as_u16()
}

#[tokio::test(flavor = "current_thread")]
async fn a_redirect_to_another_origin_drops_authorization_cookie_and_proxy_authorization() {
    let logs = capture();
    let a = Server::start().await;
    let b = Server::start().await;
    a.on("/start").reply(redirect_to(&b.url("/land"), 302));
    b.on("/land").reply(redirect_to(&a.url("/back"), 302));
    a.on("/back").reply(Reply::ok());

    assert_eq!(with_credentials(&a, "/start").await, 200);

    let first = &a.arrivals_for("/start")[0];
    assert_eq!(
        first.header("authorization"),
        Some(format!("Bearer {BEARER}").as_str())
    );
    assert_eq!(first.header("cookie"), Some(COOKIE));
    assert_eq!(first.header("proxy-authorization"), Some(PROXY_AUTH));
    let other = &b.arrivals_for("/land")[0];
    for name in ["authorization", "cookie", "proxy-authorization"] {
        assert!(
            other.header(name).is_none(),
            "{name} reached the other origin"
        );
    }
    // Dropped for the rest of the chain, back on the first origin too.
    let back = &a.arrivals_for("/back")[0];
    assert!(back.header("authorization").is_none());
    // The request id is not a credential: the other origin gets it.
    assert_eq!(other.header("x-request-id"), first.header("x-request-id"));
    logs.assert_no_secrets();
    assert!(!logs.text().contains(BEARER));
}

#[tokio::test(flavor = "current_thread")]
async fn a_redirect_on_the_same_origin_keeps_the_credentials() {
    let _logs = capture();
    let a = Server::start().await;
    a.on("/start").reply(redirect_to("/next", 307));
    a.on("/next").reply(Reply::ok());

    assert_eq!(with_credentials(&a, "/start").await, 200);

    let hop = &a.arrivals_for("/next")[0];
    assert_eq!(
        hop.header("authorization"),
        Some(format!("Bearer {BEARER}").as_str())
    );
    assert_eq!(hop.header("cookie"), Some(COOKIE));
    assert_eq!(hop.header("proxy-authorization"), Some(PROXY_AUTH));
}

#[tokio::test(flavor = "current_thread")]
async fn a_loop_between_two_origins_is_a_redirect_loop_error_and_not_retried() {
    let _logs = capture();
    let a = Server::start().await;
    let b = Server::start().await;
    a.on("/ping").reply(redirect_to(&b.url("/pong"), 302));
    b.on("/pong").reply(redirect_to(&a.url("/ping"), 302));

    let err = client()
        .build()
        .unwrap()
        .get(&a.url("/ping"))
        .send()
        .await
        .unwrap_err();

    assert!(err.is_redirect(), "{err:?}");
    assert!(!err.is_retryable());
    let looped = err
        .source()
        .unwrap()
        .downcast_ref::<RedirectLoop>()
        .unwrap();
    assert!(looped.url().ends_with("/ping"), "{looped}");
    assert_eq!(a.hits("/ping"), 1);
    assert_eq!(b.hits("/pong"), 1);
}

#[tokio::test(flavor = "current_thread")]
async fn ten_redirects_are_followed_and_the_eleventh_is_too_many() {
    let _logs = capture();
    let api = Server::start().await;
    for i in 0..12 {
        api.on(&format!("/r{i}"))
            .reply(redirect_to(&format!("/r{}", i + 1), 302));
    }
    api.on("/r10").reply(Reply::ok());
    let client = client().build().unwrap();

    let resp = client.get(&api.url("/r0")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(api.arrivals().len(), 11);

    // Now r10 redirects too: the eleventh redirect.
    api.on("/r10").reply(redirect_to("/r11", 302));
    api.clear_arrivals();
    let err = client.get(&api.url("/r0")).send().await.unwrap_err();
    assert!(err.is_redirect(), "{err:?}");
    let too_many = err
        .source()
        .unwrap()
        .downcast_ref::<TooManyRedirects>()
        .unwrap();
    assert_eq!(too_many.hops(), 10);
    // Eleven requests (r0 to r10), once: the error was not retried.
    assert_eq!(api.arrivals().len(), 11);
}

#[tokio::test(flavor = "current_thread")]
async fn policy_none_returns_the_302_and_a_request_may_say_otherwise() {
    let _logs = capture();
    let api = Server::start().await;
    api.on("/old").reply(redirect_to("/new", 302));
    api.on("/new").reply(Reply::ok());
    let client = client().redirect(RedirectPolicy::none()).build().unwrap();

    let resp = client.get(&api.url("/old")).send().await.unwrap();
    assert_eq!(resp.status(), 302);
    assert!(
        RedirectNotFollowed::get(resp.extensions())
            .unwrap()
            .is_disabled()
    );
    // Not followed: nothing to say about another URL.
    assert_eq!(final_url(resp.extensions()), None);
    assert_eq!(api.hits("/new"), 0);

    let resp = client
        .get(&api.url("/old"))
        .redirect(RedirectPolicy::limited(1))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(api.hits("/new"), 1);

    // And the other way round: a following client, one request that does not.
    let resp = Client::new()
        .unwrap()
        .get(&api.url("/old"))
        .redirect(RedirectPolicy::none())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 302);
}

#[tokio::test(flavor = "current_thread")]
async fn a_503_from_the_redirect_target_is_retried_from_the_start() {
    let _logs = capture();
    let api = Server::start().await;
    api.on("/start").reply(redirect_to("/flaky", 302));
    api.on("/flaky")
        .replies([Reply::status(503), Reply::ok().body("fine")]);
    let client = client()
        .retry(reliability::fast_policy(false))
        .build()
        .unwrap();

    let resp = client.get(&api.url("/start")).send().await.unwrap();

    assert_eq!(resp.status(), 200);
    assert_eq!(api.hits("/start"), 2);
    assert_eq!(api.hits("/flaky"), 2);
    let ids: Vec<_> = api
        .arrivals()
        .iter()
        .map(|a| a.header("x-request-id").unwrap().to_owned())
        .collect();
    assert!(ids.iter().all(|id| *id == ids[0]));
}

#[tokio::test(flavor = "current_thread")]
async fn redirect_hops_spend_the_call_deadline() {
    let _logs = capture();
    let api = Server::start().await;
    // Each hop alone fits in its attempt timeout; both do not fit in the
    // deadline.
    api.on("/slow-start")
        .reply(redirect_to("/slow-end", 302).delay(Duration::from_millis(350)));
    api.on("/slow-end")
        .reply(Reply::ok().delay(Duration::from_millis(350)));
    let client = Client::builder()
        .deadline(Duration::from_millis(600))
        .attempt_timeout(Duration::from_millis(500))
        .build()
        .unwrap();

    let err = client
        .get(&api.url("/slow-start"))
        .send()
        .await
        .unwrap_err();

    assert!(err.is_timeout(), "{err:?}");
    assert!(api.hits("/slow-end") >= 1);
}

// ---------------------------------------------------------------------------
// https → http, with a loopback TLS server
// ---------------------------------------------------------------------------

mod tls {
    use std::sync::Arc;

    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio_rustls::TlsAcceptor;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    use tokio_rustls::rustls::{self, ServerConfig};

    /// An https server on 127.0.0.1 whose every answer is a 302 to
    /// `location`; returns its port and the CA's PEM to trust.
    pub(crate) async fn redirecting_server(location: String) -> (u16, String) {
        let ca_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = params.self_signed(&ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .unwrap()
            .signed_by(&key, &ca, &ca_key)
            .unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(leaf.der().to_vec())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let answer = format!(
            "HTTP/1.1 302 Found\r\nlocation: {location}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        );
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let answer = answer.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let _ = tls.write_all(answer.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        (port, ca.pem())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn https_redirecting_to_http_is_refused() {
    let _logs = capture();
    let plain = Server::start().await;
    plain.on("/insecure").reply(Reply::ok());
    let (port, ca) = tls::redirecting_server(plain.url("/insecure")).await;
    let client = client()
        .webpki_roots(false)
        .add_root_certificate(parapet::Certificate::from_pem(ca.as_bytes()).unwrap())
        .build()
        .unwrap();

    let err = client
        .get(&format!("https://127.0.0.1:{port}/secure"))
        .send()
        .await
        .unwrap_err();

    assert!(err.is_redirect(), "{err:?}");
    let insecure = err
        .source()
        .unwrap()
        .downcast_ref::<InsecureRedirect>()
        .unwrap();
    assert!(insecure.to().starts_with("http://127.0.0.1:"), "{insecure}");
    assert_eq!(plain.hits("/insecure"), 0);
}

#[tokio::test(flavor = "current_thread")]
async fn the_final_url_and_reason_reach_a_client_used_as_a_service() {
    let _logs = capture();
    let api = Server::start().await;
    api.on("/a").reply(redirect_to("/b", 308));
    api.on("/b").reply(Reply::ok());
    let client = Arc::new(client().build().unwrap());

    let mut req = Request::get(api.url("/a")).body(String::new()).unwrap();
    req.extensions_mut().insert(RedirectPolicy::none());
    let resp = (*client).clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), 308);
    assert!(
        RedirectNotFollowed::get(resp.extensions())
            .unwrap()
            .is_disabled()
    );

    let req = Request::get(api.url("/a")).body(String::new()).unwrap();
    let resp = (*client).clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(api.hits("/b"), 1);
}
