//! Email in and out: parsing a raw RFC 5322 message (multipart, transfer encodings, legacy
//! charsets, attachments as metadata) into what the desk needs, the ids a reply threads by,
//! whether a message is automatic (an auto-reply, bounce or list mail: recorded, but never
//! the customer answering), and the headers of an outgoing reply. Free of host calls, so it
//! is unit-tested natively.

use crate::model::{self, Attachment};
use mail_parser::{MessageParser, MimeHeaders};
use sha2::{Digest, Sha256};

/// Message ids a reply may cite (In-Reply-To, then References newest first) that are looked up.
pub const MAX_THREAD_IDS: usize = 20;
/// References carried on an outgoing reply: the first (the thread's root) and the last ten.
const MAX_REFERENCES: usize = 11;
/// Attachments recorded per message.
const MAX_ATTACHMENTS: usize = 50;
/// References kept from a message (the newest), addresses of To, and the longest id or
/// attachment name kept: mail headers are unbounded, stored documents are not.
const MAX_REFS_KEPT: usize = 20;
const MAX_TO: usize = 20;
const MAX_ID: usize = 250;

/// A parsed inbound message.
#[derive(Debug, Clone, PartialEq)]
pub struct Inbound {
    /// The Message-ID without angle brackets; `None` when the message has none.
    pub message_id: Option<String>,
    /// What makes two deliveries the same message: the Message-ID, else the raw bytes.
    pub dedupe_key: String,
    pub in_reply_to: Vec<String>,
    pub references: Vec<String>,
    /// Message-IDs of messages attached whole (a bounce carries the message it returns).
    pub attached_ids: Vec<String>,
    pub subject: String,
    /// The sender's address, lower-cased.
    pub from: String,
    pub from_name: Option<String>,
    pub to: Vec<String>,
    pub text: String,
    pub attachments: Vec<Attachment>,
    pub automatic: bool,
}

impl Inbound {
    /// The ids this message cites, most specific first: In-Reply-To, then References from
    /// the newest.
    pub fn thread_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = Vec::new();
        for id in self.in_reply_to.iter().chain(self.references.iter().rev()).chain(&self.attached_ids) {
            if !ids.contains(id) {
                ids.push(id.clone());
            }
        }
        ids.truncate(MAX_THREAD_IDS);
        ids
    }
}

/// The storage key of a message id (ids may be up to 998 characters; keys are short).
pub fn id_key(message_id: &str) -> String {
    let digest = Sha256::digest(strip_brackets(message_id).as_bytes());
    format!("m{}", &hex::encode(digest)[..40])
}

/// Everything after the header block, as text (invalid UTF-8 replaced).
fn raw_body(raw: &[u8]) -> String {
    let start = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
        .or_else(|| raw.windows(2).position(|w| w == b"\n\n").map(|p| p + 2))
        .unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[start..]).trim().to_owned()
}

/// A message id without brackets, if it is one we keep: non-empty, at most 250 characters,
/// no spaces or control characters.
fn valid_id(id: &str) -> Option<String> {
    let id = strip_brackets(id);
    let ok = !id.is_empty() && id.len() <= MAX_ID && !id.chars().any(|c| c.is_whitespace() || c.is_control());
    ok.then(|| id.to_owned())
}

fn strip_brackets(id: &str) -> &str {
    let id = id.trim();
    id.strip_prefix('<').and_then(|i| i.strip_suffix('>')).unwrap_or(id)
}

