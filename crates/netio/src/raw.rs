//! Raw IPv4 sockets for one IP protocol number.
//!
//! This kernel has no `ipip` module and no kernel ESP, so IP-in-IP (protocol 4) and ESP
//! (protocol 50) are sent and received here, in userspace.
//!
//! * Receiving: Linux hands a raw IPv4 socket the **whole packet, outer IPv4 header
//!   included**, for every packet of its protocol addressed to this host (a copy: other
//!   raw sockets of the same protocol see it too). [`RawIp::recv_from`] returns those bytes
//!   and the outer source address unchanged; parsing is the sans-IO cores' job.
//! * Sending, kernel header: [`RawIp::send_to`] takes the payload (for IP-in-IP, the inner
//!   packet) and the kernel prepends an outer header with the routed source address.
//! * Sending, caller header: with [`RawIpOptions::header_included`] (`IP_HDRINCL`),
//!   [`RawIp::send_packet`] sends a complete packet whose header the caller built, which is
//!   how a specific source address (a care-of address, say) is forced. The kernel still
//!   fills in the total length and header checksum, and the ID and source when they are 0.
//! * The outer TOS of IP-in-IP with a kernel header: the inner packet's DSCP (RFC 2003
//!   section 3.1 copies the TOS), with the ECN field Not-ECT ([`outer_tos`]), passed as
//!   an `IP_TOS` control message when it is not 0.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use crate::sys;
use crate::{Error, Result};

/// IP protocol number of IP-in-IP encapsulation (RFC 2003).
pub const IPPROTO_IPIP: u8 = 4;

/// The ECN field of the TOS octet (RFC 3168).
const ECN_MASK: u8 = 0b11;

/// The outer header's TOS octet for a tunnel packet around `inner`: the inner IPv4
/// header's DSCP, as RFC 2003 section 3.1 copies the TOS (so a network that schedules
/// by DSCP treats the tunnel as what it carries), with the ECN field Not-ECT. That is
/// RFC 6040's compatibility mode, the one an encapsulator must use when the tunnel's
/// exit may not propagate a congestion mark from the outer header to the inner one
/// (ours do not): with the inner ECT copied outside, a router would mark instead of
/// dropping and the mark would be lost at the exit. 0 for anything but IPv4.
pub fn outer_tos(inner: &[u8]) -> u8 {
    match inner {
        [v, tos, ..] if v >> 4 == 4 => tos & !ECN_MASK,
        _ => 0,
    }
}

/// One `IP_TOS` control message, ready to be a `msg_control` of `sendmsg`.
#[repr(C, align(8))]
pub(crate) struct TosCmsg([u8; 32]);

impl TosCmsg {
    pub(crate) fn new(tos: u8) -> TosCmsg {
        let mut b = TosCmsg([0; 32]);
        // SAFETY: the buffer is 8-aligned and 32 octets, more than CMSG_SPACE(c_int)
        // (24 on 64-bit Linux).
        unsafe { write_tos(b.0.as_mut_ptr().cast(), tos) };
        b
    }

    /// Its length for `msg_controllen`.
    pub(crate) fn space() -> usize {
        // SAFETY: CMSG_SPACE is a pure size computation.
        unsafe { libc::CMSG_SPACE(size_of::<libc::c_int>() as u32) as usize }
    }

    pub(crate) fn as_mut_ptr(&mut self) -> *mut libc::c_void {
        self.0.as_mut_ptr().cast()
    }
}

/// Writes an `IP_TOS` control message carrying `tos` into the header at `c`.
///
/// # Safety
/// `c` points at an 8-aligned control message header with room for
/// `CMSG_SPACE(c_int)` octets from it.
pub(crate) unsafe fn write_tos(c: *mut libc::cmsghdr, tos: u8) {
    // SAFETY: the caller promises room for the header and its c_int.
    unsafe {
        (*c).cmsg_level = libc::IPPROTO_IP;
        (*c).cmsg_type = libc::IP_TOS;
        (*c).cmsg_len = libc::CMSG_LEN(size_of::<libc::c_int>() as u32) as usize;
        std::ptr::write_unaligned(
            libc::CMSG_DATA(c).cast::<libc::c_int>(),
            libc::c_int::from(tos),
        );
    }
}
/// IP protocol number of ESP (RFC 4303).
pub const IPPROTO_ESP: u8 = 50;

