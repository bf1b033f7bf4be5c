//! The server handle, its routes and its records.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::future::poll_fn;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Poll;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};

use crate::arrival::Arrival;
use crate::conn;
use crate::reply::Reply;

/// A dynamic route handler.
pub(crate) type Handler = Arc<dyn Fn(&Arrival) -> Reply + Send + Sync>;

/// A loopback HTTP/1.1 server that answers from a script and records what
/// arrives.
///
/// [`start`](Self::start) binds `127.0.0.1` on a free port and serves in
/// background tasks until the `Server` is dropped. Script it per path with
/// [`on`](Self::on); read what arrived with [`arrivals`](Self::arrivals).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use parapet_testkit::{Reply, Server};
///
/// let server = Server::start().await;
/// server.on("/flaky").replies([Reply::status(503), Reply::ok().body("fine")]);
/// assert!(server.url("/flaky").starts_with("http://127.0.0.1:"));
/// assert_eq!(server.hits("/flaky"), 0);
/// # }
/// ```
///
/// # Connections
///
/// HTTP/1.1 with keep-alive: a connection serves requests one after the
/// other until the client closes it, asks for `connection: close`, or a
/// reply ends it. Connections are numbered 1, 2, 3, ... in the order they
/// are accepted ([`Arrival::connection`]). Request bodies may be sent with
/// `content-length` or chunked; `expect: 100-continue` is answered. A
/// request the server cannot parse is answered `400` (`431` for a head over
/// 64 KiB or with more than 128 header lines, `413` for a body over 64 MiB)
/// and its connection closed; it is not recorded as an arrival. A path with no route is answered `404`.
///
/// # Shutdown
///
/// Dropping the `Server` closes the listening socket at once (a later
/// connect to [`addr`](Self::addr) is refused) and aborts every connection
/// task, which closes their sockets as soon as the runtime gets to them.
/// [`shutdown`](Self::shutdown) does the same and waits until every task has
/// ended.
pub struct Server {
    addr: SocketAddr,
    shared: Arc<Shared>,
    listener: Arc<Mutex<Option<TcpListener>>>,
    conns: Arc<Mutex<JoinSet<()>>>,
    accept: JoinHandle<()>,
}

/// State shared by the server handle and its tasks.
pub(crate) struct Shared {
    routes: Mutex<HashMap<String, Script>>,
    arrivals: Mutex<Vec<Arrival>>,
    connections: AtomicU64,
    requests: AtomicU64,
    recording: AtomicBool,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    /// Requests held while their reply waits (delay, drip, hang), by token.
    waiting: Mutex<HashMap<u64, Waiting>>,
    /// The next token for `waiting`.
    next_token: AtomicU64,
    /// Woken whenever an arrival is recorded or `in_flight` changes.
    changed: Notify,
}

/// What a route does.
enum Script {
    /// The n-th request gets `replies[n]`; the last one repeats.
    Replies {
        replies: Vec<Arc<Reply>>,
        served: usize,
    },
    /// A closure decides.
    Handler(Handler),
}

/// What the connection should do with a request whose head has been read.
pub(crate) enum Plan {
    /// Send this reply.
    Reply(Arc<Reply>),
    /// Ask this handler, once the body is read.
    Handler(Handler),
    /// No route: 404.
    NotFound,
}

