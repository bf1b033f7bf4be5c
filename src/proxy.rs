//! Proxies: explicit ones on the builder, or `HTTP_PROXY`, `HTTPS_PROXY`,
//! `ALL_PROXY` and `NO_PROXY` from the environment. The user-facing
//! account is on [`Proxy`].

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Uri;
use http::header::{HeaderValue, PROXY_AUTHORIZATION};
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_rustls::{
    DefaultServerNameResolver, HttpsConnector, MaybeHttpsStream, ResolveServerName,
};
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::TokioIo;
use parapet_core::BoxError;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use tokio::net::TcpStream;

use crate::builder::ClientBuilder;
use crate::error::InvalidConfig;

/// Which destinations a [`Proxy`] is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    All,
    Http,
    Https,
}

/// A proxy to send requests through, for [`ClientBuilder::proxy`]; without
/// one, the client reads `HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY` and
/// `NO_PROXY` (see [`ClientBuilder::proxy_from_env`]).
///
/// Its URL is `http://host:port` (or `https://` for a proxy reached over
/// TLS; a URL without a scheme means `http://`). Credentials come from the
/// URL's `user:password@` (percent-encoded) or from
/// [`basic_auth`](Self::basic_auth), and are sent as a sensitive
/// `Proxy-Authorization: Basic` header to the proxy only. `Debug` never
/// shows them.
///
/// # Where it sits
///
/// Below every layer, in the connector of the hyper-util client. The
/// layers see the request as the caller made it (its URL is the origin's,
/// never the proxy's), so retries, the deadline, the throttle and the
/// per-host limits all work per origin; only the connection goes through
/// the proxy.
///
/// - A destination the rules leave out (no proxy for its scheme, or a
///   [`no_proxy`](ClientBuilder::no_proxy) / `NO_PROXY` match) is
///   connected to directly. A client with no proxy at all uses the same
///   connector as one built without proxy support.
/// - An `http://` destination is sent to the proxy in absolute form
///   (`GET http://host/path HTTP/1.1`), with `Proxy-Authorization` when the
///   proxy has credentials.
/// - An `https://` destination goes through a `CONNECT host:port` tunnel
///   (with `Proxy-Authorization` on the `CONNECT` only), then TLS to the
///   origin inside the tunnel: the proxy sees neither the request nor the
///   credentials meant for the origin.
///
/// The rules are hyper-util's:
/// [`Matcher`](hyper_util::client::proxy::matcher::Matcher) decides which
/// proxy a destination takes (curl's `NO_PROXY` rules), and
/// [`Tunnel`](hyper_util::client::legacy::connect::proxy::Tunnel) speaks
/// `CONNECT`. SOCKS proxies are not supported.
///
/// # Errors on the way
///
/// A proxy that cannot be reached or that refuses the tunnel (a `407` or
/// `403` to the `CONNECT`) fails the attempt with a connect error
/// ([`Error::is_connect`](crate::Error::is_connect)) whose source chain
/// holds a [`ProxyError`]. The request never reached the origin, so the
/// retry policy sends it again, whatever its method, up to its attempts,
/// as for any connect error. A proxy that accepts the `CONNECT` and then
/// stalls is bounded by the attempt timeout, as a TLS handshake is.
///
/// ```
/// let proxy = parapet::Proxy::all("http://proxy.internal:3128")
///     .unwrap()
///     .basic_auth("svc-orders", "hunter2");
/// assert!(!format!("{proxy:?}").contains("hunter2"));
///
/// let client = parapet::Client::builder()
///     .proxy(proxy)
///     .no_proxy("localhost, .internal, 10.0.0.0/8")
///     .build()
///     .unwrap();
/// # drop(client);
///
/// // A URL that does not parse is a typed error that never echoes it.
/// let err = parapet::Proxy::all("http://user:secret@[not a host").unwrap_err();
/// assert!(!err.message().contains("secret"));
/// ```
#[derive(Clone)]
pub struct Proxy {
    scope: Scope,
    uri: Uri,
    basic: Option<(String, String)>,
}

impl Proxy {
    /// A proxy for every destination, `http` and `https`.
    ///
    /// # Errors
    ///
    /// When the URL does not parse, has no host, or names a scheme other
    /// than `http` or `https`.
    pub fn all(url: impl AsRef<str>) -> Result<Self, InvalidConfig> {
        Self::new(Scope::All, url.as_ref())
    }

