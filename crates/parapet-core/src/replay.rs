//! A request body that can be sent again.

use std::any::Any;
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

use bytes::{Buf, Bytes};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;

/// The error type of bodies in the parapet stack.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Default cap on how much of a streamed body is kept for a replay: 64 KiB.
pub const DEFAULT_REPLAY_CAP: usize = 64 * 1024;

/// A request body that streams its frames through unchanged while keeping a
/// copy, so that the same request can be sent again.
///
/// - Bodies already in memory ([`ReplayBody::from_bytes`], `From<Bytes>`,
///   `From<String>`, `From<Vec<u8>>`, `From<&'static str>`, [`ReplayBody::empty`])
///   replay for free, with no copy and no cap.
/// - A streamed body ([`ReplayBody::new`]) is recorded as it is sent, up to a
///   byte cap. Recording clones each `Bytes` frame (a reference count, not a
///   copy). Past the cap the recording is dropped, the attempt in flight
///   streams on unaffected, and [`try_replay`](Self::try_replay) is refused
///   with [`ReplayError::too_large`](ReplayError::is_too_large).
/// - A body that can be made again from its source ([`ReplayBody::reopen`]:
///   a file opened anew, a request re-issued) keeps nothing: each replay
///   calls the factory for a fresh body, so it has no cap. A replay whose
///   source fails to open fails as a body error of that attempt.
/// - [`ReplayBody::new`] given a `ReplayBody` returns it as it is, so layers
///   that each may need a replay share one recording per call: the outermost
///   arms it, the inner ones reuse it.
///
/// A replay yields byte-identical data frames and the same trailers. It may
/// be taken before the first attempt has read the whole body (a connection
/// that failed mid-upload): it replays what was recorded, then reads on from
/// the original stream.
///
/// # Several handles at once
///
/// The original and its replays (the *handles*) may be sent at the same
/// time: hyper may still be writing attempt 1's body after an early 401 or
/// 503 while the re-send starts. What is guaranteed then:
///
/// - **No lost wake-ups.** Every handle waiting for the original stream is
///   woken when it yields a frame, ends or fails, whichever handle read it
///   (the stream is polled with a waker that wakes them all, so a source
///   that keeps only its last waker, as channels and hyper's `Incoming`
///   do, cannot strand a handle).
/// - **A replay that was handed out is not cut short by an older handle.**
///   The newest handle, by when it was handed out while the original was
///   being read (a [`try_replay`](Self::try_replay) at that moment) or when
///   it first read the original itself, has priority: a handle that began
///   reading earlier may still take what was recorded, but where it would
///   read on from the original stream it ends with a
///   [`ReplayError::is_superseded`] error instead (its attempt is over; the
///   client drops that connection). So the recording cannot pass the cap
///   behind the back of a replay taken before it did, and a `try_replay`
///   that succeeded stays good until that replay reads the rest itself.
///   A handle that was taken before anything was read (a keeper, as the
///   retry layer holds one) claims nothing until it reads.
/// - A replay that is impossible (the cap was passed, the stream failed) is
///   refused by `try_replay` with a typed [`ReplayError`], before anything
///   is sent again; a handle that lags behind a recording dropped at the
///   cap fails loudly rather than send a truncated body.
///
/// Bodies in memory have one copy of their bytes and no shared state: none
/// of this costs them anything.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use bytes::Bytes;
/// use http_body_util::{BodyExt, StreamBody};
/// use parapet_core::ReplayBody;
///
/// let chunks = vec![Ok::<_, std::io::Error>(http_body::Frame::data(Bytes::from("hello ")))
///                   , Ok(http_body::Frame::data(Bytes::from("world")))];
/// let streamed = StreamBody::new(futures_util_stream(chunks));
/// let first = ReplayBody::new(streamed, 1024);
/// let second = first.try_replay().unwrap();
/// assert_eq!(first.collect().await.unwrap().to_bytes(), "hello world");
/// assert_eq!(second.collect().await.unwrap().to_bytes(), "hello world");
/// # }
/// # fn futures_util_stream<T>(v: Vec<T>) -> impl futures_core::Stream<Item = T> {
/// #     struct Iter<T>(std::vec::IntoIter<T>);
/// #     impl<T> Unpin for Iter<T> {}
/// #     impl<T> futures_core::Stream for Iter<T> {
/// #         type Item = T;
/// #         fn poll_next(mut self: std::pin::Pin<&mut Self>, _: &mut std::task::Context<'_>) -> std::task::Poll<Option<T>> {
/// #             std::task::Poll::Ready(self.0.next())
/// #         }
/// #     }
/// #     Iter(v.into_iter())
/// # }
/// ```
pub struct ReplayBody {
    kind: Kind,
}

enum Kind {
    Empty,
    Full(Option<Bytes>, Bytes),
    Shared(Handle),
    // NOTE: boxed so that the other kinds (every default call) stay the
    // size they were.
    Reopen(Box<Reopen>),
}

/// Makes a fresh body from the source, for [`ReplayBody::reopen`].
type Factory = Arc<dyn Fn() -> UnsyncBoxBody<Bytes, BoxError> + Send + Sync>;

/// A handle on a body made again from its source for every replay.
struct Reopen {
    open: Factory,
    /// The length each body made by `open` has, when known.
    len: Option<u64>,
    /// This handle's body, made on its first poll. In a `Mutex` only so
    /// that `ReplayBody` stays `Sync`: one handle is polled by one task.
    body: Mutex<Option<UnsyncBoxBody<Bytes, BoxError>>>,
    /// Data bytes this handle has yielded.
    sent: u64,
    done: bool,
}

