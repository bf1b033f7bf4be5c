//! Paging through an API: a [`Stream`] of pages or of items that follows
//! the API's own way of saying where the next page is.
//!
//! [`RequestBuilder::paginate`] takes the first page's request and a
//! [`Paginate`] that says how to find the next one:
//!
//! | The API says                                   | [`Paginate`]                    |
//! |------------------------------------------------|---------------------------------|
//! | `Link: <…?page=2>; rel="next"` (GitHub)        | [`link_header`](Paginate::link_header) |
//! | `{"meta": {"next_cursor": "c2"}}` → `?cursor=c2` | [`cursor`](Paginate::cursor), [`cursor_with`](Paginate::cursor_with) |
//! | `?page=1&per_page=100`, `?page=2&per_page=100` | [`page_number`](Paginate::page_number) |
//! | `?offset=0&limit=50`, `?offset=50&limit=50`    | [`offset`](Paginate::offset)    |
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), parapet::Error> {
//! use futures_util::TryStreamExt;
//! use parapet::paginate::Paginate;
//! use parapet_testkit::{Reply, Server};
//!
//! #[derive(serde::Deserialize)]
//! struct Repo { name: String }
//!
//! // A GitHub-style API: the next page's URL in the Link header.
//! let api = Server::start().await;
//! api.on("/repos").handle(|arrival| match arrival.query.as_deref() {
//!     None => Reply::json(r#"[{"name": "a"}, {"name": "b"}]"#)
//!         .header("link", r#"</repos?page=2>; rel="next", </repos?page=2>; rel="last""#),
//!     _ => Reply::json(r#"[{"name": "c"}]"#),
//! });
//!
//! let client = parapet::Client::new().unwrap();
//! let repos: Vec<Repo> = client
//!     .get(&api.url("/repos"))
//!     .paginate(Paginate::link_header())
//!     .items::<Repo>("")
//!     .try_collect()
//!     .await?;
//! let names: Vec<_> = repos.iter().map(|r| r.name.as_str()).collect();
//! assert_eq!(names, ["a", "b", "c"]);
//! assert_eq!(api.hits("/repos"), 2);
//! # Ok(()) }
//! ```
//!
//! # Each page is a whole call
//!
//! Every page is sent through the client's whole stack, as
//! [`RequestBuilder::send`] would send it: retried on its own attempts,
//! under the client's deadline for that page alone, counted by the rate
//! limits, with the client's auth. The headers, query and extensions of
//! the first request go with every page (a fresh `Idempotency-Key` is made
//! for each page after the first when the first had one). A deadline set
//! with [`RequestBuilder::deadline`] is an instant, fixed when it is set:
//! it bounds the whole pagination, every page included.
//!
//! A page with an error status ends the stream with the error
//! [`Response::error_for_status`](crate::Response::error_for_status) makes;
//! a body that is not JSON, or does not decode into the type asked for,
//! ends it with the [`is_decode`](Error::is_decode) error
//! [`Response::json`](crate::Response::json) makes, which names the field
//! that failed. For [`Paginator::items`] that path is relative to the
//! items' array (`[2].id`).
//!
//! # Safety nets
//!
//! - A page whose next page is one already fetched (the same URL, so the
//!   same cursor, again) ends the stream with a [`PaginationError`] for
//!   which [`is_loop`](PaginationError::is_loop) is true, instead of
//!   paging forever.
//! - [`Paginate::max_pages`] bounds the pages: a next page past the bound
//!   is an error ([`is_too_many_pages`](PaginationError::is_too_many_pages)),
//!   not a quiet end (use `StreamExt::take` for that).
//! - A `Link` to another origin (scheme, host or port) is refused
//!   ([`is_cross_origin`](PaginationError::is_cross_origin)): the client's
//!   credentials would go with it.
//!
//! # Fetching ahead
//!
//! By default a page is requested only when the stream is polled for it
//! (after the previous page's items were all taken). [`Paginate::prefetch`]
//! lets up to `n` pages be fetched ahead of the one being read, on a task
//! of their own. Dropping the stream stops fetching at once: the task ends,
//! and a page on its way is abandoned.

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_core::Stream;
use http::header::LINK;
use http::{HeaderMap, Request, Uri};
use parapet_core::{IDEMPOTENCY_KEY, IdempotencyKey, ReplayBody};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::{Semaphore, mpsc};

use crate::client::RequestBuilder;
use crate::error::Error;
use crate::{Client, Response};

/// The most pages [`Paginate::prefetch`] fetches ahead.
const MAX_PREFETCH: usize = 64;

/// How to find the next page: where the API says it is, and when to stop.
///
/// Built with one constructor per style (`link_header`, `cursor`,
/// `cursor_with`, `page_number`, `offset`), then adjusted with the
/// modifiers. See the [module docs](self) for an overview.
#[derive(Clone)]
#[must_use]
pub struct Paginate {
    style: Style,
    page_size: Option<(String, u64)>,
    has_more: Option<String>,
    total: Option<String>,
    max_pages: Option<u32>,
    prefetch: usize,
}

/// A cursor read from a page's JSON body.
type CursorFn = Arc<dyn Fn(&Value) -> Option<String> + Send + Sync>;

#[derive(Clone)]
enum Style {
    Link,
    Cursor { from: CursorFrom, param: String },
    Page { param: String, first: u64 },
    Offset { param: String },
}

#[derive(Clone)]
enum CursorFrom {
    Pointer(String),
    With(CursorFn),
}

impl Paginate {
    fn new(style: Style) -> Self {
        Self {
            style,
            page_size: None,
            has_more: None,
            total: None,
            max_pages: None,
            prefetch: 0,
        }
    }

    /// The next page is the target of the response's `Link` header whose
    /// `rel` includes `next` (RFC 8288, as GitHub and GitLab send it),
    /// resolved against the page's URL (after redirects). Several `Link`
    /// fields, several links in one field, quoted and unquoted `rel`
    /// values and several relation types in one `rel` are all understood.
    /// The stream ends with the page that has no such link.
    pub fn link_header() -> Self {
        Self::new(Style::Link)
    }

    /// The next page is the first request with the query parameter `param`
    /// set to the cursor found in the page's JSON body at `pointer` (a JSON
    /// pointer, RFC 6901: `/meta/next_cursor`). A string is taken as it
    /// is, a number in its JSON form. The stream ends with the page whose
    /// cursor is missing, `null` or empty.
    ///
    /// ```
    /// use parapet::paginate::Paginate;
    /// // {"data": [...], "meta": {"next_cursor": "c2"}} → ?cursor=c2
    /// let how = Paginate::cursor("/meta/next_cursor", "cursor");
    /// # let _ = how;
    /// ```
    pub fn cursor(pointer: &str, param: &str) -> Self {
        Self::new(Style::Cursor {
            from: CursorFrom::Pointer(pointer.to_owned()),
            param: param.to_owned(),
        })
    }

    /// Like [`cursor`](Self::cursor), the cursor computed by `next` from
    /// the page's JSON body; `None` ends the stream. For APIs whose cursor
    /// is the last item's id (Stripe's `starting_after`), pair it with
    /// [`has_more`](Self::has_more).
    ///
    /// ```
    /// use parapet::paginate::Paginate;
    /// // {"data": [{"id": "a"}, {"id": "b"}], "has_more": true} → ?starting_after=b
    /// let how = Paginate::cursor_with("starting_after", |page| {
    ///     page["data"].as_array()?.last()?["id"].as_str().map(String::from)
    /// })
    /// .has_more("/has_more");
    /// # let _ = how;
    /// ```
    pub fn cursor_with<F>(param: &str, next: F) -> Self
    where
        F: Fn(&Value) -> Option<String> + Send + Sync + 'static,
    {
        Self::new(Style::Cursor {
            from: CursorFrom::With(Arc::new(next)),
            param: param.to_owned(),
        })
    }

    /// Pages numbered in the query parameter `param`, from 1 (see
    /// [`first_page`](Self::first_page)). The stream ends with an empty
    /// page, or earlier with [`has_more`](Self::has_more) or
    /// [`total`](Self::total). The number of items on a page is that of
    /// the array [`Paginator::items`] reads, else of the body when it is
    /// an array.
    pub fn page_number(param: &str) -> Self {
        Self::new(Style::Page {
            param: param.to_owned(),
            first: 1,
        })
    }

    /// Items counted from 0 in the query parameter `param`, the next
    /// page's offset being this one's plus the number of items it had
    /// (counted as for [`page_number`](Self::page_number)). The stream ends
    /// with an empty page, or earlier with [`has_more`](Self::has_more) or
    /// [`total`](Self::total).
    pub fn offset(param: &str) -> Self {
        Self::new(Style::Offset {
            param: param.to_owned(),
        })
    }

    /// The number of the first page, for [`page_number`](Self::page_number)
    /// (ignored by the other styles). Default: 1.
    pub fn first_page(mut self, first: u64) -> Self {
        if let Style::Page { first: f, .. } = &mut self.style {
            *f = first;
        }
        self
    }

    /// Asks for `size` items a page in the query parameter `param`
    /// (`per_page`, `limit`), on every request (on the first only with
    /// [`link_header`](Self::link_header): the links carry it on). Default:
    /// none, the API's own page size.
    pub fn page_size(mut self, param: &str, size: u64) -> Self {
        self.page_size = Some((param.to_owned(), size));
        self
    }

    /// Ends the stream with the page whose body has `false` at `pointer`
    /// (`/has_more`, `/meta/has_next`). Any other value, or none, says
    /// nothing. Default: not looked at.
    pub fn has_more(mut self, pointer: &str) -> Self {
        self.has_more = Some(pointer.to_owned());
        self
    }

    /// Ends the stream once as many items as the number at `pointer`
    /// (`/total_count`) have been seen, counted as for
    /// [`page_number`](Self::page_number). Default: not looked at.
    pub fn total(mut self, pointer: &str) -> Self {
        self.total = Some(pointer.to_owned());
        self
    }

    /// At most `pages` pages: a next page after that many is an error
    /// ([`PaginationError::is_too_many_pages`]), so that a list longer than
    /// expected is not taken for a whole one. `None` disables the bound.
    /// Default: none (a page leading to one already fetched is an error
    /// whatever this is).
    pub fn max_pages(mut self, pages: impl Into<Option<u32>>) -> Self {
        self.max_pages = pages.into();
        self
    }

    /// Fetch up to `pages` pages ahead of the one being read (at most 64),
    /// on a task of their own. Default: 0, a page is requested when the
    /// stream is polled for it.
    pub fn prefetch(mut self, pages: usize) -> Self {
        self.prefetch = pages.min(MAX_PREFETCH);
        self
    }
}

impl fmt::Debug for Paginate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let style = match &self.style {
            Style::Link => "link_header",
            Style::Cursor { .. } => "cursor",
            Style::Page { .. } => "page_number",
            Style::Offset { .. } => "offset",
        };
        f.debug_struct("Paginate")
            .field("style", &style)
            .field("max_pages", &self.max_pages)
            .field("prefetch", &self.prefetch)
            .finish_non_exhaustive()
    }
}

