//! Each admission rule of the data path, on bindings made by real
//! (authenticated) registrations.

use super::super::*;
use super::{ForwardTo, ReverseDrop};
use crate::auth::Algorithm;
use std::time::UNIX_EPOCH;

const HA: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
const HOME: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 50);
const OTHER_HOME: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 51);
const COA: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const COA2: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 20);
const FA: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const NAT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
/// The reference request's Identification: 2025-01-01 as an NTP timestamp.
const IDENT: u64 = 0xeb1f_0400_0000_0000;

fn sa() -> SecurityAssociation {
    SecurityAssociation::new(256, Algorithm::HmacMd5, &[0x11; 16])
}

fn wall() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_735_689_600)
}

fn agent() -> HomeAgent {
    let mut h = HomeAgent::new(HaConfig::new(HA), [7; 32]);
    for home in [HOME, OTHER_HOME] {
        h.add_mobile_node(MobileNodeConfig {
            home_addr: Some(home),
            nai: None,
            sas: vec![sa()],
            replay: ReplayMethod::Timestamp,
        })
        .unwrap();
    }
    h
}

fn sock(a: Ipv4Addr, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(a, port)
}

/// Registers (or deregisters, `lifetime` 0) `HOME` via `care_of`, sent from
/// `from`, and asserts the agent accepted it.
#[allow(clippy::too_many_arguments)]
fn register(
    h: &mut HomeAgent,
    now: Instant,
    step: u64,
    from: SocketAddrV4,
    care_of: Ipv4Addr,
    flags: Flags,
    lifetime: u16,
    udp: bool,
) {
    let req = RegistrationRequest {
        flags,
        lifetime,
        home_addr: HOME,
        home_agent: HA,
        care_of,
        ident: IDENT + step,
        extensions: if udp {
            vec![Extension::UdpTunnelRequest {
                force: false,
                r: false,
                encapsulation: 4,
            }]
        } else {
            Vec::new()
        },
    };
    let mut b = req.to_bytes();
    sa().append(AuthKind::MnHa, &mut b);
    h.handle_datagram(now, wall(), from, sock(HA, 434), &b);
    let t = h.poll_transmit().expect("a reply");
    let r = RegistrationReply::parse(&t.payload).unwrap();
    assert!(r.code.is_accepted(), "{:?}", r.code);
    while h.poll_event().is_some() {}
}

fn colocated(h: &mut HomeAgent, now: Instant, step: u64, coa: Ipv4Addr, extra: Flags) {
    register(
        h,
        now,
        step,
        sock(coa, 434),
        coa,
        Flags::D | Flags::T | extra,
        600,
        false,
    );
}

fn forwards(h: &HomeAgent, now: Instant, home: Ipv4Addr) -> Vec<ForwardTo> {
    let mut v: Vec<ForwardTo> = h.forward(now, home).collect();
    v.sort_by_key(|f| format!("{f:?}"));
    v
}

#[test]
fn ipip_is_admitted_only_from_the_care_of_address_for_the_home_address() {
    let mut h = agent();
    let now = Instant::now();
    colocated(&mut h, now, 1, COA, Flags(0));
    assert_eq!(h.admit_reverse(now, COA, HOME), Ok(()));
    // Wrong outer source: somebody else wrapping the node's address.
    assert_eq!(
        h.admit_reverse(now, COA2, HOME),
        Err(ReverseDrop::WrongCareOf)
    );
    // Wrong inner source: the registered care-of address spoofing another node,
    // a node with no binding, or an address that is nobody's home address.
    assert_eq!(
        h.admit_reverse(now, COA, OTHER_HOME),
        Err(ReverseDrop::Unregistered)
    );
    assert_eq!(
        h.admit_reverse(now, COA, Ipv4Addr::new(10, 1, 0, 99)),
        Err(ReverseDrop::Unregistered)
    );
    assert_eq!(
        h.admit_reverse(now, COA, COA),
        Err(ReverseDrop::Unregistered)
    );
    // IP-in-IP is not UDP tunnel data, whatever the port.
    assert_eq!(
        h.admit_udp_tunnel(now, sock(COA, 434), HOME),
        Err(ReverseDrop::WrongUdpPeer)
    );
    assert_eq!(
        forwards(&h, now, HOME),
        [ForwardTo::IpInIp {
            care_of: COA,
            colocated: true
        }]
    );
    assert_eq!(forwards(&h, now, OTHER_HOME), []);
    assert_eq!(h.bound_home_addrs().collect::<Vec<_>>(), [HOME]);
}

