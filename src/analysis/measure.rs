//! Measurements and webhooks for the release machine: the controller's door to
//! [`super::plan`] (Prometheus) and [`super::webhooks`] (Flagger-style webhooks), through
//! [`Measuring`]: the clients, the calls in flight and the policy index, which the
//! controller's context holds.
//!
//! **A reconcile never waits for them.** Hooks and queries answer in seconds at best and
//! never at worst, and a reconcile holds one of the controller's few slots: awaited inline,
//! a handful of releases whose hooks hang would stop every release in the cluster, bad
//! canaries and opt-outs included. So each question the machine asks (`Question`) is run in
//! a task of its own ([`Calls`]), and the reconcile that asked ends at once: it performs what
//! the machine decided so far and writes that status (every state the machine returns is a
//! sound one). When the answer comes, the task asks the controller to reconcile the release
//! again; that reconcile finds the answer and the machine goes on, exactly as if it had been
//! awaited. An answer belongs to the question it answers (its kind, the release's revision,
//! phase, weight and interval, the template and the configuration): one that no longer
//! matches is never used, and a call that is no longer asked is cancelled. A gate with no
//! hook of its kind is answered at once, without a task, as before.
//!
//! Before anything is called for a release, its AnalysisTemplate is judged again against the
//! CanaryPolicies covering the Deployment ([`crate::policy::template_findings`]): a template
//! edited after its Deployment was admitted may have become forbidden. Then nothing of it is
//! called; gates stay closed and checks fail, each with an Event that says why, so the release
//! holds or rolls back.

use std::collections::{BTreeMap, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::channel::mpsc;
use futures::future::BoxFuture;
use k8s_openapi::api::apps::v1::Deployment;
use kube::runtime::reflector::ObjectRef;

use super::credentials::{CredentialFiles, CredentialsError, SecretSource, read_secret};
use super::http::Outbound;
use super::plan::{self as metrics, PlannedCheck, SecretCredentials};
use super::prometheus::PrometheusClient;
use super::webhooks::{self as hooks, HookClient, HookPayload};
use crate::crd::{AnalysisTemplateSpec, HookType};
use crate::policy::egress::Egress;
use crate::policy::{NotReady, PolicyIndex};
use crate::release::{HookKind, MetricCheck, NoData, Phase, ReleaseStatus};
use crate::spec::{CanarySpec, Workload};

/// How long an answer may wait for the reconcile that uses it. Answers are picked up within
/// moments (their task asks for the reconcile); one left longer belongs to a moment that has
/// passed, and the question is asked again.
const ANSWER_KEPT: Duration = Duration::from_secs(30);

/// How often a release whose answer is awaited is reconciled anyway, should the wake-up be
/// lost: the answer itself asks for a reconcile as soon as it comes.
pub const AWAITING_RECHECK: Duration = Duration::from_secs(15);

/// What every reconcile shares to measure and call: the HTTP clients, the calls in flight,
/// and the CanaryPolicies that judge a template before anything of it is called.
pub struct Measuring {
    prometheus: PrometheusClient,
    /// Where the Secrets of metrics' `secretRef`s are read (`None`: nothing reads them, and
    /// such a check fails saying so).
    secrets: Option<Arc<dyn SecretSource>>,
    pub(super) hooks: HookClient,
    calls: Calls,
    /// The CanaryPolicies, watch-fed, to judge a release's AnalysisTemplate before anything
    /// of it is called (`None` in the webhook, which calls nothing).
    pub policies: Option<Arc<PolicyIndex>>,
}

impl Measuring {
    /// `egress`: what calls may never reach (Serin's own listeners among them). Without
    /// policies until [`Measuring::policies`] is set.
    pub fn new(prometheus_url: &str, egress: Egress) -> anyhow::Result<Self> {
        let http = Outbound::new(egress)?;
        Ok(Self {
            prometheus: PrometheusClient::new(http.clone(), prometheus_url),
            secrets: None,
            hooks: HookClient::new(http),
            calls: Calls::default(),
            policies: None,
        })
    }

    /// Asks `--prometheus-url` with the credentials of the `--prometheus-*` flags.
    pub fn with_prometheus_credentials(self, files: CredentialFiles) -> Self {
        Self {
            prometheus: self.prometheus.with_credentials(files),
            ..self
        }
    }

    /// Reads the Secrets metrics name in `secretRef` from `source`, when their checks run.
    pub fn reading_secrets(self, source: Arc<dyn SecretSource>) -> Self {
        Self {
            secrets: Some(source),
            ..self
        }
    }

    /// The releases to reconcile because an answer came for them; taken once, by the
    /// controller (`Controller::reconcile_on`).
    pub fn answered(&self) -> Option<mpsc::UnboundedReceiver<ObjectRef<Deployment>>> {
        lock(&self.calls.inner).answered.take()
    }
}

/// Flagger's webhook payload fields for this release.
#[derive(Debug, Clone)]
pub struct Payload {
    pub name: String,
    pub namespace: String,
    pub phase: Phase,
    pub checksum: String,
}

impl From<Payload> for HookPayload {
    fn from(p: Payload) -> Self {
        HookPayload {
            name: p.name,
            namespace: p.namespace,
            phase: p.phase,
            checksum: p.checksum,
            metadata: BTreeMap::new(),
        }
    }
}

/// What a gate's webhooks answered.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub passed: bool,
    /// For an Event: the failures; `None` when nothing is worth saying.
    pub message: Option<String>,
}