impl RequestBuilder {
    /// Pages through the results of this request, the first page's: see
    /// the [`paginate`](crate::paginate) module. Nothing is sent until the
    /// stream made by [`Paginator::pages`] or [`Paginator::items`] is
    /// polled.
    pub fn paginate(self, how: Paginate) -> Paginator {
        Paginator {
            client: self.client,
            parts: self.parts,
            body: self.body,
            how,
        }
    }
}

/// A request and how to page through its results, from
/// [`RequestBuilder::paginate`]; [`pages`](Self::pages) or
/// [`items`](Self::items) make the stream.
#[must_use = "a paginator does nothing until its stream is polled"]
pub struct Paginator {
    client: Client,
    parts: Result<Request<()>, Error>,
    body: ReplayBody,
    how: Paginate,
}

impl Paginator {
    /// The pages, each body decoded from JSON as a `T` (a
    /// `serde_json::Value` to look at it whole).
    pub fn pages<T: DeserializeOwned>(self) -> Pages<T> {
        Pages {
            raw: self.raw(None),
            _item: PhantomData,
        }
    }

    /// The items of every page, one by one: each page's array at `pointer`
    /// (a JSON pointer: `/data`, `/result/items`; `""` for a body that is
    /// the array), each item decoded as a `T`. A page without an array
    /// there ends the stream with an error.
    pub fn items<T: DeserializeOwned>(self, pointer: &str) -> Items<T> {
        Items {
            raw: self.raw(Some(pointer.to_owned())),
            pointer: pointer.to_owned(),
            buffered: VecDeque::new(),
            done: false,
        }
    }