impl Reopen {
    fn handle(open: Factory, len: Option<u64>) -> Self {
        Self {
            open,
            len,
            body: Mutex::new(None),
            sent: 0,
            done: false,
        }
    }

    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.done {
            return Poll::Ready(None);
        }
        let body = self
            .body
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert_with(|| (self.open)());
        let polled = Pin::new(body).poll_frame(cx);
        match &polled {
            Poll::Ready(None | Some(Err(_))) => {
                self.done = true;
                // The file (or whatever the source holds) is released now,
                // not when the request is dropped.
                *self.body.get_mut().unwrap_or_else(PoisonError::into_inner) = None;
            }
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.sent = self.sent.saturating_add(data.len() as u64);
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn size_hint(&self) -> SizeHint {
        if let Some(len) = self.len {
            return SizeHint::with_exact(len.saturating_sub(self.sent));
        }
        if self.done {
            return SizeHint::with_exact(0);
        }
        lock(&self.body)
            .as_ref()
            .map_or_else(SizeHint::new, Body::size_hint)
    }
}

struct Handle {
    state: Arc<Mutex<State>>,
    wakers: Arc<Wakers>,
    /// This handle's place in `State::claims` and in `wakers`.
    slot: usize,
    /// The epoch at which this handle first read from the original stream.
    read_since: Option<u64>,
    /// Data frames this handle has yielded.
    pos: usize,
    trailers_sent: bool,
    done: bool,
}

struct State {
    body: Option<UnsyncBoxBody<Bytes, BoxError>>,
    frames: Vec<Bytes>,
    /// Data frames the original stream has produced so far.
    produced: usize,
    recorded: usize,
    cap: usize,
    overflowed: bool,
    failed: bool,
    ended: bool,
    trailers: Option<HeaderMap>,
    /// Whether any handle has polled the original stream.
    pulled: bool,
    /// Counts claims (see `claims`), from 1.
    epoch: u64,
    /// Per slot: `None` when free, else the live handle's claim: the epoch
    /// at which it was handed out while the stream was being read, or at
    /// which it first read the stream itself, whichever is later; 0 for
    /// none. A handle that read the stream since epoch `e` may read on from
    /// it only while no other live handle claims a later epoch.
    claims: Vec<Option<u64>>,
}

impl State {
    /// A slot for a new handle with this claim.
    fn join(&mut self, claim: u64) -> usize {
        if let Some(i) = self.claims.iter().position(Option::is_none) {
            if let Some(slot) = self.claims.get_mut(i) {
                *slot = Some(claim);
            }
            return i;
        }
        self.claims.push(Some(claim));
        self.claims.len() - 1
    }

    /// The newest claim of the live handles other than `slot`.
    fn newest_claim_but(&self, slot: usize) -> u64 {
        self.claims
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != slot)
            .filter_map(|(_, c)| *c)
            .max()
            .unwrap_or(0)
    }

    fn next_epoch(&mut self) -> u64 {
        self.epoch = self.epoch.saturating_add(1);
        self.epoch
    }

    /// Why a replay cannot be taken now, if it cannot.
    fn replay_error(&self) -> Option<ReplayError> {
        if self.overflowed {
            return Some(ReplayError(ReplayErrorKind::TooLarge { cap: self.cap }));
        }
        if self.failed {
            return Some(ReplayError(ReplayErrorKind::Failed));
        }
        None
    }
}

/// The wakers of the handles waiting for the original stream, by slot.
///
/// The stream itself is polled with a waker made of this (see its `Wake`),
/// so whichever waker it keeps wakes every waiting handle. It is its own
/// allocation, apart from `State`: a stream that keeps the waker then holds
/// no reference to itself.
struct Wakers(Mutex<Vec<Option<Waker>>>);

impl Wakers {
    /// Records that the handle in `slot` waits, woken by `waker`.
    fn register(&self, slot: usize, waker: &Waker) {
        let mut all = lock(&self.0);
        if all.len() <= slot {
            all.resize_with(slot + 1, || None);
        }
        if let Some(entry) = all.get_mut(slot) {
            match entry {
                Some(w) if w.will_wake(waker) => {}
                _ => *entry = Some(waker.clone()),
            }
        }
    }

    /// Forgets the waker of `slot` (returned, to be dropped unlocked).
    fn take(&self, slot: usize) -> Option<Waker> {
        lock(&self.0).get_mut(slot).and_then(Option::take)
    }

    /// Wakes every waiting handle but `except` (whose waker is forgotten).
    fn wake_all(&self, except: Option<usize>) {
        // NOTE: one slot at a time and outside the lock: waking may drop
        // the last reference to a task, and with it a handle, whose `Drop`
        // takes this lock.
        let mut i = 0;
        loop {
            let waker = {
                let mut all = lock(&self.0);
                let Some(entry) = all.get_mut(i) else {
                    break;
                };
                entry.take()
            };
            if let Some(waker) = waker {
                if Some(i) != except {
                    waker.wake();
                }
            }
            i += 1;
        }
    }
}

impl Wake for Wakers {
    fn wake(self: Arc<Self>) {
        self.wake_all(None);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.wake_all(None);
    }
}

