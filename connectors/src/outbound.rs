//! The outbound guard: which addresses connectors may reach. By default nothing private,
//! loopback, link-local (the cloud metadata address among them) or otherwise special;
//! `connectors.outbound.allow` opens CIDR ranges a deployment needs.
//!
//! The check runs on resolved addresses, so a public name pointing at 10.0.0.5 is
//! refused too, and the HTTP client asks it again for every redirect hop.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundSettings {
    /// CIDR ranges connectors may reach even though they are private or special, e.g.
    /// `["10.20.0.0/16", "127.0.0.1/32"]`.
    #[serde(default)]
    pub allow: Vec<String>,
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum OutboundError {
    #[error("connectors.outbound.allow[{index}]: {value:?} is not a CIDR range or address")]
    BadAllow { index: usize, value: String },
    #[error(
        "refused to connect to {addr} ({host}): it is a {what} address; \
         add it to connectors.outbound.allow to permit it"
    )]
    Refused {
        host: String,
        addr: IpAddr,
        what: &'static str,
    },
    #[error("{host} did not resolve: {reason}")]
    Resolve { host: String, reason: String },
}

#[derive(Debug, Clone, Default)]
pub struct Outbound {
    allow: Arc<Vec<IpNet>>,
}

impl Outbound {
    pub fn new(settings: &OutboundSettings) -> Result<Self, OutboundError> {
        let mut allow = Vec::new();
        for (index, value) in settings.allow.iter().enumerate() {
            let net = value
                .parse::<IpNet>()
                .or_else(|_| value.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| OutboundError::BadAllow {
                    index,
                    value: value.clone(),
                })?;
            allow.push(net);
        }
        Ok(Self {
            allow: Arc::new(allow),
        })
    }

    /// Ok if `addr` may be reached; `host` only names it in the error.
    pub fn check(&self, host: &str, addr: IpAddr) -> Result<(), OutboundError> {
        let addr = canonical(addr);
        let Some(what) = special(addr) else {
            return Ok(());
        };
        if self.allow.iter().any(|n| n.contains(&addr)) {
            return Ok(());
        }
        Err(OutboundError::Refused {
            host: host.to_owned(),
            addr,
            what,
        })
    }

    /// Resolves `host` and keeps the addresses that may be reached; an error if none
    /// may (naming the first refusal) or the name does not resolve.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, OutboundError> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            self.check(host, ip)?;
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let found: Vec<SocketAddr> = tokio::net::lookup_host((bare, port))
            .await
            .map_err(|e| OutboundError::Resolve {
                host: host.to_owned(),
                reason: e.to_string(),
            })?
            .collect();
        let mut first_refusal = None;
        let mut ok = Vec::new();
        for a in found {
            match self.check(host, a.ip()) {
                Ok(()) => ok.push(a),
                Err(e) => {
                    first_refusal.get_or_insert(e);
                }
            }
        }
        if ok.is_empty() {
            return Err(first_refusal.unwrap_or_else(|| OutboundError::Resolve {
                host: host.to_owned(),
                reason: "no addresses".into(),
            }));
        }
        Ok(ok)
    }
}

impl Outbound {
    /// [`Outbound::resolve`] as a connector's answer: a refusal is fatal (it will not
    /// change), a name that does not resolve retryable (it may resolve in a minute).
    pub(crate) async fn resolve_for(
        &self,
        connector: &str,
        host: &str,
        port: u16,
    ) -> Result<Vec<SocketAddr>, aiq_topics::TaskOutcome> {
        self.resolve(host, port).await.map_err(|e| match e {
            OutboundError::Resolve { .. } => {
                crate::outcome::retryable(format!("{connector} connector: {e}"))
            }
            _ => crate::outcome::fatal(format!("{connector} connector: {e}")),
        })
    }
}

/// An IPv4 address written as IPv6 (`::ffff:127.0.0.1`) is judged as the IPv4 one.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// What makes an address unfit for outbound calls, if anything.
fn special(addr: IpAddr) -> Option<&'static str> {
    match addr {
        IpAddr::V4(a) => special_v4(a),
        IpAddr::V6(a) => special_v6(a),
    }
}

fn special_v4(a: Ipv4Addr) -> Option<&'static str> {
    let o = a.octets();
    if a.is_loopback() {
        Some("loopback")
    } else if a.is_private() {
        Some("private")
    } else if a.is_link_local() {
        // 169.254.169.254 is where clouds serve instance credentials.
        Some("link-local (cloud metadata)")
    } else if a.is_unspecified() || o[0] == 0 {
        Some("unspecified")
    } else if o[0] == 100 && (64..128).contains(&o[1]) {
        Some("shared (carrier-grade NAT)")
    } else if o[0] == 192 && o[1] == 0 && o[2] == 0 {
        Some("IETF protocol assignment")
    } else if o[0] == 198 && (18..20).contains(&o[1]) {
        Some("benchmarking")
    } else if a.is_multicast() || a.is_broadcast() || o[0] >= 240 {
        Some("multicast or reserved")
    } else if a.is_documentation() {
        Some("documentation")
    } else {
        None
    }
}

