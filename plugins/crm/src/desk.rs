//! How the desk is set up: teams with their business hours, SLA policies per tier and
//! priority; and the minutely SLA check that publishes warnings and breaches.

use crate::cases::{CASES, Case};
use crate::model::{Priority, Tier};
use crate::sla::{Hours, Policy, Target, Timer};
use crate::{invalid, now_ms};
use keel_sdk::business_hours::{Alarm, Calendar, CalendarSpec};
use keel_sdk::{Collection, Error, Job, Request, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Teams by slug.
pub const TEAMS: Collection<Team> = Collection::new("teams");
/// Policies by `{tier}-{priority}`; missing ones are the defaults.
pub const SLA_POLICIES: Collection<Policy> = Collection::new("sla_policies");
pub const SLA_TIMERS: Collection<Timer> = Collection::new("sla_timers");

pub const SLA_WARNING: &str = "crm.case.sla_warning";
pub const SLA_BREACHED: &str = "crm.case.sla_breached";
/// Timers the check handles per run: each may rewrite its case and move four timers.
const SLA_BATCH: u32 = 80;
/// Cases a chunk of the re-planning task visits after a team's hours change.
const REPLAN_BATCH: u32 = 50;

/// A team: who works a case, and in which hours its SLA clocks run. No calendar means
/// around the clock in UTC. The hours it replaced at `changed_at` are kept so that clocks
/// running across the change measure the time before it on those.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Team {
    pub slug: String,
    pub name: String,
    pub calendar: Option<Calendar>,
    #[serde(default)]
    pub previous: Option<Calendar>,
    #[serde(default)]
    pub changed_at: u64,
}

fn warn_percent() -> u64 {
    keel_sdk::services::config("sla-warning-percent")
        .and_then(|v| v.parse().ok())
        .filter(|p| (1..=99).contains(p))
        .unwrap_or(80)
}

/// The hours a case of `team` is measured on (24/7 UTC without a team).
pub fn hours_for(team: Option<&str>) -> Result<Hours, Error> {
    let team = match team {
        Some(slug) => TEAMS.get(slug)?.map(|t| t.value),
        None => None,
    };
    let (calendar, previous, changed_at) = match team {
        Some(t) => (t.calendar, t.previous, t.changed_at),
        None => (None, None, 0),
    };
    Ok(Hours {
        calendar: calendar.unwrap_or_else(Calendar::always),
        previous: previous.unwrap_or_else(Calendar::always),
        changed_at,
        warn_percent: warn_percent(),
    })
}

pub fn policy_for(tier: Tier, priority: Priority) -> Result<Policy, Error> {
    Ok(SLA_POLICIES.get(&Policy::key(tier, priority))?.map_or_else(|| Policy::default_for(tier, priority), |p| p.value))
}

/// A team slug: 1-40 of a-z, 0-9 and '-'.
pub fn team_slug(value: &str) -> Result<String, Error> {
    let ok = !value.is_empty()
        && value.len() <= 40
        && value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(value.to_owned())
    } else {
        Err(Error::invalid("invalid-field", format!("`team` `{value}` is not a team slug (a-z, 0-9, '-')")))
    }
}

