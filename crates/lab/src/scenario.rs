//! Scenarios on top of the topology: a lab with the daemons running ([`MipLab`]), the
//! demo timeline ([`run_demo`]) and the helpers the end-to-end tests share.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::mip;
use crate::netns::{self, other, Result};
use crate::topo::{Lab, Segment, CN_ADDR, MN_HOME};
use crate::traffic::{self, Client, ClientOpts, Record, TcpFault};

/// A lab with the CN server and (optionally) the HA and MN daemons running.
pub struct MipLab {
    pub lab: Lab,
    pub daemons: bool,
    pub ha_cfg: String,
    pub mn_cfg: String,
    pub ha_sock: PathBuf,
    pub mn_sock: PathBuf,
    pub fa_cfg: String,
    pub fa_sock: PathBuf,
}

impl MipLab {
    /// Builds the lab, starts the CN server and, with `daemons`, `mipsec ha` and
    /// `mipsec mn` (MN at home, requested lifetime `lifetime` s). Returns once the MN
    /// reaches the CN.
    pub fn start(exe: &Path, daemons: bool, lifetime: u32) -> Result<MipLab> {
        let mut lab = Lab::build(exe)?;
        let (ha_cfg, mn_cfg) = mip::write_configs(&lab, lifetime)?;
        let fa_cfg = mip::write_fa_config(&lab)?;
        let ha_sock = lab.dir.join("ha.sock");
        let mn_sock = lab.dir.join("mn.sock");
        let fa_sock = lab.dir.join("fa.sock");
        lab.spawn("cn", "cn-serve", &["serve"])?;
        let mut ml = MipLab {
            lab,
            daemons,
            ha_cfg,
            mn_cfg,
            ha_sock,
            mn_sock,
            fa_cfg,
            fa_sock,
        };
        if daemons {
            ml.start_fa()?;
            ml.start_ha()?;
            ml.start_mn()?;
        }
        let bind = daemons.then_some(MN_HOME);
        if !ml.echo_ok(bind, Duration::from_secs(10)) {
            return Err(other(format!(
                "MN cannot reach the CN at home after 10 s{}",
                ml.logs_hint()
            )));
        }
        Ok(ml)
    }

    fn logs_hint(&self) -> String {
        if !self.daemons {
            return String::new();
        }
        format!(
            "\n--- ha.log ---\n{}\n--- mn.log ---\n{}",
            self.lab.log_tail("ha", 15),
            self.lab.log_tail("mn", 15)
        )
    }

    /// Starts `mipsec ha` in the HA namespace and waits until its status answers.
    pub fn start_ha(&mut self) -> Result<()> {
        let cfg = self.ha_cfg.clone();
        self.lab
            .spawn("ha", "ha", &["mipsec", "ha", "--config", &cfg])?;
        self.wait_status("ha", &self.ha_sock.clone())
    }

    /// Restarts the HA with `offload = on` in its configuration. The new instance
    /// starts with no binding, so the MN should be at home (or move afterwards).
    pub fn restart_ha_offload(&mut self, on: bool) -> Result<()> {
        self.restart_agent_offload("ha", on)
    }

    /// Restarts agent `role` ("ha" or "fa") with `offload = on` in its configuration.
    pub fn restart_agent_offload(&mut self, role: &str, on: bool) -> Result<()> {
        self.restart_agent_with(role, "offload", &on.to_string())
    }

    /// Restarts agent `role` ("ha" or "fa") with `key = value` in its section of its
    /// configuration (replacing an earlier line for `key`). The new instance starts
    /// with no binding, so the MN should be at home (or move afterwards).
    pub fn restart_agent_with(&mut self, role: &str, key: &str, value: &str) -> Result<()> {
        self.lab.stop(role, libc::SIGTERM);
        let cfg = match role {
            "fa" => &self.fa_cfg,
            "mn" => &self.mn_cfg,
            _ => &self.ha_cfg,
        };
        let text = std::fs::read_to_string(cfg)?;
        let prefix = format!("{key} =");
        let mut lines: Vec<String> = text
            .lines()
            .filter(|l| !l.starts_with(&prefix))
            .map(str::to_string)
            .collect();
        let section = format!("[{role}]");
        if let Some(i) = lines.iter().position(|l| l.trim() == section) {
            lines.insert(i + 1, format!("{key} = {value}"));
        }
        std::fs::write(cfg, lines.join("\n") + "\n")?;
        match role {
            "fa" => self.start_fa(),
            "mn" => self.start_mn(),
            _ => self.start_ha(),
        }
    }

