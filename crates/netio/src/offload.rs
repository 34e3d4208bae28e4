//! TUN offloads: the `virtio_net_hdr` that prefixes every packet on a TUN opened with
//! `IFF_VNET_HDR`, and what a userspace tunnel must do with it.
//!
//! * Kernel -> user: with `TUNSETOFFLOAD(TUN_F_CSUM | TUN_F_TSO4)` the kernel hands over
//!   TCP super-packets of up to 64 KiB (`gso_type` TCPV4, `gso_size` = MSS) whose TCP
//!   checksum is only partial (`NEEDS_CSUM`). [`segment`] cuts one into MSS-sized IPv4/TCP
//!   segments, each with its own IP identification, total length and header checksum and
//!   its own TCP sequence number, flags and full checksum, exactly what the kernel's own
//!   segmentation would have put on the wire. A packet without GSO but with `NEEDS_CSUM`
//!   gets its checksum completed. UDP GSO (`UDP_L4`) is cut the same way.
//! * User -> kernel: [`crate::coalesce::Coalescer`] does the opposite.
//!
//! Everything here is plain byte work on caller-owned buffers: no syscalls, no allocation
//! per packet once the buffers have grown, and no panic on any input (every length and
//! offset read from the header or the packet is checked against the bytes present).

use wire::checksum;

/// Size of `struct virtio_net_hdr` (without `num_buffers`), the prefix configured with
/// `TUNSETVNETHDRSZ`.
pub const VNET_HDR_LEN: usize = 10;

