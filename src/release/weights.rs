//! How traffic is split between the primary and the canary: what the machine asks the router
//! for and reads back from it (each provider in `router/` turns it into each provider's object).

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
