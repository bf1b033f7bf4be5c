//! The response body type, and streams over it.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use futures_core::Stream;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use parapet_core::BoxError;
use serde::de::DeserializeOwned;
use sync_wrapper::SyncWrapper;

use crate::error::{Error, Kind};

/// A response body: the bytes as they arrive, with every layer's body
/// timeouts and limits applied.
///
/// Polled directly (as an `http_body::Body`), a body that broke while its
/// request could be re-sent yields a
/// [`BodyRestart`](parapet_retry::BodyRestart) error; polling on after it
/// re-sends the request and yields the new response's body from its start
/// (see [`RetryBody`](parapet_retry::RetryBody)). Stop at the error to
/// have nothing re-sent.
///
/// `Send + Sync`, so a [`Response`](crate::Response) can be held by
/// reference across an `.await` in a spawned task or an axum handler. The
/// layers' bodies need not be `Sync`: the body is only ever polled through
/// `&mut`, and what `&self` methods report (`is_end_stream`, `size_hint`)
/// is read from the inner body after each frame and kept here.
pub struct Body {
    inner: SyncWrapper<UnsyncBoxBody<Bytes, BoxError>>,
    end_stream: bool,
    size_hint: SizeHint,
}

impl Body {
    /// Wraps any body whose data is `Bytes`.
    pub fn new<B>(body: B) -> Self
    where
        B: HttpBody<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let end_stream = body.is_end_stream();
        let size_hint = body.size_hint();
        Self {
            inner: SyncWrapper::new(body.map_err(Into::into).boxed_unsync()),
            end_stream,
            size_hint,
        }
    }

    /// An empty body.
    #[must_use]
    pub fn empty() -> Self {
        Self::new(http_body_util::Empty::new().map_err(|e: std::convert::Infallible| match e {}))
    }
}

impl HttpBody for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let inner = this.inner.get_mut();
        let polled = Pin::new(&mut *inner).poll_frame(cx);
        if polled.is_ready() {
            this.end_stream = inner.is_end_stream();
            this.size_hint = inner.size_hint();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.end_stream
    }

    fn size_hint(&self) -> SizeHint {
        self.size_hint
    }
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Body").finish_non_exhaustive()
    }
}

/// Whether a body's error is the retry layer's
/// [`BodyRestart`](parapet_retry::BodyRestart): what was read is to be
/// dropped, and polling again re-sends the request.
fn is_restart(e: &BoxError) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(&**e);
    while let Some(e) = cur {
        if e.is::<parapet_retry::BodyRestart>() {
            return true;
        }
        cur = e.source();
    }
    false
}

/// The facade error for a body's error: a body that broke and could not be
/// read again after a re-sent request
/// ([`BodyRestartFailed`](parapet_retry::BodyRestartFailed), or a
/// `BodyRestart` a streaming reader stops at) is a body error whatever
/// ended the re-sent call; anything else as the layers' errors say.
pub(crate) fn read_error(e: BoxError) -> Error {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(&*e);
    while let Some(c) = cur {
        if c.is::<parapet_retry::BodyRestart>() || c.is::<parapet_retry::BodyRestartFailed>() {
            return Error::new(Kind::Body, Some(e));
        }
        cur = c.source();
    }
    crate::classify::body_error(e)
}

