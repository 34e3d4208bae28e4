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

use crate::raw::{msghdr_for, sockaddr_in, write_tos, TosCmsg};
use crate::sys::{self, setsockopt};
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

/// Attaches a classic BPF program to the `SO_REUSEPORT` group of `sock`
/// (`SO_ATTACH_REUSEPORT_CBPF`): for each datagram the group receives, the program
/// (which sees the UDP payload) returns the index of the socket that gets it, in
/// the order the group's sockets were bound; an index out of range falls back to
/// the kernel's hash.
pub fn attach_reuseport_cbpf(sock: &impl AsRawFd, prog: &[libc::sock_filter]) -> Result<()> {
    let fprog = libc::sock_fprog {
        len: u16::try_from(prog.len()).map_err(|_| Error::Io {
            op: "SO_ATTACH_REUSEPORT_CBPF",
            source: io::Error::from(io::ErrorKind::InvalidInput),
        })?,
        filter: prog.as_ptr().cast_mut(),
    };
    setsockopt(
        sock.as_raw_fd(),
        libc::SOL_SOCKET,
        libc::SO_ATTACH_REUSEPORT_CBPF,
        &fprog,
        "SO_ATTACH_REUSEPORT_CBPF",
    )
}

/// `UDP_GRO` (linux/udp.h): as a socket option, merge received datagrams of one
/// flow; as a control message, the size of each merged datagram.
const UDP_GRO: libc::c_int = 104;

/// UDP generic receive offload (`UDP_GRO`, Linux 5.0): the kernel may hand a receive
/// several datagrams of one flow (same addresses and ports, equal sizes, the last
/// possibly shorter) in one buffer, with their size in [`RecvMeta::segment`]; split
/// them with [`RecvMeta::datagrams`]. The receive buffer must then hold 64 KiB, or
/// the tail of a merged receive is cut off. Where no device merges (no GRO on the
/// interface), datagrams arrive one by one as without it; a GSO send from this host
/// reaches the socket unsegmented.
pub fn set_gro(sock: &impl AsRawFd, on: bool) -> Result<()> {
    let v: libc::c_int = on.into();
    setsockopt(sock.as_raw_fd(), libc::SOL_UDP, UDP_GRO, &v, "UDP_GRO")
}

/// Asks for a receive buffer of `bytes` octets: `SO_RCVBUFFORCE` (past `rmem_max`,
/// with `CAP_NET_ADMIN`), else `SO_RCVBUF` (within it).
pub fn set_recv_buffer(sock: &impl AsRawFd, bytes: usize) -> Result<()> {
    let v = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    let fd = sock.as_raw_fd();
    setsockopt(
        fd,
        libc::SOL_SOCKET,
        libc::SO_RCVBUFFORCE,
        &v,
        "SO_RCVBUFFORCE",
    )
    .or_else(|_| setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, &v, "SO_RCVBUF"))
}

/// The segment size of a `UDP_GRO` control message (`None` for any other message).
///
/// # Safety
/// `c` points at the control message header `hdr` inside a buffer filled by the
/// kernel, with `cmsg_len` octets from it.
pub(crate) unsafe fn gro_segment(hdr: &libc::cmsghdr, c: *const libc::cmsghdr) -> Option<u16> {
    if hdr.cmsg_level != libc::SOL_UDP
        || hdr.cmsg_type != UDP_GRO
        || hdr.cmsg_len < unsafe { libc::CMSG_LEN(size_of::<libc::c_int>() as u32) } as usize
    {
        return None;
    }
    // SAFETY: the length check above keeps the read within the message.
    let v: libc::c_int =
        unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>()) };
    u16::try_from(v).ok().filter(|&v| v > 0)
}

fn set_pktinfo(sock: &Socket) -> Result<()> {
    let one: libc::c_int = 1;
    setsockopt(
        sock.as_raw_fd(),
        libc::IPPROTO_IP,
        libc::IP_PKTINFO,
        &one,
        "IP_PKTINFO",
    )
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
    /// With UDP GRO ([`set_gro`]): the size of each datagram the kernel merged into
    /// this buffer (every one but the last has it, the last may be shorter); 0 when
    /// the buffer holds one datagram. [`RecvMeta::datagrams`] splits it.
    pub segment: u16,
}

