//! When to rotate the self-signed certificates: a state machine over what the shared Secret
//! holds and the time, with no Kubernetes in it.
//!
//! Every rotation makes a new CA and a serving pair signed by it, and goes through three
//! steps, so that the API server trusts whatever any replica serves at every moment:
//! 1. **stage**: the new pair is stored beside the current one and its CA joins the
//!    `caBundle`; replicas keep serving the current pair;
//! 2. **switch**, once the bundle with both CAs has been published for a grace period:
//!    the new pair becomes the serving pair, and every replica picks it up;
//! 3. **drop**, a grace period after the switch: the old CA leaves the bundle.
//!
//! A bundle change is "published" when it is in every webhook configuration and CRD that
//! needs it; the time of that is part of the stored state, so that the grace periods count
//! from what the API server could see, not from when a replica decided.

use std::fmt;
use std::time::{Duration, SystemTime};

/// A CA and the serving certificate and key it signed, all PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct Pair {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    /// When the serving certificate expires (the CA expires with it).
    pub not_after: SystemTime,
}

impl fmt::Debug for Pair {
    // Keeps the private key out of logs and panic messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pair")
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// What the Secret holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The pair every replica serves.
    pub serving: Pair,
    /// A staged pair: its CA is in the bundle, it is not served yet.
    pub next: Option<Pair>,
    /// The CA of the pair served before the last switch, still in the bundle.
    pub retiring_ca: Option<String>,
    /// When the current bundle was published; `None` until it is.
    pub published_at: Option<SystemTime>,
    /// When the serving pair last changed by a switch.
    pub switched_at: Option<SystemTime>,
}

/// Where a rotation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// One CA in the bundle, the one that signed the serving pair.
    Steady,
    /// A new pair is staged and its CA is in the bundle beside the serving one.
    Staged,
    /// The new pair is served; the old CA is still in the bundle.
    Switched,
}

impl Stored {
    /// A first pair (or a replacement), not yet published.
    pub fn new(serving: Pair) -> Self {
        Stored {
            serving,
            next: None,
            retiring_ca: None,
            published_at: None,
            switched_at: None,
        }
    }

    pub fn phase(&self) -> Phase {
        match (&self.next, &self.retiring_ca) {
            (Some(_), _) => Phase::Staged,
            (None, Some(_)) => Phase::Switched,
            (None, None) => Phase::Steady,
        }
    }

    /// The CAs the API server must trust, oldest first, concatenated PEM: the `caBundle`.
    pub fn bundle(&self) -> String {
        let cas = [
            self.retiring_ca.as_deref(),
            Some(self.serving.ca_pem.as_str()),
            self.next.as_ref().map(|next| next.ca_pem.as_str()),
        ];
        let mut bundle = String::new();
        for ca in cas.into_iter().flatten() {
            bundle.push_str(ca.trim_end());
            bundle.push('\n');
        }
        bundle
    }

    /// Step 1: `next` is staged; the bundle changes, so it is unpublished again.
    pub fn staged(self, next: Pair) -> Self {
        Stored {
            next: Some(next),
            published_at: None,
            ..self
        }
    }

    /// Step 2: the staged pair is served. The bundle is the same, so it stays published.
    /// Without a staged pair nothing changes.
    pub fn switched(self, now: SystemTime) -> Self {
        match self.next {
            Some(next) => Stored {
                retiring_ca: Some(self.serving.ca_pem),
                serving: next,
                next: None,
                switched_at: Some(now),
                published_at: self.published_at,
            },
            None => self,
        }
    }

    /// Step 3: the old CA leaves the bundle, which is then unpublished again.
    pub fn retired(self) -> Self {
        Stored {
            retiring_ca: None,
            switched_at: None,
            published_at: None,
            ..self
        }
    }

    /// The current bundle is in every configuration since `now`.
    pub fn published(self, now: SystemTime) -> Self {
        Stored {
            published_at: Some(now),
            ..self
        }
    }
}

/// The Secret as read.
// One value per check, moved a couple of times: boxing the big variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Current {
    /// There is no Secret yet.
    Missing,
    /// There is one, but its contents cannot be used (the reason says why).
    Unusable(String),
    Stored(Stored),
}

