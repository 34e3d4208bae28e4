//! The home agent's full handling of one authenticated Registration Request:
//! parse, MN-HA verification, replay check, binding update, reply emission and
//! signing, draining the reply and the binding event. Measured with 1 thousand and
//! with 1 million mobile nodes registered (REQUIREMENTS G7: the cost per
//! registration must not grow with the number of mobile nodes).
//!
//! Each request renews the binding of a mobile node picked at random among all of
//! them, so the 1M case pays the cache misses a real home agent would.
//!
//! Run: `cargo bench -p mip4 --bench ha_register`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use mip4::auth::{Algorithm, SecurityAssociation};
use mip4::ha::{HaConfig, HomeAgent, MobileNodeConfig};
use mip4::replay::{NtpTime, ReplayMethod};
use mip4::wire::extension::AuthKind;
use mip4::wire::{Flags, RegistrationRequest};
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const HA: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

fn home(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(0x0b00_0000 + i)
}

fn key(i: u32) -> [u8; 16] {
    let b = i.to_be_bytes();
    [
        b[0], b[1], b[2], b[3], 1, 2, 3, 4, b[3], b[2], b[1], b[0], 5, 6, 7, 8,
    ]
}

struct Fixture {
    ha: HomeAgent,
    n: u32,
    counter: u32,
    wall: SystemTime,
    rng: StdRng,
}

impl Fixture {
    fn new(n: u32) -> Fixture {
        let mut ha = HomeAgent::new(HaConfig::new(HA), [0; 32]);
        for i in 0..n {
            let sa = SecurityAssociation::new(256, Algorithm::HmacMd5, &key(i));
            ha.add_mobile_node(MobileNodeConfig {
                home_addr: Some(home(i)),
                nai: None,
                sas: vec![sa.clone()],
                replay: ReplayMethod::Timestamp,
            })
            .expect("unique home addresses");
        }
        let mut f = Fixture {
            ha,
            n,
            counter: 0,
            wall: UNIX_EPOCH + Duration::from_secs(1_790_000_000),
            rng: StdRng::seed_from_u64(1),
        };
        let now = Instant::now();
        for i in 0..n {
            let (from, req) = f.request(i);
            f.ha.handle_datagram(now, f.wall, from, SocketAddrV4::new(HA, 434), &req);
            while f.ha.poll_transmit().is_some() {}
            while f.ha.poll_event().is_some() {}
        }
        assert_eq!(f.ha.binding_count(), n as usize);
        f
    }

    /// A fresh, signed renewal for node `i` (Identification strictly increasing).
    fn request(&mut self, i: u32) -> (SocketAddrV4, Vec<u8>) {
        self.counter += 1;
        let coa = Ipv4Addr::from(0xc000_0000 + i);
        let ident = (u64::from(NtpTime::from_system_time(self.wall).seconds()) << 32)
            | u64::from(self.counter);
        let req = RegistrationRequest {
            flags: Flags::D | Flags::T,
            lifetime: 1800,
            home_addr: home(i),
            home_agent: HA,
            care_of: coa,
            ident,
            extensions: Vec::new(),
        };
        let mut b = Vec::with_capacity(50);
        req.emit(&mut b);
        // The mobile node's side: keyed from scratch, so that building requests
        // (not timed) does not drag a second million-entry table through the caches.
        SecurityAssociation::new(256, Algorithm::HmacMd5, &key(i)).append(AuthKind::MnHa, &mut b);
        (SocketAddrV4::new(coa, 434), b)
    }
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("ha_register");
    g.throughput(Throughput::Elements(1));
    g.sample_size(30);
    g.measurement_time(Duration::from_secs(6));
    for n in [1_000u32, 1_000_000] {
        let mut f = Fixture::new(n);
        g.bench_with_input(BenchmarkId::new("single", n), &n, |b, _| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut left = iters;
                let to = SocketAddrV4::new(HA, 434);
                while left > 0 {
                    let chunk = left.min(1024);
                    let reqs: Vec<_> = (0..chunk)
                        .map(|_| {
                            let i = f.rng.gen_range(0..f.n);
                            f.request(i)
                        })
                        .collect();
                    let start = Instant::now();
                    for (from, req) in &reqs {
                        f.ha.handle_datagram(start, f.wall, *from, to, req);
                        black_box(f.ha.poll_transmit());
                        black_box(f.ha.poll_event());
                    }
                    f.ha.handle_timeout(start);
                    total += start.elapsed();
                    left -= chunk;
                }
                total
            })
        });
        // The same work through the batch entry point, 32 datagrams per batch
        // (what one recvmmsg call returns under load).
        g.bench_with_input(BenchmarkId::new("batch32", n), &n, |b, _| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut left = iters;
                let to = SocketAddrV4::new(HA, 434);
                while left > 0 {
                    let chunk = left.min(1024);
                    let reqs: Vec<_> = (0..chunk)
                        .map(|_| {
                            let i = f.rng.gen_range(0..f.n);
                            f.request(i)
                        })
                        .collect();
                    let views: Vec<_> = reqs
                        .iter()
                        .map(|(from, r)| (*from, to, r.as_slice()))
                        .collect();
                    let start = Instant::now();
                    for batch in views.chunks(32) {
                        f.ha.handle_datagrams(start, f.wall, batch);
                        while let Some(t) = f.ha.poll_transmit() {
                            black_box(t);
                        }
                        while let Some(e) = f.ha.poll_event() {
                            black_box(e);
                        }
                    }
                    f.ha.handle_timeout(start);
                    total += start.elapsed();
                    left -= chunk;
                }
                total
            })
        });
        let s = f.ha.stats();
        assert_eq!(
            s.replies_by_code.len(),
            1,
            "every request must be accepted: {s:?}"
        );
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