/// Lock a mutex, ignoring poisoning: the data guarded here stays consistent
/// even if a user's handler panicked while another lock was held.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Server {
    /// Start a server on `127.0.0.1` with a free port, with no routes (every
    /// path answers `404` until scripted).
    ///
    /// Must be called inside a tokio runtime (any flavour). The server's
    /// tasks are spawned on it, so the server serves only while that runtime
    /// runs: start it in the test (or benchmark runtime) that uses it.
    ///
    /// # Panics
    ///
    /// If no loopback port can be bound (see [`try_start`](Self::try_start)
    /// for the fallible form).
    // A test cannot go on without its server; say why, loudly.
    #[allow(clippy::panic)]
    pub async fn start() -> Self {
        match Self::try_start().await {
            Ok(server) => server,
            Err(e) => panic!("parapet-testkit: cannot bind 127.0.0.1:0: {e}"),
        }
    }

    /// Like [`start`](Self::start), returning the bind error instead of
    /// panicking.
    ///
    /// # Errors
    ///
    /// The I/O error from binding `127.0.0.1:0`.
    pub async fn try_start() -> io::Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            routes: Mutex::new(HashMap::new()),
            arrivals: Mutex::new(Vec::new()),
            connections: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            recording: AtomicBool::new(true),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            waiting: Mutex::new(HashMap::new()),
            next_token: AtomicU64::new(0),
            changed: Notify::new(),
        });
        let listener = Arc::new(Mutex::new(Some(listener)));
        let conns = Arc::new(Mutex::new(JoinSet::new()));
        let accept = tokio::spawn(accept_loop(
            Arc::clone(&listener),
            Arc::clone(&shared),
            Arc::clone(&conns),
        ));
        Ok(Self {
            addr,
            shared,
            listener,
            conns,
            accept,
        })
    }

    /// The address the server listens on (`127.0.0.1:<port>`).
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `127.0.0.1:<port>`, as a `host` header or URI authority.
    #[must_use]
    pub fn authority(&self) -> String {
        self.addr.to_string()
    }

    /// The URL of `path` on this server: `http://127.0.0.1:<port><path>`.
    /// A `/` is put in front of `path` if it lacks one; `path` may carry a
    /// query.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let server = parapet_testkit::Server::start().await;
    /// let port = server.addr().port();
    /// assert_eq!(server.url("/a?b=c"), format!("http://127.0.0.1:{port}/a?b=c"));
    /// assert_eq!(server.url("a"), format!("http://127.0.0.1:{port}/a"));
    /// # }
    /// ```
    #[must_use]
    pub fn url(&self, path: &str) -> String {
        let slash = if path.starts_with('/') { "" } else { "/" };
        format!("http://{}{slash}{path}", self.addr)
    }

    /// Script the route for `path`, matched exactly against the request's
    /// path (the query is ignored; anything from a `?` in `path` is dropped,
    /// and a `/` is put in front if it lacks one). See [`Route`].
    #[must_use = "a route does nothing until given a reply, replies or a handler"]
    pub fn on(&self, path: &str) -> Route {
        Route {
            shared: Arc::clone(&self.shared),
            path: route_path(path).into_owned(),
        }
    }

    /// Every request recorded so far, in the order they were read.
    #[must_use]
    pub fn arrivals(&self) -> Vec<Arrival> {
        lock(&self.shared.arrivals).clone()
    }

    /// The requests recorded so far for `path` (matched as in
    /// [`on`](Self::on)).
    #[must_use]
    pub fn arrivals_for(&self, path: &str) -> Vec<Arrival> {
        let path = route_path(path);
        lock(&self.shared.arrivals)
            .iter()
            .filter(|a| a.path == *path)
            .cloned()
            .collect()
    }

    /// How many requests have been recorded for `path` (matched as in
    /// [`on`](Self::on)).
    #[must_use]
    pub fn hits(&self, path: &str) -> usize {
        let path = route_path(path);
        lock(&self.shared.arrivals)
            .iter()
            .filter(|a| a.path == *path)
            .count()
    }

    /// Forget the arrivals recorded so far (route scripts, their request
    /// numbers and the counters are kept).
    pub fn clear_arrivals(&self) {
        lock(&self.shared.arrivals).clear();
    }

    /// Whether to keep a record of every request. Default: `true`.
    ///
    /// A benchmark sending millions of requests turns it off so that memory
    /// stays flat; [`requests`](Self::requests), the connection and
    /// in-flight counts and handlers keep working, while
    /// [`arrivals`](Self::arrivals), [`hits`](Self::hits) and
    /// [`wait_for_arrivals`](Self::wait_for_arrivals) only see what was
    /// recorded while it was on.
    pub fn record_arrivals(&self, on: bool) {
        self.shared.recording.store(on, Ordering::SeqCst);
    }

    /// How many requests the server has read (recorded or not).
    #[must_use]
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// How many connections the server has accepted.
    #[must_use]
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// How many requests are in flight now (see
    /// [`max_in_flight`](Self::max_in_flight)).
    #[must_use]
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::SeqCst)
    }

    /// The most requests that were ever in flight at once.
    ///
    /// A request is in flight from the moment it has been read (when its
    /// arrival is recorded) until the server starts the last write of its
    /// reply, or until its connection ends (a fault, or the client going
    /// away). The count drops *before* the last bytes are written, so a
    /// client can never see a reply complete while the server still counts
    /// it: a client that keeps at most `k` requests outstanding never makes
    /// this exceed `k`.
    ///
    /// While a reply is delayed, dripped or hanging, the server watches the
    /// connection and ends the request when the client closes or resets it.
    /// Before it counts a new request, it also checks every such held
    /// request and ends those whose client has already closed or reset the
    /// connection. So a client that abandons a request (say, on a timeout),
    /// closes that connection and then sends a retry is never counted
    /// twice. A client that abandons a request but keeps its connection open
    /// still holds it in flight: to the server it is still waiting. (hyper
    /// closes such a connection from its own task, a moment after the
    /// request future is dropped; test concurrency limits with replies that
    /// complete, and use abandoned ones only where that moment cannot
    /// matter.)
    #[must_use]
    pub fn max_in_flight(&self) -> usize {
        self.shared.max_in_flight.load(Ordering::SeqCst)
    }

    /// Wait until at least `n` arrivals have been recorded, and return them
    /// all. (Arrivals forgotten by [`clear_arrivals`](Self::clear_arrivals)
    /// or not recorded because of [`record_arrivals`](Self::record_arrivals)
    /// do not count.)
    pub async fn wait_for_arrivals(&self, n: usize) -> Vec<Arrival> {
        loop {
            let mut changed = pin!(self.shared.changed.notified());
            changed.as_mut().enable();
            {
                let arrivals = lock(&self.shared.arrivals);
                if arrivals.len() >= n {
                    return arrivals.clone();
                }
            }
            changed.await;
        }
    }

    /// Wait until no request is in flight (for instance until the server
    /// has noticed that a client abandoned a hanging request).
    pub async fn wait_idle(&self) {
        loop {
            let mut changed = pin!(self.shared.changed.notified());
            changed.as_mut().enable();
            if self.in_flight() == 0 {
                return;
            }
            changed.await;
        }
    }

    /// Stop the server and wait until the accept loop and every connection
    /// task have ended (their sockets closed). Dropping the server stops it
    /// too, without waiting.
    pub async fn shutdown(mut self) {
        self.stop();
        // The accept task was aborted; its result is of no interest.
        let _ = (&mut self.accept).await;
        let mut conns = std::mem::take(&mut *lock(&self.conns));
        conns.shutdown().await;
    }

    /// Close the listener and abort every task (idempotent).
    fn stop(&self) {
        drop(lock(&self.listener).take());
        self.accept.abort();
        lock(&self.conns).abort_all();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.addr)
            .field("connections", &self.connections())
            .field("arrivals", &lock(&self.shared.arrivals).len())
            .field("in_flight", &self.in_flight())
            .field("max_in_flight", &self.max_in_flight())
            .finish_non_exhaustive()
    }
}

