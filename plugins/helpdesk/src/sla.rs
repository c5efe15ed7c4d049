//! Service-level agreements: per-priority targets for the first response and the resolution,
//! counted in the desk's business hours and paused while a ticket waits on its requester; the
//! deadlines and 80 % warnings they give a ticket, and the timers the scheduled check walks.
//! Free of host calls, so it is unit-tested natively.

use crate::ticket::Priority;
use keel_sdk::business_hours::{BusinessClock, Calendar, Deadline};
use serde::{Deserialize, Serialize};

const MINUTE_MS: u64 = 60_000;
/// A year: the longest target a policy may set.
pub const MAX_MINUTES: u64 = 525_600;

/// Targets for one priority, in business minutes from the ticket's creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub first_response_minutes: u64,
    pub resolution_minutes: u64,
}

impl Policy {
    /// What a tenant gets until it sets its own: P1 1 h / 4 h, P2 4 h / 1 d, P3 8 h / 3 d,
    /// P4 1 d / 5 d.
    pub fn default_for(priority: Priority) -> Policy {
        let (first_response_minutes, resolution_minutes) = match priority {
            Priority::P1 => (60, 4 * 60),
            Priority::P2 => (4 * 60, 24 * 60),
            Priority::P3 => (8 * 60, 3 * 24 * 60),
            Priority::P4 => (24 * 60, 5 * 24 * 60),
        };
        Policy { first_response_minutes, resolution_minutes }
    }

    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in
            [("first_response_minutes", self.first_response_minutes), ("resolution_minutes", self.resolution_minutes)]
        {
            if !(1..=MAX_MINUTES).contains(&v) {
                return Err(format!("`{name}` must be 1 to {MAX_MINUTES}"));
            }
        }
        if self.first_response_minutes > self.resolution_minutes {
            return Err("`first_response_minutes` must not exceed `resolution_minutes`".into());
        }
        Ok(())
    }
}

/// Which target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    FirstResponse,
    Resolution,
}

impl Target {
    pub fn as_str(self) -> &'static str {
        match self {
            Target::FirstResponse => "first_response",
            Target::Resolution => "resolution",
        }
    }
}

/// What a timer announces: the warning before a deadline, or its breach.
pub use keel_sdk::business_hours::Alarm as Kind;

/// Timers stored before warnings existed are breaches.
fn breach() -> Kind {
    Kind::Breach
}

/// A ticket's SLA as stored on it. Deadlines are in the desk's business hours and `null`
/// while the clock is paused (the ticket waits on its requester).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sla {
    pub policy: Policy,
    pub first_response_due: Option<u64>,
    pub resolution_due: Option<u64>,
    #[serde(default)]
    pub first_response_warn_at: Option<u64>,
    #[serde(default)]
    pub resolution_warn_at: Option<u64>,
    pub first_response_at: Option<u64>,
    pub resolved_at: Option<u64>,
    #[serde(default)]
    pub first_response_warned_at: Option<u64>,
    #[serde(default)]
    pub resolution_warned_at: Option<u64>,
    pub first_response_breached_at: Option<u64>,
    pub resolution_breached_at: Option<u64>,
    /// Business time used so far; absent on tickets filed before 0.7, whose clock has run
    /// since creation (see [`Sla::plan`]).
    #[serde(default)]
    pub clock: Option<BusinessClock>,
}

/// What a client sees: `breached` once any target was missed, `met` when resolved in time,
/// `paused` while waiting on the requester, otherwise `on_track`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    OnTrack,
    Paused,
    Met,
    Breached,
}

/// A pending warning or deadline, stored in the `sla_timers` collection under [`Timer::key`]
/// (one per ticket, target and kind). `due` is an `integer` index: the scheduled check asks
/// for the timers due by now, in time order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timer {
    pub ticket: u64,
    pub target: Target,
    pub due: u64,
    #[serde(default = "breach")]
    pub kind: Kind,
}

