//! Receive-side coalescing for an `IFF_VNET_HDR` TUN: consecutive TCP segments of one
//! flow become one super-packet (`gso_type` TCPV4) that the kernel takes in one `write`
//! and cuts again only if and where it has to. The rules follow what the kernel's own
//! GRO accepts, and are stricter where that is cheap:
//!
//! * IPv4 without options, not a fragment, header checksum right; same addresses, TOS,
//!   TTL and DF bit.
//! * TCP with only ACK (and PSH on the last segment), a payload, the same ports,
//!   acknowledgment number, window and option bytes, the next sequence number, and a
//!   **TCP checksum that verifies**: the super-packet's checksum is recomputed by the
//!   kernel, so a segment damaged on the way must not be merged (it is passed on alone,
//!   for the receiver to drop).
//! * Every segment but the last carries exactly `gso_size` octets; a shorter one or one
//!   with PSH ends the super-packet, which never exceeds 65535 octets.
//!
//! Anything else is written as it came (with an all-zero header). Order within a flow is
//! kept: a packet that cannot join its flow's open super-packet closes it first.

use crate::offload::{fix_ipv4_checksum, l4_checksum_ok, VnetHdr, F_NEEDS_CSUM, GSO_TCPV4};
use crate::offload::{GSO_NONE, VNET_HDR_LEN};
use wire::checksum;

/// Flows coalesced at the same time; the oldest is closed when another starts.
const MAX_OPEN: usize = 8;
const ACK: u8 = 0x10;
const PSH: u8 = 0x08;

#[derive(Debug, Clone, Copy, Default)]
struct Meta {
    /// src, dst, sport, dport.
    key: [u8; 12],
    segs: u32,
    gso_size: usize,
    thl: usize,
    next_seq: u32,
    /// The header of a packet that came as a super-packet ([`Coalescer::push_gso`]).
    preset: Option<VnetHdr>,
}

/// Collects the packets of one batch, merging what it can; see the module docs.
#[derive(Debug, Default)]
pub struct Coalescer {
    /// `bufs[..used]`: output packets in order, each a virtio_net_hdr and an IP packet.
    bufs: Vec<Vec<u8>>,
    metas: Vec<Meta>,
    used: usize,
    /// Indices into `bufs` still open for appending, oldest first.
    open: Vec<usize>,
    /// Segments merged into another packet since creation.
    pub merged: u64,
}

/// A TCP segment that may take part in coalescing.
struct Tcp {
    key: [u8; 12],
    thl: usize,
    seq: u32,
    flags: u8,
    payload: usize,
}

fn eligible(pkt: &[u8]) -> Option<Tcp> {
    // IPv4, IHL 5, total length = packet, not a fragment, TCP.
    if pkt.len() < 40
        || pkt[0] != 0x45
        || usize::from(u16::from_be_bytes([pkt[2], pkt[3]])) != pkt.len()
    {
        return None;
    }
    if u16::from_be_bytes([pkt[6], pkt[7]]) & 0x3fff != 0 || pkt[9] != 6 {
        return None;
    }
    let thl = usize::from(pkt[32] >> 4) * 4;
    if thl < 20 || pkt.len() < 20 + thl {
        return None;
    }
    let flags = pkt[33];
    let payload = pkt.len() - 20 - thl;
    if flags & !(ACK | PSH) != 0 || flags & ACK == 0 || payload == 0 {
        return None;
    }
    if checksum::checksum(&pkt[..20]) != 0 || !l4_checksum_ok(pkt, 20) {
        return None;
    }
    let mut key = [0u8; 12];
    key[..8].copy_from_slice(&pkt[12..20]);
    key[8..].copy_from_slice(&pkt[20..24]);
    Some(Tcp {
        key,
        thl,
        seq: u32::from_be_bytes([pkt[24], pkt[25], pkt[26], pkt[27]]),
        flags,
        payload,
    })
}

fn flow_key(pkt: &[u8]) -> Option<[u8; 12]> {
    if pkt.len() < 24 || pkt[0] != 0x45 || pkt[9] != 6 {
        return None;
    }
    let mut key = [0u8; 12];
    key[..8].copy_from_slice(&pkt[12..20]);
    key[8..].copy_from_slice(&pkt[20..24]);
    Some(key)
}

impl Coalescer {
    pub fn new() -> Coalescer {
        Coalescer::default()
    }

    /// Number of packets ready to write.
    pub fn len(&self) -> usize {
        self.used
    }

    pub fn is_empty(&self) -> bool {
        self.used == 0
    }

    /// Adds one IP packet (no virtio header) of the batch.
    pub fn push(&mut self, pkt: &[u8]) {
        let Some(t) = eligible(pkt) else {
            if let Some(key) = flow_key(pkt) {
                self.close_flow(&key);
            }
            self.start(pkt, None);
            return;
        };
        if let Some(pos) = self.open.iter().position(|&i| self.metas[i].key == t.key) {
            let i = self.open[pos];
            if self.can_append(i, pkt, &t) {
                self.append(i, pkt, &t);
                if t.flags & PSH != 0 || t.payload < self.metas[i].gso_size {
                    self.open.remove(pos);
                }
                return;
            }
            self.open.remove(pos);
        }
        self.start(pkt, Some(&t));
    }

