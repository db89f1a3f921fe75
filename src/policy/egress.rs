//! Where webhooks and metric queries may never go, whatever an AnalysisTemplate or a
//! CanaryPolicy says: Serin's own listeners, and the link-local ranges where clouds serve
//! instance metadata and credentials.
//!
//! The rule is about the address a connection is made to, so it is applied after name
//! resolution ([`crate::analysis::http::Outbound`] resolves through [`Egress::check_resolved`] and
//! connects only to the addresses it let through) and to IP literals before sending:
//! a DNS name that points at `169.254.169.254` is refused like the literal.
//!
//! - Link-local: `169.254.0.0/16` (the metadata address `169.254.169.254` is in it), and
//!   `fe80::/10`; also AWS's IPv6 metadata address `fd00:ec2::254`. IPv4 written as IPv6
//!   (`::ffff:169.254.169.254`) is the IPv4 address.
//! - Serin's own ports (`--listen`, `--admin-listen`) on loopback, on the unspecified
//!   address (which reaches the machine itself) and on any address of this machine: a hook
//!   must not drive Serin's admin or webhook endpoints. Other loopback ports are allowed
//!   (a load tester beside Serin, a local Prometheus).

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// AWS's instance metadata service over IPv6.
const AWS_METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);

/// The addresses outbound calls may not reach.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Egress {
    /// Ports Serin listens on; never called on this machine's addresses.
    own_ports: Vec<u16>,
}

impl Egress {
    /// `own_ports`: the ports of Serin's listeners (webhook, admin).
    pub fn new(own_ports: impl IntoIterator<Item = u16>) -> Self {
        let mut own_ports: Vec<u16> = own_ports.into_iter().filter(|p| *p != 0).collect();
        own_ports.sort_unstable();
        own_ports.dedup();
        Self { own_ports }
    }

    pub fn own_ports(&self) -> &[u16] {
        &self.own_ports
    }

    /// Whether a call to `port` could reach one of Serin's listeners on this machine.
    pub fn is_own_port(&self, port: u16) -> bool {
        self.own_ports.contains(&port)
    }

    /// `Err` with the reason when a connection to `ip` on `port` is refused.
    pub fn check(&self, ip: IpAddr, port: u16) -> Result<(), String> {
        let ip = canonical(ip);
        if let Some(why) = forbidden_range(ip) {
            return Err(format!("{ip} is {why}: Serin never calls it"));
        }
        if self.is_own_port(port) && is_this_machine(ip) {
            return Err(format!(
                "{} is Serin's own listener (port {port} on this machine): Serin never calls \
                 itself",
                SocketAddr::new(ip, port)
            ));
        }
        Ok(())
    }

    /// The addresses a name resolved to, checked for a call to `port`: all of them when every
    /// one may be called, else the reason for the first that may not (a name that resolves to
    /// a forbidden address is refused whole rather than trimmed: it is a mistake or an
    /// attack either way).
    pub fn check_resolved(
        &self,
        name: &str,
        port: Option<u16>,
        addresses: Vec<SocketAddr>,
    ) -> Result<Vec<SocketAddr>, String> {
        if addresses.is_empty() {
            return Err(format!("{name} resolves to no address"));
        }
        for address in &addresses {
            let port = port.unwrap_or(address.port());
            if let Err(why) = self.check(address.ip(), port) {
                return Err(format!("{name} resolves to {}; {why}", address.ip()));
            }
        }
        Ok(addresses)
    }
}

/// IPv4 addresses written as IPv6 (`::ffff:a.b.c.d`) are the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// Why `ip` is never called, whatever the port.
fn forbidden_range(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) if v4.octets() == [169, 254, 169, 254] => {
            Some("the cloud instance metadata address")
        }
        IpAddr::V4(v4) if v4.is_link_local() => Some("a link-local address (169.254.0.0/16)"),
        IpAddr::V6(v6) if v6 == AWS_METADATA_V6 => Some("the cloud instance metadata address"),
        IpAddr::V6(v6) if v6.is_unicast_link_local() => Some("a link-local address (fe80::/10)"),
        _ => None,
    }
}

/// Loopback, the unspecified address (a connection to it reaches this machine), or an
/// address of one of this machine's interfaces: only those can be bound.
fn is_this_machine(ip: IpAddr) -> bool {
    ip.is_loopback()
        || ip.is_unspecified()
        || std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an IP address")
    }

    #[test]
    fn link_local_and_metadata_addresses_are_refused_on_every_port() {
        let egress = Egress::default();
        for (address, why) in [
            ("169.254.169.254", "metadata"),
            ("169.254.1.2", "link-local"),
            ("::ffff:169.254.169.254", "metadata"),
            ("fe80::1", "link-local"),
            ("febf::1", "link-local"),
            ("fd00:ec2::254", "metadata"),
        ] {
            for port in [80, 443, 8080] {
                let refused = egress.check(ip(address), port).expect_err(address);
                assert!(refused.contains(why), "{address}: {refused}");
                assert!(refused.contains("never calls"), "{refused}");
            }
        }
    }

    #[test]
    fn serins_own_ports_are_refused_on_this_machine_and_others_allowed() {
        let egress = Egress::new([8443, 8081, 0]);
        assert_eq!(egress.own_ports(), [8081, 8443]);
        for address in [
            "127.0.0.1",
            "127.1.2.3",
            "::1",
            "0.0.0.0",
            "::",
            "::ffff:127.0.0.1",
        ] {
            for port in [8443, 8081] {
                let refused = egress.check(ip(address), port).expect_err(address);
                assert!(refused.contains("Serin's own listener"), "{refused}");
            }
            // A load tester or a Prometheus beside Serin is fine.
            assert_eq!(egress.check(ip(address), 9090), Ok(()), "{address}");
        }
        // Another machine's port 8443 is not Serin's.
        assert_eq!(egress.check(ip("192.0.2.10"), 8443), Ok(()));
        assert_eq!(egress.check(ip("2001:db8::1"), 8081), Ok(()));
    }

    #[test]
    fn a_name_is_judged_by_every_address_it_resolves_to() {
        let egress = Egress::new([8081]);
        let at = |text: &str, port| SocketAddr::new(ip(text), port);
        assert_eq!(
            egress.check_resolved("hooks.test", Some(80), vec![at("192.0.2.1", 0)]),
            Ok(vec![at("192.0.2.1", 0)])
        );
        let refused = egress
            .check_resolved(
                "metadata.test",
                Some(80),
                vec![at("192.0.2.1", 0), at("169.254.169.254", 0)],
            )
            .expect_err("one forbidden address refuses the name");
        assert!(
            refused.starts_with("metadata.test resolves to 169.254.169.254;"),
            "{refused}"
        );
        let refused = egress
            .check_resolved("localhost", Some(8081), vec![at("127.0.0.1", 0)])
            .expect_err("Serin's admin port");
        assert!(refused.contains("Serin's own listener"), "{refused}");
        assert!(
            egress
                .check_resolved("nothing.test", None, Vec::new())
                .is_err()
        );
    }
}
