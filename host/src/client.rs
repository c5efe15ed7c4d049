//! A typed client of Keel's HTTP API, decoding into the server's own response types: what
//! the `keel` CLI, the test suites and scripts use to talk to a server. A failed call is the
//! server's problem (status, stable code, detail) as a [`ClientError`]; ids in paths are
//! escaped, so no id can change which endpoint is called.

use crate::api::{EventPage, JobDetail, JobPage, QueuedJob, Replayed, ScheduleList, TaskPage, TenantList};
use crate::jobs::store::{JobRecord, TaskRecord};
use crate::jobs::{JobKind, JobStatus, TaskStatus};
use crate::tenancy::Tenant;
use reqwest::header::HeaderMap;
use reqwest::{Method, RequestBuilder};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach {base}: {source}")]
    Unreachable { base: String, source: reqwest::Error },
    /// The server answered with a problem (or another non-success status).
    #[error("{status} {code}: {detail}")]
    Problem { status: u16, code: String, detail: String },
    #[error("the server's answer is not what was expected: {0}")]
    Decode(String),
    #[error("`{0}` is not an id")]
    BadId(String),
}

/// An answer: status, body (JSON, or the text as `Value::String`, or `Null` when empty),
/// headers.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub headers: HeaderMap,
}

impl Reply {
    /// An answer from its parts, the body read as JSON when it is.
    pub fn from_parts(status: u16, headers: HeaderMap, body: &[u8]) -> Reply {
        let body = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
        };
        Reply { status, body, headers }
    }

    /// The stable `code` of a problem body (empty if there is none).
    pub fn code(&self) -> &str {
        self.body.get("code").and_then(Value::as_str).unwrap_or("")
    }

    /// Whether the body is `application/problem+json`.
    pub fn is_problem(&self) -> bool {
        self.headers.get("content-type").is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"))
    }

    /// The answer if its status is 2xx, else its problem as an error.
    pub fn success(self) -> Result<Reply, ClientError> {
        if (200..300).contains(&self.status) {
            return Ok(self);
        }
        let detail = self.body.get("detail").and_then(Value::as_str).unwrap_or_default().to_owned();
        let code = match self.code() {
            "" => "error".to_owned(),
            code => code.to_owned(),
        };
        Err(ClientError::Problem { status: self.status, code, detail })
    }

    /// The body of a 2xx answer as `T`.
    pub fn json<T: DeserializeOwned>(self) -> Result<T, ClientError> {
        let body = self.success()?.body;
        serde_json::from_value(body).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// Asserts the status (for tests): panics with the body otherwise.
    #[track_caller]
    pub fn expect(self, status: u16) -> Reply {
        assert_eq!(self.status, status, "unexpected status; body: {}", self.body);
        self
    }

    /// Asserts a problem answer (for tests): status, `application/problem+json`, stable code.
    #[track_caller]
    pub fn expect_problem(self, status: u16, code: &str) -> Reply {
        assert_eq!(self.status, status, "unexpected status; body: {}", self.body);
        assert!(self.is_problem(), "error is not problem+json: {:?} {}", self.headers.get("content-type"), self.body);
        assert_eq!(self.code(), code, "unexpected problem code; body: {}", self.body);
        self
    }
}

/// `s` as one path segment, percent-encoded. Ids are validated by the server; this keeps a
/// stray `/`, `?` or `..` from changing which endpoint is called.
pub fn segment(s: &str) -> Result<String, ClientError> {
    // URL parsers treat `.` and `..` (encoded or not) as dot segments and drop them: no id is
    // either, so refuse them here rather than call another endpoint.
    if s == "." || s == ".." || s.is_empty() {
        return Err(ClientError::BadId(s.to_owned()));
    }
    // Everything but letters, digits, '-', '.', '_' and '~'; a space is %20 here, not `+` as
    // in a query string.
    const SEGMENT: &percent_encoding::AsciiSet =
        &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');
    Ok(percent_encoding::utf8_percent_encode(s, SEGMENT).to_string())
}

/// A query string of the pairs given (`None` values left out).
pub fn query(pairs: &[(&str, Option<String>)]) -> String {
    let present = pairs.iter().filter_map(|(k, v)| v.as_ref().map(|v| (*k, v.as_str())));
    form_urlencoded::Serializer::new(String::new()).extend_pairs(present).finish()
}

