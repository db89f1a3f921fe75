//! A reconcile that fails is told where users look, not only in Serin's log: a Warning Event
//! `ReconcileFailed` on the Deployment (and its Canary), and a `Reconciled` condition `False`
//! on the Canary carrying the error. The next status Serin writes after a successful
//! reconcile computes the conditions anew ([`crate::release::conditions`]) and so drops it.
//!
//! The controller retries a failed reconcile every few seconds; the Event is sent once per
//! distinct error (and again after [`REPEAT_AFTER`]), the condition only when it changes.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::Patch;
use kube::runtime::controller::Action as Requeue;
use kube::{Api, Resource};
use serde_json::json;

use super::cache::saw;
use super::context::apply_params;
use super::{Context, Error};
use crate::crd::Canary;
use crate::release::{EventType, Reason};
use crate::spec::Workload;

/// The type of the condition a failed reconcile sets.
pub(super) const RECONCILED: &str = "Reconciled";
/// Its reason.
pub(super) const RECONCILE_FAILED: &str = Reason::ReconcileFailed.as_str();
/// How often the same error is told again as an Event.
const REPEAT_AFTER: Duration = Duration::from_secs(300);
/// The most Deployments whose last reported error is remembered (a bound, not a target).
const REMEMBERED: usize = 10_000;

/// A Deployment: its namespace and name.
type Key = (String, String);

/// The last error reported per Deployment, and when.
static REPORTED: LazyLock<Mutex<HashMap<Key, (String, Instant)>>> = LazyLock::new(Mutex::default);

/// The conditions with `Reconciled` set to False for `message`; `None` when they already say
/// so (nothing to write).
pub(super) fn with_failure(
    conditions: &[Condition],
    message: &str,
    now: &Time,
) -> Option<Vec<Condition>> {
    let current = conditions.iter().find(|c| c.type_ == RECONCILED);
    if current.is_some_and(|c| c.status == "False" && c.message == message) {
        return None;
    }
    let condition = Condition {
        type_: RECONCILED.into(),
        status: "False".into(),
        reason: RECONCILE_FAILED.into(),
        message: message.to_owned(),
        last_transition_time: current
            .filter(|c| c.status == "False")
            .map(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| now.clone()),
        observed_generation: None,
    };
    let mut all: Vec<Condition> = conditions
        .iter()
        .filter(|c| c.type_ != RECONCILED)
        .cloned()
        .collect();
    all.push(condition);
    Some(all)
}

/// The error in the user's words: the API server's own message for a refused request (the
/// whole error carries a debug dump of its Status), the error's text otherwise.
pub(super) fn describe(error: &Error) -> String {
    match error {
        Error::Kube(kube::Error::Api(status)) => {
            format!("the API server refused a request: {}", status.message)
        }
        other => other.to_string(),
    }
}

/// Whether `message` for `key` is news: a different error, or the same after [`REPEAT_AFTER`].
fn is_news(key: Key, message: &str, now: Instant) -> bool {
    let mut reported = REPORTED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((last, at)) = reported.get(&key)
        && last == message
        && now.duration_since(*at) < REPEAT_AFTER
    {
        return false;
    }
    if reported.len() >= REMEMBERED {
        reported.clear();
    }
    reported.insert(key, (message.to_owned(), now));
    true
}

/// Tells the chat alerts of the covering policies that reconciling `deploy` failed (as
/// often as the Event: once per distinct error, again after [`REPEAT_AFTER`]).
async fn alert(ctx: &Context, deploy: &dyn Workload, canary: Option<&Canary>, message: &str) {
    let alerts = ctx.alerts_of(deploy).await;
    let reason = Reason::ReconcileFailed;
    let release = canary.and_then(|c| c.status.as_ref()).map(|s| &s.release);
    let phase = release.map(|r| r.phase).unwrap_or_default();
    let revision = release.and_then(|r| r.revision.clone()).unwrap_or_default();
    let (namespace, name) = names_of(deploy);
    let Some(told) =
        crate::alerts::Message::new(&name, &namespace, phase, reason, message, &revision)
    else {
        return;
    };
    let outbox = alerts
        .for_reason(reason)
        .into_iter()
        .map(|t| (t.clone(), told.clone()))
        .collect();
    ctx.send_alerts(deploy, alerts, outbox);
}

