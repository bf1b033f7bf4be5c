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

use crate::error::{Error, Kind};

/// A response body: the bytes as they arrive, with every layer's body
/// timeouts and limits applied.
pub struct Body {
    inner: UnsyncBoxBody<Bytes, BoxError>,
}

impl Body {
    /// Wraps any body whose data is `Bytes`.
    pub fn new<B>(body: B) -> Self
    where
        B: HttpBody<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        Self {
            inner: body.map_err(Into::into).boxed_unsync(),
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
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Body").finish_non_exhaustive()
    }
}

/// Reads a body to its end, failing if it passes `limit` bytes.
pub(crate) async fn collect_limited(body: &mut Body, limit: usize) -> Result<Bytes, Error> {
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(crate::classify::body_error)?;
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
/// snippets).
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
            _ => break,
        }
    }
    buf.freeze()
}

/// The body's data chunks as a stream, from
/// [`Response::bytes_stream`](crate::Response::bytes_stream).
#[must_use = "streams do nothing unless polled"]
pub struct BytesStream {
    body: Body,
}

impl BytesStream {
    pub(crate) fn new(body: Body) -> Self {
        Self { body }
    }
}

impl Stream for BytesStream {
    type Item = Result<Bytes, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            match Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Ready(Some(Err(e))) => {
                    return Poll::Ready(Some(Err(crate::classify::body_error(e))));
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
/// naming the line number and the field path, and the stream goes on.
#[must_use = "streams do nothing unless polled"]
pub struct NdjsonStream<T> {
    body: Body,
    buf: BytesMut,
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
            line: 0,
            done: false,
            max_line,
            _item: std::marker::PhantomData,
        }
    }
}

impl<T: DeserializeOwned> NdjsonStream<T> {
    fn next_line(&mut self) -> Option<Bytes> {
        let at = self.buf.iter().position(|&b| b == b'\n')?;
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
                if let Some(item) = this.decode(&rest) {
                    return Poll::Ready(Some(item));
                }
                continue;
            }
            if this.buf.len() > this.max_line {
                this.done = true;
                this.buf.clear();
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
                    return Poll::Ready(Some(Err(crate::classify::body_error(e))));
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
