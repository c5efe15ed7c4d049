//! Bulk imports: a JSON Lines or CSV file of rows goes to the plugin's importer in batches
//! over one unit of work, and is committed whole or not at all. 50,000 rows with three bad
//! ones commit none and report exactly those three; without them all 50,000 land.

use keel_tests::TestServer;
use serde_json::{Value, json};

const IMPORT: &str = "/v1/imports/batch/items";
const JSONL: Option<&str> = Some("application/x-ndjson");

async fn stored_items(s: &TestServer) -> u64 {
    let mut items = 0;
    let mut cursor: Option<String> = None;
    loop {
        let path = cursor
            .as_ref()
            .map_or("/v1/plugins/batch/summary".to_owned(), |c| format!("/v1/plugins/batch/summary?cursor={c}"));
        let page = s.get(&path).await.expect(200).body;
        items += page["items"].as_u64().unwrap();
        match page["next"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return items,
        }
    }
}

fn rows(n: usize, bad: &[(usize, &str)]) -> Vec<u8> {
    let mut out = String::new();
    for i in 0..n {
        let line = match bad.iter().find(|(at, _)| *at == i) {
            Some((_, text)) => text.to_string(),
            None => json!({ "key": format!("item-{i:07}") }).to_string(),
        };
        out.push_str(&line);
        out.push('\n');
    }
    out.into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_thousand_rows_with_three_bad_ones_commit_none_and_report_exactly_those() {
    let s = TestServer::with_plugins(&["fixtures/batch"]).await;
    // Line numbers are 1-based: the rows at index 10, 25,000 and 49,999 are lines 11, 25,001
    // and 50,000; each bad in its own way (a bad key, a field of the wrong type, not JSON).
    let bad =
        [(10, r#"{"key":"Not Valid!"}"#), (25_000, r#"{"key":"fine-key","touched":"twice"}"#), (49_999, "{broken")];
    let refused = s.post_raw(IMPORT, JSONL, rows(50_000, &bad)).await.expect_problem(422, "import-rejected");
    let problems = refused.body["problems"].as_array().unwrap().clone();
    assert_eq!(refused.body["problems_total"], 3, "{}", refused.body);
    let lines: Vec<u64> = problems.iter().map(|p| p["line"].as_u64().unwrap()).collect();
    assert_eq!(lines, [11, 25_001, 50_000]);
    assert_eq!(problems[0]["field"], "key");
    assert_eq!(problems[1]["field"], "touched", "{}", problems[1]);
    assert!(problems[2]["reason"].as_str().unwrap().starts_with("not JSON"), "{}", problems[2]);
    assert_eq!(stored_items(&s).await, 0, "a refused import saves nothing");

    // The same file without them: every row is stored, in one commit.
    let done = s.post_raw(IMPORT, JSONL, rows(50_000, &[])).await.expect(200).body;
    assert_eq!(
        (done["rows"].as_u64(), done["documents"].as_u64(), done["committed"].as_bool()),
        (Some(50_000), Some(50_000), Some(true)),
        "{done}"
    );
    assert!(done["batches"].as_u64().unwrap() >= 100, "{done}");
    assert_eq!(stored_items(&s).await, 50_000);

    // Importing them again: every key exists, all 50,000 are problems, nothing changes;
    // the listing is capped and the total says how many there were.
    let again = s.post_raw(IMPORT, JSONL, rows(50_000, &[])).await.expect_problem(422, "import-rejected");
    assert_eq!(again.body["problems_total"], 50_000);
    assert_eq!(again.body["problems"].as_array().unwrap().len(), 10_000);
    assert_eq!(stored_items(&s).await, 50_000);
}

#[tokio::test]
async fn csv_dry_runs_and_bad_requests() {
    let s = TestServer::with_plugins(&["fixtures/batch"]).await;
    let csv = "key,touched\r\ncsv-1,0\r\n\"csv-2\",\"3\"\r\n";
    // CSV cells are strings: `touched` is "0", which the plugin's row type refuses.
    let refused = s.post_raw(IMPORT, Some("text/csv"), csv.into()).await.expect_problem(422, "import-rejected");
    assert_eq!(refused.body["problems"][0]["line"], 2);
    assert_eq!(refused.body["problems"][0]["field"], "touched");
    let csv = "key\ncsv-1\n\"csv-2\"\n";
    let dry = s.post_raw(&format!("{IMPORT}?dry-run=true"), Some("text/csv"), csv.into()).await.expect(200).body;
    assert_eq!((dry["rows"].as_u64(), dry["committed"].as_bool()), (Some(2), Some(false)), "{dry}");
    assert_eq!(stored_items(&s).await, 0, "a dry run saves nothing");
    let done = s.post_raw(&format!("{IMPORT}?format=csv"), None, csv.into()).await.expect(200).body;
    assert_eq!(done["documents"], 2);
    assert_eq!(stored_items(&s).await, 2);

    let body = || rows(3, &[]);
    s.post_raw(IMPORT, Some("application/json"), body()).await.expect_problem(415, "unsupported-media-type");
    s.post_raw(&format!("{IMPORT}?format=xlsx"), JSONL, body()).await.expect_problem(422, "invalid-format");
    s.post_raw("/v1/imports/batch/nothing", JSONL, body()).await.expect_problem(404, "import-not-found");
    s.post_raw("/v1/imports/ghost/items", JSONL, body()).await.expect_problem(404, "plugin-not-found");
    s.post_raw(IMPORT, JSONL, b"\n\n".to_vec()).await.expect_problem(422, "empty-import");
    s.post_raw(IMPORT, JSONL, vec![b'{', 0xff, b'}']).await.expect_problem(422, "invalid-encoding");
    let header = "a,a\n1,2\n";
    let refused = s.post_raw(IMPORT, Some("text/csv"), header.into()).await.expect_problem(422, "import-rejected");
    assert!(refused.body["problems"][0]["reason"].as_str().unwrap().contains("twice"), "{}", refused.body);

    // The import's permission: a member without it is refused before anything is read.
    let member = s.token_for("default", "member").await;
    let reply = s.as_token(Some(&member), reqwest::Method::POST, IMPORT, Some(Value::Null)).await;
    assert_eq!(reply.status, 403, "{}", reply.body);
}

#[tokio::test]
async fn files_past_the_limits_are_refused_before_the_plugin_runs() {
    let s = TestServer::start_with(|c| {
        c.limits.max_import_rows = 100;
        c.limits.max_import_bytes = 64 << 10;
    })
    .await;
    s.install("fixtures/batch").await.expect(201);
    s.post_raw(IMPORT, JSONL, rows(101, &[])).await.expect_problem(413, "too-many-rows");
    s.post_raw(IMPORT, JSONL, vec![b' '; 65 << 10]).await.expect_problem(413, "body-too-large");
    s.post_raw(IMPORT, JSONL, rows(100, &[])).await.expect(200);
}