/// Tells users that reconciling `deploy` failed with `error`; best effort (a failure to tell
/// is logged, the controller retries the reconcile anyway).
pub(super) async fn report(ctx: &Context, deploy: &dyn Workload, error: &str) {
    let (namespace, name) = names_of(deploy);
    let kind = deploy.kind();
    let message = format!("Serin cannot reconcile {kind} {name:?}, retrying: {error}");
    // From the controller's cache when it is current: this runs at every retry.
    let canary = ctx.canary(&namespace, &name).await.ok().flatten();
    if is_news((namespace.clone(), name.clone()), &message, Instant::now()) {
        ctx.publish(
            deploy,
            canary.as_ref(),
            EventType::Warning,
            Reason::ReconcileFailed,
            message.clone(),
        )
        .await;
        alert(ctx, deploy, canary.as_ref(), &message).await;
    }
    let Some(canary) = canary else {
        return;
    };
    // A Canary the controller never got to write a status for starts from the empty one.
    let mut status = canary.status.unwrap_or_default();
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let Some(conditions) = with_failure(&status.conditions, &message, &now) else {
        return;
    };
    status.conditions = conditions;
    // The whole status under Serin's one field manager: an apply of the conditions alone
    // would remove the other fields that manager owns.
    let patch = json!({
        "apiVersion": Canary::api_version(&()),
        "kind": Canary::kind(&()),
        "status": status,
    });
    let api: Api<Canary> = Api::namespaced(ctx.client.clone(), &namespace);
    match api
        .patch_status(&name, &apply_params(), &Patch::Apply(&patch))
        .await
    {
        // The next reconcile must see the condition, to drop it once it succeeds.
        Ok(written) => saw(&ctx.canaries, &written.metadata),
        Err(e) => {
            tracing::warn!(namespace, deployment = name, error = %e, "cannot set the Reconciled condition")
        }
    }
}

/// Pause before retrying a failed reconcile.
pub const RETRY_AFTER: Duration = Duration::from_secs(5);

pub(super) fn error_policy<W: Workload + Clone + 'static>(
    deploy: Arc<W>,
    error: &Error,
    ctx: Arc<Context>,
) -> Requeue {
    tracing::warn!(
        namespace = deploy.meta().namespace.as_deref().unwrap_or(""),
        deployment = deploy.meta().name.as_deref().unwrap_or(""),
        %error,
        "reconcile failed; retrying"
    );
    // Told where users look (an Event, a Canary condition); off the controller's path.
    let message = describe(error);
    tokio::spawn(async move { report(&ctx, deploy.as_ref(), &message).await });
    Requeue::requeue(RETRY_AFTER)
}

/// One reconcile, counted by result and timed (`serin_reconciles_total`,
/// `serin_reconcile_duration_seconds`).
pub(super) async fn counted(
    metrics: Option<crate::server::Reconciles>,
    deploy: Arc<Deployment>,
    ctx: Arc<Context>,
) -> Result<Requeue, Error> {
    let started = std::time::Instant::now();
    let result = super::reconcile::reconcile(deploy, ctx).await;
    if let Some(metrics) = metrics {
        metrics.observe(result.as_ref().err().map(Error::kind), started.elapsed());
    }
    result
}

/// [`counted`], for a DaemonSet.
pub(super) async fn counted_daemonset(
    metrics: Option<crate::server::Reconciles>,
    daemonset: Arc<DaemonSet>,
    ctx: Arc<Context>,
) -> Result<Requeue, Error> {
    let started = std::time::Instant::now();
    let result = super::reconcile::reconcile_daemonset(daemonset, ctx).await;
    if let Some(metrics) = metrics {
        metrics.observe(result.as_ref().err().map(Error::kind), started.elapsed());
    }
    result
}

fn names_of(workload: &dyn Workload) -> (String, String) {
    let meta = workload.meta();
    let namespace = meta.namespace.clone().unwrap_or_default();
    (namespace, meta.name.clone().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::release::conditions::PROMOTED;

    fn at(second: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(second).unwrap_or_default())
    }

    fn promoted() -> Condition {
        Condition {
            type_: PROMOTED.into(),
            status: "True".into(),
            reason: "Initialized".into(),
            message: "runs rev1".into(),
            last_transition_time: at(1),
            observed_generation: None,
        }
    }

    #[test]
    fn a_failure_adds_a_false_reconciled_condition_beside_promoted() {
        let all = with_failure(&[promoted()], "cannot create web-primary", &at(10))
            .expect("a new failure is written");
        assert_eq!(all.len(), 2);
        assert_eq!(all[0], promoted());
        let failed = &all[1];
        assert_eq!(
            (
                failed.type_.as_str(),
                failed.status.as_str(),
                failed.reason.as_str()
            ),
            (RECONCILED, "False", RECONCILE_FAILED)
        );
        assert_eq!(failed.message, "cannot create web-primary");
    }

    #[test]
    fn the_same_failure_is_not_written_again_and_a_new_one_keeps_the_transition_time() {
        let first = with_failure(&[promoted()], "error A", &at(10)).expect("written");
        assert_eq!(with_failure(&first, "error A", &at(20)), None);
        let second = with_failure(&first, "error B", &at(30)).expect("a new message");
        let failed = second
            .iter()
            .find(|c| c.type_ == RECONCILED)
            .expect("there");
        assert_eq!(failed.message, "error B");
        assert_eq!(failed.last_transition_time, at(10), "still False since 10");
        assert_eq!(second.len(), 2);
    }

    #[test]
    fn an_error_is_news_once_until_it_changes_or_time_passes() {
        let key = || ("ns-news".to_owned(), "web".to_owned());
        let start = Instant::now();
        assert!(is_news(key(), "A", start));
        assert!(!is_news(key(), "A", start + Duration::from_secs(5)));
        assert!(is_news(key(), "B", start + Duration::from_secs(6)));
        assert!(is_news(
            key(),
            "B",
            start + REPEAT_AFTER + Duration::from_secs(7)
        ));
    }
}
