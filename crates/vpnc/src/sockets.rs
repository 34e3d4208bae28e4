//! The sockets of a VPN session: UDP 500, the NAT-T port (both wildcard-bound with the
//! destination of each datagram, `IP_PKTINFO`, so a move is only a new source address)
//! and a raw IP-protocol-50 socket for ESP without UDP encapsulation. Shared by the
//! standalone client and the mobile node's in-process session.

use std::net::{Ipv4Addr, SocketAddrV4};

use netio::{RawIp, RawIpOptions, UdpOptions};
use tokio::net::UdpSocket;

/// Socket buffers: a burst from the TUN must not be dropped by our own socket.
const SOCK_BUF: usize = 4 << 20;

pub struct VpnSockets {
    pub s500: UdpSocket,
    pub s4500: UdpSocket,
    /// `None` when the kernel refused a raw socket: only UDP-encapsulated ESP works.
    pub raw: Option<RawIp>,
}

impl VpnSockets {
    /// Opens the three; `device`: bound to that interface from the start.
    pub fn open(natt_port: u16, device: Option<&str>) -> Result<VpnSockets, String> {
        let udp = |port: u16| {
            let mut o = UdpOptions::new(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port));
            o.pktinfo = true;
            o.reuse_addr = true;
            o.device = device.map(str::to_string);
            let s = o.bind().map_err(|e| format!("UDP port {port}: {e}"))?;
            let r = socket2::SockRef::from(&s);
            let _ = r.set_recv_buffer_size(SOCK_BUF);
            let _ = r.set_send_buffer_size(SOCK_BUF);
            Ok::<_, String>(s)
        };
        let raw = match RawIp::open_with(
            netio::raw::IPPROTO_ESP,
            &RawIpOptions {
                device: device.map(str::to_string),
                ..RawIpOptions::default()
            },
        ) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!("no raw ESP socket ({e}): only UDP-encapsulated ESP will work");
                None
            }
        };
        Ok(VpnSockets {
            s500: udp(500)?,
            s4500: udp(natt_port)?,
            raw,
        })
    }

    /// IKE and ESP leave and arrive through `name` only (`SO_BINDTODEVICE`). Applied
    /// again even when the name is unchanged: the kernel binds to the interface index,
    /// and an interface of that name may have been deleted and created again. False
    /// (logged) when the kernel refused: the sockets stay bound where they were, better
    /// silent than out through another interface.
    pub fn bind_to(&self, name: &str) -> bool {
        let all = [
            Some(socket2::SockRef::from(&self.s500)),
            Some(socket2::SockRef::from(&self.s4500)),
            self.raw.as_ref().map(socket2::SockRef::from),
        ];
        for s in all.iter().flatten() {
            if let Err(e) = s.bind_device(Some(name.as_bytes())) {
                tracing::warn!("SO_BINDTODEVICE {name}: {e}");
                return false;
            }
        }
        true
    }
}
