//! `Canary.status.conditions`, computed from the release status: what `kubectl describe`,
//! `kubectl wait --for=condition=Promoted` and tools that read conditions see.
//!
//! One condition, `Promoted`, as Flagger names it: `True` when the primary runs the release's
//! revision and serves all traffic (Initialized, Succeeded), `False` when that revision was
//! rolled back (Failed), `Unknown` while a release or an opt-in/opt-out is on its way. Its
//! `reason` is the phase and its `message` says what that phase means for this revision.
//! `lastTransitionTime` moves only when the status (True/False/Unknown) changes, as the
//! Kubernetes API conventions ask; reason and message follow every phase.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::status::{Phase, ReleaseStatus};

/// The type of the one condition Serin writes.
pub const PROMOTED: &str = "Promoted";

/// `Canary.status.conditions` for `status` (with `paused` as stored beside it), given the
/// conditions stored before. Conditions of other types are not Serin's and are dropped: the
/// status is Serin's alone.
pub fn conditions(
    previous: &[Condition],
    status: &ReleaseStatus,
    paused: bool,
    now: &Time,
) -> Vec<Condition> {
    let state = match status.phase {
        Phase::Initialized | Phase::Succeeded => "True",
        Phase::Failed => "False",
        Phase::Initializing
        | Phase::Waiting
        | Phase::Progressing
        | Phase::WaitingPromotion
        | Phase::Promoting
        | Phase::Finalising
        | Phase::Terminating => "Unknown",
    };
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == PROMOTED && c.status == state)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.clone());
    let reason = status.phase.as_str().to_owned();
    vec![Condition {
        type_: PROMOTED.into(),
        status: state.into(),
        reason,
        message: message(status, paused),
        last_transition_time,
        observed_generation: None,
    }]
}

/// What the phase means for the release's revision, in words.
fn message(status: &ReleaseStatus, paused: bool) -> String {
    let revision = status.revision.as_deref().unwrap_or("?");
    let promoted = status.last_promoted_revision.as_deref().unwrap_or("?");
    let failed = match status.failed_checks {
        0 => String::new(),
        1 => " after 1 failed check".into(),
        n => format!(" after {n} failed checks"),
    };
    match status.phase {
        Phase::Initializing => {
            "Waiting for the primary to be Ready before it takes over the traffic".into()
        }
        Phase::Initialized => {
            format!("The primary runs revision {promoted} and serves all traffic")
        }
        Phase::Waiting if paused => format!("The release of revision {revision} is paused"),
        Phase::Waiting => format!("Revision {revision} waits for confirm-rollout"),
        Phase::Progressing if paused => format!(
            "The analysis of revision {revision} is paused at canary weight {}%",
            status.canary_weight
        ),
        Phase::Progressing => format!(
            "Analysing revision {revision} at canary weight {}% ({} so far)",
            status.canary_weight,
            match status.failed_checks {
                1 => "1 failed check".to_owned(),
                n => format!("{n} failed checks"),
            }
        ),
        Phase::WaitingPromotion => {
            format!("Revision {revision} passed its analysis and waits for confirm-promotion")
        }
        Phase::Promoting => {
            format!("Copying revision {revision} to the primary and waiting for its rollout")
        }
        Phase::Finalising => format!(
            "The primary runs revision {revision}; routing all traffic to it and scaling the canary to zero"
        ),
        Phase::Succeeded => {
            format!("Revision {revision} was promoted: the primary runs it and serves all traffic")
        }
        Phase::Failed => format!(
            "Revision {revision} was rolled back{failed}{}; the primary runs revision \
             {promoted}{}",
            match &status.rollback_reason {
                Some(why) => format!(": {why}"),
                None => String::new(),
            },
            last_values(status)
        ),
        Phase::Terminating => {
            "Opted out: restoring the Deployment before removing the primary".into()
        }
    }
}

