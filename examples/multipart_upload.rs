//! A `multipart/form-data` upload (text fields and a file streamed from
//! disk) to an embedded loopback API that fails the first try with a 503:
//! the form is sent again byte for byte, the file opened again.
//!
//! Run it with `cargo run --example multipart_upload`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use parapet::Client;
use parapet::multipart::{Form, Part};
use parapet_testkit::{Reply, Server};

#[tokio::main]
async fn main() -> Result<(), parapet::Error> {
    let api = Server::start().await;
    api.on("/v1/documents")
        .replies([Reply::status(503), Reply::status(201).body(r#"{"id":42}"#)]);

    let path =
        std::env::temp_dir().join(format!("parapet-example-{}-report.pdf", std::process::id()));
    std::fs::write(&path, b"%PDF-1.7 ...").unwrap();

    let form = Form::new()
        .text("title", "Q3 report")
        .text("folder", "finance")
        // File name from the path, Content-Type guessed: application/pdf.
        .part("file", Part::file(&path).await?);
    let client = Client::builder().base_url(api.url("/v1")).build().unwrap();
    // A PUT may be retried; a POST would need `.idempotency_key()`.
    let resp = client.put("documents").multipart(form).send().await?;
    println!("{} {}", resp.status(), resp.text().await?);
    std::fs::remove_file(&path).unwrap();

    let arrivals = api.arrivals_for("/v1/documents");
    println!(
        "{} arrivals, bodies identical: {}",
        arrivals.len(),
        arrivals
            .iter()
            .all(|a| a.body == arrivals.first().unwrap().body)
    );
    let first = arrivals.first().unwrap();
    println!("content-type: {}", first.header("content-type").unwrap());
    println!(
        "content-length: {}",
        first.header("content-length").unwrap()
    );
    println!("---\n{}", first.body_text());
    Ok(())
}