impl ReplayBody {
    /// Wraps a body so that it can be replayed, keeping at most `cap` bytes.
    ///
    /// A `ReplayBody` is returned as it is (its own cap kept); a body that is
    /// already at its end becomes [`ReplayBody::empty`], with no allocation.
    pub fn new<B>(body: B, cap: usize) -> Self
    where
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let mut slot = Some(body);
        if let Some(existing) = (&mut slot as &mut dyn Any).downcast_mut::<Option<Self>>() {
            if let Some(existing) = existing.take() {
                return existing;
            }
        }
        let Some(body) = slot else {
            return Self::empty();
        };
        if body.is_end_stream() {
            return Self::empty();
        }
        let boxed = ToBytes { inner: body }.boxed_unsync();
        Self {
            kind: Kind::Shared(Handle {
                state: Arc::new(Mutex::new(State {
                    body: Some(boxed),
                    frames: Vec::new(),
                    produced: 0,
                    recorded: 0,
                    cap,
                    overflowed: false,
                    failed: false,
                    ended: false,
                    trailers: None,
                    pulled: false,
                    epoch: 0,
                    claims: vec![Some(0)],
                })),
                wakers: Arc::new(Wakers(Mutex::new(Vec::new()))),
                slot: 0,
                read_since: None,
                pos: 0,
                trailers_sent: false,
                done: false,
            }),
        }
    }

    /// A body made again from its source for every replay: `open` is
    /// called for the body of the first attempt, and again for each replay,
    /// each time on the handle's first poll (a replay that is never sent
    /// opens nothing). Nothing is kept in memory, so there is no cap and
    /// [`try_replay`](Self::try_replay) always succeeds.
    ///
    /// `len` is the length of every body `open` makes, when it is known (a
    /// file's length from its metadata): the size hint says it exactly, so
    /// the request carries a `Content-Length`. A body that turns out
    /// longer or shorter fails that attempt (hyper refuses to send it) rather
    /// than send something else than was announced.
    ///
    /// A source that cannot be opened again (a file removed since) should
    /// make a body whose first frame is the error: it is a body error of
    /// that attempt, as any failing body is.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use bytes::Bytes;
    /// use http_body::Body as _;
    /// use http_body_util::{BodyExt, Full};
    /// use parapet_core::ReplayBody;
    ///
    /// // Stands for a file opened again for every attempt.
    /// let first = ReplayBody::reopen(Some(5), || Full::new(Bytes::from_static(b"hello")));
    /// assert_eq!(first.size_hint().exact(), Some(5));
    /// let again = first.try_replay().unwrap();
    /// assert_eq!(first.collect().await.unwrap().to_bytes(), "hello");
    /// assert_eq!(again.collect().await.unwrap().to_bytes(), "hello");
    /// # }
    /// ```
    pub fn reopen<F, B>(len: Option<u64>, open: F) -> Self
    where
        F: Fn() -> B + Send + Sync + 'static,
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let open: Factory = Arc::new(move || ToBytes { inner: open() }.boxed_unsync());
        Self {
            kind: Kind::Reopen(Box::new(Reopen::handle(open, len))),
        }
    }

    /// An empty body.
    #[must_use]
    pub const fn empty() -> Self {
        Self { kind: Kind::Empty }
    }

    /// A body held in memory; replays share the same bytes.
    #[must_use]
    pub fn from_bytes(bytes: Bytes) -> Self {
        if bytes.is_empty() {
            return Self::empty();
        }
        Self {
            kind: Kind::Full(Some(bytes.clone()), bytes),
        }
    }

    /// A body that yields the same frames again from the start.
    ///
    /// Taken while another handle is reading the original stream, the
    /// replay has priority over the handles that began reading before: they
    /// no longer read on from the stream (see the type's docs), so the
    /// recording this check relied on is not dropped before the replay has
    /// read it. A replay that succeeds here yields the whole body unless
    /// the original stream fails, or a handle that begins reading later
    /// (a newer attempt) passes the cap first.
    ///
    /// # Errors
    ///
    /// When the recording was dropped because the body passed its cap, or the
    /// original stream failed before it ended.
    pub fn try_replay(&self) -> Result<Self, ReplayError> {
        match &self.kind {
            Kind::Empty => Ok(Self::empty()),
            Kind::Full(_, all) => Ok(Self {
                kind: Kind::Full(Some(all.clone()), all.clone()),
            }),
            Kind::Shared(h) => {
                let mut state = lock(&h.state);
                if let Some(e) = state.replay_error() {
                    return Err(e);
                }
                // Handed out while the stream is being read: a claim, so
                // that the handles reading it now stop before they could
                // pass the cap behind this one's back.
                let claim = if state.pulled && state.body.is_some() {
                    state.next_epoch()
                } else {
                    0
                };
                let slot = state.join(claim);
                drop(state);
                Ok(Self {
                    kind: Kind::Shared(Handle {
                        state: Arc::clone(&h.state),
                        wakers: Arc::clone(&h.wakers),
                        slot,
                        read_since: None,
                        pos: 0,
                        trailers_sent: false,
                        done: false,
                    }),
                })
            }
            Kind::Reopen(r) => Ok(Self {
                kind: Kind::Reopen(Box::new(Reopen::handle(Arc::clone(&r.open), r.len))),
            }),
        }
    }

    /// Whether [`try_replay`](Self::try_replay) would succeed now.
    ///
    /// A snapshot: unlike a replay taken with `try_replay`, it claims
    /// nothing, so a handle still reading the stream may pass the cap
    /// afterwards. To be sure of a re-send, take its body with
    /// `try_replay` when deciding on it.
    #[must_use]
    pub fn can_replay(&self) -> bool {
        match &self.kind {
            Kind::Empty | Kind::Full(..) | Kind::Reopen(_) => true,
            Kind::Shared(h) => lock(&h.state).replay_error().is_none(),
        }
    }
}

pin_project_lite::pin_project! {
    /// Turns any body into one of `Bytes` frames, keeping its size hint
    /// (`map_frame` would drop it).
    struct ToBytes<B> {
        #[pin]
        inner: B,
    }
}

