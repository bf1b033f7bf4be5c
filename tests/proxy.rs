//! Proxies, against a loopback HTTP forward proxy written here: it answers
//! `CONNECT host:port` with 200 and splices bytes both ways, forwards
//! absolute-form requests to the origin, and records what it saw. Origins
//! are parapet-testkit servers (http) and a rustls server with a CA made in
//! the test (https).
//!
//! Every test captures a TRACE log and asserts that neither the proxy
//! password nor the `Proxy-Authorization` value built from it appears.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::error::Error as _;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use parapet::{Certificate, Client, Proxy, ProxyError};
use parapet_testkit::{Reply, Server};
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tracing_subscriber::fmt::format::FmtSpan;

const PROXY_USER: &str = "proxy-user";
const PROXY_PASSWORD: &str = "pr0xy-Pa55word-never-logged";

fn proxy_authorization() -> String {
    let token =
        base64::engine::general_purpose::STANDARD.encode(format!("{PROXY_USER}:{PROXY_PASSWORD}"));
    format!("Basic {token}")
}

// ---------------------------------------------------------------------------
// Log capture
// ---------------------------------------------------------------------------

/// Captures everything logged at TRACE on this thread (the tests run on
/// tokio's current-thread runtime, so this includes the client's tasks) and
/// asserts, when dropped, that no proxy secret was logged.
struct Capture {
    buf: Arc<Mutex<Vec<u8>>>,
    _guard: tracing::subscriber::DefaultGuard,
}

fn capture() -> Capture {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let writer = Arc::clone(&buf);
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_span_events(FmtSpan::NEW | FmtSpan::CLOSE)
        .with_writer(move || LogWriter(Arc::clone(&writer)))
        .finish();
    let guard = tracing::subscriber::set_default(subscriber);
    Capture { buf, _guard: guard }
}

impl Capture {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf.lock().unwrap()).into_owned()
    }

    fn assert_no_secrets(&self) {
        let text = self.text();
        let header = proxy_authorization();
        let token = header.trim_start_matches("Basic ");
        for needle in [PROXY_PASSWORD, token] {
            if let Some(line) = text.lines().find(|l| l.contains(needle)) {
                panic!("a proxy secret was logged: {line}");
            }
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.assert_no_secrets();
        }
    }
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// The loopback forward proxy
// ---------------------------------------------------------------------------

/// What the proxy saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    /// `CONNECT 127.0.0.1:443 HTTP/1.1` or `GET http://host/path HTTP/1.1`.
    line: String,
    proxy_authorization: Option<String>,
}

#[derive(Clone, Copy)]
enum Mode {
    /// A working proxy.
    Forward,
    /// Answers every `CONNECT` with this status.
    RefuseConnect(u16),
}

struct TestProxy {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl TestProxy {
    async fn start(mode: Mode) -> Self {
        Self::start_with(mode, None).await
    }

    /// A proxy spoken to over TLS (an `https://` proxy URL).
    async fn start_tls(mode: Mode, acceptor: TlsAcceptor) -> Self {
        Self::start_with(mode, Some(acceptor)).await
    }

    async fn start_with(mode: Mode, tls: Option<TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let record = Arc::clone(&record);
                match &tls {
                    None => {
                        tokio::spawn(serve_client(client, mode, record));
                    }
                    Some(acceptor) => {
                        let acceptor = acceptor.clone();
                        tokio::spawn(async move {
                            if let Ok(client) = acceptor.accept(client).await {
                                serve_client(client, mode, record).await;
                            }
                        });
                    }
                }
            }
        });
        Self { port, seen }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// Reads one HTTP head (up to the blank line), byte by byte so that
/// nothing after it is consumed. `None` at end of stream.
async fn read_head(io: &mut (impl AsyncRead + Unpin)) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match io.read(&mut byte).await {
            Ok(1) if head.len() < 64 * 1024 => head.push(byte[0]),
            _ => return None,
        }
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

