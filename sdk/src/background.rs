//! Background work: enqueue jobs, publish events, and the [`Job`] and [`Event`] a plugin's
//! [`Plugin::run_job`](crate::Plugin::run_job) and [`Plugin::on_event`](crate::Plugin::on_event)
//! receive.
//!
//! Jobs and events a call asks for are committed together with its storage writes: if the
//! handler returns an error (or traps), none of them happen. Delivery is at least once, so
//! handlers that change state should use [`first_time`] to skip a repeat.

use crate::bindings::exports::keel::platform::worker as wit;
use crate::bindings::keel::platform::{events, jobs, storage};
use crate::error::Error;
use crate::http::Caller;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A job to enqueue: see [`enqueue`].
///
/// ```no_run
/// use keel_sdk::JobSpec;
/// # fn main() -> Result<(), keel_sdk::Error> {
/// let id = JobSpec::new("send-reminder", &serde_json::json!({ "ticket": 42 }))?
///     .run_at(keel_sdk::services::now_ms() + 3_600_000)
///     .idempotency_key("reminder-42")
///     .enqueue()?;
/// # let _ = id; Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct JobSpec {
    name: String,
    payload: String,
    run_at: Option<u64>,
    idempotency_key: Option<String>,
}

impl JobSpec {
    /// A job named `name` (1-64 of a-z, 0-9, '-', '_', '.') carrying `payload` as JSON.
    pub fn new<T: Serialize + ?Sized>(name: &str, payload: &T) -> Result<JobSpec, Error> {
        Ok(JobSpec {
            name: name.to_owned(),
            payload: serde_json::to_string(payload)?,
            run_at: None,
            idempotency_key: None,
        })
    }

    /// Not before this time (ms since the epoch, host clock).
    pub fn run_at(mut self, at_ms: u64) -> JobSpec {
        self.run_at = Some(at_ms);
        self
    }

    /// A second enqueue with the same key (in this tenant) is a no-op returning the first id.
    pub fn idempotency_key(mut self, key: &str) -> JobSpec {
        self.idempotency_key = Some(key.to_owned());
        self
    }

    /// Enqueues the job; returns its id. Needs the `jobs` capability.
    pub fn enqueue(self) -> Result<String, Error> {
        enqueue(self)
    }
}

/// Enqueues a job, committed with this call's writes. Needs the `jobs` capability.
///
/// ```no_run
/// # fn main() -> Result<(), keel_sdk::Error> {
/// let id = keel_sdk::enqueue(keel_sdk::JobSpec::new("reindex", &serde_json::json!({}))?)?;
/// # let _ = id; Ok(()) }
/// ```
pub fn enqueue(spec: JobSpec) -> Result<String, Error> {
    Ok(jobs::enqueue(&jobs::JobSpec {
        name: spec.name,
        payload: spec.payload,
        run_at: spec.run_at,
        idempotency_key: spec.idempotency_key,
    })?)
}

/// Publishes `payload` as JSON on `topic` (which must be `<this plugin's id>.<name>`),
/// committed with this call's writes. Returns the event id. Needs the `events` capability.
///
/// ```no_run
/// # fn main() -> Result<(), keel_sdk::Error> {
/// keel_sdk::publish("helpdesk.ticket.created", &serde_json::json!({ "number": 7 }))?;
/// # Ok(()) }
/// ```
pub fn publish<T: Serialize + ?Sized>(topic: &str, payload: &T) -> Result<String, Error> {
    Ok(events::publish(topic, &serde_json::to_string(payload)?)?)
}

