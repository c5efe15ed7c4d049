//! A misbehaving plugin costs only its own request, and never leaves partial writes.

use keel_tests::TestServer;
use serde_json::json;

const H: &str = "/v1/plugins/hostile";

async fn hostile() -> TestServer {
    TestServer::with_plugins(&["fixtures/hostile", "bundled/helpdesk"]).await
}

async fn still_serving(s: &TestServer) {
    s.get(&format!("{H}/noop")).await.expect(204);
    s.get("/v1/plugins/helpdesk/tickets").await.expect(200);
}

#[tokio::test]
async fn an_infinite_loop_is_stopped_at_its_deadline() {
    let s = hostile().await;
    let started = std::time::Instant::now();
    let reply = s.get(&format!("{H}/spin")).await.expect_problem(504, "plugin-timeout");
    assert_eq!(reply.body["plugin"], "hostile");
    // The manifest asks for 300 ms; allow generous slack on a loaded machine.
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "took {:?}", started.elapsed());
    still_serving(&s).await;
    assert!(s.metrics().await.contains(r#"keel_plugin_timeouts_total{plugin="hostile"} 1"#));
}

#[tokio::test]
async fn allocating_past_the_memory_cap_is_stopped() {
    let s = hostile().await;
    s.get(&format!("{H}/balloon")).await.expect_problem(500, "plugin-memory-limit");
    still_serving(&s).await;
    assert!(s.metrics().await.contains(r#"keel_plugin_memory_limit_hits_total{plugin="hostile"} 1"#));
}

#[tokio::test]
async fn a_panic_is_a_500_problem_naming_the_plugin() {
    let s = hostile().await;
    let reply = s.get(&format!("{H}/panic")).await.expect_problem(500, "plugin-trapped");
    assert_eq!(reply.body["plugin"], "hostile");
    assert!(reply.body["request_id"].as_str().is_some_and(|id| !id.is_empty()));
    still_serving(&s).await;
    assert!(s.metrics().await.contains(r#"keel_plugin_traps_total{plugin="hostile"} 1"#));
}

#[tokio::test]
async fn a_malformed_response_is_a_bad_gateway() {
    let s = hostile().await;
    s.get(&format!("{H}/garbage")).await.expect_problem(502, "plugin-bad-response");
    still_serving(&s).await;
}

#[tokio::test]
async fn failed_calls_leave_earlier_data_intact_and_no_partial_writes() {
    let s = hostile().await;
    let v = s.put(&format!("{H}/notes/a"), json!({ "text": "original" })).await.expect(200).body;
    assert_eq!(v["version"], 1);

    s.put(&format!("{H}/notes/a/then-trap"), json!({ "text": "overwritten" }))
        .await
        .expect_problem(500, "plugin-trapped");
    s.put(&format!("{H}/notes/a/then-fail"), json!({ "text": "overwritten" }))
        .await
        .expect_problem(422, "refused-after-write");
    s.put(&format!("{H}/notes/b/then-trap"), json!({ "text": "new" })).await.expect_problem(500, "plugin-trapped");

    let a = s.get(&format!("{H}/notes/a")).await.expect(200).body;
    assert_eq!((a["text"].as_str(), a["version"].as_u64()), (Some("original"), Some(1)));
    s.get(&format!("{H}/notes/b")).await.expect_problem(404, "note-not-found");
}

#[tokio::test]
async fn a_plugin_cannot_reach_undeclared_collections() {
    let s = hostile().await;
    s.get(&format!("{H}/undeclared-collection")).await.expect_problem(403, "forbidden");
}

#[tokio::test]
async fn a_declared_route_the_plugin_does_not_implement_is_a_404() {
    let s = hostile().await;
    s.get(&format!("{H}/declared-but-missing")).await.expect_problem(404, "route-not-implemented");
}

#[tokio::test]
async fn plugins_do_not_see_each_others_storage() {
    let s = hostile().await;
    s.put(&format!("{H}/notes/000000000001"), json!({ "text": "hostile's note" })).await.expect(200);
    // The helpdesk keys tickets the same way; it must not see the hostile plugin's document.
    s.get("/v1/plugins/helpdesk/tickets/1").await.expect_problem(404, "ticket-not-found");
}

#[tokio::test]
async fn the_same_collection_and_key_in_two_plugins_are_two_documents() {
    // `hostile-twin` is the same component under another id: same collection, same keys.
    let s = hostile().await;
    s.install("fixtures/hostile-twin").await.expect(201);
    const TWIN: &str = "/v1/plugins/hostile-twin";
    s.put(&format!("{H}/notes/shared"), json!({ "text": "hostile's" })).await.expect(200);
    // Positive control: the writer reads its own document back.
    assert_eq!(s.get(&format!("{H}/notes/shared")).await.expect(200).body["text"], "hostile's");
    s.get(&format!("{TWIN}/notes/shared")).await.expect_problem(404, "note-not-found");
    // The twin's write of the same key is a new document (version 1), not an overwrite.
    let twin = s.put(&format!("{TWIN}/notes/shared"), json!({ "text": "twin's" })).await.expect(200).body;
    assert_eq!(twin["version"], 1);
    assert_eq!(s.get(&format!("{TWIN}/notes/shared")).await.expect(200).body["text"], "twin's");
    let mine = s.get(&format!("{H}/notes/shared")).await.expect(200).body;
    assert_eq!((mine["text"].as_str(), mine["version"].as_u64()), (Some("hostile's"), Some(1)));
}
