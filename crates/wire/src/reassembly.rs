//! IPv4 reassembly for a userspace tunnel exit (RFC 791, RFC 2003 section 5.1: the
//! outer datagram of a tunnel may be fragmented on the way when it was sent without
//! DF; the decapsulator reassembles before it strips the header). Without I/O and
//! driven with `now`; bounded: at most [`MAX_DATAGRAMS`] in progress (the oldest is
//! dropped for a new one), [`MAX_FRAGMENTS`] fragments each, 65535 octets, and
//! [`TIMEOUT`] from the first fragment. Overlapping or inconsistent fragments drop
//! the whole datagram (RFC 5722's rule for IPv6, applied here too: no ambiguity for
//! an attacker to play with).

use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use crate::ipv4::{Ipv4Header, MIN_HEADER_LEN};

pub const MAX_DATAGRAMS: usize = 16;
pub const MAX_FRAGMENTS: usize = 64;
pub const TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Key {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ident: u16,
    protocol: u8,
}

#[derive(Debug)]
struct Partial {
    key: Key,
    started: Instant,
    /// (offset in octets, payload) in arrival order.
    frags: Vec<(usize, Vec<u8>)>,
    /// The header of the fragment at offset 0, once seen.
    first_header: Option<Vec<u8>>,
    /// The payload length, once the last fragment (MF clear) is seen.
    total: Option<usize>,
}

/// What happened to a fragment.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The whole datagram, header rewritten (no MF, offset 0, its length, checksum).
    Complete(Vec<u8>),
    /// Kept until the rest comes.
    Pending,
    /// Dropped with the datagram it belonged to (why).
    Dropped(&'static str),
}

/// Datagrams being put back together.
#[derive(Debug, Default)]
pub struct Reassembler {
    partials: VecDeque<Partial>,
    /// Datagrams given up (timeout, eviction, overlap, bounds).
    pub dropped: u64,
}

impl Reassembler {
    pub fn new() -> Reassembler {
        Reassembler::default()
    }

    /// Datagrams in progress.
    pub fn len(&self) -> usize {
        self.partials.len()
    }

    pub fn is_empty(&self) -> bool {
        self.partials.is_empty()
    }

    /// Takes one fragment (`h` its parsed header, `packet` the whole fragment). Call
    /// only for a fragment (MF set or a non-zero offset).
    pub fn push(&mut self, now: Instant, h: &Ipv4Header, packet: &[u8]) -> Outcome {
        self.expire(now);
        let Some(payload) = packet.get(h.header_len..usize::from(h.total_len)) else {
            return Outcome::Dropped("malformed fragment");
        };
        let offset = usize::from(h.frag_offset) * 8;
        if h.more_fragments && (payload.is_empty() || payload.len() % 8 != 0) {
            return self.give_up(h, "fragment not a multiple of 8 octets");
        }
        if offset + payload.len() > usize::from(u16::MAX) - MIN_HEADER_LEN {
            return self.give_up(h, "reassembled datagram too long");
        }
        let key = Key {
            src: h.src,
            dst: h.dst,
            ident: h.ident,
            protocol: h.protocol,
        };
        let i = match self.partials.iter().position(|p| p.key == key) {
            Some(i) => i,
            None => {
                if self.partials.len() >= MAX_DATAGRAMS {
                    self.partials.pop_front();
                    self.dropped += 1;
                }
                self.partials.push_back(Partial {
                    key,
                    started: now,
                    frags: Vec::new(),
                    first_header: None,
                    total: None,
                });
                self.partials.len() - 1
            }
        };
        let p = &mut self.partials[i];
        let end = offset + payload.len();
        let overlaps = p
            .frags
            .iter()
            .any(|(o, d)| offset < o + d.len() && *o < end);
        let bad_total = match (p.total, h.more_fragments) {
            (Some(t), _) if end > t => true,
            (Some(t), false) => end != t,
            (None, false) => p.frags.iter().any(|(o, d)| o + d.len() > end),
            _ => false,
        };
        if overlaps || bad_total || p.frags.len() >= MAX_FRAGMENTS {
            self.partials.remove(i);
            self.dropped += 1;
            return Outcome::Dropped(if overlaps {
                "overlapping fragments"
            } else if bad_total {
                "inconsistent fragment lengths"
            } else {
                "too many fragments"
            });
        }
        if !h.more_fragments {
            p.total = Some(end);
        }
        if offset == 0 {
            p.first_header = packet.get(..h.header_len).map(<[u8]>::to_vec);
        }
        p.frags.push((offset, payload.to_vec()));
        let Some(total) = p.total else {
            return Outcome::Pending;
        };
        if p.first_header.is_none() || p.frags.iter().map(|(_, d)| d.len()).sum::<usize>() != total
        {
            return Outcome::Pending;
        }
        // No overlaps and the lengths add up to `total` within [0, total): complete.
        let Some(p) = self.partials.remove(i) else {
            return Outcome::Pending;
        };
        let mut head = p.first_header.unwrap_or_default();
        let hl = head.len();
        let mut out = Vec::with_capacity(hl + total);
        out.append(&mut head);
        out.resize(hl + total, 0);
        for (o, d) in &p.frags {
            out[hl + o..hl + o + d.len()].copy_from_slice(d);
        }
        let len = u16::try_from(hl + total).unwrap_or(u16::MAX);
        out[2..4].copy_from_slice(&len.to_be_bytes());
        // Clear MF and the offset, keep DF.
        out[6] &= 0x40;
        out[7] = 0;
        out[10..12].fill(0);
        let c = crate::checksum::checksum(&out[..hl]);
        out[10..12].copy_from_slice(&c.to_be_bytes());
        Outcome::Complete(out)
    }

