//! ESP seal against ring's bare `seal_in_place_separate_tag`, interleaved round by round
//! and reported as the best of 15 rounds, so load from other processes on a shared
//! machine hits both sides alike. Prints one line per AEAD suite and size.
//!
//! `cargo bench -p esp --bench overhead`

#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use std::hint::black_box;
use std::time::Instant;

use esp::{OutboundSa, SaConfig, Suite};
use ring::aead::{Aad, Algorithm, LessSafeKey, Nonce, UnboundKey};

const ROUNDS: usize = 15;
const ITERS: u32 = 100_000;

fn main() {
    let suites: [(Suite, &'static Algorithm); 3] = [
        (Suite::AesGcm128, &ring::aead::AES_128_GCM),
        (Suite::AesGcm256, &ring::aead::AES_256_GCM),
        (Suite::ChaCha20Poly1305, &ring::aead::CHACHA20_POLY1305),
    ];
    let now = Instant::now();
    println!("suite                size  esp seal ns  ring(same len) ns  ring(esp len) ns  overhead ns  esp/ring(esp len)");
    for (suite, alg) in suites {
        for size in [64usize, 1400] {
            let cfg = SaConfig::new(0x1000, suite);
            let mut tx = OutboundSa::new(cfg, &vec![7; suite.enc_key_len()], &[], now).unwrap();
            let inner = vec![0x45u8; size];
            let mut out = Vec::with_capacity(2048);
            let key = LessSafeKey::new(UnboundKey::new(alg, &vec![7; alg.key_len()]).unwrap());
            let esp_len = size + esp::wire::pad_len(size, 4) + 2;
            let mut same = vec![0u8; size];
            let mut esp_sized = vec![0u8; esp_len];
            let mut ctr = 0u64;
            let mut ring_seal = |buf: &mut Vec<u8>| {
                ctr += 1;
                let mut nonce = [0u8; 12];
                nonce[4..].copy_from_slice(&ctr.to_be_bytes());
                let aad = Aad::from([0u8; 8]);
                let tag = key
                    .seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key(nonce),
                        aad,
                        black_box(buf),
                    )
                    .unwrap();
                let _ = black_box(tag);
            };
            let mut best = [f64::MAX; 3];
            for _ in 0..ROUNDS {
                let t = Instant::now();
                for _ in 0..ITERS {
                    tx.seal(now, 4, black_box(&inner), &mut out).unwrap();
                    black_box(&out);
                }
                best[0] = best[0].min(t.elapsed().as_nanos() as f64 / f64::from(ITERS));
                let t = Instant::now();
                for _ in 0..ITERS {
                    ring_seal(&mut same);
                }
                best[1] = best[1].min(t.elapsed().as_nanos() as f64 / f64::from(ITERS));
                let t = Instant::now();
                for _ in 0..ITERS {
                    ring_seal(&mut esp_sized);
                }
                best[2] = best[2].min(t.elapsed().as_nanos() as f64 / f64::from(ITERS));
            }
            println!(
                "{:<20} {size:>4}  {:>11.1}  {:>17.1}  {:>16.1}  {:>11.1}  {:>17.2}",
                format!("{suite:?}"),
                best[0],
                best[1],
                best[2],
                best[0] - best[2],
                best[0] / best[2]
            );
        }
    }
}
