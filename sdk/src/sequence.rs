//! Named counters: ticket numbers, invoice numbers, run numbers. Needs the `sequences`
//! capability (`keel:platform@0.1.1` and later).
//!
//! ```no_run
//! use keel_sdk::Sequence;
//!
//! const TICKETS: Sequence = Sequence::new("ticket");
//!
//! # fn file() -> Result<(), keel_sdk::Error> {
//! let number = TICKETS.next()?; // 1, 2, 3, ... per tenant; concurrent calls never conflict
//! # Ok(()) }
//! ```
//!
//! A number is taken at once, in its own transaction: a call that fails after taking one does
//! not give it back, so a sequence can have gaps. It never hands out a number twice.

use crate::bindings::keel::platform::sequences;
use crate::error::Error;

/// A named counter of the caller's tenant and this plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sequence {
    name: &'static str,
}

impl Sequence {
    /// A sequence by name: 1-64 characters of a-z, 0-9, '-', '_' and '.'.
    pub const fn new(name: &'static str) -> Self {
        Sequence { name }
    }

    /// The sequence's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The next number (1 for a new sequence).
    pub fn next(&self) -> Result<u64, Error> {
        Ok(sequences::next(self.name)?)
    }

    /// Moves the sequence past `value` if it is not already (numbers carried over from an
    /// import or an older version of the plugin), then takes the next number.
    pub fn next_after(&self, value: u64) -> Result<u64, Error> {
        Ok(sequences::next_after(self.name, value)?)
    }
}
