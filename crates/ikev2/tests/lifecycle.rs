#![allow(clippy::unwrap_used)]
//! NAT traversal, liveness, delete, rekeying, MOBIKE and fragmentation.
mod common;

use std::time::Duration;

use common::*;
use ikev2::wire::DhId;
use ikev2::{ChildSaInfo, Event};

fn up(seed: u64) -> Pair {
    let (ci, cr) = configs(DhId::CURVE25519);
    let mut p = Pair::new(ci, cr, seed);
    p.run(Duration::from_secs(2));
    assert!(p.i.is_established());
    p
}

fn rekeyed(events: &[Event]) -> Vec<(u32, ChildSaInfo)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::ChildSaRekeyed { old_spi_in, new } => Some((*old_spi_in, new.clone())),
            _ => None,
        })
        .collect()
}

fn child_downs(events: &[Event]) -> Vec<u32> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::ChildSaDown { spi_in, .. } => Some(*spi_in),
            _ => None,
        })
        .collect()
}

#[test]
fn nat_detected_floats_to_4500_with_marker() {
    let (ci, cr) = configs(DhId::CURVE25519);
    let mut p = Pair::new(ci, cr, 20);
    p.nat = true;
    p.run(Duration::from_secs(2));
    assert!(p.i.is_established(), "{:?}", p.i_events);
    match &p.i_events[0] {
        Event::IkeSaUp {
            local_nat,
            remote_nat,
            local,
            remote,
            ..
        } => {
            assert!(*local_nat && !*remote_nat);
            assert_eq!(local.port(), 4500);
            assert_eq!(remote.port(), 4500);
        }
        e => panic!("{e:?}"),
    }
    match &p.r_events[0] {
        Event::IkeSaUp {
            local_nat,
            remote_nat,
            remote,
            ..
        } => {
            assert!(!*local_nat && *remote_nat);
            assert_eq!(*remote, sa(NAT_ADDR, 44500));
        }
        e => panic!("{e:?}"),
    }
    let (a, b) = (
        Pair::child(&p.i_events).unwrap(),
        Pair::child(&p.r_events).unwrap(),
    );
    assert!(a.udp_encap && b.udp_encap);
    assert_mirror(&a, &b);
    // First two datagrams on 500 without marker; everything after on 4500 with the marker.
    for (i, (_, t)) in p.wire.iter().enumerate() {
        if i < 2 {
            assert_eq!(t.dst.port() % 10000, 500);
            assert_eq!(
                &t.payload[..4],
                &p.wire[0].1.payload[..4],
                "IKE header, no marker"
            );
        } else {
            assert!(t.src.port() == 4500 || t.dst.port() == 4500);
            assert_eq!(&t.payload[..4], &[0u8; 4]);
        }
    }
}

#[test]
fn esp_on_ike_port_is_not_ike() {
    let mut p = up(21);
    let before = p.r.stats().dropped_esp_on_ike_port;
    p.r.handle_datagram(
        p.now,
        sa(I_ADDR, 4500),
        sa(R_ADDR, 4500),
        &[0, 0, 1, 2, 0, 0, 0, 1, 9, 9],
    );
    assert_eq!(p.r.stats().dropped_esp_on_ike_port, before + 1);
}

#[test]
fn liveness_both_ways_and_dead_peer() {
    let mut p = up(22);
    let tx0 = (p.i.stats().tx, p.r.stats().tx);
    // 35 s of silence: both sides run a liveness check (30 s interval) and stay up.
    p.run(Duration::from_secs(35));
    assert!(p.i.stats().tx > tx0.0 && p.r.stats().tx > tx0.1);
    assert_eq!(Pair::down(&p.i_events), None);
    assert_eq!(Pair::down(&p.r_events), None);
    // Now the responder vanishes.
    p.filter = Some(Box::new(|_, _, _| false));
    p.run(Duration::from_secs(200));
    assert_eq!(
        Pair::down(&p.i_events),
        Some(Some(ikev2::IkeError::Timeout))
    );
    assert!(!child_downs(&p.i_events).is_empty());
}

