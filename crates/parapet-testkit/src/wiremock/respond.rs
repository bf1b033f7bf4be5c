//! Responders: "fail N times, then answer", and answers that say "wait".

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ::wiremock::{Request, Respond, ResponseTemplate};

/// A responder that answers the first `n` requests with one template and
/// every later request with another: "fails twice, then answers" in one
/// mock, counted with an atomic counter shared by its clones.
///
/// Mount a clone and keep the original to read [`requests`](Self::requests)
/// afterwards. Unlike two mocks with `up_to_n_times`, the count is per
/// responder, so one `FailTimes` can sit behind any matcher.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use parapet_testkit::wiremock::FailTimes;
/// use wiremock::matchers::path;
/// use wiremock::{Mock, MockServer, ResponseTemplate};
///
/// let upstream = MockServer::start().await;
/// let flaky = FailTimes::new(2, ResponseTemplate::new(503), ResponseTemplate::new(200));
/// Mock::given(path("/orders")).respond_with(flaky.clone()).mount(&upstream).await;
///
/// # let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
/// #     .build_http::<String>();
/// let url: http::Uri = format!("{}/orders", upstream.uri()).parse().unwrap();
/// let mut statuses = Vec::new();
/// for _ in 0..3 {
///     statuses.push(http.get(url.clone()).await.unwrap().status().as_u16());
/// }
/// assert_eq!(statuses, [503, 503, 200]);
/// assert_eq!(flaky.requests(), 3);
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct FailTimes {
    failures: usize,
    failure: ResponseTemplate,
    answer: ResponseTemplate,
    seen: Arc<AtomicUsize>,
}

