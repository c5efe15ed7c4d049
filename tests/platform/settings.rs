//! Plugin settings: declared in the manifest, set per tenant by its admins over the API,
//! read by the plugin with `config.get`; secrets written but never read back.

use keel_tests::TestServer;
use reqwest::Method;
use serde_json::{Value, json};

const T: &str = "/v1/plugins/helpdesk/tickets";

fn setting<'a>(listing: &'a Value, name: &str) -> &'a Value {
    listing["items"].as_array().unwrap().iter().find(|s| s["name"] == name).unwrap_or_else(|| panic!("no {name}"))
}

async fn two_tenants() -> (TestServer, String, String) {
    let s = TestServer::with_plugins(&["bundled/helpdesk", "fixtures/hostile"]).await;
    let mut admins = Vec::new();
    for tenant in ["acme", "globex"] {
        let admin = s.tenant_with_token(tenant, "tenant-admin").await;
        for plugin in ["helpdesk", "hostile"] {
            s.as_token(Some(&admin), Method::POST, &format!("/v1/tenants/{tenant}/plugins/{plugin}/enable"), None)
                .await
                .expect(200);
        }
        admins.push(admin);
    }
    let globex = admins.pop().unwrap();
    (s, admins.pop().unwrap(), globex)
}

#[tokio::test]
async fn each_tenant_sets_its_own_helpdesk_defaults() {
    let (s, acme, globex) = two_tenants().await;
    let path = "/v1/tenants/acme/plugins/helpdesk/settings";
    let before = s.as_token(Some(&acme), Method::GET, path, None).await.expect(200).body;
    let priority = setting(&before, "default-priority");
    assert_eq!(
        (priority["value"].as_str(), priority["default"].as_str(), priority["set"].as_bool()),
        (Some("P3"), Some("P3"), Some(false))
    );
    assert_eq!(priority["choices"], json!(["P1", "P2", "P3", "P4"]));

    let change = json!({ "values": { "default-priority": "P1", "default-category": "hardware" } });
    let after = s.as_token(Some(&acme), Method::PATCH, path, Some(change)).await.expect(200).body;
    assert_eq!(
        (setting(&after, "default-priority")["value"].as_str(), setting(&after, "default-priority")["set"].as_bool()),
        (Some("P1"), Some(true))
    );

    // Acme's tickets take Acme's defaults; Globex keeps the manifest's.
    let filed = s.as_token(Some(&acme), Method::POST, T, Some(json!({ "title": "Printer" }))).await.expect(201).body;
    assert_eq!((filed["priority"].as_str(), filed["category"].as_str()), (Some("P1"), Some("hardware")));
    let theirs = s.as_token(Some(&globex), Method::POST, T, Some(json!({ "title": "Mail" }))).await.expect(201).body;
    assert_eq!((theirs["priority"].as_str(), theirs["category"].as_str()), (Some("P3"), Some("general")));
    // A ticket that names its priority keeps it.
    let named =
        s.as_token(Some(&acme), Method::POST, T, Some(json!({ "title": "VPN", "priority": "P4" }))).await.expect(201);
    assert_eq!(named.body["priority"], "P4");

    // `null` gives a setting its default again.
    let reset = json!({ "values": { "default-priority": null } });
    let back = s.as_token(Some(&acme), Method::PATCH, path, Some(reset)).await.expect(200).body;
    assert_eq!(
        (setting(&back, "default-priority")["value"].as_str(), setting(&back, "default-priority")["set"].as_bool()),
        (Some("P3"), Some(false))
    );
    let filed = s.as_token(Some(&acme), Method::POST, T, Some(json!({ "title": "Screen" }))).await.expect(201).body;
    assert_eq!((filed["priority"].as_str(), filed["category"].as_str()), (Some("P3"), Some("hardware")));

    let audit = s
        .as_token(Some(&acme), Method::GET, "/v1/tenants/acme/audit?action=plugin.settings.change", None)
        .await
        .expect(200)
        .body;
    assert_eq!(audit["items"].as_array().unwrap().len(), 2, "{audit}");
}

