//! Index definitions follow the version a tenant runs: moving a tenant to a version that
//! adds or retypes an index rewrites the entries of that tenant's documents, in the same
//! transaction as the move, or, when some stored value does not fit the new type, refuses
//! the move naming the document and field and changes nothing.

/// Moves the default tenant to the plugin's active version.
async fn upgrade_default(s: &TestServer, plugin: &str) -> keel_tests::Reply {
    s.post(&format!("/v1/tenants/default/plugins/{plugin}/upgrade"), json!({})).await
}

use keel_host::artifact::embed_manifest;
use keel_tests::{TestServer, manifest_source, raw_component, with_version};
use serde_json::json;

const T: &str = "/v1/plugins/helpdesk/tickets";

fn legacy_helpdesk() -> Vec<u8> {
    std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/helpdesk-0.3.0-platform-0.1.0.wasm"))
        .unwrap()
}

/// The helpdesk 0.3.0 kept SLA timers with no index (their keys began with the deadline);
/// the current one finds due timers through an `integer` index on `due`. Timers written
/// before the upgrade must be found after it: the upgrade indexed them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_indexes_the_documents_stored_before_it() {
    let s = TestServer::start().await;
    s.upload(legacy_helpdesk()).await.expect(201);
    let filed = s.post(T, json!({ "title": "Printer on fire", "priority": "P1" })).await.expect(201).body;
    assert!(filed["sla"]["first_response_due"].is_i64(), "test setup: the legacy helpdesk set deadlines: {filed}");

    let upgraded = s.install("bundled/helpdesk").await.expect(201).body;
    assert_eq!(upgraded["outcome"], "upgraded");
    let asks =
        s.get("/v1/tenants/default/plugins/helpdesk/upgrade").await.expect(200).body["approval_required"].clone();
    let moved =
        s.post("/v1/tenants/default/plugins/helpdesk/upgrade", json!({ "approve": asks })).await.expect(200).body;
    assert_eq!((moved["from"].as_str(), &moved["to"]), (Some("0.3.0"), &upgraded["plugin"]["version"]));
    s.eventually("/v1/tenants/default/schedules", "the SLA check to be scheduled", |b| {
        b["items"].as_array().is_some_and(|i| i.iter().any(|s| s["name"] == "sla-check"))
    })
    .await;
    // Ninety minutes on, the P1 ticket's first response (due after an hour) is breached.
    s.advance_clock(90 * 60_000).await;
    s.eventually(
        "/v1/tenants/default/events?topic=helpdesk.ticket.sla_breached",
        "the breach of the old ticket",
        |b| b["items"].as_array().is_some_and(|i| !i.is_empty()),
    )
    .await;
    assert_eq!(s.get(&format!("{T}/1")).await.expect(200).body["sla_state"], "breached");
}

#[tokio::test]
async fn a_move_to_a_version_whose_new_index_type_does_not_fit_the_stored_data_is_refused_and_changes_nothing() {
    let s = TestServer::with_plugins(&["bundled/helpdesk"]).await;
    let version = keel_tests::manifest_version("helpdesk");
    s.post(T, json!({ "title": "Screen flickers", "priority": "P2" })).await.expect(201);

    // Version 99 declares `priority` an integer; the stored tickets hold "P2".
    let source = manifest_source("helpdesk");
    let retyped = source.replacen(r#""priority","#, r#"{ field = "priority", type = "integer" },"#, 1);
    assert_ne!(retyped, source, "test setup: the tickets index list changed shape");
    let artifact = embed_manifest(&raw_component("keel-plugin-helpdesk"), &with_version(&retyped, "99.0.0")).unwrap();
    s.upload(artifact).await.expect(201);
    let refused = upgrade_default(&s, "helpdesk").await.expect_problem(409, "index-data-mismatch");
    let detail = refused.body["detail"].as_str().unwrap();
    assert!(detail.contains("`priority`") && detail.contains("tickets/") && detail.contains("integer"), "{detail}");

    // The tenant stays on its version and its index still answers.
    let tenant = s.get("/v1/tenants/default/plugins").await.expect(200).body;
    let row = tenant["items"].as_array().unwrap().iter().find(|p| p["id"] == "helpdesk").unwrap().clone();
    assert_eq!(row["version"].as_str(), Some(version.as_str()), "{row}");
    let listed = s.get(&format!("{T}?priority=P2")).await.expect(200).body;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1, "{listed}");

    // Declaring it a string fits: the move goes through and the index still answers.
    let typed = source.replacen(r#""priority","#, r#"{ field = "priority", type = "string" },"#, 1);
    let artifact = embed_manifest(&raw_component("keel-plugin-helpdesk"), &with_version(&typed, "99.0.1")).unwrap();
    s.upload(artifact).await.expect(201);
    upgrade_default(&s, "helpdesk").await.expect(200);
    let listed = s.get(&format!("{T}?priority=P2")).await.expect(200).body;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1, "{listed}");
    let listed = s.get(&format!("{T}?priority=P1")).await.expect(200).body;
    assert_eq!(listed["items"].as_array().unwrap().len(), 0, "{listed}");
}

/// The CRM's manifest without its `search` lines, at `version`.
fn crm_without_search(version: &str) -> Vec<u8> {
    let source = manifest_source("crm");
    let plain: String = source.lines().filter(|l| !l.starts_with("search = ")).map(|l| format!("{l}\n")).collect();
    assert_ne!(plain, source, "test setup: the CRM declares search");
    embed_manifest(&raw_component("keel-plugin-crm"), &with_version(&plain, version)).unwrap()
}

/// Declaring `search` in a version indexes what the tenant stored before it moved there; a
/// version that drops it takes the rows out and its searches are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_that_declares_search_indexes_stored_documents_and_one_that_drops_it_removes_them() {
    const CRM: &str = "/v1/plugins/crm";
    let s = TestServer::start().await;
    s.upload(crm_without_search("0.1.0")).await.expect(201);
    let ana = s.post(&format!("{CRM}/contacts"), json!({ "name": "Ana Souza" })).await.expect(201).body;
    s.post(&format!("{CRM}/cases"), json!({ "subject": "Invoice disputed", "contact": ana["id"] })).await.expect(201);
    // Before: the collection declares no search, so the plugin's search is refused.
    s.get(&format!("{CRM}/cases?q=invoice")).await.expect_problem(403, "forbidden");

    assert_eq!(s.install("bundled/crm").await.expect(201).body["outcome"], "upgraded");
    upgrade_default(&s, "crm").await.expect(200);
    let found = s.get(&format!("{CRM}/cases?q=invoice")).await.expect(200).body;
    assert_eq!(found["items"][0]["subject"], "Invoice disputed", "{found}");
    assert_eq!(s.get(&format!("{CRM}/contacts?q=souza")).await.expect(200).body["items"][0]["name"], "Ana Souza");

    s.upload(crm_without_search("99.0.0")).await.expect(201);
    upgrade_default(&s, "crm").await.expect(200);
    s.get(&format!("{CRM}/cases?q=invoice")).await.expect_problem(403, "forbidden");
    // The cases themselves are untouched.
    assert_eq!(s.get(&format!("{CRM}/cases/1")).await.expect(200).body["subject"], "Invoice disputed");
}