/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the checksum at `csum_start + csum_offset` is partial.
pub const F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_F_DATA_VALID`: the checksum was already verified.
pub const F_DATA_VALID: u8 = 2;

/// `VIRTIO_NET_HDR_GSO_*`.
pub const GSO_NONE: u8 = 0;
pub const GSO_TCPV4: u8 = 1;
pub const GSO_UDP: u8 = 3;
pub const GSO_TCPV6: u8 = 4;
pub const GSO_UDP_L4: u8 = 5;
pub const GSO_ECN: u8 = 0x80;

/// Most segments [`segment`] will cut one packet into. TCP never asks for more than
/// 64 KiB / 48 octets (its smallest MSS) = 1366; anything above is refused.
pub const MAX_SEGMENTS: usize = 1400;

/// Why a packet from the TUN cannot be segmented or completed (the caller drops it and
/// counts the reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OffloadError {
    #[error("shorter than a virtio_net_hdr")]
    ShortVnetHdr,
    #[error("unsupported gso_type {0:#x}")]
    GsoType(u8),
    #[error("gso_size 0 with GSO")]
    GsoSize,
    #[error("csum_start/csum_offset outside the packet")]
    CsumRange,
    #[error("not an IPv4 packet with a complete header")]
    Ipv4,
    #[error("IPv4 total length does not match the packet")]
    Ipv4Length,
    #[error("GSO on an IPv4 fragment")]
    Fragment,
    #[error("GSO type does not match the IP protocol")]
    Protocol,
    #[error("truncated TCP or UDP header")]
    L4Header,
    #[error("more than {MAX_SEGMENTS} segments")]
    TooManySegments,
}

/// `struct virtio_net_hdr`, fields in host order (a TUN uses the native byte order
/// unless `TUNSETVNETBE`/`TUNSETVNETLE` says otherwise).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VnetHdr {
    /// Splits `buf` into its header and the packet after it.
    pub fn parse(buf: &[u8]) -> Result<(VnetHdr, &[u8]), OffloadError> {
        let (h, rest) = buf
            .split_first_chunk::<VNET_HDR_LEN>()
            .ok_or(OffloadError::ShortVnetHdr)?;
        let u = |i: usize| u16::from_ne_bytes([h[i], h[i + 1]]);
        Ok((
            VnetHdr {
                flags: h[0],
                gso_type: h[1],
                hdr_len: u(2),
                gso_size: u(4),
                csum_start: u(6),
                csum_offset: u(8),
            },
            rest,
        ))
    }

    /// The 10 octets of this header.
    pub fn to_bytes(&self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0u8; VNET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_ne_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_ne_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_ne_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_ne_bytes());
        b
    }
}

/// Many packets in one reusable buffer (no allocation per packet once it has grown).
#[derive(Debug, Default, Clone)]
pub struct PacketList {
    data: Vec<u8>,
    ends: Vec<usize>,
}

impl PacketList {
    pub fn new() -> PacketList {
        PacketList::default()
    }

    pub fn clear(&mut self) {
        self.data.clear();
        self.ends.clear();
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Appends a copy of `pkt`.
    pub fn push(&mut self, pkt: &[u8]) {
        self.data.extend_from_slice(pkt);
        self.ends.push(self.data.len());
    }

    /// Packet `i`.
    pub fn get(&self, i: usize) -> Option<&[u8]> {
        let end = *self.ends.get(i)?;
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        self.data.get(start..end)
    }

    pub fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        (0..self.ends.len()).filter_map(|i| self.get(i))
    }
}

/// [`wire::checksum::sum`], eight octets at a time: the one's-complement sum does not
/// depend on the word size or byte order it is computed in (RFC 1071 section 2), so
/// the data is summed as native 64-bit words and folded back to a big-endian 16-bit
/// value at the end. Same result as `wire::checksum::sum(data, acc)` after folding.
pub fn csum_add(data: &[u8], acc: u32) -> u32 {
    let mut s: u64 = 0;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        let (n, carry) = s.overflowing_add(u64::from_ne_bytes(w));
        s = n + u64::from(carry);
    }
    let mut rest = chunks.remainder().chunks_exact(2);
    for c in &mut rest {
        let (n, carry) = s.overflowing_add(u64::from(u16::from_ne_bytes([c[0], c[1]])));
        s = n + u64::from(carry);
    }
    if let [b] = rest.remainder() {
        let (n, carry) = s.overflowing_add(u64::from(u16::from_ne_bytes([*b, 0])));
        s = n + u64::from(carry);
    }
    // Fold 64 -> 16 bits with end-around carries.
    let mut f = (s >> 32) + (s & 0xffff_ffff);
    f = (f >> 32) + (f & 0xffff_ffff);
    f = (f >> 16) + (f & 0xffff);
    f = (f >> 16) + (f & 0xffff);
    f = (f >> 16) + (f & 0xffff);
    let native = f as u16;
    let be = u16::from_be(native);
    let mut a = u64::from(acc) + u64::from(be);
    while a >> 32 != 0 {
        a = (a & 0xffff_ffff) + (a >> 32);
    }
    a as u32
}

fn be16(b: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([b[i], b[i + 1]])
}

fn put16(b: &mut [u8], i: usize, v: u16) {
    b[i..i + 2].copy_from_slice(&v.to_be_bytes());
}

/// The IPv4 header length of `pkt` after checking version, IHL and that the header and
/// `total_len` are present; total length must equal the packet's length.
fn ipv4_header(pkt: &[u8]) -> Result<usize, OffloadError> {
    let first = *pkt.first().ok_or(OffloadError::Ipv4)?;
    let ihl = usize::from(first & 0x0f) * 4;
    if first >> 4 != 4 || ihl < 20 || pkt.len() < ihl {
        return Err(OffloadError::Ipv4);
    }
    if usize::from(be16(pkt, 2)) != pkt.len() {
        return Err(OffloadError::Ipv4Length);
    }
    Ok(ihl)
}

/// Sets the IPv4 header checksum of `ip[..ihl]`.
pub fn fix_ipv4_checksum(ip: &mut [u8], ihl: usize) {
    put16(ip, 10, 0);
    let c = checksum::checksum(&ip[..ihl]);
    put16(ip, 10, c);
}

/// Full TCP or UDP checksum of `l4` (the checksum field must be 0) under an IPv4
/// pseudo-header from `ip`.
fn l4_checksum(ip: &[u8], proto: u8, l4: &[u8]) -> u16 {
    let src = [ip[12], ip[13], ip[14], ip[15]];
    let dst = [ip[16], ip[17], ip[18], ip[19]];
    // l4.len() <= 65535 - 20: the callers only pass slices of a 16-bit-long packet.
    let len = u16::try_from(l4.len()).unwrap_or(u16::MAX);
    checksum::finish(csum_add(l4, checksum::pseudo_header(src, dst, proto, len)))
}

/// Whether the TCP or UDP checksum of IPv4 packet `pkt` (header length `ihl`) verifies.
pub fn l4_checksum_ok(pkt: &[u8], ihl: usize) -> bool {
    let (Some(proto), Some(l4)) = (pkt.get(9), pkt.get(ihl..)) else {
        return false;
    };
    if pkt.len() < 20 {
        return false;
    }
    let src = [pkt[12], pkt[13], pkt[14], pkt[15]];
    let dst = [pkt[16], pkt[17], pkt[18], pkt[19]];
    let Ok(len) = u16::try_from(l4.len()) else {
        return false;
    };
    checksum::finish(csum_add(l4, checksum::pseudo_header(src, dst, *proto, len))) == 0
}

/// Completes a `CHECKSUM_PARTIAL` packet in place: the field at `csum_start +
/// csum_offset` holds the pseudo-header sum; the checksum covers `csum_start..`.
pub fn complete_checksum(hdr: &VnetHdr, pkt: &mut [u8]) -> Result<(), OffloadError> {
    let start = usize::from(hdr.csum_start);
    let field = start + usize::from(hdr.csum_offset);
    if field + 2 > pkt.len() {
        return Err(OffloadError::CsumRange);
    }
    let c = checksum::finish(csum_add(&pkt[start..], 0));
    // A computed 0 goes out as 0xffff only for UDP, where 0 means "no checksum"
    // (RFC 768); TCP sends the 0 it computed (RFC 1624 section 3: 0xffff would be a
    // different bit pattern for the same sum, which checkers flag).
    let udp = ipv4_header(pkt).is_ok() && pkt[9] == 17;
    put16(pkt, field, if udp && c == 0 { 0xffff } else { c });
    Ok(())
}