/// The timing of rotations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Lifetime of each new CA and serving certificate.
    pub validity: Duration,
    /// A rotation starts this long before the serving certificate expires.
    pub renew_before: Duration,
    /// How long a published bundle or a switch is left to reach the API server and every
    /// replica before the next step.
    pub grace: Duration,
}

/// Grace periods are this many check intervals: one for every replica to read the Secret
/// (each checks once an interval), and two to spare for a slow API call or a missed tick.
pub const GRACE_INTERVALS: u32 = 3;

/// A rotation takes at most this many check intervals: publishing (1), the grace before the
/// switch and its tick (3 + 1), the grace before the drop and its tick (3 + 1), publishing
/// the smaller bundle (1).
pub const ROTATION_INTERVALS: u32 = 2 * GRACE_INTERVALS + 4;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("the check interval must be longer than zero")]
    NoInterval,
    #[error(
        "renew-before ({renew_before:?}) must be shorter than the validity ({validity:?}), \
         or every certificate would be rotated as soon as it is made"
    )]
    RenewAfterExpiry {
        renew_before: Duration,
        validity: Duration,
    },
    #[error(
        "renew-before ({renew_before:?}) must leave time for a rotation: at least \
         {ROTATION_INTERVALS} check intervals ({minimum:?})"
    )]
    NoTimeToRotate {
        renew_before: Duration,
        minimum: Duration,
    },
}

impl Policy {
    /// The policy for replicas that each look at the Secret every `check_interval`.
    pub fn new(
        validity: Duration,
        renew_before: Duration,
        check_interval: Duration,
    ) -> Result<Self, PolicyError> {
        if check_interval.is_zero() {
            return Err(PolicyError::NoInterval);
        }
        if renew_before >= validity {
            return Err(PolicyError::RenewAfterExpiry {
                renew_before,
                validity,
            });
        }
        let minimum = check_interval * ROTATION_INTERVALS;
        if renew_before < minimum {
            return Err(PolicyError::NoTimeToRotate {
                renew_before,
                minimum,
            });
        }
        Ok(Policy {
            validity,
            renew_before,
            grace: check_interval * GRACE_INTERVALS,
        })
    }
}

/// What to do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Make the first pair and create the Secret.
    Create,
    /// Make a new pair and overwrite what is stored: reviews fail until the new bundle is
    /// published, but what is stored is of no use anyway.
    Replace { reason: String },
    /// Put the bundle into the configurations and record when.
    Publish,
    /// Make a new pair and stage it (step 1).
    Stage,
    /// Serve the staged pair (step 2).
    Switch,
    /// Drop the old CA from the bundle (step 3).
    DropOld,
    /// Nothing to do before `until`.
    Wait { until: SystemTime },
}

