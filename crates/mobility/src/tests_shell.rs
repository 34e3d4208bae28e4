//! What a thin `mipsec mn` shell needs from the core: the tunnelling granted,
//! a prompt retry after a failed send, the `Outside::None` flavour, the RFC 3024
//! request flags, and the counters for status.

use super::*;
use mip4::wire::{Extension, Flags, RegistrationRequest};

fn plain_cfg() -> Config {
    Config::new(HOME, I_HA, sa(b"i-key"), Outside::None)
}

/// Advances 1 ms at a time until the gate of `i` opens; the time it took.
fn time_to_open(r: &mut Rig, i: IfaceId, limit: Duration) -> Option<Duration> {
    let start = r.now;
    while r.now - start <= limit {
        if r.gate(i).is_open() {
            return Some(r.now - start);
        }
        r.advance(Duration::from_millis(1));
    }
    None
}

fn tunnel_events(r: &Rig, i: IfaceId, layer: Layer) -> Vec<Option<Tunnel>> {
    r.events
        .iter()
        .filter_map(|e| match e {
            Event::TunnelChanged {
                iface,
                layer: l,
                tunnel,
            } if *iface == i && *l == layer => Some(*tunnel),
            _ => None,
        })
        .collect()
}

#[test]
fn granted_udp_tunnelling_and_keepalive_are_reported_per_layer() {
    // Outside, RFC 3519 asked on both layers: both home agents grant UDP with
    // their keepalive interval (110 s, the mip4 home agent's default).
    let mut c = cfg();
    c.udp_tunnel = Some(true);
    let mut r = Rig::new(c);
    outside_cvc(&mut r, 1);
    assert_eq!(r.gate(1), Gate::OpenViaVpn(Mode::Cvc));
    let udp = Some(Tunnel::Udp { keepalive: 110 });
    assert_eq!(r.node.tunnel(1, Layer::Xha, r.now), udp);
    assert_eq!(r.node.tunnel(1, Layer::IhaViaVpn, r.now), udp);
    assert_eq!(r.node.tunnel(1, Layer::IhaDirect, r.now), None);
    assert_eq!(tunnel_events(&r, 1, Layer::Xha), vec![udp]);
    assert_eq!(tunnel_events(&r, 1, Layer::IhaViaVpn), vec![udp]);
    // Carrier lost: the x-HA layer is gone (the via-VPN binding stays until
    // the VPN goes, MN-11).
    r.link(1, LinkEvent::CarrierDown);
    assert_eq!(r.node.tunnel(1, Layer::Xha, r.now), None);
    assert_eq!(tunnel_events(&r, 1, Layer::Xha), vec![udp, None]);
    r.vpn(1, VpnEvent::Down);
    assert_eq!(tunnel_events(&r, 1, Layer::IhaViaVpn), vec![udp, None]);

    // Inside without asking: IP-in-IP on the direct layer.
    let mut r = Rig::new(cfg());
    r.attach(1, IN_ADDR, true, false);
    assert_eq!(r.gate(1), Gate::OpenInside(Mode::C));
    assert_eq!(
        r.node.tunnel(1, Layer::IhaDirect, r.now),
        Some(Tunnel::IpInIp)
    );
    assert_eq!(
        tunnel_events(&r, 1, Layer::IhaDirect),
        vec![Some(Tunnel::IpInIp)]
    );
    // Inside, asking for UDP: granted on the direct layer.
    let mut c = cfg();
    c.udp_tunnel = Some(true);
    let mut r = Rig::new(c);
    r.attach(1, IN_ADDR, true, false);
    assert_eq!(r.node.tunnel(1, Layer::IhaDirect, r.now), udp);
    // At home (mode h) the node deregisters: no tunnel at all.
    let mut r = Rig::new(cfg());
    r.attach(1, HOME, true, false);
    assert_eq!(r.gate(1), Gate::OpenInside(Mode::H));
    assert_eq!(r.node.tunnel(1, Layer::IhaDirect, r.now), None);
}

#[test]
fn a_failed_first_send_is_retried_after_the_short_delay_not_the_rto() {
    // Reported: the request goes out again after send_retry (10 ms).
    let mut r = Rig::new(plain_cfg());
    r.fail_sends = 1;
    r.attach(1, IN_ADDR, true, false);
    assert_eq!(r.gate(1), Gate::Closed);
    let t = time_to_open(&mut r, 1, Duration::from_secs(3)).unwrap();
    assert_eq!(t, Duration::from_millis(10), "{t:?}");
    assert_eq!(r.node.stats().send_failures, 1);
    assert_eq!(r.node.stats().send_retries, 1);
    // Not reported: only the first retransmission (1 s) recovers.
    let mut r = Rig::new(plain_cfg());
    r.fail_sends = 1;
    r.report_send_failures = false;
    r.attach(1, IN_ADDR, true, false);
    let t = time_to_open(&mut r, 1, Duration::from_secs(3)).unwrap();
    assert_eq!(t, Duration::from_secs(1), "{t:?}");
    // A route that appears earlier sends at once.
    let mut r = Rig::new(plain_cfg());
    r.fail_sends = 1;
    r.attach(1, IN_ADDR, true, false);
    r.advance(Duration::from_millis(3));
    let (n, w) = (r.now, r.wall());
    r.node.handle_route_ready(n, w, 1);
    r.pump();
    assert_eq!(r.gate(1), Gate::OpenInside(Mode::C));
}

