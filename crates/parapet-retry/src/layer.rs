//! [`RetryLayer`]: the configuration, shared by every service it makes.

use std::sync::Arc;

use tower_layer::Layer;

use crate::budget::{Budgets, Limits};
use crate::policy::RetryPolicy;
use crate::quota::Quotas;
use crate::service::Retry;

/// State shared by a layer, its services and all their clones.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) policy: RetryPolicy,
    pub(crate) limits: Option<Limits>,
}

impl Shared {
    pub(crate) fn new(policy: RetryPolicy) -> Arc<Self> {
        Arc::new(Self {
            limits: match (policy.budget, policy.quota) {
                (_, Some(quota)) => Some(Limits::Quota(Quotas::new(quota))),
                (Some(budget), None) => Some(Limits::Budget(Budgets::new(budget))),
                (None, None) => None,
            },
            policy,
        })
    }
}

/// Applies [`Retry`] to a service.
///
/// Every service this layer makes, and every clone of them, shares one
/// [retry budget](crate::RetryBudget).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use std::convert::Infallible;
/// use http::{Request, Response, StatusCode};
/// use parapet_core::ReplayBody;
/// use parapet_retry::{RetryLayer, RetryPolicy};
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
///
/// let policy = RetryPolicy::builder().max_attempts(2).build().unwrap();
/// let client = ServiceBuilder::new()
///     .layer(RetryLayer::new(policy))
///     .service(service_fn(|_req: Request<ReplayBody>| async {
///         Ok::<_, Infallible>(Response::new(String::from("hello")))
///     }));
/// let res = client.oneshot(Request::get("http://api.test/").body(String::new()).unwrap()).await.unwrap();
/// assert_eq!(res.status(), StatusCode::OK);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct RetryLayer {
    pub(crate) shared: Arc<Shared>,
}

impl RetryLayer {
    /// A layer retrying by `policy`.
    #[must_use]
    pub fn new(policy: RetryPolicy) -> Self {
        Self {
            shared: Shared::new(policy),
        }
    }

    /// The policy.
    #[must_use]
    pub fn policy(&self) -> &RetryPolicy {
        &self.shared.policy
    }
}

impl Default for RetryLayer {
    /// A layer with [`RetryPolicy::default`].
    fn default() -> Self {
        Self::new(RetryPolicy::default())
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = Retry<S>;

    fn layer(&self, inner: S) -> Retry<S> {
        Retry::from_shared(inner, Arc::clone(&self.shared))
    }
}
