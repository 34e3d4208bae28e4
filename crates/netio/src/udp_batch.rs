//! Batched UDP: `recvmmsg` and `sendmmsg` with `IP_PKTINFO`, so a home agent
//! under load moves up to a batch of datagrams per system call instead of one.
//! Same metadata as [`crate::udp::recv_with_meta`] and [`crate::udp::send_from`].

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsRawFd;

use tokio::io::Interest;
use tokio::net::UdpSocket;

use crate::raw::sockaddr_in;
use crate::sys;
use crate::udp::RecvMeta;

/// Aligned room for one `IP_PKTINFO` control message and then some.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct Cmsg([u8; 64]);

/// Buffers for receiving up to `count` datagrams of at most `slot` octets at once.
pub struct RecvBatch {
    slot: usize,
    data: Vec<u8>,
    names: Vec<libc::sockaddr_in>,
    cmsgs: Vec<Cmsg>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    /// The datagrams of the last receive: metadata and offset into `data` (a slot
    /// the kernel filled with several datagrams, UDP GRO, gives several entries).
    metas: Vec<(RecvMeta, usize)>,
    /// Slots of the last receive that held several datagrams (UDP GRO), and how
    /// many datagrams those held.
    merged: (usize, usize),
}

// SAFETY: the raw pointers inside `iovs` and `hdrs` only ever point into this
// struct's own buffers and are rebuilt before every system call.
unsafe impl Send for RecvBatch {}

impl RecvBatch {
    pub fn new(count: usize, slot: usize) -> RecvBatch {
        let count = count.max(1);
        RecvBatch {
            slot,
            data: vec![0; count * slot],
            // SAFETY: all-zero is a valid sockaddr_in, iovec and mmsghdr.
            names: vec![unsafe { zeroed() }; count],
            cmsgs: vec![Cmsg([0; 64]); count],
            iovs: vec![unsafe { zeroed() }; count],
            hdrs: vec![unsafe { zeroed() }; count],
            metas: Vec::with_capacity(count),
            merged: (0, 0),
        }
    }

    /// Waits until the socket is readable, then takes every queued datagram up
    /// to the batch size. Returns how many ([`get`](Self::get) reads them): with
    /// UDP GRO on the socket ([`crate::udp::set_gro`]) a slot can hold several,
    /// which count one each (the slots must then be 64 KiB).
    pub async fn recv(&mut self, sock: &UdpSocket) -> io::Result<usize> {
        sock.async_io(Interest::READABLE, || self.recvmmsg(sock.as_raw_fd()))
            .await
    }

    /// Takes what is queued now, without waiting (`WouldBlock` when nothing is).
    pub fn try_recv(&mut self, sock: &UdpSocket) -> io::Result<usize> {
        sock.try_io(Interest::READABLE, || self.recvmmsg(sock.as_raw_fd()))
    }

    /// Datagram `i` of the last receive: its metadata and payload.
    pub fn get(&self, i: usize) -> (&RecvMeta, &[u8]) {
        let (m, at) = &self.metas[i];
        (m, &self.data[*at..*at + m.len])
    }

    /// [`get`](Self::get), with the payload writable (to open it in place).
    pub fn get_mut(&mut self, i: usize) -> (RecvMeta, &mut [u8]) {
        let (m, at) = self.metas[i];
        (m, &mut self.data[at..at + m.len])
    }

    /// How many datagrams the last receive took.
    pub fn len(&self) -> usize {
        self.metas.len()
    }

    /// Whether the last receive took nothing.
    pub fn is_empty(&self) -> bool {
        self.metas.is_empty()
    }

    /// How many buffers of the last receive held several datagrams (UDP GRO), and
    /// how many datagrams those held.
    pub fn merged(&self) -> (usize, usize) {
        self.merged
    }

    fn recvmmsg(&mut self, fd: i32) -> io::Result<usize> {
        let count = self.hdrs.len();
        self.metas.clear();
        self.merged = (0, 0);
        for i in 0..count {
            self.iovs[i] = libc::iovec {
                iov_base: self.data[i * self.slot..].as_mut_ptr().cast(),
                iov_len: self.slot,
            };
            // SAFETY: all-zero is a valid mmsghdr.
            let mut h: libc::mmsghdr = unsafe { zeroed() };
            h.msg_hdr.msg_name = (&mut self.names[i] as *mut libc::sockaddr_in).cast();
            h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
            h.msg_hdr.msg_iov = &mut self.iovs[i];
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = self.cmsgs[i].0.as_mut_ptr().cast();
            h.msg_hdr.msg_controllen = self.cmsgs[i].0.len();
            self.hdrs[i] = h;
        }
        // SAFETY: every header points at live, writable buffers of the stated sizes,
        // owned by `self` and not moved during the call.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                count as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        let n = sys::cvt_len(n as isize)?;
        for i in 0..n {
            let h = &self.hdrs[i];
            let sin = &self.names[i];
            let mut meta = RecvMeta {
                len: (h.msg_len as usize).min(self.slot),
                src: SocketAddrV4::new(
                    Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
                    u16::from_be(sin.sin_port),
                ),
                dst: None,
                local: None,
                ifindex: 0,
                truncated: h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
                segment: 0,
            };
            // SAFETY: the header was filled by recvmmsg; the CMSG_* macros stay
            // within its msg_controllen.
            unsafe {
                let mut c = libc::CMSG_FIRSTHDR(&h.msg_hdr);
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
                    } else if let Some(seg) = crate::udp::gro_segment(hdr, c) {
                        meta.segment = seg;
                    }
                    c = libc::CMSG_NXTHDR(&h.msg_hdr, c);
                }
            }
            let before = self.metas.len();
            let base = i * self.slot;
            self.metas
                .extend(meta.datagrams().map(|(at, m)| (m, base + at)));
            if self.metas.len() - before > 1 {
                self.merged.0 += 1;
                self.merged.1 += self.metas.len() - before;
            }
        }
        Ok(self.metas.len())
    }
}

