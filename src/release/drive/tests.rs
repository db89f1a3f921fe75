use k8s_openapi::jiff::Timestamp;

use super::*;
use crate::release::{Phase, PrimaryObservation, Weights};

/// Answers from a script, and remembers what it was asked, in which phase.
#[derive(Default)]
struct Script {
    checks: Option<(Vec<MetricCheck>, Vec<String>)>,
    rollback: Option<Vec<String>>,
    gate: Option<GateAnswer>,
    asked: Vec<(&'static str, Phase)>,
}

impl Answers for Script {
    fn checks(&mut self, status: &ReleaseStatus) -> Option<(Vec<MetricCheck>, Vec<String>)> {
        self.asked.push(("checks", status.phase));
        self.checks.clone()
    }

    fn look(&mut self, status: &ReleaseStatus) -> Option<(Vec<MetricCheck>, Vec<String>)> {
        self.asked.push(("look", status.phase));
        self.checks.clone()
    }

    fn rollback(&mut self, status: &ReleaseStatus) -> Option<Vec<String>> {
        self.asked.push(("rollback", status.phase));
        self.rollback.clone()
    }

    fn gate(&mut self, kind: HookKind, status: &ReleaseStatus) -> Option<GateAnswer> {
        assert_eq!(kind, HookKind::ConfirmRollout);
        self.asked.push(("confirm-rollout", status.phase));
        self.gate.clone()
    }
}

fn spec() -> CanarySpec {
    CanarySpec::defaults("web".into(), Some(9898))
}

fn now() -> Time {
    Time(Timestamp::from_second(1_700_000_000).unwrap_or_default())
}

fn observed(revision: &str) -> Observations {
    Observations {
        revision: revision.into(),
        opted_in: true,
        primary: PrimaryObservation {
            ready: true,
            revision: Some("rev1".into()),
        },
        router: Some(Weights::ALL_PRIMARY.into()),
        ..Default::default()
    }
}

/// The release of `rev2`, from a primary Initialized on `rev1`, driven by `script`.
fn new_revision(script: &mut Script) -> Driven {
    let (_, initialized) = step(&ReleaseStatus::default(), &observed("rev1"), now(), &spec());
    assert_eq!(initialized.phase, Phase::Initialized);
    drive(&initialized, observed("rev2"), &now(), &spec(), script)
}

#[test]
fn answers_are_stepped_again_in_the_asking_phase_and_their_events_come_first() {
    let mut script = Script {
        rollback: Some(Vec::new()),
        gate: Some(GateAnswer {
            passed: true,
            message: Some("confirm-rollout approve: open".into()),
        }),
        ..Default::default()
    };
    let driven = new_revision(&mut script);
    assert_eq!(
        script.asked,
        [
            ("rollback", Phase::Waiting),
            ("confirm-rollout", Phase::Waiting)
        ]
    );
    assert_eq!(driven.status.phase, Phase::Progressing);
    assert!(
        driven
            .actions
            .iter()
            .any(|a| matches!(a, Action::ScaleCanary(_)))
    );
    assert_eq!(
        driven.told,
        [Told {
            type_: EventType::Normal,
            reason: Reason::Webhook,
            message: "confirm-rollout approve: open".into(),
        }]
    );
}

#[test]
fn a_question_not_answered_yet_ends_the_loop_with_the_action_that_asked_it() {
    let mut script = Script {
        rollback: Some(Vec::new()),
        gate: None,
        ..Default::default()
    };
    let driven = new_revision(&mut script);
    assert_eq!(driven.status.phase, Phase::Waiting);
    assert!(
        driven
            .actions
            .contains(&Action::CallHook(HookKind::ConfirmRollout))
    );
    assert!(driven.told.is_empty());
}

#[test]
fn a_rollback_webhook_that_answers_with_success_is_told_and_rolls_back() {
    let mut script = Script {
        rollback: Some(vec!["stop-it".into()]),
        ..Default::default()
    };
    let driven = new_revision(&mut script);
    assert_eq!(script.asked, [("rollback", Phase::Waiting)]);
    assert_eq!(driven.status.phase, Phase::Failed);
    assert_eq!(
        driven.told,
        [Told {
            type_: EventType::Warning,
            reason: Reason::Webhook,
            message: "rollback webhook stop-it answered with success: rolling back".into(),
        }]
    );
}