/// What the machine asks outside the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Question {
    /// One interval's checks: the metrics, and the `rollout` webhooks.
    Checks,
    /// A look between intervals: the request counts of the counted checks only.
    Look,
    /// A gate's webhooks (`rollback` among them: it is polled like one).
    Gate(HookKind),
}

/// An answer, as [`measure`], [`run_hooks`] and [`rollback_requested`] give them.
#[derive(Clone, Debug)]
enum Answer {
    Checks(Vec<MetricCheck>, Vec<String>),
    Gate(Outcome),
    Rollback(Vec<String>),
}

/// The calls in flight and the answers not yet used, per release (at most a few each: the
/// questions of one moment of one release).
#[derive(Clone)]
pub struct Calls {
    inner: Arc<Mutex<Registry>>,
}

struct Registry {
    entries: HashMap<ObjectRef<Deployment>, HashMap<u64, Entry>>,
    wake: mpsc::UnboundedSender<ObjectRef<Deployment>>,
    answered: Option<mpsc::UnboundedReceiver<ObjectRef<Deployment>>>,
}

enum Entry {
    Running(tokio::task::AbortHandle),
    Done(Answer, Instant),
}

impl Default for Calls {
    fn default() -> Self {
        let (wake, answered) = mpsc::unbounded();
        Self {
            inner: Arc::new(Mutex::new(Registry {
                entries: HashMap::new(),
                wake,
                answered: Some(answered),
            })),
        }
    }
}

