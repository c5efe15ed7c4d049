//! The admin API and operations endpoints: authentication, plugin lifecycle, OpenAPI,
//! health, metrics.

use keel_tests::TestServer;
use serde_json::json;

#[tokio::test]
async fn the_admin_api_needs_a_valid_token() {
    let s = TestServer::start().await;
    s.anonymous("/v1/admin/plugins", None).await.expect_problem(401, "missing-token");
    s.anonymous("/v1/admin/plugins", Some("Basic YWRtaW46YWRtaW4=")).await.expect_problem(401, "malformed-token");
    s.anonymous("/v1/admin/plugins", Some("Bearer keel_0123456789_notarealsecret"))
        .await
        .expect_problem(401, "invalid-token");
    // Right prefix, wrong secret.
    let forged = format!("{}x", &s.token[..s.token.len() - 1]);
    s.anonymous("/v1/admin/plugins", Some(&format!("Bearer {forged}"))).await.expect_problem(401, "invalid-token");
    let reply = s.anonymous("/v1/plugins/helpdesk/tickets", None).await.expect_problem(401, "missing-token");
    assert_eq!(reply.headers["www-authenticate"], "Bearer realm=\"keel\"");
    s.get("/v1/admin/plugins").await.expect(200);
}

#[tokio::test]
async fn an_installed_plugin_shows_version_digest_routes_and_limits() {
    let s = TestServer::with_plugins(&["bundled/helpdesk"]).await;
    let list = s.get("/v1/admin/plugins").await.expect(200).body;
    let p = &list["items"][0];
    assert_eq!(
        (p["id"].as_str(), p["version"].as_str(), p["enabled"].as_bool()),
        (Some("helpdesk"), Some(keel_tests::manifest_version("helpdesk").as_str()), Some(true))
    );
    assert_eq!(p["memory_limit_bytes"], 32 * 1024 * 1024);
    assert_eq!(p["timeout_ms"], 2000);
    assert_eq!(p["manifest"]["routes"].as_array().unwrap().len(), 12);
    let shown = s.get("/v1/admin/plugins/helpdesk").await.expect(200).body;
    assert_eq!(shown["digest"], p["digest"]);
    s.get("/v1/admin/plugins/nope").await.expect_problem(404, "plugin-not-found");
}

#[tokio::test]
async fn disabling_hides_routes_and_keeps_data_and_enabling_restores_them() {
    let s = TestServer::with_plugins(&["bundled/helpdesk"]).await;
    s.post("/v1/plugins/helpdesk/tickets", json!({ "title": "keep me" })).await.expect(201);
    let off = s.post_empty("/v1/admin/plugins/helpdesk/disable").await.expect(200).body;
    assert_eq!(off["enabled"], false);
    s.get("/v1/plugins/helpdesk/tickets/1").await.expect_problem(404, "plugin-not-found");
    s.post_empty("/v1/admin/plugins/helpdesk/enable").await.expect(200);
    assert_eq!(s.get("/v1/plugins/helpdesk/tickets/1").await.expect(200).body["title"], "keep me");
    s.post_empty("/v1/admin/plugins/nope/enable").await.expect_problem(404, "plugin-not-found");
}

#[tokio::test]
async fn uninstall_keeps_data_unless_purged() {
    let s = TestServer::with_plugins(&["bundled/helpdesk"]).await;
    s.post("/v1/plugins/helpdesk/tickets", json!({ "title": "survives" })).await.expect(201);
    s.delete("/v1/admin/plugins/helpdesk").await.expect(204);
    s.get("/v1/plugins/helpdesk/tickets/1").await.expect_problem(404, "plugin-not-found");
    s.delete("/v1/admin/plugins/helpdesk").await.expect_problem(404, "plugin-not-found");

    s.install("bundled/helpdesk").await.expect(201);
    assert_eq!(s.get("/v1/plugins/helpdesk/tickets/1").await.expect(200).body["title"], "survives");

    s.delete("/v1/admin/plugins/helpdesk?purge=true").await.expect(204);
    s.install("bundled/helpdesk").await.expect(201);
    s.get("/v1/plugins/helpdesk/tickets/1").await.expect_problem(404, "ticket-not-found");
    s.delete("/v1/admin/plugins/helpdesk?purge=maybe").await.expect_problem(400, "bad-request");
}

#[tokio::test]
async fn openapi_describes_the_admin_api() {
    let s = TestServer::start().await;
    let doc = s.anonymous("/v1/openapi.json", None).await.expect(200).body;
    assert_eq!(doc["openapi"], "3.1.0");
    for path in [
        "/v1/admin/plugins",
        "/v1/admin/plugins/{id}",
        "/v1/admin/plugins/{id}/enable",
        "/v1/admin/plugins/{id}/disable",
        "/healthz",
        "/readyz",
        "/metrics",
    ] {
        assert!(doc["paths"].get(path).is_some(), "OpenAPI lacks {path}");
    }
    assert!(doc["paths"]["/v1/admin/plugins"].get("post").is_some());
    assert!(doc["components"]["schemas"].get("Problem").is_some());
    assert!(doc["components"]["securitySchemes"].get("bearer").is_some());
}

