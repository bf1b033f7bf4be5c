//! Downloads against loopback servers: a body that breaks halfway is
//! resumed with `Range` and `If-Range`, or started again; never a spliced
//! or short file.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::{Arc, Mutex};

use parapet::download::{Digest, DownloadError, Progress};
use parapet::{Client, Error};
use parapet_testkit::{Arrival, Reply, Server, body_hash};

/// 64 KiB of bytes that differ from one version to the next.
fn export(version: u8) -> Vec<u8> {
    (0..64 * 1024u32)
        .map(|i| u8::try_from(i % 251).unwrap() ^ version)
        .collect()
}

/// The start of a `Range: bytes=N-` request.
fn range_start(a: &Arrival) -> Option<usize> {
    a.header("range")?
        .strip_prefix("bytes=")?
        .strip_suffix('-')?
        .parse()
        .ok()
}

/// A 206 with the rest of `data` from `start`.
fn partial(data: &[u8], start: usize, etag: &str) -> Reply {
    Reply::status(206)
        .header(
            "content-range",
            format!("bytes {start}-{}/{}", data.len() - 1, data.len()),
        )
        .header("etag", etag)
        .header("accept-ranges", "bytes")
        .body(data[start..].to_vec())
}

/// The whole of `data`, cut after `cut` bytes when given.
fn full(data: &[u8], etag: &str, cut: Option<usize>) -> Reply {
    let reply = Reply::ok()
        .header("etag", etag)
        .header("accept-ranges", "bytes")
        .body(data.to_vec());
    match cut {
        Some(n) => reply.truncate_body(n),
        None => reply,
    }
}

fn download_error(err: &Error) -> &DownloadError {
    std::error::Error::source(err)
        .and_then(|s| s.downcast_ref::<DownloadError>())
        .unwrap_or_else(|| panic!("not a download error: {err}"))
}

struct Fnv(u64);