/// A team that exists.
pub fn existing_team(value: &str) -> Result<String, Error> {
    let slug = team_slug(value)?;
    if TEAMS.get(&slug)?.is_none() {
        return Err(Error::invalid("unknown-team", format!("there is no team `{slug}`")));
    }
    Ok(slug)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TeamInput {
    name: String,
    /// Business hours; `null` or absent: around the clock.
    calendar: Option<Value>,
}

fn team_view(team: &Team) -> Value {
    json!({ "slug": team.slug, "name": team.name,
            "calendar": team.calendar.as_ref().map(Calendar::spec) })
}

pub fn list_teams(_req: &Request) -> Result<Response, Error> {
    let page = TEAMS.query().limit(100).fetch()?;
    let items: Vec<Value> = page.items.iter().map(|t| team_view(&t.value)).collect();
    Response::json(200, &json!({ "items": items }))
}

/// Creates or changes a team. Changing its hours keeps the time its cases' clocks used so
/// far as measured on the old hours, and re-plans its active cases with a task.
pub fn put_team(req: &Request) -> Result<Response, Error> {
    let slug = team_slug(req.param("slug")?)?;
    let input: TeamInput = req.json()?;
    let name = crate::model::required_line("name", &input.name, crate::model::NAME_MAX).map_err(invalid)?;
    let calendar = match input.calendar {
        None | Some(Value::Null) => None,
        Some(spec) => {
            let spec: CalendarSpec =
                serde_json::from_value(spec).map_err(|e| Error::invalid("invalid-calendar", e.to_string()))?;
            Some(Calendar::new(spec)?)
        }
    };
    if let Some(calendar) = &calendar {
        check_reachable(calendar, None)?;
    }
    let stored = TEAMS.get(&slug)?;
    let created = stored.is_none();
    let old = stored.map(|s| s.value);
    let hours_changed = old.as_ref().is_some_and(|t| t.calendar != calendar);
    let team = match old {
        Some(old) if hours_changed => {
            Team { slug: slug.clone(), name, calendar, previous: old.calendar, changed_at: now_ms() }
        }
        Some(old) => Team { name, ..old },
        None => Team { slug: slug.clone(), name, calendar, previous: None, changed_at: 0 },
    };
    TEAMS.upsert(&slug, &team)?;
    if hours_changed {
        keel_sdk::TaskSpec::new("replan-sla", &format!("Re-plan the SLAs of team {slug}"), &json!({ "team": slug }))?
            .start()?;
    }
    Response::json(if created { 201 } else { 200 }, &team_view(&team))
}

/// Refuses hours under which some policy's resolution target (with `replacing` in place of
/// the stored one for its tier and priority) could not be met within ten years: such a case
/// would never have a deadline.
fn check_reachable(calendar: &Calendar, replacing: Option<(Tier, Priority, Policy)>) -> Result<(), Error> {
    let now = now_ms();
    for tier in Tier::ALL {
        for priority in Priority::ALL {
            let policy = match replacing {
                Some((t, p, policy)) if t == tier && p == priority => policy,
                _ => policy_for(tier, priority)?,
            };
            if calendar.add(now, policy.resolution_minutes * 60_000).is_none() {
                return Err(Error::invalid(
                    "unreachable-target",
                    format!(
                        "these hours leave the {} {} resolution target of {} minutes unreachable",
                        tier.as_str(),
                        priority.as_str(),
                        policy.resolution_minutes
                    ),
                ));
            }
        }
    }
    Ok(())
}

pub fn list_policies(_req: &Request) -> Result<Response, Error> {
    let mut items = Vec::new();
    for tier in Tier::ALL {
        for priority in Priority::ALL {
            let stored = SLA_POLICIES.get(&Policy::key(tier, priority))?;
            let custom = stored.is_some();
            let p = stored.map_or_else(|| Policy::default_for(tier, priority), |s| s.value);
            items.push(json!({ "tier": tier, "priority": priority, "custom": custom,
                               "first_response_minutes": p.first_response_minutes,
                               "resolution_minutes": p.resolution_minutes }));
        }
    }
    Response::json(200, &json!({ "items": items }))
}

/// Sets one policy. Cases opened from now on (and cases whose priority or customer tier
/// changes) use it; deadlines already promised stay.
pub fn put_policy(req: &Request) -> Result<Response, Error> {
    let tier = Tier::parse(req.param("tier")?).map_err(invalid)?;
    let priority = Priority::parse(req.param("priority")?).map_err(invalid)?;
    let policy: Policy = req.json()?;
    policy.validate().map_err(|e| Error::invalid("invalid-policy", e))?;
    for team in TEAMS.query().limit(100).fetch()?.items {
        if let Some(calendar) = &team.value.calendar {
            check_reachable(calendar, Some((tier, priority, policy)))?;
        }
    }
    SLA_POLICIES.upsert(&Policy::key(tier, priority), &policy)?;
    Response::json(
        200,
        &json!({ "tier": tier, "priority": priority, "custom": true,
                 "first_response_minutes": policy.first_response_minutes,
                 "resolution_minutes": policy.resolution_minutes }),
    )
}

/// The minutely check: timers due by now, in time order; each case is re-planned on its
/// team's current hours, and what still holds is recorded and published once.
pub fn check_sla() -> Result<(), Error> {
    let now = now_ms();
    let due = SLA_TIMERS.query().le("at", now).order_by("at").limit(SLA_BATCH).fetch()?;
    for timer in due.items {
        // Handling an earlier timer of the same case may have moved this one already.
        if !SLA_TIMERS.delete(&timer.key, None)? {
            continue;
        }
        let Some(mut stored) = CASES.get(&crate::model::case_key(timer.value.case))? else { continue };
        let case = &mut stored.value;
        let hours = hours_for(case.team.as_deref())?;
        let before: Vec<Timer> = case.sla.timers(case.number).into_iter().filter(|t| t.key() != timer.key).collect();
        let unchanged = case.sla.clone();
        case.sla.plan(&hours);
        let fired = case.sla.fire(timer.value.target, timer.value.alarm, now);
        if case.sla != unchanged {
            case.refresh();
            crate::reports::record(case, &unchanged, now)?;
            CASES.update(&stored.key, case, stored.version)?;
        }
        sync_timer_docs(&before, &case.sla.timers(case.number))?;
        for alarm in fired {
            publish_alarm(case, timer.value.target, alarm, now)?;
        }
    }
    Ok(())
}

fn publish_alarm(case: &Case, target: Target, alarm: Alarm, now: u64) -> Result<(), Error> {
    let d = case.sla.deadline(target);
    let topic = match alarm {
        Alarm::Warning => SLA_WARNING,
        Alarm::Breach => SLA_BREACHED,
    };
    keel_sdk::publish(
        topic,
        &json!({ "case": case.number, "target": target, "due_at": d.due, "warn_at": d.warn_at, "at": now,
                 "priority": case.priority, "tier": case.tier, "team": case.team, "assignee": case.assignee,
                 "subject": case.subject }),
    )?;
    Ok(())
}

/// Brings the stored timers from `old` to `new`.
pub fn sync_timer_docs(old: &[Timer], new: &[Timer]) -> Result<(), Error> {
    for t in old.iter().filter(|t| !new.contains(t)) {
        SLA_TIMERS.delete(&t.key(), None)?;
    }
    for t in new.iter().filter(|t| !old.contains(t)) {
        SLA_TIMERS.upsert(&t.key(), t)?;
    }
    Ok(())
}

#[derive(Serialize, Deserialize)]
struct ReplanChunk {
    team: String,
    #[serde(default)]
    cursor: Option<String>,
}

/// One chunk of re-planning a team's cases on its new hours.
pub fn replan_sla(job: &Job) -> Result<(), Error> {
    let chunk: ReplanChunk = job.payload()?;
    let hours = hours_for(Some(&chunk.team))?;
    let page = CASES.query().filter("team", &chunk.team).limit(REPLAN_BATCH).cursor(chunk.cursor.as_deref()).fetch()?;
    let done = page.items.len() as u64;
    for mut stored in page.items {
        let case = &mut stored.value;
        if !case.status.is_active() {
            continue;
        }
        let before = case.sla.clone();
        case.sla.plan(&hours);
        if case.sla != before {
            case.refresh();
            CASES.update(&stored.key, case, stored.version)?;
            sync_timer_docs(&before.timers(case.number), &case.sla.timers(case.number))?;
        }
    }
    let next = page.next.map(|cursor| ReplanChunk { team: chunk.team, cursor: Some(cursor) });
    keel_sdk::task::advance(done, next.as_ref())
}

/// After a change of `case` (its SLA was `before`): the fields lists query by, the report
/// counters, and its timers.
pub fn settle(case: &mut Case, before: &crate::sla::CaseSla) -> Result<(), Error> {
    case.refresh();
    crate::reports::record(case, before, now_ms())?;
    sync_timer_docs(&before.timers(case.number), &case.sla.timers(case.number))
}
