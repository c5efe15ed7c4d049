//! Versions per tenant: installing a version makes it the one new tenants get; tenants
//! already running the plugin keep theirs until their admin upgrades (or a platform admin
//! rolls it out), each move rewriting only that tenant's index entries.

use keel_host::artifact::embed_manifest;
use keel_tests::{TestServer, manifest_source, raw_component, with_version};
use reqwest::Method;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

const TICKETS: &str = "/v1/plugins/helpdesk/tickets";
const HARDWARE: &str = "/v1/plugins/helpdesk/tickets?category=hardware";

/// What 1.0.0 answers a query by category, an index it does not declare.
fn undeclared_category_index(reply: keel_tests::Reply) {
    let refused = reply.expect_problem(403, "forbidden");
    assert!(
        refused.body["detail"].as_str().unwrap().contains("`category` is not an indexed field"),
        "{}",
        refused.body
    );
}

/// The helpdesk as an earlier release: no `category` index, no SLA schedule, at 1.0.0.
fn helpdesk_1() -> Vec<u8> {
    let source = manifest_source("helpdesk");
    let older = source
        .replace("\"requester\", \"category\", \"reference\"]", "\"requester\", \"reference\"]")
        .replace("[[schedules]]\nname = \"sla-check\"\ncron = \"* * * * *\"\n", "");
    assert!(!older.contains("\"category\", \"reference\"]"), "test setup: the category index is still declared");
    assert!(!older.contains("sla-check"), "test setup: the SLA schedule is still declared");
    embed_manifest(&raw_component("keel-plugin-helpdesk"), &with_version(&older, "1.0.0")).unwrap()
}

/// The helpdesk as it is, at 2.0.0.
fn helpdesk_2() -> Vec<u8> {
    embed_manifest(&raw_component("keel-plugin-helpdesk"), &with_version(&manifest_source("helpdesk"), "2.0.0"))
        .unwrap()
}

/// `tenant`'s row in its plugin listing for the helpdesk.
async fn listed(s: &TestServer, tenant: &str) -> Value {
    let body = s.get(&format!("/v1/tenants/{tenant}/plugins")).await.expect(200).body;
    body["items"].as_array().unwrap().iter().find(|p| p["id"] == "helpdesk").cloned().expect("helpdesk listed")
}

