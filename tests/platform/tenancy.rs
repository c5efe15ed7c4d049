//! Tenants, per-tenant enablement, tenant tokens and roles: the authorization matrix, over
//! HTTP against the real server with the real helpdesk plugin.

use keel_tests::TestServer;
use reqwest::Method;
use serde_json::{Value, json};

const T: &str = "/v1/plugins/helpdesk/tickets";

/// A server with the helpdesk installed and switched on for tenants `acme` and `globex`,
/// and a tenant-admin token for each.
async fn two_tenants() -> (TestServer, String, String) {
    let s = TestServer::with_plugins(&["bundled/helpdesk"]).await;
    let acme = s.tenant_with_token("acme", "tenant-admin").await;
    let globex = s.tenant_with_token("globex", "tenant-admin").await;
    for (tenant, token) in [("acme", &acme), ("globex", &globex)] {
        s.as_token(Some(token), Method::POST, &format!("/v1/tenants/{tenant}/plugins/helpdesk/enable"), None)
            .await
            .expect(200);
    }
    (s, acme, globex)
}

#[tokio::test]
async fn tenants_are_created_listed_and_validated() {
    let s = TestServer::start().await;
    let t = s.post("/v1/admin/tenants", json!({ "id": "acme", "name": "Acme Ltd" })).await.expect(201).body;
    assert_eq!((t["id"].as_str(), t["status"].as_str()), (Some("acme"), Some("active")));
    s.post("/v1/admin/tenants", json!({ "id": "acme", "name": "again" })).await.expect_problem(409, "tenant-exists");
    s.post("/v1/admin/tenants", json!({ "id": "Bad Id", "name": "x" })).await.expect_problem(422, "invalid-field");
    s.post("/v1/admin/tenants", json!({ "id": "ok-id" })).await.expect_problem(422, "invalid-request");
    let ids: Vec<_> = s.get("/v1/admin/tenants").await.expect(200).body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["acme", "default"]);
    assert_eq!(s.get("/v1/admin/tenants/acme").await.expect(200).body["name"], "Acme Ltd");
    s.get("/v1/admin/tenants/nope").await.expect_problem(404, "tenant-not-found");
}

#[tokio::test]
async fn a_plugin_serves_a_tenant_only_once_that_tenant_switches_it_on() {
    let s = TestServer::with_plugins(&["bundled/helpdesk"]).await;
    let acme = s.tenant_with_token("acme", "tenant-admin").await;
    s.as_token(Some(&acme), Method::GET, T, None).await.expect_problem(404, "plugin-not-found");
    let plugins = s.as_token(Some(&acme), Method::GET, "/v1/tenants/acme/plugins", None).await.expect(200).body;
    assert_eq!(plugins["items"][0]["enabled"], false);
    s.as_token(Some(&acme), Method::POST, "/v1/tenants/acme/plugins/helpdesk/enable", None).await.expect(200);
    s.as_token(Some(&acme), Method::GET, T, None).await.expect(200);
    s.as_token(Some(&acme), Method::POST, "/v1/tenants/acme/plugins/helpdesk/disable", None).await.expect(200);
    s.as_token(Some(&acme), Method::GET, T, None).await.expect_problem(404, "plugin-not-found");
    s.as_token(Some(&acme), Method::POST, "/v1/tenants/acme/plugins/payroll/enable", None)
        .await
        .expect_problem(404, "plugin-not-found");
    // The default tenant, where it was installed, kept it.
    s.get(T).await.expect(200);
}

