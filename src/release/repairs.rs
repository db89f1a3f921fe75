//! What a reconcile (re)applies besides what the machine asks for: the Services, the HPA copy
//! and the router object are repaired when something they are built from changed, not on
//! every status event (which would cost a write each).

use super::status::{Phase, ReleaseStatus};

/// What changed since the last reconcile that wrote the status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// The Canary's spec (the effective configuration) was written in this reconcile.
    pub spec: bool,
    /// The Deployment's generation differs from the one the status was written for.
    pub generation: bool,
    /// The primary was (re)created in this reconcile.
    pub primary_created: bool,
    /// The primary is Ready.
    pub primary_ready: bool,
}

/// What is due in this reconcile.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Repairs {
    /// Apply the three Services.
    pub services: bool,
    /// Apply the `-primary` HPA copy, when the user has an HPA (also when the copy in the
    /// cache differs, which only the controller can tell).
    pub hpa: bool,
    /// Apply the router object again at the weights it has: it is built from the
    /// configuration too (port, Service, A/B rules, Gateway, Ingress).
    pub router: bool,
}

/// The Services and the HPA copy are applied when traffic first moves to the primary (the
/// primary is Ready while initializing), and whenever the configuration, the Deployment's
/// spec or the revision changes; the router when the configuration changes after
/// initializing.
pub fn repairs(status: &ReleaseStatus, revision: &str, changes: Changes) -> Repairs {
    let due = match status.phase {
        Phase::Initializing => changes.primary_ready,
        _ => changes.spec || changes.generation || status.revision.as_deref() != Some(revision),
    };
    Repairs {
        services: due,
        hpa: due || changes.primary_created,
        router: changes.spec && status.phase != Phase::Initializing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(phase: Phase, revision: &str) -> ReleaseStatus {
        ReleaseStatus {
            phase,
            revision: Some(revision.into()),
            ..Default::default()
        }
    }

    #[test]
    fn while_initializing_services_and_hpa_wait_for_a_ready_primary_and_the_router_is_left_alone() {
        let initializing = status(Phase::Initializing, "a");
        let spec = Changes {
            spec: true,
            ..Default::default()
        };
        assert_eq!(repairs(&initializing, "a", spec), Repairs::default());
        let ready = Changes {
            primary_ready: true,
            ..spec
        };
        let due = repairs(&initializing, "a", ready);
        assert!(due.services && due.hpa && !due.router);
    }

    #[test]
    fn after_initializing_a_change_of_spec_generation_or_revision_repairs_and_nothing_else_does() {
        let idle = status(Phase::Succeeded, "a");
        assert_eq!(repairs(&idle, "a", Changes::default()), Repairs::default());
        let created = Changes {
            primary_created: true,
            ..Default::default()
        };
        assert_eq!(
            repairs(&idle, "a", created),
            Repairs {
                hpa: true,
                ..Default::default()
            }
        );
        assert!(repairs(&idle, "b", Changes::default()).services);
        let generation = Changes {
            generation: true,
            ..Default::default()
        };
        assert!(!repairs(&idle, "a", generation).router);
        let spec = Changes {
            spec: true,
            ..Default::default()
        };
        assert_eq!(
            repairs(&idle, "a", spec),
            Repairs {
                services: true,
                hpa: true,
                router: true
            }
        );
    }
}
