//! `multipart/form-data` through the whole client, against a loopback
//! testkit server whose recorded bodies are parsed here, part by part.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use parapet::Client;
use parapet::core::DEFAULT_REPLAY_CAP;
use parapet::multipart::{Form, Part};
use parapet::retry::{NotRetried, NotRetriedReason};
use parapet_testkit::{Arrival, Reply, Server};

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
            "parapet-multipart-{}-{:016x}-{name}",
            std::process::id(),
            parapet::core::random_u64()
        ));
        std::fs::write(&path, bytes).unwrap();
        Self(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn name(&self) -> String {
        self.0.file_name().unwrap().to_string_lossy().into_owned()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// One part as the server read it.
#[derive(Debug, PartialEq, Eq)]
struct Received {
    name: String,
    file_name: Option<String>,
    content_type: Option<String>,
    data: Vec<u8>,
}

impl Received {
    fn new(name: &str, file_name: Option<&str>, content_type: Option<&str>, data: &[u8]) -> Self {
        Self {
            name: name.into(),
            file_name: file_name.map(Into::into),
            content_type: content_type.map(Into::into),
            data: data.to_vec(),
        }
    }
}

/// A strict reader of what arrived: the boundary from `Content-Type`, then
/// RFC 7578 framing (a delimiter line, headers, an empty line, the data,
/// CRLF before the next delimiter, the closing delimiter last, nothing
/// after it).
fn parse(arrival: &Arrival) -> Vec<Received> {
    let ct = arrival.header("content-type").unwrap();
    let boundary = ct
        .strip_prefix("multipart/form-data; boundary=")
        .unwrap_or_else(|| panic!("content-type {ct}"));
    let body = &arrival.body[..];
    let delimiter = format!("--{boundary}");
    let mut rest = body
        .strip_prefix(delimiter.as_bytes())
        .expect("the body opens with the delimiter");
    let next = format!("\r\n--{boundary}");
    let mut parts = Vec::new();
    loop {
        if rest == b"--\r\n" {
            return parts;
        }
        rest = rest.strip_prefix(b"\r\n").expect("CRLF after a delimiter");
        let end = find(rest, next.as_bytes()).expect("a delimiter after each part");
        let (part, after) = rest.split_at(end);
        rest = &after[next.len()..];
        let head_end = find(part, b"\r\n\r\n").expect("headers end with an empty line");
        let (head, data) = (&part[..head_end], &part[head_end + 4..]);
        let head = std::str::from_utf8(head).unwrap();
        let mut received = Received::new("", None, None, data);
        for line in head.split("\r\n") {
            let (name, value) = line.split_once(": ").unwrap();
            match name {
                "Content-Disposition" => {
                    let mut params = value.split("; ");
                    assert_eq!(params.next(), Some("form-data"));
                    for p in params {
                        let (k, v) = p.split_once('=').unwrap();
                        let v = v.strip_prefix('"').unwrap().strip_suffix('"').unwrap();
                        assert!(!v.contains('"'), "quotes are escaped in {v}");
                        match k {
                            "name" => received.name = v.into(),
                            "filename" => received.file_name = Some(v.into()),
                            other => panic!("unexpected parameter {other}"),
                        }
                    }
                }
                "Content-Type" => received.content_type = Some(value.into()),
                other => panic!("unexpected part header {other}"),
            }
        }
        parts.push(received);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[tokio::test]
async fn text_bytes_and_a_file_arrive_field_by_field_with_a_content_length() {
    let picture = TempFile::new("photo.png", &[0x89, b'P', b'N', b'G', 0, 1, 2, 255]);
    let api = Server::start().await;
    api.on("/form").reply(Reply::ok());
    let form = Form::new()
        .text("title", "Q3 report")
        .part(
            "data",
            Part::bytes(&b"a,b\r\n1,2\r\n"[..]).file_name("data.csv"),
        )
        .file("picture", picture.path())
        .await
        .unwrap()
        .part(
            "meta",
            Part::text("{\"v\":1}")
                .content_type("application/json")
                .unwrap(),
        );
    let boundary = form.boundary().to_owned();
    let len = form.content_length().unwrap();

    client()
        .post(&api.url("/form"))
        .multipart(form)
        .send()
        .await
        .unwrap();

    let seen = &api.arrivals_for("/form")[0];
    assert_eq!(
        seen.header("content-type"),
        Some(&*format!("multipart/form-data; boundary={boundary}"))
    );
    assert_eq!(seen.header("content-length"), Some(&*len.to_string()));
    assert_eq!(seen.body_len as u64, len);
    assert_eq!(
        parse(seen),
        [
            Received::new("title", None, None, b"Q3 report"),
            Received::new(
                "data",
                Some("data.csv"),
                Some("text/csv"),
                b"a,b\r\n1,2\r\n"
            ),
            Received::new(
                "picture",
                Some(&picture.name()),
                Some("image/png"),
                &[0x89, b'P', b'N', b'G', 0, 1, 2, 255]
            ),
            Received::new("meta", None, Some("application/json"), b"{\"v\":1}"),
        ]
    );
}

#[tokio::test]
async fn a_form_with_a_file_is_sent_again_byte_for_byte_after_a_503() {
    let big: Vec<u8> = (0..DEFAULT_REPLAY_CAP * 3)
        .map(|i| u8::try_from(i % 253).unwrap())
        .collect();
    let file = TempFile::new("dump.bin", &big);
    let api = Server::start().await;
    api.on("/form").replies([Reply::status(503), Reply::ok()]);
    let form = Form::new()
        .text("kind", "dump")
        .file("dump", file.path())
        .await
        .unwrap();

    let resp = client()
        .put(&api.url("/form"))
        .multipart(form)
        .send()
        .await
        .unwrap();

    assert_eq!(resp.status(), 200);
    let arrivals = api.arrivals_for("/form");
    assert_eq!(arrivals.len(), 2);
    assert_eq!(arrivals[0].body, arrivals[1].body);
    let parts = parse(&arrivals[1]);
    assert_eq!(parts[1].data, big);
    assert_eq!(
        parts[1].content_type.as_deref(),
        Some("application/octet-stream")
    );
}

#[tokio::test]
async fn names_and_file_names_arrive_escaped() {
    let api = Server::start().await;
    api.on("/form").reply(Reply::ok());
    let form = Form::new().part(
        "say \"hi\"\r\nnow",
        Part::text("x").file_name("r\u{e9}sum\u{e9}\n\".txt"),
    );

    client()
        .post(&api.url("/form"))
        .multipart(form)
        .send()
        .await
        .unwrap();

    let parts = parse(&api.arrivals_for("/form")[0]);
    assert_eq!(parts[0].name, "say %22hi%22%0D%0Anow");
    assert_eq!(
        parts[0].file_name.as_deref(),
        Some("r\u{e9}sum\u{e9}%0A%22.txt")
    );
    assert_eq!(parts[0].content_type.as_deref(), Some("text/plain"));
}

#[tokio::test]
async fn a_stream_part_is_sent_chunked_and_replayed_under_the_cap() {
    let api = Server::start().await;
    api.on("/form").replies([Reply::status(503), Reply::ok()]);
    let rows =
        ["id,name\n", "1,ada\n", "2,grace\n"].map(|r| Ok::<_, std::io::Error>(Bytes::from(r)));
    let form = Form::new().text("table", "people").part(
        "rows",
        Part::stream(futures_util::stream::iter(rows)).file_name("rows.csv"),
    );

    let resp = client()
        .put(&api.url("/form"))
        .multipart(form)
        .send()
        .await
        .unwrap();

    assert_eq!(resp.status(), 200);
    let arrivals = api.arrivals_for("/form");
    assert_eq!(arrivals.len(), 2);
    assert_eq!(arrivals[0].header("transfer-encoding"), Some("chunked"));
    assert_eq!(arrivals[0].header("content-length"), None);
    assert_eq!(arrivals[0].body, arrivals[1].body);
    assert_eq!(
        parse(&arrivals[0]),
        [
            Received::new("table", None, None, b"people"),
            Received::new(
                "rows",
                Some("rows.csv"),
                Some("text/csv"),
                b"id,name\n1,ada\n2,grace\n"
            ),
        ]
    );
}

#[tokio::test]
async fn a_stream_part_over_the_cap_is_sent_once_and_its_503_returned() {
    let api = Server::start().await;
    api.on("/form").replies([Reply::status(503), Reply::ok()]);
    let chunk = Bytes::from(vec![b'z'; 16 * 1024]);
    let chunks: Vec<Result<Bytes, std::io::Error>> = (0..DEFAULT_REPLAY_CAP / chunk.len() + 2)
        .map(|_| Ok(chunk.clone()))
        .collect();
    let form = Form::new().part("blob", Part::stream(futures_util::stream::iter(chunks)));

    let resp = client()
        .put(&api.url("/form"))
        .multipart(form)
        .send()
        .await
        .unwrap();

    assert_eq!(resp.status(), 503);
    assert_eq!(
        NotRetried::get(resp.extensions()).map(|n| n.reason()),
        Some(NotRetriedReason::BodyNotReplayable)
    );
    let arrivals = api.arrivals_for("/form");
    assert_eq!(arrivals.len(), 1);
    assert_eq!(
        parse(&arrivals[0])[0].data.len(),
        DEFAULT_REPLAY_CAP + 2 * chunk.len()
    );
}

#[tokio::test]
async fn a_form_in_memory_only_has_its_length_and_replays() {
    let api = Server::start().await;
    api.on("/form").replies([Reply::status(503), Reply::ok()]);
    let form = Form::new().text("a", "1").text("b", "2");
    let len = form.content_length().unwrap();

    client()
        .put(&api.url("/form"))
        .multipart(form)
        .send()
        .await
        .unwrap();

    let arrivals = api.arrivals_for("/form");
    assert_eq!(arrivals.len(), 2);
    for a in &arrivals {
        assert_eq!(a.header("content-length"), Some(&*len.to_string()));
        assert_eq!(
            parse(a),
            [
                Received::new("a", None, None, b"1"),
                Received::new("b", None, None, b"2")
            ]
        );
    }
}

#[tokio::test]
async fn each_form_has_its_own_boundary() {
    let api = Server::start().await;
    api.on("/form").reply(Reply::ok());
    let c = client();
    for _ in 0..2 {
        c.post(&api.url("/form"))
            .multipart(Form::new().text("a", "1"))
            .send()
            .await
            .unwrap();
    }
    let arrivals = api.arrivals_for("/form");
    assert_ne!(
        arrivals[0].header("content-type"),
        arrivals[1].header("content-type")
    );
}
