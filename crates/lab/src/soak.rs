//! The soak (issue 17): a seeded random walk of `mipsec mn` through the enterprise lab
//! with TCP both ways and a UDP probe running, NAT mapping changes behind the hotel NAT,
//! and restarts (SIGTERM and kill -9) of the i-HA, the x-HA, the FA, the strongSwan
//! gateway and the mobile node itself; every outside segment captured for the whole run
//! and checked by the leak classifier (`leak.rs`). The plan is drawn from the seed alone
//! before the run starts, so a seed replays the same sequence of steps.
//!
//! Negative control: the i-HA trusts every network (`trusted_networks = ["0.0.0.0/0"]`)
//! and the border lets Mobile IP reach it from the internet, so an outside link passes
//! for inside and the node sends user data in the clear: the classifier must see leaks.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::enterprise;
use crate::gateway::{self, GwAuth};
use crate::leak;
use crate::netns::{self, other, Result};
use crate::roam::Outside;
use crate::scenario::MipLab;
use crate::topo::{Segment, CN_ADDR, HA_ADDR, MN_HOME, XFA_ADDR};
use crate::traffic::{Client, ClientOpts, Record};

#[path = "soak_extra.rs"]
pub mod extra;
#[path = "soak_summary.rs"]
mod summary;
pub use extra::{Attack, Extras};
pub use summary::{usage_of, DaemonUsage, KindStat, Summary, Usage};

/// What the soak does.
#[derive(Debug, Clone)]
pub struct SoakOpts {
    pub moves: usize,
    pub seed: u64,
    /// Keep the captures of every segment here (default: a directory in the lab's,
    /// removed with it).
    pub pcap: Option<PathBuf>,
    pub outside: Outside,
    pub negative_control: bool,
    /// Walk ext-b too (the x-FA, mode fvc).
    pub ext_b: bool,
    /// Walk int-b too (the FA, mode f): off by default, the node does not get through
    /// the FA after a stay elsewhere (tests/soak.rs `fa_after_a_visited_network`).
    pub int_b: bool,
    /// User data must be back this soon after a move or a NAT mapping change.
    pub move_bound: Duration,
    /// ... and this soon after a daemon restart.
    pub fault_bound: Duration,
    /// Not back after this long: unrecovered, the walk stops.
    pub give_up: Duration,
    /// TCP rate per direction, bytes/s.
    pub rate: u64,
    /// Carry out the plan's NAT mapping changes (off by default: the node does not
    /// recover from one, tests/soak.rs `nat_mapping_change_behind_the_hotel_nat`).
    pub nat_changes: bool,
    /// Carry out the plan's i-HA and x-HA restarts while the node is outside too (off by
    /// default: it does not recover from one, tests/soak.rs `*_ha_restart_while_outside`).
    pub ha_restart_outside: bool,
    /// Stop walking after this long and report what was done.
    pub max_time: Option<Duration>,
    /// Every stay of the plan is multiplied by this (CI: shorter stays, same walk).
    pub stay_factor: f64,
    /// Loss bursts, silent moves, attacks on ext-a (`soak_extra.rs`).
    pub extras: Extras,
}

impl Default for SoakOpts {
    fn default() -> Self {
        SoakOpts {
            moves: 100,
            seed: 1,
            pcap: None,
            outside: Outside::Xmip,
            negative_control: false,
            ext_b: false,
            int_b: false,
            move_bound: Duration::from_secs(10),
            fault_bound: Duration::from_secs(30),
            give_up: Duration::from_secs(90),
            rate: 100_000,
            max_time: None,
            nat_changes: false,
            ha_restart_outside: false,
            stay_factor: 1.0,
            extras: Extras::default(),
        }
    }
}

/// SplitMix64: small, fast, and the same on every platform and build.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `lo..hi` (hi > lo).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo).max(1)
    }
    pub fn percent(&mut self, p: u64) -> bool {
        self.next_u64() % 100 < p
    }
}

/// A daemon the soak restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Daemon {
    Iha,
    Xha,
    Fa,
    Gateway,
    Mn,
}

