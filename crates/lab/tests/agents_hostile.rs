//! Foreign and home agents on hostile links and after crashes (issue 18): a stranger's
//! host on the foreign agent's link (namespace `ev`, 10.30.0.66) forging requests and
//! sending bad input, and `kill -9` of each daemon followed by a restart. Root only;
//! `lab::testing::lab_lock` runs the labs one at a time.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use lab::mip::{self, Request, FLAG_T, PROBE_HOA};
use lab::netns::ip;
use lab::scenario::MipLab;
use lab::testing::{exe, lab_in_foreign_mode, lab_lock, wait_until};
use lab::topo::{Segment, FA_ADDR, HA_ADDR, MN_HOME, STRANGER_ADDR};
use serde_json::Value;

/// The link-layer address of `ifname` in the namespace of `role`.
fn mac_of(ml: &MipLab, role: &str, ifname: &str) -> String {
    let out = ip(&["-n", &ml.lab.ns(role), "-o", "link", "show", ifname]).unwrap();
    let mut w = out.split_whitespace();
    w.find(|t| *t == "link/ether").unwrap();
    w.next().unwrap().to_string()
}

/// `ip neigh show <addr> dev eth0` in the FA namespace: (lladdr, state) if any.
fn fa_neighbour(ml: &MipLab, addr: Ipv4Addr) -> Option<(String, String)> {
    let out = ip(&[
        "-n",
        &ml.lab.ns("fa"),
        "neigh",
        "show",
        &addr.to_string(),
        "dev",
        "eth0",
    ])
    .unwrap();
    let line = out.lines().next()?;
    let w: Vec<&str> = line.split_whitespace().collect();
    let mac = w
        .iter()
        .position(|t| *t == "lladdr")
        .and_then(|i| w.get(i + 1))?;
    let state = if w.contains(&"PERMANENT") {
        "PERMANENT"
    } else {
        "dynamic"
    };
    Some((mac.to_string(), state.to_string()))
}

/// Routes in the FA namespace to `addr`/32 (main table).
fn fa_host_route(ml: &MipLab, addr: Ipv4Addr) -> String {
    ip(&[
        "-n",
        &ml.lab.ns("fa"),
        "route",
        "show",
        &format!("{addr}/32"),
    ])
    .unwrap()
    .trim()
    .to_string()
}

