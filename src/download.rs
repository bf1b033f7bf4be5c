//! Downloads to a file or any `AsyncWrite`, with progress, resumed with
//! `Range` after a body that breaks, and an optional checksum.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), parapet::Error> {
//! use parapet_testkit::{Reply, Server};
//!
//! let api = Server::start().await;
//! api.on("/export.csv").reply(Reply::ok().body("id,name\n1,ada\n"));
//!
//! let client = parapet::Client::new().unwrap();
//! let mut out = Vec::new();
//! let done = client
//!     .get(&api.url("/export.csv"))
//!     .download()
//!     .on_progress(|p| println!("{} of {:?} bytes", p.bytes(), p.total()))
//!     .to_writer(&mut out)
//!     .await?;
//! assert_eq!(out, b"id,name\n1,ada\n");
//! assert_eq!(done.bytes(), 14);
//! # Ok(()) }
//! ```
//!
//! # A body that breaks
//!
//! The body is read as a stream ([`Response::bytes_stream`]): its first
//! error stops the read, and the retry layer does not re-send the request
//! for it (a streaming read is never restarted from byte 0 behind the
//! writer's back). The download then decides, for a GET, within
//! [`Download::max_attempts`]:
//!
//! - when the server said it serves ranges (`Accept-Ranges: bytes`) and
//!   gave a validator (a strong `ETag`, else `Last-Modified`), it asks for
//!   the rest: `Range: bytes=<written>-` with `If-Range: <validator>`. A
//!   `206` is checked (its `Content-Range` starts where the writer is and
//!   has the same total, its `ETag` is the same) before a byte of it is
//!   written;
//! - otherwise, or when the server answers the range request with a `200`
//!   (it ignores ranges, or the resource changed and `If-Range` said so),
//!   or with a `206` that does not match, it starts again from byte 0: a
//!   file is truncated, a writer that cannot be rewound fails the download
//!   with a [`DownloadError`] ([`is_not_rewindable`](DownloadError::is_not_rewindable)).
//!
//! Every request, resumes included, goes through the client's whole stack
//! (retries of its own, limits, auth, the client's deadline for that
//! request). The result is the whole body or an error: the bytes written
//! are checked against the `Content-Length` (or the `Content-Range` total),
//! and against the checksum when one is given. Responses are asked for
//! without compression (`Accept-Encoding: identity`), so that byte offsets
//! are the file's.

use std::fmt;
use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

use futures_core::Stream;
use http::header::{
    ACCEPT_ENCODING, ACCEPT_RANGES, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_RANGE, ETAG,
    HeaderValue, IF_RANGE, LAST_MODIFIED, RANGE,
};
use http::{HeaderMap, Method, Request, StatusCode};
use parapet_core::ReplayBody;
use tokio::io::{AsyncSeekExt, AsyncWrite, AsyncWriteExt};

use crate::client::RequestBuilder;
use crate::error::{Error, Kind};
use crate::{Client, Response};

/// The attempts a download makes unless told otherwise.
const DEFAULT_ATTEMPTS: u32 = 3;

/// A hash computed over the downloaded bytes, for [`Download::checksum`].
///
/// Wrap the hasher you use (sha2's `Sha256`, blake3, a CRC):
///
/// ```
/// /// A toy digest: the sum of the bytes.
/// struct Sum(u64);
///
/// impl parapet::download::Digest for Sum {
///     fn update(&mut self, data: &[u8]) {
///         self.0 = data.iter().fold(self.0, |s, b| s.wrapping_add(u64::from(*b)));
///     }
///     fn finish(&mut self) -> Vec<u8> {
///         self.0.to_be_bytes().to_vec()
///     }
/// }
/// ```
pub trait Digest: Send {
    /// Adds the next bytes.
    fn update(&mut self, data: &[u8]);
    /// The digest of every byte added.
    fn finish(&mut self) -> Vec<u8>;
}

/// Where a download is, for a progress display (`indicatif`'s
/// `set_length(total)` and `set_position(bytes)`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    bytes: u64,
    total: Option<u64>,
    rate: f64,
}

impl Progress {
    /// The bytes written so far (back to 0 when a download starts again).
    #[must_use]
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The whole length, when the server said it.
    #[must_use]
    pub fn total(&self) -> Option<u64> {
        self.total
    }

    /// The bytes received per second since the download began, every
    /// attempt included.
    #[must_use]
    pub fn bytes_per_second(&self) -> f64 {
        self.rate
    }
}