#[tokio::test]
async fn two_tenants_get_separate_tickets_numbering_and_queries() {
    let (s, acme, globex) = two_tenants().await;
    let file = async |token: &str, title: &str| {
        s.as_token(Some(token), Method::POST, T, Some(json!({ "title": title, "priority": "P1" }))).await
    };
    assert_eq!(file(&acme, "acme printer").await.expect(201).body["number"], 1);
    assert_eq!(file(&acme, "acme vpn").await.expect(201).body["number"], 2);
    assert_eq!(file(&globex, "globex laptop").await.expect(201).body["number"], 1, "numbering is per tenant");

    let titles = |body: &Value| {
        body["items"].as_array().unwrap().iter().map(|t| t["title"].as_str().unwrap().to_owned()).collect::<Vec<_>>()
    };
    assert_eq!(
        titles(&s.as_token(Some(&acme), Method::GET, &format!("{T}?priority=P1"), None).await.expect(200).body),
        ["acme vpn", "acme printer"]
    );
    assert_eq!(titles(&s.as_token(Some(&globex), Method::GET, T, None).await.expect(200).body), ["globex laptop"]);

    // Globex cannot read, update, move or comment on Acme's ticket 2: it does not exist for them.
    s.as_token(Some(&globex), Method::GET, &format!("{T}/2"), None).await.expect_problem(404, "ticket-not-found");
    s.as_token(Some(&globex), Method::PATCH, &format!("{T}/2"), Some(json!({ "title": "mine now" })))
        .await
        .expect_problem(404, "ticket-not-found");
    s.as_token(Some(&globex), Method::POST, &format!("{T}/2/transition"), Some(json!({ "to": "open" })))
        .await
        .expect_problem(404, "ticket-not-found");
    // Globex's ticket 1 is its own; Acme's ticket 1 is untouched by Globex's update.
    s.as_token(Some(&globex), Method::PATCH, &format!("{T}/1"), Some(json!({ "title": "globex edit" })))
        .await
        .expect(200);
    assert_eq!(
        s.as_token(Some(&acme), Method::GET, &format!("{T}/1"), None).await.expect(200).body["title"],
        "acme printer"
    );
}

