//! Runtime requests on a `Canary` (`kubectl serin promote|abort|pause|resume`), as pure
//! functions: what is written, what the release machine is told, and what becomes of it.
//!
//! **How a request is written.** Two annotations on the Canary, set together in one patch:
//! `serin.dev/action` (`promote`, `abort`, `pause` or `resume`) and `serin.dev/action-id`, an
//! id unique to the request (the plugin writes the time it was made). Annotations rather than
//! a spec field because:
//! - the Canary's spec is Serin's (the Deployment's effective configuration, written by server-
//!   side apply with field manager `serin`); an annotation is a field Serin never applies, so
//!   its apply can neither erase a request nor take it over, whoever wrote it;
//! - annotations are the same in `v1alpha1` and `v1beta1`: nothing to convert;
//! - `kubectl annotate` is enough without the plugin.
//!
//! **Acted on once.** A request is new while `(action, id)` differs from
//! `Canary.status.lastRequest` or that record is still `Pending`; once settled (`Applied`,
//! `Ignored` or `Invalid`) the annotations stay as a record but do nothing more, so a
//! repeated action needs a new id (the plugin makes one each time).
//!
//! **What each does** (through [`crate::release::Requests`], which the state machine reads):
//! - `pause` holds an analysis in progress (Waiting, Progressing, WaitingPromotion): no checks,
//!   no weight change, until `resume`. It is `status.paused`, not the annotation, that holds,
//!   and it ends with the analysis (promoted, rolled back, opted out).
//! - `resume` clears the pause; the next check is due at once if an interval has passed.
//! - `promote` skips the remaining steps and checks (and a closed `confirm-promotion` gate) but
//!   still promotes the normal way: copy to the primary, wait for its rollout, route back. It
//!   waits (`Pending`) until the canary is Ready, and ends a pause.
//! - `abort` rolls back as a failed analysis does (Failed, all traffic to the primary, canary at
//!   zero).
//!
//! A request with nothing to act on (no analysis in progress, not paused) is `Ignored`, with a
//! Warning Event saying why; an unknown action is `Invalid`.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::crd::canary::{RequestOutcome, RequestStatus};
use crate::release::{EventType, Phase, Reason, ReleaseStatus, Requests};

/// Annotation on the Canary naming the requested action.
pub const ACTION: &str = "serin.dev/action";
/// Annotation on the Canary that makes each request distinct.
pub const ACTION_ID: &str = "serin.dev/action-id";

/// A runtime action a user can request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuntimeAction {
    Promote,
    Abort,
    Pause,
    Resume,
}

impl RuntimeAction {
    pub const ALL: [RuntimeAction; 4] = [
        RuntimeAction::Promote,
        RuntimeAction::Abort,
        RuntimeAction::Pause,
        RuntimeAction::Resume,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RuntimeAction::Promote => "promote",
            RuntimeAction::Abort => "abort",
            RuntimeAction::Pause => "pause",
            RuntimeAction::Resume => "resume",
        }
    }
}

impl fmt::Display for RuntimeAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request Serin cannot act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("{ACTION}: {0:?} is not an action; allowed: promote, abort, pause, resume")]
    UnknownAction(String),
}

impl FromStr for RuntimeAction {
    type Err = RequestError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        RuntimeAction::ALL
            .into_iter()
            .find(|a| a.as_str() == text.trim())
            .ok_or_else(|| RequestError::UnknownAction(text.to_owned()))
    }
}

/// The annotations that request `action`, with `id` telling it apart from earlier ones.
pub fn annotations(action: RuntimeAction, id: &str) -> BTreeMap<String, String> {
    [
        (ACTION.to_owned(), action.as_str().to_owned()),
        (ACTION_ID.to_owned(), id.to_owned()),
    ]
    .into()
}

/// A request as written on the Canary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// `serin.dev/action` as written.
    pub action: String,
    /// `serin.dev/action-id`, empty when absent.
    pub id: String,
}

