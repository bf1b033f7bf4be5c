//! `multipart/form-data` request bodies: a [`Form`] of text fields, bytes,
//! files streamed from disk and streams, each a [`Part`].
//!
//! Like any other body, a form sits nowhere in the stack: it is the
//! request's body, and [`RequestBuilder::multipart`] sets it with its
//! `Content-Type` (`multipart/form-data; boundary=...`).
//!
//! - **Length.** When the length of every part is known (text, bytes,
//!   files by their metadata, streams given with
//!   [`Part::stream_with_length`]), the request says `Content-Length`;
//!   otherwise it is sent chunked.
//! - **Replay** (a retry, a 307/308 redirect, a re-send after a 401): a
//!   form of text, bytes and files is always replayable, its files opened
//!   again and read from the start, nothing of them kept in memory. A form
//!   with a stream part is kept up to the client's replay cap, like
//!   [`RequestBuilder::body_stream`]; past it the first answer comes back
//!   with the reason (see [`upload`](crate::upload)).
//! - **Names.** Field names and file names are written as the WHATWG HTML
//!   standard and RFC 7578 say: in quotes, with `"`, CR and LF
//!   percent-encoded (`%22`, `%0D`, `%0A`) and any other character as its
//!   UTF-8 bytes.
//! - **Boundary.** 48 random hex digits after `parapet-`, drawn for each
//!   form from std's OS-seeded `SipHash` keys (not from the generator of
//!   request ids, whose outputs servers see): a part's content cannot
//!   guess it.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), parapet::Error> {
//! use parapet::multipart::{Form, Part};
//! use parapet_testkit::{Reply, Server};
//!
//! let api = Server::start().await;
//! api.on("/avatars").reply(Reply::status(201));
//! let path = std::env::temp_dir().join(format!("parapet-doc-avatar-{}.png", std::process::id()));
//! std::fs::write(&path, b"\x89PNG...").unwrap();
//!
//! let form = Form::new()
//!     .text("user", "ada")
//!     .part("avatar", Part::file(&path).await?);
//! let client = parapet::Client::new().unwrap();
//! let resp = client.post(&api.url("/avatars")).multipart(form).send().await?;
//! assert_eq!(resp.status(), 201);
//!
//! let seen = &api.arrivals()[0];
//! assert!(seen.header("content-type").unwrap().starts_with("multipart/form-data; boundary=parapet-"));
//! assert!(seen.header("content-length").is_some());
//! let body = seen.body_text();
//! assert!(body.contains("Content-Disposition: form-data; name=\"user\"\r\n\r\nada\r\n"));
//! assert!(body.contains("Content-Type: image/png\r\n"));
//! # std::fs::remove_file(&path).unwrap();
//! # Ok(()) }
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::hash::BuildHasher;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use bytes::{BufMut, Bytes, BytesMut};
use futures_core::Stream;
use http::HeaderValue;
use http::header::CONTENT_TYPE;
use http_body::{Body as HttpBody, Frame, SizeHint};
use parapet_core::{BoxError, ReplayBody};

use crate::client::RequestBuilder;
use crate::error::Error;
use crate::upload::{FileBody, FileSource, StreamBody, replay_cap};

type BoxStream = Pin<Box<dyn Stream<Item = Result<Bytes, BoxError>> + Send>>;

/// A `multipart/form-data` body: named [`Part`]s in the order they were
/// added. Send it with [`RequestBuilder::multipart`]; see the
/// [module docs](self) for its length, replay and escaping rules.
///
/// ```
/// use parapet::multipart::Form;
///
/// let form = Form::new().text("title", "Q3 report").text("tags", "finance");
/// assert!(form.boundary().starts_with("parapet-"));
/// assert_ne!(form.boundary(), Form::new().boundary());
/// assert!(form.content_length().is_some());
/// ```
pub struct Form {
    boundary: String,
    parts: Vec<(String, Part)>,
}

/// One part of a [`Form`]: its content, and optionally a file name and a
/// content type.
///
/// ```
/// use parapet::multipart::Part;
///
/// let part = Part::bytes(&b"a,b\n1,2\n"[..]).file_name("data.csv");
/// // Content-Type: text/csv, guessed from the file name.
/// let part = Part::text("{}").file_name("meta").content_type("application/json").unwrap();
/// ```
pub struct Part {
    body: PartBody,
    file_name: Option<String>,
    content_type: Option<HeaderValue>,
}