#[test]
fn prompt_retries_cover_every_plain_request_and_are_bounded_per_epoch() {
    // x-MIP: the i-HA and x-HA requests both failed; both go out again.
    let mut r = Rig::new(cfg());
    r.fail_sends = 2;
    r.attach(1, IN_ADDR, true, true);
    r.advance(Duration::from_millis(10));
    assert_eq!(r.node.stats().send_retries, 2);
    assert_eq!(r.gate(1), Gate::OpenInside(Mode::C));

    // A status change before the retry is due: the new round sends afresh,
    // the stale retry is dropped.
    let mut r = Rig::new(plain_cfg());
    r.fail_sends = 1;
    r.attach(1, IN_ADDR, false, false);
    r.link(1, LinkEvent::DefaultGateway(Some((AGENT, [2; 6]))));
    r.advance(Duration::from_millis(50));
    assert_eq!(r.node.stats().send_retries, 0);
    assert_eq!(r.node.stats().requests_sent, 2);

    // No route for a long time: at most send_retry_max prompt retries, then the
    // ordinary schedule; a status change gives a new budget.
    let mut r = Rig::new(plain_cfg());
    let max = r.node.config().send_retry_max;
    r.fail_sends = u32::MAX;
    r.attach(1, IN_ADDR, true, false);
    r.advance(Duration::from_millis(500));
    let s = r.node.stats();
    assert_eq!(s.send_retries, u64::from(max));
    assert_eq!(s.send_failures, u64::from(max) + 1);
    assert_eq!(s.requests_sent, u64::from(max) + 1);
    r.advance(Duration::from_millis(800));
    assert_eq!(r.node.stats().send_retries, u64::from(max), "budget spent");
    assert_eq!(r.node.stats().retransmissions, 1, "the 1 s retransmission");
    r.link(1, LinkEvent::DefaultGateway(Some((AGENT, [2; 6]))));
    r.advance(Duration::from_millis(15));
    assert_eq!(r.node.stats().send_retries, u64::from(max) + 1);
    r.fail_sends = 0;
    r.advance(Duration::from_millis(10));
    assert_eq!(r.gate(1), Gate::OpenInside(Mode::C));
}

#[test]
fn outside_none_is_plain_i_mip_with_tnc_and_closed_everywhere_else() {
    // With TNC: inside, c and h, just like the x-MIP flavour.
    let mut r = Rig::new(plain_cfg());
    r.attach(1, IN_ADDR, true, false);
    assert_eq!(r.gate(1), Gate::OpenInside(Mode::C));
    let mut r = Rig::new(plain_cfg());
    r.attach(1, HOME, true, false);
    assert_eq!(r.gate(1), Gate::OpenInside(Mode::H));

    // The i-HA answers without TNC (an untrusted network): fail closed, no VPN,
    // no x-HA; detection retries forever.
    let mut r = Rig::with_iha_trust(plain_cfg(), false);
    r.attach(1, OUT_ADDR, true, true);
    let (n, w) = (r.now, r.wall());
    // A VPN event (a confused shell) changes nothing.
    r.node.handle_vpn(n, w, 1, VpnEvent::Up { tia: TIA });
    r.pump();
    for _ in 0..60 {
        r.advance(Duration::from_secs(1));
        assert_eq!(r.gate(1), Gate::Closed);
        assert_ne!(r.node.phase(1), Phase::Inside);
        assert_ne!(r.node.phase(1), Phase::Outside);
    }
    assert!(r.node.stats().accepted_without_tnc >= 2, "it keeps trying");
    assert!(r
        .actions
        .iter()
        .all(|a| !matches!(a, Action::StartIke { .. } | Action::MobikeUpdate { .. })));
    assert!(r
        .sent
        .iter()
        .all(|t| t.via == Via::Plain && *t.dst.ip() == I_HA));
    assert_eq!(r.node.preferred(r.now), None);

    // Nothing answers at all: closed too.
    let mut r = Rig::new(plain_cfg());
    r.attach(1, OUT_ADDR, false, false);
    r.advance(Duration::from_secs(30));
    assert_eq!(r.gate(1), Gate::Closed);
}

