#![allow(clippy::unwrap_used)]
mod common;

use std::net::Ipv4Addr;
use std::time::Duration;

use common::*;
use ikev2::wire::{DhId, TrafficSelector};
use ikev2::Event;

#[test]
fn psk_handshake_each_group() {
    for group in [DhId::CURVE25519, DhId::ECP_256, DhId::MODP_2048] {
        let (ci, cr) = configs(group);
        let mut p = Pair::new(ci, cr, 1);
        p.run(Duration::from_secs(2));
        assert!(
            p.i.is_established(),
            "{group:?}: {:?} / {:?}",
            p.i_events,
            p.r_events
        );
        let ci = Pair::child(&p.i_events).expect("initiator child");
        let cr = Pair::child(&p.r_events).expect("responder child");
        assert_mirror(&ci, &cr);
        assert_eq!(ci.tia, Some(Ipv4Addr::new(10, 99, 0, 10)));
        assert_eq!(ci.dns, vec![Ipv4Addr::new(10, 99, 0, 1)]);
        // TSi narrowed to the assigned address, TSr to the gateway's subnet.
        assert_eq!(
            ci.ts_local,
            vec![TrafficSelector::ipv4_host(Ipv4Addr::new(10, 99, 0, 10))]
        );
        assert_eq!(
            ci.ts_remote,
            vec![TrafficSelector::ipv4_range(
                Ipv4Addr::new(10, 1, 0, 0),
                Ipv4Addr::new(10, 1, 255, 255)
            )]
        );
        assert_eq!(ci.encr_key_in.len(), 20, "AES-GCM-128 key + salt");
        assert!(!ci.udp_encap);
        // MOBIKE on both sides -> floated to 4500 even without NAT.
        assert_eq!(p.i.local().port(), 4500);
        assert_eq!(p.i.stats().retransmits, 0);
    }
}

fn init_notifies(p: &Pair, dir: Dir) -> Vec<Vec<ikev2::wire::NotifyType>> {
    p.wire
        .iter()
        .filter(|(d, _)| *d == dir)
        .filter_map(|(_, t)| {
            let b = if t.src.port() == 4500 || t.dst.port() == 4500 {
                &t.payload[4..]
            } else {
                &t.payload[..]
            };
            let m = ikev2::wire::Message::parse(b).ok()?;
            (m.header.exchange == ikev2::wire::ExchangeType::IKE_SA_INIT)
                .then(|| m.notifies().map(|n| n.ty).collect())
        })
        .collect()
}

#[test]
fn invalid_ke_payload_retry_uses_requested_group() {
    let (mut ci, mut cr) = configs(DhId::CURVE25519);
    // Initiator prefers 31 but also offers 19; the responder only takes 19.
    ci.ike_proposals = vec![ikev2::IkeProposal::aes_gcm_256(&[
        DhId::CURVE25519,
        DhId::ECP_256,
    ])];
    cr.ike_proposals = vec![ikev2::IkeProposal::aes_gcm_256(&[DhId::ECP_256])];
    let mut p = Pair::new(ci, cr, 2);
    p.run(Duration::from_secs(2));
    assert!(p.i.is_established(), "{:?}", p.i_events);
    let resp = init_notifies(&p, Dir::ToInitiator);
    assert_eq!(resp.len(), 2);
    assert_eq!(resp[0], vec![ikev2::wire::NotifyType::INVALID_KE_PAYLOAD]);
    // the retried request carries a group-19 KE
    let req = p
        .wire
        .iter()
        .filter(|(d, _)| *d == Dir::ToResponder)
        .filter_map(|(_, t)| ikev2::wire::Message::parse(&t.payload).ok())
        .nth(1)
        .unwrap();
    assert!(req
        .payloads
        .iter()
        .any(|x| matches!(x, ikev2::wire::Payload::Ke { group, data } if *group == DhId::ECP_256 && data.len() == 64)));
    assert_mirror(
        &Pair::child(&p.i_events).unwrap(),
        &Pair::child(&p.r_events).unwrap(),
    );
}

#[test]
fn cookie_round_trip() {
    let (ci, mut cr) = configs(DhId::CURVE25519);
    cr.require_cookie = true;
    let mut p = Pair::new(ci, cr, 3);
    p.run(Duration::from_secs(2));
    assert!(p.i.is_established());
    let resp = init_notifies(&p, Dir::ToInitiator);
    assert_eq!(resp[0], vec![ikev2::wire::NotifyType::COOKIE]);
    let req = init_notifies(&p, Dir::ToResponder);
    assert_eq!(req.len(), 2);
    assert_eq!(
        req[1][0],
        ikev2::wire::NotifyType::COOKIE,
        "COOKIE must be the first payload"
    );
}

