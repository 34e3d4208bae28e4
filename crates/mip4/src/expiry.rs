//! A timer wheel with one-second slots for binding expiry.
//!
//! Renewing a binding must cost the same with a thousand or a million bindings,
//! so entries are never searched for or removed early: a renewal appends a new
//! entry to the slot of its new deadline (all renewals of one second share a
//! slot, which stays in cache), and an entry whose binding was renewed meanwhile
//! is recognised as stale and skipped when its slot fires. The wheel itself
//! holds whatever is pushed until its slot fires; the home agent pushes once per
//! binding lifetime, not once per renewal (see `HomeAgent::schedule`). Deadlines are rounded up to the next
//! second: nothing expires early, at most one second late.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Entries of type `T`, due at whole seconds after an origin.
#[derive(Debug, Clone)]
pub struct ExpiryWheel<T> {
    origin: Option<Instant>,
    /// Second (since origin) of `slots[0]`.
    base: u64,
    slots: VecDeque<Vec<T>>,
    /// Index of the first non-empty slot, if any.
    first: Option<usize>,
    len: usize,
}

impl<T> Default for ExpiryWheel<T> {
    fn default() -> Self {
        ExpiryWheel {
            origin: None,
            base: 0,
            slots: VecDeque::new(),
            first: None,
            len: 0,
        }
    }
}

impl<T> ExpiryWheel<T> {
    /// Entries held, stale ones included.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn second_of(&mut self, now: Instant, t: Instant) -> u64 {
        let origin = *self.origin.get_or_insert(now);
        let d = t.saturating_duration_since(origin);
        d.as_secs() + u64::from(d.subsec_nanos() > 0)
    }

    /// Schedules `item` at `deadline` (rounded up to a whole second). `now` is
    /// the current time; the first call fixes the wheel's origin to it.
    pub fn push(&mut self, now: Instant, deadline: Instant, item: T) {
        let sec = self.second_of(now, deadline).max(self.base);
        let idx = (sec - self.base) as usize;
        if idx >= self.slots.len() {
            self.slots.resize_with(idx + 1, Vec::new);
        }
        self.slots[idx].push(item);
        self.len += 1;
        self.first = Some(self.first.map_or(idx, |f| f.min(idx)));
    }

    /// When the earliest slot fires.
    pub fn next_deadline(&self) -> Option<Instant> {
        let (origin, first) = (self.origin?, self.first?);
        Some(origin + Duration::from_secs(self.base + first as u64))
    }

    /// Removes and returns the entries of every slot due at or before `now`.
    pub fn expire(&mut self, now: Instant, mut f: impl FnMut(T)) {
        let Some(origin) = self.origin else { return };
        let now_sec = now.saturating_duration_since(origin).as_secs();
        if self.base > now_sec {
            return;
        }
        while let Some(front) = self.slots.front_mut() {
            if self.base > now_sec {
                break;
            }
            let items = std::mem::take(front);
            self.len -= items.len();
            items.into_iter().for_each(&mut f);
            self.slots.pop_front();
            self.base += 1;
        }
        if self.slots.is_empty() {
            self.base = self.base.max(now_sec + 1);
        }
        self.first = self.slots.iter().position(|s| !s.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_in_order_never_early() {
        let t0 = Instant::now();
        let mut w = ExpiryWheel::default();
        w.push(t0, t0 + Duration::from_millis(2500), "b");
        w.push(t0, t0 + Duration::from_secs(1), "a");
        w.push(t0, t0 + Duration::from_secs(10), "c");
        assert_eq!(w.next_deadline(), Some(t0 + Duration::from_secs(1)));
        let mut got = Vec::new();
        w.expire(t0 + Duration::from_millis(2900), |x| got.push(x));
        assert_eq!(got, ["a"]);
        assert_eq!(w.next_deadline(), Some(t0 + Duration::from_secs(3)));
        w.expire(t0 + Duration::from_secs(3), |x| got.push(x));
        assert_eq!(got, ["a", "b"]);
        w.expire(t0 + Duration::from_secs(100), |x| got.push(x));
        assert_eq!(got, ["a", "b", "c"]);
        assert!(w.is_empty());
        assert_eq!(w.next_deadline(), None);
        // A deadline already in the past fires at the next expiry.
        w.push(
            t0 + Duration::from_secs(100),
            t0 + Duration::from_secs(5),
            "late",
        );
        w.expire(t0 + Duration::from_secs(101), |x| got.push(x));
        assert_eq!(got.last(), Some(&"late"));
    }
}