impl RecvMeta {
    /// The datagrams in the buffer this receive filled: (offset, metadata of that
    /// datagram alone). One, unless the kernel merged several (UDP GRO); they then
    /// have the same source, destination and interface, and the cuts are exactly
    /// where the sender's datagrams ended. Only the last one can be truncated.
    pub fn datagrams(self) -> Datagrams {
        Datagrams {
            meta: self,
            off: 0,
            done: false,
        }
    }
}

/// Iterator of [`RecvMeta::datagrams`].
#[derive(Debug, Clone)]
pub struct Datagrams {
    meta: RecvMeta,
    off: usize,
    done: bool,
}

impl Iterator for Datagrams {
    type Item = (usize, RecvMeta);

    fn next(&mut self) -> Option<(usize, RecvMeta)> {
        if self.done {
            return None;
        }
        let total = self.meta.len;
        let at = self.off;
        let rest = total.saturating_sub(at);
        let len = match usize::from(self.meta.segment) {
            0 => rest,
            seg => seg.min(rest),
        };
        self.off += len;
        // An empty datagram is still one datagram.
        self.done = self.off >= total;
        let mut m = self.meta;
        m.len = len;
        m.segment = 0;
        m.truncated = self.meta.truncated && self.done;
        Some((at, m))
    }
}

/// Aligned room for the control messages of one datagram: `IP_PKTINFO`,
/// `UDP_SEGMENT` and `IP_TOS` together take 32 + 24 + 24 octets on 64-bit Linux.
#[repr(C, align(8))]
struct CmsgBuf([u8; 128]);

/// Receive one datagram and its `IP_PKTINFO` metadata from a socket bound by
/// [`UdpOptions::bind`] with `pktinfo` set.
pub async fn recv_with_meta(sock: &UdpSocket, buf: &mut [u8]) -> io::Result<RecvMeta> {
    sock.async_io(Interest::READABLE, || {
        recvmsg_pktinfo(sock.as_raw_fd(), buf)
    })
    .await
}

/// [`recv_with_meta`] without waiting: `WouldBlock` when nothing is queued (to drain a
/// burst after a wake-up).
pub fn try_recv_with_meta(sock: &UdpSocket, buf: &mut [u8]) -> io::Result<RecvMeta> {
    sock.try_io(Interest::READABLE, || {
        recvmsg_pktinfo(sock.as_raw_fd(), buf)
    })
}

/// [`recv_with_meta`] as a poll, for a receive from whichever of several sockets
/// is ready first.
pub fn poll_recv_with_meta(
    sock: &UdpSocket,
    cx: &mut std::task::Context<'_>,
    buf: &mut [u8],
) -> std::task::Poll<io::Result<RecvMeta>> {
    loop {
        match sock.poll_recv_ready(cx) {
            std::task::Poll::Ready(Ok(())) => {}
            std::task::Poll::Ready(Err(e)) => return std::task::Poll::Ready(Err(e)),
            std::task::Poll::Pending => return std::task::Poll::Pending,
        }
        match try_recv_with_meta(sock, buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            r => return std::task::Poll::Ready(r),
        }
    }
}

fn recvmsg_pktinfo(fd: i32, buf: &mut [u8]) -> io::Result<RecvMeta> {
    // SAFETY: all-zero is a valid sockaddr_in.
    let mut sin: libc::sockaddr_in = unsafe { zeroed() };
    let mut cmsg = CmsgBuf([0; 128]);
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut msg = msghdr_for(&mut sin, &mut iov);
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
        segment: 0,
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
            } else if let Some(seg) = gro_segment(hdr, c) {
                meta.segment = seg;
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
    sendmsg_with(fd, data, dst, Some(src), None, 0)
}

/// Send `data` to `dst` (from `src` when given, as [`send_from`]) with `tos` as the
/// TOS octet of its IPv4 header (`IP_TOS`; 0: the socket's own).
pub async fn send_with_tos(
    sock: &UdpSocket,
    data: &[u8],
    dst: SocketAddrV4,
    src: Option<Ipv4Addr>,
    tos: u8,
) -> io::Result<usize> {
    sock.async_io(Interest::WRITABLE, || {
        sendmsg_with(sock.as_raw_fd(), data, dst, src, None, tos)
    })
    .await
}