impl FailTimes {
    /// Answers the first `failures` requests with `failure`, then every
    /// request with `answer`.
    #[must_use]
    pub fn new(failures: usize, failure: ResponseTemplate, answer: ResponseTemplate) -> Self {
        Self {
            failures,
            failure,
            answer,
            seen: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// How many requests this responder (and its clones) answered so far.
    #[must_use]
    pub fn requests(&self) -> usize {
        self.seen.load(Ordering::SeqCst)
    }
}

impl Respond for FailTimes {
    fn respond(&self, _request: &Request) -> ResponseTemplate {
        let n = self.seen.fetch_add(1, Ordering::SeqCst);
        if n < self.failures {
            self.failure.clone()
        } else {
            self.answer.clone()
        }
    }
}

/// An answer with `status` and `Retry-After` in seconds (`wait` rounded
/// up to a whole second, the header's resolution).
///
/// ```
/// use std::time::Duration;
/// use parapet_testkit::wiremock::retry_after;
/// use wiremock::{Mock, ResponseTemplate};
///
/// let busy: ResponseTemplate = retry_after(429, Duration::from_millis(1500));
/// // Sends `429` with `retry-after: 2`; mount it like any template:
/// let _mock = Mock::given(wiremock::matchers::any()).respond_with(busy).up_to_n_times(1);
/// ```
#[must_use]
pub fn retry_after(status: u16, wait: Duration) -> ResponseTemplate {
    ResponseTemplate::new(status).insert_header("retry-after", ceil_secs(wait).to_string())
}

/// An answer with `status` and `Retry-After` as an HTTP-date (`at`,
/// truncated to the second).
///
/// The date has one-second resolution and is read against the client's
/// clock: for `SystemTime::now() + 2 s`, a client waits between one and two
/// seconds.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use parapet_testkit::wiremock::retry_after_date;
///
/// let at = UNIX_EPOCH + Duration::from_secs(784_111_777);
/// let _busy = retry_after_date(503, at); // retry-after: Sun, 06 Nov 1994 08:49:37 GMT
/// ```
#[must_use]
pub fn retry_after_date(status: u16, at: SystemTime) -> ResponseTemplate {
    ResponseTemplate::new(status).insert_header("retry-after", http_date(at))
}

/// An answer with `status` and the common `X-RateLimit-*` headers:
/// `X-RateLimit-Limit: limit`, `X-RateLimit-Remaining: remaining` and
/// `X-RateLimit-Reset` as seconds from now (`reset_in` rounded up).
///
/// A `remaining` of 0 tells a client to hold its calls until the reset,
/// even on a `200`. For GitHub's form (the reset as a Unix time), see
/// [`x_ratelimit_epoch`].
///
/// ```
/// use std::time::Duration;
/// use parapet_testkit::wiremock::x_ratelimit;
///
/// // 200, x-ratelimit-limit: 60, x-ratelimit-remaining: 0, x-ratelimit-reset: 1
/// let _spent = x_ratelimit(200, 60, 0, Duration::from_secs(1));
/// ```
#[must_use]
pub fn x_ratelimit(
    status: u16,
    limit: u64,
    remaining: u64,
    reset_in: Duration,
) -> ResponseTemplate {
    ResponseTemplate::new(status)
        .insert_header("x-ratelimit-limit", limit.to_string())
        .insert_header("x-ratelimit-remaining", remaining.to_string())
        .insert_header("x-ratelimit-reset", ceil_secs(reset_in).to_string())
}

/// Like [`x_ratelimit`], with `X-RateLimit-Reset` as the Unix time of the
/// reset in seconds (GitHub's form).
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use parapet_testkit::wiremock::x_ratelimit_epoch;
///
/// let _spent = x_ratelimit_epoch(403, 5000, 0, SystemTime::now() + Duration::from_secs(2));
/// ```
#[must_use]
pub fn x_ratelimit_epoch(
    status: u16,
    limit: u64,
    remaining: u64,
    reset_at: SystemTime,
) -> ResponseTemplate {
    let epoch = reset_at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    ResponseTemplate::new(status)
        .insert_header("x-ratelimit-limit", limit.to_string())
        .insert_header("x-ratelimit-remaining", remaining.to_string())
        .insert_header("x-ratelimit-reset", epoch.to_string())
}

/// An answer with `status` and the IETF draft's structured fields
/// (draft-ietf-httpapi-ratelimit-headers):
/// `RateLimit: "default";r=<remaining>;t=<reset_in>` and
/// `RateLimit-Policy: "default";q=<limit>`, seconds rounded up.
///
/// ```
/// use std::time::Duration;
/// use parapet_testkit::wiremock::ratelimit;
///
/// // 200, ratelimit: "default";r=0;t=1, ratelimit-policy: "default";q=100
/// let _spent = ratelimit(200, 100, 0, Duration::from_secs(1));
/// ```
#[must_use]
pub fn ratelimit(status: u16, limit: u64, remaining: u64, reset_in: Duration) -> ResponseTemplate {
    ResponseTemplate::new(status)
        .insert_header(
            "ratelimit",
            format!("\"default\";r={remaining};t={}", ceil_secs(reset_in)),
        )
        .insert_header("ratelimit-policy", format!("\"default\";q={limit}"))
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0))
}

/// `t` as an IMF-fixdate (RFC 9110 §5.6.7); times before 1970 print as
/// 1970-01-01.
pub(crate) fn http_date(t: SystemTime) -> String {
    const DAYS: &str = "ThuFriSatSunMonTueWed"; // 1970-01-01 was a Thursday
    const MONTHS: &str = "JanFebMarAprMayJunJulAugSepOctNovDec";
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil date from a day count (H. Hinnant's algorithm), all unsigned.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    let name = |table: &'static str, i: u64| {
        usize::try_from(i * 3)
            .ok()
            .and_then(|at| table.get(at..at + 3))
            .unwrap_or("???")
    };
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
        name(DAYS, days % 7),
        name(MONTHS, month - 1),
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_date_matches_the_rfc_example() {
        let t = UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(http_date(t), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 GMT");
        // A leap day.
        let t = UNIX_EPOCH + Duration::from_secs(1_709_164_800);
        assert_eq!(http_date(t), "Thu, 29 Feb 2024 00:00:00 GMT");
    }

    #[test]
    fn seconds_round_up() {
        assert_eq!(ceil_secs(Duration::from_millis(1500)), 2);
        assert_eq!(ceil_secs(Duration::from_secs(1)), 1);
        assert_eq!(ceil_secs(Duration::ZERO), 0);
    }
}
