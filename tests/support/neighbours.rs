//! Noisy neighbours: one tenant (`noisy`) attacks shared capacity with the `noisy` fixture,
//! used as its manifest allows, while another (`calm`) uses the helpdesk. Shared by the
//! noisy-neighbour test suite, which asserts bounds, and the benchmark, which reports them.

use crate::TestServer;
use reqwest::Method;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The attacks, each with the kind of capacity it goes after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attack {
    /// 130 concurrent calls that spin until their deadline: the instance pool and the CPU.
    SlowCalls,
    /// Jobs that each enqueue two more, due at once: the workers and the queue.
    JobFlood,
    /// Calls writing a thousand 1 MB documents and reading a thousand back: host memory,
    /// the disk and the database's writer.
    LargeWrites,
    /// Many concurrent queries with every condition allowed, over thousands of documents:
    /// the database's connections and the cores.
    HeavyQueries,
    /// Calls answering megabytes of headers: the network path.
    HugeHeaders,
    /// Concurrent calls each committing 50 documents to the same plugin's data, whose
    /// commits take turns: the database's connections (on PostgreSQL a commit waiting its
    /// turn at the scope's lock would hold one).
    ContendedWrites,
}

impl Attack {
    pub const ALL: [Attack; 6] = [
        Attack::SlowCalls,
        Attack::JobFlood,
        Attack::LargeWrites,
        Attack::HeavyQueries,
        Attack::HugeHeaders,
        Attack::ContendedWrites,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Attack::SlowCalls => "130 concurrent slow calls",
            Attack::JobFlood => "self-enqueueing jobs",
            Attack::LargeWrites => "large writes and reads",
            Attack::HeavyQueries => "heavy queries",
            Attack::HugeHeaders => "huge response headers",
            Attack::ContendedWrites => "contended writes",
        }
    }
}

/// What the attacker's requests got back, by status.
#[derive(Debug, Default, Clone)]
pub struct Outcomes {
    pub statuses: BTreeMap<u16, usize>,
    pub codes: BTreeMap<String, usize>,
}

/// Two tenants on one server: `noisy` with the fixture, `calm` with the helpdesk and one ticket.
pub struct Neighbours {
    pub server: TestServer,
    pub noisy: String,
    pub calm: String,
}

/// The configuration the suite and the bench run with: a pool of 32 instances, no per-token
/// rate limit (so admission control, not the rate limiter, is what holds the attacker back),
/// 1 GiB of memory reserved for plugin calls.
pub fn configure(config: &mut keel_host::Config) {
    config.limits.max_concurrent_instances = 32;
    config.limits.rate_limit_per_second = 0;
    config.limits.instance_memory_mb = 1024;
    config.limits.admission_wait_ms = 250;
    // On PostgreSQL, fewer connections than the attacker's share of instances (14): its
    // calls could otherwise take every one.
    config.database.max_connections = 8;
}

impl Neighbours {
    pub async fn start() -> Neighbours {
        let server = TestServer::start_with(configure).await;
        server.install("fixtures/noisy").await.expect(201);
        server.install("bundled/helpdesk").await.expect(201);
        let noisy = server.tenant_with_token("noisy", "tenant-admin").await;
        let calm = server.tenant_with_token("calm", "tenant-admin").await;
        for (tenant, token, plugin) in [("noisy", &noisy, "noisy"), ("calm", &calm, "helpdesk")] {
            server
                .as_token(Some(token), Method::POST, &format!("/v1/tenants/{tenant}/plugins/{plugin}/enable"), None)
                .await
                .expect(200);
        }
        server
            .as_token(Some(&calm), Method::POST, "/v1/plugins/helpdesk/tickets", Some(json!({ "title": "calm" })))
            .await
            .expect(201);
        Neighbours { server, noisy, calm }
    }

    /// Stops the server.
    pub async fn stop(self) {
        self.server.stop().await;
    }

    /// `n` helpdesk reads by the calm tenant, one after another; each must answer 200.
    pub async fn probe(&self, n: usize) -> Vec<Duration> {
        let url = format!("{}/v1/plugins/helpdesk/tickets/1", self.server.base);
        let mut took = Vec::with_capacity(n);
        for _ in 0..n {
            let started = Instant::now();
            let response = self.server.http.get(&url).bearer_auth(&self.calm).send().await.expect("calm request");
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            assert_eq!(status, 200, "the calm tenant's request failed: {body}");
            took.push(started.elapsed());
        }
        took
    }

    /// During a job flood by the noisy tenant, moves the host clock to 1 s before the next
    /// minute, when the calm tenant's every-minute `sla-check` is due; returns how late (ms,
    /// host clock) that run started, from its run record.
    pub async fn schedule_lateness_during_flood(&self) -> i64 {
        let s = &self.server;
        let now = s.advance_clock(0).await;
        let due = (now / 60_000 + 1) * 60_000;
        let (started, _) = self
            .under(Attack::JobFlood, async {
                s.advance_clock(u64::try_from(due - 1_000 - s.advance_clock(0).await).unwrap_or(0)).await;
                let listing = s
                    .eventually("/v1/tenants/calm/jobs?kind=schedule&plugin=helpdesk", "calm's sla-check to run", |b| {
                        b["items"]
                            .as_array()
                            .is_some_and(|items| items.iter().any(|j| j["run_at"] == due && j["status"] == "done"))
                    })
                    .await;
                let job =
                    listing["items"].as_array().and_then(|items| items.iter().find(|j| j["run_at"] == due).cloned());
                let id = job.and_then(|j| j["id"].as_str().map(str::to_owned)).expect("the due run is listed");
                let job = s.get(&format!("/v1/tenants/calm/jobs/{id}")).await.expect(200).body;
                job["runs"][0]["started_at"].as_i64().expect("the run's start")
            })
            .await;
        started - due
    }