/// Writes an `IP_PKTINFO` control message asking for source `src` into the header at
/// `c` (null: no room).
///
/// # Safety
/// `c` is null or points at a control message header inside a msghdr's control buffer
/// with room for `CMSG_SPACE(in_pktinfo)` octets from it.
pub(crate) unsafe fn write_pktinfo(c: *mut libc::cmsghdr, src: Ipv4Addr) -> io::Result<()> {
    if c.is_null() {
        return Err(io::Error::other("no room for IP_PKTINFO"));
    }
    // SAFETY: the caller promises room for the header and its in_pktinfo.
    unsafe {
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
    }
    Ok(())
}

/// `UDP_SEGMENT` (linux/udp.h): the size of each datagram of a GSO send.
const UDP_SEGMENT: libc::c_int = 103;

/// At most this many datagrams in one GSO send (the kernel's `UDP_MAX_SEGMENTS` is 64
/// before Linux 6.9, 128 after).
pub const GSO_MAX_SEGMENTS: usize = 64;

/// At most this many payload octets in one GSO send (one IPv4 datagram's worth: the
/// kernel builds a single super-datagram before cutting it).
pub const GSO_MAX_BYTES: usize = 65_535 - 20 - 8;

/// Send `data` to `dst` as datagrams of `segment` octets each (the last one may be
/// shorter) in one system call: UDP generic segmentation offload (`UDP_SEGMENT`, Linux
/// 4.18), so the stack handles one large buffer and cuts it late (or the device does).
/// With `src`, from that local address (`IP_PKTINFO`). `data` must hold at most
/// [`GSO_MAX_SEGMENTS`] segments and [`GSO_MAX_BYTES`] octets, and each datagram must
/// fit the path MTU: the kernel refuses the send otherwise (`EINVAL`, `EMSGSIZE`).
pub async fn send_gso(
    sock: &UdpSocket,
    data: &[u8],
    dst: SocketAddrV4,
    src: Option<Ipv4Addr>,
    segment: u16,
) -> io::Result<usize> {
    send_gso_tos(sock, data, dst, src, segment, 0).await
}

/// [`send_gso`] with `tos` as every datagram's TOS octet (`IP_TOS`; 0: the socket's).
pub async fn send_gso_tos(
    sock: &UdpSocket,
    data: &[u8],
    dst: SocketAddrV4,
    src: Option<Ipv4Addr>,
    segment: u16,
    tos: u8,
) -> io::Result<usize> {
    sock.async_io(Interest::WRITABLE, || {
        sendmsg_with(sock.as_raw_fd(), data, dst, src, Some(segment), tos)
    })
    .await
}

/// One `sendmsg` with the optional `IP_PKTINFO` source, `UDP_SEGMENT` size and
/// `IP_TOS` (when not 0).
fn sendmsg_with(
    fd: i32,
    data: &[u8],
    dst: SocketAddrV4,
    src: Option<Ipv4Addr>,
    segment: Option<u16>,
    tos: u8,
) -> io::Result<usize> {
    let mut sin = sockaddr_in(*dst.ip(), dst.port());
    let mut cmsg = CmsgBuf([0; 128]);
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: CMSG_SPACE is a pure size computation.
    let (pktinfo_space, seg_space) = unsafe {
        (
            libc::CMSG_SPACE(size_of::<libc::in_pktinfo>() as u32) as usize,
            libc::CMSG_SPACE(size_of::<u16>() as u32) as usize,
        )
    };
    let tos_space = if tos == 0 { 0 } else { TosCmsg::space() };
    let control_len =
        src.map_or(0, |_| pktinfo_space) + segment.map_or(0, |_| seg_space) + tos_space;
    let mut msg = msghdr_for(&mut sin, &mut iov);
    if control_len > 0 {
        msg.msg_control = cmsg.0.as_mut_ptr().cast();
        msg.msg_controllen = control_len;
    }
    // SAFETY: the control buffer is 128 aligned bytes, more than CMSG_SPACE(in_pktinfo)
    // + CMSG_SPACE(u16) + CMSG_SPACE(c_int) = 32 + 24 + 24, and msg_controllen covers
    // exactly the headers written, so every header and its data are in bounds;
    // sendmsg only reads buffers.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        if let Some(src) = src {
            write_pktinfo(c, src)?;
            c = libc::CMSG_NXTHDR(&msg, c);
        }
        if let Some(seg) = segment {
            if c.is_null() {
                return Err(io::Error::other("no room for UDP_SEGMENT"));
            }
            (*c).cmsg_level = libc::SOL_UDP;
            (*c).cmsg_type = UDP_SEGMENT;
            (*c).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as u32) as usize;
            std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), seg);
            c = libc::CMSG_NXTHDR(&msg, c);
        }
        if tos != 0 {
            if c.is_null() {
                return Err(io::Error::other("no room for IP_TOS"));
            }
            write_tos(c, tos);
        }
        sys::cvt_len(libc::sendmsg(fd, &msg, 0))
    }
}

