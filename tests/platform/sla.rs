//! Helpdesk SLAs on the moved clock: deadlines from the priority's policy, recomputed when the
//! priority changes, met by a response, and breaches marked by the scheduled check and
//! published as `helpdesk.ticket.sla_breached`.

use keel_tests::TestServer;
use serde_json::{Value, json};

const T: &str = "/v1/plugins/helpdesk/tickets";
const HOUR: i64 = 3_600_000;

async fn breaches(s: &TestServer) -> Vec<Value> {
    let log = s.get("/v1/tenants/default/events?topic=helpdesk.ticket.sla_breached").await.expect(200).body;
    log["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| serde_json::from_str(e["payload"].as_str().unwrap()).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sla_deadlines_follow_priority_and_breaches_are_marked_and_published_on_the_moved_clock() {
    let s = TestServer::with_plugins(&["bundled/helpdesk"]).await;
    let member = s.token_for("default", "member").await;
    s.put(
        "/v1/tenants/default/roles/member/permissions",
        json!({ "permissions": ["helpdesk.ticket.read", "helpdesk.ticket.write"] }),
    )
    .await
    .expect(200);

    // Filed P3 (8 h / 3 d), then raised to P1 (1 h / 4 h): deadlines recomputed from creation.
    let filed = s.post(T, json!({ "title": "VPN down", "priority": "P3" })).await.expect(201).body;
    let created = filed["created_at"].as_i64().unwrap();
    assert_eq!(filed["sla"]["first_response_due"].as_i64(), Some(created + 8 * HOUR));
    assert_eq!(filed["sla_state"], "on_track");
    let raised = s.patch(&format!("{T}/1"), json!({ "priority": "P1", "version": 1 })).await.expect(200).body;
    assert_eq!(raised["sla"]["first_response_due"].as_i64(), Some(created + HOUR));
    assert_eq!(raised["sla"]["resolution_due"].as_i64(), Some(created + 4 * HOUR));

    // A second P1 ticket, filed by a member, gets a response from an agent in time.
    let theirs = s
        .as_token(Some(&member), reqwest::Method::POST, T, Some(json!({ "title": "Laptop", "priority": "P1" })))
        .await
        .expect(201)
        .body;
    let number = theirs["number"].as_i64().unwrap();
    s.post(&format!("{T}/{number}/comments"), json!({ "body": "On it" })).await.expect(201);
    assert!(s.get(&format!("{T}/{number}")).await.expect(200).body["sla"]["first_response_at"].is_i64());

    // Ninety minutes on: ticket 1 missed its first response; ticket 2 responded in time.
    // The check runs every minute once the worker has registered the schedule.
    s.eventually("/v1/tenants/default/schedules", "the SLA check to be scheduled", |b| {
        b["items"].as_array().is_some_and(|i| i.iter().any(|s| s["name"] == "sla-check"))
    })
    .await;
    s.advance_clock((90 * 60_000) as u64).await;
    let events = s
        .eventually("/v1/tenants/default/events?topic=helpdesk.ticket.sla_breached", "the first breach", |b| {
            b["items"].as_array().is_some_and(|i| !i.is_empty())
        })
        .await;
    assert_eq!(events["items"][0]["source"], "helpdesk");
    let first = breaches(&s).await;
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!((first[0]["number"].as_i64(), first[0]["target"].as_str()), (Some(1), Some("first_response")));
    let ticket = s.get(&format!("{T}/1")).await.expect(200).body;
    assert_eq!(ticket["sla_state"], "breached");
    assert!(ticket["sla"]["first_response_breached_at"].is_i64(), "{ticket}");
    assert_eq!(s.get(&format!("{T}/{number}")).await.expect(200).body["sla_state"], "on_track");

    // Five hours on, both miss resolution; each breach is published once.
    s.advance_clock((4 * HOUR) as u64).await;
    s.eventually("/v1/tenants/default/events?topic=helpdesk.ticket.sla_breached", "both resolution breaches", |b| {
        b["items"].as_array().is_some_and(|i| i.len() >= 3)
    })
    .await;
    // The check runs twice more after that; neither publishes a breach again.
    for _ in 0..2 {
        // A firing after the move reads a clock at least `before + 2 min`; one before it, less.
        let before = s.advance_clock(0).await;
        s.advance_clock(120_000).await;
        let moved = before + 120_000;
        let fired = s
            .eventually("/v1/tenants/default/schedules", "the SLA check to run after the move", |b| {
                b["items"].as_array().is_some_and(|i| {
                    i.iter().any(|s| s["name"] == "sla-check" && s["last_run_at"].as_i64().is_some_and(|t| t >= moved))
                })
            })
            .await;
        let check = fired["items"].as_array().unwrap().iter().find(|s| s["name"] == "sla-check").unwrap();
        s.job_reaches(check["last_job_id"].as_str().unwrap(), "done").await;
    }
    let all = breaches(&s).await;
    assert_eq!(all.len(), 3, "a breach is published once: {all:?}");
    let mut resolution: Vec<i64> =
        all.iter().filter(|b| b["target"] == "resolution").map(|b| b["number"].as_i64().unwrap()).collect();
    resolution.sort();
    assert_eq!(resolution, [1, number]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_set_their_own_policies_and_bad_ones_are_refused() {
    let s = TestServer::with_plugins(&["bundled/helpdesk"]).await;
    let policies = s.get("/v1/plugins/helpdesk/sla-policies").await.expect(200).body;
    assert_eq!(
        policies["items"][0],
        json!({ "priority": "P1", "first_response_minutes": 60, "resolution_minutes": 240, "custom": false })
    );
    s.put("/v1/plugins/helpdesk/sla-policies/P2", json!({ "first_response_minutes": 15, "resolution_minutes": 120 }))
        .await
        .expect(200);
    let t = s.post(T, json!({ "title": "Mail", "priority": "P2" })).await.expect(201).body;
    let created = t["created_at"].as_i64().unwrap();
    assert_eq!(t["sla"]["first_response_due"].as_i64(), Some(created + 15 * 60_000));
    s.put("/v1/plugins/helpdesk/sla-policies/P2", json!({ "first_response_minutes": 200, "resolution_minutes": 120 }))
        .await
        .expect_problem(422, "invalid-policy");
    s.put("/v1/plugins/helpdesk/sla-policies/P9", json!({ "first_response_minutes": 1, "resolution_minutes": 2 }))
        .await
        .expect_problem(422, "invalid-field");
    // Members may read policies but not set them.
    let member = s.token_for("default", "member").await;
    s.as_token(
        Some(&member),
        reqwest::Method::PUT,
        "/v1/plugins/helpdesk/sla-policies/P1",
        Some(json!({ "first_response_minutes": 1, "resolution_minutes": 2 })),
    )
    .await
    .expect_problem(403, "forbidden");
}
