//! Streaming request bodies: from a [`Stream`] of bytes, from an
//! [`AsyncRead`], and from a file.
//!
//! These are request bodies and nothing more: they sit below nothing and
//! above nothing in the stack, every layer sees them as the request's
//! [`ReplayBody`]. What differs is how each one is sent again, when a retry,
//! a 307/308 redirect or a re-send after a 401 needs it:
//!
//! | body | setter | sent again |
//! |---|---|---|
//! | bytes, JSON, a form | [`RequestBuilder::body`], [`json`](RequestBuilder::json), [`form`](RequestBuilder::form) | always: the bytes are in memory |
//! | a stream | [`RequestBuilder::body_stream`] | if it was no longer than the client's replay cap ([`ClientBuilder::replay_cap`](crate::ClientBuilder::replay_cap), default 64 KiB): what was sent is kept up to the cap |
//! | an `AsyncRead` | [`RequestBuilder::body_reader`] | as a stream |
//! | a file | [`RequestBuilder::body_file`] | always: the file is opened again and read from the start; nothing is kept in memory |
//!
//! A body that cannot be sent again is not an error: the call returns the
//! first answer as it is, with the typed reason in its extensions
//! ([`NotRetried`](parapet_retry::NotRetried) with
//! [`BodyNotReplayable`](parapet_retry::NotRetriedReason::BodyNotReplayable)
//! after a retryable status, [`RedirectNotFollowed`](crate::RedirectNotFollowed)
//! after a 307 or 308). Only idempotent requests are retried: a `PUT` of
//! a file is, a `POST` needs [`RequestBuilder::idempotency_key`] or
//! [`RequestBuilder::retry`].
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), parapet::Error> {
//! use parapet_testkit::{Reply, Server};
//!
//! let api = Server::start().await;
//! api.on("/upload").replies([Reply::status(503), Reply::ok()]);
//!
//! let path = std::env::temp_dir().join(format!("parapet-doc-upload-{}", std::process::id()));
//! std::fs::write(&path, b"the file's bytes").unwrap();
//!
//! let client = parapet::Client::new().unwrap();
//! let resp = client.put(&api.url("/upload")).body_file(&path).await?.send().await?;
//! assert_eq!(resp.status(), 200);
//!
//! // The 503 was retried: the file was read again from the start.
//! let arrivals = api.arrivals_for("/upload");
//! assert_eq!(arrivals.len(), 2);
//! assert!(arrivals.iter().all(|a| a.body == "the file's bytes"));
//! assert_eq!(arrivals[1].header("content-length"), Some("16"));
//! # std::fs::remove_file(&path).unwrap();
//! # Ok(()) }
//! ```

use std::fmt;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures_core::Stream;
use http_body::{Body as HttpBody, Frame, SizeHint};
use parapet_core::{BoxError, ReplayBody};
use tokio::io::{AsyncRead, ReadBuf};

use crate::client::{Client, RequestBuilder};
use crate::error::Error;

/// How many bytes a reader or a file is read in at a time.
const CHUNK: usize = 32 * 1024;

impl RequestBuilder {
    /// A body streamed from `stream`, chunk by chunk, with
    /// `Transfer-Encoding: chunked` (its length is not known).
    ///
    /// Replay: what was sent is kept up to the client's replay cap
    /// ([`ClientBuilder::replay_cap`](crate::ClientBuilder::replay_cap),
    /// default 64 KiB), so a retry, a 307/308 redirect or a re-send after a
    /// 401 sends it again; a longer stream is sent once and the first
    /// answer comes back with the reason (see the [module docs](crate::upload)).
    /// An error from the stream fails the attempt, and is not retried over
    /// a stream that cannot be replayed.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), parapet::Error> {
    /// use bytes::Bytes;
    /// use parapet_testkit::{Reply, Server};
    ///
    /// let api = Server::start().await;
    /// api.on("/logs").reply(Reply::ok());
    ///
    /// // Any `Stream<Item = Result<Bytes, E>>`: a channel, a generator, a download.
    /// let lines = ["one\n", "two\n"].map(|l| Ok::<_, std::io::Error>(Bytes::from(l)));
    /// let stream = futures_util::stream::iter(lines);
    ///
    /// let client = parapet::Client::new().unwrap();
    /// client.put(&api.url("/logs")).body_stream(stream).send().await?;
    /// assert_eq!(api.arrivals()[0].body, "one\ntwo\n");
    /// assert_eq!(api.arrivals()[0].header("transfer-encoding"), Some("chunked"));
    /// # Ok(()) }
    /// ```
    pub fn body_stream<S, E>(mut self, stream: S) -> Self
    where
        S: Stream<Item = Result<Bytes, E>> + Send + 'static,
        E: Into<BoxError>,
    {
        self.body = ReplayBody::new(StreamBody { stream }, replay_cap(&self.client));
        self
    }

    /// A body read from `reader` until its end, in chunks of up to 32 KiB,
    /// with `Transfer-Encoding: chunked`.
    ///
    /// Replay: as [`body_stream`](Self::body_stream), up to the client's
    /// replay cap. For a file, prefer [`body_file`](Self::body_file):
    /// it sends the length and is always replayable.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), parapet::Error> {
    /// use parapet_testkit::{Reply, Server};
    ///
    /// let api = Server::start().await;
    /// api.on("/upload").reply(Reply::ok());
    ///
    /// // Anything `AsyncRead`: a socket, a pipe, a decompressor, a slice.
    /// let reader: &'static [u8] = b"read from a reader";
    /// let client = parapet::Client::new().unwrap();
    /// client.put(&api.url("/upload")).body_reader(reader).send().await?;
    /// assert_eq!(api.arrivals()[0].body, "read from a reader");
    /// # Ok(()) }
    /// ```
    pub fn body_reader<R>(mut self, reader: R) -> Self
    where
        R: AsyncRead + Send + 'static,
    {
        self.body = ReplayBody::new(ReaderBody::new(reader), replay_cap(&self.client));
        self
    }

    /// A body read from the file at `path`, with a `Content-Length` from
    /// its metadata.
    ///
    /// The file is opened here, once, to learn its length, and this is
    /// where a missing or unreadable file is reported, as `open()` in
    /// Python and `tokio::fs::File::open` under reqwest do: the error's
    /// [`is_request`](Error::is_request) is true and nothing was sent. The
    /// bytes are read while the request is sent, 32 KiB at a time.
    ///
    /// Replay: always possible, with no cap: a retry, a 307/308 redirect or
    /// a re-send after a 401 opens the file again and reads it from the
    /// start. A file that cannot be opened again (removed since), or that
    /// is no longer the length it had here, fails that attempt with a
    /// [`FileBodyError`] in the error's source chain; nothing truncated or
    /// longer than announced is sent.
    ///
    /// # Errors
    ///
    /// When the file cannot be opened or its metadata read, or it is not a
    /// regular file.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), parapet::Error> {
    /// use parapet_testkit::{Reply, Server};
    ///
    /// let api = Server::start().await;
    /// api.on("/upload").reply(Reply::ok());
    /// let path = std::env::temp_dir().join(format!("parapet-doc-file-{}", std::process::id()));
    /// std::fs::write(&path, b"0123456789").unwrap();
    ///
    /// let client = parapet::Client::new().unwrap();
    /// client.put(&api.url("/upload")).body_file(&path).await?.send().await?;
    /// assert_eq!(api.arrivals()[0].body, "0123456789");
    /// assert_eq!(api.arrivals()[0].header("content-length"), Some("10"));
    ///
    /// // A missing file is reported at once, before anything is sent.
    /// std::fs::remove_file(&path).unwrap();
    /// let err = client.put(&api.url("/upload")).body_file(&path).await.unwrap_err();
    /// assert!(err.is_request());
    /// # Ok(()) }
    /// ```
    pub async fn body_file(mut self, path: impl AsRef<Path>) -> Result<Self, Error> {
        let file = FileSource::open(path.as_ref()).await?;
        self.body = file.into_body();
        Ok(self)
    }
}

/// The replay cap of `client`'s streamed bodies: the one it was built with.
pub(crate) fn replay_cap(client: &Client) -> usize {
    client.replay_cap()
}

/// A file to be sent as a body (or a multipart part), opened again for
/// every attempt.
#[derive(Clone, Debug)]
pub(crate) struct FileSource {
    path: Arc<Path>,
    len: u64,
}

impl FileSource {
    /// Opens `path` once for its length: errors here are the caller's to
    /// see before anything is sent.
    pub(crate) async fn open(path: &Path) -> Result<Self, Error> {
        let failed = |source| {
            Error::request(FileBodyError {
                path: path.to_path_buf(),
                kind: FileErrorKind::Open,
                source: Some(source),
            })
        };
        let file = tokio::fs::File::open(path).await.map_err(failed)?;
        let meta = file.metadata().await.map_err(failed)?;
        if !meta.is_file() {
            return Err(Error::request(FileBodyError {
                path: path.to_path_buf(),
                kind: FileErrorKind::NotAFile,
                source: None,
            }));
        }
        Ok(Self {
            path: Arc::from(path),
            len: meta.len(),
        })
    }

    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// A body reading the file from the start; it opens the file on its
    /// first poll.
    pub(crate) fn body(&self) -> FileBody {
        FileBody {
            source: self.clone(),
            state: FileState::Closed,
            left: self.len,
        }
    }

    /// The file as a request body that reopens it for every replay.
    pub(crate) fn into_body(self) -> ReplayBody {
        let len = self.len;
        ReplayBody::reopen(Some(len), move || self.body())
    }
}

type Opening = Pin<Box<dyn Future<Output = io::Result<(tokio::fs::File, u64)>> + Send>>;

/// The body of one attempt's read of a file: opened on the first poll,
/// checked against the length announced, read to its end.
pub(crate) struct FileBody {
    source: FileSource,
    state: FileState,
    /// Bytes still to come, by the length announced.
    left: u64,
}

enum FileState {
    Closed,
    Opening(Opening),
    Reading(ReaderBody<tokio::fs::File>),
    Done,
}

impl FileBody {
    fn fail(&mut self, kind: FileErrorKind, source: Option<io::Error>) -> BoxError {
        self.state = FileState::Done;
        Box::new(FileBodyError {
            path: self.source.path.to_path_buf(),
            kind,
            source,
        })
    }
}

impl HttpBody for FileBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            match &mut this.state {
                FileState::Closed => {
                    let path = Arc::clone(&this.source.path);
                    this.state = FileState::Opening(Box::pin(async move {
                        let file = tokio::fs::File::open(&*path).await?;
                        let len = file.metadata().await?.len();
                        Ok((file, len))
                    }));
                }
                FileState::Opening(opening) => match ready!(opening.as_mut().poll(cx)) {
                    Ok((file, len)) if len == this.source.len => {
                        this.state = FileState::Reading(ReaderBody::new(file));
                    }
                    Ok((_, found)) => {
                        let expected = this.source.len;
                        let kind = FileErrorKind::Changed { expected, found };
                        return Poll::Ready(Some(Err(this.fail(kind, None))));
                    }
                    Err(e) => {
                        return Poll::Ready(Some(Err(this.fail(FileErrorKind::Open, Some(e)))));
                    }
                },
                FileState::Reading(reader) => {
                    return match ready!(reader.poll_chunk(cx)) {
                        Ok(Some(data)) => {
                            let n = data.len() as u64;
                            if n > this.left {
                                let kind = FileErrorKind::Changed {
                                    expected: this.source.len,
                                    found: this.source.len - this.left + n,
                                };
                                return Poll::Ready(Some(Err(this.fail(kind, None))));
                            }
                            this.left -= n;
                            Poll::Ready(Some(Ok(Frame::data(data))))
                        }
                        Ok(None) if this.left == 0 => {
                            this.state = FileState::Done;
                            Poll::Ready(None)
                        }
                        Ok(None) => {
                            let kind = FileErrorKind::Changed {
                                expected: this.source.len,
                                found: this.source.len - this.left,
                            };
                            Poll::Ready(Some(Err(this.fail(kind, None))))
                        }
                        Err(e) => Poll::Ready(Some(Err(this.fail(FileErrorKind::Read, Some(e))))),
                    };
                }
                FileState::Done => return Poll::Ready(None),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, FileState::Done)
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

impl fmt::Debug for FileBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileBody")
            .field("path", &self.source.path)
            .field("left", &self.left)
            .finish_non_exhaustive()
    }
}