#[test]
fn delete_from_initiator() {
    let mut p = up(23);
    let c = Pair::child(&p.i_events).unwrap();
    p.i.close(p.now);
    p.run(Duration::from_secs(2));
    assert!(p.i.is_closed());
    assert_eq!(Pair::down(&p.i_events), Some(None));
    assert_eq!(Pair::down(&p.r_events), Some(None));
    assert_eq!(child_downs(&p.i_events), vec![c.spi_in]);
    assert_eq!(child_downs(&p.r_events), vec![c.spi_out]);
    assert_eq!(p.r.sa_count(), 0);
}

#[test]
fn delete_from_responder() {
    let mut p = up(24);
    p.r.close_all(p.now);
    p.run(Duration::from_secs(2));
    assert!(p.i.is_closed());
    assert_eq!(Pair::down(&p.i_events), Some(None));
    assert_eq!(p.r.sa_count(), 0);
}

fn check_child_rekey(p: &Pair, old_i: &ChildSaInfo) {
    let ri = rekeyed(&p.i_events);
    let rr = rekeyed(&p.r_events);
    assert_eq!(ri.len(), 1, "{:?}", p.i_events);
    assert_eq!(rr.len(), 1, "{:?}", p.r_events);
    assert_eq!(ri[0].0, old_i.spi_in);
    assert_eq!(rr[0].0, old_i.spi_out);
    assert_mirror(&ri[0].1, &rr[0].1);
    assert_ne!(ri[0].1.encr_key_in, old_i.encr_key_in);
    assert_eq!(ri[0].1.tia, old_i.tia);
    // the old SA is deleted on both sides, the new one stays
    assert_eq!(child_downs(&p.i_events), vec![old_i.spi_in]);
    assert_eq!(child_downs(&p.r_events), vec![old_i.spi_out]);
    let left = p.i.child_sas();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].spi_in, ri[0].1.spi_in);
    assert_eq!(p.r.child_sas().len(), 1);
}

#[test]
fn child_rekey_from_initiator() {
    let mut p = up(25);
    let old = Pair::child(&p.i_events).unwrap();
    p.i.rekey_child(p.now, old.spi_in);
    p.run(Duration::from_secs(2));
    check_child_rekey(&p, &old);
}

#[test]
fn child_rekey_from_responder() {
    let mut p = up(26);
    let old = Pair::child(&p.i_events).unwrap();
    p.r.rekey_child(p.now, old.spi_out);
    p.run(Duration::from_secs(2));
    check_child_rekey(&p, &old);
}

#[test]
fn child_rekey_with_pfs_by_lifetime() {
    let (mut ci, mut cr) = configs(DhId::CURVE25519);
    for c in [&mut ci, &mut cr] {
        c.esp_proposals[0].pfs = Some(DhId::MODP_2048);
    }
    ci.child_lifetime = Some(Duration::from_secs(20));
    let mut p = Pair::new(ci, cr, 27);
    p.run(Duration::from_secs(2));
    let old = Pair::child(&p.i_events).unwrap();
    p.run(Duration::from_secs(20));
    check_child_rekey(&p, &old);
    // The request carried a group-14 KE payload.
    let ke14 = p.wire.iter().any(|(d, t)| {
        *d == Dir::ToResponder && t.payload.len() > 300 + 28 && {
            let m = ikev2::wire::Message::parse(&t.payload[4..]);
            m.map(|m| m.header.exchange == ikev2::wire::ExchangeType::CREATE_CHILD_SA)
                .unwrap_or(false)
        }
    });
    assert!(ke14);
}

fn check_ike_rekey(p: &mut Pair, old_spis: (u64, u64)) {
    let ri: Vec<_> = p
        .i_events
        .iter()
        .filter(|e| matches!(e, Event::IkeSaRekeyed { .. }))
        .collect();
    let rr: Vec<_> = p
        .r_events
        .iter()
        .filter(|e| matches!(e, Event::IkeSaRekeyed { .. }))
        .collect();
    assert_eq!(ri.len(), 1, "{:?}", p.i_events);
    assert_eq!(ri, rr);
    assert_ne!(p.i.spis(), old_spis);
    assert_eq!(Pair::down(&p.i_events), None);
    assert_eq!(Pair::down(&p.r_events), None);
    assert_eq!(p.r.sa_count(), 1);
    // The new IKE SA works: rekey the child over it and run liveness.
    let c = p.i.child_sas()[0].clone();
    p.i.rekey_child(p.now, c.spi_in);
    p.run(Duration::from_secs(40));
    assert_eq!(rekeyed(&p.i_events).len(), 1);
    assert_eq!(Pair::down(&p.i_events), None);
    assert!(p.i.is_established());
}