/// The next step for what is stored, at `now`.
pub fn plan(current: &Current, now: SystemTime, policy: &Policy) -> Step {
    let stored = match current {
        Current::Missing => return Step::Create,
        Current::Unusable(reason) => {
            return Step::Replace {
                reason: reason.clone(),
            };
        }
        Current::Stored(stored) => stored,
    };
    if now >= stored.serving.not_after {
        return Step::Replace {
            reason: "the serving certificate has expired".to_owned(),
        };
    }
    if stored
        .next
        .as_ref()
        .is_some_and(|next| now >= next.not_after)
    {
        return Step::Replace {
            reason: "the staged certificate expired before it was served".to_owned(),
        };
    }
    let Some(published_at) = stored.published_at else {
        return Step::Publish;
    };
    let due = |at: SystemTime, step: Step| {
        if now >= at {
            step
        } else {
            Step::Wait { until: at }
        }
    };
    match stored.phase() {
        Phase::Steady => {
            let renew_at = stored
                .serving
                .not_after
                .checked_sub(policy.renew_before)
                .unwrap_or(now);
            due(renew_at, Step::Stage)
        }
        Phase::Staged => due(published_at + policy.grace, Step::Switch),
        // The switch time is written with the switch; should it be missing, the bundle's
        // publication is the latest time known to be before the switch.
        Phase::Switched => due(
            stored.switched_at.unwrap_or(published_at) + policy.grace,
            Step::DropOld,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    const SECOND: Duration = Duration::from_secs(1);

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn pair(name: &str, not_after: u64) -> Pair {
        Pair {
            ca_pem: format!("CA {name}"),
            cert_pem: format!("CERT {name}"),
            key_pem: format!("KEY {name}"),
            not_after: at(not_after),
        }
    }

    /// 100 s certificates renewed 40 s before expiry, checked every second (grace 3 s).
    fn policy() -> Policy {
        Policy::new(100 * SECOND, 40 * SECOND, SECOND).expect("valid policy")
    }

    fn stored(stored: &Stored) -> Current {
        Current::Stored(stored.clone())
    }

    #[test]
    fn no_secret_creates_one_and_an_unusable_one_is_replaced() {
        assert_eq!(plan(&Current::Missing, at(0), &policy()), Step::Create);
        assert_eq!(
            plan(&Current::Unusable("no tls.key".into()), at(0), &policy()),
            Step::Replace {
                reason: "no tls.key".into()
            }
        );
    }

    #[test]
    fn a_new_pair_is_published_before_anything_else() {
        let new = Stored::new(pair("a", 100));
        assert_eq!(plan(&stored(&new), at(0), &policy()), Step::Publish);
        // Even when it is already due for renewal.
        assert_eq!(plan(&stored(&new), at(70), &policy()), Step::Publish);
    }

    #[test]
    fn a_published_pair_is_kept_until_renew_before_its_expiry() {
        let steady = Stored::new(pair("a", 100)).published(at(1));
        assert_eq!(
            plan(&stored(&steady), at(1), &policy()),
            Step::Wait { until: at(60) }
        );
        assert_eq!(
            plan(&stored(&steady), at(59), &policy()),
            Step::Wait { until: at(60) }
        );
        assert_eq!(plan(&stored(&steady), at(60), &policy()), Step::Stage);
    }

    #[test]
    fn the_new_ca_joins_the_bundle_before_its_pair_is_served() {
        let staged = Stored::new(pair("a", 100))
            .published(at(1))
            .staged(pair("b", 160));
        assert_eq!(staged.phase(), Phase::Staged);
        assert_eq!(staged.serving, pair("a", 100), "still serving the old pair");
        assert_eq!(staged.bundle(), "CA a\nCA b\n");
        // The bigger bundle must be published before the switch can even be timed.
        assert_eq!(plan(&stored(&staged), at(60), &policy()), Step::Publish);

        let published = staged.published(at(61));
        assert_eq!(
            plan(&stored(&published), at(63), &policy()),
            Step::Wait { until: at(64) },
            "the bundle gets a grace period to reach the API server"
        );
        assert_eq!(plan(&stored(&published), at(64), &policy()), Step::Switch);
    }

    #[test]
    fn the_old_ca_stays_in_the_bundle_until_a_grace_period_after_the_switch() {
        let switched = Stored::new(pair("a", 100))
            .published(at(1))
            .staged(pair("b", 160))
            .published(at(61))
            .switched(at(64));
        assert_eq!(switched.phase(), Phase::Switched);
        assert_eq!(switched.serving, pair("b", 160));
        assert_eq!(switched.bundle(), "CA a\nCA b\n", "same bundle as staged");
        assert_eq!(switched.published_at, Some(at(61)), "so still published");
        assert_eq!(
            plan(&stored(&switched), at(66), &policy()),
            Step::Wait { until: at(67) },
            "replicas get a grace period to serve the new pair"
        );
        assert_eq!(plan(&stored(&switched), at(67), &policy()), Step::DropOld);

        let dropped = switched.retired();
        assert_eq!(dropped.phase(), Phase::Steady);
        assert_eq!(dropped.bundle(), "CA b\n");
        assert_eq!(plan(&stored(&dropped), at(67), &policy()), Step::Publish);
        let steady = dropped.published(at(68));
        assert_eq!(
            plan(&stored(&steady), at(68), &policy()),
            Step::Wait { until: at(120) },
            "the next rotation is 40 s before the new pair expires"
        );
    }

    #[test]
    fn every_served_pair_was_signed_by_a_ca_in_every_bundle_published_meanwhile() {
        // Walk a few rotations tick by tick and check the invariant the API server needs:
        // whatever pair is served, its CA is in the bundle that was last published, and in
        // the bundle published before that while replicas may still be switching.
        let policy = policy();
        let mut current = Current::Missing;
        let mut generation = 0;
        let mut published_bundles: Vec<String> = Vec::new();
        let mut switches = 0;
        for second in 0..400 {
            let now = at(second);
            loop {
                let step = plan(&current, now, &policy);
                let mut fresh = || {
                    generation += 1;
                    pair(&generation.to_string(), second + 100)
                };
                current = match (step, current) {
                    (Step::Wait { .. }, current) => {
                        current_is_trusted(&current, &published_bundles);
                        current
                    }
                    (Step::Create, _) => Current::Stored(Stored::new(fresh())),
                    (Step::Publish, Current::Stored(s)) => {
                        published_bundles.push(s.bundle());
                        Current::Stored(s.published(now))
                    }
                    (Step::Stage, Current::Stored(s)) => Current::Stored(s.staged(fresh())),
                    (Step::Switch, Current::Stored(s)) => {
                        switches += 1;
                        Current::Stored(s.switched(now))
                    }
                    (Step::DropOld, Current::Stored(s)) => Current::Stored(s.retired()),
                    (step, current) => panic!("unexpected {step:?} for {current:?}"),
                };
                if matches!(plan(&current, now, &policy), Step::Wait { .. }) {
                    break;
                }
            }
        }
        assert!(switches >= 5, "only {switches} rotations in 400 s");
    }

    fn current_is_trusted(current: &Current, published: &[String]) {
        let Current::Stored(s) = current else {
            panic!("waiting without a stored pair");
        };
        let last = published.last().expect("something was published");
        assert!(
            last.contains(&s.serving.ca_pem),
            "serving {:?} but the published bundle is {last:?}",
            s.serving.ca_pem
        );
        if let (Phase::Switched, [.., before, _]) = (s.phase(), published) {
            // Replicas that have not switched yet still serve the retiring pair.
            let retiring = s
                .retiring_ca
                .as_deref()
                .expect("switched has a retiring CA");
            assert!(before.contains(retiring) && last.contains(retiring));
        }
    }

    #[test]
    fn an_expired_pair_is_replaced_at_once() {
        let steady = Stored::new(pair("a", 100)).published(at(1));
        assert!(matches!(
            plan(&stored(&steady), at(100), &policy()),
            Step::Replace { .. }
        ));
        let staged_too_long = Stored::new(pair("a", 200))
            .published(at(1))
            .staged(pair("b", 150));
        assert!(matches!(
            plan(&stored(&staged_too_long), at(150), &policy()),
            Step::Replace { .. }
        ));
    }

    #[test]
    fn switching_without_a_staged_pair_changes_nothing() {
        let steady = Stored::new(pair("a", 100)).published(at(1));
        assert_eq!(steady.clone().switched(at(5)), steady);
    }

    #[test]
    fn a_policy_must_leave_time_to_rotate() {
        assert_eq!(
            Policy::new(100 * SECOND, 40 * SECOND, SECOND).map(|p| p.grace),
            Ok(3 * SECOND)
        );
        assert!(matches!(
            Policy::new(100 * SECOND, 100 * SECOND, SECOND),
            Err(PolicyError::RenewAfterExpiry { .. })
        ));
        let err = Policy::new(100 * SECOND, 9 * SECOND, SECOND).expect_err("too short");
        assert_eq!(
            err,
            PolicyError::NoTimeToRotate {
                renew_before: 9 * SECOND,
                minimum: 10 * SECOND
            }
        );
        assert!(
            err.to_string()
                .contains("at least 10 check intervals (10s)")
        );
        assert_eq!(
            Policy::new(100 * SECOND, 40 * SECOND, Duration::ZERO),
            Err(PolicyError::NoInterval)
        );
    }

    #[test]
    fn debug_output_does_not_show_the_private_key() {
        assert!(!format!("{:?}", pair("a", 1)).contains("KEY"));
    }
}
