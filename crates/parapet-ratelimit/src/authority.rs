//! Keying by authority (scheme, host, port) and the sweeping of idle keys.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use http::Request;
use http::uri::{self, Scheme};

/// Where a request goes: scheme, host (compared without regard to ASCII
/// case) and port (the scheme's default when the URI names none).
///
/// Built from a request without allocating: it holds a reference-counted
/// clone of the request's URI authority and reads the host from it on
/// demand. [`Clone`] makes a compact owned copy instead (host only, never
/// the userinfo), which is what the maps keep, so a stored key neither pins
/// the request's buffers nor retains credentials.
pub(crate) struct Authority {
    scheme: SchemeKind,
    host: Host,
    port: u16,
}

#[derive(Clone, PartialEq, Eq, Hash)]
enum SchemeKind {
    None,
    Http,
    Https,
    Other(Box<str>),
}

enum Host {
    /// The request's own authority (`userinfo@host:port`); `host()` on demand.
    Shared(uri::Authority),
    /// A lowercase copy of the host alone.
    Owned(Box<str>),
}

impl Authority {
    /// The authority a request is addressed to: its URI's, or its `Host`
    /// header's when the URI is relative, or "none" when it has neither.
    pub(crate) fn of<B>(req: &Request<B>) -> Self {
        let uri = req.uri();
        let scheme = match uri.scheme() {
            None => SchemeKind::None,
            Some(s) if *s == Scheme::HTTP => SchemeKind::Http,
            Some(s) if *s == Scheme::HTTPS => SchemeKind::Https,
            Some(s) => SchemeKind::Other(s.as_str().to_ascii_lowercase().into_boxed_str()),
        };
        let authority = uri.authority().cloned().or_else(|| {
            let host = req.headers().get(http::header::HOST)?;
            uri::Authority::try_from(host.as_bytes()).ok()
        });
        let Some(authority) = authority else {
            return Self {
                scheme,
                host: Host::Owned(Box::from("")),
                port: 0,
            };
        };
        let port = authority.port_u16().unwrap_or(match scheme {
            SchemeKind::Https => 443,
            SchemeKind::Http | SchemeKind::None => 80,
            SchemeKind::Other(_) => 0,
        });
        Self {
            scheme,
            host: Host::Shared(authority),
            port,
        }
    }

    fn host(&self) -> &str {
        match &self.host {
            Host::Shared(a) => a.host(),
            Host::Owned(h) => h,
        }
    }
}

impl Clone for Authority {
    fn clone(&self) -> Self {
        Self {
            scheme: self.scheme.clone(),
            host: Host::Owned(self.host().to_ascii_lowercase().into_boxed_str()),
            port: self.port,
        }
    }
}

impl PartialEq for Authority {
    fn eq(&self, other: &Self) -> bool {
        self.port == other.port
            && self.scheme == other.scheme
            && self.host().eq_ignore_ascii_case(other.host())
    }
}

impl Eq for Authority {}

impl Hash for Authority {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.scheme.hash(state);
        self.port.hash(state);
        // Hash the lowercase host in fixed-size chunks, the same way for both
        // representations, so that equal keys hash equally without allocating.
        let mut buf = [0u8; 32];
        for chunk in self.host().as_bytes().chunks(buf.len()) {
            let out = buf.get_mut(..chunk.len()).unwrap_or_default();
            for (o, c) in out.iter_mut().zip(chunk) {
                *o = c.to_ascii_lowercase();
            }
            state.write(out);
        }
        state.write_u8(0xff);
    }
}

impl fmt::Debug for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the userinfo: it may carry credentials.
        let scheme = match &self.scheme {
            SchemeKind::None => "",
            SchemeKind::Http => "http://",
            SchemeKind::Https => "https://",
            SchemeKind::Other(s) => {
                return write!(f, "{s}://{}:{}", self.host(), self.port);
            }
        };
        write!(f, "{scheme}{}:{}", self.host(), self.port)
    }
}

/// Locks a mutex, carrying on with the data if another thread panicked while
/// holding it (every critical section here leaves the map consistent).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// State that holds per-authority entries and can drop the idle ones.
pub(crate) trait Sweep: Send + Sync + 'static {
    /// Drops idle entries and returns how many remain.
    fn sweep(&self) -> usize;
    /// The janitor that sweeps this state.
    fn janitor(&self) -> &Janitor;
}

/// Runs [`Sweep::sweep`] periodically while a keyed state holds entries.
///
/// A background task is started when the first entry appears and ends by
/// itself once the state is empty or has been dropped (it holds only a weak
/// reference), so an idle limiter costs no task and no timer. (Outside a
/// tokio runtime no task can be started; the next insertion made inside one
/// starts it.)
#[derive(Debug)]
pub(crate) struct Janitor {
    running: AtomicBool,
    every: Duration,
}

impl Janitor {
    pub(crate) const fn new(every: Duration) -> Self {
        Self {
            running: AtomicBool::new(false),
            every,
        }
    }

    /// Makes sure a sweeping task runs for `state`; call after inserting.
    pub(crate) fn ensure<T: Sweep>(state: &Arc<T>) {
        let janitor = state.janitor();
        if janitor.running.load(Ordering::Acquire) || janitor.running.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            janitor.running.store(false, Ordering::Release);
            return;
        };
        // NOTE: the guard is made here, not in the task, so that it is
        // dropped (lowering the flag) even if the task is never polled.
        let guard = Running {
            weak: Arc::downgrade(state),
            armed: true,
        };
        drop(handle.spawn(run(guard, janitor.every)));
    }
}