/// Parses a raw message. Refuses, with the reason, what is not mail at all: no header
/// block, or no sender address.
pub fn parse(raw: &[u8]) -> Result<Inbound, String> {
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Err("the message is empty".into());
    }
    let message = MessageParser::default().parse(raw).ok_or("no RFC 5322 header block was found")?;
    if message.headers().is_empty() {
        return Err("no RFC 5322 header block was found".into());
    }
    let sender = message.from().and_then(|f| f.first());
    let from = sender
        .and_then(|a| a.address())
        .ok_or("the message has no From address")
        .and_then(|a| model::email("from", a).map_err(|_| "the From address is not an email address"))?;
    let from_name = sender.and_then(|a| a.name()).map(|n| n.trim().to_owned()).filter(|n| !n.is_empty());
    let ids = |v: &mail_parser::HeaderValue| -> Vec<String> {
        let all: Vec<String> =
            v.as_text_list().map(|l| l.iter().filter_map(|s| valid_id(s)).collect()).unwrap_or_default();
        // The newest are what threading needs.
        all[all.len().saturating_sub(MAX_REFS_KEPT)..].to_vec()
    };
    let message_id = message.message_id().and_then(valid_id);
    let mut text = message.body_text(0).map(|t| t.trim().to_owned()).unwrap_or_default();
    if text.is_empty() {
        // A multipart whose boundary never closes (or another broken structure) yields no
        // body part: an unnamed text part, else the raw body, beats losing what was written.
        let unnamed_text = message
            .attachments()
            .find(|p| p.is_text() && p.attachment_name().is_none())
            .and_then(|p| p.text_contents())
            .map(|t| t.trim().to_owned());
        text = match unnamed_text {
            Some(t) => t,
            None if message.attachment_count() == 0 => raw_body(raw),
            None => String::new(),
        };
    }
    let subject = message.subject().unwrap_or_default().trim();
    // Without a Message-ID, what the sender wrote identifies a delivery (not the raw bytes:
    // each relay hop adds its own `Received:` line).
    let dedupe_key = match &message_id {
        Some(id) => id_key(id),
        None => {
            let date = message.header_raw("Date").unwrap_or_default().trim();
            let fingerprint = format!("{from}\n{date}\n{subject}\n{text}");
            format!("r{}", &hex::encode(Sha256::digest(fingerprint.as_bytes()))[..40])
        }
    };
    let to = message
        .to()
        .map(|to| {
            to.iter().filter_map(|a| a.address()).filter_map(|a| model::email("to", a).ok()).take(MAX_TO).collect()
        })
        .unwrap_or_default();
    let attached_ids = message
        .attachments()
        .filter_map(|part| part.message())
        .filter_map(|inner| inner.message_id().and_then(valid_id))
        .take(MAX_THREAD_IDS)
        .collect();
    let attachments = message
        .attachments()
        .take(MAX_ATTACHMENTS)
        .map(|part| Attachment {
            name: part.attachment_name().map(|n| n.chars().filter(|c| !c.is_control()).take(model::NAME_MAX).collect()),
            content_type: part
                .content_type()
                .map(|ct| match ct.subtype() {
                    Some(sub) => format!("{}/{sub}", ct.ctype()),
                    None => ct.ctype().to_owned(),
                })
                .unwrap_or_else(|| "application/octet-stream".into())
                .to_lowercase(),
            size: part.len() as u64,
            content_id: part.content_id().and_then(valid_id),
        })
        .collect();
    let automatic = is_automatic(&message, &from);
    Ok(Inbound {
        message_id,
        dedupe_key,
        in_reply_to: ids(message.in_reply_to()),
        references: ids(message.references()),
        attached_ids,
        subject: subject.chars().filter(|c| !c.is_control()).take(model::SUBJECT_MAX).collect(),
        from,
        from_name,
        to,
        text: model::clip(&text, model::BODY_MAX),
        attachments,
        automatic,
    })
}

/// Auto-replies, bounces and list mail (RFC 3834 `Auto-Submitted`, `Precedence`, Exchange's
/// `X-Auto-Response-Suppress`, list headers, delivery reports, the null sender and daemon
/// addresses): recorded on the timeline, but they neither resume a case's clock nor reopen
/// it, and never get an automatic answer.
fn is_automatic(message: &mail_parser::Message, from: &str) -> bool {
    let header = |name: &str| message.header_raw(name).map(|v| v.trim().to_ascii_lowercase());
    let auto_submitted = header("Auto-Submitted").is_some_and(|v| !v.starts_with("no"));
    let precedence = header("Precedence").is_some_and(|v| ["bulk", "list", "junk"].iter().any(|p| v.starts_with(p)));
    let suppress =
        header("X-Auto-Response-Suppress").is_some_and(|v| ["all", "oof", "autoreply"].iter().any(|p| v.contains(p)));
    let list = header("List-Id").is_some() || header("List-Unsubscribe").is_some();
    let null_sender = header("Return-Path").is_some_and(|v| v == "<>");
    let report = message.is_content_type("multipart", "report");
    let daemon = from.starts_with("mailer-daemon@") || from.starts_with("postmaster@");
    auto_submitted || precedence || suppress || list || null_sender || report || daemon
}

/// The case number tagged in a subject as `[#123]` (the last tag wins: ours is appended).
pub fn case_tag(subject: &str) -> Option<u64> {
    subject.rmatch_indices("[#").find_map(|(at, _)| {
        let rest = &subject[at + 2..];
        let end = rest.find(']')?;
        model::parse_number(&rest[..end])
    })
}

/// The subject of a reply: the base subject (without `Re:`/`AW:`/`Fwd:` prefixes and old
/// tags) as `Re: {subject} [#{number}]`.
pub fn reply_subject(subject: &str, number: u64) -> String {
    let mut base = subject.trim();
    loop {
        let lower = base.to_ascii_lowercase();
        let prefix = ["re:", "aw:", "sv:", "fw:", "fwd:", "wg:"].iter().find(|p| lower.starts_with(*p));
        match prefix {
            Some(p) => base = base[p.len()..].trim_start(),
            None => break,
        }
    }
    let tag = format!("[#{number}]");
    let base = base.replace(&tag, "");
    let base = base.trim();
    let base = if base.is_empty() { "Your request" } else { base };
    format!("Re: {base} {tag}")
}

