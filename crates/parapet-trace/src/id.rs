//! The request id itself: its format, how it is made, and where it lives
//! while a request is being served.

use std::cell::RefCell;
use std::fmt;
use std::future::Future;

use bytes::{Bytes, BytesMut};
use http::{Extensions, HeaderValue};
use tokio::task::futures::TaskLocalFuture;

tokio::task_local! {
    /// The id of the inbound request the current task is serving.
    static CURRENT: RequestId;
}

/// One id for one logical call, sent as `x-request-id` on every attempt.
///
/// # Format: a UUID version 7
///
/// A fresh id is a [RFC 9562] UUID version 7, e.g.
/// `019a4c7e-3b2f-7a41-9d3e-5f0c2b8e1a77`:
///
/// - **time-ordered**: the first 48 bits are the Unix time in milliseconds
///   and the next 12 the fraction of that millisecond (RFC 9562 §6.2,
///   method 3), so ids sort by the time they were made and a log search by
///   id lands near the right time. On Linux that time is the coarse
///   real-time clock's (`CLOCK_REALTIME_COARSE`: the time of the kernel's
///   last tick, 1 to 10 ms apart depending on its `HZ`, 4 ms on the machine
///   below), so an id's time may be up to one tick early, and ids made on
///   different threads within one tick are not ordered among themselves.
///   Ids made on one thread are strictly increasing: while the clock has
///   not moved past a thread's last id (the same tick, or a clock stepped
///   back by less than a second), its next id counts on from the last one
///   in the 12 bits of the fraction (1/4096 ms), carrying into the
///   milliseconds, in the manner of RFC 9562 §6.2's counters. (A thread
///   making more than 4096 ids a millisecond thus runs its ids' time ahead
///   of the clock; once that is more than a second, the clock's time is
///   taken again.) Elsewhere than on Linux the clock is `SystemTime`'s;
/// - **unique without coordination**: 62 random bits from
///   [`parapet_core::random_u64`] (a per-thread generator, no lock, no
///   system call) separate ids with the same time stamp;
/// - **understood everywhere**: 36 characters of a format every log tool,
///   database and tracing backend already accepts.
///
/// Making one costs about 35 ns, measured in a loop on a 2-vCPU AMD EPYC
/// (Zen 5) virtual machine:
///
/// - the clock read, about 3 ns: the coarse clock is read from the vDSO's
///   data page without reading the hardware clock (`SystemTime::now` and
///   its conversion to Unix time cost about 35 ns there);
/// - one random number and the 36 characters, eight hex digits at a time,
///   about 4;
/// - cutting them from a per-thread buffer shared by 32 consecutive ids,
///   about 20 with the drop (an atomic reference count, incremented here
///   and decremented when the id is dropped), so a new id does not allocate
///   (two allocations per 32 ids; the buffer is freed when the last of its
///   ids is dropped);
/// - `HeaderValue`'s check of the 36 bytes, about 5 in this sequence
///   (about 18 alone).
///
/// Each further copy of the id (the request's header, the response's
/// extension) is one more reference: an atomic increment, and a decrement
/// when it is dropped.
///
/// Cheaper ways were measured and not taken. A 36-byte allocation per id
/// instead of the shared buffer saves the two atomic operations (about
/// 10 ns alone, about 30 in [`RequestIdLayer`](crate::RequestIdLayer) with
/// [`record_in_response(false)`](crate::RequestIdLayer::record_in_response)),
/// but is one allocation per call, and a second copy of the id (the
/// response's extension, a retry layer's copy of the request's headers)
/// then allocates the shared reference count anyway. Writing the id into a
/// zeroed buffer after cutting it off, rather than cutting off what was
/// written, is faster alone and not in the layer. `HeaderValue` has no safe
/// constructor that skips its check.
///
/// An id that arrived from elsewhere (a caller's header, an inbound request)
/// is kept as it came and compared byte for byte.
///
/// [RFC 9562]: https://www.rfc-editor.org/rfc/rfc9562
///
/// ```
/// use parapet_trace::RequestId;
///
/// let a = RequestId::new();
/// let b = RequestId::new();
/// assert_ne!(a, b);
/// let text = a.to_str().unwrap();
/// assert_eq!(text.len(), 36);
/// assert_eq!(&text[14..15], "7"); // the version digit
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RequestId(HeaderValue);

/// How many ids share one allocation.
const IDS_PER_CHUNK: usize = 32;
const ID_LEN: usize = 36;

