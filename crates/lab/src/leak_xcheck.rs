//! The leak classifier's decoder cross-checked against tshark: for every frame of a
//! pcap, what the classifier itself decoded ([`Trace`]: the addresses of every IP header
//! it walked, outer, IP-in-IP and RFC 3519 inner packets and headers quoted by ICMP
//! errors; the ESP SPI; the ARP protocol addresses) must equal what tshark's dissectors
//! report in `ip.src`/`ip.dst`, `esp.spi` and `arp.*.proto_ipv4`. A frame the classifier
//! calls a leak may have been walked only up to the leak: there what it decoded must be
//! part of tshark's (a subset), never different.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;

use crate::leak::{classify_traced, read_pcap, Class, Plan, Trace, Verdict};
use crate::netns::{other, Result};

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
pub fn tshark(path: &Path) -> Result<Vec<Trace>> {
    let out = Command::new("tshark")
        .args(["-n", "-r"])
        .arg(path)
        .args(["-d", "udp.port==4500,udpencap", "-o", "ip.defragment:FALSE"])
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
        let mut f = Trace {
            ip_addrs: parse_addrs(col(0))?,
            ..Trace::default()
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

/// Where the classifier's decoding of a frame and tshark's differ, if they do.
pub fn compare(vd: &Verdict, ours: &Trace, theirs: &Trace) -> Option<String> {
    let partial = vd.class == Class::Leak;
    let same = if partial {
        ours.ip_addrs.is_subset(&theirs.ip_addrs)
            && ours.esp_spi.is_none_or(|s| theirs.esp_spi == Some(s))
            && ours.arp.is_none_or(|a| theirs.arp == Some(a))
    } else {
        ours == theirs
    };
    (!same).then(|| {
        format!(
            "{} ({}): ours {ours:?}, tshark {theirs:?}",
            vd.class.name(),
            vd.what
        )
    })
}

/// Compares both decoders on every frame of `path` (classified with the lab's plan, no
/// injectors, so every frame is decoded); returns the number of frames compared, or
/// the frames (1-based) where they disagree.
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
    let ours = classify_traced(&Plan::lab(), &frames);
    let bad: Vec<String> = ours
        .iter()
        .zip(&theirs)
        .enumerate()
        .filter_map(|(i, ((vd, o), t))| compare(vd, o, t).map(|d| format!("frame {}: {d}", i + 1)))
        .collect();
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
