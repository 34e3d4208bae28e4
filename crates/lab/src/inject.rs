//! A packet injector for attacks on outside links (issue 17 item 2): IPv4 packets built
//! here or lifted from a capture, sent as they are (any source address) through a raw
//! socket from an attacker's namespace; plus the pieces of the client under attack
//! (`mipsec vpn` with a chosen kill switch) and a capture of one bridge.
//!
//! The attacker is the lab's stranger `ev` moved onto ext-a ([`crate::dhcp::stranger_to_ext_a`]);
//! frames from its MAC are what the leak classifier calls `injected`.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::RngCore;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::leak::Frame;
use crate::netns::{self, other, Result};
use crate::topo::Lab;

fn sum16(b: &[u8]) -> u32 {
    b.chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum()
}

fn fold(mut s: u32) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// An IPv4 packet (no options, TTL 64, DF clear) with a correct header checksum.
pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, payload: &[u8]) -> Vec<u8> {
    let total = u16::try_from(20 + payload.len()).unwrap_or(u16::MAX);
    let id = (rand::random::<u32>() & 0xffff) as u16;
    let mut h = vec![0x45, 0];
    h.extend_from_slice(&total.to_be_bytes());
    h.extend_from_slice(&id.to_be_bytes());
    h.extend_from_slice(&[0, 0, 64, proto, 0, 0]);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    let c = fold(sum16(&h));
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h.extend_from_slice(payload);
    h
}

/// A UDP datagram in an IPv4 packet, with a correct UDP checksum.
pub fn udp(src: SocketAddrV4, dst: SocketAddrV4, data: &[u8]) -> Vec<u8> {
    let len = u16::try_from(8 + data.len()).unwrap_or(u16::MAX);
    let mut u = Vec::with_capacity(8 + data.len());
    u.extend_from_slice(&src.port().to_be_bytes());
    u.extend_from_slice(&dst.port().to_be_bytes());
    u.extend_from_slice(&len.to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(data);
    let mut pseudo = Vec::with_capacity(12);
    pseudo.extend_from_slice(&src.ip().octets());
    pseudo.extend_from_slice(&dst.ip().octets());
    pseudo.extend_from_slice(&[0, 17]);
    pseudo.extend_from_slice(&len.to_be_bytes());
    let mut c = fold(sum16(&pseudo) + sum16(&u));
    if c == 0 {
        c = 0xffff;
    }
    u[6..8].copy_from_slice(&c.to_be_bytes());
    ipv4(*src.ip(), *dst.ip(), 17, &u)
}

/// `len` random octets.
pub fn random_bytes(len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len];
    rand::thread_rng().fill_bytes(&mut b);
    b
}

/// An ESP packet body: SPI, sequence number, then `len` random octets (which no key
/// authenticates).
pub fn forged_esp(spi: u32, seq: u32, len: usize) -> Vec<u8> {
    let mut e = spi.to_be_bytes().to_vec();
    e.extend_from_slice(&seq.to_be_bytes());
    e.extend_from_slice(&random_bytes(len));
    e
}

/// A Registration Reply (RFC 5944 3.4): code, lifetime, home address, home agent,
/// identification, then `ext` (extensions as they are).
pub fn registration_reply(code: u8, hoa: Ipv4Addr, ha: Ipv4Addr, id: u64, ext: &[u8]) -> Vec<u8> {
    let mut m = vec![3, code];
    m.extend_from_slice(&300u16.to_be_bytes());
    m.extend_from_slice(&hoa.octets());
    m.extend_from_slice(&ha.octets());
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(ext);
    m
}

