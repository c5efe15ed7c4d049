//! Every helpdesk operation through the platform, including the ways it must refuse.

use keel_tests::TestServer;
use reqwest::Method;
use serde_json::{Value, json};

async fn helpdesk() -> TestServer {
    TestServer::with_plugins(&["bundled/helpdesk"]).await
}

const T: &str = "/v1/plugins/helpdesk/tickets";

async fn file(s: &TestServer, title: &str, priority: &str) -> Value {
    s.post(T, json!({ "title": title, "priority": priority, "category": "hardware" })).await.expect(201).body
}

#[tokio::test]
async fn creating_a_ticket_numbers_it_and_starts_it_new() {
    let s = helpdesk().await;
    let reply =
        s.post(T, json!({ "title": "  Printer on fire ", "description": "smoke", "priority": "P1" })).await.expect(201);
    let t = &reply.body;
    assert_eq!(t["number"], 1);
    assert_eq!(t["title"], "Printer on fire", "titles are trimmed");
    assert_eq!(t["status"], "new");
    assert_eq!(t["priority"], "P1");
    assert_eq!(t["category"], "general", "category defaults");
    assert_eq!(t["version"], 1);
    assert!(t["created_at"].as_u64().unwrap() > 1_700_000_000_000, "timestamps are epoch milliseconds");
    assert_eq!(reply.headers["location"], "/tickets/1");
    assert_eq!(file(&s, "second", "P3").await["number"], 2);

    let got = s.get(&format!("{T}/1")).await.expect(200).body;
    assert_eq!(got["title"], "Printer on fire");
    assert_eq!(got["description"], "smoke");
}

