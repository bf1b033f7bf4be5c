//! [`CircuitBreaker`]: the service.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use parapet_core::BoxError;
use tower_layer::Layer;
use tower_service::Service;

use crate::future::ResponseFuture;
use crate::layer::CircuitBreakerLayer;
use crate::policy::{CircuitPolicy, InvalidCircuitPolicy};
use crate::state::Shared;
use parapet_core::authority::Target;

/// Fails calls fast while their authority's circuit is open; made by
/// [`CircuitBreakerLayer`]. See the [crate docs](crate) for the rules.
///
/// Cloning is cheap: the circuits are behind an `Arc`, shared with every
/// clone.
#[derive(Debug, Clone)]
pub struct CircuitBreaker<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> CircuitBreaker<S> {
    /// Wraps `inner` in a breaker with `policy` and circuits of its own.
    ///
    /// # Errors
    ///
    /// [`InvalidCircuitPolicy`], as [`CircuitBreakerLayer::new`].
    pub fn new(inner: S, policy: CircuitPolicy) -> Result<Self, InvalidCircuitPolicy> {
        Ok(CircuitBreakerLayer::new(policy)?.layer(inner))
    }

    /// A layer with `policy`; same as [`CircuitBreakerLayer::new`].
    ///
    /// # Errors
    ///
    /// [`InvalidCircuitPolicy`], as [`CircuitBreakerLayer::new`].
    pub fn layer(policy: CircuitPolicy) -> Result<CircuitBreakerLayer, InvalidCircuitPolicy> {
        CircuitBreakerLayer::new(policy)
    }

