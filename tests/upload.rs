//! Streaming request bodies (a stream, an `AsyncRead`, a file) through the
//! whole client, against a loopback testkit server: what arrived, and how
//! each body is sent again after a 503 or a 307.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::error::Error as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_core::Stream;
use parapet::core::DEFAULT_REPLAY_CAP;
use parapet::retry::{NotRetried, NotRetriedReason};
use parapet::upload::FileBodyError;
use parapet::{Client, RedirectNotFollowed};
use parapet_testkit::{Reply, Server};

fn client() -> Client {
    Client::builder()
        .deadline(Duration::from_secs(10))
        .attempt_timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// A file under the temp dir with a name no other test (or run) uses,
/// removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, bytes: &[u8]) -> Self {
        let path = std::env::temp_dir().join(format!(
            "parapet-upload-{name}-{}-{:016x}",
            std::process::id(),
            parapet::core::random_u64()
        ));
        std::fs::write(&path, bytes).unwrap();
        Self(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `len` bytes that are not all the same, so a reordered or shifted body
/// shows.
fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| u8::try_from(i * 31 % 251).unwrap())
        .collect()
}

/// `data` as a stream of 4 KiB chunks.
fn chunks(data: &[u8]) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let chunks: Vec<_> = data
        .chunks(4096)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    futures_util::stream::iter(chunks)
}

fn reason(resp: &parapet::Response) -> Option<NotRetriedReason> {
    NotRetried::get(resp.extensions()).map(|n| n.reason())
}

#[tokio::test]
async fn a_file_arrives_whole_with_its_content_length() {
    let data = pattern(100_000);
    let file = TempFile::new("whole", &data);
    let api = Server::start().await;
    api.on("/up").reply(Reply::ok());

    let resp = client()
        .put(&api.url("/up"))
        .body_file(file.path())
        .await
        .unwrap()
        .send()
        .await
        .unwrap();

    assert_eq!(resp.status(), 200);
    let seen = &api.arrivals_for("/up")[0];
    assert_eq!(seen.body, data);
    assert_eq!(seen.header("content-length"), Some("100000"));
    assert_eq!(seen.header("transfer-encoding"), None);
}

#[tokio::test]
async fn a_file_larger_than_the_replay_cap_is_reopened_after_a_503() {
    let data = pattern(DEFAULT_REPLAY_CAP * 4 + 123);
    let file = TempFile::new("reopen", &data);
    let api = Server::start().await;
    api.on("/up").replies([Reply::status(503), Reply::ok()]);

    let resp = client()
        .put(&api.url("/up"))
        .body_file(file.path())
        .await
        .unwrap()
        .send()
        .await
        .unwrap();

    assert_eq!(resp.status(), 200);
    let arrivals = api.arrivals_for("/up");
    assert_eq!(arrivals.len(), 2);
    for a in &arrivals {
        assert_eq!(a.body_len, data.len());
        assert_eq!(a.body_hash, parapet_testkit::body_hash(&data));
        assert_eq!(a.header("content-length"), Some(&*data.len().to_string()));
    }
}

#[tokio::test]
async fn a_file_removed_between_attempts_fails_the_call_with_its_path() {
    let file = TempFile::new("removed", b"first attempt only");
    let api = Server::start().await;
    let path = file.path().to_path_buf();
    let served = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&served);
    api.on("/up").handle(move |_| {
        if counter.fetch_add(1, Ordering::SeqCst) == 0 {
            // Gone before the retry reopens it.
            std::fs::remove_file(&path).unwrap();
            Reply::status(503)
        } else {
            Reply::ok()
        }
    });

    let err = client()
        .put(&api.url("/up"))
        .body_file(file.path())
        .await
        .unwrap()
        .send()
        .await
        .unwrap_err();

    // Only the first attempt arrived; the error says which file.
    assert_eq!(api.arrivals_for("/up").len(), 1);
    let mut cause = err.source();
    let file_err = loop {
        match cause {
            Some(e) => match e.downcast_ref::<FileBodyError>() {
                Some(f) => break f,
                None => cause = e.source(),
            },
            None => panic!("no FileBodyError in the chain of {err:?}"),
        }
    };
    assert_eq!(file_err.path(), file.path());
    assert!(!file_err.is_changed());
    assert!(
        file_err.to_string().starts_with(&format!(
            "cannot open request body file {}",
            file.path().display()
        )),
        "{file_err}"
    );
}

#[tokio::test]
async fn a_missing_file_is_reported_before_anything_is_sent() {
    let api = Server::start().await;
    let missing =
        std::env::temp_dir().join(format!("parapet-upload-missing-{}", std::process::id()));

    let err = client()
        .put(&api.url("/up"))
        .body_file(&missing)
        .await
        .unwrap_err();

    assert!(err.is_request());
    assert!(err.source().unwrap().is::<FileBodyError>());
    assert_eq!(api.requests(), 0);
}

