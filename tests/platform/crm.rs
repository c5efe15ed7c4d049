//! The CRM support desk over HTTP with the compiled plugin: email in (multipart with an
//! attachment), threading, duplicate deliveries, replies through the outbox, the timeline
//! with its field changes, and SLAs in a team's business hours that pause while waiting on
//! the customer, on the moved clock.

use keel_tests::TestServer;
use serde_json::{Value, json};

const CRM: &str = "/v1/plugins/crm";

fn utc(text: &str) -> i64 {
    text.parse::<jiff::Timestamp>().unwrap().as_millisecond()
}

async fn desk_at(at: Option<i64>) -> TestServer {
    let s = match at {
        Some(at) => TestServer::start_with(|c| c.frozen_clock_at = Some(at)).await,
        None => TestServer::start().await,
    };
    s.install("bundled/crm").await.expect(201);
    s
}

async fn inbound(s: &TestServer, raw: &str) -> keel_tests::Reply {
    s.post_raw(&format!("{CRM}/inbound/email"), Some("message/rfc822"), raw.as_bytes().to_vec()).await
}

async fn timeline(s: &TestServer, case: i64) -> Vec<Value> {
    let page = s.get(&format!("{CRM}/cases/{case}/timeline?limit=100")).await.expect(200).body;
    page["items"].as_array().unwrap().clone()
}

