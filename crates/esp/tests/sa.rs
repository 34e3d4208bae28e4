//! SA behaviour through the public API: round trips, anti-replay, tampering, drops,
//! lifetimes, the SAD and UDP encapsulation.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use esp::udp_encap::{self, UdpPayload};
use esp::{
    ConfigError, Direction, DropReason, EspError, InboundSa, Lifetime, OutboundSa, RandomIv,
    SaConfig, SaEvent, Sad, Suite, Trigger,
};
use rand::SeedableRng;

const SPI: u32 = 0xc0ff_ee01;

fn keys(suite: Suite) -> (Vec<u8>, Vec<u8>) {
    let enc = (0..suite.enc_key_len()).map(|i| i as u8 ^ 0x5a).collect();
    let integ = (0..suite.integ_key_len()).map(|i| i as u8 ^ 0xa5).collect();
    (enc, integ)
}

fn outbound(cfg: SaConfig, now: Instant) -> OutboundSa {
    let (enc, integ) = keys(cfg.suite);
    if cfg.suite.is_aead() {
        OutboundSa::new(cfg, &enc, &integ, now).unwrap()
    } else {
        let rng = rand::rngs::StdRng::seed_from_u64(u64::from(cfg.spi));
        OutboundSa::with_iv_source(cfg, &enc, &integ, now, Box::new(RandomIv(rng))).unwrap()
    }
}

fn pair(cfg: SaConfig, now: Instant) -> (OutboundSa, InboundSa) {
    let (enc, integ) = keys(cfg.suite);
    (
        outbound(cfg, now),
        InboundSa::new(cfg, &enc, &integ, now).unwrap(),
    )
}

/// A syntactically plausible inner IPv4 packet of `len` octets.
fn inner(len: usize, tag: u8) -> Vec<u8> {
    let mut p: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(7) ^ tag).collect();
    if let Some(b) = p.first_mut() {
        *b = 0x45;
    }
    p
}

fn seal(tx: &mut OutboundSa, now: Instant, p: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    tx.seal(now, esp::NEXT_HEADER_IPV4, p, &mut out).unwrap();
    out
}

#[test]
fn round_trip_every_suite_and_length() {
    let now = Instant::now();
    for suite in Suite::ALL {
        for esn in [false, true] {
            let cfg = SaConfig::new(SPI, suite).with_esn(esn);
            let (mut tx, mut rx) = pair(cfg, now);
            for len in (0..=300).chain([1400, 1500]) {
                let p = inner(len, len as u8);
                let mut pkt = seal(&mut tx, now, &p);
                let expect = tx.overhead(len) + len;
                assert_eq!(pkt.len(), expect, "{suite:?} len {len}");
                let ct_len = pkt.len() - 8 - suite.iv_len() - suite.icv_len();
                assert_eq!(ct_len % suite.align(), 0);
                // The ciphertext does not contain the plaintext.
                if len >= 16 {
                    let body = &pkt[8 + suite.iv_len()..];
                    assert!(!body.windows(16).any(|w| w == &p[..16]));
                }
                let o = rx.open(now, &mut pkt).unwrap();
                assert_eq!(&pkt[o.payload.clone()], &p[..], "{suite:?} len {len}");
                assert_eq!(o.next_header, 4);
                assert_eq!(o.spi, SPI);
            }
            assert_eq!(rx.stats().packets, 303);
            assert_eq!(rx.stats().drops.total(), 0);
        }
    }
}

#[test]
fn seal_in_place_matches_seal_and_reuses_the_buffer() {
    let now = Instant::now();
    let cfg = SaConfig::new(SPI, Suite::AesGcm256);
    let (mut a, _) = pair(cfg, now);
    let (mut b, mut rx) = pair(cfg, now);
    let p = inner(200, 1);
    let via_seal = seal(&mut a, now, &p);
    let headroom = 64;
    let mut buf = vec![0u8; headroom];
    buf.extend_from_slice(&p);
    buf.reserve(64);
    let cap = buf.capacity();
    let range = b
        .seal_in_place(now, esp::NEXT_HEADER_IPV4, &mut buf, headroom)
        .unwrap();
    assert_eq!(buf.capacity(), cap, "no reallocation with enough tailroom");
    assert_eq!(&buf[range.clone()], &via_seal[..]);
    let o = rx.open(now, &mut buf[range.clone()]).unwrap();
    assert_eq!(&buf[range][o.payload], &p[..]);
    // Too little headroom is an error, not a panic.
    let mut small = vec![0u8; 4];
    small.extend_from_slice(&p);
    assert_eq!(
        b.seal_in_place(now, 4, &mut small, 4),
        Err(EspError::Headroom { have: 4, need: 16 })
    );
    assert_eq!(
        b.seal_in_place(now, 4, &mut vec![0u8; 10], 16),
        Err(EspError::Headroom { have: 10, need: 16 })
    );
}

