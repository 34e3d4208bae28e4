//! A tap on one interface for the IPv4 UDP datagrams to one destination port, with the
//! link-layer source address of the frame that carried each.
//!
//! A foreign agent learns a visitor's link-layer address from the frame that carried its
//! Registration Request (RFC 5944 section 3.7.2: the agent may not ARP for a home
//! address; it answers the node by the source address of the request's frame). A UDP
//! socket does not say who sent the frame, so the agent keeps this `AF_PACKET` tap (a
//! `SOCK_DGRAM` packet socket: the IP packet without the Ethernet header, the source in
//! `sockaddr_ll`), filtered in the kernel to unfragmented UDP to the port, next to its
//! UDP socket. The kernel hands a frame to packet taps before IP delivers it to the UDP
//! socket (the tap is bound to every protocol, and those taps are served first), so when a
//! datagram is read from the socket its frame is already queued here.

use std::mem::{size_of, zeroed};
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};

use crate::Result;

// Bound to every protocol (`ETH_P_ALL`), the tap sits on the list the kernel serves
// before the per-protocol handlers (IP among them): the frame is queued here before
// the datagram reaches the UDP socket.
use crate::sys::{ETH_P_ALL, ETH_P_IP, SKF_AD_PROTOCOL};

/// One datagram seen by the tap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tapped {
    /// The frame's link-layer source address.
    pub mac: [u8; 6],
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub src_port: u16,
    /// The UDP payload.
    pub payload: Vec<u8>,
}

/// An `AF_PACKET` tap for UDP to `port` arriving on one interface. Read with
/// [`UdpTap::drain`] when the UDP socket delivered something (it never blocks).
pub struct UdpTap {
    fd: OwnedFd,
}

/// The classic BPF program: accept unfragmented IPv4 UDP whose destination port is
/// `port` (the socket sees packets from the IP header on), drop everything else.
fn filter(port: u16) -> [libc::sock_filter; 11] {
    let s = |code: u16, jt: u8, jf: u8, k: u32| libc::sock_filter { code, jt, jf, k };
    const LD_W_ABS: u16 = 0x20;
    const LD_B_ABS: u16 = 0x30;
    const LD_H_ABS: u16 = 0x28;
    const LDX_MSH: u16 = 0xb1;
    const LD_H_IND: u16 = 0x48;
    const JEQ_K: u16 = 0x15;
    const JSET_K: u16 = 0x45;
    const RET_K: u16 = 0x06;
    [
        s(LD_W_ABS, 0, 0, SKF_AD_PROTOCOL),  // 0: ethertype
        s(JEQ_K, 0, 8, u32::from(ETH_P_IP)), // 1: IPv4, else 10
        s(LD_B_ABS, 0, 0, 9),                // 2: protocol
        s(JEQ_K, 0, 6, 17),                  // 3: UDP, else 10
        s(LD_H_ABS, 0, 0, 6),                // 4: flags + fragment offset
        s(JSET_K, 4, 0, 0x3fff),             // 5: MF or an offset: 10
        s(LDX_MSH, 0, 0, 0),                 // 6: X = header length
        s(LD_H_IND, 0, 0, 2),                // 7: destination port
        s(JEQ_K, 0, 1, u32::from(port)),     // 8: our port, else 10
        s(RET_K, 0, 0, 0xffff),              // 9: accept
        s(RET_K, 0, 0, 0),                   // 10: drop
    ]
}

impl UdpTap {
    /// Opens the tap on `ifindex` for UDP datagrams to `port`.
    pub fn open(ifindex: u32, port: u16) -> Result<UdpTap> {
        // Protocol 0 first (receives nothing), so nothing arrives before the filter is on.
        let fd = crate::sys::packet_socket(libc::SOCK_DGRAM, 0)?;
        crate::sys::attach_filter(&fd, &filter(port))?;
        crate::sys::bind_packet(&fd, ETH_P_ALL, ifindex)?;
        Ok(UdpTap { fd })
    }

