//! Test a Keel plugin from its own `cargo test`, against the real host.
//!
//! [`TestKit::new`] starts the Keel host in the test's process: real wasmtime, real storage on
//! a temporary SQLite database, the real request path (authentication, routing, permission
//! check, unit of work, outbox). You install your compiled plugin, make callers with the
//! permissions you choose, call routes, move the clock, run due background work, and assert on
//! responses, stored documents, published events and enqueued jobs.
//!
//! ```no_run
//! use keel_testkit::{TestKit, json};
//! # async fn example() -> Result<(), keel_testkit::KitError> {
//! let kit = TestKit::new().await?;
//! kit.install_file("target/keel/visitor-log-0.1.0.wasm").await?;
//! let ana = kit.caller("default", "ana", &["visitor-log.visit.write"]).await?;
//! let reply = kit.post(&ana, "/v1/plugins/visitor-log/visits", json!({ "name": "Ada" })).await;
//! assert_eq!(reply.status, 201);
//! kit.advance_clock(std::time::Duration::from_secs(3600));
//! kit.run_due().await?; // schedules and jobs now due, run to completion
//! assert_eq!(kit.documents("default", "visitor-log", "visits").await?.len(), 1);
//! # Ok(()) }
//! ```
//!
//! Background work does not run by itself here: [`TestKit::run_due`] runs what is due, one
//! attempt at a time; and the host clock stands still until [`TestKit::advance_clock`] moves
//! it, so tests are deterministic.
#![deny(missing_docs)]

use axum::body::Body;
use axum::http::{Method, Request};
pub use keel_host::jobs::JobStatus;
pub use keel_host::jobs::store::JobRecord;
use keel_host::jobs::store::{EventRecord, JobFilter};
use keel_host::{Config, Server};
pub use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;
use tower::ServiceExt;

/// What can go wrong setting up or driving the kit (test code usually `unwrap`s these).
#[derive(Debug, thiserror::Error)]
pub enum KitError {
    /// The host did not start.
    #[error("the host did not start: {0}")]
    Start(String),
    /// The artifact could not be read.
    #[error(
        "cannot read artifact {path}: {source}; build it first (`keel plugin build` or `cargo xtask build-plugins`)"
    )]
    Artifact {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The host refused the plugin (the same reason an upload would get).
    #[error("the host refused the plugin: {0}")]
    Install(String),
    /// Setting up a tenant, caller or grant failed.
    #[error("setting up {what}: {reason}")]
    Setup {
        /// What was being set up.
        what: String,
        /// Why it failed.
        reason: String,
    },
    /// Reading the database failed.
    #[error("database: {0}")]
    Database(#[from] keel_host::storage::StoreError),
}

fn setup(what: impl Into<String>) -> impl FnOnce(String) -> KitError {
    let what = what.into();
    move |reason| KitError::Setup { what, reason }
}

/// Someone calling the plugin: a user of a tenant with a set of permissions.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The tenant every call and stored document belongs to.
    pub tenant: String,
    /// The id the plugin sees as `caller.user-id`.
    pub user_id: String,
    /// The username it was created with.
    pub username: String,
    token: String,
}

/// A response: status, JSON body (or a JSON string for other bodies) and headers; the same
/// type the host's HTTP client returns, with `code()`, `expect(status)` and
/// `expect_problem(status, code)`.
pub use keel_host::client::Reply;

/// A stored document as a test sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// Its key.
    pub key: String,
    /// Its version (1 on creation).
    pub version: u64,
    /// Its body.
    pub body: Value,
}

/// The host, in process, on a temporary database.
pub struct TestKit {
    server: Option<Server>,
    router: axum::Router,
    admin_token: String,
    _dir: tempfile::TempDir,
}

impl TestKit {
    /// Starts a host with no plugins, one tenant (`default`) and the background worker off
    /// (see [`run_due`](Self::run_due)).
    pub async fn new() -> Result<TestKit, KitError> {
        let dir = tempfile::tempdir().map_err(|e| KitError::Start(e.to_string()))?;
        let mut config = Config {
            data_dir: dir.path().into(),
            listen: "127.0.0.1:0".parse().expect("a valid address"),
            ..Config::default()
        };
        config.limits.max_concurrent_instances = 8;
        config.limits.rate_limit_per_second = 0;
        config.jobs.enabled = false;
        config.allow_clock_control = true;
        // Time moves only when the test moves it: a schedule cannot fire, nor a token expire,
        // because the real clock crossed a boundary mid-test.
        config.frozen_clock_at = Some(keel_host::clock::system_now_ms());
        let server = Server::start(config).await.map_err(|e| KitError::Start(e.to_string()))?;
        let admin_token = server.bootstrap_token.clone().ok_or_else(|| KitError::Start("no bootstrap token".into()))?;
        let router = keel_host::api::router(server.state.clone());
        Ok(TestKit { server: Some(server), router, admin_token, _dir: dir })
    }