/// What a finished download did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Downloaded {
    bytes: u64,
    attempts: u32,
    resumed: u32,
}

impl Downloaded {
    /// The length of what was written: the whole body.
    #[must_use]
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The requests sent (1 when nothing broke), not counting the retries
    /// the stack made within each.
    #[must_use]
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// How many of them resumed with `Range` where the writer was.
    #[must_use]
    pub fn resumed(&self) -> u32 {
        self.resumed
    }
}

type ProgressFn = Box<dyn FnMut(Progress) + Send>;
type DigestFn = Box<dyn Fn() -> Box<dyn Digest> + Send>;

impl RequestBuilder {
    /// Downloads the response body of this request (a GET, for it to be
    /// resumed): see the [`download`](crate::download) module. Nothing is
    /// sent until [`Download::to_file`] or [`Download::to_writer`] is
    /// awaited.
    pub fn download(self) -> Download {
        Download {
            client: self.client,
            parts: self.parts,
            progress: None,
            checksum: None,
            max_attempts: DEFAULT_ATTEMPTS,
        }
    }
}

/// A download being set up, from [`RequestBuilder::download`].
#[must_use = "a download does nothing until to_file or to_writer is awaited"]
pub struct Download {
    client: Client,
    parts: Result<Request<()>, Error>,
    progress: Option<ProgressFn>,
    checksum: Option<(Vec<u8>, DigestFn)>,
    max_attempts: u32,
}

impl Download {
    /// Calls `f` when each response's headers arrive (with the total,
    /// when known) and after each chunk is written. Default: none.
    pub fn on_progress(mut self, f: impl FnMut(Progress) + Send + 'static) -> Self {
        self.progress = Some(Box::new(f));
        self
    }

    /// Checks the downloaded bytes against `expected`, the digest `new`'s
    /// digests make; a mismatch fails the download with a
    /// [`DownloadError`] ([`is_checksum_mismatch`](DownloadError::is_checksum_mismatch)).
    /// A download that starts again starts a new digest. Default: none.
    pub fn checksum<D, F>(mut self, expected: impl Into<Vec<u8>>, new: F) -> Self
    where
        D: Digest + 'static,
        F: Fn() -> D + Send + 'static,
    {
        self.checksum = Some((
            expected.into(),
            Box::new(move || Box::new(new()) as Box<dyn Digest>),
        ));
        self
    }

    /// The most requests the download sends, the first one included: a
    /// body that breaks is resumed or started again while attempts are
    /// left. 0 counts as 1. Default: 3.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// Downloads into the file at `path`, created or truncated. A download
    /// that has to start again truncates it. On an error the file holds
    /// what was written so far.
    ///
    /// # Errors
    ///
    /// What [`RequestBuilder::send`] and [`Response::error_for_status`]
    /// fail with; a body error when the body broke and no attempt was
    /// left; a [`DownloadError`] (in a body error) for a short body, a
    /// checksum mismatch or a failed write.
    pub async fn to_file(self, path: impl AsRef<Path>) -> Result<Downloaded, Error> {
        let file = tokio::fs::File::create(path.as_ref())
            .await
            .map_err(|e| DownloadError::new(Problem::Write(e)).into_error())?;
        let mut sink = FileSink(file);
        self.run(&mut sink).await
    }

    /// Downloads into `writer`. A writer cannot be rewound: when the
    /// download has to start again after bytes were written, it fails
    /// with a [`DownloadError`] for which
    /// [`is_not_rewindable`](DownloadError::is_not_rewindable) is true.
    ///
    /// # Errors
    ///
    /// As [`to_file`](Self::to_file), and the error above.
    pub async fn to_writer<W>(self, writer: &mut W) -> Result<Downloaded, Error>
    where
        W: AsyncWrite + Unpin + Send,
    {
        let mut sink = WriterSink(writer);
        self.run(&mut sink).await
    }