async fn serve_client<S>(mut client: S, mode: Mode, record: Arc<Mutex<Vec<Seen>>>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // One request after another on the client's connection (keep-alive).
    while let Some(head) = read_head(&mut client).await {
        let line = head.lines().next().unwrap_or_default().to_owned();
        record.lock().unwrap().push(Seen {
            line: line.clone(),
            proxy_authorization: header(&head, "proxy-authorization").map(str::to_owned),
        });
        let mut parts = line.split(' ');
        let (method, target) = (parts.next().unwrap(), parts.next().unwrap().to_owned());
        // The test proxy forwards only to loopback: a test never reaches out.
        let to = target.strip_prefix("http://").unwrap_or(&target);
        assert!(
            to.starts_with("127.0.0.1:")
                || to.starts_with("localhost:")
                || to.starts_with("[::1]:"),
            "the test proxy was asked for {target}, beyond loopback"
        );
        if method == "CONNECT" {
            if let Mode::RefuseConnect(status) = mode {
                let answer = format!("HTTP/1.1 {status} Refused\r\ncontent-length: 0\r\n\r\n");
                let _ = client.write_all(answer.as_bytes()).await;
                return;
            }
            let Ok(mut origin) = TcpStream::connect(target.as_str()).await else {
                let _ = client
                    .write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n")
                    .await;
                return;
            };
            let _ = client
                .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                .await;
            let _ = tokio::io::copy_bidirectional(&mut client, &mut origin).await;
            return;
        }
        // Absolute form: `GET http://host:port/path HTTP/1.1`.
        let Some(rest) = target.strip_prefix("http://") else {
            return;
        };
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let path = if path.is_empty() { "/" } else { path };
        let mut origin = TcpStream::connect(authority).await.unwrap();
        // Forward in origin form, without the hop-by-hop headers (a proxy
        // consumes `Proxy-Authorization`), one request per origin connection.
        let mut forwarded = format!("{method} {path} HTTP/1.1\r\n");
        for l in head.lines().skip(1).filter(|l| !l.is_empty()) {
            let name = l.split(':').next().unwrap_or_default().to_ascii_lowercase();
            if !matches!(
                name.as_str(),
                "proxy-authorization" | "proxy-connection" | "connection"
            ) {
                forwarded.push_str(l);
                forwarded.push_str("\r\n");
            }
        }
        forwarded.push_str("connection: close\r\n\r\n");
        let body_len: usize = header(&head, "content-length").map_or(0, |v| v.parse().unwrap());
        let mut body = vec![0u8; body_len];
        client.read_exact(&mut body).await.unwrap();
        origin.write_all(forwarded.as_bytes()).await.unwrap();
        origin.write_all(&body).await.unwrap();
        // Relay one response, delimited by its content-length.
        let answer = read_head(&mut origin).await.unwrap();
        let len: usize = header(&answer, "content-length").map_or(0, |v| v.parse().unwrap());
        let mut body = vec![0u8; len];
        origin.read_exact(&mut body).await.unwrap();
        client.write_all(answer.as_bytes()).await.unwrap();
        client.write_all(&body).await.unwrap();
    }
}

// ---------------------------------------------------------------------------
// A TLS origin
// ---------------------------------------------------------------------------

/// A CA made in the test, and servers' certificates for 127.0.0.1.
struct TestCa {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl TestCa {
    fn new() -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        Self { cert, key }
    }

    fn root(&self) -> Certificate {
        Certificate::from_pem(self.cert.pem().as_bytes()).unwrap()
    }

    /// A TLS acceptor for 127.0.0.1 speaking HTTP/1.1.
    fn acceptor(&self) -> TlsAcceptor {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .unwrap()
            .signed_by(&key, &self.cert, &self.key)
            .unwrap();
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(cert.der().to_vec())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        TlsAcceptor::from(Arc::new(config))
    }
}

struct TlsOrigin {
    port: u16,
    root: Certificate,
    /// The request heads that arrived, decrypted.
    heads: Arc<Mutex<Vec<String>>>,
}

async fn tls_origin() -> TlsOrigin {
    tls_origin_of(&TestCa::new()).await
}

async fn tls_origin_of(ca: &TestCa) -> TlsOrigin {
    let acceptor = ca.acceptor();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&heads);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let record = Arc::clone(&record);
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                while let Some(head) = read_head(&mut tls).await {
                    record.lock().unwrap().push(head);
                    let _ = tls
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nsecure")
                        .await;
                }
            });
        }
    });
    TlsOrigin {
        port,
        root: ca.root(),
        heads,
    }
}

/// A port with nothing listening (bound, then released).
async fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