    fn server(&self) -> &Server {
        self.server.as_ref().expect("the kit's host runs until the kit is dropped")
    }

    /// Installs a plugin artifact (component with its manifest embedded) and switches it on
    /// for the `default` tenant. Returns the plugin id.
    pub async fn install(&self, artifact: Vec<u8>) -> Result<String, KitError> {
        let state = &self.server().state;
        let (record, _) = state.registry.install(artifact, None).await.map_err(|e| KitError::Install(e.to_string()))?;
        self.enable("default", &record.id).await?;
        Ok(record.id)
    }

    /// [`install`](Self::install) from a file.
    pub async fn install_file(&self, path: impl AsRef<Path>) -> Result<String, KitError> {
        let path = path.as_ref();
        let bytes =
            std::fs::read(path).map_err(|source| KitError::Artifact { path: path.display().to_string(), source })?;
        self.install(bytes).await
    }

    /// Builds the plugin crate in `dir` for wasm32-wasip2 exactly as `keel plugin build`
    /// does (checked as an upload would be) and installs it.
    pub async fn build_and_install(&self, dir: impl AsRef<Path>) -> Result<String, KitError> {
        let dir = dir.as_ref().to_path_buf();
        let artifact = tokio::task::spawn_blocking(move || keel_host::devkit::build(&dir))
            .await
            .map_err(|e| KitError::Install(e.to_string()))?
            .map_err(|e| KitError::Install(e.to_string()))?;
        self.install_file(artifact).await
    }

    /// Sets settings the plugin declares, for `tenant`, as a tenant admin would: `values`
    /// maps names to values of their type, `null` restoring the default. Checked like the
    /// admin API checks them; the error names the setting.
    pub async fn set_settings(&self, tenant: &str, plugin: &str, values: serde_json::Value) -> Result<(), KitError> {
        let state = &self.server().state;
        let what = format!("settings of {plugin} for {tenant}");
        let manifest = state
            .registry
            .get(plugin)
            .ok_or_else(|| setup(what.clone())("not installed".into()))?
            .record
            .manifest
            .clone();
        let values = values.as_object().ok_or_else(|| setup(what.clone())("`values` is not a JSON object".into()))?;
        let mut changes = std::collections::BTreeMap::new();
        for (name, value) in values {
            let value = match value {
                serde_json::Value::Null => None,
                other => Some(
                    serde_json::from_value::<keel_host::manifest::SettingValue>(other.clone())
                        .map_err(|e| setup(what.clone())(format!("setting `{name}`: {e}")))?,
                ),
            };
            changes.insert(name.clone(), value);
        }
        state.settings.update(tenant, &manifest, &changes, "kit").await.map_err(|e| setup(what)(e.to_string()))
    }

    /// Creates `tenant` if needed and switches `plugin` on there.
    pub async fn enable(&self, tenant: &str, plugin: &str) -> Result<(), KitError> {
        let state = &self.server().state;
        if state.tenancy.get(tenant).await.is_err() {
            state.tenancy.create(tenant, tenant).await.map_err(|e| setup(format!("tenant {tenant}"))(e.to_string()))?;
        }
        state
            .tenancy
            .set_enabled(tenant, plugin, true)
            .await
            .map_err(|e| setup(format!("enabling {plugin} for {tenant}"))(e.to_string()))
    }

    /// A user `username` of `tenant` holding exactly `permissions` (plugin permissions the
    /// tenant grants to a role made for them). Plugins enabled in `default` are switched on
    /// in a new tenant too.
    pub async fn caller(&self, tenant: &str, username: &str, permissions: &[&str]) -> Result<Caller, KitError> {
        let state = &self.server().state;
        for plugin in state.registry.list() {
            if state.tenancy.is_enabled("default", &plugin.id) && !state.tenancy.is_enabled(tenant, &plugin.id) {
                self.enable(tenant, &plugin.id).await?;
            }
        }
        let role = format!("kit-{}", role_suffix(username));
        let grants: BTreeSet<String> = permissions.iter().map(|p| p.to_string()).collect();
        state
            .tenancy
            .set_grants(tenant, &role, grants)
            .await
            .map_err(|e| setup(format!("role {role}"))(e.to_string()))?;
        let user = state
            .users
            .create(tenant, username, username, "a test password, long enough", &role)
            .await
            .map_err(|e| setup(format!("user {username}"))(e.to_string()))?;
        let token = state
            .tokens
            .issue_for(username, &role, tenant, None, Some(&user.id))
            .await
            .map_err(|e| setup(format!("token for {username}"))(e.to_string()))?;
        Ok(Caller { tenant: tenant.into(), user_id: user.id, username: username.into(), token: token.token })
    }