#[test]
fn gcm_iv_is_the_sequence_counter() {
    let now = Instant::now();
    let (mut tx, _) = pair(SaConfig::new(SPI, Suite::ChaCha20Poly1305), now);
    for seq in 1u64..=3 {
        let pkt = seal(&mut tx, now, &inner(40, 0));
        assert_eq!(&pkt[4..8], &(seq as u32).to_be_bytes());
        assert_eq!(&pkt[8..16], &seq.to_be_bytes());
    }
}

#[test]
fn anti_replay_through_the_sa() {
    let now = Instant::now();
    let cfg = SaConfig::new(SPI, Suite::AesCbc128HmacSha256).with_replay_window(64);
    let (mut tx, mut rx) = pair(cfg, now);
    let pkts: Vec<Vec<u8>> = (1..=300)
        .map(|i| seal(&mut tx, now, &inner(60, i as u8)))
        .collect();
    let open =
        |rx: &mut InboundSa, seq: usize| rx.open(now, &mut pkts[seq - 1].clone()).map(|o| o.seq);
    // In order, then out of order inside the window.
    assert_eq!(open(&mut rx, 1), Ok(1));
    assert_eq!(open(&mut rx, 3), Ok(3));
    assert_eq!(open(&mut rx, 2), Ok(2));
    // Duplicate.
    assert_eq!(open(&mut rx, 2), Err(EspError::Replay { seq: 2 }));
    // Large jump; the old window is gone, 300 - 64 = 236 is too old, 237 is in.
    assert_eq!(open(&mut rx, 300), Ok(300));
    assert_eq!(open(&mut rx, 236), Err(EspError::Replay { seq: 236 }));
    assert_eq!(open(&mut rx, 4), Err(EspError::Replay { seq: 4 }));
    assert_eq!(open(&mut rx, 237), Ok(237));
    assert_eq!(open(&mut rx, 299), Ok(299));
    assert_eq!(rx.stats().drops.get(DropReason::Replay), 3);
    assert_eq!(rx.window().top(), 300);
}

#[test]
fn forged_packet_with_new_seq_does_not_move_the_window() {
    let now = Instant::now();
    for suite in Suite::ALL {
        let (mut tx, mut rx) = pair(SaConfig::new(SPI, suite), now);
        let pkts: Vec<Vec<u8>> = (1..=200)
            .map(|_| seal(&mut tx, now, &inner(100, 9)))
            .collect();
        for p in &pkts[..5] {
            rx.open(now, &mut p.clone()).unwrap();
        }
        // Seq 200 with a flipped ciphertext bit: rejected, counted, window stays at 5.
        let mut forged = pkts[199].clone();
        let mid = forged.len() / 2;
        forged[mid] ^= 0x80;
        assert_eq!(
            rx.open(now, &mut forged),
            Err(EspError::AuthFailed),
            "{suite:?}"
        );
        assert_eq!(rx.window().top(), 5, "{suite:?}");
        // Had it committed, seq 6 would now be too old; it is still accepted.
        rx.open(now, &mut pkts[5].clone()).unwrap();
        // A rewritten sequence number breaks the ICV too.
        let mut reseq = pkts[6].clone();
        reseq[4..8].copy_from_slice(&150u32.to_be_bytes());
        assert_eq!(rx.open(now, &mut reseq), Err(EspError::AuthFailed));
        // Tampered ICV and tampered IV.
        let mut icv = pkts[7].clone();
        *icv.last_mut().unwrap() ^= 1;
        assert_eq!(rx.open(now, &mut icv), Err(EspError::AuthFailed));
        let mut iv = pkts[8].clone();
        iv[8] ^= 1;
        assert_eq!(rx.open(now, &mut iv), Err(EspError::AuthFailed));
        assert_eq!(rx.stats().drops.get(DropReason::AuthFailed), 4, "{suite:?}");
        assert_eq!(rx.window().top(), 6);
        // The genuine packet 200 still opens.
        assert_eq!(rx.open(now, &mut pkts[199].clone()).unwrap().seq, 200);
    }
}

