//! `mipsec-lab bench --handover` (issue 13 item 4): handover figures of the mobile node
//! against strongSwan's own client, in the same enterprise lab, as ratios.
//!
//! Three rounds, each in a fresh enterprise lab started on ext-a, with TCP both ways
//! (2 MB/s each) and 5 ms UDP probes from the node to the CN, over the same route:
//! ext-a -> ext-nat -> ext-a -> int-a -> ext-a.
//! - strongSwan's client: an unmodified second charon (kernel-libipsec, MOBIKE on, as its
//!   documentation configures a roadwarrior: PSK, a virtual IP, the intranet 10.0.0.0/8
//!   as remote traffic selector) in the node's namespace, with its own config directory,
//!   pid file (private /run) and vici socket; the gateway gets a second connection for
//!   it (its own identity, the intranet as local selector). The traffic runs from the
//!   virtual IP. Nothing tells it about the moves but the kernel (netlink).
//! - `mipsec mn` in mode mc (MOBIKE instead of the x-HA).
//! - `mipsec mn` in mode cvc (x-HA registration, the IKE SA rides inside x-MIP).
//!
//! Per move: the interruption (longest gap between echoed probes in the move's window),
//! the IKE datagrams the gateway sent and received in that window (its charon.log), and
//! the Mobile IP registration requests at the x-HA and i-HA.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::enterprise::{GW_ID, GW_OUTER, PSK};
use crate::gateway::{self, GwAuth};
use crate::mip;
use crate::netns::{other, Result};
use crate::roam::Outside;
use crate::scenario::MipLab;
use crate::topo::{Lab, Segment, CN_ADDR, MN_HOME};
use crate::traffic::{Client, ClientOpts, Record};
use crate::transit::{self, GwSas, Start};

/// The route of every round after the start on ext-a.
pub const ROUTE: [Segment; 4] = [Segment::ExtNat, Segment::ExtA, Segment::IntA, Segment::ExtA];
/// The identity of strongSwan's client (a second roadwarrior at the gateway).
pub const RW_ID: &str = "roadwarrior.example.com";
/// How long the bench waits for strongSwan's client to carry probes again after a move
/// (it learns of the move from netlink only).
pub const SW_RECOVER: Duration = Duration::from_secs(15);
/// TCP rate per direction (bytes/s).
pub const RATE: u64 = 2_000_000;

/// Who moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    /// strongSwan's own client (charon + swanctl, MOBIKE).
    StrongSwan,
    /// `mipsec mn`, mode mc.
    Mc,
    /// `mipsec mn`, mode cvc.
    Cvc,
}

impl Who {
    pub fn name(self) -> &'static str {
        match self {
            Who::StrongSwan => "strongSwan",
            Who::Mc => "mipsec mc",
            Who::Cvc => "mipsec cvc",
        }
    }
}

/// One move and what it cost.
#[derive(Debug, Clone)]
pub struct MoveFig {
    pub label: String,
    /// Longest gap between echoed probes in the move's window (ms); when the node never
    /// carried probes again in the window, the time from the last echo (or the move) to
    /// the window's end.
    pub interruption_ms: f64,
    /// Whether a probe was echoed after the move within the window.
    pub recovered: bool,
    /// IKE datagrams at the gateway in the window (sent + received).
    pub ike: usize,
    /// MOBIKE address updates the gateway processed in the window.
    pub mobike_updates: usize,
    /// Registration requests at the x-HA and i-HA in the window.
    pub mip_requests: u64,
    /// What the node settled in (the gate's mode, or strongSwan's IKE SA endpoint).
    pub settled: String,
    /// strongSwan's client: datagrams it failed to send in the window ("error writing
    /// to socket" in its charon.log: ESP and IKE towards an unreachable gateway).
    pub client_send_errors: usize,
}

/// One round: the moves, TCP faults and, for strongSwan's client, what the gateway
/// showed around its move to ext-nat.
#[derive(Debug, Clone)]
pub struct Round {
    pub who: Who,
    pub moves: Vec<MoveFig>,
    pub tcp_faults: Vec<String>,
    /// The gateway's SAs before and after the first move (ext-a -> ext-nat).
    pub gw_before: Option<GwSas>,
    pub gw_after: Option<GwSas>,
    /// strongSwan's client: its virtual IP.
    pub vip: Option<Ipv4Addr>,
}