impl Request {
    pub fn parse(&self) -> Result<RuntimeAction, RequestError> {
        self.action.parse()
    }

    fn is(&self, record: &RequestStatus) -> bool {
        record.action == self.action && record.id == self.id
    }
}

/// The request on the Canary that is not settled yet: new, or recorded as `Pending`.
pub fn pending(
    annotations: &BTreeMap<String, String>,
    last: Option<&RequestStatus>,
) -> Option<Request> {
    let request = Request {
        action: annotations.get(ACTION)?.clone(),
        id: annotations.get(ACTION_ID).cloned().unwrap_or_default(),
    };
    match last {
        Some(record) if request.is(record) && record.outcome != RequestOutcome::Pending => None,
        _ => Some(request),
    }
}

/// What the release machine is told for this step: the stored pause, changed by the request.
/// `promote` and `abort` end a pause: each ends the analysis it held.
pub fn machine_requests(request: Option<&Request>, paused: bool) -> Requests {
    let action = request.and_then(|r| r.parse().ok());
    Requests {
        promote: action == Some(RuntimeAction::Promote),
        abort: action == Some(RuntimeAction::Abort),
        paused: match action {
            Some(RuntimeAction::Pause) => true,
            Some(_) => false,
            None => paused,
        },
    }
}

/// An Event to record about a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    pub type_: EventType,
    pub reason: Reason,
    pub message: String,
}

/// What to store after a step, and what to tell.
#[derive(Clone, Debug, PartialEq)]
pub struct Settled {
    pub paused: bool,
    pub last_request: Option<RequestStatus>,
    /// `None` when the machine's own Event says it (a rollback, a promotion) or when nothing
    /// changed.
    pub note: Option<Note>,
}

/// The state around one step of the release machine.
pub struct StepContext<'a> {
    /// The status before the step, and what the step made of it.
    pub before: &'a ReleaseStatus,
    pub after: &'a ReleaseStatus,
    /// `status.paused` as stored.
    pub was_paused: bool,
    /// `status.lastRequest` as stored.
    pub last: Option<&'a RequestStatus>,
    pub now: &'a Time,
}

/// Decides what became of `request` in a step the machine took with
/// [`machine_requests`]`(request, was_paused)`.
pub fn settle(request: Option<&Request>, step: &StepContext<'_>) -> Settled {
    let paused =
        machine_requests(request, step.was_paused).paused && step.after.phase.is_analysing();
    let Some(request) = request else {
        return Settled {
            paused,
            last_request: step.last.cloned(),
            note: None,
        };
    };
    let (outcome, message, note) = match request.parse() {
        Err(e) => (
            RequestOutcome::Invalid,
            e.to_string(),
            Some(Reason::InvalidRequest),
        ),
        Ok(action) => decide(action, request, step),
    };
    let record = RequestStatus {
        action: request.action.clone(),
        id: request.id.clone(),
        outcome,
        message: message.clone(),
        time: step.now.clone(),
    };
    // A request still pending keeps its record (and time), and is told about once.
    let unchanged = step
        .last
        .is_some_and(|last| request.is(last) && last.outcome == outcome);
    if unchanged {
        return Settled {
            paused,
            last_request: step.last.cloned(),
            note: None,
        };
    }
    let note = note.map(|reason| Note {
        type_: match outcome {
            RequestOutcome::Pending | RequestOutcome::Applied => EventType::Normal,
            RequestOutcome::Ignored | RequestOutcome::Invalid => EventType::Warning,
        },
        reason,
        message: format!("{}: {message}", request.action),
    });
    Settled {
        paused,
        last_request: Some(record),
        note,
    }
}

/// A request that has nothing to act on: no analysis in progress.
fn ignored(after: &ReleaseStatus, what: &str) -> (RequestOutcome, String, Option<Reason>) {
    (
        RequestOutcome::Ignored,
        format!(
            "no analysis in progress (phase {:?}): nothing to {what}",
            after.phase
        ),
        Some(Reason::RequestIgnored),
    )
}

