//! Cross-check against scapy's independent ESP implementation (tests/scapy_esp.py):
//! scapy decrypts what we seal, and we open what scapy seals, for every suite, with and
//! without ESN, over UDP encapsulation too. Fails (never skips) without python3 + scapy.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Instant;

use esp::udp_encap::{self, UdpPayload};
use esp::{wire, InboundSa, OutboundSa, RandomIv, SaConfig, Suite};
use rand::SeedableRng;
use serde_json::{json, Value};

const SPI: u32 = 0x5ca9_0001;
/// ESN high half used for the transform-level cases.
const ESN_HI: u32 = 0x1234_5678;

fn scapy_names(suite: Suite) -> (&'static str, &'static str) {
    match suite {
        Suite::AesGcm128 | Suite::AesGcm256 => ("AES-GCM", "NULL"),
        Suite::ChaCha20Poly1305 => ("CHACHA20-POLY1305", "NULL"),
        Suite::AesCbc128HmacSha1 | Suite::AesCbc256HmacSha1 => ("AES-CBC", "HMAC-SHA1-96"),
        Suite::AesCbc128HmacSha256 | Suite::AesCbc256HmacSha256 => ("AES-CBC", "SHA2-256-128"),
    }
}

fn keys(suite: Suite, salt: u8) -> (Vec<u8>, Vec<u8>) {
    let enc = (0..suite.enc_key_len())
        .map(|i| (i as u8).wrapping_mul(31) ^ salt)
        .collect();
    let integ = (0..suite.integ_key_len())
        .map(|i| (i as u8).wrapping_mul(17) ^ salt)
        .collect();
    (enc, integ)
}

/// A valid IPv4/UDP packet with `payload_len` octets of UDP payload.
fn ipv4_udp(payload_len: usize, tag: u8) -> Vec<u8> {
    let total = 28 + payload_len;
    let mut p = vec![
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0,
        tag,
        0,
        0,
        64,
        17,
        0,
        0,
    ];
    p.extend([10, 0, 0, 1, 10, 40, 0, 10]);
    let mut sum: u32 = p
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let csum = !(sum as u16);
    p[10..12].copy_from_slice(&csum.to_be_bytes());
    let ulen = 8 + payload_len;
    p.extend([0x30, 0x39, 0x00, 0x35, (ulen >> 8) as u8, ulen as u8, 0, 0]);
    p.extend((0..payload_len).map(|i| (i as u8) ^ tag));
    p
}

fn job(
    op: &str,
    suite: Suite,
    esn: Option<u32>,
    nat_t: bool,
    salt: u8,
    packets: &[Vec<u8>],
) -> Value {
    let (crypt, auth) = scapy_names(suite);
    let (enc, integ) = keys(suite, salt);
    json!({
        "op": op,
        "crypt_algo": crypt,
        "crypt_key": hex::encode(enc),
        "auth_algo": auth,
        "auth_key": hex::encode(integ),
        "spi": SPI,
        "esn_en": esn.is_some(),
        "esn": esn.unwrap_or(0),
        "nat_t": nat_t,
        "packets": packets.iter().map(hex::encode).collect::<Vec<_>>(),
        "seq": (1..=packets.len()).collect::<Vec<_>>(),
    })
}

fn run_scapy(jobs: &[Value]) -> Vec<Value> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/scapy_esp.py");
    let mut child = Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("FAIL: python3 is required for the scapy cross-check: {e}"));
    let req = json!({ "jobs": jobs }).to_string();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(req.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "FAIL: scapy_esp.py failed (is scapy installed for python3?):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["results"].as_array().unwrap().clone()
}

fn packets_of(result: &Value) -> Vec<Value> {
    result["packets"].as_array().unwrap().clone()
}

struct Case {
    suite: Suite,
    esn: bool,
    nat_t: bool,
    salt: u8,
}