#[test]
fn short_and_malformed_packets_are_counted_drops() {
    let now = Instant::now();
    for suite in Suite::ALL {
        let (mut tx, mut rx) = pair(SaConfig::new(SPI, suite), now);
        let pkt = seal(&mut tx, now, &inner(33, 3));
        let min = 8 + suite.iv_len() + 2 + suite.icv_len();
        for cut in 0..min {
            let mut p = pkt[..cut].to_vec();
            let e = rx.open(now, &mut p).unwrap_err();
            if cut >= 8 {
                assert_eq!(e, EspError::TooShort { len: cut, min }, "{suite:?} {cut}");
            } else {
                assert!(matches!(e, EspError::TooShort { .. }));
            }
        }
        assert_eq!(rx.stats().drops.get(DropReason::TooShort), min as u64);
        // CBC: a ciphertext that is not a whole number of blocks.
        if !suite.is_aead() {
            let mut p = pkt.clone();
            p.remove(30);
            assert!(matches!(
                rx.open(now, &mut p),
                Err(EspError::BadLength { .. })
            ));
        }
        // Another SA's SPI.
        let mut p = pkt.clone();
        p[0] ^= 0xff;
        assert!(matches!(rx.open(now, &mut p), Err(EspError::UnknownSpi(_))));
        assert_eq!(rx.stats().drops.get(DropReason::UnknownSpi), 1);
        assert_eq!(rx.open(now, &mut pkt.clone()).unwrap().seq, 1);
    }
}

/// Builds an authentic packet whose padding is wrong, with the suite's own transform.
fn authentic_with_trailer(suite: Suite, seq: u32, text: &[u8]) -> Vec<u8> {
    let (enc, integ) = keys(suite);
    let t = suite.transform(&enc, &integ).unwrap();
    let mut pkt = Vec::new();
    pkt.extend(SPI.to_be_bytes());
    pkt.extend(seq.to_be_bytes());
    pkt.extend(vec![0x11; suite.iv_len()]);
    pkt.extend_from_slice(text);
    pkt.extend(vec![0; suite.icv_len()]);
    t.seal(None, &mut pkt).unwrap();
    pkt
}

#[test]
fn bad_padding_is_detected_after_authentication() {
    let now = Instant::now();
    for suite in Suite::ALL {
        let (_, mut rx) = pair(SaConfig::new(SPI, suite), now);
        let align = suite.align();
        // Padding 1, 2, 4 instead of 1, 2, 3.
        let mut text = inner(align * 2 - 5, 0);
        text.extend([1, 2, 4, 3, 4]);
        let mut p = authentic_with_trailer(suite, 1, &text);
        assert_eq!(rx.open(now, &mut p), Err(EspError::BadPadding), "{suite:?}");
        // Pad length longer than the text.
        let mut text = vec![0u8; align * 2 - 2];
        text.extend([250, 4]);
        let mut p = authentic_with_trailer(suite, 2, &text);
        assert_eq!(rx.open(now, &mut p), Err(EspError::BadPadding));
        assert_eq!(rx.stats().drops.get(DropReason::BadPadding), 2);
        // The correct trailer opens.
        let mut text = inner(align * 2 - 5, 0);
        text.extend([1, 2, 3, 3, 4]);
        let mut p = authentic_with_trailer(suite, 3, &text);
        let o = rx.open(now, &mut p).unwrap();
        assert_eq!(o.payload.len(), align * 2 - 5);
    }
}