#[tokio::test]
async fn bad_settings_are_refused_naming_the_setting_and_nothing_changes() {
    let (s, acme, globex) = two_tenants().await;
    let path = "/v1/tenants/acme/plugins/hostile/settings";
    let patch = |values: Value| s.as_token(Some(&acme), Method::PATCH, path, Some(json!({ "values": values })));
    let refusals = [
        (json!({ "volume": 11 }), "unknown-setting", "`volume` is not a setting of this plugin"),
        (json!({ "retries": 11 }), "invalid-setting", "setting `retries` must be in 0..=10"),
        (json!({ "retries": "3" }), "invalid-setting", "setting `retries` must be an integer"),
        (json!({ "retries": 2.5 }), "invalid-setting", "setting `retries` must be an integer"),
        (json!({ "loud": "yes" }), "invalid-setting", "setting `loud` must be a boolean"),
        (json!({ "greeting": ["hi"] }), "invalid-setting", "setting `greeting` must be a string"),
        (json!({ "greeting": "x".repeat(5000) }), "invalid-setting", "setting `greeting` is longer than 4096 bytes"),
        // One good change and one bad: neither is saved.
        (json!({ "greeting": "bonjour", "retries": -1 }), "invalid-setting", "setting `retries` must be in 0..=10"),
        (json!({}), "invalid-field", "`values` names no setting"),
    ];
    for (values, code, detail) in refusals {
        let reply = patch(values.clone()).await.expect_problem(422, code);
        assert_eq!(reply.body["detail"], detail, "{values}");
    }
    let read = s.as_token(Some(&acme), Method::GET, "/v1/plugins/hostile/settings", None).await.expect(200).body;
    assert_eq!(
        read,
        json!({ "greeting": "hello", "retries": 3, "loud": false, "api_key_set": false, "api_key_matches": false })
    );

    // Good values of each type reach the plugin.
    patch(json!({ "greeting": "bonjour", "retries": 10, "loud": true })).await.expect(200);
    let read = s.as_token(Some(&acme), Method::GET, "/v1/plugins/hostile/settings", None).await.expect(200).body;
    assert_eq!(
        (read["greeting"].as_str(), read["retries"].as_i64(), read["loud"].as_bool()),
        (Some("bonjour"), Some(10), Some(true))
    );

    // Who may: the tenant's admins, not its members, not another tenant's admins.
    let member = s.token_for("acme", "member").await;
    s.as_token(Some(&member), Method::GET, path, None).await.expect_problem(403, "forbidden");
    s.as_token(Some(&member), Method::PATCH, path, Some(json!({ "values": { "loud": false } })))
        .await
        .expect_problem(403, "forbidden");
    s.as_token(Some(&globex), Method::GET, path, None).await.expect_problem(404, "tenant-not-found");
    s.as_token(Some(&acme), Method::GET, "/v1/tenants/acme/plugins/payroll/settings", None)
        .await
        .expect_problem(404, "plugin-not-found");
    // Globex's hostile still has the defaults.
    let theirs = s.as_token(Some(&globex), Method::GET, "/v1/plugins/hostile/settings", None).await.expect(200).body;
    assert_eq!(theirs["greeting"], "hello");
}

#[tokio::test]
async fn a_secret_setting_reaches_the_plugin_and_is_never_read_back() {
    let (s, acme, _) = two_tenants().await;
    let path = "/v1/tenants/acme/plugins/hostile/settings";
    let secret = "sk-live-4b1d-never-shown";
    let listing = s.as_token(Some(&acme), Method::GET, path, None).await.expect(200).body;
    assert_eq!(
        (setting(&listing, "api-key")["secret"].as_bool(), setting(&listing, "api-key")["set"].as_bool()),
        (Some(true), Some(false))
    );

    let changed = s.as_token(Some(&acme), Method::PATCH, path, Some(json!({ "values": { "api-key": secret } }))).await;
    assert_eq!(changed.status, 200, "{}", changed.body);
    let listed = s.as_token(Some(&acme), Method::GET, path, None).await.expect(200).body;
    for body in [&changed.body, &listed] {
        assert!(!body.to_string().contains(secret), "the secret is echoed: {body}");
        let key = setting(body, "api-key");
        assert_eq!((key["set"].as_bool(), &key["value"]), (Some(true), &Value::Null));
    }
    // The plugin reads it (it compares it with a guess sent in a header).
    let guess = |g: &str| {
        s.http.get(format!("{}/v1/plugins/hostile/settings", s.base)).bearer_auth(&acme).header("x-guess", g.to_owned())
    };
    assert_eq!(s.send(guess(secret)).await.expect(200).body["api_key_matches"], true);
    assert_eq!(s.send(guess("sk-live-wrong")).await.expect(200).body["api_key_matches"], false);
    // The audit names the secret setting, never its value.
    let audit = s
        .as_token(Some(&acme), Method::GET, "/v1/tenants/acme/audit?action=plugin.settings.change", None)
        .await
        .expect(200)
        .body;
    assert_eq!(audit["items"][0]["detail"]["settings"], json!(["api-key"]), "{audit}");
    assert!(!audit.to_string().contains(secret), "the secret is in the audit: {audit}");
    // Reset: the plugin no longer has it.
    s.as_token(Some(&acme), Method::PATCH, path, Some(json!({ "values": { "api-key": null } }))).await.expect(200);
    assert_eq!(s.send(guess(secret)).await.expect(200).body["api_key_set"], false);

    // Uninstalled (without purge) and installed again: ordinary settings stay, like documents;
    // secrets do not (a plugin installed later under the same id must not read them).
    let change = json!({ "values": { "api-key": secret, "greeting": "kept" } });
    s.as_token(Some(&acme), Method::PATCH, path, Some(change)).await.expect(200);
    // An export of the tenant's data carries the ordinary setting, names the secret as left
    // out, and never holds its value.
    let export = s.as_token(Some(&acme), Method::GET, "/v1/tenants/acme/plugins/hostile/export", None).await;
    let text = export.expect(200).body.as_str().unwrap().to_owned();
    assert!(!text.contains(secret), "the secret is in the export: {text}");
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines[0]["secrets-omitted"], json!(["api-key"]), "{text}");
    assert!(lines.contains(&json!({ "kind": "setting", "name": "greeting", "value": "kept" })), "{text}");
    s.delete("/v1/admin/plugins/hostile").await.expect(204);
    s.install("fixtures/hostile").await.expect(201);
    s.as_token(Some(&acme), Method::POST, "/v1/tenants/acme/plugins/hostile/enable", None).await.expect(200);
    let read = s.send(guess(secret)).await.expect(200).body;
    assert_eq!((read["greeting"].as_str(), read["api_key_set"].as_bool()), (Some("kept"), Some(false)), "{read}");
}