/// The threading headers of an outgoing message: its own Message-ID (the case and entry,
/// and `token`, 64 random bits, so nobody outside can guess the id of a message they were
/// not sent), and when it answers `parent` (the last inbound message: id and References),
/// In-Reply-To that id and References the parent's References plus it, trimmed to the root
/// and the last ten.
pub fn outbound_ids(
    case: u64,
    seq: u32,
    token: u64,
    domain: &str,
    parent: Option<(&str, &[String])>,
) -> (String, Option<String>, Vec<String>) {
    let message_id = format!("case{case}.{seq}.{token:016x}@{domain}");
    let (in_reply_to, mut references) = match parent {
        Some((id, refs)) => (Some(id.to_owned()), refs.iter().cloned().chain([id.to_owned()]).collect::<Vec<_>>()),
        None => (None, Vec::new()),
    };
    if references.len() > MAX_REFERENCES {
        let tail = references.split_off(references.len() - (MAX_REFERENCES - 1));
        references.truncate(1);
        references.extend(tail);
    }
    (message_id, in_reply_to, references)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MULTIPART: &str = "From: \"Ana Souza\" <Ana@Example.com>\r\n\
To: support@acme.test\r\n\
Subject: =?UTF-8?B?UHJvYmzDqG1lIGRlIGZhY3R1cmU=?=\r\n\
Message-ID: <abc123@mail.example.com>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"XYZ\"\r\n\
\r\n\
--XYZ\r\n\
Content-Type: multipart/alternative; boundary=\"ALT\"\r\n\
\r\n\
--ALT\r\n\
Content-Type: text/plain; charset=ISO-8859-1\r\n\
Content-Transfer-Encoding: quoted-printable\r\n\
\r\n\
Ma facture est fausse, voir la pi=E8ce jointe.\r\n\
--ALT\r\n\
Content-Type: text/html; charset=UTF-8\r\n\
\r\n\
<p>Ma facture est fausse</p>\r\n\
--ALT--\r\n\
--XYZ\r\n\
Content-Type: application/pdf; name=\"invoice-42.pdf\"\r\n\
Content-Disposition: attachment; filename=\"invoice-42.pdf\"\r\n\
Content-Transfer-Encoding: base64\r\n\
\r\n\
JVBERi0xLjQKJcfsj6IKMSAwIG9iago8PD4+CmVuZG9iagp0cmFpbGVyCjw8Pj4KJSVFT0YK\r\n\
--XYZ--\r\n";

    #[test]
    fn a_multipart_message_with_an_attachment() {
        let m = parse(MULTIPART.as_bytes()).unwrap();
        assert_eq!(m.from, "ana@example.com");
        assert_eq!(m.from_name.as_deref(), Some("Ana Souza"));
        assert_eq!(m.subject, "Problème de facture");
        assert_eq!(m.message_id.as_deref(), Some("abc123@mail.example.com"));
        assert_eq!(m.dedupe_key, id_key("<abc123@mail.example.com>"));
        assert_eq!(m.text, "Ma facture est fausse, voir la pièce jointe.");
        assert_eq!(m.to, ["support@acme.test"]);
        assert_eq!(m.attachments.len(), 1);
        let a = &m.attachments[0];
        assert_eq!((a.name.as_deref(), a.content_type.as_str()), (Some("invoice-42.pdf"), "application/pdf"));
        assert_eq!(a.size, 54);
        assert!(!m.automatic);
    }

    #[test]
    fn replies_cite_their_parents_newest_first() {
        let raw = "From: ana@example.com\r\nSubject: Re: Problème [#12]\r\nMessage-ID: <r2@x>\r\n\
In-Reply-To: <p2@desk>\r\nReferences: <root@x> <p1@desk>\r\n <p2@desk>\r\n\r\nThanks\r\n";
        let m = parse(raw.as_bytes()).unwrap();
        assert_eq!(m.thread_ids(), ["p2@desk", "p1@desk", "root@x"]);
        assert_eq!(case_tag(&m.subject), Some(12));
        // Only References (as some clients send).
        let raw = "From: ana@example.com\r\nReferences: <root@x> <p1@desk>\r\n\r\nhi\r\n";
        assert_eq!(parse(raw.as_bytes()).unwrap().thread_ids(), ["p1@desk", "root@x"]);
    }

    #[test]
    fn without_a_message_id_what_the_sender_wrote_identifies_a_delivery() {
        let raw = "From: ana@example.com\r\nDate: Mon, 1 Dec 2025 10:00:00 +0100\r\nSubject: hi\r\n\r\nbody\r\n";
        let a = parse(raw.as_bytes()).unwrap();
        assert_eq!(a.message_id, None);
        assert!(a.dedupe_key.starts_with('r'));
        // The same message through another relay hop is the same delivery.
        let hop = format!("Received: from mx2.example.net by mx.acme.test\r\n{raw}");
        assert_eq!(parse(hop.as_bytes()).unwrap().dedupe_key, a.dedupe_key);
        let other = parse(raw.replace("body", "other").as_bytes()).unwrap();
        assert_ne!(other.dedupe_key, a.dedupe_key);
    }

    #[test]
    fn unbounded_headers_are_bounded_and_bounces_cite_what_they_return() {
        let refs: String = (0..100).map(|i| format!("<r{i}@x> ")).collect();
        let long = "x".repeat(300);
        let raw =
            format!("From: ana@example.com\r\nReferences: {refs}<{long}@x>\r\nMessage-ID: <{long}@x>\r\n\r\nhi\r\n");
        let m = parse(raw.as_bytes()).unwrap();
        assert_eq!(m.references.len(), 20);
        assert_eq!(m.references.last().map(String::as_str), Some("r99@x"), "the overlong id is dropped");
        assert_eq!(m.message_id, None);
        let bounce = "From: MAILER-DAEMON@mx.example.net\r\nSubject: Undelivered\r\n\
Content-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\r\n\r\n\
--b\r\nContent-Type: text/plain\r\n\r\nCould not deliver.\r\n\
--b\r\nContent-Type: message/rfc822\r\n\r\n\
From: support@desk.test\r\nMessage-ID: <case4.2.00000000000000aa@desk.test>\r\nSubject: Re: x [#4]\r\n\r\nhello\r\n\
--b--\r\n";
        let m = parse(bounce.as_bytes()).unwrap();
        assert!(m.automatic);
        assert_eq!(m.thread_ids(), ["case4.2.00000000000000aa@desk.test"]);
    }

    #[test]
    fn automatic_mail_is_recognised() {
        let cases = [
            "Auto-Submitted: auto-replied\r\n",
            "Precedence: bulk\r\n",
            "X-Auto-Response-Suppress: All\r\n",
            "List-Id: <announce.example.com>\r\n",
            "Return-Path: <>\r\n",
            "Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n",
        ];
        for header in cases {
            let raw = format!("From: ana@example.com\r\n{header}Subject: x\r\n\r\nbody\r\n");
            assert!(parse(raw.as_bytes()).unwrap().automatic, "{header}");
        }
        let daemon = parse(b"From: MAILER-DAEMON@mx.example.com\r\n\r\nbounce\r\n").unwrap();
        assert!(daemon.automatic);
        let human = parse(b"From: ana@example.com\r\nAuto-Submitted: no\r\n\r\nhi\r\n").unwrap();
        assert!(!human.automatic);
    }

    #[test]
    fn what_is_not_mail_is_refused_with_a_reason() {
        assert!(parse(b"").unwrap_err().contains("empty"));
        assert!(parse(b"   \r\n").unwrap_err().contains("empty"));
        assert!(parse(b"%PDF-1.4 binary junk \x00\x01\x02").is_err());
        assert!(parse(b"Subject: no sender\r\n\r\nbody\r\n").unwrap_err().contains("From"));
        assert!(parse(b"From: not an address\r\n\r\nbody\r\n").is_err());
    }

    #[test]
    fn reply_subjects_and_outbound_ids() {
        assert_eq!(reply_subject("Re: AW: Invoice wrong", 7), "Re: Invoice wrong [#7]");
        assert_eq!(reply_subject("Re: Invoice wrong [#7]", 7), "Re: Invoice wrong [#7]");
        assert_eq!(reply_subject("", 7), "Re: Your request [#7]");
        assert_eq!(case_tag("Re: [#3] about [#12]"), Some(12));
        assert_eq!(case_tag("price [#abc]"), None);
        let refs: Vec<String> = (0..15).map(|i| format!("r{i}@x")).collect();
        let (id, reply_to, references) = outbound_ids(12, 3, 0xbeef, "desk.acme.test", Some(("p@x", &refs)));
        assert_eq!(id, "case12.3.000000000000beef@desk.acme.test");
        assert_eq!(reply_to.as_deref(), Some("p@x"));
        assert_eq!(references.len(), 11);
        assert_eq!((references[0].as_str(), references[10].as_str()), ("r0@x", "p@x"));
        assert_eq!(outbound_ids(1, 1, 7, "d", None).2, Vec::<String>::new());
    }
}