/// What each thread keeps between two ids.
struct Local {
    /// The buffer the next ids are cut from.
    chunk: BytesMut,
    /// The last id's 60-bit time stamp (see [`stamp`]).
    last: u64,
}

thread_local! {
    static LOCAL: RefCell<Local> = RefCell::new(Local {
        chunk: BytesMut::new(),
        last: 0,
    });
}

impl RequestId {
    /// A fresh, time-ordered id (a UUID version 7, see the type's docs).
    #[must_use]
    pub fn new() -> Self {
        let now = wall_clock();
        let random = parapet_core::random_u64();
        let bytes = LOCAL
            .try_with(|local| {
                let mut local = local.try_borrow_mut().ok()?;
                let at = next_stamp(local.last, now);
                local.last = at;
                let text = uuid_v7(at, random);
                let chunk = &mut local.chunk;
                if chunk.capacity() - chunk.len() < ID_LEN {
                    *chunk = BytesMut::with_capacity(ID_LEN * IDS_PER_CHUNK);
                }
                chunk.extend_from_slice(&text);
                Some(chunk.split().freeze())
            })
            .ok()
            .flatten()
            .unwrap_or_else(|| Bytes::copy_from_slice(&uuid_v7(now, random)));
        // `from_maybe_shared` takes the `Bytes` as they are (no copy); the
        // text is hex digits and dashes, so it is always a valid value.
        let value = HeaderValue::from_maybe_shared(bytes)
            .unwrap_or_else(|_| HeaderValue::from_static("00000000-0000-7000-8000-000000000000"));
        Self(value)
    }

    /// An id taken as it is from a header value (a caller's, or an inbound
    /// request's).
    #[must_use]
    pub fn from_header_value(value: HeaderValue) -> Self {
        Self(value)
    }

    /// The id as a header value.
    #[must_use]
    pub fn header_value(&self) -> &HeaderValue {
        &self.0
    }

    /// The id as a header value, by value.
    #[must_use]
    pub fn into_header_value(self) -> HeaderValue {
        self.0
    }

    /// The id as text, if it is visible ASCII (ids this crate makes always
    /// are; one a caller supplied may not be).
    #[must_use]
    pub fn to_str(&self) -> Option<&str> {
        self.0.to_str().ok()
    }

    /// The id's bytes.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// The id recorded in these extensions (a response's, after
    /// [`RequestIdLayer`](crate::RequestIdLayer); a request's, after
    /// [`InboundRequestIdLayer`](crate::InboundRequestIdLayer)).
    #[must_use]
    pub fn get(ext: &Extensions) -> Option<&Self> {
        ext.get::<Self>()
    }

    /// The id of the inbound request the current task is serving, if it runs
    /// inside [`InboundRequestIdLayer`](crate::InboundRequestIdLayer) or
    /// [`RequestId::scope`].
    ///
    /// ```
    /// use parapet_trace::RequestId;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// assert!(RequestId::current().is_none());
    /// let id = RequestId::new();
    /// let seen = id.clone().scope(async { RequestId::current() }).await;
    /// assert_eq!(seen, Some(id));
    /// # }
    /// ```
    #[must_use]
    pub fn current() -> Option<Self> {
        CURRENT.try_with(Clone::clone).ok()
    }

    /// Runs `fut` with this id as the [current](Self::current) one, so that
    /// every call made through a [`RequestIdLayer`](crate::RequestIdLayer)
    /// inside it carries this id.
    ///
    /// Use it to carry the id into a task you spawn: a task-local value does
    /// not follow `tokio::spawn` by itself.
    pub fn scope<F: Future>(self, fut: F) -> TaskLocalFuture<Self, F> {
        CURRENT.scope(self, fut)
    }

    /// Runs `f` with this id as the [current](Self::current) one.
    pub fn sync_scope<R>(self, f: impl FnOnce() -> R) -> R {
        CURRENT.sync_scope(self, f)
    }
}

impl Default for RequestId {
    fn default() -> Self {
        Self::new()
    }
}

impl From<HeaderValue> for RequestId {
    fn from(value: HeaderValue) -> Self {
        Self(value)
    }
}

impl From<RequestId> for HeaderValue {
    fn from(id: RequestId) -> Self {
        id.0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.to_str() {
            Ok(s) => f.write_str(s),
            Err(_) => write!(f, "{}", self.0.as_bytes().escape_ascii()),
        }
    }
}

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RequestId({self})")
    }
}

