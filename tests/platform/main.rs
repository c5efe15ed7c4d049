//! Integration tests: the real server, real compiled plugins, over HTTP.

mod admin;
mod crm;
mod departments;
mod fair_share;
mod helpdesk;
mod hostile;
mod hr;
mod imports;
mod indexes;
mod inventory;
mod jobs;
mod leases;
mod leave;
mod onboarding;
mod payroll;
mod portability;
mod python;
mod replicas;
mod restart;
mod serializable;
mod settings;
mod sla;
mod tasks;
mod tenancy;
mod uploads;
mod users;