    /// A proxy for `http://` destinations only.
    ///
    /// # Errors
    ///
    /// As [`all`](Self::all).
    pub fn http(url: impl AsRef<str>) -> Result<Self, InvalidConfig> {
        Self::new(Scope::Http, url.as_ref())
    }

    /// A proxy for `https://` destinations only (tunnelled with `CONNECT`).
    ///
    /// # Errors
    ///
    /// As [`all`](Self::all).
    pub fn https(url: impl AsRef<str>) -> Result<Self, InvalidConfig> {
        Self::new(Scope::Https, url.as_ref())
    }

    /// Credentials for the proxy, sent as `Proxy-Authorization: Basic`;
    /// they replace any `user:password@` in the URL. Default: the URL's, or
    /// none.
    #[must_use]
    pub fn basic_auth(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.basic = Some((user.into(), password.into()));
        self
    }

    fn new(scope: Scope, url: &str) -> Result<Self, InvalidConfig> {
        let uri = parse_proxy_url(url, "the URL given to Proxy")?;
        Ok(Self {
            scope,
            uri,
            basic: None,
        })
    }

    /// The URL as the matcher reads it, credentials included.
    fn matcher_value(&self) -> String {
        let scheme = self.uri.scheme_str().unwrap_or("http");
        let host_port = host_port(&self.uri);
        match &self.basic {
            Some((user, password)) => format!(
                "{scheme}://{}:{}@{host_port}",
                utf8_percent_encode(user, NON_ALPHANUMERIC),
                utf8_percent_encode(password, NON_ALPHANUMERIC),
            ),
            None => match self.uri.authority() {
                Some(authority) => format!("{scheme}://{authority}"),
                None => format!("{scheme}://{host_port}"),
            },
        }
    }

    fn has_credentials(&self) -> bool {
        self.basic.is_some()
            || self
                .uri
                .authority()
                .is_some_and(|a| a.as_str().contains('@'))
    }
}

/// `host[:port]` of a proxy URL, without its userinfo.
fn host_port(uri: &Uri) -> String {
    let host = uri.host().unwrap_or_default();
    match uri.port_u16() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    }
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let url = format!(
            "{}://{}",
            self.uri.scheme_str().unwrap_or("http"),
            host_port(&self.uri)
        );
        let mut d = f.debug_struct("Proxy");
        d.field("scope", &self.scope).field("url", &url);
        if self.has_credentials() {
            d.field("credentials", &"[redacted]");
        }
        d.finish()
    }
}

/// Checks a proxy URL the way hyper-util's matcher will read it, and says
/// what is wrong without echoing the URL (it may carry a password).
fn parse_proxy_url(url: &str, what: &str) -> Result<Uri, InvalidConfig> {
    let invalid = || InvalidConfig::new(format!("{what} is not a valid proxy URL"));
    let uri: Uri = url.trim().parse().map_err(|_| invalid())?;
    match uri.scheme_str() {
        None | Some("http" | "https") => {}
        Some(s) if s.starts_with("socks") => {
            return Err(InvalidConfig::new(format!(
                "{what}: SOCKS proxies are not supported (only http:// and https:// proxies)"
            )));
        }
        Some(_) => {
            return Err(InvalidConfig::new(format!(
                "{what}: a proxy URL's scheme must be http:// or https://"
            )));
        }
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(invalid());
    }
    // The matcher ignores what it cannot read; refuse it here instead of
    // silently sending direct.
    let probe = Uri::from_static("http://parapet.invalid/");
    let read = Matcher::builder().all(url.trim()).build().intercept(&probe);
    if read.is_none() {
        return Err(invalid());
    }
    Ok(uri)
}

/// Where environment variables are read from: the process environment, or
/// (in tests) a function, so no test has to change the process environment.
#[derive(Clone, Default)]
pub(crate) struct EnvSource(Option<Arc<EnvFn>>);

type EnvFn = dyn Fn(&str) -> Option<String> + Send + Sync;

impl EnvSource {
    fn get(&self, name: &str) -> Option<String> {
        match &self.0 {
            Some(f) => f(name),
            None => std::env::var(name).ok(),
        }
    }

