//! `OAuth2` client credentials in one builder call:
//! [`ClientBuilder::oauth2_client_credentials`](crate::ClientBuilder::oauth2_client_credentials).

use std::fmt;

use http::header::USER_AGENT;
use http::{HeaderMap, Uri};
use parapet_auth::{AuthLayer, ClientAuth, ClientCredentialsGrant, SecretString, TokenCache};

use crate::builder::ClientBuilder;
use crate::error::InvalidConfig;

/// A service's own `OAuth2` token (the client-credentials grant, RFC 6749
/// §4.4), fetched once for every caller, refreshed ahead of its expiry and
/// replaced once after a 401: what
/// [`ClientBuilder::oauth2`](crate::ClientBuilder::oauth2) puts on every
/// request.
///
/// [`ClientBuilder::oauth2_client_credentials`](crate::ClientBuilder::oauth2_client_credentials)
/// is the short form without a scope or an audience. The token requests go
/// through a client built from the same settings (TLS roots, client
/// certificate, proxies, timeouts, retries, throttle) without the auth layer
/// they feed, the rate limit and the concurrency limit, and with no default
/// header but `User-Agent`. A token URL may be relative to the base URL.
///
/// The secret is a [`SecretString`]: `Debug` shows it as `REDACTED`, and
/// so is a password in the token URL.
///
/// ```
/// use parapet::ClientCredentials;
///
/// let client = parapet::Client::builder()
///     .base_url("https://api.example.com/v1")
///     .oauth2(
///         ClientCredentials::new("https://auth.example.com/oauth/token", "my-service", "s3cret")
///             .scope("orders:read orders:write")
///             .audience("https://api.example.com"),
///     )
///     .build()?;
/// # drop(client);
/// # Ok::<(), parapet::InvalidConfig>(())
/// ```
///
/// For other grants, or to tune the token cache (refresh margin, fetch
/// timeout), build an [`AuthLayer`] from the [`auth`](crate::auth) crate
/// and give it to [`ClientBuilder::auth`](crate::ClientBuilder::auth).
#[derive(Clone)]
#[must_use]
pub struct ClientCredentials {
    token_url: String,
    client_id: String,
    client_secret: SecretString,
    scope: Option<String>,
    audience: Option<String>,
    client_auth: ClientAuth,
}

impl ClientCredentials {
    /// The client `client_id` with `client_secret`, asking `token_url` for
    /// tokens. Nothing is checked until
    /// [`ClientBuilder::build`](crate::ClientBuilder::build), which refuses
    /// an empty client id, a control character in the id or the secret,
    /// and a token URL that is not an `http` or `https` URL.
    pub fn new(
        token_url: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: impl Into<SecretString>,
    ) -> Self {
        Self {
            token_url: token_url.into(),
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            scope: None,
            audience: None,
            client_auth: ClientAuth::Basic,
        }
    }

    /// The `scope` to ask for (space-separated). Default: none (the
    /// server's default scope).
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into());
        self
    }

    /// The `audience` to ask for (an extension Auth0 and Okta among others
    /// use). Default: none.
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self
    }

    /// How the client proves who it is to the token endpoint. Default:
    /// [`ClientAuth::Basic`] (HTTP Basic, which every server supports).
    pub fn client_auth(mut self, auth: ClientAuth) -> Self {
        self.client_auth = auth;
        self
    }

    /// The auth layer for `builder`'s client: the grant reaches the token
    /// endpoint through a client built from `builder` (already stripped of
    /// these credentials) over `transport`.
    pub(crate) fn layer<S, B>(
        self,
        builder: &ClientBuilder,
        transport: S,
    ) -> Result<AuthLayer, InvalidConfig>
    where
        S: tower::Service<http::Request<parapet_core::ReplayBody>, Response = http::Response<B>>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Error: Into<parapet_core::BoxError>,
        S::Future: Send + 'static,
        B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<parapet_core::BoxError>,
    {
        let token_client = token_client(builder).build_with(transport)?;
        let endpoint = token_client
            .token_endpoint(&self.token_url)
            .map_err(|e| InvalidConfig::new(format!("OAuth2 token URL: {e}")))?;
        let mut grant = ClientCredentialsGrant::new(endpoint, &self.client_id, self.client_secret)?
            .client_auth(self.client_auth);
        if let Some(scope) = self.scope {
            grant = grant.scope(scope);
        }
        if let Some(audience) = self.audience {
            grant = grant.audience(audience);
        }
        Ok(AuthLayer::token_cache(TokenCache::new(grant)))
    }
}

/// The builder of the client that fetches tokens: `builder`'s settings
/// without auth, rate limit and concurrency limit (they are for the API's
/// calls), and without default headers other than `User-Agent`: an API key
/// or an `Authorization` meant for the API must not reach the token
/// endpoint.
fn token_client(builder: &ClientBuilder) -> ClientBuilder {
    let mut token = builder.clone();
    token.oauth2 = None;
    token.layers.auth = None;
    token.layers.rate_limit = None;
    token.layers.concurrency_limit = None;
    let mut headers = HeaderMap::new();
    if let Some(agent) = builder.default_headers.get(USER_AGENT) {
        headers.insert(USER_AGENT, agent.clone());
    }
    token.default_headers = headers;
    token
}

impl fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The token URL may carry `user:password@`.
        let url = match self.token_url.parse::<Uri>() {
            Ok(uri) => parapet_trace::redact::redact_uri(&uri),
            Err(_) => "(not a valid URL)".to_owned(),
        };
        f.debug_struct("ClientCredentials")
            .field("token_url", &url)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret)
            .field("scope", &self.scope)
            .field("audience", &self.audience)
            .field("client_auth", &self.client_auth)
            .finish()
    }
}