/// A file given as a request body could not be opened or read, or no
/// longer has the length it had when the request was built.
///
/// Returned by [`RequestBuilder::body_file`] and
/// [`Part::file`](crate::multipart::Part::file) (inside an [`Error`] whose
/// [`is_request`](Error::is_request) is true) when the file cannot be
/// opened; found in the source chain of a call's error when a replay could
/// not reopen it.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use std::error::Error as _;
/// use parapet::upload::FileBodyError;
///
/// let client = parapet::Client::new().unwrap();
/// let err = client.put("http://127.0.0.1:9/").body_file("/no/such/file").await.unwrap_err();
/// let file_err = err.source().and_then(|e| e.downcast_ref::<FileBodyError>()).unwrap();
/// assert_eq!(file_err.path(), std::path::Path::new("/no/such/file"));
/// assert!(file_err.to_string().starts_with("cannot open request body file /no/such/file"));
/// # }
/// ```
#[derive(Debug)]
pub struct FileBodyError {
    path: PathBuf,
    kind: FileErrorKind,
    source: Option<io::Error>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileErrorKind {
    Open,
    NotAFile,
    Read,
    Changed { expected: u64, found: u64 },
}

impl FileBodyError {
    /// The file's path, as it was given.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file was there and readable, but its length is not the one it
    /// had when the request was built (and announced in `Content-Length`).
    #[must_use]
    pub fn is_changed(&self) -> bool {
        matches!(self.kind, FileErrorKind::Changed { .. })
    }
}

impl fmt::Display for FileBodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.path.display();
        match self.kind {
            FileErrorKind::Open => write!(f, "cannot open request body file {path}"),
            FileErrorKind::NotAFile => write!(f, "request body file {path} is not a regular file"),
            FileErrorKind::Read => write!(f, "cannot read request body file {path}"),
            FileErrorKind::Changed { expected, found } => write!(
                f,
                "request body file {path} changed: {found} bytes where {expected} were announced"
            ),
        }?;
        if let Some(e) = &self.source {
            write!(f, ": {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for FileBodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_ref().map(|e| e as _)
    }
}

pin_project_lite::pin_project! {
    /// A `Stream` of bytes as a body of data frames.
    pub(crate) struct StreamBody<S> {
        #[pin]
        pub(crate) stream: S,
    }
}

impl<S, E> HttpBody for StreamBody<S>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut stream = self.project().stream;
        loop {
            return match ready!(stream.as_mut().poll_next(cx)) {
                // An empty chunk would be an empty frame: skipped.
                Some(Ok(data)) if data.is_empty() => continue,
                Some(Ok(data)) => Poll::Ready(Some(Ok(Frame::data(data)))),
                Some(Err(e)) => Poll::Ready(Some(Err(e.into()))),
                None => Poll::Ready(None),
            };
        }
    }
}