/// How to open a [`RawIp`] socket.
#[derive(Debug, Clone, Default)]
pub struct RawIpOptions {
    /// Bind to this local address: only packets sent to it are received, and it becomes the
    /// source of packets sent with a kernel-built header.
    pub bind_addr: Option<Ipv4Addr>,
    /// `SO_BINDTODEVICE`: receive only from, and send only through, this interface.
    pub device: Option<String>,
    /// `IP_HDRINCL`: [`RawIp::send_packet`] sends caller-built headers, and
    /// [`RawIp::send_to`] is refused.
    pub header_included: bool,
}

/// A raw IPv4 socket for one protocol, registered with tokio.
#[derive(Debug)]
pub struct RawIp {
    sock: AsyncFd<Socket>,
    protocol: u8,
    header_included: bool,
}

impl RawIp {
    /// Open a raw socket for `protocol` with default options. Needs `CAP_NET_RAW` and a
    /// tokio runtime.
    pub fn open(protocol: u8) -> Result<RawIp> {
        RawIp::open_with(protocol, &RawIpOptions::default())
    }

    /// Open a raw socket for `protocol` with `opts`.
    pub fn open_with(protocol: u8, opts: &RawIpOptions) -> Result<RawIp> {
        let sock = Socket::new(
            Domain::IPV4,
            Type::RAW,
            Some(Protocol::from(i32::from(protocol))),
        )
        .map_err(Error::io("socket(AF_INET, SOCK_RAW)"))?;
        sock.set_nonblocking(true)
            .map_err(Error::io("O_NONBLOCK on raw socket"))?;
        if let Some(dev) = &opts.device {
            sys::ifname_bytes(dev)?;
            sock.bind_device(Some(dev.as_bytes()))
                .map_err(Error::io("SO_BINDTODEVICE"))?;
        }
        if let Some(addr) = opts.bind_addr {
            sock.bind(&SockAddr::from(SocketAddrV4::new(addr, 0)))
                .map_err(Error::io("bind raw socket"))?;
        }
        if opts.header_included {
            sock.set_header_included_v4(true)
                .map_err(Error::io("IP_HDRINCL"))?;
        }
        let sock = sys::async_fd(sock, Interest::READABLE | Interest::WRITABLE)
            .map_err(Error::io("register raw socket with tokio"))?;
        Ok(RawIp {
            sock,
            protocol,
            header_included: opts.header_included,
        })
    }

    pub(crate) fn async_fd(&self) -> &AsyncFd<Socket> {
        &self.sock
    }

    /// The IP protocol number this socket carries.
    pub fn protocol(&self) -> u8 {
        self.protocol
    }

    /// Receive one packet: the whole IPv4 packet (outer header first) and its source.
    /// A packet longer than `buf` is truncated, so size `buf` to the largest expected packet.
    pub async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, Ipv4Addr)> {
        self.sock
            .async_io(Interest::READABLE, |s| recv_from(s.as_raw_fd(), buf))
            .await
    }

    /// Waits until a packet may be queued, without reading it: for a caller that
    /// waits on several sockets at once and then reads with
    /// [`RawIp::try_recv_from`] (which clears the readiness when nothing is there).
    pub async fn readable(&self) -> io::Result<()> {
        self.sock.readable().await.map(|_| ())
    }

    /// Non-blocking [`RawIp::recv_from`]: `Err(WouldBlock)` when nothing is queued.
    pub fn try_recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, Ipv4Addr)> {
        self.sock
            .try_io(Interest::READABLE, |s| recv_from(s.as_raw_fd(), buf))
    }

    /// Send `payload` to `dst`; the kernel builds the outer IPv4 header (protocol
    /// [`RawIp::protocol`], source from the routing table or the bound address).
    pub async fn send_to(&self, payload: &[u8], dst: Ipv4Addr) -> io::Result<usize> {
        let tos = if self.protocol == IPPROTO_IPIP {
            outer_tos(payload)
        } else {
            0
        };
        self.send_to_tos(payload, dst, tos).await
    }

    /// [`RawIp::send_to`] with `tos` as the header's TOS octet (0: the socket's), for a
    /// payload whose own header cannot say it (ESP: the inner packet's, `outer_tos`).
    pub async fn send_to_tos(&self, payload: &[u8], dst: Ipv4Addr, tos: u8) -> io::Result<usize> {
        if self.header_included {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "send_to on an IP_HDRINCL socket: use send_packet",
            ));
        }
        self.sock
            .async_io(Interest::WRITABLE, |s| {
                send_to(s.as_raw_fd(), payload, dst, tos)
            })
            .await
    }

    /// Send a complete IPv4 packet whose header the caller built (needs
    /// [`RawIpOptions::header_included`]). The destination is read from the header.
    pub async fn send_packet(&self, packet: &[u8]) -> io::Result<usize> {
        if !self.header_included {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "send_packet needs a socket opened with header_included (IP_HDRINCL)",
            ));
        }
        let dst = match packet.get(16..20) {
            Some(&[a, b, c, d]) if packet.first().map(|v| v >> 4) == Some(4) => {
                Ipv4Addr::new(a, b, c, d)
            }
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "send_packet: not an IPv4 packet with a complete header",
                ))
            }
        };
        self.sock
            .async_io(Interest::WRITABLE, |s| {
                send_to(s.as_raw_fd(), packet, dst, 0)
            })
            .await
    }
}

