//! The host's other services: logging, configuration, the clock and finer permission checks.
//!
//! ```no_run
//! use keel_sdk::services;
//!
//! let now = services::now_ms(); // the host clock: tests move it, so never use the system's
//! let limit = services::config("max-open-tickets").and_then(|v| v.parse::<u32>().ok()).unwrap_or(50);
//! if !services::has_permission("helpdesk.agent") {
//!     services::log_warn("a non-agent asked for every ticket");
//! }
//! services::log_info(&format!("checked at {now}, limit {limit}"));
//! ```

use crate::bindings::keel::platform::{clock, config, identity, log};

/// Writes a log line at info level; the host adds plugin, tenant and request id.
pub fn log_info(message: &str) {
    log::write(log::Level::Info, message);
}

/// Writes a log line at warn level.
pub fn log_warn(message: &str) {
    log::write(log::Level::Warn, message);
}

/// Writes a log line at error level.
pub fn log_error(message: &str) {
    log::write(log::Level::Error, message);
}

/// Milliseconds since the Unix epoch, from the host's clock (which tests can move).
pub fn now_ms() -> u64 {
    clock::now()
}

/// A setting the plugin declares under `[[settings]]` in its manifest, as text (`"42"`,
/// `"true"`): the caller's tenant's value, else the declared default, else `None`. Needs the
/// `config` capability.
pub fn config(key: &str) -> Option<String> {
    config::get(key)
}

/// Asks the host whether the caller holds `permission` (one this plugin declares), for checks
/// finer than the route's. Needs the `identity` capability.
pub fn has_permission(permission: &str) -> bool {
    identity::has_permission(permission)
}
