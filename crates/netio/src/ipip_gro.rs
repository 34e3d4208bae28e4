//! IP-in-IP that the kernel's GRO merged before the raw socket saw it.
//!
//! A NIC's receive path (and a veth's, with GRO on) runs the kernel's generic receive
//! offload, which knows IP-in-IP (`ipip_gro_receive` is built into every IPv4 kernel,
//! with or without the `ipip` module): consecutive TCP segments of one inner flow in
//! consecutive IP-in-IP packets become one skb of up to 64 KiB, and a raw
//! `IPPROTO_IPIP` socket receives it whole. Its outer and inner total lengths cover the
//! whole, its inner TCP checksum field holds only the pseudo-header sum
//! (`CHECKSUM_PARTIAL`, as on a TUN's super-packets), and the segment size the sender
//! used (`gso_size`) is not in the packet.
//!
//! Forwarding such a packet as it came loses it (it is larger than every link: the
//! kernel drops it and answers "fragmentation needed"), and cutting it at a guessed size
//! can exceed what the sender chose for the path. So:
//!
//! * [`merged_tcp`] recognises one: IPv4, not a fragment, TCP, a checksum field equal to
//!   the pseudo-header sum and a full checksum that does not verify (GRO merges only
//!   segments whose checksums verified, and a lone segment keeps its full checksum).
//! * [`GsoTap`] learns its `gso_size` from the kernel: an `AF_PACKET` socket with
//!   `PACKET_VNET_HDR` sees the same skb before IP delivers it (packet taps are served
//!   first: it is bound to every protocol), and its virtio header carries `gso_size`. A classic BPF filter in the
//!   kernel passes only merged IP-in-IP TCP (the same checksum test, done in the
//!   filter), and only its first 100 octets: a lone packet costs the filter and nothing
//!   else. The raw socket stays the only source of data and of admission (the host
//!   firewall's verdict); the tap only answers "what size were its segments".
//! * Where the tap is missing or missed one, [`FALLBACK_GSO_SIZE`] (536 octets, the
//!   IPv4 default MSS, which every path carries) cuts it safely, if finely.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use crate::offload::{VnetHdr, F_NEEDS_CSUM, GSO_NONE, GSO_TCPV4, VNET_HDR_LEN};
use crate::Result;
use wire::checksum;

use crate::sys::{ETH_P_ALL, ETH_P_IP, SKF_AD_PROTOCOL};
/// Classic BPF's ancillary load of `skb->pkt_type`.
const SKF_AD_PKTTYPE: u32 = 0xffff_f004;
/// Classic BPF's base for loads relative to the network header (`SKF_NET_OFF`).
const SKF_NET_OFF: u32 = 0xfff0_0000;
/// `PACKET_VNET_HDR` and `PACKET_IGNORE_OUTGOING` (`linux/if_packet.h`).
const PACKET_VNET_HDR: libc::c_int = 15;
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
/// Octets of each merged packet the filter passes, from the link-layer header on: an
/// Ethernet header (with room for VLAN tags), outer and inner IPv4 headers and the
/// TCP header's first octets (the key needs 8).
const SNAP: u32 = 128;
/// Octets of a merged packet's inner part that identify it: the inner IPv4 header
/// (its identification, the merged length and header checksum included), the ports and
/// the sequence number.
const KEY_LEN: usize = 28;
/// The tap's receive buffer: room for a few hundred merged packets.
const TAP_BUFFER: libc::c_int = 16 << 20;
/// Sizes remembered between lookups (the tap is read ahead of the raw socket).
const REMEMBERED: usize = 256;

/// Longest inner packet one IP-in-IP packet of a 1500-octet link can carry: a packet
/// above it whose merging is uncertain and unknown to the tap is taken as merged.
pub const ONE_FRAME: usize = 1480;

/// The segment size used when the sender's is unknown: the IPv4 default MSS (RFC 1122
/// 4.2.2.6), no larger than what any sender's segments can have been.
pub const FALLBACK_GSO_SIZE: u16 = 536;

