//! Loopback throughput: four clients against one hyper server in its own
//! process.
//!
//! - the server (`bench-server`, a sibling binary) runs on core 0
//!   (`taskset -c 0`), this client process on core 1 (`taskset -a -p`), when
//!   `taskset` exists; the client runtime is tokio's current-thread one;
//! - clients: bare hyper-util (legacy client, `TCP_NODELAY` on like the
//!   others), parapet's default layers hand-assembled over that same
//!   hyper-util client (a `tower::Service` called with a prebuilt
//!   `http::Request`), parapet's default client (`parapet::Client::new()`,
//!   `get(url).send()` then `bytes()`), reqwest
//!   (default features off: plain HTTP/1.1), and reqwest wrapped in
//!   reqwest-middleware with reqwest-tracing and reqwest-retry;
//! - concurrency 1 and 64; after a warm-up per client, `--runs` interleaved
//!   runs (A B C D E A B C D E ...) of `--secs` seconds each;
//! - reported: requests/s (median, min, max), the ratio to bare hyper-util
//!   taken run by run, the median latency at concurrency 1, and the CPU time
//!   each process used (to see which side was the bottleneck).
//!
//! `loopback [--runs N] [--secs S] [--warmup S] [--only hyper|stack|parapet|reqwest|middleware] [--concurrency N]`
//! (the last two run one client or one concurrency, for profiling).

#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use parapet_bench::arg;
use tokio::time::Instant;
use tower::ServiceExt;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Hyper,
    Stack,
    Parapet,
    Reqwest,
    ReqwestMw,
}

const KINDS: [Kind; 5] = [
    Kind::Hyper,
    Kind::Stack,
    Kind::Parapet,
    Kind::Reqwest,
    Kind::ReqwestMw,
];

impl Kind {
    fn key(self) -> &'static str {
        match self {
            Kind::Hyper => "hyper",
            Kind::Stack => "stack",
            Kind::Parapet => "parapet",
            Kind::Reqwest => "reqwest",
            Kind::ReqwestMw => "middleware",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Hyper => "bare hyper-util",
            Kind::Stack => "parapet layers, hand-built, over hyper-util",
            Kind::Parapet => "parapet default client",
            Kind::Reqwest => "reqwest",
            Kind::ReqwestMw => "reqwest + middleware + retry + tracing",
        }
    }
}

struct Clients {
    uri: Uri,
    url: String,
    hyper: HyperClient<HttpConnector, Empty<Bytes>>,
    stack: parapet_bench::DefaultStack<HyperClient<HttpConnector, parapet_core::ReplayBody>>,
    parapet: parapet::Client,
    reqwest: reqwest::Client,
    mw: reqwest_middleware::ClientWithMiddleware,
}

impl Clients {
    fn new(addr: &str) -> Self {
        let url = format!("http://{addr}/hello");
        let uri: Uri = url.parse().expect("uri");
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        let hyper = HyperClient::builder(TokioExecutor::new()).build(http.clone());
        let stack =
            parapet_bench::default_stack(HyperClient::builder(TokioExecutor::new()).build(http));
        let parapet = parapet::Client::new().expect("parapet client");
        let reqwest = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("reqwest client");
        let inner = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("reqwest client");
        let policy =
            reqwest_retry::policies::ExponentialBackoff::builder().build_with_max_retries(2);
        let mw = reqwest_middleware::ClientBuilder::new(inner)
            .with(reqwest_tracing::TracingMiddleware::default())
            .with(reqwest_retry::RetryTransientMiddleware::new_with_policy(
                policy,
            ))
            .build();
        Self {
            uri,
            url,
            hyper,
            stack,
            parapet,
            reqwest,
            mw,
        }
    }

    /// One request, its body read to the end. Returns the body length.
    async fn one(&self, kind: Kind) -> usize {
        match kind {
            Kind::Hyper => {
                let mut req = Request::new(Empty::new());
                *req.uri_mut() = self.uri.clone();
                let res = self.hyper.request(req).await.expect("hyper request");
                res.into_body()
                    .collect()
                    .await
                    .expect("hyper body")
                    .to_bytes()
                    .len()
            }
            Kind::Stack => {
                let mut req = Request::new(Empty::<Bytes>::new());
                *req.uri_mut() = self.uri.clone();
                let res = self
                    .stack
                    .clone()
                    .oneshot(req)
                    .await
                    .expect("stack request");
                res.into_body()
                    .collect()
                    .await
                    .expect("stack body")
                    .to_bytes()
                    .len()
            }
            Kind::Parapet => {
                let res = self
                    .parapet
                    .get(&self.url)
                    .send()
                    .await
                    .expect("parapet send");
                res.bytes().await.expect("parapet body").len()
            }
            Kind::Reqwest => {
                let res = self
                    .reqwest
                    .get(&self.url)
                    .send()
                    .await
                    .expect("reqwest send");
                res.bytes().await.expect("reqwest body").len()
            }
            Kind::ReqwestMw => {
                let res = self
                    .mw
                    .get(&self.url)
                    .send()
                    .await
                    .expect("middleware send");
                res.bytes().await.expect("middleware body").len()
            }
        }
    }
}