impl Daemon {
    pub fn name(self) -> &'static str {
        match self {
            Daemon::Iha => "i-HA",
            Daemon::Xha => "x-HA",
            Daemon::Fa => "FA",
            Daemon::Gateway => "gateway",
            Daemon::Mn => "MN",
        }
    }
    /// The lab's process name.
    fn proc(self) -> &'static str {
        match self {
            Daemon::Iha => "ha",
            Daemon::Xha => "xha",
            Daemon::Fa => "fa",
            Daemon::Gateway => "charon",
            Daemon::Mn => "mn",
        }
    }
}

/// One step of the walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Move the MN; with `wait`, wait for user data to come back before the stay,
    /// without (a quick move) move on after the stay whatever happened.
    Move {
        to: Segment,
        stay_ms: u64,
        wait: bool,
    },
    /// The hotel NAT changes its mapping (new port range, conntrack flushed).
    NatFlush { stay_ms: u64 },
    /// Stop a daemon (kill -9 or SIGTERM), leave it down, start it again.
    Restart {
        who: Daemon,
        kill: bool,
        down_ms: u64,
    },
    /// 30 % loss both ways on the node's switch port for `ms`.
    Loss { ms: u64 },
    /// The node's port re-plugged into `to` without a carrier event; the move to `to`
    /// that follows plugs it in properly.
    Silent { to: Segment, stay_ms: u64 },
    /// An attack on ext-a.
    Attack { kind: Attack },
}

/// The segments the walk visits.
pub fn segments(int_b: bool, ext_b: bool) -> Vec<Segment> {
    let mut v = vec![
        Segment::Home,
        Segment::IntA,
        Segment::IntC,
        Segment::ExtA,
        Segment::ExtNat,
    ];
    if int_b {
        v.push(Segment::IntB);
    }
    if ext_b {
        v.push(Segment::ExtB);
    }
    v
}

/// The whole walk for a seed: `moves` moves (the negative control's first is to ext-a),
/// each a quick one (20 %: a stay of 0.2-1 s without waiting) or a waited one with a
/// short (70 %: 0.2-1.5 s) or long (3-8 s) stay; after a move to ext-nat a NAT mapping
/// change (30 %); after any move a daemon restart (8 %; kill -9 half of the time, always
/// for the MN), down for 0.5-3 s.
pub fn plan(seed: u64, moves: usize, segs: &[Segment], negative: bool) -> Vec<Step> {
    let mut r = Rng::new(seed);
    let mut cur = Segment::Home;
    let mut out = Vec::new();
    for i in 0..moves {
        let others: Vec<Segment> = segs.iter().copied().filter(|s| *s != cur).collect();
        let mut to = others[r.range(0, others.len() as u64) as usize];
        if negative && i == 0 {
            to = Segment::ExtA;
        }
        let quick = r.percent(20);
        let stay_ms = if quick || r.percent(70) {
            r.range(200, if quick { 1000 } else { 1500 })
        } else {
            r.range(3000, 8000)
        };
        out.push(Step::Move {
            to,
            stay_ms,
            wait: !quick,
        });
        cur = to;
        // (Only after a waited move: the node is through before its NAT changes.)
        if to == Segment::ExtNat && !quick && r.percent(30) {
            out.push(Step::NatFlush {
                stay_ms: r.range(500, 3000),
            });
        }
        if r.percent(8) {
            let who = [
                Daemon::Iha,
                Daemon::Xha,
                Daemon::Fa,
                Daemon::Gateway,
                Daemon::Mn,
            ][r.range(0, 5) as usize];
            let kill = who == Daemon::Mn || r.percent(50);
            out.push(Step::Restart {
                who,
                kill,
                down_ms: r.range(500, 3000),
            });
        }
    }
    out
}

fn zone(s: Segment) -> &'static str {
    match s {
        Segment::Home => "home",
        Segment::IntA | Segment::IntC => "inside",
        Segment::IntB => "fa",
        Segment::ExtA => "outside",
        Segment::ExtNat => "hotel",
        Segment::ExtB => "x-fa",
        Segment::Nat => "nat",
    }
}

/// Children of `pid` (every thread's).
/// Whether process `pid` exists and has not exited: a zombie (exited, not yet
/// reaped by whoever inherited it) does not count.
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        // "pid (comm) S ...": the state follows the last ')'.
        s.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut v = Vec::new();
    for t in tasks.flatten() {
        if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
            v.extend(s.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
        }
    }
    v
}

