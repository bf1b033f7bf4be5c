//! The layers of the recommended stack, in DESIGN.md's order.

use std::error::Error as StdError;
use std::time::Duration;

use http_body_util::BodyExt;
use parapet_core::{BoxError, ReplayBody};
use tower::ServiceExt;
use tower::util::BoxCloneSyncService;

use crate::body::Body;
use crate::client::Stack;
use crate::error::{InvalidConfig, Kind};

/// The configuration of every layer.
#[derive(Debug, Clone)]
pub(crate) struct LayerConfig {
    pub(crate) attempt_timeout: Option<Duration>,
    pub(crate) deadline: Option<Duration>,
}

impl Default for LayerConfig {
    fn default() -> Self {
        Self {
            attempt_timeout: Some(Duration::from_secs(10)),
            deadline: Some(Duration::from_secs(30)),
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
        let svc = transport
            .map_response(|r: http::Response<B>| r.map(|b| Body::new(b.map_err(Into::into))))
            .map_err(Into::into);
        Ok(BoxCloneSyncService::new(svc))
    }
}

/// What a layer's own error type says happened, if `e` is one.
pub(crate) fn layer_kind(e: &(dyn StdError + 'static)) -> Option<(Kind, Option<Duration>)> {
    let _ = e;
    None
}