fn cases() -> Vec<Case> {
    let mut v = Vec::new();
    let mut salt = 1;
    for suite in Suite::ALL {
        for (esn, nat_t) in [(false, false), (true, false), (false, true)] {
            v.push(Case {
                suite,
                esn,
                nat_t,
                salt,
            });
            salt += 1;
        }
    }
    v
}

fn inners() -> Vec<Vec<u8>> {
    [0, 1, 13, 100, 1372]
        .iter()
        .enumerate()
        .map(|(i, &n)| ipv4_udp(n, i as u8))
        .collect()
}

fn outbound(cfg: SaConfig, enc: &[u8], integ: &[u8], now: Instant) -> OutboundSa {
    if cfg.suite.is_aead() {
        OutboundSa::new(cfg, enc, integ, now).unwrap()
    } else {
        let rng = rand::rngs::StdRng::seed_from_u64(99);
        OutboundSa::with_iv_source(cfg, enc, integ, now, Box::new(RandomIv(rng))).unwrap()
    }
}

/// Seals one packet at transform level with an explicit ESN high half.
fn seal_with_esn_hi(suite: Suite, salt: u8, seq_lo: u32, inner: &[u8]) -> Vec<u8> {
    let (enc, integ) = keys(suite, salt);
    let t = suite.transform(&enc, &integ).unwrap();
    let mut pkt = Vec::new();
    pkt.extend(SPI.to_be_bytes());
    pkt.extend(seq_lo.to_be_bytes());
    pkt.extend((0..suite.iv_len()).map(|i| i as u8 ^ 0x77));
    pkt.extend_from_slice(inner);
    wire::push_trailer(&mut pkt, wire::pad_len(inner.len(), suite.align()), 4);
    pkt.extend(vec![0; suite.icv_len()]);
    t.seal(Some(ESN_HI), &mut pkt).unwrap();
    pkt
}

