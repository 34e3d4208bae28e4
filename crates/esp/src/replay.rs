//! The inbound anti-replay window (RFC 4303 section 3.4.3 and appendix A2).
//!
//! The window is a bitmap over the `size` sequence numbers ending at the highest one
//! received so far. It is kept in a ring of 64-bit words with one spare word (the
//! layout of RFC 6479), so sliding right clears whole words and never shifts bits.
//!
//! Use it in two steps: [`ReplayWindow::check`] before the ICV is verified, and
//! [`ReplayWindow::commit`] only after it verified. A forged packet therefore cannot
//! move the window.

use crate::error::{ConfigError, EspError};

/// The default window size in packets.
pub const DEFAULT_WINDOW: u32 = 128;
/// The smallest window accepted (RFC 4303 recommends 64 as the default minimum).
pub const MIN_WINDOW: u32 = 64;
/// The largest window accepted.
pub const MAX_WINDOW: u32 = 65536;

/// Anti-replay state of one inbound SA.
#[derive(Debug, Clone)]
pub struct ReplayWindow {
    size: u64,
    /// Highest sequence number accepted so far (0 = none yet).
    top: u64,
    bits: Vec<u64>,
}

impl ReplayWindow {
    /// A window of `size` packets (64..=65536).
    pub fn new(size: u32) -> Result<Self, ConfigError> {
        if !(MIN_WINDOW..=MAX_WINDOW).contains(&size) {
            return Err(ConfigError::ReplayWindow(size));
        }
        let words = (size as usize).div_ceil(64) + 1;
        Ok(ReplayWindow {
            size: u64::from(size),
            top: 0,
            bits: vec![0; words],
        })
    }

    /// Window size in packets.
    pub fn size(&self) -> u32 {
        u32::try_from(self.size).unwrap_or(u32::MAX)
    }

    /// The highest sequence number accepted so far.
    pub fn top(&self) -> u64 {
        self.top
    }

    /// Reconstructs a 64-bit ESN from its transmitted low half (RFC 4303 appendix A2.2).
    ///
    /// Returns `None` when the low half can only belong to a subspace before the first one,
    /// i.e. the packet is older than anything this SA can have sent.
    pub fn infer_esn(&self, seq_lo: u32) -> Option<u64> {
        let w = self.size;
        let th = self.top >> 32;
        let tl = self.top & 0xFFFF_FFFF;
        let seql = u64::from(seq_lo);
        //= https://www.rfc-editor.org/rfc/rfc4303#appendix-A2.2
        //# + Under Case A (Figure 1):
        //# If Seql >= Bl (where Bl = Tl - W + 1), then Seqh = Th
        //# If Seql <  Bl (where Bl = Tl - W + 1), then Seqh = Th + 1
        //#
        //# + Under Case B (Figure 2):
        //# If Seql >= Bl (where Bl = Tl - W + 1), then Seqh = Th - 1
        //# If Seql <  Bl (where Bl = Tl - W + 1), then Seqh = Th
        let hi = if tl >= w - 1 {
            // Case A: the window lies within one subspace.
            if seql >= tl - (w - 1) {
                th
            } else {
                th.checked_add(1)?
            }
        } else {
            // Case B: the window spans two subspaces; its bottom is in the previous one.
            let bottom = (tl + (1 << 32) - (w - 1)) & 0xFFFF_FFFF;
            if seql >= bottom {
                th.checked_sub(1)?
            } else {
                th
            }
        };
        if hi > 0xFFFF_FFFF {
            return None;
        }
        Some((hi << 32) | seql)
    }

    fn slot(&self, seq: u64) -> (usize, u64) {
        let words = self.bits.len() as u64;
        (((seq >> 6) % words) as usize, 1u64 << (seq & 63))
    }

    /// Would `seq` be accepted? Does not change the window.
    pub fn check(&self, seq: u64) -> Result<(), EspError> {
        if seq == 0 {
            // Sequence number 0 is never sent (the first packet carries 1).
            return Err(EspError::Replay { seq });
        }
        if seq > self.top {
            return Ok(());
        }
        if self.top - seq >= self.size {
            return Err(EspError::Replay { seq });
        }
        let (word, bit) = self.slot(seq);
        match self.bits.get(word) {
            Some(w) if w & bit == 0 => Ok(()),
            _ => Err(EspError::Replay { seq }),
        }
    }