/// Appends the roadwarrior connection for strongSwan's client to the gateway's
/// swanctl.conf (swanctl merges repeated sections) and reloads it.
pub fn add_roadwarrior(lab: &Lab) -> Result<()> {
    let d = gateway::gw_dir(lab);
    let p = d.join("swanctl/swanctl.conf");
    let mut text = std::fs::read_to_string(&p)?;
    text += &format!(
        "
# A plain roadwarrior with strongSwan's own client: the intranet behind the gateway.
connections {{
  roadwarrior {{
    local_addrs = {GW_OUTER}
    pools = tia
    mobike = yes
    proposals = aes256gcm16-prfsha256-x25519
    local {{
      auth = psk
      id = {GW_ID}
    }}
    remote {{
      auth = psk
      id = {RW_ID}
    }}
    children {{
      net {{
        local_ts = 10.0.0.0/8
        esp_proposals = aes256gcm16
      }}
    }}
  }}
}}

secrets {{
  ike-rw {{
    id-gw = {GW_ID}
    id-rw = {RW_ID}
    secret = \"{PSK}\"
  }}
}}
"
    );
    mip::write_private(&p, &text)?;
    gateway::swanctl(lab, &["--load-all"])?;
    Ok(())
}

/// strongSwan's client directory.
pub fn sw_dir(lab: &Lab) -> std::path::PathBuf {
    lab.dir.join("swrw")
}

/// Starts strongSwan's client in the node's namespace (process `sw-rw`), initiates
/// the connection and returns its virtual IP.
pub fn start_sw_client(lab: &mut Lab) -> Result<Ipv4Addr> {
    let d = sw_dir(lab);
    std::fs::create_dir_all(d.join("swanctl"))?;
    let conf = format!(
        "# strongSwan's roadwarrior client (MOBIKE is on by default).
connections {{
  enterprise {{
    remote_addrs = {GW_OUTER}
    vips = 0.0.0.0
    mobike = yes
    proposals = aes256gcm16-prfsha256-x25519
    local {{
      auth = psk
      id = {RW_ID}
    }}
    remote {{
      auth = psk
      id = {GW_ID}
    }}
    children {{
      net {{
        remote_ts = 10.0.0.0/8
        esp_proposals = aes256gcm16
      }}
    }}
  }}
}}

secrets {{
  ike-gw {{
    id-gw = {GW_ID}
    id-rw = {RW_ID}
    secret = \"{PSK}\"
  }}
}}
"
    );
    mip::write_private(&d.join("swanctl/swanctl.conf"), &conf)?;
    // The gateway's settings, with times in the log (when it noticed a move).
    let conf = gateway::strongswan_conf(&d).replace(
        "flush_line = yes",
        "flush_line = yes\n  time_format = %T\n  time_add_ms = yes",
    );
    std::fs::write(d.join("strongswan.conf"), conf)?;
    let t0 = Instant::now();
    gateway::spawn_charon(lab, "mn", "sw-rw", &d)?;
    gateway::load(lab, "sw-rw", &d, t0)?;
    gateway::swanctl_at(&d, &["--initiate", "--child", "net", "--timeout", "10"])?;
    sw_vip(lab)?.ok_or_else(|| other("strongSwan's client has no virtual IP"))
}

/// The client's virtual IP from its own `swanctl --list-sas` (`local ... [VIP]`).
pub fn sw_vip(lab: &Lab) -> Result<Option<Ipv4Addr>> {
    let text = gateway::swanctl_at(&sw_dir(lab), &["--list-sas"])?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("local "))
        .find_map(|l| {
            let s = l.rsplit_once('[')?.1.trim_end_matches(']');
            s.parse().ok()
        }))
}

fn sw_log(lab: &Lab) -> String {
    String::from_utf8_lossy(&std::fs::read(sw_dir(lab).join("charon.log")).unwrap_or_default())
        .into_owned()
}

/// IKE datagrams (sent + received) and MOBIKE address updates in a slice of charon.log.
pub fn count_ike(log: &str) -> (usize, usize) {
    let datagrams = log
        .lines()
        .filter(|l| l.contains("sending packet: from") || l.contains("received packet: from"))
        .count();
    let updates = log
        .lines()
        .filter(|l| l.contains("parsed INFORMATIONAL request") && l.contains("UPD_SA_ADDR"))
        .count();
    (datagrams, updates)
}

/// Registration requests so far at the x-HA and the i-HA.
fn mip_requests(ml: &MipLab) -> u64 {
    let x = ml
        .xha_status()
        .map_or(0, |v| mip::get_u64(&v, &["counters", "requests"]));
    let i = ml
        .ha_status()
        .map_or(0, |v| mip::get_u64(&v, &["counters", "requests"]));
    x + i
}

