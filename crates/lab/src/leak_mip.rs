//! Mobile IP on UDP 434 for the leak classifier (`leak.rs`): registrations with an
//! x-HA, RFC 3519 tunnel data with one, and registrations between a home address and a
//! foreign agent on the link ([`Plan::agents`]).

use std::net::Ipv4Addr;

use super::{addr, be16, check_addr, inner, leak, v, with_xha, Class, Ip, Plan, Seg, Verdict};

/// Mobile IP on UDP 434: registrations whose home agent is an x-HA, and RFC 3519 tunnel
/// data with an x-HA whose inner packet is control or ESP.
pub(super) fn mip(plan: &Plan, seg: &mut Seg, ip: &Ip, m: &[u8], depth: usize) -> Verdict {
    match m.first() {
        // Request: type flags lifetime(2) HoA HA CoA id(8); reply: type code
        // lifetime(2) HoA HA id(8).
        Some(&t @ (1 | 3)) => {
            let (Some(hoa), Some(ha)) = (addr(m, 4), addr(m, 8)) else {
                return leak("truncated registration");
            };
            let coa = if t == 1 { addr(m, 12) } else { None };
            for (a, role) in [
                (Some(hoa), "home address"),
                (Some(ha), "home agent"),
                (coa, "care-of"),
            ] {
                if let Some(l) = a.and_then(|a| check_addr(plan, seg, a, role)) {
                    return l;
                }
            }
            if !plan.xhas.contains(&ha) {
                return leak(format!("registration with home agent {ha}, not an x-HA"));
            }
            v(Class::Control, "mip registration")
        }
        Some(4) if with_xha(plan, ip) => match m.get(1) {
            Some(4) => inner(plan, seg, &m[4.min(m.len())..], depth, "mip-udp-tunnel"),
            nh => leak(format!("tunnel data with next header {nh:?}")),
        },
        Some(4) => leak(format!(
            "UDP tunnel data between {} and {}, no x-HA",
            ip.src, ip.dst
        )),
        t => leak(format!("Mobile IP type {t:?} not decoded")),
    }
}

/// Registration extensions a node and an agent exchange, with their lengths (RFC 5944
/// 3.5: authentication extensions hold an SPI and an authenticator; RFC 3024 encapsulating
/// delivery style, empty; RFC 3519 UDP tunnel request and reply, 6 octets).
fn extension_ok(ty: u8, len: usize) -> bool {
    match ty {
        32..=34 => (4 + 16..=4 + 64).contains(&len),
        130 => len == 0,
        144 | 145 => len == 6,
        _ => false,
    }
}

/// Walks the extensions from `from` to the end: each a known one of its size, none cut.
/// True if one of them is of type `need` (or `need` is None).
fn extensions_ok(m: &[u8], from: usize, need: Option<u8>) -> bool {
    let mut i = from;
    let mut seen = need.is_none();
    while i < m.len() {
        let ty = m[i];
        if ty == 0 {
            i += 1;
            continue;
        }
        let Some(&len) = m.get(i + 1) else {
            return false;
        };
        let len = usize::from(len);
        if !extension_ok(ty, len) || i + 2 + len > m.len() {
            return false;
        }
        seen |= Some(ty) == need;
        i += 2 + len;
    }
    seen
}

/// A registration between a home address and a foreign agent of [`Plan::agents`] (see
/// there): the verdict's name, or None (the usual rules decide).
pub(super) fn via_agent(plan: &Plan, ip: &Ip) -> Option<&'static str> {
    if plan.agents.is_empty() || ip.proto != 17 || ip.frag_off != 0 || ip.more {
        return None;
    }
    let p = ip.payload;
    let (sp, dp, len) = (be16(p, 0)?, be16(p, 2)?, usize::from(be16(p, 4)?));
    if len < 8 || len != p.len() {
        return None;
    }
    let m = &p[8..];
    let known_ha = |ha: Ipv4Addr| plan.detection_to.contains(&ha) || plan.xhas.contains(&ha);
    let home = |a: Ipv4Addr| plan.home_addresses.contains(&a);
    match m.first()? {
        1 if dp == 434 && home(ip.src) && plan.agents.contains(&ip.dst) => {
            let ok = m.len() >= 24
                && addr(m, 4)? == ip.src
                && known_ha(addr(m, 8)?)
                && addr(m, 12)? == ip.dst
                && extensions_ok(m, 24, Some(32));
            ok.then_some("registration request to the agent")
        }
        3 if sp == 434 && plan.agents.contains(&ip.src) && home(ip.dst) => {
            let ok = m.len() >= 20
                && addr(m, 4)? == ip.dst
                && known_ha(addr(m, 8)?)
                && extensions_ok(m, 20, None);
            ok.then_some("registration reply from the agent")
        }
        _ => None,
    }
}