/// Outcome, message and Event reason (if an Event of ours is due) of a valid request.
fn decide(
    action: RuntimeAction,
    request: &Request,
    step: &StepContext<'_>,
) -> (RequestOutcome, String, Option<Reason>) {
    let (before, after) = (step.before, step.after);
    let weight = after.canary_weight;
    let nothing = |what: &str| ignored(after, what);
    match action {
        RuntimeAction::Pause if !after.phase.is_analysing() => nothing("pause"),
        RuntimeAction::Pause if step.was_paused => (
            RequestOutcome::Ignored,
            format!("already paused at weight {weight}%"),
            Some(Reason::RequestIgnored),
        ),
        RuntimeAction::Pause => (
            RequestOutcome::Applied,
            format!("paused at weight {weight}%: no checks and no weight change until resumed"),
            Some(Reason::Paused),
        ),
        RuntimeAction::Resume if !step.was_paused => (
            RequestOutcome::Ignored,
            "the release is not paused".into(),
            Some(Reason::RequestIgnored),
        ),
        RuntimeAction::Resume if !after.phase.is_analysing() => (
            RequestOutcome::Applied,
            format!(
                "the pause ended with the analysis (phase {:?})",
                after.phase
            ),
            Some(Reason::Resumed),
        ),
        RuntimeAction::Resume => (
            RequestOutcome::Applied,
            format!("resumed at weight {}%", before.canary_weight),
            Some(Reason::Resumed),
        ),
        RuntimeAction::Abort if before.phase.is_analysing() && after.phase == Phase::Failed => (
            RequestOutcome::Applied,
            format!(
                "rolled back revision {}",
                after.revision.as_deref().unwrap_or("?")
            ),
            None,
        ),
        RuntimeAction::Abort => nothing("abort"),
        RuntimeAction::Promote => promote(request, step),
    }
}

