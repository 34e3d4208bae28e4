//! The home agent's data-path decisions, made on its own binding table so the
//! I/O shell keeps no copy of it.
//!
//! * [`HomeAgent::admit_reverse`]: an IP-in-IP packet (RFC 2003) reverse tunnelled
//!   to the home agent (RFC 3024) is accepted only when its inner source is a home
//!   address with a live binding that asked for reverse tunnelling (the T bit)
//!   and its outer source is that binding's care-of address (the node's
//!   co-located address, or its foreign agent's).
//! * [`HomeAgent::admit_udp_tunnel`]: RFC 3519 Tunnel Data is accepted only from
//!   the address *and port* a live binding registered from (RFC 3519 section
//!   6.1). A binding moves to a new NAT mapping on an authenticated request alone,
//!   never on data, which anybody behind the same NAT could forge; the node
//!   notices a lost mapping by its unanswered keepalives and re-registers.
//! * [`HomeAgent::forward`]: where a packet for a home address goes, one
//!   [`ForwardTo`] per live binding (several with simultaneous bindings).
//!
//! All three are lookups in the home-address index: no allocation, no copy.
//! A binding past its expiry is treated as gone even before
//! [`HomeAgent::handle_timeout`] removes it.

use super::{Binding, HomeAgent, Tunnel};
use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Instant;

/// Why a reverse-tunnelled packet was refused (for the shell to count).
/// Ordered from "knows nothing of the node" to "nearly matched": with several
/// bindings, the refusal names the closest one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ReverseDrop {
    /// The inner source has no binding: not a home address, never registered,
    /// deregistered, replaced or revoked.
    Unregistered,
    /// Every binding of the inner source has passed its lifetime.
    Expired,
    /// The node registered without the T bit (RFC 3024 section 3).
    NotReverseTunneled,
    /// IP-in-IP whose outer source is not a care-of address of the node.
    WrongCareOf,
    /// Tunnel Data from an address or port no binding of the node registered
    /// from (RFC 3519 section 6.1), such as a NAT's new mapping.
    WrongUdpPeer,
}

impl ReverseDrop {
    /// A stable label for status counters.
    pub fn label(self) -> &'static str {
        match self {
            ReverseDrop::Unregistered => "reverse tunnel from an unregistered source",
            ReverseDrop::Expired => "reverse tunnel on an expired binding",
            ReverseDrop::NotReverseTunneled => "reverse tunnel not registered (no T bit)",
            ReverseDrop::WrongCareOf => {
                "reverse tunnel from an address that is not the care-of address"
            }
            ReverseDrop::WrongUdpPeer => {
                "tunnel data from an address or port the node did not register from"
            }
        }
    }
}

impl fmt::Display for ReverseDrop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// How to tunnel a packet to one binding of its destination home address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardTo {
    /// IP-in-IP (RFC 2003) to the care-of address: the node's own (co-located)
    /// or its foreign agent's, which decapsulates and delivers on its link.
    IpInIp { care_of: Ipv4Addr, colocated: bool },
    /// RFC 3519 Tunnel Data over UDP to `peer` (the NAT's public side), sent
    /// from `local`, the address the node registered with.
    Udp { peer: SocketAddrV4, local: Ipv4Addr },
}

impl HomeAgent {
    /// RFC 3024: may an IP-in-IP packet from `outer_src` whose inner source is
    /// `inner_src` enter the home network?
    pub fn admit_reverse(
        &self,
        now: Instant,
        outer_src: Ipv4Addr,
        inner_src: Ipv4Addr,
    ) -> Result<(), ReverseDrop> {
        self.admit(now, inner_src, |b| {
            (b.care_of == outer_src)
                .then_some(())
                .ok_or(ReverseDrop::WrongCareOf)
        })
    }

    /// RFC 3519 section 6.1: may Tunnel Data received from `from` whose inner
    /// source is `inner_src` enter the home network?
    pub fn admit_udp_tunnel(
        &self,
        now: Instant,
        from: SocketAddrV4,
        inner_src: Ipv4Addr,
    ) -> Result<(), ReverseDrop> {
        self.admit(now, inner_src, |b| match b.tunnel {
            Tunnel::Udp { peer, .. } if peer == from => Ok(()),
            _ => Err(ReverseDrop::WrongUdpPeer),
        })
    }

    /// Accepts when one live, reverse-tunnelling binding of `inner_src` passes
    /// `source`; otherwise the closest refusal.
    fn admit(
        &self,
        now: Instant,
        inner_src: Ipv4Addr,
        source: impl Fn(&Binding) -> Result<(), ReverseDrop>,
    ) -> Result<(), ReverseDrop> {
        let mut why = ReverseDrop::Unregistered;
        for b in self
            .bindings_of(inner_src)
            .iter()
            .filter(|b| b.home_addr == inner_src)
        {
            let r = if b.expires <= now {
                Err(ReverseDrop::Expired)
            } else if !b.reverse_tunnel {
                Err(ReverseDrop::NotReverseTunneled)
            } else {
                source(b)
            };
            match r {
                Ok(()) => return Ok(()),
                Err(w) => why = why.max(w),
            }
        }
        Err(why)
    }

    /// Where a packet for `home_addr` goes: one entry per live binding, none
    /// when the address has no binding (the packet is not ours to tunnel).
    pub fn forward(
        &self,
        now: Instant,
        home_addr: Ipv4Addr,
    ) -> impl Iterator<Item = ForwardTo> + '_ {
        self.bindings_of(home_addr)
            .iter()
            .filter(move |b| b.home_addr == home_addr && b.expires > now)
            .map(|b| match b.tunnel {
                Tunnel::IpInIp => ForwardTo::IpInIp {
                    care_of: b.care_of,
                    colocated: b.colocated,
                },
                Tunnel::Udp { peer, .. } => ForwardTo::Udp {
                    peer,
                    local: *b.local.ip(),
                },
            })
    }

    /// Every home address that has a binding, in no particular order (for a
    /// shell undoing its routes at exit).
    pub fn bound_home_addrs(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.mns
            .iter()
            .filter_map(|m| m.bindings.first().map(|b| b.home_addr))
    }
}

#[cfg(test)]
#[path = "ha_admit_tests.rs"]
mod tests;