enum PartBody {
    Bytes(Bytes),
    File(FileSource),
    Stream(BoxStream, Option<u64>),
}

impl Form {
    /// An empty form with a fresh random boundary.
    #[must_use]
    pub fn new() -> Self {
        Self {
            boundary: random_boundary(),
            parts: Vec::new(),
        }
    }

    /// Adds a text field (no `Content-Type`, as browsers send one).
    #[must_use]
    pub fn text(self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.part(name, Part::text(value))
    }

    /// Adds a part.
    #[must_use]
    pub fn part(mut self, name: impl Into<String>, part: Part) -> Self {
        self.parts.push((name.into(), part));
        self
    }

    /// Adds the file at `path`: [`Part::file`] under `name`.
    ///
    /// # Errors
    ///
    /// When the file cannot be opened or is not a regular file (the
    /// error's [`is_request`](Error::is_request) is true).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), parapet::Error> {
    /// let path = std::env::temp_dir().join(format!("parapet-doc-form-file-{}.txt", std::process::id()));
    /// std::fs::write(&path, "hello").unwrap();
    /// let form = parapet::multipart::Form::new().file("notes", &path).await?;
    /// # std::fs::remove_file(&path).unwrap();
    /// # Ok(()) }
    /// ```
    pub async fn file(
        self,
        name: impl Into<String>,
        path: impl AsRef<Path>,
    ) -> Result<Self, Error> {
        let part = Part::file(path).await?;
        Ok(self.part(name, part))
    }

    /// The boundary between the parts.
    #[must_use]
    pub fn boundary(&self) -> &str {
        &self.boundary
    }

    /// The length of the whole body, when every part's length is known.
    #[must_use]
    pub fn content_length(&self) -> Option<u64> {
        let mut total = self.closing().len() as u64;
        for (name, part) in &self.parts {
            let len = match &part.body {
                PartBody::Bytes(b) => b.len() as u64,
                PartBody::File(f) => f.len(),
                PartBody::Stream(_, len) => (*len)?,
            };
            let head = self.part_head(name, part).len() as u64;
            total = total.saturating_add(head + len + 2);
        }
        Some(total)
    }

    /// `Content-Type: multipart/form-data; boundary=...`.
    fn content_type(&self) -> HeaderValue {
        let value = format!("multipart/form-data; boundary={}", self.boundary);
        // NOTE: the boundary is ASCII letters, digits and `-`.
        HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static("multipart/form-data"))
    }

    /// The delimiter and headers that open `part`.
    fn part_head(&self, name: &str, part: &Part) -> BytesMut {
        let mut head = BytesMut::with_capacity(128 + name.len());
        head.put_slice(b"--");
        head.put_slice(self.boundary.as_bytes());
        head.put_slice(b"\r\nContent-Disposition: form-data; name=\"");
        put_escaped(&mut head, name);
        head.put_u8(b'"');
        if let Some(file_name) = &part.file_name {
            head.put_slice(b"; filename=\"");
            put_escaped(&mut head, file_name);
            head.put_u8(b'"');
        }
        let content_type = part.content_type.clone().or_else(|| {
            part.file_name
                .as_deref()
                .map(|f| HeaderValue::from_static(guess_content_type(f)))
        });
        if let Some(ct) = content_type {
            head.put_slice(b"\r\nContent-Type: ");
            head.put_slice(ct.as_bytes());
        }
        head.put_slice(b"\r\n\r\n");
        head
    }

    fn closing(&self) -> Bytes {
        Bytes::from(format!("--{}--\r\n", self.boundary))
    }

    /// The form as a request body and its `Content-Type`.
    fn into_body(self, cap: usize) -> (HeaderValue, ReplayBody) {
        let content_type = self.content_type();
        let len = self.content_length();
        let mut segments = Vec::with_capacity(self.parts.len() * 2 + 1);
        let mut text = BytesMut::new();
        let mut streams = false;
        let mut files = false;
        for (name, part) in &self.parts {
            text.unsplit(self.part_head(name, part));
            match &part.body {
                PartBody::Bytes(b) => text.put_slice(b),
                PartBody::File(_) | PartBody::Stream(..) => {
                    segments.push(Segment::Bytes(text.split().freeze()));
                }
            }
            // The part's own CRLF before the next delimiter.
            match part.body {
                PartBody::Bytes(_) => {}
                PartBody::File(_) => files = true,
                PartBody::Stream(..) => streams = true,
            }
            segments.push(Segment::Placeholder);
            text.put_slice(b"\r\n");
        }
        text.put_slice(&self.closing());
        let last = text.freeze();
        // Put the file and stream bodies where their placeholders are.
        let mut bodies = self.parts.into_iter().map(|(_, p)| p.body);
        let mut filled = Vec::with_capacity(segments.len() + 1);
        for seg in segments {
            match seg {
                Segment::Placeholder => match bodies.next() {
                    Some(PartBody::File(f)) => filled.push(Segment::File(f)),
                    Some(PartBody::Stream(s, _)) => filled.push(Segment::Stream(s)),
                    Some(PartBody::Bytes(_)) | None => {}
                },
                other => filled.push(other),
            }
        }
        filled.push(Segment::Bytes(last.clone()));
        let body = if streams {
            ReplayBody::new(FormBody::new(filled, len), cap)
        } else if files {
            let template: Arc<[Template]> = filled
                .into_iter()
                .filter_map(|s| match s {
                    Segment::Bytes(b) if b.is_empty() => None,
                    Segment::Bytes(b) => Some(Template::Bytes(b)),
                    Segment::File(f) => Some(Template::File(f)),
                    Segment::Stream(_) | Segment::Placeholder => None,
                })
                .collect();
            ReplayBody::reopen(len, move || {
                let segments = template.iter().map(Template::segment).collect();
                FormBody::new(segments, len)
            })
        } else {
            // All in memory: `last` holds the whole form.
            ReplayBody::from_bytes(last)
        };
        (content_type, body)
    }
}