/// An ICMP Router Advertisement with the Mobility Agent Advertisement Extension
/// (RFC 5944 2.1): a foreign agent (F flag, and R: registration required) at `src`
/// offering `coa`, sequence number `seq`, in an IPv4 packet with TTL 1 to `dst`.
pub fn agent_advertisement(src: Ipv4Addr, dst: Ipv4Addr, coa: Ipv4Addr, seq: u16) -> Vec<u8> {
    // type 9, code 16 (does not route common traffic), checksum, 1 address of 2 words,
    // lifetime 9000 s, the agent's address with preference 0.
    let mut m = vec![9, 16, 0, 0, 1, 2];
    m.extend_from_slice(&9000u16.to_be_bytes());
    m.extend_from_slice(&src.octets());
    m.extend_from_slice(&[0; 4]);
    // Extension 16: length 10, sequence, registration lifetime, flags R|F, reserved, CoA.
    m.extend_from_slice(&[16, 10]);
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(&1800u16.to_be_bytes());
    m.extend_from_slice(&[0x80 | 0x10, 0]);
    m.extend_from_slice(&coa.octets());
    let c = fold(sum16(&m));
    m[2..4].copy_from_slice(&c.to_be_bytes());
    let mut p = ipv4(src, dst, 1, &m);
    p[8] = 1; // TTL 1 (RFC 5944 2.1)
    p[10..12].copy_from_slice(&[0, 0]);
    let c = fold(sum16(&p[..20]));
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p
}

