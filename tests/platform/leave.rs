//! Leave in the HR department over HTTP: requests counted against holiday calendars and
//! working patterns to the half day, approval by the manager, balances as of a date,
//! overlaps and over-balance refused with what they conflict with, concurrent requests,
//! accruals and carry-over capped in the type's own unit, the team calendar, and who may do
//! what. The host clock is frozen on a chosen day, so "today" is the same in every run.

use keel_tests::{Reply, TestServer};
use reqwest::Method;
use serde_json::{Value, json};

pub(crate) const HR: &str = "/v1/plugins/hr";

/// Noon UTC of a date, in ms since the epoch.
pub(crate) fn noon(date: &str) -> i64 {
    let (y, m, d) =
        (date[0..4].parse::<i64>().unwrap(), date[5..7].parse::<i64>().unwrap(), date[8..10].parse::<i64>().unwrap());
    // Howard Hinnant's days_from_civil.
    let y = y - i64::from(m <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    days * 86_400_000 + 43_200_000
}

/// A person with a token of their own, linked to their employee record.
pub(crate) struct Person {
    pub number: u64,
    pub token: String,
}

pub(crate) struct Office {
    pub s: TestServer,
}

impl Office {
    /// HR on a server whose clock stands at noon on `today`, with the leave types and the
    /// Easter holidays of 2026 set up, and members holding `hr.leave`.
    pub async fn open(today: &str) -> Office {
        let at = noon(today);
        let s = TestServer::start_with(|c| c.frozen_clock_at = Some(at)).await;
        s.install("bundled/hr").await.expect(201);
        s.put(&format!("{HR}/departments/eng"), json!({ "name": "Engineering" })).await.expect(200);
        for (id, body) in [
            ("annual", json!({ "name": "Annual leave", "unit": "days", "allowance": 25, "carry_over_cap": 5 })),
            ("toil", json!({ "name": "Time off in lieu", "unit": "hours", "allowance": 40, "carry_over_cap": 16 })),
            ("unpaid", json!({ "name": "Unpaid leave", "unit": "days", "paid": false })),
            ("sick", json!({ "name": "Sick leave", "unit": "days", "requires_approval": false })),
            ("monthly", json!({ "name": "Accruing leave", "unit": "days", "allowance": 12, "accrual": "monthly" })),
        ] {
            s.put(&format!("{HR}/leave-types/{id}"), body).await.expect(200);
        }
        s.put(
            &format!("{HR}/holiday-calendars/default"),
            json!({ "name": "England", "holidays": [
                { "date": "2026-04-06", "name": "Easter Monday" },
                { "date": "2026-04-03", "name": "Good Friday" },
            ] }),
        )
        .await
        .expect(200);
        s.put("/v1/tenants/default/roles/member/permissions", json!({ "permissions": ["hr.leave"] })).await.expect(200);
        Office { s }
    }

    /// Hires someone with a token of their own (role `member`) linked as their user.
    pub async fn hire(&self, name: &str, manager: Option<u64>) -> Person {
        self.hire_on(name, manager, "2020-01-06").await
    }

    /// Hires someone starting on `date`, with a token of their own linked as their user.
    pub async fn hire_on(&self, name: &str, manager: Option<u64>, date: &str) -> Person {
        let reply =
            self.s.post("/v1/tenants/default/tokens", json!({ "name": name, "role": "member" })).await.expect(201).body;
        let (user, token) = (reply["id"].as_str().unwrap(), reply["token"].as_str().unwrap().to_owned());
        let email = format!("{}@example.com", name.to_lowercase().replace(' ', "."));
        let hired = self
            .s
            .post(
                &format!("{HR}/employees"),
                json!({ "legal_name": name, "email": email, "title": "Engineer", "department": "eng",
                        "manager": manager, "hire_date": date, "user": user }),
            )
            .await
            .expect(201)
            .body;
        Person { number: hired["number"].as_u64().unwrap(), token }
    }

    pub async fn call(&self, who: &Person, method: Method, path: &str, body: Option<Value>) -> Reply {
        self.s.as_token(Some(&who.token), method, &format!("{HR}{path}"), body).await
    }

    async fn ask(&self, who: &Person, body: Value) -> Reply {
        self.call(who, Method::POST, "/leave-requests", Some(body)).await
    }

    /// One type's balance of `number` as of `on`, as HR sees it.
    async fn balance(&self, number: u64, kind: &str, on: &str) -> Value {
        let all = self.s.get(&format!("{HR}/employees/{number}/balances?as_of={on}")).await.expect(200).body;
        all["items"].as_array().unwrap().iter().find(|b| b["type"] == kind).cloned().expect(kind)
    }
}

fn amounts(b: &Value) -> [f64; 7] {
    ["allocated", "accrued", "carried_over", "taken", "booked", "pending", "remaining"].map(|k| b[k].as_f64().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leave_across_easter_is_counted_to_the_half_day_decided_by_the_manager_and_given_back_on_cancel() {
    let o = Office::open("2026-03-02").await;
    let bob = o.hire("Bob Manager", None).await;
    let alice = o.hire("Alice Engineer", Some(bob.number)).await;
    let carol = o.hire("Carol Colleague", None).await;

    // From Wednesday 1 April after lunch to Wednesday 8 April at lunch: Good Friday, the
    // weekend and Easter Monday are not leave, so ½ + 1 + 1 + ½ = 3 days.
    let easter = json!({ "type": "annual", "from": "2026-04-01", "from_half": "afternoon",
                         "to": "2026-04-08", "to_half": "morning", "reason": "Easter with family" });
    let request = o.ask(&alice, easter).await.expect(201).body;
    assert_eq!((request["amount"].as_f64(), request["state"].as_str()), (Some(3.0), Some("pending")), "{request}");
    let days: Vec<(&str, &str)> = request["days"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["date"].as_str().unwrap(), d["part"].as_str().unwrap()))
        .collect();
    assert_eq!(
        days,
        [("2026-04-01", "afternoon"), ("2026-04-02", "full"), ("2026-04-07", "full"), ("2026-04-08", "morning")]
    );
    assert_eq!(request["approver"].as_u64(), Some(bob.number));
    let id = request["id"].as_u64().unwrap();
    // Employed since 2020: the whole allowance, up front; 3 days wait for a decision.
    assert_eq!(amounts(&o.balance(alice.number, "annual", "2026-03-02").await), [25.0, 25.0, 0.0, 0.0, 0.0, 3.0, 22.0]);

    // Only the manager (or HR) decides, and never on their own leave.
    let approve = format!("/leave-requests/{id}/approve");
    let refused = o.call(&carol, Method::POST, &approve, None).await.expect_problem(403, "not-approver").body;
    assert!(
        refused["detail"].as_str().unwrap().contains(&format!("employee {} (their manager) or HR", bob.number)),
        "{refused}"
    );
    o.call(&alice, Method::POST, &approve, None).await.expect_problem(403, "own-leave");
    let approved = o.call(&bob, Method::POST, &approve, None).await.expect(200).body;
    assert_eq!(approved["state"], "approved");
    o.call(&bob, Method::POST, &approve, None).await.expect_problem(409, "not-pending");
    let events = o.s.get("/v1/tenants/default/events?topic=hr.leave.approved").await.expect(200).body;
    assert_eq!(events["items"].as_array().unwrap().len(), 1, "{events}");
    // On 2 April: 1½ days taken, 1½ booked for after Easter.
    assert_eq!(amounts(&o.balance(alice.number, "annual", "2026-04-02").await), [25.0, 25.0, 0.0, 1.5, 1.5, 0.0, 22.0]);

    // The afternoon of 8 April is still free; the 7th is not, and the refusal names why.
    o.ask(&alice, json!({ "type": "annual", "from": "2026-04-08", "to": "2026-04-08", "to_half": "afternoon" }))
        .await
        .expect(201);
    let overlap = o
        .ask(&alice, json!({ "type": "unpaid", "from": "2026-04-07", "to": "2026-04-07" }))
        .await
        .expect_problem(409, "leave-overlap")
        .body;
    assert!(
        overlap["detail"].as_str().unwrap().contains(&format!("2026-04-07 is already taken by request {id}")),
        "{overlap}"
    );
    // 21.5 days remain; five weeks in May and June are 25 working days.
    let over = o
        .ask(&alice, json!({ "type": "annual", "from": "2026-05-04", "to": "2026-06-05" }))
        .await
        .expect_problem(409, "insufficient-balance")
        .body;
    assert!(
        over["detail"].as_str().unwrap().starts_with("25 days of Annual leave asked; 21.5 remain on 2026-06-05"),
        "{over}"
    );
    // Bad requests say which field is wrong.
    for (body, status, code, field) in [
        (json!({ "type": "holiday", "from": "2026-05-04", "to": "2026-05-04" }), 422, "unknown-leave-type", "type"),
        (json!({ "type": "annual", "from": "2026-04-03", "to": "2026-04-06" }), 422, "no-working-days", "from"),
        (json!({ "type": "annual", "from": "2026-05-05", "to": "2026-05-04" }), 422, "invalid-period", "to"),
        (json!({ "type": "annual", "from": "2026-12-28", "to": "2027-01-04" }), 422, "request-spans-years", "to"),
        (
            json!({ "type": "annual", "from": "2026-05-04", "to": "2026-05-05", "from_half": "morning" }),
            422,
            "invalid-half-day",
            "from_half",
        ),
        (
            json!({ "type": "annual", "from": "2026-05-04", "to": "2026-05-04", "hours": 2 }),
            422,
            "hours-not-allowed",
            "hours",
        ),
        (
            json!({ "type": "toil", "from": "2026-05-04", "to": "2026-05-04", "hours": 2.1234 }),
            422,
            "invalid-amount",
            "hours",
        ),
        (json!({ "type": "annual", "from": "2019-05-06", "to": "2019-05-06" }), 422, "not-employed", "from"),
        (json!({ "type": "annual", "from": "2026-02-30", "to": "2026-03-01" }), 400, "malformed-json", "from"),
    ] {
        let reply = o.ask(&alice, body.clone()).await.expect_problem(status, code).body;
        assert_eq!(reply["field"], field, "{body} → {reply}");
    }

    // Hours: two hours of time off in lieu; sick leave needs nobody's approval; unpaid
    // leave keeps no balance.
    let toil = o
        .ask(&alice, json!({ "type": "toil", "from": "2026-05-04", "to": "2026-05-04", "hours": 2 }))
        .await
        .expect(201)
        .body;
    assert_eq!((toil["amount"].as_f64(), toil["days"][0]["part"].as_str()), (Some(2.0), Some("hours")));
    // Hours add up across requests: 2 + 3 + 3 fill the 8-hour day, one more does not fit.
    for hours in [3, 3] {
        o.ask(&alice, json!({ "type": "toil", "from": "2026-05-04", "to": "2026-05-04", "hours": hours }))
            .await
            .expect(201);
    }
    o.ask(&alice, json!({ "type": "toil", "from": "2026-05-04", "to": "2026-05-04", "hours": 0.5 }))
        .await
        .expect_problem(409, "leave-overlap");
    let sick =
        o.ask(&alice, json!({ "type": "sick", "from": "2026-05-05", "to": "2026-05-05" })).await.expect(201).body;
    assert_eq!(sick["state"], "approved");
    o.ask(&alice, json!({ "type": "unpaid", "from": "2026-07-06", "to": "2026-07-31" })).await.expect(201);
    assert_eq!(o.balance(alice.number, "unpaid", "2026-07-31").await["remaining"], Value::Null);

    // The manager's queue and team calendar; a colleague sees neither.
    let queue = o.call(&bob, Method::GET, "/leave-requests?awaiting=me", None).await.expect(200).body;
    let waiting: Vec<&str> = queue["items"].as_array().unwrap().iter().map(|r| r["type"].as_str().unwrap()).collect();
    assert_eq!(waiting, ["annual", "toil", "toil", "toil", "unpaid"], "{queue}");
    let calendar = format!("/leave-calendar?manager={}&from=2026-04-06&to=2026-04-10", bob.number);
    let team = o.call(&bob, Method::GET, &calendar, None).await.expect(200).body;
    let away: Vec<(&str, &str)> = team["people"][0]["days"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["date"].as_str().unwrap(), d["part"].as_str().unwrap()))
        .collect();
    assert_eq!(away, [("2026-04-07", "full"), ("2026-04-08", "morning"), ("2026-04-08", "afternoon")], "{team}");
    o.call(&carol, Method::GET, &calendar, None).await.expect_problem(403, "not-your-team");

    // Rejecting needs a reason; cancelling approved leave before it starts gives it back.
    let pending = queue["items"][0]["id"].as_u64().unwrap();
    let reject = format!("/leave-requests/{pending}/reject");
    let missing = o.call(&bob, Method::POST, &reject, Some(json!({}))).await.expect_problem(422, "required").body;
    assert_eq!(missing["field"], "reason");
    let rejected =
        o.call(&bob, Method::POST, &reject, Some(json!({ "reason": "release week" }))).await.expect(200).body;
    assert_eq!((rejected["state"].as_str(), rejected["note"].as_str()), (Some("rejected"), Some("release week")));
    let cancelled = o.call(&alice, Method::POST, &format!("/leave-requests/{id}/cancel"), None).await.expect(200).body;
    assert_eq!((cancelled["state"].as_str(), cancelled["was"].as_str()), (Some("cancelled"), Some("approved")));
    assert_eq!(amounts(&o.balance(alice.number, "annual", "2026-04-02").await), [25.0, 25.0, 0.0, 0.0, 0.0, 0.0, 25.0]);
    let events = o.s.get("/v1/tenants/default/events?topic=hr.leave.cancelled").await.expect(200).body;
    let payload: Value = serde_json::from_str(events["items"][0]["payload"].as_str().unwrap()).unwrap();
    assert_eq!((payload["was"].as_str(), payload["request"]["id"].as_u64()), (Some("approved"), Some(id)), "{events}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn employees_managers_hr_and_other_tenants_see_only_what_is_theirs() {
    let o = Office::open("2026-03-02").await;
    let bob = o.hire("Bob Manager", None).await;
    let alice = o.hire("Alice Engineer", Some(bob.number)).await;
    let carol = o.hire("Carol Colleague", None).await;
    let id = o
        .ask(&alice, json!({ "type": "annual", "from": "2026-05-04", "to": "2026-05-05" }))
        .await
        .expect(201)
        .body["id"]
        .as_u64()
        .unwrap();
    let balances = |n: u64| format!("/employees/{n}/balances");
    let request = format!("/leave-requests/{id}");
    // (who, method, path, body, status, code): employee, manager, colleague.
    let mine = format!("/leave-requests?employee={}", alice.number);
    for (who, method, path, status, code) in [
        (&alice, Method::GET, balances(alice.number), 200, ""),
        (&alice, Method::GET, request.clone(), 200, ""),
        (&alice, Method::GET, "/me".to_owned(), 200, ""),
        (&alice, Method::GET, balances(carol.number), 403, "not-your-employee"),
        (&bob, Method::GET, balances(alice.number), 200, ""),
        (&bob, Method::GET, request.clone(), 200, ""),
        (&bob, Method::GET, mine.clone(), 200, ""),
        (&carol, Method::GET, balances(alice.number), 403, "not-your-employee"),
        (&carol, Method::GET, request.clone(), 403, "not-your-employee"),
        (&carol, Method::GET, mine.clone(), 403, "not-your-employee"),
        (&carol, Method::POST, format!("/leave-requests/{id}/cancel"), 403, "not-your-leave"),
        (&bob, Method::PUT, "/leave-types/annual".to_owned(), 403, "forbidden"),
        (&alice, Method::PUT, format!("/employees/{}/allocations/annual/2026", alice.number), 403, "forbidden"),
        (&alice, Method::POST, "/leave-accruals".to_owned(), 403, "forbidden"),
    ] {
        let body = (method != Method::GET).then(|| json!({ "name": "x", "unit": "days", "amount": 99 }));
        let reply = o.call(who, method.clone(), &path, body).await;
        if status == 200 {
            reply.expect(200);
        } else {
            reply.expect_problem(status, code);
        }
    }
    // Asking for someone else is HR's; HR (the admin here) may, and sees everyone's.
    o.ask(&carol, json!({ "employee": alice.number, "type": "annual", "from": "2026-06-01", "to": "2026-06-01" }))
        .await
        .expect_problem(403, "not-your-employee");
    o.s.post(
        &format!("{HR}/leave-requests"),
        json!({ "employee": carol.number, "type": "annual", "from": "2026-06-01", "to": "2026-06-01" }),
    )
    .await
    .expect(201);
    let everyone = o.s.get(&format!("{HR}/leave-requests")).await.expect(200).body;
    assert_eq!(everyone["items"].as_array().unwrap().len(), 2);
    // Away all day today on approved leave: `on-leave`; a half day is still `active`.
    o.s.post(
        &format!("{HR}/leave-requests"),
        json!({ "employee": carol.number, "type": "sick", "from": "2026-03-02", "to": "2026-03-02" }),
    )
    .await
    .expect(201);
    assert_eq!(o.s.get(&format!("{HR}/employees/{}", carol.number)).await.expect(200).body["status"], "on-leave");
    o.s.post(
        &format!("{HR}/leave-requests"),
        json!({ "employee": bob.number, "type": "sick", "from": "2026-03-02", "to": "2026-03-02", "to_half": "morning" }),
    )
    .await
    .expect(201);
    assert_eq!(o.s.get(&format!("{HR}/employees/{}", bob.number)).await.expect(200).body["status"], "active");
    o.s.post(
        &format!("{HR}/leave-requests"),
        json!({ "employee": bob.number, "type": "sick", "from": "2026-03-02", "to": "2026-03-02", "to_half": "afternoon" }),
    )
    .await
    .expect(201);
    assert_eq!(o.s.get(&format!("{HR}/employees/{}", bob.number)).await.expect(200).body["status"], "on-leave");
    // Without a linked record there is no "own" leave.
    let stranger =
        o.s.post("/v1/tenants/default/tokens", json!({ "name": "x", "role": "member" })).await.expect(201).body;
    let stranger = Person { number: 0, token: stranger["token"].as_str().unwrap().to_owned() };
    o.call(&stranger, Method::GET, "/me", None).await.expect_problem(404, "no-employee-record");
    o.ask(&stranger, json!({ "type": "annual", "from": "2026-06-01", "to": "2026-06-01" }))
        .await
        .expect_problem(403, "no-employee-record");
    // A member without `hr.leave` is stopped by the host before HR runs.
    o.s.put("/v1/tenants/default/roles/member/permissions", json!({ "permissions": [] })).await.expect(200);
    o.call(&alice, Method::GET, &balances(alice.number), None).await.expect_problem(403, "forbidden");
    // Another tenant's HR knows none of it.
    let acme = o.s.tenant_with_token("acme", "tenant-admin").await;
    o.s.as_token(Some(&acme), Method::POST, "/v1/tenants/acme/plugins/hr/enable", None).await.expect(200);
    o.s.as_token(Some(&acme), Method::GET, &format!("{HR}{request}"), None)
        .await
        .expect_problem(404, "leave-request-not-found");
    o.s.as_token(Some(&acme), Method::GET, &format!("{HR}{}", balances(alice.number)), None)
        .await
        .expect_problem(404, "employee-not-found");
    // Linking a user twice is refused.
    let taken =
        o.s.patch(
            &format!("{HR}/employees/{}", carol.number),
            json!({ "user": o.s.get(&format!("{HR}/employees/{}", alice.number)).await.body["user"] }),
        )
        .await;
    taken.expect_problem(409, "user-taken");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_concurrent_requests_that_each_fit_only_alone_exactly_one_is_granted() {
    // Three requests at once, round after round; whichever commits first wins and the
    // others are run again and refused. (The platform's own suite forces the interleaving
    // deterministically: `serializable::`; this shows HR relies on it correctly.)
    let o = Office::open("2026-03-02").await;
    let alice = o.hire("Alice Engineer", None).await;
    // Three days this year: no two requests of two days both fit.
    o.s.put(&format!("{HR}/employees/{}/allocations/annual/2026", alice.number), json!({ "amount": 3 }))
        .await
        .expect(200);
    for round in 0..8u32 {
        // Three different weeks, so only the balance can stop them.
        // A Monday and Tuesday in June, July and September.
        let week = |month: u32, mondays: [u32; 4]| {
            let monday = mondays[(round % 4) as usize];
            json!({ "type": "annual", "from": format!("2026-{month:02}-{monday:02}"),
                    "to": format!("2026-{month:02}-{:02}", monday + 1) })
        };
        let (a, b, c) = tokio::join!(
            o.ask(&alice, week(6, [1, 8, 15, 22])),
            o.ask(&alice, week(7, [6, 13, 20, 27])),
            o.ask(&alice, week(9, [7, 14, 21, 28]))
        );
        let replies = [a, b, c];
        let granted: Vec<&keel_tests::Reply> = replies.iter().filter(|r| r.status == 201).collect();
        assert_eq!(granted.len(), 1, "round {round}: {:?}", replies.iter().map(|r| &r.body).collect::<Vec<_>>());
        for refused in replies.iter().filter(|r| r.status != 201) {
            assert_eq!(
                (refused.status, refused.code()),
                (409, "insufficient-balance"),
                "round {round}: {}",
                refused.body
            );
        }
        // The balance never went below zero; give the days back for the next round.
        assert_eq!(o.balance(alice.number, "annual", "2026-03-02").await["remaining"].as_f64(), Some(1.0));
        let id = granted[0].body["id"].as_u64().unwrap();
        o.call(&alice, Method::POST, &format!("/leave-requests/{id}/cancel"), None).await.expect(200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accruals_and_carry_over_at_year_end_are_capped_in_hours_and_in_days() {
    let o = Office::open("2026-12-30").await;
    let alice = o.hire("Alice Engineer", None).await;
    // Three types carry days over, and 40 colleagues: closing the year reads each person's
    // requests once per type, so the accrual task must size its chunks to the types.
    o.s.put(
        &format!("{HR}/leave-types/monthly"),
        json!({ "name": "Accruing leave", "unit": "days", "allowance": 12, "accrual": "monthly", "carry_over_cap": 2 }),
    )
    .await
    .expect(200);
    let mut csv = String::from("legal_name,email,title,hire_date\n");
    for i in 1..=40 {
        csv += &format!("Colleague {i},colleague{i}@example.com,Engineer,2024-01-01\n");
    }
    o.s.post_raw("/v1/imports/hr/employees", Some("text/csv"), csv.into_bytes()).await.expect(200);
    // 5 days of annual leave in December: 20 of 25 left, of which 5 (the cap) move on.
    let days =
        o.ask(&alice, json!({ "type": "annual", "from": "2026-12-07", "to": "2026-12-11" })).await.expect(201).body;
    // 8 hours in lieu: 32 of 40 left. The cap is 16 hours, and it is not read as 16 days
    // (128 hours, which would carry all 32).
    let hours =
        o.ask(&alice, json!({ "type": "toil", "from": "2026-12-14", "to": "2026-12-14" })).await.expect(201).body;
    assert_eq!(hours["amount"].as_f64(), Some(8.0));
    for r in [&days, &hours] {
        o.s.post(&format!("{HR}/leave-requests/{}/approve", r["id"]), json!({})).await.expect(200);
    }
    // The nightly task has kept everyone's 2026 allocations (run here by hand).
    let nightly = o.s.post(&format!("{HR}/leave-accruals"), json!({})).await.expect(202).body;
    let nightly = nightly["task"].as_str().unwrap().to_owned();
    o.s.eventually(&format!("/v1/tenants/default/tasks/{nightly}"), "accruals", |t| t["status"] == "done").await;
    // The monthly type has accrued a twelfth for each month ended: 11 of 12 days.
    assert_eq!(
        amounts(&o.balance(alice.number, "monthly", "2026-12-30").await),
        [12.0, 11.0, 0.0, 0.0, 0.0, 0.0, 11.0]
    );

    // New year. The accrual task brings everyone up to date (the nightly schedule does the
    // same); its progress counts employees.
    o.s.advance_clock(3 * 86_400_000).await;
    let started = o.s.post(&format!("{HR}/leave-accruals"), json!({})).await.expect(202).body;
    assert_eq!(started["through"], "2027-01-02");
    let task = started["task"].as_str().unwrap();
    let done =
        o.s.eventually(&format!("/v1/tenants/default/tasks/{task}"), "accruals", |t| t["status"] == "done").await;
    // Three types keep a balance, so a chunk closes at most 30 people's years (each reads
    // their requests once per type, within a call's 100 re-checked queries).
    assert_eq!((done["done"].as_u64(), done["chunks"].as_u64()), (Some(41), Some(2)), "{done}");
    let colleague = o.balance(alice.number + 1, "annual", "2027-01-02").await;
    assert_eq!(amounts(&colleague)[..3], [25.0, 25.0, 5.0], "a full year unused carries the cap: {colleague}");
    let annual = o.balance(alice.number, "annual", "2027-01-02").await;
    assert_eq!(amounts(&annual), [25.0, 25.0, 5.0, 0.0, 0.0, 0.0, 30.0], "{annual}");
    let toil = o.balance(alice.number, "toil", "2027-01-02").await;
    assert_eq!(amounts(&toil), [40.0, 40.0, 16.0, 0.0, 0.0, 0.0, 56.0], "{toil}");
    assert_eq!(
        o.balance(alice.number, "monthly", "2027-01-02").await["accrued"].as_f64(),
        Some(0.0),
        "no month ended yet"
    );
    // The task stored what it worked out: changing the type now does not rewrite this year.
    o.s.put(
        &format!("{HR}/leave-types/annual"),
        json!({ "name": "Annual leave", "unit": "days", "allowance": 10, "carry_over_cap": 1 }),
    )
    .await
    .expect(200);
    assert_eq!(amounts(&o.balance(alice.number, "annual", "2027-01-02").await)[..3], [25.0, 25.0, 5.0]);
    // Last year, closed: 20 days were left, 5 of them moved on, so a late-recorded absence
    // in December may use the other 15 but not the 5 now in 2027.
    let closed = o.balance(alice.number, "annual", "2026-12-31").await;
    assert_eq!(amounts(&closed), [25.0, 25.0, 0.0, 5.0, 0.0, 0.0, 15.0], "{closed}");
    assert_eq!(closed["carried_forward"].as_f64(), Some(5.0));
    let late = o
        .ask(&alice, json!({ "type": "annual", "from": "2026-11-02", "to": "2026-11-27" }))
        .await
        .expect_problem(409, "insufficient-balance")
        .body;
    assert!(late["detail"].as_str().unwrap().contains("carried forward to 2027 5"), "{late}");
    o.ask(&alice, json!({ "type": "annual", "from": "2026-11-02", "to": "2026-11-20" })).await.expect(201);

    // A month later January has accrued; HR's own allocation for a person replaces the
    // allowance but keeps what was carried over.
    o.s.advance_clock(30 * 86_400_000).await;
    assert_eq!(o.balance(alice.number, "monthly", "2027-02-01").await["accrued"].as_f64(), Some(1.0));
    let set =
        o.s.put(&format!("{HR}/employees/{}/allocations/annual/2027", alice.number), json!({ "amount": 27.5 }))
            .await
            .expect(200)
            .body;
    assert_eq!(
        (set["balance"]["allocated"].as_f64(), set["balance"]["carried_over"].as_f64()),
        (Some(27.5), Some(5.0))
    );
    o.s.put(&format!("{HR}/employees/{}/allocations/annual/2027", alice.number), json!({ "amount": 0.0001 }))
        .await
        .expect_problem(422, "invalid-amount");
    // A type cannot change its unit under amounts already counted in the old one.
    o.s.put(&format!("{HR}/leave-types/toil"), json!({ "name": "TOIL", "unit": "days", "allowance": 5 }))
        .await
        .expect_problem(409, "unit-change");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_directory_tells_payroll_who_worked_in_a_period_their_working_time_and_leave() {
    let o = Office::open("2026-03-02").await;
    o.s.install("fixtures/roster").await.expect(201);
    let bob = o.hire("Bob Manager", None).await;
    let alice = o.hire("Alice Engineer", Some(bob.number)).await;
    let carol = o.hire("Carol Leaver", None).await;
    let dave =
        o.s.post(
            &format!("{HR}/employees"),
            json!({ "legal_name": "Dave Joiner", "email": "dave@example.com", "title": "Engineer",
                    "hire_date": "2026-02-16" }),
        )
        .await
        .expect(201)
        .body["number"]
            .as_u64()
            .unwrap();
    // Alice goes part time (Monday to Wednesday, 7.5 hours) from 16 February; Carol's last
    // day is 10 February.
    o.s.patch(
        &format!("{HR}/employees/{}", alice.number),
        json!({ "effective": "2026-02-16", "pattern": { "days": ["mon", "tue", "wed"], "hours_per_day": 7.5 } }),
    )
    .await
    .expect(200);
    o.s.post(
        &format!("{HR}/employees/{}/terminate", carol.number),
        json!({ "last_day": "2026-02-10", "reason": "moved" }),
    )
    .await
    .expect(200);
    // Two days of unpaid leave and a morning of annual leave, approved; a pending day is not
    // counted.
    for body in [
        json!({ "type": "unpaid", "from": "2026-02-04", "to": "2026-02-05" }),
        json!({ "type": "annual", "from": "2026-02-09", "to": "2026-02-09", "to_half": "morning" }),
    ] {
        let id = o.ask(&alice, body).await.expect(201).body["id"].as_u64().unwrap();
        o.call(&bob, Method::POST, &format!("/leave-requests/{id}/approve"), None).await.expect(200);
    }
    o.ask(&alice, json!({ "type": "unpaid", "from": "2026-02-11", "to": "2026-02-11" })).await.expect(201);

    let roster = "/v1/plugins/roster";
    let ids = |body: &Value| -> Vec<String> {
        body["items"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap().to_owned()).collect()
    };
    let february = o.s.get(&format!("{roster}/active?from=2026-02-01&to=2026-02-28")).await.expect(200).body;
    let all: Vec<String> = [bob.number, alice.number, carol.number, dave].iter().map(u64::to_string).collect();
    assert_eq!(ids(&february), all, "{february}");
    let march = o.s.get(&format!("{roster}/active?from=2026-03-01&to=2026-03-31")).await.expect(200).body;
    assert!(!ids(&march).contains(&carol.number.to_string()), "Carol left in February: {march}");
    assert_eq!(ids(&march).len(), 3);

    let manager = o.s.get(&format!("{roster}/employees/{}/manager", alice.number)).await.expect(200).body;
    assert_eq!(manager["manager"]["name"], "Bob Manager");
    assert_eq!(
        o.s.get(&format!("{roster}/employees/{}/manager", bob.number)).await.expect(200).body["manager"],
        Value::Null
    );

    let time = |n: u64| format!("{roster}/employees/{n}/working-time?from=2026-02-01&to=2026-02-28");
    // February 2026 has 20 weekdays. Alice works 10 of them full time to the 15th, then
    // Monday to Wednesday: 6 more, at 7.5 hours.
    let alice_time = o.s.get(&time(alice.number)).await.expect(200).body;
    assert_eq!(
        [
            &alice_time["period_days"],
            &alice_time["employed_days"],
            &alice_time["period_working_days"],
            &alice_time["working_days"],
            &alice_time["working_minutes"]
        ],
        [&json!(28), &json!(28), &json!(16), &json!(16), &json!(10 * 480 + 6 * 450)],
        "{alice_time}"
    );
    assert_eq!(
        alice_time["leave"],
        json!([
            { "type": "annual", "name": "Annual leave", "paid": true, "unit": "days", "amount": "0.5",
              "day_thousandths": 500, "minutes": 240 },
            { "type": "unpaid", "name": "Unpaid leave", "paid": false, "unit": "days", "amount": "2",
              "day_thousandths": 2000, "minutes": 960 },
        ])
    );
    // Dave joined on the 16th: 10 of February's 20 working days. Carol worked to the 10th.
    let dave_time = o.s.get(&time(dave)).await.expect(200).body;
    assert_eq!((dave_time["employed_days"].as_u64(), dave_time["working_days"].as_u64()), (Some(13), Some(10)));
    assert_eq!(dave_time["period_working_days"].as_u64(), Some(20));
    let carol_time = o.s.get(&time(carol.number)).await.expect(200).body;
    assert_eq!((carol_time["employed_days"].as_u64(), carol_time["working_days"].as_u64()), (Some(10), Some(7)));

    // The batch (0.2.2) answers a page of people at once, exactly as one at a time: the
    // same people as `employees-active`, the same records, the same working time.
    for (from, to) in [("2026-02-01", "2026-02-28"), ("2026-03-01", "2026-03-31"), ("2026-02-10", "2026-02-16")] {
        let batch = o.s.get(&format!("{roster}/working-times?from={from}&to={to}")).await.expect(200).body;
        let active = o.s.get(&format!("{roster}/active?from={from}&to={to}")).await.expect(200).body;
        let items = batch["items"].as_array().unwrap();
        let people: Vec<Value> = items.iter().map(|i| i["employee"].clone()).collect();
        assert_eq!(Value::from(people), active["items"], "{from}..{to}");
        for item in items {
            let id = item["employee"]["id"].as_str().unwrap();
            let one =
                o.s.get(&format!("{roster}/employees/{id}/working-time?from={from}&to={to}")).await.expect(200).body;
            assert_eq!(item["time"], one, "employee {id}, {from}..{to}");
        }
    }
    assert_eq!(
        o.s.get(&format!("{roster}/working-times?from=2026-02-01&to=2026-02-28")).await.expect(200).body["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["employee"]["id"] == alice.number.to_string())
            .unwrap()["time"],
        alice_time
    );
    o.s.get(&format!("{roster}/working-times?from=2026-03-01&to=2026-02-01"))
        .await
        .expect_problem(422, "invalid-period");

    // Bad arguments keep HR's codes across the call.
    let bad =
        o.s.get(&format!("{roster}/employees/{}/working-time?from=2026-02-30&to=2026-03-01", alice.number))
            .await
            .expect_problem(422, "invalid-date")
            .body;
    assert_eq!(bad["field"], "from");
    o.s.get(&format!("{roster}/employees/{}/working-time?from=2026-03-01&to=2026-02-01", alice.number))
        .await
        .expect_problem(422, "invalid-period");
    o.s.get(&format!("{roster}/employees/99/working-time?from=2026-02-01&to=2026-02-28"))
        .await
        .expect_problem(404, "employee-not-found");
}

/// The HR guide's "first day", step by step: a new tenant switches HR on, imports its 20
/// staff from a spreadsheet, sets up leave, links two people's sign-ins, and one asks for
/// Easter off, which her manager approves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_business_first_day_as_the_guide_tells_it() {
    let at = noon("2026-03-02");
    let s = TestServer::start_with(|c| c.frozen_clock_at = Some(at)).await;
    s.install("bundled/hr").await.expect(201);
    let acme = s.tenant_with_token("acme", "tenant-admin").await;
    let as_acme = |method: Method, path: &str, body: Option<Value>| {
        let path = if path.starts_with("/v1/") { path.to_owned() } else { format!("{HR}{path}") };
        let (s, acme) = (&s, acme.clone());
        async move { s.as_token(Some(&acme), method, &path, body).await }
    };
    as_acme(Method::POST, "/v1/tenants/acme/plugins/hr/enable", None).await.expect(200);
    as_acme(Method::PUT, "/departments/eng", Some(json!({ "name": "Engineering" }))).await.expect(200);

    let mut csv = String::from("legal_name,email,title,department,manager_email,location,hire_date\n");
    csv += "Grace Hopper,grace@acme.example,Head of Engineering,eng,,london,2019-04-01\n";
    csv += "Ada Lovelace,ada@acme.example,Engineer,eng,grace@acme.example,london,2024-01-08\n";
    for i in 3..=20 {
        csv += &format!(
            "Person {i},person{i}@acme.example,Engineer,eng,grace@acme.example,london,2025-0{}-01\n",
            1 + i % 9
        );
    }
    let request = s
        .http
        .post(format!("{}/v1/imports/hr/employees", s.base))
        .header("authorization", format!("Bearer {acme}"))
        .header("content-type", "text/csv")
        .body(csv);
    let imported = s.send(request).await.expect(200).body;
    assert_eq!((imported["rows"].as_u64(), imported["committed"].as_bool()), (Some(20), Some(true)), "{imported}");

    as_acme(
        Method::PUT,
        "/leave-types/annual",
        Some(json!({ "name": "Annual leave", "unit": "days", "allowance": 25, "carry_over_cap": 5 })),
    )
    .await
    .expect(200);
    as_acme(
        Method::PUT,
        "/holiday-calendars/london",
        Some(json!({ "name": "England", "holidays": [
            { "date": "2026-04-03", "name": "Good Friday" }, { "date": "2026-04-06", "name": "Easter Monday" } ] })),
    )
    .await
    .expect(200);
    as_acme(
        Method::PUT,
        "/v1/tenants/acme/roles/member/permissions",
        Some(json!({ "permissions": ["hr.leave", "hr.directory"] })),
    )
    .await
    .expect(200);
    let password = "correct horse battery staple";
    let mut tokens = Vec::new();
    for (username, number) in [("ada", 2), ("grace", 1)] {
        let user = as_acme(
            Method::POST,
            "/v1/tenants/acme/users",
            Some(json!({ "username": username, "display_name": username, "password": password, "role": "member" })),
        )
        .await
        .expect(201)
        .body;
        as_acme(Method::PATCH, &format!("/employees/{number}"), Some(json!({ "user": user["id"] }))).await.expect(200);
        let session = s
            .as_token(
                None,
                Method::POST,
                "/v1/auth/login",
                Some(json!({ "tenant": "acme", "username": username, "password": password })),
            )
            .await
            .expect(200)
            .body;
        tokens.push(session["token"].as_str().unwrap().to_owned());
    }
    let (ada, grace) = (&tokens[0], &tokens[1]);

    let asked = s
        .as_token(
            Some(ada),
            Method::POST,
            &format!("{HR}/leave-requests"),
            Some(json!({ "type": "annual", "from": "2026-04-01", "from_half": "afternoon",
                         "to": "2026-04-08", "to_half": "morning" })),
        )
        .await
        .expect(201)
        .body;
    assert_eq!((asked["amount"].as_f64(), asked["approver"].as_u64()), (Some(3.0), Some(1)), "{asked}");
    let queue =
        s.as_token(Some(grace), Method::GET, &format!("{HR}/leave-requests?awaiting=me"), None).await.expect(200).body;
    assert_eq!(queue["items"][0]["id"], asked["id"]);
    s.as_token(Some(grace), Method::POST, &format!("{HR}/leave-requests/{}/approve", asked["id"]), None)
        .await
        .expect(200);
    let balances =
        s.as_token(Some(ada), Method::GET, &format!("{HR}/employees/2/balances"), None).await.expect(200).body;
    let annual = &balances["items"][0];
    assert_eq!((annual["booked"].as_f64(), annual["remaining"].as_f64()), (Some(3.0), Some(22.0)), "{balances}");
    // The default tenant has HR installed too, and sees none of Acme's people.
    s.get(&format!("{HR}/employees/2")).await.expect_problem(404, "employee-not-found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leave_follows_the_person_through_a_new_manager_a_new_pattern_and_their_last_day() {
    let o = Office::open("2026-03-02").await;
    let bob = o.hire("Bob Manager", None).await;
    let carol = o.hire("Carol Manager", None).await;
    let alice = o.hire("Alice Engineer", Some(bob.number)).await;
    let ask = |from: &str, to: &str| json!({ "type": "annual", "from": from, "to": to });
    let may = o.ask(&alice, ask("2026-05-04", "2026-05-05")).await.expect(201).body["id"].as_u64().unwrap();

    // Alice moves to Carol's team: her pending leave goes with her to Carol's queue.
    o.s.patch(&format!("{HR}/employees/{}", alice.number), json!({ "manager": carol.number })).await.expect(200);
    let queue = |who| o.call(who, Method::GET, "/leave-requests?awaiting=me", None);
    assert_eq!(queue(&carol).await.expect(200).body["items"][0]["id"].as_u64(), Some(may));
    assert_eq!(queue(&bob).await.expect(200).body["items"], json!([]));
    o.call(&bob, Method::POST, &format!("/leave-requests/{may}/approve"), None)
        .await
        .expect_problem(403, "not-approver");
    o.call(&carol, Method::POST, &format!("/leave-requests/{may}/approve"), None).await.expect(200);

    // Bob works Monday to Wednesday from 9 March: a fortnight's request counts each day
    // with the pattern in force on it (5 + 3 days).
    o.s.patch(
        &format!("{HR}/employees/{}", bob.number),
        json!({ "effective": "2026-03-09", "pattern": { "days": ["mon", "tue", "wed"], "hours_per_day": 8 } }),
    )
    .await
    .expect(200);
    let fortnight =
        o.s.post(
            &format!("{HR}/leave-requests"),
            json!({ "employee": bob.number, "type": "unpaid", "from": "2026-03-02", "to": "2026-03-13" }),
        )
        .await
        .expect(201)
        .body;
    assert_eq!(fortnight["amount"].as_f64(), Some(8.0), "{fortnight}");

    // Alice's last day is 22 April: leave after it is cancelled or cut short, and her
    // up-front allowance is prorated to the days employed (112 of 365: 7.67, so 7.5 days).
    let april = o.ask(&alice, ask("2026-04-20", "2026-04-24")).await.expect(201).body["id"].as_u64().unwrap();
    let june = o.ask(&alice, ask("2026-06-01", "2026-06-05")).await.expect(201).body["id"].as_u64().unwrap();
    o.s.post(
        &format!("{HR}/employees/{}/terminate", alice.number),
        json!({ "last_day": "2026-04-22", "reason": "moved away" }),
    )
    .await
    .expect(200);
    let cut = o.s.get(&format!("{HR}/leave-requests/{april}")).await.expect(200).body;
    assert_eq!(
        (cut["state"].as_str(), cut["to"].as_str(), cut["amount"].as_f64()),
        (Some("pending"), Some("2026-04-22"), Some(3.0))
    );
    for id in [may, june] {
        assert_eq!(o.s.get(&format!("{HR}/leave-requests/{id}")).await.expect(200).body["state"], "cancelled");
    }
    let events = o.s.get("/v1/tenants/default/events?topic=hr.leave.cancelled").await.expect(200).body;
    assert_eq!(events["items"].as_array().unwrap().len(), 3, "{events}");
    let annual = o.balance(alice.number, "annual", "2026-04-22").await;
    assert_eq!(annual["allocated"].as_f64(), Some(7.5), "{annual}");
    // Nobody asks for leave after their last day.
    o.s.post(
        &format!("{HR}/leave-requests"),
        json!({ "employee": alice.number, "type": "annual", "from": "2026-04-22", "to": "2026-04-23" }),
    )
    .await
    .expect_problem(422, "not-employed");
}