/// An `AsyncRead` as a body of data frames, read until its end.
pub(crate) struct ReaderBody<R> {
    reader: Pin<Box<R>>,
    /// Reused for every read; each chunk is copied out of it, so a slow
    /// reader's small chunks do not each keep a whole buffer alive in a
    /// replay recording.
    buf: Box<[u8]>,
    done: bool,
}

impl<R: AsyncRead> ReaderBody<R> {
    pub(crate) fn new(reader: R) -> Self {
        Self {
            reader: Box::pin(reader),
            buf: Box::default(),
            done: false,
        }
    }

    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Bytes>>> {
        if self.done {
            return Poll::Ready(Ok(None));
        }
        if self.buf.is_empty() {
            self.buf = vec![0; CHUNK].into_boxed_slice();
        }
        let mut read = ReadBuf::new(&mut self.buf);
        if let Err(e) = ready!(self.reader.as_mut().poll_read(cx, &mut read)) {
            self.done = true;
            return Poll::Ready(Err(e));
        }
        if read.filled().is_empty() {
            self.done = true;
            self.buf = Box::default();
            return Poll::Ready(Ok(None));
        }
        Poll::Ready(Ok(Some(Bytes::copy_from_slice(read.filled()))))
    }
}

impl<R: AsyncRead> HttpBody for ReaderBody<R> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match ready!(self.get_mut().poll_chunk(cx)) {
            Ok(Some(data)) => Poll::Ready(Some(Ok(Frame::data(data)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e.into()))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn temp_file(name: &str, bytes: &[u8]) -> PathBuf {
        let path = std::env::temp_dir().join(format!(
            "parapet-upload-unit-{name}-{}-{:x}",
            std::process::id(),
            parapet_core::random_u64()
        ));
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[tokio::test]
    async fn a_file_body_is_read_whole_and_reopened_for_a_replay() {
        let data: Vec<u8> = (0..100_000u32)
            .map(|i| u8::try_from(i % 251).unwrap())
            .collect();
        let path = temp_file("whole", &data);
        let source = FileSource::open(&path).await.unwrap();
        let body = source.into_body();
        assert_eq!(body.size_hint().exact(), Some(100_000));
        let replay = body.try_replay().unwrap();
        assert_eq!(body.collect().await.unwrap().to_bytes(), data);
        assert_eq!(replay.collect().await.unwrap().to_bytes(), data);
        std::fs::remove_file(&path).unwrap();
    }

    #[tokio::test]
    async fn a_file_that_changed_length_fails_instead_of_sending_something_else() {
        let path = temp_file("changed", b"12345");
        let source = FileSource::open(&path).await.unwrap();
        std::fs::write(&path, b"1234567").unwrap();
        let err = source.body().collect().await.unwrap_err();
        let err = err.downcast_ref::<FileBodyError>().unwrap();
        assert!(err.is_changed());
        assert!(
            err.to_string()
                .ends_with("changed: 7 bytes where 5 were announced"),
            "{err}"
        );
        std::fs::remove_file(&path).unwrap();
    }

    #[tokio::test]
    async fn a_removed_file_fails_the_attempt_with_its_path() {
        let path = temp_file("removed", b"12345");
        let source = FileSource::open(&path).await.unwrap();
        std::fs::remove_file(&path).unwrap();
        let err = source.body().collect().await.unwrap_err();
        let err = err.downcast_ref::<FileBodyError>().unwrap();
        assert_eq!(err.path(), path);
        assert!(!err.is_changed());
        assert!(std::error::Error::source(err).is_some());
    }

    #[tokio::test]
    async fn a_directory_is_refused_when_the_body_is_set() {
        let err = FileSource::open(&std::env::temp_dir()).await.unwrap_err();
        assert!(err.is_request());
    }

    #[tokio::test]
    async fn a_reader_is_read_in_chunks_to_its_end() {
        let data = vec![7u8; CHUNK * 2 + 10];
        let body = ReaderBody::new(io::Cursor::new(data.clone()));
        let mut body = std::pin::pin!(body);
        let mut sizes = Vec::new();
        while let Some(frame) = body.frame().await {
            sizes.push(frame.unwrap().into_data().unwrap().len());
        }
        assert_eq!(sizes, [CHUNK, CHUNK, 10]);
        assert!(body.is_end_stream());
    }
}
