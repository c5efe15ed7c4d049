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
    o.s.post_empty("/v1/tenants/default/plugins/hr/disable").await.expect(204);
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