/// Reads a body to its end, failing if it passes `limit` bytes.
///
/// A body that broke and whose request is being re-sent
/// ([`BodyRestart`](parapet_retry::BodyRestart)) is read again from the
/// start: what was collected is dropped.
pub(crate) async fn collect_limited(body: &mut Body, limit: usize) -> Result<Bytes, Error> {
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(frame) => frame,
            Err(e) if is_restart(&e) => {
                buf.clear();
                continue;
            }
            Err(e) => return Err(read_error(e)),
        };
        if let Ok(data) = frame.into_data() {
            if buf.len().saturating_add(data.len()) > limit {
                return Err(Error::new(
                    Kind::Body,
                    Some(format!("response body is larger than {limit} bytes").into()),
                ));
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

/// Reads at most `limit` bytes of a body, ignoring errors (for error
/// snippets); a body that broke and whose request is being re-sent is read
/// again from the start.
pub(crate) async fn snippet(body: &mut Body, limit: usize) -> Bytes {
    let mut buf = BytesMut::new();
    while buf.len() < limit {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    let take = data.len().min(limit - buf.len());
                    buf.extend_from_slice(data.get(..take).unwrap_or_default());
                }
            }
            Some(Err(e)) if is_restart(&e) => buf.clear(),
            _ => break,
        }
    }
    buf.freeze()
}

/// The body's data chunks as a stream, from
/// [`Response::bytes_stream`](crate::Response::bytes_stream).
///
/// After an error the stream ends. A body that breaks is not read again:
/// the chunks already yielded cannot be taken back, so a body the retry
/// layer could re-send ([`BodyRestart`](parapet_retry::BodyRestart)) ends
/// the stream with a body error too, and nothing is re-sent.
#[must_use = "streams do nothing unless polled"]
pub struct BytesStream {
    body: Body,
    done: bool,
}

impl BytesStream {
    pub(crate) fn new(body: Body) -> Self {
        Self { body, done: false }
    }
}

impl Stream for BytesStream {
    type Item = Result<Bytes, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        loop {
            match Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Ready(Some(Err(e))) => {
                    // NOTE: polling on would be the opt-in to a restart
                    // (the body from its start, after what was yielded).
                    self.done = true;
                    return Poll::Ready(Some(Err(read_error(e))));
                }
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        return Poll::Ready(Some(Ok(data)));
                    }
                }
            }
        }
    }
}

impl fmt::Debug for BytesStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BytesStream").finish_non_exhaustive()
    }
}

/// Newline-delimited JSON items, from
/// [`Response::ndjson`](crate::Response::ndjson).
///
/// Blank lines are skipped; a line that does not decode yields an error
/// naming the line number and the field path, and the stream goes on. An
/// error reading the body ends the stream; a body that breaks is not read
/// again (as with [`BytesStream`]), and nothing is re-sent.
#[must_use = "streams do nothing unless polled"]
pub struct NdjsonStream<T> {
    body: Body,
    buf: BytesMut,
    /// How much of `buf` is known to hold no newline, so that each byte is
    /// searched once however the body is split into frames.
    scanned: usize,
    /// Bytes searched for a newline so far (tests check it is linear).
    #[cfg(test)]
    examined: usize,
    line: u64,
    done: bool,
    max_line: usize,
    _item: std::marker::PhantomData<fn() -> T>,
}

impl<T> NdjsonStream<T> {
    pub(crate) fn new(body: Body, max_line: usize) -> Self {
        Self {
            body,
            buf: BytesMut::new(),
            scanned: 0,
            #[cfg(test)]
            examined: 0,
            line: 0,
            done: false,
            max_line,
            _item: std::marker::PhantomData,
        }
    }
}

impl<T: DeserializeOwned> NdjsonStream<T> {
    fn next_line(&mut self) -> Option<Bytes> {
        let unscanned = self.buf.get(self.scanned..).unwrap_or_default();
        #[cfg(test)]
        {
            self.examined += unscanned.len();
        }
        let Some(found) = unscanned.iter().position(|&b| b == b'\n') else {
            self.scanned = self.buf.len();
            return None;
        };
        let at = self.scanned + found;
        self.scanned = 0;
        let mut line = self.buf.split_to(at + 1);
        line.truncate(at);
        Some(line.freeze())
    }

    fn decode(&mut self, line: &[u8]) -> Option<Result<T, Error>> {
        self.line += 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            return None;
        }
        Some(crate::response::decode_json(line).map_err(|e| {
            let n = self.line;
            Error::decode(format!("line {n}: {}", ErrSource(&e)))
        }))
    }
}