    fn raw(self, items: Option<String>) -> RawPages {
        let prefetch = self.how.prefetch;
        let job = match self.parts {
            Ok(template) => Ok(Box::new(Job {
                client: self.client,
                template,
                body: self.body,
                how: self.how,
                items,
            })),
            Err(e) => Err(e),
        };
        RawPages {
            state: RawState::Idle(Some(job)),
            prefetch: u64::try_from(prefetch).unwrap_or(u64::MAX),
        }
    }
}

impl fmt::Debug for Paginator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Paginator")
            .field("how", &self.how)
            .finish_non_exhaustive()
    }
}

/// One page from [`Paginator::pages`]: its body, and where it came from.
#[derive(Debug, Clone)]
pub struct Page<T> {
    number: u32,
    url: Uri,
    headers: HeaderMap,
    body: T,
}

impl<T> Page<T> {
    /// Its number in this pagination: 1 for the first page fetched.
    #[must_use]
    pub fn number(&self) -> u32 {
        self.number
    }

    /// The URL that answered (after redirects).
    #[must_use]
    pub fn url(&self) -> &Uri {
        &self.url
    }

    /// The response's headers.
    #[must_use]
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The decoded body.
    #[must_use]
    pub fn body(&self) -> &T {
        &self.body
    }

    /// The decoded body, taken.
    #[must_use]
    pub fn into_body(self) -> T {
        self.body
    }
}

/// The pages, from [`Paginator::pages`]. Ends after the last page, or
/// after the first error.
#[must_use = "streams do nothing unless polled"]
pub struct Pages<T> {
    raw: RawPages,
    _item: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> Stream for Pages<T> {
    type Item = Result<Page<T>, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let raw = match Pin::new(&mut this.raw).poll_next(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
            Poll::Ready(Some(Ok(raw))) => raw,
        };
        match crate::response::decode_json::<T>(&raw.bytes) {
            Ok(body) => Poll::Ready(Some(Ok(Page {
                number: raw.number,
                url: raw.url,
                headers: raw.headers,
                body,
            }))),
            Err(e) => {
                this.raw.finish();
                Poll::Ready(Some(Err(e)))
            }
        }
    }
}

impl<T> fmt::Debug for Pages<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pages").finish_non_exhaustive()
    }
}

/// The items of every page, from [`Paginator::items`]. Ends after the last
/// page's last item, or after the first error.
#[must_use = "streams do nothing unless polled"]
pub struct Items<T> {
    raw: RawPages,
    pointer: String,
    buffered: VecDeque<T>,
    done: bool,
}

// The items are never pinned: they are moved out of the queue.
impl<T> Unpin for Items<T> {}