    /// Adds a TCP super-packet that needs no merging (`hdr`: its GSO header, e.g. one
    /// the kernel's GRO merged before a raw socket): written as it is, after what its
    /// flow queued before it.
    pub fn push_gso(&mut self, pkt: &[u8], hdr: VnetHdr) {
        if let Some(key) = flow_key(pkt) {
            self.close_flow(&key);
        }
        self.start(pkt, None);
        self.metas[self.used - 1].preset = Some(hdr);
    }

    fn close_flow(&mut self, key: &[u8; 12]) {
        self.open.retain(|&i| self.metas[i].key != *key);
    }

    /// A new output packet; open for appending when `t` is given and has no PSH.
    fn start(&mut self, pkt: &[u8], t: Option<&Tcp>) {
        if self.used == self.bufs.len() {
            // Grown on demand: a batch of small packets stays small.
            self.bufs.push(Vec::with_capacity(2048));
            self.metas.push(Meta::default());
        }
        let i = self.used;
        self.used += 1;
        let b = &mut self.bufs[i];
        b.clear();
        b.extend_from_slice(&[0u8; VNET_HDR_LEN]);
        b.extend_from_slice(pkt);
        self.metas[i] = Meta::default();
        if let Some(t) = t {
            self.metas[i] = Meta {
                key: t.key,
                segs: 1,
                gso_size: t.payload,
                thl: t.thl,
                next_seq: t.seq.wrapping_add(t.payload as u32),
                preset: None,
            };
            if t.flags & PSH == 0 {
                if self.open.len() == MAX_OPEN {
                    self.open.remove(0);
                }
                self.open.push(i);
            }
        }
    }

    fn can_append(&self, i: usize, pkt: &[u8], t: &Tcp) -> bool {
        let m = &self.metas[i];
        let Some(first) = self.bufs[i].get(VNET_HDR_LEN..) else {
            return false;
        };
        let hl = 20 + m.thl;
        t.thl == m.thl
            && t.seq == m.next_seq
            && t.payload <= m.gso_size
            && first.len() + t.payload <= 65535
            // TOS, TTL, DF.
            && first[1] == pkt[1]
            && first[8] == pkt[8]
            && first[6] & 0x40 == pkt[6] & 0x40
            // Acknowledgment number, and window (offsets 28..32 and 34..36 in the packet).
            && first[28..32] == pkt[28..32]
            && first[34..36] == pkt[34..36]
            // Options.
            && first.get(40..hl) == pkt.get(40..hl)
    }

    fn append(&mut self, i: usize, pkt: &[u8], t: &Tcp) {
        let hl = 20 + t.thl;
        let b = &mut self.bufs[i];
        b.extend_from_slice(&pkt[hl..]);
        if t.flags & PSH != 0 {
            b[VNET_HDR_LEN + 33] |= PSH;
        }
        let m = &mut self.metas[i];
        m.segs += 1;
        m.next_seq = m.next_seq.wrapping_add(t.payload as u32);
        self.merged += 1;
    }

    /// Finishes the batch: fills the virtio header, lengths and checksums of every
    /// merged packet, and returns the packets to write, in order, each with its header.
    pub fn finish(&mut self) -> impl Iterator<Item = &[u8]> + '_ {
        self.open.clear();
        for i in 0..self.used {
            let m = self.metas[i];
            let b = &mut self.bufs[i];
            let hdr = if let Some(h) = m.preset {
                h
            } else if m.segs > 1 {
                let p = &mut b[VNET_HDR_LEN..];
                let total = p.len();
                p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
                fix_ipv4_checksum(p, 20);
                // CHECKSUM_PARTIAL: the field holds the pseudo-header sum.
                let src = [p[12], p[13], p[14], p[15]];
                let dst = [p[16], p[17], p[18], p[19]];
                let pseudo = checksum::pseudo_header(src, dst, 6, (total - 20) as u16);
                let partial = !checksum::finish(pseudo);
                p[36..38].copy_from_slice(&partial.to_be_bytes());
                VnetHdr {
                    flags: F_NEEDS_CSUM,
                    gso_type: GSO_TCPV4,
                    hdr_len: (20 + m.thl) as u16,
                    gso_size: m.gso_size as u16,
                    csum_start: 20,
                    csum_offset: 16,
                }
            } else {
                VnetHdr {
                    gso_type: GSO_NONE,
                    ..VnetHdr::default()
                }
            };
            b[..VNET_HDR_LEN].copy_from_slice(&hdr.to_bytes());
        }
        self.bufs[..self.used].iter().map(Vec::as_slice)
    }

    /// Empties the batch (buffers are kept for the next one).
    pub fn clear(&mut self) {
        self.used = 0;
        self.open.clear();
    }
}

#[cfg(test)]
#[path = "coalesce_tests.rs"]
mod tests;