    /// The first of `names` that is set and not empty, with its name.
    fn first(&self, names: &[&'static str]) -> Option<(&'static str, String)> {
        names.iter().find_map(|name| {
            self.get(name)
                .filter(|v| !v.trim().is_empty())
                .map(|v| (*name, v))
        })
    }
}

impl fmt::Debug for EnvSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "EnvSource::Custom"
        } else {
            "EnvSource::Process"
        })
    }
}

/// The proxy settings of a [`ClientBuilder`], resolved into a [`Matcher`]
/// once, at `build()`.
#[derive(Clone, Debug)]
pub(crate) struct ProxyConfig {
    proxies: Vec<Proxy>,
    no_proxy: Option<String>,
    from_env: bool,
    env: EnvSource,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            proxies: Vec::new(),
            no_proxy: None,
            from_env: true,
            env: EnvSource::default(),
        }
    }
}

/// The resolved proxy rules: `None` when no proxy applies to anything.
pub(crate) struct Rules {
    pub(crate) matcher: Arc<Matcher>,
    /// Whether an `http://` destination's proxy has credentials (then each
    /// request to such a destination carries `Proxy-Authorization`).
    pub(crate) http_auth: bool,
}

impl ProxyConfig {
    /// Reads the environment (unless explicit proxies are set or reading it
    /// is off) and builds the matcher.
    pub(crate) fn rules(&self) -> Result<Option<Rules>, InvalidConfig> {
        let mut all = String::new();
        let mut http = String::new();
        let mut https = String::new();
        let mut no = self.no_proxy.clone().unwrap_or_default();
        if !self.proxies.is_empty() {
            for proxy in &self.proxies {
                let value = proxy.matcher_value();
                match proxy.scope {
                    Scope::All => all = value,
                    Scope::Http => http = value,
                    Scope::Https => https = value,
                }
            }
        } else if self.from_env {
            let env = &self.env;
            let read = |names: &[&'static str]| -> Result<String, InvalidConfig> {
                match env.first(names) {
                    Some((name, value)) => {
                        parse_proxy_url(&value, &format!("the {name} environment variable"))?;
                        Ok(value)
                    }
                    None => Ok(String::new()),
                }
            };
            all = read(&["ALL_PROXY", "all_proxy"])?;
            // The CGI rule (httpoxy, CVE-2016-5385): under CGI a request's
            // `Proxy:` header arrives as HTTP_PROXY, so a server could pick
            // our proxy. Go and reqwest ignore it there; so do we.
            if env.get("REQUEST_METHOD").is_none() {
                http = read(&["HTTP_PROXY", "http_proxy"])?;
            }
            https = read(&["HTTPS_PROXY", "https_proxy"])?;
            if let Some((_, env_no)) = env.first(&["NO_PROXY", "no_proxy"]) {
                if !no.is_empty() {
                    no.push(',');
                }
                no.push_str(&env_no);
            }
        }
        if all.is_empty() && http.is_empty() && https.is_empty() {
            return Ok(None);
        }
        let probe = Uri::from_static("http://parapet.invalid/");
        let http_auth = Matcher::builder()
            .all(all.as_str())
            .http(http.as_str())
            .build()
            .intercept(&probe)
            .is_some_and(|i| i.basic_auth().is_some());
        let matcher = Matcher::builder()
            .all(all)
            .http(http)
            .https(https)
            .no(no)
            .build();
        Ok(Some(Rules {
            matcher: Arc::new(matcher),
            http_auth,
        }))
    }
}

impl ClientBuilder {
    /// Send requests through this proxy (see [`Proxy`]). Call it once per
    /// scope: a later proxy for the same scope replaces the earlier one,
    /// and a scoped one ([`Proxy::http`], [`Proxy::https`]) wins over
    /// [`Proxy::all`] for its scheme. Once any proxy is given here, the
    /// proxy environment variables are not read. Default: none (the
    /// environment's, see [`proxy_from_env`](Self::proxy_from_env)).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// // A loopback "proxy" that answers every request itself.
    /// let proxy = parapet_testkit::Server::start().await;
    /// proxy.on("/").reply(parapet_testkit::Reply::ok().body("from the proxy"));
    ///
    /// let client = parapet::Client::builder()
    ///     .proxy(parapet::Proxy::http(proxy.url("/")).unwrap())
    ///     .build()
    ///     .unwrap();
    /// let resp = client.get("http://api.example.invalid/").send().await.unwrap();
    /// assert_eq!(resp.text().await.unwrap(), "from the proxy");
    /// # }
    /// ```
    pub fn proxy(mut self, proxy: Proxy) -> Self {
        self.transport.proxy.proxies.push(proxy);
        self
    }

