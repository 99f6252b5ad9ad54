//! KYC: a user's verification track, its steps and the status reads that count as polls.
//!
//! Webhooks: every step that changes `status` or `attemptStatus` emits the KYC Verification
//! Status webhook (route `kyc`, `webhooks.md` §3.4); a step that makes the user `VERIFIED`
//! also emits the user status webhook (route `user`, `{"externalUserId","status":"ACTIVE"}`,
//! §3.1: balances generated after verification). Setting a KYC (scenario, control) emits
//! nothing: only progressions do.

use std::collections::VecDeque;

use serde::Serialize;

use super::{Ms, PARTNER, State, StateError, due};
use crate::scenario::{KycSpec, KycStep};

/// Route of the KYC Verification Status webhook.
const KYC_ROUTE: &str = "kyc";
/// Route of the user status (balance generation) webhook.
const USER_ROUTE: &str = "user";

/// A user's KYC track.
#[derive(Debug, Clone)]
pub(crate) struct Kyc {
    pub status: String,
    pub attempt_status: String,
    pub rejection_reason: Option<String>,
    steps: VecDeque<KycStep>,
    changed_ms: Ms,
    reads: u64,
}

/// What `GET /v1/kyc/status` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KycView {
    /// `status`.
    pub status: String,
    /// `attemptStatus`.
    pub attempt_status: String,
    /// `rejectionReason`, only when `attemptStatus` is `REJECTED_BY_PROVIDER`.
    pub rejection_reason: Option<String>,
}

/// A step that changed what the status endpoint shows.
struct Change {
    view: KycView,
    /// The step made the user `VERIFIED`.
    verified: bool,
}

/// KYC Verification Status webhook body.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct KycHook<'a> {
    external_user_id: &'a str,
    verification_status: &'a str,
    attempt_status: &'a str,
    /// Only on `REJECTED_BY_PROVIDER`.
    #[serde(skip_serializing_if = "Option::is_none")]
    rejection_reason: Option<&'a str>,
}

/// User status webhook body.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct UserHook<'a> {
    external_user_id: &'a str,
    status: &'static str,
}

impl Kyc {
    pub(super) fn from_spec(spec: KycSpec, now: Ms) -> Kyc {
        Kyc {
            status: spec.status,
            attempt_status: spec.attempt_status,
            rejection_reason: spec.rejection_reason,
            steps: spec.steps.into(),
            changed_ms: now,
            reads: 0,
        }
    }

    /// Applies every due step; returns the steps that changed `status` or `attemptStatus`.
    fn advance(&mut self, now: Ms) -> Vec<Change> {
        let mut changes = Vec::new();
        while let Some(step) = self.steps.front() {
            let Some(at) = due(
                step.after_polls,
                step.after_seconds,
                self.reads,
                self.changed_ms,
                now,
            ) else {
                break;
            };
            let was_verified = self.status == "VERIFIED";
            let mut changed = false;
            if let Some(s) = &step.status {
                changed |= *s != self.status;
                self.status = s.clone();
            }
            if let Some(s) = &step.attempt_status {
                changed |= *s != self.attempt_status;
                self.attempt_status = s.clone();
            }
            if step.rejection_reason.is_some() {
                self.rejection_reason = step.rejection_reason.clone();
            }
            self.steps.pop_front();
            self.changed_ms = at;
            self.reads = 0;
            if changed {
                changes.push(Change {
                    view: self.view(),
                    verified: !was_verified && self.status == "VERIFIED",
                });
            }
        }
        changes
    }

    fn view(&self) -> KycView {
        let rejected = self.attempt_status == "REJECTED_BY_PROVIDER";
        KycView {
            status: self.status.clone(),
            attempt_status: self.attempt_status.clone(),
            rejection_reason: rejected.then(|| {
                self.rejection_reason
                    .clone()
                    .unwrap_or_else(|| "NO_FACE_FOUND".into())
            }),
        }
    }

    fn has_steps(&self) -> bool {
        !self.steps.is_empty()
    }

    /// Whether `tick` must visit this track: its next step is timed, or has had the reads it
    /// waits for. A step still waiting for reads can only become due on a read, which
    /// advances the track itself, so users waiting for reads (thousands of generated ones)
    /// cost `tick` nothing.
    fn needs_tick(&self) -> bool {
        self.steps.front().is_some_and(|s| {
            s.after_seconds.is_some() || self.reads >= u64::from(s.after_polls.unwrap_or(1))
        })
    }
}

