//! Replay protection of registrations (RFC 5944 section 5.7).
//!
//! The 64-bit Identification of a Registration Request carries either
//!
//! * a **timestamp** (NTP format: seconds since 1900 in the high 32 bits, fraction in
//!   the low 32): the home agent accepts it if it is within a tolerance of its own
//!   clock (default 7 s) and greater than the last one accepted; otherwise it denies
//!   with code 133 and puts its own time in the high-order 32 bits of the reply's
//!   Identification so the mobile node can resynchronise; or
//! * **nonces**: the high 32 bits echo the last nonce the home agent handed out, the
//!   low 32 bits are the mobile node's fresh nonce; every reply hands out a new home
//!   agent nonce in its high-order bits.
//!
//! In both methods the low-order 32 bits of a reply's Identification are copied from
//! the request, which is how a mobile node matches replies to requests.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
pub const NTP_UNIX_OFFSET: u64 = 2_208_988_800;
/// RFC 5944 section 5.7 suggests a default tolerance of 7 seconds.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(7);

/// A 64-bit NTP timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NtpTime(pub u64);

impl NtpTime {
    /// Converts a wall-clock time (the caller reads the clock, not this crate).
    pub fn from_system_time(t: SystemTime) -> NtpTime {
        let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = d.as_secs().wrapping_add(NTP_UNIX_OFFSET) & 0xffff_ffff;
        let frac = (u64::from(d.subsec_nanos()) << 32) / 1_000_000_000;
        NtpTime((secs << 32) | frac)
    }

    pub fn seconds(self) -> u32 {
        (self.0 >> 32) as u32
    }
}

/// How a mobile node's registrations are protected against replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReplayMethod {
    Timestamp,
    Nonce,
}

/// The low-order 32 bits, which replies copy from requests.
pub fn low32(ident: u64) -> u32 {
    ident as u32
}

fn high32(ident: u64) -> u32 {
    (ident >> 32) as u32
}

/// A home agent's replay state for one mobile node.
#[derive(Debug, Clone, Default)]
pub struct ReplayState {
    last_accepted: Option<u64>,
    /// The nonce most recently handed to the mobile node (nonce method).
    ha_nonce: Option<u32>,
}

/// The verdict on a request's Identification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Fresh,
    /// Deny with code 133; the reply carries this Identification.
    Mismatch {
        reply_ident: u64,
    },
}

impl ReplayState {
    /// Checks a request's Identification without changing any state.
    /// `next_nonce` is the nonce to hand out if the check fails (nonce method).
    pub fn check(
        &self,
        method: ReplayMethod,
        tolerance: Duration,
        ident: u64,
        wall: NtpTime,
        next_nonce: u32,
    ) -> Verdict {
        match method {
            ReplayMethod::Timestamp => {
                let skew =
                    i64::from(high32(ident).wrapping_sub(wall.seconds()) as i32).unsigned_abs();
                let newer = self.last_accepted.is_none_or(|l| ident > l);
                if skew <= tolerance.as_secs() && newer {
                    Verdict::Fresh
                } else {
                    Verdict::Mismatch {
                        reply_ident: (u64::from(wall.seconds()) << 32) | u64::from(low32(ident)),
                    }
                }
            }
            ReplayMethod::Nonce => {
                if self.ha_nonce == Some(high32(ident)) {
                    Verdict::Fresh
                } else {
                    Verdict::Mismatch {
                        reply_ident: (u64::from(next_nonce) << 32) | u64::from(low32(ident)),
                    }
                }
            }
        }
    }

    /// Records an accepted request and returns the Identification of the reply.
    pub fn commit(&mut self, method: ReplayMethod, ident: u64, next_nonce: u32) -> u64 {
        self.last_accepted = Some(ident);
        match method {
            ReplayMethod::Timestamp => ident,
            ReplayMethod::Nonce => {
                self.ha_nonce = Some(next_nonce);
                (u64::from(next_nonce) << 32) | u64::from(low32(ident))
            }
        }
    }