const FIRST: &str = "From: \"Ana Souza\" <Ana@Example.com>\r\n\
To: support@acme.test\r\n\
Subject: =?UTF-8?B?UHJvYmzDqG1lIGRlIGZhY3R1cmU=?=\r\n\
Message-ID: <abc123@mail.example.com>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"XYZ\"\r\n\
\r\n\
--XYZ\r\n\
Content-Type: text/plain; charset=ISO-8859-1\r\n\
Content-Transfer-Encoding: quoted-printable\r\n\
\r\n\
Ma facture est fausse, voir la pi=E8ce jointe.\r\n\
--XYZ\r\n\
Content-Type: application/pdf; name=\"invoice-42.pdf\"\r\n\
Content-Disposition: attachment; filename=\"invoice-42.pdf\"\r\n\
Content-Transfer-Encoding: base64\r\n\
\r\n\
JVBERi0xLjQKJcfsj6IKMSAwIG9iago8PD4+CmVuZG9iagp0cmFpbGVyCjw8Pj4KJSVFT0YK\r\n\
--XYZ--\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_opens_a_case_replies_thread_onto_it_and_a_second_delivery_is_one_entry() {
    let s = desk_at(None).await;

    // A multipart message with a PDF opens a case for a new contact.
    let opened = inbound(&s, FIRST).await.expect(201).body;
    assert_eq!((opened["case"].as_i64(), opened["threaded"].as_bool()), (Some(1), Some(false)));
    let case = s.get(&format!("{CRM}/cases/1")).await.expect(200).body;
    assert_eq!(case["subject"], "Problème de facture");
    assert_eq!((case["channel"].as_str(), case["status"].as_str()), (Some("email"), Some("new")));
    assert_eq!(case["description"], "Ma facture est fausse, voir la pièce jointe.");
    let contact = s.get(&format!("{CRM}/contacts/{}", case["contact"])).await.expect(200).body;
    assert_eq!((contact["name"].as_str(), contact["emails"][0].as_str()), (Some("Ana Souza"), Some("ana@example.com")));
    let entries = timeline(&s, 1).await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["kind"], "message_in");
    assert_eq!(
        entries[0]["email"]["attachments"],
        json!([{ "name": "invoice-42.pdf", "content_type": "application/pdf", "size": 54, "content_id": null }])
    );

    // The relay delivers it again: the first delivery's case and entry, nothing new.
    let again = inbound(&s, FIRST).await.expect(200).body;
    assert_eq!(
        (again["case"].as_i64(), again["seq"].as_i64(), again["duplicate"].as_bool()),
        (Some(1), Some(1), Some(true))
    );
    assert_eq!(timeline(&s, 1).await.len(), 1);

    // An agent answers and waits on the customer: the answer goes to the outbox, threaded.
    let reply = s
        .post(
            &format!("{CRM}/cases/1/replies"),
            json!({ "body": "Could you send the order number?",
                                                             "status": "waiting_on_customer" }),
        )
        .await
        .expect(201)
        .body;
    let ours = reply["email"]["message_id"].as_str().unwrap().to_owned();
    // Its id carries 64 random bits: nobody it was not sent to can cite it.
    let token = ours.strip_prefix("case1.2.").and_then(|t| t.strip_suffix("@desk.invalid")).unwrap();
    assert!(token.len() == 16 && token.chars().all(|c| c.is_ascii_hexdigit()), "{ours}");
    assert_eq!(reply["email"]["in_reply_to"], "abc123@mail.example.com");
    let case = s.get(&format!("{CRM}/cases/1")).await.expect(200).body;
    assert_eq!((case["status"].as_str(), case["sla_state"].as_str()), (Some("waiting_on_customer"), Some("paused")));
    assert!(case["sla"]["first_response"]["met_at"].is_i64(), "{case}");
    assert_eq!(case["next_due"], Value::Null, "a paused case has no pending deadline");
    let outbox = s.get(&format!("{CRM}/outbox")).await.expect(200).body;
    let out = &outbox["items"][0];
    assert_eq!(out["subject"], "Re: Problème de facture [#1]");
    assert_eq!((out["to"][0].as_str(), out["state"].as_str()), (Some("ana@example.com"), Some("pending")));
    assert_eq!(out["references"], json!(["abc123@mail.example.com"]));

    // Her out-of-office answer is recorded but is not her answering: still waiting.
    let auto = format!(
        "From: ana@example.com\r\nSubject: Absent\r\nAuto-Submitted: auto-replied\r\nMessage-ID: <oof1@x>\r\n\
         In-Reply-To: <{ours}>\r\n\r\nI am away until Monday.\r\n"
    );
    let recorded = inbound(&s, &auto).await.expect(201).body;
    assert_eq!((recorded["case"].as_i64(), recorded["automatic"].as_bool()), (Some(1), Some(true)));
    assert_eq!(s.get(&format!("{CRM}/cases/1")).await.expect(200).body["status"], "waiting_on_customer");
    // Automatic mail that answers no case opens none.
    let list_mail = "From: news@shop.test\r\nPrecedence: bulk\r\nMessage-ID: <n1@shop.test>\r\n\r\nSale!\r\n";
    assert_eq!(inbound(&s, list_mail).await.expect(202).body["kept"], false);
    let nobody = s.get(&format!("{CRM}/contacts?email=news@shop.test")).await.expect(200).body;
    assert_eq!(nobody["items"], json!([]), "not even a contact is kept");

    // Her real answer cites our message (References only, as some clients send): it threads,
    // and the case is open again with its clock running.
    let answer = format!(
        "From: Ana Souza <ana@example.com>\r\nSubject: Re: Problème de facture [#1]\r\nMessage-ID: <r2@mail.example.com>\r\n\
         References: <abc123@mail.example.com> <{ours}>\r\n\r\nOrder 5521.\r\n"
    );
    let threaded = inbound(&s, &answer).await.expect(201).body;
    assert_eq!((threaded["case"].as_i64(), threaded["threaded"].as_bool()), (Some(1), Some(true)));
    let case = s.get(&format!("{CRM}/cases/1")).await.expect(200).body;
    assert_eq!((case["status"].as_str(), case["sla_state"].as_str()), (Some("open"), Some("on_track")));
    assert!(case["next_due"].is_i64());
    // A later reply answers her latest message.
    let second = s.post(&format!("{CRM}/cases/1/replies"), json!({ "body": "Fixed." })).await.expect(201).body;
    assert_eq!(second["email"]["in_reply_to"], "r2@mail.example.com");
    assert_eq!(second["email"]["references"].as_array().unwrap().last().unwrap(), "r2@mail.example.com");

    // The case tag threads a message from the same sender with no threading headers; from a
    // stranger it opens a case of their own.
    let tagged = "From: ana@example.com\r\nSubject: one more thing [#1]\r\nMessage-ID: <r3@x>\r\n\r\nAlso...\r\n";
    assert_eq!(inbound(&s, tagged).await.expect(201).body["case"], 1);
    let entries_before = timeline(&s, 1).await.len();
    let stranger = "From: eve@elsewhere.test\r\nSubject: Re: [#1]\r\nMessage-ID: <e1@x>\r\n\r\nLet me in\r\n";
    let theirs = inbound(&s, stranger).await.expect(201).body;
    assert_eq!((theirs["case"].as_i64(), theirs["threaded"].as_bool()), (Some(2), Some(false)));
    // Citing her message id does not make a stranger part of her case either.
    let cited = "From: eve@elsewhere.test\r\nSubject: hi\r\nMessage-ID: <e2@x>\r\nIn-Reply-To: <r2@mail.example.com>\r\n\r\nx\r\n";
    let theirs = inbound(&s, cited).await.expect(201).body;
    assert_eq!((theirs["case"].as_i64(), theirs["threaded"].as_bool()), (Some(3), Some(false)));
    assert_eq!(timeline(&s, 1).await.len(), entries_before, "her case got nothing from the stranger");

    // What is not mail is refused, and nothing is written.
    let refused = inbound(&s, "%PDF-1.4 \u{1}\u{2} not mail").await.expect_problem(422, "not-an-email");
    assert!(refused.body["detail"].is_string());
    inbound(&s, "Subject: hi\r\n\r\nno sender\r\n").await.expect_problem(422, "not-an-email");
    assert_eq!(s.get(&format!("{CRM}/cases")).await.expect(200).body["items"].as_array().unwrap().len(), 3);

    // The relay acknowledges what it sent.
    s.post(&format!("{CRM}/outbox/1/sent"), json!({})).await.expect(200);
    let pending = s.get(&format!("{CRM}/outbox")).await.expect(200).body;
    assert_eq!(pending["items"].as_array().unwrap().len(), 1, "the second reply is still pending");
    assert_eq!(s.get(&format!("{CRM}/outbox?state=sent")).await.expect(200).body["items"][0]["id"], 1);

    // Only the mail relay's permission may post mail or read the outbox.
    let viewer = s.token_for("default", "member").await;
    s.put("/v1/tenants/default/roles/member/permissions", json!({ "permissions": ["crm.view", "crm.agent"] }))
        .await
        .expect(200);
    s.as_token(Some(&viewer), reqwest::Method::GET, &format!("{CRM}/outbox"), None)
        .await
        .expect_problem(403, "forbidden");
    let forged = s
        .send(
            reqwest::Client::new()
                .post(format!("{}{CRM}/inbound/email", s.base))
                .bearer_auth(&viewer)
                .body(FIRST.replace("abc123", "forged")),
        )
        .await;
    forged.expect_problem(403, "forbidden");

    // A closed case is followed up once: later mail about it joins the follow-up.
    s.patch(&format!("{CRM}/cases/1"), json!({ "status": "resolved" })).await.expect(200);
    s.patch(&format!("{CRM}/cases/1"), json!({ "status": "closed" })).await.expect(200);
    let about_closed = |id: &str| {
        format!(
            "From: ana@example.com\r\nSubject: Re: again\r\nMessage-ID: <{id}@x>\r\nIn-Reply-To: <{ours}>\r\n\r\nAgain.\r\n"
        )
    };
    let follow_up = inbound(&s, &about_closed("f1")).await.expect(201).body;
    assert_eq!(follow_up["threaded"], false);
    let number = follow_up["case"].as_i64().unwrap();
    assert_eq!(s.get(&format!("{CRM}/cases/{number}")).await.expect(200).body["follow_up_of"], 1);
    let joined = inbound(&s, &about_closed("f2")).await.expect(201).body;
    assert_eq!((joined["case"].as_i64(), joined["threaded"].as_bool()), (Some(number), Some(true)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timeline_keeps_every_change_in_order_and_followers_hear_of_it() {
    let s = desk_at(None).await;
    let acme = s.post(&format!("{CRM}/customers"), json!({ "name": "Acme", "tier": "premium" })).await.expect(201).body;
    let contact = s
        .post(
            &format!("{CRM}/contacts"),
            json!({ "name": "Bo", "emails": ["bo@acme.test"], "phones": ["+49 30 1234"], "customer": acme["id"] }),
        )
        .await
        .expect(201)
        .body;
    // An address belongs to one contact.
    s.post(&format!("{CRM}/contacts"), json!({ "name": "Bo again", "emails": ["BO@acme.test"] }))
        .await
        .expect_problem(409, "email-taken");
    let found = s.get(&format!("{CRM}/contacts?email=bo@acme.test")).await.expect(200).body;
    assert_eq!(found["items"][0]["id"], contact["id"]);

    // A phone case for a premium customer: premium high is 2 h / 8 h.
    let case = s
        .post(
            &format!("{CRM}/cases"),
            json!({ "subject": "Cannot log in", "contact": contact["id"], "priority": "high" }),
        )
        .await
        .expect(201)
        .body;
    assert_eq!((case["channel"].as_str(), case["tier"].as_str()), (Some("phone"), Some("premium")));
    assert_eq!(case["customer"], acme["id"]);
    let created = case["created_at"].as_i64().unwrap();
    assert_eq!(case["sla"]["first_response"]["due"].as_i64(), Some(created + 2 * 3_600_000));
    let n = case["number"].as_i64().unwrap();
    let path = format!("{CRM}/cases/{n}");
    // Waiting on the customer takes having asked them something; a subject is one line.
    s.patch(&path, json!({ "status": "waiting_on_customer" })).await.expect_problem(409, "first-response-pending");
    s.patch(&path, json!({ "subject": "Login\r\nBcc: eve@x.test" })).await.expect_problem(422, "invalid-field");

    s.put(&format!("{path}/followers/carla"), json!({})).await.expect(200);
    let changed = s
        .patch(&path, json!({ "priority": "urgent", "assignee": "dana", "tags": ["Login", "sso"], "version": 2 }))
        .await
        .expect(200)
        .body;
    // Premium urgent: 30 min first response, re-planned from creation.
    assert_eq!(changed["sla"]["first_response"]["due"].as_i64(), Some(created + 30 * 60_000));
    s.post(&format!("{path}/notes"), json!({ "body": "Checked the SSO logs" })).await.expect(201);
    s.post(&format!("{path}/notes"), json!({ "body": "Called Bo back", "kind": "call" })).await.expect(201);
    s.post(&format!("{path}/replies"), json!({ "body": "Reset your password, please" })).await.expect(201);
    // A stale version is refused; an unchanged field writes nothing.
    s.patch(&path, json!({ "subject": "Other", "version": 1 })).await.expect_problem(409, "version-conflict");
    let same = s.patch(&path, json!({ "assignee": "dana" })).await.expect(200).body;
    assert_eq!(same["entries"], 7);

    let entries = timeline(&s, n).await;
    let kinds: Vec<&str> = entries.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["field_change", "field_change", "field_change", "note", "call", "message_out", "field_change"],
        "{entries:?}"
    );
    let changes: Vec<(&str, Value, Value)> = entries
        .iter()
        .filter_map(|e| e.get("change"))
        .map(|c| (c["field"].as_str().unwrap(), c["from"].clone(), c["to"].clone()))
        .collect();
    assert_eq!(
        changes,
        [
            ("assignee", Value::Null, json!("dana")),
            ("priority", json!("high"), json!("urgent")),
            ("tags", json!([]), json!(["login", "sso"])),
            ("status", json!("new"), json!("open")),
        ]
    );
    let seqs: Vec<i64> = entries.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5, 6, 7]);
    assert!(entries.windows(2).all(|w| w[0]["at"].as_i64() <= w[1]["at"].as_i64()));
    // Every entry after the follow told the follower.
    let activity = s.published("crm.case.activity").await;
    assert_eq!(activity.len(), 7);
    assert!(activity.iter().all(|a| a["followers"] == json!(["carla"])));

    // Bad input is a typed error; a resolved then closed case takes no more changes.
    s.patch(&path, json!({ "priority": "P1" })).await.expect_problem(422, "invalid-field");
    s.patch(&path, json!({ "status": "new" })).await.expect_problem(409, "invalid-transition");
    s.patch(&path, json!({ "team": "nobody" })).await.expect_problem(422, "unknown-team");
    s.post(&format!("{CRM}/cases"), json!({ "subject": " ", "contact": contact["id"] }))
        .await
        .expect_problem(422, "invalid-field");
    s.patch(&path, json!({ "status": "resolved" })).await.expect(200);
    let closed = s.patch(&path, json!({ "status": "closed" })).await.expect(200).body;
    assert_eq!((closed["sla_state"].as_str(), closed["next_due"].clone()), (Some("met"), Value::Null));
    s.post(&format!("{path}/notes"), json!({ "body": "late" })).await.expect_problem(409, "case-closed");
    s.get(&format!("{CRM}/cases/99")).await.expect_problem(404, "case-not-found");
}