    /// Gets the attack's data in place (documents to query).
    pub async fn prepare(&self, attack: Attack) {
        if attack == Attack::HeavyQueries {
            for batch in 0..5 {
                let body = json!({ "count": 1000, "size": 64, "prefix": format!("q{batch}-"), "tag": "x" });
                self.noisy_call(Method::POST, "/blobs", Some(body)).await;
            }
        }
    }

    async fn noisy_call(&self, method: Method, path: &str, body: Option<serde_json::Value>) -> (u16, String) {
        self.attacker().call(method, path, body).await
    }

    fn attacker(&self) -> Attacker {
        Attacker { http: self.server.http.clone(), base: self.server.base.clone(), token: self.noisy.clone() }
    }

    /// Runs `attack` from the noisy tenant while `during` runs; returns what `during`
    /// returned and what the attacker got.
    pub async fn under<T>(&self, attack: Attack, during: impl std::future::Future<Output = T>) -> (T, Outcomes) {
        let stop = Arc::new(AtomicBool::new(false));
        let outcomes = Arc::new(std::sync::Mutex::new(Outcomes::default()));
        let (clients, method, path, body): (usize, Method, &str, Option<serde_json::Value>) = match attack {
            Attack::SlowCalls => (130, Method::GET, "/slow?ms=10000", None),
            Attack::JobFlood => (1, Method::POST, "/flood", Some(json!({ "seeds": 20, "fanout": 2 }))),
            Attack::LargeWrites => (24, Method::POST, "/blobs", Some(json!({ "count": 1000, "size": 1_000_000 }))),
            Attack::HeavyQueries => (
                32,
                Method::POST,
                "/query",
                Some(json!({ "filters": [["a", "x"], ["b", "x"], ["c", "x"], ["d", "x"]] })),
            ),
            Attack::HugeHeaders => (16, Method::GET, "/headers?kib=1024", None),
            Attack::ContendedWrites => {
                (32, Method::POST, "/blobs", Some(json!({ "count": 50, "size": 64, "tag": "x" })))
            }
        };
        let mut tasks = Vec::new();
        for i in 0..clients {
            let (stop, outcomes) = (stop.clone(), outcomes.clone());
            let attacker = self.attacker();
            let (method, body) = (method.clone(), body.clone());
            // Large writes alternate with reads of a thousand large documents.
            let path = if attack == Attack::LargeWrites && i % 2 == 1 { "/blobs?limit=1000" } else { path };
            let method = if attack == Attack::LargeWrites && i % 2 == 1 { Method::GET } else { method };
            tasks.push(async move {
                let mut first = true;
                while first || !stop.load(Ordering::Relaxed) {
                    // The flood is started once; its jobs do the rest.
                    if attack == Attack::JobFlood && !first {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                    first = false;
                    let body = if matches!(attack, Attack::LargeWrites | Attack::ContendedWrites) {
                        body.clone().map(|mut b| {
                            b["prefix"] = json!(format!("w{i}-"));
                            b
                        })
                    } else {
                        body.clone()
                    };
                    let (status, code) = attacker.call(method.clone(), path, body).await;
                    let mut o = outcomes.lock().expect("outcomes");
                    *o.statuses.entry(status).or_default() += 1;
                    *o.codes.entry(code).or_default() += 1;
                }
            });
        }
        let attackers = futures::future::join_all(tasks);
        let measured = async {
            // Let the attack reach full strength first.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let out = during.await;
            stop.store(true, Ordering::Relaxed);
            out
        };
        let (out, ()) = tokio::join!(measured, async {
            attackers.await;
        });
        let outcomes = outcomes.lock().expect("outcomes").clone();
        (out, outcomes)
    }
}

/// The noisy tenant's client.
#[derive(Clone)]
struct Attacker {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Attacker {
    /// One call; (status, problem code). Status 0: the request did not get through.
    async fn call(&self, method: Method, path: &str, body: Option<serde_json::Value>) -> (u16, String) {
        let mut request =
            self.http.request(method, format!("{}/v1/plugins/noisy{path}", self.base)).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let text = response.text().await.unwrap_or_default();
                let code = serde_json::from_str::<serde_json::Value>(&text)
                    .ok()
                    .and_then(|v| v["code"].as_str().map(str::to_owned))
                    .unwrap_or_default();
                (status, code)
            }
            Err(_) => (0, "transport".into()),
        }
    }
}

/// The `q`-quantile of `samples` (sorted in place).
pub fn quantile(samples: &mut [Duration], q: f64) -> Duration {
    samples.sort();
    let at = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
    samples[at]
}

/// This process's peak resident memory since the last [`reset_peak_rss`], in bytes.
pub fn peak_rss() -> u64 {
    status_kib("VmHWM:") * 1024
}

/// This process's resident memory now, in bytes.
pub fn rss() -> u64 {
    status_kib("VmRSS:") * 1024
}

/// Starts a new peak for [`peak_rss`] (Linux: `/proc/self/clear_refs`).
pub fn reset_peak_rss() {
    std::fs::write("/proc/self/clear_refs", "5").expect("resetting the peak resident set size");
}

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a memory figure in /proc/self/status")
}
