//! Pagination against loopback servers: each style, its stop rules, and the
//! safety nets (a loop, a page bound, a link to another origin).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use futures_util::{StreamExt, TryStreamExt};
use parapet::paginate::{Paginate, PaginationError};
use parapet::{Client, Error};
use parapet_testkit::{Arrival, Reply, Server};
use serde::Deserialize;

#[derive(Debug, Deserialize, PartialEq)]
struct Item {
    id: u32,
}

fn client(api: &Server) -> Client {
    Client::builder().base_url(api.url("/")).build().unwrap()
}

/// The value of query parameter `name` in an arrival.
fn param(arrival: &Arrival, name: &str) -> Option<String> {
    arrival.query.as_deref()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then(|| v.to_owned())
    })
}

fn pagination_error(err: &Error) -> &PaginationError {
    std::error::Error::source(err)
        .and_then(|s| s.downcast_ref::<PaginationError>())
        .unwrap_or_else(|| panic!("not a pagination error: {err}"))
}

fn ids(items: &[Item]) -> Vec<u32> {
    items.iter().map(|i| i.id).collect()
}

#[tokio::test]
async fn link_header_pages_follow_rel_next_resolved_against_the_page_url() {
    // Arrange: three pages; the links are relative, quoted and unquoted,
    // with other relations around them.
    let api = Server::start().await;
    api.on("/v1/repos")
        .handle(|a| {
            match param(a, "page").as_deref() {
        None => Reply::json(r#"[{"id":1},{"id":2}]"#).header(
            "link",
            r#"<repos?page=2&per_page=2>; rel="next", </v1/repos?page=3&per_page=2>; rel="last""#,
        ),
        Some("2") => Reply::json(r#"[{"id":3},{"id":4}]"#)
            .header("link", "</v1/repos?page=1&per_page=2>; rel=prev")
            .header("link", "<?page=3&per_page=2>; rel=\"last next\""),
        _ => Reply::json(r#"[{"id":5}]"#).header("link", "</v1/repos?page=1>; rel=first"),
    }
        });

    // Act
    let items: Vec<Item> = client(&api)
        .get("v1/repos")
        .paginate(Paginate::link_header().page_size("per_page", 2))
        .items("")
        .try_collect()
        .await
        .unwrap();

    // Assert
    assert_eq!(ids(&items), [1, 2, 3, 4, 5]);
    let queries: Vec<_> = api
        .arrivals_for("/v1/repos")
        .into_iter()
        .map(|a| a.query)
        .collect();
    assert_eq!(
        queries,
        [
            Some("per_page=2".to_owned()),
            Some("page=2&per_page=2".to_owned()),
            Some("page=3&per_page=2".to_owned())
        ]
    );
}

#[tokio::test]
async fn pages_carry_their_number_url_and_headers() {
    let api = Server::start().await;
    api.on("/list")
        .handle(|a| match param(a, "page").as_deref() {
            None => Reply::json(r#"{"n":1}"#)
                .header("link", "</list?page=2>; rel=next")
                .header("x-page", "1"),
            _ => Reply::json(r#"{"n":2}"#).header("x-page", "2"),
        });

    let pages: Vec<_> = client(&api)
        .get("list")
        .paginate(Paginate::link_header())
        .pages::<serde_json::Value>()
        .try_collect()
        .await
        .unwrap();

    assert_eq!(pages.len(), 2);
    assert_eq!(pages[1].number(), 2);
    assert_eq!(pages[1].url().query(), Some("page=2"));
    assert_eq!(pages[1].headers()["x-page"], "2");
    assert_eq!(pages[1].body()["n"], 2);
}

#[tokio::test]
async fn a_cursor_from_the_body_goes_into_the_query_until_it_is_null() {
    let api = Server::start().await;
    api.on("/events")
        .handle(|a| match param(a, "cursor").as_deref() {
            None => Reply::json(r#"{"data":[{"id":1}],"meta":{"next_cursor":"c/2+="}}"#),
            Some("c%2F2%2B%3D") => Reply::json(r#"{"data":[{"id":2}],"meta":{"next_cursor":7}}"#),
            Some("7") => Reply::json(r#"{"data":[{"id":3}],"meta":{"next_cursor":null}}"#),
            Some(other) => Reply::status(400).body(format!("unknown cursor {other}")),
        });

    let items: Vec<Item> = client(&api)
        .get("events?kind=push")
        .paginate(Paginate::cursor("/meta/next_cursor", "cursor").page_size("limit", 1))
        .items("/data")
        .try_collect()
        .await
        .unwrap();

    assert_eq!(ids(&items), [1, 2, 3]);
    let arrivals = api.arrivals_for("/events");
    assert_eq!(arrivals.len(), 3);
    assert!(
        arrivals
            .iter()
            .all(|a| param(a, "kind").as_deref() == Some("push"))
    );
    assert!(
        arrivals
            .iter()
            .all(|a| param(a, "limit").as_deref() == Some("1"))
    );
}

#[tokio::test]
async fn a_cursor_closure_with_has_more_false_stops() {
    // Stripe style: the cursor is the last item's id, `has_more` says when
    // to stop (the last page still has items, so its id would go on).
    let api = Server::start().await;
    api.on("/charges")
        .handle(|a| match param(a, "starting_after").as_deref() {
            None => Reply::json(r#"{"data":[{"id":1},{"id":2}],"has_more":true}"#),
            Some("2") => Reply::json(r#"{"data":[{"id":3}],"has_more":false}"#),
            Some(_) => Reply::status(500),
        });

    let how = Paginate::cursor_with("starting_after", |page| {
        page["data"].as_array()?.last()?["id"]
            .as_u64()
            .map(|id| id.to_string())
    })
    .has_more("/has_more");
    let items: Vec<Item> = client(&api)
        .get("charges")
        .paginate(how)
        .items("/data")
        .try_collect()
        .await
        .unwrap();

    assert_eq!(ids(&items), [1, 2, 3]);
    assert_eq!(api.hits("/charges"), 2);
}

#[tokio::test]
async fn page_numbers_stop_at_an_empty_page() {
    let api = Server::start().await;
    api.on("/users")
        .handle(|a| match param(a, "page").as_deref() {
            Some("1") => Reply::json(r#"[{"id":1},{"id":2}]"#),
            Some("2") => Reply::json(r#"[{"id":3}]"#),
            _ => Reply::json("[]"),
        });

    let items: Vec<Item> = client(&api)
        .get("users")
        .paginate(Paginate::page_number("page").page_size("per_page", 2))
        .items("")
        .try_collect()
        .await
        .unwrap();

    assert_eq!(ids(&items), [1, 2, 3]);
    let pages: Vec<_> = api
        .arrivals_for("/users")
        .iter()
        .map(|a| param(a, "page"))
        .collect();
    assert_eq!(
        pages,
        [Some("1".into()), Some("2".into()), Some("3".into())]
    );
    assert!(
        api.arrivals_for("/users")
            .iter()
            .all(|a| param(a, "per_page").as_deref() == Some("2"))
    );
}

#[tokio::test]
async fn offsets_advance_by_the_items_seen_and_stop_at_the_total() {
    let api = Server::start().await;
    api.on("/orders")
        .handle(|a| match param(a, "offset").as_deref() {
            Some("0") => Reply::json(r#"{"total":5,"results":[{"id":1},{"id":2}]}"#),
            Some("2") => Reply::json(r#"{"total":5,"results":[{"id":3},{"id":4}]}"#),
            Some("4") => Reply::json(r#"{"total":5,"results":[{"id":5}]}"#),
            _ => Reply::status(500),
        });

    let items: Vec<Item> = client(&api)
        .get("orders")
        .paginate(
            Paginate::offset("offset")
                .page_size("limit", 2)
                .total("/total"),
        )
        .items("/results")
        .try_collect()
        .await
        .unwrap();

    assert_eq!(ids(&items), [1, 2, 3, 4, 5]);
    // The total ended it: no fourth request for an empty page.
    assert_eq!(api.hits("/orders"), 3);
}

#[tokio::test]
async fn a_cursor_seen_twice_is_a_loop_error() {
    let api = Server::start().await;
    api.on("/feed")
        .handle(|a| match param(a, "cursor").as_deref() {
            None => Reply::json(r#"{"data":[{"id":1}],"next":"a"}"#),
            Some("a") => Reply::json(r#"{"data":[{"id":2}],"next":"b"}"#),
            _ => Reply::json(r#"{"data":[{"id":3}],"next":"a"}"#),
        });

    let mut items = client(&api)
        .get("feed")
        .paginate(Paginate::cursor("/next", "cursor"))
        .items::<Item>("/data");
    let mut got = Vec::new();
    let err = loop {
        match items.next().await {
            Some(Ok(item)) => got.push(item),
            Some(Err(e)) => break e,
            None => panic!("the loop was not detected"),
        }
    };

    assert_eq!(ids(&got), [1, 2, 3]);
    assert!(err.is_decode());
    let pe = pagination_error(&err);
    assert!(pe.is_loop(), "{err}");
    assert_eq!(pe.page(), 3);
    assert!(
        err.to_string()
            .contains("page 3 leads to a page already fetched"),
        "{err}"
    );
    assert!(
        items.next().await.is_none(),
        "the stream ends after its error"
    );
    assert_eq!(api.hits("/feed"), 3);
}

#[tokio::test]
async fn a_next_page_past_max_pages_is_an_error() {
    let api = Server::start().await;
    api.on("/n").handle(|a| {
        let page: u32 = param(a, "page").and_then(|p| p.parse().ok()).unwrap_or(0);
        Reply::json(format!(r#"[{{"id":{page}}}]"#))
    });

    let result: Result<Vec<Item>, Error> = client(&api)
        .get("n")
        .paginate(Paginate::page_number("page").max_pages(3))
        .items("")
        .try_collect()
        .await;

    let err = result.unwrap_err();
    let pe = pagination_error(&err);
    assert!(pe.is_too_many_pages());
    assert_eq!(pe.page(), 3);
    assert_eq!(api.hits("/n"), 3);
}

#[tokio::test]
async fn a_link_to_another_origin_is_not_followed() {
    let api = Server::start().await;
    let elsewhere = Server::start().await;
    let next = elsewhere.url("/steal?page=2");
    api.on("/p")
        .reply(Reply::json("[]").header("link", format!("<{next}>; rel=next")));

    let err = client(&api)
        .get("p")
        .header("authorization", "Bearer secret")
        .paginate(Paginate::link_header())
        .pages::<serde_json::Value>()
        .try_collect::<Vec<_>>()
        .await
        .unwrap_err();

    assert!(pagination_error(&err).is_cross_origin(), "{err}");
    assert!(
        !err.to_string().contains("steal"),
        "the URL is kept out of the message: {err}"
    );
    assert_eq!(elsewhere.requests(), 0);
}

#[tokio::test]
async fn an_item_that_does_not_decode_names_the_field() {
    let api = Server::start().await;
    api.on("/bad")
        .reply(Reply::json(r#"{"data":[{"id":1},{"id":"two"}]}"#));

    let err = client(&api)
        .get("bad")
        .paginate(Paginate::cursor("/next", "c"))
        .items::<Item>("/data")
        .try_collect::<Vec<_>>()
        .await
        .unwrap_err();

    assert!(err.is_decode());
    let json = std::error::Error::source(&err)
        .and_then(|s| s.downcast_ref::<parapet::JsonError>())
        .unwrap();
    assert_eq!(json.path(), "[1].id");
}

#[tokio::test]
async fn a_page_with_an_error_status_ends_the_stream_with_a_status_error() {
    let api = Server::start().await;
    api.on("/s").handle(|a| match param(a, "page").as_deref() {
        Some("1") => Reply::json(r#"[{"id":1}]"#),
        _ => Reply::status(404).body("no such page"),
    });

    let mut items = client(&api)
        .get("s")
        .paginate(Paginate::page_number("page"))
        .items::<Item>("");
    assert_eq!(items.next().await.unwrap().unwrap(), Item { id: 1 });
    let err = items.next().await.unwrap().unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(404));
    assert!(items.next().await.is_none());
}

#[tokio::test]
async fn each_page_is_retried_on_its_own() {
    // The second page fails once with a 503: its own retry brings it.
    let api = Server::start().await;
    api.on("/flaky").replies([
        Reply::json(r#"{"data":[{"id":1}],"next":"x"}"#),
        Reply::status(503),
        Reply::json(r#"{"data":[{"id":2}]}"#),
    ]);

    let items: Vec<Item> = client(&api)
        .get("flaky")
        .paginate(Paginate::cursor("/next", "cursor"))
        .items("/data")
        .try_collect()
        .await
        .unwrap();

    assert_eq!(ids(&items), [1, 2]);
    let arrivals = api.arrivals_for("/flaky");
    assert_eq!(arrivals.len(), 3);
    assert_eq!(param(&arrivals[2], "cursor").as_deref(), Some("x"));
}

#[tokio::test]
async fn dropping_the_stream_stops_fetching() {
    let api = Server::start().await;
    api.on("/d").handle(|a| {
        let page: u32 = param(a, "page").and_then(|p| p.parse().ok()).unwrap_or(0);
        Reply::json(format!(r#"[{{"id":{page}}}]"#))
    });

    let mut items = client(&api)
        .get("d")
        .paginate(Paginate::page_number("page"))
        .items::<Item>("");
    assert_eq!(items.next().await.unwrap().unwrap(), Item { id: 1 });
    drop(items);

    // No prefetch: the second page is asked for only when the stream is
    // polled for it, which it never was.
    assert_eq!(api.hits("/d"), 1);
}
