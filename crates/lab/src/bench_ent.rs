//! `mipsec-lab bench --enterprise`: figures of issue 12 item 6 in the enterprise lab.
//! The initial setup outside and its parts, read from the MN's log (`mipsec mn`
//! started on ext-a: address, x-HA registration, VPN client spawn, IKE, gate open
//! after the i-HA registration through the VPN), and TCP throughput (unpaced, up and
//! down at once) per mode against plain routing in the same run.

use std::path::Path;
use std::time::Duration;

use crate::gateway::GwAuth;
use crate::netns::{other, Result};
use crate::roam::Outside;
use crate::scenario::MipLab;
use crate::topo::{Segment, CN_ADDR, MN_HOME};
use crate::traffic::{Client, ClientOpts};
use crate::transit::{self, Start};

/// Seconds of the day of a tracing line's RFC 3339 timestamp (`...T17:38:05.324446Z`).
fn stamp(line: &str) -> Option<f64> {
    let clean: String = strip_ansi(line);
    let t = clean.split_whitespace().next()?;
    let (_, time) = t.split_once('T')?;
    let time = time.trim_end_matches('Z');
    let mut it = time.split(':');
    let h: f64 = it.next()?.parse().ok()?;
    let m: f64 = it.next()?.parse().ok()?;
    let s: f64 = it.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut esc = false;
    for c in s.chars() {
        match (esc, c) {
            (false, '\u{1b}') => esc = true,
            (true, 'm') => esc = false,
            (true, _) => {}
            (false, c) => out.push(c),
        }
    }
    out
}

/// The setup outside from a fresh start on ext-a: (step, ms after the address came).
pub fn setup_outside(exe: &Path, outside: Outside) -> Result<Vec<(String, f64)>> {
    let mut ml = transit::start_lab(exe, GwAuth::Psk, outside, Start::On(Segment::ExtA), "")?;
    ml.start_mn()?;
    transit::wait_gate(&ml, "open-vpn", Duration::from_secs(20))?;
    let log = std::fs::read_to_string(ml.lab.log_path("mn"))?;
    let steps: [(&str, &str); 6] = [
        ("address on ext-a (attachment)", "attachment"),
        ("x-HA registration accepted", "reason=\"x-HA replied\""),
        ("VPN client spawned", "VPN client started"),
        ("IKE_SA_INIT sent", "connecting to 192.0.2.1"),
        ("IKE SA and CHILD SA up, TIA", "VPN up"),
        ("gate open (i-HA accepted the TIA)", "gate=OpenViaVpn"),
    ];
    let mut t0 = None;
    let mut rows = Vec::new();
    for (label, needle) in steps {
        let Some(t) = log
            .lines()
            .map(strip_ansi)
            .find(|l| l.contains(needle))
            .and_then(|l| stamp(&l))
        else {
            continue;
        };
        let base = *t0.get_or_insert(t);
        rows.push((label.to_string(), (t - base) * 1e3));
    }
    if rows.is_empty() {
        return Err(other(format!("no setup steps in mn.log:\n{log}")));
    }
    Ok(rows)
}

/// Unpaced TCP up and down at once for `secs` from namespace mn: (up, down) MB/s.
fn tcp(ml: &MipLab, bind: Option<std::net::Ipv4Addr>, secs: f64) -> Result<(f64, f64)> {
    let mut c = Client::start(
        &ml.lab.ns("mn"),
        &ClientOpts {
            bind,
            cn: CN_ADDR,
            rate: 0,
            up: true,
            down: true,
            probe_interval: None,
        },
    )?;
    std::thread::sleep(Duration::from_secs_f64(secs));
    let r = c.stop();
    if !r.faults.is_empty() {
        return Err(other(format!("TCP broke: {:?}", r.faults)));
    }
    let d = r.duration.as_secs_f64();
    Ok((r.up_bytes as f64 / d / 1e6, r.down_bytes as f64 / d / 1e6))
}

/// TCP throughput per mode: (where, mode, up MB/s, down MB/s).
pub fn throughput(exe: &Path, secs: f64) -> Result<Vec<(String, String, f64, f64)>> {
    let mut rows = Vec::new();
    // Plain routing: no mobile node, the MN's own address on int-a.
    {
        let mut ml = transit::start_lab(exe, GwAuth::Psk, Outside::Xmip, Start::Home, "")?;
        ml.lab.move_mn(Segment::IntA)?;
        let (u, d) = tcp(&ml, None, secs)?;
        rows.push(("int-a".into(), "plain".into(), u, d));
    }
    for (outside, route) in [
        (
            Outside::Xmip,
            vec![
                Segment::Home,
                Segment::IntA,
                Segment::ExtA,
                Segment::ExtB,
                Segment::ExtNat,
            ],
        ),
        (Outside::Mobike, vec![Segment::IntB, Segment::ExtA]),
    ] {
        let mut ml = transit::start(exe, GwAuth::Psk, outside, Start::Home, "")?;
        transit::wait_gate(&ml, "open-home", Duration::from_secs(20))?;
        for seg in route {
            if seg != Segment::Home {
                ml.lab.move_mn(seg)?;
            }
            let want = transit::settled_gate(seg);
            let (st, _) = ml.wait_mn(Duration::from_secs(20), |v| transit::gate(v) == want)?;
            let (u, d) = tcp(&ml, Some(MN_HOME), secs)?;
            rows.push((seg.name().into(), transit::mode(&st).into(), u, d));
        }
    }
    Ok(rows)
}

/// Runs both and renders them.
pub fn run(exe: &Path, secs: f64) -> Result<String> {
    let mut s =
        String::from("initial setup outside (mipsec mn started on ext-a), ms after the address:\n");
    for (outside, name) in [(Outside::Xmip, "cvc"), (Outside::Mobike, "mc")] {
        s += &format!("  {name}:\n");
        for (label, ms) in setup_outside(exe, outside)? {
            s += &format!("    {ms:>8.1}  {label}\n");
        }
    }
    s += &format!("TCP throughput, unpaced, up and down at once, {secs:.0} s each (MB/s):\n");
    s += &format!("  {:<8} {:<6} {:>8} {:>8}\n", "where", "mode", "up", "down");
    for (w, m, u, d) in throughput(exe, secs)? {
        s += &format!("  {w:<8} {m:<6} {u:>8.1} {d:>8.1}\n");
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps() {
        let l = "\u{1b}[2m2026-12-04T17:38:05.324446Z\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m x";
        let t = stamp(l).unwrap();
        assert!((t - (17.0 * 3600.0 + 38.0 * 60.0 + 5.324446)).abs() < 1e-6);
    }
}