    /// Starts `mipsec fa` on int-b and waits until its status answers.
    pub fn start_fa(&mut self) -> Result<()> {
        let cfg = self.fa_cfg.clone();
        self.lab
            .spawn("fa", "fa", &["mipsec", "fa", "--config", &cfg])?;
        self.wait_status("fa", &self.fa_sock.clone())
    }

    pub fn fa_status(&self) -> Result<Value> {
        mip::status(&self.lab.exe, &self.fa_sock)
    }

    /// Starts `mipsec mn` in the MN namespace and waits until its status answers.
    pub fn start_mn(&mut self) -> Result<()> {
        let cfg = self.mn_cfg.clone();
        self.lab
            .spawn("mn", "mn", &["mipsec", "mn", "--config", &cfg])?;
        self.wait_status("mn", &self.mn_sock.clone())
    }

    fn wait_status(&mut self, name: &str, sock: &Path) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut last = String::new();
        while Instant::now() < deadline {
            if !self.lab.is_running(name) {
                return Err(other(format!(
                    "mipsec {name} exited ({:?}) at start:\n{}",
                    self.lab.exit_status(name),
                    self.lab.log_tail(name, 20)
                )));
            }
            match mip::status(&self.lab.exe, sock) {
                Ok(_) => return Ok(()),
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(other(format!(
            "mipsec {name}: status did not answer within 10 s ({last}):\n{}",
            self.lab.log_tail(name, 20)
        )))
    }

    pub fn mn_status(&self) -> Result<Value> {
        mip::status(&self.lab.exe, &self.mn_sock)
    }

    pub fn ha_status(&self) -> Result<Value> {
        mip::status(&self.lab.exe, &self.ha_sock)
    }

    /// Polls the MN status until `pred` holds; returns it and the time it took.
    pub fn wait_mn(
        &self,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<(Value, Duration)> {
        let t0 = Instant::now();
        let mut last = Value::Null;
        while t0.elapsed() < timeout {
            if let Ok(v) = self.mn_status() {
                if pred(&v) {
                    return Ok((v, t0.elapsed()));
                }
                last = v;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(other(format!(
            "MN status condition not met within {timeout:?}; last status: {last}{}",
            self.logs_hint()
        )))
    }

    /// Whether a UDP echo from the MN (source `bind`) to the CN succeeds within `timeout`.
    pub fn echo_ok(&self, bind: Option<Ipv4Addr>, timeout: Duration) -> bool {
        let h = netns::spawn_in(&self.lab.ns("mn"), move || {
            let s = UdpSocket::bind((bind.unwrap_or(Ipv4Addr::UNSPECIFIED), 0))?;
            s.set_read_timeout(Some(Duration::from_millis(100)))?;
            let to = SocketAddrV4::new(CN_ADDR, traffic::UDP_PORT);
            let t0 = Instant::now();
            let mut buf = [0u8; 64];
            while t0.elapsed() < timeout {
                let _ = s.send_to(&[0xee; 8], to);
                if s.recv(&mut buf).is_ok() {
                    return Ok(true);
                }
            }
            Ok(false)
        });
        matches!(h.join(), Ok(Ok(true)))
    }

    /// Sends each datagram from namespace `role` (source port chosen by the kernel) to
    /// `dst` and collects the reply to each, if one comes within `timeout`.
    pub fn udp_exchange(
        &self,
        role: &str,
        dst: SocketAddrV4,
        msgs: Vec<Vec<u8>>,
        timeout: Duration,
    ) -> Result<Vec<Option<Vec<u8>>>> {
        let h = netns::spawn_in(&self.lab.ns(role), move || {
            let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
            s.set_read_timeout(Some(timeout))?;
            let mut out = Vec::new();
            let mut buf = [0u8; 2048];
            for m in msgs {
                s.send_to(&m, dst)?;
                out.push(
                    s.recv(&mut buf)
                        .ok()
                        .and_then(|n| buf.get(..n).map(<[u8]>::to_vec)),
                );
            }
            Ok(out)
        });
        h.join()
            .map_err(|_| other("udp_exchange thread panicked"))?
    }

    /// The MN daemon is registered with the given care-of address.
    pub fn registered_at(v: &Value, coa: Ipv4Addr) -> bool {
        v.get("registered").and_then(Value::as_bool) == Some(true)
            && v.get("care_of").and_then(Value::as_str) == Some(&coa.to_string())
    }

    /// The MN daemon reports being at home.
    pub fn at_home(v: &Value) -> bool {
        v.get("mode").and_then(Value::as_str) == Some("home")
    }
}

// ---- demo --------------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct DemoOpts {
    pub stay: Duration,
    pub probe_interval: Duration,
    /// TCP rate per direction, bytes/s (0 = unlimited).
    pub rate: u64,
    pub bound_ms: f64,
    /// A stay with a longer period without TCP progress counts as a stall.
    pub stall_ms: f64,
    /// Without daemons: plain routing (a negative control: TCP must break on a move).
    pub plain: bool,
    pub lifetime: u32,
    pub moves: Vec<Segment>,
    /// Write a capture (tcpdump on the HA's eth0, which carries every registration and
    /// tunnel packet) to this file.
    pub capture: Option<PathBuf>,
    pub keep: bool,
    /// A third of the way through a stay behind the NAT, give the NAT a new port range and flush
    /// its connection tracking (`conntrack -F`): the next packet gets a new mapping,
    /// on a new port.
    pub flush_nat: bool,
}

impl Default for DemoOpts {
    fn default() -> Self {
        DemoOpts {
            stay: Duration::from_secs(4),
            probe_interval: Duration::from_millis(5),
            rate: 10_000_000,
            bound_ms: 3000.0,
            stall_ms: 5000.0,
            plain: false,
            lifetime: 300,
            moves: vec![Segment::IntA, Segment::IntB, Segment::Nat, Segment::Home],
            capture: None,
            keep: false,
            flush_nat: false,
        }
    }
}

/// One stay of the MN on a segment (the first is the start at home).
#[derive(Debug, Clone)]
pub struct Stay {
    pub from: Segment,
    pub to: Segment,
    pub start_us: u64,
    pub end_us: u64,
    /// How long the carrier flip + "DHCP" took.
    pub move_ms: f64,
    pub interruption_ms: f64,
    pub up_bytes: u64,
    pub down_bytes: u64,
    pub stall_ms: f64,
    pub rtt_ms: Option<f64>,
    pub status: String,
    /// `mipsec status --json` of the MN at the end of the stay (daemons only).
    pub status_json: Option<Value>,
}

#[derive(Debug, Clone)]
pub struct DemoReport {
    pub prefix: String,
    pub stays: Vec<Stay>,
    pub faults: Vec<TcpFault>,
    pub failures: Vec<String>,
    pub record: Record,
    pub ha_status: Option<Value>,
    pub mn_status: Option<Value>,
}

impl DemoReport {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// The timeline as text.
    pub fn render(&self, o: &DemoOpts) -> String {
        let mut s = format!(
            "mipsec-lab demo: lab {}, {} stay {:.1} s, probes every {} ms, TCP up+down at {}, bound {} ms\n",
            self.prefix,
            if o.plain { "PLAIN ROUTING (no daemons)," } else { "HA+MN daemons," },
            o.stay.as_secs_f64(),
            o.probe_interval.as_millis(),
            if o.rate == 0 { "max rate".to_string() } else { format!("{:.1} MB/s each", o.rate as f64 / 1e6) },
            o.bound_ms
        );
        s += &format!(
            "{:>7}  {:<15} {:>8} {:>14} {:>8} {:>8} {:>10} {:>8}  {}\n",
            "t(s)",
            "move",
            "move(ms)",
            "interrupt(ms)",
            "up(MB)",
            "down(MB)",
            "stall(ms)",
            "rtt(ms)",
            "MN status at end of stay"
        );
        for st in &self.stays {
            let mv = if st.from == st.to && st.start_us == self.stays[0].start_us {
                format!("start {}", st.to.name())
            } else {
                format!("{} -> {}", st.from.name(), st.to.name())
            };
            s += &format!(
                "{:>7.2}  {:<15} {:>8.0} {:>14.0} {:>8.1} {:>8.1} {:>10.0} {:>8}  {}\n",
                st.start_us as f64 / 1e6,
                mv,
                st.move_ms,
                st.interruption_ms,
                st.up_bytes as f64 / 1e6,
                st.down_bytes as f64 / 1e6,
                st.stall_ms,
                st.rtt_ms.map_or("-".into(), |r| format!("{r:.2}")),
                st.status
            );
        }
        let r = &self.record;
        s += &format!(
            "probes: {} sent, {} echoed; TCP total up {:.1} MB, down {:.1} MB\n",
            r.probes_sent.len(),
            r.probes_ok.len(),
            r.up_bytes as f64 / 1e6,
            r.down_bytes as f64 / 1e6
        );
        s += &format!("TCP resets/unexpected closes: {}\n", self.faults.len());
        for f in &self.faults {
            s += &format!("  at {:.2} s {}: {}\n", f.at.as_secs_f64(), f.dir, f.what);
        }
        if let Some(h) = &self.ha_status {
            s += &format!("HA status: {h}\n");
        }
        if let Some(m) = &self.mn_status {
            s += &format!("MN status: {m}\n");
        }
        if self.passed() {
            s += "verdict: PASS\n";
        } else {
            s += "verdict: FAIL\n";
            for f in &self.failures {
                s += &format!("  - {f}\n");
            }
        }
        s
    }
}

/// Runs the demo on an already started lab (MN at home).
pub fn demo_on(ml: &mut MipLab, o: &DemoOpts) -> Result<DemoReport> {
    if let Some(cap) = &o.capture {
        start_capture(&mut ml.lab, "ha", "eth0", cap, "")?;
    }
    let bind = (!o.plain).then_some(MN_HOME);
    let mut client = Client::start(
        &ml.lab.ns("mn"),
        &ClientOpts {
            bind,
            cn: CN_ADDR,
            rate: o.rate,
            up: true,
            down: true,
            probe_interval: Some(o.probe_interval),
        },
    )?;
    let status_of = |ml: &MipLab| -> (String, Option<Value>) {
        if !ml.daemons {
            return ("(no daemons)".into(), None);
        }
        match ml.mn_status() {
            Ok(v) => (mip::mn_summary(&v), Some(v)),
            Err(e) => (format!("status error: {e}"), None),
        }
    };
    let mut marks: Vec<(Segment, Segment, u64, f64)> = Vec::new();
    let t0 = client.now_us();
    marks.push((Segment::Home, Segment::Home, t0, 0.0));
    std::thread::sleep(o.stay);
    let mut statuses = vec![status_of(ml)];
    for &to in &o.moves {
        let from = ml.lab.mn_segment;
        let t = client.now_us();
        let m0 = Instant::now();
        ml.lab.move_mn(to)?;
        marks.push((from, to, t, m0.elapsed().as_secs_f64() * 1e3));
        if to == Segment::Nat && o.flush_nat {
            // A third of the way in, so that TCP has recovered well before the next move.
            std::thread::sleep(o.stay / 3);
            ml.lab.renew_nat_mapping()?;
            std::thread::sleep(o.stay - o.stay / 3);
        } else {
            std::thread::sleep(o.stay);
        }
        statuses.push(status_of(ml));
    }
    let end = client.now_us();
    let record = client.stop();
    if o.capture.is_some() {
        ml.lab.stop("capture-ha", libc::SIGINT);
    }
    let mut stays = Vec::new();
    for (i, &(from, to, start, move_ms)) in marks.iter().enumerate() {
        let stop = marks.get(i + 1).map_or(end, |m| m.2);
        let (u0, d0) = record.bytes_at(start);
        let (u1, d1) = record.bytes_at(stop);
        stays.push(Stay {
            from,
            to,
            start_us: start,
            end_us: stop,
            move_ms,
            interruption_ms: record.max_gap_ms(start, stop),
            up_bytes: u1.saturating_sub(u0),
            down_bytes: d1.saturating_sub(d0),
            stall_ms: record.longest_stall_ms(start, stop),
            rtt_ms: record.median_rtt_ms(start, stop),
            status: statuses.get(i).map(|s| s.0.clone()).unwrap_or_default(),
            status_json: statuses.get(i).and_then(|s| s.1.clone()),
        });
    }
    let mut failures = Vec::new();
    if !record.faults.is_empty() {
        failures.push(format!(
            "{} TCP reset(s)/unexpected close(s)",
            record.faults.len()
        ));
    }
    for st in &stays {
        if st.interruption_ms > o.bound_ms {
            failures.push(format!(
                "{} -> {}: interruption {:.0} ms > bound {:.0} ms",
                st.from.name(),
                st.to.name(),
                st.interruption_ms,
                o.bound_ms
            ));
        }
        if st.stall_ms > o.stall_ms {
            failures.push(format!(
                "{} -> {}: TCP made no progress for {:.0} ms (> {:.0} ms)",
                st.from.name(),
                st.to.name(),
                st.stall_ms,
                o.stall_ms
            ));
        }
    }
    if let Some(last) = stays.last() {
        if last.up_bytes == 0 || last.down_bytes == 0 {
            failures.push("TCP transfer stalled: no bytes in the last stay".into());
        }
    }
    let (ha_status, mn_status) = if ml.daemons {
        for n in ["ha", "mn", "fa"] {
            if !ml.lab.is_running(n) {
                failures.push(format!(
                    "mipsec {n} died: {:?}\n{}",
                    ml.lab.exit_status(n),
                    ml.lab.log_tail(n, 20)
                ));
            }
        }
        (ml.ha_status().ok(), ml.mn_status().ok())
    } else {
        (None, None)
    };
    Ok(DemoReport {
        prefix: ml.lab.prefix.clone(),
        stays,
        faults: record.faults.clone(),
        failures,
        record,
        ha_status,
        mn_status,
    })
}

/// Builds a lab, runs the demo and tears the lab down.
pub fn run_demo(exe: &Path, o: &DemoOpts) -> Result<DemoReport> {
    let mut ml = MipLab::start(exe, !o.plain, o.lifetime)?;
    if o.keep {
        ml.lab.keep();
    }
    demo_on(&mut ml, o)
}

/// Starts `tcpdump -i <iface> -U -w <file> <filter>` in namespace `role` (process name
/// `capture-<role>`), and waits until it is listening. Stop it with
/// `lab.stop("capture-<role>", libc::SIGINT)`.
pub fn start_capture(
    lab: &mut Lab,
    role: &str,
    iface: &str,
    file: &Path,
    filter: &str,
) -> Result<()> {
    let _ = std::fs::remove_file(file);
    let f = file.display().to_string();
    let mut args = vec![
        "-i",
        iface,
        "-n",
        "--immediate-mode",
        "-U",
        "-s",
        "0",
        "-w",
        &f,
    ];
    if !filter.is_empty() {
        args.push(filter);
    }
    lab.spawn_prog(role, &format!("capture-{role}"), "tcpdump".as_ref(), &args)?;
    let log = lab.log_path(&format!("capture-{role}"));
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(5) {
        if std::fs::read_to_string(&log).is_ok_and(|s| s.contains("listening on")) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(other(format!(
        "tcpdump did not start: {}",
        lab.log_tail(&format!("capture-{role}"), 5)
    )))
}
