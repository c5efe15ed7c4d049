//! The HR department's contract, WIT package `keel:hr` (in this crate's `wit/`), for plugins
//! that call it or provide it. Errors on both sides are the SDK's [`keel_sdk::Error`], with
//! the provider's code kept.
//!
//! This crate's 0.4 carries `keel:hr@0.2.2`. A caller built with it needs a provider of 0.2.2
//! or later; a provider built with it also serves callers of 0.2.0 and 0.2.1.
//!
//! Calling the directory from a handler (the manifest says
//! `requires = ["keel:hr/directory@0.2.2"]`):
//!
//! ```no_run
//! use keel_sdk::{Error, Request, Response};
//!
//! fn show(req: &Request) -> Result<Response, Error> {
//!     // A provider's 404 `employee-not-found` passes through to the client by `?`.
//!     let e = keel_hr::directory::get_employee(req.param("id")?)?;
//!     Response::json(200, &e.name)
//! }
//! ```
//!
//! Providing it (`provides = ["keel:hr/directory@0.2.2"]`): implement
//! [`provide::directory::Guest`], returning SDK errors with `?` or `.into()`, and export it
//! beside the plugin:
//!
//! ```no_run
//! use keel_hr::provide::directory::{Employee, EmployeePage, EmployeeTimePage, Error, Guest, WorkingTime};
//!
//! struct Directory;
//!
//! fn not_found(id: &str) -> Error {
//!     keel_sdk::Error::not_found("employee-not-found", format!("no employee `{id}`")).into()
//! }
//!
//! impl Guest for Directory {
//!     fn get_employee(id: String) -> Result<Employee, Error> {
//!         Err(not_found(&id))
//!     }
//!     fn list_employees(_: Option<String>, _: Option<String>, _: u32) -> Result<EmployeePage, Error> {
//!         Ok(EmployeePage { employees: Vec::new(), next: None })
//!     }
//!     fn employees_active(_: String, _: String, _: Option<String>, _: u32) -> Result<EmployeePage, Error> {
//!         Ok(EmployeePage { employees: Vec::new(), next: None })
//!     }
//!     fn get_manager(id: String) -> Result<Option<Employee>, Error> {
//!         Err(not_found(&id))
//!     }
//!     fn get_working_time(id: String, _: String, _: String) -> Result<WorkingTime, Error> {
//!         Err(not_found(&id))
//!     }
//!     fn working_times(_: String, _: String, _: Option<String>, _: u32) -> Result<EmployeeTimePage, Error> {
//!         Ok(EmployeeTimePage { items: Vec::new(), next: None })
//!     }
//!     fn employee_for_user(_: String) -> Result<Option<Employee>, Error> {
//!         Ok(None)
//!     }
//! }
//!
//! keel_hr::export_directory!(Directory);
//! ```
//!
//! The host links a caller to whichever plugin enabled in the caller's tenant provides a
//! compatible version, at call time; when none does, the call answers `unavailable` with the
//! code `department-unavailable`.

mod consumer {
    wit_bindgen::generate!({ path: "wit", world: "keel:hr/directory-consumer" });
}

/// The directory as a caller sees it: functions returning the generated records, errors
/// that convert into [`keel_sdk::Error`] with `?`.
pub use consumer::keel::hr::directory;

keel_sdk::department_errors!(directory);

/// Generated export bindings. Use [`provide`] and [`export_directory!`].
#[doc(hidden)]
pub mod provider_bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "keel:hr/directory-provider",
        pub_export_macro: true,
        export_macro_name: "__export_directory",
        default_bindings_module: "keel_hr::provider_bindings",
    });
}

/// Exports a type implementing [`provide::directory::Guest`] as this component's
/// `keel:hr/directory`, beside the plugin's [`keel_sdk::export_plugin!`].
#[macro_export]
macro_rules! export_directory {
    ($provider:ident) => {
        // Only components export symbols; native builds (unit tests) link as plain libraries.
        #[cfg(target_arch = "wasm32")]
        $crate::provider_bindings::__export_directory!($provider with_types_in $crate::provider_bindings);
    };
}

/// What a provider implements. Its records are its own types (a plugin that both calls and
/// provides the directory converts between the two sides).
pub mod provide {
    /// `Guest` is the trait to implement; its `Error` converts from [`keel_sdk::Error`].
    pub use crate::provider_bindings::exports::keel::hr::directory;
}

keel_sdk::department_errors!(provide::directory);

#[cfg(test)]
mod tests {
    use super::{directory, provide};
    use keel_sdk::{Error, ErrorKind};

    #[test]
    fn a_providers_error_reaches_the_caller_as_the_same_sdk_error() {
        let sent = Error::invalid("department-empty", "name a department").at_field("department");
        // Provider side: what the generated export returns...
        let provided: provide::directory::Error = sent.clone().into();
        let provide::directory::Error::Invalid(p) = provided else { panic!("invalid maps to the invalid case") };
        // ...travels as the same WIT value, which the caller's bindings turn back.
        let received = Error::from(directory::Error::Invalid(directory::Problem {
            code: p.code,
            detail: p.detail,
            field: p.field,
        }));
        assert_eq!(received, sent);
        assert_eq!(received.kind(), ErrorKind::Invalid);
    }
}