impl Timer {
    pub fn key(&self) -> String {
        match self.kind {
            // The pre-0.7 key, so timers stored then are still found and replaced.
            Kind::Breach => format!("{:013}-{:012}-{}", self.due, self.ticket, self.target.as_str()),
            Kind::Warning => format!("{:013}-{:012}-{}-warning", self.due, self.ticket, self.target.as_str()),
        }
    }
}

/// The desk's rules a deadline depends on: its business hours and when to warn.
pub struct Rules {
    pub calendar: Calendar,
    /// The business hours in force until `changed_at`, when `calendar` replaced them: a clock
    /// running across the change measures the time before it on these.
    pub previous: Calendar,
    pub changed_at: u64,
    /// Warn when this share of a target's business time is used (1-99).
    pub warn_percent: u64,
}

/// Where a ticket's clock comes from when it has none (filed before 0.7, when deadlines were
/// wall time and never paused): created at `created_at`, and stopped at `paused_at` if the
/// ticket was then waiting on its requester, resolved or closed.
#[derive(Debug, Clone, Copy)]
pub struct Origin {
    pub created_at: u64,
    pub paused_at: Option<u64>,
}

impl Sla {
    /// A ticket filed at `created_at` under `policy`: its clock starts at once.
    pub fn new(policy: Policy, created_at: u64, rules: &Rules) -> Sla {
        let origin = Origin { created_at, paused_at: None };
        let mut sla = Sla {
            policy,
            first_response_due: None,
            resolution_due: None,
            first_response_warn_at: None,
            resolution_warn_at: None,
            first_response_at: None,
            resolved_at: None,
            first_response_warned_at: None,
            resolution_warned_at: None,
            first_response_breached_at: None,
            resolution_breached_at: None,
            clock: Some(BusinessClock::started(created_at)),
        };
        sla.plan(rules, origin);
        sla
    }

    /// The ticket's clock, measured up to the last calendar change on the calendar then in
    /// force.
    fn clock(&mut self, rules: &Rules, origin: Origin) -> &mut BusinessClock {
        let clock = self.clock.get_or_insert_with(|| {
            let mut clock = BusinessClock::started(origin.created_at);
            if let Some(at) = origin.paused_at {
                clock.pause(&Calendar::always(), at);
            }
            clock
        });
        clock.rebase(&rules.previous, rules.changed_at);
        clock
    }

    /// One target as an SDK [`Deadline`] (the ticket stores its fields flat, as before 0.7).
    fn track(&self, target: Target) -> Deadline {
        let target_ms = self.target_ms(target);
        match target {
            Target::FirstResponse => Deadline {
                target_ms,
                due: self.first_response_due,
                warn_at: self.first_response_warn_at,
                met_at: self.first_response_at,
                warned_at: self.first_response_warned_at,
                breached_at: self.first_response_breached_at,
            },
            Target::Resolution => Deadline {
                target_ms,
                due: self.resolution_due,
                warn_at: self.resolution_warn_at,
                met_at: self.resolved_at,
                warned_at: self.resolution_warned_at,
                breached_at: self.resolution_breached_at,
            },
        }
    }

    fn set_track(&mut self, target: Target, t: Deadline) {
        match target {
            Target::FirstResponse => {
                (self.first_response_due, self.first_response_warn_at, self.first_response_at) =
                    (t.due, t.warn_at, t.met_at);
                (self.first_response_warned_at, self.first_response_breached_at) = (t.warned_at, t.breached_at);
            }
            Target::Resolution => {
                (self.resolution_due, self.resolution_warn_at, self.resolved_at) = (t.due, t.warn_at, t.met_at);
                (self.resolution_warned_at, self.resolution_breached_at) = (t.warned_at, t.breached_at);
            }
        }
    }