/// Datagrams of one destination gathered for [`send_gso`]: equal sizes, the last one
/// possibly shorter, within the kernel's limits. [`GsoBatch::push`] says when a
/// datagram does not fit and the batch must be sent first.
#[derive(Debug, Default)]
pub struct GsoBatch {
    buf: Vec<u8>,
    segment: usize,
    count: usize,
    /// The last datagram was shorter than `segment`: nothing more may follow.
    closed: bool,
    /// The TOS octet of every datagram of the batch (0: the socket's).
    tos: u8,
}

impl GsoBatch {
    /// An empty batch.
    pub fn new() -> GsoBatch {
        GsoBatch::default()
    }

    /// Appends one datagram made of `header` then `payload`; false (nothing appended)
    /// when it cannot join the datagrams already there.
    pub fn push(&mut self, header: &[u8], payload: &[u8]) -> bool {
        self.push_with_tos(header, payload, 0)
    }

    /// [`GsoBatch::push`] of a datagram whose IPv4 header must carry `tos` (a tunnel's
    /// outer TOS, `raw::outer_tos`): one send has one TOS, so a datagram with another
    /// does not join.
    pub fn push_with_tos(&mut self, header: &[u8], payload: &[u8], tos: u8) -> bool {
        let len = header.len() + payload.len();
        if len == 0 || len > usize::from(u16::MAX) {
            return false;
        }
        if self.count > 0
            && (self.closed
                || tos != self.tos
                || len > self.segment
                || self.count >= GSO_MAX_SEGMENTS
                || self.buf.len() + len > GSO_MAX_BYTES)
        {
            return false;
        }
        if self.count == 0 {
            if len > GSO_MAX_BYTES {
                return false;
            }
            self.segment = len;
            self.tos = tos;
        } else if len < self.segment {
            self.closed = true;
        }
        self.buf.extend_from_slice(header);
        self.buf.extend_from_slice(payload);
        self.count += 1;
        true
    }

    /// Datagrams gathered.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether nothing is gathered.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Payload octets gathered.
    pub fn bytes(&self) -> usize {
        self.buf.len()
    }

    /// The size of each datagram but the last.
    pub fn segment(&self) -> usize {
        self.segment
    }

    /// The gathered datagrams, back to back.
    pub fn data(&self) -> &[u8] {
        &self.buf
    }

    /// The gathered datagrams one by one (for a send without GSO).
    pub fn datagrams(&self) -> impl Iterator<Item = &[u8]> {
        self.buf.chunks(self.segment.max(1))
    }

    /// Empties the batch (its buffer is kept).
    pub fn clear(&mut self) {
        self.buf.clear();
        self.count = 0;
        self.segment = 0;
        self.closed = false;
        self.tos = 0;
    }

    /// Sends the batch to `dst` (from `src`) and empties it: one GSO send when it holds
    /// more than one datagram and `gso` is set, else one send per datagram. When the
    /// kernel refuses the GSO send itself (`EIO`: the route's device cannot checksum;
    /// `EINVAL`, `ENOPROTOOPT`: no UDP GSO), the datagrams go one by one and the outcome
    /// says so, for the caller to stop asking.
    pub async fn send(
        &mut self,
        sock: &UdpSocket,
        dst: SocketAddrV4,
        src: Option<Ipv4Addr>,
        gso: bool,
    ) -> GsoOutcome {
        let mut out = GsoOutcome::default();
        if self.count == 0 {
            return out;
        }
        if gso && self.count > 1 {
            match u16::try_from(self.segment) {
                Ok(seg) => match send_gso_tos(sock, &self.buf, dst, src, seg, self.tos).await {
                    Ok(_) => {
                        out.sent = self.count;
                        out.gso = true;
                        self.clear();
                        return out;
                    }
                    Err(e)
                        if matches!(
                            e.raw_os_error(),
                            Some(libc::EIO | libc::EINVAL | libc::ENOPROTOOPT)
                        ) =>
                    {
                        out.gso_refused = Some(e);
                    }
                    Err(e) => {
                        out.failed = self.count;
                        out.error = Some(e);
                        self.clear();
                        return out;
                    }
                },
                Err(_) => out.gso_refused = Some(io::Error::other("segment above 65535")),
            }
        }
        for d in self.buf.chunks(self.segment.max(1)) {
            let r = match (src, self.tos) {
                (Some(s), 0) => send_from(sock, d, dst, s).await,
                (None, 0) => sock.send_to(d, dst).await,
                (src, tos) => send_with_tos(sock, d, dst, src, tos).await,
            };
            match r {
                Ok(_) => out.sent += 1,
                Err(e) => {
                    out.failed += 1;
                    out.error.get_or_insert(e);
                }
            }
        }
        self.clear();
        out
    }
}