    async fn run<S: Sink>(mut self, sink: &mut S) -> Result<Downloaded, Error> {
        let template = std::mem::replace(&mut self.parts, Err(Error::request("taken")))?;
        let may_resume = template.method() == Method::GET;
        let started = tokio::time::Instant::now();
        let mut at = Position::default();
        let mut digest = self.new_digest();
        let mut received: u64 = 0;
        let mut attempts = 0;
        let mut resumed = 0;
        loop {
            attempts += 1;
            let ranged = at.written > 0;
            let resp = self.send(&template, ranged.then_some(&at)).await?;
            let headers = resp.headers().clone();
            match (ranged, resp.status()) {
                (true, StatusCode::PARTIAL_CONTENT) if at.matches(&headers) => resumed += 1,
                (true, _) => {
                    // The whole body again (the server ignores ranges, or
                    // the resource changed), or a part that does not fit.
                    if !sink.rewind().await.map_err(write_error)? {
                        return Err(DownloadError::new(Problem::NotRewindable).into_error());
                    }
                    at = Position::default();
                    digest = self.new_digest();
                    if resp.status() == StatusCode::PARTIAL_CONTENT {
                        // Not a byte of it is used: ask for all of it.
                        if attempts >= self.max_attempts {
                            let problem = Problem::Mismatch;
                            return Err(DownloadError::new(problem).into_error());
                        }
                        continue;
                    }
                    at.learn(&headers);
                }
                (false, StatusCode::PARTIAL_CONTENT) => {
                    return Err(DownloadError::new(Problem::Mismatch).into_error());
                }
                (false, _) => at.learn(&headers),
            }
            self.report(&at, received, started);
            let mut stream = resp.bytes_stream();
            let failure = loop {
                let next = std::future::poll_fn(|cx| Pin::new(&mut stream).poll_next(cx)).await;
                match next {
                    None => break None,
                    Some(Err(e)) => break Some(e),
                    Some(Ok(chunk)) => {
                        sink.write(&chunk).await.map_err(write_error)?;
                        if let Some(d) = digest.as_mut() {
                            d.update(&chunk);
                        }
                        let n = u64::try_from(chunk.len()).unwrap_or(u64::MAX);
                        at.written = at.written.saturating_add(n);
                        received = received.saturating_add(n);
                        self.report(&at, received, started);
                    }
                }
            };
            let Some(e) = failure else {
                return self.finish(sink, &at, digest, attempts, resumed).await;
            };
            let broke = e.is_body() || e.is_timeout();
            if !(broke && may_resume && attempts < self.max_attempts) {
                return Err(e);
            }
            if !at.resumable() {
                if !sink.rewind().await.map_err(write_error)? {
                    return Err(e);
                }
                at = Position::default();
                digest = self.new_digest();
            }
        }
    }

    /// Sends one request: the first, or a resume from `from`.
    async fn send(
        &self,
        template: &Request<()>,
        from: Option<&Position>,
    ) -> Result<Response, Error> {
        let mut req = template.clone();
        let headers = req.headers_mut();
        headers.insert(ACCEPT_ENCODING, HeaderValue::from_static("identity"));
        if let Some(at) = from {
            let range =
                HeaderValue::try_from(format!("bytes={}-", at.written)).map_err(Error::request)?;
            headers.insert(RANGE, range);
            if let Some(validator) = &at.validator {
                headers.insert(IF_RANGE, validator.clone());
            }
        }
        let builder = RequestBuilder {
            client: self.client.clone(),
            parts: Ok(req),
            body: ReplayBody::empty(),
        };
        builder.send().await?.error_for_status().await
    }

    async fn finish<S: Sink>(
        &mut self,
        sink: &mut S,
        at: &Position,
        digest: Option<Box<dyn Digest>>,
        attempts: u32,
        resumed: u32,
    ) -> Result<Downloaded, Error> {
        if let Some(total) = at.total {
            if at.written != total {
                let problem = Problem::Incomplete {
                    written: at.written,
                    total,
                };
                return Err(DownloadError::new(problem).into_error());
            }
        }
        sink.finish().await.map_err(write_error)?;
        if let (Some((expected, _)), Some(mut digest)) = (&self.checksum, digest) {
            let actual = digest.finish();
            if actual != *expected {
                let problem = Problem::Checksum {
                    expected: hex(expected),
                    actual: hex(&actual),
                };
                return Err(DownloadError::new(problem).into_error());
            }
        }
        Ok(Downloaded {
            bytes: at.written,
            attempts,
            resumed,
        })
    }

    fn new_digest(&self) -> Option<Box<dyn Digest>> {
        self.checksum.as_ref().map(|(_, new)| new())
    }

