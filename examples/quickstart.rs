//! parapet in one screen: an embedded API that fails the way real ones do
//! (503s, a 429 with `Retry-After`, tokens that expire and get revoked) and
//! a client that gets through all of it, with an account of every attempt,
//! wait and token refresh.
//!
//! Run it with `cargo run --example quickstart`. Everything runs on
//! loopback; nothing leaves the machine.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use parapet::auth::{AuthLayer, ClientCredentialsGrant, TokenCache};
use parapet::{Client, Error};
use parapet_testkit::{Arrival, Reply, Server};
use serde::Deserialize;
use tokio::time::Instant;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;

/// The tokens the embedded API has issued, and when each expires.
#[derive(Default)]
struct Tokens {
    issued: u32,
    valid: HashMap<String, Instant>,
}

#[derive(Deserialize)]
struct Order {
    id: u32,
    total: String,
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    // An account of what the layers do: parapet's own events at DEBUG,
    // printed one short line each.
    let account = Account.with_filter(tracing_subscriber::filter::filter_fn(|m| {
        m.target().starts_with("parapet") && *m.level() <= tracing::Level::DEBUG
    }));
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(account))
        .expect("a subscriber");

    let api = Server::start().await;
    let tokens = Arc::new(Mutex::new(Tokens::default()));
    script_the_api(&api, &tokens);

    // The token endpoint is reached by a plain client (no auth layer on it).
    let plain = Client::builder().base_url(api.url("/")).build().unwrap();
    let grant =
        ClientCredentialsGrant::new(plain.token_endpoint("/oauth/token")?, "shop", "shop-secret")
            .unwrap()
            .scope("orders");
    let client = Client::builder()
        .base_url(api.url("/v1"))
        .auth(AuthLayer::token_cache(TokenCache::new(grant)))
        .deadline(Duration::from_secs(10))
        .build()
        .unwrap();

    step("1. GET /v1/orders: the API answers 503, 503, then 200");
    let orders: Vec<Order> = client
        .get("orders")
        .send()
        .await?
        .error_for_status()
        .await?
        .json()
        .await?;
    let list: Vec<String> = orders
        .iter()
        .map(|o| format!("#{} ({})", o.id, o.total))
        .collect();
    println!("   got {} orders: {}", orders.len(), list.join(", "));

    step("2. GET /v1/report: the API says 429, Retry-After: 1");
    let started = Instant::now();
    let report = client
        .get("report")
        .send()
        .await?
        .error_for_status()
        .await?
        .text()
        .await?;
    println!(
        "   got {report:?} after {:.1} s (the server asked for 1 s)",
        started.elapsed().as_secs_f64()
    );

    step("3. Wait until the token has expired, then call again");
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let orders: Vec<Order> = client.get("orders").send().await?.json().await?;
    println!("   got {} orders with a fresh token", orders.len());

    step("4. The API revokes the token: a 401, one refresh, one replay");
    tokens.lock().unwrap().valid.clear();
    let orders: Vec<Order> = client.get("orders").send().await?.json().await?;
    println!("   got {} orders after re-authenticating", orders.len());

    step("5. POST /v1/orders with an Idempotency-Key: 503 once, then 201");
    let created = client
        .post("orders")
        .json(&serde_json::json!({"total": "12.50"}))
        .idempotency_key()
        .send()
        .await?
        .error_for_status()
        .await?;
    println!("   created: {}", created.status());

    step("6. A POST without a key is never sent twice: its 503 comes back");
    let err = client
        .post("refunds")
        .json(&serde_json::json!({"order": 1}))
        .send()
        .await?
        .error_for_status()
        .await
        .unwrap_err();
    println!("   error: {err}");
    // A 503 is the kind of failure that may pass later (is_retryable), but
    // this call was not retried: the message says why, attempts() how often.
    println!(
        "   sent {} time(s); is_retryable: {} (a 503 may pass later: add .idempotency_key() \
         to let the client retry it)",
        err.attempts().unwrap_or(1),
        err.is_retryable()
    );

    step("What the API saw");
    for a in api.arrivals() {
        println!("   {}", describe(&a));
    }
    Ok(())
}

fn step(title: &str) {
    println!("\n== {title}");
}

fn describe(a: &Arrival) -> String {
    let auth = match a.header("authorization") {
        Some(v) if v.starts_with("Bearer ") => "bearer token",
        Some(v) if v.starts_with("Basic ") => "client credentials",
        _ => "no credentials",
    };
    let key = a
        .header("idempotency-key")
        .map_or(String::new(), |k| format!(", key {}", &k[..8]));
    let id = a.header("x-request-id").map_or("-", |id| &id[24..]);
    format!(
        "{:<5} {:<14} conn {:<2} id …{id}  {auth}{key}",
        a.method.as_str(),
        a.path,
        a.connection
    )
}