/// A credential refused by the auth crate (an empty client id, a bearer
/// token with a newline, ...) is a configuration error like any other, so
/// that `?` needs one error type.
impl From<parapet_auth::InvalidCredential> for InvalidConfig {
    fn from(e: parapet_auth::InvalidCredential) -> Self {
        Self::new(e.to_string())
    }
}

/// So `Quota::rate(n)?` works in a function returning `InvalidConfig`.
impl From<parapet_ratelimit::InvalidQuota> for InvalidConfig {
    fn from(e: parapet_ratelimit::InvalidQuota) -> Self {
        Self::new(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use parapet_testkit::{Reply, Server};

    use super::*;
    use crate::Client;

    const TOKEN: &str = r#"{"access_token":"issued-1","token_type":"Bearer","expires_in":3600}"#;

    #[tokio::test]
    async fn one_token_fetch_serves_concurrent_calls_with_the_issued_bearer() {
        let server = Server::start().await;
        // Slow enough that every call arrives while the fetch is under way.
        server
            .on("/oauth/token")
            .reply(Reply::json(TOKEN).delay(Duration::from_millis(100)));
        server.on("/v1/things").reply(Reply::ok().body("a thing"));
        let client = Client::builder()
            .base_url(server.url("/v1"))
            .default_header("x-api-key", "for-the-api-only")
            .oauth2(
                ClientCredentials::new(server.url("/oauth/token"), "my-service", "s3cret")
                    .scope("things:read things:write")
                    .audience("https://api.test"),
            )
            .build()
            .unwrap();

        let calls = (0..16).map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.get("things").send().await })
        });
        for call in futures_util::future::join_all(calls).await {
            assert_eq!(call.unwrap().unwrap().status(), 200);
        }

        let fetches = server.arrivals_for("/oauth/token");
        assert_eq!(fetches.len(), 1);
        let fetch = &fetches[0];
        assert_eq!(fetch.method, "POST");
        // base64("my-service:s3cret")
        assert_eq!(
            fetch.header("authorization"),
            Some("Basic bXktc2VydmljZTpzM2NyZXQ=")
        );
        let form = fetch.body_text();
        assert!(form.contains("grant_type=client_credentials"), "{form}");
        assert!(
            form.contains("scope=things%3Aread+things%3Awrite"),
            "{form}"
        );
        assert!(form.contains("audience=https%3A%2F%2Fapi.test"), "{form}");
        assert_eq!(fetch.header("x-api-key"), None);
        assert!(fetch.header("user-agent").is_some());

        let calls = server.arrivals_for("/v1/things");
        assert_eq!(calls.len(), 16);
        assert!(
            calls
                .iter()
                .all(|a| a.header("authorization") == Some("Bearer issued-1"))
        );
        assert!(
            calls
                .iter()
                .all(|a| a.header("x-api-key") == Some("for-the-api-only"))
        );
    }

    #[tokio::test]
    async fn a_relative_token_url_resolves_against_the_base_url() {
        let server = Server::start().await;
        server.on("/v1/token").reply(Reply::json(TOKEN));
        server.on("/v1/things").reply(Reply::ok());
        let client = Client::builder()
            .base_url(server.url("/v1"))
            .oauth2_client_credentials("token", "my-service", "s3cret")
            .build()
            .unwrap();
        client.get("things").send().await.unwrap();
        assert_eq!(server.hits("/v1/token"), 1);
        assert_eq!(
            server.arrivals_for("/v1/things")[0].header("authorization"),
            Some("Bearer issued-1")
        );
    }

    fn build_error(builder: ClientBuilder) -> String {
        builder.build().unwrap_err().message().to_owned()
    }

    #[test]
    fn every_mistake_comes_out_of_build_as_invalid_config() {
        let base = || Client::builder().base_url("https://api.test/v1");
        let empty_id =
            build_error(base().oauth2_client_credentials("https://auth.test/token", "", "s3cret"));
        assert!(empty_id.contains("client id"), "{empty_id}");
        let newline = build_error(base().oauth2_client_credentials(
            "https://auth.test/token",
            "id",
            "s3cret\n",
        ));
        assert!(newline.contains("client secret"), "{newline}");
        let ftp = build_error(base().oauth2_client_credentials("ftp://auth.test/t", "id", "s"));
        assert!(ftp.contains("token URL"), "{ftp}");
        let no_base = build_error(Client::builder().oauth2_client_credentials("token", "id", "s"));
        assert!(no_base.contains("token URL"), "{no_base}");
        let both = build_error(
            base()
                .auth(AuthLayer::bearer("t").unwrap())
                .oauth2_client_credentials("https://auth.test/token", "id", "s"),
        );
        assert!(both.contains("oauth2"), "{both}");
    }

    #[test]
    fn a_credential_error_converts_with_question_mark() {
        fn layer() -> Result<AuthLayer, InvalidConfig> {
            Ok(AuthLayer::bearer("two\nlines")?)
        }
        assert!(layer().unwrap_err().message().contains("bearer token"));
    }

    #[test]
    fn the_secret_never_prints() {
        let builder = Client::builder().oauth2(ClientCredentials::new(
            "https://user:hunter2@auth.test/token",
            "my-service",
            "s3cret-value",
        ));
        let shown = format!("{builder:?}");
        assert!(shown.contains("my-service"), "{shown}");
        assert!(!shown.contains("s3cret-value"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
        let client = builder.build().unwrap();
        let shown = format!("{client:?}");
        assert!(!shown.contains("s3cret-value"), "{shown}");
    }
}