#[test]
fn through_a_foreign_agent_the_outer_source_is_the_agent() {
    let mut h = agent();
    let now = Instant::now();
    // Relayed by the FA: its address is the care-of address, no D bit.
    register(&mut h, now, 1, sock(FA, 434), FA, Flags::T, 600, false);
    assert_eq!(h.admit_reverse(now, FA, HOME), Ok(()));
    assert_eq!(
        h.admit_reverse(now, COA, HOME),
        Err(ReverseDrop::WrongCareOf)
    );
    assert_eq!(
        forwards(&h, now, HOME),
        [ForwardTo::IpInIp {
            care_of: FA,
            colocated: false
        }]
    );
}

#[test]
fn without_the_t_bit_nothing_is_reverse_tunnelled() {
    let mut h = agent();
    let now = Instant::now();
    register(&mut h, now, 1, sock(COA, 434), COA, Flags::D, 600, false);
    assert_eq!(
        h.admit_reverse(now, COA, HOME),
        Err(ReverseDrop::NotReverseTunneled)
    );
    // The forward direction does not need it.
    assert_eq!(forwards(&h, now, HOME).len(), 1);
    let mut h = agent();
    register(&mut h, now, 1, sock(NAT, 4500), COA, Flags::D, 600, true);
    assert_eq!(
        h.admit_udp_tunnel(now, sock(NAT, 4500), HOME),
        Err(ReverseDrop::NotReverseTunneled)
    );
}

#[test]
fn udp_tunnel_data_only_from_the_registered_address_and_port() {
    let mut h = agent();
    let now = Instant::now();
    let mapped = sock(NAT, 40123);
    register(&mut h, now, 1, mapped, COA, Flags::D | Flags::T, 600, true);
    assert_eq!(h.admit_udp_tunnel(now, mapped, HOME), Ok(()));
    assert_eq!(
        forwards(&h, now, HOME),
        [ForwardTo::Udp {
            peer: mapped,
            local: HA
        }]
    );
    // The NAT remaps the node to a new port: data from it is refused (anybody
    // behind the NAT could send it) until the node registers from there.
    let remapped = sock(NAT, 40124);
    assert_eq!(
        h.admit_udp_tunnel(now, remapped, HOME),
        Err(ReverseDrop::WrongUdpPeer)
    );
    assert_eq!(
        h.admit_udp_tunnel(now, sock(Ipv4Addr::new(198, 51, 100, 8), 40123), HOME),
        Err(ReverseDrop::WrongUdpPeer)
    );
    // Nor as IP-in-IP from the NAT's public address (not the care-of address).
    assert_eq!(
        h.admit_reverse(now, NAT, HOME),
        Err(ReverseDrop::WrongCareOf)
    );
    assert_eq!(
        h.admit_udp_tunnel(now, mapped, OTHER_HOME),
        Err(ReverseDrop::Unregistered)
    );
    register(
        &mut h,
        now,
        2,
        remapped,
        COA,
        Flags::D | Flags::T,
        600,
        true,
    );
    assert_eq!(h.admit_udp_tunnel(now, remapped, HOME), Ok(()));
    assert_eq!(
        h.admit_udp_tunnel(now, mapped, HOME),
        Err(ReverseDrop::WrongUdpPeer)
    );
    assert_eq!(
        forwards(&h, now, HOME),
        [ForwardTo::Udp {
            peer: remapped,
            local: HA
        }]
    );
}