    /// The last Identification accepted, if any.
    pub fn last_accepted(&self) -> Option<u64> {
        self.last_accepted
    }

    /// A state that accepts only Identifications newer than `last` (after a restart).
    pub fn restored(last: Option<u64>) -> ReplayState {
        ReplayState {
            last_accepted: last,
            ha_nonce: None,
        }
    }

    /// Records the nonce handed out in a denial (nonce method).
    pub fn issued_nonce(&mut self, nonce: u32) {
        self.ha_nonce = Some(nonce);
    }
}

/// A mobile node's source of Identification values.
#[derive(Debug, Clone)]
pub struct IdentGenerator {
    method: ReplayMethod,
    /// Seconds to add to the local clock (learned from code 133 replies).
    offset: i64,
    last: u64,
    ha_nonce: u32,
}

impl IdentGenerator {
    pub fn new(method: ReplayMethod) -> Self {
        IdentGenerator {
            method,
            offset: 0,
            last: 0,
            ha_nonce: 0,
        }
    }

    pub fn method(&self) -> ReplayMethod {
        self.method
    }

    /// Seconds the local clock is corrected by.
    pub fn clock_offset(&self) -> i64 {
        self.offset
    }

    /// A fresh Identification, strictly greater than the previous one in the
    /// timestamp method. `mn_nonce` is used by the nonce method.
    pub fn next(&mut self, wall: NtpTime, mn_nonce: u32) -> u64 {
        let id = match self.method {
            ReplayMethod::Timestamp => {
                let secs = (i64::from(wall.seconds()) + self.offset) as u64 & 0xffff_ffff;
                // RFC 5944 5.7.1: bits a time source cannot provide come from a good
                // source of randomness. The reply is matched on these 32 bits only,
                // so a clock with coarse ticks (or a simulator on whole
                // milliseconds) must not make them repeat: a captured reply to an
                // older request with the same fraction would be taken as fresh.
                let frac = (wall.0 & 0xffff_0000) | u64::from(mn_nonce & 0xffff);
                let id = (secs << 32) | frac;
                if id <= self.last {
                    self.last.wrapping_add(1)
                } else {
                    id
                }
            }
            ReplayMethod::Nonce => (u64::from(self.ha_nonce) << 32) | u64::from(mn_nonce),
        };
        self.last = id;
        id
    }

    /// Learns from a code 133 reply: the home agent's clock or its new nonce.
    pub fn resync(&mut self, reply_ident: u64, wall: NtpTime) {
        match self.method {
            ReplayMethod::Timestamp => {
                self.offset = i64::from(high32(reply_ident).wrapping_sub(wall.seconds()) as i32);
                self.last = 0;
            }
            ReplayMethod::Nonce => self.ha_nonce = high32(reply_ident),
        }
    }