/// What [`GsoBatch::send`] did.
#[derive(Debug, Default)]
pub struct GsoOutcome {
    /// Datagrams sent.
    pub sent: usize,
    /// Datagrams the kernel refused.
    pub failed: usize,
    /// The first refusal.
    pub error: Option<io::Error>,
    /// Sent in one GSO send.
    pub gso: bool,
    /// The kernel refused GSO itself (the datagrams then went one by one).
    pub gso_refused: Option<io::Error>,
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

    #[test]
    fn gso_batch_takes_equal_datagrams_and_one_shorter_last() {
        let mut b = GsoBatch::new();
        assert!(b.push(&[1, 2], &[0; 98]));
        assert!(b.push(&[1, 2], &[0; 98]));
        assert_eq!((b.len(), b.segment(), b.bytes()), (2, 100, 200));
        // Larger than the first: must go in another batch.
        assert!(!b.push(&[1, 2], &[0; 99]));
        // Shorter: the last one.
        assert!(b.push(&[], &[7; 40]));
        assert!(!b.push(&[], &[7; 40]));
        assert!(!b.push(&[1, 2], &[0; 98]));
        let d: Vec<usize> = b.datagrams().map(<[u8]>::len).collect();
        assert_eq!(d, [100, 100, 40]);
        b.clear();
        assert!(b.is_empty());
        // The kernel's limits: 64 datagrams, one IPv4 datagram's worth of octets.
        for _ in 0..GSO_MAX_SEGMENTS {
            assert!(b.push(&[], &[0; 10]));
        }
        assert!(!b.push(&[], &[0; 10]));
        b.clear();
        for _ in 0..(GSO_MAX_BYTES / 1500) {
            assert!(b.push(&[], &[0; 1500]));
        }
        assert!(!b.push(&[], &[0; 1500]));
        b.clear();
        assert!(!b.push(&[], &[]));
        assert!(!b.push(&[], &vec![0; GSO_MAX_BYTES + 1]));
    }

    #[test]
    fn gso_batch_holds_one_tos() {
        let mut b = GsoBatch::new();
        assert!(b.push_with_tos(&[], &[0; 10], 0xb8));
        assert!(b.push_with_tos(&[], &[0; 10], 0xb8));
        assert!(
            !b.push_with_tos(&[], &[0; 10], 0x28),
            "another TOS: another send"
        );
        assert!(!b.push(&[], &[0; 10]), "no TOS is another TOS too");
        b.clear();
        assert!(b.push(&[], &[0; 10]));
        assert!(!b.push_with_tos(&[], &[0; 10], 0xb8));
    }

