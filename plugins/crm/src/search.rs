//! Full-text search, on the platform's index (the collections declare `search` in
//! plugin.toml): cases by subject, description and tags; their timelines by message and note
//! text; contacts by name, address and phone; customers by name.
//!
//! `GET /search?q=` answers the search box: the best cases (those whose own text matches,
//! then those with a matching message or note), contacts and customers. `GET /cases?q=`,
//! `/contacts?q=` and `/customers?q=` page through one kind, best first, with the list's
//! filters; `GET /search/messages?q=` pages through timeline entries.

use crate::cases::{CASES, Case, TIMELINE};
use crate::model::{self, Contact, Customer, Entry, EntryKind};
use crate::people::{CONTACTS, CUSTOMERS};
use keel_sdk::{Error, ErrorKind, Page, Request, Response, Search};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::BTreeSet;

/// Hits of each kind `GET /search` shows by default, and at most.
const OMNIBOX_DEFAULT: u32 = 10;
const OMNIBOX_MAX: u32 = 50;
/// Characters of an entry's text shown around the first match.
const EXCERPT_CHARS: usize = 160;

/// The search text of a request (`q`), trimmed; `None` without one or when it is blank (a
/// list with an empty search box is the plain list).
pub fn text(req: &Request) -> Option<&str> {
    req.query("q").map(str::trim).filter(|q| !q.is_empty())
}

/// The search text of a route that is nothing but a search.
fn required_text(req: &Request) -> Result<&str, Error> {
    text(req).ok_or_else(|| Error::bad_request("missing-q", "`q` (the words to search for) is required").at_field("q"))
}

/// Runs a search, saying which parameter a refusal is about.
pub fn fetch<T: Serialize + DeserializeOwned>(search: Search<'_, T>) -> Result<Page<T>, Error> {
    search.fetch().map_err(|e| match e.kind() {
        ErrorKind::Invalid if e.detail().contains("cursor") => {
            Error::invalid("invalid-cursor", e.detail().to_owned()).at_field("cursor")
        }
        ErrorKind::Invalid => Error::invalid("invalid-search", e.detail().to_owned()).at_field("q"),
        _ => e,
    })
}

/// A case a search found, with where it matched.
#[derive(Serialize)]
struct CaseHit<'a> {
    number: u64,
    subject: &'a str,
    status: &'a str,
    priority: &'a str,
    assignee: Option<&'a str>,
    team: Option<&'a str>,
    contact: u64,
    customer: Option<u64>,
    updated_at: u64,
    /// `case` (its subject, description or tags) or `timeline` (a message or note).
    matched_in: &'static str,
    /// The first matching entry, for a timeline match.
    #[serde(skip_serializing_if = "Option::is_none")]
    entry: Option<EntryHit>,
}

/// A timeline entry a search found.
#[derive(Serialize, Clone)]
struct EntryHit {
    case: u64,
    seq: u32,
    kind: EntryKind,
    at: u64,
    by: String,
    /// The email's subject, for a message.
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<String>,
    excerpt: String,
}

impl EntryHit {
    fn of(entry: &Entry, words: &[String]) -> EntryHit {
        EntryHit {
            case: entry.case,
            seq: entry.seq,
            kind: entry.kind,
            at: entry.at,
            by: entry.by.clone(),
            subject: entry.email.as_ref().map(|m| m.subject.clone()),
            excerpt: excerpt(&entry.body, words),
        }
    }
}

fn case_hit<'a>(case: &'a Case, matched_in: &'static str, entry: Option<EntryHit>) -> CaseHit<'a> {
    CaseHit {
        number: case.number,
        subject: &case.subject,
        status: case.status.as_str(),
        priority: case.priority.as_str(),
        assignee: case.assignee.as_deref(),
        team: case.team.as_deref(),
        contact: case.contact,
        customer: case.customer,
        updated_at: case.updated_at,
        matched_in,
        entry,
    }
}

/// The words of a search, lowercased, for excerpts.
fn words(q: &str) -> Vec<String> {
    q.split(|c: char| !c.is_alphanumeric()).filter(|w| w.chars().count() >= 2).map(str::to_lowercase).collect()
}