impl AsFd for RawIp {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.get_ref().as_fd()
    }
}

fn recv_from(fd: i32, buf: &mut [u8]) -> io::Result<(usize, Ipv4Addr)> {
    // SAFETY: all-zero is a valid sockaddr_in.
    let mut sin: libc::sockaddr_in = unsafe { zeroed() };
    let mut len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: `buf` is writable for its length; `sin`/`len` describe a writable sockaddr_in.
    let n = unsafe {
        libc::recvfrom(
            fd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            0,
            (&mut sin as *mut libc::sockaddr_in).cast(),
            &mut len,
        )
    };
    let n = sys::cvt_len(n)?;
    Ok((n, Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr))))
}

/// A `msghdr` for one datagram to or from `sin` in the one buffer of `iov`, no
/// control messages yet. The pointers it holds are only valid while both live.
pub(crate) fn msghdr_for(sin: &mut libc::sockaddr_in, iov: &mut libc::iovec) -> libc::msghdr {
    // SAFETY: all-zero is a valid msghdr.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_name = (sin as *mut libc::sockaddr_in).cast();
    msg.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
    msg.msg_iov = iov;
    msg.msg_iovlen = 1;
    msg
}

pub(crate) fn sockaddr_in(addr: Ipv4Addr, port: u16) -> libc::sockaddr_in {
    // SAFETY: all-zero is a valid sockaddr_in.
    let mut sin: libc::sockaddr_in = unsafe { zeroed() };
    sin.sin_family = libc::AF_INET as libc::sa_family_t;
    sin.sin_port = port.to_be();
    sin.sin_addr.s_addr = u32::from(addr).to_be();
    sin
}

/// One `sendto`, or with a TOS other than 0 one `sendmsg` with it as `IP_TOS`.
fn send_to(fd: i32, data: &[u8], dst: Ipv4Addr, tos: u8) -> io::Result<usize> {
    let mut sin = sockaddr_in(dst, 0);
    if tos != 0 {
        let mut ctrl = TosCmsg::new(tos);
        let mut iov = libc::iovec {
            iov_base: data.as_ptr() as *mut libc::c_void,
            iov_len: data.len(),
        };
        let mut msg = msghdr_for(&mut sin, &mut iov);
        msg.msg_control = ctrl.as_mut_ptr();
        msg.msg_controllen = TosCmsg::space();
        // SAFETY: the name, the iovec (over `data`) and the control message live
        // through the call, which only reads them.
        return sys::cvt_len(unsafe { libc::sendmsg(fd, &msg, 0) });
    }
    // SAFETY: `data` is readable for its length; `sin` is a valid sockaddr_in.
    let n = unsafe {
        libc::sendto(
            fd,
            data.as_ptr().cast(),
            data.len(),
            0,
            (&sin as *const libc::sockaddr_in).cast(),
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    sys::cvt_len(n)
}