fn with_credentials(proxy: Proxy) -> Proxy {
    proxy.basic_auth(PROXY_USER, PROXY_PASSWORD)
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[tokio::test]
async fn http_goes_through_the_proxy_in_absolute_form_with_proxy_credentials() {
    let logs = capture();
    let origin = Server::start().await;
    origin
        .on("/orders")
        .replies([Reply::status(503), Reply::json("[1]")]);
    let proxy = TestProxy::start(Mode::Forward).await;
    let client = Client::builder()
        .proxy(with_credentials(Proxy::http(proxy.url()).unwrap()))
        .build()
        .unwrap();

    let resp = client
        .get(&origin.url("/orders?page=2"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "[1]");

    // Both attempts (a 503, then the answer) went through the proxy, in
    // absolute form, each carrying the proxy's credentials...
    let expected_line = format!("GET {} HTTP/1.1", origin.url("/orders?page=2"));
    let seen = proxy.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    for s in &seen {
        assert_eq!(s.line, expected_line);
        assert_eq!(s.proxy_authorization, Some(proxy_authorization()));
    }
    // ...and reached the origin without them.
    let arrivals = origin.arrivals_for("/orders");
    assert_eq!(arrivals.len(), 2);
    assert!(
        arrivals
            .iter()
            .all(|a| a.header("proxy-authorization").is_none())
    );
    assert!(logs.text().contains("/orders"));
    logs.assert_no_secrets();
}

#[tokio::test]
async fn a_proxy_url_with_user_info_sends_those_credentials() {
    let logs = capture();
    let origin = Server::start().await;
    origin.on("/").reply(Reply::ok());
    let proxy = TestProxy::start(Mode::Forward).await;
    let url = format!(
        "http://{PROXY_USER}:{PROXY_PASSWORD}@127.0.0.1:{}",
        proxy.port
    );
    let client = Client::builder()
        .proxy(Proxy::all(&url).unwrap())
        .build()
        .unwrap();
    assert!(!format!("{client:?}").contains(PROXY_PASSWORD));

    client.get(&origin.url("/")).send().await.unwrap();

    let seen = proxy.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].proxy_authorization, Some(proxy_authorization()));
    assert_eq!(origin.hits("/"), 1);
    drop(logs);
}

#[tokio::test]
async fn https_is_tunnelled_with_connect_and_the_proxy_sees_only_host_and_port() {
    let logs = capture();
    let origin = tls_origin().await;
    let proxy = TestProxy::start(Mode::Forward).await;
    let client = Client::builder()
        .webpki_roots(false)
        .add_root_certificate(origin.root.clone())
        .proxy(with_credentials(Proxy::all(proxy.url()).unwrap()))
        .build()
        .unwrap();

    for _ in 0..2 {
        let resp = client
            .get(&format!("https://127.0.0.1:{}/private/path", origin.port))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.text().await.unwrap(), "secure");
    }

    // One tunnel, reused: the proxy saw the CONNECT with its credentials,
    // and nothing of the requests inside.
    let seen = proxy.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(
        seen[0].line,
        format!("CONNECT 127.0.0.1:{} HTTP/1.1", origin.port)
    );
    assert_eq!(seen[0].proxy_authorization, Some(proxy_authorization()));
    // The origin got both requests, in origin form, without the proxy's
    // credentials.
    let heads = origin.heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 2);
    for head in &heads {
        assert!(head.starts_with("GET /private/path HTTP/1.1\r\n"), "{head}");
        assert!(header(head, "proxy-authorization").is_none(), "{head}");
    }
    drop(logs);
}

#[tokio::test]
async fn an_https_proxy_is_reached_over_tls_and_tunnels_both_schemes() {
    let logs = capture();
    let ca = TestCa::new();
    let tls_origin = tls_origin_of(&ca).await;
    let origin = Server::start().await;
    origin.on("/plain").reply(Reply::ok().body("plain"));
    let proxy = TestProxy::start_tls(Mode::Forward, ca.acceptor()).await;
    let client = Client::builder()
        .webpki_roots(false)
        .add_root_certificate(ca.root())
        .proxy(with_credentials(
            Proxy::all(format!("https://127.0.0.1:{}", proxy.port)).unwrap(),
        ))
        .build()
        .unwrap();

    // TLS to the origin inside TLS to the proxy.
    let resp = client
        .get(&format!("https://127.0.0.1:{}/in-tunnel", tls_origin.port))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.text().await.unwrap(), "secure");
    // Plain http to the origin, absolute form over TLS to the proxy.
    let resp = client.get(&origin.url("/plain")).send().await.unwrap();
    assert_eq!(resp.text().await.unwrap(), "plain");

    let seen = proxy.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(
        seen[0].line,
        format!("CONNECT 127.0.0.1:{} HTTP/1.1", tls_origin.port)
    );
    assert_eq!(
        seen[1].line,
        format!("GET {} HTTP/1.1", origin.url("/plain"))
    );
    assert!(
        seen.iter()
            .all(|s| s.proxy_authorization == Some(proxy_authorization()))
    );
    assert_eq!(tls_origin.heads.lock().unwrap().len(), 1);
    drop(logs);
}

