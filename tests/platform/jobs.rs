//! Background work over HTTP with the real `relay` and `listener` fixture plugins: jobs,
//! retries, dead letters, idempotency keys, cron schedules on the moved clock, and events
//! committed with their call and fanned out per tenant.

use keel_tests::TestServer;
use serde_json::{Value, json};

async fn relay_server() -> TestServer {
    TestServer::with_plugins(&["fixtures/relay", "fixtures/listener"]).await
}

async fn enqueue(server: &TestServer, body: Value) -> String {
    let reply = server.post("/v1/plugins/relay/jobs", body).await.expect(202);
    reply.body["id"].as_str().expect("job id").to_owned()
}

fn runs(detail: &Value) -> Vec<(u64, String)> {
    detail["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .map(|r| (r["attempt"].as_u64().unwrap(), r["outcome"].as_str().unwrap_or("running").to_owned()))
        .collect()
}

async fn applied(server: &TestServer, plugin: &str, token: Option<&str>) -> Value {
    let path = format!("/v1/plugins/{plugin}/applied");
    match token {
        None => server.get(&path).await.expect(200).body,
        Some(t) => server.as_token(Some(t), reqwest::Method::GET, &path, None).await.expect(200).body,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enqueued_job_runs_once_and_an_idempotency_key_deduplicates() {
    let server = relay_server().await;
    let plain = enqueue(&server, json!({ "name": "record", "payload": { "n": 1 } })).await;
    let keyed = enqueue(&server, json!({ "name": "record", "payload": { "n": 2 }, "key": "order-7" })).await;
    let again = enqueue(&server, json!({ "name": "record", "payload": { "n": 3 }, "key": "order-7" })).await;
    assert_eq!(keyed, again, "the same idempotency key must name the same job");
    assert_ne!(plain, keyed);

    for id in [&plain, &keyed] {
        let detail = server.job_reaches(id, "done").await;
        assert_eq!(runs(&detail), [(1, "done".to_owned())], "{detail}");
        assert_eq!(detail["job"]["kind"], "job");
    }
    let body = applied(&server, "relay", None).await;
    // (Counting `record` jobs only: the relay's */5 schedule may fire on the real clock.)
    let records = body["items"].as_array().unwrap().iter().filter(|i| i["what"] == "job" && i["name"] == "record");
    assert_eq!(records.count(), 2, "two jobs, each applied once: {body}");
    let keyed_run =
        body["items"].as_array().unwrap().iter().find(|i| i["id"] == keyed.as_str()).expect("keyed job ran");
    assert_eq!(keyed_run["payload"]["n"], 2, "the second enqueue must not replace the first job");

    let page = server.get("/v1/tenants/default/jobs?plugin=relay&kind=job").await.expect(200).body;
    assert_eq!(page["items"].as_array().unwrap().len(), 2, "{page}");
    assert!(
        server.metrics().await.contains("keel_background_runs_total{plugin=\"relay\",kind=\"job\",outcome=\"done\"} 2")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_that_race_for_one_document_are_repeated_at_once_not_failed() {
    // Twelve jobs each read one counter, spin 20 ms, and write it back: up to three run at
    // once (the tenant's share), so their commits race. A lost race runs the job again inside
    // its lease, as a request would be, instead of failing the attempt into a backoff.
    let server = relay_server().await;
    let mut ids = Vec::new();
    for _ in 0..12 {
        ids.push(enqueue(&server, json!({ "name": "tally", "payload": { "spin_ms": 20 } })).await);
    }
    for id in &ids {
        let detail = server.job_reaches(id, "done").await;
        assert_eq!(runs(&detail), [(1, "done".to_owned())], "one attempt each: {detail}");
    }
    let tally = server.get("/v1/plugins/relay/tally").await.expect(200).body;
    assert_eq!(tally["count"], 12, "every run counted exactly once: {tally}");
    let metrics = server.metrics().await;
    assert!(metrics.contains("keel_plugin_call_repeats_total{plugin=\"relay\"}"), "the runs did race: {metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_fails_twice_is_retried_with_growing_backoff_never_before_its_retry_time() {
    // A frozen clock: the worker sees time move only when the test moves it.
    let server = TestServer::start_with(|c| c.frozen_clock_at = Some(1_800_000_000_000)).await;
    server.install("fixtures/relay").await.expect(201);
    let id = enqueue(&server, json!({ "name": "flaky", "payload": { "succeed_on": 3 } })).await;
    let path = format!("/v1/tenants/default/jobs/{id}");
    let mut delays = Vec::new();
    for attempt in 1..=2u64 {
        let detail = server
            .eventually(&path, &format!("attempt {attempt} to fail"), |b| {
                b["job"]["status"] == "queued" && b["job"]["attempts"] == attempt
            })
            .await;
        let job = &detail["job"];
        assert!(job["last_error"].as_str().unwrap().contains(&format!("attempt {attempt} fails on purpose")), "{job}");
        let run_at = job["run_at"].as_i64().unwrap();
        delays.push(run_at - job["updated_at"].as_i64().unwrap());
        // One millisecond before the retry time the worker runs other work, but not this job.
        let now = server.advance_clock(0).await;
        server.advance_clock((run_at - now - 1) as u64).await;
        let probe = enqueue(&server, json!({ "name": "record", "payload": { "probe": attempt } })).await;
        server.job_reaches(&probe, "done").await;
        let waiting = server.get(&path).await.expect(200).body;
        assert_eq!((&waiting["job"]["status"], &waiting["job"]["attempts"]), (&json!("queued"), &json!(attempt)));
        // At the retry time it runs.
        server.advance_clock(1).await;
    }
    // 1 s base with equal jitter: the first wait is 0.5-1 s, the second 1-2 s.
    assert!((500..=1000).contains(&delays[0]) && (1000..=2000).contains(&delays[1]), "{delays:?}");
    let detail = server.job_reaches(&id, "done").await;
    assert_eq!(runs(&detail), [(1, "failed".into()), (2, "failed".into()), (3, "done".into())], "{detail}");
    assert_eq!(detail["job"]["last_error"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_always_fails_is_dead_lettered_with_its_error_and_an_admin_can_retry_or_cancel() {
    let server = relay_server().await;
    let id = enqueue(&server, json!({ "name": "fail" })).await;
    let path = format!("/v1/tenants/default/jobs/{id}");
    let detail = loop {
        let body = server.eventually(&path, "a failed attempt", |b| b["job"]["status"] != "running").await;
        if body["job"]["status"] == "dead" {
            break body;
        }
        server.advance_clock(5_000).await;
    };
    assert_eq!(detail["job"]["attempts"], 3, "max-attempts is 3: {detail}");
    assert!(detail["job"]["last_error"].as_str().unwrap().contains("attempt 3 fails on purpose"), "{detail}");
    assert_eq!(runs(&detail).iter().filter(|(_, o)| o == "failed").count(), 3);
    assert!(server.metrics().await.contains("outcome=\"dead\"} 1"));

    // A dead job cannot be cancelled; it can be retried, with a fresh set of attempts.
    server.post_empty(&format!("{path}/cancel")).await.expect_problem(409, "job-state-conflict");
    let retried = server.post_empty(&format!("{path}/retry")).await.expect(200);
    assert_eq!(retried.body["attempts"], 0);
    server.eventually(&path, "the retried job to run again", |b| runs(b).len() == 4).await;

    // A job not yet due can be cancelled, and then never runs.
    let later = enqueue(&server, json!({ "name": "record", "run_at": 4_102_444_800_000u64 })).await;
    let cancelled = server.post_empty(&format!("/v1/tenants/default/jobs/{later}/cancel")).await.expect(200);
    assert_eq!(cancelled.body["status"], "cancelled");
    server
        .post_empty(&format!("/v1/tenants/default/jobs/{later}/cancel"))
        .await
        .expect_problem(409, "job-state-conflict");
    server.get("/v1/tenants/default/jobs/job_nope").await.expect_problem(404, "job-not-found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cron_schedule_fires_on_the_moved_clock_and_can_be_run_now() {
    // Start just after a five-minute mark, so the real clock cannot reach the next firing of
    // the relay's */5 schedule while the test runs; only moving the clock can.
    let server = TestServer::start().await;
    let now = server.advance_clock(0).await;
    server.advance_clock((300_000 - now.rem_euclid(300_000) + 1_000) as u64).await;
    for plugin in ["fixtures/relay", "fixtures/listener"] {
        server.install(plugin).await.expect(201);
    }
    let schedules = server
        .eventually("/v1/tenants/default/schedules", "the relay schedule to be registered", |b| {
            b["items"].as_array().is_some_and(|i| i.iter().any(|s| s["plugin"] == "relay" && s["name"] == "tick"))
        })
        .await;
    let tick = &schedules["items"][0];
    assert_eq!(tick["spec"], "*/5 * * * * Europe/Paris");
    let next = tick["next_run_at"].as_i64().unwrap();
    assert_eq!(next % 300_000, 0, "*/5 fires on whole five minutes: {tick}");
    let now = server.advance_clock(0).await;
    assert!(next > now && next - now <= 300_000, "next firing {next} not within five minutes of {now}");

    // Nothing fires until the clock reaches it.
    let none = server.get("/v1/tenants/default/jobs?kind=schedule").await.expect(200).body;
    assert_eq!(none["items"].as_array().unwrap().len(), 0, "{none}");
    server.advance_clock((next - now + 1_000) as u64).await;
    let fired = server
        .eventually("/v1/tenants/default/jobs?kind=schedule&status=done", "the tick to run", |b| {
            b["items"].as_array().is_some_and(|i| i.len() == 1)
        })
        .await;
    let job = &fired["items"][0];
    assert_eq!((job["name"].as_str(), job["run_at"].as_i64()), (Some("tick"), Some(next)), "{job}");
    let after = server.get("/v1/tenants/default/schedules").await.expect(200).body;
    assert_eq!(after["items"][0]["next_run_at"].as_i64(), Some(next + 300_000), "{after}");
    assert_eq!(after["items"][0]["last_job_id"], job["id"]);

    let run = server.post_empty("/v1/tenants/default/plugins/relay/schedules/tick/run").await.expect(202);
    let manual = run.body["job_id"].as_str().unwrap().to_owned();
    server.job_reaches(&manual, "done").await;
    assert_eq!(applied(&server, "relay", None).await["counts"]["job"], 2);
    server
        .post_empty("/v1/tenants/default/plugins/relay/schedules/nope/run")
        .await
        .expect_problem(404, "schedule-not-found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_commit_with_their_call_and_reach_every_subscriber_of_the_tenant_only() {
    let server = relay_server().await;
    let globex = server.tenant_with_token("globex", "tenant-admin").await;
    server.post_empty("/v1/tenants/globex/plugins/listener/enable").await.expect(200);

    // A call that fails after publishing publishes nothing.
    server
        .post("/v1/plugins/relay/publish", json!({ "payload": { "n": 0 }, "fail": true }))
        .await
        .expect_problem(422, "failed-on-purpose");
    let published = server.post("/v1/plugins/relay/publish", json!({ "payload": { "n": 1 } })).await.expect(202).body;
    let event_id = published["id"].as_str().unwrap().to_owned();

    for plugin in ["relay", "listener"] {
        let body = server
            .eventually(&format!("/v1/plugins/{plugin}/applied"), &format!("{plugin} to get the event"), |b| {
                b["counts"]["event"] == 1
            })
            .await;
        let got = body["items"].as_array().unwrap().iter().find(|i| i["what"] == "event").unwrap().clone();
        assert_eq!(
            (got["id"].as_str(), got["source"].as_str(), got["tenant"].as_str(), got["payload"]["n"].as_i64()),
            (Some(event_id.as_str()), Some("relay"), Some("default"), Some(1)),
            "{got}"
        );
    }
    let log = server.get("/v1/tenants/default/events").await.expect(200).body;
    let items = log["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "only the committed call's event is in the log: {log}");
    assert_eq!((items[0]["topic"].as_str(), items[0]["source"].as_str()), (Some("relay.pinged"), Some("relay")));
    // The other tenant's subscriber saw nothing, and its log is empty.
    assert_eq!(applied(&server, "listener", Some(&globex)).await["counts"]["event"], 0);
    let theirs =
        server.as_token(Some(&globex), reqwest::Method::GET, "/v1/tenants/globex/events", None).await.expect(200);
    assert_eq!(theirs.body["items"].as_array().unwrap().len(), 0);
    // Nor can it read ours.
    server
        .as_token(Some(&globex), reqwest::Method::GET, "/v1/tenants/default/events", None)
        .await
        .expect_problem(404, "tenant-not-found");

    // Replaying the range to one subscriber delivers again; the idempotency helper applies it once.
    let seq = items[0]["seq"].as_i64().unwrap();
    let replay = server
        .post("/v1/tenants/default/events/replay", json!({ "subscriber": "listener", "from_seq": seq, "to_seq": seq }))
        .await
        .expect(202);
    assert_eq!(replay.body["queued"], 1);
    server
        .eventually("/v1/tenants/default/jobs?plugin=listener&kind=event&status=done", "the replay", |b| {
            b["items"].as_array().is_some_and(|i| i.len() == 2)
        })
        .await;
    assert_eq!(applied(&server, "listener", None).await["counts"]["event"], 1);

    // A plugin publishes only under its own id.
    server
        .post("/v1/plugins/listener/publish", json!({ "topic": "relay.pinged" }))
        .await
        .expect_problem(403, "forbidden");
    server
        .post("/v1/tenants/default/events/replay", json!({ "subscriber": "listener", "from_seq": 5, "to_seq": 1 }))
        .await
        .expect_problem(422, "invalid-range");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_subscriber_is_retried_without_affecting_the_others() {
    let server = relay_server().await;
    server.post("/v1/plugins/relay/publish", json!({ "payload": { "fail_times": 1 } })).await.expect(202);
    let failed = server
        .eventually("/v1/tenants/default/jobs?kind=event", "both deliveries to fail once", |b| {
            b["items"]
                .as_array()
                .is_some_and(|i| i.len() == 2 && i.iter().all(|j| j["status"] == "queued" && j["attempts"] == 1))
        })
        .await;
    assert!(failed["items"][0]["last_error"].as_str().unwrap().contains("fails on purpose"), "{failed}");
    server.advance_clock(2_000).await;
    for plugin in ["relay", "listener"] {
        let body = server
            .eventually(&format!("/v1/plugins/{plugin}/applied"), "the retried delivery", |b| b["counts"]["event"] == 1)
            .await;
        let got = body["items"].as_array().unwrap().iter().find(|i| i["what"] == "event").unwrap().clone();
        assert_eq!(got["attempt"], 2, "{got}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_background_requests_get_typed_errors() {
    let server = relay_server().await;
    let member = server.token_for("default", "member").await;
    server.post("/v1/plugins/relay/jobs", json!({ "name": "Not A Name" })).await.expect_problem(422, "invalid");
    server
        .as_token(Some(&member), reqwest::Method::POST, "/v1/admin/clock/advance", Some(json!({ "ms": 1 })))
        .await
        .expect_problem(403, "forbidden");
    server
        .as_token(Some(&member), reqwest::Method::GET, "/v1/tenants/default/jobs", None)
        .await
        .expect_problem(403, "forbidden");
    server.get("/v1/tenants/default/jobs?status=sleeping").await.expect_problem(422, "invalid-status");
    server.get("/v1/tenants/default/jobs?cursor=zz").await.expect_problem(422, "invalid-cursor");
    server.get("/v1/tenants/default/jobs?limit=0").await.expect_problem(422, "invalid-limit");
    server
        .post("/v1/tenants/default/events/replay", json!({ "subscriber": "nobody", "from_seq": 1, "to_seq": 1 }))
        .await
        .expect_problem(404, "plugin-not-found");
}
