//! The ask/answer loop around [`step`]: when a step asks for measurements
//! ([`Action::RunChecks`]), a gate ([`Action::CallHook`] of a gate kind) or the `rollback`
//! poll, [`drive`] asks [`Answers`] and steps again with the answer, from the same status and
//! at the same `now`, until nothing new is answered (or [`MAX_CALLBACKS`] rounds).
//!
//! The controller answers from its measurements and webhook calls; the machine's tests
//! answer from a fake world. A question not answered yet ends the loop: the reconcile carries
//! out the step that asked it, and the answer brings the next reconcile.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::actions::{Action, EventType, HookKind, Reason};
use super::machine::step;
use super::observations::{MetricCheck, Observations};
use super::status::ReleaseStatus;
use crate::spec::CanarySpec;

/// How often `step` may ask for measurements or gates in one reconcile (each answer moves it
/// on; more would be a loop).
pub const MAX_CALLBACKS: usize = 8;

/// What a gate's webhooks answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GateAnswer {
    pub passed: bool,
    /// For an Event: what the webhooks said; `None` when nothing is worth saying.
    pub message: Option<String>,
}

/// Who answers the machine's questions. Each gets the status of the step that asked (the
/// phase a webhook is told); `None` means "not answered yet".
pub trait Answers {
    /// One interval's checks, with the problems of failed queries and webhooks (told as
    /// `MetricError` Events).
    fn checks(&mut self, status: &ReleaseStatus) -> Option<(Vec<MetricCheck>, Vec<String>)>;
    /// A look between intervals: the counted checks only (with their problems, as above).
    fn look(&mut self, status: &ReleaseStatus) -> Option<(Vec<MetricCheck>, Vec<String>)>;
    /// The `rollback` webhooks that answered with success, each asking for a rollback.
    fn rollback(&mut self, status: &ReleaseStatus) -> Option<Vec<String>>;
    /// The gate webhooks of `kind`.
    fn gate(&mut self, kind: HookKind, status: &ReleaseStatus) -> Option<GateAnswer>;
}

/// An Event the answers call for, to record in order before the step's own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Told {
    pub type_: EventType,
    pub reason: Reason,
    pub message: String,
}

/// The outcome of [`drive`]: the last step's actions and status, and the Events the answers
/// called for.
#[derive(Clone, Debug, PartialEq)]
pub struct Driven {
    pub actions: Vec<Action>,
    pub status: ReleaseStatus,
    pub told: Vec<Told>,
}

/// Steps from `status` with `obs`, answering what the steps ask through `answers`.
pub fn drive(
    status: &ReleaseStatus,
    mut obs: Observations,
    now: &Time,
    spec: &CanarySpec,
    answers: &mut impl Answers,
) -> Driven {
    let mut told = Vec::new();
    let (mut actions, mut new_status) = step(status, &obs, now.clone(), spec);
    for _ in 0..MAX_CALLBACKS {
        let mut called_back = false;
        for action in &actions {
            match action {
                Action::RunChecks | Action::Look if obs.checks.is_none() => {
                    let answer = match action {
                        Action::Look => answers.look(&new_status),
                        _ => answers.checks(&new_status),
                    };
                    let Some((checks, problems)) = answer else {
                        continue;
                    };
                    told.extend(problems.into_iter().map(|message| Told {
                        type_: EventType::Warning,
                        reason: Reason::MetricError,
                        message,
                    }));
                    obs.checks = Some(checks);
                    called_back = true;
                }
                Action::CallHook(HookKind::Rollback) if obs.gates.rollback.is_none() => {
                    let Some(asking) = answers.rollback(&new_status) else {
                        continue;
                    };
                    if !asking.is_empty() {
                        told.push(Told {
                            type_: EventType::Warning,
                            reason: Reason::Webhook,
                            message: format!(
                                "rollback webhook {} answered with success: rolling back",
                                asking.join(", ")
                            ),
                        });
                    }
                    obs.gates.rollback = Some(!asking.is_empty());
                    called_back = true;
                }
                Action::CallHook(kind) if kind.is_gate() && obs.gates.get(*kind).is_none() => {
                    let Some(answer) = answers.gate(*kind, &new_status) else {
                        continue;
                    };
                    if let Some(message) = answer.message {
                        let type_ = match answer.passed {
                            true => EventType::Normal,
                            false => EventType::Warning,
                        };
                        told.push(Told {
                            type_,
                            reason: Reason::Webhook,
                            message,
                        });
                    }
                    obs.gates.set(*kind, answer.passed);
                    called_back = true;
                }
                _ => {}
            }
        }
        if !called_back {
            break;
        }
        (actions, new_status) = step(status, &obs, now.clone(), spec);
    }
    Driven {
        actions,
        status: new_status,
        told,
    }
}

#[cfg(test)]
mod tests;