    /// Records `seq` as received. Call only after the packet authenticated and after a
    /// successful [`check`](Self::check).
    pub fn commit(&mut self, seq: u64) {
        if seq > self.top {
            let words = self.bits.len() as u64;
            let old = self.top >> 6;
            let new = seq >> 6;
            // Clear the words the window slides into (at most all of them).
            let steps = (new - old).min(words);
            for i in 1..=steps {
                let idx = ((old + i) % words) as usize;
                if let Some(w) = self.bits.get_mut(idx) {
                    *w = 0;
                }
            }
            self.top = seq;
        }
        let (word, bit) = self.slot(seq);
        if let Some(w) = self.bits.get_mut(word) {
            *w |= bit;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(w: &mut ReplayWindow, seq: u64) -> Result<(), EspError> {
        w.check(seq)?;
        w.commit(seq);
        Ok(())
    }

    #[test]
    fn in_window_duplicate_and_too_old() {
        let mut w = ReplayWindow::new(128).unwrap();
        assert!(accept(&mut w, 0).is_err());
        for s in [1, 2, 5, 4, 200] {
            accept(&mut w, s).unwrap();
        }
        // Duplicate inside the window.
        assert_eq!(accept(&mut w, 5), Err(EspError::Replay { seq: 5 }));
        // 200 - 128 = 72 is just outside; 73 is the oldest acceptable.
        assert_eq!(accept(&mut w, 72), Err(EspError::Replay { seq: 72 }));
        accept(&mut w, 73).unwrap();
        accept(&mut w, 199).unwrap();
        assert!(accept(&mut w, 199).is_err());
        assert!(accept(&mut w, 200).is_err());
    }

    #[test]
    fn large_jump_clears_the_bitmap() {
        let mut w = ReplayWindow::new(64).unwrap();
        for s in 1..=64 {
            accept(&mut w, s).unwrap();
        }
        accept(&mut w, 1_000_000).unwrap();
        // Everything in the new window except the top is fresh.
        for s in (1_000_000 - 63)..1_000_000 {
            w.check(s).unwrap();
        }
        assert!(w.check(1_000_000 - 64).is_err());
    }

    #[test]
    fn matches_a_naive_model() {
        // Deterministic pseudo-random walk against a set-based model.
        let mut w = ReplayWindow::new(100).unwrap();
        let mut seen = std::collections::BTreeSet::new();
        let mut top = 0u64;
        let mut x = 0x1234_5678u64;
        for _ in 0..20000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let seq = (top + 40).saturating_sub(x % 180).max(1);
            let model_ok = seq > top || (top - seq < 100 && !seen.contains(&seq));
            assert_eq!(w.check(seq).is_ok(), model_ok, "seq {seq} top {top}");
            if model_ok {
                w.commit(seq);
                seen.insert(seq);
                top = top.max(seq);
            }
        }
    }

    #[test]
    fn esn_inference() {
        let mut w = ReplayWindow::new(128).unwrap();
        assert_eq!(w.infer_esn(5), Some(5));
        // Before any packet, a low half near 2^32 would belong to subspace -1.
        assert_eq!(w.infer_esn(u32::MAX), None);
        w.commit(0xFFFF_FFF0);
        // Same subspace, and the next one after wrap.
        assert_eq!(w.infer_esn(0xFFFF_FFF5), Some(0xFFFF_FFF5));
        assert_eq!(w.infer_esn(3), Some((1 << 32) | 3));
        w.commit((1 << 32) | 3);
        // Window spans two subspaces: a late packet from the old subspace.
        assert_eq!(w.infer_esn(0xFFFF_FFF1), Some(0xFFFF_FFF1));
        assert_eq!(w.infer_esn(10), Some((1 << 32) | 10));
        w.check(0xFFFF_FFF1).unwrap();
        assert!(w.check(0xFFFF_FFF0).is_err());
    }
}