/// Turns one packet read from an `IFF_VNET_HDR` TUN (`hdr` and the packet after it)
/// into wire-ready IPv4 packets appended to `out`: cut into segments for GSO, checksum
/// completed for `NEEDS_CSUM`, or copied unchanged. Returns how many were appended;
/// on error nothing is.
pub fn segment(hdr: &VnetHdr, pkt: &[u8], out: &mut PacketList) -> Result<usize, OffloadError> {
    match hdr.gso_type & !GSO_ECN {
        GSO_NONE => {
            let mark = out.data.len();
            out.data.extend_from_slice(pkt);
            if hdr.flags & F_NEEDS_CSUM != 0 {
                if let Err(e) = complete_checksum(hdr, &mut out.data[mark..]) {
                    out.data.truncate(mark);
                    return Err(e);
                }
            }
            out.ends.push(out.data.len());
            Ok(1)
        }
        t @ (GSO_TCPV4 | GSO_UDP_L4) => {
            let mark = (out.data.len(), out.ends.len());
            let r = segment_l4(hdr, t == GSO_TCPV4, pkt, out);
            if r.is_err() {
                out.data.truncate(mark.0);
                out.ends.truncate(mark.1);
            }
            r
        }
        t => Err(OffloadError::GsoType(t)),
    }
}

const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_CWR: u8 = 0x80;

fn segment_l4(
    hdr: &VnetHdr,
    tcp: bool,
    pkt: &[u8],
    out: &mut PacketList,
) -> Result<usize, OffloadError> {
    let ihl = ipv4_header(pkt)?;
    let frag = be16(pkt, 6);
    if frag & 0x3fff != 0 {
        return Err(OffloadError::Fragment);
    }
    let proto = pkt[9];
    if proto != if tcp { 6 } else { 17 } {
        return Err(OffloadError::Protocol);
    }
    let l4hl = if tcp {
        let off = *pkt.get(ihl + 12).ok_or(OffloadError::L4Header)?;
        usize::from(off >> 4) * 4
    } else {
        8
    };
    let hl = ihl + l4hl;
    if l4hl < 8 || pkt.len() < hl || (tcp && l4hl < 20) {
        return Err(OffloadError::L4Header);
    }
    let mss = usize::from(hdr.gso_size);
    if mss == 0 {
        return Err(OffloadError::GsoSize);
    }
    let payload = &pkt[hl..];
    let nseg = payload.len().div_ceil(mss).max(1);
    if nseg > MAX_SEGMENTS {
        return Err(OffloadError::TooManySegments);
    }
    let id0 = be16(pkt, 4);
    let seq0 = if tcp {
        u32::from_be_bytes([pkt[ihl + 4], pkt[ihl + 5], pkt[ihl + 6], pkt[ihl + 7]])
    } else {
        0
    };
    let flags0 = if tcp { pkt[ihl + 13] } else { 0 };
    let csum_at = ihl + if tcp { 16 } else { 6 };
    out.data.reserve(pkt.len() + nseg * hl);
    for i in 0..nseg {
        let chunk = payload
            .get(i * mss..((i + 1) * mss).min(payload.len()))
            .unwrap_or(&[]);
        let s = out.data.len();
        out.data.extend_from_slice(&pkt[..hl]);
        out.data.extend_from_slice(chunk);
        let seg = &mut out.data[s..];
        let total = seg.len();
        // total <= pkt.len() <= 65535, checked by ipv4_header.
        put16(seg, 2, total as u16);
        put16(seg, 4, id0.wrapping_add(i as u16));
        fix_ipv4_checksum(seg, ihl);
        if tcp {
            let seq = seq0.wrapping_add((i * mss) as u32);
            seg[ihl + 4..ihl + 8].copy_from_slice(&seq.to_be_bytes());
            let mut f = flags0;
            if i > 0 {
                f &= !TCP_CWR;
            }
            if i + 1 < nseg {
                f &= !(TCP_FIN | TCP_PSH);
            }
            seg[ihl + 13] = f;
        } else {
            put16(seg, ihl + 4, (total - ihl) as u16);
        }
        put16(seg, csum_at, 0);
        let c = l4_checksum(seg, proto, &seg[ihl..]);
        put16(seg, csum_at, if !tcp && c == 0 { 0xffff } else { c });
        out.ends.push(out.data.len());
    }
    Ok(nseg)
}

#[cfg(test)]
#[path = "offload_tests.rs"]
pub(crate) mod tests;
