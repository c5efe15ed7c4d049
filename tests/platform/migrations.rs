//! Data migrations between versions (`keel:platform/migrator`): a tenant's move to a version
//! that migrates from the one it runs runs the hook in chunks and commits its writes with the
//! move, or changes nothing. The fixture is `plugins/fixtures/notebook`, packaged under
//! later manifests: 2.0.0 indexes `words`, which its migration from 1.x fills in (and takes
//! out going back); 3.x adds `revision` from 2.x, with no way back.

use keel_host::artifact::embed_manifest;
use keel_tests::{TestServer, manifest_source, raw_component, with_version};
use serde_json::{Value, json};

const NOTES: &str = "/v1/plugins/notebook/notes";
const UPGRADE: &str = "/v1/tenants/default/plugins/notebook/upgrade";

/// The notebook at `version`: with the `words` index from 2.0.0 on, `migrations` appended,
/// and `fail` as the default of its `fail-migration` setting.
fn notebook(version: &str, migrations: &str, fail: &str) -> Vec<u8> {
    let mut text = with_version(&manifest_source("fixtures/notebook"), version);
    if !version.starts_with("1.") {
        let indexed = text.replace(
            "[[collections]]\nname = \"notes\"\n",
            "[[collections]]\nname = \"notes\"\nindexes = [{ field = \"words\", type = \"integer\" }]\n",
        );
        assert_ne!(indexed, text, "test setup: the notes collection changed shape");
        text = indexed;
    }
    let failing = text.replace("default = \"none\"", &format!("default = \"{fail}\""));
    assert!(fail == "none" || failing != text, "test setup: the setting changed shape");
    embed_manifest(&raw_component("keel-plugin-notebook"), &format!("{failing}\n{migrations}")).unwrap()
}

const FROM_1_AND_BACK: &str = "[[migrations]]\nfrom = \"^1\"\ndown = true\n";
const FROM_2_ONLY: &str = "[[migrations]]\nfrom = \"^2\"\n";

/// `n` notes, note `i` of `i % 5 + 1` words.
async fn write_notes(s: &TestServer, n: usize) {
    for i in 0..n {
        let text = vec!["word"; i % 5 + 1].join(" ");
        s.put(&format!("{NOTES}/n{i:03}"), json!({ "text": text })).await.expect(200);
    }
}

/// Every note, by key.
async fn all_notes(s: &TestServer) -> Vec<Value> {
    let (mut out, mut cursor) = (Vec::new(), None::<String>);
    loop {
        let path = match &cursor {
            Some(c) => format!("{NOTES}?limit=100&cursor={c}"),
            None => format!("{NOTES}?limit=100"),
        };
        let page = s.get(&path).await.expect(200).body;
        out.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return out,
        }
    }
}

/// The documents of the tenant's export: every note's key, version and body as stored.
async fn stored(s: &TestServer) -> Vec<String> {
    let export = s.get("/v1/tenants/default/plugins/notebook/export").await.expect(200).body;
    let text = export.as_str().expect("JSON Lines are not one JSON value").to_owned();
    text.lines().filter(|l| l.contains("\"kind\":\"document\"")).map(str::to_owned).collect()
}