/// Up to `EXCERPT_CHARS` characters of `body` around the first of `words` it contains (from
/// the start when none is found as written: the index also matches without accents).
pub fn excerpt(body: &str, words: &[String]) -> String {
    let lower = body.to_lowercase();
    // Lowercasing can change byte lengths; only use the position when it maps back exactly.
    let at = if lower.len() == body.len() {
        words.iter().filter_map(|w| lower.find(w.as_str())).min().unwrap_or(0)
    } else {
        0
    };
    let chars: Vec<(usize, char)> = body.char_indices().collect();
    let index = chars.iter().position(|(i, _)| *i >= at).unwrap_or(0);
    let start = index.saturating_sub(EXCERPT_CHARS / 4);
    let end = (start + EXCERPT_CHARS).min(chars.len());
    let mut out: String = chars[start..end].iter().map(|(_, c)| if c.is_control() { ' ' } else { *c }).collect();
    out = out.split_whitespace().collect::<Vec<_>>().join(" ");
    if start > 0 {
        out.insert_str(0, "… ");
    }
    if end < chars.len() {
        out.push_str(" …");
    }
    out
}

/// `GET /search?q=&limit=`: the search box.
pub fn search(req: &Request) -> Result<Response, Error> {
    let q = required_text(req)?;
    let limit = req.paging(OMNIBOX_DEFAULT, OMNIBOX_MAX)?.limit;
    let words = words(q);

    let direct = fetch(CASES.search(q).limit(limit))?;
    let mut seen: BTreeSet<u64> = direct.items.iter().map(|c| c.value.number).collect();
    // Cases whose messages or notes match, in the order of their best entry, after those.
    let entries = fetch(TIMELINE.search(q).limit(limit.saturating_mul(2).min(100)))?;
    let mut via_timeline: Vec<(u64, EntryHit)> = Vec::new();
    for entry in &entries.items {
        if seen.insert(entry.value.case) {
            via_timeline.push((entry.value.case, EntryHit::of(&entry.value, &words)));
        }
    }
    let room = (limit as usize).saturating_sub(direct.items.len());
    via_timeline.truncate(room);
    let keys: Vec<String> = via_timeline.iter().map(|(n, _)| model::case_key(*n)).collect();
    let found = if keys.is_empty() { Vec::new() } else { CASES.get_many(&keys)? };

    let mut cases: Vec<CaseHit<'_>> = direct.items.iter().map(|c| case_hit(&c.value, "case", None)).collect();
    for ((_, hit), case) in via_timeline.into_iter().zip(&found) {
        if let Some(case) = case {
            cases.push(case_hit(&case.value, "timeline", Some(hit)));
        }
    }
    let contacts = live(fetch(CONTACTS.search(q).limit(limit))?.items, |c: &Contact| c.merged_into.is_none());
    let customers = live(fetch(CUSTOMERS.search(q).limit(limit))?.items, |c: &Customer| c.merged_into.is_none());
    Response::json(200, &serde_json::json!({ "cases": cases, "contacts": contacts, "customers": customers }))
}

/// The values of `items` that `keep` accepts (a merged contact or customer is only a pointer
/// to its survivor).
pub fn live<T>(items: Vec<keel_sdk::Versioned<T>>, keep: impl Fn(&T) -> bool) -> Vec<T> {
    items.into_iter().map(|v| v.value).filter(|v| keep(v)).collect()
}

/// `GET /search/messages?q=`: timeline entries (messages, notes, calls) best first, a page
/// at a time; `case=` keeps one case's.
pub fn messages(req: &Request) -> Result<Response, Error> {
    let q = required_text(req)?;
    let paging = req.paging(crate::DEFAULT_PAGE, crate::MAX_PAGE)?;
    let mut search = TIMELINE.search(q).limit(paging.limit).cursor(paging.cursor.as_deref());
    if let Some(case) = req.query("case") {
        let number = model::parse_number(case).ok_or_else(|| {
            Error::invalid("invalid-field", format!("`case` `{case}` is not a case number")).at_field("case")
        })?;
        search = search.eq("case", number);
    }
    let page = fetch(search)?;
    let words = words(q);
    let items: Vec<EntryHit> = page.items.iter().map(|e| EntryHit::of(&e.value, &words)).collect();
    Response::page(&items, page.next.as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts_centre_on_the_first_match_and_stay_short() {
        let body = format!("{} the printer jammed again {}", "word ".repeat(100), "tail ".repeat(100));
        let out = excerpt(&body, &words("Printer"));
        assert!(out.starts_with("… "), "{out}");
        assert!(out.ends_with(" …"), "{out}");
        assert!(out.contains("the printer jammed again"), "{out}");
        assert!(out.chars().count() <= EXCERPT_CHARS + 4);
        // No match as written (an accent the index folded): the start of the text.
        assert_eq!(excerpt("Crème brûlée\nis off", &words("creme")), "Crème brûlée is off");
        // Text whose lowercase changes length never cuts inside a character.
        let odd = "İstanbul office ".repeat(30);
        assert!(excerpt(&odd, &words("office")).starts_with("İstanbul"));
    }
}
