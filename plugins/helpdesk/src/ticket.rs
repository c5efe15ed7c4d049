//! The helpdesk domain, free of host calls so it is unit-tested natively.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Where a ticket is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    New,
    Open,
    Pending,
    Resolved,
    Closed,
}

impl Status {
    pub const ALL: [Status; 5] = [Status::New, Status::Open, Status::Pending, Status::Resolved, Status::Closed];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::New => "new",
            Status::Open => "open",
            Status::Pending => "pending",
            Status::Resolved => "resolved",
            Status::Closed => "closed",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// The single place the workflow lives:
    /// new → open → pending ⇄ open → resolved → closed, and resolved → open (reopen).
    pub fn transition(self, to: Status) -> Result<Status, TransitionError> {
        use Status::*;
        match (self, to) {
            (New, Open)
            | (Open, Pending)
            | (Pending, Open)
            | (Open, Resolved)
            | (Resolved, Closed)
            | (Resolved, Open) => Ok(to),
            _ => Err(TransitionError { from: self, to }),
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransitionError {
    pub from: Status,
    pub to: Status,
}

impl fmt::Display for TransitionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a ticket cannot move from `{}` to `{}`", self.from, self.to)
    }
}

/// P1 (most urgent) to P4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Priority {
    P1,
    P2,
    P3,
    P4,
}

impl Priority {
    pub fn parse(s: &str) -> Option<Priority> {
        match s {
            "P1" => Some(Priority::P1),
            "P2" => Some(Priority::P2),
            "P3" => Some(Priority::P3),
            "P4" => Some(Priority::P4),
            _ => None,
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

/// A stored ticket. Field names are the API's names; `status`, `priority`, `assignee`,
/// `requester` and `category` are indexed (see plugin.toml).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ticket {
    pub number: u64,
    pub title: String,
    pub description: String,
    pub requester: String,
    pub priority: Priority,
    pub category: String,
    pub status: Status,
    pub assignee: Option<String>,
    pub comment_count: u32,
    pub created_at: u64,
    pub updated_at: u64,
    /// Deadlines and their state; absent on tickets filed before SLAs existed.
    #[serde(default)]
    pub sla: Option<crate::sla::Sla>,
    /// What another department filed it for (`crm:case:12`), through `keel:helpdesk/tickets`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// The reference people quote (`HD-000042`), set at filing since 0.9.0; the 0.9.0
    /// migration gives it to tickets filed before (and takes it away going back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
}

/// The reference of ticket `number`: `HD-` and at least six digits.
pub fn reference_of(number: u64) -> String {
    format!("HD-{number:06}")
}

/// A comment on a ticket, stored in its own collection keyed `<ticket key>/<seq>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comment {
    pub ticket: u64,
    pub seq: u32,
    pub author: String,
    pub body: String,
    pub created_at: u64,
}

pub const TITLE_MAX: usize = 200;
pub const DESCRIPTION_MAX: usize = 20_000;
pub const NAME_MAX: usize = 128;
pub const COMMENT_MAX: usize = 20_000;

/// A rule the input breaks: the field and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: &'static str,
    pub reason: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` {}", self.field, self.reason)
    }
}

fn field_error(field: &'static str, reason: impl Into<String>) -> FieldError {
    FieldError { field, reason: reason.into() }
}

/// Trims and checks a required text field.
pub fn required_text(field: &'static str, value: &str, max: usize) -> Result<String, FieldError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(field_error(field, "must not be empty"));
    }
    optional_text(field, value, max)
}

/// Trims and checks a text field that may be empty.
pub fn optional_text(field: &'static str, value: &str, max: usize) -> Result<String, FieldError> {
    let value = value.trim();
    if value.chars().count() > max {
        return Err(field_error(field, format!("must be at most {max} characters")));
    }
    if value.chars().any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r') {
        return Err(field_error(field, "must not contain control characters"));
    }
    Ok(value.to_owned())
}

pub fn priority(value: &str) -> Result<Priority, FieldError> {
    Priority::parse(value)
        .ok_or_else(|| field_error("priority", format!("must be one of P1, P2, P3, P4 (got `{value}`)")))
}

pub fn status(value: &str) -> Result<Status, FieldError> {
    Status::parse(value).ok_or_else(|| {
        field_error("status", format!("must be one of new, open, pending, resolved, closed (got `{value}`)"))
    })
}

/// Storage key of ticket `number`: zero-padded so key order is filing order.
pub fn ticket_key(number: u64) -> String {
    format!("{number:012}")
}

/// Parses the `{number}` path segment.
pub fn parse_number(segment: &str) -> Option<u64> {
    if segment.is_empty() || segment.len() > 12 || !segment.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    segment.parse().ok().filter(|n| *n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_table_allows_exactly_the_documented_moves() {
        let allowed = [
            (Status::New, Status::Open),
            (Status::Open, Status::Pending),
            (Status::Pending, Status::Open),
            (Status::Open, Status::Resolved),
            (Status::Resolved, Status::Closed),
            (Status::Resolved, Status::Open),
        ];
        for from in Status::ALL {
            for to in Status::ALL {
                let result = from.transition(to);
                if allowed.contains(&(from, to)) {
                    assert_eq!(result, Ok(to), "{from} -> {to} should be allowed");
                } else {
                    assert_eq!(result, Err(TransitionError { from, to }), "{from} -> {to} should be refused");
                }
            }
        }
    }

    #[test]
    fn closed_is_terminal() {
        assert!(Status::ALL.iter().all(|to| Status::Closed.transition(*to).is_err()));
    }

    #[test]
    fn text_fields_are_trimmed_and_bounded() {
        assert_eq!(required_text("title", "  printer  ", 10).unwrap(), "printer");
        assert!(required_text("title", "   ", 10).is_err());
        assert!(required_text("title", "abcdefghijk", 10).is_err());
        assert!(optional_text("description", "bell\u{7}", 10).is_err());
        assert_eq!(optional_text("description", "two\nlines", 10).unwrap(), "two\nlines");
    }

    #[test]
    fn priorities_and_statuses_parse_only_known_values() {
        assert_eq!(priority("P2").unwrap(), Priority::P2);
        assert!(priority("p2").is_err());
        assert!(priority("P5").is_err());
        assert_eq!(status("pending").unwrap(), Status::Pending);
        assert!(status("done").is_err());
    }

    #[test]
    fn ticket_numbers_parse_strictly_and_keys_sort_in_filing_order() {
        assert_eq!(parse_number("42"), Some(42));
        assert_eq!(parse_number("0"), None);
        assert_eq!(parse_number("-1"), None);
        assert_eq!(parse_number("4x"), None);
        assert_eq!(parse_number("9999999999999"), None);
        assert!(ticket_key(9) < ticket_key(10));
    }
}