/// Moves the clock to `at` and waits for the desk's SLA check to run there.
async fn move_to(s: &TestServer, at: i64) {
    s.move_clock_to_and_run(at, "crm", "sla-check").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cases_sla_runs_in_its_teams_hours_pauses_while_waiting_and_warns_then_breaches_once() {
    // Friday 2025-12-19 16:30 in Berlin; Monday the 22nd is the team's holiday.
    let s = desk_at(Some(utc("2025-12-19T15:30:00Z"))).await;
    let day = json!(["09:00-17:00"]);
    let calendar = json!({ "time_zone": "Europe/Berlin", "holidays": ["2025-12-22"],
        "hours": { "mon": day, "tue": day, "wed": day, "thu": day, "fri": day } });
    let team = s.put(&format!("{CRM}/teams/billing"), json!({ "name": "Billing", "calendar": calendar })).await;
    assert_eq!(team.expect(201).body["calendar"]["time_zone"], "Europe/Berlin");
    let bad = json!({ "name": "X", "calendar": { "time_zone": "Mars/Base", "hours": { "mon": day } } });
    s.put(&format!("{CRM}/teams/x"), bad).await.expect_problem(422, "invalid-calendar");

    // Standard urgent: 1 h / 8 h. 30 minutes on Friday, then from Tuesday 09:00 CET.
    let case = s
        .post(
            &format!("{CRM}/cases"),
            json!({ "subject": "Double charge", "contact_email": "cy@shop.test", "priority": "urgent",
                    "team": "billing" }),
        )
        .await
        .expect(201)
        .body;
    assert_eq!(case["sla"]["first_response"]["due"].as_i64(), Some(utc("2025-12-23T08:30:00Z")));
    assert_eq!(case["sla"]["resolution"]["due"].as_i64(), Some(utc("2025-12-23T15:30:00Z")));
    assert_eq!(case["next_due"].as_i64(), Some(utc("2025-12-23T08:30:00Z")));
    s.eventually("/v1/tenants/default/schedules", "the SLA check to be scheduled", |b| {
        b["items"].as_array().is_some_and(|i| i.iter().any(|s| s["plugin"] == "crm" && s["name"] == "sla-check"))
    })
    .await;

    // The weekend and the holiday pass quietly. Tuesday 09:10 the agent answers and waits.
    move_to(&s, utc("2025-12-23T08:10:00Z")).await;
    assert!(s.published("crm.case.sla_warning").await.is_empty());
    s.post(&format!("{CRM}/cases/1/replies"), json!({ "body": "Which card?", "status": "waiting_on_customer" }))
        .await
        .expect(201);
    let by_due = s.get(&format!("{CRM}/cases?sort=next_due")).await.expect(200).body;
    assert!(by_due["items"].as_array().unwrap().is_empty(), "a paused case has no deadline to sort by");

    // Hours pass while it waits; at 14:00 CET the customer answers by email.
    move_to(&s, utc("2025-12-23T13:00:00Z")).await;
    assert!(s.published("crm.case.sla_warning").await.is_empty());
    let answer =
        "From: cy@shop.test\r\nSubject: Re: Double charge [#1]\r\nMessage-ID: <cy1@shop.test>\r\n\r\nVisa.\r\n";
    assert_eq!(inbound(&s, answer).await.expect(201).body["threaded"], true);
    // 40 minutes used, 440 left: 180 on Tuesday and 260 from Wednesday 09:00 (13:20 CET).
    let resumed = s.get(&format!("{CRM}/cases/1")).await.expect(200).body;
    assert_eq!(resumed["status"], "open");
    assert_eq!(resumed["sla"]["resolution"]["due"].as_i64(), Some(utc("2025-12-24T12:20:00Z")));
    assert_eq!(resumed["sla"]["resolution"]["warn_at"].as_i64(), Some(utc("2025-12-24T10:44:00Z")));
    let by_due = s.get(&format!("{CRM}/cases?sort=next_due&team=billing")).await.expect(200).body;
    assert_eq!(by_due["items"][0]["number"], 1);

    // The warning at 80 % (11:44 CET), then the breach (13:20 CET): each published once.
    move_to(&s, utc("2025-12-24T10:45:00Z")).await;
    let warnings = s.published("crm.case.sla_warning").await;
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!((warnings[0]["case"].as_i64(), warnings[0]["target"].as_str()), (Some(1), Some("resolution")));
    assert!(s.published("crm.case.sla_breached").await.is_empty());
    move_to(&s, utc("2025-12-24T12:21:00Z")).await;
    for minute in [2, 4] {
        move_to(&s, utc("2025-12-24T12:21:00Z") + minute * 60_000).await;
    }
    let breaches = s.published("crm.case.sla_breached").await;
    assert_eq!(breaches.len(), 1, "{breaches:?}");
    assert_eq!(breaches[0]["due_at"].as_i64(), Some(utc("2025-12-24T12:20:00Z")));
    assert_eq!(s.published("crm.case.sla_warning").await.len(), 1);
    let breached = s.get(&format!("{CRM}/cases/1")).await.expect(200).body;
    assert_eq!((breached["sla_state"].as_str(), breached["next_due"].clone()), (Some("breached"), Value::Null));

    // The report: one first response after 40 business minutes, one resolution missed.
    let report = s.get(&format!("{CRM}/reports/sla?from=2025-12-19&to=2025-12-31&by=team")).await.expect(200).body;
    assert_eq!(
        report["items"],
        json!([{ "team": "billing", "first_responses": 1, "avg_first_response_minutes": 40.0,
                 "first_response_breaches": 0, "resolutions": 0, "avg_resolution_minutes": null,
                 "resolution_breaches": 1 }])
    );
    let by_tier = s.get(&format!("{CRM}/reports/sla?from=2025-12-19&to=2025-12-31&by=tier")).await.expect(200).body;
    assert_eq!(by_tier["items"][0]["tier"], "standard");
    let before = s.get(&format!("{CRM}/reports/sla?from=2025-12-01&to=2025-12-22&by=team")).await.expect(200).body;
    assert_eq!(before["items"], json!([]), "nothing was met or missed before Tuesday");
    s.get(&format!("{CRM}/reports/sla?from=2025-12-31&to=2025-12-01")).await.expect_problem(422, "invalid-period");
    s.get(&format!("{CRM}/reports/sla?from=2025-12-01&to=2025-12-31&by=moon"))
        .await
        .expect_problem(422, "invalid-field");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_of_the_mail_corpus_is_ingested_and_what_is_not_mail_is_refused() {
    let s = desk_at(None).await;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/crm/tests/corpus");
    let expected: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let mut opened = 0;
    for (name, want) in expected.as_object().unwrap() {
        let raw = std::fs::read(dir.join(name)).unwrap();
        let reply = s.post_raw(&format!("{CRM}/inbound/email"), Some("message/rfc822"), raw).await;
        if want["error"] == true {
            reply.expect_problem(422, "not-an-email");
            continue;
        }
        // Automatic mail that answers no case is not kept (202); everything else opens or
        // joins a case.
        let status = if want["automatic"] == true { 202 } else { 201 };
        let body = reply.expect(status).body;
        if status == 201 {
            opened += 1;
            let entries = timeline(&s, body["case"].as_i64().unwrap()).await;
            let entry = entries.iter().find(|e| e["seq"] == body["seq"]).unwrap();
            assert!(entry["body"].as_str().unwrap().contains(want["text"].as_str().unwrap()), "{name}: {entry}");
        }
    }
    assert!(opened >= 19, "{opened}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_merge_into_one_keeping_every_case_email_and_timeline_entry() {
    let s = desk_at(None).await;
    let acme = s.post(&format!("{CRM}/customers"), json!({ "name": "Acme", "tier": "premium" })).await.expect(201).body;
    let acme_dup = s.post(&format!("{CRM}/customers"), json!({ "name": "ACME Inc" })).await.expect(201).body;
    let ana = s
        .post(&format!("{CRM}/contacts"), json!({ "name": "Ana", "emails": ["ana@acme.test"], "customer": acme["id"] }))
        .await
        .expect(201)
        .body;
    // The same person wrote from her private address: a second contact with two cases.
    inbound(&s, "From: Ana S <ana.s@home.test>\r\nSubject: one\r\nMessage-ID: <h1@home.test>\r\n\r\nfirst\r\n")
        .await
        .expect(201);
    inbound(&s, "From: ana.s@home.test\r\nSubject: two\r\nMessage-ID: <h2@home.test>\r\n\r\nsecond\r\n")
        .await
        .expect(201);
    let dup = s.get(&format!("{CRM}/contacts?email=ana.s@home.test")).await.expect(200).body["items"][0].clone();
    s.patch(&format!("{CRM}/contacts/{}", dup["id"]), json!({ "customer": acme_dup["id"], "phones": ["+1 555 0100"] }))
        .await
        .expect(200);
    let case_of_dup = s.get(&format!("{CRM}/cases?contact={}", dup["id"])).await.expect(200).body;
    assert_eq!(case_of_dup["items"].as_array().unwrap().len(), 2);
    let entries_before = timeline(&s, 1).await.len();

    // Merge the contact into Ana: her cases, addresses and phone move; each case says so.
    let merged =
        s.post(&format!("{CRM}/contacts/{}/merge", dup["id"]), json!({ "into": ana["id"] })).await.expect(200).body;
    assert_eq!(merged["cases_moved"], 2);
    assert_eq!(merged["survivor"]["emails"], json!(["ana@acme.test", "ana.s@home.test"]));
    assert_eq!(merged["survivor"]["phones"], json!(["+1 555 0100"]));
    let moved = s.get(&format!("{CRM}/cases?contact={}", ana["id"])).await.expect(200).body;
    assert_eq!(moved["items"].as_array().unwrap().len(), 2);
    let entries = timeline(&s, 1).await;
    assert_eq!(entries.len(), entries_before + 1, "nothing lost, one entry added");
    assert_eq!(entries.last().unwrap()["change"], json!({ "field": "contact", "from": dup["id"], "to": ana["id"] }));
    let gone = s.get(&format!("{CRM}/contacts/{}", dup["id"])).await.expect(200).body;
    assert_eq!((gone["merged_into"].clone(), gone["emails"].clone()), (ana["id"].clone(), json!([])));
    // Mail from the old address now belongs to Ana, and replies to her old thread thread on.
    let again = "From: ana.s@home.test\r\nSubject: Re: one\r\nMessage-ID: <h3@home.test>\r\nIn-Reply-To: <h1@home.test>\r\n\r\nx\r\n";
    assert_eq!(inbound(&s, again).await.expect(201).body["case"], 1);
    // Merging again, into itself, or into a merged record is refused.
    s.post(&format!("{CRM}/contacts/{}/merge", dup["id"]), json!({ "into": ana["id"] }))
        .await
        .expect_problem(409, "already-merged");
    s.post(&format!("{CRM}/contacts/{}/merge", ana["id"]), json!({ "into": ana["id"] }))
        .await
        .expect_problem(422, "merge-into-itself");

    // Merge the duplicate customer: its cases move to Acme, recorded on their timelines.
    let merged = s
        .post(&format!("{CRM}/customers/{}/merge", acme_dup["id"]), json!({ "into": acme["id"] }))
        .await
        .expect(200)
        .body;
    assert_eq!(merged["task"], Value::Null, "small merges finish inline");
    let of_acme = s.get(&format!("{CRM}/cases?customer={}", acme["id"])).await.expect(200).body;
    assert_eq!(of_acme["items"].as_array().unwrap().len(), 2);
    assert_eq!(s.get(&format!("{CRM}/cases?customer={}", acme_dup["id"])).await.expect(200).body["items"], json!([]));
    // Merged records are not used again: a case for the merged contact is the survivor's,
    // and nobody new can join the merged customer.
    let case =
        s.post(&format!("{CRM}/cases"), json!({ "subject": "later", "contact": dup["id"] })).await.expect(201).body;
    assert_eq!(case["contact"], ana["id"]);
    s.post(&format!("{CRM}/contacts"), json!({ "name": "Late", "customer": acme_dup["id"] }))
        .await
        .expect_problem(409, "customer-merged");
    s.patch(&format!("{CRM}/contacts/{}", dup["id"]), json!({ "name": "x" }))
        .await
        .expect_problem(409, "contact-merged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customers_and_contacts_import_whole_or_not_at_all_and_views_list_what_they_say() {
    let s = desk_at(None).await;
    let customers = "name,tier\nAcme,premium\nGlobex,\nInitech,platinum\n";
    let refused = s
        .post_raw("/v1/imports/crm/customers", Some("text/csv"), customers.into())
        .await
        .expect_problem(422, "import-rejected");
    assert_eq!(refused.body["problems"][0]["line"], 4);
    assert_eq!(refused.body["problems"][0]["field"], "tier");
    assert_eq!(s.get(&format!("{CRM}/customers")).await.expect(200).body["items"], json!([]), "nothing partial");
    let fixed = customers.replace("platinum", "enterprise");
    s.post_raw("/v1/imports/crm/customers", Some("text/csv"), fixed.clone().into()).await.expect(200);
    assert_eq!(s.get(&format!("{CRM}/customers")).await.expect(200).body["items"].as_array().unwrap().len(), 3);
    // The same file again adds nothing: every name exists.
    let again = s.post_raw("/v1/imports/crm/customers", Some("text/csv"), fixed.into()).await;
    assert_eq!(again.expect_problem(422, "import-rejected").body["problems_total"], 3);

    let contacts = "name,emails,phones,customer\n\
                    Ana,ana@acme.test; a.souza@acme.test,+49 30 1,acme\n\
                    Bo,bo@globex.test,,Globex\n\
                    Cy,ana@acme.test,,\n\
                    Di,di@x.test,,Umbrella\n\
                    Ed,not-an-address,,\n";
    let refused = s
        .post_raw("/v1/imports/crm/contacts", Some("text/csv"), contacts.into())
        .await
        .expect_problem(422, "import-rejected");
    let problems: Vec<(i64, String)> = refused.body["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["line"].as_i64().unwrap(), p["field"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(problems, [(4, "emails".into()), (5, "customer".into()), (6, "emails".into())]);
    let good =
        "name,emails,phones,customer\nAna,ana@acme.test; a.souza@acme.test,+49 30 1,acme\nBo,bo@globex.test,,Globex\n";
    s.post_raw("/v1/imports/crm/contacts", Some("text/csv"), good.into()).await.expect(200);
    let ana = s.get(&format!("{CRM}/contacts?email=a.souza@acme.test")).await.expect(200).body["items"][0].clone();
    assert_eq!(ana["emails"], json!(["ana@acme.test", "a.souza@acme.test"]));
    let acme = s.get(&format!("{CRM}/customers/{}", ana["customer"])).await.expect(200).body;
    assert_eq!((acme["name"].as_str(), acme["tier"].as_str()), (Some("Acme"), Some("premium")));

    // Views: my open cases, unassigned, a customer's open cases.
    let me = "one".to_owned();
    for (subject, assignee) in [("a", Some(&me)), ("b", None), ("c", Some(&me))] {
        let mut body = json!({ "subject": subject, "contact": ana["id"] });
        if let Some(a) = assignee {
            body["assignee"] = json!(a);
        }
        s.post(&format!("{CRM}/cases"), body).await.expect(201);
    }
    s.patch(&format!("{CRM}/cases/3"), json!({ "status": "resolved" })).await.expect(200);
    let numbers = |b: Value| -> Vec<i64> {
        b["items"].as_array().unwrap().iter().map(|c| c["number"].as_i64().unwrap()).collect()
    };
    let mine = s.get(&format!("{CRM}/cases?assignee=one&open=true")).await.expect(200).body;
    assert_eq!(numbers(mine), [1]);
    assert_eq!(numbers(s.get(&format!("{CRM}/cases?unassigned=true")).await.expect(200).body), [2]);
    let customers_open = s.get(&format!("{CRM}/cases?customer={}&open=true", acme["id"])).await.expect(200).body;
    assert_eq!(numbers(customers_open), [2, 1]);
    s.get(&format!("{CRM}/cases?open=yes")).await.expect_problem(422, "invalid-field");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_macro_replies_and_sets_fields_in_one_step() {
    let s = desk_at(None).await;
    inbound(&s, "From: Cy <cy@shop.test>\r\nSubject: Where is my parcel\r\nMessage-ID: <p1@shop.test>\r\n\r\n?\r\n")
        .await
        .expect(201);
    let ask = s
        .post(
            &format!("{CRM}/macros"),
            json!({ "name": "Ask for the order number",
                    "body": "Hello {{contact.name}}, which order is case {{case.number}} about? {{agent}}",
                    "status": "waiting_on_customer", "priority": "high", "assignee": "me",
                    "add_tags": ["needs-info"] }),
        )
        .await
        .expect(201)
        .body;
    s.post(&format!("{CRM}/macros"), json!({ "name": "Bad", "body": "Hi {{contact.email}}" }))
        .await
        .expect_problem(422, "invalid-field");
    s.post(&format!("{CRM}/macros"), json!({ "name": "Nothing" })).await.expect_problem(422, "empty-macro");

    let case = s.post(&format!("{CRM}/cases/1/macros/{}", ask["id"]), json!({})).await.expect(200).body;
    assert_eq!((case["status"].as_str(), case["priority"].as_str()), (Some("waiting_on_customer"), Some("high")));
    assert_eq!(case["tags"], json!(["needs-info"]));
    let agent = case["assignee"].as_str().unwrap().to_owned();
    let entries = timeline(&s, 1).await;
    let reply = entries.iter().find(|e| e["kind"] == "message_out").unwrap();
    assert_eq!(reply["body"], format!("Hello Cy, which order is case 1 about? {agent}"));
    let changed: Vec<&str> =
        entries.iter().filter_map(|e| e.get("change")).map(|c| c["field"].as_str().unwrap()).collect();
    assert_eq!(changed, ["status", "assignee", "priority", "tags"]);
    let outbox = s.get(&format!("{CRM}/outbox")).await.expect(200).body;
    assert_eq!(outbox["items"][0]["to"], json!(["cy@shop.test"]));
    s.post(&format!("{CRM}/cases/1/macros/99"), json!({})).await.expect_problem(404, "macro-not-found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_case_escalates_into_an_it_ticket_hears_when_it_is_resolved_and_is_untouched_without_a_helpdesk() {
    let s = desk_at(None).await;
    s.install("bundled/helpdesk").await.expect(201);
    inbound(&s, "From: cy@shop.test\r\nSubject: Invoices bounce\r\nMessage-ID: <i1@shop.test>\r\n\r\nYour mail server rejects them.\r\n")
        .await
        .expect(201);

    // The helpdesk's own rules apply: a priority it does not know is its 422.
    s.post(&format!("{CRM}/cases/1/escalate"), json!({ "priority": "P9" })).await.expect_problem(422, "invalid-field");
    let escalated = s.post(&format!("{CRM}/cases/1/escalate"), json!({ "priority": "P2" })).await.expect(201).body;
    let it = escalated["ticket"]["number"].as_i64().unwrap();
    assert_eq!(escalated["ticket"]["link"], "crm:case:1");
    assert_eq!(s.get(&format!("{CRM}/cases/1")).await.expect(200).body["escalations"], json!([it]));
    // The link shows on the IT side too.
    let ticket = s.get(&format!("/v1/plugins/helpdesk/tickets/{it}")).await.expect(200).body;
    assert_eq!((ticket["link"].as_str(), ticket["priority"].as_str()), (Some("crm:case:1"), Some("P2")));
    assert_eq!(ticket["title"], "Invoices bounce");
    assert!(ticket["description"].as_str().unwrap().contains("Your mail server rejects them."));

    // IT resolves it: the case's timeline says so.
    s.post(&format!("/v1/plugins/helpdesk/tickets/{it}/transition"), json!({ "to": "open" })).await.expect(200);
    s.post(&format!("/v1/plugins/helpdesk/tickets/{it}/transition"), json!({ "to": "resolved" })).await.expect(200);
    let entries = s
        .eventually(&format!("{CRM}/cases/1/timeline"), "the resolution on the case's timeline", |b| {
            b["items"]
                .as_array()
                .is_some_and(|i| i.iter().any(|e| e["body"] == format!("IT ticket #{it} was resolved")))
        })
        .await;
    let kinds: Vec<&str> = entries["items"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["message_in", "escalation", "escalation"]);

    // With the helpdesk disabled, escalating is a clear 503 and the case is unchanged.
    s.post_empty("/v1/tenants/default/plugins/helpdesk/disable?force=true").await.expect(200);
    let before = s.get(&format!("{CRM}/cases/1")).await.expect(200).body;
    s.post(&format!("{CRM}/cases/1/escalate"), json!({})).await.expect_problem(503, "department-unavailable");
    let after = s.get(&format!("{CRM}/cases/1")).await.expect(200).body;
    assert_eq!(after, before);
}

/// POSTs `body` with no token at all.
async fn public_post(s: &TestServer, path: &str, body: Value) -> keel_tests::Reply {
    s.send(reqwest::Client::new().post(format!("{}{path}", s.base)).json(&body)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customers_open_cases_by_the_public_web_form_rate_limited_and_rate_resolved_cases_once() {
    let s = desk_at(None).await;
    let form = "/v1/public/default/crm/forms/case";
    let filled = json!({ "email": "Dee@Example.org", "name": "Dee", "subject": "Cannot pay", "message": "The card form hangs." });
    let opened = public_post(&s, form, filled.clone()).await.expect(201).body;
    assert_eq!(opened, json!({ "received": true }), "no case number: it would tell the desk's volume");
    let number = 1;
    let case = s.get(&format!("{CRM}/cases/{number}")).await.expect(200).body;
    assert_eq!((case["channel"].as_str(), case["subject"].as_str()), (Some("web"), Some("Cannot pay")));
    let entries = timeline(&s, number).await;
    assert_eq!((entries[0]["kind"].as_str(), entries[0]["by"].as_str()), (Some("message_in"), Some("dee@example.org")));
    // An HTML form's urlencoded body works too.
    let html = s
        .send(
            reqwest::Client::new()
                .post(format!("{}{form}", s.base))
                .header("content-type", "application/x-www-form-urlencoded")
                .body("email=dee%40example.org&subject=Again&message=Still+hangs"),
        )
        .await;
    assert_eq!(html.expect(201).body["received"], true);
    // Validated: a bad address, a subject with a line break. A bot's honeypot keeps nothing.
    let mut bad = filled.clone();
    bad["email"] = json!("dee at example");
    public_post(&s, form, bad).await.expect_problem(422, "invalid-field");
    let mut bot = filled.clone();
    bot["website"] = json!("http://spam.test");
    // Five requests a minute per address and tenant (a burst of 5, then one each 6 s).
    assert_eq!(public_post(&s, form, bot).await.expect(201).body, json!({ "received": true }));
    public_post(&s, form, filled.clone()).await.expect(201);
    let limited = public_post(&s, form, filled.clone()).await.expect_problem(429, "rate-limited");
    assert_eq!(limited.headers.get("retry-after").and_then(|v| v.to_str().ok()), Some("6"));
    assert_eq!(s.get(&format!("{CRM}/cases")).await.expect(200).body["items"].as_array().unwrap().len(), 3);
    s.advance_clock(6_000).await;
    public_post(&s, form, filled.clone()).await.expect(201);

    // Only public routes are reachable this way, and only of tenants that enabled the plugin.
    s.advance_clock(6_000).await;
    public_post(&s, "/v1/public/default/crm/cases", json!({ "subject": "x", "contact": 1 }))
        .await
        .expect_problem(404, "route-not-found");
    public_post(&s, "/v1/public/nowhere/crm/forms/case", filled.clone()).await.expect_problem(404, "route-not-found");
    s.tenant_with_token("acme", "tenant-admin").await;
    public_post(&s, "/v1/public/acme/crm/forms/case", filled.clone()).await.expect_problem(404, "route-not-found");

    // The resolving reply carries a rating link; the case keeps only the token's hash.
    s.post(&format!("{CRM}/cases/{number}/replies"), json!({ "body": "Fixed", "status": "resolved" }))
        .await
        .expect(201);
    let outbox = s.get(&format!("{CRM}/outbox")).await.expect(200).body;
    let mail = outbox["items"].as_array().unwrap().last().unwrap()["body"].as_str().unwrap().to_owned();
    let link = mail.split("Rate this case: ").nth(1).unwrap().trim().to_owned();
    let token = link.rsplit('/').next().unwrap().to_owned();
    assert_eq!((token.len(), link.as_str()), (32, format!("/v1/public/default/crm/ratings/{token}").as_str()));
    let resolved = s.get(&format!("{CRM}/cases/{number}")).await.expect(200).body;
    assert!(!resolved.to_string().contains(&token), "the token is only in the mail");
    let entries = s.get(&format!("{CRM}/cases/{number}/timeline")).await.expect(200).body;
    assert!(!entries.to_string().contains(&token), "not on the timeline either");
    // Web-form cases are served at the standard tier and tagged.
    assert_eq!((resolved["tier"].as_str(), resolved["tags"][0].as_str()), (Some("standard"), Some("web-form")));
    s.advance_clock(60_000).await;
    let shown = s.send(reqwest::Client::new().get(format!("{}{link}", s.base))).await.expect(200).body;
    assert_eq!((shown["subject"].as_str(), shown["score"].clone()), (Some("Cannot pay"), Value::Null));
    public_post(&s, &link, json!({ "score": 9 })).await.expect_problem(422, "invalid-field");
    public_post(&s, &link, json!({ "score": 4, "comment": "Quick, thanks" })).await.expect(200);
    s.advance_clock(60_000).await;
    public_post(&s, &link, json!({ "score": 1 })).await.expect_problem(409, "already-rated");
    let rated = s.get(&format!("{CRM}/cases/{number}")).await.expect(200).body;
    assert_eq!(
        (rated["satisfaction"]["score"].as_i64(), rated["satisfaction"]["comment"].as_str()),
        (Some(4), Some("Quick, thanks"))
    );
    assert_eq!(timeline(&s, number).await.last().unwrap()["body"], "Rated 4/5: Quick, thanks");
    public_post(&s, "/v1/public/default/crm/ratings/00000000000000000000000000000000", json!({ "score": 3 }))
        .await
        .expect_problem(404, "rating-not-found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_message_delivered_concurrently_makes_one_case_and_one_entry() {
    let s = desk_at(None).await;
    let raw = "From: Flo <flo@racing.test>\r\nSubject: Twice\r\nMessage-ID: <race1@racing.test>\r\n\r\nOnce.\r\n";
    let replies = futures::future::join_all((0..8).map(|_| inbound(&s, raw))).await;
    let mut statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    statuses.sort();
    // The losers of the race are run again by the host and find the first delivery (the
    // desk calls another department only when escalating, so its deliveries repeat).
    assert_eq!(
        statuses,
        [200, 200, 200, 200, 200, 200, 200, 201],
        "{:?}",
        replies.iter().map(|r| &r.body).collect::<Vec<_>>()
    );
    // (Runs that lost took case numbers of their own: a sequence gives none back.)
    let number = replies[0].body["case"].as_i64().unwrap();
    assert!(replies.iter().all(|r| r.body["case"] == number));
    assert_eq!(s.get(&format!("{CRM}/cases")).await.expect(200).body["items"].as_array().unwrap().len(), 1);
    assert_eq!(timeline(&s, number).await.len(), 1);
    let contacts = s.get(&format!("{CRM}/contacts")).await.expect(200).body;
    assert_eq!(contacts["items"].as_array().unwrap().len(), 1, "one contact for the new sender");
}

/// A search as the default tenant's admin, or as the holder of `token`.
async fn search(s: &TestServer, token: Option<&str>, path: &str) -> Value {
    match token {
        Some(token) => s.as_token(Some(token), reqwest::Method::GET, &format!("{CRM}{path}"), None).await,
        None => s.get(&format!("{CRM}{path}")).await,
    }
    .expect(200)
    .body
}

fn numbers(hits: &Value) -> Vec<i64> {
    hits.as_array().unwrap().iter().map(|h| h["number"].as_i64().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_finds_cases_by_their_messages_and_notes_and_people_by_name_in_the_tenant_only() {
    let s = desk_at(None).await;
    let acme = s.post(&format!("{CRM}/customers"), json!({ "name": "Zentralwerk GmbH" })).await.expect(201).body;
    s.post(
        &format!("{CRM}/contacts"),
        json!({ "name": "Jürgen Brandt", "emails": ["j.brandt@zentralwerk.test"], "customer": acme["id"] }),
    )
    .await
    .expect(201);
    // Case 1: the words are in a later message only. Case 2: in its subject. Case 3: in a note.
    inbound(&s, "From: j.brandt@zentralwerk.test\r\nSubject: Hello\r\nMessage-ID: <z1@zw.test>\r\n\r\nOur machine is broken.\r\n")
        .await
        .expect(201);
    let reply = "From: j.brandt@zentralwerk.test\r\nSubject: Re: Hello\r\nMessage-ID: <z1b@zw.test>\r\n\
                 In-Reply-To: <z1@zw.test>\r\n\r\nMore precisely: our flux capacitor overheats since Monday.\r\n";
    assert_eq!(inbound(&s, reply).await.expect(201).body["case"], 1);
    inbound(
        &s,
        "From: other@customer.test\r\nSubject: Flux capacitor recall\r\nMessage-ID: <z2@zw.test>\r\n\r\nAny news?\r\n",
    )
    .await
    .expect(201);
    s.post(&format!("{CRM}/cases"), json!({ "subject": "Billing", "contact": 1 })).await.expect(201);
    s.post(&format!("{CRM}/cases/3/notes"), json!({ "body": "Customer mentioned the capacitor on the phone" }))
        .await
        .expect(201);

    // The search box: the case whose subject matches first, then those whose timeline does.
    // (bm25 ranks the two timeline matches by their length: which comes first is its call.)
    let found = search(&s, None, "/search?q=capacitor").await;
    let order = numbers(&found["cases"]);
    assert_eq!(order[0], 2, "{found}");
    assert_eq!(found["cases"][0]["matched_in"], "case");
    let hit = |number: i64| found["cases"].as_array().unwrap().iter().find(|c| c["number"] == number).unwrap().clone();
    assert_eq!(
        (hit(1)["matched_in"].as_str(), hit(1)["entry"]["kind"].as_str()),
        (Some("timeline"), Some("message_in"))
    );
    assert!(hit(1)["entry"]["excerpt"].as_str().unwrap().contains("flux capacitor overheats"));
    assert_eq!(hit(3)["entry"]["kind"], "note");
    assert_eq!(order.len(), 3);
    // People by name, accents folded, and by a part of an address; customers by name.
    let people = search(&s, None, "/search?q=jurgen").await;
    assert_eq!(people["contacts"][0]["name"], "Jürgen Brandt");
    assert_eq!(search(&s, None, "/contacts?q=zentralwerk").await["items"][0]["name"], "Jürgen Brandt");
    assert_eq!(search(&s, None, "/customers?q=zentral*").await["items"][0]["name"], "Zentralwerk GmbH");
    // Words must all occur; a phrase keeps its order; list filters still apply.
    assert_eq!(numbers(&search(&s, None, "/search?q=flux%20monday").await["cases"]), [1]);
    assert!(search(&s, None, "/search?q=%22capacitor%20flux%22").await["cases"].as_array().unwrap().is_empty());
    assert_eq!(numbers(&search(&s, None, "/cases?q=capacitor").await["items"]), [2]);
    assert!(search(&s, None, "/cases?q=capacitor&status=closed").await["items"].as_array().unwrap().is_empty());
    let entries = search(&s, None, "/search/messages?q=capacitor&case=3").await;
    assert_eq!(entries["items"].as_array().unwrap().len(), 1);
    assert_eq!(entries["items"][0]["case"], 3);

    // A changed subject is found by its new words, no longer by the old.
    s.patch(&format!("{CRM}/cases/2"), json!({ "subject": "Warranty question" })).await.expect(200);
    assert_eq!(numbers(&search(&s, None, "/cases?q=warranty").await["items"]), [2]);
    assert!(search(&s, None, "/cases?q=recall").await["items"].as_array().unwrap().is_empty());

    // Another tenant with the same plugin and the same words sees only its own case; the
    // first tenant's search is unchanged (a positive control for the isolation).
    let globex = s.tenant_with_token("globex", "tenant-admin").await;
    s.as_token(Some(&globex), reqwest::Method::POST, "/v1/tenants/globex/plugins/crm/enable", None).await.expect(200);
    let theirs = s
        .as_token(
            Some(&globex),
            reqwest::Method::POST,
            &format!("{CRM}/contacts"),
            Some(json!({ "name": "Gina", "emails": ["gina@globex.test"] })),
        )
        .await
        .expect(201)
        .body;
    s.as_token(
        Some(&globex),
        reqwest::Method::POST,
        &format!("{CRM}/cases"),
        Some(json!({ "subject": "Capacitor for Globex", "contact": theirs["id"] })),
    )
    .await
    .expect(201);
    let seen_by_globex = search(&s, Some(&globex), "/search?q=capacitor").await;
    assert_eq!(numbers(&seen_by_globex["cases"]), [1]);
    assert_eq!(seen_by_globex["cases"][0]["subject"], "Capacitor for Globex");
    assert!(search(&s, Some(&globex), "/search?q=jurgen").await["contacts"].as_array().unwrap().is_empty());
    // (Case 2's subject changed, but its first message still says "Flux capacitor recall".)
    let ours = search(&s, None, "/search?q=capacitor").await["cases"].clone();
    let mut ours_numbers = numbers(&ours);
    ours_numbers.sort();
    assert_eq!(ours_numbers, [1, 2, 3]);
    assert!(ours.as_array().unwrap().iter().all(|c| c["subject"] != "Capacitor for Globex"), "{ours}");

    // What is not a search is a clear 422 on `q`, never a server error; no `q` is a 400.
    for bad in ["%22%22", "ab*", "%2A%2A%2A"] {
        let problem = s.get(&format!("{CRM}/search?q={bad}")).await.expect_problem(422, "invalid-search").body;
        assert_eq!(problem["field"], "q", "{bad}: {problem}");
    }
    s.get(&format!("{CRM}/search?q={}", "w%20".repeat(17))).await.expect_problem(422, "invalid-search");
    s.get(&format!("{CRM}/search")).await.expect_problem(400, "missing-q");
    // FTS5's own syntax, control characters and oversized text are words or refusals.
    for hostile in [
        "NEAR(capacitor flux)",
        "capacitor OR 1=1",
        "c0:capacitor",
        "{scope}:x",
        "^capacitor",
        "-capacitor",
        "\"\"\"",
        "capacitor\u{0}flux",
        "capacitor*)(",
        "' OR ''='",
        &"x".repeat(300),
        &"é".repeat(70),
        "🦀 capacitor",
    ] {
        let url = reqwest::Url::parse_with_params("http://x/search", &[("q", hostile)]).unwrap();
        let reply = s.get(&format!("{CRM}/search?{}", url.query().unwrap())).await;
        assert!(
            reply.status == 200 || reply.code() == "invalid-search",
            "{hostile:?}: {} {}",
            reply.status,
            reply.body
        );
    }
    assert_eq!(numbers(&search(&s, None, "/search?q=%F0%9F%A6%80%20capacitor").await["cases"]).len(), 3);
    s.get(&format!("{CRM}/cases?q=x&sort=next_due")).await.expect_problem(422, "invalid-field");
    s.get(&format!("{CRM}/cases?q=capacitor&cursor=k1.abc")).await.expect_problem(422, "invalid-cursor");
}