async fn as_admin_of(
    s: &TestServer,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> keel_tests::Reply {
    s.as_token(Some(token), method, path, body).await
}

#[tokio::test]
async fn two_tenants_run_two_versions_until_each_is_moved() {
    let s = TestServer::start().await;
    assert_eq!(s.upload(helpdesk_1()).await.expect(201).body["outcome"], "installed");
    let acme = s.tenant_with_token("acme", "tenant-admin").await;
    let globex = s.tenant_with_token("globex", "tenant-admin").await;
    for (tenant, token) in [("acme", &acme), ("globex", &globex)] {
        as_admin_of(&s, token, Method::POST, &format!("/v1/tenants/{tenant}/plugins/helpdesk/enable"), None)
            .await
            .expect(200);
        let ticket = json!({ "title": format!("{tenant}'s printer"), "priority": "P3", "category": "hardware" });
        as_admin_of(&s, token, Method::POST, TICKETS, Some(ticket)).await.expect(201);
    }

    // 2.0.0 becomes the active version; both tenants keep 1.0.0.
    let installed = s.upload(helpdesk_2()).await.expect(201).body;
    assert_eq!(
        (installed["outcome"].as_str(), installed["plugin"]["version"].as_str()),
        (Some("upgraded"), Some("2.0.0"))
    );
    for (tenant, token) in [("acme", &acme), ("globex", &globex)] {
        let row = listed(&s, tenant).await;
        assert_eq!((row["version"].as_str(), row["active_version"].as_str()), (Some("1.0.0"), Some("2.0.0")), "{row}");
        undeclared_category_index(as_admin_of(&s, token, Method::GET, HARDWARE, None).await);
    }

    // Acme moves: its ticket is indexed by category for 2.0.0.
    let moved = as_admin_of(&s, &acme, Method::POST, "/v1/tenants/acme/plugins/helpdesk/upgrade", Some(json!({})))
        .await
        .expect(200)
        .body;
    assert_eq!((moved["from"].as_str(), moved["to"].as_str()), (Some("1.0.0"), Some("2.0.0")), "{moved}");
    assert!(moved["entries_rewritten"].as_u64().unwrap() >= 1, "acme's ticket gets its category entry: {moved}");
    let found = as_admin_of(&s, &acme, Method::GET, HARDWARE, None).await.expect(200).body;
    assert_eq!(found["items"].as_array().unwrap().len(), 1, "{found}");
    let row = listed(&s, "acme").await;
    assert_eq!((row["version"].as_str(), row.get("active_version")), (Some("2.0.0"), None), "{row}");

    // Globex still runs 1.0.0, with its data as it was.
    undeclared_category_index(as_admin_of(&s, &globex, Method::GET, HARDWARE, None).await);
    let theirs = as_admin_of(&s, &globex, Method::GET, &format!("{TICKETS}/1"), None).await.expect(200).body;
    assert_eq!(theirs["title"], "globex's printer");

    // The platform admin sees which tenant runs which version.
    let versions = s.get("/v1/admin/plugins/helpdesk/versions").await.expect(200).body;
    assert_eq!(versions["active_version"], "2.0.0");
    let tenants: Vec<(String, Value)> = versions["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["version"].as_str().unwrap().to_owned(), v["tenants"].clone()))
        .collect();
    assert_eq!(
        tenants,
        [("1.0.0".to_owned(), json!(["default", "globex"])), ("2.0.0".to_owned(), json!(["acme"]))],
        "{versions}"
    );
    assert!(versions["items"][1]["manifest"].as_str().unwrap().contains("version = \"2.0.0\""));
    assert_eq!(versions["items"][1]["digest"].as_str().map(str::len), Some(64));

    // Each tenant's schedules are its version's: only acme's 2.0.0 declares the SLA check.
    let schedules = |tenant: &'static str| {
        let s = &s;
        async move {
            let body = s.get(&format!("/v1/tenants/{tenant}/schedules")).await.expect(200).body;
            body["items"].as_array().unwrap().iter().filter(|i| i["plugin"] == "helpdesk").count()
        }
    };
    s.eventually("/v1/tenants/acme/schedules", "acme's SLA check", |b| {
        b["items"].as_array().is_some_and(|i| i.iter().any(|s| s["name"] == "sla-check"))
    })
    .await;
    assert_eq!(schedules("globex").await, 0, "globex's version declares no schedule");

    // A tenant switching the plugin on for the first time gets the active version.
    let initech = s.tenant_with_token("initech", "tenant-admin").await;
    as_admin_of(&s, &initech, Method::POST, "/v1/tenants/initech/plugins/helpdesk/enable", None).await.expect(200);
    assert_eq!(listed(&s, "initech").await["version"], "2.0.0");
    as_admin_of(&s, &initech, Method::GET, HARDWARE, None).await.expect(200);
}

#[tokio::test]
async fn a_tenant_rolls_back_and_a_rollout_moves_the_rest_in_order() {
    let s = TestServer::start().await;
    s.upload(helpdesk_1()).await.expect(201);
    s.post(TICKETS, json!({ "title": "Kettle", "priority": "P3", "category": "kitchen" })).await.expect(201);
    let acme = s.tenant_with_token("acme", "tenant-admin").await;
    as_admin_of(&s, &acme, Method::POST, "/v1/tenants/acme/plugins/helpdesk/enable", None).await.expect(200);
    s.upload(helpdesk_2()).await.expect(201);

    // Default moves up and back down: the category entries go with 1.0.0.
    s.post("/v1/tenants/default/plugins/helpdesk/upgrade", json!({})).await.expect(200);
    let found = s.get(&format!("{TICKETS}?category=kitchen")).await.expect(200).body;
    assert_eq!(found["items"].as_array().unwrap().len(), 1, "{found}");
    let back =
        s.post("/v1/tenants/default/plugins/helpdesk/upgrade", json!({ "version": "1.0.0" })).await.expect(200).body;
    assert_eq!((back["from"].as_str(), back["to"].as_str()), (Some("2.0.0"), Some("1.0.0")), "{back}");
    undeclared_category_index(s.get(&format!("{TICKETS}?category=kitchen")).await);
    assert_eq!(s.get(&format!("{TICKETS}/1")).await.expect(200).body["title"], "Kettle", "the data stays");

    // Refusals, each typed, each changing nothing.
    s.post("/v1/tenants/default/plugins/helpdesk/upgrade", json!({ "version": "7.0.0" }))
        .await
        .expect_problem(404, "version-not-found");
    s.post("/v1/tenants/default/plugins/nothing/upgrade", json!({})).await.expect_problem(404, "plugin-not-found");
    s.post("/v1/tenants/default/plugins/helpdesk/upgrade", json!({ "versoin": "2.0.0" }))
        .await
        .expect_problem(422, "invalid-request");
    let never = s.tenant_with_token("never", "tenant-admin").await;
    as_admin_of(&s, &never, Method::POST, "/v1/tenants/never/plugins/helpdesk/upgrade", Some(json!({})))
        .await
        .expect_problem(409, "not-switched-on");
    let member = s.token_for("acme", "member").await;
    as_admin_of(&s, &member, Method::POST, "/v1/tenants/acme/plugins/helpdesk/upgrade", Some(json!({})))
        .await
        .expect_problem(403, "forbidden");
    as_admin_of(&s, &acme, Method::POST, "/v1/tenants/default/plugins/helpdesk/upgrade", Some(json!({})))
        .await
        .expect_problem(404, "tenant-not-found");
    assert_eq!(listed(&s, "default").await["version"], "1.0.0");

    // A rollout moves every tenant on another version, in order.
    let report = s.post("/v1/admin/plugins/helpdesk/rollout", json!({})).await.expect(200).body;
    let moved: Vec<&str> = report["moved"].as_array().unwrap().iter().map(|m| m["tenant"].as_str().unwrap()).collect();
    assert_eq!((moved, report["complete"].as_bool()), (vec!["acme", "default"], Some(true)), "{report}");
    for tenant in ["acme", "default"] {
        assert_eq!(listed(&s, tenant).await["version"], "2.0.0");
    }
    // Again: nothing left to move.
    let again = s.post("/v1/admin/plugins/helpdesk/rollout", json!({})).await.expect(200).body;
    assert_eq!(
        (again["moved"].as_array().map(Vec::len), again["unchanged"].as_array().map(Vec::len)),
        (Some(0), Some(2))
    );
    // A list stops at the first tenant it cannot move, naming the rest.
    let listed_rollout = s
        .post(
            "/v1/admin/plugins/helpdesk/rollout",
            json!({ "version": "1.0.0", "tenants": ["acme", "never", "default"] }),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(listed_rollout["failed"]["tenant"], "never", "{listed_rollout}");
    assert_eq!(listed_rollout["failed"]["code"], "not-switched-on");
    assert_eq!(listed_rollout["remaining"], json!(["default"]));
    assert_eq!(listed_rollout["complete"], false);
    assert_eq!(listed(&s, "acme").await["version"], "1.0.0");
    assert_eq!(listed(&s, "default").await["version"], "2.0.0");
    s.post("/v1/admin/plugins/helpdesk/rollout", json!({ "version": "9.9.9" }))
        .await
        .expect_problem(404, "version-not-found");
}

/// Requests keep flowing while their tenant moves: each finishes on the version it started
/// on, or runs again on the new one when its commit met the move. None fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_storm_during_an_upgrade_sees_no_failed_request() {
    let s = TestServer::start().await;
    s.upload(helpdesk_1()).await.expect(201);
    for i in 0..20 {
        s.post(TICKETS, json!({ "title": format!("Ticket {i}"), "priority": "P3", "category": "storm" }))
            .await
            .expect(201);
    }
    s.upload(helpdesk_2()).await.expect(201);
    let done = AtomicBool::new(false);
    let (ok, failed) = (AtomicU32::new(0), AtomicU32::new(0));
    let worker = |n: u32| {
        let (s, done, ok, failed) = (&s, &done, &ok, &failed);
        async move {
            let mut i = 0;
            // At least a few requests each, then until the move is over.
            while i < 5 || !done.load(Ordering::Acquire) {
                i += 1;
                let reply = match (n + i) % 3 {
                    0 => {
                        s.post(
                            TICKETS,
                            json!({ "title": format!("Storm {n}-{i}"), "priority": "P2", "category": "storm" }),
                        )
                        .await
                    }
                    1 => s.get(&format!("{TICKETS}?status=new")).await,
                    _ => {
                        s.patch(&format!("{TICKETS}/{}", 1 + (i % 20)), json!({ "category": format!("storm-{n}") }))
                            .await
                    }
                };
                match reply.status {
                    200 | 201 => ok.fetch_add(1, Ordering::Relaxed),
                    _ => {
                        eprintln!("failed during the upgrade: {} {}", reply.status, reply.body);
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }
    };
    let upgrade = async {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let moved = s.post("/v1/tenants/default/plugins/helpdesk/upgrade", json!({})).await;
        done.store(true, Ordering::Release);
        moved
    };
    let (moved, ..) = tokio::join!(upgrade, worker(0), worker(1), worker(2), worker(3));
    let moved = moved.expect(200).body;
    assert_eq!(moved["to"], "2.0.0");
    let (ok, failed) = (ok.into_inner(), failed.into_inner());
    assert_eq!(failed, 0, "{failed} of {} requests failed during the upgrade", ok + failed);
    assert!(ok >= 20, "the storm ran: {ok} requests");
    // Every ticket, old and new, is found through the index the move built, once.
    let all = count(&s, &format!("{TICKETS}?limit=100")).await;
    let mut by_category = 0;
    for category in ["storm", "storm-0", "storm-1", "storm-2", "storm-3"] {
        by_category += count(&s, &format!("{TICKETS}?category={category}&limit=100")).await;
    }
    assert_eq!(by_category, all, "each ticket's category entry is there exactly once");
    assert!(all >= 20);
}

/// The items of every page of `path`.
async fn count(s: &TestServer, path: &str) -> usize {
    let (mut total, mut cursor) = (0, None::<String>);
    loop {
        let page = match &cursor {
            Some(c) => s.get(&format!("{path}&cursor={c}")).await,
            None => s.get(path).await,
        }
        .expect(200)
        .body;
        total += page["items"].as_array().unwrap().len();
        match page["next"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return total,
        }
    }
}

/// The helpdesk at 3.0.0, asking for a collection and a permission 2.0.0 did not.
fn helpdesk_3() -> Vec<u8> {
    let source = manifest_source("helpdesk");
    let more = format!(
        "{}\n[[collections]]\nname = \"exports\"\n",
        source.replacen("[permissions]\n", "[permissions]\n\"helpdesk.export\" = \"Export the tenant's tickets\"\n", 1)
    );
    assert!(more.contains("\"helpdesk.export\" ="), "test setup: the permissions table changed shape");
    embed_manifest(&raw_component("keel-plugin-helpdesk"), &with_version(&more, "3.0.0")).unwrap()
}

#[tokio::test]
async fn a_version_asking_for_more_waits_for_a_tenant_admin_to_approve_exactly_what_is_new() {
    let s = TestServer::start().await;
    s.upload(helpdesk_2()).await.expect(201);
    let acme = s.tenant_with_token("acme", "tenant-admin").await;
    as_admin_of(&s, &acme, Method::POST, "/v1/tenants/acme/plugins/helpdesk/enable", None).await.expect(200);
    s.upload(helpdesk_3()).await.expect(201);
    let upgrade = "/v1/tenants/default/plugins/helpdesk/upgrade";
    let new = json!(["collection:exports", "permission:helpdesk.export"]);

    let preview = s.get(upgrade).await.expect(200).body;
    assert_eq!((preview["from"].as_str(), preview["to"].as_str()), (Some("2.0.0"), Some("3.0.0")), "{preview}");
    assert_eq!(preview["approval_required"], new, "{preview}");

    // Without approval, with part of it, or with more than is new: refused, nothing moves.
    for approve in [
        json!([]),
        json!(["permission:helpdesk.export"]),
        json!(["collection:exports", "permission:helpdesk.export", "capability:jobs"]),
    ] {
        let refused = s.post(upgrade, json!({ "approve": approve })).await.expect_problem(409, "approval-required");
        assert_eq!(refused.body["requested"], new, "{}", refused.body);
    }
    assert_eq!(listed(&s, "default").await["version"], "2.0.0");

    // A rollout leaves acme waiting for its admin, and says so.
    let report = s.post("/v1/admin/plugins/helpdesk/rollout", json!({ "tenants": ["acme"] })).await.expect(200).body;
    assert_eq!(report["awaiting_approval"][0]["tenant"], "acme", "{report}");
    assert_eq!(report["awaiting_approval"][0]["requested"], new);
    assert_eq!((report["complete"].as_bool(), report["moved"].as_array().map(Vec::len)), (Some(false), Some(0)));
    assert_eq!(listed(&s, "acme").await["version"], "2.0.0");

    // The exact list moves the tenant; going back asks for nothing.
    let moved = s.post(upgrade, json!({ "approve": new })).await.expect(200).body;
    assert_eq!(moved["to"], "3.0.0", "{moved}");
    let audit = s.get("/v1/tenants/default/audit?action=tenant.plugin.upgrade").await.expect(200).body;
    assert!(audit.to_string().contains("permission:helpdesk.export"), "the approval is audited: {audit}");
    let back = s.get(&format!("{upgrade}?version=2.0.0")).await.expect(200).body;
    assert_eq!(back["approval_required"], json!([]), "{back}");
    s.post(upgrade, json!({ "version": "2.0.0" })).await.expect(200);
}

#[tokio::test]
async fn a_pinned_version_is_what_new_tenants_get_until_it_is_unpinned() {
    let s = TestServer::start().await;
    s.upload(helpdesk_1()).await.expect(201);
    s.upload(helpdesk_2()).await.expect(201);
    let pinned = s.put("/v1/admin/plugins/helpdesk/pin", json!({ "version": "1.0.0" })).await.expect(200).body;
    assert_eq!(pinned["version"], "1.0.0");
    let versions = s.get("/v1/admin/plugins/helpdesk/versions").await.expect(200).body;
    assert_eq!((versions["active_version"].as_str(), versions["pinned"].as_bool()), (Some("1.0.0"), Some(true)));

    // A newer install is added beside the pinned version, which stays active.
    let added = s.upload(helpdesk_3()).await.expect(201).body;
    assert_eq!(added["outcome"], "added", "{added}");
    assert_eq!(s.get("/v1/admin/plugins/helpdesk").await.expect(200).body["version"], "1.0.0");
    let acme = s.tenant_with_token("acme", "tenant-admin").await;
    as_admin_of(&s, &acme, Method::POST, "/v1/tenants/acme/plugins/helpdesk/enable", None).await.expect(200);
    assert_eq!(listed(&s, "acme").await["version"], "1.0.0");

    s.put("/v1/admin/plugins/helpdesk/pin", json!({ "version": "4.0.0" }))
        .await
        .expect_problem(404, "version-not-found");
    s.put("/v1/admin/plugins/nothing/pin", json!({ "version": "1.0.0" })).await.expect_problem(404, "plugin-not-found");
    s.put("/v1/admin/plugins/helpdesk/pin", json!({})).await.expect_problem(422, "invalid-request");

    // Unpinned: the newest is active again; acme keeps what it runs.
    let unpinned = s.delete("/v1/admin/plugins/helpdesk/pin").await.expect(200).body;
    assert_eq!(unpinned["version"], "3.0.0");
    let globex = s.tenant_with_token("globex", "tenant-admin").await;
    as_admin_of(&s, &globex, Method::POST, "/v1/tenants/globex/plugins/helpdesk/enable", None).await.expect(200);
    assert_eq!(listed(&s, "globex").await["version"], "3.0.0");
    assert_eq!(listed(&s, "acme").await["version"], "1.0.0");
}
