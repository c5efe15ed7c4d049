//! The HR department over HTTP: hiring with the organisation's rules, effective-dated
//! history, terminations and rehires, the org chart and headcount as of a date, the
//! directory other departments read, and the helpdesk's tickets for hires and departures.

use keel_tests::TestServer;
use reqwest::Method;
use serde_json::{Value, json};

const HR: &str = "/v1/plugins/hr";

async fn hr() -> TestServer {
    let s = TestServer::with_plugins(&["bundled/hr"]).await;
    for (id, name, parent) in [("eng", "Engineering", None), ("ops", "Operations", Some("eng"))] {
        s.put(&format!("{HR}/departments/{id}"), json!({ "name": name, "parent": parent })).await.expect(200);
    }
    s
}

async fn hire(s: &TestServer, name: &str, email: &str, extra: Value) -> Value {
    let mut body = json!({ "legal_name": name, "email": email, "title": "Analyst", "department": "eng",
                           "hire_date": "2026-01-05" });
    body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    s.post(&format!("{HR}/employees"), body).await.expect(201).body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hiring_keeps_the_organisations_rules_and_names_what_breaks_them() {
    let s = hr().await;
    let ada = hire(&s, "Ada Lovelace", "Ada@Example.com", json!({ "preferred_name": "Ada" })).await;
    assert_eq!((ada["number"].as_u64(), ada["email"].as_str()), (Some(1), Some("ada@example.com")), "{ada}");
    assert_eq!((ada["status"].as_str(), ada["employment"]["type"].as_str()), (Some("active"), Some("full-time")));
    assert_eq!(ada["pattern"], json!({ "days": ["mon", "tue", "wed", "thu", "fri"], "hours_per_day": 8.0 }));

    // The same work email twice, in any case.
    let taken = s
        .post(
            &format!("{HR}/employees"),
            json!({ "legal_name": "Imposter", "email": "ADA@example.com",
               "title": "x", "hire_date": "2026-02-01" }),
        )
        .await
        .expect_problem(409, "email-taken")
        .body;
    assert_eq!(
        (taken["field"].as_str(), taken["detail"].as_str().unwrap().contains("employee 1")),
        (Some("email"), true)
    );
    // Typed errors naming the field.
    for (body, code, field) in [
        (json!({ "department": "nowhere" }), "unknown-department", "department"),
        (json!({ "manager": 99 }), "manager-not-employed", "manager"),
        (json!({ "employment": { "type": "part-time", "percent": 120 } }), "invalid-percent", "employment.percent"),
        (json!({ "pattern": { "days": ["mon", "funday"], "hours_per_day": 8 } }), "invalid-weekday", "pattern.days"),
        (json!({ "pattern": { "days": ["mon"], "hours_per_day": 7.3333 } }), "invalid-hours", "pattern.hours_per_day"),
        (json!({ "title": "   " }), "required", "title"),
    ] {
        let mut hire =
            json!({ "legal_name": "Bo", "email": "bo@example.com", "title": "Clerk", "hire_date": "2026-02-01" });
        hire.as_object_mut().unwrap().extend(body.as_object().unwrap().clone());
        let reply = s.post(&format!("{HR}/employees"), hire).await.expect_problem(422, code).body;
        assert_eq!(reply["field"], field, "{reply}");
    }
    let bad_date = s
        .post(
            &format!("{HR}/employees"),
            json!({ "legal_name": "Bo", "email": "bo@example.com", "title": "Clerk",
               "hire_date": "2026-02-30" }),
        )
        .await
        .expect_problem(400, "malformed-json")
        .body;
    assert!(bad_date["detail"].as_str().unwrap().contains("2026-02-30"), "{bad_date}");
    assert_eq!(bad_date["field"], "hire_date", "{bad_date}");

    // Managers: 2 reports to 1, 3 to 2; making 1 report to 3 closes a loop, named in order.
    hire(&s, "Grace Hopper", "grace@example.com", json!({ "manager": 1 })).await;
    hire(&s, "Alan Turing", "alan@example.com", json!({ "manager": 2 })).await;
    let cycle =
        s.patch(&format!("{HR}/employees/1"), json!({ "manager": 3 })).await.expect_problem(409, "manager-cycle").body;
    assert!(cycle["detail"].as_str().unwrap().ends_with("1 → 3 → 2 → 1"), "{cycle}");
    s.patch(&format!("{HR}/employees/1"), json!({ "manager": 1 })).await.expect_problem(409, "manager-cycle");
    // Departments cannot loop either.
    let loop_ = s.put(&format!("{HR}/departments/eng"), json!({ "name": "Engineering", "parent": "ops" })).await;
    assert!(loop_.expect_problem(409, "department-cycle").body["detail"].as_str().unwrap().contains("eng → ops → eng"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_answers_what_was_true_on_any_date() {
    let s = hr().await;
    hire(&s, "Ada Lovelace", "ada@example.com", json!({})).await;
    let promoted = s
        .patch(
            &format!("{HR}/employees/1"),
            json!({ "effective": "2026-03-01", "title": "Senior Analyst", "department": "ops" }),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(promoted["title"], "Senior Analyst");
    let server = &s;
    let on = |date: &'static str| async move { server.get(&format!("{HR}/employees/1?as_of={date}")).await };
    let before = on("2026-02-28").await.expect(200).body;
    assert_eq!((before["title"].as_str(), before["department"].as_str()), (Some("Analyst"), Some("eng")));
    let after = on("2026-03-01").await.expect(200).body;
    assert_eq!((after["title"].as_str(), after["department"].as_str()), (Some("Senior Analyst"), Some("ops")));
    on("2026-01-04").await.expect_problem(404, "not-employed-yet");
    on("2026-13-01").await.expect_problem(422, "invalid-date");

    // The history lists both changes with who made them; a change cannot go before the last.
    let history = s.get(&format!("{HR}/employees/1/history")).await.expect(200).body;
    let kinds: Vec<(&str, &str)> = history["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["kind"].as_str().unwrap(), c["effective"].as_str().unwrap()))
        .collect();
    assert_eq!(kinds, [("hire", "2026-01-05"), ("update", "2026-03-01")]);
    assert!(history["items"][1]["by"].is_string());
    let late = s.patch(&format!("{HR}/employees/1"), json!({ "effective": "2026-02-01", "title": "Lead" })).await;
    assert_eq!(late.expect_problem(409, "effective-before-last-change").body["field"], "effective");

    // A stale version is refused.
    let stale = s
        .client
        .send(
            s.client
                .request(Method::PATCH, &format!("{HR}/employees/1"))
                .header("if-match", "\"1\"")
                .json(&json!({ "title": "x" })),
        )
        .await
        .unwrap();
    stale.expect_problem(409, "version-mismatch");

    // Leaving and coming back: status by date, and the rehire starts after the last day.
    let left = s
        .post(&format!("{HR}/employees/1/terminate"), json!({ "last_day": "2026-06-30", "reason": "moved abroad" }))
        .await
        .expect(200)
        .body;
    assert_eq!(left["termination"], json!({ "date": "2026-06-30", "reason": "moved abroad" }));
    assert_eq!(on("2026-06-30").await.expect(200).body["status"], "active", "the last day is still employed");
    assert_eq!(on("2026-07-01").await.expect(200).body["status"], "terminated");
    s.post(&format!("{HR}/employees/1/terminate"), json!({ "last_day": "2026-07-31", "reason": "again" }))
        .await
        .expect_problem(409, "already-terminated");
    s.post(&format!("{HR}/employees/1/rehire"), json!({ "hire_date": "2026-06-15" }))
        .await
        .expect_problem(422, "rehire-before-last-day");
    let back = s.post(&format!("{HR}/employees/1/rehire"), json!({ "hire_date": "2026-09-01" })).await.expect(200).body;
    assert_eq!((back["number"].as_u64(), back["hire_date"].as_str()), (Some(1), Some("2026-09-01")));
    assert_eq!(on("2026-08-15").await.expect(200).body["status"], "terminated");
    assert_eq!(on("2026-09-01").await.expect(200).body["status"], "active");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_org_chart_and_headcount_are_as_of_a_date() {
    let s = hr().await;
    hire(&s, "Ada Lovelace", "ada@example.com", json!({})).await;
    hire(&s, "Grace Hopper", "grace@example.com", json!({ "manager": 1, "department": "ops" })).await;
    hire(&s, "Alan Turing", "alan@example.com", json!({ "manager": 1, "employment": { "type": "contractor" } })).await;
    hire(
        &s,
        "Barbara Liskov",
        "barbara@example.com",
        json!({ "manager": 2, "hire_date": "2026-05-01",
          "employment": { "type": "part-time", "percent": 60 }, "department": "ops" }),
    )
    .await;
    s.post(&format!("{HR}/employees/3/terminate"), json!({ "last_day": "2026-04-30", "reason": "contract ended" }))
        .await
        .expect(200);

    let chart = s.get(&format!("{HR}/org-chart?as_of=2026-03-01")).await.expect(200).body;
    assert_eq!(chart["employees"], 3, "{chart}");
    let root = &chart["roots"][0];
    assert_eq!((root["number"].as_u64(), chart["roots"].as_array().unwrap().len()), (Some(1), 1));
    let reports: Vec<u64> = root["reports"].as_array().unwrap().iter().map(|r| r["number"].as_u64().unwrap()).collect();
    assert_eq!(reports, [2, 3]);
    let later = s.get(&format!("{HR}/org-chart?as_of=2026-05-01")).await.expect(200).body;
    assert_eq!(later["roots"][0]["reports"][0]["reports"][0]["number"], 4, "{later}");
    assert_eq!(later["roots"][0]["reports"].as_array().unwrap().len(), 1, "Alan has left");

    let count = s.get(&format!("{HR}/headcount?as_of=2026-05-01")).await.expect(200).body;
    assert_eq!(count["total"], 3, "{count}");
    assert_eq!(count["by_department"], json!({ "eng": { "full-time": 1 }, "ops": { "full-time": 1, "part-time": 1 } }));
    let early = s.get(&format!("{HR}/headcount?as_of=2026-03-01")).await.expect(200).body;
    assert_eq!(
        early["by_department"],
        json!({ "eng": { "full-time": 1, "contractor": 1 }, "ops": { "full-time": 1 } })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_departments_read_people_through_the_directory_hr_provides() {
    let s = TestServer::with_plugins(&["bundled/hr", "fixtures/roster"]).await;
    s.put(&format!("{HR}/departments/eng"), json!({ "name": "Engineering" })).await.expect(200);
    hire(&s, "Ada Lovelace", "ada@example.com", json!({ "preferred_name": "Ada L." })).await;
    let seen = s.get("/v1/plugins/roster/employees/1").await.expect(200).body;
    assert_eq!(
        (seen["name"].as_str(), seen["department"].as_str(), seen["start_date"].as_str(), seen["active"].as_bool()),
        (Some("Ada L."), Some("eng"), Some("2026-01-05"), Some(true)),
        "{seen}"
    );
    // HR's own codes reach the caller's client.
    s.get("/v1/plugins/roster/employees/42").await.expect_problem(404, "employee-not-found");
    let listed = s.get("/v1/plugins/roster/employees?department=eng").await.expect(200).body;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1, "{listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hires_and_departures_open_one_helpdesk_ticket_each_even_when_delivered_twice() {
    let s = TestServer::with_plugins(&["bundled/hr", "bundled/helpdesk"]).await;
    s.put(&format!("{HR}/departments/eng"), json!({ "name": "Engineering" })).await.expect(200);
    hire(&s, "Ada Lovelace", "ada@example.com", json!({ "hire_date": "2026-12-01" })).await;
    let server = &s;
    let tickets = |category: &'static str| {
        let path = format!("/v1/plugins/helpdesk/tickets?category={category}");
        async move {
            server
                .eventually(&path, &format!("an {category} ticket"), |b| !b["items"].as_array().unwrap().is_empty())
                .await
        }
    };
    let onboarding = tickets("onboarding").await;
    assert_eq!(
        onboarding["items"][0]["title"], "Laptop and accounts for Ada Lovelace, starts 2026-12-01",
        "{onboarding}"
    );
    assert_eq!(onboarding["items"][0]["requester"], "hr");

    // The same event delivered again (a replay) opens nothing more.
    let events = s.get("/v1/tenants/default/events?topic=hr.employee.hired").await.expect(200).body;
    let seq = events["items"][0]["seq"].as_i64().unwrap();
    s.post("/v1/tenants/default/events/replay", json!({ "subscriber": "helpdesk", "from_seq": seq, "to_seq": seq }))
        .await
        .expect(202);
    s.eventually("/v1/tenants/default/jobs?plugin=helpdesk&kind=event&status=done", "both deliveries", |b| {
        b["items"].as_array().unwrap().len() == 2
    })
    .await;
    assert_eq!(tickets("onboarding").await["items"].as_array().unwrap().len(), 1);

    s.post(&format!("{HR}/employees/1/terminate"), json!({ "last_day": "2027-03-31", "reason": "resigned" }))
        .await
        .expect(200);
    let offboarding = tickets("offboarding").await;
    assert_eq!(offboarding["items"][0]["title"], "Revoke access of Ada Lovelace, last day 2027-03-31");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn who_may_do_what_is_checked_per_route_and_per_tenant() {
    let s = hr().await;
    hire(&s, "Ada Lovelace", "ada@example.com", json!({})).await;
    // A member who may read the directory but not manage people.
    s.put("/v1/tenants/default/roles/member/permissions", json!({ "permissions": ["hr.directory"] })).await.expect(200);
    let member = s.token_for("default", "member").await;
    s.as_token(Some(&member), Method::GET, &format!("{HR}/employees/1"), None).await.expect(200);
    s.as_token(Some(&member), Method::GET, &format!("{HR}/org-chart"), None).await.expect(200);
    for (method, path, body) in [
        (Method::POST, format!("{HR}/employees"), Some(json!({}))),
        (Method::PATCH, format!("{HR}/employees/1"), Some(json!({ "title": "x" }))),
        (Method::POST, format!("{HR}/employees/1/terminate"), Some(json!({}))),
        (Method::GET, format!("{HR}/employees/1/history"), None),
        (Method::PUT, format!("{HR}/departments/x"), Some(json!({ "name": "x" }))),
    ] {
        s.as_token(Some(&member), method, &path, body).await.expect_problem(403, "forbidden");
    }
    // Another tenant has HR switched on and sees none of these people.
    let acme = s.tenant_with_token("acme", "tenant-admin").await;
    s.as_token(Some(&acme), Method::POST, "/v1/tenants/acme/plugins/hr/enable", None).await.expect(200);
    s.as_token(Some(&acme), Method::GET, &format!("{HR}/employees/1"), None)
        .await
        .expect_problem(404, "employee-not-found");
    let theirs = s.as_token(Some(&acme), Method::GET, &format!("{HR}/employees"), None).await.expect(200).body;
    assert_eq!(theirs["items"], json!([]));
}

/// A spreadsheet export of `n` people: a head of department, then everyone reporting to
/// them; `bad` replaces whole lines (1 is the header).
fn staff_csv(n: usize, bad: &[(usize, &str)]) -> Vec<u8> {
    let mut lines = vec!["number,legal_name,preferred_name,email,title,department,manager_email,employment,percent,days,hours_per_day,hire_date".to_owned()];
    lines.push("100,Grace Hopper,,grace@example.com,Head of Engineering,eng,,full-time,,mon-fri,8,2019-04-01".into());
    for i in 1..n {
        let (employment, percent, days) =
            if i % 4 == 0 { ("part-time", "60", "\"mon,tue,wed\"") } else { ("", "", "") };
        lines.push(format!(
            ",Person {i},,person{i}@example.com,Engineer,eng,grace@example.com,{employment},{percent},{days},7.5,2024-0{}-01",
            1 + i % 9
        ));
    }
    for (line, text) in bad {
        lines[line - 1] = text.to_string();
    }
    (lines.join("\n") + "\n").into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spreadsheet_of_staff_is_imported_whole_or_not_at_all() {
    let s = hr().await;
    const IMPORT: &str = "/v1/imports/hr/employees";
    let bad = [
        (4, ",Nobody,,not-an-email,Engineer,eng,grace@example.com,,,,,2024-01-01"),
        (7, ",Late Boss,,late@example.com,Engineer,eng,zed@example.com,,,,,2024-01-01"),
        (9, ",Half,,half@example.com,Engineer,eng,,part-time,,,,2024-02-30"),
        (12, ",Twice,,grace@example.com,Engineer,eng,,,,,,2024-01-01"),
    ];
    let refused =
        s.post_raw(IMPORT, Some("text/csv"), staff_csv(20, &bad)).await.expect_problem(422, "import-rejected").body;
    let found: Vec<(u64, String)> = refused["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["line"].as_u64().unwrap(), p["field"].as_str().unwrap_or("").to_owned()))
        .collect();
    assert_eq!(
        found,
        [(4, "email".to_owned()), (7, "manager_email".into()), (9, "percent".into()), (12, "email".into())],
        "{refused}"
    );
    assert!(refused["problems"][1]["reason"].as_str().unwrap().contains("list managers before their reports"));
    assert_eq!(s.get(&format!("{HR}/employees")).await.expect(200).body["items"], json!([]), "nothing saved");

    let done = s.post_raw(IMPORT, Some("text/csv"), staff_csv(20, &[])).await.expect(200).body;
    assert_eq!((done["rows"].as_u64(), done["documents"].as_u64()), (Some(20), Some(40)), "{done}");
    let grace = s.get(&format!("{HR}/employees/100")).await.expect(200).body;
    assert_eq!(
        (grace["title"].as_str(), grace["hire_date"].as_str()),
        (Some("Head of Engineering"), Some("2019-04-01"))
    );
    let everyone = s.get(&format!("{HR}/employees?limit=200")).await.expect(200).body;
    let people = everyone["items"].as_array().unwrap();
    assert_eq!(people.len(), 20);
    let part_timer = people.iter().find(|p| p["email"] == "person4@example.com").unwrap().clone();
    assert_eq!(part_timer["employment"], json!({ "type": "part-time", "percent": 60 }), "{part_timer}");
    assert_eq!(part_timer["pattern"], json!({ "days": ["mon", "tue", "wed"], "hours_per_day": 7.5 }));
    assert_eq!(part_timer["manager"], 100);
    let chart = s.get(&format!("{HR}/org-chart?as_of=2025-01-01")).await.expect(200).body;
    assert_eq!((chart["employees"].as_u64(), chart["roots"][0]["reports"].as_array().unwrap().len()), (Some(20), 19));
    // Numbers are never reused: the refused import's are gone (gaps, as with any sequence),
    // and a new hire comes after every number the file gave or the import took.
    let numbers: Vec<u64> = people.iter().map(|p| p["number"].as_u64().unwrap()).collect();
    let highest = *numbers.iter().max().unwrap();
    assert!(numbers.contains(&100) && highest > 100, "{numbers:?}");
    let next = hire(&s, "New Starter", "new@example.com", json!({ "hire_date": "2026-12-01" })).await;
    assert_eq!(next["number"].as_u64(), Some(highest + 1), "{next}");
    // Importing the same people again is refused row by row: their emails are taken.
    let again =
        s.post_raw(IMPORT, Some("text/csv"), staff_csv(20, &[])).await.expect_problem(422, "import-rejected").body;
    assert_eq!(again["problems_total"], 20, "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managers_are_checked_when_they_change_and_on_every_date_a_loop_could_exist() {
    let s = hr().await;
    hire(&s, "Ada Lovelace", "ada@example.com", json!({})).await;
    hire(&s, "Grace Hopper", "grace@example.com", json!({ "manager": 1 })).await;
    s.post(&format!("{HR}/employees/1/terminate"), json!({ "last_day": "2026-02-28", "reason": "retired" }))
        .await
        .expect(200);
    // Grace's manager has left: an unrelated change still goes through, and she can be made
    // to report to nobody (null clears a field; leaving it out changes nothing).
    let fixed = s.patch(&format!("{HR}/employees/2"), json!({ "effective": "2026-03-01", "location": "Oslo" })).await;
    assert_eq!(fixed.expect(200).body["manager"], 1);
    let cleared = s.patch(&format!("{HR}/employees/2"), json!({ "effective": "2026-03-02", "manager": null })).await;
    assert_eq!(cleared.expect(200).body["manager"], Value::Null);
    // A new manager must be employed then.
    s.patch(&format!("{HR}/employees/2"), json!({ "effective": "2026-03-03", "manager": 1 }))
        .await
        .expect_problem(422, "manager-not-employed");

    // A loop that exists only on some dates: Alan reports to Barbara from February, to nobody
    // from mid-2027; Barbara reporting to Alan from January 2027 would close a loop for
    // five months, though the latest records show none.
    hire(&s, "Alan Turing", "alan@example.com", json!({})).await;
    hire(&s, "Barbara Liskov", "barbara@example.com", json!({})).await;
    s.patch(&format!("{HR}/employees/3"), json!({ "effective": "2026-02-01", "manager": 4 })).await.expect(200);
    s.patch(&format!("{HR}/employees/3"), json!({ "effective": "2027-06-01", "manager": null })).await.expect(200);
    let refused = s.patch(&format!("{HR}/employees/4"), json!({ "effective": "2027-01-01", "manager": 3 })).await;
    assert!(refused.expect_problem(409, "manager-cycle").body["detail"].as_str().unwrap().ends_with("4 → 3 → 4"));
    // After Alan stops reporting to her, it is fine.
    s.patch(&format!("{HR}/employees/4"), json!({ "effective": "2027-06-01", "manager": 3 })).await.expect(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_directory_shows_who_left_but_not_why_and_past_records_are_hrs() {
    let s = hr().await;
    hire(&s, "Ada Lovelace", "ada@example.com", json!({})).await;
    s.post(&format!("{HR}/employees/1/terminate"), json!({ "last_day": "2026-06-30", "reason": "personal reasons" }))
        .await
        .expect(200);
    assert_eq!(s.get(&format!("{HR}/employees/1")).await.expect(200).body["termination"]["reason"], "personal reasons");
    s.put("/v1/tenants/default/roles/member/permissions", json!({ "permissions": ["hr.directory"] })).await.expect(200);
    let member = s.token_for("default", "member").await;
    let seen = s.as_token(Some(&member), Method::GET, &format!("{HR}/employees/1"), None).await.expect(200).body;
    assert_eq!(seen["termination"], json!({ "date": "2026-06-30" }), "{seen}");
    s.as_token(Some(&member), Method::GET, &format!("{HR}/employees/1?as_of=2026-03-01"), None)
        .await
        .expect_problem(403, "forbidden");
    // Department ids are plain names.
    s.put(&format!("{HR}/departments/R%26D"), json!({ "name": "R&D" }))
        .await
        .expect_problem(422, "invalid-department-id");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_imported_manager_may_have_joined_after_their_report() {
    let s = hr().await;
    let csv = "legal_name,email,title,department,manager_email,hire_date\n\
               Grace Hopper,grace@example.com,Head,eng,,2020-04-01\n\
               Alan Turing,alan@example.com,Engineer,eng,grace@example.com,2015-01-01\n\
               Ada Lovelace,ada@example.com,Engineer,eng,,2015-01-01\n";
    s.post_raw("/v1/imports/hr/employees", Some("text/csv"), csv.as_bytes().to_vec()).await.expect(200);
    let alan = s.get(&format!("{HR}/employees/2")).await.expect(200).body;
    assert_eq!((alan["manager"].as_u64(), alan["hire_date"].as_str()), (Some(1), Some("2015-01-01")));
    // A number too large for an employee number is the row's problem, not the import's failure.
    let csv = "number,legal_name,email,title,hire_date\n99999999999,Big,big@example.com,x,2020-01-01\n";
    let refused = s.post_raw("/v1/imports/hr/employees", Some("text/csv"), csv.as_bytes().to_vec()).await;
    assert_eq!(refused.expect_problem(422, "import-rejected").body["problems"][0]["field"], "number");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_fields_are_typed_required_on_hire_and_private_ones_shown_only_to_hr_and_the_employee() {
    let s = hr().await;
    for (name, field) in [
        ("badge", json!({ "label": "Badge number", "type": "number", "required": true })),
        ("shirt", json!({ "label": "T-shirt size", "type": "choice", "choices": ["s", "m", "l"] })),
        ("birthday", json!({ "label": "Birthday", "type": "date", "private": true })),
    ] {
        s.put(&format!("{HR}/custom-fields/{name}"), field).await.expect(200);
    }
    for (custom, code, field) in [
        (json!({ "shirt": "m" }), "required", "custom.badge"),
        (json!({ "badge": "seven" }), "invalid-custom-field", "custom.badge"),
        (json!({ "badge": 7, "shirt": "xxl" }), "invalid-custom-field", "custom.shirt"),
        (json!({ "badge": 7, "colour": "red" }), "unknown-custom-field", "custom.colour"),
        (json!({ "badge": 7, "birthday": "1990-02-30" }), "invalid-custom-field", "custom.birthday"),
    ] {
        let body = json!({ "legal_name": "Ada Lovelace", "email": "ada@example.com", "title": "Analyst",
                           "hire_date": "2026-01-05", "custom": custom });
        let reply = s.post(&format!("{HR}/employees"), body).await.expect_problem(422, code).body;
        assert_eq!(reply["field"], field, "{reply}");
    }
    // Ada is a user of her own (a member token) linked to her record.
    s.put("/v1/tenants/default/roles/member/permissions", json!({ "permissions": ["hr.directory", "hr.leave"] }))
        .await
        .expect(200);
    let own = s.post("/v1/tenants/default/tokens", json!({ "name": "ada", "role": "member" })).await.expect(201).body;
    let ada = hire(
        &s,
        "Ada Lovelace",
        "ada@example.com",
        json!({ "user": own["id"], "custom": { "badge": 7, "shirt": "m", "birthday": "1990-05-01" } }),
    )
    .await;
    let everything = json!({ "badge": 7, "shirt": "m", "birthday": "1990-05-01" });
    assert_eq!(ada["custom"], everything);
    let colleague = s.token_for("default", "member").await;
    let seen = s.as_token(Some(&colleague), Method::GET, &format!("{HR}/employees/1"), None).await.expect(200).body;
    assert_eq!(seen["custom"], json!({ "badge": 7, "shirt": "m" }), "a colleague does not see the birthday");
    let listed = s.as_token(Some(&colleague), Method::GET, &format!("{HR}/employees"), None).await.expect(200).body;
    assert_eq!(listed["items"][0]["custom"], json!({ "badge": 7, "shirt": "m" }));
    let me = s.as_token(own["token"].as_str(), Method::GET, &format!("{HR}/me"), None).await.expect(200).body;
    assert_eq!(me["custom"], everything, "Ada sees her own");
    // Other departments hear of the hire without the private field.
    let events = s.get("/v1/tenants/default/events?topic=hr.employee.hired").await.expect(200).body;
    let payload: Value = serde_json::from_str(events["items"][0]["payload"].as_str().unwrap()).unwrap();
    assert_eq!(payload["employee"]["custom"], json!({ "badge": 7, "shirt": "m" }), "{payload}");

    // Changes: null clears an optional field, never a required one; a field keeps its type.
    let changed = s.patch(&format!("{HR}/employees/1"), json!({ "custom": { "shirt": null } })).await.expect(200).body;
    assert_eq!(changed["custom"], json!({ "badge": 7, "birthday": "1990-05-01" }));
    s.patch(&format!("{HR}/employees/1"), json!({ "custom": { "badge": null } })).await.expect_problem(422, "required");
    s.put(&format!("{HR}/custom-fields/birthday"), json!({ "label": "Birthday", "type": "text" }))
        .await
        .expect_problem(409, "field-type-change");
    s.put(&format!("{HR}/custom-fields/shirt"), json!({ "label": "Size", "type": "choice" }))
        .await
        .expect_problem(422, "invalid-choices");
    s.put(&format!("{HR}/custom-fields/Bad-Name"), json!({ "label": "x", "type": "text" }))
        .await
        .expect_problem(422, "invalid-field-name");
    // The history keeps what the fields were.
    let history = s.get(&format!("{HR}/employees/1/history")).await.expect(200).body;
    assert_eq!(history["items"][0]["record"]["custom"]["shirt"], "m");
}
