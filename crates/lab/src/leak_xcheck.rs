//! The leak classifier's decoder cross-checked against tshark: for every frame of a
//! pcap, the IPv4 addresses of every IP header our decoder walks (outer, IP-in-IP and
//! RFC 3519 inner packets, headers quoted by ICMP errors), the ESP SPI and the ARP
//! protocol addresses must equal what tshark's dissectors report in `ip.src`/`ip.dst`,
//! `esp.spi` and `arp.*.proto_ipv4`.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;

use crate::leak::{read_pcap, Frame};
use crate::netns::{other, Result};

/// What both decoders must agree on, per frame.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fields {
    pub ip_addrs: BTreeSet<Ipv4Addr>,
    pub esp_spi: Option<u32>,
    pub arp: Option<(Ipv4Addr, Ipv4Addr)>,
}

fn be16(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(o..o + 2)?.try_into().ok()?))
}

fn be32(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(o..o + 4)?.try_into().ok()?))
}

/// Our decoder's fields of an Ethernet frame.
pub fn ours(f: &Frame) -> Fields {
    let mut out = Fields::default();
    if f.linktype != 1 {
        return out;
    }
    let d = &f.data;
    match be16(d, 12) {
        Some(0x0806) => {
            if let (Some(s), Some(t)) = (be32(d, 14 + 14), be32(d, 14 + 24)) {
                out.arp = Some((Ipv4Addr::from(s), Ipv4Addr::from(t)));
            }
        }
        Some(0x0800) => walk_ip(d.get(14..).unwrap_or(&[]), &mut out, 0),
        _ => {}
    }
    out
}

fn walk_ip(p: &[u8], out: &mut Fields, depth: usize) {
    if depth > 3 || p.first().map(|b| b >> 4) != Some(4) || p.len() < 20 {
        return;
    }
    let ihl = usize::from(p[0] & 0xf) * 4;
    let total = usize::from(be16(p, 2).unwrap_or(0)).min(p.len());
    if let (Some(s), Some(d)) = (be32(p, 12), be32(p, 16)) {
        out.ip_addrs.insert(Ipv4Addr::from(s));
        out.ip_addrs.insert(Ipv4Addr::from(d));
    }
    let frag = be16(p, 6).unwrap_or(0) & 0x1fff != 0;
    let Some(pl) = p.get(ihl..total) else {
        return;
    };
    if frag {
        return;
    }
    match p[9] {
        4 => walk_ip(pl, out, depth + 1),
        50 => out.esp_spi = be32(pl, 0),
        1 if matches!(pl.first(), Some(3 | 4 | 5 | 11 | 12)) => {
            walk_ip(pl.get(8..).unwrap_or(&[]), out, depth + 1)
        }
        17 => {
            let (sp, dp) = (be16(pl, 0).unwrap_or(0), be16(pl, 2).unwrap_or(0));
            let data = pl.get(8..).unwrap_or(&[]);
            if (sp == 4500 || dp == 4500) && data.len() >= 8 && be32(data, 0) != Some(0) {
                out.esp_spi = be32(data, 0);
            }
            if (sp == 434 || dp == 434) && data.first() == Some(&4) && data.get(1) == Some(&4) {
                walk_ip(data.get(4..).unwrap_or(&[]), out, depth + 1);
            }
        }
        _ => {}
    }
}

fn parse_addrs(s: &str) -> Result<BTreeSet<Ipv4Addr>> {
    s.split(',')
        .filter(|a| !a.is_empty())
        .map(|a| {
            a.parse()
                .map_err(|_| other(format!("tshark address {a:?}")))
        })
        .collect()
}

/// tshark's fields, frame by frame.
pub fn tshark(path: &Path) -> Result<Vec<Fields>> {
    let out = Command::new("tshark")
        .args(["-n", "-r"])
        .arg(path)
        .args(["-d", "udp.port==4500,udpencap"])
        .args(["-T", "fields", "-E", "occurrence=a", "-E", "aggregator=,"])
        .args(["-e", "ip.src", "-e", "ip.dst", "-e", "esp.spi"])
        .args(["-e", "arp.src.proto_ipv4", "-e", "arp.dst.proto_ipv4"])
        .output()?;
    if !out.status.success() {
        return Err(other(format!(
            "tshark: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut v = Vec::new();
    for line in text.lines() {
        let c: Vec<&str> = line.split('\t').collect();
        let col = |i: usize| c.get(i).copied().unwrap_or("");
        let mut f = Fields {
            ip_addrs: parse_addrs(col(0))?,
            ..Fields::default()
        };
        f.ip_addrs.extend(parse_addrs(col(1))?);
        if let Some(spi) = col(2).split(',').next().filter(|s| !s.is_empty()) {
            let spi = spi.trim_start_matches("0x");
            f.esp_spi =
                Some(u32::from_str_radix(spi, 16).map_err(|_| other(format!("tshark spi {spi}")))?);
        }
        if let (Ok(s), Ok(t)) = (col(3).parse(), col(4).parse()) {
            f.arp = Some((s, t));
        }
        v.push(f);
    }
    Ok(v)
}

/// Compares both decoders on every frame of `path`; returns the number of frames
/// compared, or the frames (1-based) where they disagree.
pub fn crosscheck(path: &Path) -> Result<usize> {
    let frames = read_pcap(path)?;
    let theirs = tshark(path)?;
    if frames.len() != theirs.len() {
        return Err(other(format!(
            "{}: {} frames, tshark {}",
            path.display(),
            frames.len(),
            theirs.len()
        )));
    }
    let mut bad = Vec::new();
    for (i, (f, t)) in frames.iter().zip(&theirs).enumerate() {
        let o = ours(f);
        if o != *t {
            bad.push(format!("frame {}: ours {o:?}, tshark {t:?}", i + 1));
        }
    }
    if bad.is_empty() {
        Ok(frames.len())
    } else {
        Err(other(format!(
            "{}: decoders disagree:\n{}",
            path.display(),
            bad.join("\n")
        )))
    }
}
