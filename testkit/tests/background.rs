//! The kit's view of background work, with the `relay` fixture: jobs enqueued by a call wait
//! until `run_due`, then run once; events reach subscribers the same way.

use keel_testkit::{JobStatus, TestKit, json};
use std::path::Path;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueued_jobs_and_events_wait_for_run_due_and_then_run_once() {
    let kit = TestKit::new().await.unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/keel-plugins/fixtures");
    kit.install_file(fixtures.join("relay.wasm")).await.unwrap();
    let ana = kit.caller("default", "ana", &["relay.use"]).await.unwrap();

    let enqueued = kit.post(&ana, "/v1/plugins/relay/jobs", json!({ "name": "record", "payload": { "n": 1 } })).await;
    assert_eq!(enqueued.status, 202, "{}", enqueued.body);
    kit.post(&ana, "/v1/plugins/relay/publish", json!({ "payload": { "n": 2 } })).await;
    let waiting = kit.jobs("default").await.unwrap();
    assert_eq!(waiting.len(), 2, "the job and the event's delivery to relay itself");
    assert!(waiting.iter().all(|j| j.status == JobStatus::Queued));
    assert_eq!(kit.events("default").await.unwrap().len(), 1);

    assert_eq!(kit.run_due().await.unwrap(), 2);
    assert!(kit.jobs("default").await.unwrap().iter().all(|j| j.status == JobStatus::Done));
    assert_eq!(kit.run_due().await.unwrap(), 0, "nothing runs twice");
    let applied = kit.documents("default", "relay", "applied").await.unwrap();
    let kinds: Vec<_> = applied.iter().map(|d| d.body["what"].as_str().unwrap()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "job").count(), 1);
    assert_eq!(kinds.iter().filter(|k| **k == "event").count(), 1);

    // A caller without the route's permission is refused by the host, as in production.
    let nobody = kit.caller("default", "nobody", &[]).await.unwrap();
    let refused = kit.post(&nobody, "/v1/plugins/relay/jobs", json!({ "name": "record" })).await;
    assert_eq!((refused.status, refused.code()), (403, "forbidden"));
}