/// The route key of a path as a user writes it: no query, a leading `/`.
fn route_path(path: &str) -> Cow<'_, str> {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    if path.starts_with('/') || path == "*" {
        Cow::Borrowed(path)
    } else {
        Cow::Owned(format!("/{path}"))
    }
}

/// Accept connections until the listener is taken away.
async fn accept_loop(
    listener: Arc<Mutex<Option<TcpListener>>>,
    shared: Arc<Shared>,
    conns: Arc<Mutex<JoinSet<()>>>,
) {
    loop {
        let accepted = poll_fn(|cx| match lock(&listener).as_ref() {
            Some(l) => l.poll_accept(cx).map(Some),
            None => Poll::Ready(None),
        })
        .await;
        match accepted {
            None => return,
            Some(Ok((stream, _peer))) => {
                let id = shared.connections.fetch_add(1, Ordering::SeqCst) + 1;
                let mut set = lock(&conns);
                // Reap finished connection tasks so the set does not grow.
                while set.try_join_next().is_some() {}
                set.spawn(conn::serve(stream, id, Arc::clone(&shared)));
            }
            // Out of file descriptors and the like: let it pass.
            Some(Err(_)) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

impl Shared {
    /// What to do with a request for `path`; counts it for its route.
    pub(crate) fn plan(&self, path: &str) -> Plan {
        let mut routes = lock(&self.routes);
        match routes.get_mut(path) {
            None => Plan::NotFound,
            Some(Script::Handler(h)) => Plan::Handler(Arc::clone(h)),
            Some(Script::Replies { replies, served }) => {
                let i = (*served).min(replies.len().saturating_sub(1));
                *served = served.saturating_add(1);
                replies
                    .get(i)
                    .map_or(Plan::NotFound, |r| Plan::Reply(Arc::clone(r)))
            }
        }
    }

    /// Record an arrival.
    pub(crate) fn record(&self, arrival: Arrival) {
        self.requests.fetch_add(1, Ordering::SeqCst);
        if self.recording.load(Ordering::SeqCst) {
            lock(&self.arrivals).push(arrival);
        }
        self.changed.notify_waiters();
    }

    /// One more request in flight; returns its liveness flag.
    ///
    /// First, every request held while its reply waits is checked: if its
    /// client has already closed or reset the connection (the kernel knows,
    /// even if that connection's task has not run yet), it leaves the count
    /// now. A client that abandons a request, closes its connection and only
    /// then sends the next request is therefore never counted twice.
    pub(crate) fn enter(&self) -> Arc<AtomicBool> {
        {
            let waiting = lock(&self.waiting);
            for w in waiting.values() {
                if w.live.load(Ordering::SeqCst) && peer_gone(&w.peer) {
                    self.leave(&w.live);
                }
            }
        }
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        self.changed.notify_waiters();
        Arc::new(AtomicBool::new(true))
    }

    /// The request with this flag leaves the count (once, whoever calls).
    pub(crate) fn leave(&self, live: &AtomicBool) {
        if live.swap(false, Ordering::SeqCst) {
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            self.changed.notify_waiters();
        }
    }

    /// Register a request whose reply is waiting, until the guard drops.
    /// `None` (nothing registered) where the socket cannot be shared.
    pub(crate) fn watch(
        self: &Arc<Self>,
        stream: &TcpStream,
        live: &Arc<AtomicBool>,
    ) -> Option<Watched> {
        let peer = share_socket(stream)?;
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        lock(&self.waiting).insert(
            token,
            Waiting {
                peer,
                live: Arc::clone(live),
            },
        );
        Some(Watched {
            shared: Arc::clone(self),
            token,
        })
    }
}

/// A request held while its reply waits.
struct Waiting {
    /// A second handle on the connection's socket, to peek at it. It is
    /// dropped (by [`Watched`]) before the connection can close, so it never
    /// keeps a socket open or turns a reset into a close.
    peer: std::net::TcpStream,
    live: Arc<AtomicBool>,
}

/// Keeps a request in the waiting registry; removes it when dropped.
pub(crate) struct Watched {
    shared: Arc<Shared>,
    token: u64,
}

impl Drop for Watched {
    fn drop(&mut self) {
        drop(lock(&self.shared.waiting).remove(&self.token));
    }
}

/// A duplicate handle on the socket (the same socket, not a new one).
#[cfg(unix)]
fn share_socket(stream: &TcpStream) -> Option<std::net::TcpStream> {
    use std::os::fd::AsFd;
    stream
        .as_fd()
        .try_clone_to_owned()
        .ok()
        .map(std::net::TcpStream::from)
}

/// Where sockets cannot be duplicated this way, nothing is registered and
/// abandoned requests leave the count when their own task notices.
#[cfg(not(unix))]
fn share_socket(_stream: &TcpStream) -> Option<std::net::TcpStream> {
    None
}

/// Whether the client has closed or reset the connection, without
/// consuming anything (the socket is non-blocking).
fn peer_gone(peer: &std::net::TcpStream) -> bool {
    match peer.peek(&mut [0u8; 1]) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
        ),
    }
}

/// The script of one path, from [`Server::on`].
///
/// Scripting a path again replaces its script and numbers its requests from
/// 1 again (the recorded arrivals are kept).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use parapet_testkit::{Reply, Server};
///
/// let server = Server::start().await;
/// server.on("/always").reply(Reply::ok().body("same every time"));
/// server.on("/sequence").replies([Reply::status(503), Reply::status(503), Reply::ok()]);
/// server.on("/flaky").fail_times(2, Reply::status(503)).then(Reply::ok());
/// server.on("/private").handle(|arrival| {
///     if arrival.header("authorization") == Some("Bearer good") {
///         Reply::ok()
///     } else {
///         Reply::status(401).header("www-authenticate", "Bearer")
///     }
/// });
/// # }
/// ```
pub struct Route {
    shared: Arc<Shared>,
    path: String,
}

impl Route {
    /// Answer every request to this path with `reply`.
    pub fn reply(self, reply: Reply) {
        self.replies([reply]);
    }

    /// Answer the n-th request to this path with the n-th reply; once they
    /// run out, the last one repeats. An empty list removes the route (its
    /// requests get `404`).
    ///
    /// Requests are numbered in the order their heads are read.
    pub fn replies(self, replies: impl IntoIterator<Item = Reply>) {
        let replies: Vec<Arc<Reply>> = replies.into_iter().map(Arc::new).collect();
        let mut routes = lock(&self.shared.routes);
        if replies.is_empty() {
            routes.remove(&self.path);
        } else {
            routes.insert(self.path, Script::Replies { replies, served: 0 });
        }
    }

    /// Answer the first `n` requests with `failure`, and the ones after with
    /// the reply given to [`FailTimes::then`].
    #[must_use = "the script is installed by .then(..)"]
    pub fn fail_times(self, n: usize, failure: Reply) -> FailTimes {
        FailTimes {
            route: self,
            n,
            failure,
        }
    }

    /// Let `handler` decide the reply of every request to this path, from
    /// the request as recorded (headers, body, ...). It runs on the server's
    /// task after the body has been read; it must not block.
    pub fn handle<F>(self, handler: F)
    where
        F: Fn(&Arrival) -> Reply + Send + Sync + 'static,
    {
        lock(&self.shared.routes).insert(self.path, Script::Handler(Arc::new(handler)));
    }
}

impl fmt::Debug for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Route").field("path", &self.path).finish()
    }
}

/// A route that fails a number of times; finish it with
/// [`then`](Self::then).
#[derive(Debug)]
pub struct FailTimes {
    route: Route,
    n: usize,
    failure: Reply,
}

impl FailTimes {
    /// After the failures, answer every request with `success`.
    pub fn then(self, success: Reply) {
        let Self { route, n, failure } = self;
        route.replies(std::iter::repeat_n(failure, n).chain([success]));
    }
}
