//! Write Keel department plugins in ordinary Rust.
//!
//! A plugin is a type implementing [`Plugin`], whose [`Router`] maps `(method, route pattern)`
//! to handler functions, exported with [`export_plugin!`]. Handlers read typed requests,
//! store typed documents in [`Collection`]s, and return a [`Response`] or an [`Error`] that
//! the SDK turns into an `application/problem+json` body. The generated WIT bindings stay
//! inside this crate: nothing a plugin author writes names a generated type.
//!
//! ```no_run
//! use keel_sdk::{export_plugin, Collection, Error, Plugin, Request, Response, Router};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Note { text: String }
//!
//! const NOTES: Collection<Note> = Collection::new("notes");
//!
//! fn get_note(req: &Request) -> Result<Response, Error> {
//!     let key = req.param("key")?;
//!     let note = NOTES.get(key)?.ok_or_else(|| Error::not_found("note-not-found", "no such note"))?;
//!     Response::json(200, &note.value)
//! }
//!
//! struct Notes;
//! impl Plugin for Notes {
//!     fn router() -> Router {
//!         Router::new().get("/notes/{key}", get_note)
//!     }
//! }
//! export_plugin!(Notes);
//! ```
//!
//! The routes a plugin serves, the permission each needs, its collections and indexed fields
//! are declared once, in the plugin's `plugin.toml` manifest; the host enforces them before
//! the plugin runs.
#![deny(missing_docs)]

mod background;
#[cfg(feature = "business-hours")]
pub mod business_hours;
mod collection;
#[doc(hidden)]
pub mod department;
mod error;
mod http;
mod import;
mod migrate;
mod router;
#[cfg(feature = "schema")]
pub mod schema;
mod sequence;
pub mod services;
pub mod task;

pub use background::{Event, Job, JobSpec, enqueue, first_time, publish};
pub use collection::{Collection, Page, Query, Search, Versioned};
pub use error::{Error, ErrorKind};
pub use http::{Caller, Paging, Request, Response};
pub use import::{Cells, ImportBatch, ImportRow, RowProblem};
pub use migrate::{Direction, Migration, MigrationStep};
pub use router::{Handler, Router};
pub use sequence::Sequence;
pub use task::TaskSpec;

/// Generated WIT bindings. Not part of the public API: use the types re-exported above.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "keel:platform/department",
        pub_export_macro: true,
        export_macro_name: "__export_keel_plugin",
        default_bindings_module: "keel_sdk::bindings",
    });
}

/// A department plugin: the routes it serves and, optionally, its background work.
pub trait Plugin {
    /// The routing table. Called once per request (each request runs in a fresh instance),
    /// so keep it to building the table.
    fn router() -> Router;

    /// Runs a job this plugin enqueued, or a firing of one of its manifest schedules (then
    /// [`Job::scheduled`] is true and [`Job::name`] is the schedule's name). An error fails
    /// the attempt: the host retries with backoff, then dead-letters the job.
    fn run_job(job: &Job) -> Result<(), Error> {
        Err(Error::internal("no-job-handler", format!("this plugin does not run job `{}`", job.name)))
    }

    /// Handles an event of a topic the manifest subscribes to. Delivery is at least once:
    /// see [`first_time`]. An error fails the delivery, which is retried like a job.
    fn on_event(event: &Event) -> Result<(), Error> {
        Err(Error::internal("no-event-handler", format!("this plugin does not handle `{}`", event.topic)))
    }

    /// Checks and stores a batch of rows of one of the imports the manifest declares under
    /// `[[imports]]`, returning the problems of the bad rows (see [`ImportBatch`]). The writes
    /// of every batch are committed together, only if no batch reported a problem. An error
    /// stops the whole import.
    fn import_rows(batch: &ImportBatch) -> Result<Vec<RowProblem>, Error> {
        Err(Error::invalid("no-importer", format!("this plugin does not import `{}`", batch.name)))
    }

    /// Migrates one chunk of the tenant's documents to this version's shape (or back, for a
    /// rollback), for the versions the manifest's `[[migrations]]` name (see [`Migration`]).
    /// An error leaves the tenant on its version with its data exactly as before.
    fn migrate(migration: &Migration) -> Result<MigrationStep, Error> {
        Err(Error::internal("no-migration", format!("this plugin does not migrate data from {}", migration.other)))
    }
}

/// The router's routes, for the host's upload check against the manifest.
#[doc(hidden)]
pub fn __declared_routes<P: Plugin>() -> Vec<bindings::exports::keel::platform::routes::Route> {
    P::router()
        .routes()
        .map(|(method, path)| bindings::exports::keel::platform::routes::Route {
            method: method.to_ascii_uppercase(),
            path: path.to_owned(),
        })
        .collect()
}

#[doc(hidden)]
pub fn __dispatch<P: Plugin>(
    caller: bindings::keel::platform::types::Caller,
    request: bindings::exports::keel::platform::handler::Request,
) -> bindings::exports::keel::platform::handler::Response {
    let request = Request::from_wit(caller, request);
    let response = match P::router().dispatch(&request) {
        Ok(response) => response,
        Err(error) => error.into_response(&request.request_id),
    };
    response.into_wit()
}

