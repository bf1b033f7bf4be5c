//! What the server does with one request.

use std::time::Duration;

use bytes::Bytes;

/// The body [`Reply::reset_after_headers`] announces and never sends.
const UNSENT_BODY: &[u8] = b"parapet-testkit: the connection is reset before this body is sent\n";

/// What the server does with a request: an answer, possibly slow or broken,
/// or one of the faults real servers and networks produce.
///
/// Build one with a constructor ([`status`](Self::status), [`ok`](Self::ok),
/// [`json`](Self::json), or a fault: [`reset_after_headers`](Self::reset_after_headers),
/// [`close`](Self::close), [`reset`](Self::reset), [`hang`](Self::hang)),
/// then adjust it with the modifiers. Every modifier takes and returns the
/// reply, so a script reads as one expression:
///
/// ```
/// use std::time::Duration;
/// use parapet_testkit::Reply;
///
/// // A 503 that makes the client wait 30 ms for its headers.
/// let slow_failure = Reply::status(503).delay(Duration::from_millis(30));
/// // A 200 whose 1 KiB body comes 100 bytes every 5 ms.
/// let slow_body = Reply::ok().body(vec![b'x'; 1024]).drip(100, Duration::from_millis(5));
/// // A 200 that announces 1 KiB and sends 10 bytes before closing.
/// let short = Reply::ok().body(vec![b'x'; 1024]).truncate_body(10);
/// # let _ = (slow_failure, slow_body, short);
/// ```
///
/// Headers are written byte for byte as given, unchecked, so a test can
/// script malformed ones too. Unless the reply sets `content-length` or
/// `transfer-encoding` itself, the server adds `content-length` with the
/// body's full length (none for 1xx, 204 and 304 replies with an empty
/// body). A reply that sets `transfer-encoding` must supply an already
/// encoded body. When the connection is to be closed after a complete
/// answer (the client asked for it, or [`then_close`](Self::then_close)), the
/// server adds `connection: close` unless the reply sets `connection`.
#[derive(Clone, Debug)]
pub struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(Bytes, Bytes)>,
    pub(crate) body: Bytes,
    pub(crate) delay: Option<Duration>,
    pub(crate) drip: Option<(usize, Duration)>,
    pub(crate) truncate: Option<usize>,
    pub(crate) close_after: bool,
    pub(crate) action: Action,
}

/// The shape of a reply, beyond its status, headers and body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// Send the status, headers and body.
    Respond,
    /// Send the status and headers (and the first `truncate` body bytes),
    /// then reset the connection.
    ResetAfterHeaders,
    /// Close the connection (FIN) without sending anything.
    Close,
    /// Reset the connection (RST) without reading the body or answering.
    Reset,
    /// Never answer; hold the connection until the client goes away.
    Hang,
}

impl Reply {
    /// An answer with this status code, no headers of its own and an empty
    /// body.
    ///
    /// Any `u16` is accepted and written as given: a code outside 100..=999
    /// makes a malformed status line, a fault a client must reject cleanly.
    #[must_use]
    pub fn status(code: u16) -> Self {
        Self {
            status: code,
            headers: Vec::new(),
            body: Bytes::new(),
            delay: None,
            drip: None,
            truncate: None,
            close_after: false,
            action: Action::Respond,
        }
    }

    /// `200 OK` with an empty body.
    #[must_use]
    pub fn ok() -> Self {
        Self::status(200)
    }

    /// `200 OK` with this body and `content-type: application/json`.
    ///
    /// ```
    /// # use parapet_testkit::Reply;
    /// let reply = Reply::json(r#"{"id":1}"#);
    /// # let _ = reply;
    /// ```
    #[must_use]
    pub fn json(body: impl Into<Bytes>) -> Self {
        Self::ok()
            .header("content-type", "application/json")
            .body(body)
    }

    /// Send `200 OK` and headers announcing a body
    /// (`content-length` of a placeholder body), then reset the connection
    /// (TCP RST, by closing with `SO_LINGER` 0) without sending the body.
    ///
    /// The client receives the response head and then fails while reading
    /// the body. Change the status with [`with_status`](Self::with_status),
    /// the announced length with [`body`](Self::body), and send part of the
    /// body before the reset with [`truncate_body`](Self::truncate_body).
    #[must_use]
    pub fn reset_after_headers() -> Self {
        Self {
            body: Bytes::from_static(UNSENT_BODY),
            action: Action::ResetAfterHeaders,
            ..Self::ok()
        }
    }

    /// Read the request, then close the connection (TCP FIN) without
    /// answering: what a server that crashed or an idle-timeout-closed pooled
    /// connection looks like to the client.
    #[must_use]
    pub fn close() -> Self {
        Self {
            action: Action::Close,
            ..Self::ok()
        }
    }

