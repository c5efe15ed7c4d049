//! The helpdesk through the test kit: the compiled component in an in-process host, callers
//! with chosen permissions, and a moved clock for SLAs. Needs the artifact that
//! `cargo xtask build-plugins` writes (`cargo xtask test` builds it first).

use keel_testkit::{Caller, TestKit, json};
use std::path::Path;
use std::time::Duration;

const TICKETS: &str = "/v1/plugins/helpdesk/tickets";
const READ: &str = "helpdesk.ticket.read";
const WRITE: &str = "helpdesk.ticket.write";

async fn kit() -> TestKit {
    let kit = TestKit::new().await.unwrap();
    let artifact = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/keel-plugins/bundled/helpdesk.wasm");
    kit.install_file(&artifact).await.unwrap();
    kit
}

async fn agent(kit: &TestKit) -> Caller {
    kit.caller("default", "agent-ana", &[READ, WRITE, "helpdesk.agent", "helpdesk.ticket.assign"]).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requesters_see_their_own_tickets_and_agents_see_all() {
    let kit = kit().await;
    let (ana, bo) = (kit.caller("default", "ana", &[READ, WRITE]).await.unwrap(), agent(&kit).await);
    let filed = kit.post(&ana, TICKETS, json!({ "title": "Monitor flickers" })).await;
    assert_eq!(filed.status, 201, "{}", filed.body);
    assert_eq!(filed.body["requester"], ana.user_id.as_str(), "the requester is the caller");
    let other = kit.caller("default", "cy", &[READ, WRITE]).await.unwrap();
    assert_eq!(kit.get(&other, &format!("{TICKETS}/1")).await.status, 404, "someone else's ticket does not exist");
    assert_eq!(kit.get(&bo, &format!("{TICKETS}/1")).await.status, 200);
    let assign = kit.patch(&ana, &format!("{TICKETS}/1"), json!({ "assignee": "bo" })).await;
    assert_eq!((assign.status, assign.code()), (403, "forbidden"));

    // What the plugin stored, and what it published, as the host holds them.
    let stored = kit.documents("default", "helpdesk", "tickets").await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!((stored[0].version, stored[0].body["title"].as_str()), (1, Some("Monitor flickers")));
    let events = kit.events("default").await.unwrap();
    assert_eq!(events.iter().map(|e| e.topic.as_str()).collect::<Vec<_>>(), ["helpdesk.ticket.created"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sla_breaches_follow_the_moved_clock() {
    let kit = kit().await;
    let bo = agent(&kit).await;
    let filed = kit.post(&bo, TICKETS, json!({ "title": "Email down", "priority": "P1" })).await;
    assert_eq!(filed.status, 201);
    let timers = kit.documents("default", "helpdesk", "sla_timers").await.unwrap();
    assert_eq!(timers.len(), 4, "first response and resolution are watched, each with a warning at 80 %");

    // Fifty-two minutes: past the first response's warning (48 min), not its deadline. (The
    // first run registers the minutely check; the second, a minute on, is its firing.)
    kit.advance_clock(Duration::from_secs(50 * 60));
    kit.run_due().await.unwrap();
    kit.advance_clock(Duration::from_secs(2 * 60));
    kit.run_due().await.unwrap();
    assert_eq!(kit.get(&bo, &format!("{TICKETS}/1")).await.body["sla_state"], "on_track");
    let warnings: Vec<_> =
        kit.events("default").await.unwrap().into_iter().filter(|e| e.topic == "helpdesk.ticket.sla_warning").collect();
    assert_eq!(warnings.len(), 1);
    let payload: keel_testkit::Value = serde_json::from_str(&warnings[0].payload).unwrap();
    assert_eq!(payload["target"], "first_response");

    // Past the hour: the scheduled check marks the first-response breach and publishes it.
    kit.advance_clock(Duration::from_secs(9 * 60));
    assert!(kit.run_due().await.unwrap() >= 1, "the sla-check schedule ran");
    let ticket = kit.get(&bo, &format!("{TICKETS}/1")).await.body;
    assert_eq!(ticket["sla_state"], "breached", "{ticket}");
    let breaches: Vec<_> = kit
        .events("default")
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.topic == "helpdesk.ticket.sla_breached")
        .collect();
    assert_eq!(breaches.len(), 1);
    let payload: keel_testkit::Value = serde_json::from_str(&breaches[0].payload).unwrap();
    assert_eq!((payload["number"].as_u64(), payload["target"].as_str()), (Some(1), Some("first_response")));
    assert_eq!(
        kit.documents("default", "helpdesk", "sla_timers").await.unwrap().len(),
        2,
        "the resolution's warning and deadline left"
    );

    // Resolving in time meets the resolution target; nothing more is published.
    kit.post(&bo, &format!("{TICKETS}/1/transition"), json!({ "to": "open" })).await;
    let resolved = kit.post(&bo, &format!("{TICKETS}/1/transition"), json!({ "to": "resolved" })).await;
    assert_eq!(resolved.status, 200, "{}", resolved.body);
    kit.advance_clock(Duration::from_secs(5 * 3600));
    kit.run_due().await.unwrap();
    assert_eq!(kit.events("default").await.unwrap().iter().filter(|e| e.topic.ends_with("sla_breached")).count(), 1);
    assert!(kit.documents("default", "helpdesk", "sla_timers").await.unwrap().is_empty());
}

/// The plugin guide's headline example: the kit builds the crate under test itself (as
/// `keel plugin build` does, checked like an upload) and installs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kit_builds_the_crate_it_tests_and_installs_it() {
    let kit = TestKit::new().await.unwrap();
    let id = kit.build_and_install(env!("CARGO_MANIFEST_DIR")).await.unwrap();
    assert_eq!(id, "helpdesk");
    let ana = kit.caller("default", "ana", &[READ, WRITE]).await.unwrap();
    let filed = kit.post(&ana, TICKETS, json!({ "title": "built by the kit" })).await;
    assert_eq!(filed.status, 201, "{}", filed.body);
    let listed = kit.get(&ana, TICKETS).await;
    assert_eq!(listed.body["items"][0]["title"], "built by the kit", "{}", listed.body);
    // A crate that is not a plugin is a typed error, not a panic.
    let error = kit.build_and_install(Path::new(env!("CARGO_MANIFEST_DIR")).join("src")).await.unwrap_err();
    assert!(error.to_string().contains("plugin.toml"), "{error}");
}
