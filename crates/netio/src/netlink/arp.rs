//! Gratuitous ARP over an `AF_PACKET` socket.
//!
//! When a home agent starts intercepting for a mobile node that left home (RFC 5944
//! section 4.6), or stops when it returns, it broadcasts an ARP packet whose sender and
//! target protocol addresses are both the mobile node's home address, so every host on
//! the link updates its ARP cache. The kernel has no call for that, so the Ethernet frame
//! is built here and sent raw.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::{Error, Result};

/// Length of an Ethernet II frame carrying an IPv4-over-Ethernet ARP packet.
pub const ARP_FRAME_LEN: usize = 14 + 28;
const ETH_P_ARP: u16 = 0x0806;
const ETH_P_IP: u16 = 0x0800;
const BROADCAST: [u8; 6] = [0xff; 6];

/// ARP opcode of the announcement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArpOp {
    /// ARP Request (1), target hardware address zero. Updates caches on every host.
    Request,
    /// ARP Reply (2), target hardware address = sender hardware address (RFC 5944 4.6).
    Reply,
}

/// Build the Ethernet frame announcing "`addr` is at `mac`", broadcast from `mac`.
pub fn gratuitous_frame(op: ArpOp, mac: [u8; 6], addr: Ipv4Addr) -> [u8; ARP_FRAME_LEN] {
    let (code, tha): (u16, [u8; 6]) = match op {
        ArpOp::Request => (1, [0; 6]),
        ArpOp::Reply => (2, mac),
    };
    let mut f = [0u8; ARP_FRAME_LEN];
    f[0..6].copy_from_slice(&BROADCAST);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&ETH_P_ARP.to_be_bytes());
    f[14..16].copy_from_slice(&1u16.to_be_bytes()); // hardware type: Ethernet
    f[16..18].copy_from_slice(&ETH_P_IP.to_be_bytes()); // protocol type: IPv4
    f[18] = 6; // hardware address length
    f[19] = 4; // protocol address length
    f[20..22].copy_from_slice(&code.to_be_bytes());
    f[22..28].copy_from_slice(&mac); // sender hardware address
    f[28..32].copy_from_slice(&addr.octets()); // sender protocol address
    f[32..38].copy_from_slice(&tha); // target hardware address
    f[38..42].copy_from_slice(&addr.octets()); // target protocol address
    f
}

/// Broadcast a gratuitous ARP for `addr` at `mac` on interface `ifindex`.
/// Needs `CAP_NET_RAW`.
pub fn send_gratuitous(ifindex: u32, mac: [u8; 6], addr: Ipv4Addr, op: ArpOp) -> Result<()> {
    let frame = gratuitous_frame(op, mac, addr);
    send_frame(ifindex, &frame, BROADCAST, ETH_P_ARP)
}

/// A long-lived `AF_PACKET` socket announcing addresses on one interface.
///
/// Opening and closing a packet socket per announcement costs a `close()` that
/// waits for an RCU grace period (about 10 ms): a home agent taking thousands of
/// new bindings would spend its time there. This keeps one socket for the life
/// of the daemon. It is non-blocking: a full transmit queue is an error (the
/// announcement is lost and the caller logs it), never a stall.
#[derive(Debug)]
pub struct ArpAnnouncer {
    fd: OwnedFd,
    ifindex: u32,
    mac: [u8; 6],
}

impl ArpAnnouncer {
    /// Opens the socket for interface `ifindex`, whose Ethernet address is `mac`.
    /// Needs `CAP_NET_RAW`.
    pub fn open(ifindex: u32, mac: [u8; 6]) -> Result<ArpAnnouncer> {
        Ok(ArpAnnouncer {
            fd: packet_socket(libc::SOCK_NONBLOCK)?,
            ifindex,
            mac,
        })
    }