/// CPU time (user + system) of a process so far, from `/proc/<pid>/stat`.
fn cpu_time(pid: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which is in parentheses).
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line; here 12 and 13.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // USER_HZ is 100 on every Linux this runs on.
    Some(Duration::from_millis((utime + stime) * 10))
}

struct Run {
    rps: f64,
    /// Median and 99th percentile latency in µs, at concurrency 1.
    latency: Option<(f64, f64)>,
    client_cpu: f64,
    server_cpu: f64,
    /// Connections the server accepted during the run.
    new_connections: u64,
}

/// Connections the server has accepted so far (`GET /stats` on a
/// connection of its own, which counts too).
fn accepted(addr: &str) -> u64 {
    let mut s = std::net::TcpStream::connect(addr).expect("stats connection");
    write!(
        s,
        "GET /stats HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n"
    )
    .expect("stats request");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("stats response");
    let body = text.rsplit("\r\n\r\n").next().unwrap_or("");
    body.trim().parse::<u64>().expect("stats number") - 1
}

async fn run(
    clients: &Arc<Clients>,
    kind: Kind,
    concurrency: usize,
    secs: f64,
    server_pid: &str,
    addr: &str,
) -> Run {
    let conns0 = accepted(addr);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let record = concurrency == 1;
    let cpu0 = (cpu_time("self"), cpu_time(server_pid));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let (clients, stop, done) = (clients.clone(), stop.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            if record {
                lat.reserve(200_000);
            }
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let n = clients.one(kind).await;
                assert_eq!(n, 13, "unexpected body");
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                done.fetch_add(1, Ordering::Relaxed);
                if record {
                    lat.push(t.elapsed());
                }
            }
            lat
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    let cpu1 = (cpu_time("self"), cpu_time(server_pid));
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.expect("task"));
    }
    #[allow(clippy::cast_precision_loss)]
    let rps = done.load(Ordering::Relaxed) as f64 / elapsed;
    let latency = (!lat.is_empty()).then(|| {
        lat.sort_unstable();
        let at = |q: f64| {
            #[allow(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                clippy::cast_precision_loss
            )]
            let i = ((lat.len() - 1) as f64 * q).round() as usize;
            lat[i].as_secs_f64() * 1e6
        };
        (at(0.5), at(0.99))
    });
    let share = |a: Option<Duration>, b: Option<Duration>| match (a, b) {
        (Some(a), Some(b)) => (b - a).as_secs_f64() / elapsed * 100.0,
        _ => f64::NAN,
    };
    let new_connections = accepted(addr) - conns0 - 1;
    Run {
        new_connections,
        rps,
        latency,
        client_cpu: share(cpu0.0, cpu1.0),
        server_cpu: share(cpu0.1, cpu1.1),
    }
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}

