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

#[tokio::test]
async fn a_plugins_dir_installs_at_start_upgrades_keeps_newer_versions_and_refuses_garbage() {
    use keel_host::artifact::embed_manifest;
    use keel_tests::{manifest_source, raw_component};
    let bundle = tempfile::tempdir().unwrap();
    let helpdesk = |version: &str| {
        // Older numbers than the migrations name: packaged without them.
        let manifest = keel_tests::with_version(&keel_tests::without_migrations(&manifest_source("helpdesk")), version);
        embed_manifest(&raw_component("keel-plugin-helpdesk"), &manifest).unwrap()
    };
    std::fs::write(bundle.path().join("helpdesk.wasm"), helpdesk("0.4.0")).unwrap();
    std::fs::write(bundle.path().join("README.txt"), "not a plugin: ignored").unwrap();
    let dir = bundle.path().to_path_buf();

    // Installed at first start and switched on for the default tenant.
    let s = TestServer::start_with(|c| c.plugins_dir = Some(dir.clone())).await;
    assert_eq!(s.server().startup.plugins_loaded, 0, "nothing was installed before the bundle");
    assert_eq!(version(&s).await, "0.4.0");
    s.post("/v1/plugins/helpdesk/tickets", json!({ "title": "from the bundle" })).await.expect(201);

    // The same file again changes nothing: an admin's choice to switch it off stands.
    s.post_empty("/v1/tenants/default/plugins/helpdesk/disable").await.expect(200);
    let s = s.restart_with(|c| c.plugins_dir = Some(dir.clone())).await;
    s.get("/v1/plugins/helpdesk/tickets").await.expect_problem(404, "plugin-not-found");
    s.post_empty("/v1/tenants/default/plugins/helpdesk/enable").await.expect(200);

    // A newer file upgrades in place, data kept: it is rolled out to the tenants.
    std::fs::write(bundle.path().join("helpdesk.wasm"), helpdesk("0.5.0")).unwrap();
    let s = s.restart_with(|c| c.plugins_dir = Some(dir.clone())).await;
    assert_eq!(version(&s).await, "0.5.0");
    let tenant = s.get("/v1/tenants/default/plugins").await.expect(200).body;
    assert_eq!(tenant["items"][0]["version"], "0.5.0", "{tenant}");
    assert_eq!(s.get("/v1/plugins/helpdesk/tickets/1").await.expect(200).body["title"], "from the bundle");

    // An older file does not downgrade what is installed.
    std::fs::write(bundle.path().join("helpdesk.wasm"), helpdesk("0.4.0")).unwrap();
    let s = s.restart_with(|c| c.plugins_dir = Some(dir.clone())).await;
    assert_eq!(version(&s).await, "0.5.0");

    // A file that is not a plugin stops the start, naming it.
    s.stop().await;
    std::fs::write(bundle.path().join("broken.wasm"), b"not wasm at all").unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut config = keel_tests::config(data.path());
    config.plugins_dir = Some(dir.clone());
    let error = keel_host::Server::start(config).await.err().expect("a broken bundle stops the start").to_string();
    assert!(error.contains("broken.wasm"), "{error}");
}

async fn version(s: &TestServer) -> String {
    let plugins = s.get("/v1/admin/plugins").await.expect(200).body;
    assert_eq!(plugins["items"].as_array().unwrap().len(), 1, "{plugins}");
    plugins["items"][0]["version"].as_str().unwrap().to_owned()
}