    /// Reset the connection (TCP RST) as soon as the request head has been
    /// read, without reading the body or answering.
    ///
    /// The head must be read to know which route the request is for; the
    /// arrival is recorded then, with an empty body (see [`crate::Arrival`]).
    /// A [`handle`](crate::Route::handle) closure that returns this reply
    /// has necessarily seen the body already; the reset follows at once.
    #[must_use]
    pub fn reset() -> Self {
        Self {
            action: Action::Reset,
            ..Self::ok()
        }
    }

    /// Read the request and never answer, holding the connection open until
    /// the client closes it or the server is dropped. The request stays in
    /// flight (see [`Server::max_in_flight`](crate::Server::max_in_flight))
    /// until the server notices the client has gone.
    #[must_use]
    pub fn hang() -> Self {
        Self {
            action: Action::Hang,
            ..Self::ok()
        }
    }

    /// Replace the status code (useful after a fault constructor such as
    /// [`reset_after_headers`](Self::reset_after_headers)).
    #[must_use]
    pub fn with_status(mut self, code: u16) -> Self {
        self.status = code;
        self
    }

    /// Add a header line, written byte for byte (unchecked). Headers are
    /// sent in the order added; adding a name twice sends it twice.
    ///
    /// ```
    /// # use parapet_testkit::Reply;
    /// let reply = Reply::status(429).header("retry-after", "1").header(http::header::VARY, "accept");
    /// # let _ = reply;
    /// ```
    #[must_use]
    pub fn header(mut self, name: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Self {
        self.headers.push((
            Bytes::copy_from_slice(name.as_ref()),
            Bytes::copy_from_slice(value.as_ref()),
        ));
        self
    }

    /// Set the body. Default: empty.
    #[must_use]
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// Wait this long before doing anything else (before sending the
    /// headers, or before the fault: close, reset, hang). Default: no wait.
    ///
    /// While waiting the server watches the connection, so a client that
    /// gives up ends the request at once (see
    /// [`Server::max_in_flight`](crate::Server::max_in_flight)). A client
    /// that shuts down its sending side (half-close) while it waits counts
    /// as gone too.
    #[must_use]
    pub fn delay(mut self, wait: Duration) -> Self {
        self.delay = Some(wait);
        self
    }

    /// Send the body slowly: after the headers, wait `every`, send `chunk`
    /// bytes, and repeat until the body (or its truncated part) is sent. A
    /// body of `n` bytes thus takes `ceil(n / chunk) * every` after the
    /// headers. A `chunk` of 0 counts as 1. Default: the body goes in one
    /// write with the headers.
    #[must_use]
    pub fn drip(mut self, chunk: usize, every: Duration) -> Self {
        self.drip = Some((chunk.max(1), every));
        self
    }

    /// Send only the first `n` bytes of the body while the headers still
    /// announce all of it, then close the connection (with
    /// [`reset_after_headers`](Self::reset_after_headers): then reset it).
    /// When `n` is at least the body's length the whole body is sent (and,
    /// except after a reset, the connection is still closed).
    #[must_use]
    pub fn truncate_body(mut self, n: usize) -> Self {
        self.truncate = Some(n);
        self
    }

    /// Close the connection after this answer, announcing it with
    /// `connection: close` (unless the reply sets `connection`), so the next
    /// request has to open a new connection. Default: the connection is kept
    /// alive unless the client asked otherwise.
    #[must_use]
    pub fn then_close(mut self) -> Self {
        self.close_after = true;
        self
    }

    /// The status code this reply sends.
    #[must_use]
    pub fn status_code(&self) -> u16 {
        self.status
    }

    /// Whether the reply sets the header `name` itself (ASCII
    /// case-insensitive).
    pub(crate) fn sets_header(&self, name: &str) -> bool {
        self.headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
    }

    /// Whether a body goes with this status when it has no body of its own.
    pub(crate) fn bodiless_status(&self) -> bool {
        matches!(self.status, 100..=199 | 204 | 304)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modifiers_compose() {
        let r = Reply::status(503)
            .header("retry-after", "1")
            .body("busy")
            .delay(Duration::from_millis(5))
            .drip(0, Duration::from_millis(1))
            .truncate_body(2)
            .then_close();
        assert_eq!(r.status_code(), 503);
        assert!(r.sets_header("Retry-After"));
        assert!(!r.sets_header("content-length"));
        assert_eq!(r.body, "busy");
        assert_eq!(r.drip, Some((1, Duration::from_millis(1))));
        assert_eq!(r.truncate, Some(2));
        assert!(r.close_after);
        assert_eq!(r.action, Action::Respond);
    }

    #[test]
    fn fault_constructors_keep_their_action() {
        assert_eq!(Reply::reset().action, Action::Reset);
        assert_eq!(Reply::close().action, Action::Close);
        assert_eq!(Reply::hang().action, Action::Hang);
        let r = Reply::reset_after_headers().with_status(502);
        assert_eq!(r.action, Action::ResetAfterHeaders);
        assert_eq!(r.status_code(), 502);
        assert!(!r.body.is_empty(), "announces a body it never sends");
    }
}
