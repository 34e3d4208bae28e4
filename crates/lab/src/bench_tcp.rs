//! The throughput part of `mipsec-lab bench`: TCP with one and four connections in
//! both directions, and the idle round trip, for plain routing (MN at home), mode c
//! (co-located care-of address on int-a, IP-in-IP between the MN and the HA) and mode f
//! (int-b, IP-in-IP between the FA and the HA) and the RFC 3519 UDP tunnel (MN behind
//! the NAT, co-located): with the HA's kernel encapsulation (the default; modes c and
//! f), then with the agents moving every packet themselves with TUN offloads, then
//! without, all in the same lab and run. CPU of the HA, FA and MN daemons is sampled during
//! each measurement: on a shared 2-core machine it shows which daemon (or the kernel)
//! limits a tunnel. Each row also gets the rate of 64-octet packets (IPv4 + UDP + 36
//! octets) that reach the other side when the sender sends as fast as it can, up and
//! down.
//!
//! A tunnel's packets take a longer path than plain routing's (the router twice and
//! the HA's host once; mode f the FA's host too), and on one machine every hop is the
//! same two CPUs. So two more rows route a flow along the tunnels' paths without a
//! tunnel (policy rules in the router, checked by the octets the detour hosts
//! receive), and each tunnel row is also given as a ratio to its path's row: what the
//! tunnel itself costs, apart from the path.

use std::time::{Duration, Instant};

use super::BenchOpts;
use crate::netns::{self, other, Result};
use crate::scenario::MipLab;
use crate::topo::{Segment, CN_ADDR, FA_ADDR, HA_ADDR, MN_HOME, STRANGER_ADDR};
use crate::traffic::{Client, ClientOpts};
use std::net::Ipv4Addr;

/// One measurement: Mbit/s, and the HA's and MN's CPU (% of one core) meanwhile.
#[derive(Debug, Clone, Copy)]
struct Tput {
    mbps: f64,
    ha_cpu: f64,
    fa_cpu: f64,
    mn_cpu: f64,
}

/// A row of the table: up/down with 1 and 4 connections, the idle RTT, and the 64-octet
/// packet rate up and down (packets per second received).
struct Row {
    name: &'static str,
    cells: [Tput; 4],
    rtt_ms: f64,
    pps: [f64; 2],
    /// The row of routing along this tunnel's path without it, if measured.
    same_path: Option<usize>,
}

/// The end the bench's client runs at: a namespace and the address it sends from.
#[derive(Debug, Clone, Copy)]
struct End {
    ns: &'static str,
    addr: Ipv4Addr,
}

/// The mobile node's home address: every tunnel row, and plain routing at home.
const NODE: End = End {
    ns: "mn",
    addr: MN_HOME,
};

/// IPv4 (20) + UDP (8) + this = 64 octets.
const SMALL_PAYLOAD: usize = 36;