fn lock(registry: &Mutex<Registry>) -> std::sync::MutexGuard<'_, Registry> {
    // A panic while holding the lock leaves a registry that is still consistent.
    registry
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Calls {
    /// The answer to the question `key` of `release` when it has come; else starts `call` in
    /// a task of its own (unless it runs already) and returns `None`.
    fn ask(
        &self,
        release: &ObjectRef<Deployment>,
        key: u64,
        call: impl FnOnce() -> BoxFuture<'static, Answer>,
    ) -> Option<Answer> {
        let mut registry = lock(&self.inner);
        registry.forget_stale();
        let entries = registry.entries.entry(release.clone()).or_default();
        match entries.get(&key) {
            Some(Entry::Done(answer, _)) => return Some(answer.clone()),
            Some(Entry::Running(_)) => return None,
            None => {}
        }
        let inner = self.inner.clone();
        let task_release = release.clone();
        let future = call();
        let task = tokio::spawn(async move {
            let answer = future.await;
            let mut registry = lock(&inner);
            let wake = registry.wake.clone();
            let entry = registry
                .entries
                .get_mut(&task_release)
                .and_then(|entries| entries.get_mut(&key));
            // Cancelled or replaced meanwhile: the answer is nobody's.
            if let Some(entry @ Entry::Running(_)) = entry {
                *entry = Entry::Done(answer, Instant::now());
                let _ = wake.unbounded_send(task_release);
            }
        });
        entries.insert(key, Entry::Running(task.abort_handle()));
        None
    }

    /// Ends a reconcile of `release` that asked the questions `asked`: the calls and answers
    /// of any other question of it are no longer wanted (the release moved on: a new
    /// revision, an abort, an opt-out, a pause) and are dropped, running calls cancelled.
    fn settle(&self, release: &ObjectRef<Deployment>, asked: &[u64]) {
        let mut registry = lock(&self.inner);
        let Some(entries) = registry.entries.get_mut(release) else {
            return;
        };
        entries.retain(|key, entry| {
            let keep = asked.contains(key);
            if let (false, Entry::Running(task)) = (keep, &*entry) {
                task.abort();
            }
            keep
        });
        if entries.is_empty() {
            registry.entries.remove(release);
        }
    }

    /// Calls running or answered for `release`.
    #[cfg(test)]
    fn count(&self, release: &ObjectRef<Deployment>) -> usize {
        lock(&self.inner)
            .entries
            .get(release)
            .map_or(0, HashMap::len)
    }
}

impl Registry {
    /// Drops answers nobody picked up in time (a release deleted meanwhile).
    fn forget_stale(&mut self) {
        self.entries.retain(|_, entries| {
            entries.retain(|_, entry| match entry {
                Entry::Done(_, at) => at.elapsed() <= ANSWER_KEPT,
                Entry::Running(task) => !task.is_finished(),
            });
            !entries.is_empty()
        });
    }
}

/// The questions one reconcile of one release asks: what it needs to ask them, and what it
/// asked.
pub struct Asker<'a> {
    measuring: &'a Measuring,
    release: ObjectRef<Deployment>,
    namespace: &'a str,
    target: &'a str,
    spec: &'a CanarySpec,
    template: Option<&'a AnalysisTemplateSpec>,
    /// Why nothing of the template may be called: the CanaryPolicies it breaks.
    refused: Option<String>,
    /// A check or gate went unasked for that reason in this reconcile.
    refused_a_call: bool,
    /// Keys of the questions asked, answered or not.
    asked: Vec<u64>,
    /// A question is still unanswered.
    awaiting: bool,
}

