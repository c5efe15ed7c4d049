//! Every department's console screens, drawn from the views its manifest declares. A crawler
//! follows each link from a department's start page (lists, records, their sections and
//! action confirmations) and every page must render without an error; then a workflow
//! action is taken from the screens and its effect checked through the API.

use crate::console::signed_in_root;
use crate::leave::{HR, Office};
use keel_tests::TestServer;
use keel_tests::console::Visitor;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};

/// The addresses a page links to, entities decoded.
fn links(body: &str) -> Vec<String> {
    body.split("href=\"").skip(1).filter_map(|rest| rest.split('"').next()).map(|h| h.replace("&amp;", "&")).collect()
}

/// The view an address under `/console/apps/{plugin}` shows (`""`: the start page).
fn view_of(href: &str, plugin: &str) -> String {
    let rest = href.split('?').next().unwrap_or("").trim_start_matches(&format!("/console/apps/{plugin}"));
    rest.trim_start_matches('/').split('/').next().unwrap_or("").to_owned()
}

/// What a crawl of a department saw: each view it rendered, and each view refused with the
/// page's message.
#[derive(Debug, Default)]
struct Crawl {
    shown: BTreeSet<String>,
    refused: BTreeMap<String, String>,
}

/// Visits every page reachable from the department's start page by links under it (at most
/// 150), asserting each answers 200 with no error on it, or is refused with a message page.
async fn crawl(visitor: &mut Visitor, plugin: &str) -> Crawl {
    let start = format!("/console/apps/{plugin}");
    let mut queue = vec![start.clone()];
    let mut seen = BTreeSet::from([start]);
    let mut crawl = Crawl::default();
    while let Some(href) = queue.pop() {
        assert!(seen.len() <= 150, "a crawl of {plugin} found more than 150 pages");
        let page = visitor.get(&href).await;
        let view = view_of(&href, plugin);
        if page.status != 200 {
            assert!(page.contains(r#"class="error" role="alert""#), "{href}: {} without a message", page.status);
            let message = page.body.split(r#"role="alert">"#).nth(1).and_then(|m| m.split('<').next()).unwrap_or("");
            crawl.refused.insert(view, format!("{} {message}", page.status));
            continue;
        }
        assert!(!page.contains(r#"class="error""#), "{href} shows an error: {}", page.body);
        crawl.shown.insert(view);
        for link in links(&page.body) {
            if link.starts_with(&format!("/console/apps/{plugin}")) && seen.insert(link.clone()) {
                queue.push(link);
            }
        }
    }
    crawl
}

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// The `action` attribute of the form whose button says `label`.
fn form_posting(body: &str, label: &str) -> String {
    let before = body.split(&format!(">{label}</button>")).next().expect(label);
    let action = before.rsplit("action=\"").next().and_then(|a| a.split('"').next()).expect("a form");
    action.replace("&amp;", "&")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hr_screens_show_people_leave_and_the_organisation_and_approve_leave() {
    let o = Office::open("2026-03-02").await;
    let bob = o.hire("Bob Manager", None).await;
    let alice = o.hire("Alice Engineer", Some(bob.number)).await;
    let request = o
        .call(
            &alice,
            reqwest::Method::POST,
            "/leave-requests",
            Some(json!({ "type": "annual", "from": "2026-04-13", "to": "2026-04-14", "reason": "A long weekend" })),
        )
        .await
        .expect(201)
        .body;
    let mut root = signed_in_root(&o.s).await;
    let seen = crawl(&mut root, "hr").await;
    let expected = [
        "",
        "employees",
        "employee",
        "leave-requests",
        "leave-request",
        "leave-types",
        "departments",
        "headcount",
        "overdue-checklists",
        "checklist-templates",
        "custom-fields",
    ];
    assert_eq!(seen.shown, names(&expected), "{seen:?}");
    // `me` is each employee's own record: the platform admin is nobody's.
    assert_eq!(seen.refused.keys().collect::<Vec<_>>(), ["me"], "{seen:?}");
    // A record's sections are drawn inside it (and the crawl found no error on any).
    let employee = root.get(&format!("/console/apps/hr/employee?number={}", alice.number)).await;
    for section in ["<h2>History</h2>", "<h2>Leave balances</h2>", "<h2>Checklists</h2>", "Alice Engineer"] {
        assert!(employee.contains(section), "{section}: {}", employee.body);
    }

    // Approving from the leave request's screen asks first, then approves.
    let id = request["id"].to_string().trim_matches('"').to_owned();
    let page = root.get(&format!("/console/apps/hr/leave-request?id={id}")).await;
    assert!(page.contains("A long weekend") && page.contains("pending"), "{}", page.body);
    let confirm = links(&page.body).into_iter().find(|l| l.contains("/actions/")).expect("an action asking first");
    let question = root.get(&confirm).await;
    question.expect(200);
    let csrf = question.csrf();
    root.post(&form_posting(&question.body, "Approve"), &[("csrf", &csrf)]).await;
    let after = o.s.get(&format!("{HR}/leave-requests/{id}")).await.expect(200).body;
    assert_eq!(after["state"], "approved", "{after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_screens_show_items_stock_movements_and_places() {
    const INV: &str = "/v1/plugins/inventory";
    let s = TestServer::start_with(|c| c.frozen_clock_at = Some(1_774_958_400_000)).await;
    s.install("bundled/inventory").await.expect(201);
    s.put(&format!("{INV}/locations/WH1"), json!({ "name": "Main warehouse" })).await.expect(201);
    s.put(&format!("{INV}/items/BOLT-8"), json!({ "name": "Bolt M8 <x>", "base_uom": "pcs" })).await.expect(201);
    s.post(
        &format!("{INV}/movements"),
        json!({ "kind": "receipt", "at": "2026-03-30T09:00:00Z",
                "lines": [{ "item": "BOLT-8", "qty": "40", "unit_cost": "0.25", "location": "WH1" }] }),
    )
    .await
    .expect(201);
    let mut root = signed_in_root(&s).await;
    let seen = crawl(&mut root, "inventory").await;
    let expected = [
        "",
        "items",
        "item",
        "item-valuation",
        "locations",
        "location",
        "movements",
        "movement",
        "reservations",
        "counts",
        "reorder-suggestions",
        "stock-valuation",
        "expiring-lots",
    ];
    assert_eq!(seen.shown, names(&expected), "{seen:?}");
    assert!(seen.refused.is_empty(), "{seen:?}");
    let item = root.get("/console/apps/inventory/item?sku=BOLT-8").await;
    assert!(item.contains("Bolt M8 &lt;x&gt;") && !item.contains("<x>"), "names are text: {}", item.body);
    for section in ["<h2>Stock by place</h2>", "<h2>Stock journal</h2>"] {
        assert!(item.contains(section), "{section}: {}", item.body);
    }
    let stock = root.get("/console/apps/inventory/item-stock?sku=BOLT-8").await;
    assert!(stock.contains("WH1") && stock.contains("40"), "{}", stock.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crm_screens_show_cases_customers_and_contacts_and_work_a_case() {
    const CRM: &str = "/v1/plugins/crm";
    let s = TestServer::start().await;
    s.install("bundled/crm").await.expect(201);
    let acme = s.post(&format!("{CRM}/customers"), json!({ "name": "Acme", "tier": "premium" })).await.expect(201).body;
    let contact = s
        .post(&format!("{CRM}/contacts"), json!({ "name": "Bo", "emails": ["bo@acme.test"], "customer": acme["id"] }))
        .await
        .expect(201)
        .body;
    let case = s
        .post(
            &format!("{CRM}/cases"),
            json!({ "subject": "Cannot log in", "contact": contact["id"], "priority": "high" }),
        )
        .await
        .expect(201)
        .body;
    let mut root = signed_in_root(&s).await;
    let seen = crawl(&mut root, "crm").await;
    let expected =
        ["", "cases", "case", "customers", "customer", "contacts", "contact", "macros", "teams", "sla-policies"];
    assert_eq!(seen.shown, names(&expected), "{seen:?}");
    assert!(seen.refused.is_empty(), "{seen:?}");

    // "Start work" needs no question; the case is open after it, and "Resolve" is offered.
    let n = case["number"].as_i64().unwrap();
    let page = root.get(&format!("/console/apps/crm/case?number={n}")).await;
    assert!(page.contains("Cannot log in") && page.contains("<h2>Timeline</h2>"), "{}", page.body);
    assert!(!page.contains(">Close<"), "a new case cannot be closed: {}", page.body);
    root.post(&form_posting(&page.body, "Start work"), &[("csrf", &page.csrf())]).await;
    assert_eq!(s.get(&format!("{CRM}/cases/{n}")).await.expect(200).body["status"], "open");
    let open = root.get(&format!("/console/apps/crm/case?number={n}")).await;
    assert!(open.contains("Resolve") && !open.contains(">Start work</button>"), "{}", open.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payroll_screens_show_a_run_its_payslips_and_problems_and_approve_it() {
    const PAYROLL: &str = "/v1/plugins/payroll";
    let o = Office::open("2026-05-04").await;
    o.s.install("bundled/payroll").await.expect(201);
    o.s.put(&format!("{PAYROLL}/tax"), json!({ "allowance": "12000", "brackets": [{ "up_to": null, "rate": "0.2" }] }))
        .await
        .expect(200);
    let ann = o.hire("Ann Payee", None).await;
    o.s.put(
        &format!("{PAYROLL}/employees/{}/compensation", ann.number),
        json!({ "effective": "2020-01-01", "pay": { "salary": "36000" }, "currency": "EUR", "components": [] }),
    )
    .await
    .expect(200);
    let started = o.s.post(&format!("{PAYROLL}/runs"), json!({ "period": "2026-04" })).await.expect(202).body;
    let task = started["task"].as_str().unwrap();
    o.s.eventually(&format!("/v1/tenants/default/tasks/{task}"), "the run", |t| t["status"] == "done").await;
    let id = started["id"].as_u64().unwrap();

    let mut root = signed_in_root(&o.s).await;
    let seen = crawl(&mut root, "payroll").await;
    let expected = ["", "runs", "run", "payslip", "run-register", "enrolments", "components", "tax"];
    assert_eq!(seen.shown, names(&expected), "{seen:?}");
    // Not set up here (the business's bank account, a default pay structure), and the
    // platform admin is no employee with payslips of their own.
    assert_eq!(seen.refused.keys().collect::<Vec<_>>(), ["bank", "my-payslips", "structure"], "{seen:?}");

    let page = root.get(&format!("/console/apps/payroll/run?id={id}")).await;
    assert!(page.contains("calculated") && page.contains("<h2>Payslips</h2>"), "{}", page.body);
    assert!(page.contains("<h2>Problems</h2>") && page.contains("Ann Payee"), "{}", page.body);
    // Approving asks first (the action's confirmation page names it), then approves.
    let mut asked = 0;
    for confirm in links(&page.body).into_iter().filter(|l| l.contains("/actions/")) {
        let question = root.get(&confirm).await;
        if question.contains(">Approve</button>") {
            root.post(&form_posting(&question.body, "Approve"), &[("csrf", &question.csrf())]).await;
            asked += 1;
        }
    }
    assert_eq!(asked, 1, "the run offers Approve once: {}", page.body);
    assert_eq!(o.s.get(&format!("{PAYROLL}/runs/{id}")).await.expect(200).body["state"], "approved");
}