/// ` (last values: …)` of the last checks, or nothing when none ran.
fn last_values(status: &ReleaseStatus) -> String {
    if status.last_checks.is_empty() {
        return String::new();
    }
    let values: Vec<String> = status
        .last_checks
        .iter()
        .map(|c| match c.value {
            Some(v) => format!("{} {v:.2}", c.name),
            None => format!("{} no data", c.name),
        })
        .collect();
    format!(" (last values: {})", values.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::release::CheckValue;
    use k8s_openapi::jiff::Timestamp;

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).unwrap_or_default())
    }

    fn status(phase: Phase) -> ReleaseStatus {
        ReleaseStatus {
            phase,
            revision: Some("rev2".into()),
            last_promoted_revision: Some("rev1".into()),
            ..ReleaseStatus::default()
        }
    }

    fn promoted(conditions: &[Condition]) -> &Condition {
        assert_eq!(conditions.len(), 1, "{conditions:?}");
        assert_eq!(conditions[0].type_, PROMOTED);
        &conditions[0]
    }

    #[test]
    fn promoted_is_true_once_the_primary_runs_the_revision_false_after_a_rollback_else_unknown() {
        let expected = [
            (Phase::Initializing, "Unknown"),
            (Phase::Initialized, "True"),
            (Phase::Waiting, "Unknown"),
            (Phase::Progressing, "Unknown"),
            (Phase::WaitingPromotion, "Unknown"),
            (Phase::Promoting, "Unknown"),
            (Phase::Finalising, "Unknown"),
            (Phase::Succeeded, "True"),
            (Phase::Failed, "False"),
            (Phase::Terminating, "Unknown"),
        ];
        for (phase, state) in expected {
            let conditions = conditions(&[], &status(phase), false, &at(100));
            let condition = promoted(&conditions);
            assert_eq!(condition.status, state, "{phase:?}");
            assert_eq!(
                Some(condition.reason.as_str()),
                serde_json::to_value(phase)
                    .ok()
                    .as_ref()
                    .and_then(|v| v.as_str()),
                "the reason is the phase"
            );
            assert!(!condition.message.is_empty(), "{phase:?}");
            assert_eq!(condition.last_transition_time, at(100));
        }
    }

    #[test]
    fn the_transition_time_moves_only_when_the_status_changes() {
        let waiting = conditions(&[], &status(Phase::Waiting), false, &at(100));
        // Waiting → Progressing: still Unknown; reason and message follow, the time stays.
        let progressing = conditions(&waiting, &status(Phase::Progressing), false, &at(200));
        let condition = promoted(&progressing);
        assert_eq!(condition.reason, "Progressing");
        assert_ne!(condition.message, promoted(&waiting).message);
        assert_eq!(condition.last_transition_time, at(100));
        // Progressing → Succeeded: True, from now.
        let succeeded = conditions(&progressing, &status(Phase::Succeeded), false, &at(300));
        assert_eq!(promoted(&succeeded).status, "True");
        assert_eq!(promoted(&succeeded).last_transition_time, at(300));
        // Computed again from the same status, nothing changes: no status write is due.
        assert_eq!(
            conditions(&succeeded, &status(Phase::Succeeded), false, &at(400)),
            succeeded
        );
    }

    #[test]
    fn a_rollback_says_which_revision_failed_after_how_many_checks_and_what_was_measured() {
        let failed = ReleaseStatus {
            failed_checks: 3,
            last_checks: vec![
                CheckValue {
                    name: "request-success-rate".into(),
                    value: Some(70.0),
                },
                CheckValue {
                    name: "request-duration".into(),
                    value: None,
                },
            ],
            ..status(Phase::Failed)
        };
        let conditions = conditions(&[], &failed, false, &at(100));
        let condition = promoted(&conditions);
        assert_eq!(
            (condition.status.as_str(), condition.reason.as_str()),
            ("False", "Failed")
        );
        assert_eq!(
            condition.message,
            "Revision rev2 was rolled back after 3 failed checks; the primary runs revision rev1 \
             (last values: request-success-rate 70.00, request-duration no data)"
        );
    }

    #[test]
    fn a_rollback_says_which_check_decided_it_when_the_status_knows() {
        let failed = ReleaseStatus {
            rollback_reason: Some(
                "request-duration: 412 of 2031 requests slower than 500ms since the weight \
                 moved to 10%: worse than 1% with 99% confidence (sequential test)"
                    .into(),
            ),
            last_checks: vec![CheckValue {
                name: "request-duration".into(),
                value: Some(700.0),
            }],
            ..status(Phase::Failed)
        };
        let conditions = conditions(&[], &failed, false, &at(100));
        assert_eq!(
            promoted(&conditions).message,
            "Revision rev2 was rolled back: request-duration: 412 of 2031 requests slower than \
             500ms since the weight moved to 10%: worse than 1% with 99% confidence (sequential \
             test); the primary runs revision rev1 (last values: request-duration 700.00)"
        );
    }

    #[test]
    fn a_paused_analysis_says_so() {
        let paused = ReleaseStatus {
            canary_weight: 25,
            ..status(Phase::Progressing)
        };
        let conditions = conditions(&[], &paused, true, &at(100));
        assert_eq!(
            promoted(&conditions).message,
            "The analysis of revision rev2 is paused at canary weight 25%"
        );
    }

    #[test]
    fn conditions_of_other_types_are_replaced() {
        let foreign = Condition {
            type_: "Ready".into(),
            status: "True".into(),
            reason: "Other".into(),
            message: String::new(),
            last_transition_time: at(1),
            observed_generation: None,
        };
        let conditions = conditions(&[foreign], &status(Phase::Succeeded), false, &at(100));
        assert_eq!(promoted(&conditions).last_transition_time, at(100));
    }
}