/// How many calls of the helpdesk ran, by the host's metrics.
async fn calls_made(s: &TestServer) -> u64 {
    let metrics = s.metrics().await;
    metrics
        .lines()
        .filter(|l| l.starts_with(r#"keel_plugin_requests_total{plugin="helpdesk""#))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test]
async fn input_breaking_the_declared_schema_is_refused_before_the_plugin_runs() {
    let s = helpdesk().await;
    let before = calls_made(&s).await;
    s.raw(Method::POST, T, "{\"title\": ").await.expect_problem(400, "malformed-json");
    let array = s.raw(Method::POST, T, "[]").await.expect_problem(422, "invalid-field");
    assert_eq!(array.body["errors"][0]["message"], "must be an object", "{}", array.body);
    let unknown = s.post(T, json!({ "title": "x", "severity": "high" })).await.expect_problem(422, "invalid-field");
    assert_eq!(unknown.body["field"], "severity", "the problem names the field: {}", unknown.body);
    let wrong = s.post(T, json!({ "title": 7 })).await.expect_problem(422, "invalid-field");
    assert_eq!(wrong.body["field"], "title", "{}", wrong.body);
    s.post(T, json!({ "title": "   " })).await.expect_problem(422, "invalid-field");
    s.post(T, json!({ "title": "x", "priority": "P9" })).await.expect_problem(422, "invalid-field");
    s.post(T, json!({ "title": "x".repeat(201) })).await.expect_problem(422, "invalid-field");
    // Every field at fault is named, each with where it is and why.
    let many =
        s.post(T, json!({ "title": "", "priority": "P9", "assignee": 3 })).await.expect_problem(422, "invalid-field");
    let errors: std::collections::BTreeSet<(&str, &str)> = many.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["in"].as_str().unwrap(), e["field"].as_str().unwrap()))
        .collect();
    assert_eq!(errors, [("body", "assignee"), ("body", "priority"), ("body", "title")].into(), "{}", many.body);
    let priority = many.body["errors"].as_array().unwrap().iter().find(|e| e["field"] == "priority").unwrap();
    assert_eq!(priority["message"], r#"must be one of "P1", "P2", "P3", "P4""#, "a nullable field says what it takes");
    let text = s.raw_with(Method::POST, T, "title=x", "application/x-www-form-urlencoded").await;
    text.expect_problem(415, "unsupported-media-type");
    let path = s.get(&format!("{T}/abc")).await.expect_problem(422, "invalid-field");
    assert_eq!(path.body["errors"][0]["in"], "path", "{}", path.body);
    s.get(&format!("{T}/0")).await.expect_problem(422, "invalid-field");
    s.get(&format!("{T}?status=done")).await.expect_problem(422, "invalid-field");
    let limit = s.get(&format!("{T}?limit=0")).await.expect_problem(422, "invalid-field");
    assert_eq!(limit.body["field"], "limit");
    s.get(&format!("{T}?limit=1&limit=2")).await.expect_problem(422, "invalid-field");
    s.patch(&format!("{T}/1"), json!({ "status": "open" })).await.expect_problem(422, "invalid-field");
    s.patch(&format!("{T}/1"), json!({ "version": 1 })).await.expect_problem(422, "invalid-field");
    assert_eq!(calls_made(&s).await, before, "no request above reached the plugin");

    // What passes the schema is the plugin's to judge.
    s.get(&format!("{T}/99")).await.expect_problem(404, "ticket-not-found");
    s.get(&format!("{T}?cursor=garbage")).await.expect_problem(422, "invalid");
    assert_eq!(calls_made(&s).await, before + 2);
    assert_eq!(s.get(T).await.expect(200).body["items"].as_array().unwrap().len(), 0, "nothing was filed");
}

#[tokio::test]
async fn unknown_routes_and_methods_are_told_apart() {
    let s = helpdesk().await;
    s.get("/v1/plugins/helpdesk/nope").await.expect_problem(404, "route-not-found");
    let reply = s.delete(&format!("{T}/1")).await.expect_problem(405, "method-not-allowed");
    assert_eq!(reply.headers["allow"], "GET, PATCH");
    s.get("/v1/plugins/payroll/runs").await.expect_problem(404, "plugin-not-found");
}

#[tokio::test]
async fn status_follows_the_workflow_and_refuses_other_moves() {
    let s = helpdesk().await;
    file(&s, "VPN down", "P2").await;
    let go = |to: &'static str| {
        let s = &s;
        async move { s.post(&format!("{T}/1/transition"), json!({ "to": to })).await }
    };
    go("closed").await.expect_problem(409, "invalid-transition");
    go("pending").await.expect_problem(409, "invalid-transition");
    for to in ["open", "pending", "open", "resolved", "open", "resolved", "closed"] {
        let t = go(to).await.expect(200).body;
        assert_eq!(t["status"], to);
    }
    for to in ["open", "pending", "resolved", "new"] {
        go(to).await.expect_problem(409, "invalid-transition");
    }
    go("archived").await.expect_problem(422, "invalid-field");
    assert_eq!(s.get(&format!("{T}/1")).await.expect(200).body["status"], "closed");
    s.patch(&format!("{T}/1"), json!({ "title": "reworded" })).await.expect_problem(409, "ticket-closed");
    s.post(&format!("{T}/1/comments"), json!({ "body": "late" })).await.expect_problem(409, "ticket-closed");
}

#[tokio::test]
async fn updates_check_the_version_the_client_saw() {
    let s = helpdesk().await;
    file(&s, "Laptop slow", "P3").await;
    let t =
        s.patch(&format!("{T}/1"), json!({ "priority": "P2", "assignee": "ana", "version": 1 })).await.expect(200).body;
    assert_eq!(
        (t["priority"].as_str(), t["assignee"].as_str(), t["version"].as_u64()),
        (Some("P2"), Some("ana"), Some(2))
    );
    // A second client still holding version 1 loses.
    let stale = s
        .patch(&format!("{T}/1"), json!({ "title": "stale edit", "version": 1 }))
        .await
        .expect_problem(409, "version-conflict");
    assert!(stale.body["detail"].as_str().unwrap().contains("version 2"));
    // If-Match works the same way, with the ETag a read gave.
    let read = s.get(&format!("{T}/1")).await.expect(200);
    assert_eq!(read.headers["etag"], "\"2\"");
    let patch = |if_match: &str| {
        s.http
            .patch(format!("{}{T}/1", s.base))
            .bearer_auth(&s.token)
            .header("if-match", if_match)
            .json(&json!({ "priority": "P1" }))
    };
    s.send(patch("\"1\"")).await.expect_problem(409, "version-conflict");
    s.send(patch("yesterday")).await.expect_problem(400, "invalid-if-match");
    let updated = s.send(patch("W/\"2\"")).await.expect(200);
    assert_eq!(updated.body["version"], 3);
    assert_eq!(updated.headers["etag"], "\"3\"");
    s.post(&format!("{T}/1/transition"), json!({ "to": "open", "version": 1 }))
        .await
        .expect_problem(409, "version-conflict");
    // Unassigning with null; status changes only through /transition.
    let t = s.patch(&format!("{T}/1"), json!({ "assignee": null })).await.expect(200).body;
    assert_eq!(t["assignee"], Value::Null);
    s.patch(&format!("{T}/1"), json!({ "status": "open" })).await.expect_problem(422, "invalid-field");
    s.patch(&format!("{T}/1"), json!({})).await.expect_problem(422, "invalid-field");
    let stored = s.get(&format!("{T}/1")).await.expect(200).body;
    assert_eq!((stored["title"].as_str(), stored["version"].as_u64()), (Some("Laptop slow"), Some(4)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_updates_from_one_version_let_exactly_one_win() {
    let s = helpdesk().await;
    file(&s, "Race", "P3").await;
    let attempts = (0..8).map(|i| {
        let s = &s;
        async move { s.patch(&format!("{T}/1"), json!({ "title": format!("edit {i}"), "version": 1 })).await }
    });
    let replies = futures::future::join_all(attempts).await;
    let won = replies.iter().filter(|r| r.status == 200).count();
    assert_eq!(
        won,
        1,
        "exactly one update from version 1 may win: {:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    for r in replies.iter().filter(|r| r.status != 200) {
        assert_eq!(r.status, 409);
        assert!(["version-conflict", "write-conflict"].contains(&r.code()), "{}", r.body);
    }
    assert_eq!(s.get(&format!("{T}/1")).await.expect(200).body["version"], 2);
}

#[tokio::test]
async fn lists_filter_and_page_newest_first_without_gaps_or_repeats() {
    let s = helpdesk().await;
    for (i, p) in ["P1", "P2", "P1", "P3", "P1"].iter().enumerate() {
        file(&s, &format!("t{}", i + 1), p).await;
    }
    s.patch(&format!("{T}/2"), json!({ "assignee": "ana" })).await.expect(200);
    s.patch(&format!("{T}/3"), json!({ "assignee": "ana" })).await.expect(200);
    s.post(&format!("{T}/3/transition"), json!({ "to": "open" })).await.expect(200);

    let numbers = |body: &Value| {
        body["items"].as_array().unwrap().iter().map(|t| t["number"].as_u64().unwrap()).collect::<Vec<_>>()
    };
    assert_eq!(numbers(&s.get(&format!("{T}?priority=P1")).await.expect(200).body), [5, 3, 1]);
    assert_eq!(numbers(&s.get(&format!("{T}?assignee=ana")).await.expect(200).body), [3, 2]);
    assert_eq!(numbers(&s.get(&format!("{T}?status=open")).await.expect(200).body), [3]);
    assert_eq!(numbers(&s.get(&format!("{T}?status=new&priority=P1")).await.expect(200).body), [5, 1]);

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            None => format!("{T}?limit=2"),
            Some(c) => format!("{T}?limit=2&cursor={c}"),
        };
        let body = s.get(&path).await.expect(200).body;
        seen.extend(numbers(&body));
        match body["next"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, [5, 4, 3, 2, 1]);
}

#[tokio::test]
async fn comments_are_numbered_attributed_and_listed_in_order() {
    let s = helpdesk().await;
    file(&s, "Mouse", "P4").await;
    for text in ["first", "second", "third"] {
        s.post(&format!("{T}/1/comments"), json!({ "body": text })).await.expect(201);
    }
    s.post(&format!("{T}/1/comments"), json!({ "body": "" })).await.expect_problem(422, "invalid-field");
    s.post(&format!("{T}/2/comments"), json!({ "body": "x" })).await.expect_problem(404, "ticket-not-found");
    let list = s.get(&format!("{T}/1/comments")).await.expect(200).body;
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.iter().map(|c| c["body"].as_str().unwrap()).collect::<Vec<_>>(), ["first", "second", "third"]);
    assert_eq!(items[2]["seq"], 3);
    assert!(items[0]["author"].as_str().unwrap().starts_with("tok_"), "author is the caller");
    let t = s.get(&format!("{T}/1")).await.expect(200).body;
    assert_eq!((t["comment_count"].as_u64(), t["version"].as_u64()), (Some(3), Some(4)));
    let page = s.get(&format!("{T}/1/comments?limit=2")).await.expect(200).body;
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    assert!(page["next"].is_string());
}

/// Ticket numbers come from a sequence: concurrent filings never conflict over a counter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_clients_file_200_tickets_without_a_conflict_and_with_200_distinct_numbers() {
    let s = TestServer::start_with(|c| c.limits.rate_limit_per_second = 0).await;
    s.install("bundled/helpdesk").await.expect(201);
    let s = &s;
    let clients = (0..8).map(|client| async move {
        let mut numbers = Vec::new();
        for i in 0..25 {
            let reply = s.post(T, json!({ "title": format!("client {client} ticket {i}") })).await;
            assert_eq!(reply.status, 201, "client {client} ticket {i}: {}", reply.body);
            numbers.push(reply.body["number"].as_u64().unwrap());
        }
        numbers
    });
    let mut numbers: Vec<u64> = futures::future::join_all(clients).await.into_iter().flatten().collect();
    numbers.sort();
    assert_eq!(numbers, (1..=200).collect::<Vec<u64>>());
    assert!(!s.metrics().await.contains(r#"outcome="conflict""#), "no call answered 409");
}

/// A plugin built against `keel:platform@0.1.0` (the helpdesk as it was released before
/// sequences, kept as an artifact) loads and runs on this host unchanged; upgrading it to the
/// sequence-based version carries its ticket numbering over.
#[tokio::test]
async fn a_plugin_built_for_platform_0_1_0_runs_unchanged_and_its_numbering_survives_the_upgrade() {
    let legacy = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/helpdesk-0.3.0-platform-0.1.0.wasm"),
    )
    .unwrap();
    let imports = |needle: &[u8]| legacy.windows(needle.len()).any(|w| w == needle);
    assert!(imports(b"keel:platform/storage@0.1.0") && !imports(b"sequences"), "test setup: not a 0.1.0 build");
    let s = TestServer::start().await;
    let installed = s.upload(legacy).await.expect(201).body;
    assert_eq!(installed["plugin"]["version"], "0.3.0");
    for n in 1..=3 {
        assert_eq!(file(&s, &format!("old {n}"), "P2").await["number"], n);
    }
    let upgraded = s.install("bundled/helpdesk").await.expect(201).body;
    assert_eq!(
        (upgraded["outcome"].as_str(), upgraded["plugin"]["version"].as_str()),
        (Some("upgraded"), Some(keel_tests::manifest_version("helpdesk").as_str()))
    );
    // The current release asks for more than 0.3.0 (sequences, jobs, ...): approved, then
    // its migration gives the old tickets their references.
    let upgrade = "/v1/tenants/default/plugins/helpdesk/upgrade";
    let asks = s.get(upgrade).await.expect(200).body["approval_required"].clone();
    assert!(asks.as_array().unwrap().contains(&json!("capability:sequences")), "{asks}");
    let moved = s.post(upgrade, json!({ "approve": asks })).await.expect(200).body;
    assert_eq!(moved["migration"]["documents"], 3, "{moved}");
    assert_eq!(s.get(&format!("{T}/2")).await.expect(200).body["reference"], "HD-000002");
    assert_eq!(file(&s, "new", "P2").await["number"], 4, "numbering goes on from the old counter");
    assert_eq!(file(&s, "newer", "P2").await["number"], 5);
    assert_eq!(s.get(&format!("{T}/1")).await.expect(200).body["title"], "old 1");
}

#[tokio::test]
async fn tickets_list_newest_first_oldest_first_or_by_priority_and_page_in_that_order() {
    let s = helpdesk().await;
    for (title, priority) in [("a", "P3"), ("b", "P1"), ("c", "P2"), ("d", "P1"), ("e", "P4")] {
        file(&s, title, priority).await;
    }
    let titles = |body: &Value| -> Vec<String> {
        body["items"].as_array().unwrap().iter().map(|t| t["title"].as_str().unwrap().to_owned()).collect()
    };
    assert_eq!(titles(&s.get(T).await.expect(200).body), ["e", "d", "c", "b", "a"], "newest first by default");
    assert_eq!(titles(&s.get(&format!("{T}?sort=newest")).await.expect(200).body), ["e", "d", "c", "b", "a"]);
    assert_eq!(titles(&s.get(&format!("{T}?sort=oldest")).await.expect(200).body), ["a", "b", "c", "d", "e"]);
    // By priority, P1 first; equal priorities in filing order; pages continue the order.
    let first = s.get(&format!("{T}?sort=priority&limit=3")).await.expect(200).body;
    assert_eq!(titles(&first), ["b", "d", "c"]);
    let cursor = first["next"].as_str().expect("a next page");
    let rest = s.get(&format!("{T}?sort=priority&limit=3&cursor={cursor}")).await.expect(200).body;
    assert_eq!(titles(&rest), ["a", "e"]);
    // With a filter too.
    let p1 = s.get(&format!("{T}?sort=oldest&priority=P1")).await.expect(200).body;
    assert_eq!(titles(&p1), ["b", "d"]);
    // Anything else is refused by the declared schema, naming the parameter.
    let refused = s.get(&format!("{T}?sort=title")).await.expect_problem(422, "invalid-field");
    assert_eq!(refused.body["field"], "sort");
}