/// Sends each IPv4 packet as it is (source address included) from namespace `ns`
/// through a raw socket (IPPROTO_RAW: the kernel adds no header and routes by the
/// destination). Returns the number sent.
pub fn send_raw(ns: &str, packets: Vec<Vec<u8>>) -> Result<usize> {
    let h = netns::spawn_in(ns, move || {
        let s = Socket::new(
            Domain::IPV4,
            Type::RAW,
            Some(Protocol::from(libc::IPPROTO_RAW)),
        )?;
        s.set_broadcast(true)?;
        let mut n = 0;
        for p in &packets {
            let dst = p
                .get(16..20)
                .and_then(|d| <[u8; 4]>::try_from(d).ok())
                .map(Ipv4Addr::from)
                .ok_or_else(|| other("packet shorter than an IPv4 header"))?;
            s.send_to(p, &SockAddr::from(SocketAddrV4::new(dst, 0)))?;
            n += 1;
            // Paced, so no receiver's queue decides the outcome.
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(n)
    });
    h.join().map_err(|_| other("injector thread panicked"))?
}

/// The IPv4 packet of an Ethernet frame.
pub fn ip_of(f: &Frame) -> Option<&[u8]> {
    (f.linktype == 1 && f.data.get(12..14) == Some(&[8, 0]))
        .then(|| f.data.get(14..))
        .flatten()
}

/// The first captured IPv4 packet (whole, as on the wire) carrying a Mobile IP
/// Registration Reply (UDP source port 434, type 3) from `from`.
pub fn captured_reply(pcap: &Path, from: Ipv4Addr) -> Result<Vec<u8>> {
    // Streamed, and only up to the first reply: a soak's captures reach gigabytes,
    // and reading one whole took the injector attack 7-15 s before it sent anything.
    let file = std::io::BufReader::new(std::fs::File::open(pcap)?);
    let mut found = None;
    crate::leak::each_frame_while(file, |f| {
        found = reply_in(f, from);
        found.is_none()
    })
    .map_err(|e| other(format!("{}: {e}", pcap.display())))?;
    found.ok_or_else(|| {
        other(format!(
            "no registration reply from {from} in {}",
            pcap.display()
        ))
    })
}

/// The IPv4 packet of a registration reply from `from` in this frame, if it is one.
fn reply_in(f: &Frame, from: Ipv4Addr) -> Option<Vec<u8>> {
    let p = ip_of(f)?;
    let ihl = usize::from(p.first().copied().unwrap_or(0) & 0xf) * 4;
    let total = p
        .get(2..4)
        .map_or(0, |b| usize::from(u16::from_be_bytes([b[0], b[1]])));
    if p.len() < 20 || p[9] != 17 || p.get(12..16) != Some(&from.octets()) || total > p.len() {
        return None;
    }
    let u = p.get(ihl..total).unwrap_or(&[]);
    (u.get(0..2) == Some(&434u16.to_be_bytes()) && u.get(8) == Some(&3))
        .then(|| p[..total].to_vec())
}

/// Does the Registration Reply in this IPv4/UDP packet carry the Trusted Networks
/// Configured extension (type 149, RFC 5265)? Walks the extensions after the 20-octet
/// fixed part.
pub fn reply_has_tnc(p: &[u8]) -> bool {
    let ihl = usize::from(p.first().copied().unwrap_or(0) & 0xf) * 4;
    let Some(m) = p.get(ihl + 8..) else {
        return false;
    };
    let mut i = 20;
    while let (Some(&t), Some(&l)) = (m.get(i), m.get(i + 1)) {
        if t == 149 {
            return true;
        }
        i += 2 + usize::from(l);
    }
    false
}

/// Starts tcpdump on `bridge` in the switch namespace as process `name`, writing `file`,
/// and waits until it listens.
pub fn capture(lab: &mut Lab, name: &str, bridge: &str, file: &Path) -> Result<()> {
    let _ = std::fs::remove_file(file);
    let f = file.display().to_string();
    lab.spawn_prog(
        "sw",
        name,
        "tcpdump".as_ref(),
        &[
            "-i",
            bridge,
            "-n",
            "--immediate-mode",
            "-U",
            "-s",
            "0",
            "-w",
            &f,
        ],
    )?;
    let t0 = Instant::now();
    while !std::fs::read_to_string(lab.log_path(name)).is_ok_and(|s| s.contains("listening on")) {
        if t0.elapsed() > Duration::from_secs(10) {
            return Err(other(format!("tcpdump {name} did not start")));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Stops a capture started by [`capture`] (SIGINT: tcpdump flushes and exits).
pub fn stop_capture(lab: &mut Lab, name: &str) {
    std::thread::sleep(Duration::from_millis(100));
    lab.stop(name, libc::SIGINT);
}

/// The MAC address of `dev` in namespace `role`.
pub fn mac_of(lab: &Lab, role: &str, dev: &str) -> Result<[u8; 6]> {
    let out = netns::run("ip", &["-n", &lab.ns(role), "-br", "link", "show", dev])?;
    out.split_whitespace()
        .find_map(crate::leak::parse_mac)
        .ok_or_else(|| other(format!("no MAC for {dev} in {role}: {out}")))
}

/// `mipsec vpn`'s config for the MN ([`crate::gateway::vpn_config`], PSK) with
/// `kill_switch` set to `nets` (None: the client's default).
pub fn vpn_config_with_kill_switch(lab: &Lab, nets: Option<&[&str]>) -> Result<(String, PathBuf)> {
    let (cfg, sock) = crate::gateway::vpn_config(lab, crate::gateway::GwAuth::Psk)?;
    if let Some(nets) = nets {
        let mut text = std::fs::read_to_string(&cfg)?;
        let list: Vec<String> = nets.iter().map(|n| format!("\"{n}\"")).collect();
        text += &format!("kill_switch = [{}]\n", list.join(", "));
        crate::mip::write_private(Path::new(&cfg), &text)?;
    }
    Ok((cfg, sock))
}

/// Starts `mipsec vpn --config cfg` in the MN namespace as process `vpn` and waits until
/// it holds a TIA; returns it and the time taken.
pub fn start_vpn_with(lab: &mut Lab, cfg: &str, sock: &Path) -> Result<(Ipv4Addr, Duration)> {
    let t0 = Instant::now();
    lab.spawn("mn", "vpn", &["mipsec", "vpn", "--config", cfg])?;
    while t0.elapsed() < Duration::from_secs(15) && lab.is_running("vpn") {
        if let Ok(v) = crate::gateway::vpn_status(sock) {
            if let Some(t) = v["tia"].as_str().and_then(|t| t.parse().ok()) {
                return Ok((t, t0.elapsed()));
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(other(format!(
        "mipsec vpn got no TIA:\n{}",
        lab.log_tail("vpn", 30)
    )))
}