impl Default for Form {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Form {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Names and kinds only: a field's value may be a secret.
        f.debug_struct("Form")
            .field("boundary", &self.boundary)
            .field(
                "parts",
                &self.parts.iter().map(|(n, p)| (n, p)).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Part {
    /// A text part.
    #[must_use]
    pub fn text(value: impl Into<String>) -> Self {
        Self::bytes(Bytes::from(value.into()))
    }

    /// A part of bytes in memory.
    #[must_use]
    pub fn bytes(value: impl Into<Bytes>) -> Self {
        Self {
            body: PartBody::Bytes(value.into()),
            file_name: None,
            content_type: None,
        }
    }

    /// The file at `path`, streamed from disk while the form is sent (and
    /// opened again for a replay), with its length from its metadata, the
    /// last component of `path` as its file name and a content type
    /// guessed from its extension (`application/octet-stream` for an
    /// unknown one). Both can be replaced with
    /// [`file_name`](Self::file_name) and
    /// [`content_type`](Self::content_type).
    ///
    /// The file is opened here once, so that a missing file is reported
    /// now; see [`RequestBuilder::body_file`] for what happens when it is
    /// removed or changes before an attempt reads it.
    ///
    /// # Errors
    ///
    /// When the file cannot be opened or is not a regular file (the
    /// error's [`is_request`](Error::is_request) is true).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), parapet::Error> {
    /// use parapet::multipart::Part;
    ///
    /// let path = std::env::temp_dir().join(format!("parapet-doc-part-{}.json", std::process::id()));
    /// std::fs::write(&path, "{}").unwrap();
    /// let part = Part::file(&path).await?; // file name and `application/json` from the path
    /// assert!(Part::file("/no/such/file").await.unwrap_err().is_request());
    /// # std::fs::remove_file(&path).unwrap();
    /// # Ok(()) }
    /// ```
    pub async fn file(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let source = FileSource::open(path).await?;
        let file_name = source
            .path()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned());
        Ok(Self {
            body: PartBody::File(source),
            file_name,
            content_type: None,
        })
    }

    /// A part streamed from `stream`, of unknown length: the form is sent
    /// chunked, and kept for a replay only up to the client's replay cap.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use parapet::multipart::{Form, Part};
    ///
    /// let chunks = futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from("a,b\n"))]);
    /// let form = Form::new().part("rows", Part::stream(chunks).file_name("rows.csv"));
    /// assert_eq!(form.content_length(), None);
    /// ```
    #[must_use]
    pub fn stream<S, E>(stream: S) -> Self
    where
        S: Stream<Item = Result<Bytes, E>> + Send + 'static,
        E: Into<BoxError>,
    {
        Self::streamed(stream, None)
    }

    /// A part streamed from `stream`, which yields exactly `len` bytes: the
    /// form keeps its `Content-Length` when its other parts' lengths are
    /// known. A stream that yields more or fewer bytes fails the attempt.
    /// Kept for a replay only up to the client's replay cap.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use parapet::multipart::{Form, Part};
    ///
    /// let chunks = futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from("1234"))]);
    /// let form = Form::new().part("blob", Part::stream_with_length(chunks, 4));
    /// assert!(form.content_length().is_some());
    /// ```
    #[must_use]
    pub fn stream_with_length<S, E>(stream: S, len: u64) -> Self
    where
        S: Stream<Item = Result<Bytes, E>> + Send + 'static,
        E: Into<BoxError>,
    {
        Self::streamed(stream, Some(len))
    }

    fn streamed<S, E>(stream: S, len: Option<u64>) -> Self
    where
        S: Stream<Item = Result<Bytes, E>> + Send + 'static,
        E: Into<BoxError>,
    {
        let stream = MapErr { stream };
        Self {
            body: PartBody::Stream(Box::pin(stream), len),
            file_name: None,
            content_type: None,
        }
    }

    /// The part's file name (`filename=` in its `Content-Disposition`).
    /// Default: none, or the file's name for [`Part::file`]. A part with a
    /// file name and no content type says one guessed from the name's
    /// extension.
    #[must_use]
    pub fn file_name(mut self, name: impl Into<String>) -> Self {
        self.file_name = Some(name.into());
        self
    }

    /// The part's `Content-Type`. Default: none for text and bytes, one
    /// guessed from the file name when there is one.
    ///
    /// # Errors
    ///
    /// When `value` is not a valid header value (a CR, a LF or another
    /// control character); the error's [`is_request`](Error::is_request)
    /// is true.
    ///
    /// ```
    /// use parapet::multipart::Part;
    ///
    /// let part = Part::bytes(vec![1, 2, 3]).content_type("application/x-thing").unwrap();
    /// assert!(Part::text("x").content_type("text/plain\r\nX-Evil: 1").is_err());
    /// ```
    pub fn content_type(mut self, value: &str) -> Result<Self, Error> {
        let value = HeaderValue::from_str(value).map_err(Error::request)?;
        self.content_type = Some(value);
        Ok(self)
    }
}

impl fmt::Debug for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Part");
        match &self.body {
            PartBody::Bytes(b) => d.field("len", &b.len()),
            PartBody::File(file) => d.field("file", &file.path()).field("len", &file.len()),
            PartBody::Stream(_, len) => d.field("stream_len", len),
        };
        d.field("file_name", &self.file_name)
            .field("content_type", &self.content_type)
            .finish()
    }
}