#[test]
fn reverse_tunnel_and_encapsulating_delivery_reach_the_requests() {
    let flags = |t: &Transmit| RegistrationRequest::parse(&t.payload).unwrap().flags;
    // Reverse tunnelling off inside: the direct request has no T bit, the x-HA's
    // keeps it (MN-14).
    let mut c = cfg();
    c.reverse_tunnel = false;
    let mut r = Rig::new(c);
    r.attach(1, OUT_ADDR, false, true);
    let to = |r: &Rig, ha: Ipv4Addr| r.sent.iter().find(|t| *t.dst.ip() == ha).cloned();
    assert!(!flags(&to(&r, I_HA).unwrap()).contains(Flags::T));
    assert!(flags(&to(&r, X_HA).unwrap()).contains(Flags::T));
    r.advance(Duration::from_secs(3));
    r.vpn(1, VpnEvent::Up { tia: TIA });
    let vpn = r.sent.iter().find(|t| t.via == Via::Vpn).unwrap();
    assert!(flags(vpn).contains(Flags::T), "through the VPN: always");
    // Default: T everywhere.
    let mut r = Rig::new(cfg());
    r.attach(1, OUT_ADDR, false, true);
    assert!(r.sent.iter().all(|t| flags(t).contains(Flags::T)));

    // Encapsulating delivery through a foreign agent (mode f).
    let has_encap = |t: &Transmit| {
        RegistrationRequest::parse(&t.payload)
            .unwrap()
            .extensions
            .iter()
            .any(|e| matches!(e, Extension::EncapDeliveryStyle))
            || t.payload.windows(2).any(|w| w == [100, 0])
    };
    let adv = Advertisement {
        agent: AGENT,
        care_of: AGENT,
        lifetime: 30,
        sequence: 0,
        nai: None,
    };
    for on in [false, true] {
        let mut c = cfg();
        c.trusted_agents = vec![AGENT];
        c.encapsulating_delivery = on;
        let mut r = Rig::new(c);
        r.reach.insert(1, (true, false));
        r.link(1, LinkEvent::CarrierUp);
        let (n, w) = (r.now, r.wall());
        r.node.handle_advertisement(n, w, 1, adv.clone());
        r.pump();
        assert_eq!(r.gate(1), Gate::OpenInside(Mode::F));
        let via_agent: Vec<&Transmit> = r.sent.iter().filter(|t| *t.dst.ip() == AGENT).collect();
        assert!(!via_agent.is_empty());
        assert!(via_agent.iter().all(|t| has_encap(t) == on), "on={on}");
    }
}

#[test]
fn counters_for_status() {
    let mut c = cfg();
    c.t_monitor = Duration::from_secs(20);
    c.grace = Duration::from_secs(5);
    let mut r = Rig::new(c);
    // x-HA unreachable, i-HA reachable: one proof, no retransmission (the
    // unanswered x-HA request is abandoned once inside is proven).
    r.attach(1, IN_ADDR, true, false);
    let s = r.node.stats();
    assert_eq!(s.detections, 2, "carrier up, then the address");
    assert_eq!(s.inside_proofs, 1);
    assert_eq!(s.requests_sent, 2, "one to each home agent");
    assert_eq!(s.retransmissions, 0);
    // The i-HA goes silent: re-registration retransmits, T_MONITOR runs out,
    // the gate closes and detection starts again.
    r.reach.insert(1, (false, false));
    // Re-registration at 15 s, retransmitted at 16, 18 and 22 s; T_MONITOR at
    // 20 s; the last attempt times out at 26 s and detection starts again.
    r.advance(Duration::from_millis(26_500));
    let s = r.node.stats();
    assert_eq!(s.retransmissions, 3, "{s:?}");
    assert_eq!(s.t_monitor_expiries, 1);
    assert_eq!(s.gate_closures, 1);
    assert_eq!(s.detections, 3, "{s:?}");
    assert_eq!(s.requests_sent, 2 + 4 + 2, "the new round asks both again");
    // A replayed TNC reply from long ago is refused as a proof and counted.
    let mut r = Rig::new(cfg());
    r.attach(1, IN_ADDR, true, false);
    let captured = r.iha_replies[0].clone();
    r.link(1, LinkEvent::CarrierDown);
    r.advance(Duration::from_secs(3600));
    r.reach.insert(1, (false, true));
    r.link(1, LinkEvent::CarrierUp);
    let (n, w) = (r.now, r.wall());
    let from = SocketAddrV4::new(I_HA, 434);
    r.node.handle_datagram(n, w, 1, Via::Plain, from, &captured);
    r.pump();
    assert!(!matches!(r.gate(1), Gate::OpenInside(_)));
    let s = r.node.stats();
    assert_eq!(s.inside_proofs, 1);
    assert_eq!(s.proofs_refused, 1, "the replay is counted: {s:?}");
    assert_eq!(s.replies_refused, 1);
}

#[test]
fn a_send_retry_that_is_zero_or_not_below_the_rto_is_refused() {
    let mut c = plain_cfg();
    c.send_retry = Duration::ZERO;
    assert_eq!(c.validate(), Err(ConfigError::SendRetry));
    c.send_retry = c.initial_rto;
    assert_eq!(c.validate(), Err(ConfigError::SendRetry));
    c.send_retry = Duration::from_millis(5);
    assert_eq!(c.validate(), Ok(()));
}