    /// Hosts connected to directly, never through a proxy, as a
    /// comma-separated list in curl's `NO_PROXY` syntax: host names and
    /// domains (`example.com` and `.example.com` both match the domain and
    /// its subdomains), IP addresses, CIDR ranges (`10.0.0.0/8`), or `*`
    /// for every host. Applies to the proxies given to
    /// [`proxy`](Self::proxy) and to those from the environment (where
    /// `NO_PROXY` is added to it). Default: none (only the environment's
    /// `NO_PROXY`).
    pub fn no_proxy(mut self, list: impl Into<String>) -> Self {
        self.transport.proxy.no_proxy = Some(list.into());
        self
    }

    /// Read the proxy environment variables once, in
    /// [`build`](Self::build): `HTTP_PROXY` for `http://` destinations,
    /// `HTTPS_PROXY` for `https://` ones, `ALL_PROXY` for both when the
    /// specific one is unset, and `NO_PROXY` for the hosts that bypass them
    /// (upper case first, then lower case; empty means unset). A value that
    /// is not a valid `http://` or `https://` proxy URL fails `build` with
    /// an [`InvalidConfig`] naming the variable (never its value).
    ///
    /// Under CGI (`REQUEST_METHOD` is set), `HTTP_PROXY` and `http_proxy`
    /// are ignored, as Go and reqwest do: there a request's `Proxy:` header
    /// would set `HTTP_PROXY` (httpoxy). Not read at all when a proxy is set
    /// with [`proxy`](Self::proxy).
    ///
    /// Default: on, as in curl, requests, httpx and reqwest.
    pub fn proxy_from_env(mut self, on: bool) -> Self {
        self.transport.proxy.from_env = on;
        self
    }

    /// Reads proxy variables from `env` instead of the process
    /// environment (tests: setting process variables in a multi-threaded
    /// test binary is unsound).
    #[cfg(test)]
    pub(crate) fn proxy_env(
        mut self,
        env: impl Fn(&str) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        self.transport.proxy.env = EnvSource(Some(Arc::new(env)));
        self
    }
}

/// Connecting through a proxy failed: the proxy could not be reached, or it
/// refused the `CONNECT` tunnel (its `407` or `403`, say). The request never
/// reached the origin.
///
/// Found in the source chain of an [`Error`](crate::Error) whose
/// [`is_connect`](crate::Error::is_connect) is true. Its `Display` names the
/// proxy without credentials.
pub struct ProxyError {
    proxy: Uri,
    source: BoxError,
}

impl ProxyError {
    /// The proxy, as `scheme://host:port/` (never with credentials).
    #[must_use]
    pub fn proxy(&self) -> &Uri {
        &self.proxy
    }
}

impl fmt::Debug for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyError")
            .field("proxy", &self.proxy)
            .field("source", &self.source)
            .finish()
    }
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "connecting through the proxy at {} failed", self.proxy)
    }
}

impl StdError for ProxyError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.source)
    }
}

type Tcp = TokioIo<TcpStream>;
type Https = HttpsConnector<HttpConnector>;
type HttpsFuture = <Https as tower::Service<Uri>>::Future;
type TunnelFuture = <HttpsConnector<Tunnel<Https>> as tower::Service<Uri>>::Future;

/// The connector of a client with proxies: per destination, direct, to an
/// HTTP proxy in absolute form, or through a `CONNECT` tunnel. A client
/// without proxies does not use it (its connector is the plain
/// [`HttpsConnector`]).
#[derive(Clone)]
pub(crate) struct ProxyConnector {
    direct: Https,
    routes: Arc<Routes>,
}