/// (label, pid) of every daemon of the lab now.
fn daemon_pids(ml: &MipLab) -> Vec<(&'static str, Option<u32>)> {
    let mn = ml.lab.pid("mn");
    let vpn = mn.and_then(|p| children(p).first().copied());
    vec![
        ("i-HA", ml.lab.pid("ha")),
        ("x-HA", ml.lab.pid("xha")),
        ("FA", ml.lab.pid("fa")),
        ("x-FA", ml.lab.pid("xfa")),
        ("gateway (charon)", ml.lab.pid("charon")),
        ("MN", mn),
        ("MN's VPN client", vpn),
    ]
}

/// A step's place in the traffic record: (kind key, 0 move / 1 NAT / 2 restart,
/// (epoch, start µs) of its window).
type Window = (String, u8, Option<(usize, u64)>);

/// The traffic of the soak, reconnected after a TCP failure (each connection an epoch).
struct Traffic {
    ns: String,
    opts: ClientOpts,
    client: Option<Client>,
    records: Vec<Record>,
}

impl Traffic {
    fn position(&self) -> Option<(usize, u64)> {
        self.client
            .as_ref()
            .map(|c| (self.records.len(), c.now_us()))
    }
    /// After a TCP failure, ends the epoch and (best effort) connects again.
    fn renew_if_broken(&mut self, resets: &mut usize, reconnects: &mut usize) {
        if let Some(c) = &self.client {
            if c.faults() == 0 {
                return;
            }
        }
        if let Some(mut c) = self.client.take() {
            let r = c.stop();
            *resets += r.faults.len();
            for f in &r.faults {
                eprintln!(
                    "soak: TCP {} at {:.1} s: {}",
                    f.dir,
                    f.at.as_secs_f64(),
                    f.what
                );
            }
            self.records.push(r);
        }
        match Client::start(&self.ns, &self.opts) {
            Ok(c) => {
                *reconnects += 1;
                self.client = Some(c);
            }
            Err(e) => eprintln!("soak: traffic reconnect failed (later again): {e}"),
        }
    }
    fn finish(&mut self) -> usize {
        let mut faults = 0;
        if let Some(mut c) = self.client.take() {
            let r = c.stop();
            faults = r.faults.len();
            self.records.push(r);
        }
        faults
    }
}

/// Time until a UDP echo from the home address comes back, or None within `limit`.
fn time_to_data(ml: &MipLab, t0: Instant, limit: Duration) -> Option<Duration> {
    let left = limit.saturating_sub(t0.elapsed());
    ml.echo_ok(Some(MN_HOME), left).then(|| t0.elapsed())
}

/// The hotel NAT (namespace inet) changes its mapping: a new port range and flushed
/// connection tracking, so the next packet leaves from a new port.
pub fn flush_hotel_nat(ml: &MipLab, round: u64) -> Result<()> {
    let inet = ml.lab.ns("inet");
    let nft = |args: &[&str]| {
        let mut a = vec!["netns", "exec", inet.as_str(), "nft"];
        a.extend_from_slice(args);
        netns::run("ip", &a)
    };
    let lo = 42000 + (round % 8) * 1000;
    let rule = "ip saddr 192.168.100.0/24 oifname != \"eth3\"";
    nft(&["flush", "chain", "ip", "nat", "post"])?;
    nft(&[
        "add",
        "rule",
        "ip",
        "nat",
        "post",
        &format!(
            "{rule} meta l4proto {{ tcp, udp }} masquerade to :{lo}-{}",
            lo + 999
        ),
    ])?;
    nft(&[
        "add",
        "rule",
        "ip",
        "nat",
        "post",
        &format!("{rule} masquerade"),
    ])?;
    netns::run("ip", &["netns", "exec", &inet, "conntrack", "-F"])?;
    Ok(())
}