    /// Receives one datagram with its IPv4 TOS octet (`IP_RECVTOS` must be on).
    fn recv_tos(sock: &std::net::UdpSocket) -> (Vec<u8>, Option<u8>) {
        let mut buf = vec![0u8; 2048];
        let mut cmsg = CmsgBuf([0; 128]);
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: all-zero is a valid msghdr.
        let mut msg: libc::msghdr = unsafe { zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cmsg.0.as_mut_ptr().cast();
        msg.msg_controllen = cmsg.0.len();
        // SAFETY: the iovec and control buffer are writable for their lengths.
        let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, 0) };
        let n = sys::cvt_len(n).unwrap();
        buf.truncate(n);
        let mut tos = None;
        // SAFETY: `msg` was filled by recvmsg; the CMSG_* macros stay within it.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::IPPROTO_IP && (*c).cmsg_type == libc::IP_TOS {
                    tos = Some(*libc::CMSG_DATA(c));
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
        (buf, tos)
    }

    /// A batch's TOS is on every datagram it sends: in one GSO send, one by one (with
    /// and without a source address) and alone; without one the socket's (0) is.
    #[tokio::test]
    async fn gso_batch_and_single_sends_carry_the_tos() {
        let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        socket2::SockRef::from(&server).set_recv_tos(true).unwrap();
        server
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let to = match server.local_addr().unwrap() {
            std::net::SocketAddr::V4(a) => a,
            other => panic!("unexpected {other}"),
        };
        let client = UdpOptions::new(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))
            .bind()
            .unwrap();
        let src = Some(Ipv4Addr::new(127, 0, 0, 3));
        for (gso, src) in [(true, src), (false, src), (false, None)] {
            let mut b = GsoBatch::new();
            for i in 0..3u8 {
                assert!(b.push_with_tos(&[i], &[9; 99], 0xb8));
            }
            let out = b.send(&client, to, src, gso).await;
            assert!(out.error.is_none() && out.gso_refused.is_none(), "{out:?}");
            assert_eq!(out.gso, gso);
            for i in 0..3u8 {
                let (d, tos) = recv_tos(&server);
                assert_eq!((d.len(), d[0]), (100, i));
                assert_eq!(tos, Some(0xb8), "datagram {i}, gso {gso}, src {src:?}");
            }
            assert!(b.push(&[], &[1; 10]));
            b.send(&client, to, src, gso).await;
            assert_eq!(recv_tos(&server).1, Some(0), "no TOS asked: the socket's");
        }
        send_with_tos(&client, b"alone", to, None, 0x28)
            .await
            .unwrap();
        assert_eq!(recv_tos(&server), (b"alone".to_vec(), Some(0x28)));
    }

    /// Loopback does UDP GSO: one send of 3 x 100 + 40 octets arrives as four
    /// datagrams with the right contents, from the `src` asked for.
    #[tokio::test]
    async fn gso_send_arrives_as_separate_datagrams() {
        let mut o = UdpOptions::new(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));
        o.pktinfo = true;
        let server = o.bind().unwrap();
        let port = match server.local_addr().unwrap() {
            std::net::SocketAddr::V4(a) => a.port(),
            other => panic!("unexpected {other}"),
        };
        let client = UdpOptions::new(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))
            .bind()
            .unwrap();
        let mut b = GsoBatch::new();
        for i in 0..3u8 {
            assert!(b.push(&[0xaa, i], &[i; 98]));
        }
        assert!(b.push(&[0xbb, 3], &[3; 38]));
        let to = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
        let out = b
            .send(&client, to, Some(Ipv4Addr::new(127, 0, 0, 3)), true)
            .await;
        assert!(out.error.is_none() && out.gso_refused.is_none(), "{out:?}");
        assert_eq!((out.sent, out.gso), (4, true));
        assert!(b.is_empty());
        let mut buf = [0u8; 2048];
        for i in 0..4u8 {
            let m = recv_with_meta(&server, &mut buf).await.unwrap();
            assert_eq!(*m.src.ip(), Ipv4Addr::new(127, 0, 0, 3));
            let want_len = if i < 3 { 100 } else { 40 };
            assert_eq!(m.len, want_len, "datagram {i}");
            assert_eq!(buf[1], i);
            assert!(buf[2..m.len].iter().all(|b| *b == i));
        }
        // Without GSO: the same datagrams one by one.
        b.push(&[], &[9; 10]);
        b.push(&[], &[9; 10]);
        let out = b.send(&client, to, None, false).await;
        assert_eq!((out.sent, out.gso), (2, false));
        for _ in 0..2 {
            assert_eq!(recv_with_meta(&server, &mut buf).await.unwrap().len, 10);
        }
    }

    async fn gso_to(client: &UdpSocket, port: u16, sizes: &[(u8, usize)]) -> GsoOutcome {
        let mut b = GsoBatch::new();
        for (tag, len) in sizes {
            assert!(b.push(&[*tag], &vec![*tag; len - 1]));
        }
        let to = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
        b.send(client, to, None, true).await
    }

    /// With `UDP_GRO` the socket takes a GSO send whole (loopback, as a device that
    /// merges would hand it): one receive, the segment size in the metadata, and
    /// `datagrams` cuts it where the sender's datagrams ended. Without it (the control
    /// case) the same send arrives as separate datagrams.
    #[tokio::test]
    async fn gro_receive_is_split_back_into_the_senders_datagrams() {
        let mut o = UdpOptions::new(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0));
        o.pktinfo = true;
        let server = o.bind().unwrap();
        let plain = o.bind().unwrap();
        set_gro(&server, true).unwrap();
        let port = |s: &UdpSocket| match s.local_addr().unwrap() {
            std::net::SocketAddr::V4(a) => a.port(),
            other => panic!("unexpected {other}"),
        };
        let client = UdpOptions::new(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))
            .bind()
            .unwrap();
        let sizes = [(1u8, 1400), (2, 1400), (3, 1400), (4, 333)];
        let out = gso_to(&client, port(&server), &sizes).await;
        assert_eq!((out.sent, out.gso), (4, true), "{out:?}");
        let mut buf = vec![0u8; 65536];
        let m = recv_with_meta(&server, &mut buf).await.unwrap();
        assert_eq!((m.len, m.segment), (4533, 1400));
        assert_eq!(m.dst, Some(Ipv4Addr::LOCALHOST));
        let got: Vec<(usize, usize, u8, bool)> = m
            .datagrams()
            .map(|(at, d)| (at, d.len, buf[at], d.truncated || d.segment != 0))
            .collect();
        assert_eq!(
            got,
            [
                (0, 1400, 1, false),
                (1400, 1400, 2, false),
                (2800, 1400, 3, false),
                (4200, 333, 4, false)
            ]
        );
        for (at, d) in m.datagrams() {
            assert!(buf[at..at + d.len].iter().all(|b| *b == buf[at]));
        }

        // The control: the same send to a socket without GRO, four receives.
        let out = gso_to(&client, port(&plain), &sizes).await;
        assert_eq!(out.sent, 4);
        for (tag, len) in sizes {
            let m = recv_with_meta(&plain, &mut buf).await.unwrap();
            assert_eq!((m.len, m.segment, buf[0]), (len, 0, tag));
            assert_eq!(m.datagrams().count(), 1);
        }

        // A buffer too short for the merged receive: the datagrams that fit are
        // whole, only the last one is marked cut.
        gso_to(&client, port(&server), &sizes).await;
        let mut short = vec![0u8; 3000];
        let m = recv_with_meta(&server, &mut short).await.unwrap();
        assert!(m.truncated);
        let got: Vec<(usize, bool)> = m.datagrams().map(|(_, d)| (d.len, d.truncated)).collect();
        assert_eq!(got, [(1400, false), (1400, false), (200, true)]);

        // The batch receiver splits merged slots into one entry per datagram.
        gso_to(&client, port(&server), &sizes).await;
        gso_to(&client, port(&server), &[(9, 50), (9, 50)]).await;
        client
            .send_to(
                b"single",
                SocketAddrV4::new(Ipv4Addr::LOCALHOST, port(&server)),
            )
            .await
            .unwrap();
        let mut rb = crate::udp_batch::RecvBatch::new(8, 65536);
        let mut lens = Vec::new();
        let mut merged = (0, 0);
        while lens.len() < 7 {
            let n = rb.recv(&server).await.unwrap();
            merged.0 += rb.merged().0;
            merged.1 += rb.merged().1;
            for i in 0..n {
                let (m, p) = rb.get(i);
                assert_eq!(m.len, p.len());
                lens.push((p.len(), p[0]));
            }
        }
        assert_eq!(
            lens,
            [
                (1400, 1),
                (1400, 2),
                (1400, 3),
                (333, 4),
                (50, 9),
                (50, 9),
                (6, b's')
            ]
        );
        assert_eq!(merged, (2, 6));
        // Writable in place.
        let (_, p) = rb.get_mut(6);
        p[0] = b'S';
        assert_eq!(rb.get(6).1, b"Single");
    }

    #[test]
    fn an_empty_datagram_is_one_datagram() {
        let m = RecvMeta {
            len: 0,
            src: SocketAddrV4::new(Ipv4Addr::LOCALHOST, 1),
            dst: None,
            local: None,
            ifindex: 0,
            truncated: false,
            segment: 1200,
        };
        let d: Vec<(usize, usize)> = m.datagrams().map(|(a, m)| (a, m.len)).collect();
        assert_eq!(d, [(0, 0)]);
    }
}
