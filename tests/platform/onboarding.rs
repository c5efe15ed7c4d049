//! Onboarding and offboarding checklists in HR over HTTP: a new hire gets a copy of each
//! template that applies, items fall due around the start date, each is ticked off by its
//! owner (HR, the manager, the employee), and overdue items show.

use crate::leave::{HR, Office};
use reqwest::Method;
use serde_json::{Value, json};

fn items(checklist: &Value) -> Vec<(String, String, bool, bool)> {
    checklist["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["title"].as_str().unwrap().to_owned(),
                i["due"].as_str().unwrap().to_owned(),
                i["done"].as_bool().unwrap(),
                i["overdue"].as_bool().unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_hire_gets_a_checklist_ticked_off_by_each_items_owner_and_overdue_items_show() {
    let o = Office::open("2026-03-05").await;
    let bob = o.hire("Bob Manager", None).await;
    let carol = o.hire("Carol Colleague", None).await;
    o.s.put(&format!("{HR}/departments/ops"), json!({ "name": "Operations" })).await.expect(200);
    for (id, template) in [
        (
            "eng-start",
            json!({ "name": "Engineering onboarding", "applies_on": "hire", "department": "eng", "items": [
            { "title": "Laptop and accounts", "owner": "hr", "due_days": -2 },
            { "title": "Team lunch", "owner": "manager", "due_days": 1 },
            { "title": "Read the handbook", "owner": "employee", "due_days": 5 },
        ] }),
        ),
        (
            "ops-start",
            json!({ "name": "Operations onboarding", "applies_on": "hire", "department": "ops", "items": [
            { "title": "Forklift training", "owner": "hr", "due_days": 0 },
        ] }),
        ),
        (
            "leaving",
            json!({ "name": "Offboarding", "applies_on": "termination", "items": [
            { "title": "Exit interview", "owner": "manager", "due_days": -3 },
            { "title": "Collect the laptop", "owner": "hr", "due_days": 0 },
        ] }),
        ),
    ] {
        o.s.put(&format!("{HR}/checklist-templates/{id}"), template).await.expect(200);
    }
    for (template, code, field) in [
        (json!({ "name": "x", "applies_on": "hire", "items": [] }), "invalid-items", "items"),
        (
            json!({ "name": "x", "applies_on": "hire", "items": [{ "title": "x", "owner": "hr", "due_days": 400 }] }),
            "invalid-due-days",
            "items[0].due_days",
        ),
        (
            json!({ "name": "x", "applies_on": "hire", "department": "nowhere",
                    "items": [{ "title": "x", "owner": "hr", "due_days": 0 }] }),
            "unknown-department",
            "department",
        ),
    ] {
        let reply = o.s.put(&format!("{HR}/checklist-templates/bad"), template).await.expect_problem(422, code).body;
        assert_eq!(reply["field"], field, "{reply}");
    }

    // Dave starts in engineering on Monday 2 March; today is Thursday the 5th.
    let dave = o.hire_on("Dave Joiner", Some(bob.number), "2026-03-02").await;
    let path = format!("/employees/{}/checklists", dave.number);
    let mine = o.call(&dave, Method::GET, &path, None).await.expect(200).body;
    assert_eq!(mine["items"].as_array().unwrap().len(), 1, "only the engineering template applies: {mine}");
    let checklist = &mine["items"][0];
    let id = checklist["id"].as_u64().unwrap();
    assert_eq!(
        items(checklist),
        [
            ("Laptop and accounts".into(), "2026-02-28".into(), false, true),
            ("Team lunch".into(), "2026-03-03".into(), false, true),
            ("Read the handbook".into(), "2026-03-07".into(), false, false),
        ]
    );
    assert_eq!((checklist["overdue"].as_bool(), checklist["complete"].as_bool()), (Some(true), Some(false)));
    o.call(&carol, Method::GET, &path, None).await.expect_problem(403, "not-your-employee");

    // Each item is its owner's (or HR's) to tick off.
    let tick = |index: u32| format!("/checklists/{id}/items/{index}");
    let done = json!({ "done": true });
    let refused =
        o.call(&dave, Method::PUT, &tick(0), Some(done.clone())).await.expect_problem(403, "not-item-owner").body;
    assert!(refused["detail"].as_str().unwrap().ends_with("by HR"), "{refused}");
    o.call(&carol, Method::PUT, &tick(1), Some(done.clone())).await.expect_problem(403, "not-item-owner");
    o.call(&dave, Method::PUT, &tick(2), Some(done.clone())).await.expect(200);
    o.call(&bob, Method::PUT, &tick(1), Some(done.clone())).await.expect(200);
    o.call(&dave, Method::PUT, &tick(7), Some(done.clone())).await.expect_problem(404, "item-not-found");

    // HR's list of what is overdue, most overdue first: only Dave's laptop (Bob and Carol
    // were hired before the templates existed and have no checklist).
    let overdue = o.s.get(&format!("{HR}/checklists/overdue")).await.expect(200).body;
    let ids: Vec<u64> = overdue["items"].as_array().unwrap().iter().map(|c| c["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, [id], "{overdue}");
    let finished = o.s.put(&format!("{HR}{}", tick(0)), done.clone()).await.expect(200).body;
    assert_eq!(finished["complete"], true);
    let by: Vec<&Value> = finished["items"].as_array().unwrap().iter().map(|i| &i["done_by"]).collect();
    assert!(by.iter().all(|b| b.is_string()), "who ticked each item is kept: {finished}");
    assert_eq!(o.s.get(&format!("{HR}/checklists/overdue")).await.expect(200).body["items"], json!([]));
    // Unticking reopens it.
    let reopened = o.s.put(&format!("{HR}{}", tick(2)), json!({ "done": false })).await.expect(200).body;
    assert_eq!((reopened["complete"].as_bool(), reopened["items"][2]["done_by"].is_null()), (Some(false), true));

    // Leaving starts the offboarding checklist, due around the last day.
    o.s.post(&format!("{HR}/employees/{}/terminate", dave.number), json!({ "last_day": "2026-03-31", "reason": "x" }))
        .await
        .expect(200);
    let both = o.s.get(&format!("{HR}{path}")).await.expect(200).body;
    let leaving = both["items"].as_array().unwrap().iter().find(|c| c["occasion"] == "termination").unwrap();
    assert_eq!(
        items(leaving),
        [
            ("Exit interview".into(), "2026-03-28".into(), false, false),
            ("Collect the laptop".into(), "2026-03-31".into(), false, false),
        ]
    );
}