    fn target_ms(&self, target: Target) -> u64 {
        MINUTE_MS
            * match target {
                Target::FirstResponse => self.policy.first_response_minutes,
                Target::Resolution => self.policy.resolution_minutes,
            }
    }

    /// Recomputes the deadlines of the targets still pending from the clock, on the desk's
    /// current calendar. Met and breached targets keep theirs. A ticket from before 0.7 gets
    /// the clock it had then: wall time since creation, stopped if it was not running.
    pub fn plan(&mut self, rules: &Rules, origin: Origin) {
        let clock = *self.clock(rules, origin);
        for target in [Target::FirstResponse, Target::Resolution] {
            let mut t = self.track(target);
            t.plan(&clock, &rules.calendar, rules.warn_percent);
            self.set_track(target, t);
        }
    }

    pub fn state(&self) -> State {
        let (fr, res) = (self.track(Target::FirstResponse), self.track(Target::Resolution));
        if fr.breached_at.is_some() || res.breached_at.is_some() {
            State::Breached
        } else if res.met_at.is_some() {
            State::Met
        } else if self.clock.is_some_and(|c| !c.is_running()) {
            State::Paused
        } else {
            State::OnTrack
        }
    }

    /// The warnings and deadlines still to watch.
    pub fn timers(&self, ticket: u64) -> Vec<Timer> {
        let mut out = Vec::new();
        for target in [Target::FirstResponse, Target::Resolution] {
            for (kind, due) in self.track(target).alarms() {
                out.push(Timer { ticket, target, due, kind });
            }
        }
        out
    }

    /// A new priority's policy: pending targets are measured against it on the same clock,
    /// so from the ticket's creation (as Zendesk and Freshdesk do).
    pub fn repolicy(&mut self, policy: Policy, rules: &Rules, origin: Origin) {
        self.policy = policy;
        self.plan(rules, origin);
    }

    /// Records the first response (only the first counts).
    pub fn responded(&mut self, at: u64) {
        let mut t = self.track(Target::FirstResponse);
        if t.meet(at) {
            self.set_track(Target::FirstResponse, t);
        }
    }

    /// The ticket waits on its requester: the clocks stop (every pending target).
    pub fn pause(&mut self, rules: &Rules, at: u64, origin: Origin) {
        self.clock(rules, origin).pause(&rules.calendar, at);
        self.plan(rules, origin);
    }

    /// The requester answered (or the ticket was reopened): the clocks run again.
    pub fn resume(&mut self, rules: &Rules, at: u64, origin: Origin) {
        self.clock(rules, origin).resume(at);
        self.plan(rules, origin);
    }

    /// Resolving also counts as responding, and stops the clock: if the ticket is reopened,
    /// the time it spent resolved does not count.
    pub fn resolved(&mut self, rules: &Rules, at: u64, origin: Origin) {
        self.responded(at);
        let mut t = self.track(Target::Resolution);
        if t.meet(at) {
            self.set_track(Target::Resolution, t);
        }
        self.pause(rules, at, origin);
    }

    /// A reopened ticket's resolution clock runs again from where it stopped.
    pub fn reopened(&mut self, rules: &Rules, at: u64, origin: Origin) {
        self.resolved_at = None;
        self.resume(rules, at, origin);
    }

    /// Records what timer (`target`, `kind`) announces if it still holds at `now` (see
    /// [`Deadline::fire`]): what to publish, in order.
    pub fn fire(&mut self, target: Target, kind: Kind, now: u64) -> Vec<Kind> {
        let mut t = self.track(target);
        let fired = t.fire(kind, now);
        self.set_track(target, t);
        fired
    }