/// One datagram to send: destination, local source address, payload.
pub type Outgoing<'a> = (SocketAddrV4, Ipv4Addr, &'a [u8]);

/// Sends `msgs` with as few `sendmmsg` calls as the kernel allows (each from its
/// own source address, as [`crate::udp::send_from`]). A datagram the kernel
/// refuses is skipped and reported through `on_error`; the rest still go.
pub async fn send_batch(
    sock: &UdpSocket,
    msgs: &[Outgoing<'_>],
    mut on_error: impl FnMut(&Outgoing<'_>, io::Error),
) {
    let mut done = 0;
    while done < msgs.len() {
        let chunk = &msgs[done..msgs.len().min(done + 64)];
        match sock
            .async_io(Interest::WRITABLE, || sendmmsg(sock.as_raw_fd(), chunk))
            .await
        {
            // sendmmsg sends at least one or fails; max(1) guards the loop anyway.
            Ok(n) => done += n.clamp(1, chunk.len()),
            Err(e) => {
                on_error(&chunk[0], e);
                done += 1;
            }
        }
    }
}

fn sendmmsg(fd: i32, msgs: &[Outgoing<'_>]) -> io::Result<usize> {
    let n = msgs.len();
    let mut names: Vec<libc::sockaddr_in> = msgs
        .iter()
        .map(|(d, _, _)| sockaddr_in(*d.ip(), d.port()))
        .collect();
    let mut iovs: Vec<libc::iovec> = msgs
        .iter()
        .map(|(_, _, p)| libc::iovec {
            iov_base: p.as_ptr() as *mut libc::c_void,
            iov_len: p.len(),
        })
        .collect();
    let mut cmsgs = vec![Cmsg([0; 64]); n];
    // SAFETY: all-zero is a valid mmsghdr.
    let mut hdrs: Vec<libc::mmsghdr> = vec![unsafe { zeroed() }; n];
    for i in 0..n {
        let h = &mut hdrs[i].msg_hdr;
        h.msg_name = (&mut names[i] as *mut libc::sockaddr_in).cast();
        h.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
        h.msg_iov = &mut iovs[i];
        h.msg_iovlen = 1;
        h.msg_control = cmsgs[i].0.as_mut_ptr().cast();
        // SAFETY: CMSG_SPACE is a pure size computation.
        h.msg_controllen =
            unsafe { libc::CMSG_SPACE(size_of::<libc::in_pktinfo>() as u32) } as usize;
        // SAFETY: the control buffer is 64 aligned octets, more than
        // CMSG_SPACE(in_pktinfo) = 24, so the first header and its data are in bounds.
        unsafe { crate::udp::write_pktinfo(libc::CMSG_FIRSTHDR(h), msgs[i].1)? };
    }
    // SAFETY: every header points at buffers that live until the call returns;
    // sendmmsg only reads them.
    let r = unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr(), n as libc::c_uint, libc::MSG_DONTWAIT) };
    sys::cvt_len(r as isize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::udp::UdpOptions;

    #[tokio::test]
    async fn a_batch_in_and_out_keeps_addresses_and_order() {
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
        for i in 0..10u8 {
            let to = SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1 + i % 2), port);
            client.send_to(&[i; 5], to).await.unwrap();
        }
        let mut rb = RecvBatch::new(8, 2048);
        let mut got = Vec::new();
        while got.len() < 10 {
            let n = rb.recv(&server).await.unwrap();
            assert!(n <= 8);
            for i in 0..n {
                let (m, p) = rb.get(i);
                got.push((m.dst.unwrap(), m.src, p.to_vec()));
            }
        }
        for (i, (dst, _, p)) in got.iter().enumerate() {
            assert_eq!(p, &vec![i as u8; 5]);
            assert_eq!(*dst, Ipv4Addr::new(127, 0, 0, 1 + i as u8 % 2));
        }
        assert!(matches!(
            rb.try_recv(&server),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock
        ));
        // Replies from the address each request was sent to.
        let replies: Vec<Outgoing> = got.iter().map(|(d, s, p)| (*s, *d, &p[..])).collect();
        send_batch(&server, &replies, |_, e| panic!("{e}")).await;
        let mut buf = [0u8; 64];
        for i in 0..10u8 {
            let (n, from) = client.recv_from(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], &[i; 5]);
            assert_eq!(
                from,
                std::net::SocketAddr::V4(SocketAddrV4::new(
                    Ipv4Addr::new(127, 0, 0, 1 + i % 2),
                    port
                ))
            );
        }
    }
}