impl RequestBuilder {
    /// A `multipart/form-data` body, with its `Content-Type` (boundary
    /// included) and, when every part's length is known, its
    /// `Content-Length`. Replayable when it has no stream part (files are
    /// opened again); with one, up to the client's replay cap (see the
    /// [`multipart`](crate::multipart) module).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), parapet::Error> {
    /// use parapet::multipart::{Form, Part};
    /// use parapet_testkit::{Reply, Server};
    ///
    /// let api = Server::start().await;
    /// api.on("/import").replies([Reply::status(503), Reply::ok()]);
    ///
    /// let form = Form::new()
    ///     .text("kind", "contacts")
    ///     .part("data", Part::bytes(&b"name\nada\n"[..]).file_name("contacts.csv"));
    /// let client = parapet::Client::new().unwrap();
    /// // A PUT is retried after the 503; the form is sent again, byte for byte.
    /// client.put(&api.url("/import")).multipart(form).send().await?.error_for_status().await?;
    /// let arrivals = api.arrivals_for("/import");
    /// assert_eq!(arrivals.len(), 2);
    /// assert_eq!(arrivals[0].body, arrivals[1].body);
    /// # Ok(()) }
    /// ```
    pub fn multipart(mut self, form: Form) -> Self {
        let (content_type, body) = form.into_body(replay_cap(&self.client));
        self.body = body;
        self.header(CONTENT_TYPE, content_type)
    }
}