    fn give_up(&mut self, h: &Ipv4Header, why: &'static str) -> Outcome {
        let before = self.partials.len();
        self.partials
            .retain(|p| !(p.key.src == h.src && p.key.dst == h.dst && p.key.ident == h.ident));
        self.dropped += 1 + (before - self.partials.len()) as u64;
        Outcome::Dropped(why)
    }

    /// Drops what waited longer than [`TIMEOUT`].
    pub fn expire(&mut self, now: Instant) {
        while self
            .partials
            .front()
            .is_some_and(|p| now.duration_since(p.started) >= TIMEOUT)
        {
            self.partials.pop_front();
            self.dropped += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `payload` cut into fragments of `size` octets (a multiple of 8), as a router does.
    fn fragments(payload: &[u8], size: usize, ident: u16) -> Vec<Vec<u8>> {
        let src = Ipv4Addr::new(10, 10, 0, 1);
        let dst = Ipv4Addr::new(10, 99, 0, 1);
        payload
            .chunks(size)
            .enumerate()
            .map(|(i, c)| {
                let mut h = Ipv4Header::new(src, dst, 4, c.len());
                h.ident = ident;
                h.frag_offset = u16::try_from(i * size / 8).unwrap_or(0);
                h.more_fragments = (i + 1) * size < payload.len();
                let mut out = vec![0u8; 20];
                h.emit(&mut out).unwrap_or_default();
                out.extend_from_slice(c);
                out
            })
            .collect()
    }

    fn push(r: &mut Reassembler, now: Instant, f: &[u8]) -> Outcome {
        let h = Ipv4Header::parse(f).unwrap_or_else(|e| panic!("{e:?}"));
        r.push(now, &h, f)
    }

    #[test]
    fn in_any_order_the_datagram_comes_back_whole() {
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        let payload: Vec<u8> = (0..1468u32).map(|i| (i % 251) as u8).collect();
        let mut fr = fragments(&payload, 1376, 7);
        fr.reverse();
        let mut r = Reassembler::new();
        assert_eq!(push(&mut r, now, &fr[0]), Outcome::Pending);
        let Outcome::Complete(d) = push(&mut r, now, &fr[1]) else {
            panic!("not complete");
        };
        let h = Ipv4Header::parse(&d).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(
            (h.total_len, h.more_fragments, h.frag_offset),
            (1488, false, 0)
        );
        assert_eq!(&d[20..], &payload[..]);
        assert!(r.is_empty());
    }

    #[test]
    fn overlaps_timeouts_and_bounds_drop_the_datagram() {
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        let payload = vec![1u8; 64];
        let fr = fragments(&payload, 32, 9);
        let mut r = Reassembler::new();
        assert_eq!(push(&mut r, now, &fr[0]), Outcome::Pending);
        assert_eq!(
            push(&mut r, now, &fr[0]),
            Outcome::Dropped("overlapping fragments")
        );
        assert!(r.is_empty());
        // The second half alone times out.
        assert_eq!(push(&mut r, now, &fr[1]), Outcome::Pending);
        r.expire(now + TIMEOUT);
        assert!(r.is_empty());
        // More than MAX_DATAGRAMS in progress: the oldest goes.
        for id in 0..=MAX_DATAGRAMS as u16 {
            let f = fragments(&payload, 32, 100 + id);
            assert_eq!(push(&mut r, now, &f[0]), Outcome::Pending);
        }
        assert_eq!(r.len(), MAX_DATAGRAMS);
        // A middle fragment whose length is not a multiple of 8.
        let mut odd = fragments(&payload, 32, 200);
        odd[0].truncate(20 + 30);
        odd[0][2..4].copy_from_slice(&50u16.to_be_bytes());
        odd[0][10..12].fill(0);
        let c = crate::checksum::checksum(&odd[0][..20]);
        odd[0][10..12].copy_from_slice(&c.to_be_bytes());
        assert!(matches!(push(&mut r, now, &odd[0]), Outcome::Dropped(_)));
    }
}
