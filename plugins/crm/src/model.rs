//! The support desk's vocabulary: customers, contacts, cases and their timeline, with the
//! rules on their fields. Free of host calls, so it is unit-tested natively.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A customer's support tier: the SLA policies are per tier and priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    Standard,
    Premium,
    Enterprise,
}

impl Tier {
    pub const ALL: [Tier; 3] = [Tier::Standard, Tier::Premium, Tier::Enterprise];

    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Standard => "standard",
            Tier::Premium => "premium",
            Tier::Enterprise => "enterprise",
        }
    }

    pub fn parse(s: &str) -> Result<Tier, FieldError> {
        Tier::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| field_error("tier", format!("must be one of standard, premium, enterprise (got `{s}`)")))
    }
}

/// How urgent a case is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    Urgent,
    High,
    Normal,
    Low,
}

impl Priority {
    pub const ALL: [Priority; 4] = [Priority::Urgent, Priority::High, Priority::Normal, Priority::Low];

    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Urgent => "urgent",
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }

    pub fn parse(s: &str) -> Result<Priority, FieldError> {
        Priority::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| field_error("priority", format!("must be one of urgent, high, normal, low (got `{s}`)")))
    }
}

/// Where a case came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Email,
    Web,
    Phone,
    Chat,
}

impl Channel {
    pub fn parse(s: &str) -> Result<Channel, FieldError> {
        match s {
            "email" => Ok(Channel::Email),
            "web" => Ok(Channel::Web),
            "phone" => Ok(Channel::Phone),
            "chat" => Ok(Channel::Chat),
            _ => Err(field_error("channel", format!("must be one of email, web, phone, chat (got `{s}`)"))),
        }
    }
}

/// Where a case is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    New,
    Open,
    WaitingOnCustomer,
    Resolved,
    Closed,
}

impl Status {
    pub const ALL: [Status; 5] =
        [Status::New, Status::Open, Status::WaitingOnCustomer, Status::Resolved, Status::Closed];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::New => "new",
            Status::Open => "open",
            Status::WaitingOnCustomer => "waiting_on_customer",
            Status::Resolved => "resolved",
            Status::Closed => "closed",
        }
    }

    pub fn parse(s: &str) -> Result<Status, FieldError> {
        Status::ALL.into_iter().find(|st| st.as_str() == s).ok_or_else(|| {
            field_error(
                "status",
                format!("must be one of new, open, waiting_on_customer, resolved, closed (got `{s}`)"),
            )
        })
    }

    /// The workflow: new → open | waiting | resolved; open ⇄ waiting; open | waiting →
    /// resolved; resolved → open (reopened) | closed. Closed is final: a customer writing
    /// about a closed case opens a follow-up.
    pub fn transition(self, to: Status) -> Result<Status, TransitionError> {
        use Status::*;
        match (self, to) {
            (New, Open | WaitingOnCustomer | Resolved)
            | (Open, WaitingOnCustomer | Resolved)
            | (WaitingOnCustomer, Open | Resolved)
            | (Resolved, Open | Closed) => Ok(to),
            _ => Err(TransitionError { from: self, to }),
        }
    }

    /// Whether the case is still being worked (its clocks may run).
    pub fn is_active(self) -> bool {
        matches!(self, Status::New | Status::Open | Status::WaitingOnCustomer)
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
        write!(f, "a case cannot move from `{}` to `{}`", self.from, self.to)
    }
}

/// A company the desk supports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Customer {
    pub id: u64,
    pub name: String,
    /// The name lower-cased: what imports find a customer by.
    #[serde(default)]
    pub name_key: String,
    pub tier: Tier,
    pub created_at: u64,
    /// Set when merged into another customer: this one only points there.
    #[serde(default)]
    pub merged_into: Option<u64>,
}

/// A person who writes to the desk: one or more emails and phones, maybe of a customer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Contact {
    pub id: u64,
    pub name: String,
    pub emails: Vec<String>,
    #[serde(default)]
    pub phones: Vec<String>,
    pub customer: Option<u64>,
    pub created_at: u64,
    #[serde(default)]
    pub merged_into: Option<u64>,
}

/// A change of one field, as the timeline records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub field: String,
    pub from: serde_json::Value,
    pub to: serde_json::Value,
}

/// What a timeline entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// A message from the customer (email, web form).
    MessageIn,
    /// A reply to the customer, also queued in the outbox.
    MessageOut,
    /// An internal note.
    Note,
    /// A phone call logged by an agent.
    Call,
    /// A field changed.
    FieldChange,
    /// Escalated into the IT helpdesk, or what became of that ticket.
    Escalation,
    /// The customer rated the case after its resolution.
    Rating,
}

/// An attachment of a message, kept as metadata only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub name: Option<String>,
    pub content_type: String,
    pub size: u64,
    pub content_id: Option<String>,
}

/// One entry of a case's timeline, stored under `{case:010}/{seq:06}` so key order is time
/// order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub case: u64,
    pub seq: u32,
    pub at: u64,
    pub kind: EntryKind,
    /// Who: a user id for agents, the contact's address for customers.
    pub by: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub body: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<EmailMeta>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<Change>,
}

/// The mail headers of a message entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmailMeta {
    pub message_id: String,
    pub subject: String,
    pub from: String,
    pub to: Vec<String>,
    #[serde(default)]
    pub in_reply_to: Option<String>,
    #[serde(default)]
    pub references: Vec<String>,
    #[serde(default)]
    pub attachments: Vec<Attachment>,
    /// An auto-reply, bounce or list mail: recorded, but not the customer answering.
    #[serde(default)]
    pub automatic: bool,
}