#[test]
fn time_lifetimes_soft_then_hard() {
    let t0 = Instant::now();
    let life = Lifetime::default().secs(100, 120);
    let cfg = SaConfig::new(SPI, Suite::AesGcm128).with_lifetime(life);
    let (mut tx, mut rx) = pair(cfg, t0);
    assert_eq!(tx.poll_timeout(), Some(t0 + Duration::from_secs(100)));
    let p = inner(50, 0);
    let mut pkt = seal(&mut tx, t0 + Duration::from_secs(99), &p);
    assert_eq!(tx.poll_event(), None);
    tx.handle_timeout(t0 + Duration::from_secs(100));
    assert!(tx.is_soft_expired() && !tx.is_hard_expired());
    assert_eq!(
        tx.poll_event(),
        Some(SaEvent::SoftExpired {
            spi: SPI,
            direction: Direction::Outbound,
            trigger: Trigger::Time
        })
    );
    assert_eq!(tx.poll_event(), None, "reported once");
    assert_eq!(tx.poll_timeout(), Some(t0 + Duration::from_secs(120)));
    // Soft-expired SAs still work.
    let mut pkt2 = seal(&mut tx, t0 + Duration::from_secs(110), &p);
    rx.open(t0 + Duration::from_secs(110), &mut pkt).unwrap();
    // Hard: both directions refuse, the refusal is counted, the event fires once.
    let late = t0 + Duration::from_secs(120);
    assert_eq!(
        tx.seal(late, 4, &p, &mut Vec::new()),
        Err(EspError::HardExpired)
    );
    assert_eq!(rx.open(late, &mut pkt2), Err(EspError::HardExpired));
    assert_eq!(rx.stats().drops.get(DropReason::HardExpired), 1);
    assert_eq!(tx.stats().drops.get(DropReason::HardExpired), 1);
    assert_eq!(
        tx.poll_event(),
        Some(SaEvent::HardExpired {
            spi: SPI,
            direction: Direction::Outbound,
            trigger: Trigger::Time
        })
    );
    assert_eq!(
        rx.poll_event(),
        Some(SaEvent::SoftExpired {
            spi: SPI,
            direction: Direction::Inbound,
            trigger: Trigger::Time
        })
    );
    assert!(matches!(rx.poll_event(), Some(SaEvent::HardExpired { .. })));
    assert_eq!(tx.poll_timeout(), None);
}

#[test]
fn byte_lifetimes_soft_then_hard() {
    let now = Instant::now();
    let cfg = SaConfig::new(SPI, Suite::AesCbc256HmacSha1)
        .with_lifetime(Lifetime::default().bytes(1000, 2000));
    let (mut tx, mut rx) = pair(cfg, now);
    let p = inner(400, 0);
    let mut sent = Vec::new();
    for _ in 0..2 {
        sent.push(seal(&mut tx, now, &p));
    }
    assert!(!tx.is_soft_expired());
    sent.push(seal(&mut tx, now, &p)); // 1200 octets: soft
    assert_eq!(
        tx.poll_event(),
        Some(SaEvent::SoftExpired {
            spi: SPI,
            direction: Direction::Outbound,
            trigger: Trigger::Bytes
        })
    );
    sent.push(seal(&mut tx, now, &p));
    sent.push(seal(&mut tx, now, &p)); // 2000 octets: hard
    assert!(tx.is_hard_expired());
    assert_eq!(
        tx.seal(now, 4, &p, &mut Vec::new()),
        Err(EspError::HardExpired)
    );
    for (i, mut pkt) in sent.into_iter().enumerate() {
        let r = rx.open(now, &mut pkt);
        assert!(r.is_ok(), "packet {i}: {r:?}");
    }
    assert_eq!(rx.bytes(), 2000);
    assert!(rx.is_hard_expired());
    assert!(matches!(
        rx.poll_event(),
        Some(SaEvent::SoftExpired {
            trigger: Trigger::Bytes,
            ..
        })
    ));
}

#[test]
fn sad_routes_by_spi_and_counts_unknown() {
    let now = Instant::now();
    let mut sad = Sad::new();
    let mut txs = Vec::new();
    for (i, suite) in Suite::ALL.into_iter().enumerate() {
        let spi = 0x1000 + i as u32;
        let life = Lifetime::default().secs(10 + i as u64, 100);
        let cfg = SaConfig::new(spi, suite).with_lifetime(life);
        let (tx, rx) = pair(cfg, now);
        assert!(sad.insert(rx).is_none());
        txs.push(tx);
    }
    assert_eq!(sad.len(), 7);
    for tx in txs.iter_mut() {
        let p = inner(77, tx.spi() as u8);
        let mut pkt = seal(tx, now, &p);
        let o = sad.open(now, &mut pkt).unwrap();
        assert_eq!(o.spi, tx.spi());
        assert_eq!(&pkt[o.payload], &p[..]);
    }
    let mut unknown = seal(&mut txs[0], now, &inner(10, 0));
    unknown[3] = 0x99;
    assert_eq!(
        sad.open(now, &mut unknown),
        Err(EspError::UnknownSpi(0x1099))
    );
    assert!(matches!(
        sad.open(now, &mut [1, 2, 3]),
        Err(EspError::TooShort { .. })
    ));
    let drops = sad.drops();
    assert_eq!(drops.get(DropReason::UnknownSpi), 1);
    assert_eq!(drops.get(DropReason::TooShort), 1);
    // Lifetimes over the whole database: earliest deadline first, events in SPI order.
    assert_eq!(sad.poll_timeout(), Some(now + Duration::from_secs(10)));
    sad.handle_timeout(now + Duration::from_secs(11));
    assert!(matches!(
        sad.poll_event(),
        Some(SaEvent::SoftExpired { spi: 0x1000, .. })
    ));
    assert!(matches!(
        sad.poll_event(),
        Some(SaEvent::SoftExpired { spi: 0x1001, .. })
    ));
    assert_eq!(sad.poll_event(), None);
    sad.handle_timeout(now + Duration::from_secs(100));
    assert_eq!(sad.remove_hard_expired().len(), 7);
    assert!(sad.is_empty());
    assert_eq!(
        sad.drops().get(DropReason::UnknownSpi),
        1,
        "counters survive removal"
    );
}