fn special_v6(a: Ipv6Addr) -> Option<&'static str> {
    let seg = a.segments();
    if a.is_loopback() {
        Some("loopback")
    } else if a.is_unspecified() {
        Some("unspecified")
    } else if (seg[0] & 0xfe00) == 0xfc00 {
        // Unique local, fd00:ec2::254 (a metadata address) among them.
        Some("private (unique local)")
    } else if (seg[0] & 0xffc0) == 0xfe80 {
        Some("link-local")
    } else if a.is_multicast() {
        Some("multicast or reserved")
    } else if seg[0] == 0x64 && seg[1] == 0xff9b {
        // NAT64 can embed any IPv4 address, private ones too.
        Some("NAT64")
    } else if seg[0] == 0x2001 && seg[1] == 0x0db8 {
        Some("documentation")
    } else if seg[0] == 0x2002 {
        // 6to4 (2002::/16) carries an IPv4 address in bits 16-47, private ones too.
        Some("6to4")
    } else if seg[0] == 0x2001 && seg[1] == 0 {
        // Teredo (2001::/32) tunnels to an IPv4 server and client it encodes.
        Some("Teredo")
    } else if seg[..6] == [0; 6] {
        // IPv4-compatible (::a.b.c.d, deprecated): an IPv4 address behind an IPv6 form.
        Some("IPv4-compatible")
    } else if (seg[0] & 0xffc0) == 0xfec0 {
        Some("site-local")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(allow: &[&str]) -> Outbound {
        Outbound::new(&OutboundSettings {
            allow: allow.iter().map(|s| (*s).to_owned()).collect(),
        })
        .unwrap()
    }

    #[test]
    fn private_loopback_link_local_and_metadata_addresses_are_refused() {
        let g = guard(&[]);
        for a in [
            "127.0.0.1",
            "127.9.9.9",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "::",
            "fd00:ec2::254",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
        ] {
            let ip: IpAddr = a.parse().unwrap();
            assert!(g.check(a, ip).is_err(), "{a} should be refused");
        }
        for a in ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111"] {
            assert!(g.check(a, a.parse().unwrap()).is_ok(), "{a} should pass");
        }
        assert_eq!(
            g.check("meta", "169.254.169.254".parse().unwrap())
                .unwrap_err()
                .to_string(),
            "refused to connect to 169.254.169.254 (meta): it is a link-local (cloud metadata) \
             address; add it to connectors.outbound.allow to permit it"
        );
    }

    /// IPv6 forms that embed or tunnel to an IPv4 address, and the deprecated
    /// site-local range: refused whatever the address inside them is.
    #[test]
    fn ipv6_forms_that_hide_an_ipv4_address_are_refused() {
        let g = guard(&[]);
        for (a, what) in [
            ("2002:7f00:1::", "6to4"),
            ("2002:a9fe:a9fe::1", "6to4"),
            ("2002:0808:0808::", "6to4"),
            ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo"),
            ("2001::1", "Teredo"),
            ("::127.0.0.1", "IPv4-compatible"),
            ("::169.254.169.254", "IPv4-compatible"),
            ("::8.8.8.8", "IPv4-compatible"),
            ("fec0::1", "site-local"),
            ("feff:ffff::1", "site-local"),
        ] {
            match g.check(a, a.parse().unwrap()) {
                Err(OutboundError::Refused { what: w, .. }) => assert_eq!(w, what, "{a}"),
                other => panic!("{a} should be refused as {what}: {other:?}"),
            }
        }
        // Neighbours of those ranges stay open.
        for a in [
            "2003::1",
            "2001:1::1",
            "2001:4860:4860::8888",
            "fe00::1",
            "1::1",
        ] {
            assert!(g.check(a, a.parse().unwrap()).is_ok(), "{a} should pass");
        }
        // The allowlist opens them like any other range.
        let open = guard(&["2002::/16"]);
        assert!(open.check("x", "2002:7f00:1::".parse().unwrap()).is_ok());
    }

    proptest::proptest! {
        #[test]
        fn every_address_of_the_hiding_ranges_is_refused(low in proptest::prelude::any::<u128>(), v4 in proptest::prelude::any::<u32>()) {
            let g = guard(&[]);
            let in_range = |prefix: u128, bits: u32| {
                Ipv6Addr::from(prefix | (low & (u128::MAX >> bits)))
            };
            for a in [
                in_range(0x2002_u128 << 112, 16),
                in_range(0x2001_0000_u128 << 96, 32),
                in_range(0xfec0_u128 << 112, 10),
                Ipv6Addr::from(u128::from(v4)),
            ] {
                proptest::prop_assert!(g.check("p", IpAddr::V6(a)).is_err(), "{a} passed");
            }
        }
    }

    #[test]
    fn the_allowlist_opens_exactly_its_ranges() {
        let g = guard(&["127.0.0.1/32", "10.20.0.0/16", "::1"]);
        assert!(g.check("x", "127.0.0.1".parse().unwrap()).is_ok());
        assert!(g.check("x", "::ffff:127.0.0.1".parse().unwrap()).is_ok());
        assert!(g.check("x", "127.0.0.2".parse().unwrap()).is_err());
        assert!(g.check("x", "10.20.9.9".parse().unwrap()).is_ok());
        assert!(g.check("x", "10.21.0.1".parse().unwrap()).is_err());
        assert!(g.check("x", "::1".parse().unwrap()).is_ok());
        assert_eq!(
            Outbound::new(&OutboundSettings {
                allow: vec!["10.0.0.0/8".into(), "nope".into()]
            })
            .unwrap_err()
            .to_string(),
            "connectors.outbound.allow[1]: \"nope\" is not a CIDR range or address"
        );
    }

    #[tokio::test]
    async fn names_are_judged_by_what_they_resolve_to() {
        let g = guard(&[]);
        let e = g.resolve("localhost", 80).await.unwrap_err();
        assert!(matches!(e, OutboundError::Refused { .. }), "{e}");
        let open = guard(&["127.0.0.0/8", "::1/128"]);
        assert!(!open.resolve("localhost", 80).await.unwrap().is_empty());
        assert!(g.resolve("[::1]", 80).await.is_err());
    }
}