/// Records that the work identified by `id` (an event or job id) is being done, in
/// `collection` (one the manifest declares), and says whether this is the first time.
/// The record is written with the handler's other writes, so it exists exactly when they
/// were committed: a repeat delivery finds it and can return early.
///
/// ```no_run
/// # fn on_event(event: &keel_sdk::Event) -> Result<(), keel_sdk::Error> {
/// if !keel_sdk::first_time("processed", &event.id)? {
///     return Ok(()); // already applied by an earlier delivery
/// }
/// // ... apply the event ...
/// # Ok(()) }
/// ```
pub fn first_time(collection: &str, id: &str) -> Result<bool, Error> {
    match storage::put(collection, id, "{}", storage::WriteCondition::Absent) {
        Ok(_) => Ok(true),
        Err(crate::bindings::keel::platform::types::Error::Conflict(_)) => Ok(false),
        Err(other) => Err(other.into()),
    }
}

/// A job the host runs: enqueued by this plugin, or fired by one of its schedules.
///
/// ```no_run
/// use keel_sdk::{Error, Job};
/// use serde::Deserialize;
///
/// #[derive(Deserialize)]
/// struct Remind { ticket: u64 }
///
/// fn run_job(job: &Job) -> Result<(), Error> {
///     match job.name.as_str() {
///         "sla-check" if job.scheduled => Ok(()), // a manifest schedule, due at `job.due_at`
///         "remind" => {
///             let remind: Remind = job.payload()?; // 422-style error if the payload is wrong
///             keel_sdk::services::log_info(&format!("reminding about {} (attempt {})", remind.ticket, job.attempt));
///             Ok(())
///         }
///         other => Err(Error::invalid("unknown-job", other)),
///     }
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// Stable across attempts.
    pub id: String,
    /// The job's name, or the schedule's name.
    pub name: String,
    /// JSON text; `{}` for a scheduled run.
    pub payload: String,
    /// 1 on the first attempt.
    pub attempt: u32,
    /// Whether a schedule started this run.
    pub scheduled: bool,
    /// When it was due (ms since the epoch, host clock).
    pub due_at: u64,
    /// The tenant it runs for, with every permission the plugin declares.
    pub caller: Caller,
}

impl Job {
    /// The payload, decoded.
    pub fn payload<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_str(&self.payload).map_err(|e| Error::invalid("invalid-payload", e.to_string()))
    }

    pub(crate) fn from_wit(caller: Caller, job: wit::Job) -> Job {
        Job {
            id: job.id,
            name: job.name,
            payload: job.payload,
            attempt: job.attempt,
            scheduled: job.scheduled,
            due_at: job.due_at,
            caller,
        }
    }
}

/// An event delivered to a subscriber.
///
/// ```no_run
/// use keel_sdk::{Error, Event};
///
/// fn on_event(event: &Event) -> Result<(), Error> {
///     if !keel_sdk::first_time("processed", &event.id)? {
///         return Ok(()); // delivered before: at least once means maybe twice
///     }
///     let breach: serde_json::Value = event.payload()?;
///     keel_sdk::services::log_info(&format!("{} from {}: ticket {}", event.topic, event.source, breach["number"]));
///     Ok(())
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Stable across deliveries: use it to skip repeats.
    pub id: String,
    /// e.g. `helpdesk.ticket.sla_breached`.
    pub topic: String,
    /// The tenant it happened in (the same as the caller's).
    pub tenant: String,
    /// The plugin that published it.
    pub source: String,
    /// When it was committed (ms since the epoch, host clock).
    pub published_at: u64,
    /// JSON text.
    pub payload: String,
    /// 1 on the first delivery attempt.
    pub attempt: u32,
    /// The tenant it runs for, with every permission the plugin declares.
    pub caller: Caller,
}

impl Event {
    /// The payload, decoded.
    pub fn payload<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_str(&self.payload).map_err(|e| Error::invalid("invalid-payload", e.to_string()))
    }

    pub(crate) fn from_wit(caller: Caller, event: wit::Event) -> Event {
        Event {
            id: event.id,
            topic: event.topic,
            tenant: event.tenant,
            source: event.source,
            published_at: event.published_at,
            payload: event.payload,
            attempt: event.attempt,
            caller,
        }
    }
}
