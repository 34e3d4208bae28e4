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

/// ring's bare AEAD for the suite, if it is one.
fn ring_alg(suite: Suite) -> Option<&'static ring::aead::Algorithm> {
    match suite {
        Suite::AesGcm128 => Some(&ring::aead::AES_128_GCM),
        Suite::AesGcm256 => Some(&ring::aead::AES_256_GCM),
        Suite::ChaCha20Poly1305 => Some(&ring::aead::CHACHA20_POLY1305),
        _ => None,
    }
}

/// Bare `seal_in_place_separate_tag` on `len` octets with a counter nonce and 8-octet AAD.
fn bench_ring_seal(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    alg: &'static ring::aead::Algorithm,
    size: usize,
    len: usize,
) {
    let key = LessSafeKey::new(UnboundKey::new(alg, &vec![0x42; alg.key_len()]).unwrap());
    let mut buf = inner(len);
    let mut n: u64 = 0;
    g.bench_function(BenchmarkId::new(name, size), |b| {
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

/// Per suite and size: ESP seal and open, and for AEAD suites ring's bare seal right next
/// to them (same machine state), on the same inner size and on the ciphertext length ESP
/// really encrypts (inner + padding + 2 trailer octets: 68 and 1404).
fn bench_esp(c: &mut Criterion) {
    let now = Instant::now();
    for suite in Suite::ALL {
        let mut g = c.benchmark_group(format!("{suite:?}"));
        for size in SIZES {
            g.throughput(Throughput::Bytes(size as u64));
            let payload = inner(size);
            if let Some(alg) = ring_alg(suite) {
                bench_ring_seal(&mut g, "ring_seal_in_place", alg, size, size);
            }
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
            if let Some(alg) = ring_alg(suite) {
                let esp_len = size + esp::wire::pad_len(size, 4) + 2;
                bench_ring_seal(&mut g, "ring_seal_in_place_esp_len", alg, size, esp_len);
            }
        }
        g.finish();
    }
}

criterion_group!(benches, bench_esp);
criterion_main!(benches);