fn has_taskset() -> bool {
    Command::new("taskset")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn start_server(pin: bool) -> (Child, String) {
    let exe = std::env::current_exe().expect("current exe");
    let server = exe.with_file_name("bench-server");
    let mut cmd = if pin {
        let mut c = Command::new("taskset");
        c.arg("-c").arg("0").arg(&server);
        c
    } else {
        Command::new(&server)
    };
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start bench-server (build it with the same profile)");
    let stdout = child.stdout.take().expect("server stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("server address");
    let addr = line
        .trim()
        .strip_prefix("ADDR ")
        .expect("ADDR line")
        .to_owned();
    (child, addr)
}

fn main() {
    let runs = arg("--runs", 5.0).max(1.0) as usize;
    let secs = arg("--secs", 3.0);
    let warmup = arg("--warmup", 1.0);
    let args: Vec<String> = std::env::args().collect();
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let kinds: Vec<Kind> = KINDS
        .into_iter()
        .filter(|k| only.as_deref().is_none_or(|o| k.key() == o))
        .collect();
    let concurrencies: Vec<usize> = match args.iter().position(|a| a == "--concurrency") {
        Some(i) => vec![
            args.get(i + 1)
                .and_then(|v| v.parse().ok())
                .expect("--concurrency N"),
        ],
        None => vec![1, 64],
    };
    let pin = has_taskset();
    if pin {
        // Pin every thread of this process (and those it starts later) to core 1.
        let me = std::process::id().to_string();
        let ok = Command::new("taskset")
            .args(["-a", "-cp", "1", &me])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "taskset -a -cp 1 failed");
    }
    let (mut server, addr) = start_server(pin);
    let server_pid = server.id().to_string();
    eprintln!(
        "server {addr} (pid {server_pid}), pinned: {}; {runs} runs of {secs} s after {warmup} s warm-up",
        if pin {
            "server core 0, client core 1"
        } else {
            "no (taskset missing)"
        }
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let results = rt.block_on(async {
        let clients = Arc::new(Clients::new(&addr));
        let mut results = Vec::new();
        for concurrency in concurrencies.iter().copied() {
            for kind in KINDS {
                if !kinds.contains(&kind) {
                    continue;
                }
                let _ = run(&clients, kind, concurrency, warmup, &server_pid, &addr).await;
            }
            let mut per_kind: Vec<Vec<Run>> = (0..KINDS.len()).map(|_| Vec::new()).collect();
            for r in 0..runs {
                for (k, kind) in KINDS.iter().enumerate() {
                    if !kinds.contains(kind) {
                        continue;
                    }
                    let one = run(&clients, *kind, concurrency, secs, &server_pid, &addr).await;
                    eprintln!(
                        "c={concurrency:<2} run {r} {:<44} {:>9.0} req/s  client cpu {:>5.1}%  server cpu {:>5.1}%  new conns {:>4}{}",
                        kind.name(),
                        one.rps,
                        one.client_cpu,
                        one.server_cpu,
                        one.new_connections,
                        one.latency
                            .map(|(m, p)| format!("  median {m:.1} µs  p99 {p:.1} µs"))
                            .unwrap_or_default()
                    );
                    per_kind[k].push(one);
                }
            }
            results.push((concurrency, per_kind));
        }
        results
    });
    drop(server.stdin.take());
    let _ = server.kill();
    let _ = server.wait();

    println!(
        "Server: hyper 1 HTTP/1.1, one current-thread runtime{}; client: one current-thread runtime{}. {runs} interleaved runs of {secs} s per client and concurrency, after a {warmup} s warm-up each.\n",
        if pin { ", pinned to core 0" } else { "" },
        if pin { ", pinned to core 1" } else { "" },
    );
    if kinds.len() < KINDS.len() {
        return;
    }
    for (concurrency, per_kind) in &results {
        println!("**Concurrency {concurrency}**\n");
        if *concurrency == 1 {
            println!(
                "| client | req/s median | min | max | ratio to bare (median, min, max) | median latency µs (median of runs, min, max) | latency ratio to bare (median, min, max) | p99 µs (median) | client CPU % | server CPU % | new connections per run |"
            );
            println!("|---|---:|---:|---:|---|---|---|---:|---:|---:|---:|");
        } else {
            println!(
                "| client | req/s median | min | max | ratio to bare (median, min, max) | client CPU % | server CPU % | new connections per run |"
            );
            println!("|---|---:|---:|---:|---|---:|---:|---:|");
        }
        let bare = &per_kind[0];
        for (k, kind) in KINDS.iter().enumerate() {
            let runs = &per_kind[k];
            let rps: Vec<f64> = runs.iter().map(|r| r.rps).collect();
            let ratio: Vec<f64> = runs.iter().zip(bare).map(|(r, b)| r.rps / b.rps).collect();
            let ccpu: Vec<f64> = runs.iter().map(|r| r.client_cpu).collect();
            let scpu: Vec<f64> = runs.iter().map(|r| r.server_cpu).collect();
            #[allow(clippy::cast_precision_loss)]
            let conns: Vec<f64> = runs.iter().map(|r| r.new_connections as f64).collect();
            let head = format!(
                "| {} | {:.0} | {:.0} | {:.0} | {:.3} ({:.3} – {:.3})",
                kind.name(),
                median(&rps),
                min(&rps),
                max(&rps),
                median(&ratio),
                min(&ratio),
                max(&ratio)
            );
            if *concurrency == 1 {
                let lat: Vec<f64> = runs.iter().filter_map(|r| r.latency.map(|l| l.0)).collect();
                let p99: Vec<f64> = runs.iter().filter_map(|r| r.latency.map(|l| l.1)).collect();
                let lratio: Vec<f64> = runs
                    .iter()
                    .zip(bare)
                    .filter_map(|(r, b)| Some(r.latency?.0 / b.latency?.0))
                    .collect();
                println!(
                    "{head} | {:.1} ({:.1} – {:.1}) | {:.3} ({:.3} – {:.3}) | {:.1} | {:.0} | {:.0} | {:.0} |",
                    median(&lat),
                    min(&lat),
                    max(&lat),
                    median(&lratio),
                    min(&lratio),
                    max(&lratio),
                    median(&p99),
                    median(&ccpu),
                    median(&scpu),
                    median(&conns)
                );
            } else {
                println!(
                    "{head} | {:.0} | {:.0} | {:.0} |",
                    median(&ccpu),
                    median(&scpu),
                    median(&conns)
                );
            }
        }
        println!();
    }
}
