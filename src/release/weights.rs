//! How traffic is routed between the primary and the canary: what the machine asks the router
//! for and reads back from it (each provider in `router/` turns it into each provider's object).
//! [`Weights`] split the requests; a [`Route`] adds what some routers can also do during an
//! analysis: copy requests to the canary, and keep a user on it by a cookie.

/// How traffic is split: percentages that always sum to 100 (the constructors guarantee it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Weights {
    primary: u32,
    canary: u32,
}

impl Weights {
    /// Everything to the primary: the idle state, and after a promotion or a rollback.
    pub const ALL_PRIMARY: Weights = Weights {
        primary: 100,
        canary: 0,
    };

    /// Everything to the canary (Blue/Green just before promotion).
    pub const ALL_CANARY: Weights = Weights {
        primary: 0,
        canary: 100,
    };

    /// `canary` percent to the canary (capped at 100), the rest to the primary.
    pub fn to_canary(canary: u32) -> Self {
        let canary = canary.min(100);
        Self {
            primary: 100 - canary,
            canary,
        }
    }

    pub fn primary(self) -> u32 {
        self.primary
    }

    pub fn canary(self) -> u32 {
        self.canary
    }
}

/// Everything the router object says: the split, and during an analysis the copies sent to
/// the canary and the cookie that keeps a user on it. Built from [`Weights`] alone, it does
/// neither, which is all a router without those filters can express.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Route {
    pub weights: Weights,
    /// Mirroring: this percent of the requests is also sent to the canary, whose answers are
    /// discarded (`serin.dev/mirror-checks`).
    pub mirror: Option<u32>,
    /// Session affinity: the value of the affinity cookie, the release's revision. Responses
    /// from the canary set the cookie, and requests carrying it go to the canary
    /// (`serin.dev/affinity-cookie`); a cookie of another release matches nothing.
    pub sticky: Option<String>,
}

impl Route {
    /// Whether the route carries more than weights.
    pub fn has_extras(&self) -> bool {
        self.mirror.is_some() || self.sticky.is_some()
    }
}

impl From<Weights> for Route {
    fn from(weights: Weights) -> Self {
        Self {
            weights,
            mirror: None,
            sticky: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn weights_always_sum_to_100(canary in any::<u32>()) {
            let w = Weights::to_canary(canary);
            prop_assert_eq!(w.primary() + w.canary(), 100);
            prop_assert!(w.canary() <= 100);
        }
    }
}