/// The header to write `inner` (an IPv4 packet, as decapsulated) into an offloading
/// TUN when it may be GRO-merged TCP (its checksum field holds the pseudo-header sum),
/// `gso_size` left 0 for the caller to fill in, and whether that is certain (the full
/// checksum fails). Not certain: about one merged packet in 65,536 has a full checksum
/// that happens to verify, and about one ordinary segment in 65,536 a checksum that
/// happens to equal the pseudo-header sum; [`GsoTap::gso_size`] tells them apart.
/// `None` for every other packet.
pub fn merged_tcp(inner: &[u8]) -> Option<(VnetHdr, bool)> {
    if inner.len() < 40 || inner[0] >> 4 != 4 || inner[9] != 6 {
        return None;
    }
    let ihl = usize::from(inner[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([inner[2], inner[3]]));
    if ihl < 20 || total != inner.len() || u16::from_be_bytes([inner[6], inner[7]]) & 0x3fff != 0 {
        return None;
    }
    let thl = usize::from(*inner.get(ihl + 12)? >> 4) * 4;
    if thl < 20 || inner.len() <= ihl + thl {
        return None;
    }
    let field = u16::from_be_bytes([inner[ihl + 16], inner[ihl + 17]]);
    let src = [inner[12], inner[13], inner[14], inner[15]];
    let dst = [inner[16], inner[17], inner[18], inner[19]];
    let len = u16::try_from(inner.len() - ihl).ok()?;
    let pseudo = !checksum::finish(checksum::pseudo_header(src, dst, 6, len));
    // One's complement: 0x0000 and 0xffff are the same sum.
    let same = field == pseudo || (field | pseudo == 0xffff && field & pseudo == 0);
    if !same {
        return None;
    }
    let hdr = VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: GSO_TCPV4,
        hdr_len: (ihl + thl) as u16,
        gso_size: 0,
        csum_start: ihl as u16,
        csum_offset: 16,
    };
    Some((hdr, !crate::offload::l4_checksum_ok(inner, ihl)))
}

/// A lone packet whose checksum the sender's kernel left to the device: a TCP
/// segment without payload (one with payload is [`merged_tcp`]'s) or a UDP datagram
/// (checksum field not 0), IPv4, not a fragment, whose checksum field equals the
/// pseudo-header sum and whose full checksum fails. A virtual link (veth) hands
/// such a `CHECKSUM_PARTIAL` packet to the next namespace as it is, and so does a raw
/// socket: written into a TUN as an ordinary packet, the receiver's stack would drop
/// it for its checksum. The header asks for the checksum to be completed, no GSO.
pub fn partial_single(inner: &[u8]) -> Option<VnetHdr> {
    if inner.len() < 28 || inner[0] >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(inner[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([inner[2], inner[3]]));
    if ihl < 20 || total != inner.len() || u16::from_be_bytes([inner[6], inner[7]]) & 0x3fff != 0 {
        return None;
    }
    let proto = inner[9];
    let offset = match proto {
        6 => {
            let thl = usize::from(*inner.get(ihl + 12)? >> 4) * 4;
            if thl < 20 || inner.len() != ihl + thl {
                return None;
            }
            16
        }
        17 if inner.len() >= ihl + 8 => 6,
        _ => return None,
    };
    let field = u16::from_be_bytes([inner[ihl + offset], inner[ihl + offset + 1]]);
    if proto == 17 && field == 0 {
        return None; // no checksum (RFC 768)
    }
    let src = [inner[12], inner[13], inner[14], inner[15]];
    let dst = [inner[16], inner[17], inner[18], inner[19]];
    let len = u16::try_from(inner.len() - ihl).ok()?;
    let pseudo = !checksum::finish(checksum::pseudo_header(src, dst, proto, len));
    let same = field == pseudo || (field | pseudo == 0xffff && field & pseudo == 0);
    if !same || crate::offload::l4_checksum_ok(inner, ihl) {
        return None;
    }
    Some(VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: GSO_NONE,
        hdr_len: 0,
        gso_size: 0,
        csum_start: ihl as u16,
        csum_offset: offset as u16,
    })
}

