//! UDP sockets for agents: option setup with socket2, I/O with tokio.
//!
//! [`UdpOptions::bind`] returns a plain `tokio::net::UdpSocket`. When the socket was bound
//! with [`UdpOptions::pktinfo`], [`recv_with_meta`] also reports the local address the
//! datagram was sent to and the interface it arrived on (`IP_PKTINFO`). A home agent bound
//! to `0.0.0.0:434` needs that to tell which of its addresses a registration request named,
//! and [`send_from`] answers from that same address.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsRawFd;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::io::Interest;
use tokio::net::UdpSocket;

use crate::raw::sockaddr_in;
use crate::sys;
use crate::{Error, Result};

/// Socket options for [`UdpOptions::bind`].
#[derive(Debug, Clone)]
pub struct UdpOptions {
    /// Local address and port (`0.0.0.0` for all addresses).
    pub local: SocketAddrV4,
    /// `SO_REUSEADDR`.
    pub reuse_addr: bool,
    /// `SO_REUSEPORT`.
    pub reuse_port: bool,
    /// `SO_BINDTODEVICE`.
    pub device: Option<String>,
    /// `IP_PKTINFO`, needed by [`recv_with_meta`] to report the destination address.
    pub pktinfo: bool,
    /// `SO_BROADCAST` (agent solicitations and limited-broadcast registrations).
    pub broadcast: bool,
}

impl UdpOptions {
    /// Options for `local` with every flag off.
    pub fn new(local: SocketAddrV4) -> Self {
        UdpOptions {
            local,
            reuse_addr: false,
            reuse_port: false,
            device: None,
            pktinfo: false,
            broadcast: false,
        }
    }

    /// Create, configure and bind the socket; must be called inside a tokio runtime.
    pub fn bind(&self) -> Result<UdpSocket> {
        let sock = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
            .map_err(Error::io("socket(AF_INET, SOCK_DGRAM)"))?;
        sock.set_nonblocking(true)
            .map_err(Error::io("O_NONBLOCK on udp"))?;
        if self.reuse_addr {
            sock.set_reuse_address(true)
                .map_err(Error::io("SO_REUSEADDR"))?;
        }
        if self.reuse_port {
            sock.set_reuse_port(true)
                .map_err(Error::io("SO_REUSEPORT"))?;
        }
        if self.broadcast {
            sock.set_broadcast(true)
                .map_err(Error::io("SO_BROADCAST"))?;
        }
        if let Some(dev) = &self.device {
            sys::ifname_bytes(dev)?;
            sock.bind_device(Some(dev.as_bytes()))
                .map_err(Error::io("SO_BINDTODEVICE"))?;
        }
        if self.pktinfo {
            set_pktinfo(&sock)?;
        }
        sock.bind(&SockAddr::from(self.local))
            .map_err(Error::io("bind udp"))?;
        UdpSocket::from_std(sock.into()).map_err(Error::io("register udp with tokio"))
    }
}

fn set_pktinfo(sock: &Socket) -> Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: `one` is a valid c_int for the duration of the call.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_PKTINFO,
            (&one as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(Error::Io {
            op: "IP_PKTINFO",
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// What [`recv_with_meta`] learned about one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecvMeta {
    /// Bytes written into the buffer.
    pub len: usize,
    /// Sender.
    pub src: SocketAddrV4,
    /// The address the datagram was sent to (`ipi_addr`: can be a broadcast address).
    /// `None` when the socket was not bound with [`UdpOptions::pktinfo`].
    pub dst: Option<Ipv4Addr>,
    /// The local address the kernel would answer from (`ipi_spec_dst`).
    pub local: Option<Ipv4Addr>,
    /// Index of the interface the datagram arrived on (0 when unknown).
    pub ifindex: u32,
    /// The datagram was longer than the buffer and was cut.
    pub truncated: bool,
}

/// Aligned room for one `IP_PKTINFO` control message and then some.
#[repr(C, align(8))]
struct CmsgBuf([u8; 64]);

/// Receive one datagram and its `IP_PKTINFO` metadata from a socket bound by
/// [`UdpOptions::bind`] with `pktinfo` set.
pub async fn recv_with_meta(sock: &UdpSocket, buf: &mut [u8]) -> io::Result<RecvMeta> {
    sock.async_io(Interest::READABLE, || {
        recvmsg_pktinfo(sock.as_raw_fd(), buf)
    })
    .await
}

fn recvmsg_pktinfo(fd: i32, buf: &mut [u8]) -> io::Result<RecvMeta> {
    // SAFETY: all-zero is a valid sockaddr_in, iovec and msghdr.
    let mut sin: libc::sockaddr_in = unsafe { zeroed() };
    let mut cmsg = CmsgBuf([0; 64]);
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: as above.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_name = (&mut sin as *mut libc::sockaddr_in).cast();
    msg.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg.0.as_mut_ptr().cast();
    msg.msg_controllen = cmsg.0.len();
    // SAFETY: every pointer in `msg` refers to a live, writable buffer of the stated size.
    let n = sys::cvt_len(unsafe { libc::recvmsg(fd, &mut msg, 0) })?;
    let mut meta = RecvMeta {
        len: n,
        src: SocketAddrV4::new(
            Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
            u16::from_be(sin.sin_port),
        ),
        dst: None,
        local: None,
        ifindex: 0,
        truncated: msg.msg_flags & libc::MSG_TRUNC != 0,
    };
    // SAFETY: `msg` was filled by recvmsg; the CMSG_* macros stay within msg_controllen.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            let hdr = &*c;
            if hdr.cmsg_level == libc::IPPROTO_IP
                && hdr.cmsg_type == libc::IP_PKTINFO
                && hdr.cmsg_len as usize
                    >= libc::CMSG_LEN(size_of::<libc::in_pktinfo>() as u32) as usize
            {
                let info: libc::in_pktinfo =
                    std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::in_pktinfo>());
                meta.dst = Some(Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr)));
                meta.local = Some(Ipv4Addr::from(u32::from_be(info.ipi_spec_dst.s_addr)));
                meta.ifindex = u32::try_from(info.ipi_ifindex).unwrap_or(0);
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok(meta)
}