impl<B> Body for ToBytes<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project().inner.poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(Some(Ok(f))) => {
                Poll::Ready(Some(Ok(f.map_data(|mut d| d.copy_to_bytes(d.remaining())))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere while the lock was held leaves the state consistent
    // (every update is a single assignment), so poisoning is ignored.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Drop for Handle {
    fn drop(&mut self) {
        drop(self.wakers.take(self.slot));
        if let Some(claim) = lock(&self.state).claims.get_mut(self.slot) {
            *claim = None;
        }
    }
}

impl Handle {
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.done {
            return Poll::Ready(None);
        }
        let mut read = false;
        let polled = self.poll_shared(cx, &mut read);
        if read && polled.is_ready() {
            // A frame, the end or an error from the stream: the handles
            // waiting for it may now go on (from the recording, or to their
            // end).
            self.wakers.wake_all(Some(self.slot));
        }
        polled
    }

    /// Sets `read` when it polled the original stream.
    fn poll_shared(
        &mut self,
        cx: &mut Context<'_>,
        read: &mut bool,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut state = lock(&self.state);
        let state = &mut *state;
        if self.pos < state.produced {
            // Behind the original stream: replay from the recording.
            let Some(data) = state
                .frames
                .get(self.pos)
                .cloned()
                .filter(|_| !state.overflowed)
            else {
                self.done = true;
                return Poll::Ready(Some(Err(ReplayError(ReplayErrorKind::TooLarge {
                    cap: state.cap,
                })
                .into())));
            };
            self.pos += 1;
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        if let Some(trailers) = state.trailers.as_ref().filter(|_| !self.trailers_sent) {
            self.trailers_sent = true;
            return Poll::Ready(Some(Ok(Frame::trailers(trailers.clone()))));
        }
        if state.failed {
            self.done = true;
            return Poll::Ready(Some(Err(ReplayError(ReplayErrorKind::Failed).into())));
        }
        if state.body.is_none() {
            self.done = true;
            return Poll::Ready(None);
        }
        let since = match self.read_since {
            Some(since) => since,
            None => {
                // First read from the stream: a claim over the handles that
                // read it before.
                let since = state.next_epoch();
                self.read_since = Some(since);
                if let Some(claim) = state.claims.get_mut(self.slot) {
                    *claim = Some(since);
                }
                since
            }
        };
        if state.newest_claim_but(self.slot) > since {
            // A newer handle has priority: reading on could pass the cap
            // behind its back.
            self.done = true;
            return Poll::Ready(Some(Err(ReplayError(ReplayErrorKind::Superseded).into())));
        }
        let Some(body) = state.body.as_mut() else {
            self.done = true;
            return Poll::Ready(None);
        };
        state.pulled = true;
        *read = true;
        // NOTE: registered before the poll, so a frame that arrives between
        // the stream's `Pending` and here still finds this handle's waker.
        self.wakers.register(self.slot, cx.waker());
        let all = Waker::from(Arc::clone(&self.wakers));
        match Pin::new(body).poll_frame(&mut Context::from_waker(&all)) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                state.body = None;
                state.ended = true;
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                state.body = None;
                state.failed = true;
                state.frames = Vec::new();
                self.done = true;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => {
                    state.produced += 1;
                    self.pos += 1;
                    if !state.overflowed {
                        if state.recorded.saturating_add(data.len()) > state.cap {
                            state.overflowed = true;
                            state.frames = Vec::new();
                        } else {
                            state.recorded += data.len();
                            state.frames.push(data.clone());
                        }
                    }
                    Poll::Ready(Some(Ok(Frame::data(data))))
                }
                Err(frame) => {
                    if let Some(trailers) = frame.trailers_ref() {
                        state.trailers = Some(trailers.clone());
                        self.trailers_sent = true;
                    }
                    Poll::Ready(Some(Ok(frame)))
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        if self.done {
            return true;
        }
        let state = lock(&self.state);
        self.pos >= state.produced
            && (state.trailers.is_none() || self.trailers_sent)
            && (state.ended || state.body.as_ref().is_some_and(Body::is_end_stream))
    }

    fn size_hint(&self) -> SizeHint {
        let state = lock(&self.state);
        let replayed: u64 = state
            .frames
            .get(self.pos..)
            .map_or(0, |rest| rest.iter().map(|b| b.len() as u64).sum());
        let rest = state
            .body
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint);
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower().saturating_add(replayed));
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper.saturating_add(replayed));
        }
        hint
    }
}

impl Body for ReplayBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match &mut self.get_mut().kind {
            Kind::Empty => Poll::Ready(None),
            Kind::Full(next, _) => Poll::Ready(next.take().map(|b| Ok(Frame::data(b)))),
            Kind::Shared(h) => h.poll_frame(cx),
            Kind::Reopen(r) => r.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Empty | Kind::Full(None, _) => true,
            Kind::Full(Some(_), _) => false,
            Kind::Shared(h) => h.is_end_stream(),
            Kind::Reopen(r) => r.done,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Empty | Kind::Full(None, _) => SizeHint::with_exact(0),
            Kind::Full(Some(b), _) => SizeHint::with_exact(b.len() as u64),
            Kind::Shared(h) => h.size_hint(),
            Kind::Reopen(r) => r.size_hint(),
        }
    }
}

impl Default for ReplayBody {
    fn default() -> Self {
        Self::empty()
    }
}

impl From<Bytes> for ReplayBody {
    fn from(b: Bytes) -> Self {
        Self::from_bytes(b)
    }
}

impl From<Vec<u8>> for ReplayBody {
    fn from(v: Vec<u8>) -> Self {
        Self::from_bytes(Bytes::from(v))
    }
}

impl From<String> for ReplayBody {
    fn from(s: String) -> Self {
        Self::from_bytes(Bytes::from(s))
    }
}

impl From<&'static str> for ReplayBody {
    fn from(s: &'static str) -> Self {
        Self::from_bytes(Bytes::from_static(s.as_bytes()))
    }
}

impl fmt::Debug for ReplayBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never prints the bytes: a body may carry credentials.
        match &self.kind {
            Kind::Empty => f.write_str("ReplayBody::Empty"),
            Kind::Full(_, all) => f
                .debug_struct("ReplayBody::Full")
                .field("len", &all.len())
                .finish(),
            Kind::Shared(h) => {
                let state = lock(&h.state);
                f.debug_struct("ReplayBody::Streamed")
                    .field("recorded", &state.recorded)
                    .field("cap", &state.cap)
                    .field("replayable", &state.replay_error().is_none())
                    .finish()
            }
            Kind::Reopen(r) => f
                .debug_struct("ReplayBody::Reopen")
                .field("len", &r.len)
                .field("sent", &r.sent)
                .finish(),
        }
    }
}

/// Why a body cannot be sent again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayError(ReplayErrorKind);

#[derive(Debug, Clone, PartialEq, Eq)]
enum ReplayErrorKind {
    TooLarge { cap: usize },
    Failed,
    Superseded,
}

