//! Typed calls between plugins through `keel:hr/directory`, linked per tenant at call time:
//! the `roster` fixture reads employees from whichever plugin provides the directory
//! (`directory` from storage, or `directory-alt`, a static second implementation).

use keel_host::artifact::embed_manifest;
use keel_tests::{TestServer, manifest_source, raw_component};
use reqwest::Method;
use serde_json::json;

const ROSTER: &str = "/v1/plugins/roster/employees";

async fn with_directory() -> TestServer {
    let s = TestServer::with_plugins(&["fixtures/directory", "fixtures/roster"]).await;
    s.put(
        "/v1/plugins/directory/employees/e7",
        json!({ "name": "Ada Lovelace", "email": "ada@example.com", "department": "engineering",
                "title": "Analyst", "start_date": "2026-01-05" }),
    )
    .await
    .expect(200);
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_calls_another_through_a_wit_interface_and_gets_typed_data() {
    let s = with_directory().await;
    let got = s.get(&format!("{ROSTER}/e7")).await.expect(200).body;
    assert_eq!(
        (got["name"].as_str(), got["email"].as_str(), got["start_date"].as_str(), got["active"].as_bool()),
        (Some("Ada Lovelace"), Some("ada@example.com"), Some("2026-01-05"), Some(true)),
        "{got}"
    );
    // The provider's errors reach the caller's client as they are: class, code, detail, field.
    let missing = s.get(&format!("{ROSTER}/nobody")).await.expect_problem(404, "employee-not-found").body;
    assert_eq!(missing["detail"], "no employee `nobody`");
    let empty = s.get(&format!("{ROSTER}?department=")).await.expect_problem(422, "department-empty").body;
    assert_eq!(empty["field"], "department", "{empty}");
    let listed = s.get(&format!("{ROSTER}?department=engineering")).await.expect(200).body;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    assert_eq!(s.get(&format!("{ROSTER}?department=finance")).await.expect(200).body["items"], json!([]));

    // The provider runs with the caller's identity: without `directory.contact`, no email.
    let member = s.token_for("default", "member").await;
    s.put("/v1/tenants/default/roles/member/permissions", json!({ "permissions": ["roster.read"] })).await.expect(200);
    let as_member = s.as_token(Some(&member), Method::GET, &format!("{ROSTER}/e7"), None).await.expect(200).body;
    assert_eq!((as_member["name"].as_str(), as_member["email"].as_str()), (Some("Ada Lovelace"), Some("")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_provider_the_caller_gets_unavailable_and_a_new_provider_needs_no_restart() {
    let s = with_directory().await;
    // The roster requires what only the directory provides here: switching it off is
    // refused, naming who would lose what, unless forced.
    let refused = s
        .post_empty("/v1/tenants/default/plugins/directory/disable")
        .await
        .expect_problem(409, "provider-required")
        .body;
    assert_eq!(
        refused["dependents"],
        json!([{ "plugin": "roster", "interfaces": ["keel:hr/directory@0.2.2"] }]),
        "{refused}"
    );
    assert_eq!(s.get(&format!("{ROSTER}/e7")).await.expect(200).body["name"], "Ada Lovelace", "still on");
    let forced = s.post_empty("/v1/tenants/default/plugins/directory/disable?force=true").await.expect(200).body;
    assert_eq!(forced["dependents"][0]["plugin"], "roster", "{forced}");
    let audit = s.get("/v1/tenants/default/audit?action=tenant.plugin.disable").await.expect(200).body;
    assert_eq!(audit["items"][0]["detail"]["forced"], true, "{audit}");
    assert_eq!(audit["items"][0]["detail"]["dependents"][0]["plugin"], "roster", "{audit}");
    s.post_empty("/v1/tenants/default/plugins/directory/disable?force=maybe").await.expect_problem(400, "bad-request");
    let unavailable = s.get(&format!("{ROSTER}/e7")).await.expect_problem(503, "department-unavailable").body;
    assert!(
        unavailable["detail"]
            .as_str()
            .unwrap()
            .contains("no plugin enabled for tenant `default` provides keel:hr/directory@0.2.2"),
        "{unavailable}"
    );

    // A second implementation, installed while the caller runs, serves it from now on.
    s.install("fixtures/directory-alt").await.expect(201);
    let alt = s.get(&format!("{ROSTER}/e1")).await.expect(200).body;
    assert_eq!(alt["name"], "Ada Static");
    s.get(&format!("{ROSTER}/e7")).await.expect_problem(404, "employee-not-found");

    // With both enabled the newest compatible version wins, then the first plugin id: the
    // stored directory, with its data intact. Switching it off again goes back to alt, and
    // needs no force: another provider remains.
    s.post_empty("/v1/tenants/default/plugins/directory/enable").await.expect(200);
    assert_eq!(s.get(&format!("{ROSTER}/e7")).await.expect(200).body["name"], "Ada Lovelace");
    let off = s.post_empty("/v1/tenants/default/plugins/directory/disable").await.expect(200).body;
    assert_eq!(off["dependents"], json!([]), "{off}");
    assert_eq!(s.get(&format!("{ROSTER}/e2")).await.expect(200).body["name"], "Grace Static");

    // Providers are per tenant: one that has only the roster may switch it on (the answer
    // says what is missing) and gets unavailable.
    let acme = s.tenant_with_token("acme", "tenant-admin").await;
    let on =
        s.as_token(Some(&acme), Method::POST, "/v1/tenants/acme/plugins/roster/enable", None).await.expect(200).body;
    assert_eq!((on["enabled"].as_bool(), &on["missing"]), (Some(true), &json!(["keel:hr/directory@0.2.2"])), "{on}");
    let listed = s.as_token(Some(&acme), Method::GET, "/v1/tenants/acme/plugins", None).await.expect(200).body;
    let roster = listed["items"].as_array().unwrap().iter().find(|p| p["id"] == "roster").cloned().unwrap();
    assert_eq!(roster["missing"], json!(["keel:hr/directory@0.2.2"]), "{roster}");
    assert_eq!(roster["requires"], json!(["keel:hr/directory@0.2.2"]), "{roster}");
    // Once a provider is on there, nothing is missing.
    s.as_token(Some(&acme), Method::POST, "/v1/tenants/acme/plugins/directory/enable", None).await.expect(200);
    let roster_missing = || async {
        let listed = s.as_token(Some(&acme), Method::GET, "/v1/tenants/acme/plugins", None).await.expect(200).body;
        listed["items"].as_array().unwrap().iter().find(|p| p["id"] == "roster").unwrap()["missing"].clone()
    };
    assert_eq!(roster_missing().await, json!([]));
    // A provider switched off for the whole platform provides nothing anywhere.
    s.post_empty("/v1/admin/plugins/directory/disable").await.expect(200);
    assert_eq!(roster_missing().await, json!(["keel:hr/directory@0.2.2"]));
    s.post_empty("/v1/admin/plugins/directory/enable").await.expect(200);
    s.as_token(Some(&acme), Method::POST, "/v1/tenants/acme/plugins/directory/disable?force=true", None)
        .await
        .expect(200);
    s.as_token(Some(&acme), Method::GET, &format!("{ROSTER}/e7"), None)
        .await
        .expect_problem(503, "department-unavailable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cycle_between_plugins_is_stopped_by_the_depth_limit_without_a_trap() {
    let s = TestServer::with_plugins(&["fixtures/directory-alt", "fixtures/roster"]).await;
    // directory-alt answers `loop` by calling the directory, which is itself.
    let reply = s.get(&format!("{ROSTER}/loop")).await.expect_problem(503, "department-unavailable").body;
    assert!(reply["detail"].as_str().unwrap().contains("the limit (4)"), "{reply}");
    assert!(!s.metrics().await.contains("keel_plugin_traps_total{"), "nobody trapped");
    assert_eq!(s.get(&format!("{ROSTER}/e2")).await.expect(200).body["department"], "finance");
}

#[tokio::test]
async fn uploads_must_declare_what_they_require_and_export_what_they_provide() {
    let s = TestServer::start().await;
    let roster = manifest_source("fixtures/roster");
    let undeclared = roster.replace("requires = [\"keel:hr/directory@0.2.2\"]\n", "");
    assert_ne!(roster, undeclared, "test setup: the roster manifest changed shape");
    let reply = s
        .upload(embed_manifest(&raw_component("keel-plugin-roster"), &undeclared).unwrap())
        .await
        .expect_problem(422, "undeclared-requirement");
    assert!(reply.body["detail"].as_str().unwrap().contains("keel:hr/directory@0.2.2"), "{}", reply.body);

    let directory = manifest_source("fixtures/directory");
    let wrong = directory.replace("keel:hr/directory@0.2.2", "keel:hr/directory@0.3.0");
    s.upload(embed_manifest(&raw_component("keel-plugin-directory"), &wrong).unwrap())
        .await
        .expect_problem(422, "missing-provided-export");
    assert_eq!(s.get("/v1/admin/plugins").await.expect(200).body["items"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_newest_compatible_provider_wins_and_its_writes_commit_only_when_it_returns_ok() {
    // `directory` provides 0.2.2 and sorts first by id; `directory-next` provides 0.2.3.
    let s = with_directory().await;
    s.install("fixtures/directory-next").await.expect(201);
    assert_eq!(s.get(&format!("{ROSTER}/e1")).await.expect(200).body["name"], "Ada Next");
    s.get(&format!("{ROSTER}/e7")).await.expect_problem(404, "employee-not-found");
    // A provider that traps (after writing) answers `unavailable`, naming itself.
    let trapped = s.get(&format!("{ROSTER}/trap")).await.expect_problem(503, "department-unavailable").body;
    let detail = trapped["detail"].as_str().unwrap();
    assert!(detail.contains("provider `directory-next` failed"), "{detail}");
    assert!(s.metrics().await.contains(r#"keel_plugin_traps_total{plugin="directory-next"} 1"#));
    // Of three lookups that each wrote, only the one that returned `ok` was saved.
    let lookups = s.get("/v1/plugins/directory-next/lookups").await.expect(200).body;
    assert_eq!(lookups["ids"], json!(["e1"]), "{lookups}");
    // Without the newer provider, the older one serves again, its data intact.
    s.post_empty("/v1/tenants/default/plugins/directory-next/disable").await.expect(200);
    assert_eq!(s.get(&format!("{ROSTER}/e7")).await.expect(200).body["name"], "Ada Lovelace");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_expecting_another_shape_than_the_provider_gets_unavailable() {
    let s = with_directory().await;
    s.install("fixtures/directory-skewed").await.expect(201);
    let reply =
        s.get("/v1/plugins/directory-skewed/employees/e7").await.expect_problem(503, "department-unavailable").body;
    let detail = reply["detail"].as_str().unwrap();
    assert!(detail.contains("has a different signature than the caller expects"), "{detail}");
    assert!(!s.metrics().await.contains("keel_plugin_traps_total{"), "nobody trapped");
    // The well-shaped caller is unaffected.
    assert_eq!(s.get(&format!("{ROSTER}/e7")).await.expect(200).body["name"], "Ada Lovelace");
}

#[tokio::test]
async fn uploads_with_unknown_imports_bad_department_signatures_or_no_worker_are_refused() {
    let s = TestServer::start().await;
    let reply = s.install("fixtures/misfit-import").await.expect_problem(422, "unknown-import");
    assert!(reply.body["detail"].as_str().unwrap().contains("acme:gadgets/teleport"), "{}", reply.body);
    let reply = s.install("fixtures/misfit-signature").await.expect_problem(422, "department-signature");
    let detail = reply.body["detail"].as_str().unwrap();
    assert!(detail.contains("keel:ledger/journal@0.1.0.post") && detail.contains("unavailable"), "{detail}");
    // Asking for background work without exporting the worker interface (a handler-only
    // component, as another language's toolchain might build).
    let reply = s.install("fixtures/skewed-worker").await.expect_problem(422, "missing-worker-export");
    assert!(reply.body["detail"].as_str().unwrap().contains("keel:platform/worker"), "{}", reply.body);
    assert_eq!(s.get("/v1/admin/plugins").await.expect(200).body["items"], json!([]));
}

/// A new version of a provider that breaks the interface under the same major version is
/// refused at install, naming each function and the change; the installed version serves on.
#[tokio::test]
async fn an_upgrade_that_breaks_a_provided_interface_is_refused_naming_the_change() {
    let s = TestServer::with_plugins(&["fixtures/directory-next", "fixtures/roster"]).await;
    // The broken directory's component, offered as directory-next 0.2.0 (it provides
    // keel:hr/directory@0.2.4, which must serve what 0.2.3 did).
    let next = manifest_source("fixtures/directory-next");
    let broken = manifest_source("fixtures/directory-broken")
        .replace("id = \"directory-broken\"", "id = \"directory-next\"")
        .replace("version = \"0.1.0\"", "version = \"0.2.0\"")
        .replace("directory-broken.read", "directory-next.read");
    assert!(
        broken.contains("id = \"directory-next\"") && next.contains("0.2.3"),
        "test setup: manifests changed shape"
    );
    let refused = s
        .upload(embed_manifest(&raw_component("keel-plugin-directory-broken"), &broken).unwrap())
        .await
        .expect_problem(409, "interface-incompatible")
        .body;
    let detail = refused["detail"].as_str().unwrap();
    assert!(detail.contains("keel:hr/directory@0.2.4") && detail.contains("keel:hr/directory@0.2.3"), "{detail}");
    let breaks = refused["breaks"].as_array().unwrap();
    let change = |function: &str| {
        breaks.iter().find(|b| b["function"] == function).map(|b| b["change"].as_str().unwrap().to_owned())
    };
    assert_eq!(change("working-times").as_deref(), Some("it is gone"), "{refused}");
    assert_eq!(change("get-working-time").as_deref(), Some("it is gone"), "{refused}");
    assert_eq!(change("get-employee").as_deref(), Some("the result: ok: field `email` was removed"), "{refused}");
    assert_eq!(refused["callers"], json!(["roster"]), "{refused}");
    // Nothing changed: 0.1.0 still serves, and the roster reads through it.
    assert_eq!(s.get("/v1/admin/plugins/directory-next").await.expect(200).body["version"], "0.1.0");
    assert_eq!(s.get(&format!("{ROSTER}/e1")).await.expect(200).body["name"], "Ada Next");

    // A version that keeps every function as it was (here: the same component, a patch of
    // the interface) is accepted.
    let patch = next.replace("version = \"0.1.0\"", "version = \"0.1.1\"");
    s.upload(embed_manifest(&raw_component("keel-plugin-directory-next"), &patch).unwrap()).await.expect(201);
}

/// A tenant swaps the provider of an interface: a provider lacking what the callers switched
/// on there import is refused, naming them; a compatible one takes over and the callers
/// keep working with no change on their side.
#[tokio::test]
async fn a_tenant_swaps_a_provider_only_for_one_that_serves_its_callers() {
    let s = TestServer::with_plugins(&[
        "fixtures/directory",
        "fixtures/roster",
        "fixtures/directory-alt",
        "fixtures/directory-broken",
    ])
    .await;
    let acme = s.tenant_with_token("acme", "tenant-admin").await;
    let switch = async |plugin: &str, action: &str| {
        s.as_token(Some(&acme), Method::POST, &format!("/v1/tenants/acme/plugins/{plugin}/{action}"), None).await
    };
    switch("directory", "enable").await.expect(200);
    switch("roster", "enable").await.expect(200);
    let refused = switch("directory-broken", "enable").await.expect_problem(409, "interface-incompatible").body;
    let unserved = &refused["unserved"][0];
    assert_eq!(
        (unserved["plugin"].as_str(), unserved["interface"].as_str()),
        (Some("roster"), Some("keel:hr/directory@0.2.4")),
        "{refused}"
    );
    let functions: Vec<&str> =
        unserved["breaks"].as_array().unwrap().iter().map(|b| b["function"].as_str().unwrap()).collect();
    assert!(functions.contains(&"get-employee"), "{refused}");
    let tenant_plugins = s.as_token(Some(&acme), Method::GET, "/v1/tenants/acme/plugins", None).await.expect(200).body;
    let broken_on = tenant_plugins["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["id"] == "directory-broken" && p["enabled"] == true);
    assert!(!broken_on, "the refused provider stayed off: {tenant_plugins}");

    // The compatible replacement: switch it on, then the old one off; the roster now reads
    // the replacement's data without a change on its side.
    switch("directory-alt", "enable").await.expect(200);
    switch("directory", "disable").await.expect(200);
    let e2 = s.as_token(Some(&acme), Method::GET, &format!("{ROSTER}/e2"), None).await.expect(200).body;
    assert_eq!(e2["department"], "finance", "served by directory-alt: {e2}");
    // Without plugins that import the directory switched on (directory-alt imports
    // `get-employee` too), the broken directory has nobody to fail.
    switch("roster", "disable").await.expect(200);
    let alt = switch("directory-broken", "enable").await.expect_problem(409, "interface-incompatible").body;
    assert_eq!(alt["unserved"][0]["plugin"], "directory-alt", "{alt}");
    switch("directory-alt", "disable").await.expect(200);
    switch("directory-broken", "enable").await.expect(200);
}