struct Routes {
    matcher: Arc<Matcher>,
    /// To the proxy itself: plain or TLS, HTTP/1.1 only (proxies are spoken
    /// to in HTTP/1.1: `CONNECT`, absolute-form requests).
    to_proxy: Https,
    /// TLS to the origin inside a tunnel, with the direct connector's ALPN.
    origin_tls: Arc<rustls::ClientConfig>,
    server_names: Arc<dyn ResolveServerName + Send + Sync>,
    https_only: bool,
}

impl ProxyConnector {
    pub(crate) fn new(
        direct: Https,
        to_proxy: Https,
        origin_tls: Arc<rustls::ClientConfig>,
        matcher: Arc<Matcher>,
        https_only: bool,
    ) -> Self {
        Self {
            direct,
            routes: Arc::new(Routes {
                matcher,
                to_proxy,
                origin_tls,
                server_names: Arc::new(DefaultServerNameResolver::default()),
                https_only,
            }),
        }
    }
}

impl tower::Service<Uri> for ProxyConnector {
    type Response = Conn;
    type Error = BoxError;
    type Future = Connecting;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.direct.poll_ready(cx)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let routes = &*self.routes;
        let Some(route) = routes.matcher.intercept(&dst) else {
            return Connecting::Direct(self.direct.call(dst));
        };
        let proxy = route.uri().clone();
        match dst.scheme_str() {
            Some("https") => {
                let mut tunnel = Tunnel::new(proxy.clone(), routes.to_proxy.clone());
                if let Some(auth) = route.basic_auth() {
                    tunnel = tunnel.with_auth(auth.clone());
                }
                let mut tls = HttpsConnector::new(
                    tunnel,
                    routes.origin_tls.clone(),
                    true,
                    routes.server_names.clone(),
                );
                Connecting::Tunnel(tls.call(dst), Some(proxy))
            }
            Some("http") if !routes.https_only => {
                Connecting::Forward(routes.to_proxy.clone().call(proxy.clone()), Some(proxy))
            }
            // Refused by the direct connector's own rules (https only).
            _ => Connecting::Direct(self.direct.call(dst)),
        }
    }
}

/// The future of [`ProxyConnector::call`].
pub(crate) enum Connecting {
    Direct(HttpsFuture),
    Forward(HttpsFuture, Option<Uri>),
    Tunnel(TunnelFuture, Option<Uri>),
}

fn proxy_error(proxy: &mut Option<Uri>, source: BoxError) -> BoxError {
    let proxy = proxy.take().unwrap_or_default();
    Box::new(ProxyError { proxy, source })
}

impl Future for Connecting {
    type Output = Result<Conn, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Every variant is a boxed future, so `Connecting` is `Unpin`.
        match self.get_mut() {
            Self::Direct(f) => f.as_mut().poll(cx).map_ok(Conn::Direct),
            Self::Forward(f, proxy) => f
                .as_mut()
                .poll(cx)
                .map(|r| r.map(Conn::Forward).map_err(|e| proxy_error(proxy, e))),
            Self::Tunnel(f, proxy) => f.as_mut().poll(cx).map(|r| {
                r.map(|s| Conn::Tunnel(Box::new(s)))
                    .map_err(|e| proxy_error(proxy, e))
            }),
        }
    }
}

/// A connection made by [`ProxyConnector`].
pub(crate) enum Conn {
    Direct(MaybeHttpsStream<Tcp>),
    /// To an HTTP proxy that takes absolute-form requests.
    Forward(MaybeHttpsStream<Tcp>),
    /// TLS to the origin inside a `CONNECT` tunnel (boxed: two TLS
    /// states would make every connection's enum twice as large).
    Tunnel(Box<MaybeHttpsStream<MaybeHttpsStream<Tcp>>>),
}

impl Connection for Conn {
    fn connected(&self) -> Connected {
        match self {
            Self::Direct(s) => s.connected(),
            // Marked proxied: hyper-util then writes requests in absolute
            // form.
            Self::Forward(s) => s.connected().proxy(true),
            Self::Tunnel(s) => s.connected(),
        }
    }
}