    pub(crate) fn from_shared(inner: S, shared: Arc<Shared>) -> Self {
        Self { inner, shared }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// How many authorities the breaker holds state for now; see
    /// [`CircuitBreakerLayer::tracked_authorities`].
    #[must_use]
    pub fn tracked_authorities(&self) -> usize {
        self.shared.tracked()
    }
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for CircuitBreaker<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    S::Error: Into<BoxError>,
{
    type Response = Response<ResB>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let target = Target::of(&req);
        match self.shared.admit(&target) {
            Ok(ticket) => ResponseFuture::called(
                self.inner.call(req),
                Arc::clone(&self.shared),
                target,
                ticket,
            ),
            // NOTE: the inner service was driven ready and is not called;
            // the readiness is simply not used (the hyper-util client, and
            // every parapet layer, reserves nothing in `poll_ready`).
            Err(open) => ResponseFuture::refused(open),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error;
    use std::num::{NonZeroU32, NonZeroUsize};
    use std::sync::Mutex;
    use std::time::{Duration, SystemTime};

    use parapet_core::FailFast;
    use tokio::time::{Instant, advance, sleep};
    use tower::{ServiceExt, service_fn};

    use super::*;
    use crate::{CircuitOpen, OpenedBy, Outcome, Verdict, default_classifier};

    type Arrivals = Arc<Mutex<Vec<String>>>;

    /// What the stand-in server does with one request: wait, then answer
    /// or fail.
    struct Answer {
        after: Duration,
        result: Result<Response<()>, BoxError>,
    }

    fn status(code: u16) -> Answer {
        Answer {
            after: Duration::ZERO,
            result: Ok(Response::builder().status(code).body(()).unwrap()),
        }
    }

    fn with_retry_after(code: u16, retry_after: &str) -> Answer {
        Answer {
            after: Duration::ZERO,
            result: Ok(Response::builder()
                .status(code)
                .header("retry-after", retry_after)
                .body(())
                .unwrap()),
        }
    }

    fn reset() -> Answer {
        Answer {
            after: Duration::ZERO,
            result: Err(Box::new(std::io::Error::from(
                std::io::ErrorKind::ConnectionReset,
            ))),
        }
    }

    impl Answer {
        fn after(mut self, wait: Duration) -> Self {
            self.after = wait;
            self
        }
    }

    /// A stand-in server: records each request's host as it arrives and
    /// answers with `script(request, its number among all arrivals)`.
    fn server(
        arrivals: &Arrivals,
        script: impl Fn(&Request<()>, usize) -> Answer + Send + Sync + 'static,
    ) -> impl Service<Request<()>, Response = Response<()>, Error = BoxError, Future: Send>
    + Clone
    + Send
    + 'static {
        let arrivals = Arc::clone(arrivals);
        let script = Arc::new(script);
        service_fn(move |req: Request<()>| {
            let mut log = arrivals.lock().unwrap();
            let answer = script(&req, log.len());
            log.push(req.uri().host().unwrap_or_default().to_owned());
            async move {
                sleep(answer.after).await;
                answer.result
            }
        })
    }

    fn hits(arrivals: &Arrivals) -> usize {
        arrivals.lock().unwrap().len()
    }

    fn get(uri: &str) -> Request<()> {
        Request::get(uri).body(()).unwrap()
    }

    const A: &str = "http://a.example/";

    fn consecutive(n: u32) -> CircuitPolicy {
        CircuitPolicy::consecutive_failures(NonZeroU32::new(n).unwrap())
    }

    async fn call<S>(svc: &S, uri: &str) -> Result<Response<()>, BoxError>
    where
        S: Service<Request<()>, Response = Response<()>, Error = BoxError> + Clone,
    {
        svc.clone().oneshot(get(uri)).await
    }

    /// The call's status, or the refusal it got (panics on anything else).
    async fn status_of<S>(svc: &S, uri: &str) -> Result<u16, CircuitOpen>
    where
        S: Service<Request<()>, Response = Response<()>, Error = BoxError> + Clone,
    {
        match call(svc, uri).await {
            Ok(res) => Ok(res.status().as_u16()),
            Err(e) => Err(e.downcast_ref::<CircuitOpen>().cloned().unwrap_or_else(|| {
                panic!("not a CircuitOpen: {e}");
            })),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_n_consecutive_failures_and_fails_fast_until_it_reopens() {
        let arrivals = Arrivals::default();
        let svc =
            CircuitBreaker::new(server(&arrivals, |_, _| status(500)), consecutive(3)).unwrap();
        let start = Instant::now();

        for _ in 0..3 {
            assert_eq!(status_of(&svc, A).await.unwrap(), 500);
        }
        assert_eq!(hits(&arrivals), 3);

        let open = status_of(&svc, A).await.unwrap_err();
        assert_eq!(open.reopens_at(), start + Duration::from_secs(30));
        assert_eq!(open.retry_after(), Duration::from_secs(30));
        assert_eq!(open.opened_by(), OpenedBy::Failures);
        assert!(!open.is_probing());
        assert_eq!(open.authority(), "http://a.example:80");

        advance(Duration::from_secs(10)).await;
        let open = status_of(&svc, A).await.unwrap_err();
        assert_eq!(open.reopens_at(), start + Duration::from_secs(30));
        assert_eq!(open.retry_after(), Duration::from_secs(20));
        let mark = open.source().unwrap().downcast_ref::<FailFast>().unwrap();
        assert_eq!(mark.retry_after(), Some(Duration::from_secs(20)));
        assert_eq!(
            hits(&arrivals),
            3,
            "a refused call never reaches the server"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_in_between_starts_the_count_again() {
        let arrivals = Arrivals::default();
        let codes = [500, 500, 404, 500, 500, 200, 500, 500, 500];
        let script = move |_: &Request<()>, n: usize| status(codes.get(n).copied().unwrap_or(200));
        let svc = CircuitBreaker::new(server(&arrivals, script), consecutive(3)).unwrap();

        for want in codes {
            assert_eq!(status_of(&svc, A).await.unwrap(), want);
        }
        // Only the last three were in a row.
        assert!(status_of(&svc, A).await.is_err());
        assert_eq!(hits(&arrivals), codes.len());
    }

    #[tokio::test(start_paused = true)]
    async fn errors_and_gateway_statuses_count_and_pass_through_unchanged() {
        let arrivals = Arrivals::default();
        let script = |_: &Request<()>, n: usize| match n {
            0 => reset(),
            1 => status(502),
            2 => status(504),
            _ => status(503),
        };
        let svc = CircuitBreaker::new(server(&arrivals, script), consecutive(4)).unwrap();

        let err = call(&svc, A).await.unwrap_err();
        let io = err.downcast_ref::<std::io::Error>().unwrap();
        assert_eq!(io.kind(), std::io::ErrorKind::ConnectionReset);
        for want in [502, 504, 503] {
            assert_eq!(status_of(&svc, A).await.unwrap(), want);
        }
        assert!(status_of(&svc, A).await.is_err());
        assert_eq!(hits(&arrivals), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn failure_rate_waits_for_min_calls() {
        let arrivals = Arrivals::default();
        let svc = CircuitBreaker::new(
            server(&arrivals, |_, _| status(500)),
            CircuitPolicy::failure_rate(50, Duration::from_secs(10), NonZeroU32::new(4).unwrap()),
        )
        .unwrap();

        for _ in 0..3 {
            assert_eq!(status_of(&svc, A).await.unwrap(), 500);
        }
        // 3 of 3 failed, but 3 calls are too few to judge; the 4th trips it.
        assert_eq!(status_of(&svc, A).await.unwrap(), 500);
        let open = status_of(&svc, A).await.unwrap_err();
        assert_eq!(open.opened_by(), OpenedBy::Failures);
        assert_eq!(hits(&arrivals), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn failure_rate_trips_at_the_percentage() {
        let arrivals = Arrivals::default();
        // 4 successes, then failures: 3 of 7 (43 %) is below 50 %, 4 of 8 is not.
        let script = |_: &Request<()>, n: usize| status(if n < 4 { 200 } else { 500 });
        let svc = CircuitBreaker::new(
            server(&arrivals, script),
            CircuitPolicy::failure_rate(50, Duration::from_secs(10), NonZeroU32::new(4).unwrap()),
        )
        .unwrap();

        for _ in 0..7 {
            status_of(&svc, A).await.unwrap();
        }
        assert_eq!(status_of(&svc, A).await.unwrap(), 500);
        assert!(status_of(&svc, A).await.is_err());
        assert_eq!(hits(&arrivals), 8);
    }

    #[tokio::test(start_paused = true)]
    async fn failure_rate_forgets_calls_older_than_the_window() {
        let arrivals = Arrivals::default();
        let svc = CircuitBreaker::new(
            server(&arrivals, |_, _| status(500)),
            CircuitPolicy::failure_rate(50, Duration::from_secs(10), NonZeroU32::new(4).unwrap()),
        )
        .unwrap();

        for _ in 0..3 {
            status_of(&svc, A).await.unwrap();
        }
        // Those three leave the window; three more are again too few.
        advance(Duration::from_secs(11)).await;
        for _ in 0..3 {
            assert_eq!(status_of(&svc, A).await.unwrap(), 500);
        }
        assert_eq!(status_of(&svc, A).await.unwrap(), 500);
        assert!(status_of(&svc, A).await.is_err());
        assert_eq!(hits(&arrivals), 7);
    }

    /// Trips the circuit of `A` (n = 1), waits out `open_for` (5 s), and
    /// returns the breaker.
    async fn half_open(
        arrivals: &Arrivals,
        script: impl Fn(&Request<()>, usize) -> Answer + Send + Sync + 'static,
    ) -> CircuitBreaker<
        impl Service<Request<()>, Response = Response<()>, Error = BoxError, Future: Send>
        + Clone
        + Send
        + 'static,
    > {
        let policy = consecutive(1).open_for(Duration::from_secs(5));
        let svc = CircuitBreaker::new(server(arrivals, script), policy).unwrap();
        assert_eq!(status_of(&svc, A).await.unwrap(), 500);
        assert!(status_of(&svc, A).await.is_err());
        advance(Duration::from_secs(5)).await;
        svc
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_lets_exactly_one_probe_through_among_50_callers() {
        let arrivals = Arrivals::default();
        let script = |_: &Request<()>, n: usize| {
            if n == 0 {
                status(500)
            } else {
                status(200).after(Duration::from_secs(1))
            }
        };
        let svc = half_open(&arrivals, script).await;

        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let svc = svc.clone();
                tokio::spawn(async move { status_of(&svc, A).await })
            })
            .collect();
        let mut ok = 0;
        let mut probing = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(code) => {
                    assert_eq!(code, 200);
                    ok += 1;
                }
                Err(open) => {
                    assert!(open.is_probing(), "{open}");
                    assert_eq!(open.retry_after(), Duration::ZERO);
                    probing += 1;
                }
            }
        }
        assert_eq!((ok, probing), (1, 49));
        assert_eq!(hits(&arrivals), 2, "the trip and one probe");

        // The probe succeeded: the circuit is closed and forgotten.
        for _ in 0..10 {
            assert_eq!(status_of(&svc, A).await.unwrap(), 200);
        }
        assert_eq!(hits(&arrivals), 12);
        assert_eq!(svc.tracked_authorities(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_reopens_for_open_for() {
        let arrivals = Arrivals::default();
        let svc = half_open(&arrivals, |_, _| status(500)).await;
        let probed_at = Instant::now();

        assert_eq!(status_of(&svc, A).await.unwrap(), 500);
        let open = status_of(&svc, A).await.unwrap_err();
        assert_eq!(open.reopens_at(), probed_at + Duration::from_secs(5));
        assert_eq!(open.opened_by(), OpenedBy::Failures);
        assert_eq!(hits(&arrivals), 2);

        // And probes again once that is over.
        advance(Duration::from_secs(5)).await;
        assert_eq!(status_of(&svc, A).await.unwrap(), 500);
        assert_eq!(hits(&arrivals), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_answered_with_retry_after_reopens_for_that_long() {
        let arrivals = Arrivals::default();
        let script = |_: &Request<()>, n: usize| {
            if n == 0 {
                status(500)
            } else {
                with_retry_after(503, "2")
            }
        };
        let svc = half_open(&arrivals, script).await;
        let probed_at = Instant::now();

        assert_eq!(status_of(&svc, A).await.unwrap(), 503);
        let open = status_of(&svc, A).await.unwrap_err();
        assert_eq!(open.reopens_at(), probed_at + Duration::from_secs(2));
        assert_eq!(open.opened_by(), OpenedBy::Server);
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_probe_frees_the_slot_for_the_next_call() {
        let arrivals = Arrivals::default();
        let script = |_: &Request<()>, n: usize| match n {
            0 => status(500),
            1 => status(200).after(Duration::from_secs(3600)),
            _ => status(200),
        };
        let svc = half_open(&arrivals, script).await;

        let mut probe = Box::pin(call(&svc, A));
        let gave_up = tokio::time::timeout(Duration::from_millis(10), &mut probe).await;
        assert!(gave_up.is_err(), "the probe is still waiting");
        assert_eq!(hits(&arrivals), 2);
        // While it lives, nobody else probes.
        assert!(status_of(&svc, A).await.unwrap_err().is_probing());

        drop(probe);
        assert_eq!(status_of(&svc, A).await.unwrap(), 200);
        assert_eq!(hits(&arrivals), 3);
        assert_eq!(status_of(&svc, A).await.unwrap(), 200);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_seconds_open_the_circuit_for_exactly_that_long() {
        let arrivals = Arrivals::default();
        let script = |_: &Request<()>, n: usize| {
            if n == 0 {
                with_retry_after(503, "7")
            } else {
                status(200)
            }
        };
        let svc = CircuitBreaker::new(server(&arrivals, script), consecutive(5)).unwrap();
        let start = Instant::now();

        // The server's answer comes back unchanged.
        let res = call(&svc, A).await.unwrap();
        assert_eq!(res.status(), 503);
        assert_eq!(res.headers()["retry-after"], "7");

        let open = status_of(&svc, A).await.unwrap_err();
        assert_eq!(open.reopens_at(), start + Duration::from_secs(7));
        assert_eq!(open.opened_by(), OpenedBy::Server);
        advance(Duration::from_millis(6999)).await;
        assert!(status_of(&svc, A).await.is_err());
        assert_eq!(hits(&arrivals), 1);

        advance(Duration::from_millis(1)).await;
        assert_eq!(status_of(&svc, A).await.unwrap(), 200);
        assert_eq!(status_of(&svc, A).await.unwrap(), 200);
        assert_eq!(hits(&arrivals), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_opens_only_with_retry_after() {
        let arrivals = Arrivals::default();
        let script = |_: &Request<()>, n: usize| {
            if n < 10 {
                status(429)
            } else {
                with_retry_after(429, "3")
            }
        };
        let svc = CircuitBreaker::new(server(&arrivals, script), consecutive(2)).unwrap();

        for _ in 0..10 {
            assert_eq!(status_of(&svc, A).await.unwrap(), 429);
        }
        assert_eq!(status_of(&svc, A).await.unwrap(), 429);
        let open = status_of(&svc, A).await.unwrap_err();
        assert_eq!(open.retry_after(), Duration::from_secs(3));
        assert_eq!(hits(&arrivals), 11);
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_after_date_opens_the_circuit_until_that_date() {
        let arrivals = Arrivals::default();
        let date = parapet_core::fmt_http_date(SystemTime::now() + Duration::from_secs(20));
        let script = move |_: &Request<()>, _: usize| with_retry_after(503, &date);
        let svc = CircuitBreaker::new(server(&arrivals, script), consecutive(5)).unwrap();

        assert_eq!(status_of(&svc, A).await.unwrap(), 503);
        let open = status_of(&svc, A).await.unwrap_err();
        // A date has whole seconds: the wait is 19 s and a fraction to 20 s.
        let wait = open.retry_after();
        assert!(
            wait > Duration::from_secs(18) && wait <= Duration::from_secs(20),
            "{wait:?}"
        );
        assert_eq!(open.opened_by(), OpenedBy::Server);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_clamped_to_max_server_wait() {
        let arrivals = Arrivals::default();
        let script = |_: &Request<()>, _: usize| with_retry_after(503, "86400");
        let policy = consecutive(5).max_server_wait(Duration::from_secs(60));
        let svc = CircuitBreaker::new(server(&arrivals, script), policy).unwrap();

        status_of(&svc, A).await.unwrap();
        let open = status_of(&svc, A).await.unwrap_err();
        assert_eq!(open.retry_after(), Duration::from_secs(60));

        // With the hints off, the same answer is only a failure.
        let arrivals = Arrivals::default();
        let policy = consecutive(2).max_server_wait(Duration::ZERO);
        let svc = CircuitBreaker::new(server(&arrivals, script), policy).unwrap();
        assert_eq!(status_of(&svc, A).await.unwrap(), 503);
        assert_eq!(status_of(&svc, A).await.unwrap(), 503);
        assert_eq!(
            status_of(&svc, A).await.unwrap_err().opened_by(),
            OpenedBy::Failures
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_shorter_retry_after_does_not_shorten_an_open_circuit() {
        let arrivals = Arrivals::default();
        let script = |_: &Request<()>, n: usize| match n {
            0 => with_retry_after(503, "10").after(Duration::from_secs(1)),
            _ => with_retry_after(503, "100"),
        };
        let svc = CircuitBreaker::new(server(&arrivals, script), consecutive(5)).unwrap();
        let start = Instant::now();

        // The first call is under way when the second opens the circuit.
        let slow = tokio::spawn({
            let svc = svc.clone();
            async move { status_of(&svc, A).await }
        });
        tokio::task::yield_now().await;
        assert_eq!(status_of(&svc, A).await.unwrap(), 503);
        assert_eq!(slow.await.unwrap().unwrap(), 503);

        let open = status_of(&svc, A).await.unwrap_err();
        assert_eq!(open.reopens_at(), start + Duration::from_secs(100));
    }

    #[tokio::test(start_paused = true)]
    async fn authorities_are_independent() {
        let arrivals = Arrivals::default();
        let script = |req: &Request<()>, _: usize| {
            let a = req
                .uri()
                .host()
                .is_some_and(|h| h.eq_ignore_ascii_case("a.example"));
            status(if a { 500 } else { 200 })
        };
        let svc = CircuitBreaker::new(server(&arrivals, script), consecutive(2)).unwrap();

        status_of(&svc, A).await.unwrap();
        status_of(&svc, "http://user:pw@A.EXAMPLE:80/other")
            .await
            .unwrap();
        for uri in [A, "HTTP://A.Example/x?y", "http://a.example:80/"] {
            let open = status_of(&svc, uri).await.unwrap_err();
            assert_eq!(open.authority(), "http://a.example:80");
        }
        for uri in [
            "http://b.example/",
            "https://a.example/",
            "http://a.example:8080/",
        ] {
            // Each reaches the server (a.example answers 500 on any port or
            // scheme, but one failure does not open a circuit).
            assert!(status_of(&svc, uri).await.is_ok(), "{uri}");
        }
        assert_eq!(hits(&arrivals), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn the_table_is_bounded_and_forgets_closed_circuits_first() {
        let arrivals = Arrivals::default();
        let policy = consecutive(2).max_authorities(NonZeroUsize::new(2).unwrap());
        let layer = CircuitBreakerLayer::new(policy).unwrap();
        let svc = layer.layer(server(&arrivals, |_, _| status(500)));

        // a is open; b has one failure.
        status_of(&svc, "http://a.example/").await.unwrap();
        status_of(&svc, "http://a.example/").await.unwrap();
        status_of(&svc, "http://b.example/").await.unwrap();
        assert_eq!(layer.tracked_authorities(), 2);
        // c needs an entry: b (closed) goes, a (open) stays.
        status_of(&svc, "http://c.example/").await.unwrap();
        status_of(&svc, "http://d.example/").await.unwrap();
        assert_eq!(layer.tracked_authorities(), 2);
        assert!(status_of(&svc, "http://a.example/").await.is_err());
        // b's failure was forgotten: one more does not open it.
        assert_eq!(status_of(&svc, "http://b.example/").await.unwrap(), 500);
        assert_eq!(status_of(&svc, "http://b.example/").await.unwrap(), 500);
    }

    #[tokio::test(start_paused = true)]
    async fn a_custom_classifier_decides_what_fails() {
        let arrivals = Arrivals::default();
        let policy = consecutive(2).classify(|outcome| match outcome {
            Outcome::Response { status, .. } if status.as_u16() == 429 => Verdict::Failure,
            Outcome::Response { status, .. } if status.as_u16() == 500 => Verdict::Ignore,
            other => default_classifier(other),
        });
        let script = |_: &Request<()>, n: usize| status(if n < 5 { 500 } else { 429 });
        let svc = CircuitBreaker::new(server(&arrivals, script), policy).unwrap();

        for _ in 0..5 {
            assert_eq!(status_of(&svc, A).await.unwrap(), 500);
        }
        assert_eq!(
            svc.tracked_authorities(),
            0,
            "ignored outcomes leave no trace"
        );
        assert_eq!(status_of(&svc, A).await.unwrap(), 429);
        assert_eq!(status_of(&svc, A).await.unwrap(), 429);
        assert!(status_of(&svc, A).await.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn clones_and_services_of_one_layer_share_the_circuits() {
        let arrivals = Arrivals::default();
        let layer = CircuitBreakerLayer::new(consecutive(1)).unwrap();
        let one = layer.layer(server(&arrivals, |_, _| status(500)));
        let other = layer.clone().layer(server(&arrivals, |_, _| status(200)));

        status_of(&one, A).await.unwrap();
        assert!(status_of(&other, A).await.is_err());
        assert_eq!(hits(&arrivals), 1);
        let mut svc = one.clone();
        let refused = svc.ready().await.unwrap().call(get(A));
        assert_eq!(
            format!("{refused:?}"),
            "ResponseFuture { state: \"refused\" }"
        );
    }

    #[test]
    fn invalid_policies_are_refused_when_the_layer_is_made() {
        let bad = CircuitPolicy::failure_rate(0, Duration::from_secs(1), NonZeroU32::MIN);
        let err = CircuitBreakerLayer::new(bad.clone()).unwrap_err();
        assert_eq!(err.reason(), "failure rate percent is not within 1 ..= 100");
        assert!(CircuitBreaker::new((), bad).is_err());
    }
}
