//! What one plugin call, one plugin and one tenant may take of shared capacity: storage
//! quotas with exact usage, the bytes a call may write and read, the queries it may make,
//! the response it may send, and the jobs it may queue. Each limit answers with its typed
//! error and leaves nothing partial behind.

use keel_tests::{Reply, TestServer};
use reqwest::Method;
use serde_json::{Value, json};

const N: &str = "/v1/plugins/noisy";

/// The bytes a blob written by the `noisy` fixture takes: its key and its JSON body.
fn blob_bytes(key: &str, tag: &str, size: usize) -> u64 {
    let body = json!({ "a": tag, "b": tag, "c": tag, "d": tag, "e": tag, "fill": "f".repeat(size) });
    (key.len() + body.to_string().len()) as u64
}

/// A server with `noisy` and the helpdesk switched on for tenant `acme`; returns acme's
/// tenant-admin token.
async fn acme_server(configure: impl FnOnce(&mut keel_host::Config)) -> (TestServer, String) {
    let s = TestServer::start_with(configure).await;
    s.install("fixtures/noisy").await.expect(201);
    s.install("bundled/helpdesk").await.expect(201);
    let token = s.tenant_with_token("acme", "tenant-admin").await;
    for plugin in ["noisy", "helpdesk"] {
        s.as_token(Some(&token), Method::POST, &format!("/v1/tenants/acme/plugins/{plugin}/enable"), None)
            .await
            .expect(200);
    }
    (s, token)
}

async fn write(s: &TestServer, token: &str, body: Value) -> Reply {
    s.as_token(Some(token), Method::POST, &format!("{N}/blobs"), Some(body)).await
}

async fn quotas(s: &TestServer, token: &str) -> Value {
    s.as_token(Some(token), Method::GET, "/v1/tenants/acme/quotas", None).await.expect(200).body
}