    /// Learns from an accepted reply (the next home agent nonce).
    pub fn accepted(&mut self, reply_ident: u64) {
        if self.method == ReplayMethod::Nonce {
            self.ha_nonce = high32(reply_ident);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ntp(secs: u32) -> NtpTime {
        NtpTime(u64::from(secs) << 32)
    }

    #[test]
    fn ntp_conversion() {
        // 2025-01-01T00:00:00Z is NTP 0xeb1f0400 (TEST-VECTORS.md section 6).
        let t = UNIX_EPOCH + Duration::from_secs(1_735_689_600);
        assert_eq!(NtpTime::from_system_time(t).0, 0xeb1f_0400_0000_0000);
        let half = t + Duration::from_millis(500);
        assert_eq!(NtpTime::from_system_time(half).0 & 0xffff_ffff, 0x8000_0000);
    }

    #[test]
    fn timestamp_window_and_monotonic() {
        let mut s = ReplayState::default();
        let tol = DEFAULT_TOLERANCE;
        let now = ntp(1000);
        let id = (1005u64 << 32) | 7;
        assert_eq!(
            s.check(ReplayMethod::Timestamp, tol, id, now, 0),
            Verdict::Fresh
        );
        assert_eq!(s.commit(ReplayMethod::Timestamp, id, 0), id);
        // The same Identification again is a replay.
        assert_eq!(
            s.check(ReplayMethod::Timestamp, tol, id, now, 0),
            Verdict::Mismatch {
                reply_ident: (1000u64 << 32) | 7
            }
        );
        // 8 s off is outside the default 7 s tolerance, either way.
        assert!(matches!(
            s.check(ReplayMethod::Timestamp, tol, 1008u64 << 32, now, 0),
            Verdict::Mismatch { .. }
        ));
        let s2 = ReplayState::default();
        assert!(matches!(
            s2.check(ReplayMethod::Timestamp, tol, 992u64 << 32, now, 0),
            Verdict::Mismatch { .. }
        ));
        assert_eq!(
            s2.check(ReplayMethod::Timestamp, tol, 993u64 << 32, now, 0),
            Verdict::Fresh
        );
    }

    #[test]
    fn mobile_node_resynchronises_after_133() {
        let mut g = IdentGenerator::new(ReplayMethod::Timestamp);
        let mn_clock = ntp(5000);
        let id = g.next(mn_clock, 0);
        let ha = ReplayState::default();
        let Verdict::Mismatch { reply_ident } =
            ha.check(ReplayMethod::Timestamp, DEFAULT_TOLERANCE, id, ntp(9000), 0)
        else {
            panic!("skewed clock must be denied")
        };
        assert_eq!(low32(reply_ident), low32(id));
        g.resync(reply_ident, mn_clock);
        assert_eq!(g.clock_offset(), 4000);
        let id2 = g.next(ntp(5001), 0);
        assert_eq!(
            ha.check(
                ReplayMethod::Timestamp,
                DEFAULT_TOLERANCE,
                id2,
                ntp(9001),
                0
            ),
            Verdict::Fresh
        );
        // Identifications never go backwards, even if the clock does.
        let id3 = g.next(ntp(5000), 0);
        assert!(id3 > id2);
    }

    #[test]
    fn timestamp_low_bits_do_not_repeat_with_the_clock() {
        // Same clock reading, different random draws: the reply-matching bits differ.
        let mut a = IdentGenerator::new(ReplayMethod::Timestamp);
        let mut b = IdentGenerator::new(ReplayMethod::Timestamp);
        let t = ntp(5000);
        assert_ne!(low32(a.next(t, 0x1234_5678)), low32(b.next(t, 0x1234_9abc)));
        // The clock still dominates: later seconds give larger Identifications.
        let x = a.next(ntp(5001), 0);
        let y = a.next(ntp(5002), 0xffff_ffff);
        assert!(y > x);
    }

    #[test]
    fn nonces() {
        let mut ha = ReplayState::default();
        let mut g = IdentGenerator::new(ReplayMethod::Nonce);
        let id = g.next(ntp(0), 0x1111);
        let tol = DEFAULT_TOLERANCE;
        let Verdict::Mismatch { reply_ident } =
            ha.check(ReplayMethod::Nonce, tol, id, ntp(0), 0xaaaa)
        else {
            panic!("first request has no valid nonce")
        };
        ha.issued_nonce(0xaaaa);
        assert_eq!(reply_ident, (0xaaaau64 << 32) | 0x1111);
        g.resync(reply_ident, ntp(0));
        let id = g.next(ntp(0), 0x2222);
        assert_eq!(
            ha.check(ReplayMethod::Nonce, tol, id, ntp(0), 0xbbbb),
            Verdict::Fresh
        );
        let r = ha.commit(ReplayMethod::Nonce, id, 0xbbbb);
        g.accepted(r);
        // Replaying the accepted request fails: the nonce has moved on.
        assert!(matches!(
            ha.check(ReplayMethod::Nonce, tol, id, ntp(0), 0xcccc),
            Verdict::Mismatch { .. }
        ));
        let id = g.next(ntp(0), 0x3333);
        assert_eq!(
            ha.check(ReplayMethod::Nonce, tol, id, ntp(0), 0xcccc),
            Verdict::Fresh
        );
    }
}
