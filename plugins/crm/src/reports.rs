//! Reports of first-response and resolution times per team, agent (the assignee) and tier,
//! over a period of UTC days. Counters are kept as cases meet or miss their targets, one
//! document per (dimension, day, key), so a report reads at most a year of days and never
//! walks the cases.

use crate::cases::Case;
use crate::sla::CaseSla;
use keel_sdk::{Collection, Error, Request, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::Digest;
use std::collections::BTreeMap;

pub const SLA_STATS: Collection<Stat> = Collection::new("sla_stats");
/// Days a report may span.
const MAX_DAYS: i32 = 366;
/// Counter documents a report reads (days × keys).
const MAX_DOCS: usize = 20_000;
/// Counter documents per (dimension, day, key): concurrent calls write different ones, so
/// they do not queue behind one hot document; a report adds them up.
const SHARDS: u64 = 8;

/// The counters of one key on one day.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    pub dim: String,
    pub key: String,
    pub day: String,
    pub first_responses: u64,
    pub first_response_ms: u64,
    pub first_response_breaches: u64,
    pub resolutions: u64,
    pub resolution_ms: u64,
    pub resolution_breaches: u64,
}

/// What changed between `before` and the case's SLA now.
#[derive(Debug, Default, PartialEq)]
struct Tally {
    first_response_ms: Option<u64>,
    first_response_breach: bool,
    resolution_ms: Option<u64>,
    resolution_breach: bool,
}

/// A response or resolution counts when its business time is recorded (late ones too: a
/// missed target is still answered); a breach when it is marked.
fn tally(before: &CaseSla, after: &CaseSla) -> Tally {
    Tally {
        first_response_ms: after.first_response_ms.filter(|_| before.first_response_ms.is_none()),
        first_response_breach: before.first_response.breached_at.is_none()
            && after.first_response.breached_at.is_some(),
        resolution_ms: after.resolution_ms.filter(|_| before.resolution_ms != after.resolution_ms),
        resolution_breach: before.resolution.breached_at.is_none() && after.resolution.breached_at.is_some(),
    }
}

/// The UTC day of `ms`.
fn day_of(ms: u64) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .map(|ts| ts.to_zoned(jiff::tz::TimeZone::UTC).date().to_string())
        .unwrap_or_else(|| "1970-01-01".into())
}

/// Counts what `case` met or missed since its SLA was `before`, on the counters of the day
/// of `at` for its team, its assignee and its tier.
pub fn record(case: &Case, before: &CaseSla, at: u64) -> Result<(), Error> {
    let t = tally(before, &case.sla);
    if t == Tally::default() {
        return Ok(());
    }
    let day = day_of(at);
    let keys = [
        ("team", case.team.clone().unwrap_or_else(|| "-".into())),
        ("agent", case.assignee.clone().unwrap_or_else(|| "-".into())),
        ("tier", case.tier.as_str().to_owned()),
    ];
    for (dim, key) in keys {
        // Keys are bounded in bytes: the (possibly long, any-script) name is hashed there
        // and kept whole in the document.
        let hash = hex::encode(&sha2::Sha256::digest(key.as_bytes())[..8]);
        let doc_key = format!("{dim}|{day}|{hash}|{}", case.number % SHARDS);
        let stored = SLA_STATS.get(&doc_key)?;
        let mut stat = stored.as_ref().map(|s| s.value.clone()).unwrap_or_else(|| Stat {
            dim: dim.into(),
            key: key.clone(),
            day: day.clone(),
            ..Stat::default()
        });
        if let Some(ms) = t.first_response_ms {
            stat.first_responses += 1;
            stat.first_response_ms += ms;
        }
        if let Some(ms) = t.resolution_ms {
            stat.resolutions += 1;
            stat.resolution_ms += ms;
        }
        stat.first_response_breaches += u64::from(t.first_response_breach);
        stat.resolution_breaches += u64::from(t.resolution_breach);
        match stored {
            Some(s) => SLA_STATS.update(&doc_key, &stat, s.version)?,
            None => SLA_STATS.insert(&doc_key, &stat)?,
        };
    }
    Ok(())
}

fn date(req: &Request, name: &str) -> Result<jiff::civil::Date, Error> {
    let text = req.query(name).ok_or_else(|| Error::invalid("invalid-field", format!("`{name}` is required")))?;
    text.parse().map_err(|_| Error::invalid("invalid-field", format!("`{name}` `{text}` is not a YYYY-MM-DD date")))
}