fn script_the_api(api: &Server, tokens: &Arc<Mutex<Tokens>>) {
    let t = Arc::clone(tokens);
    api.on("/oauth/token").handle(move |a| {
        if !a
            .header("authorization")
            .is_some_and(|v| v.starts_with("Basic "))
        {
            return Reply::status(401).body(r#"{"error":"invalid_client"}"#);
        }
        let mut t = t.lock().unwrap();
        t.issued += 1;
        let token = format!("tok-{}", t.issued);
        t.valid
            .insert(token.clone(), Instant::now() + Duration::from_secs(2));
        Reply::json(format!(
            r#"{{"access_token":"{token}","token_type":"Bearer","expires_in":2}}"#
        ))
    });

    let guard = |tokens: &Arc<Mutex<Tokens>>, a: &Arrival| -> Option<Reply> {
        let bearer = a
            .header("authorization")?
            .strip_prefix("Bearer ")?
            .to_owned();
        let t = tokens.lock().unwrap();
        match t.valid.get(&bearer) {
            Some(expiry) if *expiry > Instant::now() => None,
            _ => Some(
                Reply::status(401).header("www-authenticate", r#"Bearer error="invalid_token""#),
            ),
        }
    };

    let (t, gets, posts) = (
        Arc::clone(tokens),
        Arc::new(Mutex::new(0u32)),
        Arc::new(Mutex::new(0u32)),
    );
    api.on("/v1/orders").handle(move |a| {
        if a.header("authorization").is_none() {
            return Reply::status(401);
        }
        if let Some(denied) = guard(&t, a) {
            return denied;
        }
        let counter = if a.method == http::Method::POST {
            &posts
        } else {
            &gets
        };
        let mut n = counter.lock().unwrap();
        *n += 1;
        match (a.method.as_str(), *n) {
            ("GET", 1 | 2) | ("POST", 1) => Reply::status(503),
            ("POST", _) => Reply::status(201).body(r#"{"id":3}"#),
            _ => Reply::json(r#"[{"id":1,"total":"9.99"},{"id":2,"total":"25.00"}]"#),
        }
    });
    api.on("/v1/report").replies([
        Reply::status(429).header("retry-after", "1"),
        Reply::ok().body("monthly report"),
    ]);
    api.on("/v1/refunds").reply(Reply::status(503));
}

/// Prints each event as one short line: the request it belongs to (method
/// and path, from the innermost parapet span around it), its message and
/// the few fields that tell the story (attempt, delay and where it came
/// from, status).
struct Account;

/// The request a span is about, kept in the span's extensions.
struct SpanRequest {
    method: String,
    path: String,
}

impl<S> Layer<S> for Account
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut fields = SpanFields::default();
        attrs.record(&mut fields);
        if let (Some(method), Some(path), Some(span)) = (fields.method, fields.path, ctx.span(id)) {
            span.extensions_mut().insert(SpanRequest { method, path });
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: tracing_subscriber::layer::Context<'_, S>) {
        let mut line = Line::default();
        event.record(&mut line);
        let request = ctx.event_scope(event).and_then(|scope| {
            scope.into_iter().find_map(|span| {
                span.extensions()
                    .get::<SpanRequest>()
                    .map(|r| format!("{} {}", r.method, r.path))
            })
        });
        // Outside any request (the token cache's own work): the crate.
        let request = request.unwrap_or_else(|| {
            let target = event.metadata().target();
            target.split("::").next().unwrap_or(target).to_owned()
        });
        println!("   · [{request}] {}{}", line.message, line.fields);
    }
}

/// The method and the path of a parapet span (`http.request.method`,
/// `url.full`).
#[derive(Default)]
struct SpanFields {
    method: Option<String>,
    path: Option<String>,
}

impl tracing::field::Visit for SpanFields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.record_str(field, &format!("{value:?}"));
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        match field.name() {
            "http.request.method" => self.method = Some(value.to_owned()),
            "url.full" => {
                let path = value
                    .parse::<http::Uri>()
                    .map_or_else(|_| value.to_owned(), |u| u.path().to_owned());
                self.path = Some(path);
            }
            _ => {}
        }
    }
}

#[derive(Default)]
struct Line {
    message: String,
    fields: String,
}

impl tracing::field::Visit for Line {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            "attempt"
            | "reason"
            | "delay_ms"
            | "delay_source"
            | "http.response.status_code"
            | "attempts"
            | "generation" => {
                let name = field.name().trim_start_matches("http.response.");
                self.fields.push_str(&format!("  {name}={value:?}"));
            }
            _ => {}
        }
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_owned();
        } else {
            self.record_debug(field, &value);
        }
    }
}
