//! Batched raw IPv4 I/O: `sendmmsg` and `recvmmsg` on a [`RawIp`] socket, so a tunnel
//! endpoint moves up to a batch of packets per system call. The buffers are owned by the
//! batch and reused, so nothing is allocated per packet.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;

use tokio::io::Interest;

use crate::raw::{outer_tos, sockaddr_in, RawIp, TosCmsg, IPPROTO_IPIP};
use crate::sys;

/// Most messages handed to one `sendmmsg`/`recvmmsg` (the kernel's `UIO_MAXIOV` is 1024).
pub const MAX_BATCH: usize = 256;

/// Packets queued for [`RawIp`] `send_to` semantics (the kernel builds the outer
/// header): payload and destination each.
#[derive(Default)]
pub struct RawSendBatch {
    data: Vec<u8>,
    /// Offset, length, destination, and the TOS when the caller gave one.
    msgs: Vec<(usize, usize, Ipv4Addr, Option<u8>)>,
    names: Vec<libc::sockaddr_in>,
    iovs: Vec<libc::iovec>,
    /// Each IP-in-IP packet's outer TOS ([`outer_tos`]), when it is not 0.
    ctrls: Vec<Option<TosCmsg>>,
    hdrs: Vec<libc::mmsghdr>,
}

// SAFETY: the raw pointers in `iovs`/`hdrs` only point into this struct's own buffers
// and are rebuilt right before every system call.
unsafe impl Send for RawSendBatch {}

impl std::fmt::Debug for RawSendBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawSendBatch")
            .field("queued", &self.msgs.len())
            .finish()
    }
}

impl RawSendBatch {
    pub fn new() -> RawSendBatch {
        RawSendBatch::default()
    }

    /// Queued packets.
    pub fn len(&self) -> usize {
        self.msgs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.msgs.is_empty()
    }

    /// Queues a copy of `payload` for `dst` (an IP-in-IP packet's outer TOS is
    /// [`outer_tos`] of it).
    pub fn push(&mut self, payload: &[u8], dst: Ipv4Addr) {
        let start = self.data.len();
        self.data.extend_from_slice(payload);
        self.msgs.push((start, payload.len(), dst, None));
    }

    /// [`RawSendBatch::push`] with `tos` as its header's TOS octet (0: the socket's),
    /// for a payload whose own header cannot say it (ESP).
    pub fn push_tos(&mut self, payload: &[u8], dst: Ipv4Addr, tos: u8) {
        let start = self.data.len();
        self.data.extend_from_slice(payload);
        self.msgs.push((start, payload.len(), dst, Some(tos)));
    }

    /// Sends everything queued, waiting for room in the socket when it is full, and
    /// empties the batch. A packet the kernel refuses is skipped and passed to
    /// `on_error`; the others still go. Returns how many packets, and octets of
    /// payload, were sent.
    pub async fn flush(
        &mut self,
        sock: &RawIp,
        mut on_error: impl FnMut(Ipv4Addr, io::Error),
    ) -> (usize, usize) {
        let mut done = 0;
        let mut sent = 0;
        let mut bytes = 0;
        while done < self.msgs.len() {
            let end = self.msgs.len().min(done + MAX_BATCH);
            let r = sock
                .async_fd()
                .async_io(Interest::WRITABLE, |s| {
                    self.sendmmsg(s.as_raw_fd(), sock.protocol(), done, end)
                })
                .await;
            match r {
                Ok(n) => {
                    let n = n.clamp(1, end - done);
                    bytes += self.msgs[done..done + n].iter().map(|m| m.1).sum::<usize>();
                    done += n;
                    sent += n;
                }
                Err(e) => {
                    on_error(self.msgs[done].2, e);
                    done += 1;
                }
            }
        }
        self.data.clear();
        self.msgs.clear();
        (sent, bytes)
    }