fn caller_of(caller: bindings::keel::platform::types::Caller) -> Caller {
    Caller {
        tenant: caller.tenant,
        user_id: caller.user_id,
        display_name: caller.display_name,
        permissions: caller.permissions,
    }
}

#[doc(hidden)]
pub fn __run_job<P: Plugin>(
    caller: bindings::keel::platform::types::Caller,
    job: bindings::exports::keel::platform::worker::Job,
) -> Result<(), bindings::keel::platform::types::Error> {
    P::run_job(&Job::from_wit(caller_of(caller), job)).map_err(Error::into_wit)
}

#[doc(hidden)]
pub fn __import_rows<P: Plugin>(
    caller: bindings::keel::platform::types::Caller,
    name: String,
    rows: Vec<bindings::exports::keel::platform::importer::ImportRow>,
) -> Result<Vec<bindings::exports::keel::platform::importer::RowProblem>, bindings::keel::platform::types::Error> {
    let batch =
        ImportBatch { name, caller: caller_of(caller), rows: rows.into_iter().map(ImportRow::from_wit).collect() };
    P::import_rows(&batch).map(|p| p.into_iter().map(RowProblem::into_wit).collect()).map_err(Error::into_wit)
}

#[doc(hidden)]
pub fn __migrate<P: Plugin>(
    direction: bindings::exports::keel::platform::migrator::Direction,
    other: String,
    cursor: Option<String>,
) -> Result<bindings::exports::keel::platform::migrator::MigrateStep, bindings::keel::platform::types::Error> {
    P::migrate(&Migration::from_wit(direction, other, cursor)).map(MigrationStep::into_wit).map_err(Error::into_wit)
}

#[doc(hidden)]
pub fn __on_event<P: Plugin>(
    caller: bindings::keel::platform::types::Caller,
    event: bindings::exports::keel::platform::worker::Event,
) -> Result<(), bindings::keel::platform::types::Error> {
    P::on_event(&Event::from_wit(caller_of(caller), event)).map_err(Error::into_wit)
}

/// Exports a [`Plugin`] as the component's `keel:platform/handler` and `keel:platform/worker`.
///
/// Use it once, at the crate root of a `cdylib` plugin crate.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        #[doc(hidden)]
        pub struct __KeelPluginExport;

        impl $crate::bindings::exports::keel::platform::handler::Guest for __KeelPluginExport {
            fn handle(
                caller: $crate::bindings::keel::platform::types::Caller,
                request: $crate::bindings::exports::keel::platform::handler::Request,
            ) -> $crate::bindings::exports::keel::platform::handler::Response {
                $crate::__dispatch::<$plugin>(caller, request)
            }
        }

        impl $crate::bindings::exports::keel::platform::worker::Guest for __KeelPluginExport {
            fn run_job(
                caller: $crate::bindings::keel::platform::types::Caller,
                job: $crate::bindings::exports::keel::platform::worker::Job,
            ) -> Result<(), $crate::bindings::keel::platform::types::Error> {
                $crate::__run_job::<$plugin>(caller, job)
            }

            fn on_event(
                caller: $crate::bindings::keel::platform::types::Caller,
                event: $crate::bindings::exports::keel::platform::worker::Event,
            ) -> Result<(), $crate::bindings::keel::platform::types::Error> {
                $crate::__on_event::<$plugin>(caller, event)
            }
        }

        impl $crate::bindings::exports::keel::platform::importer::Guest for __KeelPluginExport {
            fn import_rows(
                caller: $crate::bindings::keel::platform::types::Caller,
                name: String,
                rows: Vec<$crate::bindings::exports::keel::platform::importer::ImportRow>,
            ) -> Result<
                Vec<$crate::bindings::exports::keel::platform::importer::RowProblem>,
                $crate::bindings::keel::platform::types::Error,
            > {
                $crate::__import_rows::<$plugin>(caller, name, rows)
            }
        }

        impl $crate::bindings::exports::keel::platform::migrator::Guest for __KeelPluginExport {
            fn migrate(
                direction: $crate::bindings::exports::keel::platform::migrator::Direction,
                other: String,
                cursor: Option<String>,
            ) -> Result<
                $crate::bindings::exports::keel::platform::migrator::MigrateStep,
                $crate::bindings::keel::platform::types::Error,
            > {
                $crate::__migrate::<$plugin>(direction, other, cursor)
            }
        }

        impl $crate::bindings::exports::keel::platform::routes::Guest for __KeelPluginExport {
            fn declared() -> Vec<$crate::bindings::exports::keel::platform::routes::Route> {
                $crate::__declared_routes::<$plugin>()
            }
        }

        // Only components export symbols; native builds (unit tests) must link as plain libraries.
        #[cfg(target_arch = "wasm32")]
        $crate::bindings::__export_keel_plugin!(__KeelPluginExport with_types_in $crate::bindings);
    };
}