    fn report(&mut self, at: &Position, received: u64, started: tokio::time::Instant) {
        if let Some(f) = self.progress.as_mut() {
            let secs = started
                .elapsed()
                .max(Duration::from_millis(1))
                .as_secs_f64();
            #[allow(clippy::cast_precision_loss, reason = "a rate for display")]
            let rate = received as f64 / secs;
            f(Progress {
                bytes: at.written,
                total: at.total,
                rate,
            });
        }
    }
}

impl fmt::Debug for Download {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Download")
            .field("max_attempts", &self.max_attempts)
            .field("checksum", &self.checksum.is_some())
            .finish_non_exhaustive()
    }
}

/// What is known of the body being downloaded, and how much is written.
#[derive(Default)]
struct Position {
    written: u64,
    total: Option<u64>,
    /// A strong `ETag`, else `Last-Modified`, for `If-Range`.
    validator: Option<HeaderValue>,
    /// `Accept-Ranges: bytes`, and no content coding.
    ranges: bool,
}

impl Position {
    /// What a full response (`200`) says about the body.
    fn learn(&mut self, headers: &HeaderMap) {
        let encoded = headers
            .get(CONTENT_ENCODING)
            .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"));
        self.total = if encoded {
            None
        } else {
            header_u64(headers.get(CONTENT_LENGTH))
        };
        self.ranges = !encoded
            && headers.get_all(ACCEPT_RANGES).iter().any(|v| {
                v.to_str()
                    .is_ok_and(|s| s.split(',').any(|u| u.trim().eq_ignore_ascii_case("bytes")))
            });
        self.validator = strong_etag(headers).or_else(|| headers.get(LAST_MODIFIED).cloned());
    }

    fn resumable(&self) -> bool {
        self.ranges && self.validator.is_some()
    }

    /// Whether a `206` is the rest of this body: its range starts where
    /// the writer is and has the same total, and its `ETag`, if any, is
    /// the validator.
    fn matches(&self, headers: &HeaderMap) -> bool {
        let Some((start, end, total)) = content_range(headers) else {
            return false;
        };
        let same_total = match (self.total, total) {
            (Some(known), Some(total)) => known == total && end.checked_add(1) == Some(total),
            (None, _) => true,
            (Some(_), None) => false,
        };
        let same_tag = match (&self.validator, headers.get(ETAG)) {
            (Some(v), Some(tag)) if v.as_bytes().starts_with(b"\"") => v == tag,
            _ => true,
        };
        start == self.written && same_total && same_tag
    }
}

fn header_u64(v: Option<&HeaderValue>) -> Option<u64> {
    v?.to_str().ok()?.trim().parse().ok()
}

/// The `ETag`, when it is a strong one (a weak one may not go in
/// `If-Range`).
fn strong_etag(headers: &HeaderMap) -> Option<HeaderValue> {
    headers
        .get(ETAG)
        .filter(|v| v.as_bytes().starts_with(b"\""))
        .cloned()
}

/// `Content-Range: bytes first-last/total` (`total` may be `*`).
fn content_range(headers: &HeaderMap) -> Option<(u64, u64, Option<u64>)> {
    let value = headers.get(CONTENT_RANGE)?.to_str().ok()?.trim();
    let rest = value.strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (first, last) = range.split_once('-')?;
    let (first, last): (u64, u64) = (first.trim().parse().ok()?, last.trim().parse().ok()?);
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    (first <= last).then_some((first, last, total))
}

fn hex(bytes: &[u8]) -> String {
    use fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn write_error(e: std::io::Error) -> Error {
    DownloadError::new(Problem::Write(e)).into_error()
}

/// Where the bytes go.
trait Sink: Send {
    async fn write(&mut self, data: &[u8]) -> std::io::Result<()>;
    /// Empties it for a download that starts again; `false` when it
    /// cannot.
    async fn rewind(&mut self) -> std::io::Result<bool>;
    async fn finish(&mut self) -> std::io::Result<()>;
}

struct FileSink(tokio::fs::File);

impl Sink for FileSink {
    async fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.0.write_all(data).await
    }

    async fn rewind(&mut self) -> std::io::Result<bool> {
        self.0.flush().await?;
        self.0.set_len(0).await?;
        self.0.seek(std::io::SeekFrom::Start(0)).await?;
        Ok(true)
    }

    async fn finish(&mut self) -> std::io::Result<()> {
        self.0.flush().await?;
        self.0.sync_all().await
    }
}

struct WriterSink<'a, W>(&'a mut W);

