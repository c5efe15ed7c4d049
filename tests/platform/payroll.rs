//! The payroll department over HTTP with the real HR department: components with formulas
//! checked when saved, tax brackets, compensation, and a month's payslips worked out from
//! HR's working days and unpaid leave, every line asserted to the cent.

use crate::leave::{HR, Office};
use reqwest::Method;
use serde_json::{Value, json};

const PAYROLL: &str = "/v1/plugins/payroll";

fn lines(slip: &Value) -> Vec<(String, String)> {
    slip["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["code"].as_str().unwrap().to_owned(), l["amount"].as_str().unwrap().to_owned()))
        .collect()
}

/// Posts a change of a run's state as a client should: a calculation chunk may commit to
/// the same run at that moment, and the platform then answers `409 write-conflict`, "retry
/// the request".
async fn change_run(s: &keel_tests::TestServer, path: &str) -> keel_tests::Reply {
    for _ in 0..20 {
        let reply = s.post(path, json!({})).await;
        if reply.status != 409 || reply.body["code"] != "write-conflict" {
            return reply;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("{path} lost every race")
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

async fn setup() -> Office {
    // April 2026: 22 weekdays, Good Friday and Easter Monday off, so 20 working days.
    let o = Office::open("2026-05-04").await;
    o.s.install("bundled/payroll").await.expect(201);
    for (code, component) in [
        ("pension", json!({ "name": "Pension", "kind": "deduction", "pre_tax": true, "formula": "base * 0.05" })),
        ("employer_pension", json!({ "name": "Employer pension", "kind": "employer", "formula": "base * 0.03" })),
        (
            "meal",
            json!({ "name": "Meal allowance", "kind": "earning", "amount": "100", "prorated": true, "unpaid_leave": true }),
        ),
    ] {
        o.s.put(&format!("{PAYROLL}/components/{code}"), component).await.expect(200);
    }
    o.s.put(
        &format!("{PAYROLL}/tax"),
        json!({ "allowance": "12000", "brackets": [{ "up_to": "50000", "rate": "0.2" }, { "up_to": null, "rate": "0.4" }] }),
    )
    .await
    .expect(200);
    o
}

async fn pay(o: &Office, employee: u64, pay: Value, components: &[&str]) {
    let components: Vec<Value> = components.iter().map(|c| json!({ "code": c })).collect();
    o.s.put(
        &format!("{PAYROLL}/employees/{employee}/compensation"),
        json!({ "effective": "2020-01-01", "pay": pay, "currency": "EUR", "components": components }),
    )
    .await
    .expect(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_month_of_payslips_from_hrs_working_days_and_unpaid_leave_to_the_cent() {
    let o = setup().await;
    let alice = o.hire("Alice Salaried", None).await;
    let dave = o.hire_on("Dave Joiner", None, "2026-04-16").await;
    let carol = o.hire("Carol Hourly", None).await;
    pay(&o, alice.number, json!({ "salary": "60000" }), &["pension", "employer_pension", "meal"]).await;
    pay(&o, dave.number, json!({ "salary": "48000" }), &["pension", "meal"]).await;
    pay(&o, carol.number, json!({ "hourly": "25" }), &["pension"]).await;
    // Alice takes unpaid leave from Thursday 2 to Tuesday 7 April: Good Friday, the weekend
    // and Easter Monday are not leave, so 2 unpaid days.
    let unpaid =
        o.s.post(
            &format!("{HR}/leave-requests"),
            json!({ "employee": alice.number, "type": "unpaid", "from": "2026-04-02", "to": "2026-04-07" }),
        )
        .await
        .expect(201)
        .body;
    assert_eq!(unpaid["amount"].as_f64(), Some(2.0));
    o.s.post(&format!("{HR}/leave-requests/{}/approve", unpaid["id"]), json!({})).await.expect(200);
    // Carol worked 120 hours and gets a 500.00 bonus.
    o.s.put(
        &format!("{PAYROLL}/employees/{}/inputs/2026-04", carol.number),
        json!({ "hours": "120", "one_offs": [{ "name": "Bonus", "kind": "earning", "amount": "500", "taxable": true }] }),
    )
    .await
    .expect(200);

    let slip = |n: u64| {
        let path = format!("{PAYROLL}/employees/{n}/payslip-preview?period=2026-04");
        let s = &o.s;
        async move { s.get(&path).await }
    };
    // Alice: 5,000.00 a month × 18/20 days = 4,500.00; meal 90.00; pension 5 % = 225.00;
    // taxable 4,365.00 → 52,380 a year − 12,000 = 40,380 at 20 % = 8,076 → 673.00 a month.
    let a = slip(alice.number).await.expect(200).body;
    assert_eq!(
        lines(&a),
        pairs(&[
            ("base", "4500.00"),
            ("meal", "90.00"),
            ("pension", "225.00"),
            ("tax", "673.00"),
            ("employer_pension", "135.00")
        ])
    );
    assert_eq!(
        (a["gross"].as_str(), a["net"].as_str(), a["employer_cost"].as_str()),
        (Some("4590.00"), Some("3692.00"), Some("4725.00"))
    );
    assert_eq!((a["working_days"].as_u64(), a["unpaid_days"].as_str()), (Some(20), Some("2")));
    assert_eq!(a["lines"][0]["basis"], "60000 / 12 × 18/20 working days");
    // Dave, hired on Thursday 16 April: 11 of 20 working days of 4,000.00 = 2,200.00.
    let d = slip(dave.number).await.expect(200).body;
    assert_eq!(lines(&d), pairs(&[("base", "2200.00"), ("meal", "55.00"), ("pension", "110.00"), ("tax", "229.00")]));
    assert_eq!(d["net"], "1916.00");
    // Carol: 120 h × 25.00 + 500.00; pension on her pay; tax on 3,350.00 → 470.00.
    let c = slip(carol.number).await.expect(200).body;
    assert_eq!(
        lines(&c),
        pairs(&[("base", "3000.00"), ("one-off-1", "500.00"), ("pension", "150.00"), ("tax", "470.00")])
    );
    assert_eq!((c["gross"].as_str(), c["net"].as_str()), (Some("3500.00"), Some("2880.00")));

    // Dave was not employed in March; Eve has no pay recorded.
    o.s.get(&format!("{PAYROLL}/employees/{}/payslip-preview?period=2026-03", dave.number))
        .await
        .expect_problem(409, "not-employed-in-period");
    let eve = o.hire("Eve Unpaid", None).await;
    slip(eve.number).await.expect_problem(409, "no-compensation");
    // HR's number written with zeros is the same person, with one history.
    let padded = format!("{PAYROLL}/employees/00{}/compensation", eve.number);
    let eve_pay = json!({ "effective": "2026-01-01", "pay": { "salary": "36000" }, "currency": "EUR" });
    assert_eq!(o.s.put(&padded, eve_pay.clone()).await.expect(200).body["employee"], eve.number.to_string());
    // 3,000.00 a month; (36,000 − 12,000) × 20 % / 12 = 400.00 tax.
    assert_eq!(slip(eve.number).await.expect(200).body["net"], "2600.00");
    // A second entry for the same day is refused, not written over the first.
    o.s.put(&padded, eve_pay).await.expect_problem(409, "compensation-exists");
    // An hourly worker without hours recorded is not paid zero.
    let harry = o.hire("Harry Hourly", None).await;
    pay(&o, harry.number, json!({ "hourly": "20" }), &[]).await;
    slip(harry.number).await.expect_problem(409, "missing-hours");
    o.s.get(&format!("{PAYROLL}/employees/{}/payslip-preview?period=2026-13", alice.number))
        .await
        .expect_problem(422, "invalid-period");
    // Pay is recorded only for someone HR knows.
    o.s.put(
        &format!("{PAYROLL}/employees/999/compensation"),
        json!({ "effective": "2026-01-01", "pay": { "salary": "1" }, "currency": "EUR" }),
    )
    .await
    .expect_problem(404, "employee-not-found");
    // Without HR, payroll says so rather than guessing.
    // Payroll requires the directory only HR provides here: switching HR off takes force.
    let refused =
        o.s.post_empty("/v1/tenants/default/plugins/hr/disable").await.expect_problem(409, "provider-required").body;
    assert_eq!(refused["dependents"][0]["plugin"], "payroll", "{refused}");
    o.s.post_empty("/v1/tenants/default/plugins/hr/disable?force=true").await.expect(200);
    slip(alice.number).await.expect_problem(503, "department-unavailable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn formulas_are_checked_when_saved_and_refusals_point_at_the_fault() {
    let o = setup().await;
    let put = |code: &str, body: Value| {
        let path = format!("{PAYROLL}/components/{code}");
        let s = &o.s;
        async move { s.put(&path, body).await }
    };
    let syntax = put("bonus", json!({ "name": "Bonus", "kind": "earning", "formula": "base * * 0.1" }))
        .await
        .expect_problem(422, "invalid-formula")
        .body;
    assert_eq!(syntax["field"], "formula");
    assert!(syntax["detail"].as_str().unwrap().contains("at character 8"), "{syntax}");
    let unknown = put("bonus", json!({ "name": "Bonus", "kind": "earning", "formula": "0.1 * bsae" }))
        .await
        .expect_problem(422, "unknown-name")
        .body;
    let detail = unknown["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("`bonus`: `bsae` is not a component") && detail.ends_with("(at character 7)"),
        "{unknown}"
    );
    // An earning that reads gross pay is part of what gross pay adds up.
    let cycle = put("bonus", json!({ "name": "Bonus", "kind": "earning", "formula": "gross * 0.1" }))
        .await
        .expect_problem(422, "formula-cycle")
        .body;
    assert!(cycle["detail"].as_str().unwrap().contains("bonus → gross → bonus"), "{cycle}");
    assert_eq!(cycle["field"], "formula");
    // A change to one component can break another, which the refusal names.
    put("half_meal", json!({ "name": "Half meal", "kind": "earning", "formula": "meal * 0.5" })).await.expect(200);
    let loop_ = put("meal", json!({ "name": "Meal", "kind": "earning", "formula": "half_meal * 2" }))
        .await
        .expect_problem(422, "formula-cycle")
        .body;
    assert!(loop_["detail"].as_str().unwrap().starts_with("with this change, `half_meal`:"), "{loop_}");
    put("base", json!({ "name": "x", "kind": "earning", "amount": "1" })).await.expect_problem(422, "reserved-name");
    let float = put("loan", json!({ "name": "Loan", "kind": "deduction", "amount": 0.05 }))
        .await
        .expect_problem(400, "malformed-json")
        .body;
    assert!(float["detail"].as_str().unwrap().contains("write amounts with decimals as text"), "{float}");
    put("loan", json!({ "name": "Loan", "kind": "earning", "pre_tax": true, "amount": "1" }))
        .await
        .expect_problem(422, "pre-tax-deductions-only");
    put("loan", json!({ "name": "Loan", "kind": "deduction", "amount": "1", "formula": "1" }))
        .await
        .expect_problem(422, "amount-or-formula");
    put("loan", json!({ "name": "Loan", "kind": "deduction", "amount": 0.1e-12 }))
        .await
        .expect_problem(400, "malformed-json");
    o.s.put(&format!("{PAYROLL}/tax"), json!({ "allowance": "0", "brackets": [{ "up_to": null, "rate": "1.5" }] }))
        .await
        .expect_problem(422, "invalid-tax-table");
    // Nothing refused was saved.
    let listed = o.s.get(&format!("{PAYROLL}/components")).await.expect(200).body;
    let codes: Vec<&str> = listed["items"].as_array().unwrap().iter().map(|c| c["code"].as_str().unwrap()).collect();
    assert_eq!(codes, ["employer_pension", "half_meal", "meal", "pension"]);
    // Only payroll admins see pay.
    let member = o.hire("Mallory Member", None).await;
    o.s.as_token(Some(&member.token), Method::GET, &format!("{PAYROLL}/components"), None)
        .await
        .expect_problem(403, "forbidden");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pay_run_is_calculated_in_chunks_approved_paid_once_and_then_never_changes() {
    let o = setup().await;
    // 30 staff from a spreadsheet (HR numbers 1-30) on 36,000 a year, and Eve, with no pay yet.
    let mut csv = String::from("legal_name,email,title,hire_date\n");
    for i in 1..=30 {
        csv += &format!("Person {i},person{i}@example.com,Engineer,2024-01-01\n");
    }
    o.s.post_raw("/v1/imports/hr/employees", Some("text/csv"), csv.into_bytes()).await.expect(200);
    for n in 1..=30 {
        pay(&o, n, json!({ "salary": "36000" }), &["pension"]).await;
    }
    let eve = o.hire("Eve Unpaid", None).await;
    // Chunks of 25 rather than 500, to show the run going in steps.
    o.s.patch("/v1/tenants/default/plugins/payroll/settings", json!({ "values": { "run-chunk": 25 } }))
        .await
        .expect(200);

    let started = o.s.post(&format!("{PAYROLL}/runs"), json!({ "period": "2026-04" })).await.expect(202).body;
    assert_eq!(started["state"], "calculating");
    let id = started["id"].as_u64().unwrap();
    let run_path = format!("{PAYROLL}/runs/{id}");
    let wait = |task: String| {
        let s = &o.s;
        async move { s.eventually(&format!("/v1/tenants/default/tasks/{task}"), "the run", |t| t["status"] == "done").await }
    };
    let task = wait(started["task"].as_str().unwrap().to_owned()).await;
    assert!(task["chunks"].as_u64().unwrap() >= 2, "31 people in chunks of 25: {task}");
    assert_eq!(task["done"].as_u64(), Some(31));
    let run = o.s.get(&run_path).await.expect(200).body;
    assert_eq!(
        (run["state"].as_str(), run["calculated"].as_u64(), run["failed"].as_u64()),
        (Some("calculated"), Some(30), Some(1)),
        "{run}"
    );
    // 3,000.00 each; pension 150.00; tax (2,850 × 12 − 12,000) × 20 % / 12 = 370.00; net 2,480.00.
    assert_eq!(run["totals"]["EUR"]["net"], "74400.00", "{run}");
    assert_eq!(run["totals"]["EUR"]["gross"], "90000.00");
    let problems = o.s.get(&format!("{run_path}/problems")).await.expect(200).body;
    assert_eq!(
        problems["items"],
        json!([{ "employee": eve.number.to_string(), "code": "no-compensation",
        "detail": format!("employee `{}` has no pay recorded by 2026-04-30", eve.number) }])
    );
    o.s.post(&format!("{run_path}/approve"), json!({})).await.expect_problem(409, "run-has-problems");

    // Eve's pay recorded, the draft is recalculated: a new generation replaces the payslips.
    pay(&o, eve.number, json!({ "salary": "36000" }), &["pension"]).await;
    let again = o.s.post(&format!("{run_path}/recalculate"), json!({})).await.expect(202).body;
    assert_eq!(again["generation"], 2);
    // The progress bar fills against the people the last calculation went through.
    let progress = o.s.get(&format!("/v1/tenants/default/tasks/{}", again["task"].as_str().unwrap())).await;
    assert_eq!(progress.expect(200).body["total"], 31);
    wait(again["task"].as_str().unwrap().to_owned()).await;
    let run = o.s.get(&run_path).await.expect(200).body;
    assert_eq!((run["calculated"].as_u64(), run["failed"].as_u64()), (Some(31), Some(0)), "{run}");
    assert_eq!(run["totals"]["EUR"]["net"], "76880.00");
    // The stored payslips are what the preview says, and add up to the run's totals.
    let mut nets = 0.0;
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("{run_path}/payslips?limit=10&cursor={c}"),
            None => format!("{run_path}/payslips?limit=10"),
        };
        let page = o.s.get(&path).await.expect(200).body;
        for slip in page["items"].as_array().unwrap() {
            nets += slip["net"].as_str().unwrap().parse::<f64>().unwrap();
        }
        match page["next"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(format!("{nets:.2}"), "76880.00");
    let stored = o.s.get(&format!("{run_path}/payslips/{}", eve.number)).await.expect(200).body;
    let preview =
        o.s.get(&format!("{PAYROLL}/employees/{}/payslip-preview?period=2026-04", eve.number)).await.expect(200).body;
    assert_eq!(stored["lines"], preview["lines"]);

    // Approved and paid: immutable, and the month is paid once.
    o.s.post(&format!("{run_path}/pay"), json!({})).await.expect_problem(409, "not-approved");
    let approved = o.s.post(&format!("{run_path}/approve"), json!({})).await.expect(200).body;
    assert!(approved["approved_by"].is_string());
    o.s.post(&format!("{run_path}/recalculate"), json!({})).await.expect_problem(409, "not-a-draft");
    o.s.post(&format!("{run_path}/cancel"), json!({})).await.expect_problem(409, "not-cancellable");
    o.s.post(&format!("{run_path}/pay"), json!({})).await.expect(200);
    o.s.post(&format!("{run_path}/pay"), json!({})).await.expect_problem(409, "not-approved");
    o.s.post(&format!("{PAYROLL}/runs"), json!({ "period": "2026-04" })).await.expect_problem(409, "period-paid");

    // Without HR a run cannot know whom to pay: the draft says so and can be run again.
    let may = o.s.post(&format!("{PAYROLL}/runs"), json!({ "period": "2026-05" })).await.expect(202).body;
    o.s.post(&format!("{PAYROLL}/runs"), json!({ "period": "2026-05" })).await.expect_problem(409, "run-exists");
    let may_path = format!("{PAYROLL}/runs/{}", may["id"]);
    change_run(&o.s, &format!("{may_path}/cancel")).await.expect(200);
    o.s.post_empty("/v1/tenants/default/plugins/hr/disable?force=true").await.expect(200);
    let blind = o.s.post(&format!("{PAYROLL}/runs"), json!({ "period": "2026-05" })).await.expect(202).body;
    let blind_path = format!("{PAYROLL}/runs/{}", blind["id"]);
    // The chunk is tried three times (with backoff on the host clock) before it gives up.
    let mut run = o.s.get(&blind_path).await.expect(200).body;
    for _ in 0..200 {
        if run["state"] == "calculated" {
            break;
        }
        o.s.advance_clock(5_000).await;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        run = o.s.get(&blind_path).await.expect(200).body;
    }
    assert_eq!(
        (run["state"].as_str(), run["failed"].as_u64(), run["calculated"].as_u64()),
        (Some("calculated"), Some(1), Some(0))
    );
    let why = o.s.get(&format!("{blind_path}/problems")).await.expect(200).body;
    assert_eq!(
        (why["items"][0]["employee"].as_str(), why["items"][0]["code"].as_str()),
        (Some("*"), Some("department-unavailable"))
    );
    o.s.post(&format!("{blind_path}/approve"), json!({})).await.expect_problem(409, "run-has-problems");
    o.s.post_empty("/v1/tenants/default/plugins/hr/enable").await.expect(200);
    // A calculation can be started again at once: the first one's chunks end unwritten.
    let first = change_run(&o.s, &format!("{blind_path}/recalculate")).await.expect(202).body;
    let second = change_run(&o.s, &format!("{blind_path}/recalculate")).await.expect(202).body;
    assert_eq!((first["generation"].as_u64(), second["generation"].as_u64()), (Some(2), Some(3)));
    wait(second["task"].as_str().unwrap().to_owned()).await;
    let run = o.s.get(&blind_path).await.expect(200).body;
    assert_eq!(
        (run["calculated"].as_u64(), run["failed"].as_u64(), run["totals"]["EUR"]["employees"].as_u64()),
        (Some(31), Some(0), Some(31)),
        "{run}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hires_are_enrolled_leavers_get_a_final_pay_and_employees_see_their_payslips_only_once_approved() {
    let o = setup().await;
    o.s.put("/v1/tenants/default/roles/member/permissions", json!({ "permissions": ["hr.leave", "payroll.self"] }))
        .await
        .expect(200);
    o.s.get(&format!("{PAYROLL}/structure")).await.expect_problem(404, "no-structure");
    o.s.put(&format!("{PAYROLL}/structure"), json!({ "currency": "EUR", "components": [{ "code": "nope" }] }))
        .await
        .expect_problem(422, "unknown-component");
    // A structure with a default salary: a hire is paid from their first day, untouched.
    o.s.put(
        &format!("{PAYROLL}/structure"),
        json!({ "currency": "EUR", "pay": { "salary": "36000" }, "components": [{ "code": "pension" }] }),
    )
    .await
    .expect(200);
    let alice = o.hire_on("Alice Auto", None, "2026-04-01").await;
    let enrolled = |n: u64, state: &'static str| {
        let s = &o.s;
        async move {
            s.eventually(&format!("{PAYROLL}/enrolments"), "the enrolment", |b| {
                b["items"].as_array().unwrap().iter().any(|e| e["employee"] == n.to_string() && e["state"] == state)
            })
            .await
        }
    };
    enrolled(alice.number, "enrolled").await;
    let pay = o.s.get(&format!("{PAYROLL}/employees/{}/compensation", alice.number)).await.expect(200).body;
    assert_eq!(
        (pay["effective"].as_str(), pay["pay"]["salary"].as_str(), pay["set_by"].as_str()),
        (Some("2026-04-01"), Some("36000"), Some("event hr.employee.hired"))
    );

    // Without a default salary a hire waits, listed, until their pay is recorded.
    o.s.put(&format!("{PAYROLL}/structure"), json!({ "currency": "EUR" })).await.expect(200);
    let bob = o.hire_on("Bob Waiting", None, "2026-04-01").await;
    enrolled(bob.number, "needs-pay").await;
    let waiting = o.s.get(&format!("{PAYROLL}/enrolments?state=needs-pay")).await.expect(200).body;
    assert_eq!(waiting["items"].as_array().unwrap().len(), 1, "{waiting}");
    o.s.get(&format!("{PAYROLL}/enrolments?state=gone")).await.expect_problem(422, "invalid-state");
    o.s.put(
        &format!("{PAYROLL}/employees/{}/compensation", bob.number),
        json!({ "effective": "2026-04-01", "pay": { "salary": "48000" }, "currency": "EUR" }),
    )
    .await
    .expect(200);
    enrolled(bob.number, "enrolled").await;

    // Bob leaves on 20 April: April is his final pay, prorated by HR's working days (12 of
    // April's 20: 1 to 20 April less Good Friday and Easter Monday).
    o.s.post(
        &format!("{HR}/employees/{}/terminate", bob.number),
        json!({ "last_day": "2026-04-20", "reason": "moved" }),
    )
    .await
    .expect(200);
    let left = enrolled(bob.number, "left").await;
    let entry = left["items"].as_array().unwrap().iter().find(|e| e["employee"] == bob.number.to_string()).unwrap();
    assert_eq!(entry["final_day"], "2026-04-20");
    let preview = |n: u64| format!("{PAYROLL}/employees/{n}/payslip-preview?period=2026-04");
    let bobs = o.s.get(&preview(bob.number)).await.expect(200).body;
    assert_eq!((bobs["final_pay"].as_bool(), bobs["working_days"].as_u64()), (Some(true), Some(12)), "{bobs}");
    assert_eq!(bobs["lines"][0]["amount"], "2400.00", "4,000.00 × 12/20: {bobs}");
    assert_eq!(o.s.get(&preview(alice.number)).await.expect(200).body["final_pay"], false);

    // The run for April: while it is a draft nobody but payroll sees it.
    let run = o.s.post(&format!("{PAYROLL}/runs"), json!({ "period": "2026-04" })).await.expect(202).body;
    let id = run["id"].as_u64().unwrap();
    let run_path = format!("{PAYROLL}/runs/{id}");
    o.s.eventually(&run_path, "the run", |r| r["state"] == "calculated").await;
    let as_alice = |path: String| {
        let (s, token) = (&o.s, alice.token.clone());
        async move { s.as_token(Some(&token), Method::GET, &path, None).await }
    };
    assert_eq!(as_alice(format!("{PAYROLL}/me/payslips")).await.expect(200).body["items"], json!([]));
    as_alice(format!("{PAYROLL}/me/payslips/{id}")).await.expect_problem(404, "payslip-not-found");
    as_alice(format!("{PAYROLL}/me/payslips/{id}/pdf")).await.expect_problem(404, "payslip-not-found");
    as_alice(format!("{PAYROLL}/runs")).await.expect(403);
    as_alice(format!("{run_path}/payslips/{}", bob.number)).await.expect(403);

    // Approved: Alice sees hers, the same as payroll's copy, and nobody else's.
    o.s.post(&format!("{run_path}/approve"), json!({})).await.expect(200);
    let payroll_copy = o.s.get(&format!("{run_path}/payslips/{}", alice.number)).await.expect(200).body;
    let mine = as_alice(format!("{PAYROLL}/me/payslips/{id}")).await.expect(200).body;
    assert_eq!((mine["name"].as_str(), mine["lines"].clone()), (Some("Alice Auto"), payroll_copy["lines"].clone()));
    assert_eq!(mine["net"], payroll_copy["net"]);
    let list = as_alice(format!("{PAYROLL}/me/payslips")).await.expect(200).body;
    assert_eq!(
        list["items"],
        json!([{ "run": id, "period": "2026-04", "state": "approved", "currency": "EUR",
                                       "gross": payroll_copy["gross"], "net": payroll_copy["net"] }])
    );
    // The PDF, read back: her name, the net, the lines, the year to date.
    let pdf_text = |path: String, token: String| {
        let s = &o.s;
        async move {
            let reply = s.http.get(format!("{}{path}", s.base)).bearer_auth(token).send().await.unwrap();
            assert_eq!(reply.status(), 200);
            assert_eq!(reply.headers()["content-type"], "application/pdf");
            let bytes = reply.bytes().await.unwrap();
            assert!(bytes.starts_with(b"%PDF-"));
            let doc = lopdf::Document::load_mem(&bytes).expect("a PDF");
            let pages: Vec<u32> = doc.get_pages().keys().copied().collect();
            doc.extract_text(&pages).expect("its text")
        }
    };
    let text = pdf_text(format!("{PAYROLL}/me/payslips/{id}/pdf"), alice.token.clone()).await;
    let net = format!("EUR {}", payroll_copy["net"].as_str().unwrap());
    for expected in ["Payslip 2026-04", "Alice Auto", "Net pay", &net, "Salary", "Pension", "Year to date 2026"] {
        assert!(text.contains(expected), "{expected:?} not in {text:?}");
    }
    let bobs = pdf_text(format!("{run_path}/payslips/{}/pdf", bob.number), o.s.token.clone()).await;
    assert!(bobs.contains("Bob Waiting") && bobs.contains("Final pay"), "{bobs:?}");
    // A member with no employee record, and one whose payslip is not in the run.
    let stranger =
        o.s.post("/v1/tenants/default/tokens", json!({ "name": "stranger", "role": "member" })).await.expect(201).body;
    let stranger = stranger["token"].as_str().unwrap();
    o.s.as_token(Some(stranger), Method::GET, &format!("{PAYROLL}/me/payslips"), None)
        .await
        .expect_problem(404, "no-employee-record");
    let carol = o.hire_on("Carol Later", None, "2026-05-01").await;
    o.s.as_token(Some(&carol.token), Method::GET, &format!("{PAYROLL}/me/payslips/{id}"), None)
        .await
        .expect_problem(404, "payslip-not-found");
    o.s.as_token(Some(&carol.token), Method::GET, &format!("{PAYROLL}/me/payslips/abc"), None)
        .await
        .expect_problem(404, "payslip-not-found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pay_recorded_by_payroll_0_1_is_folded_into_histories_before_anything_reads_it() {
    use keel_host::storage::{Condition, Scope, Write, WriteAudit, WriteOp};
    let o = setup().await;
    let alice = o.hire("Alice Legacy", None).await;
    // (Her hire reaches payroll first: an HR event would fold her old pay in by itself.)
    o.s.eventually(&format!("{PAYROLL}/enrolments"), "the hire", |b| {
        b["items"].as_array().is_some_and(|i| i.len() == 1)
    })
    .await;
    // Two raises as payroll 0.1 stored them: a document per entry, its fields indexed.
    let state = &o.s.server().state;
    let indexes = state.registry.get("payroll").unwrap().record.manifest.collection_indexes()["compensation"].clone();
    let writes: Vec<Write> = [("2025-01-01", "30000"), ("2026-01-01", "36000")]
        .iter()
        .map(|(effective, salary)| {
            let body = json!({ "employee": alice.number.to_string(), "effective": effective,
                               "pay": { "salary": salary }, "currency": "EUR", "schedule": "monthly",
                               "components": [], "set_by": "usr_hr" });
            Write {
                collection: "compensation".into(),
                key: format!("{}/{effective}", alice.number),
                condition: Condition::Absent,
                version: 1,
                op: WriteOp::Put { body: body.to_string(), index: indexes.entries(&body).unwrap(), search: None },
            }
        })
        .collect();
    let scope = Scope { tenant: "default".into(), plugin: "payroll".into() };
    let audit = WriteAudit { actor: "test".into(), actor_name: "test".into(), request_id: "test".into() };
    state.store.commit(&scope, &writes, 1, &audit).await.unwrap();

    // Read without them Alice would look unpaid: everything that reads pay waits.
    let compensation = format!("{PAYROLL}/employees/{}/compensation", alice.number);
    o.s.get(&compensation).await.expect_problem(409, "compensation-not-migrated");
    o.s.post(&format!("{PAYROLL}/runs"), json!({ "period": "2026-04" }))
        .await
        .expect_problem(409, "compensation-not-migrated");
    let moved = o.s.post(&format!("{PAYROLL}/compensation/migrate"), json!({})).await.expect(200).body;
    assert_eq!(moved, json!({ "migrated": 2, "done": true }));
    assert_eq!(o.s.get(&format!("{compensation}?as_of=2025-06-30")).await.expect(200).body["pay"]["salary"], "30000");
    assert_eq!(o.s.get(&compensation).await.expect(200).body["pay"]["salary"], "36000");
    let again = o.s.post(&format!("{PAYROLL}/compensation/migrate"), json!({})).await.expect(200).body;
    assert_eq!(again, json!({ "migrated": 0, "done": true }));
    // 3,000.00 a month from the 2026 raise.
    let slip = o.s.get(&format!("{PAYROLL}/employees/{}/payslip-preview?period=2026-04", alice.number)).await;
    assert_eq!(slip.expect(200).body["gross"], "3000.00");
    o.s.post(&format!("{PAYROLL}/runs"), json!({ "period": "2026-04" })).await.expect(202);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_page_with_a_broken_person_a_repeat_and_an_odd_id_costs_only_those_people() {
    // Payroll on another directory (0.2.3), whose page lists Ada, someone whose time HR
    // cannot work out, Ada again, and an id that cannot key a record.
    let s = keel_tests::TestServer::start().await;
    s.install("bundled/payroll").await.expect(201);
    s.install("fixtures/directory-next").await.expect(201);
    s.put(
        &format!("{PAYROLL}/employees/e1/compensation"),
        json!({ "effective": "2026-01-01", "pay": { "salary": "24000" }, "currency": "EUR" }),
    )
    .await
    .expect(200);
    let run = s.post(&format!("{PAYROLL}/runs"), json!({ "period": "2026-04" })).await.expect(202).body;
    let path = format!("{PAYROLL}/runs/{}", run["id"]);
    let done = s.eventually(&path, "the run", |r| r["state"] == "calculated").await;
    assert_eq!((done["calculated"].as_u64(), done["failed"].as_u64()), (Some(1), Some(2)), "{done}");
    assert_eq!(done["totals"]["EUR"]["employees"], 1, "Ada is paid once: {done}");
    assert_eq!(done["totals"]["EUR"]["gross"], "2000.00");
    let problems = s.get(&format!("{path}/problems")).await.expect(200).body;
    let mut found: Vec<(String, String)> = problems["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["employee"].as_str().unwrap().to_owned(), p["code"].as_str().unwrap().to_owned()))
        .collect();
    found.sort();
    assert_eq!(
        found,
        [("Odd/Id".to_owned(), "invalid-directory-id".to_owned()), ("e2".to_owned(), "record-unreadable".to_owned())]
    );
    let task = s.get(&format!("/v1/tenants/default/tasks/{}", run["task"].as_str().unwrap())).await.expect(200).body;
    assert_eq!(task["done"], 4, "every listing counted once: {task}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raise_back_dated_into_a_paid_month_is_paid_as_arrears_in_the_next_run_once() {
    let o = setup().await;
    let alice = o.hire("Alice Salaried", None).await;
    let dave = o.hire_on("Dave Joiner", None, "2026-04-16").await;
    pay(&o, alice.number, json!({ "salary": "60000" }), &["pension", "employer_pension", "meal"]).await;
    pay(&o, dave.number, json!({ "salary": "48000" }), &["pension", "meal"]).await;
    let unpaid =
        o.s.post(
            &format!("{HR}/leave-requests"),
            json!({ "employee": alice.number, "type": "unpaid", "from": "2026-04-02", "to": "2026-04-07" }),
        )
        .await
        .expect(201)
        .body;
    o.s.post(&format!("{HR}/leave-requests/{}/approve", unpaid["id"]), json!({})).await.expect(200);
    let run_month = |period: &'static str| {
        let s = &o.s;
        async move {
            let run = s.post(&format!("{PAYROLL}/runs"), json!({ "period": period })).await.expect(202).body;
            let path = format!("{PAYROLL}/runs/{}", run["id"]);
            let done = s.eventually(&path, "the run", |r| r["state"] == "calculated").await;
            assert_eq!(done["failed"], 0, "{done}");
            path
        }
    };
    // April, as the worked example says: Alice 4,500.00 for 18 of 20 days. Approved, paid.
    let april = run_month("2026-04").await;
    let april_alice = format!("{april}/payslips/{}", alice.number);
    let before = o.s.get(&april_alice).await.expect(200).body;
    assert_eq!(lines(&before)[0], ("base".to_owned(), "4500.00".to_owned()));
    o.s.get(&format!("{april}/bank-file")).await.expect_problem(409, "not-paid");
    o.s.post(&format!("{april}/approve"), json!({})).await.expect(200);
    o.s.post(&format!("{april}/pay"), json!({})).await.expect(200);

    // April's bank file: a SEPA credit transfer whose count and sum are the register's.
    o.s.get(&format!("{april}/bank-file")).await.expect_problem(409, "missing-bank-details");
    let account = |n: u64| format!("{PAYROLL}/employees/{n}/bank");
    o.s.put(&account(alice.number), json!({ "iban": "DE89 3704 0044 0532 0130 01" }))
        .await
        .expect_problem(422, "invalid-iban");
    o.s.put(&account(alice.number), json!({ "iban": "DE89 3704 0044 0532 0130 00", "holder": "Zoë Alice Salaried" }))
        .await
        .expect(200);
    o.s.put(&account(dave.number), json!({ "iban": "FR1420041010050500013M02606", "bic": "BNPAFRPP" }))
        .await
        .expect(200);
    o.s.get(&format!("{april}/bank-file")).await.expect_problem(409, "no-bank-account");
    o.s.put(&format!("{PAYROLL}/bank"), json!({ "name": "Keel Demo GmbH", "iban": "GB82 WEST 1234 5698 7654 32" }))
        .await
        .expect(200);
    let file = o.s.http.get(format!("{}{april}/bank-file?date=2026-04-30", o.s.base)).bearer_auth(&o.s.token).send();
    let file = file.await.unwrap();
    assert_eq!(file.headers()["content-type"], "application/xml");
    let xml = file.text().await.unwrap();
    let doc = roxmltree::Document::parse(&xml).expect("well-formed XML");
    let texts = |tag: &str| -> Vec<String> {
        doc.descendants().filter(|n| n.has_tag_name(tag)).map(|n| n.text().unwrap_or_default().to_owned()).collect()
    };
    let register = o.s.get(&format!("{april}/register")).await.expect(200).body;
    let net = register["currencies"]["EUR"]["net"].as_str().unwrap().to_owned();
    assert_eq!(texts("NbOfTxs"), ["2", "2"]);
    assert_eq!(texts("CtrlSum"), [net.clone(), net.clone()]);
    let cents = |t: &str| t.replace('.', "").parse::<i64>().unwrap();
    assert_eq!(texts("InstdAmt").iter().map(|a| cents(a)).sum::<i64>(), cents(&net));
    assert_eq!(texts("ReqdExctnDt"), ["2026-04-30"]);
    assert_eq!(texts("IBAN"), ["GB82WEST12345698765432", "DE89370400440532013000", "FR1420041010050500013M02606"]);
    assert_eq!(texts("Cd"), ["SEPA", "SALA"]);
    assert!(texts("Nm").contains(&"Zoe Alice Salaried".to_owned()), "{xml}");
    assert_eq!(doc.root_element().tag_name().namespace(), Some("urn:iso:std:iso:20022:tech:xsd:pain.001.001.03"));
    let csv = o.s.http.get(format!("{}{april}/bank-file?format=csv", o.s.base)).bearer_auth(&o.s.token).send();
    let csv = csv.await.unwrap().text().await.unwrap();
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows.len(), 3, "{csv}");
    assert_eq!(rows[0], "employee,name,iban,bic,currency,amount,reference");
    o.s.get(&format!("{april}/bank-file?format=mt940")).await.expect_problem(422, "invalid-format");

    // A day later: Alice's raise to 72,000 is agreed, back to 1 April.
    o.s.advance_clock(86_400_000).await;
    o.s.put(
        &format!("{PAYROLL}/employees/{}/compensation", alice.number),
        json!({ "effective": "2026-04-01", "pay": { "salary": "72000" }, "currency": "EUR",
                "components": [{ "code": "pension" }, { "code": "employer_pension" }, { "code": "meal" }] }),
    )
    .await
    .expect(200);
    o.s.advance_clock(86_400_000).await;
    let may = run_month("2026-05").await;
    let slip = o.s.get(&format!("{may}/payslips/{}", alice.number)).await.expect(200).body;
    // May (21 working days, none unpaid): 6,000.00, meal 100.00, pension 300.00, employer
    // 180.00. April again at 72,000 for 18 of 20 days: 5,400.00, so 900.00 more; meal 90.00
    // as paid; pension 270.00, 45.00 more (before tax, as pension is); employer 162.00, 27.00
    // more. Taxable 6,000 + 100 + 900 − 300 − 45 = 6,655.00 → 79,860 a year − 12,000 =
    // 67,860: 50,000 at 20 % + 17,860 at 40 % = 17,144 → 1,428.67 a month.
    assert_eq!(
        lines(&slip),
        pairs(&[
            ("base", "6000.00"),
            ("meal", "100.00"),
            ("arrears-2026-04-base", "900.00"),
            ("pension", "300.00"),
            ("arrears-2026-04-pension", "45.00"),
            ("tax", "1428.67"),
            ("employer_pension", "180.00"),
            ("arrears-2026-04-employer_pension", "27.00"),
        ]),
        "{slip}"
    );
    assert_eq!(
        (slip["gross"].as_str(), slip["deductions"].as_str(), slip["net"].as_str(), slip["employer_cost"].as_str()),
        (Some("7000.00"), Some("345.00"), Some("5226.33"), Some("7207.00"))
    );
    let arrears = slip["lines"].as_array().unwrap().iter().find(|l| l["code"] == "arrears-2026-04-base").unwrap();
    assert_eq!(arrears["name"], "Salary, arrears for 2026-04");
    assert_eq!(arrears["basis"], "5400.00 due − 4500.00 paid for 2026-04");
    // Dave's pay did not change: no arrears for him. The paid April run is as it was.
    let daves = o.s.get(&format!("{may}/payslips/{}", dave.number)).await.expect(200).body;
    assert!(lines(&daves).iter().all(|(code, _)| !code.starts_with("arrears-")), "{daves}");
    let after = o.s.get(&april_alice).await.expect(200).body;
    assert_eq!((&after["lines"], &after["net"], &after["state"]), (&before["lines"], &before["net"], &json!("paid")));

    // A June draft worked out while May was still a draft owes April's arrears too: once May
    // is approved, June must be worked out again before it can be.
    let june_run = run_month("2026-06").await;
    o.s.advance_clock(1_000).await;
    o.s.post(&format!("{may}/approve"), json!({})).await.expect(200);
    o.s.post(&format!("{june_run}/approve"), json!({})).await.expect_problem(409, "stale-calculation");
    o.s.post(&format!("{june_run}/recalculate"), json!({})).await.expect(202);
    o.s.eventually(&june_run, "the recalculation", |r| r["state"] == "calculated").await;
    let junes = o.s.get(&format!("{june_run}/payslips/{}", alice.number)).await.expect(200).body;
    assert!(lines(&junes).iter().all(|(code, _)| !code.starts_with("arrears-")), "{junes}");
    change_run(&o.s, &format!("{june_run}/cancel")).await.expect(200);
    // Once May is approved, June owes nothing more for April.
    // The register adds up each line over the run; the year to date adds April and May.
    let register = o.s.get(&format!("{may}/register")).await.expect(200).body;
    let eur = &register["currencies"]["EUR"];
    let line = |code: &str| eur["lines"].as_array().unwrap().iter().find(|l| l["code"] == code).cloned().unwrap();
    assert_eq!((line("base")["employees"].as_u64(), line("base")["amount"].as_str()), (Some(2), Some("10000.00")));
    assert_eq!(line("arrears-2026-04-base")["amount"], "900.00");
    assert_eq!(eur["net"], o.s.get(&may).await.expect(200).body["totals"]["EUR"]["net"]);
    let ytd = &o.s.get(&format!("{may}/payslips/{}", alice.number)).await.expect(200).body["year_to_date"]["EUR"];
    assert_eq!((ytd["payslips"].as_u64(), ytd["gross"].as_str()), (Some(2), Some("11590.00")), "{ytd}");
    let year = o.s.get(&format!("{PAYROLL}/employees/{}/year-to-date?year=2026", alice.number)).await.expect(200).body;
    assert_eq!(year["year_to_date"]["EUR"]["net"], json!(format!("{:.2}", 3692.00 + 5226.33)));
    let last_year = format!("{PAYROLL}/employees/{}/year-to-date?year=2025", alice.number);
    assert_eq!(o.s.get(&last_year).await.expect(200).body["year_to_date"], json!({}));
    o.s.get(&format!("{PAYROLL}/employees/{}/year-to-date?year=20x6", alice.number))
        .await
        .expect_problem(422, "invalid-year");
    let june =
        o.s.get(&format!("{PAYROLL}/employees/{}/payslip-preview?period=2026-06", alice.number)).await.expect(200).body;
    assert!(lines(&june).iter().all(|(code, _)| !code.starts_with("arrears-")), "{june}");
    assert_eq!(lines(&june)[0], ("base".to_owned(), "6000.00".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_schedule_pays_its_own_periods_and_the_next_run_starts_itself_near_the_period_end() {
    let o = setup().await;
    let (sam, bea, mo) =
        (o.hire("Sam Semi", None).await, o.hire("Bea Biweekly", None).await, o.hire("Mo Monthly", None).await);
    for (who, salary, schedule) in
        [(&sam, "48000", "semi-monthly"), (&bea, "52000", "bi-weekly"), (&mo, "60000", "monthly")]
    {
        o.s.put(
            &format!("{PAYROLL}/employees/{}/compensation", who.number),
            json!({ "effective": "2020-01-01", "pay": { "salary": salary }, "currency": "EUR", "schedule": schedule }),
        )
        .await
        .expect(200);
    }
    // Mo moves to semi-monthly pay from 16 April.
    o.s.put(
        &format!("{PAYROLL}/employees/{}/compensation", mo.number),
        json!({ "effective": "2026-04-16", "pay": { "salary": "60000" }, "currency": "EUR", "schedule": "semi-monthly" }),
    )
    .await
    .expect(200);
    let run = |period: &'static str| {
        let s = &o.s;
        async move {
            let run = s.post(&format!("{PAYROLL}/runs"), json!({ "period": period })).await.expect(202).body;
            let path = format!("{PAYROLL}/runs/{}", run["id"]);
            s.eventually(&path, "the run", |r| r["state"] == "calculated").await;
            path
        }
    };
    let only = |path: String, n: u64| {
        let s = &o.s;
        async move {
            let run = s.get(&path).await.expect(200).body;
            assert_eq!((run["calculated"].as_u64(), run["failed"].as_u64()), (Some(1), Some(0)), "{run}");
            s.get(&format!("{path}/payslips/{n}")).await.expect(200).body
        }
    };
    // 1 to 15 April, Sam's half month: 9 working days of 9 (Good Friday and Easter Monday
    // off), 48,000 / 24 = 2,000.00; tax (2,000 × 24 − 12,000) × 20 % / 24 = 300.00.
    let h1 = only(run("2026-04-H1").await, sam.number).await;
    assert_eq!(lines(&h1), pairs(&[("base", "2000.00"), ("tax", "300.00")]), "{h1}");
    assert_eq!((h1["period_working_days"].as_u64(), h1["period"].as_str()), (Some(9), Some("2026-04-H1")));
    // Bea's two weeks from Monday 6 April (every 14th day from 2024-01-01 starts one):
    // 52,000 / 26 = 2,000.00; tax (52,000 − 12,000) × 20 % / 26 = 307.69.
    let weeks = only(run("2026-04-06").await, bea.number).await;
    assert_eq!(lines(&weeks), pairs(&[("base", "2000.00"), ("tax", "307.69")]), "{weeks}");
    o.s.post(&format!("{PAYROLL}/runs"), json!({ "period": "2026-04-07" })).await.expect_problem(422, "invalid-period");
    o.s.post(&format!("{PAYROLL}/runs"), json!({ "period": "2026-04-H3" })).await.expect_problem(422, "invalid-period");
    // The month pays Mo alone, and only to the 15th: 9 of April's 20 working days of
    // 5,000.00 = 2,250.00. The second half pays him as semi-monthly staff: 11 of 11 days of
    // 60,000 / 24 = 2,500.00. Each day once.
    let month = only(run("2026-04").await, mo.number).await;
    assert_eq!(lines(&month)[0], ("base".to_owned(), "2250.00".to_owned()), "{month}");
    assert!(month["notes"][0].as_str().unwrap().contains("from 2026-04-01 to 2026-04-15 only"), "{month}");
    let h2 = run("2026-04-H2").await;
    let mos = o.s.get(&format!("{h2}/payslips/{}", mo.number)).await.expect(200).body;
    assert_eq!(lines(&mos)[0], ("base".to_owned(), "2500.00".to_owned()), "{mos}");
    assert_eq!(o.s.get(&h2).await.expect(200).body["calculated"], 2);
    // Paid bi-weekly days stay paid when the anchor moves: an overlapping period is refused.
    let weeks_run = format!(
        "{PAYROLL}/runs/{}",
        o.s.get(&format!("{PAYROLL}/runs")).await.expect(200).body["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["period"] == "2026-04-06")
            .unwrap()["id"]
    );
    o.s.post(&format!("{weeks_run}/approve"), json!({})).await.expect(200);
    o.s.post(&format!("{weeks_run}/pay"), json!({})).await.expect(200);
    o.s.patch("/v1/tenants/default/plugins/payroll/settings", json!({ "values": { "biweekly-anchor": "2024-01-08" } }))
        .await
        .expect(200);
    let overlap = o.s.post(&format!("{PAYROLL}/runs"), json!({ "period": "2026-04-13" })).await;
    assert!(overlap.expect_problem(409, "period-paid").body["detail"].as_str().unwrap().contains("overlaps"));
    // Sam's preview for a month is refused, naming his schedule.
    let other = o.s.get(&format!("{PAYROLL}/employees/{}/payslip-preview?period=2026-04", sam.number)).await;
    assert!(other.expect_problem(409, "other-schedule").body["detail"].as_str().unwrap().contains("semi-monthly"));

    // The next monthly run starts itself 3 days before the month's end, once.
    o.s.patch("/v1/tenants/default/plugins/payroll/settings", json!({ "values": { "auto-calculate": "monthly" } }))
        .await
        .expect(200);
    // The schedule may also fire by itself when the clock jumps past 02:00; a firing that
    // loses the race to it is retried after a backoff on the host clock, so the clock moves
    // a little while this waits.
    let fire = || {
        let s = &o.s;
        async move {
            let job =
                s.post_empty("/v1/tenants/default/plugins/payroll/schedules/next-pay-run/run").await.expect(202).body;
            let path = format!("/v1/tenants/default/jobs/{}", job["job_id"].as_str().unwrap());
            for _ in 0..200 {
                if s.get(&path).await.expect(200).body["job"]["status"] == "done" {
                    return;
                }
                s.advance_clock(2_000).await;
                tokio::time::sleep(std::time::Duration::from_millis(25)).await;
            }
            panic!("the schedule's job did not finish: {}", s.get(&path).await.body);
        }
    };
    let mays = || {
        let s = &o.s;
        async move {
            let runs = s.get(&format!("{PAYROLL}/runs")).await.expect(200).body;
            runs["items"].as_array().unwrap().iter().filter(|r| r["period"] == "2026-05").cloned().collect::<Vec<_>>()
        }
    };
    fire().await; // 4 May: too early.
    assert!(mays().await.is_empty());
    o.s.advance_clock(24 * 86_400_000).await; // 28 May.
    fire().await;
    let first = mays().await;
    let may = format!("{PAYROLL}/runs/{}", first[0]["id"]);
    o.s.eventually(&may, "May's run", |r| r["state"] == "calculated").await;
    fire().await;
    let started = mays().await;
    assert_eq!(started.len(), 1, "{started:?}");
    assert_eq!(started[0]["created_by"], "schedule next-pay-run");
    // Cancelled by payroll, it stays cancelled: the next night does not start it again.
    change_run(&o.s, &format!("{may}/cancel")).await.expect(200);
    fire().await;
    let after = mays().await;
    assert_eq!((after.len(), after[0]["state"].as_str()), (1, Some("cancelled")), "{after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_off_cycle_bonus_is_paid_beside_the_month_and_taxed_at_the_marginal_rate() {
    let o = setup().await;
    let alice = o.hire("Alice Salaried", None).await;
    let carol = o.hire("Carol Hourly", None).await;
    pay(&o, alice.number, json!({ "salary": "60000" }), &["pension"]).await;
    pay(&o, carol.number, json!({ "hourly": "25" }), &["pension"]).await;
    let payment = |who: String, name: &str, amount: &str| json!({ "employee": who, "name": name, "kind": "earning", "amount": amount });
    let mut travel = payment(carol.number.to_string(), "Train tickets", "80.50");
    travel["taxable"] = json!(false);
    let bonus = json!({ "period": "2026-04", "off_cycle": { "name": "Q1 bonus", "payments": [
        // HR's number with zeros is the same person.
        payment(format!("00{}", alice.number), "Bonus", "10000"),
        payment(carol.number.to_string(), "Bonus", "500"),
        travel,
    ] } });
    let run = o.s.post(&format!("{PAYROLL}/runs"), bonus).await.expect(202).body;
    assert_eq!(run["off_cycle"], json!({ "name": "Q1 bonus", "people": 2 }));
    let path = format!("{PAYROLL}/runs/{}", run["id"]);
    let done = o.s.eventually(&path, "the run", |r| r["state"] == "calculated").await;
    assert_eq!((done["calculated"].as_u64(), done["failed"].as_u64()), (Some(2), Some(0)), "{done}");
    // Alice earns 60,000 a year less her 5 % pension before tax: 57,000 taxable, 45,000
    // after the allowance. The bonus takes that to 55,000: 5,000 at 20 % and 5,000 at 40 %,
    // 3,000.00. No salary, no pension on the payslip itself.
    let a = o.s.get(&format!("{path}/payslips/{}", alice.number)).await.expect(200).body;
    assert_eq!(lines(&a), pairs(&[("one-off-1", "10000.00"), ("tax", "3000.00")]), "{a}");
    assert_eq!(a["net"], "7000.00");
    // Carol is paid by the hour, so her bonus is taxed from the bottom: under the allowance.
    let c = o.s.get(&format!("{path}/payslips/{}", carol.number)).await.expect(200).body;
    assert_eq!(lines(&c), pairs(&[("one-off-1", "500.00"), ("one-off-2", "80.50"), ("tax", "0.00")]));
    assert_eq!(c["net"], "580.50");
    // Paid beside April's regular run, which still starts and is paid once.
    o.s.post(&format!("{path}/approve"), json!({})).await.expect(200);
    o.s.post(&format!("{path}/pay"), json!({})).await.expect(200);
    let april = o.s.post(&format!("{PAYROLL}/runs"), json!({ "period": "2026-04" })).await.expect(202).body;
    let april = format!("{PAYROLL}/runs/{}", april["id"]);
    o.s.eventually(&april, "April", |r| r["state"] == "calculated").await;
    // The year to date counts the bonus.
    let ytd = &o.s.get(&format!("{april}/payslips/{}", alice.number)).await.expect(200).body["year_to_date"]["EUR"];
    assert_eq!(ytd["payslips"], 2, "{ytd}");
    // Bad input never starts a run.
    let off = |payments: Value| json!({ "period": "2026-04", "off_cycle": { "name": "x", "payments": payments } });
    o.s.post(&format!("{PAYROLL}/runs"), off(json!([]))).await.expect_problem(422, "invalid-payments");
    let zero = off(json!([payment(alice.number.to_string(), "Bonus", "0")]));
    let refused = o.s.post(&format!("{PAYROLL}/runs"), zero).await.expect_problem(422, "invalid-amount").body;
    assert_eq!(refused["field"], "off_cycle.payments[0].amount");
    let stranger = off(json!([payment("999".into(), "Bonus", "10")]));
    o.s.post(&format!("{PAYROLL}/runs"), stranger).await.expect_problem(404, "employee-not-found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payslips_too_large_for_one_commit_are_spread_over_chunks_of_the_same_page() {
    let o = setup().await;
    // 150 people, each with 50 one-offs whose names are 200 three-byte characters: a payslip
    // of about 65 kB, so a page of 150 is more than one chunk may write (4 MiB).
    const PEOPLE: u64 = 150;
    let mut csv = String::from("legal_name,email,title,hire_date\n");
    for i in 1..=PEOPLE {
        csv += &format!("Person {i},person{i}@example.com,Engineer,2024-01-01\n");
    }
    o.s.post_raw("/v1/imports/hr/employees", Some("text/csv"), csv.into_bytes()).await.expect(200);
    let one_offs: Vec<Value> = (0..50)
        .map(|k| json!({ "name": format!("{k:02}{}", "€".repeat(198)), "kind": "earning", "amount": "1" }))
        .collect();
    for n in 1..=PEOPLE {
        pay(&o, n, json!({ "salary": "36000" }), &[]).await;
        o.s.put(&format!("{PAYROLL}/employees/{n}/inputs/2026-04"), json!({ "one_offs": one_offs })).await.expect(200);
    }
    let run = o.s.post(&format!("{PAYROLL}/runs"), json!({ "period": "2026-04" })).await.expect(202).body;
    let path = format!("{PAYROLL}/runs/{}", run["id"]);
    let done = o.s.eventually(&path, "the run", |r| r["state"] == "calculated").await;
    assert_eq!((done["calculated"].as_u64(), done["failed"].as_u64()), (Some(PEOPLE), Some(0)), "{done}");
    assert_eq!(done["totals"]["EUR"]["employees"].as_u64(), Some(PEOPLE), "each once: {done}");
    // 3,000.00 + 50 × 1.00 each.
    assert_eq!(done["totals"]["EUR"]["gross"], format!("{}.00", PEOPLE * 3050));
    let task = o.s.get(&format!("/v1/tenants/default/tasks/{}", run["task"].as_str().unwrap())).await.expect(200).body;
    assert!(task["chunks"].as_u64().unwrap() >= 3, "one page of 150 in several chunks: {task}");
    assert_eq!(task["done"].as_u64(), Some(PEOPLE), "{task}");
    let slip = o.s.get(&format!("{path}/payslips/{PEOPLE}")).await.expect(200).body;
    assert_eq!(slip["lines"].as_array().unwrap().len(), 52, "salary, 50 one-offs, tax");
}
