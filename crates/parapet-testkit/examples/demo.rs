//! parapet's main job, shown end to end against a loopback fault server.
//!
//! A small payment-API client calls a server that fails the way real APIs
//! do: it is briefly unavailable (503, 503, then 200), it rate-limits
//! (429 with `Retry-After: 1`), and it sometimes never answers. The client
//! uses parapet-core to decide what it may do about each failure:
//!
//! - `IdempotencyRules`: may this request be sent again at all? A GET may; a
//!   POST only with an `Idempotency-Key` the API honours.
//! - `ServerLimit` (and `retry_after`): how long did the server ask us to
//!   wait? Its word beats our own backoff.
//!
//! Then it prints what the server saw, from `parapet_testkit::Server::arrivals`.
//!
//! Run it with `cargo run -p parapet-testkit --example demo` (about 2 s).

use std::error::Error;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, StatusCode};
use parapet_core::{IdempotencyKey, IdempotencyRules, ServerLimit, retry_after};
use parapet_testkit::{Reply, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep, timeout};

/// At most this many attempts per call.
const MAX_ATTEMPTS: u32 = 4;
/// One attempt may take this long before we give up on it.
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(300);
/// Our own backoff before the n-th retry: 50 ms, 100 ms, 200 ms ...
const BASE_BACKOFF: Duration = Duration::from_millis(50);
/// We never wait longer than this, whatever the server says.
const MAX_WAIT: Duration = Duration::from_secs(1);

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn Error>> {
    // The server, scripted per path and per request number.
    let server = Server::start().await;
    server.on("/v1/balance").replies([
        Reply::status(503).body("upstream busy"),
        Reply::status(503).body("upstream busy"),
        Reply::json(r#"{"available":4200,"currency":"eur"}"#)
            .header("x-ratelimit-limit", "100")
            .header("x-ratelimit-remaining", "97")
            .header("x-ratelimit-reset", "60"),
    ]);
    server.on("/v1/charges").replies([
        Reply::status(503).body("upstream busy"),
        Reply::status(429)
            .header("retry-after", "1")
            .body("too many requests"),
        Reply::json(r#"{"id":"ch_1","status":"succeeded"}"#).with_status(201),
    ]);
    server.on("/v1/report").replies([
        Reply::hang(),
        Reply::json(r#"{"rows":3}"#).delay(Duration::from_millis(20)),
    ]);
    println!("fault server listening on {}\n", server.url("/"));

    let client = DemoClient {
        addr: server.addr(),
        // The API documents that it honours Idempotency-Key on POST.
        rules: IdempotencyRules::new().trust_idempotency_key(true),
    };

    // 1. A GET: idempotent, so transient failures are retried.
    client
        .call(Request::get("/v1/balance").body(Bytes::new())?)
        .await;

    // 2. A POST without a key: the first failure is final, because the
    //    server may have charged the card before failing.
    let charge = r#"{"amount":1999,"currency":"eur"}"#;
    client
        .call(Request::post("/v1/charges").body(Bytes::from(charge))?)
        .await;

    // 3. The same POST with an Idempotency-Key: safe to send again, and the
    //    server's Retry-After decides how long to wait.
    let mut keyed = Request::post("/v1/charges").body(Bytes::from(charge))?;
    IdempotencyKey::ensure(&mut keyed);
    client.call(keyed).await;

    // 4. A server that never answers: the attempt timeout ends the wait.
    client
        .call(Request::get("/v1/report").body(Bytes::new())?)
        .await;

    print_arrivals(&server);
    Ok(())
}

/// A deliberately small client: one connection per attempt, retries by
/// parapet-core's rules. (parapet's layers do all of this for you.)
struct DemoClient {
    addr: SocketAddr,
    rules: IdempotencyRules,
}

/// A response read to its end.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl DemoClient {
    async fn call(&self, req: Request<Bytes>) {
        let key = req
            .headers()
            .get("idempotency-key")
            .map(|k| format!(" (idempotency-key {})", k.to_str().unwrap_or("?")))
            .unwrap_or_default();
        println!("==> {} {}{key}", req.method(), req.uri());
        let retryable = self.rules.is_idempotent(&req);
        let call_started = Instant::now();

        for attempt in 1..=MAX_ATTEMPTS {
            let started = Instant::now();
            let outcome = timeout(ATTEMPT_TIMEOUT, send(self.addr, &req)).await;
            let took = started.elapsed().as_secs_f64() * 1000.0;
            let server_wait = match outcome {
                Err(_) => {
                    println!(
                        "    attempt {attempt}: no answer within {ATTEMPT_TIMEOUT:?}, gave up on it"
                    );
                    None
                }
                Ok(Err(e)) => {
                    println!("    attempt {attempt}: transport error after {took:.1} ms: {e}");
                    None
                }
                Ok(Ok(answer)) => {
                    let now = SystemTime::now();
                    let limit = ServerLimit::from_response(answer.status, &answer.headers, now);
                    println!(
                        "    attempt {attempt}: {} after {took:.1} ms{}",
                        answer.status,
                        describe(limit.as_ref(), &answer.headers, now)
                    );
                    if !is_transient(answer.status) {
                        let body = String::from_utf8_lossy(&answer.body);
                        println!(
                            "    done in {} ms: {body}\n",
                            call_started.elapsed().as_millis()
                        );
                        return;
                    }
                    limit.and_then(|l| l.wait())
                }
            };

            if !retryable {
                println!(
                    "    not retried: a {} without an Idempotency-Key may already have taken effect\n",
                    req.method()
                );
                return;
            }
            if attempt == MAX_ATTEMPTS {
                break;
            }
            let (wait, why) = match server_wait {
                Some(w) => (w.min(MAX_WAIT), "as the server asked"),
                None => (BASE_BACKOFF * 2u32.pow(attempt - 1), "our backoff"),
            };
            println!("    waiting {} ms ({why})", wait.as_millis());
            sleep(wait).await;
        }
        println!("    giving up after {MAX_ATTEMPTS} attempts\n");
    }
}

/// Failures worth another attempt.
fn is_transient(status: StatusCode) -> bool {
    matches!(status.as_u16(), 429 | 502 | 503 | 504)
}

/// What the response says about the server's limits, for the log.
fn describe(limit: Option<&ServerLimit>, headers: &HeaderMap, now: SystemTime) -> String {
    let mut out = String::new();
    if let Some(wait) = retry_after(headers, now) {
        let _ = write!(out, ", retry-after {} s", wait.as_secs());
    }
    if let Some(l) = limit {
        if let (Some(remaining), Some(quota)) = (l.remaining(), l.limit()) {
            let _ = write!(out, ", {remaining} of {quota} requests left");
        }
    }
    out
}

/// One attempt over a fresh connection: write the request, read the answer
/// to EOF, parse it.
async fn send(
    addr: SocketAddr,
    req: &Request<Bytes>,
) -> Result<Answer, Box<dyn Error + Send + Sync>> {
    let mut tcp = TcpStream::connect(addr).await?;
    let mut head = format!(
        "{} {} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
        req.method(),
        req.uri(),
        req.body().len()
    );
    for (name, value) in req.headers() {
        let _ = write!(head, "{name}: {}\r\n", value.to_str()?);
    }
    head.push_str("\r\n");
    tcp.write_all(head.as_bytes()).await?;
    tcp.write_all(req.body()).await?;

    let mut raw = Vec::new();
    tcp.read_to_end(&mut raw).await?;
    let mut slots = [httparse::EMPTY_HEADER; 32];
    let mut parsed = httparse::Response::new(&mut slots);
    let httparse::Status::Complete(head_len) = parsed.parse(&raw)? else {
        return Err("the connection closed before a complete response".into());
    };
    let status = StatusCode::from_u16(parsed.code.unwrap_or(0))?;
    let mut headers = HeaderMap::new();
    for h in parsed.headers.iter() {
        headers.append(
            HeaderName::from_bytes(h.name.as_bytes())?,
            HeaderValue::from_bytes(h.value)?,
        );
    }
    let declared: usize = headers
        .get("content-length")
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .unwrap_or(0);
    let body = Bytes::copy_from_slice(raw.get(head_len..).unwrap_or_default());
    if body.len() < declared {
        return Err(format!("body cut short: {} of {declared} bytes", body.len()).into());
    }
    Ok(Answer {
        status,
        headers,
        body,
    })
}

/// Print what the server recorded, one line per request.
fn print_arrivals(server: &Server) {
    let arrivals = server.arrivals();
    let Some(first) = arrivals.first() else {
        return;
    };
    let origin = first.at;
    println!(
        "what the server saw ({} requests on {} connections, at most {} at once):",
        arrivals.len(),
        server.connections(),
        server.max_in_flight()
    );
    println!(
        "  {:>7}  {:>4}  {:<6} {:<13} {:>5}  idempotency-key",
        "at", "conn", "method", "path", "body"
    );
    for a in &arrivals {
        let key = a.header("idempotency-key").unwrap_or("-");
        println!(
            "  {:>4} ms  {:>4}  {:<6} {:<13} {:>3} B  {key}",
            (a.at - origin).as_millis(),
            a.connection,
            a.method.as_str(),
            a.path,
            a.body_len,
        );
    }
    let keyed: Vec<_> = arrivals
        .iter()
        .filter(|a| a.headers.contains_key("idempotency-key"))
        .collect();
    if let [a, b, ..] = keyed.as_slice() {
        println!(
            "\nthe keyed charge arrived {} times with one key ({}) and identical bodies ({})",
            keyed.len(),
            if a.header("idempotency-key") == b.header("idempotency-key") {
                "same"
            } else {
                "DIFFERENT"
            },
            if a.body_hash == b.body_hash {
                "same hash"
            } else {
                "DIFFERENT hashes"
            },
        );
    }
}
