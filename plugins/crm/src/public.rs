//! What customers reach without signing in (the manifest's `public` routes, served under
//! `/v1/public/{tenant}/crm/...` and rate limited per client address by the host): the web
//! form that opens a case, and the satisfaction rating of a resolved case by the link its
//! resolving reply carried.

use crate::cases::{self, CASES};
use crate::model::{self, Channel, EntryKind, case_key};
use crate::{desk, now_ms, people};
use keel_sdk::{Collection, Error, Request, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// `{sha256(token)}` → the case it rates: a token is only ever in the email.
pub const RATINGS: Collection<RatingToken> = Collection::new("ratings");
const MESSAGE_MAX: usize = 20_000;
const COMMENT_MAX: usize = 2_000;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RatingToken {
    pub case: u64,
}

/// A case's satisfaction rating: the hash of the token its link carries (so no one who can
/// read the case can rate it), and the rating once given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Satisfaction {
    pub token_hash: String,
    pub score: Option<u8>,
    pub comment: Option<String>,
    pub rated_at: Option<u64>,
}

fn token_hash(token: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}

/// The token of `case`'s rating link if it has none yet (a case resolved again keeps its
/// first link): 128 random bits, of which the case keeps only the hash.
pub fn offer_rating(case: &mut cases::Case) -> Result<Option<String>, Error> {
    if case.satisfaction.is_some() {
        return Ok(None);
    }
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| Error::internal("no-randomness", e.to_string()))?;
    let token = hex::encode(bytes);
    let hash = token_hash(&token);
    RATINGS.insert(&hash, &RatingToken { case: case.number })?;
    case.satisfaction = Some(Satisfaction { token_hash: hash, score: None, comment: None, rated_at: None });
    Ok(Some(token))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FormInput {
    email: String,
    #[serde(default)]
    name: String,
    subject: String,
    message: String,
    /// Left empty by people; bots fill every field.
    #[serde(default)]
    website: String,
}

/// The web form's fields from JSON, or from `application/x-www-form-urlencoded` (what an
/// HTML form posts).
fn form_input(req: &Request) -> Result<FormInput, Error> {
    // `curl -d '{...}'` says urlencoded for a JSON body: the body's first byte decides then.
    let urlencoded = req.header("content-type").is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"))
        && req.body.first() != Some(&b'{');
    if !urlencoded {
        return req.json();
    }
    let mut fields = serde_json::Map::new();
    for (k, v) in form_urlencoded::parse(&req.body) {
        if fields.insert(k.to_string(), v.to_string().into()).is_some() {
            return Err(Error::invalid("invalid-field", format!("`{k}` is given twice")).at_field(k.to_string()));
        }
    }
    serde_json::from_value(serde_json::Value::Object(fields))
        .map_err(|e| Error::invalid("invalid-field", e.to_string()))
}

/// `POST /forms/case` (public): a customer opens a case. The address is checked, the text
/// bounded and one line where it must be; the sender becomes (or is) a contact.
pub fn web_form(req: &Request) -> Result<Response, Error> {
    let input = form_input(req)?;
    if !input.website.is_empty() {
        // A bot: answered as a person is, and nothing is kept.
        return Response::json(201, &json!({ "received": true }));
    }
    let invalid = |e: model::FieldError| Error::invalid("invalid-field", e.to_string()).at_field(e.field);
    let email = model::email("email", &input.email).map_err(invalid)?;
    let subject = model::required_line("subject", &input.subject, model::SUBJECT_MAX).map_err(invalid)?;
    let message = model::required_text("message", &input.message, MESSAGE_MAX).map_err(invalid)?;
    let name = model::optional_text("name", &input.name, model::NAME_MAX).map_err(invalid)?;
    let (contact, _) = people::contact_for_email(&email, Some(&name).filter(|n| !n.is_empty()).map(String::as_str))?;
    let now = now_ms();
    let opening = cases::Opening {
        subject,
        description: message.clone(),
        channel: Channel::Web,
        priority: None,
        team: None,
        assignee: None,
        tags: vec!["web-form".into()],
        contact: &contact,
        follow_up_of: None,
        at: now,
    };
    let mut case = cases::open(opening)?;
    // Anyone can type an address: a form case gets no better service than a stranger's
    // (the standard tier), whoever owns the address.
    if case.tier != model::Tier::Standard {
        case.tier = model::Tier::Standard;
        let hours = desk::hours_for(case.team.as_deref())?;
        case.sla = crate::sla::CaseSla::start(desk::policy_for(model::Tier::Standard, case.priority)?, now, &hours);
        case.refresh();
    }
    cases::append(&mut case, EntryKind::MessageIn, &email, message, None, None, now)?;
    case.last_inbound_from = Some(email);
    cases::insert(&case)?;
    // No case number: it would tell anyone the desk's volume.
    Response::json(201, &json!({ "received": true }))
}

fn rating_token(req: &Request) -> Result<(String, cases::Case, u64), Error> {
    let token = req.param("token")?;
    let unknown = || Error::not_found("rating-not-found", "this rating link is not valid");
    if token.len() != 32 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(unknown());
    }
    let hash = token_hash(token);
    let found = RATINGS.get(&hash)?.ok_or_else(unknown)?;
    let stored = CASES.get(&case_key(found.value.case))?.ok_or_else(unknown)?;
    if stored.value.satisfaction.as_ref().is_none_or(|s| s.token_hash != hash) {
        return Err(unknown());
    }
    Ok((token.to_owned(), stored.value, stored.version))
}

/// `GET /ratings/{token}` (public): what the link rates, and whether it was rated.
pub fn get_rating(req: &Request) -> Result<Response, Error> {
    let (_, case, _) = rating_token(req)?;
    let rated = case.satisfaction.as_ref().and_then(|s| s.score);
    Response::json(200, &json!({ "case": case.number, "subject": case.subject, "score": rated }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RatingInput {
    /// 1 (very unhappy) to 5 (very happy).
    score: u8,
    #[serde(default)]
    comment: String,
}

/// `POST /ratings/{token}` (public): the customer rates the case, once.
pub fn rate(req: &Request) -> Result<Response, Error> {
    let input: RatingInput = req.json()?;
    if !(1..=5).contains(&input.score) {
        return Err(Error::invalid("invalid-field", "`score` must be 1 to 5").at_field("score"));
    }
    let comment = model::optional_text("comment", &input.comment, COMMENT_MAX)
        .map_err(|e| Error::invalid("invalid-field", e.to_string()).at_field("comment"))?;
    let (_, mut case, version) = rating_token(req)?;
    let sla_before = case.sla.clone();
    let satisfaction = case.satisfaction.as_mut().ok_or_else(|| Error::not_found("rating-not-found", "no rating"))?;
    if satisfaction.score.is_some() {
        return Err(Error::conflict("already-rated", "this case was rated already; thank you"));
    }
    let now = now_ms();
    satisfaction.score = Some(input.score);
    satisfaction.comment = Some(comment.clone()).filter(|c| !c.is_empty());
    satisfaction.rated_at = Some(now);
    let body = match comment.is_empty() {
        true => format!("Rated {}/5", input.score),
        false => format!("Rated {}/5: {comment}", input.score),
    };
    let by = format!("contact {}", case.contact);
    cases::append(&mut case, EntryKind::Rating, &by, body, None, None, now)?;
    desk::settle(&mut case, &sla_before)?;
    CASES.update(&case_key(case.number), &case, version)?;
    Response::json(200, &json!({ "case": case.number, "score": input.score }))
}