impl<T: DeserializeOwned> Items<T> {
    fn decode(&self, raw: &RawPage) -> Result<Vec<T>, Error> {
        if self.pointer.is_empty() {
            return crate::response::decode_json(&raw.bytes);
        }
        let array = raw
            .value
            .pointer(&self.pointer)
            .filter(|v| v.is_array())
            .ok_or_else(|| {
                PaginationError::new(ErrorKind::NoItems(self.pointer.clone()), raw.number)
                    .into_error()
            })?;
        let bytes = serde_json::to_vec(array).map_err(Error::decode)?;
        crate::response::decode_json(&bytes)
    }
}

impl<T: DeserializeOwned> Stream for Items<T> {
    type Item = Result<T, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(item) = this.buffered.pop_front() {
                return Poll::Ready(Some(Ok(item)));
            }
            if this.done {
                return Poll::Ready(None);
            }
            let raw = match Pin::new(&mut this.raw).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    this.done = true;
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Err(e))) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(Some(Ok(raw))) => raw,
            };
            match this.decode(&raw) {
                Ok(items) => this.buffered.extend(items),
                Err(e) => {
                    this.done = true;
                    this.raw.finish();
                    return Poll::Ready(Some(Err(e)));
                }
            }
        }
    }
}

impl<T> fmt::Debug for Items<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Items")
            .field("pointer", &self.pointer)
            .field("buffered", &self.buffered.len())
            .finish_non_exhaustive()
    }
}

/// Why a pagination stopped short: its next page could not be followed.
///
/// The facade [`Error`] that carries it is a decode error
/// ([`is_decode`](Error::is_decode)); find it with
/// `std::error::Error::source(&err)` and `downcast_ref`.
#[derive(Debug)]
pub struct PaginationError {
    kind: ErrorKind,
    page: u32,
}

#[derive(Debug)]
enum ErrorKind {
    Loop(String),
    TooManyPages(u32),
    CrossOrigin(String),
    BadLink,
    BadCursor(String),
    NoItems(String),
}

impl PaginationError {
    fn new(kind: ErrorKind, page: u32) -> Self {
        Self { kind, page }
    }

    fn into_error(self) -> Error {
        Error::decode(self)
    }

    /// The number of the page whose answer could not be followed (1 for the
    /// first page).
    #[must_use]
    pub fn page(&self) -> u32 {
        self.page
    }

    /// The page led to one already fetched: the same URL (so the same
    /// cursor) again.
    #[must_use]
    pub fn is_loop(&self) -> bool {
        matches!(self.kind, ErrorKind::Loop(_))
    }

    /// The page had a next page past [`Paginate::max_pages`].
    #[must_use]
    pub fn is_too_many_pages(&self) -> bool {
        matches!(self.kind, ErrorKind::TooManyPages(_))
    }

    /// The page's `Link` led to another origin (scheme, host or port).
    #[must_use]
    pub fn is_cross_origin(&self) -> bool {
        matches!(self.kind, ErrorKind::CrossOrigin(_))
    }

    /// The URL that was not followed, for a loop or another origin. It may
    /// hold what the query holds (a token): it is kept out of the message.
    #[must_use]
    pub fn url(&self) -> Option<&str> {
        match &self.kind {
            ErrorKind::Loop(url) | ErrorKind::CrossOrigin(url) => Some(url),
            _ => None,
        }
    }
}

impl fmt::Display for PaginationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.page;
        match &self.kind {
            ErrorKind::Loop(_) => {
                write!(
                    f,
                    "pagination loop: page {n} leads to a page already fetched"
                )
            }
            ErrorKind::TooManyPages(max) => {
                write!(f, "more than {max} pages: page {n} has a next page")
            }
            ErrorKind::CrossOrigin(_) => {
                write!(
                    f,
                    "page {n}'s next link leads to another origin; not followed"
                )
            }
            ErrorKind::BadLink => write!(f, "page {n}'s next link is not a valid URL"),
            ErrorKind::BadCursor(at) => {
                write!(f, "page {n}'s cursor at {at} is not a string or a number")
            }
            ErrorKind::NoItems(at) => write!(f, "page {n} has no array at `{at}`"),
        }
    }
}

impl std::error::Error for PaginationError {}

// ----- fetching -----

/// What the fetching task needs.
struct Job {
    client: Client,
    template: Request<()>,
    body: ReplayBody,
    how: Paginate,
    /// The pointer to the items' array, for [`Paginator::items`].
    items: Option<String>,
}

/// A page as fetched, before its body is decoded as the caller's type.
struct RawPage {
    number: u32,
    url: Uri,
    headers: HeaderMap,
    bytes: Bytes,
    value: Value,
}

/// The pages as fetched: a task that fetches them, paced by the stream.
///
/// The stream hands the task one permit per page it may fetch: as many as
/// it is waiting for (one) plus the prefetch, topped up each time it is
/// polled. The channel holds that many pages, so the task never waits on
/// it for long.
struct RawPages {
    state: RawState,
    prefetch: u64,
}

enum RawState {
    Idle(Option<Result<Box<Job>, Error>>),
    Running {
        rx: mpsc::Receiver<Result<RawPage, Error>>,
        credits: Arc<Semaphore>,
        /// Permits given so far, and pages received.
        granted: u64,
        received: u64,
        _task: AbortOnDrop,
    },
    Done,
}

