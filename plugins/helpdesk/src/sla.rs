//! Service-level agreements: per-priority targets for the first response and the resolution,
//! the deadlines they give a ticket, and the timers the scheduled check walks. Free of host
//! calls, so it is unit-tested natively.

use crate::ticket::Priority;
use serde::{Deserialize, Serialize};

const MINUTE_MS: u64 = 60_000;
/// A year: the longest target a policy may set.
pub const MAX_MINUTES: u64 = 525_600;

/// Targets for one priority, in minutes from the ticket's creation.
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

/// A ticket's SLA as stored on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sla {
    pub policy: Policy,
    pub first_response_due: u64,
    pub resolution_due: u64,
    pub first_response_at: Option<u64>,
    pub resolved_at: Option<u64>,
    pub first_response_breached_at: Option<u64>,
    pub resolution_breached_at: Option<u64>,
}

/// What a client sees: `breached` once any target was missed, `met` when resolved in time,
/// otherwise `on_track`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    OnTrack,
    Met,
    Breached,
}

/// A pending deadline, stored in the `sla_timers` collection under [`Timer::key`] (one per
/// ticket and target). `due` is an `integer` index: the scheduled check asks for the timers
/// due by now, in deadline order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timer {
    pub ticket: u64,
    pub target: Target,
    pub due: u64,
}

impl Timer {
    pub fn key(&self) -> String {
        format!("{:013}-{:012}-{}", self.due, self.ticket, self.target.as_str())
    }
}

impl Sla {
    /// Deadlines for a ticket filed at `created_at` under `policy`.
    pub fn new(policy: Policy, created_at: u64) -> Sla {
        Sla {
            policy,
            first_response_due: created_at + policy.first_response_minutes * MINUTE_MS,
            resolution_due: created_at + policy.resolution_minutes * MINUTE_MS,
            first_response_at: None,
            resolved_at: None,
            first_response_breached_at: None,
            resolution_breached_at: None,
        }
    }

    pub fn state(&self) -> State {
        if self.first_response_breached_at.is_some() || self.resolution_breached_at.is_some() {
            State::Breached
        } else if self.resolved_at.is_some() {
            State::Met
        } else {
            State::OnTrack
        }
    }

    /// The deadlines still to watch: neither met nor already breached.
    pub fn timers(&self, ticket: u64) -> Vec<Timer> {
        let mut out = Vec::new();
        if self.first_response_at.is_none() && self.first_response_breached_at.is_none() {
            out.push(Timer { ticket, target: Target::FirstResponse, due: self.first_response_due });
        }
        if self.resolved_at.is_none() && self.resolution_breached_at.is_none() {
            out.push(Timer { ticket, target: Target::Resolution, due: self.resolution_due });
        }
        out
    }

    /// A new priority's policy: deadlines are recomputed from the ticket's creation (as
    /// Zendesk and Freshdesk do), for the targets not yet met or missed.
    pub fn repolicy(&mut self, policy: Policy, created_at: u64) {
        let fresh = Sla::new(policy, created_at);
        self.policy = policy;
        if self.first_response_at.is_none() && self.first_response_breached_at.is_none() {
            self.first_response_due = fresh.first_response_due;
        }
        if self.resolved_at.is_none() && self.resolution_breached_at.is_none() {
            self.resolution_due = fresh.resolution_due;
        }
    }

    /// Records the first response (only the first counts).
    pub fn responded(&mut self, at: u64) {
        if self.first_response_at.is_none() && self.first_response_breached_at.is_none() {
            self.first_response_at = Some(at);
        }
    }

    /// Resolving also counts as responding.
    pub fn resolved(&mut self, at: u64) {
        self.responded(at);
        if self.resolution_breached_at.is_none() {
            self.resolved_at = Some(at);
        }
    }

    /// A reopened ticket's resolution clock runs again against the same deadline.
    pub fn reopened(&mut self) {
        self.resolved_at = None;
    }

    /// Marks `target` breached at `now` if it is still pending and due. Returns whether it
    /// changed (so the breach is published once).
    pub fn breach(&mut self, target: Target, now: u64) -> bool {
        match target {
            Target::FirstResponse
                if self.first_response_at.is_none()
                    && self.first_response_breached_at.is_none()
                    && now >= self.first_response_due =>
            {
                self.first_response_breached_at = Some(now);
                true
            }
            Target::Resolution
                if self.resolved_at.is_none()
                    && self.resolution_breached_at.is_none()
                    && now >= self.resolution_due =>
            {
                self.resolution_breached_at = Some(now);
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: u64 = 60 * MINUTE_MS;

    #[test]
    fn deadlines_come_from_the_priority_policy() {
        let sla = Sla::new(Policy::default_for(Priority::P1), 1_000);
        assert_eq!((sla.first_response_due, sla.resolution_due), (1_000 + H, 1_000 + 4 * H));
        assert_eq!(sla.state(), State::OnTrack);
        assert_eq!(
            sla.timers(7).iter().map(|t| t.target).collect::<Vec<_>>(),
            [Target::FirstResponse, Target::Resolution]
        );
    }

    #[test]
    fn a_priority_change_recomputes_only_pending_targets_from_creation() {
        let mut sla = Sla::new(Policy::default_for(Priority::P3), 0);
        sla.responded(2 * H);
        sla.repolicy(Policy::default_for(Priority::P1), 0);
        assert_eq!(sla.first_response_due, 8 * H, "a met target keeps its deadline");
        assert_eq!(sla.resolution_due, 4 * H);
        assert_eq!(sla.timers(1).len(), 1);
    }

    #[test]
    fn breaches_happen_once_and_only_when_due_and_pending() {
        let mut sla = Sla::new(Policy::default_for(Priority::P1), 0);
        assert!(!sla.breach(Target::FirstResponse, H - 1), "not due yet");
        assert!(sla.breach(Target::FirstResponse, H));
        assert!(!sla.breach(Target::FirstResponse, H + 1), "already breached");
        assert_eq!(sla.state(), State::Breached);
        sla.resolved(2 * H);
        assert!(!sla.breach(Target::Resolution, 5 * H), "resolved in time");
        assert!(sla.timers(1).is_empty());
    }

    #[test]
    fn reopening_restarts_the_resolution_clock_against_the_same_deadline() {
        let mut sla = Sla::new(Policy::default_for(Priority::P2), 0);
        sla.resolved(H);
        assert_eq!(sla.state(), State::Met);
        sla.reopened();
        assert_eq!(sla.state(), State::OnTrack);
        assert!(sla.breach(Target::Resolution, 24 * H));
    }

    #[test]
    fn policies_are_validated_and_timer_keys_sort_by_deadline() {
        assert!(Policy { first_response_minutes: 0, resolution_minutes: 5 }.validate().is_err());
        assert!(Policy { first_response_minutes: 10, resolution_minutes: 5 }.validate().is_err());
        assert!(Policy { first_response_minutes: 5, resolution_minutes: MAX_MINUTES + 1 }.validate().is_err());
        assert!(Policy::default_for(Priority::P4).validate().is_ok());
        let early = Timer { ticket: 99, target: Target::Resolution, due: 9_000 };
        let late = Timer { ticket: 1, target: Target::FirstResponse, due: 10_000 };
        assert!(early.key() < late.key());
    }
}