impl<'a> Asker<'a> {
    /// For the release of `deploy` (the canary Deployment `target` in `namespace`), with
    /// `template`, judged by the CanaryPolicies that cover the Deployment now. `Err` when
    /// the policies cannot be read (the reconcile is retried).
    pub async fn new(
        measuring: &'a Measuring,
        deploy: &dyn Workload,
        namespace: &'a str,
        target: &'a str,
        spec: &'a CanarySpec,
        template: Option<&'a AnalysisTemplateSpec>,
    ) -> Result<Asker<'a>, NotReady> {
        let refused = match template {
            Some(template) => {
                policy_refusal(
                    measuring.policies.as_deref(),
                    deploy,
                    namespace,
                    spec,
                    template,
                )
                .await?
            }
            None => None,
        };
        Ok(Asker {
            measuring,
            release: ObjectRef::new(target).within(namespace),
            namespace,
            target,
            spec,
            template,
            refused,
            refused_a_call: false,
            asked: Vec::new(),
            awaiting: false,
        })
    }

    /// The template whose webhooks may be called: none while the policies forbid it (no
    /// notification goes to a forbidden host either).
    pub fn callable_template(&self) -> Option<&'a AnalysisTemplateSpec> {
        self.template.filter(|_| self.refused.is_none())
    }

    /// Why the template was not called in this reconcile, for an Event; `None` when it
    /// was not needed or allowed.
    pub fn refusal(&self) -> Option<&str> {
        self.refused.as_deref().filter(|_| self.refused_a_call)
    }

    /// A question of this reconcile is still unanswered: the reconcile ends without it and
    /// the answer brings the next one.
    pub fn awaiting(&self) -> bool {
        self.awaiting
    }

    /// Drops the calls of questions this reconcile did not ask.
    pub fn settle(self) {
        self.measuring.calls.settle(&self.release, &self.asked);
    }

    /// The key of `question` asked in the moment `status` of the release describes.
    fn key(&self, question: Question, status: &ReleaseStatus, revision: &str) -> u64 {
        let mut hash = DefaultHasher::new();
        question.hash(&mut hash);
        revision.hash(&mut hash);
        status.phase.hash(&mut hash);
        status.canary_weight.hash(&mut hash);
        status.iterations.hash(&mut hash);
        for time in [
            &status.last_check_time,
            &status.last_look_time,
            &status.weight_change_time,
        ] {
            time.as_ref().map(|t| t.0.as_microsecond()).hash(&mut hash);
        }
        serde_json::to_string(&self.template)
            .unwrap_or_default()
            .hash(&mut hash);
        serde_json::to_string(self.spec)
            .unwrap_or_default()
            .hash(&mut hash);
        hash.finish()
    }

    fn ask(
        &mut self,
        question: Question,
        status: &ReleaseStatus,
        payload: Payload,
        call: impl FnOnce(Payload) -> BoxFuture<'static, Answer>,
    ) -> Option<Answer> {
        let key = self.key(question, status, &payload.checksum);
        self.asked.push(key);
        let answer = self
            .measuring
            .calls
            .ask(&self.release, key, || call(payload));
        self.awaiting |= answer.is_none();
        answer
    }

    /// One interval's checks: the metrics (builtin or the template's), then the `rollout`
    /// webhooks (load tests), whose failures count as failed checks as in Flagger. With the
    /// reasons of failed queries and webhooks, for Events. `None` until measured.
    pub fn checks(
        &mut self,
        status: &ReleaseStatus,
        payload: Payload,
    ) -> Option<(Vec<MetricCheck>, Vec<String>)> {
        if self.refused.is_some() {
            self.refused_a_call = true;
            let check = failed_check("AnalysisTemplate allowed by CanaryPolicy");
            return Some((vec![check], Vec::new()));
        }
        let planned = self.planned(status);
        let rollout_hooks = self
            .template
            .map(|t| t.webhooks.clone())
            .unwrap_or_default();
        let (prometheus, hooks, secrets) = (
            self.measuring.prometheus.clone(),
            self.measuring.hooks.clone(),
            self.measuring.secrets.clone(),
        );
        let namespace = self.namespace.to_owned();
        let call = move |payload: Payload| -> BoxFuture<'static, Answer> {
            Box::pin(async move {
                let secrets = read_secrets(secrets.as_deref(), &namespace, &planned).await;
                let (checks, problems) = measure(
                    &prometheus,
                    &hooks,
                    &planned,
                    &secrets,
                    &rollout_hooks,
                    payload,
                )
                .await;
                Answer::Checks(checks, problems)
            })
        };
        match self.ask(Question::Checks, status, payload, call)? {
            Answer::Checks(checks, problems) => Some((checks, problems)),
            _ => None,
        }
    }

    /// A look between intervals (`serin.dev/sequential-checks`): the counted checks only,
    /// no webhook. `None` until measured.
    pub fn look(
        &mut self,
        status: &ReleaseStatus,
        payload: Payload,
    ) -> Option<(Vec<MetricCheck>, Vec<String>)> {
        if self.refused.is_some() {
            // The interval's checks say why; a look has nothing to add.
            return Some((Vec::new(), Vec::new()));
        }
        let planned: Vec<PlannedCheck> = self
            .planned(status)
            .into_iter()
            .filter(PlannedCheck::counted)
            .collect();
        if planned.is_empty() {
            return Some((Vec::new(), Vec::new()));
        }
        let (prometheus, secrets) = (
            self.measuring.prometheus.clone(),
            self.measuring.secrets.clone(),
        );
        let namespace = self.namespace.to_owned();
        let call = move |_: Payload| -> BoxFuture<'static, Answer> {
            Box::pin(async move {
                let secrets = read_secrets(secrets.as_deref(), &namespace, &planned).await;
                let measurement = metrics::measure(&prometheus, &planned, &secrets).await;
                let problems = measurement.error_message().into_iter().collect();
                Answer::Checks(measurement.checks, problems)
            })
        };
        match self.ask(Question::Look, status, payload, call)? {
            Answer::Checks(checks, problems) => Some((checks, problems)),
            _ => None,
        }
    }

    /// The checks of this moment, the counted ones with the requests since the weight moved
    /// (by this process' clock, bounded by [`metrics::count_window`]).
    fn planned(&self, status: &ReleaseStatus) -> Vec<PlannedCheck> {
        let planned = metrics::plan_checks(self.spec, self.template, self.namespace, self.target);
        let since = status.weight_change_time.as_ref().map_or(0, |t| {
            let now = k8s_openapi::jiff::Timestamp::now().as_second();
            u64::try_from(now.saturating_sub(t.0.as_second())).unwrap_or(0)
        });
        let seconds = metrics::count_window(self.spec, since);
        metrics::with_counts(planned, self.spec, self.namespace, self.target, seconds)
    }

    /// The gate webhooks of `kind`; none configured is open (answered at once). `None`
    /// until they answer.
    pub fn gate(
        &mut self,
        kind: HookKind,
        status: &ReleaseStatus,
        payload: Payload,
    ) -> Option<Outcome> {
        let hooks = self.hooks_of(kind.into());
        if hooks.is_empty() {
            return Some(Outcome {
                passed: true,
                message: None,
            });
        }
        if self.refused.is_some() {
            self.refused_a_call = true;
            return Some(Outcome {
                passed: false,
                message: None,
            });
        }
        let client = self.measuring.hooks.clone();
        let call = move |payload: Payload| -> BoxFuture<'static, Answer> {
            Box::pin(async move { Answer::Gate(run_hooks(&client, &hooks, kind, payload).await) })
        };
        match self.ask(Question::Gate(kind), status, payload, call)? {
            Answer::Gate(outcome) => Some(outcome),
            _ => None,
        }
    }

    /// Polls the `rollback` webhooks: the names of those that answered with success, each
    /// asking for a rollback (none configured, or a forbidden template: none asks). `None`
    /// until they answer.
    pub fn rollback(&mut self, status: &ReleaseStatus, payload: Payload) -> Option<Vec<String>> {
        let hooks = self.hooks_of(HookType::Rollback);
        if hooks.is_empty() || self.refused.is_some() {
            return Some(Vec::new());
        }
        let client = self.measuring.hooks.clone();
        let call = move |payload: Payload| -> BoxFuture<'static, Answer> {
            Box::pin(
                async move { Answer::Rollback(rollback_requested(&client, &hooks, payload).await) },
            )
        };
        match self.ask(Question::Gate(HookKind::Rollback), status, payload, call)? {
            Answer::Rollback(asking) => Some(asking),
            _ => None,
        }
    }

    fn hooks_of(&self, kind: HookType) -> Vec<crate::crd::WebhookTemplate> {
        self.template
            .map(|t| {
                t.webhooks
                    .iter()
                    .filter(|h| h.type_ == kind)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A check that failed for a reason of Serin's (not a measurement).
fn failed_check(name: &str) -> MetricCheck {
    MetricCheck {
        name: name.into(),
        unit: String::new(),
        value: Some(0.0),
        min: Some(1.0),
        max: None,
        no_data: NoData::Fail,
        evidence: None,
    }
}

/// Why the CanaryPolicies covering `deploy` forbid calling `template` now; `None` when they
/// do not. `Err` when the policies cannot be read (the reconcile is retried: a policy must
/// not be bypassed because Serin had not read it).
async fn policy_refusal(
    index: Option<&PolicyIndex>,
    deploy: &dyn Workload,
    namespace: &str,
    spec: &CanarySpec,
    template: &AnalysisTemplateSpec,
) -> Result<Option<String>, NotReady> {
    let Some(index) = index else {
        return Ok(None);
    };
    let no_labels = BTreeMap::new();
    let labels = deploy.meta().labels.as_ref().unwrap_or(&no_labels);
    let covering = index.covering(namespace, labels).await?;
    let policies: Vec<&crate::policy::NamedPolicy> = covering.iter().collect();
    let name = spec.analysis.as_deref().unwrap_or("?");
    let denied: Vec<String> = crate::policy::template_findings(&policies, name, template)
        .into_iter()
        .filter(|f| f.enforcement == crate::crd::Enforcement::Deny)
        .map(|f| f.to_string())
        .collect();
    Ok((!denied.is_empty()).then(|| {
        format!(
            "AnalysisTemplate {name} breaks a CanaryPolicy, so nothing of it is called and \
             the release does not go on: {}",
            denied.join("; ")
        )
    }))
}

/// The credentials of the Secrets `planned` names in `namespace`, each read once, now.
async fn read_secrets(
    source: Option<&dyn SecretSource>,
    namespace: &str,
    planned: &[PlannedCheck],
) -> SecretCredentials {
    let mut read = SecretCredentials::new();
    for name in metrics::secrets_named(planned) {
        let credentials = match source {
            Some(source) => read_secret(source, namespace, &name).await,
            None => Err(CredentialsError::Unreadable {
                origin: format!("Secret {namespace}/{name}"),
                reason: "this Serin process reads no Secrets".into(),
            }),
        };
        read.insert(name, credentials);
    }
    read
}

/// One interval's checks, measured: the metrics and the `rollout` webhooks at once.
async fn measure(
    prometheus: &PrometheusClient,
    client: &HookClient,
    planned: &[PlannedCheck],
    secrets: &SecretCredentials,
    rollout_hooks: &[crate::crd::WebhookTemplate],
    payload: Payload,
) -> (Vec<MetricCheck>, Vec<String>) {
    let payload = HookPayload::from(payload);
    let (measurement, load) = tokio::join!(
        metrics::measure(prometheus, planned, secrets),
        hooks::run_hooks(client, rollout_hooks, HookType::Rollout, &payload),
    );
    let mut problems: Vec<String> = measurement.error_message().into_iter().collect();
    let mut checks = measurement.checks;
    if let Some(failure) = load.failure_message() {
        // 1 for "every rollout webhook passed", 0 otherwise; at least 1 to pass.
        checks.push(failed_check("rollout webhooks"));
        problems.push(format!("rollout webhook failed: {failure}"));
    }
    (checks, problems)
}

/// Runs the gate webhooks of `kind`.
async fn run_hooks(
    client: &HookClient,
    hooks: &[crate::crd::WebhookTemplate],
    kind: HookKind,
    payload: Payload,
) -> Outcome {
    let outcome = hooks::run_hooks(client, hooks, kind.into(), &HookPayload::from(payload)).await;
    Outcome {
        passed: outcome.passed(),
        message: outcome
            .failure_message()
            .map(|m| format!("{} webhook closed: {m}", HookType::from(kind).name())),
    }
}

/// Polls the `rollback` webhooks. A failed call asks for nothing (logged, not an Event: it
/// would be one every interval).
async fn rollback_requested(
    client: &HookClient,
    hooks: &[crate::crd::WebhookTemplate],
    payload: Payload,
) -> Vec<String> {
    let outcome = hooks::run_hooks(
        client,
        hooks,
        HookType::Rollback,
        &HookPayload::from(payload),
    )
    .await;
    if let Some(message) = outcome.failure_message() {
        tracing::debug!("rollback webhook not asking for a rollback: {message}");
    }
    outcome.succeeded
}

#[cfg(test)]
mod tests;