/// Send `data` to `dst` with `src` as the source address (an `IP_PKTINFO` control message
/// with `ipi_spec_dst`), whatever the socket is bound to; `src` must be local.
pub async fn send_from(
    sock: &UdpSocket,
    data: &[u8],
    dst: SocketAddrV4,
    src: Ipv4Addr,
) -> io::Result<usize> {
    sock.async_io(Interest::WRITABLE, || {
        sendmsg_pktinfo(sock.as_raw_fd(), data, dst, src)
    })
    .await
}

fn sendmsg_pktinfo(fd: i32, data: &[u8], dst: SocketAddrV4, src: Ipv4Addr) -> io::Result<usize> {
    let mut sin = sockaddr_in(*dst.ip(), dst.port());
    let mut cmsg = CmsgBuf([0; 64]);
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: all-zero is a valid msghdr.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_name = (&mut sin as *mut libc::sockaddr_in).cast();
    msg.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg.0.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE is a pure size computation.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(size_of::<libc::in_pktinfo>() as u32) } as usize;
    // SAFETY: the control buffer is 64 aligned bytes, more than CMSG_SPACE(in_pktinfo) = 24,
    // so the first header and its data are in bounds; sendmsg only reads the buffers.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        if c.is_null() {
            return Err(io::Error::other("no room for IP_PKTINFO"));
        }
        (*c).cmsg_level = libc::IPPROTO_IP;
        (*c).cmsg_type = libc::IP_PKTINFO;
        (*c).cmsg_len = libc::CMSG_LEN(size_of::<libc::in_pktinfo>() as u32) as usize;
        let info = libc::in_pktinfo {
            ipi_ifindex: 0,
            ipi_spec_dst: libc::in_addr {
                s_addr: u32::from(src).to_be(),
            },
            ipi_addr: libc::in_addr { s_addr: 0 },
        };
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<libc::in_pktinfo>(), info);
        sys::cvt_len(libc::sendmsg(fd, &msg, 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Loopback has 127.0.0.0/8, so a datagram to 127.0.0.2 shows `dst` = 127.0.0.2
    /// while the receiving socket is bound to 0.0.0.0; no root needed.
    #[tokio::test]
    async fn pktinfo_reports_destination_and_send_from_sets_source() {
        let mut o = UdpOptions::new(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));
        o.pktinfo = true;
        o.reuse_addr = true;
        let server = o.bind().unwrap();
        let port = match server.local_addr().unwrap() {
            std::net::SocketAddr::V4(a) => a.port(),
            other => panic!("unexpected {other}"),
        };
        let client = UdpOptions::new(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))
            .bind()
            .unwrap();
        let to = SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 2), port);
        client.send_to(b"reg-request", to).await.unwrap();

        let mut buf = [0u8; 64];
        let meta = recv_with_meta(&server, &mut buf).await.unwrap();
        assert_eq!(&buf[..meta.len], b"reg-request");
        assert_eq!(meta.dst, Some(Ipv4Addr::new(127, 0, 0, 2)));
        assert_eq!(meta.local, Some(Ipv4Addr::new(127, 0, 0, 2)));
        assert_eq!(meta.ifindex, sys::ifindex("lo").unwrap());
        assert!(!meta.truncated);

        // Answer from the address the request was sent to, not from 127.0.0.1.
        send_from(&server, b"reg-reply", meta.src, meta.dst.unwrap())
            .await
            .unwrap();
        let (n, from) = client.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"reg-reply");
        assert_eq!(from, std::net::SocketAddr::V4(to));
    }

    #[tokio::test]
    async fn truncation_is_reported() {
        let mut o = UdpOptions::new(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0));
        o.pktinfo = true;
        let server = o.bind().unwrap();
        let client = UdpOptions::new(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))
            .bind()
            .unwrap();
        client
            .send_to(&[7u8; 100], server.local_addr().unwrap())
            .await
            .unwrap();
        let mut small = [0u8; 10];
        let meta = recv_with_meta(&server, &mut small).await.unwrap();
        assert_eq!(meta.len, 10);
        assert!(meta.truncated);
    }
}
