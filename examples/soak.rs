//! A bounded soak test: mixed faults at high concurrency against loopback
//! fault servers, for a fixed time (not run in CI).
//!
//! ```text
//! cargo run --release --example soak -- --minutes 10
//! cargo run --release --example soak -- --seconds 30 --concurrency 32 --seed 7
//! ```
//!
//! Loopback servers (separate authorities, so that one's throttle gate or
//! retry budget does not hide another's faults):
//!
//! - `faults`: GETs answered normally, or reset, closed, cut mid-body,
//!   truncated, stalled before the headers, hung, dripped slowly, or dripped
//!   so slowly that the deadline ends them;
//! - `storms`: 503s and 429s with `Retry-After: 1` mixed with answers;
//! - `payments`: POSTs, half with an `Idempotency-Key` (the client trusts
//!   it), half without, answered normally or reset, closed, hung or 503;
//! - `api`, behind `OAuth2` client-credentials tokens from a token endpoint
//!   that fails or is slow now and then and issues 5 s tokens: 401s (a
//!   refresh and one re-send) and 503s mixed with answers.
//!
//! It checks, and prints every 10 s and at the end:
//!
//! - memory: the process's resident set (`VmRSS` in `/proc/self/status`),
//!   sampled every 10 s, stays flat after the first minute;
//! - no POST is duplicated: the server counts arrivals per unique body
//!   (without a key: at most one) and per key (every arrival of a key
//!   carries the same bytes, and at most as many as the attempts);
//! - no call outlives its deadline: each call's wall time, sending and
//!   reading the whole body, against the deadline plus a small slack;
//! - auth: every API arrival carries an issued token, and no call reaches
//!   the API more than twice per attempt (one re-send after a 401).
//!
//! Exits with status 1 if any check failed. Everything stays on 127.0.0.1.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss
)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use parapet::Client;
use parapet::auth::{AuthLayer, ClientCredentialsGrant, TokenCache, TokenEndpoint};
use parapet::retry::RetryPolicy;
use parapet_core::{IDEMPOTENCY_KEY, IdempotencyRules};
use parapet_testkit::{Arrival, Reply, Rng, Server, body_hash};
use tokio::time::Instant;

const DEADLINE: Duration = Duration::from_secs(2);
const ATTEMPT: Duration = Duration::from_millis(500);
/// Slack allowed past the deadline before a call counts as outliving it
/// (scheduling on a busy machine; the deadline itself fires on time).
const SLACK: Duration = Duration::from_millis(250);
const ATTEMPTS: u32 = 3;

struct Args {
    run_for: Duration,
    concurrency: usize,
    seed: u64,
}

fn args() -> Args {
    let mut a = Args {
        run_for: Duration::from_secs(600),
        concurrency: 256,
        seed: 0x50a4,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        let value = it.next().and_then(|v| v.parse::<u64>().ok());
        match (flag.as_str(), value) {
            ("--minutes", Some(m)) => a.run_for = Duration::from_secs(m * 60),
            ("--seconds", Some(s)) => a.run_for = Duration::from_secs(s),
            ("--concurrency", Some(c)) => a.concurrency = usize::try_from(c).unwrap_or(64).max(1),
            ("--seed", Some(s)) => a.seed = s,
            _ => {
                eprintln!(
                    "usage: soak [--minutes N (default 10)] [--seconds N] [--concurrency N (256)] [--seed N]"
                );
                std::process::exit(2);
            }
        }
    }
    a
}

fn shared_rng(seed: u64) -> Arc<Mutex<Rng>> {
    Arc::new(Mutex::new(Rng::new(seed | 1)))
}

fn body_of(len: usize) -> Vec<u8> {
    (0..len).map(|i| b'a' + (i % 26) as u8).collect()
}

fn faults_route(server: &Server, seed: u64) {
    let rng = shared_rng(seed);
    let body = body_of(2048);
    server.on("/get").handle(move |_a: &Arrival| {
        let p = rng.lock().unwrap().percent();
        let ok = Reply::ok().body(body.clone());
        match p {
            0..=7 => Reply::reset(),
            8..=13 => Reply::close(),
            14..=18 => Reply::reset_after_headers()
                .body(body.clone())
                .truncate_body(100),
            19..=23 => ok.truncate_body(200),
            24..=28 => ok.delay(Duration::from_secs(3)),
            29..=31 => Reply::hang(),
            32..=37 => ok.drip(256, Duration::from_millis(40)),
            38..=40 => ok.drip(64, Duration::from_millis(200)),
            _ => ok,
        }
    });
}