/// A window whose last echoed probe is older than this at its end has not recovered.
pub const RECOVERED_SLACK_US: u64 = 300_000;

/// The interruption of the window `[start, end]` (µs of the client's clock) from the
/// echoed probes' send times: the largest gap whose later probe falls in the window,
/// the gap from the last echo to the window's end included, the earlier probe clipped
/// to `start` when `clip` (the previous window never recovered: its outage is not this
/// move's). Returns (ms, recovered), recovered meaning probes came back until the
/// window's end (the last echo at most [`RECOVERED_SLACK_US`] before it); otherwise
/// the figure is a lower bound.
pub fn interruption(rec: &Record, start: u64, end: u64, clip: bool) -> (f64, bool) {
    let mut best = 0u64;
    let mut prev: Option<u64> = None;
    for &(t, _) in &rec.probes_ok {
        if t > end {
            break;
        }
        if t > start {
            let p = prev.unwrap_or(start);
            let p = if clip { p.max(start) } else { p };
            best = best.max(t.saturating_sub(p));
        }
        prev = Some(t);
    }
    let last = prev.unwrap_or(start);
    let last = if clip { last.max(start) } else { last };
    let trailing = end.saturating_sub(last);
    let recovered = trailing <= RECOVERED_SLACK_US;
    if !recovered {
        best = best.max(trailing);
    }
    (best as f64 / 1e3, recovered)
}

/// Copies the round's logs (the gateway's and the client's charon.log, mn.log) into
/// `dir`.
fn keep_logs(lab: &Lab, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    for (from, to) in [
        (
            gateway::gw_dir(lab).join("charon.log"),
            "gateway-charon.log",
        ),
        (sw_dir(lab).join("charon.log"), "client-charon.log"),
        (lab.log_path("mn"), "mn.log"),
        (lab.log_path("vpn"), "vpn.log"),
    ] {
        if from.exists() {
            std::fs::copy(&from, dir.join(to))?;
        }
    }
    Ok(())
}

/// Runs one round for `who` with `stay` on every network after it settled; with
/// `logs`, its logs are copied there.
/// strongSwan's client is given `recover` to carry probes again after each move.
pub fn round(
    exe: &Path,
    who: Who,
    stay: Duration,
    recover: Duration,
    logs: Option<&Path>,
) -> Result<Round> {
    let outside = if who == Who::Cvc {
        Outside::Xmip
    } else {
        Outside::Mobike
    };
    let mut ml = transit::start_lab(exe, GwAuth::Psk, outside, Start::On(Segment::ExtA), "")?;
    let (bind, vip) = if who == Who::StrongSwan {
        add_roadwarrior(&ml.lab)?;
        let vip = start_sw_client(&mut ml.lab)?;
        (vip, Some(vip))
    } else {
        ml.start_mn()?;
        transit::wait_gate(&ml, "open-vpn", Duration::from_secs(20))?;
        (MN_HOME, None)
    };
    let client = Client::start(
        &ml.lab.ns("mn"),
        &ClientOpts {
            bind: Some(bind),
            cn: CN_ADDR,
            rate: RATE,
            up: true,
            down: true,
            probe_interval: Some(Duration::from_millis(5)),
        },
    )?;
    let r = moves(&mut ml, who, client, stay, recover);
    if let Some(d) = logs {
        keep_logs(&ml.lab, d)?;
    }
    if r.is_err() && who == Who::StrongSwan {
        eprintln!(
            "strongSwan's client log:\n{}",
            std::fs::read_to_string(sw_dir(&ml.lab).join("charon.log")).unwrap_or_default()
        );
    }
    let mut round = r?;
    round.vip = vip;
    Ok(round)
}

struct Mark {
    label: String,
    at_us: u64,
    log_at: usize,
    sw_log_at: usize,
    mip_at: u64,
    settled: String,
    recovered_live: bool,
}