impl State {
    pub fn set_kyc(&mut self, user: &str, kyc: Option<KycSpec>, now: Ms) -> Result<(), StateError> {
        if user == PARTNER {
            return Err(StateError::Invalid("the partner has no KYC".into()));
        }
        let owner = self
            .owner_materialized(user, now)
            .ok_or(StateError::UnknownUser)?;
        owner.kyc = kyc.map(|k| Kyc::from_spec(k, now));
        self.track_kyc(user);
        Ok(())
    }

    /// Lets `tick` visit the user while its next KYC step can become due without a read.
    pub(super) fn track_kyc(&mut self, user: &str) {
        let needs_tick = self
            .users
            .get(user)
            .and_then(|o| o.kyc.as_ref())
            .is_some_and(Kyc::needs_tick);
        if needs_tick {
            self.kyc_progressing.insert(user.to_owned());
        }
    }

    /// Applies the user's due KYC steps and emits their webhooks; true while `tick` must keep
    /// visiting the user.
    pub(super) fn advance_kyc(&mut self, user: &str, now: Ms) -> bool {
        let Some((owner, outbox)) = self.owner_and_outbox(user) else {
            return false;
        };
        let Some(kyc) = owner.kyc.as_mut() else {
            return false;
        };
        for c in kyc.advance(now) {
            let v = &c.view;
            outbox.emit(KYC_ROUTE, user, |_| KycHook {
                external_user_id: user,
                verification_status: &v.status,
                attempt_status: &v.attempt_status,
                rejection_reason: v.rejection_reason.as_deref(),
            });
            if c.verified {
                outbox.emit(USER_ROUTE, user, |_| UserHook {
                    external_user_id: user,
                    status: "ACTIVE",
                });
            }
        }
        kyc.needs_tick()
    }

    /// One KYC status read: `Ok(None)` = user without KYC (P445).
    pub fn read_kyc(&mut self, user: &str, now: Ms) -> Result<Option<KycView>, StateError> {
        if !self.is_user(user) {
            return Err(StateError::UnknownUser);
        }
        if !self.users.contains_key(user) {
            // A generated user without a record: static KYC unless it has steps to track.
            let (u, g) = match (self.gen_user(user), self.generated.clone()) {
                (Some(u), Some(g)) => (u, g),
                _ => return Err(StateError::UnknownUser),
            };
            match g.kyc(u) {
                Some(k) if !k.steps.is_empty() => {}
                other => return Ok(other.map(|k| Kyc::from_spec(k, now).view())),
            }
        }
        self.owner_materialized(user, now)
            .ok_or(StateError::UnknownUser)?;
        self.advance_kyc(user, now);
        let Some(kyc) = self.users.get_mut(user).and_then(|o| o.kyc.as_mut()) else {
            return Ok(None);
        };
        let view = kyc.view();
        if kyc.has_steps() {
            kyc.reads += 1;
            // This read may have made the next step due: apply it on the next tick, not only
            // on the next read, so its webhook goes out without waiting for one.
            self.track_kyc(user);
        }
        Ok(Some(view))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::UserSpec;

    fn user_with_step(id: &str, step: KycStep) -> UserSpec {
        UserSpec {
            external_user_id: id.into(),
            kyc: Some(KycSpec {
                steps: vec![step],
                ..KycSpec::default()
            }),
            ..UserSpec::default()
        }
    }

    #[test]
    fn tick_visits_only_users_whose_next_step_can_be_due_without_a_read() {
        let mut s = State::new(None);
        s.outbox.set_enabled(true);
        let verification = |after_polls, after_seconds| KycStep {
            attempt_status: Some("VERIFICATION".into()),
            after_polls,
            after_seconds,
            ..KycStep::default()
        };
        s.add_user(user_with_step("polls", verification(Some(2), None)), 0)
            .unwrap();
        s.add_user(user_with_step("timed", verification(None, Some(1.0))), 0)
            .unwrap();
        assert_eq!(s.kyc_progressing, ["timed".to_string()].into());

        s.tick(999);
        assert!(s.outbox.drain().is_empty());
        s.tick(1000);
        assert!(s.kyc_progressing.is_empty());

        s.read_kyc("polls", 1100).unwrap();
        assert!(s.kyc_progressing.is_empty(), "one read of two");
        s.read_kyc("polls", 1200).unwrap();
        assert_eq!(s.kyc_progressing, ["polls".to_string()].into());
        s.tick(1300);
        assert!(s.kyc_progressing.is_empty());

        let events: Vec<(&str, String)> = s
            .outbox
            .drain()
            .into_iter()
            .map(|e| (e.route, e.body))
            .collect();
        let body = |u: &str| {
            format!(
                r#"{{"externalUserId":"{u}","verificationStatus":"NOT_VERIFIED","attemptStatus":"VERIFICATION"}}"#
            )
        };
        assert_eq!(events, [("kyc", body("timed")), ("kyc", body("polls"))]);
    }
}