/// What became of a promotion request in a step.
fn promote(request: &Request, step: &StepContext<'_>) -> (RequestOutcome, String, Option<Reason>) {
    let (before, after) = (step.before, step.after);
    let was_pending = step
        .last
        .is_some_and(|last| request.is(last) && last.outcome == RequestOutcome::Pending);
    if was_pending && before.revision != after.revision {
        return (
            RequestOutcome::Ignored,
            format!(
                "a new revision {} restarted the analysis before the promotion could \
                 start; promote again to promote it",
                after.revision.as_deref().unwrap_or("?")
            ),
            Some(Reason::RequestIgnored),
        );
    }
    match after.phase {
        Phase::Promoting | Phase::Finalising | Phase::Succeeded if before.phase.is_analysing() => (
            RequestOutcome::Applied,
            format!(
                "promoting revision {} at weight {}%, skipping the remaining steps",
                after.revision.as_deref().unwrap_or("?"),
                before.canary_weight
            ),
            None,
        ),
        phase if phase.is_analysing() => (
            RequestOutcome::Pending,
            "the promotion starts once the canary is Ready".into(),
            Some(Reason::PromotionPending),
        ),
        _ => ignored(after, "promote"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::release::{
        Action, CanaryObservation, Gates, Observations, PrimaryObservation, builtin_checks, step,
    };
    use crate::router::Weights;
    use crate::spec::CanarySpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
    use k8s_openapi::jiff::Timestamp;

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(1_700_000_000 + seconds).unwrap_or_default())
    }

    fn written(action: &str, id: &str) -> BTreeMap<String, String> {
        [
            (ACTION.to_owned(), action.to_owned()),
            (ACTION_ID.to_owned(), id.to_owned()),
        ]
        .into()
    }

    fn record(action: &str, id: &str, outcome: RequestOutcome) -> RequestStatus {
        RequestStatus {
            action: action.into(),
            id: id.into(),
            outcome,
            message: String::new(),
            time: at(0),
        }
    }

    #[test]
    fn actions_parse_from_their_names_and_unknown_ones_are_named_in_the_error() {
        for action in RuntimeAction::ALL {
            assert_eq!(action.as_str().parse::<RuntimeAction>(), Ok(action));
        }
        assert_eq!(" pause ".parse::<RuntimeAction>(), Ok(RuntimeAction::Pause));
        let error = "promot".parse::<RuntimeAction>().unwrap_err().to_string();
        assert_eq!(
            error,
            r#"serin.dev/action: "promot" is not an action; allowed: promote, abort, pause, resume"#
        );
    }

    #[test]
    fn the_plugin_writes_both_annotations_and_pending_reads_them_back() {
        let written = annotations(RuntimeAction::Abort, "r1");
        let request = pending(&written, None).expect("a new request");
        assert_eq!(request.parse(), Ok(RuntimeAction::Abort));
        assert_eq!(request.id, "r1");
    }

    #[test]
    fn no_action_annotation_is_no_request() {
        let only_id = [(ACTION_ID.to_owned(), "r1".to_owned())].into();
        assert_eq!(pending(&only_id, None), None);
        assert_eq!(pending(&BTreeMap::new(), None), None);
    }

    #[test]
    fn a_settled_request_is_not_acted_on_again_but_a_new_id_or_action_is() {
        let done = record("promote", "r1", RequestOutcome::Applied);
        assert_eq!(pending(&written("promote", "r1"), Some(&done)), None);
        assert!(pending(&written("promote", "r2"), Some(&done)).is_some());
        assert!(pending(&written("pause", "r1"), Some(&done)).is_some());
        let ignored = record("abort", "", RequestOutcome::Ignored);
        let without_id = [(ACTION.to_owned(), "abort".to_owned())].into();
        assert_eq!(pending(&without_id, Some(&ignored)), None);
    }

    #[test]
    fn a_pending_request_stays_pending_until_settled() {
        let waiting = record("promote", "r1", RequestOutcome::Pending);
        assert!(pending(&written("promote", "r1"), Some(&waiting)).is_some());
    }

    #[test]
    fn the_machine_is_told_the_stored_pause_changed_by_the_request() {
        let req = |action: &str| Request {
            action: action.into(),
            id: "x".into(),
        };
        assert!(machine_requests(None, true).paused);
        assert_eq!(machine_requests(None, false), Requests::default());
        assert!(machine_requests(Some(&req("pause")), false).paused);
        assert!(!machine_requests(Some(&req("resume")), true).paused);
        let promote = machine_requests(Some(&req("promote")), true);
        assert!(promote.promote && !promote.paused, "promote ends a pause");
        let abort = machine_requests(Some(&req("abort")), true);
        assert!(abort.abort && !abort.paused);
        assert_eq!(
            machine_requests(Some(&req("bogus")), true),
            Requests {
                paused: true,
                ..Requests::default()
            },
            "an invalid request changes nothing"
        );
    }

    /// A release of `rev2` in progress at 20 %, the canary Ready, checks passing, wired the
    /// way the executor wires it: annotations → `machine_requests` → `step` → `settle`.
    struct Wiring {
        spec: CanarySpec,
        status: ReleaseStatus,
        paused: bool,
        last: Option<RequestStatus>,
        canary_ready: bool,
        seconds: i64,
        events: Vec<String>,
    }

    impl Wiring {
        fn progressing() -> Self {
            let spec = CanarySpec {
                interval: crate::spec::Duration::from_secs(10),
                ..CanarySpec::defaults("web".into(), None)
            };
            Wiring {
                spec,
                status: ReleaseStatus {
                    phase: Phase::Progressing,
                    canary_weight: 20,
                    revision: Some("rev2".into()),
                    last_promoted_revision: Some("rev1".into()),
                    last_check_time: Some(MicroTime(at(0).0)),
                    ..ReleaseStatus::default()
                },
                paused: false,
                last: None,
                canary_ready: true,
                seconds: 0,
                events: Vec::new(),
            }
        }

        /// One reconcile `seconds_later`, with `annotations` on the Canary; the actions.
        fn reconcile(
            &mut self,
            annotations: &BTreeMap<String, String>,
            seconds_later: i64,
        ) -> Vec<Action> {
            self.seconds += seconds_later;
            let now = at(self.seconds);
            let request = pending(annotations, self.last.as_ref());
            let mut obs = Observations {
                revision: "rev2".into(),
                opted_in: true,
                canary: CanaryObservation {
                    ready: self.canary_ready,
                    stalled: false,
                    replicas: 2,
                    desired_replicas: 2,
                },
                primary: PrimaryObservation {
                    ready: true,
                    revision: Some("rev1".into()),
                },
                router: Some(Weights::to_canary(self.status.canary_weight).into()),
                gates: Gates {
                    confirm_rollout: Some(true),
                    pre_rollout: Some(true),
                    confirm_traffic_increase: Some(true),
                    confirm_promotion: Some(true),
                    rollback: Some(false),
                },
                requests: machine_requests(request.as_ref(), self.paused),
                ..Observations::default()
            };
            let (mut actions, mut after) = step(&self.status, &obs, now.clone(), &self.spec);
            if actions.contains(&Action::RunChecks) {
                obs.checks = Some(builtin_checks(&self.spec, Some(100.0), Some(10.0)));
                (actions, after) = step(&self.status, &obs, now.clone(), &self.spec);
            }
            let settled = settle(
                request.as_ref(),
                &StepContext {
                    before: &self.status,
                    after: &after,
                    was_paused: self.paused,
                    last: self.last.as_ref(),
                    now: &now,
                },
            );
            for action in &actions {
                if let Action::Event { reason, .. } = action {
                    self.events.push(reason.as_str().to_owned());
                }
            }
            self.events
                .extend(settled.note.iter().map(|n| n.reason.as_str().to_owned()));
            self.status = after;
            self.paused = settled.paused;
            self.last = settled.last_request;
            actions
        }

        fn outcome(&self) -> Option<RequestOutcome> {
            self.last.as_ref().map(|r| r.outcome)
        }
    }

    #[test]
    fn pause_holds_the_weight_and_the_checks_until_resume() {
        let mut w = Wiring::progressing();
        let pause = written("pause", "r1");
        w.reconcile(&pause, 1);
        assert!(w.paused);
        assert_eq!(w.outcome(), Some(RequestOutcome::Applied));
        for _ in 0..5 {
            let actions = w.reconcile(&pause, 10);
            assert!(!actions.contains(&Action::RunChecks), "{actions:?}");
        }
        assert_eq!(w.status.canary_weight, 20);
        assert_eq!(
            w.status.last_check_time,
            Some(MicroTime(at(0).0)),
            "no checks ran"
        );
        assert_eq!(w.events, vec!["Paused"], "told once");

        let resume = written("resume", "r2");
        w.reconcile(&resume, 1);
        assert!(!w.paused);
        assert_eq!(w.outcome(), Some(RequestOutcome::Applied));
        let message = w.last.as_ref().map(|r| r.message.as_str());
        assert_eq!(message, Some("resumed at weight 20%"));
        assert!(w.status.canary_weight > 20, "the next step was due at once");
    }

    #[test]
    fn promote_starts_the_promotion_at_once_and_is_settled() {
        let mut w = Wiring::progressing();
        let promote = written("promote", "r1");
        let actions = w.reconcile(&promote, 1);
        assert_eq!(w.status.phase, Phase::Promoting);
        assert!(
            actions
                .iter()
                .any(|a| matches!(a, Action::CopyToPrimary { .. }))
        );
        assert_eq!(w.outcome(), Some(RequestOutcome::Applied));
        assert!(
            w.last
                .as_ref()
                .is_some_and(|r| r.message.contains("at weight 20%"))
        );
        // The same annotations again (the next status event): nothing more happens.
        assert_eq!(pending(&promote, w.last.as_ref()), None);
    }

    #[test]
    fn promote_waits_for_a_ready_canary_and_is_told_once() {
        let mut w = Wiring::progressing();
        w.canary_ready = false;
        let promote = written("promote", "r1");
        w.reconcile(&promote, 1);
        assert_eq!(w.outcome(), Some(RequestOutcome::Pending));
        w.reconcile(&promote, 1);
        assert_eq!(w.events, vec!["PromotionPending"]);
        w.canary_ready = true;
        w.reconcile(&promote, 1);
        assert_eq!(w.status.phase, Phase::Promoting);
        assert_eq!(w.outcome(), Some(RequestOutcome::Applied));
    }

    #[test]
    fn promote_ends_a_pause() {
        let mut w = Wiring::progressing();
        w.reconcile(&written("pause", "r1"), 1);
        w.reconcile(&written("promote", "r2"), 1);
        assert_eq!(w.status.phase, Phase::Promoting);
        assert!(!w.paused);
    }

    #[test]
    fn abort_rolls_back_even_while_paused() {
        let mut w = Wiring::progressing();
        w.reconcile(&written("pause", "r1"), 1);
        let actions = w.reconcile(&written("abort", "r2"), 1);
        assert_eq!(w.status.phase, Phase::Failed);
        assert_eq!(
            actions.first(),
            Some(&Action::SetRoute(Weights::ALL_PRIMARY.into()))
        );
        assert!(actions.contains(&Action::ScaleCanaryToZero));
        assert_eq!(w.outcome(), Some(RequestOutcome::Applied));
        assert!(!w.paused, "the pause ended with the analysis");
        assert!(w.events.contains(&"RolledBack".to_owned()));
    }

    #[test]
    fn requests_without_an_analysis_are_ignored_with_a_warning() {
        for action in ["promote", "abort", "pause"] {
            let mut w = Wiring::progressing();
            w.status.phase = Phase::Succeeded;
            w.status.canary_weight = 0;
            w.reconcile(&written(action, "r1"), 1);
            assert_eq!(w.status.phase, Phase::Succeeded, "{action}");
            assert_eq!(w.outcome(), Some(RequestOutcome::Ignored), "{action}");
            assert!(!w.paused, "{action}");
            assert_eq!(w.events, vec!["RequestIgnored"], "{action}");
            let message = &w
                .last
                .as_ref()
                .map(|r| r.message.clone())
                .unwrap_or_default();
            assert!(
                message.contains("no analysis in progress (phase Succeeded)"),
                "{message}"
            );
        }
        let mut w = Wiring::progressing();
        w.reconcile(&written("resume", "r1"), 1);
        assert_eq!(w.outcome(), Some(RequestOutcome::Ignored));
    }

    #[test]
    fn an_unknown_action_is_invalid_and_changes_nothing() {
        let mut w = Wiring::progressing();
        w.reconcile(&written("pause", "r1"), 1);
        w.reconcile(&written("stop", "r2"), 1);
        assert_eq!(w.outcome(), Some(RequestOutcome::Invalid));
        assert!(w.paused);
        assert_eq!(w.events, vec!["Paused", "InvalidRequest"]);
    }

    #[test]
    fn a_pending_promote_does_not_carry_over_to_a_new_revision() {
        let before = ReleaseStatus {
            phase: Phase::Progressing,
            revision: Some("rev2".into()),
            ..ReleaseStatus::default()
        };
        let after = ReleaseStatus {
            phase: Phase::Waiting,
            revision: Some("rev3".into()),
            ..ReleaseStatus::default()
        };
        let request = Request {
            action: "promote".into(),
            id: "r1".into(),
        };
        let last = record("promote", "r1", RequestOutcome::Pending);
        let settled = settle(
            Some(&request),
            &StepContext {
                before: &before,
                after: &after,
                was_paused: false,
                last: Some(&last),
                now: &at(5),
            },
        );
        let record = settled.last_request.expect("recorded");
        assert_eq!(record.outcome, RequestOutcome::Ignored);
        assert!(record.message.contains("rev3"), "{}", record.message);
    }
}