impl ReplayError {
    /// The body passed its replay cap.
    #[must_use]
    pub fn is_too_large(&self) -> bool {
        matches!(self.0, ReplayErrorKind::TooLarge { .. })
    }

    /// The original body stream failed, so there is no whole body to replay.
    #[must_use]
    pub fn is_failed(&self) -> bool {
        matches!(self.0, ReplayErrorKind::Failed)
    }

    /// A newer replay of the body has priority, so this handle (an older
    /// attempt's body) stopped where it would have read on from the
    /// original stream. Seen only as a body error of that older attempt.
    #[must_use]
    pub fn is_superseded(&self) -> bool {
        matches!(self.0, ReplayErrorKind::Superseded)
    }

    /// The cap that was passed, for [`is_too_large`](Self::is_too_large).
    #[must_use]
    pub fn cap(&self) -> Option<usize> {
        match self.0 {
            ReplayErrorKind::TooLarge { cap } => Some(cap),
            ReplayErrorKind::Failed | ReplayErrorKind::Superseded => None,
        }
    }
}

impl fmt::Display for ReplayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            ReplayErrorKind::TooLarge { cap } => {
                write!(
                    f,
                    "request body is larger than the replay cap of {cap} bytes"
                )
            }
            ReplayErrorKind::Failed => {
                f.write_str("request body stream failed, so it cannot be replayed")
            }
            ReplayErrorKind::Superseded => {
                f.write_str("request body was superseded by a newer replay of it")
            }
        }
    }
}