#[tokio::test]
async fn no_proxy_sends_matching_hosts_direct_without_proxy_credentials() {
    let logs = capture();
    let origin = Server::start().await;
    origin.on("/direct").reply(Reply::ok());
    let tls = tls_origin().await;
    let proxy = TestProxy::start(Mode::Forward).await;
    let client = Client::builder()
        .webpki_roots(false)
        .add_root_certificate(tls.root.clone())
        .proxy(with_credentials(Proxy::all(proxy.url()).unwrap()))
        .no_proxy("example.invalid, 127.0.0.1")
        .build()
        .unwrap();

    client.get(&origin.url("/direct")).send().await.unwrap();
    let resp = client
        .get(&format!("https://127.0.0.1:{}/", tls.port))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.text().await.unwrap(), "secure");

    assert!(proxy.seen().is_empty(), "{:?}", proxy.seen());
    let direct = origin.arrivals_for("/direct");
    assert_eq!(direct.len(), 1);
    assert!(direct[0].header("proxy-authorization").is_none());
    assert_eq!(tls.heads.lock().unwrap().len(), 1);
    drop(logs);
}

#[tokio::test]
async fn a_proxy_refusing_connect_is_a_typed_connect_error_retried_as_never_sent() {
    for status in [407, 403] {
        let logs = capture();
        let proxy = TestProxy::start(Mode::RefuseConnect(status)).await;
        let port = closed_port().await;
        let client = Client::builder()
            .proxy(with_credentials(Proxy::https(proxy.url()).unwrap()))
            .max_attempts(3)
            .build()
            .unwrap();

        // A POST too: nothing reached the origin, so the policy may send it
        // again, and it does, up to its attempts.
        for method in [http::Method::GET, http::Method::POST] {
            let before = proxy.seen().len();
            let err = client
                .request(method.clone(), &format!("https://127.0.0.1:{port}/pay"))
                .body("{}")
                .send()
                .await
                .unwrap_err();
            assert!(err.is_connect(), "{status} {method}: {err:?}");
            assert!(!err.is_status());
            let mut cause = err.source();
            let mut proxy_error = None;
            while let Some(e) = cause {
                if let Some(p) = e.downcast_ref::<ProxyError>() {
                    proxy_error = Some(p);
                }
                cause = e.source();
            }
            let proxy_error = proxy_error.expect("a ProxyError in the chain");
            assert_eq!(proxy_error.proxy().port_u16(), Some(proxy.port));
            let text = err.to_string();
            assert!(text.contains("proxy"), "{text}");
            assert!(!text.contains(PROXY_PASSWORD), "{text}");

            let connects = proxy.seen().len() - before;
            assert_eq!(connects, 3, "{status} {method}: {:?}", proxy.seen());
        }
        assert!(
            proxy
                .seen()
                .iter()
                .all(|s| s.line == format!("CONNECT 127.0.0.1:{port} HTTP/1.1"))
        );

        // Without retries, exactly one CONNECT.
        let once = Client::builder()
            .proxy(Proxy::https(proxy.url()).unwrap())
            .retry_off()
            .build()
            .unwrap();
        let before = proxy.seen().len();
        let err = once
            .get(&format!("https://127.0.0.1:{port}/"))
            .send()
            .await
            .unwrap_err();
        assert!(err.is_connect(), "{err:?}");
        assert_eq!(proxy.seen().len() - before, 1);
        drop(logs);
    }
}

#[tokio::test]
async fn an_unreachable_proxy_is_a_connect_error_naming_the_proxy() {
    let logs = capture();
    let port = closed_port().await;
    let client = Client::builder()
        .proxy(with_credentials(
            Proxy::all(format!("http://127.0.0.1:{port}")).unwrap(),
        ))
        .retry_off()
        .build()
        .unwrap();
    for url in ["http://origin.invalid/", "https://origin.invalid/"] {
        let err = client.get(url).send().await.unwrap_err();
        assert!(err.is_connect(), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains(&format!("proxy at http://127.0.0.1:{port}/")),
            "{text}"
        );
        assert!(!format!("{err:?}").contains(PROXY_PASSWORD));
    }
    drop(logs);
}

#[test]
fn an_invalid_proxy_url_is_a_typed_config_error_without_the_url() {
    for bad in [
        format!("http://{PROXY_USER}:{PROXY_PASSWORD}@[::1"),
        format!("socks5://{PROXY_USER}:{PROXY_PASSWORD}@127.0.0.1:1080"),
        "".to_owned(),
    ] {
        let err = Proxy::all(&bad).unwrap_err();
        assert!(err.message().to_lowercase().contains("proxy"), "{err}");
        assert!(!err.to_string().contains(PROXY_PASSWORD), "{err}");
    }
}

#[tokio::test]
async fn proxy_from_env_off_builds_a_client_that_connects_direct() {
    let origin = Server::start().await;
    origin.on("/").reply(Reply::ok());
    let client = Client::builder().proxy_from_env(false).build().unwrap();
    client.get(&origin.url("/")).send().await.unwrap();
    assert_eq!(origin.hits("/"), 1);
}
