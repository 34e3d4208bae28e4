#![allow(clippy::unwrap_used)]
//! Loss, reordering, garbage and truncation.
mod common;

use std::time::Duration;

use common::*;
use ikev2::wire::DhId;

#[test]
fn retransmission_recovers_from_loss() {
    let (ci, cr) = configs(DhId::CURVE25519);
    let mut p = Pair::new(ci, cr, 10);
    // Drop the first IKE_SA_INIT request, the first IKE_SA_INIT response and the first
    // IKE_AUTH response.
    let mut seen = [0u32; 2];
    p.filter = Some(Box::new(move |dir, _, t| {
        let i = usize::from(dir == Dir::ToInitiator);
        seen[i] += 1;
        let _ = t;
        !matches!(
            (dir, seen[i]),
            (Dir::ToResponder, 1) | (Dir::ToInitiator, 1) | (Dir::ToInitiator, 3)
        )
    }));
    p.run(Duration::from_secs(20));
    assert!(p.i.is_established(), "{:?}", p.i_events);
    assert_mirror(
        &Pair::child(&p.i_events).unwrap(),
        &Pair::child(&p.r_events).unwrap(),
    );
    assert!(p.i.stats().retransmits >= 3, "{:?}", p.i.stats());
    // the lost IKE_SA_INIT and IKE_AUTH responses were answered from the response cache
    assert!(p.r.stats().replayed_responses >= 2, "{:?}", p.r.stats());
}

#[test]
fn exponential_backoff_then_timeout() {
    let (ci, cr) = configs(DhId::CURVE25519);
    let mut p = Pair::new(ci, cr, 11);
    p.filter = Some(Box::new(|_, _, _| false));
    p.run(Duration::from_secs(120));
    assert_eq!(
        Pair::down(&p.i_events),
        Some(Some(ikev2::IkeError::Timeout))
    );
    // default: 6 sends at 0, 1, 3, 7, 15, 31 s, failure at 47 s
    assert_eq!(p.i.stats().tx, 6);
    assert_eq!(p.i.stats().retransmits, 5);
}

#[test]
fn random_loss_and_reordering() {
    let mut ok = 0;
    for seed in 0..20u64 {
        let (ci, cr) = configs(DhId::CURVE25519);
        let mut p = Pair::new(ci, cr, 100 + seed);
        p.loss = 0.2;
        p.jitter = Duration::from_millis(400);
        p.run(Duration::from_secs(60));
        if p.i.is_established() {
            ok += 1;
            assert_mirror(
                &Pair::child(&p.i_events).unwrap(),
                &Pair::child(&p.r_events).unwrap(),
            );
        }
    }
    // 20% loss per datagram with 6 tries: essentially always recovers.
    assert!(ok >= 19, "{ok}/20 established");
}

#[test]
fn garbage_and_truncated_messages_are_counted_and_dropped() {
    let (ci, cr) = configs(DhId::CURVE25519);
    let mut p = Pair::new(ci, cr, 12);
    let mut copies: Vec<(Dir, ikev2::Transmit)> = Vec::new();
    p.run(Duration::from_secs(2));
    assert!(p.i.is_established());
    copies.extend(p.wire.iter().cloned());
    let (i0, r0) = (p.i.stats(), p.r.stats());
    let now = p.now;
    let mut fed = 0;
    for (dir, t) in &copies {
        for cut in [
            0usize,
            1,
            3,
            4,
            20,
            28,
            29,
            t.payload.len() / 2,
            t.payload.len() - 1,
        ] {
            let b = &t.payload[..cut.min(t.payload.len())];
            match dir {
                Dir::ToResponder => p.r.handle_datagram(now, t.src, t.dst, b),
                Dir::ToInitiator => {
                    p.i.handle_datagram(now, t.src, sa(I_ADDR, t.dst.port() % 10000), b)
                }
            }
            fed += 1;
        }
        // one flipped bit in the middle
        let mut b = t.payload.clone();
        let m = b.len() / 2;
        b[m] ^= 0x10;
        match dir {
            Dir::ToResponder => p.r.handle_datagram(now, t.src, t.dst, &b),
            Dir::ToInitiator => {
                p.i.handle_datagram(now, t.src, sa(I_ADDR, t.dst.port() % 10000), &b)
            }
        }
        fed += 1;
    }
    let garbage: Vec<u8> = (0..200u8).map(|x| x.wrapping_mul(37)).collect();
    p.r.handle_datagram(now, sa(I_ADDR, 500), sa(R_ADDR, 500), &garbage);
    fed += 1;
    let (i1, r1) = (p.i.stats(), p.r.stats());
    let dropped = |s: ikev2::Stats| {
        s.dropped_malformed
            + s.dropped_integrity
            + s.dropped_unknown_spi
            + s.dropped_unexpected
            + s.dropped_esp_on_ike_port
    };
    let replayed = (i1.replayed_responses - i0.replayed_responses)
        + (r1.replayed_responses - r0.replayed_responses);
    assert!(
        dropped(i1) - dropped(i0) + dropped(r1) - dropped(r0) + replayed >= fed - 2,
        "fed {fed}, i {i1:?}, r {r1:?}"
    );
    assert!(dropped(r1) > dropped(r0) && dropped(i1) > dropped(i0));
    // Nothing broke: the SA is still up and answers a liveness check.
    p.pump_events_clear();
    p.i.check_liveness(p.now);
    p.run(Duration::from_secs(2));
    assert!(p.i.is_established());
    assert_eq!(Pair::down(&p.i_events), None);
}
