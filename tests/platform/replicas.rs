//! Several hosts on one PostgreSQL database follow each other's changes: a plugin installed,
//! switched off or removed, a tenant moved to another version, a role's grants replaced, a
//! token revoked or a tenant suspended through one host is in force on the others within the
//! change feed's bound (`database.change-poll-ms`; normally at once, woken by NOTIFY).

use keel_tests::{TestServer, postgres_database};
use serde_json::json;
use std::time::{Duration, Instant};

/// A short poll, so the bound is tested, not the NOTIFY path alone.
const POLL_MS: u64 = 300;

/// Asks `base` with `token` until `status` comes back; how long that took.
async fn until_status(http: &reqwest::Client, base: &str, token: &str, path: &str, status: u16) -> Duration {
    let started = Instant::now();
    loop {
        let got = http.get(format!("{base}{path}")).bearer_auth(token).send().await.expect("request").status();
        if got.as_u16() == status {
            return started.elapsed();
        }
        if started.elapsed() > Duration::from_secs(20) {
            let body = http.get(format!("{base}{path}")).bearer_auth(token).send().await.unwrap().text().await.unwrap();
            let plugins = http
                .get(format!("{base}/v1/admin/plugins"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            panic!("{path} on {base} still answers {got}, not {status}: {body} {plugins}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_made_through_one_host_are_in_force_on_another_within_the_bound() {
    let url = postgres_database("replicas");
    let on_shared = |c: &mut keel_host::Config| {
        c.database.url = Some(url.clone());
        c.database.change_poll_ms = POLL_MS;
    };
    let a = TestServer::start_with(on_shared).await;
    let b = a.start_replica(on_shared).await;
    let b_base = format!("http://{}", b.addr);
    let http = reqwest::Client::new();
    let admin = a.token.clone();
    let mut waits = Vec::new();

    // Installed through A: B loads it from the database (same digest) and serves it.
    a.install("bundled/helpdesk").await.expect(201);
    a.post("/v1/plugins/helpdesk/tickets", json!({ "title": "filed on A" })).await.expect(201);
    waits.push(until_status(&http, &b_base, &admin, "/v1/plugins/helpdesk/tickets/1", 200).await);
    let listed: serde_json::Value =
        http.get(format!("{b_base}/v1/admin/plugins")).bearer_auth(&admin).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed["items"][0]["id"], "helpdesk", "{listed}");

    // A role's grants replaced through A: B lets the member in, then out again.
    let member = a.token_for("default", "member").await;
    let grants = "/v1/tenants/default/roles/member/permissions";
    // (A member reads the tickets they filed: the list, not another's ticket.)
    let tickets = "/v1/plugins/helpdesk/tickets";
    until_status(&http, &b_base, &member, tickets, 403).await;
    a.put(grants, json!({ "permissions": ["helpdesk.ticket.read"] })).await.expect(200);
    waits.push(until_status(&http, &b_base, &member, tickets, 200).await);
    a.put(grants, json!({ "permissions": [] })).await.expect(200);
    waits.push(until_status(&http, &b_base, &member, tickets, 403).await);

    // Switched off for the tenant through A: B answers 404; on again: 200.
    a.post_empty("/v1/tenants/default/plugins/helpdesk/disable").await.expect(200);
    waits.push(until_status(&http, &b_base, &admin, "/v1/plugins/helpdesk/tickets/1", 404).await);
    a.post_empty("/v1/tenants/default/plugins/helpdesk/enable").await.expect(200);
    waits.push(until_status(&http, &b_base, &admin, "/v1/plugins/helpdesk/tickets/1", 200).await);

    // The tenant moved through A to a version B never loaded (one without the `category`
    // index): B serves it that version, then the first one again when A moves it back.
    let source = keel_tests::manifest_source("helpdesk");
    let narrower = source.replace(r#""requester", "category", "reference"]"#, r#""requester", "reference"]"#);
    assert_ne!(narrower, source, "test setup: the tickets index list changed shape");
    let narrower = keel_tests::with_version(&narrower, "99.0.0");
    let artifact = keel_host::artifact::embed_manifest(&keel_tests::raw_component("keel-plugin-helpdesk"), &narrower);
    a.upload(artifact.unwrap()).await.expect(201);
    let by_category = "/v1/plugins/helpdesk/tickets?category=general";
    until_status(&http, &b_base, &admin, by_category, 200).await;
    a.post("/v1/tenants/default/plugins/helpdesk/upgrade", json!({})).await.expect(200);
    waits.push(until_status(&http, &b_base, &admin, by_category, 403).await);
    let first = keel_tests::manifest_version("helpdesk");
    a.post("/v1/tenants/default/plugins/helpdesk/upgrade", json!({ "version": first })).await.expect(200);
    waits.push(until_status(&http, &b_base, &admin, by_category, 200).await);

    // A token revoked through B stops working on A (whose cache had just verified it).
    let reader = a.token_for("default", "tenant-admin").await;
    a.as_token(Some(&reader), reqwest::Method::GET, "/v1/plugins/helpdesk/tickets/1", None).await.expect(200);
    let tokens: serde_json::Value = http
        .get(format!("{b_base}/v1/tenants/default/tokens"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = tokens["items"].as_array().unwrap().iter().find(|t| t["name"] == "tenant-admin of default").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let revoked = http
        .delete(format!("{b_base}/v1/tenants/default/tokens/{id}"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .status();
    assert!(revoked.is_success(), "{revoked}");
    waits.push(until_status(&http, &a.base, &reader, "/v1/plugins/helpdesk/tickets/1", 401).await);

    // Removed through B: A stops serving it.
    let removed =
        http.delete(format!("{b_base}/v1/admin/plugins/helpdesk")).bearer_auth(&admin).send().await.unwrap().status();
    assert!(removed.is_success(), "{removed}");
    waits.push(until_status(&http, &a.base, &admin, "/v1/plugins/helpdesk/tickets/1", 404).await);

    // Each change was in force within the poll bound, with room for a loaded machine.
    let slowest = waits.iter().max().copied().unwrap();
    eprintln!("replicas: changes in force on the other host after {waits:?}");
    assert!(slowest < Duration::from_millis(POLL_MS * 10), "{waits:?}");
    b.shutdown().await;
}
