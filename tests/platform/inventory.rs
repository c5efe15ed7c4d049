//! The inventory department over HTTP with the compiled plugin: receipts, issues, transfers
//! and adjustments in any unit of an item; stock never short now or later (a back-dated
//! issue included, 32 concurrent issuers of the last units); moving-average and FIFO costs
//! on a worked example, revalued by a back-dated receipt (inline, and by a task that resumes
//! after a restart); FEFO and FIFO picks; reservations and their expiry; serial numbers.

use futures::future::join_all;
use keel_tests::{Reply, TestServer};
use reqwest::Method;
use serde_json::{Value, json};

const INV: &str = "/v1/plugins/inventory";
const DAY: &str = "2026-03-";

/// A server whose clock stands at noon on 2026-03-31, with inventory and one warehouse:
/// `WH1` with zone `WH1-A` holding bins `A1` and `A2`.
async fn store() -> TestServer {
    let at = 1_774_958_400_000; // 2026-03-31T12:00:00Z
    let s = TestServer::start_with(|c| c.frozen_clock_at = Some(at)).await;
    s.install("bundled/inventory").await.expect(201);
    s.put(&format!("{INV}/locations/WH1"), json!({ "name": "Main warehouse" })).await.expect(201);
    s.put(&format!("{INV}/locations/WH1-A"), json!({ "name": "Zone A", "parent": "WH1", "kind": "zone" }))
        .await
        .expect(201);
    for bin in ["A1", "A2"] {
        s.put(&format!("{INV}/locations/{bin}"), json!({ "name": bin, "parent": "WH1-A" })).await.expect(201);
    }
    s
}

async fn item(s: &TestServer, sku: &str, body: Value) {
    let mut body = body;
    body["name"] = json!(format!("Item {sku}"));
    if body.get("base_uom").is_none() {
        body["base_uom"] = json!("pcs");
    }
    s.put(&format!("{INV}/items/{sku}"), body).await.expect(201);
}

async fn movement(s: &TestServer, body: Value) -> Reply {
    s.post(&format!("{INV}/movements"), body).await
}

async fn receive(s: &TestServer, sku: &str, at: &str, qty: &str, cost: &str, location: &str) -> Value {
    movement(s, json!({ "kind": "receipt", "at": at, "lines": [{ "item": sku, "qty": qty, "unit_cost": cost, "location": location }] }))
        .await
        .expect(201)
        .body
}

async fn issue(s: &TestServer, sku: &str, at: &str, qty: &str, location: &str) -> Reply {
    movement(s, json!({ "kind": "issue", "at": at, "reference": "SO-1", "lines": [{ "item": sku, "qty": qty, "location": location }] })).await
}