#[tokio::test]
async fn usage_is_reported_exactly_and_each_quota_refuses_with_its_typed_error_writing_nothing() {
    let (s, acme) = acme_server(|_| {}).await;
    write(&s, &acme, json!({ "count": 3, "size": 100, "prefix": "p", "tag": "x" })).await.expect(200);
    let expected: u64 = (0..3).map(|i| blob_bytes(&format!("p{i:06}"), "x", 100)).sum();
    let q = quotas(&s, &acme).await;
    assert_eq!(q["plugins"], json!([{ "plugin": "noisy", "documents": 3, "bytes": expected }]));
    assert_eq!((q["usage"]["documents"].as_u64(), q["usage"]["bytes"].as_u64()), (Some(3), Some(expected)));
    assert_eq!(q["quotas"]["plugin_documents"], 1_000_000, "the configured defaults apply");

    // Only a platform admin sets quotas; a tenant admin raising its own would defeat them.
    let mine =
        json!({ "tenant_documents": 100, "tenant_bytes": 1 << 20, "plugin_documents": 4, "plugin_bytes": 1 << 20 });
    s.as_token(Some(&acme), Method::PUT, "/v1/tenants/acme/quotas", Some(mine.clone()))
        .await
        .expect_problem(403, "forbidden");
    let bad = json!({ "tenant_documents": 3, "tenant_bytes": 1 << 20, "plugin_documents": 4, "plugin_bytes": 1 << 20 });
    s.put("/v1/tenants/acme/quotas", bad).await.expect_problem(422, "invalid-field");
    s.put("/v1/tenants/nope/quotas", mine.clone()).await.expect_problem(404, "tenant-not-found");
    s.put("/v1/tenants/acme/quotas", mine).await.expect(200);

    // Documents: 3 + 2 would pass the plugin's 4; nothing of the call is kept.
    let refused = write(&s, &acme, json!({ "count": 2, "size": 100, "prefix": "q", "tag": "x" }))
        .await
        .expect_problem(507, "quota-exceeded");
    assert!(refused.body["detail"].as_str().unwrap().contains("plugin's document quota of 4"), "{}", refused.body);
    assert_eq!(quotas(&s, &acme).await["usage"]["documents"], 3);
    write(&s, &acme, json!({ "count": 1, "size": 100, "prefix": "q", "tag": "x" })).await.expect(200);

    // Bytes: room for a little more, not for a large document.
    let used = quotas(&s, &acme).await["usage"]["bytes"].as_u64().unwrap();
    let tight =
        json!({ "tenant_documents": 100, "tenant_bytes": 1 << 20, "plugin_documents": 100, "plugin_bytes": used + 50 });
    s.put("/v1/tenants/acme/quotas", tight).await.expect(200);
    let refused = write(&s, &acme, json!({ "count": 1, "size": 500, "prefix": "r", "tag": "x" }))
        .await
        .expect_problem(507, "quota-exceeded");
    assert!(refused.body["detail"].as_str().unwrap().contains("storage quota"), "{}", refused.body);
    assert_eq!(quotas(&s, &acme).await["usage"]["bytes"], used, "a refused commit changes nothing");
    // Rewriting a document smaller always passes, even over a quota: the tenant can clean up.
    write(&s, &acme, json!({ "count": 1, "size": 10, "prefix": "p", "tag": "x" })).await.expect(200);
    let after = quotas(&s, &acme).await["usage"]["bytes"].as_u64().unwrap();
    assert_eq!(after, used - blob_bytes("p000000", "x", 100) + blob_bytes("p000000", "x", 10));

    // The tenant's quota counts every plugin: the helpdesk cannot add a ticket once the
    // tenant's documents are used up by the fixture.
    let docs = quotas(&s, &acme).await["usage"]["documents"].as_u64().unwrap();
    let full =
        json!({ "tenant_documents": docs, "tenant_bytes": 1 << 30, "plugin_documents": docs, "plugin_bytes": 1 << 30 });
    s.put("/v1/tenants/acme/quotas", full).await.expect(200);
    let refused = s
        .as_token(Some(&acme), Method::POST, "/v1/plugins/helpdesk/tickets", Some(json!({ "title": "full" })))
        .await
        .expect_problem(507, "quota-exceeded");
    assert!(refused.body["detail"].as_str().unwrap().contains("tenant's document quota"), "{}", refused.body);

    // The tenant's bytes: room for a few bytes more, not for another ticket.
    let total = quotas(&s, &acme).await["usage"]["bytes"].as_u64().unwrap();
    let bytes = json!({ "tenant_documents": 1000, "tenant_bytes": total + 100, "plugin_documents": 1000, "plugin_bytes": total + 100 });
    s.put("/v1/tenants/acme/quotas", bytes).await.expect(200);
    let refused = s
        .as_token(Some(&acme), Method::POST, "/v1/plugins/helpdesk/tickets", Some(json!({ "title": "too big now" })))
        .await
        .expect_problem(507, "quota-exceeded");
    assert!(refused.body["detail"].as_str().unwrap().contains("tenant's storage quota"), "{}", refused.body);
    assert_eq!(quotas(&s, &acme).await["usage"]["bytes"], total);

    let metrics = s.metrics().await;
    assert!(
        metrics.contains(&format!(r#"keel_storage_documents{{tenant="acme",plugin="noisy"}} {docs}"#)),
        "{metrics}"
    );
    assert!(metrics.contains(r#"keel_quota_refusals_total{tenant="acme",plugin="helpdesk"} 2"#), "{metrics}");

    let reset = s.delete("/v1/tenants/acme/quotas").await.expect(200).body;
    assert_eq!(reset["quotas"]["tenant_documents"], 2_000_000);
    s.as_token(Some(&acme), Method::POST, "/v1/plugins/helpdesk/tickets", Some(json!({ "title": "room again" })))
        .await
        .expect(201);
    // Setting and resetting quotas is audited.
    let audit = s.get("/v1/tenants/acme/audit?limit=100").await.expect(200).body;
    let actions: Vec<&str> = audit["items"].as_array().unwrap().iter().filter_map(|e| e["action"].as_str()).collect();
    assert!(actions.contains(&"tenant.quotas.set") && actions.contains(&"tenant.quotas.reset"), "{actions:?}");
}

#[tokio::test]
async fn a_call_may_write_only_its_commit_budget_and_a_refused_call_writes_nothing() {
    let (s, acme) = acme_server(|_| {}).await;
    // 9 documents of ~1 MB pass the 8 MiB a call may write: the ninth put is refused to the
    // plugin, which fails the call.
    let refused = write(&s, &acme, json!({ "count": 9, "size": 1_000_000, "prefix": "big" })).await.expect(422);
    assert!(refused.body["detail"].as_str().unwrap().contains("at most 8388608 bytes"), "{}", refused.body);
    assert_eq!(quotas(&s, &acme).await["usage"]["documents"], 0);
    write(&s, &acme, json!({ "count": 7, "size": 1_000_000, "prefix": "big" })).await.expect(200);
    assert_eq!(quotas(&s, &acme).await["usage"]["documents"], 7);
}

#[tokio::test]
async fn a_page_of_large_documents_stops_at_the_read_budget_and_paging_goes_on() {
    let (s, acme) = acme_server(|_| {}).await;
    write(&s, &acme, json!({ "count": 7, "size": 1_000_000, "prefix": "big" })).await.expect(200);
    // A thousand asked for; the 4 MiB read budget holds four of these.
    let page = s.as_token(Some(&acme), Method::GET, &format!("{N}/blobs?limit=1000"), None).await.expect(200).body;
    assert_eq!(page["count"], 4);
    assert!(page["next"].is_string(), "a short page still says there is more: {page}");
    // Small documents are not cut: the page limit is what ends them.
    write(&s, &acme, json!({ "count": 50, "size": 10, "prefix": "small" })).await.expect(200);
    let page = s.as_token(Some(&acme), Method::GET, &format!("{N}/blobs?limit=20"), None).await.expect(200).body;
    assert_eq!(page["count"], 4, "the seven large ones sort first and cut the page");
}

#[tokio::test]
async fn excessive_query_conditions_are_refused_as_invalid() {
    let (s, acme) = acme_server(|_| {}).await;
    write(&s, &acme, json!({ "count": 3, "size": 10, "prefix": "p", "tag": "x" })).await.expect(200);
    let path = format!("{N}/query");
    let query = |filters: Value| s.as_token(Some(&acme), Method::POST, &path, Some(json!({ "filters": filters })));
    let ok = query(json!([["a", "x"], ["b", "x"], ["c", "x"], ["d", "x"]])).await.expect(200);
    assert_eq!(ok.body["count"], 3);
    // The same condition twice is refused, naming it; a field may still take several
    // different conditions (a range is two).
    let repeated = query(json!([["a", "x"], ["b", "x"], ["a", "x"]])).await.expect(422);
    assert!(repeated.body["detail"].as_str().unwrap().contains("`a`"), "{}", repeated.body);
    assert!(repeated.body["detail"].as_str().unwrap().contains("given twice"), "{}", repeated.body);
    // The shape that held the database for seconds: one condition dozens of times.
    let storm = query(json!(vec![["a", "x"]; 40])).await.expect(422);
    assert!(storm.body["detail"].as_str().unwrap().contains("invalid query"), "{}", storm.body);
    // Nine different conditions are too many; eight are allowed (these contradict each
    // other, so nothing matches).
    let distinct = |n: usize| {
        let all = ["a", "b", "c", "d", "e"].iter().flat_map(|f| [[*f, "x"], [*f, "y"]]).take(n).collect::<Vec<_>>();
        json!(all)
    };
    let many = query(distinct(9)).await.expect(422);
    assert!(many.body["detail"].as_str().unwrap().contains("at most 8"), "{}", many.body);
    let most = query(distinct(8)).await.expect(200);
    assert_eq!(most.body["count"], 0);
}

#[tokio::test]
async fn plugin_responses_cannot_act_as_pages_of_the_platform_or_open_it_to_other_sites() {
    let (s, acme) = acme_server(|_| {}).await;
    let html = s.as_token(Some(&acme), Method::GET, &format!("{N}/html"), None).await.expect(200);
    let csp = html.headers.get("content-security-policy").and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert!(csp.starts_with("sandbox"), "{csp}");
    assert_eq!(html.headers.get("x-content-type-options").unwrap(), "nosniff");

    let cors = s.as_token(Some(&acme), Method::GET, &format!("{N}/cors"), None).await.expect(204);
    assert!(cors.headers.keys().all(|k| !k.as_str().starts_with("access-control-")), "{:?}", cors.headers);
    let csp = cors.headers.get_all("content-security-policy").iter().collect::<Vec<_>>();
    assert_eq!(csp.len(), 1, "the plugin's own policy is replaced, not added to");
    assert!(csp[0].to_str().unwrap().starts_with("sandbox"));
    assert_eq!(cors.headers.get("x-plugin-own").unwrap(), "kept", "other headers pass");

    // A platform admin may let a plugin answer cross-origin requests.
    let (s, token) = acme_server(|c| c.http.cors_plugins = vec!["noisy".into()]).await;
    let cors = s.as_token(Some(&token), Method::GET, &format!("{N}/cors"), None).await.expect(204);
    assert_eq!(cors.headers.get("access-control-allow-origin").unwrap(), "*");
}

#[tokio::test]
async fn response_headers_past_their_byte_budget_are_a_bad_gateway() {
    let (s, acme) = acme_server(|_| {}).await;
    s.as_token(Some(&acme), Method::GET, &format!("{N}/headers?kib=16"), None).await.expect(204);
    let reply = s
        .as_token(Some(&acme), Method::GET, &format!("{N}/headers?kib=1024"), None)
        .await
        .expect_problem(502, "plugin-bad-response");
    assert!(reply.body["detail"].as_str().unwrap().contains("bytes of headers exceed 65536"), "{}", reply.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_past_its_instance_share_is_told_to_slow_down_with_retry_after() {
    let (s, acme) = acme_server(|c| {
        c.limits.max_instances_per_tenant = Some(2);
        c.limits.admission_wait_ms = 20;
    })
    .await;
    // Five 100 ms calls at once against a share of two instances: two run, the rest wait 20 ms
    // for a slot and are refused as the tenant's own excess, never as a platform failure.
    let path = format!("{N}/slow?ms=100");
    let calls = (0..5).map(|_| s.as_token(Some(&acme), Method::GET, &path, None));
    let replies = futures::future::join_all(calls).await;
    let refused: Vec<_> = replies.iter().filter(|r| r.status == 429).collect();
    assert!(!refused.is_empty(), "{:?}", replies.iter().map(|r| r.status).collect::<Vec<_>>());
    for r in &refused {
        assert_eq!(r.code(), "concurrency-limit", "{}", r.body);
        assert_eq!(r.headers["retry-after"], "1", "{}", r.body);
    }
    assert!(
        replies.iter().all(|r| r.status == 204 || r.status == 429),
        "{:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert!(replies.iter().any(|r| r.status == 204), "the share itself was served");
}

#[tokio::test]
async fn a_plugin_may_queue_only_so_many_jobs_and_the_rest_is_refused_whole() {
    let (s, acme) = acme_server(|c| {
        c.jobs.enabled = false;
        c.jobs.max_queued_per_plugin = 5;
    })
    .await;
    let path = format!("{N}/flood");
    let flood = |seeds: u32| s.as_token(Some(&acme), Method::POST, &path, Some(json!({ "seeds": seeds, "fanout": 1 })));
    flood(4).await.expect(202);
    // 4 + 3 would pass 5: nothing of this call is queued.
    let refused = flood(3).await.expect_problem(429, "too-many-jobs");
    assert!(refused.headers.contains_key("retry-after"));
    let queued = s.get("/v1/tenants/acme/jobs?status=queued&limit=100").await.expect(200).body;
    assert_eq!(queued["items"].as_array().unwrap().len(), 4);
    flood(1).await.expect(202);
    flood(1).await.expect_problem(429, "too-many-jobs");
}

#[tokio::test]
async fn a_job_that_keeps_starting_jobs_is_stopped_at_the_chain_limit() {
    let (s, acme) = acme_server(|c| c.jobs.max_chain = 3).await;
    s.as_token(Some(&acme), Method::POST, &format!("{N}/flood"), Some(json!({ "seeds": 1, "fanout": 1 })))
        .await
        .expect(202);
    // Chains 0, 1 and 2 each start one more; the job at chain 3 may not, and is dead-lettered.
    let dead = s
        .eventually("/v1/tenants/acme/jobs?status=dead", "the chain's last job to be dead", |b| {
            !b["items"].as_array().unwrap().is_empty()
        })
        .await;
    let error = dead["items"][0]["last_error"].as_str().unwrap();
    assert!(error.contains("too-many-jobs") && error.contains("jobs.max-chain is 3"), "{error}");
    let all = s.get("/v1/tenants/acme/jobs?plugin=noisy&limit=100").await.expect(200).body;
    let statuses: Vec<&str> = all["items"].as_array().unwrap().iter().map(|j| j["status"].as_str().unwrap()).collect();
    assert_eq!(statuses.len(), 4, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == "done").count(), 3, "{statuses:?}");
}