impl Digest for Fnv {
    fn update(&mut self, data: &[u8]) {
        for b in data {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    fn finish(&mut self) -> Vec<u8> {
        self.0.to_be_bytes().to_vec()
    }
}

fn fnv() -> Fnv {
    Fnv(0xcbf2_9ce4_8422_2325)
}

#[tokio::test]
async fn a_body_that_breaks_halfway_is_resumed_with_range_and_if_range() {
    // Arrange: the first answer is cut after 20 000 bytes; a range request
    // gets the rest.
    let data = export(1);
    let api = Server::start().await;
    let served = data.clone();
    api.on("/export.bin").handle(move |a| match range_start(a) {
        None => full(&served, "\"v1\"", Some(20_000)),
        Some(start) => partial(&served, start, "\"v1\""),
    });
    let dir = std::env::temp_dir().join(format!("parapet-dl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("resume.bin");

    // Act
    let client = Client::new().unwrap();
    let done = client
        .get(&api.url("/export.bin"))
        .download()
        .checksum(body_hash(&data).to_be_bytes(), fnv)
        .to_file(&path)
        .await
        .unwrap();

    // Assert: two requests, the second a range from where the file was.
    let arrivals = api.arrivals_for("/export.bin");
    assert_eq!(arrivals.len(), 2);
    assert_eq!(arrivals[0].header("range"), None);
    assert_eq!(arrivals[0].header("accept-encoding"), Some("identity"));
    assert_eq!(arrivals[1].header("range"), Some("bytes=20000-"));
    assert_eq!(arrivals[1].header("if-range"), Some("\"v1\""));
    let written = std::fs::read(&path).unwrap();
    assert_eq!(body_hash(&written), body_hash(&data));
    assert_eq!(written, data);
    assert_eq!(
        (done.bytes(), done.attempts(), done.resumed()),
        (65_536, 2, 1)
    );
    std::fs::remove_file(&path).unwrap();
}

#[tokio::test]
async fn a_server_that_ignores_range_is_downloaded_again_from_the_start() {
    let data = export(2);
    let api = Server::start().await;
    api.on("/big").replies([
        full(&data, "\"v2\"", Some(30_000)),
        full(&data, "\"v2\"", None),
    ]);
    let path = std::env::temp_dir().join(format!("parapet-dl-ignore-{}.bin", std::process::id()));

    let done = Client::new()
        .unwrap()
        .get(&api.url("/big"))
        .download()
        .to_file(&path)
        .await
        .unwrap();

    let arrivals = api.arrivals_for("/big");
    assert_eq!(arrivals.len(), 2);
    assert_eq!(arrivals[1].header("range"), Some("bytes=30000-"));
    assert_eq!(
        std::fs::read(&path).unwrap(),
        data,
        "truncated and written again, not appended"
    );
    assert_eq!((done.attempts(), done.resumed()), (2, 0));
    std::fs::remove_file(&path).unwrap();
}

#[tokio::test]
async fn an_etag_that_changes_starts_again_and_never_splices() {
    // The resource changes between the attempts. A server honouring
    // If-Range sends the new version whole; a broken one sends a part of
    // the new version: it is refused and the whole new version fetched.
    let (old, new) = (export(3), export(4));
    for honours_if_range in [true, false] {
        let api = Server::start().await;
        let (o, n) = (old.clone(), new.clone());
        api.on("/f")
            .handle(move |a| match (range_start(a), honours_if_range) {
                (None, _) if a.connection == 1 => full(&o, "\"old\"", Some(10_000)),
                (None, _) => full(&n, "\"new\"", None),
                (Some(_), true) => full(&n, "\"new\"", None),
                (Some(start), false) => partial(&n, start, "\"new\""),
            });
        let path = std::env::temp_dir().join(format!(
            "parapet-dl-etag-{honours_if_range}-{}.bin",
            std::process::id()
        ));

        let done = Client::new()
            .unwrap()
            .get(&api.url("/f"))
            .download()
            .to_file(&path)
            .await
            .unwrap();

        assert_eq!(
            std::fs::read(&path).unwrap(),
            new,
            "honours If-Range: {honours_if_range}"
        );
        assert_eq!(done.resumed(), 0);
        let arrivals = api.arrivals_for("/f");
        assert_eq!(arrivals[1].header("if-range"), Some("\"old\""));
        assert_eq!(arrivals.len(), if honours_if_range { 2 } else { 3 });
        std::fs::remove_file(&path).unwrap();
    }
}

#[tokio::test]
async fn a_writer_that_cannot_rewind_fails_with_a_typed_error_when_the_server_starts_again() {
    let data = export(5);
    let api = Server::start().await;
    api.on("/w").replies([
        full(&data, "\"v\"", Some(1_000)),
        full(&data, "\"v\"", None),
    ]);

    let mut out = Vec::new();
    let err = Client::new()
        .unwrap()
        .get(&api.url("/w"))
        .download()
        .to_writer(&mut out)
        .await
        .unwrap_err();

    assert!(err.is_body());
    assert!(download_error(&err).is_not_rewindable(), "{err}");
    assert_eq!(
        out.len(),
        1_000,
        "what was written stays, and is reported as an error"
    );
}

#[tokio::test]
async fn without_ranges_a_broken_body_is_restarted_from_byte_zero() {
    let data = export(6);
    let api = Server::start().await;
    api.on("/nr").replies([
        Reply::ok().body(data.clone()).truncate_body(5_000),
        Reply::ok().body(data.clone()),
    ]);
    let path = std::env::temp_dir().join(format!("parapet-dl-norange-{}.bin", std::process::id()));

    Client::new()
        .unwrap()
        .get(&api.url("/nr"))
        .download()
        .to_file(&path)
        .await
        .unwrap();

    let arrivals = api.arrivals_for("/nr");
    assert_eq!(arrivals.len(), 2);
    assert_eq!(arrivals[1].header("range"), None);
    assert_eq!(std::fs::read(&path).unwrap(), data);
    std::fs::remove_file(&path).unwrap();
}

#[tokio::test]
async fn a_body_broken_every_time_fails_after_max_attempts() {
    let data = export(7);
    let api = Server::start().await;
    let served = data.clone();
    api.on("/never").handle(move |a| match range_start(a) {
        None => full(&served, "\"v\"", Some(100)),
        Some(start) => partial(&served, start, "\"v\"").truncate_body(100),
    });

    let mut out = Vec::new();
    let err = Client::new()
        .unwrap()
        .get(&api.url("/never"))
        .download()
        .max_attempts(4)
        .to_writer(&mut out)
        .await
        .unwrap_err();

    assert!(err.is_body(), "{err}");
    assert_eq!(api.hits("/never"), 4);
    assert_eq!(
        out,
        data[..400],
        "each resume went on where the last stopped"
    );
}

#[tokio::test]
async fn progress_reports_every_byte_and_the_total() {
    let data = export(8);
    let api = Server::start().await;
    let served = data.clone();
    api.on("/p").handle(move |a| match range_start(a) {
        None => full(&served, "\"v\"", Some(40_000)),
        Some(start) => partial(&served, start, "\"v\""),
    });
    let seen: Arc<Mutex<Vec<Progress>>> = Arc::default();
    let log = Arc::clone(&seen);

    let mut out = Vec::new();
    Client::new()
        .unwrap()
        .get(&api.url("/p"))
        .download()
        .on_progress(move |p| log.lock().unwrap().push(p))
        .to_writer(&mut out)
        .await
        .unwrap();

    let seen = seen.lock().unwrap();
    assert_eq!(
        seen.first().map(|p| (p.bytes(), p.total())),
        Some((0, Some(65_536)))
    );
    let last = seen.last().unwrap();
    assert_eq!((last.bytes(), last.total()), (65_536, Some(65_536)));
    assert!(last.bytes_per_second() > 0.0);
    assert!(
        seen.windows(2).all(|w| w[0].bytes() <= w[1].bytes()),
        "a resume goes on, never back"
    );
    assert_eq!(out, data);
}

#[tokio::test]
async fn a_checksum_mismatch_is_a_typed_error() {
    let api = Server::start().await;
    api.on("/c")
        .reply(Reply::ok().body("not what was promised"));

    let mut out = Vec::new();
    let err = Client::new()
        .unwrap()
        .get(&api.url("/c"))
        .download()
        .checksum(body_hash(b"the real thing").to_be_bytes(), fnv)
        .to_writer(&mut out)
        .await
        .unwrap_err();

    let de = download_error(&err);
    assert!(de.is_checksum_mismatch());
    assert!(
        err.to_string().contains("checksum mismatch: expected "),
        "{err}"
    );
}

#[tokio::test]
async fn an_error_status_is_the_status_error_and_nothing_is_written() {
    let api = Server::start().await;
    api.on("/gone").reply(Reply::status(404).body("no"));

    let mut out = Vec::new();
    let err = Client::new()
        .unwrap()
        .get(&api.url("/gone"))
        .download()
        .to_writer(&mut out)
        .await
        .unwrap_err();

    assert_eq!(err.status().map(|s| s.as_u16()), Some(404));
    assert!(out.is_empty());
}