/// The wall clock's reading as a 60-bit time stamp: the Unix time in
/// milliseconds (48 bits) then the fraction of that millisecond (12 bits).
///
/// On Linux the coarse real-time clock (`CLOCK_REALTIME_COARSE`, the time of
/// the kernel's last tick, read from the vDSO without reading the hardware
/// clock): about 3 ns instead of about 35 for `SystemTime::now` and its
/// conversion, for a resolution of one tick (1 to 10 ms depending on the
/// kernel's `HZ`; [`next_stamp`] orders the ids a thread makes within one).
/// A kernel without that clock (it has had it since 2.6.32) gets
/// `SystemTime`'s.
#[cfg(target_os = "linux")]
fn wall_clock() -> u64 {
    use rustix::time::{ClockId, DynamicClockId, clock_gettime_dynamic};
    // Not `clock_gettime`, which panics if the kernel refuses the clock.
    match clock_gettime_dynamic(DynamicClockId::Known(ClockId::RealtimeCoarse)) {
        Ok(now) => match (u64::try_from(now.tv_sec), u32::try_from(now.tv_nsec)) {
            (Ok(secs), Ok(nanos)) => stamp(secs, nanos),
            _ => system_clock(),
        },
        Err(_) => system_clock(),
    }
}

/// The wall clock's reading as a 60-bit time stamp: the Unix time in
/// milliseconds (48 bits) then the fraction of that millisecond (12 bits).
#[cfg(not(target_os = "linux"))]
fn wall_clock() -> u64 {
    system_clock()
}

/// `SystemTime::now` as a 60-bit time stamp.
fn system_clock() -> u64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    stamp(since.as_secs(), since.subsec_nanos())
}

/// `secs` and `nanos` since the Unix epoch as a 60-bit time stamp (RFC 9562
/// §6.2, method 3: 12 bits of the millisecond's fraction after the 48 bits
/// of milliseconds).
fn stamp(secs: u64, nanos: u32) -> u64 {
    let millis = secs
        .wrapping_mul(1000)
        .wrapping_add(u64::from(nanos / 1_000_000))
        & 0xFFFF_FFFF_FFFF;
    // The fraction of the millisecond in 12 bits: nanos * 4096 / 1e6.
    let fraction = u64::from(nanos % 1_000_000) * 4096 / 1_000_000;
    (millis << 12) | fraction
}

/// The stamp of a thread's next id, given its last one: the clock's, or,
/// while the clock has not moved past the last id (within one tick of a
/// coarse clock, or after it stepped back), one more than the last, so the
/// ids a thread makes are strictly increasing. A clock that stepped back by
/// more than a second is taken as it is (and so is one that the ids ran
/// more than a second ahead of, which takes over 4 million ids a second on
/// one thread).
fn next_stamp(last: u64, now: u64) -> u64 {
    /// One second in stamp units (1/4096 ms).
    const SECOND: u64 = 1000 << 12;
    if now > last || last - now > SECOND {
        now
    } else {
        last + 1
    }
}

