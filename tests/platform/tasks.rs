//! Tasks: long work in chunks, each chunk a job committed with the task's progress. Progress
//! is exact after every chunk, a cancelled task queues no further chunk, and the API refuses
//! what it does not know with typed errors.

use keel_tests::TestServer;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const B: &str = "/v1/plugins/batch";
const TASKS: &str = "/v1/tenants/default/tasks";

async fn task(s: &TestServer, id: &str) -> Value {
    s.get(&format!("{TASKS}/{id}")).await.expect(200).body
}

async fn until(s: &TestServer, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let t = task(s, id).await;
        if done(&t) {
            return t;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}: {t}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn summary(s: &TestServer) -> (u64, u64) {
    let (mut items, mut once) = (0, 0);
    let mut cursor: Option<String> = None;
    loop {
        let path = cursor.as_ref().map_or(format!("{B}/summary"), |c| format!("{B}/summary?cursor={c}"));
        let page = s.get(&path).await.expect(200).body;
        items += page["items"].as_u64().unwrap();
        once += page["once"].as_u64().unwrap();
        match page["next"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return (items, once),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_runs_chunk_by_chunk_with_exact_progress() {
    let s = TestServer::with_plugins(&["fixtures/batch"]).await;
    let seed = s.post(&format!("{B}/seed"), json!({ "count": 2_500, "chunk": 1000 })).await.expect(202).body;
    let id = seed["task"].as_str().unwrap().to_owned();
    let done = until(&s, &id, "the seed to finish", |t| t["status"] == "done").await;
    // 1000 + 1000 + 500, in three chunks, against the total the plugin gave.
    assert_eq!(
        (done["done"].as_u64(), done["total"].as_u64(), done["chunks"].as_u64()),
        (Some(2_500), Some(2_500), Some(3)),
        "{done}"
    );
    assert_eq!((done["plugin"].as_str(), done["title"].as_str()), (Some("batch"), Some("Seed 2500 items")));
    assert!(done["finished_at"].is_i64());

    // Walking a query: pages of 400, every item once, and the listing shows both tasks.
    let touch = s.post(&format!("{B}/touch"), json!({ "count": 2_500, "chunk": 400 })).await.expect(202).body;
    let touch = touch["task"].as_str().unwrap().to_owned();
    let done = until(&s, &touch, "the walk to finish", |t| t["status"] == "done").await;
    assert_eq!((done["done"].as_u64(), done["chunks"].as_u64()), (Some(2_500), Some(7)), "{done}");
    assert_eq!(summary(&s).await, (2_500, 2_500));
    let listed = s.get(&format!("{TASKS}?status=done")).await.expect(200).body;
    let ids: Vec<&str> = listed["items"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [touch.as_str(), id.as_str()], "newest first");
    // Each chunk was a job of the task.
    let jobs = s.get("/v1/tenants/default/jobs?plugin=batch&status=done&limit=1000").await.expect(200).body;
    let chunks = jobs["items"].as_array().unwrap().iter().filter(|j| j["task"] == touch.as_str()).count();
    assert_eq!(chunks, 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_past_its_chunk_limit_fails_with_its_last_chunk_unsaved() {
    let s = TestServer::start_with(|c| c.jobs.max_task_chunks = 3).await;
    s.install("fixtures/batch").await.expect(201);
    // Five chunks of 500 asked for; two commit, the third asks for a fourth and is refused.
    let seed = s.post(&format!("{B}/seed"), json!({ "count": 2_500, "chunk": 500 })).await.expect(202).body;
    let id = seed["task"].as_str().unwrap().to_owned();
    let failed = until(&s, &id, "the task to fail", |t| t["status"] == "failed").await;
    assert_eq!((failed["done"].as_u64(), failed["chunks"].as_u64()), (Some(1_000), Some(2)), "{failed}");
    let error = failed["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("too-many-chunks") && error.contains("jobs.max-task-chunks is 3"), "{failed}");
    assert_eq!(summary(&s).await.0, 1_000, "the refused chunk's writes were not saved");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_task_queues_no_further_chunk() {
    let s = TestServer::with_plugins(&["fixtures/batch"]).await;
    let seed = s.post(&format!("{B}/seed"), json!({ "count": 3_000, "chunk": 1000 })).await.expect(202).body;
    until(&s, seed["task"].as_str().unwrap(), "the seed", |t| t["status"] == "done").await;

    // Ten items a chunk: 300 chunks, far more than run before the cancel lands.
    let touch = s.post(&format!("{B}/touch"), json!({ "count": 3_000, "chunk": 10 })).await.expect(202).body;
    let id = touch["task"].as_str().unwrap().to_owned();
    until(&s, &id, "a few chunks", |t| t["chunks"].as_u64() >= Some(3)).await;
    let cancelled = s.post_empty(&format!("{TASKS}/{id}/cancel")).await.expect(200).body;
    assert_eq!(cancelled["status"], "cancelled");
    // A chunk running when the cancel landed may still commit; after that nothing moves.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let settled = task(&s, &id).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let later = task(&s, &id).await;
    assert_eq!(settled["done"], later["done"], "no chunk ran after the cancel settled: {later}");
    assert!(later["done"].as_u64().unwrap() < 3_000, "{later}");
    let (_, once) = summary(&s).await;
    assert_eq!(once, later["done"].as_u64().unwrap(), "progress counts exactly the items touched");
    let queued = s.get("/v1/tenants/default/jobs?plugin=batch&status=queued").await.expect(200).body;
    assert!(queued["items"].as_array().unwrap().is_empty(), "{queued}");
    // Cancelling again is a state conflict, not a silent success.
    s.post_empty(&format!("{TASKS}/{id}/cancel")).await.expect_problem(409, "job-state-conflict");
}

#[tokio::test]
async fn unknown_tasks_and_bad_filters_are_typed_errors() {
    let s = TestServer::with_plugins(&["fixtures/batch"]).await;
    s.get(&format!("{TASKS}/task_nope")).await.expect_problem(404, "task-not-found");
    s.post_empty(&format!("{TASKS}/task_nope/cancel")).await.expect_problem(404, "task-not-found");
    s.get(&format!("{TASKS}?status=sleeping")).await.expect_problem(422, "invalid-status");
    s.get(&format!("{TASKS}?limit=0")).await.expect_problem(422, "invalid-limit");
    s.get(&format!("{TASKS}?cursor=zzz")).await.expect_problem(422, "invalid-cursor");
    // Another tenant's admin cannot see this tenant's tasks (the structural tenancy test
    // covers every route; this is the one it is about).
    let seed = s.post(&format!("{B}/seed"), json!({ "count": 10, "chunk": 10 })).await.expect(202).body;
    let id = seed["task"].as_str().unwrap();
    s.get(&format!("{TASKS}/{id}")).await.expect(200);
    let other = s.tenant_with_token("other", "admin").await;
    let reply = s.as_token(Some(&other), reqwest::Method::GET, &format!("{TASKS}/{id}"), None).await;
    assert_eq!(reply.status, 404, "{}", reply.body);
}