#[test]
fn wrong_psk_gives_authentication_failed() {
    let (ci, mut cr) = configs(DhId::CURVE25519);
    cr.psk = b"another secret".to_vec();
    let mut p = Pair::new(ci, cr, 4);
    p.run(Duration::from_secs(5));
    assert!(!p.i.is_established());
    assert_eq!(
        Pair::down(&p.i_events),
        Some(Some(ikev2::IkeError::PeerNotify(
            ikev2::wire::NotifyType::AUTHENTICATION_FAILED
        )))
    );
    assert_eq!(
        Pair::down(&p.r_events),
        Some(Some(ikev2::IkeError::AuthenticationFailed))
    );
    assert!(Pair::child(&p.i_events).is_none() && Pair::child(&p.r_events).is_none());
    assert_eq!(p.r.sa_count(), 0);
}

#[test]
fn unexpected_responder_id_is_rejected_by_initiator() {
    let (mut ci, cr) = configs(DhId::CURVE25519);
    ci.remote_id = Some(ikev2::wire::Identification::fqdn("other-gw.example"));
    let mut p = Pair::new(ci, cr, 5);
    p.run(Duration::from_secs(5));
    assert_eq!(
        Pair::down(&p.i_events),
        Some(Some(ikev2::IkeError::AuthenticationFailed))
    );
}

#[test]
fn unacceptable_proposal_gives_no_proposal_chosen() {
    let (mut ci, cr) = configs(DhId::CURVE25519);
    ci.ike_proposals = vec![ikev2::IkeProposal::aes_cbc_128_sha256(&[DhId::CURVE25519])];
    let mut p = Pair::new(ci, cr, 6);
    p.run(Duration::from_secs(5));
    assert_eq!(
        Pair::down(&p.i_events),
        Some(Some(ikev2::IkeError::NoProposalChosen))
    );
    assert_eq!(
        init_notifies(&p, Dir::ToInitiator),
        vec![vec![ikev2::wire::NotifyType::NO_PROPOSAL_CHOSEN]]
    );
    assert_eq!(p.r.sa_count(), 0);
}

#[test]
fn unacceptable_esp_proposal_keeps_ike_sa() {
    let (mut ci, cr) = configs(DhId::CURVE25519);
    ci.esp_proposals = vec![ikev2::EspProposal::aes_cbc_128_sha256()];
    let mut p = Pair::new(ci, cr, 7);
    p.run(Duration::from_secs(2));
    assert!(p.i.is_established());
    assert!(p
        .i_events
        .contains(&Event::ChildSaFailed(ikev2::IkeError::NoProposalChosen)));
}

#[test]
fn cbc_sha256_suites_and_sha1() {
    let (mut ci, mut cr) = configs(DhId::ECP_256);
    let ike = ikev2::IkeProposal {
        encr: ikev2::crypto::Encr::AesCbc { key: 32 },
        prf: ikev2::crypto::Prf::HmacSha1,
        integ: Some(ikev2::crypto::Integ::HmacSha1_96),
        dh: vec![DhId::ECP_256],
    };
    ci.ike_proposals = vec![
        ikev2::IkeProposal::aes_cbc_128_sha256(&[DhId::ECP_256]),
        ike.clone(),
    ];
    cr.ike_proposals = vec![ike];
    ci.esp_proposals = vec![ikev2::EspProposal::aes_cbc_128_sha256()];
    cr.esp_proposals = vec![
        ikev2::EspProposal::aes_gcm_128(),
        ikev2::EspProposal::aes_cbc_128_sha256(),
    ];
    let mut p = Pair::new(ci, cr, 8);
    p.run(Duration::from_secs(2));
    let (a, b) = (
        Pair::child(&p.i_events).unwrap(),
        Pair::child(&p.r_events).unwrap(),
    );
    assert_mirror(&a, &b);
    assert_eq!(a.encr_key_in.len(), 16);
    assert_eq!(a.integ_key_in.len(), 32);
}

