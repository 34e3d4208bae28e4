//! seal -> open returns the same inner packet for every suite; any single flipped bit
//! in the sealed packet makes open fail.
#![no_main]

use std::time::Instant;

use esp::{InboundSa, OutboundSa, SaConfig, SeqIv, Suite};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [sel, flip_hi, flip_lo, payload @ ..] = data else {
        return;
    };
    let suite = Suite::ALL[usize::from(*sel) % Suite::ALL.len()];
    let cfg = SaConfig::new(0x0000_1234, suite).with_esn(sel & 0x80 != 0);
    let now = Instant::now();
    let enc = vec![0x33; suite.enc_key_len()];
    let integ = vec![0x44; suite.integ_key_len()];
    // A counter IV is fine for CBC inside a fuzz target (it is not a confidentiality test).
    let mut tx = OutboundSa::with_iv_source(cfg, &enc, &integ, now, Box::new(SeqIv)).expect("SA");
    let mut rx = InboundSa::new(cfg, &enc, &integ, now).expect("SA");

    let mut pkt = Vec::new();
    tx.seal(now, 4, payload, &mut pkt).expect("seal");
    let mut tampered = pkt.clone();
    let o = rx.open(now, &mut pkt).expect("open own packet");
    assert_eq!(&pkt[o.payload], payload);
    assert_eq!(o.next_header, 4);

    // A second SA pair, fresh window, sees one flipped bit.
    let mut rx2 = InboundSa::new(cfg, &enc, &integ, now).expect("SA");
    let pos = usize::from(u16::from_be_bytes([*flip_hi, *flip_lo])) % tampered.len();
    tampered[pos] ^= 1 << (flip_lo % 8);
    assert!(
        rx2.open(now, &mut tampered).is_err(),
        "tampered packet opened at {pos}"
    );
});
