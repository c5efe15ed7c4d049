//! Service levels: first-response and resolution targets per customer tier and priority, in
//! business minutes of the case's team, on a clock that pauses while the case waits on the
//! customer (and while it is resolved). Free of host calls, so it is unit-tested natively.

use crate::model::{Priority, Tier};
use keel_sdk::business_hours::{Alarm, BusinessClock, Calendar, Deadline};
use serde::{Deserialize, Serialize};

const MINUTE_MS: u64 = 60_000;
/// A year of business minutes: the longest target a policy may set.
pub const MAX_MINUTES: u64 = 525_600;

/// Targets for one tier and priority, in business minutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub first_response_minutes: u64,
    pub resolution_minutes: u64,
}

impl Policy {
    /// What a desk gets until it sets its own. Standard: urgent 1 h / 8 h, high 4 h / 2 d,
    /// normal 8 h / 3 d, low 2 d / 5 d (a business day is 8 h); premium halves them and
    /// enterprise quarters them.
    pub fn default_for(tier: Tier, priority: Priority) -> Policy {
        let (first, resolution) = match priority {
            Priority::Urgent => (60, 8 * 60),
            Priority::High => (4 * 60, 16 * 60),
            Priority::Normal => (8 * 60, 24 * 60),
            Priority::Low => (16 * 60, 40 * 60),
        };
        let divisor = match tier {
            Tier::Standard => 1,
            Tier::Premium => 2,
            Tier::Enterprise => 4,
        };
        Policy { first_response_minutes: first / divisor, resolution_minutes: resolution / divisor }
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

    pub fn key(tier: Tier, priority: Priority) -> String {
        format!("{}-{}", tier.as_str(), priority.as_str())
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
    pub const BOTH: [Target; 2] = [Target::FirstResponse, Target::Resolution];

    pub fn as_str(self) -> &'static str {
        match self {
            Target::FirstResponse => "first_response",
            Target::Resolution => "resolution",
        }
    }
}

/// The hours a case's clock is measured on: its team's calendar, and the one it replaced at
/// `changed_at` (a clock running across the change measures the time before it on that).
pub struct Hours {
    pub calendar: Calendar,
    pub previous: Calendar,
    pub changed_at: u64,
    /// Warn when this share of a target is used (1-99).
    pub warn_percent: u64,
}

/// A case's SLA as stored on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseSla {
    pub policy: Policy,
    pub clock: BusinessClock,
    pub first_response: Deadline,
    pub resolution: Deadline,
    /// Business time used when the first response came, and when the case was (last)
    /// resolved: what the reports average.
    #[serde(default)]
    pub first_response_ms: Option<u64>,
    #[serde(default)]
    pub resolution_ms: Option<u64>,
}

/// What a client sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    OnTrack,
    Paused,
    Met,
    Breached,
}

/// A pending warning or deadline, stored under [`Timer::key`] in `sla_timers`; the minutely
/// check reads those due by now (`at` is an integer index).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timer {
    pub case: u64,
    pub target: Target,
    pub alarm: Alarm,
    pub at: u64,
}

impl Timer {
    /// Sorted by time; at one instant a warning before a breach.
    pub fn key(&self) -> String {
        let alarm = match self.alarm {
            Alarm::Warning => "0warning",
            Alarm::Breach => "1breach",
        };
        format!("{:013}-{:010}-{}-{alarm}", self.at, self.case, self.target.as_str())
    }
}

impl CaseSla {
    /// A case opened at `at` under `policy`: its clock starts at once.
    pub fn start(policy: Policy, at: u64, hours: &Hours) -> CaseSla {
        let mut sla = CaseSla {
            policy,
            clock: BusinessClock::started(at),
            first_response: Deadline::new(policy.first_response_minutes * MINUTE_MS),
            resolution: Deadline::new(policy.resolution_minutes * MINUTE_MS),
            first_response_ms: None,
            resolution_ms: None,
        };
        sla.plan(hours);
        sla
    }

    pub fn deadline(&self, target: Target) -> &Deadline {
        match target {
            Target::FirstResponse => &self.first_response,
            Target::Resolution => &self.resolution,
        }
    }

