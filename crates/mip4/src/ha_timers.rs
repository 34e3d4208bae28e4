//! Binding expiry: one live expiry-wheel entry per binding (issue 15).

use super::{Binding, HomeAgent, MnRecord};
use crate::expiry::ExpiryWheel;
use std::net::Ipv4Addr;
use std::time::Instant;

impl HomeAgent {
    /// Makes sure the expiry wheel fires for binding `b` no later than `b.expires`.
    ///
    /// Memory bound (issue 15): each binding has exactly one live wheel entry
    /// (8 octets) and one `scheduled` record. A renewal that extends the lifetime,
    /// the usual case, pushes nothing: when the old entry fires, it finds the
    /// binding renewed and pushes one entry at the new deadline, so a binding
    /// costs one push per lifetime however often it is renewed. Only a renewal
    /// that brings the deadline earlier pushes an entry (the old one turns stale
    /// and is freed when its slot fires, at most `max_lifetime` later); likewise
    /// a binding removed before its deadline leaves one stale entry until then.
    /// So the wheel holds at most one entry per binding plus one per
    /// deadline-shortening renewal or early removal of the last `max_lifetime`
    /// seconds, never one per ordinary renewal.
    pub(super) fn schedule(
        wheel: &mut ExpiryWheel<(Ipv4Addr, Ipv4Addr)>,
        mn: &mut MnRecord,
        now: Instant,
        b: &Binding,
    ) {
        match mn.scheduled.iter_mut().find(|(c, _)| *c == b.care_of) {
            Some((_, at)) if *at <= b.expires => {}
            Some((_, at)) => {
                *at = b.expires;
                wheel.push(now, b.expires, (b.home_addr, b.care_of));
            }
            None => {
                mn.scheduled.push((b.care_of, b.expires));
                wheel.push(now, b.expires, (b.home_addr, b.care_of));
            }
        }
    }

    /// Entries in the expiry wheel, stale ones included (for memory tests).
    pub fn timer_entries(&self) -> usize {
        self.expiry.len()
    }
}
