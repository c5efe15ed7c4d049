//! A restart keeps installed plugins and their data, and does not recompile.

use keel_tests::TestServer;
use serde_json::json;

#[tokio::test]
async fn restart_keeps_plugins_and_data_and_loads_compiled_code_from_cache() {
    let s = TestServer::with_plugins(&["bundled/helpdesk", "fixtures/hostile"]).await;
    s.post("/v1/plugins/helpdesk/tickets", json!({ "title": "before restart" })).await.expect(201);
    s.post_empty("/v1/admin/plugins/hostile/disable").await.expect(200);
    let token = s.token.clone();

    let s = s.restart().await;
    let startup = s.server().startup;
    assert_eq!(startup.plugins_loaded, 2);
    assert_eq!((startup.plugins_from_cache, startup.plugins_compiled), (2, 0), "a restart must not recompile");
    assert!(s.server().bootstrap_token.is_none(), "the bootstrap token is shown only at first start");
    assert_eq!(s.token, token);

    assert_eq!(s.get("/v1/plugins/helpdesk/tickets/1").await.expect(200).body["title"], "before restart");
    assert_eq!(s.post("/v1/plugins/helpdesk/tickets", json!({ "title": "after" })).await.expect(201).body["number"], 2);
    s.get("/v1/plugins/hostile/noop").await.expect_problem(404, "plugin-not-found");
    let list = s.get("/v1/admin/plugins").await.expect(200).body;
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn a_corrupt_cache_entry_is_recompiled_not_fatal() {
    let s = TestServer::with_plugins(&["bundled/helpdesk"]).await;
    let cache = s.dir.path().join("compiled");
    for entry in walk(&cache) {
        std::fs::write(&entry, b"not machine code").unwrap();
    }
    let s = s.restart().await;
    assert_eq!((s.server().startup.plugins_from_cache, s.server().startup.plugins_compiled), (0, 1));
    s.get("/v1/plugins/helpdesk/tickets").await.expect(200);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() { out.extend(walk(&path)) } else { out.push(path) }
    }
    assert!(!out.is_empty() || !dir.ends_with("compiled"), "no compiled components were cached");
    out
}