    /// When the target's warning or deadline falls (for the published event).
    pub fn due(&self, target: Target, kind: Kind) -> Option<u64> {
        let t = self.track(target);
        match kind {
            Kind::Warning => t.warn_at,
            Kind::Breach => t.due,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_sdk::business_hours::CalendarSpec;

    const H: u64 = 60 * MINUTE_MS;

    fn always() -> Calendar {
        Calendar::always()
    }

    fn rules(calendar: &Calendar) -> Rules {
        Rules { calendar: calendar.clone(), previous: Calendar::always(), changed_at: 0, warn_percent: 80 }
    }

    fn at(created_at: u64) -> Origin {
        Origin { created_at, paused_at: None }
    }

    const NONE: Vec<Kind> = Vec::new();

    #[test]
    fn deadlines_come_from_the_priority_policy() {
        let cal = always();
        let sla = Sla::new(Policy::default_for(Priority::P1), 1_000, &rules(&cal));
        assert_eq!((sla.first_response_due, sla.resolution_due), (Some(1_000 + H), Some(1_000 + 4 * H)));
        assert_eq!(sla.first_response_warn_at, Some(1_000 + 48 * MINUTE_MS));
        assert_eq!(sla.state(), State::OnTrack);
        let timers: Vec<_> = sla.timers(7).iter().map(|t| (t.target, t.kind)).collect();
        assert_eq!(
            timers,
            [
                (Target::FirstResponse, Kind::Warning),
                (Target::FirstResponse, Kind::Breach),
                (Target::Resolution, Kind::Warning),
                (Target::Resolution, Kind::Breach)
            ]
        );
    }

    #[test]
    fn a_priority_change_recomputes_only_pending_targets_from_creation() {
        let cal = always();
        let mut sla = Sla::new(Policy::default_for(Priority::P3), 0, &rules(&cal));
        sla.responded(2 * H);
        sla.repolicy(Policy::default_for(Priority::P1), &rules(&cal), at(0));
        assert_eq!(sla.first_response_due, Some(8 * H), "a met target keeps its deadline");
        assert_eq!(sla.resolution_due, Some(4 * H));
        assert_eq!(sla.timers(1).len(), 2, "the resolution's warning and breach");
    }

    #[test]
    fn warnings_and_breaches_happen_once_and_only_when_due_and_pending() {
        let cal = always();
        let mut sla = Sla::new(Policy::default_for(Priority::P1), 0, &rules(&cal));
        assert_eq!(sla.fire(Target::FirstResponse, Kind::Warning, 47 * MINUTE_MS), NONE, "not yet 80 %");
        assert_eq!(sla.fire(Target::FirstResponse, Kind::Warning, 48 * MINUTE_MS), [Kind::Warning]);
        assert_eq!(sla.fire(Target::FirstResponse, Kind::Warning, 50 * MINUTE_MS), NONE, "already warned");
        assert_eq!(sla.fire(Target::FirstResponse, Kind::Breach, H - 1), NONE, "not due yet");
        assert_eq!(sla.fire(Target::FirstResponse, Kind::Breach, H), [Kind::Breach]);
        assert_eq!(sla.fire(Target::FirstResponse, Kind::Breach, H + 1), NONE, "already breached");
        assert_eq!(sla.state(), State::Breached);
        sla.resolved(&rules(&cal), 2 * H, at(0));
        assert_eq!(sla.fire(Target::Resolution, Kind::Warning, 5 * H), NONE, "resolved: no warning");
        assert_eq!(sla.fire(Target::Resolution, Kind::Breach, 5 * H), NONE, "resolved in time");
        assert!(sla.timers(1).is_empty());
        // Both fell due before one check (the breach's timer first, as when they are due at
        // the same instant): the breach brings its warning, and the warning timer is then
        // a no-op.
        let mut late = Sla::new(Policy::default_for(Priority::P1), 0, &rules(&cal));
        assert_eq!(late.fire(Target::Resolution, Kind::Breach, 10 * H), [Kind::Warning, Kind::Breach]);
        assert_eq!(late.fire(Target::Resolution, Kind::Warning, 10 * H), NONE);
    }

    #[test]
    fn waiting_on_the_requester_pauses_every_pending_clock() {
        let cal = always();
        let r = rules(&cal);
        let mut sla = Sla::new(Policy::default_for(Priority::P1), 0, &r);
        sla.responded(10 * MINUTE_MS);
        sla.pause(&r, H, at(0));
        assert_eq!(sla.state(), State::Paused);
        assert_eq!(sla.resolution_due, None, "a paused ticket has no deadline");
        assert!(sla.timers(1).is_empty());
        assert_eq!(sla.fire(Target::Resolution, Kind::Breach, 5 * H), NONE, "no breach while paused");
        // Three hours later the requester answers: 1 h used, 3 h left.
        sla.resume(&r, 4 * H, at(0));
        assert_eq!(sla.resolution_due, Some(7 * H));
        assert_eq!(sla.resolution_warn_at, Some(4 * H + 132 * MINUTE_MS), "80 % of 4 h is 192 min; 60 used");
        assert_eq!(sla.first_response_due, Some(H), "a met target keeps its deadline");
        assert_eq!(sla.state(), State::OnTrack);
    }

    #[test]
    fn reopening_runs_the_resolution_clock_on_from_where_it_stopped() {
        let cal = always();
        let r = rules(&cal);
        let mut sla = Sla::new(Policy::default_for(Priority::P2), 0, &r);
        sla.resolved(&r, H, at(0));
        assert_eq!(sla.state(), State::Met);
        assert!(sla.timers(1).is_empty());
        // Reopened ten hours later: the ten hours resolved do not count.
        sla.reopened(&r, 11 * H, at(0));
        assert_eq!(sla.state(), State::OnTrack);
        assert_eq!(sla.resolution_due, Some(34 * H));
        assert_eq!(sla.fire(Target::Resolution, Kind::Breach, 24 * H), NONE);
        assert_eq!(sla.fire(Target::Resolution, Kind::Breach, 34 * H), [Kind::Warning, Kind::Breach]);
    }

    #[test]
    fn business_hours_skip_the_weekend_and_holidays_and_a_pause() {
        // Berlin, Mon-Fri 09-17, Monday 2025-12-22 a holiday. P1 (1 h / 4 h) filed Fri
        // 2025-12-19 16:30 CET (15:30Z): 30 min on Friday, the rest from Tue 09:00.
        let cal = Calendar::new(
            serde_json::from_value::<CalendarSpec>(serde_json::json!({
                "time_zone": "Europe/Berlin",
                "hours": { "mon": ["09:00-17:00"], "tue": ["09:00-17:00"], "wed": ["09:00-17:00"],
                           "thu": ["09:00-17:00"], "fri": ["09:00-17:00"] },
                "holidays": ["2025-12-22"],
            }))
            .unwrap(),
        )
        .unwrap();
        let r = rules(&cal);
        let created = 1_766_158_200_000; // 2025-12-19T15:30:00Z
        let tue = 1_766_476_800_000; // 2025-12-23T08:00:00Z, 09:00 CET
        let mut sla = Sla::new(Policy::default_for(Priority::P1), created, &r);
        assert_eq!(sla.first_response_due, Some(tue + 30 * MINUTE_MS));
        assert_eq!(sla.first_response_warn_at, Some(tue + 18 * MINUTE_MS), "48 min: 30 Fri + 18 Tue");
        assert_eq!(sla.resolution_due, Some(tue + 210 * MINUTE_MS));
        // Answered and set waiting at Tue 09:10; the requester answers at Tue 14:00.
        sla.responded(tue + 10 * MINUTE_MS);
        sla.pause(&r, tue + 10 * MINUTE_MS, at(created));
        sla.resume(&r, tue + 5 * H, at(created));
        // 40 min used; 200 left from 14:00: 180 on Tuesday, 20 on Wednesday from 09:00.
        assert_eq!(sla.resolution_due, Some(tue + 24 * H + 20 * MINUTE_MS));
        assert_eq!(sla.resolution_warn_at, Some(tue + 5 * H + 152 * MINUTE_MS), "192 - 40 min after 14:00");
    }

    #[test]
    fn a_running_clock_measures_time_before_a_calendar_change_on_the_old_calendar() {
        // Filed Saturday 2025-03-08 12:00Z on 24/7 (P2: 4 h first response); at 13:00Z the
        // desk moves to weekdays 09-17 Berlin: 1 h used, 3 h left from Monday 09:00 CET.
        let berlin = Calendar::new(
            serde_json::from_value::<CalendarSpec>(serde_json::json!({
                "time_zone": "Europe/Berlin",
                "hours": { "mon": ["09:00-17:00"], "tue": ["09:00-17:00"] },
            }))
            .unwrap(),
        )
        .unwrap();
        let saturday = 1_741_435_200_000; // 2025-03-08T12:00:00Z
        let monday_0800z = saturday + 44 * H;
        let mut sla = Sla::new(Policy::default_for(Priority::P2), saturday, &rules(&Calendar::always()));
        let changed =
            Rules { calendar: berlin, previous: Calendar::always(), changed_at: saturday + H, warn_percent: 80 };
        sla.plan(&changed, at(saturday));
        assert_eq!(sla.clock.unwrap().consumed_ms, H);
        assert_eq!(sla.first_response_due, Some(monday_0800z + 3 * H));
    }

    #[test]
    fn tickets_from_before_business_hours_keep_their_wall_clock_deadlines() {
        let stored = serde_json::json!({
            "policy": { "first_response_minutes": 60, "resolution_minutes": 240 },
            "first_response_due": 1_000 + H, "resolution_due": 1_000 + 4 * H,
            "first_response_at": null, "resolved_at": null,
            "first_response_breached_at": null, "resolution_breached_at": null
        });
        let stored_clone = stored.clone();
        let mut sla: Sla = serde_json::from_value(stored).unwrap();
        let cal = always();
        sla.plan(&rules(&cal), at(1_000));
        assert_eq!((sla.first_response_due, sla.resolution_due), (Some(1_000 + H), Some(1_000 + 4 * H)));
        assert_eq!(sla.clock, Some(BusinessClock::started(1_000)));
        // One that was waiting on its requester gets a stopped clock: 2 h used, no deadline
        // until it resumes.
        let mut waiting: Sla = serde_json::from_value(stored_clone).unwrap();
        waiting.plan(&rules(&cal), Origin { created_at: 1_000, paused_at: Some(1_000 + 2 * H) });
        assert_eq!(waiting.state(), State::Paused);
        assert_eq!(waiting.resolution_due, None);
        waiting.resume(&rules(&cal), 10 * H, at(1_000));
        assert_eq!(waiting.resolution_due, Some(12 * H));
        let old_timer: Timer =
            serde_json::from_value(serde_json::json!({ "ticket": 3, "target": "resolution", "due": 5 })).unwrap();
        assert_eq!(old_timer.kind, Kind::Breach);
        assert_eq!(old_timer.key(), "0000000000005-000000000003-resolution");
    }

    #[test]
    fn policies_are_validated_and_timer_keys_sort_by_deadline() {
        assert!(Policy { first_response_minutes: 0, resolution_minutes: 5 }.validate().is_err());
        assert!(Policy { first_response_minutes: 10, resolution_minutes: 5 }.validate().is_err());
        assert!(Policy { first_response_minutes: 5, resolution_minutes: MAX_MINUTES + 1 }.validate().is_err());
        assert!(Policy::default_for(Priority::P4).validate().is_ok());
        let early = Timer { ticket: 99, target: Target::Resolution, due: 9_000, kind: Kind::Breach };
        let late = Timer { ticket: 1, target: Target::FirstResponse, due: 10_000, kind: Kind::Warning };
        assert!(early.key() < late.key());
    }
}
