//! Resolving a neighbour without naming any of our addresses: an ARP probe (RFC 5227
//! 2.1.1: sender protocol address 0.0.0.0) for the target, and the sender hardware
//! address of its reply. A mobile node on a visited link resolves its foreign agent
//! this way: the kernel's own ARP request would name whichever local address the packet
//! that needed it came from, the home address included (RFC 5944 4.6 forbids a node
//! away from home to broadcast ARP for it). Linux answers a probe for one of its
//! addresses with a unicast reply to the prober.

use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use crate::Result;

const ETH_P_ARP: u16 = 0x0806;

/// The Ethernet frame of an ARP probe from `mac` for `target`.
pub fn probe_frame(mac: [u8; 6], target: Ipv4Addr) -> [u8; 42] {
    let mut f = [0u8; 42];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&ETH_P_ARP.to_be_bytes());
    f[14..22].copy_from_slice(&[0, 1, 0x08, 0, 6, 4, 0, 1]); // Ethernet/IPv4, request
    f[22..28].copy_from_slice(&mac);
    // Sender protocol address 0.0.0.0, target hardware address zero.
    f[38..42].copy_from_slice(&target.octets());
    f
}

/// The sender hardware address of an ARP reply (an ARP packet, no Ethernet header)
/// from `target`.
pub fn reply_from(p: &[u8], target: Ipv4Addr) -> Option<[u8; 6]> {
    if p.get(0..8)? != [0, 1, 0x08, 0, 6, 4, 0, 2] || p.get(14..18)? != target.octets() {
        return None;
    }
    p.get(8..14)?.try_into().ok()
}

/// Sends an ARP probe for `target` on `ifindex` from `mac` and waits up to `wait` for
/// the reply; the target's hardware address, or None.
pub async fn resolve(
    ifindex: u32,
    mac: [u8; 6],
    target: Ipv4Addr,
    wait: Duration,
) -> Result<Option<[u8; 6]>> {
    let fd = crate::sys::packet_socket(libc::SOCK_DGRAM, ETH_P_ARP)?;
    crate::sys::bind_packet(&fd, ETH_P_ARP, ifindex)?;
    super::arp::send_frame(ifindex, &probe_frame(mac, target), [0xff; 6], ETH_P_ARP)?;
    let t0 = Instant::now();
    let mut buf = [0u8; 128];
    loop {
        // SAFETY: `buf` is writable for its length.
        let n = unsafe {
            libc::recv(
                fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n > 0 {
            let n = usize::try_from(n).unwrap_or(0).min(buf.len());
            if let Some(m) = reply_from(&buf[..n], target) {
                return Ok(Some(m));
            }
            continue;
        }
        if t0.elapsed() >= wait {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_names_no_address_of_ours() {
        let f = probe_frame([2, 0, 0, 0, 0, 1], Ipv4Addr::new(203, 0, 113, 1));
        assert_eq!(&f[12..14], &[8, 6]);
        assert_eq!(&f[28..32], &[0, 0, 0, 0], "sender protocol address");
        assert_eq!(&f[32..38], &[0; 6]);
        assert_eq!(&f[38..42], &[203, 0, 113, 1]);
    }

    #[test]
    fn reply_parsing_is_strict() {
        let t = Ipv4Addr::new(203, 0, 113, 1);
        let mut r = vec![0, 1, 8, 0, 6, 4, 0, 2, 9, 9, 9, 9, 9, 9, 203, 0, 113, 1];
        r.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0, 0, 0, 0]);
        assert_eq!(reply_from(&r, t), Some([9; 6]));
        assert_eq!(reply_from(&r, Ipv4Addr::new(203, 0, 113, 2)), None);
        r[7] = 1; // a request
        assert_eq!(reply_from(&r, t), None);
        assert_eq!(reply_from(&r[..10], t), None);
    }
}