fn minutes(ms: u64, n: u64) -> serde_json::Value {
    match n {
        0 => serde_json::Value::Null,
        n => json!((ms as f64 / n as f64 / 60_000.0 * 10.0).round() / 10.0),
    }
}

/// `GET /reports/sla?from=YYYY-MM-DD&to=YYYY-MM-DD&by=team|agent|tier`: per key, how many
/// first responses and resolutions, their average business minutes, and how many targets
/// were missed, over the days from `from` to `to` (both included, UTC).
pub fn sla(req: &Request) -> Result<Response, Error> {
    let by = req.query("by").unwrap_or("team");
    if !["team", "agent", "tier"].contains(&by) {
        return Err(Error::invalid("invalid-field", format!("`by` must be team, agent or tier (got `{by}`)")));
    }
    let (from, to) = (date(req, "from")?, date(req, "to")?);
    let span = (to - from).get_days();
    if !(0..MAX_DAYS).contains(&span) {
        return Err(Error::invalid("invalid-period", format!("`to` must be from `from` to {MAX_DAYS} days after it")));
    }
    let mut totals: BTreeMap<String, Stat> = BTreeMap::new();
    let mut cursor: Option<String> = None;
    let mut read = 0;
    loop {
        let page = SLA_STATS
            .query()
            .filter("dim", by)
            .ge("day", from)
            .le("day", to)
            .order_by("day")
            .limit(500)
            .cursor(cursor.as_deref())
            .fetch()?;
        read += page.items.len();
        for stat in page.items {
            let s = stat.value;
            let total = totals.entry(s.key.clone()).or_default();
            total.first_responses += s.first_responses;
            total.first_response_ms += s.first_response_ms;
            total.first_response_breaches += s.first_response_breaches;
            total.resolutions += s.resolutions;
            total.resolution_ms += s.resolution_ms;
            total.resolution_breaches += s.resolution_breaches;
        }
        match page.next {
            Some(next) if read < MAX_DOCS => cursor = Some(next),
            Some(_) => {
                return Err(Error::invalid("report-too-large", "the period has too many counters; ask for fewer days"));
            }
            None => break,
        }
    }
    let items: Vec<_> = totals
        .into_iter()
        .map(|(key, t)| {
            json!({ by: key, "first_responses": t.first_responses,
                    "avg_first_response_minutes": minutes(t.first_response_ms, t.first_responses),
                    "first_response_breaches": t.first_response_breaches,
                    "resolutions": t.resolutions,
                    "avg_resolution_minutes": minutes(t.resolution_ms, t.resolutions),
                    "resolution_breaches": t.resolution_breaches })
        })
        .collect();
    Response::json(200, &json!({ "by": by, "from": from.to_string(), "to": to.to_string(), "items": items }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Priority, Tier};
    use crate::sla::{Hours, Policy};
    use keel_sdk::business_hours::Calendar;

    #[test]
    fn a_tally_counts_each_change_once() {
        let h = Hours { calendar: Calendar::always(), previous: Calendar::always(), changed_at: 0, warn_percent: 80 };
        let start = CaseSla::start(Policy::default_for(Tier::Standard, Priority::Normal), 0, &h);
        let mut answered = start.clone();
        answered.responded(90 * 60_000, &h);
        assert_eq!(tally(&start, &answered), Tally { first_response_ms: Some(90 * 60_000), ..Tally::default() });
        // Answering again changes nothing.
        let mut again = answered.clone();
        again.responded(100 * 60_000, &h);
        assert_eq!(tally(&answered, &again), Tally::default());
        let mut resolved = answered.clone();
        resolved.resolved(3 * 3_600_000, &h);
        assert_eq!(tally(&answered, &resolved).resolution_ms, Some(3 * 3_600_000));
        assert_eq!(day_of(1_766_158_200_000), "2025-12-19");
        // A late answer counts too: the target was missed, the customer still answered.
        let mut late = start.clone();
        late.fire(crate::sla::Target::FirstResponse, keel_sdk::business_hours::Alarm::Breach, 1_000 * 3_600_000);
        let breached = late.clone();
        late.responded(1_001 * 3_600_000, &h);
        assert!(tally(&start, &breached).first_response_breach);
        assert_eq!(tally(&breached, &late).first_response_ms, Some(1_001 * 3_600_000));
    }
}