    fn deadline_mut(&mut self, target: Target) -> &mut Deadline {
        match target {
            Target::FirstResponse => &mut self.first_response,
            Target::Resolution => &mut self.resolution,
        }
    }

    /// Measures the clock up to the last change of hours on the old ones and recomputes the
    /// pending targets on the current ones.
    pub fn plan(&mut self, hours: &Hours) {
        self.clock.rebase(&hours.previous, hours.changed_at);
        for target in Target::BOTH {
            let clock = self.clock;
            self.deadline_mut(target).plan(&clock, &hours.calendar, hours.warn_percent);
        }
    }

    /// A new policy (priority or tier changed): pending targets are measured against it on the
    /// same clock, so from the case's creation.
    pub fn repolicy(&mut self, policy: Policy, hours: &Hours) {
        self.policy = policy;
        for (target, minutes) in
            [(Target::FirstResponse, policy.first_response_minutes), (Target::Resolution, policy.resolution_minutes)]
        {
            let d = self.deadline_mut(target);
            if d.is_pending() {
                d.target_ms = minutes * MINUTE_MS;
            }
        }
        self.plan(hours);
    }

    /// The first reply to the customer (or call): records the business time it took.
    pub fn responded(&mut self, at: u64, hours: &Hours) {
        if self.first_response.met_at.is_none() && self.first_response_ms.is_none() {
            self.clock.rebase(&hours.previous, hours.changed_at);
            self.first_response_ms = Some(self.clock.elapsed(&hours.calendar, at));
        }
        self.first_response.meet(at);
    }

    /// Waiting on the customer (or resolved): every clock stops.
    pub fn pause(&mut self, at: u64, hours: &Hours) {
        self.clock.rebase(&hours.previous, hours.changed_at);
        self.clock.pause(&hours.calendar, at);
        self.plan(hours);
    }

    /// The customer answered, or the case was reopened: the clocks run again.
    pub fn resume(&mut self, at: u64, hours: &Hours) {
        self.clock.resume(at);
        self.plan(hours);
    }

    /// Resolving meets the resolution target (and the first response, if still pending) and
    /// stops the clock.
    pub fn resolved(&mut self, at: u64, hours: &Hours) {
        self.responded(at, hours);
        self.resolution.meet(at);
        self.pause(at, hours);
        self.resolution_ms = Some(self.clock.consumed_ms);
    }

    /// Reopened: the resolution target is pending again unless it was breached; the clock
    /// runs on from where it stopped.
    pub fn reopened(&mut self, at: u64, hours: &Hours) {
        self.resolution.met_at = None;
        self.resume(at, hours);
    }

    /// See [`Deadline::fire`].
    pub fn fire(&mut self, target: Target, alarm: Alarm, now: u64) -> Vec<Alarm> {
        self.deadline_mut(target).fire(alarm, now)
    }

    /// The earliest pending deadline: what lists sort by. `None` while paused or when every
    /// target is met or missed.
    pub fn next_due(&self) -> Option<u64> {
        Target::BOTH.iter().filter_map(|t| Some(self.deadline(*t)).filter(|d| d.is_pending())?.due).min()
    }

    pub fn state(&self) -> State {
        if self.first_response.breached_at.is_some() || self.resolution.breached_at.is_some() {
            State::Breached
        } else if self.resolution.met_at.is_some() {
            State::Met
        } else if !self.clock.is_running() {
            State::Paused
        } else {
            State::OnTrack
        }
    }