#[test]
fn udp_encapsulated_esp_round_trip() {
    let now = Instant::now();
    let (mut tx, mut rx) = pair(SaConfig::new(SPI, Suite::AesGcm128), now);
    let esp_pkt = seal(&mut tx, now, &inner(120, 0));
    let mut datagram = udp_encap::udp_header(4500, 4500, esp_pkt.len())
        .unwrap()
        .to_vec();
    datagram.extend_from_slice(&esp_pkt);
    let mut payload = datagram[udp_encap::UDP_HEADER_LEN..].to_vec();
    match udp_encap::classify(&payload).unwrap() {
        UdpPayload::Esp(e) => assert_eq!(e, &esp_pkt[..]),
        other => panic!("expected ESP, got {other:?}"),
    }
    assert!(rx.open(now, &mut payload).is_ok());
    assert_eq!(
        udp_encap::classify(&udp_encap::NAT_KEEPALIVE),
        Ok(UdpPayload::Keepalive)
    );
    let mut ike = Vec::new();
    udp_encap::push_ike(&mut ike, b"IKE");
    assert_eq!(udp_encap::classify(&ike), Ok(UdpPayload::Ike(b"IKE")));
}

#[test]
fn configuration_errors() {
    let now = Instant::now();
    let cfg = SaConfig::new(SPI, Suite::AesGcm128);
    assert_eq!(
        InboundSa::new(cfg, &[0; 16], &[], now).unwrap_err(),
        ConfigError::KeyLength {
            what: "encryption",
            expected: 20,
            got: 16
        }
    );
    let cbc = SaConfig::new(SPI, Suite::AesCbc128HmacSha256);
    assert_eq!(
        InboundSa::new(cbc, &[0; 16], &[0; 20], now).unwrap_err(),
        ConfigError::KeyLength {
            what: "integrity",
            expected: 32,
            got: 20
        }
    );
    assert_eq!(
        OutboundSa::new(cbc, &[0; 16], &[0; 32], now).unwrap_err(),
        ConfigError::IvSourceRequired
    );
    assert_eq!(
        InboundSa::new(SaConfig::new(255, Suite::AesGcm128), &[0; 20], &[], now).unwrap_err(),
        ConfigError::ReservedSpi(255)
    );
    assert_eq!(
        InboundSa::new(cfg.with_replay_window(32), &[0; 20], &[], now).unwrap_err(),
        ConfigError::ReplayWindow(32)
    );
    let bad_life = cfg.with_lifetime(Lifetime::default().secs(10, 10));
    assert_eq!(
        InboundSa::new(bad_life, &[0; 20], &[], now).unwrap_err(),
        ConfigError::Lifetime
    );
    assert_eq!(Suite::from_ikev2(20, 256, 0), Some(Suite::AesGcm256));
    assert_eq!(
        Suite::from_ikev2(12, 128, 12),
        Some(Suite::AesCbc128HmacSha256)
    );
    assert_eq!(Suite::from_ikev2(12, 192, 12), None);
}

#[test]
fn dummy_packets_are_flagged_for_discard() {
    let now = Instant::now();
    let (mut tx, mut rx) = pair(SaConfig::new(SPI, Suite::ChaCha20Poly1305), now);
    let mut pkt = Vec::new();
    tx.seal(now, esp::NEXT_HEADER_NO_NEXT, &[0; 32], &mut pkt)
        .unwrap();
    let o = rx.open(now, &mut pkt).unwrap();
    assert!(o.is_dummy());
    let real = seal(&mut tx, now, &inner(20, 0));
    assert!(!rx.open(now, &mut real.clone()).unwrap().is_dummy());
}

