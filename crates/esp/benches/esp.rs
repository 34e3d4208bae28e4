//! Seal and open per suite at 64 and 1400 octets, next to ring's bare AEAD seal_in_place
//! on the same sizes, so the ESP overhead over the raw cipher can be read off one run.
//!
//! `cargo bench -p esp -- --warm-up-time 1 --measurement-time 3`

#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use esp::{InboundSa, OutboundSa, RandomIv, SaConfig, Suite};
use rand::SeedableRng;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey};

const SIZES: [usize; 2] = [64, 1400];

fn pair(suite: Suite) -> (OutboundSa, InboundSa) {
    let now = Instant::now();
    let cfg = SaConfig::new(0x1000_0001, suite);
    let enc = vec![0x42; suite.enc_key_len()];
    let integ = vec![0x24; suite.integ_key_len()];
    let tx = if suite.is_aead() {
        OutboundSa::new(cfg, &enc, &integ, now)
    } else {
        let rng = rand::rngs::StdRng::seed_from_u64(7);
        OutboundSa::with_iv_source(cfg, &enc, &integ, now, Box::new(RandomIv(rng)))
    }
    .unwrap();
    let rx = InboundSa::new(cfg, &enc, &integ, now).unwrap();
    (tx, rx)
}

fn inner(len: usize) -> Vec<u8> {
    let mut p: Vec<u8> = (0..len).map(|i| i as u8).collect();
    if let Some(b) = p.first_mut() {
        *b = 0x45;
    }
    p
}

fn bench_esp(c: &mut Criterion) {
    let now = Instant::now();
    for suite in Suite::ALL {
        let mut g = c.benchmark_group(format!("{suite:?}"));
        for size in SIZES {
            g.throughput(Throughput::Bytes(size as u64));
            let payload = inner(size);
            let (mut tx, _) = pair(suite);
            let mut out = Vec::with_capacity(size + 64);
            g.bench_with_input(BenchmarkId::new("seal", size), &payload, |b, p| {
                b.iter(|| {
                    tx.seal(now, 4, black_box(p), &mut out).unwrap();
                    black_box(out.len())
                })
            });
            let (mut tx, mut rx) = pair(suite);
            g.bench_with_input(BenchmarkId::new("open", size), &payload, |b, p| {
                b.iter_batched_ref(
                    || {
                        let mut pkt = Vec::with_capacity(size + 64);
                        tx.seal(now, 4, p, &mut pkt).unwrap();
                        pkt
                    },
                    |pkt| black_box(rx.open(now, pkt).unwrap()),
                    BatchSize::SmallInput,
                )
            });
        }
        g.finish();
    }
}

fn bench_ring(c: &mut Criterion) {
    let algs: [(&str, &'static ring::aead::Algorithm); 3] = [
        ("ring/AES_128_GCM", &ring::aead::AES_128_GCM),
        ("ring/AES_256_GCM", &ring::aead::AES_256_GCM),
        ("ring/CHACHA20_POLY1305", &ring::aead::CHACHA20_POLY1305),
    ];
    for (name, alg) in algs {
        let mut g = c.benchmark_group(name);
        let key = LessSafeKey::new(UnboundKey::new(alg, &vec![0x42; alg.key_len()]).unwrap());
        // The inner sizes, and the ciphertext lengths ESP produces for them
        // (payload + padding + 2 trailer octets: 68 and 1404).
        for size in [64, 68, 1400, 1404] {
            g.throughput(Throughput::Bytes(size as u64));
            let mut buf = inner(size);
            let mut n: u64 = 0;
            g.bench_function(BenchmarkId::new("seal_in_place", size), |b| {
                b.iter(|| {
                    n += 1;
                    let mut nonce = [0u8; 12];
                    nonce[4..].copy_from_slice(&n.to_be_bytes());
                    let tag = key
                        .seal_in_place_separate_tag(
                            Nonce::assume_unique_for_key(nonce),
                            Aad::from([0u8; 8]),
                            black_box(&mut buf),
                        )
                        .unwrap();
                    black_box(tag)
                })
            });
        }
        g.finish();
    }
}

criterion_group!(benches, bench_esp, bench_ring);
criterion_main!(benches);
