//! Stand-ins for the unit tests: a scripted body, a drop flag, and a timing
//! assertion for paused time.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame};
use tokio::time::{Instant, Sleep, sleep};

/// Set when the value holding it is dropped.
#[derive(Debug, Default)]
pub(crate) struct DropFlag(Arc<AtomicBool>);

impl DropFlag {
    /// A flag, and a probe that reads it.
    pub(crate) fn new() -> (Self, Arc<AtomicBool>) {
        let flag = Arc::new(AtomicBool::new(false));
        (Self(Arc::clone(&flag)), flag)
    }
}

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A body that yields each frame after its delay (counted from the previous
/// frame), then ends, or stalls forever if told to.
#[derive(Debug)]
pub(crate) struct Script {
    frames: VecDeque<(Duration, Bytes)>,
    sleep: Option<Pin<Box<Sleep>>>,
    stall_at_end: bool,
    _flag: Option<DropFlag>,
}

impl Script {
    pub(crate) fn new(frames: impl IntoIterator<Item = (Duration, &'static str)>) -> Self {
        Self {
            frames: frames
                .into_iter()
                .map(|(d, s)| (d, Bytes::from_static(s.as_bytes())))
                .collect(),
            sleep: None,
            stall_at_end: false,
            _flag: None,
        }
    }

    /// `n` frames of "x", one every `every`.
    pub(crate) fn drip(n: usize, every: Duration) -> Self {
        Self::new(std::iter::repeat_n((every, "x"), n))
    }

    pub(crate) fn then_stall(mut self) -> Self {
        self.stall_at_end = true;
        self
    }

    pub(crate) fn with_flag(mut self, flag: DropFlag) -> Self {
        self._flag = Some(flag);
        self
    }
}

impl Body for Script {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let Some(&(delay, _)) = self.frames.front() else {
            return if self.stall_at_end {
                Poll::Pending
            } else {
                Poll::Ready(None)
            };
        };
        let sleep = self.sleep.get_or_insert_with(|| Box::pin(sleep(delay)));
        ready!(sleep.as_mut().poll(cx));
        self.sleep = None;
        let (_, data) = self.frames.pop_front().unwrap();
        Poll::Ready(Some(Ok(Frame::data(data))))
    }
}

/// Asserts that `start.elapsed()` is `expected`, to the timer's millisecond.
#[track_caller]
pub(crate) fn assert_elapsed(start: Instant, expected: Duration) {
    let elapsed = start.elapsed();
    assert!(
        elapsed >= expected && elapsed <= expected + Duration::from_millis(1),
        "elapsed {elapsed:?}, expected {expected:?}"
    );
}
