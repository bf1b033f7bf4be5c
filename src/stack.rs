//! The layers of the recommended stack, in DESIGN.md's order.

use std::error::Error as StdError;
use std::time::Duration;

use parapet_core::{BoxError, ReplayBody};
use parapet_timeout::{AttemptTimeoutLayer, DeadlineLayer};
use tower::util::BoxCloneSyncService;
use tower::{ServiceBuilder, ServiceExt};

use crate::body::Body;
use crate::client::Stack;
use crate::error::{InvalidConfig, Kind};
use crate::optional::Optional;

/// The configuration of every layer.
#[derive(Debug, Clone)]
pub(crate) struct LayerConfig {
    pub(crate) attempt_timeout: Option<Duration>,
    pub(crate) deadline: Option<Duration>,
    pub(crate) body_idle_timeout: Option<Duration>,
}

impl Default for LayerConfig {
    fn default() -> Self {
        Self {
            attempt_timeout: Some(Duration::from_secs(10)),
            deadline: Some(Duration::from_secs(30)),
            body_idle_timeout: None,
        }
    }
}

impl LayerConfig {
    pub(crate) fn assemble<S, B>(&self, transport: S) -> Result<Stack, InvalidConfig>
    where
        S: tower::Service<http::Request<ReplayBody>, Response = http::Response<B>>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
        B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        if let (Some(a), Some(d)) = (self.attempt_timeout, self.deadline) {
            if a > d {
                return Err(InvalidConfig::new(format!(
                    "attempt timeout ({a:?}) is longer than the deadline ({d:?})"
                )));
            }
        }
        let attempt = self
            .attempt_timeout
            .map(|limit| AttemptTimeoutLayer::new(limit).body_idle_timeout(self.body_idle_timeout));
        let svc = ServiceBuilder::new()
            .layer(Optional(self.deadline.map(DeadlineLayer::new)))
            .layer(Optional(attempt))
            .service(transport)
            .map_response(|r| r.map(Body::new));
        Ok(BoxCloneSyncService::new(svc))
    }
}

/// What a layer's own error type says happened, if `e` is one.
pub(crate) fn layer_kind(e: &(dyn StdError + 'static)) -> Option<(Kind, Option<Duration>)> {
    use parapet_timeout::{AttemptTimedOut, BodyTimedOut, DeadlineExceeded};
    if e.is::<DeadlineExceeded>() || e.is::<AttemptTimedOut>() || e.is::<BodyTimedOut>() {
        return Some((Kind::Timeout, None));
    }
    None
}