    /// Broadcasts a gratuitous ARP for `addr` at this interface's address.
    pub fn announce(&self, addr: Ipv4Addr, op: ArpOp) -> Result<()> {
        let frame = gratuitous_frame(op, self.mac, addr);
        send_on(&self.fd, self.ifindex, &frame, BROADCAST, ETH_P_ARP)
    }
}

fn packet_socket(extra_flags: libc::c_int) -> Result<OwnedFd> {
    // Protocol 0: this socket only sends, it never receives a copy of the traffic.
    // SAFETY: plain syscall; the descriptor is checked, then owned.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC | extra_flags,
            0,
        )
    };
    if fd < 0 {
        return Err(Error::io("socket(AF_PACKET)")(io::Error::last_os_error()));
    }
    // SAFETY: `fd` is fresh and owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Send one raw Ethernet frame (header included) on `ifindex` through an `AF_PACKET`
/// socket. `dst` and `ethertype` fill the link-layer address the kernel wants.
pub fn send_frame(ifindex: u32, frame: &[u8], dst: [u8; 6], ethertype: u16) -> Result<()> {
    send_on(&packet_socket(0)?, ifindex, frame, dst, ethertype)
}

fn send_on(fd: &OwnedFd, ifindex: u32, frame: &[u8], dst: [u8; 6], ethertype: u16) -> Result<()> {
    let ifindex =
        libc::c_int::try_from(ifindex).map_err(|_| Error::InvalidArgument("ifindex too large"))?;
    // SAFETY: all-zero is a valid sockaddr_ll.
    let mut sll: libc::sockaddr_ll = unsafe { zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = ethertype.to_be();
    sll.sll_ifindex = ifindex;
    sll.sll_halen = 6;
    sll.sll_addr[..6].copy_from_slice(&dst);
    // SAFETY: `frame` is readable for its length and `sll` is a valid sockaddr_ll.
    let n = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&sll as *const libc::sockaddr_ll).cast(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if n < 0 {
        return Err(Error::io("send AF_PACKET frame")(io::Error::last_os_error()));
    }
    if usize::try_from(n).ok() != Some(frame.len()) {
        return Err(Error::io("send AF_PACKET frame")(io::Error::other(
            "short write",
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x10, 0x00, 0x01];

    #[test]
    fn request_layout() {
        let f = gratuitous_frame(ArpOp::Request, MAC, Ipv4Addr::new(10, 10, 0, 100));
        let expect: [u8; 42] = [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x00, 0x5e, 0x10, 0x00, 0x01, 0x08, 0x06,
            0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x02, 0x00, 0x5e, 0x10, 0x00, 0x01, 10,
            10, 0, 100, 0, 0, 0, 0, 0, 0, 10, 10, 0, 100,
        ];
        assert_eq!(f, expect);
    }

    /// Cross-check both opcodes against scapy, an independent ARP implementation.
    #[test]
    fn matches_scapy() {
        for (op, code) in [(ArpOp::Request, 1), (ArpOp::Reply, 2)] {
            let tha = if op == ArpOp::Reply {
                "02:00:5e:10:00:01"
            } else {
                "00:00:00:00:00:00"
            };
            let script = format!(
                "from scapy.all import Ether, ARP, raw\n\
                 p = Ether(dst='ff:ff:ff:ff:ff:ff', src='02:00:5e:10:00:01') / \
                 ARP(op={code}, hwsrc='02:00:5e:10:00:01', psrc='10.10.0.100', \
                 hwdst='{tha}', pdst='10.10.0.100')\n\
                 print(raw(p).hex())\n"
            );
            let out = std::process::Command::new("python3")
                .args(["-c", &script])
                .output()
                .expect("python3 with scapy is a test prerequisite (scripts/install-deps.sh)");
            assert!(
                out.status.success(),
                "scapy failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let theirs = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            let ours: String = gratuitous_frame(op, MAC, Ipv4Addr::new(10, 10, 0, 100))
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(ours, theirs, "{op:?}");
        }
    }
}