#[test]
fn ike_rekey_from_initiator() {
    let mut p = up(28);
    let old = p.i.spis();
    p.i.rekey_ike(p.now);
    p.run(Duration::from_secs(2));
    check_ike_rekey(&mut p, old);
}

#[test]
fn ike_rekey_from_responder() {
    let mut p = up(29);
    let old = p.i.spis();
    p.r.rekey_ike(p.now);
    p.run(Duration::from_secs(2));
    check_ike_rekey(&mut p, old);
}

#[test]
fn mobike_update_sa_addresses() {
    let mut p = up(30);
    let new_local = sa(std::net::Ipv4Addr::new(10, 0, 0, 3), 4500);
    assert!(p.i.update_addresses(p.now, new_local, None));
    p.run(Duration::from_secs(2));
    let upd = |ev: &[Event]| {
        ev.iter()
            .find_map(|e| match e {
                Event::AddressesUpdated {
                    local,
                    remote,
                    udp_encap,
                } => Some((*local, *remote, *udp_encap)),
                _ => None,
            })
            .unwrap()
    };
    assert_eq!(upd(&p.i_events), (new_local, sa(R_ADDR, 4500), false));
    assert_eq!(upd(&p.r_events), (sa(R_ADDR, 4500), new_local, false));
    assert_eq!(p.r.child_sas()[0].remote, new_local);
    // The UPDATE_SA_ADDRESSES request carried NAT-D and COOKIE2.
    assert_eq!(p.i.local(), new_local);
}

#[test]
fn mobike_move_behind_nat_detected() {
    let mut p = up(31);
    p.nat = true;
    // The NAT now rewrites 10.0.0.2 -> 198.51.100.7:44500.
    assert!(p.i.update_addresses(p.now, sa(I_ADDR, 4500), None));
    p.run(Duration::from_secs(2));
    let r = p.r_events.iter().find_map(|e| match e {
        Event::AddressesUpdated {
            remote, udp_encap, ..
        } => Some((*remote, *udp_encap)),
        _ => None,
    });
    assert_eq!(r, Some((sa(NAT_ADDR, 44500), true)));
    assert!(p.i.child_sas()[0].udp_encap);
}

#[test]
fn ike_auth_is_fragmented_when_large() {
    let (mut ci, mut cr) = configs(DhId::CURVE25519);
    ci.fragment_size = 200;
    cr.fragment_size = 200;
    let mut p = Pair::new(ci, cr, 32);
    p.loss = 0.0;
    p.run(Duration::from_secs(2));
    assert!(p.i.is_established(), "{:?}", p.i_events);
    let skf = p
        .wire
        .iter()
        .filter(|(_, t)| t.payload.len() > 20 && t.payload[4 + 16] == 53)
        .count();
    assert!(skf >= 4, "{skf} SKF datagrams");
    assert!(p
        .wire
        .iter()
        .all(|(_, t)| t.payload.len() <= 200 || t.payload[16] == 33 || t.payload[16] == 41));
    assert_mirror(
        &Pair::child(&p.i_events).unwrap(),
        &Pair::child(&p.r_events).unwrap(),
    );
}

#[test]
fn fragment_loss_recovers() {
    let (mut ci, mut cr) = configs(DhId::CURVE25519);
    ci.fragment_size = 200;
    cr.fragment_size = 200;
    let mut p = Pair::new(ci, cr, 33);
    p.filter = Some(Box::new(|_, seq, _| seq != 4));
    p.run(Duration::from_secs(10));
    assert!(p.i.is_established());
}

#[test]
fn child_rekey_invalid_ke_retries_with_requested_group() {
    let (mut ci, mut cr) = configs(DhId::CURVE25519);
    // The initiator offers 14 then 19 (KE for 14); the responder takes only 19.
    ci.esp_proposals[0].pfs = Some(DhId::MODP_2048);
    let mut second = ci.esp_proposals[0].clone();
    second.pfs = Some(DhId::ECP_256);
    ci.esp_proposals.push(second);
    cr.esp_proposals[0].pfs = Some(DhId::ECP_256);
    let mut p = Pair::new(ci, cr, 34);
    p.run(Duration::from_secs(2));
    let old = Pair::child(&p.i_events).unwrap();
    p.i.rekey_child(p.now, old.spi_in);
    p.run(Duration::from_secs(2));
    check_child_rekey(&p, &old);
    let creates: Vec<_> = p
        .wire
        .iter()
        .filter_map(|(d, t)| {
            let m = ikev2::wire::Message::parse(&t.payload[4..]).ok()?;
            (m.header.exchange == ikev2::wire::ExchangeType::CREATE_CHILD_SA)
                .then_some((*d, t.payload.len()))
        })
        .collect();
    // request (KE 14), INVALID_KE_PAYLOAD, request (KE 19), response
    assert_eq!(creates.len(), 4, "{creates:?}");
    assert!(
        creates[0].1 > creates[2].1 + 150,
        "first KE is 256 octets, second 64"
    );
}

