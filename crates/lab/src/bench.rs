//! `mipsec-lab bench`: registration round trip, interruption per move type, and TCP
//! throughput through the HA tunnel versus plain routing in the same lab.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::mip::{self, Request, FLAG_D, FLAG_T, PROBE_HOA, PROBE_KEY, PROBE_SPI};
use crate::netns::{self, other, Result};
use crate::scenario::MipLab;
use crate::topo::{Segment, CN_ADDR, HA_ADDR, MN_HOME};
#[path = "bench_tcp.rs"]
mod tcp;
use tcp::tcp_section;

use crate::traffic::{Client, ClientOpts};

#[derive(Debug, Clone)]
pub struct BenchOpts {
    /// How many times the move cycle home -> int-a -> int-c -> int-b -> nat -> home is
    /// repeated (co-located, co-located, foreign agent, NAT with UDP tunneling, home).
    pub repeat: usize,
    /// Seconds per throughput measurement.
    pub secs: f64,
    /// Only the throughput and RTT part (no registration and move figures).
    pub tcp_only: bool,
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let i = ((v.len() - 1) as f64 * p).round() as usize;
    v.get(i).copied().unwrap_or(f64::NAN)
}

/// Registration round trips (ms) of `n` authenticated requests (deregistrations of the
/// lab's probe entry) sent from the CN namespace to the HA.
pub fn registration_rtts(ml: &MipLab, n: usize) -> Result<(Vec<f64>, Vec<u8>)> {
    let h = netns::spawn_in(&ml.lab.ns("cn"), move || {
        let key = mip::key_bytes(PROBE_KEY);
        let mut rtts = Vec::new();
        let mut codes = Vec::new();
        for _ in 0..n {
            let r = Request {
                flags: FLAG_D | FLAG_T,
                lifetime: 0,
                home_address: PROBE_HOA,
                home_agent: HA_ADDR,
                care_of: CN_ADDR,
                identification: mip::timestamp_id(),
            };
            let msg = mip::encode_request(&r, PROBE_SPI, &key);
            if let Some((reply, rtt)) = mip::exchange(CN_ADDR, &msg, Duration::from_secs(1))? {
                rtts.push(rtt.as_secs_f64() * 1e3);
                codes.push(mip::reply_code(&reply).unwrap_or(255));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok((rtts, codes))
    });
    h.join().map_err(|_| other("rtt thread panicked"))?
}

/// TCP throughput (Mbit/s) from the MN's home address to the CN (`up`) or back, over `secs`.
pub fn throughput(ml: &MipLab, up: bool, secs: f64) -> Result<f64> {
    let mut c = Client::start(
        &ml.lab.ns("mn"),
        &ClientOpts {
            bind: Some(MN_HOME),
            cn: CN_ADDR,
            rate: 0,
            up,
            down: !up,
            probe_interval: None,
        },
    )?;
    // Skip slow start.
    std::thread::sleep(Duration::from_millis(300));
    let (u0, d0) = c.bytes();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(secs));
    let (u1, d1) = c.bytes();
    let el = t0.elapsed().as_secs_f64();
    let rec = c.stop();
    if !rec.faults.is_empty() {
        return Err(other(format!(
            "TCP fault during throughput run: {:?}",
            rec.faults
        )));
    }
    let bytes = if up { u1 - u0 } else { d1 - d0 };
    Ok(bytes as f64 * 8.0 / el / 1e6)
}

/// Runs the whole bench and prints the figures.
pub fn run(exe: &Path, o: &BenchOpts) -> Result<()> {
    let mut ml = MipLab::start(exe, true, 300)?;
    println!("mipsec-lab bench: lab {}", ml.lab.prefix);
    if o.tcp_only {
        return tcp_section(&mut ml, o);
    }

    // 1. Registration round trip.
    let (mut rtts, codes) = registration_rtts(&ml, 50)?;
    let accepted = codes.iter().filter(|c| **c < 2).count();
    println!(
        "registration round trip (CN -> HA, HMAC-MD5, {} replies of 50, {} accepted): median {:.3} ms, p90 {:.3} ms, max {:.3} ms",
        rtts.len(),
        accepted,
        pct(&mut rtts, 0.5),
        pct(&mut rtts, 0.9),
        pct(&mut rtts, 1.0)
    );

    // 2. Interruption and registration completion per move type.
    let mut c = Client::start(
        &ml.lab.ns("mn"),
        &ClientOpts {
            bind: Some(MN_HOME),
            cn: CN_ADDR,
            rate: 0,
            up: false,
            down: false,
            probe_interval: Some(Duration::from_millis(5)),
        },
    )?;
    std::thread::sleep(Duration::from_millis(500));
    let mut marks = Vec::new();
    for _ in 0..o.repeat {
        for to in [
            Segment::IntA,
            Segment::IntC,
            Segment::IntB,
            Segment::Nat,
            Segment::Home,
        ] {
            let from = ml.lab.mn_segment;
            let t = c.now_us();
            ml.lab.move_mn(to)?;
            let done = ml.wait_mn(Duration::from_secs(10), |v| match to {
                Segment::Home => MipLab::at_home(v),
                s => MipLab::registered_at(v, s.mn_addr()),
            });
            let mn_rtt = done
                .as_ref()
                .ok()
                .and_then(|d| d.0.get("last_registration_rtt_ms"))
                .and_then(serde_json::Value::as_f64)
                .unwrap_or(f64::NAN);
            let reg_ms = done.map(|d| d.1.as_secs_f64() * 1e3).unwrap_or(f64::NAN);
            std::thread::sleep(Duration::from_millis(1500));
            marks.push((from, to, t, reg_ms, mn_rtt));
        }
    }
    let end = c.now_us();
    let rec = c.stop();
    println!(
        "interruption per move type (probe every 5 ms; {} cycles):",
        o.repeat
    );
    for (kind, from, to) in [
        ("home -> away (register)", Segment::Home, Segment::IntA),
        (
            "away -> away (re-register, c -> c)",
            Segment::IntA,
            Segment::IntC,
        ),
        (
            "c -> f (through the foreign agent)",
            Segment::IntC,
            Segment::IntB,
        ),
        (
            "f -> c behind NAT (UDP tunnel)",
            Segment::IntB,
            Segment::Nat,
        ),
        ("away -> home (deregister)", Segment::Nat, Segment::Home),
    ] {
        let mut gaps = Vec::new();
        let mut regs = Vec::new();
        let mut mn_rtts = Vec::new();
        for (i, m) in marks.iter().enumerate() {
            if m.0 == from && m.1 == to {
                let stop = marks.get(i + 1).map_or(end, |n| n.2);
                gaps.push(rec.max_gap_ms(m.2, stop));
                regs.push(m.3);
                mn_rtts.push(m.4);
            }
        }
        println!(
            "  {kind:<36} interruption median {:>5.0} ms max {:>5.0} ms | MN status shows it after ~{:>4.0} ms (20 ms polling) | MN's registration RTT {:.2} ms",
            pct(&mut gaps.clone(), 0.5),
            pct(&mut gaps, 1.0),
            pct(&mut regs, 0.5),
            pct(&mut mn_rtts, 0.5)
        );
    }

    // 3. Throughput and RTT: plain routing, then mode c with and without offload.
    tcp_section(&mut ml, o)
}
