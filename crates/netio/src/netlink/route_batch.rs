//! Host routes in bulk: many `RTM_NEWROUTE` / `RTM_DELROUTE` requests in one
//! `sendmsg` on a raw `NETLINK_ROUTE` socket, for a home agent that binds
//! thousands of nodes a second (issue 15: one request and one acknowledgement
//! per route through rtnetlink cost about 4.6 us of CPU a route, 1.8 of it in
//! userspace).
//!
//! Only the last request of a batch asks for an acknowledgement (`NLM_F_ACK`);
//! the kernel handles a datagram's requests in order and answers a failed one
//! with an error whatever its flags, so once that last answer is in, every
//! error of the batch has arrived before it. The socket is blocking: it belongs
//! on a thread of its own (the home agent's route worker), never on an event
//! loop.

use crate::{Error, Result};
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const NLMSG_HDR: usize = 16;
const RTMSG: usize = 12;
const RTA_U32: usize = 8;
/// One request: header, `rtmsg`, `RTA_DST` and `RTA_OIF`.
const REQUEST: usize = NLMSG_HDR + RTMSG + 2 * RTA_U32;
/// Requests per `sendmsg` (about 22 kB).
pub const PER_SEND: usize = 512;

const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_CREATE: u16 = 0x400;
const RT_TABLE_MAIN: u8 = 254;
const RT_SCOPE_LINK: u8 = 253;
const RTN_UNICAST: u8 = 1;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const NETLINK_CAP_ACK: libc::c_int = 10;

/// One failed request of a batch.
#[derive(Debug)]
pub struct RouteFailure {
    pub dst: Ipv4Addr,
    /// Whether it was an addition (replace) or a removal.
    pub add: bool,
    pub error: io::Error,
}

/// A raw, blocking `NETLINK_ROUTE` socket for host routes through one device.
pub struct RouteBatch {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
    rx: Vec<u8>,
}

impl RouteBatch {
    pub fn new() -> Result<RouteBatch> {
        // SAFETY: plain socket(2); the result is checked before use.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if raw < 0 {
            return Err(Error::io("socket(AF_NETLINK)")(io::Error::last_os_error()));
        }
        // SAFETY: `raw` is a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let one: libc::c_int = 1;
        // Errors come back as the header only (not the whole request): smaller.
        // SAFETY: a valid socket and a c_int option of its size.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_NETLINK,
                NETLINK_CAP_ACK,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        // Room for a whole batch of errors (a reload that removes routes already gone).
        let size: libc::c_int = 4 << 20;
        for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
            // SAFETY: as above.
            let r = unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    opt,
                    (&size as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if r == 0 {
                break;
            }
        }
        // A lost answer must not hang the worker: give up on a batch after 5 s.
        let tv = libc::timeval {
            tv_sec: 5,
            tv_usec: 0,
        };
        // SAFETY: a valid socket and a timeval option of its size.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            );
        }
        Ok(RouteBatch {
            fd,
            seq: 1,
            buf: Vec::with_capacity(PER_SEND * REQUEST),
            rx: vec![0; 64 * 1024],
        })
    }

    /// Adds (replaces) or removes the host route `dst/32` through device `oif`,
    /// marked with routing protocol `protocol`, for each `(dst, add)`; returns the
    /// requests the kernel refused. An error of the socket itself fails them all.
    pub fn apply(
        &mut self,
        ops: &[(Ipv4Addr, bool)],
        oif: u32,
        protocol: u8,
    ) -> Result<Vec<RouteFailure>> {
        let mut failures = Vec::new();
        for chunk in ops.chunks(PER_SEND) {
            self.one_send(chunk, oif, protocol, &mut failures)?;
        }
        Ok(failures)
    }

    fn one_send(
        &mut self,
        ops: &[(Ipv4Addr, bool)],
        oif: u32,
        protocol: u8,
        failures: &mut Vec<RouteFailure>,
    ) -> Result<()> {
        let first = self.seq;
        self.buf.clear();
        for (i, (dst, add)) in ops.iter().enumerate() {
            let last = i + 1 == ops.len();
            let (ty, mut flags) = if *add {
                (RTM_NEWROUTE, NLM_F_REQUEST | NLM_F_CREATE | NLM_F_REPLACE)
            } else {
                (RTM_DELROUTE, NLM_F_REQUEST)
            };
            if last {
                flags |= NLM_F_ACK;
            }
            let seq = first.wrapping_add(i as u32);
            let b = &mut self.buf;
            b.extend_from_slice(&(REQUEST as u32).to_ne_bytes());
            b.extend_from_slice(&ty.to_ne_bytes());
            b.extend_from_slice(&flags.to_ne_bytes());
            b.extend_from_slice(&seq.to_ne_bytes());
            b.extend_from_slice(&0u32.to_ne_bytes());
            // rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags.
            b.extend_from_slice(&[
                libc::AF_INET as u8,
                32,
                0,
                0,
                RT_TABLE_MAIN,
                protocol,
                RT_SCOPE_LINK,
                RTN_UNICAST,
            ]);
            b.extend_from_slice(&0u32.to_ne_bytes());
            push_attr(b, RTA_DST, &dst.octets());
            push_attr(b, RTA_OIF, &oif.to_ne_bytes());
        }
        self.seq = first.wrapping_add(ops.len() as u32);
        let last_seq = self.seq.wrapping_sub(1);
        // SAFETY: the buffer is valid for its length; the kernel's address is the
        // default (pid 0) of a netlink socket that was never connected elsewhere.
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: `sa` and `self.buf` outlive the call.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                self.buf.as_ptr().cast(),
                self.buf.len(),
                0,
                (&sa as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if n < 0 {
            return Err(Error::io("netlink route batch send")(
                io::Error::last_os_error(),
            ));
        }
        // Answers until the acknowledgement of the last request.
        loop {
            // SAFETY: `self.rx` is valid for writes of its length.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    self.rx.as_mut_ptr().cast(),
                    self.rx.len(),
                    0,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(Error::io("netlink route batch receive")(e));
            }
            let mut done = false;
            let data = &self.rx[..n as usize];
            let mut off = 0;
            while off + NLMSG_HDR <= data.len() {
                let h = &data[off..];
                let len = u32::from_ne_bytes([h[0], h[1], h[2], h[3]]) as usize;
                if len < NLMSG_HDR || off + len > data.len() {
                    break;
                }
                let ty = u16::from_ne_bytes([h[4], h[5]]);
                let seq = u32::from_ne_bytes([h[8], h[9], h[10], h[11]]);
                if ty == NLMSG_ERROR && len >= NLMSG_HDR + 4 {
                    let err = i32::from_ne_bytes([h[16], h[17], h[18], h[19]]);
                    let k = seq.wrapping_sub(first) as usize;
                    if err != 0 {
                        if let Some((dst, add)) = ops.get(k) {
                            failures.push(RouteFailure {
                                dst: *dst,
                                add: *add,
                                error: io::Error::from_raw_os_error(-err),
                            });
                        }
                    }
                    if seq == last_seq {
                        done = true;
                    }
                }
                off += (len + 3) & !3;
            }
            if done {
                return Ok(());
            }
        }
    }
}

fn push_attr(b: &mut Vec<u8>, ty: u16, v: &[u8; 4]) {
    b.extend_from_slice(&(RTA_U32 as u16).to_ne_bytes());
    b.extend_from_slice(&ty.to_ne_bytes());
    b.extend_from_slice(v);
}
