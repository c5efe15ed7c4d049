//! Long work in chunks. A task is a chain of jobs, one per chunk: each chunk does a bounded
//! piece (a call may write at most 1,000 documents), records how far it got and queues the
//! next chunk, all committed together with its writes. So a task survives a crash (the chunk
//! that was running runs again, none is applied twice), can be cancelled between chunks by an
//! admin, and shows its progress over the admin API (`GET /v1/tenants/{t}/tasks/{id}`) and
//! the CLI (`keel task watch`). Needs the `jobs` capability (`keel:platform@0.1.3`).
//!
//! ```no_run
//! use keel_sdk::{Collection, Error, Job, TaskSpec};
//! # #[derive(serde::Serialize, serde::Deserialize)] struct Employee { salary: String }
//! const EMPLOYEES: Collection<Employee> = Collection::new("employees");
//!
//! // In a route: start the task (its first chunk is queued when this call commits).
//! fn start_review(count: u64) -> Result<String, Error> {
//!     TaskSpec::new("review", "Annual salary review", &serde_json::json!({ "cursor": null }))?
//!         .total(count)
//!         .start()
//! }
//!
//! // In `Plugin::run_job`: each chunk walks the next page of 200 employees.
//! fn run_job(job: &Job) -> Result<(), Error> {
//!     match job.name.as_str() {
//!         "review" => keel_sdk::task::walk(job, EMPLOYEES.query().limit(200), |employee| {
//!             // ... change `employee.value`, write it back ...
//!             EMPLOYEES.update(&employee.key, &employee.value, employee.version)?;
//!             Ok(())
//!         }),
//!         other => Err(Error::invalid("unknown-job", other)),
//!     }
//! }
//! ```

use crate::background::Job;
use crate::bindings::keel::platform::tasks;
use crate::collection::{Query, Versioned};
use crate::error::Error;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A task to start: see the [module docs](self).
#[derive(Debug, Clone)]
pub struct TaskSpec {
    name: String,
    title: String,
    payload: String,
    total: Option<u64>,
}

impl TaskSpec {
    /// A task whose chunks run as jobs named `name` (1-64 of a-z, 0-9, '-', '_', '.'), shown
    /// to admins as `title`; the first chunk gets `payload` as JSON.
    pub fn new<T: Serialize + ?Sized>(name: &str, title: &str, payload: &T) -> Result<TaskSpec, Error> {
        Ok(TaskSpec { name: name.into(), title: title.into(), payload: serde_json::to_string(payload)?, total: None })
    }

    /// How many units the whole task has, for progress ("45,000 of 100,000").
    pub fn total(mut self, total: u64) -> TaskSpec {
        self.total = Some(total);
        self
    }

    /// Starts the task: its first chunk is queued with this call's writes. Returns its id.
    pub fn start(self) -> Result<String, Error> {
        Ok(tasks::start(&tasks::TaskSpec {
            name: self.name,
            title: self.title,
            payload: self.payload,
            total: self.total,
        })?)
    }
}

/// The id of the task the running job is a chunk of, if it is one.
pub fn current() -> Option<String> {
    tasks::current()
}

/// Ends this chunk: counts `done` more units and queues the next chunk with `next` as its
/// payload, or, with `None`, finishes the task. Committed with the chunk's writes; call it
/// once per chunk. A chunk that returns without calling it finishes the task.
pub fn advance<T: Serialize + ?Sized>(done: u64, next: Option<&T>) -> Result<(), Error> {
    let next = next.map(serde_json::to_string).transpose()?;
    Ok(tasks::advance(done, next.as_deref())?)
}

/// One chunk of a task that visits every document of a query: takes the page after the
/// cursor in the job's payload (`{"cursor": ...}`, `null` to begin), runs `work` on each
/// document, and advances the task by the page's size to the next page, or finishes it after
/// the last. Other fields of the payload are passed on to the next chunk unchanged.
///
/// `work` should only change the documents it is given (or write elsewhere): a chunk that
/// fails is run again from the same cursor, so a document is never counted twice.
pub fn walk<T, F>(job: &Job, query: Query<'_, T>, mut work: F) -> Result<(), Error>
where
    T: Serialize + DeserializeOwned,
    F: FnMut(Versioned<T>) -> Result<(), Error>,
{
    let mut payload: serde_json::Value = job.payload()?;
    let cursor = payload.get("cursor").and_then(|c| c.as_str()).map(str::to_owned);
    let page = query.cursor(cursor.as_deref()).fetch()?;
    let done = page.items.len() as u64;
    for item in page.items {
        work(item)?;
    }
    match page.next {
        Some(next) => {
            payload["cursor"] = serde_json::Value::String(next);
            advance(done, Some(&payload))
        }
        None => advance::<()>(done, None),
    }
}