/// A connection to one server as one caller.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    /// A client of the server at `base` (`http://127.0.0.1:8080`), sending `token` as bearer.
    pub fn new(base: &str, token: Option<String>) -> Client {
        Client { http: reqwest::Client::new(), base: base.trim_end_matches('/').to_owned(), token }
    }

    /// The same server, as another caller (`None`: anonymous).
    pub fn as_caller(&self, token: Option<&str>) -> Client {
        Client { http: self.http.clone(), base: self.base.clone(), token: token.map(str::to_owned) }
    }

    /// The server's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// A request to `path` (already escaped), with the caller's token.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Sends a request; any status is an answer (only an unreachable server is an error).
    pub async fn send(&self, request: RequestBuilder) -> Result<Reply, ClientError> {
        let unreachable = |source| ClientError::Unreachable { base: self.base.clone(), source };
        let response = request.send().await.map_err(unreachable)?;
        let (status, headers) = (response.status().as_u16(), response.headers().clone());
        let bytes = response.bytes().await.map_err(unreachable)?;
        Ok(Reply::from_parts(status, headers, &bytes))
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Result<Reply, ClientError> {
        self.send(self.request(Method::GET, path)).await
    }

    /// `method path` with a JSON body.
    pub async fn send_json(&self, method: Method, path: &str, body: &impl Serialize) -> Result<Reply, ClientError> {
        self.send(self.request(method, path).json(body)).await
    }

    /// `GET path`, a 2xx body written to `out` as it arrives rather than held in memory;
    /// returns the bytes written. Another status is its problem, and nothing is written.
    pub async fn download(&self, path: &str, out: &mut impl std::io::Write) -> Result<u64, ClientError> {
        let unreachable = |source| ClientError::Unreachable { base: self.base.clone(), source };
        let mut response = self.request(Method::GET, path).send().await.map_err(unreachable)?;
        if !response.status().is_success() {
            let (status, headers) = (response.status().as_u16(), response.headers().clone());
            let bytes = response.bytes().await.map_err(unreachable)?;
            return Reply::from_parts(status, headers, &bytes).success().map(|_| 0);
        }
        let mut written = 0;
        while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
            out.write_all(&chunk).map_err(|e| ClientError::Decode(format!("writing the answer failed: {e}")))?;
            written += chunk.len() as u64;
        }
        Ok(written)
    }

    /// `method path` without a body.
    pub async fn send_empty(&self, method: Method, path: &str) -> Result<Reply, ClientError> {
        self.send(self.request(method, path)).await
    }

    // Platform administration.

    /// Uploads a plugin artifact (install or upgrade); the answer says which.
    /// `signature` is the publisher's (the `.sig` file's line), sent as `keel-signature`.
    pub async fn install(&self, artifact: Vec<u8>, signature: Option<&str>) -> Result<Value, ClientError> {
        let mut request = self.request(Method::POST, "/v1/admin/plugins").header("content-type", "application/wasm");
        if let Some(signature) = signature {
            request = request.header(crate::signing::SIGNATURE_HEADER, signature);
        }
        self.send(request.body(artifact)).await?.json()
    }

    /// Installed plugins (the `items` of the admin list).
    pub async fn plugins(&self) -> Result<Value, ClientError> {
        self.get("/v1/admin/plugins").await?.json()
    }

    /// One installed plugin.
    pub async fn plugin(&self, id: &str) -> Result<Value, ClientError> {
        self.get(&format!("/v1/admin/plugins/{}", segment(id)?)).await?.json()
    }

    /// Enables (`true`) or disables a plugin for the whole platform.
    pub async fn set_plugin_enabled(&self, id: &str, enabled: bool) -> Result<(), ClientError> {
        let verb = if enabled { "enable" } else { "disable" };
        self.send_empty(Method::POST, &format!("/v1/admin/plugins/{}/{verb}", segment(id)?)).await?.success()?;
        Ok(())
    }

    /// Uninstalls a plugin, and with `purge` deletes its data in every tenant.
    pub async fn uninstall(&self, id: &str, purge: bool) -> Result<(), ClientError> {
        let path = format!("/v1/admin/plugins/{}?purge={purge}", segment(id)?);
        self.send_empty(Method::DELETE, &path).await?.success()?;
        Ok(())
    }

    /// Every tenant.
    pub async fn tenants(&self) -> Result<TenantList, ClientError> {
        self.get("/v1/admin/tenants").await?.json()
    }

    /// Creates a tenant.
    pub async fn create_tenant(&self, id: &str, name: &str) -> Result<Tenant, ClientError> {
        self.send_json(Method::POST, "/v1/admin/tenants", &json!({ "id": id, "name": name })).await?.json()
    }

    // A tenant's background work.

    /// A page of the tenant's jobs, newest first.
    pub async fn jobs(
        &self,
        tenant: &str,
        plugin: Option<&str>,
        status: Option<JobStatus>,
        kind: Option<JobKind>,
        limit: u32,
    ) -> Result<JobPage, ClientError> {
        let q = query(&[
            ("limit", Some(limit.to_string())),
            ("plugin", plugin.map(str::to_owned)),
            ("status", status.map(|s| s.to_string())),
            ("kind", kind.map(|k| k.as_str().to_owned())),
        ]);
        self.get(&format!("/v1/tenants/{}/jobs?{q}", segment(tenant)?)).await?.json()
    }

    /// One job with its attempts.
    pub async fn job(&self, tenant: &str, id: &str) -> Result<JobDetail, ClientError> {
        self.get(&format!("/v1/tenants/{}/jobs/{}", segment(tenant)?, segment(id)?)).await?.json()
    }

    /// Queues a dead or cancelled job again.
    pub async fn retry_job(&self, tenant: &str, id: &str) -> Result<JobRecord, ClientError> {
        let path = format!("/v1/tenants/{}/jobs/{}/retry", segment(tenant)?, segment(id)?);
        self.send_empty(Method::POST, &path).await?.json()
    }

    /// Cancels a queued job.
    pub async fn cancel_job(&self, tenant: &str, id: &str) -> Result<JobRecord, ClientError> {
        let path = format!("/v1/tenants/{}/jobs/{}/cancel", segment(tenant)?, segment(id)?);
        self.send_empty(Method::POST, &path).await?.json()
    }

    /// A page of the tenant's tasks, newest first.
    pub async fn tasks(
        &self,
        tenant: &str,
        plugin: Option<&str>,
        status: Option<TaskStatus>,
        limit: u32,
    ) -> Result<TaskPage, ClientError> {
        let q = query(&[
            ("limit", Some(limit.to_string())),
            ("plugin", plugin.map(str::to_owned)),
            ("status", status.map(|s| s.to_string())),
        ]);
        self.get(&format!("/v1/tenants/{}/tasks?{q}", segment(tenant)?)).await?.json()
    }

    /// One task with its progress.
    pub async fn task(&self, tenant: &str, id: &str) -> Result<TaskRecord, ClientError> {
        self.get(&format!("/v1/tenants/{}/tasks/{}", segment(tenant)?, segment(id)?)).await?.json()
    }

    /// Cancels a running (or failed) task.
    pub async fn cancel_task(&self, tenant: &str, id: &str) -> Result<TaskRecord, ClientError> {
        let path = format!("/v1/tenants/{}/tasks/{}/cancel", segment(tenant)?, segment(id)?);
        self.send_empty(Method::POST, &path).await?.json()
    }

    /// The tenant's schedules with their next and last runs.
    pub async fn schedules(&self, tenant: &str) -> Result<ScheduleList, ClientError> {
        self.get(&format!("/v1/tenants/{}/schedules", segment(tenant)?)).await?.json()
    }

    /// Runs a plugin's schedule now.
    pub async fn run_schedule(&self, tenant: &str, plugin: &str, name: &str) -> Result<QueuedJob, ClientError> {
        let path =
            format!("/v1/tenants/{}/plugins/{}/schedules/{}/run", segment(tenant)?, segment(plugin)?, segment(name)?);
        self.send_empty(Method::POST, &path).await?.json()
    }

    /// The tenant's event log after `after`, oldest first.
    pub async fn events(
        &self,
        tenant: &str,
        topic: Option<&str>,
        after: i64,
        limit: u32,
    ) -> Result<EventPage, ClientError> {
        let q = query(&[
            ("after", Some(after.to_string())),
            ("limit", Some(limit.to_string())),
            ("topic", topic.map(str::to_owned)),
        ]);
        self.get(&format!("/v1/tenants/{}/events?{q}", segment(tenant)?)).await?.json()
    }

    /// Delivers the events `from..=to` again to `subscriber`.
    pub async fn replay(&self, tenant: &str, subscriber: &str, from: i64, to: i64) -> Result<Replayed, ClientError> {
        let body = json!({ "subscriber": subscriber, "from_seq": from, "to_seq": to });
        self.send_json(Method::POST, &format!("/v1/tenants/{}/events/replay", segment(tenant)?), &body).await?.json()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_cannot_leave_their_path_segment() {
        assert_eq!(segment("job_1").unwrap(), "job_1");
        assert_eq!(segment("a/../admin").unwrap(), "a%2F..%2Fadmin");
        assert_eq!(segment("x?purge=true").unwrap(), "x%3Fpurge%3Dtrue");
        assert_eq!(segment("two words").unwrap(), "two%20words");
        for bad in ["", ".", ".."] {
            assert!(matches!(segment(bad), Err(ClientError::BadId(_))), "{bad:?}");
        }
    }

    #[test]
    fn a_problem_answer_is_a_typed_error_and_a_success_decodes() {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", "application/problem+json".parse().unwrap());
        let problem = Reply::from_parts(409, headers, br#"{"code":"job-state-conflict","detail":"job is done"}"#);
        assert!(problem.is_problem());
        match problem.success() {
            Err(ClientError::Problem { status, code, detail }) => {
                assert_eq!((status, code.as_str(), detail.as_str()), (409, "job-state-conflict", "job is done"))
            }
            other => panic!("{other:?}"),
        }
        let ok = Reply::from_parts(200, HeaderMap::new(), br#"{"job_id":"job_7"}"#);
        assert_eq!(ok.json::<QueuedJob>().unwrap().job_id, "job_7");
        let text = Reply::from_parts(502, HeaderMap::new(), b"bad gateway");
        assert_eq!(text.body, Value::String("bad gateway".into()));
        assert!(matches!(text.success(), Err(ClientError::Problem { code, .. }) if code == "error"));
    }
}