/// The classic BPF program of [`GsoTap`] (the socket sees packets from the outer IP
/// header on): accept, truncated to [`SNAP`] octets, an incoming IPv4 packet without
/// options carrying IP-in-IP, whose inner IPv4 header (without options) carries an
/// unfragmented TCP segment whose checksum field equals the pseudo-header sum; drop
/// everything else.
pub fn filter() -> Vec<libc::sock_filter> {
    let s = |code: u16, jt: u8, jf: u8, k: u32| libc::sock_filter { code, jt, jf, k };
    // Loads relative to the network header, whatever the link layer's is.
    const NET: u32 = SKF_NET_OFF;
    const LD_W_ABS: u16 = 0x20;
    const LD_H_ABS: u16 = 0x28;
    const LD_B_ABS: u16 = 0x30;
    const LD_MEM: u16 = 0x60;
    const ST: u16 = 0x02;
    const SUB_K: u16 = 0x14;
    const ADD_X: u16 = 0x0c;
    const AND_K: u16 = 0x54;
    const RSH_K: u16 = 0x74;
    const TAX: u16 = 0x07;
    const JEQ_K: u16 = 0x15;
    const JEQ_X: u16 = 0x1d;
    const JSET_K: u16 = 0x45;
    const RET_K: u16 = 0x06;
    vec![
        s(LD_W_ABS, 0, 0, SKF_AD_PROTOCOL),   // 0: ethertype
        s(JEQ_K, 0, 42, u32::from(ETH_P_IP)), // 1: IPv4, else drop (44)
        s(LD_W_ABS, 0, 0, SKF_AD_PKTTYPE),    // 2: PACKET_HOST is 0
        s(JEQ_K, 0, 40, 0),                   // 3: else drop (44)
        s(LD_B_ABS, 0, 0, NET),               // 4: outer version + IHL
        s(JEQ_K, 0, 38, 0x45),                // 5
        s(LD_B_ABS, 0, 0, NET + 9),           // 6: outer protocol
        s(JEQ_K, 0, 36, 4),                   // 7: IP-in-IP
        s(LD_B_ABS, 0, 0, NET + 20),          // 8: inner version + IHL
        s(JEQ_K, 0, 34, 0x45),                // 9
        s(LD_B_ABS, 0, 0, NET + 29),          // 10: inner protocol
        s(JEQ_K, 0, 32, 6),                   // 11: TCP
        s(LD_H_ABS, 0, 0, NET + 26),          // 12: inner flags + fragment offset
        s(JSET_K, 30, 0, 0x3fff),             // 13: a fragment: drop
        // Pseudo-header sum: addresses, protocol, TCP length (inner total - 20).
        s(LD_H_ABS, 0, 0, NET + 22), // 14: inner total length
        s(SUB_K, 0, 0, 20 - 6),      // 15: TCP length + protocol 6
        s(TAX, 0, 0, 0),             // 16
        s(LD_H_ABS, 0, 0, NET + 32), // 17: source address
        s(ADD_X, 0, 0, 0),           // 18
        s(TAX, 0, 0, 0),             // 19
        s(LD_H_ABS, 0, 0, NET + 34), // 20
        s(ADD_X, 0, 0, 0),           // 21
        s(TAX, 0, 0, 0),             // 22
        s(LD_H_ABS, 0, 0, NET + 36), // 23: destination address
        s(ADD_X, 0, 0, 0),           // 24
        s(TAX, 0, 0, 0),             // 25
        s(LD_H_ABS, 0, 0, NET + 38), // 26
        s(ADD_X, 0, 0, 0),           // 27: A = the sum, below 2^19
        // Fold twice: A = (A & 0xffff) + (A >> 16).
        s(ST, 0, 0, 0),              // 28: M[0] = A
        s(RSH_K, 0, 0, 16),          // 29
        s(TAX, 0, 0, 0),             // 30: X = high half
        s(LD_MEM, 0, 0, 0),          // 31
        s(AND_K, 0, 0, 0xffff),      // 32
        s(ADD_X, 0, 0, 0),           // 33: below 2^17
        s(ST, 0, 0, 0),              // 34
        s(RSH_K, 0, 0, 16),          // 35: the carry, 0 or 1
        s(TAX, 0, 0, 0),             // 36
        s(LD_MEM, 0, 0, 0),          // 37
        s(AND_K, 0, 0, 0xffff),      // 38
        s(ADD_X, 0, 0, 0),           // 39: folded, at most 0xffff
        s(TAX, 0, 0, 0),             // 40
        s(LD_H_ABS, 0, 0, NET + 56), // 41: the inner TCP checksum field
        s(JEQ_X, 0, 1, 0),           // 42: equals the pseudo-header sum
        s(RET_K, 0, 0, SNAP),        // 43: accept the first SNAP octets
        s(RET_K, 0, 0, 0),           // 44: drop
    ]
}

/// Learns the segment size of GRO-merged IP-in-IP from the kernel; see the module
/// docs. Read only through [`GsoTap::gso_size`] (it never blocks).
pub struct GsoTap {
    fd: OwnedFd,
    /// (key, gso_size) of merged packets read ahead, oldest first.
    seen: VecDeque<([u8; KEY_LEN], u16)>,
    /// Lookups answered from the tap, and lookups it could not answer.
    pub found: u64,
    pub missed: u64,
}