#[test]
fn ipv6_outer_addresses() {
    use std::net::{Ipv6Addr, SocketAddr};
    let (ci, cr) = configs(DhId::CURVE25519);
    #[allow(clippy::disallowed_methods)]
    let now = std::time::Instant::now();
    let li = SocketAddr::new(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2).into(), 500);
    let lr = SocketAddr::new(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1).into(), 500);
    let mut i = ikev2::Initiator::new(ci, li, lr, [5; 32], now);
    let mut r = ikev2::Responder::new(cr, [6; 32]);
    let mut ev = Vec::new();
    for _ in 0..6 {
        while let Some(t) = i.poll_transmit() {
            r.handle_datagram(now, t.src, t.dst, &t.payload);
        }
        while let Some(t) = r.poll_transmit() {
            i.handle_datagram(now, t.src, t.dst, &t.payload);
        }
        ev.extend(std::iter::from_fn(|| i.poll_event()));
    }
    let c = Pair::child(&ev).expect("child over IPv6");
    assert_eq!(c.remote, SocketAddr::new(lr.ip(), 4500));
    assert!(!c.udp_encap, "no NAT between v6 peers");
    assert_eq!(c.tia, Some(Ipv4Addr::new(10, 99, 0, 10)));
}

/// A request whose send failed locally (no route yet after an address change) is
/// queued again at once, byte for byte, without counting a retransmission or moving
/// its deadline; the handshake then completes as usual.
#[test]
fn a_request_that_could_not_leave_is_resent_without_a_retransmission() {
    use std::net::SocketAddr;
    let (ci, cr) = configs(DhId::CURVE25519);
    #[allow(clippy::disallowed_methods)]
    let now = std::time::Instant::now();
    let li = SocketAddr::new(Ipv4Addr::new(192, 0, 2, 2).into(), 500);
    let lr = SocketAddr::new(Ipv4Addr::new(192, 0, 2, 1).into(), 500);
    let mut i = ikev2::Initiator::new(ci, li, lr, [5; 32], now);
    assert!(i.has_outstanding());
    let first = i.poll_transmit().expect("IKE_SA_INIT");
    assert!(i.poll_transmit().is_none());
    let deadline = i.poll_timeout();
    let later = now + Duration::from_millis(20);
    i.resend_outstanding(later);
    let again = i.poll_transmit().expect("the same request again");
    assert_eq!(again.payload, first.payload);
    assert_eq!((again.src, again.dst), (first.src, first.dst));
    assert_eq!(
        i.poll_timeout(),
        deadline,
        "the retransmission deadline stays"
    );
    assert_eq!(i.stats().retransmits, 0);
    // The answer to the resent copy completes the exchange.
    let mut r = ikev2::Responder::new(cr, [6; 32]);
    r.handle_datagram(later, again.src, again.dst, &again.payload);
    let mut ev = Vec::new();
    for _ in 0..6 {
        while let Some(t) = r.poll_transmit() {
            i.handle_datagram(later, t.src, t.dst, &t.payload);
        }
        while let Some(t) = i.poll_transmit() {
            r.handle_datagram(later, t.src, t.dst, &t.payload);
        }
        ev.extend(std::iter::from_fn(|| i.poll_event()));
    }
    assert!(Pair::child(&ev).is_some(), "handshake completes: {ev:?}");
    assert!(!i.has_outstanding());
    i.resend_outstanding(later);
    assert!(
        i.poll_transmit().is_none(),
        "nothing outstanding, nothing sent"
    );
}

/// `force_encap` (strongSwan's `encap = yes`): with no NAT between the peers, the
/// initiator's NAT-D source hash names an address that is not its own, so both sides
/// see a NAT in front of the initiator, float to port 4500 and put ESP in UDP.
#[test]
fn force_encap_makes_both_sides_encapsulate_without_a_nat() {
    let (mut ci, cr) = configs(DhId::CURVE25519);
    ci.force_encap = true;
    let mut p = Pair::new(ci, cr, 8);
    p.run(Duration::from_secs(2));
    let (a, b) = (
        Pair::child(&p.i_events).unwrap(),
        Pair::child(&p.r_events).unwrap(),
    );
    assert!(a.udp_encap && b.udp_encap, "{a:?}\n{b:?}");
    assert_eq!(a.remote.port(), 4500);
    assert_eq!(b.remote.port(), 4500);
    // Without it, the same peers do not encapsulate.
    let (ci, cr) = configs(DhId::CURVE25519);
    let mut p = Pair::new(ci, cr, 8);
    p.run(Duration::from_secs(2));
    let a = Pair::child(&p.i_events).unwrap();
    assert!(!a.udp_encap, "{a:?}");
}