impl RawPages {
    /// Stops fetching (after an error the caller found in a page).
    fn finish(&mut self) {
        self.state = RawState::Done;
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<RawPage, Error>>> {
        loop {
            match &mut self.state {
                RawState::Idle(job) => match job.take() {
                    Some(Ok(job)) => {
                        let capacity = usize::try_from(self.prefetch)
                            .unwrap_or(MAX_PREFETCH)
                            .saturating_add(1);
                        let (tx, rx) = mpsc::channel(capacity);
                        let credits = Arc::new(Semaphore::new(0));
                        let task = tokio::spawn(run(*job, tx, Arc::clone(&credits)));
                        self.state = RawState::Running {
                            rx,
                            credits,
                            granted: 0,
                            received: 0,
                            _task: AbortOnDrop(task),
                        };
                    }
                    Some(Err(e)) => {
                        self.state = RawState::Done;
                        return Poll::Ready(Some(Err(e)));
                    }
                    None => self.state = RawState::Done,
                },
                RawState::Running {
                    rx,
                    credits,
                    granted,
                    received,
                    ..
                } => {
                    let want = received.saturating_add(self.prefetch).saturating_add(1);
                    if *granted < want {
                        credits.add_permits(usize::try_from(want - *granted).unwrap_or(1));
                        *granted = want;
                    }
                    match rx.poll_recv(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Some(Ok(page))) => {
                            *received += 1;
                            return Poll::Ready(Some(Ok(page)));
                        }
                        Poll::Ready(Some(Err(e))) => {
                            self.state = RawState::Done;
                            return Poll::Ready(Some(Err(e)));
                        }
                        Poll::Ready(None) => {
                            self.state = RawState::Done;
                            return Poll::Ready(None);
                        }
                    }
                }
                RawState::Done => return Poll::Ready(None),
            }
        }
    }
}

/// Aborts the fetching task when the stream is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The fetching task: one page per permit, until the last page or an
/// error, which it sends on as the stream's last item.
async fn run(job: Job, tx: mpsc::Sender<Result<RawPage, Error>>, credits: Arc<Semaphore>) {
    let Job {
        client,
        template,
        body,
        how,
        items,
    } = job;
    let mut walk = Walk {
        how: &how,
        items: items.as_deref(),
        seen: HashSet::new(),
        number: 0,
        items_seen: 0,
    };
    let mut next = walk.first(template.uri());
    loop {
        let uri = match next {
            Ok(Some(uri)) => uri,
            Ok(None) => return,
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        };
        // NOTE: a closed semaphore is never made; an error here means the
        // stream is gone.
        let Ok(permit) = credits.acquire().await else {
            return;
        };
        permit.forget();
        walk.number += 1;
        let page = match fetch(&client, &template, &body, uri, walk.number).await {
            Ok(page) => page,
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        };
        next = walk.after(&page);
        if tx.send(Ok(page)).await.is_err() {
            return;
        }
    }
}

/// Sends one page's request and reads its body as JSON.
async fn fetch(
    client: &Client,
    template: &Request<()>,
    body: &ReplayBody,
    uri: Uri,
    number: u32,
) -> Result<RawPage, Error> {
    let mut req = template.clone();
    *req.uri_mut() = uri;
    if number > 1 && req.headers_mut().remove(IDEMPOTENCY_KEY).is_some() {
        IdempotencyKey::ensure(&mut req);
    }
    let body = body.try_replay().map_err(|e| {
        Error::request(format!(
            "the request body cannot be sent again for page {number}: {e}"
        ))
    })?;
    let builder = RequestBuilder {
        client: client.clone(),
        parts: Ok(req),
        body,
    };
    let resp: Response = builder.send().await?.error_for_status().await?;
    let url = resp.url().clone();
    let headers = resp.headers().clone();
    // Read as `Response::json` reads, for its errors (a body that is not
    // JSON described); the caller's type is decoded from it afterwards.
    let value: Value = resp.json().await?;
    let bytes = Bytes::from(serde_json::to_vec(&value).map_err(Error::decode)?);
    Ok(RawPage {
        number,
        url,
        headers,
        bytes,
        value,
    })
}

/// Where the pagination is: what it fetched, and how to go on.
struct Walk<'a> {
    how: &'a Paginate,
    items: Option<&'a str>,
    seen: HashSet<String>,
    number: u32,
    items_seen: u64,
}

