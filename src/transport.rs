//! The innermost service: hyper-util's pooled client over rustls.

use std::sync::Arc;
use std::time::Duration;

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use parapet_core::ReplayBody;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::builder::ClientBuilder;
use crate::error::InvalidConfig;
use crate::proxy::{ProxyConfig, ProxyConnector};

/// The hyper-util client parapet sends through: the plain one when no proxy
/// applies to anything (exactly the client without proxy support), or one
/// whose connector routes each destination through its proxy.
pub(crate) enum Transport {
    Direct(HyperClient<HttpsConnector<HttpConnector>, ReplayBody>),
    Proxied {
        client: HyperClient<ProxyConnector, ReplayBody>,
        /// Set when the proxy of `http://` destinations has credentials:
        /// those requests then carry `Proxy-Authorization`.
        http_auth: Option<Arc<Matcher>>,
    },
}

/// The hyper-util client behind one `Arc`, as the stack's innermost service.
///
/// tower's contract makes callers clone a service per call (the facade
/// does, and the retry layer keeps a clone for its later attempts), and a
/// hyper-util client's clone increments about a dozen reference counts
/// (its pool, connector, executor, timers...). Its `request` only needs
/// `&self`, so one `Arc` in front makes each of those clones one increment.
#[derive(Clone)]
pub(crate) struct SharedTransport(Arc<Transport>);

impl SharedTransport {
    pub(crate) fn new(transport: Transport) -> Self {
        Self(Arc::new(transport))
    }
}

impl tower::Service<http::Request<ReplayBody>> for SharedTransport {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = hyper_util::client::legacy::Error;
    type Future = hyper_util::client::legacy::ResponseFuture;

    /// Always ready, like the hyper-util client itself.
    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<ReplayBody>) -> Self::Future {
        match &*self.0 {
            Transport::Direct(client) => client.request(req),
            Transport::Proxied { client, http_auth } => {
                let mut req = req;
                if let Some(matcher) = http_auth {
                    crate::proxy::add_proxy_authorization(matcher, &mut req);
                }
                client.request(req)
            }
        }
    }
}

/// A root certificate to trust in addition to (or instead of) the built-in
/// webpki roots.
#[derive(Clone)]
pub struct Certificate {
    der: CertificateDer<'static>,
}

impl Certificate {
    /// One certificate in PEM form.
    ///
    /// # Errors
    ///
    /// When the text holds no PEM certificate.
    pub fn from_pem(pem: &[u8]) -> Result<Self, InvalidConfig> {
        CertificateDer::from_pem_slice(pem)
            .map(|der| Self { der })
            .map_err(|e| InvalidConfig::new(format!("root certificate is not valid PEM: {e}")))
    }

    /// One certificate in DER form.
    #[must_use]
    pub fn from_der(der: impl Into<Vec<u8>>) -> Self {
        Self {
            der: CertificateDer::from(der.into()),
        }
    }
}

impl std::fmt::Debug for Certificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificate")
            .field("der_len", &self.der.len())
            .finish()
    }
}

/// A client certificate chain and its private key, for mutual TLS.
///
/// Its `Debug` output never shows the key.
#[derive(Clone)]
pub struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: Arc<PrivateKeyDer<'static>>,
}

impl Identity {
    /// A PEM certificate chain (leaf first) and a PEM private key (PKCS#8,
    /// PKCS#1 or SEC1).
    ///
    /// # Errors
    ///
    /// When either part is missing or not valid PEM.
    pub fn from_pem(chain_pem: &[u8], key_pem: &[u8]) -> Result<Self, InvalidConfig> {
        let chain = CertificateDer::pem_slice_iter(chain_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                InvalidConfig::new(format!("client certificate chain is not valid PEM: {e}"))
            })?;
        if chain.is_empty() {
            return Err(InvalidConfig::new(
                "client certificate chain holds no certificate",
            ));
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|_| InvalidConfig::new("client private key is not valid PEM"))?;
        Ok(Self {
            chain,
            key: Arc::new(key),
        })
    }
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("certificates", &self.chain.len())
            .field("key", &"[redacted]")
            .finish()
    }
}

#[derive(Debug, Clone)]
pub(crate) struct TransportConfig {
    pub(crate) connect_timeout: Option<Duration>,
    pub(crate) pool_idle_timeout: Option<Duration>,
    pub(crate) pool_max_idle_per_host: usize,
    pub(crate) tcp_keepalive: Option<Duration>,
    pub(crate) tcp_nodelay: bool,
    pub(crate) http2: bool,
    pub(crate) webpki_roots: bool,
    pub(crate) roots: Vec<Certificate>,
    pub(crate) identity: Option<Identity>,
    pub(crate) https_only: bool,
    pub(crate) http2_prior_knowledge: bool,
    pub(crate) proxy: ProxyConfig,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Some(Duration::from_secs(5)),
            pool_idle_timeout: Some(Duration::from_secs(30)),
            pool_max_idle_per_host: 256,
            tcp_keepalive: Some(Duration::from_secs(60)),
            tcp_nodelay: true,
            http2: true,
            webpki_roots: true,
            roots: Vec::new(),
            identity: None,
            https_only: false,
            http2_prior_knowledge: false,
            proxy: ProxyConfig::default(),
        }
    }
}