#[test]
fn nat_keepalives_only_from_the_natted_side() {
    let (ci, cr) = configs(DhId::CURVE25519);
    let mut p = Pair::new(ci, cr, 35);
    p.nat = true;
    p.run(Duration::from_secs(2));
    assert!(p.i.is_established());
    let before = p.wire.len();
    p.run(Duration::from_secs(25));
    let ka: Vec<_> = p.wire[before..]
        .iter()
        .filter(|(_, t)| t.payload == [0xff])
        .collect();
    assert_eq!(ka.len(), 1, "one keepalive after 20 s idle");
    assert_eq!(ka[0].0, Dir::ToResponder);
    assert_eq!(ka[0].1.dst, sa(R_ADDR, 4500));
    assert_eq!(p.r.stats().dropped_malformed, 0);
}

#[test]
fn simultaneous_child_rekey_leaves_one_sa() {
    for seed in 36..46u64 {
        let mut p = up(seed);
        let old = Pair::child(&p.i_events).unwrap();
        p.pump_events_clear();
        // Both ends start rekeying the same CHILD_SA at the same instant (RFC 7296 2.8.1).
        p.i.rekey_child(p.now, old.spi_in);
        p.r.rekey_child(p.now, old.spi_out);
        p.run(Duration::from_secs(3));
        let (ci, cr) = (p.i.child_sas(), p.r.child_sas());
        assert_eq!(
            ci.len(),
            1,
            "seed {seed}: {:?}\n{:?}",
            p.i_events,
            p.r_events
        );
        assert_eq!(cr.len(), 1, "seed {seed}");
        assert_mirror(&ci[0], &cr[0]);
        assert_ne!(ci[0].spi_in, old.spi_in);
        // both redundant SAs were announced and then removed again
        assert_eq!(rekeyed(&p.i_events).len(), 2, "seed {seed}");
        assert_eq!(child_downs(&p.i_events).len(), 2, "seed {seed}");
        assert_eq!(child_downs(&p.r_events).len(), 2, "seed {seed}");
        assert_eq!(Pair::down(&p.i_events), None);
    }
}

#[test]
fn simultaneous_ike_rekey_resolves_by_retry() {
    let (mut ci, mut cr) = configs(DhId::CURVE25519);
    ci.ike_lifetime = Some(Duration::from_secs(60));
    cr.ike_lifetime = Some(Duration::from_secs(60));
    let mut p = Pair::new(ci, cr, 47);
    p.run(Duration::from_secs(2));
    let old = p.i.spis();
    // Both start rekeying the IKE SA at the same instant.
    p.i.rekey_ike(p.now);
    p.r.rekey_ike(p.now);
    p.run(Duration::from_secs(30));
    let n = |ev: &[Event]| {
        ev.iter()
            .filter(|e| matches!(e, Event::IkeSaRekeyed { .. }))
            .count()
    };
    assert_eq!(n(&p.i_events), 1, "{:?}", p.i_events);
    assert_eq!(n(&p.r_events), 1, "{:?}", p.r_events);
    assert_ne!(p.i.spis(), old);
    assert_eq!(Pair::down(&p.i_events), None);
    assert_eq!(p.r.sa_count(), 1);
    assert_eq!(p.i.child_sas().len(), 1);
}

#[test]
fn no_credentials_no_auth() {
    let (mut ci, cr) = configs(DhId::CURVE25519);
    ci.psk.clear();
    let mut p = Pair::new(ci, cr, 48);
    p.run(Duration::from_secs(2));
    assert!(matches!(
        Pair::down(&p.i_events),
        Some(Some(ikev2::IkeError::Protocol(_)))
    ));
}
