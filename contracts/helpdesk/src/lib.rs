//! The IT helpdesk's contract, WIT package `keel:helpdesk` (in this crate's `wit/`), for
//! plugins that file IT tickets or provide them. Errors on both sides are the SDK's
//! [`keel_sdk::Error`], with the provider's code kept.
//!
//! Filing a ticket from a handler (the manifest says
//! `requires = ["keel:helpdesk/tickets@0.1.0"]`):
//!
//! ```no_run
//! use keel_helpdesk::tickets::{self, NewTicket};
//! use keel_sdk::{Error, Request, Response};
//!
//! fn escalate(_req: &Request) -> Result<Response, Error> {
//!     // With the helpdesk disabled this is a 503 `department-unavailable`, by `?`.
//!     let t = tickets::open_ticket(&NewTicket {
//!         title: "Mail server rejects invoices".into(),
//!         description: "Customers get 550 since 09:00".into(),
//!         priority: Some("P2".into()),
//!         category: None,
//!         link: "crm:case:12".into(),
//!         requester: "ana".into(),
//!     })?;
//!     Response::json(201, &t.number)
//! }
//! ```
//!
//! Providing it (`provides = ["keel:helpdesk/tickets@0.1.0"]`): implement
//! [`provide::tickets::Guest`] and export it with [`export_tickets!`] beside the plugin.

mod consumer {
    wit_bindgen::generate!({ path: "wit", world: "keel:helpdesk/tickets-consumer" });
}

/// The tickets interface as a caller sees it.
pub use consumer::keel::helpdesk::tickets;

keel_sdk::department_errors!(tickets);

/// Generated export bindings. Use [`provide`] and [`export_tickets!`].
#[doc(hidden)]
pub mod provider_bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "keel:helpdesk/tickets-provider",
        pub_export_macro: true,
        export_macro_name: "__export_tickets",
        default_bindings_module: "keel_helpdesk::provider_bindings",
    });
}

/// Exports a type implementing [`provide::tickets::Guest`] as this component's
/// `keel:helpdesk/tickets`, beside the plugin's [`keel_sdk::export_plugin!`].
#[macro_export]
macro_rules! export_tickets {
    ($provider:ident) => {
        // Only components export symbols; native builds (unit tests) link as plain libraries.
        #[cfg(target_arch = "wasm32")]
        $crate::provider_bindings::__export_tickets!($provider with_types_in $crate::provider_bindings);
    };
}

/// What a provider implements: `Guest`, whose `Error` converts from [`keel_sdk::Error`].
pub mod provide {
    pub use crate::provider_bindings::exports::keel::helpdesk::tickets;
}

keel_sdk::department_errors!(provide::tickets);

#[cfg(test)]
mod tests {
    use super::{provide, tickets};
    use keel_sdk::{Error, ErrorKind};

    #[test]
    fn a_providers_error_reaches_the_caller_as_the_same_sdk_error() {
        let sent = Error::invalid("invalid-field", "`title` must not be empty").at_field("title");
        let provided: provide::tickets::Error = sent.clone().into();
        let provide::tickets::Error::Invalid(p) = provided else { panic!("invalid maps to the invalid case") };
        let received =
            Error::from(tickets::Error::Invalid(tickets::Problem { code: p.code, detail: p.detail, field: p.field }));
        assert_eq!(
            (received.kind(), received.code(), received.field()),
            (ErrorKind::Invalid, "invalid-field", Some("title"))
        );
        let down = Error::from(tickets::Error::Unavailable(tickets::Problem {
            code: String::new(),
            detail: "no provider".into(),
            field: None,
        }));
        assert_eq!((down.kind(), down.code()), (ErrorKind::Unavailable, "department-unavailable"));
    }
}
