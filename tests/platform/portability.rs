//! A tenant's data of one plugin exported as JSON Lines and imported into another tenant:
//! the round trip, and every way an import is refused without leaving anything behind.

use keel_tests::TestServer;
use reqwest::Method;
use serde_json::{Value, json};

const T: &str = "/v1/plugins/helpdesk/tickets";

/// The helpdesk on for `acme` (with tickets, a comment, a setting) and installed but off
/// for `globex`, which holds nothing; a tenant-admin token for each.
async fn filled_and_empty() -> (TestServer, String, String) {
    let s = TestServer::with_plugins(&["bundled/helpdesk"]).await;
    let acme = s.tenant_with_token("acme", "tenant-admin").await;
    let globex = s.tenant_with_token("globex", "tenant-admin").await;
    s.as_token(Some(&acme), Method::POST, "/v1/tenants/acme/plugins/helpdesk/enable", None).await.expect(200);
    let settings = "/v1/tenants/acme/plugins/helpdesk/settings";
    s.as_token(Some(&acme), Method::PATCH, settings, Some(json!({ "values": { "default-priority": "P1" } })))
        .await
        .expect(200);
    for title in ["Printer on fire", "VPN down", "New laptop \"urgent\"\nsecond line"] {
        s.as_token(Some(&acme), Method::POST, T, Some(json!({ "title": title }))).await.expect(201);
    }
    s.as_token(Some(&acme), Method::POST, &format!("{T}/2/comments"), Some(json!({ "body": "Rebooted the router" })))
        .await
        .expect(201);
    (s, acme, globex)
}

fn export_path(tenant: &str) -> String {
    format!("/v1/tenants/{tenant}/plugins/helpdesk/export")
}

fn import_path(tenant: &str) -> String {
    format!("/v1/tenants/{tenant}/plugins/helpdesk/import")
}

/// The export's text and its lines parsed.
async fn export(s: &TestServer, token: &str, tenant: &str) -> (String, Vec<Value>) {
    let reply = s.as_token(Some(token), Method::GET, &export_path(tenant), None).await.expect(200);
    assert_eq!(reply.headers.get("content-type").unwrap(), "application/x-ndjson");
    let text = reply.body.as_str().expect("JSON Lines are not one JSON value").to_owned();
    let lines = text.lines().map(|l| serde_json::from_str(l).expect("every line is JSON")).collect();
    (text, lines)
}

async fn import(s: &TestServer, token: &str, tenant: &str, file: String) -> keel_tests::Reply {
    let request = s
        .http
        .post(format!("{}{}", s.base, import_path(tenant)))
        .bearer_auth(token)
        .header("content-type", "application/x-ndjson")
        .body(file);
    s.send(request).await
}

async fn documents_stored(s: &TestServer, token: &str, tenant: &str) -> u64 {
    let quotas = s.as_token(Some(token), Method::GET, &format!("/v1/tenants/{tenant}/quotas"), None).await.expect(200);
    quotas.body["usage"]["documents"].as_u64().unwrap()
}

fn documents(lines: &[Value]) -> Vec<&Value> {
    lines.iter().filter(|l| l["kind"] == "document").collect()
}

