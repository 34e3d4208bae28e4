//! ESN across the 2^32 boundary, end to end: the sender crosses into subspace 1 while
//! the receiver sees the packets reordered, duplicated and partly lost.

use std::time::Instant;

use crate::error::EspError;
use crate::sa::{InboundSa, OutboundSa, SaConfig};
use crate::suite::Suite;

#[test]
fn esn_crosses_the_subspace_boundary_with_reordering() {
    let now = Instant::now();
    for suite in Suite::ALL {
        let cfg = SaConfig::new(0x4000, suite)
            .with_esn(true)
            .with_replay_window(64);
        let enc = vec![3u8; suite.enc_key_len()];
        let integ = vec![4u8; suite.integ_key_len()];
        let mut tx =
            OutboundSa::with_iv_source(cfg, &enc, &integ, now, Box::new(crate::SeqIv)).unwrap();
        let mut rx = InboundSa::new(cfg, &enc, &integ, now).unwrap();
        let start = (1u64 << 32) - 100;
        tx.set_last_seq(start);
        rx.window_mut().commit(start);
        let pkts: Vec<(u64, Vec<u8>)> = (1..=200)
            .map(|i| {
                let mut out = Vec::new();
                tx.seal(now, 4, &[i as u8; 30], &mut out).unwrap();
                (start + i, out)
            })
            .collect();
        // Deliver in blocks of 8, each block reversed; drop every 13th; replay every 7th.
        let mut delivered = 0;
        for block in pkts.chunks(8) {
            for (seq, pkt) in block.iter().rev() {
                if seq % 13 == 0 {
                    continue;
                }
                let o = rx.open(now, &mut pkt.clone()).unwrap_or_else(|e| {
                    panic!("{suite:?} seq {seq:#x}: {e}");
                });
                assert_eq!(o.seq, *seq);
                delivered += 1;
                if seq % 7 == 0 {
                    assert_eq!(
                        rx.open(now, &mut pkt.clone()),
                        Err(EspError::Replay { seq: *seq }),
                        "{suite:?}"
                    );
                }
            }
        }
        assert_eq!(rx.window().top(), start + 200);
        assert!(rx.window().top() > 1 << 32, "crossed into subspace 1");
        assert_eq!(rx.stats().packets, delivered);
        // A late packet from subspace 0 that was lost is still accepted inside the window.
        let (seq, late) = pkts
            .iter()
            .find(|(s, _)| s % 13 == 0 && *s > start + 140)
            .unwrap();
        assert_eq!(rx.open(now, &mut late.clone()).unwrap().seq, *seq);
    }
}
