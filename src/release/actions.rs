//! What [`super::step`] asks the executor to do ([`Action`]), the webhooks it calls
//! ([`HookKind`]), and the reason of every Event Serin records ([`Reason`]), the machine's and
//! the controller's alike.

use std::time::Duration;

use super::weights::Route;

/// Webhook kinds the machine calls (SPEC, `AnalysisTemplate.webhooks[]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HookKind {
    ConfirmRollout,
    PreRollout,
    ConfirmTrafficIncrease,
    ConfirmPromotion,
    /// Polled once per interval while a release waits at a gate or is analysed; a success
    /// asks for a rollback.
    Rollback,
    /// A notification after Succeeded or Failed; its result is not awaited.
    PostRollout,
}

impl HookKind {
    /// Gates (and the `rollback` poll) answer `step` through [`Gates`]; the others are
    /// notifications.
    pub fn is_gate(self) -> bool {
        !matches!(self, HookKind::PostRollout)
    }
}

/// Whether an Event reports normal progress or a problem.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

/// What the executor must do, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Route traffic; always first in the list when present.
    SetRoute(Route),
    /// Scale the canary (the user's Deployment) to this many replicas.
    ScaleCanary(i32),
    ScaleCanaryToZero,
    /// Record this count as the user's request (`serin.dev/desired-replicas` on the
    /// Deployment), which sizes the primary: a `kubectl scale` between releases.
    RecordDesiredReplicas(i32),
    /// Measure the checks and call `step` again with `Observations::checks`.
    RunChecks,
    /// Measure the request counts of the counted checks only (a look between intervals,
    /// `serin.dev/sequential-checks`), no webhook, and call `step` again with them in
    /// `Observations::checks`.
    Look,
    /// Run the webhooks of this kind; for gates, call `step` again with the result.
    CallHook(HookKind),
    /// Copy the canary's template (and tracked configs) to the primary, if the canary still
    /// runs this revision.
    CopyToPrimary {
        revision: String,
    },
    /// Opting out is complete on the original's side: point the apex Service back at the
    /// original's pods, then delete the primary, the router and the other Services.
    RemoveMachinery,
    /// Call `step` again after this long even without a watch event.
    RequeueAfter(Duration),
    /// Record an Event on the Deployment and the Canary.
    Event {
        type_: EventType,
        reason: Reason,
        message: String,
    },
}

/// The reason of an Event Serin records, as users see it in `kubectl get events` (and as
/// `event` webhooks get it): every one is here, whoever records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The primary is Ready and serves all traffic: the first release is set up.
    Initialized,
    /// A new revision of the pod template or a tracked config was seen.
    NewRevision,
    /// The canary was scaled up for the analysis.
    Scaled,
    /// The canary's weight moved, or the analysis is under way.
    Progressing,
    /// How the analysis of one interval went.
    Analysis,
    /// The analysis is done; promotion waits for its gate.
    WaitingPromotion,
    /// The canary's template is being copied to the primary.
    Promoting,
    /// The primary runs the new revision; traffic returns to it.
    Finalising,
    /// The release is complete.
    Succeeded,
    /// A check or gate failed in an interval.
    CheckFailed,
    /// The release was rolled back.
    RolledBack,
    /// The Deployment opted out; Serin removes what it made.
    Terminating,
    /// A runtime request on the Canary could not be read.
    InvalidRequest,
    /// A runtime request does not apply to the release's phase.
    RequestIgnored,
    /// The analysis was paused by request.
    Paused,
    /// The analysis was resumed by request.
    Resumed,
    /// A promotion was requested and waits for the release to allow it.
    PromotionPending,
    /// The serin.dev annotations cannot be acted on.
    InvalidConfiguration,
    /// The primary Deployment was missing and was created again.
    PrimaryRecreated,
    /// Opting out is complete.
    OptedOut,
    /// A metric query failed.
    MetricError,
    /// What a webhook answered, when it decides something.
    Webhook,
    /// A CanaryPolicy refused the release's AnalysisTemplate.
    PolicyViolation,
    /// A reconcile failed; it is retried.
    ReconcileFailed,
    /// A chat alert of a CanaryPolicy could not be delivered (never itself alerted).
    AlertFailed,
}

impl Reason {
    /// Every reason, for tests and documentation.
    pub const ALL: [Reason; 25] = [
        Reason::Initialized,
        Reason::NewRevision,
        Reason::Scaled,
        Reason::Progressing,
        Reason::Analysis,
        Reason::WaitingPromotion,
        Reason::Promoting,
        Reason::Finalising,
        Reason::Succeeded,
        Reason::CheckFailed,
        Reason::RolledBack,
        Reason::Terminating,
        Reason::InvalidRequest,
        Reason::RequestIgnored,
        Reason::Paused,
        Reason::Resumed,
        Reason::PromotionPending,
        Reason::InvalidConfiguration,
        Reason::PrimaryRecreated,
        Reason::OptedOut,
        Reason::MetricError,
        Reason::Webhook,
        Reason::PolicyViolation,
        Reason::ReconcileFailed,
        Reason::AlertFailed,
    ];

    /// The reason as Kubernetes Events spell it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::Initialized => "Initialized",
            Reason::NewRevision => "NewRevision",
            Reason::Scaled => "Scaled",
            Reason::Progressing => "Progressing",
            Reason::Analysis => "Analysis",
            Reason::WaitingPromotion => "WaitingPromotion",
            Reason::Promoting => "Promoting",
            Reason::Finalising => "Finalising",
            Reason::Succeeded => "Succeeded",
            Reason::CheckFailed => "CheckFailed",
            Reason::RolledBack => "RolledBack",
            Reason::Terminating => "Terminating",
            Reason::InvalidRequest => "InvalidRequest",
            Reason::RequestIgnored => "RequestIgnored",
            Reason::Paused => "Paused",
            Reason::Resumed => "Resumed",
            Reason::PromotionPending => "PromotionPending",
            Reason::InvalidConfiguration => "InvalidConfiguration",
            Reason::PrimaryRecreated => "PrimaryRecreated",
            Reason::OptedOut => "OptedOut",
            Reason::MetricError => "MetricError",
            Reason::Webhook => "Webhook",
            Reason::PolicyViolation => "PolicyViolation",
            Reason::ReconcileFailed => "ReconcileFailed",
            Reason::AlertFailed => "AlertFailed",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_is_spelled_as_its_name_once() {
        let spelled: std::collections::BTreeSet<&str> =
            Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(spelled.len(), Reason::ALL.len());
        for reason in Reason::ALL {
            assert_eq!(reason.as_str(), format!("{reason:?}"));
        }
    }
}