    /// Reads every datagram queued now (never blocks); frames this host sent, frames
    /// to other hosts and packets that do not parse are skipped.
    pub fn drain(&self, buf: &mut [u8]) -> Vec<Tapped> {
        let mut out = Vec::new();
        // Bounded: a flood cannot keep the caller here.
        for _ in 0..256 {
            // SAFETY: all-zero is a valid sockaddr_ll.
            let mut sll: libc::sockaddr_ll = unsafe { zeroed() };
            let mut len = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            // SAFETY: `buf` is writable for its length; `sll`/`len` describe a valid buffer.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                    (&mut sll as *mut libc::sockaddr_ll).cast(),
                    &mut len,
                )
            };
            if n < 0 {
                break; // EAGAIN (or an error: nothing more to read now)
            }
            let n = usize::try_from(n).unwrap_or(0).min(buf.len());
            let incoming = matches!(
                sll.sll_pkttype,
                libc::PACKET_HOST | libc::PACKET_BROADCAST | libc::PACKET_MULTICAST
            );
            if !incoming || sll.sll_halen != 6 {
                continue;
            }
            let mut mac = [0u8; 6];
            mac.copy_from_slice(&sll.sll_addr[..6]);
            if let Some(t) = parse(&buf[..n], mac) {
                out.push(t);
            }
        }
        out
    }
}

/// Parses an IPv4 packet holding a whole UDP datagram (strictly, through `wire`'s
/// views: version, lengths bounded by the octets present, header checksum).
pub fn parse(p: &[u8], mac: [u8; 6]) -> Option<Tapped> {
    let ip = wire::ipv4::Ipv4Packet::new_checked(p).ok()?;
    if ip.protocol() != wire::ipv4::proto::UDP || ip.more_fragments() || ip.frag_offset() != 0 {
        return None;
    }
    let u = wire::udp::UdpPacket::new_checked(ip.payload()).ok()?;
    Some(Tapped {
        mac,
        src: ip.src(),
        dst: ip.dst(),
        src_port: u.src_port(),
        payload: u.payload().to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(frag: u16, ulen: u16) -> Vec<u8> {
        let mut p = vec![
            0x45, 0, 0, 0, 0, 1, 0, 0, 64, 17, 0, 0, 10, 0, 0, 7, 10, 0, 0, 1,
        ];
        p[6..8].copy_from_slice(&frag.to_be_bytes());
        p.extend_from_slice(&[0x01, 0xb2, 0x01, 0xb2]); // 434 -> 434
        p.extend_from_slice(&ulen.to_be_bytes());
        p.extend_from_slice(&[0, 0, 1, 2, 3, 4]);
        let total = p.len() as u16;
        p[2..4].copy_from_slice(&total.to_be_bytes());
        let mut ip = wire::ipv4::Ipv4Packet::new_lengths_checked(&mut p[..]).unwrap();
        ip.fill_checksum();
        p
    }

    #[test]
    fn parses_a_whole_datagram() {
        let t = parse(&packet(0, 12), [2, 0, 0, 0, 0, 9]).expect("parses");
        assert_eq!(t.src, Ipv4Addr::new(10, 0, 0, 7));
        assert_eq!(t.dst, Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(t.src_port, 434);
        assert_eq!(t.payload, vec![1, 2, 3, 4]);
        assert_eq!(t.mac, [2, 0, 0, 0, 0, 9]);
    }

    #[test]
    fn refuses_fragments_and_bad_lengths() {
        assert!(parse(&packet(0x2000, 12), [0; 6]).is_none());
        assert!(parse(&packet(0x0001, 12), [0; 6]).is_none());
        assert!(parse(&packet(0, 13), [0; 6]).is_none());
        assert!(parse(&packet(0, 7), [0; 6]).is_none());
        assert!(parse(&packet(0x4000, 12), [0; 6]).is_some(), "DF alone");
        let mut bad = packet(0, 12);
        bad[10] ^= 1;
        assert!(parse(&bad, [0; 6]).is_none(), "IPv4 header checksum");
        let p = packet(0, 12);
        for cut in 0..p.len() {
            assert!(parse(&p[..cut], [0; 6]).is_none(), "cut at {cut}");
        }
    }
}