#[tokio::test]
async fn a_tenants_helpdesk_data_round_trips_into_another_tenant() {
    let (s, acme, globex) = filled_and_empty().await;
    let stored = documents_stored(&s, &acme, "acme").await;
    let (text, lines) = export(&s, &acme, "acme").await;

    // Header first: what it is, whose, from which version; then settings, sequences,
    // documents; the `end` line counts them.
    let header = &lines[0];
    assert_eq!((header["format"].as_str(), header["format-version"].as_u64()), (Some("keel-plugin-data"), Some(1)));
    assert_eq!((header["tenant"].as_str(), header["plugin"].as_str()), (Some("acme"), Some("helpdesk")));
    assert_eq!(header["plugin-enabled"], true, "{header}");
    let installed = s.get("/v1/admin/plugins/helpdesk").await.expect(200).body;
    assert_eq!((&header["version"], &header["digest"]), (&installed["version"], &installed["digest"]));
    assert!(header["collections"].as_array().unwrap().contains(&json!("tickets")), "{header}");
    assert!(lines.contains(&json!({ "kind": "setting", "name": "default-priority", "value": "P1" })), "{text}");
    let sequences: Vec<&Value> = lines.iter().filter(|l| l["kind"] == "sequence").collect();
    assert!(sequences.iter().any(|l| l["value"] == 3), "ticket numbers reached 3: {sequences:?}");
    assert_eq!(documents(&lines).len() as u64, stored, "every stored document, once");
    let end = lines.last().unwrap();
    assert_eq!(
        end,
        &json!({ "kind": "end", "documents": stored, "settings": 1, "sequences": sequences.len() }),
        "{text}"
    );
    // One document per line, even one whose title has a line break (escaped in its string).
    assert!(text.contains(r#"\"urgent\"\nsecond line"#), "{text}");
    assert_eq!(text.lines().count(), lines.len());

    // Globex (helpdesk off there, nothing stored) takes the file.
    let report = import(&s, &globex, "globex", text.clone()).await.expect(200).body;
    assert_eq!(
        (report["documents"].as_u64(), report["settings"].as_u64(), report["from_tenant"].as_str()),
        (Some(stored), Some(1), Some("acme")),
        "{report}"
    );
    assert_eq!(documents_stored(&s, &globex, "globex").await, stored);
    // Exported from globex now, its documents are the file's, byte for byte (bodies and
    // versions kept), and so are its setting and sequences.
    let (again, parsed) = export(&s, &globex, "globex").await;
    assert_eq!(parsed[0]["plugin-enabled"], false);
    assert_eq!(parsed[0]["tenant"], "globex");
    assert_eq!(text.lines().skip(1).collect::<Vec<_>>(), again.lines().skip(1).collect::<Vec<_>>());

    // Switched on, globex has acme's tickets (numbers, titles, comments), its setting, and
    // numbering goes on from 3.
    s.as_token(Some(&globex), Method::POST, "/v1/tenants/globex/plugins/helpdesk/enable", None).await.expect(200);
    let theirs = s.as_token(Some(&acme), Method::GET, &format!("{T}/2"), None).await.expect(200).body;
    let ours = s.as_token(Some(&globex), Method::GET, &format!("{T}/2"), None).await.expect(200).body;
    assert_eq!(ours, theirs);
    let comments = s.as_token(Some(&globex), Method::GET, &format!("{T}/2/comments"), None).await.expect(200).body;
    assert_eq!(comments["items"][0]["body"], "Rebooted the router", "{comments}");
    let next = s.as_token(Some(&globex), Method::POST, T, Some(json!({ "title": "Fresh" }))).await.expect(201).body;
    assert_eq!((next["number"].as_u64(), next["priority"].as_str()), (Some(4), Some("P1")), "{next}");
    // Acme's own numbering is its own.
    let mine = s.as_token(Some(&acme), Method::POST, T, Some(json!({ "title": "Mine" }))).await.expect(201).body;
    assert_eq!(mine["number"].as_u64(), Some(4), "{mine}");

    // Both moves are audited, with counts and never the data.
    let audit = |tenant: &'static str, token: String, action: &'static str| {
        let s = &s;
        async move {
            let path = format!("/v1/tenants/{tenant}/audit?action={action}");
            s.as_token(Some(&token), Method::GET, &path, None).await.expect(200).body["items"].clone()
        }
    };
    let exported = audit("acme", acme.clone(), "tenant.plugin.export").await;
    assert_eq!(exported[0]["detail"]["settings"], 1, "{exported}");
    let imported = audit("globex", globex.clone(), "tenant.plugin.import").await;
    assert_eq!(imported[0]["detail"]["documents"], stored, "{imported}");
    assert_eq!(imported[0]["detail"]["from_tenant"], "acme", "{imported}");
}

/// Every refusal leaves the tenant as it was: nothing stored, and a good file still goes in.
#[tokio::test]
async fn a_refused_import_leaves_nothing_behind() {
    let (s, acme, globex) = filled_and_empty().await;
    let (text, lines) = export(&s, &acme, "acme").await;
    let join = |lines: &[Value]| lines.iter().map(|l| format!("{l}\n")).collect::<String>();
    let with = |at: usize, line: Value| {
        let mut changed = lines.clone();
        changed.insert(at, line);
        changed
    };
    let end_at = lines.len() - 1;
    let mut count_one_more = lines.clone();
    count_one_more[end_at]["documents"] = json!(lines[end_at]["documents"].as_u64().unwrap() + 1);
    let a_document = documents(&lines)[0].clone();
    let mut wrong_plugin = lines.clone();
    wrong_plugin[0]["plugin"] = json!("crm");
    let mut newer = lines.clone();
    newer[0]["version"] = json!("99.0.0");
    // Written by 0.8.0, whose tickets the installed helpdesk's migration gives references.
    let mut before_migration = lines.clone();
    before_migration[0]["version"] = json!("0.8.0");
    let mut later_format = lines.clone();
    later_format[0]["format-version"] = json!(2);
    let cases: Vec<(String, u16, &str)> = vec![
        (join(&lines[..end_at]), 422, "export-incomplete"),
        (join(&count_one_more), 422, "export-incomplete"),
        (
            join(&with(end_at + 1, json!({ "kind": "setting", "name": "default-category", "value": "x" }))),
            422,
            "invalid-export",
        ),
        (join(&with(end_at, a_document.clone())), 422, "duplicate-document"),
        (
            join(&with(
                end_at,
                json!({ "kind": "document", "collection": "payslips", "key": "k", "version": 1, "body": {} }),
            )),
            422,
            "unknown-collection",
        ),
        (
            join(&with(
                end_at,
                json!({ "kind": "document", "collection": "tickets", "key": "", "version": 1, "body": {} }),
            )),
            422,
            "invalid-document",
        ),
        (
            join(&with(end_at, json!({ "kind": "setting", "name": "no-such-setting", "value": "x" }))),
            422,
            "invalid-setting",
        ),
        (
            join(&with(end_at, json!({ "kind": "setting", "name": "sla-warning-percent", "value": "many" }))),
            422,
            "invalid-setting",
        ),
        (join(&with(end_at, json!({ "kind": "sequence", "name": "Bad Name", "value": 3 }))), 422, "invalid-export"),
        (join(&with(end_at, json!({ "kind": "shrug" }))), 422, "invalid-export"),
        (join(&wrong_plugin), 422, "export-plugin-mismatch"),
        (join(&newer), 409, "export-newer-than-plugin"),
        (join(&before_migration), 409, "export-needs-migration"),
        (join(&later_format), 422, "unsupported-export-version"),
        (text.replacen('{', "[", 1), 422, "invalid-export"),
        (String::new(), 422, "invalid-export"),
        (format!("{}{{\"kind\":\"document\",\"body\":{{}}}}\n", join(&lines[..1])), 422, "invalid-export"),
    ];
    for (i, (file, status, code)) in cases.into_iter().enumerate() {
        let reply = import(&s, &globex, "globex", file).await;
        assert_eq!((reply.status, reply.code()), (status, code), "case {i}: {}", reply.body);
        assert!(reply.is_problem(), "case {i}");
        assert_eq!(documents_stored(&s, &globex, "globex").await, 0, "case {i} left documents behind");
    }
    // Invalid UTF-8 and a line past the size limit.
    let mut bytes = text.clone().into_bytes();
    bytes.insert(text.find('\n').unwrap() + 5, 0xff);
    let request = s.http.post(format!("{}{}", s.base, import_path("globex"))).bearer_auth(&globex).body(bytes);
    s.send(request).await.expect_problem(422, "invalid-encoding");
    let huge = format!("{}{}\n", join(&lines[..1]), "x".repeat(1_100_000));
    import(&s, &globex, "globex", huge).await.expect_problem(413, "line-too-large");

    // A refusal after batches were committed: 1,200 documents, the last one bad. The first
    // thousand were saved before the bad line was read; they are removed again.
    let mut many = vec![lines[0].clone()];
    for n in 0..1200 {
        let key = format!("bulk-{n:05}");
        let mut d = a_document.clone();
        d["key"] = json!(key);
        if n == 1199 {
            d["collection"] = json!("nope");
        }
        many.push(d);
    }
    many.push(json!({ "kind": "end", "documents": 1200, "settings": 0, "sequences": 0 }));
    import(&s, &globex, "globex", join(&many)).await.expect_problem(422, "unknown-collection");
    assert_eq!(documents_stored(&s, &globex, "globex").await, 0);
    // Past a batch boundary, a key seen in an earlier batch is still a duplicate.
    many[1200] = many[1].clone();
    import(&s, &globex, "globex", join(&many)).await.expect_problem(422, "duplicate-document");
    assert_eq!(documents_stored(&s, &globex, "globex").await, 0);

    // The good file goes in, also as written by an older version no migration lies
    // between (0.9.0: the migration is from before it); then a second import finds data
    // there; the plugin must be off.
    let mut older = lines.clone();
    older[0]["version"] = json!("0.9.0");
    import(&s, &globex, "globex", join(&older)).await.expect(200);
    s.as_token(
        Some(&globex),
        Method::POST,
        "/v1/tenants/globex/plugins/helpdesk/purge",
        Some(json!({ "confirm": "helpdesk" })),
    )
    .await
    .expect(200);
    import(&s, &globex, "globex", text.clone()).await.expect(200);
    import(&s, &globex, "globex", text.clone()).await.expect_problem(409, "plugin-data-exists");
    import(&s, &acme, "acme", text.clone()).await.expect_problem(409, "plugin-enabled");
    // Nobody else's data moved.
    let theirs = s.as_token(Some(&acme), Method::GET, T, None).await.expect(200).body;
    assert_eq!(theirs["items"].as_array().unwrap().len(), 3);
}