    pub fn timers(&self, case: u64) -> Vec<Timer> {
        Target::BOTH
            .iter()
            .flat_map(|&target| {
                self.deadline(target).alarms().into_iter().map(move |(alarm, at)| Timer { case, target, alarm, at })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_sdk::business_hours::CalendarSpec;

    const H: u64 = 60 * MINUTE_MS;

    fn hours(calendar: Calendar) -> Hours {
        Hours { calendar, previous: Calendar::always(), changed_at: 0, warn_percent: 80 }
    }

    fn berlin_weekdays(holidays: &[&str]) -> Calendar {
        let day = serde_json::json!(["09:00-17:00"]);
        let spec: CalendarSpec = serde_json::from_value(serde_json::json!({
            "time_zone": "Europe/Berlin",
            "hours": { "mon": day, "tue": day, "wed": day, "thu": day, "fri": day },
            "holidays": holidays,
        }))
        .unwrap();
        Calendar::new(spec).unwrap()
    }

    #[test]
    fn default_policies_shrink_with_the_tier() {
        assert_eq!(
            Policy::default_for(Tier::Standard, Priority::Urgent),
            Policy { first_response_minutes: 60, resolution_minutes: 480 }
        );
        assert_eq!(
            Policy::default_for(Tier::Enterprise, Priority::Low),
            Policy { first_response_minutes: 240, resolution_minutes: 600 }
        );
        for tier in Tier::ALL {
            for priority in Priority::ALL {
                assert!(Policy::default_for(tier, priority).validate().is_ok());
            }
        }
        assert!(Policy { first_response_minutes: 10, resolution_minutes: 5 }.validate().is_err());
    }

    #[test]
    fn a_case_over_a_weekend_and_a_holiday_paused_while_waiting() {
        // Premium high: 2 h / 8 h. Opened Fri 2025-12-19 16:30 CET; Monday 22 a holiday.
        let h = hours(berlin_weekdays(&["2025-12-22"]));
        let opened = 1_766_158_200_000; // 2025-12-19T15:30:00Z
        let tue = 1_766_476_800_000; // 2025-12-23T08:00:00Z = 09:00 CET
        let mut sla = CaseSla::start(Policy::default_for(Tier::Premium, Priority::High), opened, &h);
        assert_eq!(sla.first_response.due, Some(tue + 90 * MINUTE_MS));
        assert_eq!(sla.next_due(), sla.first_response.due);
        // Answered at Tue 09:30 and set waiting: the resolution clock stops at 1 h used.
        sla.responded(tue + 30 * MINUTE_MS, &h);
        assert_eq!(sla.first_response_ms, Some(60 * MINUTE_MS), "30 min Friday, 30 Tuesday");
        sla.pause(tue + 30 * MINUTE_MS, &h);
        assert_eq!((sla.state(), sla.next_due()), (State::Paused, None));
        assert!(sla.timers(7).is_empty());
        // The customer answers Wed 10:00 CET: 7 h left: Wed 10-17.
        sla.resume(tue + 25 * H, &h);
        assert_eq!(sla.resolution.due, Some(tue + 32 * H));
        assert_eq!(sla.next_due(), sla.resolution.due, "the met first response no longer counts");
        let keys: Vec<_> = sla.timers(7).iter().map(Timer::key).collect();
        assert_eq!(keys.len(), 2);
        assert!(keys[0].ends_with("resolution-0warning") && keys[1].ends_with("resolution-1breach"), "{keys:?}");
    }

    #[test]
    fn resolving_stops_and_reopening_runs_on() {
        let h = hours(Calendar::always());
        let mut sla = CaseSla::start(Policy::default_for(Tier::Standard, Priority::Urgent), 0, &h);
        sla.resolved(2 * H, &h);
        assert_eq!((sla.state(), sla.next_due()), (State::Met, None));
        assert_eq!((sla.first_response_ms, sla.resolution_ms), (Some(2 * H), Some(2 * H)));
        assert_eq!(sla.first_response.met_at, Some(2 * H), "resolving answers too");
        sla.reopened(10 * H, &h);
        assert_eq!(sla.resolution.due, Some(16 * H), "2 h used, 6 h left from the reopening");
        assert_eq!(sla.fire(Target::Resolution, Alarm::Breach, 16 * H), [Alarm::Warning, Alarm::Breach]);
        assert_eq!(sla.state(), State::Breached);
        assert_eq!(sla.next_due(), None);
    }

    #[test]
    fn a_new_priority_re_plans_pending_targets_from_creation() {
        let h = hours(Calendar::always());
        let mut sla = CaseSla::start(Policy::default_for(Tier::Standard, Priority::Low), 0, &h);
        sla.responded(H, &h);
        sla.repolicy(Policy::default_for(Tier::Standard, Priority::Urgent), &h);
        assert_eq!(sla.first_response.target_ms, 16 * H, "a met target keeps its target");
        assert_eq!(sla.resolution.due, Some(8 * H));
    }
}