impl Walk<'_> {
    /// The first page's URL: the request's, with the style's parameters.
    fn first(&mut self, uri: &Uri) -> Result<Option<Uri>, Error> {
        let mut params = Vec::new();
        match &self.how.style {
            Style::Page { param, first } => params.push((param.as_str(), first.to_string())),
            Style::Offset { param } => params.push((param.as_str(), String::from("0"))),
            Style::Link | Style::Cursor { .. } => {}
        }
        if let Some((param, size)) = &self.how.page_size {
            params.push((param.as_str(), size.to_string()));
        }
        let uri = with_params(uri, &params)?;
        self.seen.insert(uri.to_string());
        Ok(Some(uri))
    }

    /// The page after `page`, if any.
    fn after(&mut self, page: &RawPage) -> Result<Option<Uri>, Error> {
        let n = page.number;
        let count = self.count(page);
        self.items_seen = self.items_seen.saturating_add(count.unwrap_or(0));
        if let Some(at) = &self.how.has_more {
            if page.value.pointer(at) == Some(&Value::Bool(false)) {
                return Ok(None);
            }
        }
        if let Some(at) = &self.how.total {
            if let Some(total) = page.value.pointer(at).and_then(Value::as_u64) {
                if self.items_seen >= total {
                    return Ok(None);
                }
            }
        }
        let size = self
            .how
            .page_size
            .as_ref()
            .map(|(p, s)| (p.as_str(), s.to_string()));
        let next = match &self.how.style {
            Style::Link => match next_link(&page.headers) {
                None => return Ok(None),
                Some(target) => {
                    let bad = || PaginationError::new(ErrorKind::BadLink, n).into_error();
                    let resolved = resolve_reference(&page.url, &target).ok_or_else(bad)?;
                    let uri: Uri = resolved.parse().map_err(|_| bad())?;
                    if uri.scheme() != page.url.scheme() || uri.authority() != page.url.authority()
                    {
                        let kind = ErrorKind::CrossOrigin(uri.to_string());
                        return Err(PaginationError::new(kind, n).into_error());
                    }
                    uri
                }
            },
            Style::Cursor { from, param } => {
                let cursor = match from {
                    CursorFrom::With(f) => f(&page.value),
                    CursorFrom::Pointer(at) => match page.value.pointer(at) {
                        None | Some(Value::Null) => None,
                        Some(Value::String(s)) => Some(s.clone()),
                        Some(Value::Number(num)) => Some(num.to_string()),
                        Some(_) => {
                            let kind = ErrorKind::BadCursor(at.clone());
                            return Err(PaginationError::new(kind, n).into_error());
                        }
                    },
                };
                let Some(cursor) = cursor.filter(|c| !c.is_empty()) else {
                    return Ok(None);
                };
                let mut params = vec![(param.as_str(), cursor)];
                params.extend(size);
                with_params(&page.url, &params)?
            }
            Style::Page { param, first } => {
                if count == Some(0) {
                    return Ok(None);
                }
                let number = first.saturating_add(u64::from(n));
                let mut params = vec![(param.as_str(), number.to_string())];
                params.extend(size);
                with_params(&page.url, &params)?
            }
            Style::Offset { param } => {
                let Some(count) = count else {
                    let at = self.items.unwrap_or("").to_owned();
                    return Err(PaginationError::new(ErrorKind::NoItems(at), n).into_error());
                };
                if count == 0 {
                    return Ok(None);
                }
                let mut params = vec![(param.as_str(), self.items_seen.to_string())];
                params.extend(size);
                with_params(&page.url, &params)?
            }
        };
        if let Some(max) = self.how.max_pages {
            if n >= max {
                return Err(PaginationError::new(ErrorKind::TooManyPages(max), n).into_error());
            }
        }
        let key = next.to_string();
        if self.seen.contains(&key) {
            return Err(PaginationError::new(ErrorKind::Loop(key), n).into_error());
        }
        self.seen.insert(key);
        Ok(Some(next))
    }

    /// The number of items on a page: the array at the items' pointer,
    /// else the body when it is an array.
    fn count(&self, page: &RawPage) -> Option<u64> {
        let value = match self.items {
            Some(at) => page.value.pointer(at),
            None => Some(&page.value),
        };
        value
            .and_then(Value::as_array)
            .map(|a| u64::try_from(a.len()).unwrap_or(u64::MAX))
    }
}

/// `uri` with each `(name, value)` query parameter set: any with the same
/// name removed, the new one appended.
fn with_params(uri: &Uri, params: &[(&str, String)]) -> Result<Uri, Error> {
    if params.is_empty() {
        return Ok(uri.clone());
    }
    let mut pairs: Vec<String> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect();
    for (name, value) in params {
        let encoded = serde_urlencoded::to_string([(name, value)]).map_err(Error::request)?;
        let key = encoded.split('=').next().unwrap_or_default().to_owned();
        pairs.retain(|p| p.split('=').next() != Some(key.as_str()));
        pairs.push(encoded);
    }
    let pq = format!("{}?{}", uri.path(), pairs.join("&"));
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(pq.parse().map_err(Error::request)?);
    Uri::from_parts(parts).map_err(Error::request)
}

// ----- RFC 8288 -----

/// The target of the first link, over every `Link` field, whose `rel`
/// includes `next` (RFC 8288 §3: only the first `rel` of a link counts;
/// a link with an `anchor` is about another resource and is skipped).
fn next_link(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(LINK)
        .iter()
        .filter_map(|v| std::str::from_utf8(v.as_bytes()).ok())
        .flat_map(parse_links)
        .find(|link| {
            !link.params.iter().any(|(k, _)| k == "anchor")
                && link
                    .params
                    .iter()
                    .find(|(k, _)| k == "rel")
                    .is_some_and(|(_, rel)| {
                        rel.split_ascii_whitespace()
                            .any(|r| r.eq_ignore_ascii_case("next"))
                    })
        })
        .map(|link| link.target)
}

/// One link-value: `<target>; name=value; ...`, names lowercased.
#[derive(Debug, PartialEq, Eq)]
struct Link {
    target: String,
    params: Vec<(String, String)>,
}