fn visitor_macs(fa: &Value) -> Vec<String> {
    fa["visitors"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v["mac"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// A registration request for `home` through the agent, authenticated with a key the
/// home agent does not have.
fn forged_request(home: Ipv4Addr) -> Vec<u8> {
    let r = Request {
        flags: FLAG_T,
        lifetime: 300,
        home_address: home,
        home_agent: HA_ADDR,
        care_of: FA_ADDR,
        identification: mip::timestamp_id(),
    };
    mip::encode_request(&r, mip::MN_SPI, b"a guessed key!!!")
}

/// One forged request from a stranger on the visited link does not take the visitor's
/// traffic: the agent's permanent neighbour entry for the home address keeps the node's
/// link-layer address, the visitor list is unchanged and the node's traffic still
/// flows. (Before the fix the entry pointed at the stranger's MAC until the agent
/// restarted.)
#[test]
fn forged_request_from_a_stranger_does_not_hijack_the_visitor() {
    let Some(_g) = lab_lock("forged_request_from_a_stranger_does_not_hijack_the_visitor") else {
        return;
    };
    let ml = lab_in_foreign_mode();
    let mn_mac = mac_of(&ml, "mn", "eth0");
    let ev_mac = mac_of(&ml, "ev", "eth0");
    assert_eq!(
        fa_neighbour(&ml, MN_HOME),
        Some((mn_mac.clone(), "PERMANENT".to_string()))
    );
    let fa = SocketAddrV4::new(FA_ADDR, 434);
    let replies = ml
        .udp_exchange(
            "ev",
            fa,
            vec![forged_request(MN_HOME)],
            Duration::from_millis(1500),
        )
        .unwrap();
    eprintln!(
        "reply to the stranger: {:?}",
        replies[0].as_deref().and_then(mip::reply_code)
    );
    std::thread::sleep(Duration::from_millis(300));
    let st = ml.fa_status().unwrap();
    assert_eq!(
        fa_neighbour(&ml, MN_HOME).map(|n| n.0),
        Some(mn_mac.clone()),
        "the stranger ({ev_mac}) took the home address; FA status {st}"
    );
    assert_eq!(visitor_macs(&st), vec![mn_mac], "{st}");
    assert!(
        ml.echo_ok(Some(MN_HOME), Duration::from_secs(5)),
        "no echo through the agent after the forged request\n{}",
        ml.lab.log_tail("fa", 20)
    );
}

/// Bad input from a host that is no visitor (the stranger on the link): truncated, an
/// unknown type, a request cut short, and a well-formed request for another home
/// address that the home agent denies. The agent counts them and installs nothing: no
/// neighbour entry and no host route for the stranger's address or that home address.
#[test]
fn bad_input_from_a_non_visitor_leaves_no_neighbour_or_route() {
    let Some(_g) = lab_lock("bad_input_from_a_non_visitor_leaves_no_neighbour_or_route") else {
        return;
    };
    let ml = MipLab::start(&exe(), true, 300).unwrap();
    let before = ml.fa_status().unwrap();
    let fa = SocketAddrV4::new(FA_ADDR, 434);
    let msgs = vec![
        vec![1u8, 0, 0],
        vec![99u8; 24],
        vec![1u8, 0x02, 0, 60, 10, 10, 0],
        forged_request(PROBE_HOA),
    ];
    let replies = ml
        .udp_exchange("ev", fa, msgs, Duration::from_millis(1000))
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let after = ml.fa_status().unwrap();
    let drops = |v: &Value, k: &str| mip::get_u64(v, &["counters", "drops", k]);
    assert!(
        drops(&after, "Truncated") >= drops(&before, "Truncated") + 2,
        "{after}"
    );
    assert!(
        drops(&after, "UnexpectedMessage") > drops(&before, "UnexpectedMessage"),
        "{after}"
    );
    // The forged request was relayed and the home agent's denial relayed back (to the
    // home address by the stranger's link-layer address, so its socket never sees it).
    let relayed = |v: &Value| mip::get_u64(v, &["counters", "replies_relayed"]);
    assert_eq!(relayed(&after), relayed(&before) + 1, "{after}");
    assert!(replies.iter().all(Option::is_none), "{replies:?}");
    for addr in [STRANGER_ADDR, PROBE_HOA] {
        let n = fa_neighbour(&ml, addr);
        assert!(
            n.as_ref().is_none_or(|(_, state)| state != "PERMANENT"),
            "the agent installed a neighbour entry for {addr}: {n:?}"
        );
        assert_eq!(fa_host_route(&ml, addr), "", "host route for {addr}");
    }
    assert!(visitor_macs(&after).is_empty(), "{after}");
}

fn saved_binding(home: Ipv4Addr, coa: Ipv4Addr, lifetime: u16, expires_unix: u64) -> Value {
    serde_json::json!({
        "home_addr": home.to_string(),
        "care_of": coa.to_string(),
        "source": format!("{coa}:434"),
        "local": format!("{HA_ADDR}:434"),
        "lifetime": lifetime,
        "expires_unix": expires_unix,
        "reverse_tunnel": true,
        "colocated": true,
        "broadcast": false,
        "udp_peer": null,
        "keepalive": 0,
        "last_ident": null,
    })
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A state file is bounded input: a binding expiring in the year 2100, one a year
/// ahead (both with a lifetime of 300 s) and one with a lifetime above the configured
/// maximum are dropped with a warning naming the entry; the agent starts (it aborted
/// on a 55 GB allocation before), and the one binding within bounds is restored with
/// at most its lifetime left.
#[test]
fn far_future_state_file_is_bounded() {
    let Some(_g) = lab_lock("far_future_state_file_is_bounded") else {
        return;
    };
    let mut ml = MipLab::start(&exe(), false, 300).unwrap();
    let state = ml.lab.dir.join("ha-state.json");
    let now = unix_now();
    let coa = Ipv4Addr::new(10, 20, 0, 50);
    let saved = serde_json::json!([
        saved_binding(MN_HOME, coa, 300, 4_102_444_800),
        saved_binding(MN_HOME, Ipv4Addr::new(10, 20, 0, 51), 300, now + 31_536_000),
        saved_binding(MN_HOME, Ipv4Addr::new(10, 20, 0, 52), 40_000, now + 100),
        saved_binding(PROBE_HOA, coa, 300, now + 200),
    ]);
    std::fs::write(&state, serde_json::to_vec(&saved).unwrap()).unwrap();
    let cfg = std::fs::read_to_string(&ml.ha_cfg).unwrap().replacen(
        "[ha]\n",
        &format!("[ha]\nstate_file = \"{}\"\n", state.display()),
        1,
    );
    std::fs::write(&ml.ha_cfg, cfg).unwrap();
    ml.start_ha().unwrap();
    let st = ml.ha_status().unwrap();
    let bindings = st["bindings"].as_array().unwrap();
    assert_eq!(bindings.len(), 1, "{st}");
    assert_eq!(bindings[0]["home_address"], PROBE_HOA.to_string(), "{st}");
    assert!(bindings[0]["remaining_s"].as_u64().unwrap() <= 200, "{st}");
    let log = std::fs::read_to_string(ml.lab.log_path("ha")).unwrap();
    for (coa, why) in [
        ("10.20.0.50", "beyond its lifetime of 300 s"),
        ("10.20.0.51", "beyond its lifetime of 300 s"),
        ("10.20.0.52", "lifetime 40000 s is outside 1..=1800 s"),
    ] {
        assert!(
            log.lines()
                .any(|l| l.contains(&format!("binding of {MN_HOME} via {coa}")) && l.contains(why)),
            "no warning naming {MN_HOME} via {coa} ({why}):\n{log}"
        );
    }
}

/// What an agent daemon can leave in its namespace: `ip rule`, `ip route show table
/// all`, permanent neighbour entries and the proxy ARP table.
fn net_state(ml: &MipLab, role: &str) -> String {
    let ns = ml.lab.ns(role);
    let mut out = String::new();
    for args in [
        vec!["rule", "show"],
        vec!["route", "show", "table", "all"],
        vec!["neigh", "show", "nud", "permanent"],
        vec!["neigh", "show", "proxy"],
    ] {
        let mut a = vec!["-n", ns.as_str()];
        a.extend(args.iter().copied());
        let mut lines: Vec<String> = ip(&a).unwrap().lines().map(str::to_string).collect();
        lines.sort();
        out += &format!("## ip {}\n{}\n", args.join(" "), lines.join("\n"));
    }
    out
}

/// kill -9 of the foreign agent while it serves a visitor leaves its rule, permanent
/// neighbour entry and host route; a restarted agent removes them (it logged "File
/// exists" and kept them before), and after its clean stop the namespace is as it
/// was before the first agent ran.
#[test]
fn foreign_agent_restart_after_kill_9_leaves_nothing_behind() {
    let Some(_g) = lab_lock("foreign_agent_restart_after_kill_9_leaves_nothing_behind") else {
        return;
    };
    let mut ml = MipLab::start(&exe(), true, 300).unwrap();
    // Key-holding configurations are private to their owner.
    for cfg in [&ml.ha_cfg, &ml.mn_cfg, &ml.fa_cfg] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(cfg).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{cfg}: {mode:o}");
    }
    ml.lab.stop("fa", libc::SIGTERM);
    let clean = net_state(&ml, "fa");
    ml.start_fa().unwrap();
    ml.lab.move_mn(Segment::IntB).unwrap();
    ml.wait_mn(Duration::from_secs(10), |v| {
        v["mode"] == "foreign" && v["registered"] == true
    })
    .unwrap();
    ml.lab.stop("fa", libc::SIGKILL);
    let killed = net_state(&ml, "fa");
    assert!(
        killed.contains(&format!("from {MN_HOME} lookup")),
        "the scenario should leave the visitor's rule:\n{killed}"
    );
    // The node leaves, so that nothing registers at the new agent.
    ml.lab.move_mn(Segment::Home).unwrap();
    ml.start_fa().unwrap();
    let running = wait_until(Duration::from_secs(3), || {
        !net_state(&ml, "fa").contains(&MN_HOME.to_string())
    });
    let after_start = net_state(&ml, "fa");
    assert!(
        running && !after_start.contains(&MN_HOME.to_string()),
        "a restarted agent kept the dead one's entries:\n{after_start}"
    );
    let log = std::fs::read_to_string(ml.lab.log_path("fa")).unwrap();
    assert!(!log.contains("File exists"), "{log}");
    ml.lab.stop("fa", libc::SIGTERM);
    assert_eq!(net_state(&ml, "fa"), clean);
}

/// kill -9 of the home agent while it holds a binding leaves the proxy ARP entry for
/// the home address (which answers ARP for the node once it is back home) and the
/// control socket file; a restarted agent removes the entry, replaces the stale
/// socket, and after its clean stop the namespace is as before.
#[test]
fn home_agent_restart_after_kill_9_leaves_nothing_behind() {
    let Some(_g) = lab_lock("home_agent_restart_after_kill_9_leaves_nothing_behind") else {
        return;
    };
    let mut ml = MipLab::start(&exe(), true, 300).unwrap();
    ml.lab.stop("ha", libc::SIGTERM);
    let clean = net_state(&ml, "ha");
    ml.start_ha().unwrap();
    ml.lab.move_mn(Segment::IntA).unwrap();
    ml.wait_mn(Duration::from_secs(10), |v| {
        v["mode"] != "home" && v["registered"] == true
    })
    .unwrap();
    ml.lab.stop("ha", libc::SIGKILL);
    let killed = net_state(&ml, "ha");
    assert!(
        killed.contains(&format!("{MN_HOME} dev eth0 proxy")),
        "the scenario should leave the proxy entry:\n{killed}"
    );
    assert!(ml.ha_sock.exists(), "the killed agent's socket file");
    ml.lab.move_mn(Segment::Home).unwrap();
    ml.start_ha().unwrap();
    let running = net_state(&ml, "ha");
    assert!(
        !running.contains(&format!("{MN_HOME} dev eth0 proxy")),
        "a restarted agent kept the dead one's proxy entry:\n{running}"
    );
    ml.lab.stop("ha", libc::SIGTERM);
    assert_eq!(net_state(&ml, "ha"), clean);
    assert!(!ml.ha_sock.exists());
}

/// A request for the lab's probe node, correctly authenticated, care-of the CN.
fn probe_request() -> Vec<u8> {
    let r = Request {
        flags: FLAG_T,
        lifetime: 300,
        home_address: PROBE_HOA,
        home_agent: HA_ADDR,
        care_of: lab::topo::CN_ADDR,
        identification: mip::timestamp_id(),
    };
    mip::encode_request(&r, mip::PROBE_SPI, &mip::key_bytes(mip::PROBE_KEY))
}

/// Rewrites ha.toml with `extra` lines in [ha] and restarts the home agent.
fn restart_ha_with(ml: &mut MipLab, base: &str, extra: &str) {
    if ml.lab.is_running("ha") {
        ml.lab.stop("ha", libc::SIGTERM);
    }
    let mut cfg = base.replacen("[ha]\n", &format!("[ha]\n{extra}"), 1);
    if extra.contains("trusted_networks") {
        cfg = cfg.replacen(mip::HA_TRUSTED, "", 1);
    }
    mip::write_private(std::path::Path::new(&ml.ha_cfg), &cfg).unwrap();
    ml.start_ha().unwrap();
}

/// RFC 5265 HA-5 and HA-3 in `mipsec ha`. Control: a valid request from the CN is
/// accepted. With `drop_requests_on_interface` naming the interface it arrives on
/// (an external HA's internal side), it is dropped and counted. With trusted
/// networks that exclude the CN (an internal HA), 20 requests are dropped silently,
/// all counted, and logged in one rate-limited line.
#[test]
fn home_agent_internal_interface_and_untrusted_source_drops() {
    let Some(_g) = lab_lock("home_agent_internal_interface_and_untrusted_source_drops") else {
        return;
    };
    let mut ml = MipLab::start(&exe(), false, 300).unwrap();
    let base = std::fs::read_to_string(&ml.ha_cfg).unwrap();
    let ha = SocketAddrV4::new(HA_ADDR, 434);
    let wait = Duration::from_millis(1000);
    restart_ha_with(&mut ml, &base, "");
    let r = ml
        .udp_exchange("cn", ha, vec![probe_request()], wait)
        .unwrap();
    assert_eq!(r[0].as_deref().and_then(mip::reply_code), Some(0));

    restart_ha_with(&mut ml, &base, "drop_requests_on_interface = \"eth0\"\n");
    let r = ml
        .udp_exchange("cn", ha, vec![probe_request()], wait)
        .unwrap();
    assert_eq!(
        r[0], None,
        "HA-5: the request on the internal interface was answered"
    );
    let st = ml.ha_status().unwrap();
    assert_eq!(
        mip::get_u64(
            &st,
            &[
                "counters",
                "drops",
                "request on the internal interface (HA-5)"
            ]
        ),
        1,
        "{st}"
    );

    restart_ha_with(&mut ml, &base, "trusted_networks = [\"10.20.0.0/24\"]\n");
    let msgs: Vec<Vec<u8>> = (0..20).map(|_| probe_request()).collect();
    let r = ml
        .udp_exchange("cn", ha, msgs, Duration::from_millis(50))
        .unwrap();
    assert!(
        r.iter().all(Option::is_none),
        "HA-3: an untrusted source was answered"
    );
    let st = ml.ha_status().unwrap();
    assert_eq!(
        mip::get_u64(&st, &["counters", "drops", "UntrustedSource"]),
        20,
        "{st}"
    );
    let log = std::fs::read_to_string(ml.lab.log_path("ha")).unwrap();
    let lines = log
        .lines()
        .filter(|l| l.contains("HA-3") && l.contains("10.40.0.10"))
        .count();
    assert_eq!(
        lines, 1,
        "HA-3 log lines (rate-limited to one per 10 s):\n{log}"
    );
}