/// The sweeping task. If the runtime drops it (it is shutting down), `guard`
/// lowers the flag, or no sweeping task would ever start again.
async fn run<T: Sweep>(mut guard: Running<T>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(state) = guard.weak.upgrade() else {
            guard.armed = false;
            return;
        };
        if state.sweep() > 0 {
            continue;
        }
        let janitor = state.janitor();
        janitor.running.store(false, Ordering::SeqCst);
        // NOTE: an entry inserted between the sweep and the store above saw
        // `running == true` and started no task: take the flag back and go on.
        // If an inserter got the flag first, its task takes over.
        if state.sweep() == 0 || janitor.running.swap(true, Ordering::SeqCst) {
            guard.armed = false;
            return;
        }
    }
}

/// Lowers the janitor's flag when its task is dropped before it ends.
struct Running<T: Sweep> {
    weak: Weak<T>,
    armed: bool,
}

impl<T: Sweep> Drop for Running<T> {
    fn drop(&mut self) {
        if self.armed {
            if let Some(state) = self.weak.upgrade() {
                state.janitor().running.store(false, Ordering::SeqCst);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::hash_map::DefaultHasher;

    fn key(uri: &str) -> Authority {
        Authority::of(&Request::get(uri).body(()).unwrap())
    }

    fn hash(a: &Authority) -> u64 {
        let mut h = DefaultHasher::new();
        a.hash(&mut h);
        h.finish()
    }

    #[test]
    fn scheme_host_and_port_make_the_key() {
        assert_eq!(
            key("http://Example.com/a"),
            key("http://example.COM:80/b?c")
        );
        assert_eq!(key("https://example.com/"), key("https://example.com:443/"));
        assert_ne!(key("http://example.com/"), key("https://example.com/"));
        assert_ne!(key("http://example.com:8080/"), key("http://example.com/"));
        assert_ne!(key("http://example.com/"), key("http://example.org/"));
        assert_eq!(
            hash(&key("http://Example.com/a")),
            hash(&key("http://example.com/"))
        );
    }

    #[test]
    fn clones_are_compact_and_equal() {
        let long = format!("http://user:secret@{}.example.com:81/", "H".repeat(100));
        let k = key(&long);
        let c = k.clone();
        assert!(matches!(c.host, Host::Owned(_)));
        assert_eq!(k, c);
        assert_eq!(hash(&k), hash(&c));
        let debug = format!("{c:?} {k:?}");
        assert!(!debug.contains("secret"), "{debug}");
        assert!(debug.contains(":81"));
    }

    #[test]
    fn userinfo_is_not_part_of_the_key() {
        assert_eq!(key("http://a:b@example.com/"), key("http://example.com/"));
    }

    #[test]
    fn relative_uris_use_the_host_header() {
        let req = Request::get("/x")
            .header("host", "api.example.com:8443")
            .body(())
            .unwrap();
        let k = Authority::of(&req);
        assert_eq!(k.host(), "api.example.com");
        assert_eq!(k.port, 8443);
        let none = Authority::of(&Request::get("/x").body(()).unwrap());
        assert_eq!(none, none.clone());
        assert_ne!(none, k);
    }

    #[derive(Default)]
    struct Counter {
        entries: std::sync::atomic::AtomicUsize,
        sweeps: std::sync::atomic::AtomicUsize,
        janitor: Option<Janitor>,
    }

    impl Sweep for Counter {
        fn sweep(&self) -> usize {
            self.sweeps.fetch_add(1, Ordering::SeqCst);
            self.entries.store(0, Ordering::SeqCst);
            0
        }
        fn janitor(&self) -> &Janitor {
            self.janitor.as_ref().unwrap()
        }
    }

    fn counter() -> Arc<Counter> {
        Arc::new(Counter {
            janitor: Some(Janitor::new(Duration::from_secs(1))),
            ..Counter::default()
        })
    }

    #[test]
    fn a_janitor_dropped_with_its_runtime_can_start_again() {
        let state = counter();
        state.entries.store(1, Ordering::SeqCst);
        let rt = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .unwrap()
        };
        rt().block_on(async { Janitor::ensure(&state) });
        // That runtime is gone, and its task with it.
        assert!(!state.janitor().running.load(Ordering::SeqCst));
        rt().block_on(async {
            Janitor::ensure(&state);
            tokio::time::sleep(Duration::from_millis(2500)).await;
        });
        assert_eq!(state.entries.load(Ordering::SeqCst), 0);
        assert!(state.sweeps.load(Ordering::SeqCst) >= 2);
    }

    #[tokio::test(start_paused = true)]
    async fn the_janitor_stops_when_empty_and_restarts_on_demand() {
        let state = counter();
        state.entries.store(3, Ordering::SeqCst);
        Janitor::ensure(&state);
        Janitor::ensure(&state);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(!state.janitor().running.load(Ordering::SeqCst));
        let sweeps = state.sweeps.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(state.sweeps.load(Ordering::SeqCst), sweeps, "no task left");
        state.entries.store(1, Ordering::SeqCst);
        Janitor::ensure(&state);
        assert!(state.janitor().running.load(Ordering::SeqCst));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(state.entries.load(Ordering::SeqCst), 0);
    }
}