impl Read for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Direct(s) | Self::Forward(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tunnel(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl Write for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Direct(s) | Self::Forward(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tunnel(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Direct(s) | Self::Forward(s) => Pin::new(s).poll_flush(cx),
            Self::Tunnel(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Direct(s) | Self::Forward(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tunnel(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Direct(s) | Self::Forward(s) => s.is_write_vectored(),
            Self::Tunnel(s) => s.is_write_vectored(),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Direct(s) | Self::Forward(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tunnel(s) => Pin::new(&mut **s).poll_write_vectored(cx, bufs),
        }
    }
}

/// Adds the proxy's credentials to a request for an `http://` destination
/// that goes through a proxy (in absolute form, so the proxy reads them).
/// Requests tunnelled to `https://` destinations never carry them: the
/// `CONNECT` does.
pub(crate) fn add_proxy_authorization<B>(matcher: &Matcher, req: &mut http::Request<B>) {
    if req.uri().scheme_str() != Some("http") || req.headers().contains_key(PROXY_AUTHORIZATION) {
        return;
    }
    if let Some(route) = matcher.intercept(req.uri()) {
        if let Some(auth) = route.basic_auth() {
            let mut auth: HeaderValue = auth.clone();
            auth.set_sensitive(true);
            req.headers_mut().insert(PROXY_AUTHORIZATION, auth);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

    use std::collections::HashMap;
    use std::sync::Mutex;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + Send + Sync + 'static {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| vars.get(name).cloned()
    }

    fn config(vars: &[(&str, &str)]) -> ProxyConfig {
        ProxyConfig {
            env: EnvSource(Some(Arc::new(env(vars)))),
            ..ProxyConfig::default()
        }
    }

    fn proxy_for(rules: &Rules, url: &str) -> Option<String> {
        rules
            .matcher
            .intercept(&url.parse().unwrap())
            .map(|i| i.uri().to_string())
    }

    #[test]
    fn no_variables_means_no_proxy_at_all() {
        assert!(config(&[]).rules().unwrap().is_none());
        assert!(config(&[("HTTP_PROXY", "")]).rules().unwrap().is_none());
    }

    #[test]
    fn each_variable_applies_to_its_scheme_and_all_proxy_to_the_rest() {
        let rules = config(&[
            ("HTTPS_PROXY", "http://secure.proxy:1"),
            ("all_proxy", "http://any.proxy:2"),
        ])
        .rules()
        .unwrap()
        .unwrap();
        assert_eq!(
            proxy_for(&rules, "https://api.test/").as_deref(),
            Some("http://secure.proxy:1/")
        );
        assert_eq!(
            proxy_for(&rules, "http://api.test/").as_deref(),
            Some("http://any.proxy:2/")
        );
    }

    #[test]
    fn upper_case_wins_over_lower_case() {
        let rules = config(&[
            ("HTTP_PROXY", "http://upper:1"),
            ("http_proxy", "http://lower:1"),
        ])
        .rules()
        .unwrap()
        .unwrap();
        assert_eq!(
            proxy_for(&rules, "http://api.test/").as_deref(),
            Some("http://upper:1/")
        );
    }

    #[test]
    fn no_proxy_from_the_environment_and_the_builder_both_bypass() {
        let mut cfg = config(&[("ALL_PROXY", "http://p:1"), ("no_proxy", ".corp.test")]);
        cfg.no_proxy = Some("10.0.0.0/8".into());
        let rules = cfg.rules().unwrap().unwrap();
        assert_eq!(proxy_for(&rules, "http://db.corp.test/"), None);
        assert_eq!(proxy_for(&rules, "https://10.1.2.3/"), None);
        assert!(proxy_for(&rules, "https://api.test/").is_some());
    }

    #[test]
    fn under_cgi_http_proxy_is_ignored_and_https_proxy_kept() {
        let rules = config(&[
            ("REQUEST_METHOD", "GET"),
            ("HTTP_PROXY", "http://attacker:1"),
            ("HTTPS_PROXY", "http://corp:3128"),
        ])
        .rules()
        .unwrap()
        .unwrap();
        assert_eq!(proxy_for(&rules, "http://api.test/"), None);
        assert!(proxy_for(&rules, "https://api.test/").is_some());
    }

    #[test]
    fn an_invalid_variable_is_named_and_its_value_never_shown() {
        for bad in [
            "http://user:s3cret@[nope",
            "socks5://user:s3cret@h:1",
            "ftp://user:s3cret@h:1",
        ] {
            let err = config(&[("HTTPS_PROXY", bad)]).rules().err().unwrap();
            assert!(err.message().contains("HTTPS_PROXY"), "{err}");
            assert!(!err.to_string().contains("s3cret"), "{err}");
        }
    }

    #[test]
    fn explicit_proxies_replace_the_environment() {
        let mut cfg = config(&[("HTTP_PROXY", "http://from-env:1")]);
        cfg.proxies.push(Proxy::https("http://explicit:2").unwrap());
        let rules = cfg.rules().unwrap().unwrap();
        assert_eq!(proxy_for(&rules, "http://api.test/"), None);
        assert!(proxy_for(&rules, "https://api.test/").is_some());
        let mut off = config(&[("HTTP_PROXY", "http://from-env:1")]);
        off.from_env = false;
        assert!(off.rules().unwrap().is_none());
    }

    #[test]
    fn basic_auth_with_reserved_characters_reaches_the_header_intact() {
        let mut cfg = ProxyConfig::default();
        cfg.proxies.push(
            Proxy::all("http://p:1")
                .unwrap()
                .basic_auth("us@r", "p:a/ss%"),
        );
        let rules = cfg.rules().unwrap().unwrap();
        assert!(rules.http_auth);
        let route = rules
            .matcher
            .intercept(&"https://api.test/".parse().unwrap())
            .unwrap();
        let header = route.basic_auth().unwrap();
        assert!(header.is_sensitive());
        use base64::Engine as _;
        let expected = base64::engine::general_purpose::STANDARD.encode("us@r:p:a/ss%");
        assert_eq!(header.to_str().unwrap(), format!("Basic {expected}"));
        assert_eq!(route.uri().to_string(), "http://p:1/");
    }

    #[test]
    fn debug_never_shows_credentials() {
        let cfg = config(&[("HTTP_PROXY", "http://u:s3cret@p:1")]);
        let with_url = Proxy::all("http://u:s3cret@p:1").unwrap();
        let with_auth = Proxy::all("p:1").unwrap().basic_auth("u", "s3cret");
        for text in [
            format!("{cfg:?}"),
            format!("{with_url:?}"),
            format!("{with_auth:?}"),
            format!(
                "{:?}",
                crate::Client::builder()
                    .proxy(with_auth.clone())
                    .proxy_env(env(&[("HTTP_PROXY", "http://u:s3cret@p:1")]))
            ),
        ] {
            assert!(!text.contains("s3cret"), "{text}");
        }
        assert!(format!("{with_auth:?}").contains("redacted"));
    }

    /// A one-shot forward "proxy" that answers every request itself and
    /// records the request lines it saw.
    async fn answering_proxy() -> (u16, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let record = record.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        match tcp.read(&mut byte).await {
                            Ok(1) => head.push(byte[0]),
                            _ => return,
                        }
                    }
                    let line = String::from_utf8_lossy(&head);
                    let line = line.lines().next().unwrap_or_default().to_owned();
                    record.lock().unwrap().push(line);
                    let _ = tcp
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nproxy")
                        .await;
                });
            }
        });
        (port, seen)
    }

    #[tokio::test]
    async fn http_proxy_from_the_environment_carries_http_requests() {
        let (port, seen) = answering_proxy().await;
        let client = crate::Client::builder()
            .proxy_env(env(&[("HTTP_PROXY", &format!("127.0.0.1:{port}"))]))
            .retry_off()
            .build()
            .unwrap();
        let resp = client
            .get("http://origin.invalid:8080/path?q=1")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.text().await.unwrap(), "proxy");
        assert_eq!(
            seen.lock().unwrap().as_slice(),
            ["GET http://origin.invalid:8080/path?q=1 HTTP/1.1"]
        );
    }

    #[tokio::test]
    async fn no_proxy_from_the_environment_sends_direct() {
        let (port, seen) = answering_proxy().await;
        let origin = parapet_testkit::Server::start().await;
        origin.on("/direct").reply(parapet_testkit::Reply::ok());
        let client = crate::Client::builder()
            .proxy_env(env(&[
                ("http_proxy", &format!("http://127.0.0.1:{port}")),
                ("NO_PROXY", "localhost,127.0.0.1"),
            ]))
            .retry_off()
            .build()
            .unwrap();
        let resp = client.get(&origin.url("/direct")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(origin.hits("/direct"), 1);
        assert!(seen.lock().unwrap().is_empty());
    }
}
