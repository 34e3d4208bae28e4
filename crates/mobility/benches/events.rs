//! The mobility core's cost per event.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use mip4::auth::{Algorithm, SecurityAssociation};
use mip4::ha::{HaConfig, HomeAgent, MobileNodeConfig};
use mip4::Ipv4Net;
use mobility::{Config, LinkEvent, MobileNode, Outside, Via};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const HOME: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 50);
const I_HA: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
const ADDR: Ipv4Addr = Ipv4Addr::new(10, 1, 7, 9);

fn sa(k: &[u8]) -> SecurityAssociation {
    SecurityAssociation::new(0x100, Algorithm::HmacMd5, k)
}

fn setup() -> (MobileNode, HomeAgent) {
    let outside = Outside::Xmip {
        x_ha: Ipv4Addr::new(198, 51, 100, 1),
        x_home_addr: Ipv4Addr::new(198, 51, 100, 50),
        x_sa: sa(b"x"),
    };
    let node = MobileNode::new(Config::new(HOME, I_HA, sa(b"i"), outside), [1; 32]).unwrap();
    let mut hc = HaConfig::new(I_HA);
    hc.trusted_networks = vec![Ipv4Net::new(Ipv4Addr::new(10, 1, 0, 0), 16).unwrap()];
    let mut ha = HomeAgent::new(hc, [2; 32]);
    ha.add_mobile_node(MobileNodeConfig {
        home_addr: Some(HOME),
        nai: None,
        sas: vec![sa(b"i")],
        replay: mip4::replay::ReplayMethod::Timestamp,
    })
    .unwrap();
    (node, ha)
}

/// Delivers the node's requests to the i-HA and its replies back.
fn round_trip(node: &mut MobileNode, ha: &mut HomeAgent, now: Instant, wall: SystemTime) {
    while let Some(t) = node.poll_transmit() {
        if *t.dst.ip() != I_HA {
            continue;
        }
        ha.handle_datagram(now, wall, t.src, t.dst, &t.payload);
        while let Some(r) = ha.poll_transmit() {
            node.handle_datagram(now, wall, t.iface, Via::Plain, r.src, &r.payload);
        }
        while ha.poll_event().is_some() {}
    }
    while node.poll_action().is_some() {}
    while node.poll_event().is_some() {}
}

fn bench(c: &mut Criterion) {
    let t0 = Instant::now();
    let w0 = UNIX_EPOCH + Duration::from_secs(1_790_000_000);

    // Per user packet: the gate check.
    let (mut node, mut ha) = setup();
    node.handle_link(t0, w0, 1, LinkEvent::CarrierUp);
    node.handle_link(t0, w0, 1, LinkEvent::AddressAdded(ADDR));
    round_trip(&mut node, &mut ha, t0, w0);
    assert!(node.gate(1, t0).is_open());
    c.bench_function("gate check per user packet", |b| {
        b.iter(|| black_box(node.gate(black_box(1), t0)))
    });
    c.bench_function("poll_timeout", |b| {
        b.iter(|| black_box(node.poll_timeout()))
    });

    // A status change: gate closes, two requests built and signed.
    let mut k = 0u64;
    c.bench_function(
        "status change (address removed, then added: detection with 2 signed requests), per event",
        |b| {
            b.iter(|| {
                k += 1;
                let now = t0 + Duration::from_millis(k);
                let ev = if k.is_multiple_of(2) {
                    LinkEvent::AddressAdded(ADDR)
                } else {
                    LinkEvent::AddressRemoved(ADDR)
                };
                node.handle_link(now, w0, 1, ev);
                while node.poll_transmit().is_some() {}
                while node.poll_action().is_some() {}
                while node.poll_event().is_some() {}
            })
        },
    );

    // The T_MONITOR cycle inside: re-registration timer, i-HA round trip (the
    // i-HA's own processing included), new proof.
    let (mut node, mut ha) = setup();
    node.handle_link(t0, w0, 1, LinkEvent::CarrierUp);
    node.handle_link(t0, w0, 1, LinkEvent::AddressAdded(ADDR));
    round_trip(&mut node, &mut ha, t0, w0);
    let mut now = t0;
    c.bench_function("re-registration cycle with the real i-HA", |b| {
        b.iter(|| {
            let (t, _) = node.poll_timeout().unwrap();
            now = t;
            let wall = w0 + (now - t0);
            node.handle_timeout(now, wall);
            round_trip(&mut node, &mut ha, now, wall);
        })
    });
    assert!(node.gate(1, now).is_open());
}

criterion_group!(benches, bench);
criterion_main!(benches);
