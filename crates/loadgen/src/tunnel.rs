//! `mipsec-loadgen tunnel`: N nodes, each behind a NAT of its own (its own UDP
//! port), register with RFC 3519 UDP tunnelling and then send Tunnel Data to the
//! home agent as fast as they can, to measure what the home agent delivers into
//! its tunnel device (the reverse tunnel of nodes behind NATs).
//!
//! The registration (RFC 5944 section 3.3 with the T bit, RFC 3519 section 3.1's
//! UDP Tunnel Request extension, MN-HA authentication) and the Tunnel Data (RFC
//! 3519 section 3.4: type 4, next header 4, then the inner IPv4 packet) are built
//! here from the RFCs, as the rest of this crate, not with mipsec's codec.

use crate::{ntp_seconds, Config};
use hmac::{Hmac, Mac};
use md5::Md5;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// What to send once registered.
#[derive(Debug, Clone)]
pub struct TunnelConfig {
    /// The nodes, the home agent, the key (`window` and `verify` are not used).
    pub base: Config,
    /// The inner packet's length (IPv4 + UDP + payload), 28..=1472.
    pub size: usize,
    /// Where the inner packets go (a blackhole route at the home agent, say).
    pub sink: SocketAddrV4,
    /// Tunnel Data messages per send: above 1, one UDP GSO send (`UDP_SEGMENT`) of
    /// that many, as a burst that a receiving NIC's GRO would merge.
    pub per_send: u16,
    pub threads: usize,
}

/// What the generator did.
#[derive(Debug, Clone, Default)]
pub struct TunnelFigures {
    /// Nodes whose registration was accepted.
    pub registered: u64,
    /// Tunnel Data messages sent, and their inner octets.
    pub sent: u64,
    pub inner_bytes: u64,
    /// Sends the kernel refused (a full socket buffer, say).
    pub send_errors: u64,
    pub elapsed: Duration,
}

impl std::fmt::Display for TunnelFigures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.elapsed.as_secs_f64().max(1e-9);
        write!(
            f,
            "{} nodes registered; {} Tunnel Data messages in {:.2} s: {:.0}/s, {:.0} Mbit/s inner; {} sends refused",
            self.registered,
            self.sent,
            s,
            self.sent as f64 / s,
            self.inner_bytes as f64 * 8.0 / s / 1e6,
            self.send_errors
        )
    }
}

/// Flags octet: D (co-located care-of address) and T (reverse tunnelling).
const FLAGS_D_T: u8 = 0x20 | 0x02;
/// RFC 3519 section 3.1: type 144, length 6, sub-type 0, reserved, flags (F, R
/// clear), encapsulation 4 (IP-in-IP), reserved.
const UDP_TUNNEL_REQUEST: [u8; 8] = [144, 6, 0, 0, 0, 4, 0, 0];

/// A signed Registration Request asking for UDP tunnelling and the reverse tunnel.
pub fn udp_tunnel_request(cfg: &Config, keyed: &Hmac<Md5>, home: Ipv4Addr, ident: u64) -> Vec<u8> {
    let mut b = Vec::with_capacity(24 + 8 + 22);
    b.extend_from_slice(&[1, FLAGS_D_T]);
    b.extend_from_slice(&cfg.lifetime.to_be_bytes());
    b.extend_from_slice(&home.octets());
    b.extend_from_slice(&cfg.ha.ip().octets());
    b.extend_from_slice(&cfg.care_of.octets());
    b.extend_from_slice(&ident.to_be_bytes());
    b.extend_from_slice(&UDP_TUNNEL_REQUEST);
    b.extend_from_slice(&[32, 20]);
    b.extend_from_slice(&cfg.spi.to_be_bytes());
    let mut m = keyed.clone();
    m.update(&b);
    b.extend_from_slice(&m.finalize().into_bytes());
    b
}

/// One Tunnel Data message: the header, then IPv4 (checksum right) and UDP (no
/// checksum) from `home` to `sink`, `size` octets in all inside.
pub fn tunnel_data(home: Ipv4Addr, sink: SocketAddrV4, size: usize, id: u16) -> Vec<u8> {
    let size = size.clamp(28, 1472);
    let mut p = vec![4u8, 4, 0, 0, 0x45, 0];
    p.extend_from_slice(&(size as u16).to_be_bytes());
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&[0x40, 0, 64, 17, 0, 0]);
    p.extend_from_slice(&home.octets());
    p.extend_from_slice(&sink.ip().octets());
    let sum = ipv4_checksum(&p[4..24]);
    p[14..16].copy_from_slice(&sum.to_be_bytes());
    p.extend_from_slice(&9000u16.to_be_bytes());
    p.extend_from_slice(&sink.port().to_be_bytes());
    p.extend_from_slice(&((size - 20) as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.resize(4 + size, 0x5a);
    p
}

fn ipv4_checksum(h: &[u8]) -> u16 {
    let mut s: u32 = h
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// Registers every node from its own socket, then sends for `duration` from all
/// of them round robin, on `threads` threads (each a contiguous share of the
/// nodes); the sending starts on every thread at once.
pub fn run_tunnel(tc: &TunnelConfig) -> io::Result<TunnelFigures> {
    let threads = tc.threads.clamp(1, tc.base.nodes.max(1) as usize);
    let per = tc.base.nodes / threads as u32;
    let start = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let mut c = tc.clone();
            let first = per * t as u32;
            c.base.first_home = Ipv4Addr::from(u32::from(tc.base.first_home).wrapping_add(first));
            c.base.nodes = if t + 1 == threads {
                tc.base.nodes - first
            } else {
                per
            };
            let start = start.clone();
            std::thread::spawn(move || one_thread(&c, &start))
        })
        .collect();
    let mut all = TunnelFigures::default();
    for h in handles {
        let f = h
            .join()
            .map_err(|_| io::Error::other("generator thread panicked"))??;
        all.registered += f.registered;
        all.sent += f.sent;
        all.inner_bytes += f.inner_bytes;
        all.send_errors += f.send_errors;
        all.elapsed = all.elapsed.max(f.elapsed);
    }
    Ok(all)
}

