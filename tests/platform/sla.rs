//! Helpdesk SLAs on the moved clock: deadlines from the priority's policy, recomputed when the
//! priority changes, met by a response, and breaches marked by the scheduled check and
//! published as `helpdesk.ticket.sla_breached`.

use keel_tests::TestServer;
use serde_json::{Value, json};

const T: &str = "/v1/plugins/helpdesk/tickets";
const HOUR: i64 = 3_600_000;

async fn breaches(s: &TestServer) -> Vec<Value> {
    s.published("helpdesk.ticket.sla_breached").await
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
        move_to(&s, before + 120_000).await;
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

/// Moves the clock to `at` and waits for the helpdesk's SLA check to run there.
async fn move_to(s: &TestServer, at: i64) {
    s.move_clock_to_and_run(at, "helpdesk", "sla-check").await;
}

fn utc(text: &str) -> i64 {
    text.parse::<jiff::Timestamp>().unwrap().as_millisecond()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sla_clocks_run_in_business_hours_skip_a_holiday_and_pause_while_waiting_on_the_requester() {
    // Friday 2025-12-19 16:30 in Berlin; Monday the 22nd is a holiday.
    let s = TestServer::start_with(|c| c.frozen_clock_at = Some(utc("2025-12-19T15:30:00Z"))).await;
    s.install("bundled/helpdesk").await.expect(201);
    let member = s.token_for("default", "member").await;
    s.put(
        "/v1/tenants/default/roles/member/permissions",
        json!({ "permissions": ["helpdesk.ticket.read", "helpdesk.ticket.write"] }),
    )
    .await
    .expect(200);
    let week = json!(["09:00-17:00"]);
    let calendar = json!({ "time_zone": "Europe/Berlin",
        "hours": { "mon": week, "tue": week, "wed": week, "thu": week, "fri": week },
        "holidays": ["2025-12-22"] });
    let hours = s.put("/v1/plugins/helpdesk/business-hours", calendar.clone()).await.expect(200).body;
    assert_eq!((hours["time_zone"].as_str(), hours["custom"].as_bool()), (Some("Europe/Berlin"), Some(true)));
    assert_eq!(s.get("/v1/plugins/helpdesk/business-hours").await.expect(200).body, hours);
    // Bad calendars are refused with the field at fault, and the stored one is kept.
    let mut bad = calendar.clone();
    bad["hours"]["mon"] = json!(["17:00-09:00"]);
    let refused = s.put("/v1/plugins/helpdesk/business-hours", bad).await.expect_problem(422, "invalid-calendar").body;
    assert!(refused["detail"].as_str().unwrap().contains("hours.mon[0]"), "{refused}");
    let mut bad = calendar.clone();
    bad["time_zone"] = json!("Europe/Atlantis");
    s.put("/v1/plugins/helpdesk/business-hours", bad).await.expect_problem(422, "invalid-calendar");
    s.as_token(Some(&member), reqwest::Method::PUT, "/v1/plugins/helpdesk/business-hours", Some(calendar))
        .await
        .expect_problem(403, "forbidden");
    assert_eq!(s.get("/v1/plugins/helpdesk/business-hours").await.expect(200).body, hours);

    // A P1 (1 h / 4 h) filed at 16:30: 30 minutes on Friday, the rest from Tuesday 09:00 CET.
    let filed = s
        .as_token(Some(&member), reqwest::Method::POST, T, Some(json!({ "title": "VPN down", "priority": "P1" })))
        .await
        .expect(201)
        .body;
    let number = filed["number"].as_i64().unwrap();
    let ticket = format!("{T}/{number}");
    assert_eq!(filed["sla"]["first_response_due"].as_i64(), Some(utc("2025-12-23T08:30:00Z")));
    assert_eq!(filed["sla"]["resolution_due"].as_i64(), Some(utc("2025-12-23T11:30:00Z")));
    assert_eq!(filed["sla"]["first_response_warn_at"].as_i64(), Some(utc("2025-12-23T08:18:00Z")));
    s.eventually("/v1/tenants/default/schedules", "the SLA check to be scheduled", |b| {
        b["items"].as_array().is_some_and(|i| i.iter().any(|s| s["name"] == "sla-check"))
    })
    .await;

    // The weekend and the holiday pass without a warning. Tuesday 09:10 an agent answers and
    // sets the ticket waiting on the requester: the clocks stop.
    move_to(&s, utc("2025-12-23T08:10:00Z")).await;
    assert!(s.published("helpdesk.ticket.sla_warning").await.is_empty());
    s.post(&format!("{ticket}/transition"), json!({ "to": "open" })).await.expect(200);
    let waiting = s.post(&format!("{ticket}/transition"), json!({ "to": "pending" })).await.expect(200).body;
    assert_eq!(waiting["sla_state"], "paused");
    assert_eq!(waiting["sla"]["resolution_due"], Value::Null, "{waiting}");
    assert_eq!(waiting["sla"]["first_response_at"].as_i64(), Some(utc("2025-12-23T08:10:00Z")));

    // Hours pass while it waits (its 80 % mark would have been 10:42 CET): nothing fires.
    move_to(&s, utc("2025-12-23T13:00:00Z")).await;
    assert!(s.published("helpdesk.ticket.sla_warning").await.is_empty());
    // The requester answers at 14:00: the ticket is open again and its clocks run on. 40
    // minutes are used; 200 are left: 180 on Tuesday and 20 from Wednesday 09:00.
    s.as_token(
        Some(&member),
        reqwest::Method::POST,
        &format!("{ticket}/comments"),
        Some(json!({ "body": "Still down" })),
    )
    .await
    .expect(201);
    let resumed = s.get(&ticket).await.expect(200).body;
    assert_eq!((resumed["status"].as_str(), resumed["sla_state"].as_str()), (Some("open"), Some("on_track")));
    assert_eq!(resumed["sla"]["resolution_due"].as_i64(), Some(utc("2025-12-24T08:20:00Z")));
    assert_eq!(resumed["sla"]["resolution_warn_at"].as_i64(), Some(utc("2025-12-23T15:32:00Z")));

    // The warning at 16:32 CET, then the breach on Wednesday 09:20: each published once.
    move_to(&s, utc("2025-12-23T15:33:00Z")).await;
    let warnings = s.published("helpdesk.ticket.sla_warning").await;
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!((warnings[0]["target"].as_str(), warnings[0]["number"].as_i64()), (Some("resolution"), Some(number)));
    assert_eq!(warnings[0]["due_at"].as_i64(), Some(utc("2025-12-24T08:20:00Z")));
    assert!(s.published("helpdesk.ticket.sla_breached").await.is_empty());
    move_to(&s, utc("2025-12-24T08:21:00Z")).await;
    for minute in [3, 5] {
        move_to(&s, utc("2025-12-24T08:21:00Z") + minute * 60_000).await;
    }
    let breaches = s.published("helpdesk.ticket.sla_breached").await;
    assert_eq!(breaches.len(), 1, "{breaches:?}");
    assert_eq!(breaches[0]["target"], "resolution");
    assert_eq!(s.published("helpdesk.ticket.sla_warning").await.len(), 1, "no second warning");
    assert_eq!(s.get(&ticket).await.expect(200).body["sla_state"], "breached");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_business_hours_re_plan_open_tickets_and_removing_them_restores_wall_time() {
    // Saturday 2025-12-20 10:00 UTC: around the clock, a P2 (4 h / 1 d) is due at 14:00.
    let s = TestServer::start_with(|c| c.frozen_clock_at = Some(utc("2025-12-20T10:00:00Z"))).await;
    s.install("bundled/helpdesk").await.expect(201);
    let filed = s.post(T, json!({ "title": "Printer", "priority": "P2" })).await.expect(201).body;
    assert_eq!(filed["sla"]["first_response_due"].as_i64(), Some(utc("2025-12-20T14:00:00Z")));
    let default = s.get("/v1/plugins/helpdesk/business-hours").await.expect(200).body;
    assert_eq!((default["time_zone"].as_str(), default["custom"].as_bool()), (Some("UTC"), Some(false)));

    // Weekdays 08-16 UTC: the open ticket's clock has used nothing yet (it is Saturday), so
    // its first response is due Monday 12:00.
    let week = json!(["08:00-16:00"]);
    s.put(
        "/v1/plugins/helpdesk/business-hours",
        json!({ "time_zone": "UTC", "hours": { "mon": week, "tue": week, "wed": week, "thu": week, "fri": week } }),
    )
    .await
    .expect(200);
    s.eventually(&format!("{T}/1"), "the ticket to be re-planned", |t| {
        t["sla"]["first_response_due"].as_i64() == Some(utc("2025-12-22T12:00:00Z"))
    })
    .await;
    // What a GET shows is accepted back as it is.
    let shown = s.get("/v1/plugins/helpdesk/business-hours").await.expect(200).body;
    assert_eq!(s.put("/v1/plugins/helpdesk/business-hours", shown.clone()).await.expect(200).body, shown);
    // Hours under which a policy's target could never be met are refused: P4 resolution in a
    // year of business minutes, with one hour open a week.
    s.put(
        "/v1/plugins/helpdesk/sla-policies/P4",
        json!({ "first_response_minutes": 60, "resolution_minutes": 525_600 }),
    )
    .await
    .expect(200);
    let sparse = json!({ "time_zone": "UTC", "hours": { "mon": ["09:00-10:00"] } });
    let refused = s.put("/v1/plugins/helpdesk/business-hours", sparse).await.expect_problem(422, "unreachable-target");
    assert!(refused.body["detail"].as_str().unwrap().contains("P4"), "{}", refused.body);
    assert_eq!(s.get("/v1/plugins/helpdesk/business-hours").await.expect(200).body, shown);

    // Back to around the clock: due again 4 h after filing.
    let cleared = s.delete("/v1/plugins/helpdesk/business-hours").await.expect(200).body;
    assert_eq!(cleared["custom"], false);
    s.eventually(&format!("{T}/1"), "the ticket to be re-planned on wall time", |t| {
        t["sla"]["first_response_due"].as_i64() == Some(utc("2025-12-20T14:00:00Z"))
    })
    .await;
}