#[tokio::test]
async fn a_stream_under_the_replay_cap_is_sent_again_after_a_503() {
    let data = pattern(10_000);
    let api = Server::start().await;
    api.on("/up").replies([Reply::status(503), Reply::ok()]);

    let resp = client()
        .put(&api.url("/up"))
        .body_stream(chunks(&data))
        .send()
        .await
        .unwrap();

    assert_eq!(resp.status(), 200);
    let arrivals = api.arrivals_for("/up");
    assert_eq!(arrivals.len(), 2);
    assert!(arrivals.iter().all(|a| a.body == data));
    // Sent chunked; the replay, whose length is known by then, with it.
    assert_eq!(arrivals[0].header("transfer-encoding"), Some("chunked"));
    assert_eq!(arrivals[1].header("content-length"), Some("10000"));
}

#[tokio::test]
async fn a_stream_over_the_replay_cap_is_sent_once_and_its_503_returned() {
    let data = pattern(DEFAULT_REPLAY_CAP * 3);
    let api = Server::start().await;
    api.on("/up").replies([Reply::status(503), Reply::ok()]);

    let resp = client()
        .put(&api.url("/up"))
        .body_stream(chunks(&data))
        .send()
        .await
        .unwrap();

    assert_eq!(resp.status(), 503);
    assert_eq!(reason(&resp), Some(NotRetriedReason::BodyNotReplayable));
    let arrivals = api.arrivals_for("/up");
    assert_eq!(arrivals.len(), 1);
    assert_eq!(arrivals[0].body, data);
}

#[tokio::test]
async fn a_stream_is_kept_up_to_the_cap_the_client_was_built_with() {
    let api = Server::start().await;
    api.on("/up").replies([Reply::status(503), Reply::ok()]);
    let small = Client::builder().replay_cap(1024).build().unwrap();

    let resp = small
        .put(&api.url("/up"))
        .body_stream(chunks(&pattern(2048)))
        .send()
        .await
        .unwrap();

    assert_eq!(resp.status(), 503);
    assert_eq!(reason(&resp), Some(NotRetriedReason::BodyNotReplayable));
    assert_eq!(api.arrivals_for("/up").len(), 1);
}

#[tokio::test]
async fn a_reader_is_sent_to_its_end_and_again_under_the_cap() {
    let data = pattern(50_000);
    let api = Server::start().await;
    api.on("/up").replies([Reply::status(503), Reply::ok()]);

    let resp = client()
        .put(&api.url("/up"))
        .body_reader(std::io::Cursor::new(data.clone()))
        .send()
        .await
        .unwrap();

    assert_eq!(resp.status(), 200);
    let arrivals = api.arrivals_for("/up");
    assert_eq!(arrivals.len(), 2);
    assert!(arrivals.iter().all(|a| a.body == data));
}

#[tokio::test]
async fn a_reader_over_the_cap_is_sent_once() {
    let data = pattern(DEFAULT_REPLAY_CAP + 1);
    let api = Server::start().await;
    api.on("/up").replies([Reply::status(503), Reply::ok()]);

    let resp = client()
        .put(&api.url("/up"))
        .body_reader(std::io::Cursor::new(data.clone()))
        .send()
        .await
        .unwrap();

    assert_eq!(resp.status(), 503);
    assert_eq!(reason(&resp), Some(NotRetriedReason::BodyNotReplayable));
    assert_eq!(api.arrivals_for("/up").len(), 1);
}

#[tokio::test]
async fn a_307_sends_a_file_again_to_the_new_location() {
    let data = pattern(DEFAULT_REPLAY_CAP * 2);
    let file = TempFile::new("redirect", &data);
    let api = Server::start().await;
    api.on("/old")
        .reply(Reply::status(307).header("location", "/new"));
    api.on("/new").reply(Reply::ok());

    let resp = client()
        .post(&api.url("/old"))
        .body_file(file.path())
        .await
        .unwrap()
        .send()
        .await
        .unwrap();

    assert_eq!(resp.status(), 200);
    assert_eq!(api.arrivals_for("/old")[0].body, data);
    assert_eq!(api.arrivals_for("/new")[0].body, data);
}

#[tokio::test]
async fn a_307_after_a_stream_over_the_cap_is_returned_not_followed() {
    let data = pattern(DEFAULT_REPLAY_CAP * 2);
    let api = Server::start().await;
    api.on("/old")
        .reply(Reply::status(307).header("location", "/new"));
    api.on("/new").reply(Reply::ok());

    let resp = client()
        .post(&api.url("/old"))
        .body_stream(chunks(&data))
        .send()
        .await
        .unwrap();

    assert_eq!(resp.status(), 307);
    let why = RedirectNotFollowed::get(resp.extensions()).unwrap();
    assert!(why.is_body_not_replayable());
    assert_eq!(api.hits("/new"), 0);
}

#[tokio::test]
async fn a_failing_stream_fails_the_call_without_a_retry() {
    let api = Server::start().await;
    api.on("/up").reply(Reply::ok());
    let items: Vec<Result<Bytes, std::io::Error>> = vec![
        Ok(Bytes::from_static(b"partial")),
        Err(std::io::Error::other("the source went away")),
    ];

    let err = client()
        .put(&api.url("/up"))
        .body_stream(futures_util::stream::iter(items))
        .send()
        .await
        .unwrap_err();

    let mut cause = err.source();
    let mut found = false;
    while let Some(e) = cause {
        found |= e.to_string().contains("the source went away");
        cause = e.source();
    }
    assert!(found, "the stream's error is in the chain of {err:?}");
    assert_eq!(api.arrivals_for("/up").len(), 0);
}
