//! The Python example plugin (componentize-py) is installed and exercised like the Rust ones:
//! storage, a write conflict, bad input, and its problem bodies.

use keel_tests::TestServer;
use serde_json::json;

const NOTES: &str = "/v1/plugins/python-notes/notes";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_notes_plugin_stores_conflicts_and_refuses_bad_input_like_any_plugin() {
    let s = TestServer::with_plugins(&["examples/python-notes"]).await;

    let created = s.put(&format!("{NOTES}/first"), json!({ "text": "  buy milk ", "tag": "home" })).await.expect(200);
    assert_eq!(created.body, json!({ "key": "first", "text": "buy milk", "tag": "home", "version": 1 }));
    s.put(&format!("{NOTES}/second"), json!({ "text": "file taxes", "tag": "work" })).await.expect(200);
    let got = s.get(&format!("{NOTES}/first")).await.expect(200);
    assert_eq!(got.body["text"], "buy milk");
    let home = s.get(&format!("{NOTES}?tag=home")).await.expect(200);
    assert_eq!(home.body["items"].as_array().unwrap().len(), 1, "{}", home.body);

    // Optimistic concurrency through the host: the stale writer gets 409 and changes nothing.
    let updated = s.put(&format!("{NOTES}/first"), json!({ "text": "buy oat milk", "version": 1 })).await.expect(200);
    assert_eq!(updated.body["version"], 2);
    s.put(&format!("{NOTES}/first"), json!({ "text": "stale", "version": 1 }))
        .await
        .expect_problem(409, "version-conflict");
    s.put(&format!("{NOTES}/first"), json!({ "text": "again" })).await.expect_problem(409, "version-conflict");
    assert_eq!(s.get(&format!("{NOTES}/first")).await.expect(200).body["text"], "buy oat milk");

    // Bad input gets typed problems from the plugin.
    s.put(&format!("{NOTES}/x"), json!({ "text": "   " })).await.expect_problem(422, "invalid-field");
    s.put(&format!("{NOTES}/x"), json!({ "text": "ok", "version": "two" })).await.expect_problem(422, "invalid-field");
    s.raw(reqwest::Method::PUT, &format!("{NOTES}/x"), "{not json").await.expect_problem(400, "malformed-json");
    let missing = s.get(&format!("{NOTES}/nope")).await.expect_problem(404, "note-not-found");
    assert!(missing.body["request_id"].as_str().unwrap().starts_with("req_"), "{}", missing.body);
    // The host's own checks apply as to any plugin.
    s.delete(&format!("{NOTES}/first")).await.expect_problem(405, "method-not-allowed");
}