fn moves(
    ml: &mut MipLab,
    who: Who,
    mut client: Client,
    stay: Duration,
    recover: Duration,
) -> Result<Round> {
    std::thread::sleep(stay);
    let mut marks: Vec<Mark> = Vec::new();
    let (mut gw_before, mut gw_after) = (None, None);
    for (i, seg) in ROUTE.into_iter().enumerate() {
        if i == 0 {
            gw_before = Some(transit::gw_sas(&ml.lab)?);
        }
        let mut m = Mark {
            label: format!("{} -> {}", ml.lab.mn_segment.name(), seg.name()),
            at_us: client.now_us(),
            log_at: gateway::log_len(&ml.lab),
            sw_log_at: sw_log(&ml.lab).len(),
            mip_at: mip_requests(ml),
            settled: String::new(),
            recovered_live: true,
        };
        ml.lab.move_mn(seg)?;
        let moved_us = client.now_us();
        if who == Who::StrongSwan {
            let t0 = Instant::now();
            while client.last_echoed_sent_us().is_none_or(|t| t <= moved_us) {
                if t0.elapsed() > recover {
                    m.recovered_live = false;
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let sas = gateway::swanctl_at(&sw_dir(&ml.lab), &["--list-sas"]).unwrap_or_default();
            m.settled = transit::parse_sas(&sas)
                .remote
                .first()
                .cloned()
                .unwrap_or_else(|| "no IKE SA".into());
        } else {
            let want = transit::settled_gate(seg);
            let (st, _) = ml.wait_mn(Duration::from_secs(20), |v| {
                transit::gate(v) == want
                    && (want != "open-vpn" || v["care_of"] == seg.mn_addr().to_string())
            })?;
            m.settled = transit::mode(&st).to_string();
        }
        marks.push(m);
        std::thread::sleep(stay);
        if i == 0 {
            gw_after = Some(transit::gw_sas(&ml.lab)?);
        }
    }
    let end_us = client.now_us();
    let end_log = gateway::log_len(&ml.lab);
    let end_mip = mip_requests(ml);
    let rec = client.stop();
    let full_log = gateway::log_from(&ml.lab, 0);
    let client_log = sw_log(&ml.lab);
    let mut figs = Vec::new();
    let mut clip = false;
    for (i, m) in marks.iter().enumerate() {
        let (stop_us, log_to, mip_to) = marks.get(i + 1).map_or((end_us, end_log, end_mip), |n| {
            (n.at_us, n.log_at, n.mip_at)
        });
        let sw_to = marks.get(i + 1).map_or(client_log.len(), |n| n.sw_log_at);
        let client_send_errors = client_log
            .get(m.sw_log_at..sw_to.min(client_log.len()))
            .unwrap_or("")
            .lines()
            .filter(|l| l.contains("error writing to socket"))
            .count();
        let (ms, recovered) = interruption(&rec, m.at_us, stop_us, clip);
        clip = !recovered;
        let slice = full_log
            .get(m.log_at..log_to.min(full_log.len()))
            .unwrap_or("");
        let (ike, mobike_updates) = count_ike(slice);
        figs.push(MoveFig {
            label: m.label.clone(),
            interruption_ms: ms,
            recovered: recovered && m.recovered_live,
            ike,
            mobike_updates,
            mip_requests: mip_to.saturating_sub(m.mip_at),
            settled: m.settled.clone(),
            client_send_errors,
        });
    }
    Ok(Round {
        who,
        moves: figs,
        tcp_faults: rec
            .faults
            .iter()
            .map(|f| format!("{:?} {}: {}", f.at, f.dir, f.what))
            .collect(),
        gw_before,
        gw_after,
        vip: None,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 && a.is_finite() && b.is_finite() {
        format!("{:.2}", a / b)
    } else {
        "-".into()
    }
}

/// The table of figures: per move, per client the median interruption, IKE datagrams and
/// registration requests over the rounds, and the interruption ratios.
pub fn render(rounds: &[Round]) -> String {
    let whos = [Who::StrongSwan, Who::Mc, Who::Cvc];
    let mut s = String::from(
        "handover, 5 ms probes + TCP both ways at 2 MB/s; int = longest probe gap (ms), \
         IKE = IKE datagrams at the gateway, MIP = registration requests (x-HA + i-HA)\n",
    );
    s += &format!(
        "{:<18} | {:>22} | {:>22} | {:>22} | {:>6} {:>6} {:>6}\n",
        "move",
        "strongSwan int/IKE/MIP",
        "mc int/IKE/MIP",
        "cvc int/IKE/MIP",
        "mc/sw",
        "cvc/sw",
        "cvc/mc"
    );
    for (i, seg) in ROUTE.iter().enumerate() {
        let label = rounds
            .iter()
            .find_map(|r| r.moves.get(i).map(|m| m.label.clone()))
            .unwrap_or_else(|| seg.name().to_string());
        let mut cells = Vec::new();
        let mut ints = Vec::new();
        for w in whos {
            let figs: Vec<&MoveFig> = rounds
                .iter()
                .filter(|r| r.who == w)
                .filter_map(|r| r.moves.get(i))
                .collect();
            if figs.is_empty() {
                cells.push("-".to_string());
                ints.push(f64::NAN);
                continue;
            }
            let int = median(figs.iter().map(|f| f.interruption_ms).collect());
            let ike = median(figs.iter().map(|f| f.ike as f64).collect());
            let mipr = median(figs.iter().map(|f| f.mip_requests as f64).collect());
            let lost = figs.iter().filter(|f| !f.recovered).count();
            let mark = if lost > 0 { "!" } else { "" };
            cells.push(format!("{int:.0}{mark}/{ike:.0}/{mipr:.0}"));
            ints.push(int);
        }
        s += &format!(
            "{:<18} | {:>22} | {:>22} | {:>22} | {:>6} {:>6} {:>6}\n",
            label,
            cells[0],
            cells[1],
            cells[2],
            ratio(ints[1], ints[0]),
            ratio(ints[2], ints[0]),
            ratio(ints[2], ints[1])
        );
    }
    s += "(! = no probe came back within the window: the figure is the window, a lower bound)\n";
    for r in rounds {
        s += &format!("{}:", r.who.name());
        for m in &r.moves {
            s += &format!(
                " [{}: {:.0} ms, IKE {}, MOBIKE updates {}, MIP {}, {}{}{}]",
                m.label,
                m.interruption_ms,
                m.ike,
                m.mobike_updates,
                m.mip_requests,
                m.settled,
                if m.recovered { "" } else { ", not recovered" },
                if m.client_send_errors > 0 {
                    format!(", client send errors {}", m.client_send_errors)
                } else {
                    String::new()
                }
            );
        }
        if let (Some(b), Some(a)) = (&r.gw_before, &r.gw_after) {
            s += &format!(
                " gateway IKE SPIs {} across ext-a -> ext-nat ({:?} -> {:?})",
                if a.ike == b.ike && !a.ike.is_empty() {
                    "kept"
                } else {
                    "CHANGED"
                },
                b.remote,
                a.remote
            );
        }
        if !r.tcp_faults.is_empty() {
            s += &format!(" TCP faults: {:?}", r.tcp_faults);
        }
        s += "\n";
    }
    s
}

/// `mipsec-lab bench --handover`: `repeat` rounds of each client, then the table; with
/// `logs`, each round's logs go to `logs/<client>-<n>/`.
pub fn run(exe: &Path, stay: Duration, repeat: usize, logs: Option<&Path>) -> Result<String> {
    let mut rounds = Vec::new();
    for n in 0..repeat.max(1) {
        for who in [Who::StrongSwan, Who::Mc, Who::Cvc] {
            let short = match who {
                Who::StrongSwan => "strongswan",
                Who::Mc => "mc",
                Who::Cvc => "cvc",
            };
            let d = logs.map(|l| l.join(format!("{short}-{n}")));
            let r = round(exe, who, stay, SW_RECOVER, d.as_deref())?;
            eprint!("{}", render(std::slice::from_ref(&r)));
            rounds.push(r);
        }
    }
    Ok(render(&rounds))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(ok: &[u64]) -> Record {
        Record {
            probes_ok: ok.iter().map(|t| (*t, 100)).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn interruption_in_a_window() {
        let r = rec(&[0, 5_000, 10_000, 300_000, 305_000]);
        assert_eq!(interruption(&r, 8_000, 306_000, false), (290.0, true));
        // A window whose echoes stop: from the last echo to its end, not recovered.
        assert_eq!(interruption(&r, 8_000, 900_000, false), (595.0, false));
        // A window with echoes only just after the move, then none: not recovered.
        let r = rec(&[0, 5_000, 10_000, 12_000, 2_100_000, 2_105_000]);
        assert_eq!(interruption(&r, 9_000, 2_000_000, false), (1988.0, false));
        // The next window after one that never recovered starts its gap at its start.
        assert_eq!(interruption(&r, 2_000_000, 2_106_000, true), (100.0, true));
        assert_eq!(
            interruption(&r, 2_000_000, 2_106_000, false),
            (2088.0, true)
        );
    }

    #[test]
    fn counts_ike_lines() {
        let log = "10[NET] received packet: from 1.2.3.4[4500] to 192.0.2.1[4500] (80 bytes)
10[ENC] parsed INFORMATIONAL request 2 [ N(UPD_SA_ADDR) N(NATD_S_IP) N(NATD_D_IP) ]
10[NET] sending packet: from 192.0.2.1[4500] to 1.2.3.4[4500] (80 bytes)
";
        assert_eq!(count_ike(log), (2, 1));
    }
}
