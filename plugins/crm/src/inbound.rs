//! Email in: what a mail relay posts (`POST /inbound/email`, the raw RFC 5322 message as
//! the body). The sender becomes a contact (found by address, else created); the message
//! threads onto the case it answers (a Message-ID it cites, ours or the customer's, or a
//! `[#number]` tag in the subject) when the sender belongs to that case, else it opens a new
//! case. The same message delivered twice makes one timeline entry.

use crate::cases::{self, CASES, MESSAGE_IDS, MessageRef, Opening};
use crate::desk::{self, hours_for};
use crate::mail::{self, Inbound};
use crate::model::{Channel, Contact, EmailMeta, EntryKind, Status, case_key};
use crate::now_ms;
use crate::people;
use keel_sdk::{Error, Request, Response, Versioned};
use serde_json::json;

/// Takes one raw message. Answers 201 with the case and entry it made, or 200 with those of
/// the first delivery when this message was seen before; 422 `not-an-email` for a body that
/// is not mail at all. Automatic mail (an auto-reply, a bounce, list mail) that answers no
/// case opens none: it is answered 202 and not kept.
pub fn email(req: &Request) -> Result<Response, Error> {
    let message = mail::parse(&req.body).map_err(|reason| Error::invalid("not-an-email", reason))?;
    if let Some(seen) = MESSAGE_IDS.get(&message.dedupe_key)? {
        return Response::json(200, &json!({ "case": seen.value.case, "seq": seen.value.seq, "duplicate": true }));
    }
    let now = now_ms();
    let known = people::existing_contact(&message.from)?;
    let target = thread_target(&message, known.as_ref())?;
    if message.automatic && target.as_ref().is_none_or(|c| c.value.status == Status::Closed) {
        // Nothing is written, not even a contact for a mailer daemon.
        keel_sdk::services::log_info(&format!("automatic mail from {} answers no case: not kept", message.from));
        return Response::json(202, &json!({ "case": null, "duplicate": false, "automatic": true, "kept": false }));
    }
    let contact = match known {
        Some(contact) => contact,
        None => people::contact_for_email(&message.from, message.from_name.as_deref())?.0,
    };
    let (mut stored, threaded) = match target {
        Some(existing) if existing.value.status != Status::Closed => (existing, true),
        // A message about a closed case opens a follow-up, which later messages about it join.
        found => {
            let opening = Opening {
                subject: if message.subject.is_empty() { "(no subject)".into() } else { message.subject.clone() },
                description: message.text.clone(),
                channel: Channel::Email,
                priority: None,
                team: None,
                assignee: None,
                tags: Vec::new(),
                contact: &contact,
                follow_up_of: found.as_ref().map(|c| c.value.number),
                at: now,
            };
            let case = cases::open(opening)?;
            if let Some(mut closed) = found {
                closed.value.followed_by = Some(case.number);
                CASES.update(&closed.key, &closed.value, closed.version)?;
            }
            (Versioned { key: case_key(case.number), version: 0, value: case }, false)
        }
    };
    let sla_before = stored.value.sla.clone();
    let case = &mut stored.value;
    let meta = EmailMeta {
        message_id: message.message_id.clone().unwrap_or_default(),
        subject: message.subject.clone(),
        from: message.from.clone(),
        to: message.to.clone(),
        in_reply_to: message.in_reply_to.first().cloned(),
        references: message.references.clone(),
        attachments: message.attachments.clone(),
        automatic: message.automatic,
    };
    let entry = cases::append(case, EntryKind::MessageIn, &message.from, message.text.clone(), Some(meta), None, now)?;
    // Created only if absent: of two deliveries racing, one commits and the other is run
    // again, then answers as a duplicate.
    MESSAGE_IDS.insert(&message.dedupe_key, &MessageRef { case: case.number, seq: entry.seq, outbound: false })?;
    if !message.automatic {
        if let Some(id) = &message.message_id {
            case.last_inbound = Some(id.clone());
            case.last_inbound_refs = message.references.clone();
        }
        case.last_inbound_from = Some(message.from.clone());
        if threaded {
            let hours = hours_for(case.team.as_deref())?;
            cases::customer_answered(case, now, &hours)?;
        }
    }
    if threaded {
        desk::settle(case, &sla_before)?;
        CASES.update(&stored.key, &stored.value, stored.version)?;
    } else {
        cases::insert(&stored.value)?;
    }
    Response::json(
        201,
        &json!({ "case": stored.value.number, "seq": entry.seq, "duplicate": false, "threaded": threaded,
                 "contact": contact.id, "automatic": message.automatic }),
    )
}

/// Follow-ups a closed case's thread is followed through.
const MAX_FOLLOW_UPS: usize = 10;

/// The case `message` answers: one whose message it cites (In-Reply-To, then References
/// from the newest, then a message a bounce returns), else the case tagged `[#n]` in its
/// subject; either only if the sender is that case's contact or of its customer (a stranger
/// citing an id or quoting a number opens a case of their own). A closed case that was
/// followed up answers with its follow-up.
fn thread_target(message: &Inbound, sender: Option<&Contact>) -> Result<Option<Versioned<cases::Case>>, Error> {
    let (mut found, mut cites_ours) = (None, false);
    for id in message.thread_ids() {
        if let Some(cited) = MESSAGE_IDS.get(&mail::id_key(&id))? {
            found = CASES.get(&case_key(cited.value.case))?;
            cites_ours = cited.value.outbound;
            break;
        }
    }
    if found.is_none()
        && let Some(number) = mail::case_tag(&message.subject)
    {
        found = CASES.get(&case_key(number))?;
    }
    let Some(mut case) = found else { return Ok(None) };
    // Bounces and auto-replies come from the mail system, about a message we sent (whose id
    // nobody else can know).
    let belongs = (message.automatic && cites_ours)
        || sender
            .is_some_and(|s| case.value.contact == s.id || (s.customer.is_some() && s.customer == case.value.customer));
    if !belongs {
        return Ok(None);
    }
    for _ in 0..MAX_FOLLOW_UPS {
        match case.value.followed_by {
            Some(next) if case.value.status == Status::Closed => match CASES.get(&case_key(next))? {
                Some(follow_up) => case = follow_up,
                None => break,
            },
            _ => break,
        }
    }
    Ok(Some(case))
}