impl<W: AsyncWrite + Unpin + Send> Sink for WriterSink<'_, W> {
    async fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.0.write_all(data).await
    }

    async fn rewind(&mut self) -> std::io::Result<bool> {
        Ok(false)
    }

    async fn finish(&mut self) -> std::io::Result<()> {
        self.0.flush().await
    }
}

/// Why a download failed when no response or body error says it: in the
/// facade [`Error`] as its source (a body error,
/// [`is_body`](Error::is_body)); find it with `downcast_ref`.
#[derive(Debug)]
pub struct DownloadError {
    problem: Problem,
}

#[derive(Debug)]
enum Problem {
    NotRewindable,
    Mismatch,
    Incomplete { written: u64, total: u64 },
    Checksum { expected: String, actual: String },
    Write(std::io::Error),
}

impl DownloadError {
    fn new(problem: Problem) -> Self {
        Self { problem }
    }

    fn into_error(self) -> Error {
        Error::new(Kind::Body, Some(Box::new(self)))
    }

    /// The download had to start again (the server sent the whole body
    /// again, or a body without a way to resume it broke) and the writer
    /// cannot be rewound.
    #[must_use]
    pub fn is_not_rewindable(&self) -> bool {
        matches!(self.problem, Problem::NotRewindable)
    }

    /// The body ended before the length the server announced.
    #[must_use]
    pub fn is_incomplete(&self) -> bool {
        matches!(self.problem, Problem::Incomplete { .. })
    }

    /// The bytes did not have the expected checksum.
    #[must_use]
    pub fn is_checksum_mismatch(&self) -> bool {
        matches!(self.problem, Problem::Checksum { .. })
    }

    /// Writing to the file or writer failed.
    #[must_use]
    pub fn is_write(&self) -> bool {
        matches!(self.problem, Problem::Write(_))
    }
}

impl fmt::Display for DownloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.problem {
            Problem::NotRewindable => {
                f.write_str("the download has to start again and the writer cannot be rewound")
            }
            Problem::Mismatch => {
                f.write_str("the server sent a part of the body that does not fit what was written")
            }
            Problem::Incomplete { written, total } => {
                write!(f, "the body ended after {written} of {total} bytes")
            }
            Problem::Checksum { expected, actual } => {
                write!(f, "checksum mismatch: expected {expected}, got {actual}")
            }
            Problem::Write(_) => f.write_str("writing the download failed"),
        }
    }
}

impl std::error::Error for DownloadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.problem {
            Problem::Write(e) => Some(e),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (k.parse().unwrap(), v.parse().unwrap()))
            .collect()
    }

    #[test]
    fn content_range_is_parsed_and_checked() {
        let h = headers(&[("content-range", "bytes 5-9/10")]);
        assert_eq!(content_range(&h), Some((5, 9, Some(10))));
        let h = headers(&[("content-range", "bytes 5-9/*")]);
        assert_eq!(content_range(&h), Some((5, 9, None)));
        assert_eq!(
            content_range(&headers(&[("content-range", "bytes 9-5/10")])),
            None
        );
        assert_eq!(
            content_range(&headers(&[("content-range", "items 1-2/3")])),
            None
        );
    }

    #[test]
    fn a_part_fits_only_where_the_writer_is_with_the_same_tag_and_total() {
        let mut at = Position::default();
        at.learn(&headers(&[
            ("content-length", "10"),
            ("accept-ranges", "bytes"),
            ("etag", "\"v1\""),
        ]));
        assert!(at.resumable());
        at.written = 4;
        let part = |range: &str, tag: &str| {
            at.matches(&headers(&[("content-range", range), ("etag", tag)]))
        };
        assert!(part("bytes 4-9/10", "\"v1\""));
        assert!(!part("bytes 0-9/10", "\"v1\""));
        assert!(!part("bytes 4-9/12", "\"v1\""));
        assert!(!part("bytes 4-9/10", "\"v2\""));
    }

    #[test]
    fn a_weak_etag_is_no_validator_and_a_coded_body_is_not_resumed() {
        let mut at = Position::default();
        at.learn(&headers(&[
            ("accept-ranges", "bytes"),
            ("etag", "W/\"v1\""),
        ]));
        assert!(!at.resumable());
        at.learn(&headers(&[
            ("accept-ranges", "bytes"),
            ("etag", "\"v1\""),
            ("content-encoding", "gzip"),
            ("content-length", "5"),
        ]));
        assert!(!at.resumable());
        assert_eq!(at.total, None);
    }
}
