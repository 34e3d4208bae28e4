//! The soak's summary: figures by kind of step, daemons' resources, the rendering.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use super::SoakOpts;

/// Figures of one kind of step.
#[derive(Debug, Default, Clone)]
pub struct KindStat {
    pub count: usize,
    /// Largest time from the step to the first echo from the home address (waited steps).
    pub max_recovery_ms: f64,
    /// Largest gap between echoed probes in the step's window.
    pub max_gap_ms: f64,
    pub slow: usize,
}

/// RSS (kB) and open file descriptors of a process.
#[derive(Debug, Default, Clone, Copy)]
pub struct Usage {
    pub rss_kb: u64,
    pub fds: usize,
}

pub fn usage_of(pid: u32) -> Option<Usage> {
    let st = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kb = st
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count();
    Some(Usage { rss_kb, fds })
}

/// One daemon's resources over the soak.
#[derive(Debug, Default, Clone)]
pub struct DaemonUsage {
    pub name: String,
    pub start: Option<Usage>,
    pub end: Option<Usage>,
    /// Largest RSS and fd count seen (sampled after every step).
    pub max: Usage,
    /// How often its pid changed (restarts).
    pub restarts: usize,
    pub(crate) pid: Option<u32>,
}

/// What a soak found.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    pub seed: u64,
    pub planned_moves: usize,
    pub moves: usize,
    pub steps: usize,
    pub moves_by_kind: BTreeMap<String, KindStat>,
    pub faults_by_kind: BTreeMap<String, KindStat>,
    pub nat_flushes: KindStat,
    /// NAT changes of the plan left out (without `nat_changes`).
    pub nat_skipped: usize,
    /// i-HA and x-HA restarts of the plan left out (outside, without `ha_restart_outside`).
    pub ha_skipped: usize,
    /// TunnelVision attacks of the plan left out (without `--tunnelvision`).
    pub tunnelvision_skipped: usize,
    pub leaks: u64,
    pub leak_report: String,
    pub tcp_resets: usize,
    pub tcp_reconnects: usize,
    pub up_bytes: u64,
    pub down_bytes: u64,
    /// Steps whose recovery exceeded the bound (step number, what, ms).
    pub slow: Vec<String>,
    pub unrecovered: Vec<String>,
    pub died: Vec<String>,
    pub usage: Vec<DaemonUsage>,
    pub elapsed: Duration,
    pub stopped_early: bool,
}

impl Summary {
    pub fn passed(&self) -> bool {
        self.leaks == 0 && self.unrecovered.is_empty() && self.died.is_empty()
    }

    pub fn render(&self, o: &SoakOpts) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "soak summary: seed {} ({}), {} of {} moves, {} steps in {:.0} s{}",
            self.seed,
            if o.negative_control {
                "NEGATIVE CONTROL: i-HA trusts 0.0.0.0/0"
            } else {
                "normal"
            },
            self.moves,
            self.planned_moves,
            self.steps,
            self.elapsed.as_secs_f64(),
            if self.stopped_early {
                " (stopped early)"
            } else {
                ""
            }
        );
        let _ = writeln!(
            s,
            "bounds: user data back within {} s of a move or NAT change, {} s of a restart",
            o.move_bound.as_secs(),
            o.fault_bound.as_secs()
        );
        let table = |s: &mut String, title: &str, m: &BTreeMap<String, KindStat>| {
            let _ = writeln!(
                s,
                "{title}:\n  {:<26} {:>6} {:>13} {:>11} {:>5}",
                "kind", "count", "max back(ms)", "max gap(ms)", "slow"
            );
            for (k, v) in m {
                let _ = writeln!(
                    s,
                    "  {k:<26} {:>6} {:>13.0} {:>11.0} {:>5}",
                    v.count, v.max_recovery_ms, v.max_gap_ms, v.slow
                );
            }
        };
        table(&mut s, "moves by kind", &self.moves_by_kind);
        let mut f = self.faults_by_kind.clone();
        if self.nat_flushes.count > 0 {
            f.insert("nat mapping change".into(), self.nat_flushes.clone());
        }
        table(&mut s, "faults injected", &f);
        if self.nat_skipped > 0 {
            let _ = writeln!(
                s,
                "  ({} NAT mapping changes of the plan skipped: without --nat-changes)",
                self.nat_skipped
            );
        }
        if self.ha_skipped > 0 {
            let _ = writeln!(
                s,
                "  ({} i-HA/x-HA restarts of the plan skipped: the node was outside, without --ha-restart-outside)",
                self.ha_skipped
            );
        }
        if self.tunnelvision_skipped > 0 {
            let _ = writeln!(
                s,
                "  ({} TunnelVision attacks of the plan skipped: without --tunnelvision)",
                self.tunnelvision_skipped
            );
        }
        let _ = writeln!(
            s,
            "TCP: {:.1} MB up, {:.1} MB down; resets/unexpected closes: {} (reconnected {} times)",
            self.up_bytes as f64 / 1e6,
            self.down_bytes as f64 / 1e6,
            self.tcp_resets,
            self.tcp_reconnects
        );
        let _ = writeln!(s, "recoveries over the bound: {}", self.slow.len());
        for x in &self.slow {
            let _ = writeln!(s, "  {x}");
        }
        let _ = writeln!(s, "unrecovered: {}", self.unrecovered.len());
        for x in self.unrecovered.iter().chain(&self.died) {
            let _ = writeln!(s, "  {x}");
        }
        let _ = writeln!(
            s,
            "daemons: RSS kB and open fds at start -> end (largest seen; restarts)"
        );
        let u =
            |x: &Option<Usage>| x.map_or("-".into(), |u| format!("{} kB/{} fds", u.rss_kb, u.fds));
        for d in &self.usage {
            let _ = writeln!(
                s,
                "  {:<18} {:>18} -> {:<18} (max {} kB/{} fds; {} restarts)",
                d.name,
                u(&d.start),
                u(&d.end),
                d.max.rss_kb,
                d.max.fds,
                d.restarts
            );
        }
        s += &self.leak_report;
        let _ = writeln!(
            s,
            "verdict: {}",
            if self.passed() { "PASS" } else { "FAIL" }
        );
        s
    }
}