async fn version_of_default(s: &TestServer) -> String {
    let body = s.get("/v1/tenants/default/plugins").await.expect(200).body;
    let row = body["items"].as_array().unwrap().iter().find(|p| p["id"] == "notebook").unwrap().clone();
    row["version"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_migration_fills_a_new_field_in_chunks_and_the_rollback_takes_it_out() {
    let s = TestServer::start().await;
    s.upload(notebook("1.0.0", "", "none")).await.expect(201);
    write_notes(&s, 100).await;
    s.upload(notebook("2.0.0", FROM_1_AND_BACK, "none")).await.expect(201);

    let moved = s.post(UPGRADE, json!({})).await.expect(200).body;
    let migration = &moved["migration"];
    assert_eq!(
        (migration["direction"].as_str(), migration["version"].as_str()),
        (Some("up"), Some("2.0.0")),
        "{moved}"
    );
    // 100 notes, 40 a chunk.
    assert_eq!((migration["chunks"].as_u64(), migration["documents"].as_u64()), (Some(3), Some(100)), "{moved}");
    assert_eq!(version_of_default(&s).await, "2.0.0");
    let notes = all_notes(&s).await;
    assert_eq!(notes.len(), 100);
    for note in &notes {
        let words = note["note"]["text"].as_str().unwrap().split_whitespace().count();
        assert_eq!(note["note"]["words"].as_u64(), Some(words as u64), "{note}");
    }
    // The new index answers for every migrated note: 20 notes of each length.
    for words in 1..=5 {
        let found = s.get(&format!("{NOTES}?words={words}&limit=100")).await.expect(200).body;
        assert_eq!(found["items"].as_array().unwrap().len(), 20, "words={words}");
    }

    // Back to 1.0.0: the migration runs down and the index goes with the version.
    let back = s.post(UPGRADE, json!({ "version": "1.0.0" })).await.expect(200).body;
    assert_eq!(
        (back["migration"]["direction"].as_str(), back["migration"]["version"].as_str()),
        (Some("down"), Some("2.0.0"))
    );
    assert!(all_notes(&s).await.iter().all(|n| n["note"].get("words").is_none()), "words are taken out");
    s.get(&format!("{NOTES}?words=1")).await.expect_problem(403, "forbidden");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_that_traps_errs_or_never_ends_leaves_the_tenant_and_its_data_as_they_were() {
    let s = TestServer::start().await;
    s.upload(notebook("1.0.0", "", "none")).await.expect(201);
    write_notes(&s, 60).await;
    s.upload(notebook("2.0.0", FROM_1_AND_BACK, "none")).await.expect(201);
    s.post(UPGRADE, json!({})).await.expect(200);
    let before = stored(&s).await;
    assert_eq!(before.len(), 60);

    for (version, fail, says) in
        [("3.0.0", "trap", "trap"), ("3.0.1", "error", "migration-refused"), ("3.0.2", "loop", "did not answer within")]
    {
        s.upload(notebook(version, FROM_2_ONLY, fail)).await.expect(201);
        let refused = s.post(UPGRADE, json!({ "version": version })).await.expect_problem(409, "migration-failed");
        let detail = refused.body["detail"].as_str().unwrap();
        assert!(detail.contains(says) && detail.contains(version), "{fail}: {detail}");
        assert_eq!(version_of_default(&s).await, "2.0.0", "{fail}: the tenant stays");
        assert_eq!(stored(&s).await, before, "{fail}: the data is byte for byte as it was");
    }
    // The index of the version it stays on still answers.
    let found = s.get(&format!("{NOTES}?words=2&limit=100")).await.expect(200).body;
    assert_eq!(found["items"].as_array().unwrap().len(), 12);
}

#[tokio::test]
async fn a_note_the_hook_refuses_stops_the_migration_with_its_error_and_nothing_moves() {
    let s = TestServer::start().await;
    s.upload(notebook("1.0.0", "", "none")).await.expect(201);
    write_notes(&s, 50).await;
    s.put(&format!("{NOTES}/n045"), json!({ "text": "poison" })).await.expect(200);
    let before = stored(&s).await;
    s.upload(notebook("2.0.0", FROM_1_AND_BACK, "none")).await.expect(201);
    let refused = s.post(UPGRADE, json!({})).await.expect_problem(409, "migration-failed");
    assert!(refused.body["detail"].as_str().unwrap().contains("note `n045` cannot be migrated"), "{}", refused.body);
    assert_eq!(version_of_default(&s).await, "1.0.0");
    assert_eq!(stored(&s).await, before);
    // Fixed, it goes through.
    s.put(&format!("{NOTES}/n045"), json!({ "text": "cured" })).await.expect(200);
    s.post(UPGRADE, json!({})).await.expect(200);
    assert_eq!(s.get(&format!("{NOTES}/n045")).await.expect(200).body["words"], 1);
}

#[tokio::test]
async fn a_move_may_not_skip_a_migration_nor_go_back_past_one_without_a_way_back() {
    let s = TestServer::start().await;
    s.upload(notebook("1.0.0", "", "none")).await.expect(201);
    write_notes(&s, 10).await;
    s.upload(notebook("2.0.0", FROM_1_AND_BACK, "none")).await.expect(201);
    s.upload(notebook("3.1.0", FROM_2_ONLY, "none")).await.expect(201);

    // 3.1.0 migrates from 2.x only; 2.0.0 migrates 1.x: the tenant must go through it.
    let skipped = s.post(UPGRADE, json!({})).await.expect_problem(409, "migration-skipped");
    assert!(skipped.body["detail"].as_str().unwrap().contains("move to 2.0.0 first"), "{}", skipped.body);
    assert_eq!(version_of_default(&s).await, "1.0.0");
    s.post(UPGRADE, json!({ "version": "2.0.0" })).await.expect(200);
    let moved = s.post(UPGRADE, json!({ "version": "3.1.0" })).await.expect(200).body;
    assert_eq!(moved["migration"]["documents"], 10, "{moved}");
    assert!(all_notes(&s).await.iter().all(|n| n["note"]["revision"] == 3 && n["note"]["words"].is_u64()));

    // 3.1.0 declares no way back to 2.x: the rollback is refused, naming the migration.
    let before = stored(&s).await;
    let refused = s.post(UPGRADE, json!({ "version": "2.0.0" })).await.expect_problem(409, "migration-irreversible");
    assert!(refused.body["detail"].as_str().unwrap().contains("`^2`"), "{}", refused.body);
    assert_eq!(version_of_default(&s).await, "3.1.0");
    assert_eq!(stored(&s).await, before);
    // So is one across it, to 1.0.0 (2.0.0's way back would have to run too).
    s.post(UPGRADE, json!({ "version": "1.0.0" })).await.expect_problem(409, "migration-skipped");
}

/// Until the migration commits, requests go to the version the tenant runs (the `words`
/// index is not there yet); after, to the new one. No request fails either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_during_a_migration_are_served_by_the_old_version_then_the_new_one() {
    let s = TestServer::start().await;
    s.upload(notebook("1.0.0", "", "none")).await.expect(201);
    write_notes(&s, 200).await;
    s.upload(notebook("2.0.0", FROM_1_AND_BACK, "none")).await.expect(201);
    let done = std::sync::atomic::AtomicBool::new(false);
    let upgrade = async {
        let moved = s.post(UPGRADE, json!({})).await;
        done.store(true, std::sync::atomic::Ordering::Release);
        moved
    };
    let storm = async {
        let (mut old, mut new, mut failed) = (0, 0, Vec::new());
        while !done.load(std::sync::atomic::Ordering::Acquire) || new == 0 {
            let reply = s.get(&format!("{NOTES}?words=2&limit=100")).await;
            match (reply.status, reply.code()) {
                (403, "forbidden") if new == 0 => old += 1,
                (200, _) => new += 1,
                _ => failed.push(format!("{} {}", reply.status, reply.body)),
            }
            let one = s.get(&format!("{NOTES}/n007")).await;
            if one.status != 200 {
                failed.push(format!("{} {}", one.status, one.body));
            }
        }
        (old, new, failed)
    };
    let (moved, (old, new, failed)) = tokio::join!(upgrade, storm);
    moved.expect(200);
    assert!(failed.is_empty(), "failed during the migration: {failed:?}");
    assert!(new > 0, "the new version served after the move ({old} requests before it)");
}

/// The helpdesk's previous release (0.8.0), kept as built: it stored tickets without the
/// `reference` 0.9.0 gives them.
fn helpdesk_0_8_0() -> Vec<u8> {
    std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/helpdesk-0.8.0.wasm")).unwrap()
}

/// The real helpdesk's upgrade from its previous release: 10,000 tickets 0.8.0 stored get
/// their `HD-` reference from the migration, found through 0.9.0's new index; numbering goes
/// on; the rollback takes the references out again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_helpdesk_upgrade_from_its_previous_release_gives_ten_thousand_tickets_their_reference() {
    const TICKETS: &str = "/v1/plugins/helpdesk/tickets";
    const N: u64 = 10_000;
    let s = TestServer::start().await;
    let installed = s.upload(helpdesk_0_8_0()).await.expect(201).body;
    assert_eq!(installed["plugin"]["version"], "0.8.0");
    // One ticket as 0.8.0 files it, the shape of the other 9,999.
    s.post(TICKETS, json!({ "title": "Printer jammed", "priority": "P3" })).await.expect(201);
    let export = s.get("/v1/tenants/default/plugins/helpdesk/export").await.expect(200).body;
    let lines: Vec<Value> = export.as_str().unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let template = lines.iter().find(|l| l["kind"] == "document" && l["collection"] == "tickets").unwrap().clone();
    assert!(template["body"].get("reference").is_none(), "test setup: 0.8.0 stored no reference: {template}");
    let sequence = lines.iter().find(|l| l["kind"] == "sequence").unwrap()["name"].clone();
    let mut header = lines[0].clone();
    header["tenant"] = "default".into();
    header["plugin-enabled"] = false.into();
    header["collections"] = json!(["tickets"]);
    let mut file = vec![header.to_string(), json!({ "kind": "sequence", "name": sequence, "value": N }).to_string()];
    for n in 1..=N {
        let mut line = template.clone();
        line["key"] = format!("{n:012}").into();
        line["version"] = 1.into();
        line["body"]["number"] = n.into();
        line["body"]["title"] = format!("Ticket {n}").into();
        file.push(line.to_string());
    }
    file.push(json!({ "kind": "end", "documents": N, "settings": 0, "sequences": 1 }).to_string());

    // Into acme, which runs 0.8.0 (switched on once, off for the import).
    let acme = s.tenant_with_token("acme", "tenant-admin").await;
    let switch = |on: &str| format!("/v1/tenants/acme/plugins/helpdesk/{on}");
    s.as_token(Some(&acme), reqwest::Method::POST, &switch("enable"), None).await.expect(200);
    s.as_token(Some(&acme), reqwest::Method::POST, &switch("disable"), None).await.expect(200);
    let import = s
        .http
        .post(format!("{}/v1/tenants/acme/plugins/helpdesk/import", s.base))
        .bearer_auth(&acme)
        .header("content-type", "application/x-ndjson")
        .body(file.join("\n"));
    assert_eq!(s.send(import).await.expect(200).body["documents"], N);
    s.as_token(Some(&acme), reqwest::Method::POST, &switch("enable"), None).await.expect(200);

    // 0.9.0 installed: acme stays on 0.8.0 until its admin moves it.
    let current = s.install("bundled/helpdesk").await.expect(201).body;
    assert_eq!(current["plugin"]["version"], keel_tests::manifest_version("helpdesk"));
    let moved = s
        .as_token(Some(&acme), reqwest::Method::POST, "/v1/tenants/acme/plugins/helpdesk/upgrade", Some(json!({})))
        .await
        .expect(200)
        .body;
    let migration = &moved["migration"];
    assert_eq!((migration["direction"].as_str(), migration["documents"].as_u64()), (Some("up"), Some(N)), "{moved}");
    eprintln!(
        "helpdesk 0.8.0 -> {}: {N} tickets migrated in {} chunks, {} ms",
        moved["to"], migration["chunks"], migration["elapsed_ms"]
    );
    let found = s.as_token(Some(&acme), reqwest::Method::GET, &format!("{TICKETS}?reference=HD-004242"), None).await;
    let items = found.expect(200).body["items"].clone();
    assert_eq!((items.as_array().map(Vec::len), items[0]["number"].as_u64()), (Some(1), Some(4242)), "{items}");
    let filed = s
        .as_token(Some(&acme), reqwest::Method::POST, TICKETS, Some(json!({ "title": "After", "priority": "P2" })))
        .await
        .expect(201)
        .body;
    assert_eq!((filed["number"].as_u64(), filed["reference"].as_str()), (Some(N + 1), Some("HD-010001")));

    // Back to 0.8.0: the references go, every ticket is still there.
    let back = s
        .as_token(
            Some(&acme),
            reqwest::Method::POST,
            "/v1/tenants/acme/plugins/helpdesk/upgrade",
            Some(json!({ "version": "0.8.0" })),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(
        (back["migration"]["direction"].as_str(), back["migration"]["documents"].as_u64()),
        (Some("down"), Some(N + 1))
    );
    let one = s.as_token(Some(&acme), reqwest::Method::GET, &format!("{TICKETS}/4242"), None).await.expect(200).body;
    assert!(one.get("reference").is_none() && one["title"] == "Ticket 4242", "{one}");
}