/// The link-values of one `Link` field value. Lenient: a malformed link is
/// skipped up to the next comma outside quotes and angle brackets.
fn parse_links(value: &str) -> Vec<Link> {
    let mut links = Vec::new();
    let mut rest = value;
    loop {
        rest = rest.trim_start_matches(|c: char| c == ',' || c.is_ascii_whitespace());
        if rest.is_empty() {
            return links;
        }
        let Some(after) = rest.strip_prefix('<') else {
            rest = skip_link(rest);
            continue;
        };
        let Some((target, after)) = after.split_once('>') else {
            return links;
        };
        let mut link = Link {
            target: target.trim().to_owned(),
            params: Vec::new(),
        };
        rest = after;
        let mut ok = true;
        loop {
            rest = rest.trim_start();
            if rest.is_empty() || rest.starts_with(',') {
                break;
            }
            let Some(after) = rest.strip_prefix(';') else {
                ok = false;
                break;
            };
            let (param, after) = parse_param(after.trim_start());
            rest = after;
            if let Some(param) = param {
                link.params.push(param);
            }
        }
        if ok {
            links.push(link);
        } else {
            rest = skip_link(rest);
        }
    }
}

/// One `name [= token / quoted-string]` parameter, and what follows it.
fn parse_param(s: &str) -> (Option<(String, String)>, &str) {
    let end = s
        .find(|c: char| c == '=' || c == ';' || c == ',' || c.is_ascii_whitespace())
        .unwrap_or(s.len());
    let (name, mut rest) = s.split_at(end);
    let name = name.to_ascii_lowercase();
    rest = rest.trim_start();
    let Some(after) = rest.strip_prefix('=') else {
        return ((!name.is_empty()).then(|| (name, String::new())), rest);
    };
    rest = after.trim_start();
    let value;
    if let Some(quoted) = rest.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = quoted.char_indices();
        let mut end = quoted.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, escaped)) = chars.next() {
                        out.push(escaped);
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => out.push(c),
            }
        }
        value = out;
        rest = quoted.get(end..).unwrap_or("");
    } else {
        let end = rest
            .find(|c: char| c == ';' || c == ',' || c.is_ascii_whitespace())
            .unwrap_or(rest.len());
        let (token, after) = rest.split_at(end);
        value = token.to_owned();
        rest = after;
    }
    ((!name.is_empty()).then_some((name, value)), rest)
}

/// What follows the next comma outside quotes and angle brackets.
fn skip_link(s: &str) -> &str {
    let (mut quoted, mut angled, mut escaped) = (false, false, false);
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' if !angled => quoted = !quoted,
            '<' if !quoted => angled = true,
            '>' if !quoted => angled = false,
            ',' if !quoted && !angled => return s.get(i + 1..).unwrap_or(""),
            _ => {}
        }
    }
    ""
}

/// `reference` resolved against `base` (RFC 3986 §5.2), its fragment
/// dropped; `None` when `base` has no scheme or host.
fn resolve_reference(base: &Uri, reference: &str) -> Option<String> {
    let reference = reference.split('#').next().unwrap_or("");
    let scheme = base.scheme_str()?;
    let authority = base.authority()?.as_str();
    if has_scheme(reference) {
        return Some(reference.to_owned());
    }
    if let Some(rest) = reference.strip_prefix("//") {
        return Some(format!("{scheme}://{rest}"));
    }
    let (path, query) = match reference.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (reference, None),
    };
    let path = if path.is_empty() {
        base.path().to_owned()
    } else if path.starts_with('/') {
        remove_dot_segments(path)
    } else {
        let base_path = base.path();
        let dir = base_path
            .rfind('/')
            .map_or("/", |i| base_path.get(..=i).unwrap_or("/"));
        remove_dot_segments(&format!("{dir}{path}"))
    };
    // An empty path keeps the base's query unless the reference has one.
    let query = if reference.split('?').next() == Some("") {
        query.or(base.query())
    } else {
        query
    };
    Some(match query {
        Some(q) => format!("{scheme}://{authority}{path}?{q}"),
        None => format!("{scheme}://{authority}{path}"),
    })
}