    fn sendmmsg(&mut self, fd: i32, protocol: u8, from: usize, to: usize) -> io::Result<usize> {
        let n = to - from;
        self.names.clear();
        self.iovs.clear();
        self.ctrls.clear();
        self.hdrs.clear();
        for &(start, len, dst, tos) in &self.msgs[from..to] {
            self.names.push(sockaddr_in(dst, 0));
            self.iovs.push(libc::iovec {
                iov_base: self.data[start..].as_ptr() as *mut libc::c_void,
                iov_len: len,
            });
            let tos = match (tos, protocol) {
                (Some(t), _) => t,
                (None, IPPROTO_IPIP) => outer_tos(&self.data[start..start + len]),
                (None, _) => 0,
            };
            self.ctrls.push((tos != 0).then(|| TosCmsg::new(tos)));
        }
        for i in 0..n {
            // SAFETY: all-zero is a valid mmsghdr.
            let mut h: libc::mmsghdr = unsafe { zeroed() };
            h.msg_hdr.msg_name = (&mut self.names[i] as *mut libc::sockaddr_in).cast();
            h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
            h.msg_hdr.msg_iov = &mut self.iovs[i];
            h.msg_hdr.msg_iovlen = 1;
            if let Some(c) = &mut self.ctrls[i] {
                h.msg_hdr.msg_control = c.as_mut_ptr();
                h.msg_hdr.msg_controllen = TosCmsg::space();
            }
            self.hdrs.push(h);
        }
        // SAFETY: each header points at a sockaddr_in, an iovec and maybe a control
        // message in `self`, and each iovec into `self.data`; none of them moves or is
        // freed during the call, and sendmmsg only reads them.
        let r = unsafe {
            libc::sendmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        sys::cvt_len(r as isize)
    }
}

/// Buffers for receiving up to `count` whole IPv4 packets (outer header included, as
/// [`RawIp::recv_from`]) with one `recvmmsg`.
pub struct RawRecvBatch {
    slot: usize,
    data: Vec<u8>,
    names: Vec<libc::sockaddr_in>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    got: Vec<(usize, Ipv4Addr)>,
}

// SAFETY: as for RawSendBatch.
unsafe impl Send for RawRecvBatch {}

impl RawRecvBatch {
    /// Room for `count` (at most [`MAX_BATCH`]) packets of `slot` octets each.
    pub fn new(count: usize, slot: usize) -> RawRecvBatch {
        let count = count.clamp(1, MAX_BATCH);
        RawRecvBatch {
            slot,
            data: vec![0; count * slot],
            // SAFETY: all-zero is a valid sockaddr_in, iovec and mmsghdr.
            names: vec![unsafe { zeroed() }; count],
            iovs: vec![unsafe { zeroed() }; count],
            hdrs: vec![unsafe { zeroed() }; count],
            got: Vec::with_capacity(count),
        }
    }

    /// Waits until the socket is readable, then takes what is queued, up to the batch
    /// size. Returns how many packets ([`get`](Self::get) reads them).
    pub async fn recv(&mut self, sock: &RawIp) -> io::Result<usize> {
        sock.async_fd()
            .async_io(Interest::READABLE, |s| self.recvmmsg(s.as_raw_fd()))
            .await
    }

    /// Without waiting: `WouldBlock` when nothing is queued.
    pub fn try_recv(&mut self, sock: &RawIp) -> io::Result<usize> {
        sock.async_fd()
            .try_io(Interest::READABLE, |s| self.recvmmsg(s.as_raw_fd()))
    }

    /// Packet `i` of the last receive and its source address (`None` past the end).
    pub fn get(&self, i: usize) -> Option<(&[u8], Ipv4Addr)> {
        let (len, src) = *self.got.get(i)?;
        let start = i * self.slot;
        Some((self.data.get(start..start + len)?, src))
    }

    fn recvmmsg(&mut self, fd: i32) -> io::Result<usize> {
        let count = self.hdrs.len();
        self.got.clear();
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
            let len = (self.hdrs[i].msg_len as usize).min(self.slot);
            let src = Ipv4Addr::from(u32::from_be(self.names[i].sin_addr.s_addr));
            self.got.push((len, src));
        }
        Ok(n)
    }
}