async fn stock_at(s: &TestServer, sku: &str, location: &str) -> (String, String) {
    let page = s.get(&format!("{INV}/stock?item={sku}&location={location}&all=true")).await.expect(200).body;
    let items = page["items"].as_array().unwrap();
    let sum = |field: &str| items.iter().fold(0.0, |sum, b| sum + b[field].as_str().unwrap().parse::<f64>().unwrap());
    let (on_hand, available) = (sum("on_hand"), sum("available"));
    (on_hand.to_string(), available.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_issues_transfers_and_adjustments_in_any_unit() {
    let s = store().await;
    item(&s, "SCREW", json!({ "units": { "box": "12" } })).await;
    // 3 boxes at 6.00 a box: 36 pieces worth 18.00.
    let received = movement(
        &s,
        json!({ "kind": "receipt", "reference": "PO-7", "lines": [{ "item": "SCREW", "qty": "3", "uom": "box", "unit_cost": "6.00", "location": "A1" }] }),
    )
    .await
    .expect(201)
    .body;
    assert_eq!(received["lines"][0]["entries"][0]["qty"], "36");
    assert_eq!(received["lines"][0]["value"], "18.00");
    // Issue a box and 2 pieces: 14 pieces at 0.50.
    let issued = movement(
        &s,
        json!({ "kind": "issue", "reference": "TICKET-42", "lines": [
            { "item": "SCREW", "qty": "1", "uom": "box", "location": "A1" },
            { "item": "SCREW", "qty": "2", "location": "A1" }
        ] }),
    )
    .await
    .expect(201)
    .body;
    assert_eq!(issued["lines"][0]["cost"], "6.00");
    assert_eq!(issued["lines"][1]["cost"], "1.00");
    // Move 10 to the other bin; a count found 2 pieces lost in A1.
    movement(
        &s,
        json!({ "kind": "transfer", "lines": [{ "item": "SCREW", "qty": "10", "location": "A1", "to": "A2" }] }),
    )
    .await
    .expect(201);
    let adjusted = movement(
        &s,
        json!({ "kind": "adjustment", "reason": "damaged", "lines": [{ "item": "SCREW", "qty": "-2", "location": "A1" }] }),
    )
    .await
    .expect(201)
    .body;
    assert_eq!(adjusted["lines"][0]["cost"], "1.00");
    assert_eq!(stock_at(&s, "SCREW", "A1").await.0, "10");
    assert_eq!(stock_at(&s, "SCREW", "A2").await.0, "10");
    let totals = s.get(&format!("{INV}/items/SCREW/stock")).await.expect(200).body;
    assert_eq!((totals["on_hand"].as_str(), totals["value"].as_str()), (Some("20"), Some("10.00")));
    // The warehouse's stock is both bins.
    let whole = s.get(&format!("{INV}/stock?warehouse=WH1&item=SCREW")).await.expect(200).body;
    assert_eq!(whole["items"].as_array().unwrap().len(), 2);
    // The history runs the balance: +36, −12, −2, −10/+10, −2.
    let history = s.get(&format!("{INV}/items/SCREW/movements")).await.expect(200).body;
    let balances: Vec<&str> =
        history["items"].as_array().unwrap().iter().map(|e| e["balance"].as_str().unwrap()).collect();
    assert_eq!(balances, ["36", "24", "22", "12", "22", "20"]);
    let bin = s.get(&format!("{INV}/items/SCREW/movements?location=A1&limit=2")).await.expect(200).body;
    let next = bin["next"].as_str().unwrap();
    let rest = s.get(&format!("{INV}/items/SCREW/movements?location=A1&cursor={next}")).await.expect(200).body;
    let balances: Vec<&str> =
        rest["items"].as_array().unwrap().iter().map(|e| e["balance"].as_str().unwrap()).collect();
    assert_eq!(balances, ["22", "12", "10"], "the running balance carries over pages");
    // A movement shows its costs; the list finds it by reference.
    let number = issued["number"].as_u64().unwrap();
    let shown = s.get(&format!("{INV}/movements/{number}")).await.expect(200).body;
    assert_eq!(shown["lines"][0]["cost"], "6.00");
    let found = s.get(&format!("{INV}/movements?reference=TICKET-42")).await.expect(200).body;
    assert_eq!(found["items"][0]["number"], number);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_movements_get_typed_errors_and_change_nothing() {
    let s = store().await;
    item(&s, "BOLT", json!({ "units": { "box": "12" } })).await;
    receive(&s, "BOLT", "2026-03-01T09:00:00Z", "10", "1.00", "A1").await;
    let cases = [
        (
            json!({ "kind": "issue", "lines": [{ "item": "NOPE", "qty": "1", "location": "A1" }] }),
            422,
            "unknown-item",
            "lines[0].item",
        ),
        (
            json!({ "kind": "issue", "lines": [{ "item": "BOLT", "qty": "1.0001", "location": "A1" }] }),
            422,
            "invalid-qty",
            "lines[0].qty",
        ),
        (
            json!({ "kind": "issue", "lines": [{ "item": "BOLT", "qty": "-1", "location": "A1" }] }),
            422,
            "invalid-qty",
            "lines[0].qty",
        ),
        (
            json!({ "kind": "issue", "lines": [{ "item": "BOLT", "qty": "1", "uom": "crate", "location": "A1" }] }),
            422,
            "unknown-unit",
            "lines[0].uom",
        ),
        (
            json!({ "kind": "issue", "lines": [{ "item": "BOLT", "qty": "1", "location": "B9" }] }),
            422,
            "unknown-location",
            "lines[0].location",
        ),
        (
            json!({ "kind": "receipt", "lines": [{ "item": "BOLT", "qty": "1", "location": "A1" }] }),
            422,
            "cost-required",
            "lines[0].unit_cost",
        ),
        (
            json!({ "kind": "transfer", "lines": [{ "item": "BOLT", "qty": "1", "location": "A1", "to": "A1" }] }),
            422,
            "same-location",
            "lines[0].to",
        ),
        (
            json!({ "kind": "adjustment", "lines": [{ "item": "BOLT", "qty": "-1", "location": "A1" }] }),
            422,
            "reason-required",
            "reason",
        ),
        (
            json!({ "kind": "issue", "at": "2026-04-02T00:00:00Z", "lines": [{ "item": "BOLT", "qty": "1", "location": "A1" }] }),
            422,
            "future-movement",
            "at",
        ),
        (
            json!({ "kind": "issue", "at": "yesterday", "lines": [{ "item": "BOLT", "qty": "1", "location": "A1" }] }),
            422,
            "invalid-time",
            "at",
        ),
        (json!({ "kind": "issue", "lines": [] }), 422, "invalid-lines", "lines"),
        (json!({ "kind": "borrow", "lines": [] }), 400, "malformed-json", "kind"),
    ];
    for (body, status, code, field) in cases {
        let reply = movement(&s, body.clone()).await;
        assert_eq!((reply.status, reply.code()), (status, code), "{body}: {}", reply.body);
        assert_eq!(reply.body["field"], field, "{body}");
    }
    // Over-issue: refused naming the item, the place and the shortfall; a later line of the
    // same movement that fits does not land either.
    let over = movement(
        &s,
        json!({ "kind": "issue", "lines": [{ "item": "BOLT", "qty": "4", "location": "A1" }, { "item": "BOLT", "qty": "7", "location": "A1" }] }),
    )
    .await;
    assert_eq!((over.status, over.code()), (409, "insufficient-stock"), "{}", over.body);
    let detail = over.body["detail"].as_str().unwrap();
    assert!(detail.contains("1 of `BOLT` short at `A1`"), "{detail}");
    assert_eq!(over.body["field"], "lines[1].qty");
    assert_eq!(stock_at(&s, "BOLT", "A1").await.0, "10");
    // A movement too big for one call is refused whole, before anything is written.
    let lines: Vec<Value> =
        (0..160).map(|_| json!({ "item": "BOLT", "qty": "0.001", "location": "A1", "to": "A2" })).collect();
    let big = movement(&s, json!({ "kind": "transfer", "lines": lines })).await;
    assert_eq!((big.status, big.code()), (422, "movement-too-large"), "{}", big.body);
    assert_eq!(stock_at(&s, "BOLT", "A1").await.0, "10");
    // Changing what stock depends on is refused once it moved.
    let changed = s.put(&format!("{INV}/items/BOLT"), json!({ "name": "Bolt", "base_uom": "kg" })).await;
    assert_eq!((changed.status, changed.code()), (409, "item-has-stock-history"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_concurrent_issuers_take_exactly_the_stock_there_is() {
    let s = store().await;
    for round in 0..8 {
        let sku = format!("LAST-{round}");
        item(&s, &sku, json!({})).await;
        receive(&s, &sku, "2026-03-01T09:00:00Z", "10", "2.50", "A1").await;
        let calls = (0..32).map(|_| issue(&s, &sku, "2026-03-31T11:00:00Z", "1", "A1"));
        let replies = join_all(calls).await;
        for r in &replies {
            assert!(
                r.status == 201 || (r.status == 409 && ["insufficient-stock", "write-conflict"].contains(&r.code())),
                "round {round}: {} {}",
                r.status,
                r.body
            );
        }
        let issued = replies.iter().filter(|r| r.status == 201).count();
        let short = replies.iter().filter(|r| r.code() == "insufficient-stock").count();
        assert_eq!(issued, 10, "round {round}: exactly the 10 on hand are issued");
        assert!(short > 0, "round {round}");
        assert_eq!(stock_at(&s, &sku, "A1").await.0, "0", "round {round}");
        // Every issue cost the same 2.50; the item is worth nothing now.
        assert!(replies.iter().filter(|r| r.status == 201).all(|r| r.body["lines"][0]["cost"] == "2.50"));
        let value = s.get(&format!("{INV}/items/{sku}/stock")).await.expect(200).body;
        assert_eq!(value["value"], "0.00");
    }
    let metrics = s.metrics().await;
    let repeats: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("keel_plugin_call_repeats_total{") && l.contains("inventory"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(repeats > 0, "the issuers never raced: the test proves nothing");
}

/// D1 receipt 10 @100, D3 receipt 10 @130, D4 issue 15; then a receipt of 10 @160 dated D2.
async fn worked_example(s: &TestServer, sku: &str, valuation: &str) -> (String, u64) {
    item(s, sku, json!({ "valuation": valuation })).await;
    receive(s, sku, &format!("{DAY}01T09:00:00Z"), "10", "100", "A1").await;
    receive(s, sku, &format!("{DAY}03T09:00:00Z"), "10", "130", "A1").await;
    let issued = issue(s, sku, &format!("{DAY}04T09:00:00Z"), "15", "A1").await.expect(201).body;
    let number = issued["number"].as_u64().unwrap();
    let before = issued["lines"][0]["cost"].as_str().unwrap().to_owned();
    receive(s, sku, &format!("{DAY}02T09:00:00Z"), "10", "160", "A1").await;
    (before, number)
}

async fn cost_of(s: &TestServer, number: u64) -> String {
    let shown = s.get(&format!("{INV}/movements/{number}")).await.expect(200).body;
    shown["lines"][0]["cost"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_average_and_fifo_costs_are_revalued_by_a_back_dated_receipt() {
    let s = store().await;
    // Moving average: 15 × (1000 + 1300) / 20 = 1725; with the D2 receipt the average on D4
    // is (1000 + 1600 + 1300) / 30 = 130: 15 × 130 = 1950, and 15 left worth 1950.
    let (before, number) = worked_example(&s, "AVG", "average").await;
    assert_eq!(before, "1725.00");
    assert_eq!(cost_of(&s, number).await, "1950.00");
    let now = s.get(&format!("{INV}/items/AVG/valuation")).await.expect(200).body;
    assert_eq!((now["qty"].as_str(), now["value"].as_str()), (Some("15"), Some("1950.00")));
    // FIFO: 10 @100 + 5 @130 = 1650; with D2's layer first after D1's: 10 @100 + 5 @160 = 1800.
    let (before, number) = worked_example(&s, "FIFO", "fifo").await;
    assert_eq!(before, "1650.00");
    assert_eq!(cost_of(&s, number).await, "1800.00");
    let now = s.get(&format!("{INV}/items/FIFO/valuation")).await.expect(200).body;
    assert_eq!(now["value"], "2100.00");
    let layers: Vec<(&str, &str)> = now["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["qty"].as_str().unwrap(), l["value"].as_str().unwrap()))
        .collect();
    assert_eq!(layers, [("5", "800.00"), ("10", "1300.00")]);
    // As of D3 evening: 30 units worth 3900 (both methods).
    for sku in ["AVG", "FIFO"] {
        let then = s.get(&format!("{INV}/items/{sku}/valuation?at={DAY}03T18:00:00Z")).await.expect(200).body;
        assert_eq!((then["qty"].as_str(), then["value"].as_str()), (Some("30"), Some("3900.00")), "{sku}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_back_dated_issue_that_would_make_a_later_balance_negative_is_refused() {
    let s = store().await;
    item(&s, "GLUE", json!({})).await;
    // 01-Mar +10 (balance 10), 10-Mar −8 (balance 2), 20-Mar +10 (balance 12, now).
    receive(&s, "GLUE", &format!("{DAY}01T09:00:00Z"), "10", "4", "A1").await;
    issue(&s, "GLUE", &format!("{DAY}10T09:00:00Z"), "8", "A1").await.expect(201);
    receive(&s, "GLUE", &format!("{DAY}20T09:00:00Z"), "10", "4", "A1").await;
    // −5 on 05-Mar leaves 5 that day and 7 now, but −3 between 10-Mar and 20-Mar.
    let refused = issue(&s, "GLUE", &format!("{DAY}05T09:00:00Z"), "5", "A1").await;
    assert_eq!((refused.status, refused.code()), (409, "insufficient-stock"), "{}", refused.body);
    let detail = refused.body["detail"].as_str().unwrap();
    assert!(detail.contains("3 of `GLUE` short at `A1`") && detail.contains("2026-03-10T09:00:00Z"), "{detail}");
    // A transfer out of the bin back then is held to the same rule; 2 fit.
    let moved = movement(&s, json!({ "kind": "transfer", "at": format!("{DAY}05T09:00:00Z"), "lines": [{ "item": "GLUE", "qty": "3", "location": "A1", "to": "A2" }] })).await;
    assert_eq!(moved.code(), "insufficient-stock");
    issue(&s, "GLUE", &format!("{DAY}05T09:00:00Z"), "2", "A1").await.expect(201);
    assert_eq!(stock_at(&s, "GLUE", "A1").await.0, "10");
    // The history shows the balance back then: 10, 8, 0, 10.
    let history = s.get(&format!("{INV}/items/GLUE/movements")).await.expect(200).body;
    let balances: Vec<&str> =
        history["items"].as_array().unwrap().iter().map(|e| e["balance"].as_str().unwrap()).collect();
    assert_eq!(balances, ["10", "8", "0", "10"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fefo_picks_the_earliest_expiry_and_fifo_the_earliest_receipt() {
    let s = store().await;
    item(&s, "MILK", json!({ "tracking": "lot", "removal": "fefo" })).await;
    item(&s, "FLOUR", json!({ "tracking": "lot", "removal": "fifo" })).await;
    // Lot X (expires 2026-06-01) received first, lot Y (2026-05-01) second, an expired lot Z.
    for (sku, lot, expiry, at) in [
        ("MILK", "X", "2026-06-01", "01"),
        ("MILK", "Y", "2026-05-01", "02"),
        ("MILK", "Z", "2026-03-15", "03"),
        ("FLOUR", "X", "2026-06-01", "01"),
        ("FLOUR", "Y", "2026-05-01", "02"),
    ] {
        movement(&s, json!({ "kind": "receipt", "at": format!("{DAY}{at}T09:00:00Z"), "lines": [{ "item": sku, "qty": "20", "unit_cost": "1", "location": "A1", "lot": lot, "expiry": expiry }] }))
            .await
            .expect(201);
    }
    let picked = |reply: &Value| -> Vec<(String, String)> {
        reply["lines"][0]["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["lot"].as_str().unwrap().to_owned(), e["qty"].as_str().unwrap().to_owned()))
            .collect()
    };
    // FEFO: Y first (earliest expiry), then X; the expired Z is never picked.
    let milk = issue(&s, "MILK", &format!("{DAY}31T09:00:00Z"), "30", "A1").await.expect(201).body;
    assert_eq!(picked(&milk), [("Y".to_owned(), "-20".to_owned()), ("X".to_owned(), "-10".to_owned())]);
    let more = issue(&s, "MILK", &format!("{DAY}31T09:00:00Z"), "11", "A1").await;
    assert_eq!(more.code(), "insufficient-stock", "only 10 unexpired left: {}", more.body);
    // Named, the expired lot can go (to scrap it).
    movement(&s, json!({ "kind": "adjustment", "reason": "expired", "lines": [{ "item": "MILK", "qty": "-20", "location": "A1", "lot": "Z" }] })).await.expect(201);
    // FIFO: X first (received first), whatever the expiry.
    let flour = issue(&s, "FLOUR", &format!("{DAY}31T09:00:00Z"), "25", "A1").await.expect(201).body;
    assert_eq!(picked(&flour), [("X".to_owned(), "-20".to_owned()), ("Y".to_owned(), "-5".to_owned())]);
    // A lot comes in with one expiry only.
    let clash = movement(&s, json!({ "kind": "receipt", "lines": [{ "item": "MILK", "qty": "1", "unit_cost": "1", "location": "A1", "lot": "X", "expiry": "2027-01-01" }] })).await;
    assert_eq!((clash.status, clash.code()), (422, "lot-expiry-mismatch"));
    let missing = movement(
        &s,
        json!({ "kind": "receipt", "lines": [{ "item": "MILK", "qty": "1", "unit_cost": "1", "location": "A1" }] }),
    )
    .await;
    assert_eq!((missing.code(), missing.body["field"].as_str()), ("lot-required", Some("lines[0].lot")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservations_hold_stock_until_issued_released_or_expired() {
    let s = store().await;
    item(&s, "CABLE", json!({})).await;
    receive(&s, "CABLE", &format!("{DAY}01T09:00:00Z"), "10", "3", "A1").await;
    let path = format!("{INV}/reservations");
    let reserve = |qty: &str, reference: &str, expires: &str| {
        s.post(
            &path,
            json!({ "item": "CABLE", "location": "A1", "qty": qty, "reference": reference, "expires": expires }),
        )
    };
    let held = reserve("6", "SO-100", "2026-03-31T13:00:00Z").await.expect(201).body;
    let number = held["number"].as_u64().unwrap();
    assert_eq!(stock_at(&s, "CABLE", "A1").await, ("10".to_owned(), "4".to_owned()));
    // Only 4 are free: a 5th cannot be issued or reserved by anyone else.
    assert_eq!(issue(&s, "CABLE", &format!("{DAY}31T11:00:00Z"), "5", "A1").await.code(), "insufficient-stock");
    assert_eq!(reserve("5", "SO-101", "2026-03-31T13:00:00Z").await.code(), "insufficient-stock");
    // Issuing against the reservation consumes it.
    let line = json!({ "item": "CABLE", "qty": "4", "location": "A1", "reservation": number });
    movement(&s, json!({ "kind": "issue", "reference": "SO-100", "lines": [line] })).await.expect(201);
    let after = s.get(&format!("{INV}/reservations/{number}")).await.expect(200).body;
    assert_eq!((after["left"].as_str(), after["state"].as_str()), (Some("2"), Some("active")));
    assert_eq!(stock_at(&s, "CABLE", "A1").await, ("6".to_owned(), "4".to_owned()));
    let too_much = json!({ "item": "CABLE", "qty": "3", "location": "A1", "reservation": number });
    assert_eq!(movement(&s, json!({ "kind": "issue", "lines": [too_much] })).await.code(), "exceeds-reservation");
    // When its time runs out, what it still holds is free again.
    s.advance_clock(2 * 3_600_000).await;
    issue(&s, "CABLE", "2026-03-31T14:00:00Z", "6", "A1").await.expect(201);
    let expired = s.get(&format!("{INV}/reservations/{number}")).await.expect(200).body;
    assert_eq!(expired["state"], "expired");
    // Released by hand, likewise.
    receive(&s, "CABLE", "2026-03-31T14:00:00Z", "5", "3", "A1").await;
    let second = reserve("5", "SO-102", "2026-04-30T00:00:00Z").await.expect(201).body;
    assert_eq!(stock_at(&s, "CABLE", "A1").await.1, "0");
    s.post(&format!("{INV}/reservations/{}/release", second["number"]), json!({})).await.expect(200);
    assert_eq!(stock_at(&s, "CABLE", "A1").await.1, "5");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serial_number_is_in_one_place_at_a_time() {
    let s = store().await;
    item(&s, "LAPTOP", json!({ "tracking": "serial" })).await;
    let receipt = |serial: &str, at: &str| {
        movement(
            &s,
            json!({ "kind": "receipt", "at": at, "lines": [{ "item": "LAPTOP", "qty": "1", "unit_cost": "900", "location": "A1", "lot": serial }] }),
        )
    };
    receipt("SN-1", "2026-03-02T09:00:00Z").await.expect(201);
    assert_eq!(receipt("SN-1", "2026-03-03T09:00:00Z").await.code(), "serial-in-stock");
    let moved = movement(&s, json!({ "kind": "transfer", "at": "2026-03-04T09:00:00Z", "lines": [{ "item": "LAPTOP", "qty": "1", "location": "A1", "to": "A2", "lot": "SN-1" }] })).await;
    moved.expect(201);
    // It is in A2 now: not issuable from A1, and not movable before its last move.
    let wrong = movement(
        &s,
        json!({ "kind": "issue", "lines": [{ "item": "LAPTOP", "qty": "1", "location": "A1", "lot": "SN-1" }] }),
    )
    .await;
    assert_eq!(wrong.code(), "serial-not-here", "{}", wrong.body);
    let early = movement(&s, json!({ "kind": "issue", "at": "2026-03-03T09:00:00Z", "lines": [{ "item": "LAPTOP", "qty": "1", "location": "A2", "lot": "SN-1" }] })).await;
    assert_eq!(early.code(), "serial-moved-later");
    let two = movement(&s, json!({ "kind": "receipt", "lines": [{ "item": "LAPTOP", "qty": "2", "unit_cost": "900", "location": "A1", "lot": "SN-2" }] })).await;
    assert_eq!(two.code(), "invalid-qty");
    movement(
        &s,
        json!({ "kind": "issue", "lines": [{ "item": "LAPTOP", "qty": "1", "location": "A2", "lot": "SN-1" }] }),
    )
    .await
    .expect(201);
    // Gone: it can come back (a return), as a receipt.
    receipt("SN-1", "2026-03-31T12:00:00Z").await.expect(201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_tail_is_revalued_by_a_task_that_survives_a_restart() {
    let s = store().await;
    s.patch("/v1/tenants/default/plugins/inventory/settings", json!({ "values": { "revalue-chunk": 100 } }))
        .await
        .expect(200);
    item(&s, "PAPER", json!({})).await;
    receive(&s, "PAPER", &format!("{DAY}01T09:00:00Z"), "5000", "10", "A1").await;
    // 2,400 issues of one sheet each, in 12 movements of 200 lines, from 02-Mar on: each
    // costs 10.00.
    for m in 0..12 {
        let lines: Vec<Value> = (0..200).map(|_| json!({ "item": "PAPER", "qty": "1", "location": "A1" })).collect();
        let at = format!("{DAY}{:02}T09:00:00Z", 2 + m);
        let posted = movement(&s, json!({ "kind": "issue", "at": at, "lines": lines })).await.expect(201).body;
        assert_eq!(posted["lines"][199]["cost"], "10.00");
    }
    let last = s.get(&format!("{INV}/movements?kind=issue&limit=1")).await.expect(200).body["items"][0]["number"]
        .as_u64()
        .unwrap();
    // 5,000 more at 12.00 on 01-Mar afternoon: the average from then on is 11.00.
    let back = receive(&s, "PAPER", &format!("{DAY}01T15:00:00Z"), "5000", "12", "A1").await;
    assert_eq!(back["revaluation_pending"], json!(["PAPER"]));
    // Meanwhile the quantity is exact, the value provisional and said to be; the server is
    // stopped in the middle of the task (a chunk of the journal a step).
    let meanwhile = s.get(&format!("{INV}/items/PAPER/valuation")).await.expect(200).body;
    assert_eq!((meanwhile["qty"].as_str(), meanwhile["revaluation_pending"].as_bool()), (Some("7600"), Some(true)));
    let s = s.restart().await;
    let done = s
        .eventually(&format!("{INV}/items/PAPER/valuation"), "the revaluation to finish", |b| {
            b["revaluation_pending"] == false
        })
        .await;
    // 10,000 in, 2,400 out at 11.00: 7,600 left worth 83,600.
    assert_eq!((done["qty"].as_str(), done["value"].as_str()), (Some("7600"), Some("83600.00")));
    let shown = s.get(&format!("{INV}/movements/{last}")).await.expect(200).body;
    assert!(shown["lines"].as_array().unwrap().iter().all(|l| l["cost"] == "11.00"), "{}", shown["lines"][0]);
    let tasks = s.get("/v1/tenants/default/tasks").await.expect(200).body;
    let task =
        tasks["items"].as_array().unwrap().iter().find(|t| t["title"] == "Revalue PAPER").expect("the task").clone();
    assert_eq!(task["status"], "done");
    assert!(task["chunks"].as_u64().unwrap() >= 5, "{task}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_count_posts_the_differences_unless_a_place_moved_after_it_was_counted() {
    let s = store().await;
    item(&s, "TAPE", json!({})).await;
    receive(&s, "TAPE", &format!("{DAY}01T09:00:00Z"), "10", "2", "A1").await;
    receive(&s, "TAPE", &format!("{DAY}01T09:00:00Z"), "5", "2", "A2").await;
    let count = s.post(&format!("{INV}/counts"), json!({ "location": "WH1-A" })).await.expect(201).body;
    let number = count["number"].as_u64().unwrap();
    let lines = format!("{INV}/counts/{number}/lines");
    s.post(&lines, json!({ "lines": [{ "item": "TAPE", "location": "A1", "counted": "8" }, { "item": "TAPE", "location": "A2", "counted": "5" }] }))
        .await
        .expect(200);
    // A pick from A2 after it was counted: posting would count that piece twice.
    s.advance_clock(60_000).await;
    issue(&s, "TAPE", "2026-03-31T12:01:00Z", "1", "A2").await.expect(201);
    let refused = s.post(&format!("{INV}/counts/{number}/post"), json!({})).await;
    assert_eq!((refused.status, refused.code()), (409, "moved-since-counted"), "{}", refused.body);
    assert!(refused.body["detail"].as_str().unwrap().contains("`TAPE` at `A2`"));
    let shown = s.get(&format!("{INV}/counts/{number}")).await.expect(200).body;
    let a1 = &shown["lines"][0];
    assert_eq!((a1["book"].as_str(), a1["difference"].as_str()), (Some("10"), Some("-2")));
    assert_eq!(shown["lines"][1]["moved_since_counted"], true);
    // Counted again, it posts: A1 −2 (2 lost), A2 unchanged at 4.
    s.advance_clock(60_000).await;
    s.post(&lines, json!({ "lines": [{ "item": "TAPE", "location": "A2", "counted": "4" }] })).await.expect(200);
    let posted = s.post(&format!("{INV}/counts/{number}/post"), json!({})).await.expect(200).body;
    assert_eq!(posted["state"], "posted");
    let movement = s.get(&format!("{INV}/movements/{}", posted["movement"])).await.expect(200).body;
    assert_eq!(
        (movement["kind"].as_str(), movement["reference"].as_str()),
        (Some("adjustment"), Some(&*format!("count {number}")))
    );
    assert_eq!(movement["lines"].as_array().unwrap().len(), 1);
    assert_eq!(
        (movement["lines"][0]["qty"].as_str(), movement["lines"][0]["cost"].as_str()),
        (Some("-2"), Some("4.00"))
    );
    assert_eq!(stock_at(&s, "TAPE", "A1").await.0, "8");
    assert_eq!(stock_at(&s, "TAPE", "A2").await.0, "4");
    assert_eq!(s.post(&format!("{INV}/counts/{number}/post"), json!({})).await.code(), "count-closed");
    // A count covers its location's subtree only.
    let other = s.post(&format!("{INV}/counts"), json!({ "location": "A1" })).await.expect(201).body;
    let outside = s
        .post(
            &format!("{INV}/counts/{}/lines", other["number"]),
            json!({ "lines": [{ "item": "TAPE", "location": "A2", "counted": "1" }] }),
        )
        .await;
    assert_eq!((outside.code(), outside.body["field"].as_str()), ("outside-count", Some("lines[0].location")));
}

/// Runs the reorder check by hand and waits for it (the `runs`-th) to finish.
async fn check_reorder(s: &TestServer, runs: usize) {
    s.post_empty("/v1/tenants/default/plugins/inventory/schedules/reorder-check/run").await.expect(202);
    s.eventually("/v1/tenants/default/tasks?limit=100", "the reorder check", |b| {
        b["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["title"] == "Check reorder points" && t["status"] == "done")
            .count()
            == runs
    })
    .await;
}

async fn low_events(s: &TestServer) -> Vec<Value> {
    s.get("/v1/tenants/default/events?topic=inventory.stock.low").await.expect(200).body["items"]
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reorder_check_publishes_once_per_crossing() {
    let s = store().await;
    // Point 20 in WH1, ordered in 50s.
    item(&s, "INK", json!({ "reorder": { "WH1": { "point": "20", "qty": "50" } } })).await;
    item(&s, "QUIET", json!({})).await;
    receive(&s, "INK", &format!("{DAY}01T09:00:00Z"), "30", "1", "A1").await;
    check_reorder(&s, 1).await;
    assert!(low_events(&s).await.is_empty());
    // 15 left (3 of them reserved): at or below 20, a suggestion of 50 (12 available + 50 > 20).
    issue(&s, "INK", &format!("{DAY}31T09:00:00Z"), "15", "A2").await.expect_problem(409, "insufficient-stock");
    issue(&s, "INK", &format!("{DAY}31T09:00:00Z"), "15", "A1").await.expect(201);
    s.post(
        &format!("{INV}/reservations"),
        json!({ "item": "INK", "location": "A1", "qty": "3", "reference": "SO-9", "expires": "2026-04-30T00:00:00Z" }),
    )
    .await
    .expect(201);
    check_reorder(&s, 2).await;
    let events = low_events(&s).await;
    assert_eq!(events.len(), 1);
    let open = s.get(&format!("{INV}/reorder-suggestions?state=open")).await.expect(200).body;
    let first = &open["items"][0];
    assert_eq!(
        (first["item"].as_str(), first["available"].as_str(), first["suggested"].as_str()),
        (Some("INK"), Some("12"), Some("50"))
    );
    // Still low: not again.
    check_reorder(&s, 3).await;
    assert_eq!(low_events(&s).await.len(), 1);
    // Back above the point: the suggestion is resolved; below again: a new crossing.
    receive(&s, "INK", "2026-03-31T12:00:00Z", "20", "1", "A1").await;
    check_reorder(&s, 4).await;
    let resolved = s.get(&format!("{INV}/reorder-suggestions?state=resolved")).await.expect(200).body;
    assert_eq!(resolved["items"].as_array().unwrap().len(), 1);
    issue(&s, "INK", "2026-03-31T12:00:00Z", "20", "A1").await.expect(201);
    check_reorder(&s, 5).await;
    assert_eq!(low_events(&s).await.len(), 2);
    let open = s.get(&format!("{INV}/reorder-suggestions?state=open")).await.expect(200).body;
    let second = open["items"][0]["id"].as_str().unwrap().to_owned();
    s.post(&format!("{INV}/reorder-suggestions/{second}/dismiss"), json!({})).await.expect(200);
    let open = s.get(&format!("{INV}/reorder-suggestions?state=open")).await.expect(200).body;
    assert!(open["items"].as_array().unwrap().is_empty());
    check_reorder(&s, 6).await;
    assert_eq!(low_events(&s).await.len(), 2, "a dismissed crossing is not reported again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_and_opening_stock_import_from_csv_all_or_nothing() {
    let s = store().await;
    let csv = "sku,name,base_uom,units,tracking,valuation,reorder\n\
               NUT,Nut M6,pcs,box=100,,fifo,WH1=200/1000\n\
               OIL,Engine oil,l,,lot,,\n\
               BAD SKU,Broken,pcs,,,,\n\
               WIRE,Wire,m,roll=,,,\n\
               CABLE,Cable,m,,,lifo,\n";
    let refused = s
        .post_raw("/v1/imports/inventory/items", Some("text/csv"), csv.into())
        .await
        .expect_problem(422, "import-rejected");
    let problems: Vec<(u64, &str)> = refused.body["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["line"].as_u64().unwrap(), p["field"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(problems, [(4, "sku"), (5, "units"), (6, "valuation")]);
    assert_eq!(s.get(&format!("{INV}/items/NUT")).await.status, 404, "nothing saved");
    let good: String = csv
        .lines()
        .filter(|l| !l.starts_with("BAD") && !l.starts_with("WIRE") && !l.starts_with("CABLE"))
        .map(|l| format!("{l}\n"))
        .collect();
    s.post_raw("/v1/imports/inventory/items", Some("text/csv"), good.into_bytes()).await.expect(200);
    let nut = s.get(&format!("{INV}/items/NUT")).await.expect(200).body;
    assert_eq!(
        (nut["valuation"].as_str(), nut["units"]["box"].as_str(), nut["reorder"]["WH1"]["point"].as_str()),
        (Some("fifo"), Some("100"), Some("200"))
    );
    // Opening stock: a bad row (a lot-tracked item without its lot) rejects the file.
    let stock = "item,location,qty,uom,unit_cost,lot,expiry\n\
                 NUT,A1,5,box,12.00,,\n\
                 OIL,A2,40,,3.5,B-1,2027-01-31\n\
                 OIL,A2,10,,3.5,,\n";
    let refused = s
        .post_raw("/v1/imports/inventory/opening-stock", Some("text/csv"), stock.into())
        .await
        .expect_problem(422, "import-rejected");
    assert_eq!(refused.body["problems"][0]["line"], 4);
    assert_eq!(refused.body["problems"][0]["field"], "lot");
    assert_eq!(stock_at(&s, "NUT", "A1").await.0, "0");
    let fixed = stock.replace("OIL,A2,10,,3.5,,", "OIL,A2,10,,3.5,B-2,2026-04-15");
    s.post_raw("/v1/imports/inventory/opening-stock", Some("text/csv"), fixed.into_bytes()).await.expect(200);
    assert_eq!(stock_at(&s, "NUT", "A1").await.0, "500");
    let nut = s.get(&format!("{INV}/items/NUT/valuation")).await.expect(200).body;
    assert_eq!(nut["value"], "60.00", "5 boxes at 12.00");
    let found = s.get(&format!("{INV}/movements?reference=opening%20stock")).await.expect(200).body;
    assert_eq!(found["items"].as_array().unwrap().len(), 1, "one movement for the file's rows");
    // Lots expiring within 30 days of 2026-03-31: B-2 (2026-04-15), not B-1.
    let expiring = s.get(&format!("{INV}/reports/expiring?days=30")).await.expect(200).body;
    let lots: Vec<&str> = expiring["items"].as_array().unwrap().iter().map(|b| b["lot"].as_str().unwrap()).collect();
    assert_eq!(lots, ["B-2"]);
    assert_eq!(s.get(&format!("{INV}/reports/expiring?days=-1")).await.code(), "invalid-days");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_value_per_warehouse_and_location_as_of_any_time() {
    let s = store().await;
    s.put(&format!("{INV}/locations/WH2"), json!({ "name": "Second warehouse" })).await.expect(201);
    // A zone whose id starts like zone WH1-A's: never counted as inside it.
    s.put(&format!("{INV}/locations/WH1-AB"), json!({ "name": "Zone AB", "parent": "WH1", "kind": "zone" }))
        .await
        .expect(201);
    s.put(&format!("{INV}/locations/AB1"), json!({ "name": "AB1", "parent": "WH1-AB" })).await.expect(201);
    item(&s, "DESK", json!({})).await;
    // 01-Mar: 10 @100 into A1; 05-Mar: 10 @200 into WH2 (average 150); 10-Mar: 4 from A1 to A2.
    receive(&s, "DESK", &format!("{DAY}01T09:00:00Z"), "10", "100", "A1").await;
    receive(&s, "DESK", &format!("{DAY}05T09:00:00Z"), "10", "200", "WH2").await;
    movement(&s, json!({ "kind": "transfer", "at": format!("{DAY}10T09:00:00Z"), "lines": [{ "item": "DESK", "qty": "4", "location": "A1", "to": "A2" }] }))
        .await
        .expect(201);
    let report = |query: String| {
        let s = &s;
        async move {
            let body = s.get(&format!("{INV}/reports/valuation?{query}")).await.expect(200).body;
            let row = &body["items"][0];
            (row["qty"].as_str().unwrap_or("-").to_owned(), row["value"].as_str().unwrap_or("-").to_owned())
        }
    };
    assert_eq!(report(String::new()).await, ("20".into(), "3000.00".into()));
    assert_eq!(report("warehouse=WH1".into()).await, ("10".into(), "1500.00".into()));
    assert_eq!(report("warehouse=WH2".into()).await, ("10".into(), "1500.00".into()));
    assert_eq!(report("location=A2".into()).await, ("4".into(), "600.00".into()));
    // On 03-Mar only WH1 held desks, at 100 each; on 07-Mar A2 was still empty.
    assert_eq!(report(format!("at={DAY}03T00:00:00Z")).await, ("10".into(), "1000.00".into()));
    assert_eq!(report(format!("at={DAY}03T00:00:00Z&warehouse=WH2")).await, ("-".into(), "-".into()));
    assert_eq!(report(format!("at={DAY}07T00:00:00Z&location=WH1-A")).await, ("10".into(), "1500.00".into()));
    assert_eq!(report(format!("at={DAY}07T00:00:00Z&location=A2")).await, ("-".into(), "-".into()));
    // 2 desks in AB1 now: in WH1, not in zone WH1-A (6 in A1, 4 in A2).
    movement(
        &s,
        json!({ "kind": "transfer", "lines": [{ "item": "DESK", "qty": "2", "location": "WH2", "to": "AB1" }] }),
    )
    .await
    .expect(201);
    assert_eq!(report("location=WH1-A".into()).await.0, "10");
    assert_eq!(report("location=WH1-AB".into()).await.0, "2");
    assert_eq!(report("warehouse=WH1".into()).await.0, "12");
}

/// A small deterministic generator (SplitMix64).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % n
    }
}

/// What the test expects of a place's ledger: entries `(time, order posted, qty)`.
#[derive(Default)]
struct Model {
    places: std::collections::BTreeMap<&'static str, Vec<(i64, usize, i64)>>,
}

impl Model {
    /// Whether taking `q` from `place` at `t` (posted as number `n`) keeps every balance from
    /// then on, and now, at or above zero.
    fn allows(&self, place: &str, t: i64, n: usize, q: i64) -> bool {
        let mut entries = self.places.get(place).cloned().unwrap_or_default();
        entries.push((t, n, -q));
        entries.sort();
        let mut running = 0;
        entries.iter().all(|e| {
            running += e.2;
            running >= 0
        })
    }

    fn add(&mut self, place: &'static str, t: i64, n: usize, q: i64) {
        self.places.entry(place).or_default().push((t, n, q));
    }

    fn on_hand(&self, place: &str) -> i64 {
        self.places.get(place).map_or(0, |e| e.iter().map(|e| e.2).sum())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_ledgers_over_http_match_a_model_and_a_replay_from_nothing() {
    use keel_plugin_inventory::journal::{Entry, Kind, Method, Valuation};
    use keel_plugin_inventory::num::{Money, Qty};
    let s = store().await;
    let places = ["A1", "A2", "WH1"];
    for (sku, valuation, seed) in [("RAND-AVG", "average", 7u64), ("RAND-FIFO", "fifo", 11)] {
        item(&s, sku, json!({ "valuation": valuation })).await;
        let method = if valuation == "fifo" { Method::Fifo } else { Method::Average };
        let mut rng = Rng(seed);
        let mut model = Model::default();
        // What was accepted, for the replay: (time, order, entry kind, qty, value in).
        let mut accepted: Vec<(i64, usize, Kind, i64, Option<Money>, Option<u64>)> = Vec::new();
        let start = 1_772_323_200_000i64; // 2026-03-01T00:00:00Z
        let now = 1_774_958_400_000i64;
        let mut n = 0;
        for step in 0..90 {
            // Any time in March up to now: most movements are back-dated against others.
            let t = start + (rng.below(((now - start) / 60_000) as u64) as i64) * 60_000;
            let at = keel_plugin_inventory::time::format(t);
            let place = places[rng.below(3) as usize];
            let qty = 1 + rng.below(12) as i64;
            match rng.below(3) {
                0 => {
                    let cost = format!("{}.{:02}", 1 + rng.below(90), rng.below(100));
                    let posted = receive(&s, sku, &at, &qty.to_string(), &cost, place).await;
                    model.add(place, t, n, qty);
                    let value = Money::parse(&cost).unwrap().of(Qty::units(qty));
                    accepted.push((t, n, Kind::Receipt, qty, Some(value), posted["number"].as_u64()));
                    n += 1;
                }
                1 => {
                    let reply = issue(&s, sku, &at, &qty.to_string(), place).await;
                    let allowed = model.allows(place, t, n, qty);
                    assert_eq!(
                        reply.status == 201,
                        allowed,
                        "{sku} step {step}: issue {qty} at {place} {at}: {}",
                        reply.body
                    );
                    if allowed {
                        model.add(place, t, n, -qty);
                        accepted.push((t, n, Kind::Issue, -qty, None, reply.body["number"].as_u64()));
                        n += 1;
                    } else {
                        assert_eq!(reply.code(), "insufficient-stock");
                    }
                }
                _ => {
                    let to = places[(places.iter().position(|p| *p == place).unwrap() + 1) % 3];
                    let body = json!({ "kind": "transfer", "at": at, "lines": [{ "item": sku, "qty": qty.to_string(), "location": place, "to": to }] });
                    let reply = movement(&s, body).await;
                    let allowed = model.allows(place, t, n, qty);
                    assert_eq!(
                        reply.status == 201,
                        allowed,
                        "{sku} step {step}: transfer {qty} {place}→{to} {at}: {}",
                        reply.body
                    );
                    if allowed {
                        model.add(place, t, n, -qty);
                        model.add(to, t, n, qty);
                        n += 1;
                    }
                }
            }
        }
        // On hand per place is the ledger's sum, never negative; the history's running
        // balance per place ends there.
        for place in places {
            let expected = model.on_hand(place);
            assert!(expected >= 0);
            let (on_hand, _) = stock_at(&s, sku, place).await;
            assert_eq!(on_hand, expected.to_string(), "{sku} at {place}");
            let history =
                s.get(&format!("{INV}/items/{sku}/movements?location={place}&limit=1000")).await.expect(200).body;
            let last = history["items"]
                .as_array()
                .unwrap()
                .last()
                .map_or("0".to_owned(), |e| e["balance"].as_str().unwrap().to_owned());
            assert_eq!(last, expected.to_string(), "{sku} history at {place}");
        }
        // The valuation and every issue's cost are what a replay from nothing gives.
        accepted.sort_by_key(|a| (a.0, a.1));
        let mut state = Valuation::default();
        for (seq, (t, _, kind, qty, value, number)) in accepted.iter().enumerate() {
            let entry = Entry {
                s: seq as u64,
                t: *t,
                m: 0,
                k: *kind,
                l: String::new(),
                o: None,
                q: Qty::units(*qty),
                u: *value,
                c: Money::ZERO,
            };
            let cost = state.apply(method, &entry).unwrap();
            if *kind == Kind::Issue {
                let shown = s.get(&format!("{INV}/movements/{}", number.unwrap())).await.expect(200).body;
                assert_eq!(
                    shown["lines"][0]["cost"].as_str(),
                    Some((-cost).to_string().as_str()),
                    "{sku}: issue {number:?}"
                );
            }
        }
        let now_value = s.get(&format!("{INV}/items/{sku}/valuation")).await.expect(200).body;
        assert_eq!(now_value["revaluation_pending"], false);
        assert_eq!(
            (now_value["qty"].as_str().unwrap(), now_value["value"].as_str().unwrap()),
            (state.qty.to_string().as_str(), state.value.to_string().as_str()),
            "{sku}"
        );
        assert!(
            accepted.iter().filter(|a| a.2 == Kind::Issue).count() > 10,
            "{sku}: too few issues landed to prove much"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postings_and_readers_at_once_never_see_a_half_merged_journal() {
    let s = store().await;
    item(&s, "BUSY", json!({ "valuation": "fifo" })).await;
    receive(&s, "BUSY", "2026-03-01T09:00:00Z", "1000", "1", "A1").await;
    // 12 writers post 25 issues each (300 entries: the tail is merged back every 40), while
    // 4 readers page the history and the valuation: nobody gets a 500.
    let writers = (0..12).map(|w| {
        let s = &s;
        async move {
            for n in 0..25 {
                let reply = issue(s, "BUSY", "2026-03-31T11:00:00Z", "1", "A1").await;
                assert!(
                    reply.status == 201 || reply.code() == "write-conflict",
                    "writer {w} issue {n}: {} {}",
                    reply.status,
                    reply.body
                );
            }
        }
    });
    let readers = (0..4).map(|r| {
        let s = &s;
        async move {
            for n in 0..40 {
                for path in [format!("{INV}/items/BUSY/movements?limit=1000"), format!("{INV}/items/BUSY/valuation")] {
                    let reply = s.get(&path).await;
                    assert!(
                        reply.status == 200 || reply.code() == "write-conflict",
                        "reader {r} read {n}: {} {}",
                        reply.status,
                        reply.body
                    );
                }
            }
        }
    });
    futures::future::join(join_all(writers), join_all(readers)).await;
    let history = s.get(&format!("{INV}/items/BUSY/movements?limit=1000")).await.expect(200).body;
    let entries = history["items"].as_array().unwrap();
    let issued = entries.len() - 1;
    assert!(issued > 250, "most issues landed: {issued}");
    assert_eq!(entries.last().unwrap()["balance"].as_str().unwrap(), (1000 - issued).to_string());
    let seqs: std::collections::BTreeSet<u64> = entries.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs.len(), entries.len(), "no entry twice");
    let value = s.get(&format!("{INV}/items/BUSY/valuation")).await.expect(200).body;
    assert_eq!(value["value"].as_str().unwrap(), format!("{}.00", 1000 - issued));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rare_filter_pages_through_a_long_history_without_losing_its_running_balance() {
    let s = store().await;
    item(&s, "CLIP", json!({})).await;
    // 25,000 receipts of one piece into A1 (dozens of journal chunks), with one into A2 at
    // the start and one at the end.
    let mut csv = String::from("kind,at,item,qty,location,unit_cost\n");
    csv.push_str("receipt,2026-03-01T08:00:00Z,CLIP,5,A2,1\n");
    for _ in 0..25_000 {
        csv.push_str("receipt,2026-03-02T08:00:00Z,CLIP,1,A1,1\n");
    }
    csv.push_str("receipt,2026-03-03T08:00:00Z,CLIP,7,A2,1\n");
    s.post_raw("/v1/imports/inventory/movements", Some("text/csv"), csv.into_bytes()).await.expect(200);
    // A page reads at most 50 chunks: the A2 history comes back over several pages, some of
    // them empty, and its balance runs on across them.
    let mut path = format!("{INV}/items/CLIP/movements?location=A2&limit=10");
    let (mut balances, mut pages, mut empty) = (Vec::new(), 0, 0);
    loop {
        let page = s.get(&path).await.expect(200).body;
        pages += 1;
        let items = page["items"].as_array().unwrap();
        empty += usize::from(items.is_empty());
        balances.extend(items.iter().map(|e| e["balance"].as_str().unwrap().to_owned()));
        match page["next"].as_str() {
            Some(next) => path = format!("{INV}/items/CLIP/movements?location=A2&limit=10&cursor={next}"),
            None => break,
        }
        assert!(pages < 100, "the pages never end");
    }
    assert_eq!(balances, ["5", "12"]);
    assert!(empty > 0, "a page stopped at its scan bound ({pages} pages)");
    let all = s.get(&format!("{INV}/items/CLIP/stock")).await.expect(200).body;
    assert_eq!(all["on_hand"], "25012");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn who_may_move_stock_and_whose_stock_it_is() {
    let s = store().await;
    item(&s, "PEN", json!({})).await;
    receive(&s, "PEN", "2026-03-01T09:00:00Z", "10", "1", "A1").await;
    // A clerk sees stock but cannot move it; a storekeeper can.
    for (role, permissions) in
        [("clerk", json!(["inventory.view"])), ("storekeeper", json!(["inventory.view", "inventory.move"]))]
    {
        s.put(&format!("/v1/tenants/default/roles/{role}/permissions"), json!({ "permissions": permissions }))
            .await
            .expect(200);
    }
    let clerk = s.token_for("default", "clerk").await;
    let keeper = s.token_for("default", "storekeeper").await;
    let line = json!({ "kind": "issue", "lines": [{ "item": "PEN", "qty": "1", "location": "A1" }] });
    let stock = format!("{INV}/stock?item=PEN");
    assert_eq!(s.as_token(Some(&clerk), Method::GET, &stock, None).await.expect(200).body["items"][0]["on_hand"], "10");
    s.as_token(Some(&clerk), Method::POST, &format!("{INV}/movements"), Some(line.clone()))
        .await
        .expect_problem(403, "forbidden");
    s.as_token(Some(&keeper), Method::POST, &format!("{INV}/movements"), Some(line)).await.expect(201);
    s.as_token(
        Some(&keeper),
        Method::PUT,
        &format!("{INV}/items/PEN"),
        Some(json!({ "name": "Pen", "base_uom": "pcs" })),
    )
    .await
    .expect_problem(403, "forbidden");
    // Another tenant with inventory on has its own items and stock: not this one's.
    let other = s.tenant_with_token("other", "tenant-admin").await;
    s.post_empty("/v1/tenants/other/plugins/inventory/enable").await.expect(200);
    s.as_token(Some(&other), Method::GET, &format!("{INV}/items/PEN"), None).await.expect_problem(404, "unknown-item");
    let theirs = s.as_token(Some(&other), Method::GET, &stock, None).await.expect(200).body;
    assert!(theirs["items"].as_array().unwrap().is_empty());
    assert_eq!(s.get(&stock).await.expect(200).body["items"][0]["on_hand"], "9", "this tenant still sees its own");
}
