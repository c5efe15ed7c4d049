//! Integration tests: the real server, real compiled plugins, over HTTP.

mod admin;
mod departments;
mod fair_share;
mod helpdesk;
mod indexes;
mod hostile;
mod jobs;
mod leases;
mod python;
mod restart;
mod settings;
mod serializable;
mod sla;
mod tenancy;
mod uploads;
mod users;