#[test]
fn an_expired_binding_admits_nothing_even_before_the_timer_runs() {
    let mut h = agent();
    let t0 = Instant::now();
    colocated(&mut h, t0, 1, COA, Flags(0));
    let last = t0 + Duration::from_secs(599);
    assert_eq!(h.admit_reverse(last, COA, HOME), Ok(()));
    assert_eq!(forwards(&h, last, HOME).len(), 1);
    let end = t0 + Duration::from_secs(600);
    assert_eq!(h.admit_reverse(end, COA, HOME), Err(ReverseDrop::Expired));
    assert_eq!(forwards(&h, end, HOME), []);
    h.handle_timeout(end);
    assert_eq!(
        h.admit_reverse(end, COA, HOME),
        Err(ReverseDrop::Unregistered)
    );
    assert_eq!(h.bound_home_addrs().count(), 0);
}

#[test]
fn a_deregistered_node_admits_nothing() {
    let mut h = agent();
    let now = Instant::now();
    colocated(&mut h, now, 1, COA, Flags(0));
    register(
        &mut h,
        now,
        2,
        sock(COA, 434),
        COA,
        Flags::D | Flags::T,
        0,
        false,
    );
    assert_eq!(
        h.admit_reverse(now, COA, HOME),
        Err(ReverseDrop::Unregistered)
    );
    assert_eq!(forwards(&h, now, HOME), []);
    // Removed from the configuration (a key file reload): the same.
    let mut h = agent();
    colocated(&mut h, now, 1, COA, Flags(0));
    h.replace_mobile_nodes(vec![MobileNodeConfig {
        home_addr: Some(OTHER_HOME),
        nai: None,
        sas: vec![sa()],
        replay: ReplayMethod::Timestamp,
    }])
    .unwrap();
    assert_eq!(
        h.admit_reverse(now, COA, HOME),
        Err(ReverseDrop::Unregistered)
    );
    assert_eq!(forwards(&h, now, HOME), []);
}

#[test]
fn simultaneous_bindings_each_admit_their_own_care_of_address() {
    let mut h = agent();
    let now = Instant::now();
    colocated(&mut h, now, 1, COA, Flags::S);
    colocated(&mut h, now, 2, COA2, Flags::S);
    assert_eq!(h.admit_reverse(now, COA, HOME), Ok(()));
    assert_eq!(h.admit_reverse(now, COA2, HOME), Ok(()));
    assert_eq!(
        h.admit_reverse(now, FA, HOME),
        Err(ReverseDrop::WrongCareOf)
    );
    assert_eq!(
        forwards(&h, now, HOME),
        [
            ForwardTo::IpInIp {
                care_of: COA,
                colocated: true
            },
            ForwardTo::IpInIp {
                care_of: COA2,
                colocated: true
            }
        ]
    );
    // Deregistering one leaves the other.
    register(
        &mut h,
        now,
        3,
        sock(COA, 434),
        COA,
        Flags::S | Flags::D | Flags::T,
        0,
        false,
    );
    assert_eq!(
        h.admit_reverse(now, COA, HOME),
        Err(ReverseDrop::WrongCareOf)
    );
    assert_eq!(h.admit_reverse(now, COA2, HOME), Ok(()));
    // A registration without S replaces every other binding.
    colocated(&mut h, now, 4, COA, Flags(0));
    assert_eq!(h.admit_reverse(now, COA, HOME), Ok(()));
    assert_eq!(
        h.admit_reverse(now, COA2, HOME),
        Err(ReverseDrop::WrongCareOf)
    );
    assert_eq!(forwards(&h, now, HOME).len(), 1);
}

#[test]
fn the_refusal_names_the_closest_binding() {
    let mut h = agent();
    let t0 = Instant::now();
    // One binding without T that lives on, one with T that expires first.
    register(
        &mut h,
        t0,
        1,
        sock(COA, 434),
        COA,
        Flags::S | Flags::D,
        900,
        false,
    );
    register(
        &mut h,
        t0,
        2,
        sock(COA2, 434),
        COA2,
        Flags::S | Flags::D | Flags::T,
        300,
        false,
    );
    let later = t0 + Duration::from_secs(400);
    assert_eq!(
        h.admit_reverse(later, COA2, HOME),
        Err(ReverseDrop::NotReverseTunneled)
    );
    assert!(ReverseDrop::Unregistered < ReverseDrop::WrongUdpPeer);
    assert_eq!(
        ReverseDrop::WrongUdpPeer.to_string(),
        "tunnel data from an address or port the node did not register from"
    );
}
