//! Data migrations between versions of a plugin (`keel:platform@0.1.7`). A version whose
//! stored documents need another shape than an earlier one's declares, in `plugin.toml`,
//! which versions it migrates from, and whether it can migrate back:
//!
//! ```toml
//! [[migrations]]
//! from = "<2.0.0"   # the versions whose data this one migrates (a semver requirement)
//! down = true       # it can also turn its data back into theirs (a rollback)
//! ```
//!
//! When a tenant moves to such a version, the host calls [`Plugin::migrate`](crate::Plugin::migrate)
//! in chunks (first with no cursor, then with each [`MigrationStep::next`] until it is
//! `None`), each in a fresh instance, all sharing one unit of work that sees the tenant's
//! data as the earlier chunks left it. Requests keep going to the version the tenant runs
//! until the last chunk returns; then every chunk's writes are committed together with the
//! move, in one transaction. A chunk that traps, runs out of time or returns an error
//! leaves the tenant on its version with its data exactly as before.
//!
//! ```no_run
//! use keel_sdk::{Collection, Direction, Error, Migration, MigrationStep};
//! use serde_json::Value;
//!
//! const TICKETS: Collection<Value> = Collection::new("tickets");
//!
//! fn migrate(m: &Migration) -> Result<MigrationStep, Error> {
//!     let page = TICKETS.query().limit(200).cursor(m.cursor.as_deref()).fetch()?;
//!     for t in &page.items {
//!         let mut ticket = t.value.clone();
//!         match m.direction {
//!             Direction::Up => ticket["channel"] = "web".into(),
//!             Direction::Down => { ticket.as_object_mut().map(|o| o.remove("channel")); }
//!         }
//!         TICKETS.update(&t.key, &ticket, t.version)?;
//!     }
//!     Ok(MigrationStep { migrated: page.items.len() as u32, next: page.next })
//! }
//! ```

use crate::bindings::exports::keel::platform::migrator as wit;

/// Which way a migration runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the older [`Migration::other`] to this version.
    Up,
    /// From this version back to the older [`Migration::other`] (a rollback).
    Down,
}

/// One chunk of a migration the host asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    /// Up to this version, or down from it.
    pub direction: Direction,
    /// The version the tenant comes from (up) or goes back to (down).
    pub other: String,
    /// Where this chunk starts: `None` for the first, then the previous chunk's `next`.
    pub cursor: Option<String>,
}

/// What one chunk did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MigrationStep {
    /// Documents the chunk rewrote.
    pub migrated: u32,
    /// Where the next chunk starts; `None`: the migration is done.
    pub next: Option<String>,
}

impl Migration {
    pub(crate) fn from_wit(direction: wit::Direction, other: String, cursor: Option<String>) -> Self {
        let direction = match direction {
            wit::Direction::Up => Direction::Up,
            wit::Direction::Down => Direction::Down,
        };
        Migration { direction, other, cursor }
    }
}

impl MigrationStep {
    pub(crate) fn into_wit(self) -> wit::MigrateStep {
        wit::MigrateStep { migrated: self.migrated, next: self.next }
    }
}