fn one_thread(tc: &TunnelConfig, start: &Barrier) -> io::Result<TunnelFigures> {
    let cfg = &tc.base;
    let keyed = <Hmac<Md5> as Mac>::new_from_slice(&cfg.key)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "bad key"))?;
    let mut f = TunnelFigures::default();
    let mut nodes = Vec::new();
    for i in 0..cfg.nodes {
        let home = Ipv4Addr::from(u32::from(cfg.first_home).wrapping_add(i));
        let s = UdpSocket::bind(cfg.bind)?;
        s.set_read_timeout(Some(cfg.timeout))?;
        let mut accepted = false;
        for attempt in 0..3u64 {
            let ident = (ntp_seconds() << 32) | (u64::from(i) << 4) | attempt;
            s.send_to(&udp_tunnel_request(cfg, &keyed, home, ident), cfg.ha)?;
            let mut buf = [0u8; 512];
            if let Ok(n) = s.recv(&mut buf) {
                // A reply (type 3) with code 0 or 1.
                accepted = n >= 20 && buf[0] == 3 && buf[1] <= 1;
                break;
            }
        }
        if accepted {
            f.registered += 1;
            let burst: Vec<u8> = (0..tc.per_send.max(1))
                .flat_map(|k| tunnel_data(home, tc.sink, tc.size, k))
                .collect();
            nodes.push((s, burst));
        }
    }
    start.wait();
    let seg = (4 + tc.size.clamp(28, 1472)) as u16;
    let per = u64::from(tc.per_send.max(1));
    let t0 = Instant::now();
    'send: loop {
        for (s, burst) in &nodes {
            if t0.elapsed() >= cfg.duration {
                break 'send;
            }
            let ok = match per {
                1 => s.send_to(burst, cfg.ha).is_ok(),
                _ => send_gso(s, burst, cfg.ha, seg).is_ok(),
            };
            if ok {
                f.sent += per;
                f.inner_bytes += per * (u64::from(seg) - 4);
            } else {
                f.send_errors += 1;
            }
        }
        if nodes.is_empty() {
            break;
        }
    }
    f.elapsed = t0.elapsed();
    Ok(f)
}

/// One `sendmsg` of `buf` cut into datagrams of `seg` octets (`UDP_SEGMENT`).
fn send_gso(s: &UdpSocket, buf: &[u8], to: SocketAddrV4, seg: u16) -> io::Result<()> {
    const UDP_SEGMENT: libc::c_int = 103;
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: to.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*to.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    let mut iov = libc::iovec {
        iov_base: buf.as_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // Room for one cmsghdr and a u16, aligned.
    let mut control = [0u64; 4];
    // SAFETY: an all-zero msghdr is valid; every pointer set below outlives the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&addr as *const libc::sockaddr_in).cast_mut().cast();
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE only computes a size.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(2) } as usize;
    // SAFETY: msg_control points at a buffer of at least CMSG_SPACE(2) octets, so
    // the first header and its 2 data octets are inside it.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_UDP;
        (*c).cmsg_type = UDP_SEGMENT;
        (*c).cmsg_len = libc::CMSG_LEN(2) as usize;
        std::ptr::copy_nonoverlapping(seg.to_ne_bytes().as_ptr(), libc::CMSG_DATA(c), 2);
    }
    // SAFETY: a valid socket and a msghdr whose pointers are all live.
    let r = unsafe { libc::sendmsg(s.as_raw_fd(), &msg, 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tunnel_data_is_an_rfc_3519_message_around_a_valid_ipv4_packet() {
        let sink = SocketAddrV4::new(Ipv4Addr::new(10, 200, 0, 1), 9);
        let p = tunnel_data(Ipv4Addr::new(10, 129, 0, 3), sink, 100, 7);
        assert_eq!(p.len(), 104);
        assert_eq!(&p[..4], &[4, 4, 0, 0]);
        assert_eq!(ipv4_checksum(&p[4..24]), 0, "the header checksum verifies");
        assert_eq!(u16::from_be_bytes([p[6], p[7]]), 100);
        assert_eq!(&p[16..20], &[10, 129, 0, 3]);
        assert_eq!(u16::from_be_bytes([p[28], p[29]]), 80, "UDP length");
    }

    #[test]
    fn the_request_carries_t_and_the_udp_tunnel_request_before_its_authenticator() {
        let cfg = crate::test_config();
        let keyed = <Hmac<Md5> as Mac>::new_from_slice(&cfg.key).unwrap();
        let r = udp_tunnel_request(&cfg, &keyed, cfg.first_home, 1);
        assert_eq!(r.len(), 24 + 8 + 22);
        assert_eq!(r[1], 0x22, "D and T");
        assert_eq!(&r[24..32], &UDP_TUNNEL_REQUEST);
        let mut m = keyed.clone();
        m.update(&r[..38]);
        assert_eq!(&r[38..], m.finalize().into_bytes().as_slice());
        // mipsec's own codec reads it the same way.
        let parsed = mip4::wire::RegistrationRequest::parse(&r).unwrap();
        assert!(parsed.extensions.iter().any(|e| matches!(
            e,
            mip4::wire::Extension::UdpTunnelRequest {
                force: false,
                r: false,
                encapsulation: 4
            }
        )));
    }
}
