//! Open connections counted per client address, so that one address cannot take every slot.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

/// The open connections of every client address, each capped at `max`.
#[derive(Debug, Clone)]
pub(super) struct PerAddress {
    max: usize,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl PerAddress {
    pub(super) fn new(max: usize) -> Self {
        PerAddress {
            max: max.max(1),
            open: Arc::default(),
        }
    }

    /// A slot for one more connection from `ip`, or `None` if it has `max` open already.
    pub(super) fn admit(&self, ip: IpAddr) -> Option<AddressSlot> {
        // An IPv4 client on a dual-stack socket arrives as ::ffff:a.b.c.d; count it as a.b.c.d.
        let ip = ip.to_canonical();
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(ip).or_default();
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(AddressSlot {
            ip,
            open: self.open.clone(),
        })
    }

    #[cfg(test)]
    fn addresses(&self) -> usize {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// One open connection from an address; dropping it frees the slot.
#[derive(Debug)]
pub(super) struct AddressSlot {
    ip: IpAddr,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            // Forget addresses with nothing open: the map stays as small as the live set.
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_address_gets_at_most_max_and_slots_come_back() {
        let peers = PerAddress::new(2);
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let first = peers.admit(a).expect("first");
        let _second = peers.admit(a).expect("second");
        assert!(peers.admit(a).is_none());
        let _other = peers.admit(b).expect("another address is not affected");
        drop(first);
        assert!(peers.admit(a).is_some());
    }

    #[test]
    fn an_ipv4_mapped_address_counts_as_the_ipv4_one() {
        let peers = PerAddress::new(1);
        let _v4 = peers.admit([10, 0, 0, 1].into()).expect("v4");
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().expect("mapped");
        assert!(peers.admit(mapped).is_none());
    }

    #[test]
    fn addresses_with_nothing_open_are_forgotten() {
        let peers = PerAddress::new(4);
        let slots: Vec<_> = (0..100u8)
            .filter_map(|i| peers.admit([10, 0, 0, i].into()))
            .collect();
        assert_eq!(peers.addresses(), 100);
        drop(slots);
        assert_eq!(peers.addresses(), 0);
    }
}
