//! IKE_SA_INIT + IKE_AUTH (PSK, CP, first CHILD_SA) in memory, per DH group.
#![allow(clippy::unwrap_used)]

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Instant;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use ikev2::wire::{DhId, Identification};
use ikev2::{Config, Event, IkeProposal, Initiator, Responder};

fn handshake(group: DhId, ci: &Config, cr: &Config, now: Instant, n: u64) {
    let li = SocketAddr::new(Ipv4Addr::new(10, 0, 0, 2).into(), 500);
    let lr = SocketAddr::new(Ipv4Addr::new(10, 0, 0, 1).into(), 500);
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&n.to_be_bytes());
    let mut i = Initiator::new(ci.clone(), li, lr, seed, now);
    let mut r = Responder::new(cr.clone(), seed);
    let mut children = 0;
    for _ in 0..10 {
        while let Some(t) = i.poll_transmit() {
            r.handle_datagram(now, t.src, t.dst, &t.payload);
        }
        while let Some(t) = r.poll_transmit() {
            i.handle_datagram(now, t.src, t.dst, &t.payload);
        }
        while let Some(e) = i.poll_event() {
            children += usize::from(matches!(e, Event::ChildSaUp(_)));
        }
        if children == 1 {
            return;
        }
    }
    panic!("{group:?}: handshake did not complete");
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("ike_sa_init+ike_auth");
    #[allow(clippy::disallowed_methods)]
    let now = Instant::now();
    for group in [DhId::CURVE25519, DhId::ECP_256, DhId::MODP_2048] {
        let mut ci = Config::psk(b"bench", Identification::fqdn("c"));
        ci.request_vip = true;
        ci.ike_proposals = vec![IkeProposal::aes_gcm_256(&[group])];
        let mut cr = Config::psk(b"bench", Identification::fqdn("gw"));
        cr.ike_proposals = vec![IkeProposal::aes_gcm_256(&[group])];
        cr.vip_pool = Some((Ipv4Addr::new(10, 99, 0, 1), 1 << 20));
        let mut n = 0u64;
        g.bench_with_input(BenchmarkId::from_parameter(group.0), &group, |b, g| {
            b.iter(|| {
                n += 1;
                handshake(*g, &ci, &cr, now, n)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