/// `"`, CR and LF percent-encoded, as the HTML standard's
/// `multipart/form-data` encoding does for names and file names.
fn put_escaped(out: &mut BytesMut, s: &str) {
    for b in s.bytes() {
        match b {
            b'"' => out.put_slice(b"%22"),
            b'\r' => out.put_slice(b"%0D"),
            b'\n' => out.put_slice(b"%0A"),
            b => out.put_u8(b),
        }
    }
}

/// The content type of a file name's extension, for common types;
/// `application/octet-stream` for any other.
fn guess_content_type(file_name: &str) -> &'static str {
    let ext = match file_name.rsplit_once('.') {
        Some((_, ext)) => ext.to_ascii_lowercase(),
        None => return "application/octet-stream",
    };
    match ext.as_str() {
        "txt" | "text" | "log" => "text/plain",
        "csv" => "text/csv",
        "html" | "htm" => "text/html",
        "css" => "text/css",
        "md" => "text/markdown",
        "js" | "mjs" => "text/javascript",
        "json" => "application/json",
        "xml" => "application/xml",
        "yaml" | "yml" => "application/yaml",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "gz" | "tgz" => "application/gzip",
        "tar" => "application/x-tar",
        "wasm" => "application/wasm",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "svg" => "image/svg+xml",
        "avif" => "image/avif",
        "mp3" => "audio/mpeg",
        "wav" => "audio/wav",
        "ogg" => "audio/ogg",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        _ => "application/octet-stream",
    }
}

/// `parapet-` and 48 random hex digits (192 bits).
///
/// Each word is a fresh `RandomState` hashing a counter: std seeds the
/// `SipHash` keys from the OS once per thread and changes them for every
/// `RandomState`, so a boundary cannot be told from the ones before it.
fn random_boundary() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let word = || {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        std::collections::hash_map::RandomState::new().hash_one(n)
    };
    format!("parapet-{:016x}{:016x}{:016x}", word(), word(), word())
}

/// A piece of a form's body, in order.
enum Segment {
    Bytes(Bytes),
    File(FileSource),
    Stream(BoxStream),
    /// Where a file's or a stream's bytes go (while building).
    Placeholder,
}

/// A piece of a replayable form, made into a fresh [`Piece`] per attempt.
enum Template {
    Bytes(Bytes),
    File(FileSource),
}

impl Template {
    fn segment(&self) -> Segment {
        match self {
            Self::Bytes(b) => Segment::Bytes(b.clone()),
            Self::File(f) => Segment::File(f.clone()),
        }
    }
}

/// A piece being sent.
enum Piece {
    Bytes(Bytes),
    File(FileBody),
    Stream(StreamBody<BoxStream>),
}

/// The body of one attempt at sending a form: its pieces one after the
/// other.
struct FormBody {
    pieces: VecDeque<Piece>,
    /// Bytes still to come, when known.
    left: Option<u64>,
}

impl FormBody {
    fn new(segments: Vec<Segment>, len: Option<u64>) -> Self {
        let pieces = segments
            .into_iter()
            .filter_map(|s| match s {
                Segment::Bytes(b) if b.is_empty() => None,
                Segment::Bytes(b) => Some(Piece::Bytes(b)),
                Segment::File(f) => Some(Piece::File(f.body())),
                Segment::Stream(stream) => Some(Piece::Stream(StreamBody { stream })),
                Segment::Placeholder => None,
            })
            .collect();
        Self { pieces, left: len }
    }
}

impl HttpBody for FormBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            let polled = match this.pieces.front_mut() {
                None => return Poll::Ready(None),
                Some(Piece::Bytes(_)) => match this.pieces.pop_front() {
                    Some(Piece::Bytes(b)) => Some(Ok(Frame::data(b))),
                    _ => None,
                },
                Some(Piece::File(f)) => ready!(Pin::new(f).poll_frame(cx)),
                Some(Piece::Stream(s)) => ready!(Pin::new(s).poll_frame(cx)),
            };
            match polled {
                Some(Ok(frame)) => {
                    if let (Some(left), Some(data)) = (&mut this.left, frame.data_ref()) {
                        *left = left.saturating_sub(data.len() as u64);
                    }
                    return Poll::Ready(Some(Ok(frame)));
                }
                Some(Err(e)) => {
                    this.pieces.clear();
                    return Poll::Ready(Some(Err(e)));
                }
                None => {
                    this.pieces.pop_front();
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.pieces.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        match self.left {
            Some(left) => SizeHint::with_exact(left),
            None => SizeHint::new(),
        }
    }
}