impl std::error::Error for ReplayError {}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full, StreamBody};
    use proptest::prelude::*;
    use std::collections::VecDeque;

    /// A body from a script of frames; it counts how often it was polled.
    struct Script {
        frames: VecDeque<Result<Frame<Bytes>, &'static str>>,
        hint: Option<u64>,
    }

    impl Body for Script {
        type Data = Bytes;
        type Error = BoxError;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            Poll::Ready(self.frames.pop_front().map(|r| r.map_err(Into::into)))
        }
        fn size_hint(&self) -> SizeHint {
            self.hint.map_or_else(SizeHint::new, SizeHint::with_exact)
        }
    }

    fn script(parts: &[&'static str], trailers: bool) -> Script {
        let mut frames: VecDeque<_> = parts
            .iter()
            .map(|p| Ok(Frame::data(Bytes::from_static(p.as_bytes()))))
            .collect();
        if trailers {
            let mut t = HeaderMap::new();
            t.insert("checksum", "abc".parse().unwrap());
            frames.push_back(Ok(Frame::trailers(t)));
        }
        Script {
            frames,
            hint: Some(parts.iter().map(|p| p.len() as u64).sum()),
        }
    }

    async fn frames(body: ReplayBody) -> (Vec<Bytes>, Option<HeaderMap>) {
        let collected = body.collect().await.unwrap();
        let trailers = collected.trailers().cloned();
        (vec![collected.to_bytes()], trailers)
    }

    async fn data_frames(mut body: ReplayBody) -> Result<Vec<Bytes>, BoxError> {
        let mut out = Vec::new();
        while let Some(f) = body.frame().await {
            if let Ok(d) = f?.into_data() {
                out.push(d);
            }
        }
        Ok(out)
    }

    #[tokio::test]
    async fn replay_yields_identical_frames_and_trailers() {
        let first = ReplayBody::new(script(&["ab", "cd", "ef"], true), 1024);
        let replay = first.try_replay().unwrap();
        let a = frames(first).await;
        let b = frames(replay).await;
        assert_eq!(a.0, vec![Bytes::from("abcdef")]);
        assert_eq!(a, b);
        assert_eq!(b.1.unwrap()["checksum"], "abc");
    }

    #[tokio::test]
    async fn frame_boundaries_are_kept() {
        let first = ReplayBody::new(script(&["ab", "cd"], false), 1024);
        let replay = first.try_replay().unwrap();
        assert_eq!(data_frames(first).await.unwrap(), ["ab", "cd"]);
        assert_eq!(data_frames(replay).await.unwrap(), ["ab", "cd"]);
    }

    #[tokio::test]
    async fn replay_taken_after_the_first_attempt_finished() {
        let first = ReplayBody::new(script(&["x", "y"], false), 1024);
        let keeper = first.try_replay().unwrap();
        assert_eq!(data_frames(first).await.unwrap(), ["x", "y"]);
        let again = keeper.try_replay().unwrap();
        assert_eq!(data_frames(again).await.unwrap(), ["x", "y"]);
        assert_eq!(data_frames(keeper).await.unwrap(), ["x", "y"]);
    }

    #[tokio::test]
    async fn replay_of_a_partly_sent_body_reads_on_from_the_original() {
        let mut first = ReplayBody::new(script(&["1", "2", "3"], false), 1024);
        let replay = first.try_replay().unwrap();
        let got = first.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(got, "1");
        drop(first); // the attempt failed mid-upload
        assert_eq!(data_frames(replay).await.unwrap(), ["1", "2", "3"]);
    }

    #[tokio::test]
    async fn past_the_cap_the_first_attempt_is_unaffected_and_replay_is_refused() {
        let first = ReplayBody::new(script(&["12345", "67890"], false), 8);
        let early = first.try_replay().unwrap();
        assert_eq!(data_frames(first).await.unwrap(), ["12345", "67890"]);
        let err = early.try_replay().unwrap_err();
        assert!(err.is_too_large());
        assert_eq!(err.cap(), Some(8));
        assert_eq!(
            err.to_string(),
            "request body is larger than the replay cap of 8 bytes"
        );
        // A handle taken before the overflow fails loudly instead of
        // yielding a truncated body.
        let e = data_frames(early).await.unwrap_err();
        assert!(e.downcast_ref::<ReplayError>().unwrap().is_too_large());
    }

    #[tokio::test]
    async fn a_body_exactly_at_the_cap_replays() {
        let first = ReplayBody::new(script(&["1234", "5678"], false), 8);
        let replay = first.try_replay().unwrap();
        data_frames(first).await.unwrap();
        assert!(replay.can_replay());
        assert_eq!(data_frames(replay).await.unwrap(), ["1234", "5678"]);
    }

    #[tokio::test]
    async fn a_failed_stream_cannot_be_replayed() {
        let mut s = script(&["a"], false);
        s.frames.push_back(Err("boom"));
        let first = ReplayBody::new(s, 1024);
        let handle = first.try_replay().unwrap();
        let err = data_frames(first).await.unwrap_err();
        assert_eq!(err.to_string(), "boom");
        assert!(handle.try_replay().unwrap_err().is_failed());
        assert!(!handle.can_replay());
    }

    #[tokio::test]
    async fn wrapping_a_replay_body_reuses_it() {
        let inner = ReplayBody::new(script(&["abc"], false), 1);
        let outer = ReplayBody::new(inner, 1024);
        // The inner cap of 1 byte still applies: one recording per call.
        let keeper = outer.try_replay().unwrap();
        data_frames(outer).await.unwrap();
        assert!(keeper.try_replay().unwrap_err().is_too_large());
    }

    #[tokio::test]
    async fn bodies_in_memory_replay_without_a_cap() {
        let big = Bytes::from(vec![7u8; 1 << 20]);
        let body = ReplayBody::from(big.clone());
        let replay = body.try_replay().unwrap();
        assert_eq!(body.size_hint().exact(), Some(1 << 20));
        assert_eq!(body.collect().await.unwrap().to_bytes(), big);
        assert_eq!(replay.collect().await.unwrap().to_bytes(), big);
    }

    #[tokio::test]
    async fn empty_bodies_need_no_recording() {
        let body = ReplayBody::new(http_body_util::Empty::<Bytes>::new(), 0);
        assert!(matches!(body.kind, Kind::Empty));
        assert!(body.is_end_stream());
        let full = ReplayBody::new(Full::new(Bytes::from_static(b"hi")), 1024);
        assert!(!full.is_end_stream());
        assert_eq!(full.size_hint().exact(), Some(2));
    }

    #[tokio::test]
    async fn size_hints_are_preserved() {
        let first = ReplayBody::new(script(&["ab", "cde"], false), 1024);
        assert_eq!(first.size_hint().exact(), Some(5));
        let replay = first.try_replay().unwrap();
        data_frames(first).await.unwrap();
        assert_eq!(replay.size_hint().exact(), Some(5));
        assert!(!replay.is_end_stream());
        let mut unknown = script(&["x"], false);
        unknown.hint = None;
        let b = ReplayBody::new(unknown, 10);
        assert_eq!(b.size_hint().upper(), None);
    }

    #[tokio::test]
    async fn end_of_stream_is_reported_after_the_last_frame() {
        let mut first = ReplayBody::new(script(&["a"], true), 1024);
        assert!(!first.is_end_stream());
        while first.frame().await.is_some() {}
        assert!(first.is_end_stream());
        let replay = first.try_replay().unwrap();
        assert!(
            !replay.is_end_stream(),
            "the replay still has a frame and trailers to give"
        );
    }

    #[tokio::test]
    async fn debug_never_prints_the_bytes() {
        let body = ReplayBody::from("secret-token-123");
        let streamed = ReplayBody::new(script(&["secret-token-123"], false), 64);
        assert!(!format!("{body:?}{streamed:?}").contains("secret"));
    }

    #[tokio::test]
    async fn works_with_generic_streams() {
        let stream =
            futures_util_like(vec![Ok::<_, std::io::Error>(Frame::data(Bytes::from("z")))]);
        let body = ReplayBody::new(StreamBody::new(stream), 16);
        let replay = body.try_replay().unwrap();
        assert_eq!(body.collect().await.unwrap().to_bytes(), "z");
        assert_eq!(replay.collect().await.unwrap().to_bytes(), "z");
    }

    fn futures_util_like<T: Unpin>(v: Vec<T>) -> impl futures_core::Stream<Item = T> + Unpin {
        struct Iter<T>(std::vec::IntoIter<T>);
        impl<T: Unpin> futures_core::Stream for Iter<T> {
            type Item = T;
            fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<T>> {
                Poll::Ready(self.0.next())
            }
        }
        Iter(v.into_iter())
    }

    /// A source like a channel or hyper's `Incoming`: it keeps only the
    /// waker of its last poll.
    #[derive(Clone, Default)]
    struct LastWaker(Arc<Mutex<Chan>>);

    #[derive(Default)]
    struct Chan {
        queue: VecDeque<Bytes>,
        closed: bool,
        waker: Option<Waker>,
        dropped: bool,
    }

    impl LastWaker {
        fn send(&self, data: &'static str) {
            let mut chan = self.0.lock().unwrap();
            chan.queue.push_back(Bytes::from_static(data.as_bytes()));
            if let Some(w) = chan.waker.take() {
                w.wake();
            }
        }
        fn close(&self) {
            let mut chan = self.0.lock().unwrap();
            chan.closed = true;
            if let Some(w) = chan.waker.take() {
                w.wake();
            }
        }
        fn dropped(&self) -> bool {
            self.0.lock().unwrap().dropped
        }
    }

    /// The receiving end, given to the `ReplayBody`.
    struct Receiver(LastWaker);

    impl Drop for Receiver {
        fn drop(&mut self) {
            (self.0).0.lock().unwrap().dropped = true;
        }
    }

    impl Body for Receiver {
        type Data = Bytes;
        type Error = BoxError;
        fn poll_frame(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            let mut chan = (self.0).0.lock().unwrap();
            if let Some(data) = chan.queue.pop_front() {
                return Poll::Ready(Some(Ok(Frame::data(data))));
            }
            if chan.closed {
                return Poll::Ready(None);
            }
            chan.waker = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    /// A waker that counts its wake-ups.
    #[derive(Default)]
    struct Counter(std::sync::atomic::AtomicUsize);

    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    impl Counter {
        fn woken(&self) -> usize {
            self.0.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    fn poll(body: &mut ReplayBody, waker: &Arc<Counter>) -> Poll<Option<Result<Bytes, String>>> {
        let waker = Waker::from(Arc::clone(waker));
        Pin::new(body)
            .poll_frame(&mut Context::from_waker(&waker))
            .map(|f| {
                f.map(|r| {
                    r.map(|f| f.into_data().unwrap_or_default())
                        .map_err(|e| e.to_string())
                })
            })
    }

    fn data(d: &'static str) -> Poll<Option<Result<Bytes, String>>> {
        Poll::Ready(Some(Ok(Bytes::from_static(d.as_bytes()))))
    }

    #[test]
    fn every_waiting_handle_is_woken_by_a_frame_from_a_source_that_keeps_one_waker() {
        let tx = LastWaker::default();
        let mut first = ReplayBody::new(Receiver(tx.clone()), 1024);
        let mut second = first.try_replay().unwrap();
        let (a, b) = (Arc::new(Counter::default()), Arc::new(Counter::default()));
        assert!(poll(&mut first, &a).is_pending());
        assert!(poll(&mut second, &b).is_pending());

        tx.send("frame");

        assert!(a.woken() > 0, "the first handle was never woken");
        assert!(b.woken() > 0, "the second handle was never woken");
        assert_eq!(poll(&mut second, &b), data("frame"));
        assert_eq!(poll(&mut first, &a), data("frame"));
    }

    #[test]
    fn a_waiting_handle_is_woken_after_the_last_poller_was_dropped() {
        let tx = LastWaker::default();
        let mut first = ReplayBody::new(Receiver(tx.clone()), 1024);
        let mut second = first.try_replay().unwrap();
        let (a, b) = (Arc::new(Counter::default()), Arc::new(Counter::default()));
        assert!(poll(&mut first, &a).is_pending());
        assert!(poll(&mut second, &b).is_pending());
        drop(second); // the re-send was abandoned

        tx.send("frame");

        assert!(a.woken() > 0, "the remaining handle was never woken");
        assert_eq!(poll(&mut first, &a), data("frame"));
        tx.close();
        assert_eq!(poll(&mut first, &a), Poll::Ready(None));
    }

    #[test]
    fn the_end_and_errors_of_the_source_wake_every_waiting_handle() {
        let tx = LastWaker::default();
        let mut first = ReplayBody::new(Receiver(tx.clone()), 1024);
        let mut second = first.try_replay().unwrap();
        let mut third = first.try_replay().unwrap();
        let counters: Vec<_> = (0..3).map(|_| Arc::new(Counter::default())).collect();
        assert!(poll(&mut first, &counters[0]).is_pending());
        assert!(poll(&mut second, &counters[1]).is_pending());
        assert!(poll(&mut third, &counters[2]).is_pending());

        tx.close();

        for (i, c) in counters.iter().enumerate() {
            assert!(c.woken() > 0, "handle {i} was never woken");
        }
        assert_eq!(poll(&mut third, &counters[2]), Poll::Ready(None));
        // The others see the end without reading the stream again.
        assert_eq!(poll(&mut second, &counters[1]), Poll::Ready(None));
        assert!(second.is_end_stream());
    }

    #[test]
    fn the_source_is_dropped_with_the_last_handle_even_if_it_keeps_a_waker() {
        let tx = LastWaker::default();
        let mut first = ReplayBody::new(Receiver(tx.clone()), 1024);
        let mut second = first.try_replay().unwrap();
        let a = Arc::new(Counter::default());
        assert!(poll(&mut first, &a).is_pending());
        assert!(poll(&mut second, &a).is_pending());
        drop((first, second));
        assert!(tx.dropped(), "the shared state leaked");
    }

    #[tokio::test]
    async fn a_replay_taken_mid_stream_is_not_cut_short_by_the_older_handle() {
        // Length unknown, 10 bytes against a cap of 8: the older handle
        // reading on would have dropped the recording under the replay.
        let mut unknown = script(&["12345", "67890"], false);
        unknown.hint = None;
        let mut first = ReplayBody::new(unknown, 8);
        assert_eq!(
            first.frame().await.unwrap().unwrap().into_data().unwrap(),
            "12345"
        );

        let replay = first.try_replay().expect("5 of 8 bytes recorded");
        // The older attempt's body (hyper still writing it after an early
        // 401 or 503) stops instead of reading on.
        let err = first.frame().await.unwrap().unwrap_err();
        let err = err.downcast_ref::<ReplayError>().unwrap();
        assert!(err.is_superseded());
        assert_eq!(
            err.to_string(),
            "request body was superseded by a newer replay of it"
        );
        assert!(first.frame().await.is_none());

        assert_eq!(data_frames(replay).await.unwrap(), ["12345", "67890"]);
    }

    #[tokio::test]
    async fn an_older_handle_reads_what_the_replay_recorded_then_stops() {
        let mut first = ReplayBody::new(script(&["a", "b", "c"], false), 1024);
        assert_eq!(
            first.frame().await.unwrap().unwrap().into_data().unwrap(),
            "a"
        );
        let mut replay = first.try_replay().unwrap();
        for want in ["a", "b"] {
            assert_eq!(
                replay.frame().await.unwrap().unwrap().into_data().unwrap(),
                want
            );
        }
        assert_eq!(
            first.frame().await.unwrap().unwrap().into_data().unwrap(),
            "b"
        );
        assert!(first.frame().await.unwrap().is_err());
        assert_eq!(
            replay.frame().await.unwrap().unwrap().into_data().unwrap(),
            "c"
        );
        assert!(replay.frame().await.is_none());
    }

    #[tokio::test]
    async fn a_keeper_taken_before_the_first_read_claims_nothing_until_it_reads() {
        // The retry layer keeps such a handle for the whole call.
        let first = ReplayBody::new(script(&["a", "b"], false), 1024);
        let keeper = first.try_replay().unwrap();
        assert_eq!(data_frames(first).await.unwrap(), ["a", "b"]);
        assert_eq!(
            data_frames(keeper.try_replay().unwrap()).await.unwrap(),
            ["a", "b"]
        );
    }

    #[tokio::test]
    async fn an_impossible_replay_is_refused_before_the_resend_starts() {
        let mut unknown = script(&["12345", "67890"], false);
        unknown.hint = None;
        let mut first = ReplayBody::new(unknown, 8);
        let keeper = first.try_replay().unwrap();
        while first.frame().await.is_some() {}
        assert!(!keeper.can_replay());
        let err = keeper.try_replay().unwrap_err();
        assert!(err.is_too_large());
        assert!(!err.is_superseded());
        assert_eq!(err.cap(), Some(8));
    }

    /// A source opened again for every replay, counting its openings; it
    /// fails to open once `gone` is set.
    #[derive(Clone, Default)]
    struct Source {
        opened: Arc<std::sync::atomic::AtomicUsize>,
        gone: Arc<std::sync::atomic::AtomicBool>,
    }

    impl Source {
        fn body(&self) -> ReplayBody {
            let source = self.clone();
            ReplayBody::reopen(Some(5), move || {
                source
                    .opened
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut s = script(&["ab", "cde"], false);
                if source.gone.load(std::sync::atomic::Ordering::SeqCst) {
                    s.frames = VecDeque::from([Err("no such file")]);
                }
                s
            })
        }

        fn opened(&self) -> usize {
            self.opened.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    #[tokio::test]
    async fn a_reopened_body_is_made_again_for_every_replay_and_only_when_read() {
        let source = Source::default();
        let first = source.body();
        let keeper = first.try_replay().unwrap();
        assert_eq!(
            source.opened(),
            0,
            "nothing is opened before the first poll"
        );
        assert_eq!(data_frames(first).await.unwrap(), ["ab", "cde"]);
        assert_eq!(source.opened(), 1);
        let again = keeper.try_replay().unwrap();
        assert_eq!(data_frames(again).await.unwrap(), ["ab", "cde"]);
        assert_eq!(source.opened(), 2);
        assert!(keeper.can_replay());
        drop(keeper);
        assert_eq!(source.opened(), 2, "a replay never sent opens nothing");
    }

    #[tokio::test]
    async fn a_reopened_body_has_no_cap() {
        let big = Bytes::from(vec![1u8; 1 << 20]);
        let source = big.clone();
        let first = ReplayBody::reopen(Some(1 << 20), move || Full::new(source.clone()));
        let keeper = first.try_replay().unwrap();
        assert_eq!(first.collect().await.unwrap().to_bytes(), big);
        let again = keeper
            .try_replay()
            .expect("nothing was recorded, nothing overflowed");
        assert_eq!(again.collect().await.unwrap().to_bytes(), big);
    }

    #[tokio::test]
    async fn a_reopened_body_says_its_length_and_its_end() {
        let mut body = Source::default().body();
        assert_eq!(body.size_hint().exact(), Some(5));
        assert!(!body.is_end_stream());
        body.frame().await.unwrap().unwrap();
        assert_eq!(body.size_hint().exact(), Some(3));
        body.frame().await.unwrap().unwrap();
        assert_eq!(body.size_hint().exact(), Some(0));
        assert!(body.frame().await.is_none());
        assert!(body.is_end_stream());
        let unknown = ReplayBody::reopen(None, || script(&["a"], false));
        assert_eq!(unknown.size_hint().upper(), None);
    }

    #[tokio::test]
    async fn a_source_that_fails_to_reopen_fails_that_attempt_only() {
        let source = Source::default();
        let first = source.body();
        let keeper = first.try_replay().unwrap();
        data_frames(first).await.unwrap();
        source.gone.store(true, std::sync::atomic::Ordering::SeqCst);
        let mut again = keeper.try_replay().unwrap();
        let err = again.frame().await.unwrap().unwrap_err();
        assert_eq!(err.to_string(), "no such file");
        assert!(again.frame().await.is_none());
        assert!(again.is_end_stream());
        // The next replay tries the source again.
        source
            .gone
            .store(false, std::sync::atomic::Ordering::SeqCst);
        let last = keeper.try_replay().unwrap();
        assert_eq!(data_frames(last).await.unwrap(), ["ab", "cde"]);
    }

    #[test]
    fn replay_bodies_stay_send_and_sync_and_small() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<ReplayBody>();
        // The bytes in memory and their replay, plus the tag.
        assert!(
            size_of::<ReplayBody>() <= size_of::<(Option<Bytes>, Bytes)>() + size_of::<usize>(),
            "the reopened kind is boxed: the others keep their size"
        );
    }

    #[tokio::test]
    async fn debug_of_a_reopened_body_shows_its_length_only() {
        let body = Source::default().body();
        assert_eq!(
            format!("{body:?}"),
            "ReplayBody::Reopen { len: Some(5), sent: 0 }"
        );
    }

    proptest! {
        #[test]
        fn replays_are_byte_identical(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..16), cap in 0usize..600) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            rt.block_on(async move {
                let total: usize = chunks.iter().map(Vec::len).sum();
                let frames = chunks.iter().map(|c| Ok(Frame::data(Bytes::from(c.clone())))).collect();
                let first = ReplayBody::new(Script { frames, hint: None }, cap);
                let replay = first.try_replay().unwrap();
                let sent = first.collect().await.unwrap().to_bytes();
                prop_assert_eq!(sent.len(), total);
                match replay.try_replay() {
                    Ok(again) => {
                        prop_assert!(total <= cap);
                        prop_assert_eq!(again.collect().await.unwrap().to_bytes(), sent);
                    }
                    Err(e) => {
                        prop_assert!(total > cap);
                        prop_assert!(e.is_too_large());
                    }
                }
                Ok(())
            })?;
        }
    }
}