/// Packets per second of 64 octets received at the far end while one sender sends
/// as fast as it can (MN -> CN when `up`, CN -> MN otherwise), over `secs` after a
/// short warm-up.
fn packet_rate(ml: &MipLab, end: End, up: bool, secs: f64) -> Result<f64> {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    let port = if up { 5911 } else { 5912 };
    let (rx_ns, tx_ns, rx_addr, tx_addr) = if up {
        ("cn", end.ns, CN_ADDR, end.addr)
    } else {
        (end.ns, "cn", end.addr, CN_ADDR)
    };
    let rx = netns::spawn_in(&ml.lab.ns(rx_ns), move || {
        let s = std::net::UdpSocket::bind((rx_addr, port))?;
        socket2::SockRef::from(&s).set_recv_buffer_size(4 << 20)?;
        s.set_read_timeout(Some(Duration::from_millis(50)))?;
        Ok(s)
    })
    .join()
    .map_err(|_| other("receiver thread"))??;
    let tx = netns::spawn_in(&ml.lab.ns(tx_ns), move || {
        let s = std::net::UdpSocket::bind((tx_addr, 0))?;
        s.connect((rx_addr, port))?;
        Ok(s)
    })
    .join()
    .map_err(|_| other("sender thread"))??;
    let stop = Arc::new(AtomicBool::new(false));
    let got = Arc::new(AtomicU64::new(0));
    let counter = {
        let (stop, got) = (stop.clone(), got.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                if rx.recv(&mut buf).is_ok() {
                    got.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let sender = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let msg = [0x5au8; SMALL_PAYLOAD];
            while !stop.load(Ordering::Relaxed) {
                // ENOBUFS and the like when a queue is full: keep going.
                let _ = tx.send(&msg);
            }
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let (c0, t0) = (got.load(Ordering::Relaxed), Instant::now());
    std::thread::sleep(Duration::from_secs_f64(secs));
    let (c1, el) = (got.load(Ordering::Relaxed), t0.elapsed().as_secs_f64());
    stop.store(true, Ordering::Relaxed);
    let _ = sender.join();
    let _ = counter.join();
    // Let the queues drain before the next measurement.
    std::thread::sleep(Duration::from_millis(200));
    Ok((c1 - c0) as f64 / el)
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: Option<u32>) -> u64 {
    let Some(pid) = pid else { return 0 };
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // The command may contain spaces: fields count from after the last ')'.
    let rest = s.rsplit_once(')').map_or("", |r| r.1);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // Fields 14 and 15 of stat(5); index 0 here is field 3.
    n(11) + n(12)
}

fn ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

fn throughput(ml: &MipLab, end: End, up: bool, conns: usize, secs: f64) -> Result<Tput> {
    let mut clients = Vec::new();
    for _ in 0..conns {
        clients.push(Client::start(
            &ml.lab.ns(end.ns),
            &ClientOpts {
                bind: Some(end.addr),
                cn: CN_ADDR,
                rate: 0,
                up,
                down: !up,
                probe_interval: None,
            },
        )?);
    }
    // Skip slow start.
    std::thread::sleep(Duration::from_millis(300));
    let bytes = |cs: &[Client]| -> u64 {
        cs.iter()
            .map(|c| {
                let (u, d) = c.bytes();
                if up {
                    u
                } else {
                    d
                }
            })
            .sum()
    };
    let (ha, fa, mn) = (ml.lab.pid("ha"), ml.lab.pid("fa"), ml.lab.pid("mn"));
    let (b0, h0, f0, m0) = (bytes(&clients), cpu_ticks(ha), cpu_ticks(fa), cpu_ticks(mn));
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(secs));
    let (b1, h1, f1, m1) = (bytes(&clients), cpu_ticks(ha), cpu_ticks(fa), cpu_ticks(mn));
    let el = t0.elapsed().as_secs_f64();
    let mut faults = Vec::new();
    for mut c in clients {
        faults.extend(c.stop().faults);
    }
    if !faults.is_empty() {
        return Err(other(format!(
            "TCP fault during throughput run: {faults:?}"
        )));
    }
    let pct = |a: u64, b: u64| (b.saturating_sub(a)) as f64 / ticks_per_sec() / el * 100.0;
    Ok(Tput {
        mbps: (b1 - b0) as f64 * 8.0 / el / 1e6,
        ha_cpu: pct(h0, h1),
        fa_cpu: pct(f0, f1),
        mn_cpu: pct(m0, m1),
    })
}

/// Median idle round trip MN -> CN (ms) of 100 pings 10 ms apart (the median, as a
/// busy shared machine adds outliers).
fn idle_rtt(ml: &MipLab, end: End) -> Result<f64> {
    std::thread::sleep(Duration::from_millis(500));
    let out = netns::run(
        "ip",
        &[
            "netns",
            "exec",
            &ml.lab.ns(end.ns),
            "ping",
            "-c",
            "100",
            "-i",
            "0.01",
            "-I",
            &end.addr.to_string(),
            &CN_ADDR.to_string(),
        ],
    )?;
    // "64 bytes from 10.40.0.10: icmp_seq=3 ttl=62 time=0.376 ms"
    let mut t: Vec<f64> = out
        .lines()
        .filter_map(|l| {
            l.split_once("time=")?
                .1
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect();
    if t.len() < 50 {
        return Err(other(format!(
            "only {} of 100 pings answered: {out}",
            t.len()
        )));
    }
    t.sort_by(f64::total_cmp);
    Ok(t[t.len() / 2])
}

fn measure(ml: &MipLab, name: &'static str, secs: f64) -> Result<Row> {
    measure_from(ml, name, NODE, secs)
}

fn measure_from(ml: &MipLab, name: &'static str, end: End, secs: f64) -> Result<Row> {
    let rtt_ms = idle_rtt(ml, end)?;
    let mut cells = Vec::new();
    for (up, conns) in [(true, 1), (false, 1), (true, 4), (false, 4)] {
        cells.push(throughput(ml, end, up, conns, secs)?);
    }
    let cells = [cells[0], cells[1], cells[2], cells[3]];
    let pps = [
        packet_rate(ml, end, true, secs.min(2.0))?,
        packet_rate(ml, end, false, secs.min(2.0))?,
    ];
    Ok(Row {
        name,
        cells,
        rtt_ms,
        pps,
        same_path: None,
    })
}

/// Policy routes that send one flow along a tunnel's path without the tunnel; each is
/// deleted again when this is dropped.
struct Detour {
    /// The `ip` arguments that undo each change, in the order they were made.
    undo: Vec<Vec<String>>,
}

impl Detour {
    /// For each (role, "<object> <rest>"): `ip -n <role's namespace> <object> add
    /// <rest>`, undone by the same with `del`.
    fn new(ml: &MipLab, steps: &[(&str, String)]) -> Result<Detour> {
        let mut d = Detour { undo: Vec::new() };
        for (role, step) in steps {
            let ns = ml.lab.ns(role);
            let mut words = step.split_whitespace();
            let object = words.next().unwrap_or_default();
            let mut args = vec!["-n", &ns, object, "add"];
            args.extend(words);
            netns::run("ip", &args).map_err(|e| other(format!("ip {args:?}: {e}")))?;
            args[3] = "del";
            d.undo.push(args.iter().map(|a| a.to_string()).collect());
        }
        Ok(d)
    }
}

impl Drop for Detour {
    fn drop(&mut self) {
        for args in self.undo.drain(..).rev() {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            if let Err(e) = netns::run("ip", &args) {
                eprintln!("bench: undoing ip {args:?}: {e}");
            }
        }
    }
}

/// The router's interfaces (`topo`): home, int-a, int-b, the servers' subnet.
const RT_HOME: &str = "eth0";
const RT_INTA: &str = "eth1";
const RT_INTB: &str = "eth2";
const RT_SRV: &str = "eth3";
/// Routing tables of the detours in the router's namespace.
const VIA_HA: u32 = 4101;
const VIA_FA: u32 = 4102;

/// The router's table that sends a detour to the HA's host.
fn via_ha() -> (&'static str, String) {
    let route = format!("route default via {HA_ADDR} dev {RT_HOME} table {VIA_HA}");
    ("rt", route)
}

/// Routing along mode c's path without the tunnel: the node sends from its care-of
/// address on int-a, and the router sends that flow both ways through the HA's host
/// (policy rules), so it crosses the router twice and the HA's host once, as mode c's
/// packets do, unencapsulated. The RFC 3519 UDP tunnel behind the NAT takes the same
/// hops (the NAT is the router, its outside address on the home subnet). The node
/// must be registered on int-a.
fn routed_along_c(ml: &MipLab, secs: f64) -> Result<Row> {
    let coa = Segment::IntA.mn_addr();
    // The node's own rules send everything through its tunnel device: this flow
    // alone takes the main table (int-a's default route).
    let _detour = Detour::new(
        ml,
        &[
            (
                "mn",
                format!("rule from {coa} to {CN_ADDR} lookup main pref 100"),
            ),
            via_ha(),
            (
                "rt",
                format!("rule iif {RT_INTA} from {coa} to {CN_ADDR} lookup {VIA_HA} pref 100"),
            ),
            (
                "rt",
                format!("rule iif {RT_SRV} from {CN_ADDR} to {coa} lookup {VIA_HA} pref 101"),
            ),
        ],
    )?;
    let end = End {
        ns: "mn",
        addr: coa,
    };
    through(ml, &["ha"], secs, || {
        measure_from(ml, "  routed along c's path", end, secs)
    })
}

/// Received octets of `role`'s `eth0`.
fn rx_bytes(ml: &MipLab, role: &str) -> Result<u64> {
    let ns = ml.lab.ns(role);
    let out = netns::run("ip", &["-n", &ns, "-j", "-s", "link", "show", "eth0"])?;
    let v: serde_json::Value =
        serde_json::from_str(&out).map_err(|e| other(format!("ip -j -s link: {e}")))?;
    v[0]["stats64"]["rx"]["bytes"]
        .as_u64()
        .ok_or_else(|| other(format!("no rx octets for {role}'s eth0: {out}")))
}

/// Measures a detour row and checks that its TCP octets crossed each of `hosts`:
/// each host's link must have received at least what the row's throughput cells
/// moved in their `secs` windows (every octet crosses it once). A rule that did not
/// take would measure plain routing under the detour's name.
fn through(
    ml: &MipLab,
    hosts: &[&str],
    secs: f64,
    measure: impl FnOnce() -> Result<Row>,
) -> Result<Row> {
    let before = hosts
        .iter()
        .map(|h| rx_bytes(ml, h))
        .collect::<Result<Vec<_>>>()?;
    let row = measure()?;
    let moved: f64 = row.cells.iter().map(|c| c.mbps * 1e6 / 8.0 * secs).sum();
    for (h, b) in hosts.iter().zip(before) {
        let got = rx_bytes(ml, h)?.saturating_sub(b);
        if (got as f64) < moved {
            return Err(other(format!(
                "{}: {h}'s link received {got} octets, fewer than the {moved:.0} the row \
                 moved: the detour did not take",
                row.name.trim()
            )));
        }
    }
    Ok(row)
}

/// Routing along mode f's path without the tunnel: the stranger on int-b (a plain
/// host beside the node) sends through the FA's host, and the router sends that flow
/// both ways through the HA's host, and back through the FA's: the hops of mode f's
/// reverse and forward tunnels, unencapsulated. The stranger is told to ignore ICMP
/// redirects (the FA's host would send it to the router, its neighbour), and stays so.
fn routed_along_f(ml: &MipLab, secs: f64) -> Result<Row> {
    let from = STRANGER_ADDR;
    let ev = ml.lab.ns("ev");
    let no_redirects = [
        "netns",
        "exec",
        &ev,
        "sysctl",
        "-qw",
        "net.ipv4.conf.all.accept_redirects=0",
        "net.ipv4.conf.eth0.accept_redirects=0",
    ];
    netns::run("ip", &no_redirects)?;
    let _detour = Detour::new(
        ml,
        &[
            ("ev", format!("route {CN_ADDR}/32 via {FA_ADDR}")),
            via_ha(),
            (
                "rt",
                format!("route default via {FA_ADDR} dev {RT_INTB} table {VIA_FA}"),
            ),
            (
                "rt",
                format!("rule iif {RT_INTB} from {from} to {CN_ADDR} lookup {VIA_HA} pref 100"),
            ),
            (
                "rt",
                format!("rule iif {RT_SRV} from {CN_ADDR} to {from} lookup {VIA_HA} pref 101"),
            ),
            (
                "rt",
                format!("rule iif {RT_HOME} from {CN_ADDR} to {from} lookup {VIA_FA} pref 102"),
            ),
        ],
    )?;
    let end = End {
        ns: "ev",
        addr: from,
    };
    through(ml, &["fa", "ha"], secs, || {
        measure_from(ml, "  routed along f's path", end, secs)
    })
}

fn go(ml: &mut MipLab, to: Segment) -> Result<()> {
    if ml.lab.mn_segment != to {
        ml.lab.move_mn(to)?;
    }
    match to {
        Segment::Home => ml.wait_mn(Duration::from_secs(10), MipLab::at_home)?,
        s => ml.wait_mn(Duration::from_secs(10), |v| {
            MipLab::registered_at(v, s.mn_addr())
        })?,
    };
    std::thread::sleep(Duration::from_millis(500));
    Ok(())
}

fn offload_of(v: &Result<serde_json::Value>) -> bool {
    v.as_ref()
        .ok()
        .and_then(|v| v["data_path"]["offload"].as_bool())
        .unwrap_or(false)
}

fn kernel_encap_of(v: &Result<serde_json::Value>) -> bool {
    v.as_ref()
        .ok()
        .and_then(|v| v["kernel_encap"]["attached"].as_bool())
        .unwrap_or(false)
}

/// Restarts the agents with their `kernel_encap` and `offload` as given, and the node
/// with its `kernel_encap` (the MN goes home first: a restarted HA has no binding).
fn configure(ml: &mut MipLab, offload: bool, kernel: bool) -> Result<()> {
    go(ml, Segment::Home)?;
    for role in ["ha", "fa"] {
        ml.restart_agent_with(role, "kernel_encap", &kernel.to_string())?;
        ml.restart_agent_offload(role, offload)?;
    }
    ml.restart_agent_with("mn", "kernel_encap", &kernel.to_string())?;
    Ok(())
}

pub(super) fn tcp_section(ml: &mut MipLab, o: &BenchOpts) -> Result<()> {
    let mut rows = Vec::new();
    go(ml, Segment::Home)?;
    rows.push(measure(ml, "plain routing (MN at home)", o.secs)?);
    // The kernel encapsulation (the default: HA, FA and node), then the daemons
    // moving every packet themselves with TUN offloads, then without.
    // Routing along each tunnel's path without the tunnel (measured once, beside the
    // first rows of the kind): what the longer path costs by itself.
    let (mut along_c, mut along_f) = (None, None);
    for (offload, kernel) in [(true, true), (true, false), (false, false)] {
        configure(ml, offload, kernel)?;
        go(ml, Segment::IntA)?;
        let (ha, mn) = (ml.ha_status(), ml.mn_status());
        let ok = offload_of(&ha) == offload
            && kernel_encap_of(&ha) == kernel
            && kernel_encap_of(&mn) == kernel;
        let c = name("c", offload, kernel, ok);
        beside_path(
            &mut rows,
            &mut along_c,
            || routed_along_c(ml, o.secs),
            || measure(ml, c, o.secs),
        )?;
        go(ml, Segment::IntB)?;
        let fa = ml.fa_status();
        let ok = ok && offload_of(&fa) == offload && kernel_encap_of(&fa) == kernel;
        let f = name("f", offload, kernel, ok);
        beside_path(
            &mut rows,
            &mut along_f,
            || routed_along_f(ml, o.secs),
            || measure(ml, f, o.secs),
        )?;
        // RFC 3519 behind the NAT: the HA's kernel sends down and the node's takes
        // it back in the kernel rows, the node's process sends up in all.
        go(ml, Segment::Nat)?;
        let u = name("u", offload, kernel, ok);
        beside_path(
            &mut rows,
            &mut along_c,
            || routed_along_c(ml, o.secs),
            || measure(ml, u, o.secs),
        )?;
    }
    configure(ml, true, true)?;
    print_rows(&rows, o.secs);
    Ok(())
}

/// Measures a tunnel's row and pushes it with `path`, the index of the row routed along
/// its path, measuring that row first (`along`) when there is none yet.
fn beside_path(
    rows: &mut Vec<Row>,
    path: &mut Option<usize>,
    along: impl FnOnce() -> Result<Row>,
    tunnel: impl FnOnce() -> Result<Row>,
) -> Result<()> {
    if path.is_none() {
        rows.push(along()?);
        *path = Some(rows.len() - 1);
    }
    let row = tunnel()?;
    rows.push(Row {
        same_path: *path,
        ..row
    });
    Ok(())
}

fn name(mode: &str, offload: bool, kernel: bool, as_configured: bool) -> &'static str {
    match (mode, offload, kernel, as_configured) {
        (_, _, _, false) => "(not as configured!)",
        ("c", _, true, _) => "mode c via HA, kernel encap",
        ("f", _, true, _) => "mode f via FA+HA, kernel encap",
        ("u", _, true, _) => "UDP tunnel (NAT), kernel encap",
        ("c", true, _, _) => "mode c via HA, offload",
        ("c", false, _, _) => "mode c via HA, no offload",
        ("f", true, _, _) => "mode f via FA+HA, offload",
        ("f", false, _, _) => "mode f via FA+HA, no offload",
        (_, true, _, _) => "UDP tunnel (NAT), offload",
        _ => "UDP tunnel (NAT), no offload",
    }
}

fn print_rows(rows: &[Row], secs: f64) {
    println!(
        "TCP MN <-> CN, Mbit/s ({secs:.0} s each after 0.3 s of slow start; ratio to plain routing in brackets;\n\
         the machine is shared, so repeat runs and compare within one run):"
    );
    println!(
        "  {:<32} {:>16} {:>16} {:>16} {:>16}   {:>9} {:>9}",
        "", "1 conn up", "1 conn down", "4 conn up", "4 conn down", "RTT ms", "added"
    );
    let base = &rows[0];
    for r in rows {
        let cell = |i: usize| {
            let ratio = r.cells[i].mbps / base.cells[i].mbps;
            format!("{:>7.0} [{:>4.2}]", r.cells[i].mbps, ratio)
        };
        println!(
            "  {:<32} {:>16} {:>16} {:>16} {:>16}   {:>9.3} {:>9.3}",
            r.name,
            cell(0),
            cell(1),
            cell(2),
            cell(3),
            r.rtt_ms,
            r.rtt_ms - base.rtt_ms
        );
    }
    println!(
        "Each tunnel against routing along its own path without it (its own cost; the rest\n\
         of the gap to plain routing is the longer path: the router twice, the HA's host once):"
    );
    for r in rows {
        let Some(b) = r.same_path.and_then(|i| rows.get(i)) else {
            continue;
        };
        let cell = |i: usize| format!("{:>4.2}", r.cells[i].mbps / b.cells[i].mbps.max(1.0));
        println!(
            "  {:<32} {:>16} {:>16} {:>16} {:>16}   {:>9.3}",
            r.name,
            cell(0),
            cell(1),
            cell(2),
            cell(3),
            r.rtt_ms - b.rtt_ms
        );
    }
    println!(
        "64-octet packets received per second, one sender as fast as it can (ratio to plain routing):"
    );
    println!(
        "  {:<32} {:>16} {:>16}",
        "", "up (MN -> CN)", "down (CN -> MN)"
    );
    for r in rows {
        let cell = |i: usize| {
            format!(
                "{:>7.0}k [{:>4.2}]",
                r.pps[i] / 1e3,
                r.pps[i] / base.pps[i].max(1.0)
            )
        };
        println!("  {:<32} {:>16} {:>16}", r.name, cell(0), cell(1));
    }
    println!("CPU of the daemons during each measurement, % of one core (HA / FA / MN):");
    for r in rows.iter().skip(1) {
        let c = |i: usize| {
            let t = r.cells[i];
            format!("{:>3.0} /{:>3.0} /{:>3.0}", t.ha_cpu, t.fa_cpu, t.mn_cpu)
        };
        println!(
            "  {:<32} {:>16} {:>16} {:>16} {:>16}",
            r.name,
            c(0),
            c(1),
            c(2),
            c(3)
        );
    }
    println!("HA CPU per gigabit moved, ms of CPU (lower is better):");
    for r in rows.iter().skip(1) {
        let c = |i: usize| {
            let t = r.cells[i];
            // (ha_cpu / 100) core-seconds per second over (mbps / 1000) Gbit per second.
            format!("{:>7.0}", t.ha_cpu * 10.0 / t.mbps.max(1.0) * 1000.0)
        };
        println!(
            "  {:<32} {:>16} {:>16} {:>16} {:>16}",
            r.name,
            c(0),
            c(1),
            c(2),
            c(3)
        );
    }
}
