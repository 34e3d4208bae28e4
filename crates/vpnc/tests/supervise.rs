//! `mipsec-vpn --events` driven like `mipsec mn` drives it: JSON events on stdout, `mobike`
//! and `stop` on stdin, against an unmodified strongSwan 5.9.8 gateway (root, network
//! namespaces, like `tests/lab.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use std::io::{BufRead, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// A supervised client: its stdin, and its stdout lines (time of arrival, JSON; `None` at
/// the end of its stdout).
struct Supervised {
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<(Instant, Option<Value>)>,
    seen: Vec<Value>,
    spawned: Instant,
}

impl Supervised {
    /// `cmd` with piped stdin and stdout; stderr appended to the lab's client log.
    fn spawn(lab: &Lab, mut cmd: Command) -> Supervised {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(lab.dir.join("client.log"))
            .unwrap();
        let spawned = Instant::now();
        let mut child = cmd
            .env("RUST_LOG", "info,vpnc=debug")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(out).lines() {
                let Ok(l) = l else { break };
                let v = serde_json::from_str(&l)
                    .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {l}"));
                if tx.send((Instant::now(), Some(v))).is_err() {
                    return;
                }
            }
            let _ = tx.send((Instant::now(), None));
        });
        Supervised {
            child: Some(child),
            stdin,
            lines,
            seen: Vec::new(),
            spawned,
        }
    }

    /// `mipsec-vpn --config <cfg> --events` in the client namespace.
    fn client(lab: &Lab, cfg: &std::path::Path) -> Supervised {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &lab.cl()])
            .arg(env!("CARGO_BIN_EXE_mipsec-vpn"))
            .arg("--config")
            .arg(cfg)
            .arg("--events");
        Supervised::spawn(lab, c)
    }

    fn send(&mut self, line: &str) -> Instant {
        let s = self.stdin.as_mut().expect("stdin open");
        writeln!(s, "{line}").unwrap();
        s.flush().unwrap();
        Instant::now()
    }

    /// The next event named `name` (others are kept in `seen`); panics after `limit`.
    fn next(&mut self, lab: &Lab, name: &str, limit: Duration) -> (Instant, Value) {
        let end = Instant::now() + limit;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((t, Some(v))) => {
                    self.seen.push(v.clone());
                    if v["event"] == name {
                        return (t, v);
                    }
                }
                Ok((_, None)) | Err(mpsc::RecvTimeoutError::Disconnected) => panic!(
                    "stdout ended waiting for `{name}`; events {:?}\n{}",
                    self.seen,
                    lab.logs()
                ),
                Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                    "no `{name}` event within {limit:?}; events {:?}\n{}",
                    self.seen,
                    lab.logs()
                ),
            }
        }
    }

    /// Events that arrived so far, without waiting.
    fn pending(&mut self) -> Vec<Value> {
        let mut v = Vec::new();
        while let Ok((_, Some(e))) = self.lines.try_recv() {
            self.seen.push(e.clone());
            v.push(e);
        }
        v
    }

    /// The end of stdout (every writer gone): its time, or None after `limit`.
    fn eof(&mut self, limit: Duration) -> Option<Instant> {
        let end = Instant::now() + limit;
        loop {
            let left = end.checked_duration_since(Instant::now())?;
            match self.lines.recv_timeout(left) {
                Ok((_, Some(v))) => self.seen.push(v),
                Ok((t, None)) => return Some(t),
                Err(mpsc::RecvTimeoutError::Disconnected) => return Some(Instant::now()),
                Err(mpsc::RecvTimeoutError::Timeout) => return None,
            }
        }
    }

    fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + limit;
        let c = self.child.as_mut()?;
        while Instant::now() < end {
            if let Ok(Some(st)) = c.try_wait() {
                self.child = None;
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        if let Some(c) = self.child.take() {
            stop(c);
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn established(lab: &Lab) -> bool {
    lab.list_sas().contains("ESTABLISHED")
}

/// The gateway forgets the IKE SA within `limit` (our Delete arrived).
fn sa_gone(lab: &Lab, limit: Duration) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if !established(lab) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// `up` carries the TIA, the TUN, our address and the gateway; `stop` sends a Delete (the
/// gateway's SA is gone), ends with `down` and exit status 0.
#[test]
fn events_up_then_stop_command() {
    if !need_lab("events_up_then_stop_command") {
        return;
    }
    let lab = Lab::up("sa", GwOpts::default());
    let cfg = lab.client_config("");
    let mut c = Supervised::client(&lab, &cfg);
    let (t_up, up) = c.next(&lab, "up", Duration::from_secs(15));
    assert_eq!(up["tia"], "10.99.0.1", "{up}");
    assert_eq!(up["tun"], lab.tun().as_str(), "{up}");
    assert_eq!(up["local"], "192.0.2.1", "{up}");
    assert_eq!(up["interface"], lab.cl_if().as_str(), "{up}");
    assert_eq!(up["gateway"], "192.0.2.2", "{up}");
    // strongSwan's kernel-libipsec always asks for UDP encapsulation.
    assert_eq!(up["natt"], true, "{up}");
    assert!(lab.ping(2), "{}", lab.logs());
    assert!(established(&lab), "{}", lab.list_sas());
    let t_stop = c.send("stop");
    let (_, down) = c.next(&lab, "down", Duration::from_secs(3));
    assert_eq!(down["reason"], "stop", "{down}");
    let st = c.wait_exit(Duration::from_secs(3));
    assert!(st.is_some_and(|s| s.success()), "{st:?}\n{}", lab.logs());
    let exit_ms = ms(t_stop.elapsed());
    assert!(sa_gone(&lab, Duration::from_secs(1)), "{}", lab.list_sas());
    eprintln!(
        "spawn -> up event: {:.1} ms (client's own IKE+CHILD setup {} ms); stop -> exit {exit_ms:.0} ms",
        ms(t_up - c.spawned),
        up["setup_ms"]
    );
}

/// The end of stdin (the supervisor closed it or died) is a clean stop.
#[test]
fn stdin_eof_is_a_clean_stop() {
    if !need_lab("stdin_eof_is_a_clean_stop") {
        return;
    }
    let lab = Lab::up("se", GwOpts::default());
    let cfg = lab.client_config("");
    let mut c = Supervised::client(&lab, &cfg);
    c.next(&lab, "up", Duration::from_secs(15));
    assert!(established(&lab));
    drop(c.stdin.take());
    let (_, down) = c.next(&lab, "down", Duration::from_secs(3));
    assert_eq!(down["reason"], "stdin closed", "{down}");
    let st = c.wait_exit(Duration::from_secs(3));
    assert!(st.is_some_and(|s| s.success()), "{st:?}\n{}", lab.logs());
    assert!(sa_gone(&lab, Duration::from_secs(1)), "{}", lab.list_sas());
    // A clean stop removes the kill switch's rule.
    let rules = lab.ns(&lab.cl(), &["ip", "rule", "show"]).unwrap();
    assert!(!rules.contains("lookup 1057"), "{rules}");
}

/// The supervisor dies by `kill -9` (stdin stays open: the test holds it): the kernel's
/// parent-death signal stops the client, cleanly, within 1 s.
#[test]
fn supervisor_kill9_ends_child_within_1s() {
    if !need_lab("supervisor_kill9_ends_child_within_1s") {
        return;
    }
    let lab = Lab::up("sk", GwOpts::default());
    let cfg = lab.client_config("");
    // `sh` is the supervisor: it forks the client and waits (`; true` keeps it from exec).
    let script = format!(
        "ip netns exec {} {} --config {} --events; true",
        lab.cl(),
        env!("CARGO_BIN_EXE_mipsec-vpn"),
        cfg.display()
    );
    let mut sh = Command::new("sh");
    sh.args(["-c", &script]);
    let mut c = Supervised::spawn(&lab, sh);
    c.next(&lab, "up", Duration::from_secs(15));
    let sh_pid = c.child.as_ref().unwrap().id();
    let kids = std::fs::read_to_string(format!("/proc/{sh_pid}/task/{sh_pid}/children")).unwrap();
    let vpn_pid: u32 = kids.split_whitespace().next().unwrap().parse().unwrap();
    let exe = std::fs::read_link(format!("/proc/{vpn_pid}/exe")).unwrap();
    assert!(exe.ends_with("mipsec-vpn"), "{exe:?}");
    let t_kill = Instant::now();
    c.child.as_mut().unwrap().kill().unwrap();
    c.child.take().unwrap().wait().unwrap();
    let gone = c.eof(Duration::from_secs(3));
    let alive =
        std::fs::read_to_string(format!("/proc/{vpn_pid}/stat")).is_ok_and(|s| !s.contains(") Z"));
    if alive {
        // Do not leave it behind.
        let _ = Command::new("kill").arg(vpn_pid.to_string()).status();
    }
    let gone = gone.unwrap_or_else(|| {
        panic!(
            "client {vpn_pid} still running 3 s after its supervisor was killed\n{}",
            lab.logs()
        )
    });
    let took = ms(gone - t_kill);
    eprintln!("supervisor kill -9 -> client gone: {took:.0} ms");
    assert!(took < 1000.0, "{took} ms\n{}", lab.logs());
    assert!(!alive);
    assert_eq!(
        c.seen.last().map(|v| v["event"].clone()),
        Some("down".into()),
        "{:?}",
        c.seen
    );
    assert!(sa_gone(&lab, Duration::from_secs(1)), "{}", lab.list_sas());
}

/// Under a supervisor the client does not follow an address change on its own; `mobike
/// <address>` moves the IKE SA (same SPI at the gateway), answers `mobike ok:true`, and
/// traffic flows again. An address that is not ours is refused at once.
#[test]
fn commanded_mobike_moves_the_tunnel() {
    if !need_lab("commanded_mobike_moves_the_tunnel") {
        return;
    }
    let lab = Lab::up("sm", GwOpts::default());
    // DPD off the critical path: the address is gone for a few seconds on purpose.
    let cfg = lab.client_config("dpd_interval = 10");
    let mut c = Supervised::client(&lab, &cfg);
    let (_, up) = c.next(&lab, "up", Duration::from_secs(15));
    let spi = up["ike_spi"].as_str().unwrap().to_string();
    assert!(lab.ping(1), "{}", lab.logs());
    let (cl, dev) = (lab.cl(), lab.cl_if());
    ip_n(&cl, &format!("addr add 192.0.2.3/24 dev {dev}")).unwrap();
    ip_n(&cl, &format!("addr del 192.0.2.1/24 dev {dev}")).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    // Not followed: no move, and the tunnel is cut off from its old address.
    assert_eq!(lab.status().unwrap()["mobike_moves"], 0);
    assert!(
        c.pending().iter().all(|e| e["event"] != "mobike"),
        "{:?}",
        c.seen
    );
    assert!(!lab.ping(1), "tunnel still works from a deleted address?");

    let t0 = c.send("mobike 203.0.113.9");
    let (t1, no) = c.next(&lab, "mobike", Duration::from_secs(2));
    assert_eq!(no["ok"], false, "{no}");
    assert!(
        no["reason"]
            .as_str()
            .unwrap()
            .contains("none of our interfaces"),
        "{no}"
    );
    eprintln!("refused mobike answered in {:.1} ms", ms(t1 - t0));
    c.send("teleport now");
    let (_, err) = c.next(&lab, "error", Duration::from_secs(2));
    assert!(
        err["reason"].as_str().unwrap().contains("unknown command"),
        "{err}"
    );

    let t0 = c.send("mobike 192.0.2.3");
    let (t1, ev) = c.next(&lab, "mobike", Duration::from_secs(5));
    assert_eq!(ev["ok"], true, "{ev}\n{}", lab.logs());
    assert_eq!(ev["local"], "192.0.2.3", "{ev}");
    let rtt = ms(t1 - t0);
    // strongSwan (kernel-libipsec) may carry ESP to the new address only once it has
    // rekeyed the CHILD_SA it moved, about a second later.
    let end = Instant::now() + Duration::from_secs(6);
    let ping_once = || {
        lab.ns(&lab.cl(), &["ping", "-c", "1", "-W", "0.1", "-q", INTERNAL])
            .is_ok()
    };
    while !ping_once() {
        assert!(
            Instant::now() < end,
            "no traffic within 6 s of mobike ok\n{}",
            lab.logs()
        );
    }
    let back = ms(t1.elapsed());
    assert!(lab.ping(3), "{}", lab.logs());
    let sas = lab.list_sas();
    assert!(
        sas.contains(&spi) && sas.contains("192.0.2.3[4500]"),
        "{sas}"
    );
    let s = lab.status().unwrap();
    assert_eq!(s["mobike_moves"], 1, "{s}");
    assert_eq!(s["reconnects"], 0, "{s}");
    eprintln!(
        "mobike command -> mobike ok event: {rtt:.1} ms (client's UPDATE_SA_ADDRESSES round trip {} ms); \
         a ping answered {back:.0} ms after the event",
        ev["ms"]
    );
    c.send("stop");
    c.next(&lab, "down", Duration::from_secs(3));
}

/// `mobike <address>` the instant the address appears, before any route to the
/// gateway follows it (a DHCP client adds the address, then the routes): the
/// UPDATE_SA_ADDRESSES cannot leave (ENETUNREACH). It is sent again every 20 ms
/// until the route is there, not at the 500 ms retransmission: the move completes
/// about when the route appears. Before, it waited for the retransmission.
#[test]
fn commanded_mobike_before_the_route_goes_out_when_the_route_comes() {
    if !need_lab("commanded_mobike_before_the_route_goes_out_when_the_route_comes") {
        return;
    }
    let lab = Lab::up("sr", GwOpts::default());
    let cfg = lab.client_config("dpd_interval = 10");
    let mut c = Supervised::client(&lab, &cfg);
    c.next(&lab, "up", Duration::from_secs(15));
    let (cl, dev) = (lab.cl(), lab.cl_if());
    // The new address without its subnet route, the old one gone: no route to the
    // gateway at all.
    ip_n(
        &cl,
        &format!("addr add 192.0.2.3/24 dev {dev} noprefixroute"),
    )
    .unwrap();
    ip_n(&cl, &format!("addr del 192.0.2.1/24 dev {dev}")).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let t0 = c.send("mobike 192.0.2.3");
    std::thread::sleep(Duration::from_millis(150));
    ip_n(
        &cl,
        &format!("route add 192.0.2.0/24 dev {dev} src 192.0.2.3"),
    )
    .unwrap();
    let (t1, ev) = c.next(&lab, "mobike", Duration::from_secs(5));
    assert_eq!(ev["ok"], true, "{ev}\n{}", lab.logs());
    let took = ms(t1 - t0);
    eprintln!("mobike with the route 150 ms late: ok after {took:.0} ms");
    assert!(
        took < 400.0,
        "the update waited for its retransmission (500 ms) instead of the route: {took:.0} ms"
    );
    c.send("stop");
    c.next(&lab, "down", Duration::from_secs(3));
}

/// The capture filter for IKE and ESP (UDP 500/4500, IP protocol 50).
const IKE_ESP: &str = "udp port 500 or udp port 4500 or ip proto 50";

/// `local_address` on a second interface that the routing tables do not use for the
/// gateway (the client's route to 192.0.2.2 is via its first interface), with
/// `bind_interface`: IKE and ESP leave and arrive only through the second interface (a
/// capture on the first sees none of them), and the tunnel carries traffic.
#[test]
fn bound_interface_is_the_only_path() {
    if !need_lab("bound_interface_is_the_only_path") {
        return;
    }
    let lab = Lab::up("sb", GwOpts::default());
    let (cl, a) = (lab.cl(), lab.cl_if());
    // The gateway answers through x, which is not the client's route back to it.
    let (x, _) = lab.add_second_link(Some("198.51.100.1/24"));
    let route = lab.ns(&cl, &["ip", "route", "get", "192.0.2.2"]).unwrap();
    assert!(route.contains(&format!("dev {a}")), "{route}");
    let cap_a = TextCapture::start(&lab, &format!("cap-{a}"), &cl, &a, IKE_ESP);
    let cap_x = TextCapture::start(&lab, &format!("cap-{x}"), &cl, &x, IKE_ESP);
    let cfg = lab.client_config(&format!(
        "interface = \"{x}\"\nlocal_address = \"198.51.100.1\"\nbind_interface = true\nkill_switch = \"off\""
    ));
    let mut c = Supervised::client(&lab, &cfg);
    let (_, up) = c.next(&lab, "up", Duration::from_secs(15));
    assert_eq!(up["local"], "198.51.100.1", "{up}");
    assert_eq!(up["interface"], x.as_str(), "{up}");
    assert!(lab.ping(3), "{}", lab.logs());
    let sas = lab.list_sas();
    assert!(sas.contains("198.51.100.1[4500]"), "{sas}");
    // kill_switch = "off": no blocking route in the table.
    let table = lab
        .ns(&cl, &["ip", "route", "show", "table", "1057"])
        .unwrap_or_default();
    assert!(!table.contains("unreachable"), "{table}");
    c.send("stop");
    c.next(&lab, "down", Duration::from_secs(3));
    assert!(c
        .wait_exit(Duration::from_secs(3))
        .is_some_and(|s| s.success()));
    let (on_a, on_x) = (cap_a.lines(), cap_x.lines());
    assert!(
        on_a.is_empty(),
        "IKE/ESP on {a}, not the bound interface:\n{}",
        on_a.join("\n")
    );
    assert!(on_x.len() >= 4, "{}", on_x.join("\n"));
    eprintln!(
        "bound to {x}: {} IKE/ESP packets captured on {x}, 0 on {a}",
        on_x.len()
    );
}

/// A user-space tunnel like the mobile node's: TUN `tun` in namespace `ns`, its packets
/// carried in UDP from `local` to `peer` and back (as RFC 3519 carries the x-home
/// address's traffic to the external home agent). Runs until `stop` is set.
fn tun_pipe(
    ns: &str,
    tun: &str,
    local: &str,
    peer: &str,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<()> {
    let (tun, local, peer) = (tun.to_string(), local.to_string(), peer.to_string());
    let (ready_tx, ready) = mpsc::channel();
    let h = in_ns(ns, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let opts = netio::TunOptions {
                multi_queue: false,
                mtu: Some(1400),
                up: true,
            };
            let t = netio::Tun::open_with(&tun, &opts).unwrap();
            let u = tokio::net::UdpSocket::bind(&local).await.unwrap();
            let peer: std::net::SocketAddr = peer.parse().unwrap();
            ready_tx.send(()).unwrap();
            let (mut a, mut b) = (vec![0u8; 65536], vec![0u8; 65536]);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                tokio::select! {
                    r = t.recv(&mut a) => if let Ok(n) = r {
                        let _ = u.send_to(&a[..n], peer).await;
                    },
                    r = u.recv_from(&mut b) => if let Ok((n, _)) = r {
                        let _ = t.send(&b[..n]).await;
                    },
                    () = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        });
    });
    ready.recv_timeout(Duration::from_secs(5)).unwrap();
    h
}

/// The cvc/fvc case: our address (an x-home address) is on a TUN owned by another
/// process (here a UDP tunnel to a TUN in the gateway's namespace, as `mipsec mn` tunnels
/// to its external home agent), not on the interface the gateway is routed through.
/// With `bind_interface`, IKE and ESP go into that TUN only: the capture on the routed
/// interface sees none of them (the pipe's own UDP, port 7777, does not count), the TUN
/// sees them all, and the tunnel carries traffic.
#[test]
fn bound_to_a_tun_like_mipx0() {
    if !need_lab("bound_to_a_tun_like_mipx0") {
        return;
    }
    let lab = Lab::up("st", GwOpts::default());
    let (cl, gw, a) = (lab.cl(), lab.gw(), lab.cl_if());
    let (mx, gx) = (format!("{}m", lab.name), format!("{}g", lab.name));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop1 = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let p1 = tun_pipe(&cl, &mx, "192.0.2.1:7777", "192.0.2.2:7777", stop1.clone());
    let p2 = tun_pipe(&gw, &gx, "192.0.2.2:7777", "192.0.2.1:7777", stop.clone());
    struct Stop(std::sync::Arc<std::sync::atomic::AtomicBool>);
    impl Drop for Stop {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
    let _stop = Stop(stop);
    for cmd in [
        vec![
            "ip",
            "-n",
            &cl,
            "addr",
            "add",
            "198.51.100.1/32",
            "dev",
            &mx,
        ],
        vec![
            "ip",
            "-n",
            &gw,
            "route",
            "add",
            "198.51.100.1/32",
            "dev",
            &gx,
        ],
    ] {
        sh(&cmd).unwrap();
    }
    for key in [
        "net.ipv4.conf.all.rp_filter=0".to_string(),
        format!("net.ipv4.conf.{mx}.rp_filter=0"),
    ] {
        lab.ns(&cl, &["sysctl", "-qw", &key]).unwrap();
    }
    let route = lab.ns(&cl, &["ip", "route", "get", "192.0.2.2"]).unwrap();
    assert!(route.contains(&format!("dev {a}")), "{route}");
    let cap_a = TextCapture::start(&lab, &format!("cap-{a}"), &cl, &a, IKE_ESP);
    let cap_m = TextCapture::start(&lab, &format!("cap-{mx}"), &cl, &mx, IKE_ESP);
    let cfg = lab.client_config(&format!(
        "interface = \"{mx}\"\nlocal_address = \"198.51.100.1\"\nbind_interface = true\n\
         kill_switch = \"off\"\ntable = 1058\nrule_priority = 1058"
    ));
    let mut c = Supervised::client(&lab, &cfg);
    let (t_up, up) = c.next(&lab, "up", Duration::from_secs(15));
    assert_eq!(up["local"], "198.51.100.1", "{up}");
    assert_eq!(up["interface"], mx.as_str(), "{up}");
    assert!(lab.ping(3), "{}", lab.logs());
    let sas = lab.list_sas();
    assert!(sas.contains("198.51.100.1[4500]"), "{sas}");
    let s = lab.status().unwrap();
    assert_eq!(s["bound_interface"], mx.as_str(), "{s}");
    assert_eq!(s["supervised"], true, "{s}");
    assert_eq!(s["auto_mobike"], false, "{s}");
    // Our own table and rule priority.
    let rules = lab.ns(&cl, &["ip", "rule", "show"]).unwrap();
    assert!(
        rules.contains("1058:") && !rules.contains("1057"),
        "{rules}"
    );

    // The mn restarts its tunnel: the TUN goes and comes back under the same name (a new
    // interface index), the address with it, and the mn says `mobike` from it again.
    stop1.store(true, std::sync::atomic::Ordering::Relaxed);
    p1.join().unwrap();
    let gone = lab.ns(&cl, &["ip", "link", "show", &mx]);
    assert!(gone.is_err(), "{gone:?}");
    let stop1 = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let _stop1 = Stop(stop1.clone());
    let p1 = tun_pipe(&cl, &mx, "192.0.2.1:7777", "192.0.2.2:7777", stop1);
    ip_n(&cl, &format!("addr add 198.51.100.1/32 dev {mx}")).unwrap();
    c.send("mobike 198.51.100.1");
    let (_, ev) = c.next(&lab, "mobike", Duration::from_secs(10));
    assert_eq!(ev["ok"], true, "{ev}\n{}", lab.logs());
    let end = Instant::now() + Duration::from_secs(6);
    while !lab.ping(1) {
        assert!(
            Instant::now() < end,
            "no traffic through the new TUN\n{}",
            lab.logs()
        );
    }
    c.send("stop");
    c.next(&lab, "down", Duration::from_secs(3));
    assert!(c
        .wait_exit(Duration::from_secs(3))
        .is_some_and(|s| s.success()));
    assert!(sa_gone(&lab, Duration::from_secs(1)), "{}", lab.list_sas());
    let (on_a, on_m) = (cap_a.lines(), cap_m.lines());
    drop(_stop);
    drop(_stop1);
    let _ = (p1.join(), p2.join());
    assert!(
        on_a.is_empty(),
        "IKE/ESP on {a}, not in the TUN:\n{}",
        on_a.join("\n")
    );
    assert!(on_m.len() >= 4, "{}", on_m.join("\n"));
    eprintln!(
        "bound to TUN {mx}: spawn -> up {:.1} ms; {} IKE/ESP packets in the TUN, 0 on {a}",
        ms(t_up - c.spawned),
        on_m.len()
    );
}

/// The mc case (RFC 5266): the client runs from a physical interface with
/// `bind_interface`, and the supervisor moves it to another interface and back. The
/// sockets follow (`bound_interface`), nothing leaves through the interface we left
/// although both keep their addresses and the routes still point there, and traffic
/// flows after each move on the same IKE SA.
#[test]
fn commanded_mobike_across_interfaces_rebinds() {
    if !need_lab("commanded_mobike_across_interfaces_rebinds") {
        return;
    }
    let lab = Lab::up("sx", GwOpts::default());
    let (cl, a) = (lab.cl(), lab.cl_if());
    let (x, _) = lab.add_second_link(Some("198.51.100.1/24"));
    let cfg = lab.client_config(&format!(
        "bind_interface = true\ninterfaces = [\"{x}\"]\ndpd_interval = 10"
    ));
    let mut c = Supervised::client(&lab, &cfg);
    let (_, up) = c.next(&lab, "up", Duration::from_secs(15));
    assert_eq!(up["interface"], a.as_str(), "{up}");
    let spi = up["ike_spi"].as_str().unwrap().to_string();
    assert_eq!(lab.status().unwrap()["bound_interface"], a.as_str());

    let t0 = c.send("mobike 198.51.100.1");
    let (t1, ev) = c.next(&lab, "mobike", Duration::from_secs(5));
    assert_eq!(ev["ok"], true, "{ev}\n{}", lab.logs());
    let rtt1 = ms(t1 - t0);
    let s = lab.status().unwrap();
    assert_eq!(s["bound_interface"], x.as_str(), "{s}");
    assert_eq!(s["interface"], x.as_str(), "{s}");
    let cap_a = TextCapture::start(&lab, &format!("cap-{a}"), &cl, &a, IKE_ESP);
    let end = Instant::now() + Duration::from_secs(6);
    while !lab.ping(1) {
        assert!(
            Instant::now() < end,
            "no traffic after the move\n{}",
            lab.logs()
        );
    }
    assert!(lab.ping(3), "{}", lab.logs());
    let on_a = cap_a.lines();
    assert!(
        on_a.is_empty(),
        "IKE/ESP on {a} after moving to {x}:\n{}",
        on_a.join("\n")
    );
    let sas = lab.list_sas();
    assert!(
        sas.contains(&spi) && sas.contains("198.51.100.1[4500]"),
        "{sas}"
    );

    let t0 = c.send("mobike 192.0.2.1");
    let (t1, ev) = c.next(&lab, "mobike", Duration::from_secs(5));
    assert_eq!(ev["ok"], true, "{ev}\n{}", lab.logs());
    let rtt2 = ms(t1 - t0);
    assert_eq!(lab.status().unwrap()["bound_interface"], a.as_str());
    let end = Instant::now() + Duration::from_secs(6);
    while !lab.ping(1) {
        assert!(
            Instant::now() < end,
            "no traffic after moving back\n{}",
            lab.logs()
        );
    }
    let sas = lab.list_sas();
    assert!(
        sas.contains(&spi) && sas.contains("192.0.2.1[4500]"),
        "{sas}"
    );
    eprintln!("mobike across interfaces: command -> ok event {rtt1:.1} ms, back {rtt2:.1} ms");
    c.send("stop");
    c.next(&lab, "down", Duration::from_secs(3));
}