#[test]
fn inner_mtu_is_the_largest_payload_that_fits() {
    let now = Instant::now();
    for suite in Suite::ALL {
        let (mut tx, _) = pair(SaConfig::new(SPI, suite), now);
        for udp in [false, true] {
            for mtu in [576, 1280, 1400, 1500] {
                let max = tx.inner_mtu(mtu, udp);
                let outer = |len: usize, tx: &mut OutboundSa| {
                    seal(tx, now, &inner(len, 0)).len() + 20 + if udp { 8 } else { 0 }
                };
                assert!(outer(max, &mut tx) <= mtu, "{suite:?} mtu {mtu}");
                assert!(outer(max + 1, &mut tx) > mtu, "{suite:?} mtu {mtu}");
            }
        }
        assert_eq!(tx.inner_mtu(40, true), 0);
    }
    // AES-GCM over UDP/4500 in a 1500-octet path: 1500 - 20 - 8 - 8 - 8 - 16 = 1440,
    // aligned to 4 = 1440, minus the 2 trailer octets.
    let (tx, _) = pair(SaConfig::new(SPI, Suite::AesGcm128), now);
    assert_eq!(tx.inner_mtu(1500, true), 1438);
}

#[test]
fn sad_demultiplexes_port_4500() {
    use esp::UdpInbound;
    let now = Instant::now();
    let (mut tx, rx) = pair(SaConfig::new(SPI, Suite::AesGcm256), now);
    let mut sad = Sad::new();
    sad.insert(rx);
    assert_eq!(sad.open_udp(now, &mut [0xff]), Ok(UdpInbound::Keepalive));
    let mut ike = vec![0, 0, 0, 0];
    ike.extend_from_slice(&[0x11; 28]);
    assert_eq!(sad.open_udp(now, &mut ike), Ok(UdpInbound::Ike(4..32)));
    let p = inner(64, 1);
    let mut esp_pkt = seal(&mut tx, now, &p);
    match sad.open_udp(now, &mut esp_pkt).unwrap() {
        UdpInbound::Esp(o) => assert_eq!(&esp_pkt[o.payload], &p[..]),
        other => panic!("expected ESP, got {other:?}"),
    }
    assert!(matches!(
        sad.open_udp(now, &mut [1, 2, 3]),
        Err(EspError::TooShort { .. })
    ));
    assert!(sad.open_udp(now, &mut []).is_err());
    assert_eq!(sad.drops().get(DropReason::TooShort), 2);
    assert_eq!(sad.drops().total(), 2);
}

#[test]
fn sas_can_move_between_threads() {
    fn send<T: Send>() {}
    fn sync<T: Sync>() {}
    send::<OutboundSa>();
    send::<InboundSa>();
    sync::<InboundSa>();
    send::<Sad>();
}

/// An IV source that fails once, like an RNG that is not ready.
struct FlakyIv(bool);

impl esp::IvSource for FlakyIv {
    fn fill_iv(&mut self, seq: u64, iv: &mut [u8]) -> Result<(), EspError> {
        if std::mem::replace(&mut self.0, false) {
            return Err(EspError::IvSource);
        }
        esp::SeqIv.fill_iv(seq, iv)
    }
}

#[test]
fn failing_iv_source_consumes_no_sequence_number() {
    let now = Instant::now();
    let cfg = SaConfig::new(SPI, Suite::AesCbc128HmacSha1);
    let (enc, integ) = keys(cfg.suite);
    let mut tx =
        OutboundSa::with_iv_source(cfg, &enc, &integ, now, Box::new(FlakyIv(true))).unwrap();
    let p = inner(40, 0);
    let mut buf = vec![0u8; 24];
    buf.extend_from_slice(&p);
    assert_eq!(
        tx.seal_in_place(now, 4, &mut buf, 24),
        Err(EspError::IvSource)
    );
    assert_eq!(&buf[24..], &p[..], "inner packet untouched");
    assert_eq!(tx.next_seq(), 1);
    let r = tx.seal_in_place(now, 4, &mut buf, 24).unwrap();
    assert_eq!(&buf[r.start + 4..r.start + 8], &1u32.to_be_bytes());
}
