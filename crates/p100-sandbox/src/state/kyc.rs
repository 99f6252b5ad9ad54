//! KYC: a user's verification track, its steps and the status reads that count as polls.

use std::collections::VecDeque;

use super::{Ms, PARTNER, State, StateError, due};
use crate::scenario::{KycSpec, KycStep};

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

    fn advance(&mut self, now: Ms) {
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
            if let Some(s) = &step.status {
                self.status = s.clone();
            }
            if let Some(s) = &step.attempt_status {
                self.attempt_status = s.clone();
            }
            if step.rejection_reason.is_some() {
                self.rejection_reason = step.rejection_reason.clone();
            }
            self.steps.pop_front();
            self.changed_ms = at;
            self.reads = 0;
        }
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
        Ok(())
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
        let owner = self
            .owner_materialized(user, now)
            .ok_or(StateError::UnknownUser)?;
        let Some(kyc) = owner.kyc.as_mut() else {
            return Ok(None);
        };
        kyc.advance(now);
        let view = kyc.view();
        if kyc.has_steps() {
            kyc.reads += 1;
        }
        Ok(Some(view))
    }
}