/// Whether a reference starts with a scheme (RFC 3986 §3.1).
fn has_scheme(reference: &str) -> bool {
    let Some((scheme, _)) = reference.split_once(':') else {
        return false;
    };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// An absolute path with its `.` and `..` segments applied (RFC 3986
/// §5.2.4).
fn remove_dot_segments(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let last = segments.len().saturating_sub(1);
    for (i, segment) in segments.iter().enumerate() {
        match *segment {
            "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
        if i == last && matches!(*segment, "." | "..") {
            out.push("");
        }
    }
    format!("/{}", out.join("/"))
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use futures_util::StreamExt;
    use http_body_util::Full;
    use parapet_core::BoxError;

    use super::*;

    /// A client over an in-process API of numbered pages (`?page=n`, one
    /// item each, forever) that records the pages asked for.
    fn numbered_pages() -> (Client, Arc<Mutex<Vec<u64>>>) {
        let asked = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&asked);
        let svc = tower::service_fn(move |req: Request<ReplayBody>| {
            let page: u64 = req
                .uri()
                .query()
                .and_then(|q| q.strip_prefix("page="))
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            log.lock().unwrap().push(page);
            async move {
                let mut resp = http::Response::new(Full::new(Bytes::from(format!("[{page}]"))));
                resp.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    "application/json".parse().unwrap(),
                );
                Ok::<_, BoxError>(resp)
            }
        });
        let client = Client::builder()
            .base_url("http://api.test")
            .build_with(svc)
            .unwrap();
        (client, asked)
    }

    /// Lets every task run until all are waiting (time is paused: the
    /// sleep ends only once nothing else can run).
    async fn settle() {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn prefetch_fetches_that_many_pages_ahead_and_no_more() {
        let (client, asked) = numbered_pages();
        let mut items = client
            .get("/n")
            .paginate(Paginate::page_number("page").prefetch(2))
            .items::<u64>("");
        assert!(
            asked.lock().unwrap().is_empty(),
            "nothing is sent before the first poll"
        );

        assert_eq!(items.next().await.unwrap().unwrap(), 1);
        settle().await;
        assert_eq!(*asked.lock().unwrap(), [1, 2, 3]);

        assert_eq!(items.next().await.unwrap().unwrap(), 2);
        settle().await;
        assert_eq!(*asked.lock().unwrap(), [1, 2, 3, 4]);

        drop(items);
        settle().await;
        assert_eq!(
            *asked.lock().unwrap(),
            [1, 2, 3, 4],
            "dropping the stream stops fetching"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn without_prefetch_a_page_is_fetched_only_when_asked_for() {
        let (client, asked) = numbered_pages();
        let mut pages = client
            .get("/n")
            .paginate(Paginate::page_number("page"))
            .pages::<Vec<u64>>();
        assert_eq!(pages.next().await.unwrap().unwrap().into_body(), [1]);
        settle().await;
        assert_eq!(*asked.lock().unwrap(), [1]);
        assert_eq!(pages.next().await.unwrap().unwrap().number(), 2);
        settle().await;
        assert_eq!(*asked.lock().unwrap(), [1, 2]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_that_cannot_be_built_fails_the_stream_without_sending() {
        let (client, asked) = numbered_pages();
        let mut pages = client
            .get("/n")
            .header("bad header", "x")
            .paginate(Paginate::page_number("page"))
            .pages::<Vec<u64>>();
        assert!(pages.next().await.unwrap().unwrap_err().is_request());
        assert!(pages.next().await.is_none());
        assert!(asked.lock().unwrap().is_empty());
    }

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(LINK, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn the_next_link_is_found_in_github_style_headers() {
        let h = headers(&[
            r#"<https://api.test/repos?page=3>; rel="next", <https://api.test/repos?page=50>; rel="last""#,
        ]);
        assert_eq!(
            next_link(&h).as_deref(),
            Some("https://api.test/repos?page=3")
        );
    }

    #[test]
    fn rel_may_be_unquoted_listed_or_in_another_field() {
        let h = headers(&[
            "</a>; rel=prev",
            "</b>; title=\"x, y; z\"; REL=\"Last NEXT\"",
        ]);
        assert_eq!(next_link(&h).as_deref(), Some("/b"));
        let h = headers(&["</a>; rel=next"]);
        assert_eq!(next_link(&h).as_deref(), Some("/a"));
    }

    #[test]
    fn a_comma_in_a_target_or_quoted_value_does_not_split_links() {
        let h = headers(&[r#"</x?a=1,2>; title="a, b"; rel="prev", </y>; rel="next""#]);
        assert_eq!(next_link(&h).as_deref(), Some("/y"));
    }

    #[test]
    fn only_the_first_rel_counts_and_anchored_links_are_skipped() {
        let h = headers(&[r#"</a>; rel="prev"; rel="next", </b>; anchor="/o"; rel=next"#]);
        assert_eq!(next_link(&h), None);
    }

    #[test]
    fn malformed_links_are_skipped() {
        let h = headers(&[r#"garbage; rel=next, <oops; rel=next"#]);
        assert_eq!(next_link(&h), None);
        let h = headers(&[r#"x <nope>, </ok>; rel=next"#]);
        assert_eq!(next_link(&h).as_deref(), Some("/ok"));
    }

    #[test]
    fn references_resolve_against_the_page_url() {
        let base: Uri = "https://api.test/v1/repos/list?page=1".parse().unwrap();
        let r = |s: &str| resolve_reference(&base, s).unwrap();
        assert_eq!(r("https://x.test/a"), "https://x.test/a");
        assert_eq!(r("//cdn.test/a"), "https://cdn.test/a");
        assert_eq!(r("/v2/x?p=2"), "https://api.test/v2/x?p=2");
        assert_eq!(r("?page=2"), "https://api.test/v1/repos/list?page=2");
        assert_eq!(r("more?page=2"), "https://api.test/v1/repos/more?page=2");
        assert_eq!(r("../users?page=2#top"), "https://api.test/v1/users?page=2");
        assert_eq!(r("./"), "https://api.test/v1/repos/");
        assert_eq!(r(""), "https://api.test/v1/repos/list?page=1");
    }

    #[test]
    fn params_replace_those_of_the_same_name() {
        let uri: Uri = "http://a.test/x?q=rust&page=1&per_page=5".parse().unwrap();
        let next = with_params(&uri, &[("page", "2".into()), ("cursor", "a b&c".into())]).unwrap();
        assert_eq!(
            next.to_string(),
            "http://a.test/x?q=rust&per_page=5&page=2&cursor=a+b%26c"
        );
    }
}