/// The 36 characters of a UUID version 7 for the 60-bit stamp `at`, with 62
/// random bits.
fn uuid_v7(at: u64, random: u64) -> [u8; ID_LEN] {
    let hi = ((at << 4) & 0xFFFF_FFFF_FFFF_0000) | (0x7 << 12) | (at & 0xFFF);
    let lo = (0b10 << 62) | (random >> 2);
    parapet_core::format_uuid(hi, lo)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn text(id: &RequestId) -> &str {
        id.to_str().unwrap()
    }

    #[test]
    fn fresh_ids_are_uuid_v7() {
        let id = RequestId::new();
        let s = text(&id);
        assert_eq!(s.len(), 36);
        for (i, c) in s.char_indices() {
            if matches!(i, 8 | 13 | 18 | 23) {
                assert_eq!(c, '-', "{s}");
            } else {
                assert!(matches!(c, '0'..='9' | 'a'..='f'), "{s}");
            }
        }
        assert_eq!(&s[14..15], "7", "version: {s}");
        assert!(matches!(&s[19..20], "8" | "9" | "a" | "b"), "variant: {s}");
    }

    #[test]
    fn the_timestamp_is_the_unix_time_in_milliseconds() {
        // 0x0123_4567_89ab ms and half a millisecond.
        let ms: u64 = 0x0123_4567_89ab;
        let sub = u32::try_from(ms % 1000).unwrap();
        let at = stamp(ms / 1000, sub * 1_000_000 + 500_000);
        let s = uuid_v7(at, 0);
        let s = std::str::from_utf8(&s).unwrap();
        assert_eq!(&s[..13], "01234567-89ab");
        // Half a millisecond is 0x800 of 0x1000.
        assert_eq!(&s[14..18], "7800");
        assert_eq!(&s[19..], "8000-000000000000");
        let s = uuid_v7(at, u64::MAX);
        assert_eq!(&std::str::from_utf8(&s).unwrap()[19..], "bfff-ffffffffffff");
        // One more than the last fraction of a millisecond is the next one.
        let s = uuid_v7(stamp(0, 999_999_999) + 1, 0);
        assert_eq!(
            &std::str::from_utf8(&s).unwrap()[..18],
            "00000000-03e8-7000"
        );
    }

    #[test]
    fn a_fresh_id_carries_the_wall_clock_time() {
        let before = system_clock() >> 12;
        let id = RequestId::new();
        let after = system_clock() >> 12;
        let s = text(&id).replace('-', "");
        let at = u64::from_str_radix(&s[..12], 16).unwrap();
        // A coarse clock is up to one kernel tick (at most 10 ms) behind.
        assert!(
            at + 50 >= before && at <= after + 50,
            "{at} not in {before}..={after}"
        );
    }

    #[test]
    fn stamps_sort_in_the_order_they_were_made() {
        let base = 1_700_000_000;
        let mut last = uuid_v7(stamp(base, 0), u64::MAX);
        for step in 1..2000u32 {
            // 300 ns apart: past the 244 ns resolution of the fraction.
            let next = uuid_v7(stamp(base, step * 300), 0);
            assert!(next > last, "step {step}");
            last = next;
        }
    }

    #[test]
    fn a_threads_stamps_only_go_up() {
        let t = stamp(1_700_000_000, 0);
        // The clock moved on: its reading.
        assert_eq!(next_stamp(t, t + 5000), t + 5000);
        // The same tick of a coarse clock, or a clock that stepped back a
        // little: one more than the last.
        assert_eq!(next_stamp(t, t), t + 1);
        assert_eq!(next_stamp(t, t - 4096 * 500), t + 1);
        // A clock that stepped back over a second is believed.
        let back = t - 4096 * 1001;
        assert_eq!(next_stamp(t, back), back);
        // The first id of a thread.
        assert_eq!(next_stamp(0, t), t);
    }

    #[test]
    fn ids_from_one_thread_are_strictly_increasing() {
        // Many within one tick of a coarse clock.
        let ids: Vec<RequestId> = (0..5000).map(|_| RequestId::new()).collect();
        for pair in ids.windows(2) {
            assert!(text(&pair[0]) < text(&pair[1]), "{pair:?}");
        }
    }

    #[test]
    fn ids_do_not_collide_across_chunks_and_threads() {
        let mut seen = HashSet::new();
        for _ in 0..IDS_PER_CHUNK * 5 {
            assert!(seen.insert(RequestId::new()));
        }
        let other: Vec<RequestId> =
            std::thread::spawn(|| (0..100).map(|_| RequestId::new()).collect())
                .join()
                .unwrap();
        for id in other {
            assert!(seen.insert(id));
        }
    }

    #[test]
    fn ids_outlive_their_chunk() {
        let first = RequestId::new();
        let copy = text(&first).to_owned();
        let later: Vec<RequestId> = (0..IDS_PER_CHUNK * 3).map(|_| RequestId::new()).collect();
        drop(later);
        assert_eq!(text(&first), copy);
    }

    #[test]
    fn display_escapes_opaque_bytes() {
        let id = RequestId::from_header_value(HeaderValue::from_bytes(b"ab\xffc").unwrap());
        assert_eq!(id.to_str(), None);
        assert_eq!(id.to_string(), "ab\\xffc");
        assert_eq!(format!("{id:?}"), "RequestId(ab\\xffc)");
    }

    #[tokio::test]
    async fn scope_sets_the_current_id_for_that_future_only() {
        let id = RequestId::from_header_value(HeaderValue::from_static("abc"));
        let inner = id.clone().scope(async { RequestId::current() }).await;
        assert_eq!(inner, Some(id.clone()));
        assert_eq!(RequestId::current(), None);
        assert_eq!(id.clone().sync_scope(RequestId::current), Some(id));
    }
}