#[tokio::test]
async fn the_authorization_matrix_holds() {
    let (s, acme_admin, globex_admin) = two_tenants().await;
    let path = format!("{T}");
    // No token, a malformed one, an unknown one: 401.
    s.as_token(None, Method::GET, &path, None).await.expect_problem(401, "missing-token");
    s.as_token(Some("not-a-keel-token"), Method::GET, &path, None).await.expect_problem(401, "malformed-token");
    s.as_token(Some("keel_0123456789_AAAA"), Method::GET, &path, None).await.expect_problem(401, "invalid-token");

    // A revoked token: 401 at once.
    let created = s
        .as_token(
            Some(&acme_admin),
            Method::POST,
            "/v1/tenants/acme/tokens",
            Some(json!({ "name": "temp", "role": "member" })),
        )
        .await
        .expect(201)
        .body;
    let (temp, temp_id) = (created["token"].as_str().unwrap().to_owned(), created["id"].as_str().unwrap().to_owned());
    s.as_token(Some(&temp), Method::GET, "/v1/tenants/acme/plugins", None).await.expect_problem(403, "forbidden");
    s.as_token(Some(&acme_admin), Method::DELETE, &format!("/v1/tenants/acme/tokens/{temp_id}"), None)
        .await
        .expect(204);
    s.as_token(Some(&temp), Method::GET, &path, None).await.expect_problem(401, "invalid-token");

    // A token with a lifetime authenticates (403: known, but no permission) until the
    // platform clock reaches its expiry, then 401, also from the verification cache.
    let short = s
        .as_token(
            Some(&acme_admin),
            Method::POST,
            "/v1/tenants/acme/tokens",
            Some(json!({ "name": "short", "role": "member", "ttl_seconds": 60 })),
        )
        .await
        .expect(201)
        .body;
    let expires_at = short["expires_at"].as_i64().unwrap();
    let short = short["token"].as_str().unwrap().to_owned();
    s.as_token(Some(&short), Method::GET, &path, None).await.expect_problem(403, "forbidden");
    let now = s.advance_clock(60_000).await;
    assert!(now >= expires_at, "the clock moved past the expiry ({now} < {expires_at})");
    s.as_token(Some(&short), Method::GET, &path, None).await.expect_problem(401, "invalid-token");

    // A member without the permission: 403; with read granted: reads but cannot write.
    let member = s
        .as_token(
            Some(&acme_admin),
            Method::POST,
            "/v1/tenants/acme/tokens",
            Some(json!({ "name": "ana", "role": "member" })),
        )
        .await
        .expect(201)
        .body["token"]
        .as_str()
        .unwrap()
        .to_owned();
    s.as_token(Some(&member), Method::GET, &path, None).await.expect_problem(403, "forbidden");
    s.as_token(
        Some(&acme_admin),
        Method::PUT,
        "/v1/tenants/acme/roles/member/permissions",
        Some(json!({ "permissions": ["helpdesk.ticket.read"] })),
    )
    .await
    .expect(200);
    s.as_token(Some(&member), Method::GET, &path, None).await.expect(200);
    s.as_token(Some(&member), Method::POST, &path, Some(json!({ "title": "x" })))
        .await
        .expect_problem(403, "forbidden");
    // A member cannot grant themselves more.
    s.as_token(
        Some(&member),
        Method::PUT,
        "/v1/tenants/acme/roles/member/permissions",
        Some(json!({ "permissions": ["helpdesk.ticket.write"] })),
    )
    .await
    .expect_problem(403, "forbidden");
    // Grants name real permissions only.
    s.as_token(
        Some(&acme_admin),
        Method::PUT,
        "/v1/tenants/acme/roles/member/permissions",
        Some(json!({ "permissions": ["payroll.run"] })),
    )
    .await
    .expect_problem(422, "unknown-permission");

    // A tenant admin cannot act on another tenant (it does not exist for them) nor on the platform.
    s.as_token(Some(&acme_admin), Method::GET, "/v1/tenants/globex/tokens", None)
        .await
        .expect_problem(404, "tenant-not-found");
    s.as_token(Some(&acme_admin), Method::POST, "/v1/tenants/globex/plugins/helpdesk/disable", None)
        .await
        .expect_problem(404, "tenant-not-found");
    s.as_token(
        Some(&acme_admin),
        Method::POST,
        "/v1/tenants/globex/tokens",
        Some(json!({ "name": "x", "role": "tenant-admin" })),
    )
    .await
    .expect_problem(404, "tenant-not-found");
    s.as_token(Some(&acme_admin), Method::POST, "/v1/admin/tenants", Some(json!({ "id": "evil", "name": "x" })))
        .await
        .expect_problem(403, "forbidden");
    s.as_token(Some(&acme_admin), Method::GET, "/v1/admin/plugins", None).await.expect_problem(403, "forbidden");
    let upload = s
        .http
        .post(format!("{}/v1/admin/plugins", s.base))
        .bearer_auth(&acme_admin)
        .body(keel_tests::artifact("fixtures/hostile"));
    s.send(upload).await.expect_problem(403, "forbidden");
    // Nor mint a platform-admin token.
    s.as_token(
        Some(&acme_admin),
        Method::POST,
        "/v1/tenants/acme/tokens",
        Some(json!({ "name": "x", "role": "platform-admin" })),
    )
    .await
    .expect_problem(403, "forbidden");
    // Globex's admin still works, untouched by all of the above.
    s.as_token(Some(&globex_admin), Method::GET, &path, None).await.expect(200);
}

#[tokio::test]
async fn token_lists_show_no_secrets() {
    let (s, acme_admin, _) = two_tenants().await;
    let list = s.as_token(Some(&acme_admin), Method::GET, "/v1/tenants/acme/tokens", None).await.expect(200);
    let text = list.body.to_string();
    assert!(!text.contains(&acme_admin), "a token list must not contain a token");
    assert!(
        list.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t.get("token").is_none() && t["prefix"].as_str().is_some())
    );
}

#[tokio::test]
async fn a_suspended_tenant_is_refused_and_keeps_its_data() {
    let (s, acme, globex) = two_tenants().await;
    s.as_token(Some(&acme), Method::POST, T, Some(json!({ "title": "before suspension" }))).await.expect(201);
    s.post_empty("/v1/admin/tenants/acme/suspend").await.expect(200);
    s.as_token(Some(&acme), Method::GET, T, None).await.expect_problem(403, "tenant-suspended");
    s.as_token(Some(&globex), Method::GET, T, None).await.expect(200);
    s.post_empty("/v1/admin/tenants/default/suspend").await.expect_problem(409, "cannot-suspend-default");
    s.post_empty("/v1/admin/tenants/acme/resume").await.expect(200);
    assert_eq!(
        s.as_token(Some(&acme), Method::GET, &format!("{T}/1"), None).await.expect(200).body["title"],
        "before suspension"
    );
}