#[tokio::test]
async fn health_readiness_metrics_and_unknown_endpoints() {
    let s = TestServer::with_plugins(&["bundled/helpdesk"]).await;
    assert_eq!(s.anonymous("/healthz", None).await.expect(200).body["status"], "ok");
    assert_eq!(s.anonymous("/readyz", None).await.expect(200).body["status"], "ready");
    s.get("/v1/plugins/helpdesk/tickets").await.expect(200);
    let metrics = s.metrics().await;
    assert!(metrics.contains(r#"keel_plugin_requests_total{plugin="helpdesk",outcome="ok"} 1"#), "{metrics}");
    assert!(metrics.contains("keel_plugin_request_duration_seconds_bucket"));
    s.anonymous("/v2/whatever", None).await.expect_problem(404, "not-found");
}

#[tokio::test]
async fn request_ids_are_echoed_or_made() {
    let s = TestServer::start().await;
    let req = s.http.get(format!("{}/healthz", s.base)).header("x-request-id", "abc-123");
    assert_eq!(s.send(req).await.headers["x-request-id"], "abc-123");
    let req = s.http.get(format!("{}/healthz", s.base)).header("x-request-id", "bad id\twith junk");
    let made = s.send(req).await.headers["x-request-id"].to_str().unwrap().to_owned();
    assert!(made.starts_with("req_"), "{made}");
}

#[tokio::test]
async fn oversized_bodies_are_refused_before_the_plugin_runs() {
    let s = TestServer::with_plugins(&["bundled/helpdesk"]).await;
    let huge = "x".repeat(2 << 20);
    s.post("/v1/plugins/helpdesk/tickets", json!({ "title": huge })).await.expect_problem(413, "body-too-large");
}

#[tokio::test]
async fn a_token_over_its_rate_gets_429_with_retry_after_then_recovers() {
    // A frozen clock, moved here directly (the clock endpoint would spend the token's rate).
    let s = TestServer::start_with(|c| {
        c.limits.rate_limit_per_second = 4;
        c.limits.rate_limit_burst = 3;
        c.frozen_clock_at = Some(1_800_000_000_000);
    })
    .await;
    let clock = s.server().state.clock.clone();
    let other = s.token_for("default", "tenant-admin").await;
    for _ in 0..2 {
        s.get("/v1/admin/plugins").await.expect(200);
    }
    let limited = s.get("/v1/admin/plugins").await.expect_problem(429, "rate-limited");
    assert_eq!(limited.headers["retry-after"], "1", "a quarter second rounds up to one");
    // Unauthenticated endpoints are not counted against the token.
    s.anonymous("/healthz", None).await.expect(200);
    // 4 per second: the next request is possible after exactly 250 ms.
    clock.advance(249);
    s.get("/v1/admin/plugins").await.expect_problem(429, "rate-limited");
    clock.advance(1);
    s.get("/v1/admin/plugins").await.expect(200);
    s.get("/v1/admin/plugins").await.expect_problem(429, "rate-limited");
    // Another token has its own bucket.
    s.as_token(Some(&other), reqwest::Method::GET, "/v1/tenants/default/plugins", None).await.expect(200);
}

#[tokio::test]
async fn a_request_still_incomplete_at_the_end_to_end_timeout_gets_408_and_saves_nothing() {
    // Installed first with the usual limits (compiling it may take longer than 600 ms on a
    // busy machine), then served with a 600 ms end-to-end timeout.
    let s = TestServer::with_plugins(&["fixtures/hostile"]).await;
    let s = s
        .restart_with(|c| {
            c.limits.max_timeout_ms = 300;
            c.limits.default_timeout_ms = 300;
            c.limits.request_timeout_ms = 600;
            c.limits.admission_wait_ms = 250;
        })
        .await;
    // The headers arrive, the promised body never does.
    let started = std::time::Instant::now();
    let stream = s.send_head("PUT", "/v1/plugins/hostile/notes/late", 64).await;
    let (status, body) = keel_tests::read_response(stream).await;
    let took = started.elapsed();
    assert_eq!((status, body["code"].as_str()), (408, Some("request-timeout")), "{body}");
    assert!(took >= std::time::Duration::from_millis(600), "answered early, after {took:?}");
    assert!(took < std::time::Duration::from_millis(3_000), "answered late, after {took:?}");
    s.get("/v1/plugins/hostile/notes/late").await.expect_problem(404, "note-not-found");
}