/// The negative control's misconfiguration: the i-HA trusts every network and the
/// border passes Mobile IP to it (routes back included), so outside links look inside.
fn misconfigure(ml: &mut MipLab) -> Result<()> {
    let cfg = std::fs::read_to_string(&ml.ha_cfg)?;
    let cfg: String = cfg
        .lines()
        .map(|l| {
            if l.starts_with("trusted_networks") {
                "trusted_networks = [\"0.0.0.0/0\"]"
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n";
    crate::mip::write_private(Path::new(&ml.ha_cfg), &cfg)?;
    ml.lab.stop("ha", libc::SIGTERM);
    ml.start_ha()?;
    let fw = ml.lab.ns("fw");
    netns::run(
        "ip",
        &[
            "netns",
            "exec",
            &fw,
            "nft",
            "insert",
            "rule",
            "inet",
            "border",
            "forward",
            "iifname",
            "eth1",
            "ip",
            "daddr",
            &HA_ADDR.to_string(),
            "accept",
        ],
    )?;
    let ha = ml.lab.ns("ha");
    for net in ["198.51.100.0/24", "198.18.0.0/24", "203.0.113.0/24"] {
        netns::ip(&["-n", &ha, "route", "add", net, "via", "10.10.0.2"])?;
    }
    Ok(())
}

fn restart(ml: &mut MipLab, who: Daemon, kill: bool, down: Duration) -> Result<()> {
    let sig = if kill { libc::SIGKILL } else { libc::SIGTERM };
    let vpn_child = (who == Daemon::Mn)
        .then(|| ml.lab.pid("mn").map(children))
        .flatten();
    let t0 = Instant::now();
    ml.lab.stop(who.proc(), sig);
    std::thread::sleep(down);
    if let Some(kids) = vpn_child {
        // The client's own clean stop (SIGTERM from PDEATHSIG) waits up to 500 ms for
        // the gateway to answer its Delete, which cannot come when the node's outer
        // path died with it: only a client alive 2 s after the kill is reported.
        while kids.iter().any(|k| running(*k)) && t0.elapsed() < Duration::from_secs(2) {
            std::thread::sleep(Duration::from_millis(20));
        }
        for k in kids.into_iter().filter(|k| running(*k)) {
            eprintln!(
                "soak: the killed MN's VPN client {k} is still running {:?} after the kill",
                t0.elapsed()
            );
        }
    }
    match who {
        Daemon::Iha => ml.start_ha(),
        Daemon::Fa => ml.start_fa(),
        Daemon::Mn => ml.start_mn(),
        Daemon::Xha => {
            let (c, s) = enterprise::write_xha_config(&ml.lab)?;
            enterprise::start_daemon(&mut ml.lab, "xha", "xha", "ha", &c, &s)
        }
        Daemon::Gateway => gateway::start_gateway(&mut ml.lab, GwAuth::Psk).map(|_| ()),
    }
}

/// Runs the soak in a fresh enterprise lab; prints one line per step on stderr.
pub fn run(exe: &Path, o: &SoakOpts) -> Result<Summary> {
    let t_start = Instant::now();
    let segs = segments(o.int_b, o.ext_b);
    let steps = extra::add(
        o.seed,
        plan(o.seed, o.moves, &segs, o.negative_control),
        o.extras,
    );
    eprintln!(
        "soak: seed {} ({} steps for {} moves over {}); replay with --seed {}",
        o.seed,
        steps.len(),
        o.moves,
        segs.iter().map(|s| s.name()).collect::<Vec<_>>().join(","),
        o.seed
    );
    let mut ml = MipLab::start_enterprise(exe, GwAuth::Psk, o.outside)?;
    if o.negative_control {
        misconfigure(&mut ml)?;
    }
    let pcap = o
        .pcap
        .clone()
        .unwrap_or_else(|| ml.lab.dir.join("soak-pcap"));
    enterprise::start_captures(&mut ml.lab, &pcap)?;
    let injector = if o.extras.attacks {
        Some(extra::attacker(&ml.lab)?)
    } else {
        None
    };
    let mut sum = Summary {
        seed: o.seed,
        planned_moves: o.moves,
        ..Default::default()
    };
    let start_pids = daemon_pids(&ml);
    let mut usage: Vec<DaemonUsage> = start_pids
        .iter()
        .map(|(n, p)| {
            let u = p.and_then(usage_of);
            DaemonUsage {
                name: n.to_string(),
                start: u,
                max: u.unwrap_or_default(),
                pid: *p,
                ..Default::default()
            }
        })
        .collect();
    let copts = ClientOpts {
        bind: Some(MN_HOME),
        cn: CN_ADDR,
        rate: o.rate,
        up: true,
        down: true,
        probe_interval: Some(Duration::from_millis(20)),
    };
    let mut traffic = Traffic {
        ns: ml.lab.ns("mn"),
        client: Some(Client::start(&ml.lab.ns("mn"), &copts)?),
        opts: copts,
        records: Vec::new(),
    };
    // (kind key, is fault, epoch+start of the window)
    let mut windows: Vec<Window> = Vec::new();
    let mut nat_round = 0;
    for (i, step) in steps.iter().enumerate() {
        if o.max_time.is_some_and(|m| t_start.elapsed() > m) {
            sum.stopped_early = true;
            break;
        }
        if matches!(step, Step::NatFlush { .. }) && !o.nat_changes {
            sum.nat_skipped += 1;
            continue;
        }
        let outside = matches!(
            ml.lab.mn_segment,
            Segment::ExtA | Segment::ExtB | Segment::ExtNat
        );
        if matches!(
            step,
            Step::Restart {
                who: Daemon::Iha | Daemon::Xha,
                ..
            }
        ) && outside
            && !o.ha_restart_outside
        {
            sum.ha_skipped += 1;
            continue;
        }
        let from = ml.lab.mn_segment;
        let pos = traffic.position();
        let t0 = Instant::now();
        let (key, class, bound, stay, wait) = match *step {
            Step::Move { to, stay_ms, wait } => {
                ml.lab.move_mn(to)?;
                sum.moves += 1;
                let k = format!(
                    "{}->{}{}",
                    zone(from),
                    zone(to),
                    if wait { "" } else { " (quick)" }
                );
                (k, 0u8, o.move_bound, stay_ms, wait)
            }
            Step::NatFlush { stay_ms } => {
                nat_round += 1;
                flush_hotel_nat(&ml, nat_round)?;
                ("nat mapping change".into(), 1, o.move_bound, stay_ms, true)
            }
            Step::Restart { who, kill, down_ms } => {
                restart(&mut ml, who, kill, Duration::from_millis(down_ms))?;
                let k = format!(
                    "restart {} ({})",
                    who.name(),
                    if kill { "kill -9" } else { "SIGTERM" }
                );
                (k, 2, o.fault_bound, 1000, true)
            }
            Step::Loss { ms } => {
                if let Err(e) = extra::loss_on(&ml.lab) {
                    eprintln!("soak: loss burst not set up: {e}");
                }
                std::thread::sleep(Duration::from_millis(ms));
                if let Err(e) = extra::loss_off(&ml.lab) {
                    eprintln!("soak: loss burst not removed: {e}");
                }
                let k = format!("loss burst 30 % on {}", zone(ml.lab.mn_segment));
                (k, 2, o.move_bound, 500, true)
            }
            Step::Silent { to, stay_ms } => {
                if let Err(e) = extra::silent(&ml.lab, to) {
                    eprintln!("soak: silent move not made: {e}");
                }
                let k = format!("silent {}~>{}", zone(from), zone(to));
                (k, 0, o.move_bound, stay_ms, false)
            }
            Step::Attack {
                kind: Attack::TunnelVision,
            } if !o.extras.tunnelvision => {
                sum.tunnelvision_skipped += 1;
                continue;
            }
            Step::Attack { kind } => {
                match extra::attack(&mut ml.lab, kind, &pcap) {
                    Ok(what) => eprintln!("soak: {}: {what}", kind.name()),
                    Err(e) => eprintln!("soak: {} failed to run: {e}", kind.name()),
                }
                (kind.name().to_string(), 2, o.fault_bound, 1000, true)
            }
        };
        let mut line = format!(
            "step {i:>4} [{:>6.1}s] {key:<28} at {}",
            t_start.elapsed().as_secs_f64(),
            ml.lab.mn_segment.name()
        );
        let back = if wait {
            time_to_data(&ml, t0, o.give_up)
        } else {
            None
        };
        let stat = match class {
            0 => sum.moves_by_kind.entry(key.clone()).or_default(),
            1 => &mut sum.nat_flushes,
            _ => sum.faults_by_kind.entry(key.clone()).or_default(),
        };
        stat.count += 1;
        if wait {
            match back {
                Some(d) => {
                    let ms = d.as_secs_f64() * 1e3;
                    stat.max_recovery_ms = stat.max_recovery_ms.max(ms);
                    let _ = write!(line, ": data back in {ms:.0} ms");
                    if d > bound {
                        stat.slow += 1;
                        sum.slow.push(format!(
                            "step {i} {key} at {}: {ms:.0} ms > {} s",
                            ml.lab.mn_segment.name(),
                            bound.as_secs()
                        ));
                        line += " SLOW";
                    }
                }
                None => {
                    let st = ml.mn_status().map(|v| v.to_string()).unwrap_or_default();
                    sum.unrecovered.push(format!(
                        "step {i} {key} at {}: no user data within {} s; MN status {st}\n{}",
                        ml.lab.mn_segment.name(),
                        o.give_up.as_secs(),
                        ml.lab.log_tail("mn", 30)
                    ));
                    line += ": UNRECOVERED";
                }
            }
        }
        eprintln!("{line}");
        windows.push((key, class, pos));
        sum.steps += 1;
        if !sum.unrecovered.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(stay).mul_f64(o.stay_factor.max(0.0)));
        traffic.renew_if_broken(&mut sum.tcp_resets, &mut sum.tcp_reconnects);
        for (n, p) in daemon_pids(&ml) {
            if let Some(u) = usage.iter_mut().find(|u| u.name == n) {
                if p != u.pid {
                    u.restarts += 1;
                    u.pid = p;
                }
                if let Some(x) = p.and_then(usage_of) {
                    u.max.rss_kb = u.max.rss_kb.max(x.rss_kb);
                    u.max.fds = u.max.fds.max(x.fds);
                }
            }
        }
    }
    sum.tcp_resets += traffic.finish();
    for (n, p) in daemon_pids(&ml) {
        if let Some(u) = usage.iter_mut().find(|u| u.name == n) {
            u.end = p.and_then(usage_of);
        }
    }
    sum.usage = usage;
    for (n, p) in [
        ("ha", "i-HA"),
        ("xha", "x-HA"),
        ("fa", "FA"),
        ("charon", "gateway"),
        ("mn", "MN"),
    ] {
        if !ml.lab.is_running(n) {
            sum.died.push(format!(
                "{p} died: {:?}\n{}",
                ml.lab.exit_status(n),
                ml.lab.log_tail(n, 20)
            ));
        }
    }
    // Interruptions: the largest probe gap in each step's window.
    for (k, w) in windows.iter().enumerate() {
        let Some((e, s)) = w.2 else { continue };
        let Some(rec) = traffic.records.get(e) else {
            continue;
        };
        let end = match windows.get(k + 1).and_then(|n| n.2) {
            Some((e2, s2)) if e2 == e => s2,
            _ => rec.duration.as_micros() as u64,
        };
        let gap = rec.max_gap_ms(s, end);
        let stat = match w.1 {
            0 => sum.moves_by_kind.get_mut(&w.0),
            1 => Some(&mut sum.nat_flushes),
            _ => sum.faults_by_kind.get_mut(&w.0),
        };
        if let Some(st) = stat {
            st.max_gap_ms = st.max_gap_ms.max(gap);
        }
    }
    for r in &traffic.records {
        sum.up_bytes += r.up_bytes;
        sum.down_bytes += r.down_bytes;
    }
    enterprise::stop_captures(&mut ml.lab);
    // The daemons' logs next to the captures (the lab's directory goes with the lab).
    if o.pcap.is_some() {
        if let Ok(rd) = std::fs::read_dir(&ml.lab.dir) {
            for e in rd.flatten() {
                if e.path().extension().is_some_and(|x| x == "log") {
                    let _ = std::fs::copy(e.path(), pcap.join(e.file_name()));
                }
            }
        }
    }
    let mut plan = leak::Plan::lab();
    plan.detection_to.push(HA_ADDR);
    plan.agents.push(XFA_ADDR);
    plan.injectors.extend(injector);
    let segs: Vec<&str> = enterprise::OUTSIDE.to_vec();
    let reports =
        leak::classify_dir(&plan, &pcap, &segs).map_err(|e| other(format!("leak check: {e}")))?;
    sum.leaks = leak::leaks(&reports);
    sum.leak_report = leak::render(&reports);
    sum.elapsed = t_start.elapsed();
    Ok(sum)
}