#[tokio::test]
async fn the_audit_log_records_writes_and_admin_actions_per_tenant_and_cannot_be_edited() {
    let (s, acme, globex) = two_tenants().await;
    let reply = s.as_token(Some(&acme), Method::POST, T, Some(json!({ "title": "audited" }))).await.expect(201);
    let request_id = reply.headers["x-request-id"].to_str().unwrap().to_owned();
    s.as_token(Some(&acme), Method::POST, &format!("{T}/1/transition"), Some(json!({ "to": "open" })))
        .await
        .expect(200);
    // A refused call writes nothing, so it leaves no document entries.
    s.as_token(Some(&acme), Method::POST, &format!("{T}/1/transition"), Some(json!({ "to": "new" }))).await.expect(409);
    s.as_token(Some(&globex), Method::POST, T, Some(json!({ "title": "globex's" }))).await.expect(201);

    let log = s.as_token(Some(&acme), Method::GET, "/v1/tenants/acme/audit", None).await.expect(200).body;
    let items = log["items"].as_array().unwrap();
    assert!(items.iter().all(|e| e["tenant"] == "acme"), "a tenant sees only its own entries");
    let puts: Vec<_> = items.iter().filter(|e| e["action"] == "document.put").collect();
    // Create: the ticket and its four SLA timers (a warning and a deadline per target; its
    // number comes from a sequence, not a document); transition: the ticket.
    assert_eq!(puts.len(), 6, "{log}");
    let created = puts
        .iter()
        .find(|e| e["collection"] == "tickets" && e["request_id"] == request_id.as_str())
        .expect("the create is audited");
    assert_eq!((created["plugin"].as_str(), created["key"].as_str()), (Some("helpdesk"), Some("000000000001")));
    assert!(created["actor"].as_str().unwrap().starts_with("tok_"));
    assert_eq!(created["actor_name"], "tenant-admin of acme");
    assert!(items.iter().any(|e| e["action"] == "tenant.plugin.enable" && e["plugin"] == "helpdesk"));

    let only_puts = s
        .as_token(Some(&acme), Method::GET, "/v1/tenants/acme/audit?action=document.put&limit=2", None)
        .await
        .expect(200)
        .body;
    assert_eq!(only_puts["items"].as_array().unwrap().len(), 2);
    let next = only_puts["next_after"].as_i64().expect("a second page");
    let rest = s
        .as_token(Some(&acme), Method::GET, &format!("/v1/tenants/acme/audit?action=document.put&after={next}"), None)
        .await
        .expect(200)
        .body;
    assert_eq!(rest["items"].as_array().unwrap().len(), 4, "six puts: two, then the other four");
    let ids =
        |page: &Value| page["items"].as_array().unwrap().iter().map(|e| e["id"].as_i64().unwrap()).collect::<Vec<_>>();
    let oldest_first: Vec<i64> = ids(&only_puts).into_iter().chain(ids(&rest)).collect();

    // Newest first, paged back with `before`: the same six, the other way round.
    let audit = |query: String| {
        let (s, acme) = (&s, &acme);
        async move { s.as_token(Some(acme), Method::GET, &format!("/v1/tenants/acme/audit?{query}"), None).await }
    };
    let newest = audit("action=document.put&order=newest&limit=4".into()).await.expect(200).body;
    assert!(newest.get("next_after").is_none_or(Value::is_null), "{newest}");
    let before = newest["next_before"].as_i64().expect("an older page");
    let older = audit(format!("action=document.put&order=newest&before={before}")).await.expect(200).body;
    assert!(older.get("next_before").is_none(), "the end: {older}");
    let newest_first: Vec<i64> = ids(&newest).into_iter().chain(ids(&older)).collect();
    assert_eq!(newest_first, oldest_first.iter().rev().copied().collect::<Vec<_>>());
    // Each cursor belongs to its order.
    audit(format!("order=newest&after={before}")).await.expect_problem(422, "invalid-cursor");
    audit(format!("before={before}")).await.expect_problem(422, "invalid-cursor");
    audit("order=sideways".into()).await.expect(400);

    // Tenant admins cannot read another tenant's log; the platform admin reads all of it.
    s.as_token(Some(&acme), Method::GET, "/v1/tenants/globex/audit", None)
        .await
        .expect_problem(404, "tenant-not-found");
    s.as_token(Some(&acme), Method::GET, "/v1/admin/audit", None).await.expect_problem(403, "forbidden");
    let all = s.get("/v1/admin/audit?limit=1000").await.expect(200).body;
    let actions: Vec<&str> = all["items"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    for action in ["plugin.install", "tenant.create", "token.create", "document.put"] {
        assert!(actions.contains(&action), "platform audit lacks {action}: {actions:?}");
    }
    assert!(all["items"].as_array().unwrap().iter().any(|e| e["tenant"] == "globex"));

    // No route edits it.
    for method in [Method::PUT, Method::PATCH, Method::DELETE, Method::POST] {
        let r = s.as_token(Some(&acme), method, "/v1/tenants/acme/audit", Some(json!({}))).await;
        assert_eq!(r.status, 405, "{}", r.body);
    }
}

/// Structural: every route under `/v1/tenants/{tenant}` (as the OpenAPI document lists
/// them) refuses another tenant's admin with 404 and the tenant's own members with 403,
/// before reading a body, and changes nothing.
#[tokio::test]
async fn every_tenant_route_refuses_other_tenants_and_members() {
    let (s, _acme, globex) = two_tenants().await;
    let member = s.token_for("acme", "member").await;
    let openapi = s.anonymous("/v1/openapi.json", None).await.expect(200).body;
    let mut checked = 0;
    for (path, item) in openapi["paths"].as_object().unwrap() {
        if !path.starts_with("/v1/tenants/{tenant}") {
            continue;
        }
        // Other parameters get values that would exist if the check were skipped.
        let concrete = path
            .replace("{tenant}", "acme")
            .replace("{plugin}", "helpdesk")
            .replace("{name}", "sla-check")
            .replace("{role}", "member")
            .replace("{id}", "job_x")
            .replace("{token}", "tok_x")
            .replace("{user}", "usr_x");
        assert!(!concrete.contains('{'), "test setup: give {path}'s parameters a value");
        for method in item.as_object().unwrap().keys() {
            let method: Method = method.to_uppercase().parse().unwrap();
            let body = (method != Method::GET && method != Method::DELETE).then(|| json!({}));
            let outsider = s.as_token(Some(&globex), method.clone(), &concrete, body.clone()).await;
            let insider = s.as_token(Some(&member), method.clone(), &concrete, body).await;
            // Platform-admin routes (setting quotas) refuse everyone else with 403; tenant-admin
            // routes hide the tenant from outsiders.
            let platform_only = path.ends_with("/quotas") && method != Method::GET;
            let expected = if platform_only { (403, "forbidden") } else { (404, "tenant-not-found") };
            assert_eq!(
                (outsider.status, outsider.code()),
                expected,
                "{method} {path} as another tenant's admin: {}",
                outsider.body
            );
            assert_eq!(
                (insider.status, insider.code()),
                (403, "forbidden"),
                "{method} {path} as a member: {}",
                insider.body
            );
            checked += 1;
        }
    }
    assert!(checked >= 25, "only {checked} tenant routes found");
    // Nothing changed: neither caller left an audit entry anywhere.
    let audit = s.get("/v1/admin/audit?limit=1000").await.expect(200).body;
    let entries = audit["items"].as_array().unwrap();
    let by = |actor: &str, tenant: &str| {
        entries.iter().filter(|e| e["actor_name"] == actor && e["tenant"] == tenant).count()
    };
    assert!(by("tenant-admin of acme", "acme") > 0, "test setup: the audit names its actors: {audit}");
    assert_eq!(by("member of acme", "acme"), 0, "{audit}");
    assert_eq!(by("tenant-admin of globex", "acme"), 0, "{audit}");
}

/// A tenant deletes what it stored with one plugin: documents, numbering and settings go,
/// the other tenant's and the audit log stay; it must switch the plugin off and name it.
#[tokio::test]
async fn a_tenant_purges_one_plugins_data_and_nothing_else() {
    let (s, acme, globex) = two_tenants().await;
    for title in ["Printer", "VPN"] {
        s.as_token(Some(&acme), Method::POST, T, Some(json!({ "title": title }))).await.expect(201);
    }
    let settings = "/v1/tenants/acme/plugins/helpdesk/settings";
    s.as_token(Some(&acme), Method::PATCH, settings, Some(json!({ "values": { "default-priority": "P1" } })))
        .await
        .expect(200);
    let theirs = s.as_token(Some(&globex), Method::POST, T, Some(json!({ "title": "Mail" }))).await.expect(201).body;

    let purge = "/v1/tenants/acme/plugins/helpdesk/purge";
    let confirmed = json!({ "confirm": "helpdesk" });
    s.as_token(Some(&acme), Method::POST, purge, Some(confirmed.clone())).await.expect_problem(409, "plugin-enabled");
    s.as_token(Some(&acme), Method::GET, &format!("{T}/1"), None).await.expect(200);
    s.as_token(Some(&acme), Method::POST, "/v1/tenants/acme/plugins/helpdesk/disable", None).await.expect(200);
    s.as_token(Some(&acme), Method::POST, purge, Some(json!({ "confirm": "crm" })))
        .await
        .expect_problem(422, "confirmation-mismatch");
    let member = s.token_for("acme", "member").await;
    s.as_token(Some(&member), Method::POST, purge, Some(confirmed.clone())).await.expect_problem(403, "forbidden");
    // Another tenant's admin cannot even see it.
    s.as_token(Some(&globex), Method::POST, purge, Some(confirmed.clone()))
        .await
        .expect_problem(404, "tenant-not-found");

    let stored = s.as_token(Some(&acme), Method::GET, "/v1/tenants/acme/quotas", None).await.expect(200).body["usage"]
        ["documents"]
        .as_u64()
        .unwrap();
    assert!(stored >= 2, "two tickets at least");
    let report = s.as_token(Some(&acme), Method::POST, purge, Some(confirmed)).await.expect(200).body;
    assert_eq!((report["documents"].as_u64(), report["settings"].as_u64()), (Some(stored), Some(1)), "{report}");
    let quotas = s.as_token(Some(&acme), Method::GET, "/v1/tenants/acme/quotas", None).await.expect(200).body;
    assert_eq!(quotas["usage"]["documents"], 0, "{quotas}");

    // Switched on again it starts empty: no tickets, numbering from 1, default settings.
    s.as_token(Some(&acme), Method::POST, "/v1/tenants/acme/plugins/helpdesk/enable", None).await.expect(200);
    assert_eq!(s.as_token(Some(&acme), Method::GET, T, None).await.expect(200).body["items"], json!([]));
    let fresh = s.as_token(Some(&acme), Method::POST, T, Some(json!({ "title": "Again" }))).await.expect(201).body;
    assert_eq!((fresh["number"].as_u64(), fresh["priority"].as_str()), (Some(1), Some("P3")), "{fresh}");
    // Globex's ticket is untouched.
    let kept = s.as_token(Some(&globex), Method::GET, &format!("{T}/1"), None).await.expect(200).body;
    assert_eq!(kept["title"], theirs["title"]);
    // The purge is audited; the documents' own audit entries are kept.
    let audit = s
        .as_token(Some(&acme), Method::GET, "/v1/tenants/acme/audit?action=tenant.plugin.purge", None)
        .await
        .expect(200)
        .body;
    let cancelled = report["jobs_cancelled"].as_u64().expect("a count of cancelled jobs");
    assert_eq!(
        audit["items"][0]["detail"],
        json!({ "documents": stored, "settings": 1, "jobs_cancelled": cancelled }),
        "{audit}"
    );
    let puts =
        s.as_token(Some(&acme), Method::GET, "/v1/tenants/acme/audit?action=document.put", None).await.expect(200).body;
    assert!(puts["items"].as_array().unwrap().len() >= 3, "{puts}");
}