fn storms_route(server: &Server, seed: u64) {
    let rng = shared_rng(seed);
    server.on("/storm").handle(move |_a: &Arrival| {
        let p = rng.lock().unwrap().percent();
        match p {
            0..=39 => Reply::status(503).body("busy"),
            40..=42 => Reply::status(429).header("retry-after", "1"),
            _ => Reply::ok().body("calm"),
        }
    });
}

/// What the payments server saw.
#[derive(Default)]
struct Ledger {
    /// Arrivals per POST number without a key (index = number).
    unkeyed: Vec<u8>,
    /// Arrivals per POST number with a key.
    keyed: Vec<u8>,
    /// A keyed arrival whose body was not the key's body.
    mismatched: u64,
}

fn bump(v: &mut Vec<u8>, n: usize) -> u8 {
    if v.len() <= n {
        v.resize(n + 1, 0);
    }
    v[n] = v[n].saturating_add(1);
    v[n]
}

fn payment_body(n: u64, keyed: bool) -> String {
    format!(r#"{{"n":{n},"keyed":{keyed},"amount":1250,"currency":"EUR"}}"#)
}

fn payments_route(server: &Server, seed: u64, ledger: Arc<Mutex<Ledger>>) {
    let rng = shared_rng(seed);
    server.on("/pay").handle(move |a: &Arrival| {
        // Account first (the handler sees the whole body), then decide.
        let key = a.header(IDEMPOTENCY_KEY.as_str()).map(str::to_owned);
        let n = a
            .header("x-soak-n")
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(u64::MAX);
        {
            let mut l = ledger.lock().unwrap();
            let idx = usize::try_from(n).unwrap_or(usize::MAX - 1);
            match key {
                Some(k) => {
                    let expected = payment_body(n, true);
                    if k != format!("soak-{n}") || a.body_hash != body_hash(expected.as_bytes()) {
                        l.mismatched += 1;
                    }
                    bump(&mut l.keyed, idx);
                }
                None => {
                    bump(&mut l.unkeyed, idx);
                }
            }
        }
        let p = rng.lock().unwrap().percent();
        match p {
            0..=9 => Reply::reset(),
            10..=17 => Reply::close(),
            18..=21 => Reply::hang(),
            22..=27 => Reply::status(503),
            _ => Reply::json(r#"{"status":"paid"}"#),
        }
    });
}

#[derive(Default)]
struct Counters {
    calls: AtomicU64,
    ok: AtomicU64,
    status_err: AtomicU64,
    timeout: AtomicU64,
    body: AtomicU64,
    rate_limited: AtomicU64,
    other: AtomicU64,
    over_deadline: AtomicU64,
    /// Most time past the deadline, in microseconds (0 if none).
    max_over_us: AtomicU64,
    /// Longest call, in microseconds.
    max_call_us: AtomicU64,
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

#[derive(Clone, Copy)]
#[repr(usize)]
enum Op {
    Get,
    Storm,
    PostKeyed,
    PostUnkeyed,
    Authed,
}

async fn one_call(clients: &Clients, urls: &Urls, op: Op, n: u64, c: &Counters) {
    let client = &clients.plain;
    let req = match op {
        Op::Authed => clients
            .authed
            .get(&urls.api)
            .header("x-soak-n", n.to_string()),
        Op::Get => client.get(&urls.get),
        Op::Storm => client.get(&urls.storm),
        Op::PostKeyed => client
            .post(&urls.pay)
            .header(IDEMPOTENCY_KEY, format!("soak-{n}"))
            .header("x-soak-n", n.to_string())
            .header("content-type", "application/json")
            .body(payment_body(n, true)),
        Op::PostUnkeyed => client
            .post(&urls.pay)
            .header("x-soak-n", n.to_string())
            .header("content-type", "application/json")
            .body(payment_body(n, false)),
    };
    let start = Instant::now();
    let result = match req.send().await {
        Ok(res) => match res.error_for_status().await {
            Ok(res) => res.bytes().await.map(|_| ()),
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    let took = start.elapsed();
    c.calls.fetch_add(1, Ordering::Relaxed);
    let counter = match &result {
        Ok(()) => &c.ok,
        Err(e) if e.is_status() => &c.status_err,
        Err(e) if e.is_rate_limited() => &c.rate_limited,
        Err(e) if e.is_timeout() => &c.timeout,
        Err(e) if e.is_body() => &c.body,
        Err(_) => &c.other,
    };
    counter.fetch_add(1, Ordering::Relaxed);
    let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
    c.max_call_us.fetch_max(us, Ordering::Relaxed);
    if took > DEADLINE {
        let over = u64::try_from((took - DEADLINE).as_micros()).unwrap_or(u64::MAX);
        c.max_over_us.fetch_max(over, Ordering::Relaxed);
        if took > DEADLINE + SLACK {
            c.over_deadline.fetch_add(1, Ordering::Relaxed);
        }
    }
}

struct Urls {
    get: String,
    storm: String,
    pay: String,
    api: String,
}

struct Clients {
    /// No credentials: the fault, storm and payment servers.
    plain: Client,
    /// Bearer tokens from the token endpoint, for the API server.
    authed: Client,
}

/// What the API and token servers saw.
#[derive(Default)]
struct AuthLedger {
    /// API arrivals per call number.
    per_call: Vec<u8>,
    /// API arrivals without a token the endpoint issued.
    bad_token: u64,
    /// Tokens issued.
    issued: u64,
}

/// A token endpoint that issues `soak-tok-<n>` for 5 s (so tokens are
/// refreshed all the time), answering 503 to 10 % and slowly to 5 %.
fn token_route(server: &Server, seed: u64, ledger: Arc<Mutex<AuthLedger>>) {
    let rng = shared_rng(seed);
    server.on("/token").handle(move |_a: &Arrival| {
        let p = rng.lock().unwrap().percent();
        if p < 10 {
            return Reply::status(503);
        }
        let n = {
            let mut l = ledger.lock().unwrap();
            l.issued += 1;
            l.issued
        };
        let reply = Reply::json(format!(
            r#"{{"access_token":"soak-tok-{n}","token_type":"Bearer","expires_in":5}}"#
        ));
        if p < 15 {
            reply.delay(Duration::from_millis(300))
        } else {
            reply
        }
    });
}

/// An API that wants an issued bearer token, and answers 401 to 3 % of the
/// requests (a revoked token: the client refreshes and sends once more)
/// and 503 to 2 %.
fn api_route(server: &Server, seed: u64, ledger: Arc<Mutex<AuthLedger>>) {
    let rng = shared_rng(seed);
    server.on("/api").handle(move |a: &Arrival| {
        let n = a
            .header("x-soak-n")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(usize::MAX - 1);
        let token_ok = a
            .header("authorization")
            .is_some_and(|v| v.starts_with("Bearer soak-tok-"));
        {
            let mut l = ledger.lock().unwrap();
            bump(&mut l.per_call, n);
            if !token_ok {
                l.bad_token += 1;
            }
        }
        match rng.lock().unwrap().percent() {
            0..=2 => {
                Reply::status(401).header("www-authenticate", r#"Bearer error="invalid_token""#)
            }
            3..=4 => Reply::status(503),
            _ => Reply::json(r#"{"me":"soak"}"#),
        }
    });
}

fn main() {
    let args = args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let failed = rt.block_on(soak(args));
    drop(rt);
    std::process::exit(i32::from(failed));
}

#[allow(clippy::too_many_lines)]
async fn soak(args: Args) -> bool {
    let faults = Server::start().await;
    let storms = Server::start().await;
    let payments = Server::start().await;
    let api = Server::start().await;
    let idp = Server::start().await;
    for s in [&faults, &storms, &payments, &api, &idp] {
        // The arrival log would grow for ever; the routes keep their own
        // (bounded) accounts.
        s.record_arrivals(false);
    }
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    faults_route(&faults, args.seed);
    storms_route(&storms, args.seed.wrapping_add(1));
    payments_route(&payments, args.seed.wrapping_add(2), Arc::clone(&ledger));
    let auth_ledger = Arc::new(Mutex::new(AuthLedger::default()));
    token_route(&idp, args.seed.wrapping_add(3), Arc::clone(&auth_ledger));
    api_route(&api, args.seed.wrapping_add(4), Arc::clone(&auth_ledger));
    let urls = Arc::new(Urls {
        get: faults.url("/get"),
        storm: storms.url("/storm"),
        pay: payments.url("/pay"),
        api: api.url("/api"),
    });

    let policy = RetryPolicy::builder()
        .max_attempts(ATTEMPTS)
        .base_delay(Duration::from_millis(20))
        .max_delay(Duration::from_millis(200))
        .idempotency(IdempotencyRules::new().trust_idempotency_key(true))
        .classify(parapet::retry_classifier)
        .build()
        .unwrap();
    let builder = Client::builder()
        .deadline(DEADLINE)
        .attempt_timeout(ATTEMPT)
        .connect_timeout(ATTEMPT)
        .retry(policy);
    // The token endpoint is reached through a client without auth.
    let token_client = Client::builder()
        .deadline(DEADLINE)
        .attempt_timeout(ATTEMPT)
        .retry_off()
        .build()
        .unwrap();
    let endpoint =
        TokenEndpoint::new::<_, Full<Bytes>, _>(token_client, &idp.url("/token")).unwrap();
    let grant = ClientCredentialsGrant::new(endpoint, "soak", "soak-secret").unwrap();
    let cache = TokenCache::builder(grant)
        .fetch_timeout(Duration::from_secs(1))
        .backoff(Duration::from_millis(20), Duration::from_millis(200))
        .build();
    let clients = Arc::new(Clients {
        plain: builder.clone().build().unwrap(),
        authed: builder.auth(AuthLayer::token_cache(cache)).build().unwrap(),
    });

    println!(
        "soak: {:?} at concurrency {}, seed {:#x}; deadline {DEADLINE:?}, attempt timeout {ATTEMPT:?}, {ATTEMPTS} attempts",
        args.run_for, args.concurrency, args.seed
    );
    let counters = Arc::new(Counters::default());
    // One numbering per kind of call, so that each ledger holds one byte
    // per call of its kind.
    let next_n: Arc<[AtomicU64; 5]> = Arc::new(Default::default());
    let start = Instant::now();
    let end = start + args.run_for;

    let mut workers = Vec::new();
    for w in 0..args.concurrency {
        let clients = Arc::clone(&clients);
        let urls = Arc::clone(&urls);
        let counters = Arc::clone(&counters);
        let next_n = Arc::clone(&next_n);
        let mut rng = Rng::new((args.seed ^ (w as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1);
        workers.push(tokio::spawn(async move {
            while Instant::now() < end {
                let op = match rng.percent() {
                    0..=39 => Op::Get,
                    40..=54 => Op::Storm,
                    55..=71 => Op::PostKeyed,
                    72..=84 => Op::PostUnkeyed,
                    _ => Op::Authed,
                };
                let n = next_n[op as usize].fetch_add(1, Ordering::Relaxed);
                one_call(&clients, &urls, op, n, &counters).await;
            }
        }));
    }

    let mut samples: Vec<(u64, u64)> = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    let mut last_calls = 0;
    loop {
        tick.tick().await;
        let t = start.elapsed().as_secs();
        let rss = rss_kib();
        samples.push((t, rss));
        let calls = counters.calls.load(Ordering::Relaxed);
        println!(
            "t={t:>4}s rss={rss:>7} KiB calls={calls:>8} (+{:>6}) ok={} over_deadline={}",
            calls - last_calls,
            counters.ok.load(Ordering::Relaxed),
            counters.over_deadline.load(Ordering::Relaxed),
        );
        last_calls = calls;
        if Instant::now() >= end {
            break;
        }
    }
    for w in workers {
        w.await.unwrap();
    }
    let elapsed = start.elapsed();
    let rss_end = rss_kib();
    samples.push((elapsed.as_secs(), rss_end));

    // Let the servers notice the last abandoned connections, then read the
    // ledger.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (unkeyed_posts, unkeyed_dup, keyed_posts, keyed_over, mismatched, max_key_arrivals) = {
        let l = ledger.lock().unwrap();
        let dist = |v: &[u8]| {
            let mut m: BTreeMap<u8, u64> = BTreeMap::new();
            for &c in v.iter().filter(|&&c| c > 0) {
                *m.entry(c).or_default() += 1;
            }
            m
        };
        let u = dist(&l.unkeyed);
        let k = dist(&l.keyed);
        (
            u.values().sum::<u64>(),
            u.iter()
                .filter(|(c, _)| **c > 1)
                .map(|(_, n)| n)
                .sum::<u64>(),
            k.values().sum::<u64>(),
            k.iter()
                .filter(|(c, _)| u32::from(**c) > ATTEMPTS)
                .map(|(_, n)| n)
                .sum::<u64>(),
            l.mismatched,
            k.keys().max().copied().unwrap_or(0),
        )
    };

    let (api_calls, api_over, bad_token, issued, api_most) = {
        let l = auth_ledger.lock().unwrap();
        let seen: Vec<u8> = l.per_call.iter().copied().filter(|&c| c > 0).collect();
        (
            seen.len() as u64,
            seen.iter()
                .filter(|&&c| u32::from(c) > 2 * ATTEMPTS)
                .count() as u64,
            l.bad_token,
            l.issued,
            seen.iter().copied().max().unwrap_or(0),
        )
    };

    // Memory: compare the end with the first sample after a minute of
    // warm-up (pools, buffers and allocator arenas fill up first), or half
    // the run for runs shorter than two minutes.
    let warm_up = 60.min(args.run_for.as_secs() / 2);
    let warm = samples
        .iter()
        .find(|(t, _)| *t >= warm_up)
        .or(samples.first())
        .map_or(0, |s| s.1);
    let peak_after_warm = samples
        .iter()
        .filter(|(t, _)| *t >= warm_up)
        .map(|s| s.1)
        .max()
        .unwrap_or(rss_end);
    let growth = i64::try_from(rss_end).unwrap_or(0) - i64::try_from(warm).unwrap_or(0);
    // The ledger's own growth (one byte per POST) is not a leak.
    // The ledgers' own memory (a byte per call of their kind, in vectors
    // that double) is not a leak.
    let ledger_kib = {
        let l = ledger.lock().unwrap();
        let a = auth_ledger.lock().unwrap();
        (l.unkeyed.capacity() + l.keyed.capacity() + a.per_call.capacity()) as u64 / 1024 + 1
    };
    let flat = growth <= i64::try_from(warm / 10 + 8 * 1024 + ledger_kib).unwrap_or(i64::MAX);

    let c = &counters;
    let calls = c.calls.load(Ordering::Relaxed);
    let over = c.over_deadline.load(Ordering::Relaxed);
    println!("\n== soak summary ==");
    println!(
        "ran {elapsed:?}, {calls} calls ({:.0}/s), seed {:#x}, concurrency {}",
        calls as f64 / elapsed.as_secs_f64(),
        args.seed,
        args.concurrency
    );
    println!(
        "outcomes: ok {}, status error {}, rate limited {}, timeout {}, body error {}, other {}",
        c.ok.load(Ordering::Relaxed),
        c.status_err.load(Ordering::Relaxed),
        c.rate_limited.load(Ordering::Relaxed),
        c.timeout.load(Ordering::Relaxed),
        c.body.load(Ordering::Relaxed),
        c.other.load(Ordering::Relaxed),
    );
    println!(
        "server requests: faults {}, storms {}, payments {}, api {}, token endpoint {}; connections {}",
        faults.requests(),
        storms.requests(),
        payments.requests(),
        api.requests(),
        idp.requests(),
        faults.connections()
            + storms.connections()
            + payments.connections()
            + api.connections()
            + idp.connections()
    );
    println!(
        "deadline {DEADLINE:?}: longest call {:.1} ms, most past the deadline {:.1} ms, calls past deadline + {SLACK:?}: {over}",
        c.max_call_us.load(Ordering::Relaxed) as f64 / 1000.0,
        c.max_over_us.load(Ordering::Relaxed) as f64 / 1000.0,
    );
    println!(
        "POSTs without a key: {unkeyed_posts} arrived, {unkeyed_dup} more than once; with a key: {keyed_posts} keys arrived, most arrivals of one key {max_key_arrivals}, over {ATTEMPTS}: {keyed_over}, body/key mismatches {mismatched}"
    );
    println!(
        "auth: {api_calls} calls reached the API, most arrivals of one call {api_most}, over {}: {api_over}; arrivals without an issued token: {bad_token}; {issued} tokens issued (5 s each)",
        2 * ATTEMPTS
    );
    println!(
        "memory (VmRSS): {} KiB at {}s, {warm} KiB after warm-up, {rss_end} KiB at the end, peak after warm-up {peak_after_warm} KiB, growth {growth} KiB, of which at most {ledger_kib} KiB is the ledgers ({})",
        samples.first().map_or(0, |s| s.1),
        samples.first().map_or(0, |s| s.0),
        if flat { "flat" } else { "GROWING" }
    );
    let failed = over > 0
        || unkeyed_dup > 0
        || keyed_over > 0
        || mismatched > 0
        || api_over > 0
        || bad_token > 0
        || !flat;
    println!("verdict: {}", if failed { "FAIL" } else { "pass" });
    failed
}