    /// The platform admin of the `default` tenant: every permission of every plugin.
    pub fn admin(&self) -> Caller {
        Caller {
            tenant: "default".into(),
            user_id: String::new(),
            username: "bootstrap admin".into(),
            token: self.admin_token.clone(),
        }
    }

    /// Sends a request as `caller` through the host's whole request path (no network).
    pub async fn request(&self, caller: &Caller, method: Method, path: &str, body: Option<Value>) -> Reply {
        let mut request =
            Request::builder().method(method).uri(path).header("authorization", format!("Bearer {}", caller.token));
        let body = match body {
            Some(value) => {
                request = request.header("content-type", "application/json");
                Body::from(value.to_string())
            }
            None => Body::empty(),
        };
        let request = request.body(body).expect("a well-formed request");
        let response = self.router.clone().oneshot(request).await.expect("the router is infallible");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), 64 << 20).await.unwrap_or_default();
        Reply::from_parts(status, headers, &bytes)
    }

    /// `GET path` as `caller`.
    pub async fn get(&self, caller: &Caller, path: &str) -> Reply {
        self.request(caller, Method::GET, path, None).await
    }

    /// `POST path` with a JSON body as `caller`.
    pub async fn post(&self, caller: &Caller, path: &str, body: Value) -> Reply {
        self.request(caller, Method::POST, path, Some(body)).await
    }

    /// `PATCH path` with a JSON body as `caller`.
    pub async fn patch(&self, caller: &Caller, path: &str, body: Value) -> Reply {
        self.request(caller, Method::PATCH, path, Some(body)).await
    }

    /// `PUT path` with a JSON body as `caller`.
    pub async fn put(&self, caller: &Caller, path: &str, body: Value) -> Reply {
        self.request(caller, Method::PUT, path, Some(body)).await
    }

    /// Moves the host clock (what plugins read through `keel:platform/clock` and what
    /// schedules and job retries follow) forward.
    pub fn advance_clock(&self, by: Duration) {
        self.server().state.clock.advance(u64::try_from(by.as_millis()).unwrap_or(u64::MAX));
    }

    /// The host clock, in ms since the Unix epoch.
    pub fn now_ms(&self) -> i64 {
        self.server().state.clock.now_ms()
    }

    /// Fires the schedules now due and runs every due job, schedule firing and event delivery
    /// (including what they enqueue or publish, if due) to completion. Returns the number of
    /// attempts run; stops after 10,000 as a guard against work that re-enqueues itself.
    pub async fn run_due(&self) -> Result<usize, KitError> {
        let mut total = 0;
        loop {
            let ran =
                self.server().state.runner.run_due_once().await.map_err(|e| setup("background work")(e.to_string()))?;
            total += ran;
            if ran == 0 || total >= 10_000 {
                return Ok(total);
            }
        }
    }

    /// The documents a plugin stored in one collection of one tenant, by key.
    pub async fn documents(&self, tenant: &str, plugin: &str, collection: &str) -> Result<Vec<Document>, KitError> {
        use keel_host::storage::{KeyRange, Scope};
        let scope = Scope { tenant: tenant.to_owned(), plugin: plugin.to_owned() };
        let store = &self.server().state.store;
        let mut documents = Vec::new();
        let mut after = None;
        loop {
            let range = KeyRange {
                collection: collection.to_owned(),
                drive: None,
                residual: Vec::new(),
                after: after.take(),
                limit: 500,
                descending: false,
                max_bytes: 16 << 20,
                deadline: None,
            };
            let page = store.scan(&scope, &range).await?;
            let Some((last, _)) = page.last() else { break };
            after = Some(last.clone());
            documents.extend(page.into_iter().map(|(_, d)| Document {
                key: d.key,
                version: d.version,
                body: serde_json::from_str(&d.body).unwrap_or(Value::Null),
            }));
        }
        Ok(documents)
    }

    /// A tenant's event log, oldest first.
    pub async fn events(&self, tenant: &str) -> Result<Vec<EventRecord>, KitError> {
        self.server()
            .state
            .jobs
            .list_events(tenant, None, 0, 10_000)
            .await
            .map_err(|e| setup("reading events")(e.to_string()))
    }

    /// A tenant's jobs, schedule firings and event deliveries, newest first.
    pub async fn jobs(&self, tenant: &str) -> Result<Vec<JobRecord>, KitError> {
        let filter = JobFilter { limit: 10_000, ..JobFilter::default() };
        self.server().state.jobs.list(tenant, &filter).await.map_err(|e| setup("reading jobs")(e.to_string()))
    }
}

/// Role names are 2-32 of a-z, 0-9 and '-'.
fn role_suffix(username: &str) -> String {
    let mut s: String = username
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' })
        .take(27)
        .collect();
    while s.ends_with('-') {
        s.pop();
    }
    if s.is_empty() { "user".into() } else { s }
}