pin_project_lite::pin_project! {
    /// A stream's errors boxed.
    struct MapErr<S> {
        #[pin]
        stream: S,
    }
}

impl<S, E> Stream for MapErr<S>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: Into<BoxError>,
{
    type Item = Result<Bytes, BoxError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.project()
            .stream
            .poll_next(cx)
            .map(|item| item.map(|r| r.map_err(Into::into)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn sent(form: Form) -> (String, Option<u64>, String) {
        let boundary = form.boundary().to_owned();
        let (_, body) = form.into_body(1024);
        let hint = body.size_hint().exact();
        let bytes = body.collect().await.unwrap().to_bytes();
        (String::from_utf8(bytes.to_vec()).unwrap(), hint, boundary)
    }

    #[tokio::test]
    async fn text_fields_are_framed_as_the_rfc_says() {
        let form = Form::new().text("a", "1").text("b", "two\r\nlines");
        let len = form.content_length();
        let (body, hint, b) = sent(form).await;
        assert_eq!(
            body,
            format!(
                "--{b}\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n\
                 --{b}\r\nContent-Disposition: form-data; name=\"b\"\r\n\r\ntwo\r\nlines\r\n\
                 --{b}--\r\n"
            )
        );
        assert_eq!(hint, Some(body.len() as u64));
        assert_eq!(len, hint);
    }

    #[tokio::test]
    async fn names_and_file_names_are_escaped() {
        let form = Form::new().part("we\"ird\r\nname", Part::text("x").file_name("a\"b\nc.txt"));
        let (body, ..) = sent(form).await;
        assert!(
            body.contains(
                "name=\"we%22ird%0D%0Aname\"; filename=\"a%22b%0Ac.txt\"\r\nContent-Type: text/plain\r\n"
            ),
            "{body}"
        );
    }

    #[tokio::test]
    async fn an_empty_form_is_its_closing_delimiter() {
        let (body, hint, b) = sent(Form::new()).await;
        assert_eq!(body, format!("--{b}--\r\n"));
        assert_eq!(hint, Some(body.len() as u64));
    }

    #[test]
    fn content_types_are_guessed_from_common_extensions() {
        assert_eq!(guess_content_type("photo.JPG"), "image/jpeg");
        assert_eq!(guess_content_type("data.csv"), "text/csv");
        assert_eq!(guess_content_type("archive.tar.gz"), "application/gzip");
        assert_eq!(guess_content_type("Makefile"), "application/octet-stream");
        assert_eq!(guess_content_type("x.unknown"), "application/octet-stream");
    }

    #[test]
    fn boundaries_are_long_random_and_valid_in_a_header() {
        let a = random_boundary();
        let b = random_boundary();
        assert_ne!(a, b);
        assert_eq!(a.len(), 8 + 48);
        assert!(a.len() <= 70, "RFC 2046 allows at most 70 characters");
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-'));
        assert!(HeaderValue::from_str(Form::new().content_type().to_str().unwrap()).is_ok());
    }

    #[tokio::test]
    async fn a_stream_part_makes_the_form_chunked_and_capped() {
        let chunks = futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from("abc"))]);
        let form = Form::new().text("a", "1").part("s", Part::stream(chunks));
        assert_eq!(form.content_length(), None);
        let (_, body) = form.into_body(8);
        assert_eq!(body.size_hint().exact(), None);
        let keeper = body.try_replay().unwrap();
        let bytes = body.collect().await.unwrap().to_bytes();
        assert!(bytes.len() > 8);
        assert!(keeper.try_replay().unwrap_err().is_too_large());
    }

    #[tokio::test]
    async fn a_stream_part_of_known_length_keeps_the_content_length() {
        let chunks = futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from("abcd"))]);
        let form = Form::new().part("s", Part::stream_with_length(chunks, 4));
        let len = form.content_length();
        let (body, hint, _) = sent(form).await;
        assert_eq!(hint, len);
        assert_eq!(len, Some(body.len() as u64));
    }

    #[test]
    fn debug_shows_no_values() {
        let form = Form::new().text("password", "hunter2");
        assert!(!format!("{form:?}").contains("hunter2"));
    }
}