/// The TLS crypto provider: aws-lc-rs, rustls' own default. The ring
/// provider this crate used before is deprecated since rustls 0.23.48 (it
/// has no post-quantum key exchange), and a deprecation under CI's
/// `-D warnings` would break the build on the next lock update. aws-lc-rs
/// negotiates `X25519MLKEM768` with servers that offer it; its C library
/// builds with the `cc` crate alone (no cmake), about 30 s on 2 cores.
fn crypto() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

impl TransportConfig {
    pub(crate) fn build(&self) -> Result<Transport, InvalidConfig> {
        if self.connect_timeout == Some(Duration::ZERO) {
            return Err(InvalidConfig::new(
                "the connect timeout is zero: every connection to a remote host would fail",
            ));
        }
        let mut roots = rustls::RootCertStore::empty();
        if self.webpki_roots {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
        for cert in &self.roots {
            roots
                .add(cert.der.clone())
                .map_err(|e| InvalidConfig::new(format!("root certificate rejected: {e}")))?;
        }
        if roots.is_empty() {
            return Err(InvalidConfig::new(
                "no root certificates: built-in roots are off and none were added",
            ));
        }
        let builder = rustls::ClientConfig::builder_with_provider(crypto())
            .with_safe_default_protocol_versions()
            .map_err(|e| InvalidConfig::new(format!("TLS configuration: {e}")))?
            .with_root_certificates(roots);
        let tls = match &self.identity {
            Some(id) => builder
                .with_client_auth_cert(id.chain.clone(), id.key.clone_key())
                .map_err(|e| InvalidConfig::new(format!("client identity rejected: {e}")))?,
            None => builder.with_no_client_auth(),
        };

        if self.http2_prior_knowledge && !self.http2 {
            return Err(InvalidConfig::new(
                "http2_prior_knowledge needs HTTP/2, which http2(false) turned off",
            ));
        }
        let rules = self.proxy.rules()?;

        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(self.connect_timeout);
        http.set_nodelay(self.tcp_nodelay);
        http.set_keepalive(self.tcp_keepalive);

        // The builder below sets the ALPN of its own copy; a tunnel's TLS to
        // the origin needs the same list on this one.
        let mut origin_tls = tls.clone();
        let schemes = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls.clone());
        let schemes = if self.https_only {
            schemes.https_only()
        } else {
            schemes.https_or_http()
        };
        let connector = if self.http2_prior_knowledge {
            origin_tls.alpn_protocols = vec![b"h2".to_vec()];
            schemes.enable_http2().wrap_connector(http.clone())
        } else if self.http2 {
            origin_tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            schemes.enable_all_versions().wrap_connector(http.clone())
        } else {
            schemes.enable_http1().wrap_connector(http.clone())
        };

        let Some(rules) = rules else {
            return Ok(Transport::Direct(self.client().build(connector)));
        };
        // To the proxy itself: plain or TLS, always HTTP/1.1.
        let to_proxy = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let http_auth = rules.http_auth.then(|| rules.matcher.clone());
        let connector = ProxyConnector::new(
            connector,
            to_proxy,
            Arc::new(origin_tls),
            rules.matcher,
            self.https_only,
        );
        Ok(Transport::Proxied {
            client: self.client().build(connector),
            http_auth,
        })
    }

    /// The hyper-util client builder with this configuration.
    fn client(&self) -> hyper_util::client::legacy::Builder {
        let mut client = HyperClient::builder(TokioExecutor::new());
        client
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(self.pool_idle_timeout)
            .pool_max_idle_per_host(self.pool_max_idle_per_host)
            .http2_only(self.http2_prior_knowledge);
        client
    }
}

impl ClientBuilder {
    /// Speak HTTP/2 from the first byte, without negotiating it: on plain
    /// `http://` connections (h2c, for gRPC-style and internal services
    /// that serve HTTP/2 without TLS) and on TLS ones (ALPN then offers
    /// only `h2`). A server that only speaks HTTP/1.1 then fails the
    /// attempt with a typed error. Through an HTTP proxy, `http://`
    /// requests then go to the proxy itself in HTTP/2, which few proxies
    /// accept; `https://` ones are unaffected (the tunnel's `CONNECT` is
    /// HTTP/1.1, the origin inside it speaks HTTP/2). Default: off (HTTP/2
    /// only where TLS negotiates it by ALPN; plain `http://` uses HTTP/1.1).
    ///
    /// ```
    /// let client = parapet::Client::builder()
    ///     .http2_prior_knowledge()
    ///     .build()
    ///     .unwrap();
    /// # drop(client);
    /// ```
    pub fn http2_prior_knowledge(mut self) -> Self {
        self.transport.http2_prior_knowledge = true;
        self
    }
}
