//! The mobile node on hostile and failing networks (issue 16 items 5 and the MN's
//! kill -9 behaviour): a rogue agent advertising on a visited link, a home agent
//! restarted without its bindings, and `kill -9` of `mipsec mn` itself. Root only;
//! `lab::testing::lab_lock` runs the labs one at a time.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lab::mip;
use lab::netns::ip;
use lab::scenario::MipLab;
use lab::testing::{exe, lab_in_foreign_mode, lab_lock, ping_home_from_cn};
use lab::topo::{Segment, CN_ADDR, MN_HOME};

/// `ip route get <dst> from <src>` in the MN namespace.
fn route_get(ml: &MipLab, dst: Ipv4Addr) -> String {
    ip(&["-n", &ml.lab.ns("mn"), "route", "get", &dst.to_string()]).unwrap_or_default()
}

fn sysctl(ml: &MipLab, key: &str) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", &ml.lab.ns("mn"), "cat"])
        .arg(format!("/proc/sys/net/ipv4/conf/{key}"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// kill -9 of the mobile node while it is registered away from home leaves no
/// plaintext path: the routes for user data still point into its (persistent) TUN,
/// where packets are dropped unread, instead of vanishing with a TUN that died with
/// the process (then the default route sent them in the clear). A restart takes the
/// device and the routes over with no manual cleanup, and at home removes them.
/// The node's kernel path (`kernel_encap`), set at the kill, goes with the process.
/// The node also refuses ICMP redirects on its mobility interface.
#[test]
fn kill_9_leaves_no_plaintext_path_and_restart_takes_over() {
    let Some(_g) = lab_lock("kill_9_leaves_no_plaintext_path_and_restart_takes_over") else {
        return;
    };
    let mut ml = MipLab::start(&exe(), true, 300).unwrap();
    for key in ["eth0/accept_redirects", "all/accept_redirects"] {
        assert_eq!(sysctl(&ml, key), "0", "{key}");
    }
    ml.lab.move_mn(Segment::IntA).unwrap();
    let coa = Segment::IntA.mn_addr();
    ml.wait_mn(Duration::from_secs(10), |v| MipLab::registered_at(v, coa))
        .unwrap();
    assert!(ml.echo_ok(Some(MN_HOME), Duration::from_secs(2)));
    // The kernel was carrying the tunnel (`kernel_encap`): its programs must go with
    // the process too.
    let st = ml.mn_status().unwrap();
    assert_eq!(st["kernel_encap"]["entry"], coa.to_string(), "{st}");
    assert!(
        lab::mip::get_u64(&st, &["kernel_encap", "sends"]) > 0,
        "{st}"
    );
    ml.lab.stop("mn", libc::SIGKILL);
    std::thread::sleep(Duration::from_millis(300));
    let r = route_get(&ml, CN_ADDR);
    assert!(
        r.contains("dev mip0"),
        "after kill -9 user data must still go into the (dead) tunnel, not out of eth0: {r}"
    );
    assert!(
        !ml.echo_ok(None, Duration::from_millis(1500)),
        "no user data reaches the CN while the node is dead"
    );
    // Restart: takes the device and the routes over, registers again. The user table
    // is taken over in place: its two halves are replaced, never deleted, and the
    // policy rule stays (a moment without either would send user data to main), while
    // a stale entry of the predecessor's goes.
    let ns = ml.lab.ns("mn");
    ip(&[
        "-n",
        &ns,
        "route",
        "add",
        "192.0.2.77/32",
        "dev",
        "eth0",
        "table",
        "1057",
    ])
    .unwrap();
    let monitor = Command::new("ip")
        .args(["-n", &ns, "monitor", "route", "rule"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    ml.start_mn().unwrap();
    ml.wait_mn(Duration::from_secs(10), |v| MipLab::registered_at(v, coa))
        .unwrap();
    let mut monitor = monitor;
    let _ = monitor.kill();
    let events = String::from_utf8_lossy(&monitor.wait_with_output().unwrap().stdout).into_owned();
    let deleted: Vec<&str> = events
        .lines()
        .filter(|l| l.starts_with("Deleted"))
        .collect();
    assert!(
        !deleted.iter().any(|l| {
            (l.contains("0.0.0.0/1") || l.contains("128.0.0.0/1") || l.contains("lookup 1057"))
                && l.contains("1057")
        }),
        "the restart took a half route or the rule away for a moment: {deleted:?}"
    );
    assert!(
        deleted.iter().any(|l| l.contains("192.0.2.77")),
        "the predecessor's stale entry goes: {events}"
    );
    let rules = ip(&["-n", &ns, "rule", "show"]).unwrap();
    assert_eq!(
        rules.lines().filter(|l| l.contains("lookup 1057")).count(),
        1,
        "one user rule: {rules}"
    );
    assert!(ml.echo_ok(Some(MN_HOME), Duration::from_secs(3)));
    // Home: the leftover routes go, the link is used directly.
    ml.lab.move_mn(Segment::Home).unwrap();
    ml.wait_mn(Duration::from_secs(10), MipLab::at_home)
        .unwrap();
    let r = route_get(&ml, CN_ADDR);
    assert!(!r.contains("mip0"), "at home no route into the tunnel: {r}");
    assert!(ml.echo_ok(Some(MN_HOME), Duration::from_secs(3)));
    // A clean stop removes the device (nothing left behind).
    ml.lab.stop("mn", libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(300));
    let links = ip(&["-n", &ml.lab.ns("mn"), "link", "show"]).unwrap();
    assert!(
        !links.contains("mip0"),
        "clean stop deletes the TUN: {links}"
    );
}

/// A rogue agent on a visited link (10.20.0.66 on int-a, a foreign agent nobody
/// configured) advertises while the node has a working co-located registration
/// there: the node stays on it (pings keep flowing) and counts the advertisements.
/// Before, the first such advertisement moved the node to the rogue and cut it off.
#[test]
fn rogue_agent_advertisement_keeps_the_working_registration() {
    let Some(_g) = lab_lock("rogue_agent_advertisement_keeps_the_working_registration") else {
        return;
    };
    let mut ml = MipLab::start(&exe(), true, 300).unwrap();
    ml.lab.move_mn(Segment::IntA).unwrap();
    let coa = Segment::IntA.mn_addr();
    ml.wait_mn(Duration::from_secs(10), |v| MipLab::registered_at(v, coa))
        .unwrap();
    // The stranger's host gets a second leg on int-a and runs an agent there.
    let sw = ml.lab.ns("sw");
    let ev = ml.lab.ns("ev");
    ip(&[
        "-n", &sw, "link", "add", "ev1", "type", "veth", "peer", "name", "eth1", "netns", &ev,
    ])
    .unwrap();
    ip(&["-n", &sw, "link", "set", "ev1", "master", "br-inta"]).unwrap();
    ip(&["-n", &sw, "link", "set", "ev1", "up"]).unwrap();
    ip(&["-n", &ev, "addr", "add", "10.20.0.66/24", "dev", "eth1"]).unwrap();
    ip(&["-n", &ev, "link", "set", "eth1", "up"]).unwrap();
    let d = ml.lab.dir.display().to_string();
    let cfg = ml.lab.dir.join("rogue.toml");
    mip::write_private(
        &cfg,
        &format!(
            "[fa]\ninterface = \"eth1\"\naddress = \"10.20.0.66\"\nprefix_len = 24\nadvertisement_interval_ms = 300\ncontrol_socket = \"{d}/rogue.sock\"\n"
        ),
    )
    .unwrap();
    let cfg = cfg.display().to_string();
    ml.lab
        .spawn("ev", "rogue", &["mipsec", "fa", "--config", &cfg])
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let got = ping_home_from_cn(&ml, 25, "0.2");
    let st = ml.mn_status().unwrap();
    eprintln!("rogue on int-a: {got}/25 pings; {}", mip::mn_summary(&st));
    assert!(
        got >= 22,
        "pings lost with a rogue agent on the link: {got}/25\n{st}"
    );
    assert!(MipLab::registered_at(&st, coa), "{st}");
    let ignored = st["counters"]["drops"]["advertisement from an untrusted agent"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        ignored >= 2,
        "the rogue's advertisements were heard and ignored: {st}"
    );
}

/// A home agent restarted without its state (kill -9, no state file) has no binding
/// for the node, whose registration is still valid for minutes. The node sends user
/// data and hears nothing back through the tunnel: it asks the home agent (an echo
/// inside the tunnel), and without an answer re-registers. Bound: 1 s of silence +
/// 1 s for the echo + one registration; the test allows 6 s. Before, the node stayed
/// cut off until its next renewal (229 s in the report).
#[test]
fn home_agent_restart_without_state_is_detected_quickly() {
    let Some(_g) = lab_lock("home_agent_restart_without_state_is_detected_quickly") else {
        return;
    };
    let mut ml = MipLab::start(&exe(), true, 300).unwrap();
    ml.lab.move_mn(Segment::IntA).unwrap();
    let coa = Segment::IntA.mn_addr();
    ml.wait_mn(Duration::from_secs(10), |v| MipLab::registered_at(v, coa))
        .unwrap();
    home_agent_restart_without_state(&mut ml);
}

/// The same through a foreign agent with direct delivery (mode f): user data passes
/// between the agent and the node natively, never through the node's tunnel, so
/// nothing there shows the binding is gone. The node sends an echo from its home
/// address to the home agent through the agent every 2 s; the restarted home agent
/// answers it towards the home network, the echo's deadline passes and the node
/// re-registers. Bound: 2 s + 1 s + one registration; the test allows 6 s. Before,
/// the node stayed cut off until T_MONITOR's re-registration (48.9 s in a soak).
#[test]
fn home_agent_restart_without_state_is_detected_through_a_foreign_agent() {
    let Some(_g) = lab_lock("home_agent_restart_without_state_is_detected_through_a_foreign_agent")
    else {
        return;
    };
    let mut ml = lab_in_foreign_mode();
    home_agent_restart_without_state(&mut ml);
}

fn home_agent_restart_without_state(ml: &mut MipLab) {
    let before = ml.mn_status().unwrap();
    let ok0 = mip::get_u64(&before, &["counters", "registrations_ok"]);
    assert!(
        ml.echo_ok(Some(MN_HOME), Duration::from_secs(2)),
        "{before}"
    );
    ml.lab.stop("ha", libc::SIGKILL);
    ml.start_ha().unwrap();
    let t0 = Instant::now();
    let mut back = None;
    while t0.elapsed() < Duration::from_secs(6) {
        if ml.echo_ok(Some(MN_HOME), Duration::from_millis(300)) {
            back = Some(t0.elapsed());
            break;
        }
    }
    let st = ml.mn_status().unwrap();
    let back = back.unwrap_or_else(|| panic!("still cut off 6 s after the HA restart: {st}"));
    eprintln!(
        "user data back {back:?} after the HA restart: {}",
        mip::mn_summary(&st)
    );
    assert!(
        mip::get_u64(&st, &["counters", "registrations_ok"]) > ok0,
        "{st}"
    );
    assert!(
        mip::get_u64(&st, &["counters", "dead_binding_reregistrations"]) >= 1,
        "{st}"
    );
}

/// `mipsec status` for the mobile node: per interface its state, mode, gate, the age
/// of the last TNC proof and the reason of the last change; counters for detections
/// and gate closures. With a home agent that trusts the lab's networks (RFC 5265
/// TNC), the proof's age is shown, and a move closes the gate and says why.
#[test]
fn status_shows_interface_state_gate_proof_and_reasons() {
    let Some(_g) = lab_lock("status_shows_interface_state_gate_proof_and_reasons") else {
        return;
    };
    let mut ml = MipLab::start(&exe(), true, 300).unwrap();
    // The lab's HA is an i-HA that trusts every lab subnet (mip::HA_TRUSTED).
    ml.lab.move_mn(Segment::IntA).unwrap();
    let coa = Segment::IntA.mn_addr();
    let (st, _) = ml
        .wait_mn(Duration::from_secs(10), |v| {
            MipLab::registered_at(v, coa) && v["interfaces"][0]["tnc_proof_age_s"].is_number()
        })
        .unwrap();
    let i = &st["interfaces"][0];
    assert_eq!(i["name"], "eth0", "{st}");
    assert_eq!(i["state"], "inside", "{st}");
    assert_eq!(i["mode"], "c", "{st}");
    assert_eq!(i["gate"], "open-inside", "{st}");
    assert_eq!(i["last_change"], "i-HA reply with TNC", "{st}");
    assert!(i["tnc_proof_age_s"].as_f64().unwrap() < 10.0, "{st}");
    let det0 = mip::get_u64(&st, &["counters", "detections"]);
    let clo0 = mip::get_u64(&st, &["counters", "gate_closures"]);
    assert!(det0 >= 1, "{st}");
    // A move: the gate closes (counted), a detection starts on the new link.
    ml.lab.move_mn(Segment::IntC).unwrap();
    let coa = Segment::IntC.mn_addr();
    let (st, _) = ml
        .wait_mn(Duration::from_secs(10), |v| MipLab::registered_at(v, coa))
        .unwrap();
    assert!(
        mip::get_u64(&st, &["counters", "detections"]) > det0,
        "{st}"
    );
    assert!(
        mip::get_u64(&st, &["counters", "gate_closures"]) > clo0,
        "{st}"
    );
    // The human-readable form has the interface table.
    let out = Command::new(exe())
        .args(["mipsec", "status", "--socket"])
        .arg(&ml.mn_sock)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("INTERFACE") && text.contains("eth0"),
        "{text}"
    );
    assert!(
        text.contains("inside") && text.contains("open-inside"),
        "{text}"
    );
    // Home: state home, mode h, gate open on the link.
    ml.lab.move_mn(Segment::Home).unwrap();
    let (st, _) = ml
        .wait_mn(Duration::from_secs(10), |v| {
            MipLab::at_home(v) && v["interfaces"][0]["state"] == "home"
        })
        .unwrap();
    let i = &st["interfaces"][0];
    assert_eq!(
        (i["state"].as_str(), i["mode"].as_str(), i["gate"].as_str()),
        (Some("home"), Some("h"), Some("open-home")),
        "{st}"
    );
}

/// A clean restart of the foreign agent (SIGTERM, start again) while the node is
/// registered through it: the new agent knows no visitor, and advertises from
/// sequence number 0 (RFC 5944 3.6.1.2: a reboot). The node registers again
/// through it within a few seconds, and the CN reaches it again. Before, the node
/// had not re-registered 14 s later.
#[test]
fn foreign_agent_clean_restart_re_registers_promptly() {
    let Some(_g) = lab_lock("foreign_agent_clean_restart_re_registers_promptly") else {
        return;
    };
    let mut ml = lab_in_foreign_mode();
    // Down for a moment, and down for longer than the advertisement lifetime.
    for down in [Duration::ZERO, Duration::from_secs(5)] {
        std::thread::sleep(Duration::from_secs(2));
        let ok0 = mip::get_u64(&ml.mn_status().unwrap(), &["counters", "registrations_ok"]);
        ml.lab.stop("fa", libc::SIGTERM);
        std::thread::sleep(down);
        ml.start_fa().unwrap();
        let t0 = Instant::now();
        let r = ml.wait_mn(Duration::from_secs(5), |v| {
            v["mode"] == "foreign"
                && v["registered"] == true
                && mip::get_u64(v, &["counters", "registrations_ok"]) > ok0
        });
        if r.is_err() {
            eprintln!("FA status: {:?}", ml.fa_status());
            eprintln!(
                "FA log: {}",
                std::fs::read_to_string(ml.lab.dir.join("fa.log")).unwrap_or_default()
            );
        }
        let (st, took) = r.unwrap();
        eprintln!(
            "down {down:?}: re-registered {took:?} after the FA restart: {}",
            mip::mn_summary(&st)
        );
        let fa = ml.fa_status().unwrap();
        assert!(
            fa.to_string().contains(&MN_HOME.to_string()),
            "the new agent lists us: {fa}"
        );
        let got = ping_home_from_cn(&ml, 10, "0.2");
        assert!(
            got >= 8,
            "CN reaches the node after the FA restart: {got}/10 ({:?})",
            t0.elapsed()
        );
    }
}

/// RFC 5265 MN-4 in the shell: a registration whose reply has no Trusted Networks
/// Configured extension (the HA is not an i-HA for this link) leaves the gate closed
/// both ways, and status says why. After the HA trusts the lab's networks (it now
/// adds TNC), a move proves the new link and user data flows.
#[test]
fn without_tnc_the_gate_stays_closed_and_status_says_why() {
    let Some(_g) = lab_lock("without_tnc_the_gate_stays_closed_and_status_says_why") else {
        return;
    };
    let mut ml = MipLab::start(&exe(), true, 300).unwrap();
    let trusting = std::fs::read_to_string(&ml.ha_cfg).unwrap();
    ml.lab.stop("ha", libc::SIGTERM);
    let plain = trusting.replacen(mip::HA_TRUSTED, "", 1);
    assert_ne!(plain, trusting, "the lab's HA config has the trusted line");
    mip::write_private(std::path::Path::new(&ml.ha_cfg), &plain).unwrap();
    ml.start_ha().unwrap();
    ml.lab.move_mn(Segment::IntA).unwrap();
    let (st, _) = ml
        .wait_mn(Duration::from_secs(10), |v| {
            v["interfaces"][0]["last_change"]
                .as_str()
                .is_some_and(|r| r.contains("without TNC"))
        })
        .unwrap();
    let i = &st["interfaces"][0];
    assert_eq!(i["gate"], "closed", "{st}");
    assert_ne!(i["state"], "inside", "{st}");
    assert!(
        mip::get_u64(&st, &["counters", "accepted_without_tnc"]) >= 1,
        "{st}"
    );
    assert!(
        !ml.echo_ok(Some(MN_HOME), Duration::from_secs(2)),
        "no user data outside"
    );
    assert_eq!(
        ping_home_from_cn(&ml, 5, "0.2"),
        0,
        "nothing inbound either"
    );
    // The i-HA now trusts the lab's networks (TNC); a move proves the new link.
    ml.lab.stop("ha", libc::SIGTERM);
    mip::write_private(std::path::Path::new(&ml.ha_cfg), &trusting).unwrap();
    ml.start_ha().unwrap();
    ml.lab.move_mn(Segment::IntC).unwrap();
    let coa = Segment::IntC.mn_addr();
    let (st, _) = ml
        .wait_mn(Duration::from_secs(10), |v| MipLab::registered_at(v, coa))
        .unwrap();
    assert!(st["interfaces"][0]["tnc_proof_age_s"].is_number(), "{st}");
    assert!(ml.echo_ok(Some(MN_HOME), Duration::from_secs(3)));
}

/// A lab whose node runs with `t_monitor_s = 11` (grace 10 s: a re-registration
/// about every second while inside).
fn lab_with_short_t_monitor() -> MipLab {
    let mut ml = MipLab::start(&exe(), true, 300).unwrap();
    let mn = std::fs::read_to_string(&ml.mn_cfg).unwrap();
    ml.lab.stop("mn", libc::SIGTERM);
    let mn = mn.replacen("[mn]\n", "[mn]\nt_monitor_s = 11\n", 1);
    mip::write_private(std::path::Path::new(&ml.mn_cfg), &mn).unwrap();
    ml.start_mn().unwrap();
    ml
}

/// RFC 5265 MN-5 in the shell: with `t_monitor_s = 11` (grace 10 s) the node
/// re-registers with the i-HA about every second while inside. When the i-HA
/// falls silent (SIGSTOP), the gate closes no later than T_MONITOR after the last
/// proof, user data stops both ways, and status counts it; when it answers again,
/// detection finds it and the gate reopens.
#[test]
fn t_monitor_closes_the_gate_when_the_i_ha_falls_silent() {
    let Some(_g) = lab_lock("t_monitor_closes_the_gate_when_the_i_ha_falls_silent") else {
        return;
    };
    let mut ml = lab_with_short_t_monitor();
    ml.lab.move_mn(Segment::IntA).unwrap();
    let coa = Segment::IntA.mn_addr();
    let (st, _) = ml
        .wait_mn(Duration::from_secs(10), |v| MipLab::registered_at(v, coa))
        .unwrap();
    assert_eq!(st["t_monitor_s"], 11, "{st}");
    // Re-registration every T_MONITOR - grace = 1 s, while data may flow.
    let ok0 = mip::get_u64(&st, &["counters", "registrations_ok"]);
    std::thread::sleep(Duration::from_millis(3500));
    let st = ml.mn_status().unwrap();
    let ok1 = mip::get_u64(&st, &["counters", "registrations_ok"]);
    assert!(ok1 >= ok0 + 2, "re-registrations {ok0} -> {ok1}: {st}");
    assert!(ml.echo_ok(Some(MN_HOME), Duration::from_secs(2)));
    let clo0 = mip::get_u64(&st, &["counters", "gate_closures"]);

    // The i-HA falls silent: no more proofs.
    assert!(ml.lab.signal("ha", libc::SIGSTOP));
    let t0 = Instant::now();
    let (st, took) = ml
        .wait_mn(Duration::from_secs(14), |v| {
            v["interfaces"][0]["gate"] == "closed"
        })
        .unwrap();
    eprintln!(
        "gate closed {took:?} after the i-HA stopped: {}",
        st["interfaces"][0]
    );
    assert!(
        took <= Duration::from_millis(11_500),
        "T_MONITOR is 11 s, the gate closed after {took:?}: {st}"
    );
    assert!(
        mip::get_u64(&st, &["counters", "gate_closures"]) > clo0,
        "{st}"
    );
    assert!(
        mip::get_u64(&st, &["counters", "t_monitor_expiries"]) >= 1,
        "{st}"
    );
    // MN-5: nothing passes once it is closed (the HA is stopped, so an echo could
    // not come back anyway: check that the node drops, not the network).
    let drops = |v: &serde_json::Value| mip::get_u64(v, &["counters", "drops", "gate closed"]);
    let d0 = drops(&st);
    let _ = ml.echo_ok(Some(MN_HOME), Duration::from_millis(500));
    let st = ml.mn_status().unwrap();
    assert!(
        drops(&st) > d0,
        "user data was not stopped at the gate: {st}"
    );

    assert!(ml.lab.signal("ha", libc::SIGCONT));
    let (_, back) = ml
        .wait_mn(Duration::from_secs(15), |v| MipLab::registered_at(v, coa))
        .unwrap();
    eprintln!(
        "gate open again {back:?} after the i-HA came back ({:?} in all)",
        t0.elapsed()
    );
    assert!(ml.echo_ok(Some(MN_HOME), Duration::from_secs(3)));
}

/// The node's kernel path (`kernel_encap`) is bounded by the gate even when the
/// process cannot act: with `t_monitor_s = 11`, the node is frozen (SIGSTOP) right
/// after an inside proof while a ping from the home address runs. The kernel keeps
/// tunnelling what the gate still allows, and the last IP-in-IP packet leaves the
/// interface no later than T_MONITOR after that proof (the entry's expiry, checked by
/// the program against the kernel's clock): nothing leaves after it, though the
/// process never ran again to remove the entry.
#[test]
fn a_frozen_node_s_kernel_path_stops_at_t_monitor() {
    let Some(_g) = lab_lock("a_frozen_node_s_kernel_path_stops_at_t_monitor") else {
        return;
    };
    let mut ml = lab_with_short_t_monitor();
    ml.lab.move_mn(Segment::IntA).unwrap();
    let coa = Segment::IntA.mn_addr();
    ml.wait_mn(Duration::from_secs(10), |v| {
        MipLab::registered_at(v, coa) && v["kernel_encap"]["entry"] == coa.to_string()
    })
    .unwrap();
    let cap = ml.lab.dir.join("frozen-node.pcap");
    lab::scenario::start_capture(
        &mut ml.lab,
        "mn",
        "eth0",
        &cap,
        &format!("ip proto 4 and src host {coa}"),
    )
    .unwrap();
    let mut ping = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ml.lab.ns("mn"),
            "ping",
            "-q",
            "-i",
            "0.05",
        ])
        .args(["-I", &MN_HOME.to_string(), "-w", "16", &CN_ADDR.to_string()])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    // Right after a proof (the node re-registers every second), freeze the node.
    let st = ml
        .wait_mn(Duration::from_secs(3), |v| {
            v["interfaces"][0]["tnc_proof_age_s"]
                .as_f64()
                .is_some_and(|a| a < 0.3)
        })
        .unwrap()
        .0;
    let age = st["interfaces"][0]["tnc_proof_age_s"].as_f64().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let proof_at = now - age;
    assert!(ml.lab.signal("mn", libc::SIGSTOP));
    let frozen_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let _ = ping.wait();
    std::thread::sleep(Duration::from_millis(300));
    ml.lab.stop("capture-mn", libc::SIGINT);
    assert!(ml.lab.signal("mn", libc::SIGCONT));
    let times: Vec<f64> = lab::testing::fields(&cap, &[], "ip.proto == 4", &["frame.time_epoch"])
        .iter()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    let after: Vec<f64> = times.iter().copied().filter(|t| *t > frozen_at).collect();
    let last = after.iter().copied().fold(0.0, f64::max);
    eprintln!(
        "proof at {proof_at:.3}, frozen {:.3} s later; {} tunnel packets while frozen, the \
         last {:.3} s after the proof",
        frozen_at - proof_at,
        after.len(),
        last - proof_at
    );
    // The kernel carried on while the gate held (pings every 50 ms)...
    assert!(after.len() > 100, "{} packets while frozen", after.len());
    assert!(
        last - proof_at > 10.0,
        "stopped early: {:.3}",
        last - proof_at
    );
    // ... and nothing left after T_MONITOR (the status's age is rounded to 1 ms).
    assert!(
        last - proof_at <= 11.0 + 0.01,
        "tunnelled {:.3} s after the proof, past T_MONITOR",
        last - proof_at
    );
}
