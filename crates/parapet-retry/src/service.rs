//! [`Retry`]: the service.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use http_body::Body;
use parapet_core::{Attempt, BoxError, ReplayBody, clock};
use tower_service::Service;

use crate::body::RetryBody;
use crate::budget::{LastHost, Limits};
use crate::future::{Call, ResponseFuture, RetryState, host_of};
use crate::layer::{RetryLayer, Shared};
use crate::max_attempts::MaxAttempts;
use crate::policy::RetryPolicy;

/// Retries transient failures of the inner service; see the
/// [crate docs](crate).
///
/// The request body is wrapped in a [`ReplayBody`] (reusing one that is
/// already there) and the inner service sees `Request<ReplayBody>`. Cheap to
/// clone: the policy and the budget are shared.
#[derive(Debug, Clone)]
pub struct Retry<S> {
    inner: S,
    shared: Arc<Shared>,
    /// The budget's entry for the host of the last call, so that calls to
    /// one host find it without a lookup.
    last_host: LastHost,
}

impl<S> Retry<S> {
    /// Wraps `inner`, retrying by `policy`, with a budget of its own
    /// (shared by its clones).
    pub fn new(inner: S, policy: RetryPolicy) -> Self {
        Self::from_shared(inner, Shared::new(policy))
    }

    pub(crate) fn from_shared(inner: S, shared: Arc<Shared>) -> Self {
        Self {
            inner,
            shared,
            last_host: LastHost::default(),
        }
    }

    /// A layer making this service; see [`RetryLayer::new`].
    #[must_use]
    pub fn layer(policy: RetryPolicy) -> RetryLayer {
        RetryLayer::new(policy)
    }

    /// The policy.
    #[must_use]
    pub fn policy(&self) -> &RetryPolicy {
        &self.shared.policy
    }

    /// The tokens in `host`'s quota bucket, if the policy has a quota and
    /// the bucket exists.
    #[cfg(test)]
    pub(crate) fn quota_tokens(&self, host: &str) -> Option<u32> {
        match &self.shared.limits {
            Some(Limits::Quota(q)) => q.tokens(host),
            _ => None,
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, consuming this one.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B, ResBody> Service<Request<B>> for Retry<S>
where
    S: Service<Request<ReplayBody>, Response = Response<ResBody>> + Clone,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
    ResBody: Body,
{
    type Response = Response<RetryBody<S, S::Future, ResBody>>;
    type Error = BoxError;
    type Future = ResponseFuture<S, S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let shared = Arc::clone(&self.shared);
        // A per-request `MaxAttempts` replaces the policy's count (reading
        // an empty `Extensions` is one pointer test).
        let max = MaxAttempts::get(req.extensions())
            .map_or(shared.policy.max_attempts, MaxAttempts::attempts);
        let mut req = req.map(|body| ReplayBody::new(body, shared.policy.replay_cap));
        let (retry, now) = if max > 1 {
            // The time is needed by the budget and by `max_elapsed` only:
            // the reading an outer layer holds for this call's set-up, if
            // any (the deadline layer's), or one clock read.
            let now =
                (shared.limits.is_some() || shared.policy.max_elapsed.is_some()).then(clock::now);
            let bucket = match (&shared.limits, now) {
                (Some(Limits::Budget(budgets)), Some(now)) => {
                    budgets.deposit(&mut self.last_host, host_of(req.uri()), now);
                    None
                }
                // The call's bucket, found once: its success is counted
                // there with no lookup.
                (Some(Limits::Quota(quotas)), Some(now)) => {
                    Some(quotas.bucket(&mut self.last_host, host_of(req.uri()), now))
                }
                _ => None,
            };
            // NOTE: the one copy of the request head a call makes (the inner
            // service consumes the request; a retry sends a copy).
            (Some(RetryState::boxed(&req, now, max, bucket)), now)
        } else {
            (None, None)
        };
        // The first attempt carries no `Attempt` (every reader takes its
        // absence for attempt 1, and inserting into an empty map costs three
        // allocations), unless the request came with one, from an outer
        // retry layer: that one would be wrong here, so it is replaced.
        if Attempt::get(req.extensions()).is_some() {
            req.extensions_mut().insert(Attempt::new(1, max));
        }
        // The ready service makes this call; its clone stays for the next.
        let clone = self.inner.clone();
        let mut service = std::mem::replace(&mut self.inner, clone);
        // Layers beneath read the same instant for their set-up.
        let held = now.map(clock::hold);
        let future = service.call(req);
        drop(held);
        ResponseFuture::new(
            future,
            Call {
                service,
                shared,
                retry,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http::{Request, Response};
    use parapet_core::ReplayBody;
    use tower::util::BoxCloneSyncService;

    use super::*;
    use crate::{InvalidRetryPolicy, NotRetried, RetryBudget, RetryLayer};

    fn send_sync_clone<T: Send + Sync + Clone + 'static>() {}
    fn send<T: Send>(_: &T) {}

    #[test]
    fn types_can_be_shared_across_tasks() {
        type Inner = BoxCloneSyncService<Request<ReplayBody>, Response<String>, Infallible>;
        send_sync_clone::<Retry<Inner>>();
        send_sync_clone::<RetryLayer>();
        send_sync_clone::<RetryPolicy>();
        send_sync_clone::<RetryBudget>();
        send_sync_clone::<NotRetried>();
        send_sync_clone::<InvalidRetryPolicy>();
    }

    #[tokio::test]
    async fn the_response_future_is_send() {
        let inner = tower::service_fn(|_: Request<ReplayBody>| async {
            Ok::<_, Infallible>(Response::new(String::new()))
        });
        let mut retry = Retry::new(inner, RetryPolicy::default());
        let fut = retry.call(Request::new(String::from("body")));
        send(&fut);
        assert_eq!(fut.await.unwrap().status(), http::StatusCode::OK);
    }

    #[test]
    fn accessors_reach_the_inner_service() {
        let mut retry = Retry::new(7u8, RetryPolicy::default());
        *retry.get_mut() += 1;
        assert_eq!(*retry.get_ref(), 8);
        assert_eq!(retry.policy().max_attempts(), 3);
        assert_eq!(retry.into_inner(), 8);
        let layer = Retry::<u8>::layer(RetryPolicy::default());
        assert_eq!(layer.policy().max_attempts(), 3);
    }

    #[test]
    fn the_common_future_carries_no_wait_state() {
        // One attempt that succeeds is the common case: its future holds the
        // attempt's future, the service, the policy and a pointer to the
        // copy of the request head, and nothing for the wait between
        // attempts (a timer, a response body, a request), which is boxed
        // when a retry happens.
        type F = std::future::Ready<Result<Response<String>, Infallible>>;
        let size = size_of::<ResponseFuture<(), F, String>>();
        // 16 bytes on 64-bit targets: the policy's `Arc` and the head's box.
        assert!(size <= size_of::<F>() + 24, "{size} bytes");
    }

    #[tokio::test]
    async fn debug_shows_the_budget_size_not_its_hosts() {
        let inner = tower::service_fn(|_: Request<ReplayBody>| async {
            Ok::<_, Infallible>(Response::new(String::new()))
        });
        let mut retry = Retry::new(inner, RetryPolicy::default());
        let req = Request::get("http://user:pw@api.test/").body(String::new());
        retry.call(req.unwrap()).await.unwrap();
        let debug = format!("{retry:?}");
        assert!(debug.contains("hosts: 1"), "{debug}");
        assert!(
            !debug.contains("api.test") && !debug.contains("pw"),
            "{debug}"
        );
    }
}