pub fn entry_key(case: u64, seq: u32) -> String {
    format!("{}/{seq:06}", case_key(case))
}

pub fn case_key(number: u64) -> String {
    format!("{number:010}")
}

pub fn record_key(id: u64) -> String {
    format!("{id:010}")
}

pub const SUBJECT_MAX: usize = 250;
pub const BODY_MAX: usize = 100_000;
pub const NAME_MAX: usize = 200;
pub const TAG_MAX: usize = 40;
pub const TAGS_MAX: usize = 20;
pub const EMAILS_MAX: usize = 10;

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

pub fn field_error(field: &'static str, reason: impl Into<String>) -> FieldError {
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

/// A one-line text field (a subject, a name): as [`required_text`], and no line breaks or
/// tabs, so it can never carry a header into a mail.
pub fn required_line(field: &'static str, value: &str, max: usize) -> Result<String, FieldError> {
    let value = required_text(field, value, max)?;
    if value.contains(['\r', '\n', '\t']) {
        return Err(field_error(field, "must be one line"));
    }
    Ok(value)
}

/// Cuts `text` to at most `max` characters, saying so at the end.
pub fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}\n[… cut at {max} characters]", &text[..end]),
        None => text.to_owned(),
    }
}

/// An email address, lower-cased: `local@domain` with a dotted domain, no spaces or angle
/// brackets, at most 254 characters.
pub fn email(field: &'static str, value: &str) -> Result<String, FieldError> {
    let value = value.trim().to_lowercase();
    let valid = value.len() <= 254
        && value.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !domain.contains('@')
        })
        && !value.chars().any(|c| c.is_whitespace() || c.is_control() || "<>(),;:\"[]\\".contains(c));
    if valid { Ok(value) } else { Err(field_error(field, format!("`{value}` is not an email address"))) }
}

/// Tags: trimmed, lower-case, letters, digits, '-', '_' and '.', unique, at most 20.
pub fn tags(values: &[String]) -> Result<Vec<String>, FieldError> {
    let mut out: Vec<String> = Vec::new();
    for raw in values {
        let tag = raw.trim().to_lowercase();
        if tag.is_empty()
            || tag.chars().count() > TAG_MAX
            || !tag.chars().all(|c| c.is_alphanumeric() || "-_.".contains(c))
        {
            return Err(field_error("tags", format!("`{raw}` is not a tag (letters, digits, - _ ., up to {TAG_MAX})")));
        }
        if !out.contains(&tag) {
            out.push(tag);
        }
    }
    if out.len() > TAGS_MAX {
        return Err(field_error("tags", format!("at most {TAGS_MAX} tags")));
    }
    Ok(out)
}

/// Parses a `{number}` path segment.
pub fn parse_number(segment: &str) -> Option<u64> {
    if segment.is_empty() || segment.len() > 10 || !segment.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    segment.parse().ok().filter(|n| *n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workflow_allows_exactly_the_documented_moves() {
        use Status::*;
        let allowed = [
            (New, Open),
            (New, WaitingOnCustomer),
            (New, Resolved),
            (Open, WaitingOnCustomer),
            (Open, Resolved),
            (WaitingOnCustomer, Open),
            (WaitingOnCustomer, Resolved),
            (Resolved, Open),
            (Resolved, Closed),
        ];
        for from in Status::ALL {
            for to in Status::ALL {
                assert_eq!(from.transition(to).is_ok(), allowed.contains(&(from, to)), "{from} -> {to}");
            }
        }
    }

    #[test]
    fn emails_are_lower_cased_and_checked() {
        assert_eq!(email("email", " Ana@Example.COM ").unwrap(), "ana@example.com");
        for bad in ["ana", "@example.com", "ana@example", "ana@.com", "a b@example.com", "<ana@x.org>", "ana@x.org."] {
            assert!(email("email", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tags_are_normalised_unique_and_bounded() {
        assert_eq!(tags(&["VIP".into(), " vip ".into(), "billing-2".into()]).unwrap(), ["vip", "billing-2"]);
        assert!(tags(&["two words".into()]).is_err());
        assert!(tags(&(0..21).map(|i| format!("t{i}")).collect::<Vec<_>>()).is_err());
    }

    #[test]
    fn one_line_fields_refuse_line_breaks() {
        assert_eq!(required_line("subject", " Invoice ", 20).unwrap(), "Invoice");
        assert!(required_line("subject", "Invoice\r\nBcc: eve@x.test", 100).is_err());
        assert!(required_text("body", "two\nlines", 100).is_ok());
    }

    #[test]
    fn long_text_is_clipped_on_a_character_boundary() {
        assert_eq!(clip("héllo", 10), "héllo");
        assert_eq!(clip("héllo", 2), "hé\n[… cut at 2 characters]");
    }

    #[test]
    fn keys_sort_in_time_and_numbers_parse_strictly() {
        assert!(entry_key(2, 9) < entry_key(2, 10));
        assert!(entry_key(2, 999_999) < entry_key(10, 1));
        assert_eq!(parse_number("17"), Some(17));
        assert_eq!(parse_number("0"), None);
        assert_eq!(parse_number("1e3"), None);
        assert_eq!(Tier::parse("premium").unwrap(), Tier::Premium);
        assert!(Priority::parse("P1").is_err());
    }
}
