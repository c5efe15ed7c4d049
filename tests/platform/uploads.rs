//! Upload validation: each bad artifact is refused with its own code and leaves nothing stored.

use keel_host::artifact::embed_manifest;
use keel_tests::{TestServer, artifact, manifest_source, raw_component};

async fn assert_nothing_installed(s: &TestServer) {
    let list = s.get("/v1/admin/plugins").await.expect(200).body;
    assert_eq!(list["items"].as_array().unwrap().len(), 0, "a refused upload must store nothing: {list}");
}

fn helpdesk_with_manifest(manifest: &str) -> Vec<u8> {
    embed_manifest(&raw_component("keel-plugin-helpdesk"), manifest).expect("packaging")
}

#[tokio::test]
async fn bytes_that_are_not_wasm_are_refused() {
    let s = TestServer::start().await;
    s.upload(b"PK\x03\x04 definitely a zip".to_vec()).await.expect_problem(422, "not-wasm");
    s.upload(Vec::new()).await.expect_problem(422, "not-wasm");
    assert_nothing_installed(&s).await;
}

#[tokio::test]
async fn a_core_module_is_not_a_component() {
    let s = TestServer::start().await;
    s.upload(b"\0asm\x01\x00\x00\x00".to_vec()).await.expect_problem(422, "not-a-component");
    assert_nothing_installed(&s).await;
}

#[tokio::test]
async fn a_component_that_does_not_fit_the_world_is_refused_naming_the_export() {
    let s = TestServer::start().await;
    let reply = s.install("fixtures/off-world").await.expect_problem(422, "world-mismatch");
    let detail = reply.body["detail"].as_str().unwrap();
    assert!(detail.contains("handle"), "the error should name the mismatched export: {detail}");
    assert_nothing_installed(&s).await;
}

#[tokio::test]
async fn a_missing_or_bad_manifest_is_refused() {
    let s = TestServer::start().await;
    s.upload(raw_component("keel-plugin-helpdesk")).await.expect_problem(422, "missing-manifest");
    let bad_toml = s.upload(helpdesk_with_manifest("id = ")).await.expect_problem(422, "invalid-manifest");
    assert!(bad_toml.body["detail"].as_str().unwrap().contains("TOML"));
    let source = manifest_source("helpdesk");
    let bad_version = keel_tests::with_version(&source, "one");
    s.upload(helpdesk_with_manifest(&bad_version)).await.expect_problem(422, "invalid-manifest");
    let bad_route = source.replace("permission = \"helpdesk.ticket.read\"", "permission = \"helpdesk.undeclared\"");
    s.upload(helpdesk_with_manifest(&bad_route)).await.expect_problem(422, "invalid-manifest");
    let greedy = source.replace("memory-mb = 32", "memory-mb = 100000");
    let reply = s.upload(helpdesk_with_manifest(&greedy)).await.expect_problem(422, "invalid-manifest");
    assert!(reply.body["detail"].as_str().unwrap().contains("limits.memory-mb"));
    // Settings: a default that breaks its own rule, a secret with a default (anyone can read a
    // manifest), settings without the capability that reads them.
    let settings_refusals = [
        (
            source.replace("default = \"P3\"", "default = \"P9\""),
            "`settings.default-priority.default`: must be one of P1, P2, P3, P4",
        ),
        (
            source.replace("default = \"general\"", "default = \"general\"\nsecret = true"),
            "`settings.default-category.default`: a secret has no default",
        ),
        (
            source.replace(r#""config", "sequences", "jobs"]"#, r#""sequences", "jobs"]"#),
            "declares settings but not the `config` capability",
        ),
    ];
    for (manifest, detail) in settings_refusals {
        assert_ne!(manifest, source, "test setup: the helpdesk manifest changed shape");
        let reply = s.upload(helpdesk_with_manifest(&manifest)).await.expect_problem(422, "invalid-manifest");
        assert!(reply.body["detail"].as_str().unwrap().contains(detail), "{}", reply.body);
    }
    assert_nothing_installed(&s).await;
}

#[tokio::test]
async fn a_component_importing_an_undeclared_capability_is_refused() {
    let s = TestServer::start().await;
    let source = manifest_source("helpdesk");
    let without_clock = source.replace(
        r#"capabilities = ["storage", "log", "clock", "identity", "events", "config", "sequences", "jobs"]"#,
        r#"capabilities = ["storage", "log", "identity", "events", "config", "sequences", "jobs"]"#,
    );
    assert_ne!(source, without_clock, "test setup: the helpdesk manifest changed shape");
    let reply = s.upload(helpdesk_with_manifest(&without_clock)).await.expect_problem(422, "undeclared-capability");
    assert!(reply.body["detail"].as_str().unwrap().contains("clock"));
    assert_nothing_installed(&s).await;
}

#[tokio::test]
async fn versions_are_immutable_upgrades_move_forward_only() {
    let s = TestServer::start().await;
    let first = s.install("bundled/helpdesk").await.expect(201).body;
    assert_eq!(first["outcome"], "installed");
    let digest = first["plugin"]["digest"].as_str().unwrap().to_owned();
    assert_eq!(digest.len(), 64);

    // The same artifact again changes nothing.
    let again = s.install("bundled/helpdesk").await.expect(200).body;
    assert_eq!(
        (again["outcome"].as_str(), again["plugin"]["digest"].as_str()),
        (Some("unchanged"), Some(digest.as_str()))
    );

    // Same id and version, different bytes: refused, the installed one stays.
    let source = manifest_source("helpdesk");
    let altered = source.replace("name = \"IT Helpdesk\"", "name = \"IT Helpdesk (altered)\"");
    s.upload(helpdesk_with_manifest(&altered)).await.expect_problem(409, "version-digest-conflict");
    let shown = s.get("/v1/admin/plugins/helpdesk").await.expect(200).body;
    assert_eq!((shown["digest"].as_str(), shown["name"].as_str()), (Some(digest.as_str()), Some("IT Helpdesk")));

    // A newer version upgrades; an older one is then refused.
    let newer = keel_tests::with_version(&source, "99.0.0");
    let up = s.upload(helpdesk_with_manifest(&newer)).await.expect(201).body;
    assert_eq!((up["outcome"].as_str(), up["plugin"]["version"].as_str()), (Some("upgraded"), Some("99.0.0")));
    s.upload(artifact("bundled/helpdesk")).await.expect_problem(409, "downgrade-refused");
    assert_eq!(s.get("/v1/admin/plugins/helpdesk").await.expect(200).body["version"], "99.0.0");
}

/// Every bundled department is built with heap room in its initial memory
/// (`keel_host::devkit::wasm_build_config`): without it a Rust plugin's memory ends a few
/// hundred bytes past its static data, and every call, a fresh instance, grows it and has it
/// shrunk back at reset (two `mprotect`s per request).
#[test]
fn bundled_plugins_start_with_heap_room() {
    for plugin in ["helpdesk", "hr", "payroll", "inventory", "crm"] {
        let room = keel_host::devkit::initial_heap_room(&raw_component(&format!("keel-plugin-{plugin}")))
            .unwrap_or_else(|| panic!("{plugin}: no single linear memory"));
        assert!(
            room >= keel_host::devkit::INITIAL_HEAP_BYTES,
            "{plugin}: {room} bytes between its static data and the end of its initial memory"
        );
    }
}