#[test]
fn scapy_decrypts_ours_and_we_open_scapys() {
    let now = Instant::now();
    let inners = inners();
    let cases = cases();
    let mut jobs = Vec::new();
    let mut ours = Vec::new();
    for c in &cases {
        let (enc, integ) = keys(c.suite, c.salt);
        let cfg = SaConfig::new(SPI, c.suite).with_esn(c.esn);
        let mut tx = outbound(cfg, &enc, &integ, now);
        let mut sealed: Vec<Vec<u8>> = inners
            .iter()
            .map(|p| {
                let mut out = Vec::new();
                tx.seal(now, esp::NEXT_HEADER_IPV4, p, &mut out).unwrap();
                out
            })
            .collect();
        // One tampered packet: scapy must reject it, proving it really verifies.
        let mut bad = sealed[3].clone();
        bad[20] ^= 0x04;
        sealed.push(bad);
        jobs.push(job(
            "decrypt",
            c.suite,
            c.esn.then_some(0),
            c.nat_t,
            c.salt,
            &sealed,
        ));
        jobs.push(job(
            "encrypt",
            c.suite,
            c.esn.then_some(0),
            c.nat_t,
            c.salt,
            &inners,
        ));
        ours.push(sealed);
    }
    // ESN with a non-zero high half, which only the ICV/AAD carries.
    for (i, suite) in Suite::ALL.into_iter().enumerate() {
        let salt = 0x80 + i as u8;
        let sealed: Vec<Vec<u8>> = inners
            .iter()
            .enumerate()
            .map(|(k, p)| seal_with_esn_hi(suite, salt, k as u32 + 1, p))
            .collect();
        jobs.push(job("decrypt", suite, Some(ESN_HI), false, salt, &sealed));
        jobs.push(job("encrypt", suite, Some(ESN_HI), false, salt, &inners));
    }

    let results = run_scapy(&jobs);
    assert_eq!(results.len(), jobs.len());
    let mut checked = 0;

    for (i, c) in cases.iter().enumerate() {
        let name = format!("{:?} esn={} nat_t={}", c.suite, c.esn, c.nat_t);
        // (a) scapy opened what we sealed: same inner packet, next header 4, padding 1, 2, 3...
        let dec = packets_of(&results[2 * i]);
        assert_eq!(dec.len(), inners.len() + 1, "{name}");
        for (k, inner) in inners.iter().enumerate() {
            assert_eq!(
                dec[k]["error"],
                Value::Null,
                "{name} packet {k}: {}",
                dec[k]["error"]
            );
            assert_eq!(
                dec[k]["inner"].as_str().unwrap(),
                hex::encode(inner),
                "{name} packet {k}"
            );
            assert_eq!(dec[k]["nh"], 4, "{name}");
            let pad = hex::decode(dec[k]["padding"].as_str().unwrap()).unwrap();
            assert_eq!(pad, (1..=pad.len() as u8).collect::<Vec<_>>(), "{name}");
            checked += 1;
        }
        let err = dec[inners.len()]["error"].as_str().unwrap_or("");
        assert!(
            err.contains("IPSecIntegrityError"),
            "{name}: tampered packet: {err}"
        );

        // (b) we open what scapy sealed.
        let (enc, integ) = keys(c.suite, c.salt);
        let cfg = SaConfig::new(SPI, c.suite).with_esn(c.esn);
        let mut rx = InboundSa::new(cfg, &enc, &integ, now).unwrap();
        for (k, hexpkt) in packets_of(&results[2 * i + 1]).iter().enumerate() {
            let mut pkt = hex::decode(hexpkt.as_str().unwrap()).unwrap();
            if c.nat_t {
                assert!(
                    matches!(udp_encap::classify(&pkt), Ok(UdpPayload::Esp(_))),
                    "{name}"
                );
            }
            let o = rx
                .open(now, &mut pkt)
                .unwrap_or_else(|e| panic!("{name} packet {k}: {e}"));
            assert_eq!(o.seq, k as u64 + 1);
            assert_eq!(o.next_header, 4);
            assert_eq!(&pkt[o.payload], &inners[k][..], "{name} packet {k}");
            checked += 1;
        }
        assert_eq!(rx.stats().packets, inners.len() as u64);
    }

    let base = 2 * cases.len();
    for (i, suite) in Suite::ALL.into_iter().enumerate() {
        let salt = 0x80 + i as u8;
        let name = format!("{suite:?} ESN high {ESN_HI:#x}");
        for (k, d) in packets_of(&results[base + 2 * i]).iter().enumerate() {
            assert_eq!(d["error"], Value::Null, "{name} packet {k}: {}", d["error"]);
            assert_eq!(
                d["inner"].as_str().unwrap(),
                hex::encode(&inners[k]),
                "{name}"
            );
            checked += 1;
        }
        let (enc, integ) = keys(suite, salt);
        let t = suite.transform(&enc, &integ).unwrap();
        for (k, hexpkt) in packets_of(&results[base + 2 * i + 1]).iter().enumerate() {
            let mut pkt = hex::decode(hexpkt.as_str().unwrap()).unwrap();
            // Without the high half the ICV must not verify; with it, it must.
            assert!(t.open(None, &mut pkt.clone()).is_err(), "{name}");
            t.open(Some(ESN_HI), &mut pkt)
                .unwrap_or_else(|e| panic!("{name} packet {k}: {e}"));
            let text = &pkt[8 + suite.iv_len()..pkt.len() - suite.icv_len()];
            let (len, nh) = wire::parse_trailer(text).unwrap();
            assert_eq!(nh, 4);
            assert_eq!(&text[..len], &inners[k][..], "{name} packet {k}");
            checked += 1;
        }
    }
    // 21 SA cases x 5 packets x 2 directions + 7 suites x 5 packets x 2 directions.
    assert_eq!(checked, 21 * 5 * 2 + 7 * 5 * 2);
    println!("scapy cross-check: {checked} packets agreed");
}