struct ErrSource<'a>(&'a Error);

impl fmt::Display for ErrSource<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match std::error::Error::source(self.0) {
            Some(s) => write!(f, "{s}"),
            None => write!(f, "{}", self.0),
        }
    }
}

impl<T: DeserializeOwned> Stream for NdjsonStream<T> {
    type Item = Result<T, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            while let Some(line) = this.next_line() {
                if let Some(item) = this.decode(&line) {
                    return Poll::Ready(Some(item));
                }
            }
            if this.done {
                if this.buf.is_empty() {
                    return Poll::Ready(None);
                }
                let rest = this.buf.split().freeze();
                this.scanned = 0;
                if let Some(item) = this.decode(&rest) {
                    return Poll::Ready(Some(item));
                }
                continue;
            }
            if this.buf.len() > this.max_line {
                this.done = true;
                this.buf.clear();
                this.scanned = 0;
                return Poll::Ready(Some(Err(Error::new(
                    Kind::Body,
                    Some(format!("an NDJSON line is longer than {} bytes", this.max_line).into()),
                ))));
            }
            match Pin::new(&mut this.body).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => this.done = true,
                Poll::Ready(Some(Err(e))) => {
                    this.done = true;
                    this.buf.clear();
                    this.scanned = 0;
                    return Poll::Ready(Some(Err(read_error(e))));
                }
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(mut data) = frame.into_data() {
                        while data.has_remaining() {
                            let chunk = data.chunk();
                            let n = chunk.len();
                            this.buf.extend_from_slice(chunk);
                            data.advance(n);
                        }
                    }
                }
            }
        }
    }
}

impl<T> fmt::Debug for NdjsonStream<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NdjsonStream")
            .field("line", &self.line)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use futures_core::Stream;

    use super::*;

    /// A body that yields the frames it was given, one per poll.
    struct Frames(VecDeque<Bytes>);

    impl HttpBody for Frames {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
        }
    }

    fn next<S: Stream + Unpin>(s: &mut S) -> Option<S::Item> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match Pin::new(s).poll_next(&mut cx) {
            Poll::Ready(item) => item,
            Poll::Pending => panic!("the test body is always ready"),
        }
    }

    #[test]
    fn a_long_ndjson_line_in_one_byte_frames_is_searched_once() {
        // A 64 KiB string value, one byte a frame, then the newline: each
        // byte must be looked at once, not once per frame that follows it.
        let mut line = b"{\"v\":\"".to_vec();
        line.extend(std::iter::repeat_n(b'x', 64 * 1024));
        line.extend_from_slice(b"\"}\n{\"v\":\"y\"}\n");
        let frames = line.iter().map(|b| Bytes::copy_from_slice(&[*b])).collect();
        let mut stream =
            NdjsonStream::<serde_json::Value>::new(Body::new(Frames(frames)), 1024 * 1024);
        let first = next(&mut stream).unwrap().unwrap();
        assert_eq!(first["v"].as_str().map(str::len), Some(64 * 1024));
        let second = next(&mut stream).unwrap().unwrap();
        assert_eq!(second["v"], "y");
        assert!(next(&mut stream).is_none());
        assert!(
            stream.examined <= line.len(),
            "{} bytes searched for {} bytes of body",
            stream.examined,
            line.len()
        );
    }

    #[test]
    fn the_body_reports_its_end_and_size_after_each_frame() {
        let mut body = Body::new(http_body_util::Full::new(Bytes::from_static(b"abc")));
        assert_eq!(body.size_hint().exact(), Some(3));
        assert!(!body.is_end_stream());
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let frame = Pin::new(&mut body).poll_frame(&mut cx);
        assert!(matches!(frame, Poll::Ready(Some(Ok(_)))));
        assert!(body.is_end_stream());
        assert_eq!(body.size_hint().exact(), Some(0));
    }
}
