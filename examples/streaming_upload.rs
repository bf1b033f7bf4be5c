//! Streaming request bodies: a file, a stream and a reader uploaded to an
//! embedded loopback API that answers the first try of each with a 503.
//!
//! - The file (1 MiB, far over the 64 KiB replay cap) is opened again and
//!   sent again: nothing of it is kept in memory.
//! - The small stream is kept as it is sent, so it is sent again too.
//! - The large stream cannot be: the 503 comes back, with the reason.
//!
//! Run it with `cargo run --example streaming_upload`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use parapet::Client;
use parapet::retry::NotRetried;
use parapet_testkit::{Reply, Server};

#[tokio::main]
async fn main() -> Result<(), parapet::Error> {
    let api = Server::start().await;
    for path in ["/backups/db.dump", "/logs/today", "/logs/archive"] {
        api.on(path)
            .replies([Reply::status(503), Reply::status(201)]);
    }
    let client = Client::new().unwrap();

    // A file: Content-Length from its metadata, reopened for the retry.
    let path = std::env::temp_dir().join(format!("parapet-example-{}.dump", std::process::id()));
    std::fs::write(&path, vec![b'x'; 1 << 20]).unwrap();
    let resp = client
        .put(&api.url("/backups/db.dump"))
        .body_file(&path)
        .await?
        .send()
        .await?;
    std::fs::remove_file(&path).unwrap();
    report(&api, "/backups/db.dump", &resp);

    // A small stream: kept up to the replay cap, so sent again.
    let lines = ["GET /a 200\n", "GET /b 404\n"].map(|l| Ok::<_, std::io::Error>(Bytes::from(l)));
    let resp = client
        .put(&api.url("/logs/today"))
        .body_stream(futures_util::stream::iter(lines))
        .send()
        .await?;
    report(&api, "/logs/today", &resp);

    // A large reader (256 KiB): past the cap, sent once; the 503 comes back.
    let archive = std::io::Cursor::new(vec![b'y'; 256 * 1024]);
    let resp = client
        .put(&api.url("/logs/archive"))
        .body_reader(archive)
        .send()
        .await?;
    report(&api, "/logs/archive", &resp);
    if let Some(why) = NotRetried::get(resp.extensions()) {
        println!("  not retried: {:?}", why.reason());
    }
    Ok(())
}

fn report(api: &Server, path: &str, resp: &parapet::Response) {
    let arrivals = api.arrivals_for(path);
    let sizes: Vec<_> = arrivals.iter().map(|a| a.body_len).collect();
    let framing = arrivals
        .first()
        .and_then(|a| a.header("content-length"))
        .map_or("chunked".to_owned(), |l| format!("content-length {l}"));
    println!(
        "{path}: {} after {} arrival(s) of {sizes:?} bytes, {framing}",
        resp.status(),
        arrivals.len()
    );
}