impl GsoTap {
    /// Opens the tap on every interface of this network namespace (needs
    /// `CAP_NET_RAW`, as the raw socket does).
    pub fn open() -> Result<GsoTap> {
        // PACKET_VNET_HDR wants SOCK_RAW: reads start at the link-layer header.
        // Protocol 0 first (receives nothing), so nothing arrives before the filter is on.
        let fd = crate::sys::packet_socket(libc::SOCK_RAW, 0)?;
        let int = |name, v: libc::c_int, op| {
            crate::sys::setsockopt(fd.as_raw_fd(), libc::SOL_PACKET, name, &v, op)
        };
        int(PACKET_VNET_HDR, 1, "PACKET_VNET_HDR")?;
        // What this host sends is no business of the tap (Linux 4.20; older kernels
        // only pass it to the filter, which drops it on `pkt_type`).
        let _ = int(PACKET_IGNORE_OUTGOING, 1, "PACKET_IGNORE_OUTGOING");
        // Each entry is charged the whole merged skb's truesize (about 64 KiB) however
        // little is copied: the default buffer (208 KiB) would hold three, and a
        // batch of merged packets read from the raw socket needs its entries all here.
        let buf = |name, op| {
            crate::sys::setsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, name, &TAP_BUFFER, op)
        };
        if buf(libc::SO_RCVBUFFORCE, "SO_RCVBUFFORCE").is_err() {
            let _ = buf(libc::SO_RCVBUF, "SO_RCVBUF");
        }
        crate::sys::attach_filter(&fd, &filter())?;
        // Bound to every protocol: such taps are served before the per-protocol
        // handlers (IP among them), so the kernel queues a packet here before IP
        // delivers it to the raw socket. (A tap bound to IPv4 alone is served after
        // IP since Linux 6.15 moved it to a per-namespace list: its entry could come
        // after the raw socket's copy was read.)
        crate::sys::bind_packet(&fd, ETH_P_ALL, 0)?;
        Ok(GsoTap {
            fd,
            seen: VecDeque::with_capacity(REMEMBERED),
            found: 0,
            missed: 0,
        })
    }

    /// The segment size of the merged packet `inner` (the inner packet as the raw
    /// socket delivered it), if the tap saw it: 0 for a lone segment whose checksum
    /// the sender left to the device.
    pub fn gso_size(&mut self, inner: &[u8]) -> Option<u16> {
        let key = key_of(inner)?;
        let hit = self.take(&key).or_else(|| {
            self.drain();
            self.take(&key)
        });
        match hit {
            Some(_) => self.found += 1,
            None => self.missed += 1,
        }
        hit
    }

    fn take(&mut self, key: &[u8; KEY_LEN]) -> Option<u16> {
        let i = self.seen.iter().position(|(k, _)| k == key)?;
        self.seen.remove(i).map(|(_, size)| size)
    }

    /// Reads what the tap holds now (bounded, never blocks).
    fn drain(&mut self) {
        let mut buf = [0u8; VNET_HDR_LEN + SNAP as usize];
        for _ in 0..REMEMBERED {
            // SAFETY: `buf` is writable for its length.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            let Ok(n) = usize::try_from(n) else {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::WouldBlock {
                    break;
                }
                continue; // e.g. a frame the kernel could not describe: it is gone
            };
            if let Some(entry) = parse_tapped(&buf[..n.min(buf.len())]) {
                if self.seen.len() == REMEMBERED {
                    self.seen.pop_front();
                }
                self.seen.push_back(entry);
            }
        }
    }
}

/// The identifying octets of a merged packet's inner part.
fn key_of(inner: &[u8]) -> Option<[u8; KEY_LEN]> {
    inner.get(..KEY_LEN)?.try_into().ok()
}

/// (key, gso_size) of one tap read: the virtio header, then the frame from its
/// link-layer header on, cut at [`SNAP`]. TCPv4 GSO with a size, or no GSO (size 0),
/// and a partial checksum counts; `csum_start` points at the inner TCP header, which
/// the filter passed only behind an inner IPv4 header of 20 octets.
pub fn parse_tapped(buf: &[u8]) -> Option<([u8; KEY_LEN], u16)> {
    let (hdr, frame) = VnetHdr::parse(buf).ok()?;
    // A GSO packet gives its segment size; a lone one with its checksum left to
    // the device, 0.
    let size = match hdr.gso_type & 0x7f {
        GSO_TCPV4 if hdr.gso_size > 0 => hdr.gso_size,
        GSO_NONE => 0,
        _ => return None,
    };
    if hdr.flags & F_NEEDS_CSUM == 0 {
        return None;
    }
    let inner = usize::from(hdr.csum_start).checked_sub(20)?;
    Some((key_of(frame.get(inner..)?)?, size))
}

#[cfg(test)]
#[path = "ipip_gro_tests.rs"]
mod tests;
