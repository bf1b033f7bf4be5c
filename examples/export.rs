//! Paging through an API and downloading an export, against an embedded
//! loopback API:
//!
//! - the jobs are listed page by page, GitHub style (`Link: rel="next"`);
//! - the finished job's export (1 MiB) is downloaded to a file with a
//!   progress line every 256 KiB; its first answer breaks halfway, and the
//!   download resumes with `Range` where the file stopped, then checks the
//!   length and a checksum;
//! - with the `cache` feature, the job list is fetched through a client
//!   with an HTTP cache: the second read is a hit that sends nothing.
//!
//! Run it with `cargo run --example export` (`--features cache` for the
//! cache part).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use futures_util::TryStreamExt;
use parapet::Client;
use parapet::download::Digest;
use parapet::paginate::Paginate;
use parapet_testkit::{Reply, Server, body_hash};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Job {
    id: u32,
    state: String,
}

/// FNV-1a, the testkit's body hash, as a [`Digest`] (use `sha2` in real code).
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

#[tokio::main]
async fn main() -> Result<(), parapet::Error> {
    let api = Server::start().await;
    api.on("/v1/jobs").handle(|a| match a.query.as_deref() {
        None => Reply::json(r#"[{"id":1,"state":"failed"},{"id":2,"state":"running"}]"#)
            .header("link", r#"</v1/jobs?page=2>; rel="next""#),
        _ => Reply::json(r#"[{"id":3,"state":"done"}]"#),
    });
    let export: Vec<u8> = (0..1u32 << 20)
        .map(|i| u8::try_from(i % 251).unwrap())
        .collect();
    let served = export.clone();
    api.on("/v1/jobs/3/export").handle(move |a| {
        let reply = match a.header("range").and_then(|r| r.strip_prefix("bytes=")) {
            None => Reply::ok().body(served.clone()).truncate_body(600_000),
            Some(range) => {
                let start: usize = range.trim_end_matches('-').parse().unwrap();
                Reply::status(206)
                    .header(
                        "content-range",
                        format!("bytes {start}-{}/{}", served.len() - 1, served.len()),
                    )
                    .body(served[start..].to_vec())
            }
        };
        reply
            .header("etag", "\"export-3\"")
            .header("accept-ranges", "bytes")
    });

    let client = Client::builder().base_url(api.url("/v1")).build().unwrap();

    // Every job, page after page.
    let jobs: Vec<Job> = client
        .get("jobs")
        .paginate(Paginate::link_header().max_pages(100))
        .items("")
        .try_collect()
        .await?;
    for job in &jobs {
        println!("job {}: {}", job.id, job.state);
    }
    let done = jobs
        .iter()
        .find(|j| j.state == "done")
        .expect("a finished job");

    // Its export, to a file, with progress lines.
    let path = std::env::temp_dir().join(format!("parapet-export-{}.bin", std::process::id()));
    let mut next_line = 0;
    let result = client
        .get(&format!("jobs/{}/export", done.id))
        .download()
        .checksum(body_hash(&export).to_be_bytes(), || {
            Fnv(0xcbf2_9ce4_8422_2325)
        })
        .on_progress(move |p| {
            if p.bytes() >= next_line || Some(p.bytes()) == p.total() {
                let total = p.total().map_or_else(|| "?".to_owned(), |t| t.to_string());
                println!(
                    "  {:>8} / {total} bytes ({:.0} KiB/s)",
                    p.bytes(),
                    p.bytes_per_second() / 1024.0
                );
                next_line = p.bytes() + 256 * 1024;
            }
        })
        .to_file(&path)
        .await?;
    println!(
        "downloaded {} bytes in {} requests ({} resumed) to {}",
        result.bytes(),
        result.attempts(),
        result.resumed(),
        path.display()
    );
    let ranges: Vec<_> = api
        .arrivals_for("/v1/jobs/3/export")
        .iter()
        .map(|a| a.header("range").unwrap_or("(whole)").to_owned())
        .collect();
    println!("the server saw: {ranges:?}");
    assert_eq!(std::fs::read(&path).unwrap(), export);
    std::fs::remove_file(&path).unwrap();

    #[cfg(feature = "cache")]
    cached_status(&api).await?;
    Ok(())
}

/// A status document the server lets clients keep for a minute, read
/// twice through a client with an in-memory cache: one request.
#[cfg(feature = "cache")]
async fn cached_status(api: &Server) -> Result<(), parapet::Error> {
    use parapet::cache::CacheLayer;

    api.on("/v1/status")
        .reply(Reply::json(r#"{"exports":"up"}"#).header("cache-control", "max-age=60"));
    let client = Client::builder()
        .base_url(api.url("/v1"))
        .cache(CacheLayer::in_memory(1 << 20))
        .build()
        .unwrap();
    for _ in 0..2 {
        let resp = client.get("status").send().await?;
        println!("status: {:?}, {}", resp.cache_status(), resp.text().await?);
    }
    println!(
        "the server saw {} request(s) for /v1/status",
        api.hits("/v1/status")
    );
    Ok(())
}
