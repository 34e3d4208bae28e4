//! The anti-replay window against a naive set-based model, for any window size and any
//! sequence of (sequence number, authenticated?) inputs.
#![no_main]

use std::collections::BTreeSet;

use esp::ReplayWindow;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [s0, s1, rest @ ..] = data else {
        return;
    };
    let size = 64 + u32::from(u16::from_be_bytes([*s0, *s1])) % 1024;
    let mut w = ReplayWindow::new(size).expect("valid size");
    let mut seen = BTreeSet::new();
    let mut top = 0u64;
    for chunk in rest.chunks_exact(5) {
        let step = u64::from(u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]));
        let authentic = chunk[4] & 1 == 1;
        // Mostly near the top, sometimes far jumps either way.
        let seq = if chunk[4] & 2 == 0 {
            (top + (step % 64)).saturating_sub(step % 3000)
        } else {
            step
        };
        let model_ok =
            seq != 0 && (seq > top || (top - seq < u64::from(size) && !seen.contains(&seq)));
        assert_eq!(
            w.check(seq).is_ok(),
            model_ok,
            "seq {seq} top {top} size {size}"
        );
        if model_ok && authentic {
            w.commit(seq);
            seen.insert(seq);
            top = top.max(seq);
        }
        assert_eq!(w.top(), top);
    }
});
