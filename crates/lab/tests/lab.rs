//! End-to-end tests in network namespaces (root). Each test builds its own lab with a
//! fresh `ml<4 hex>-` prefix; a mutex runs them one at a time because they are heavy.
//! Without root they fail, unless MIPSEC_SKIP_LAB=1, which prints a loud SKIP instead.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use lab::mip::{self, Request, FLAG_D, FLAG_T, MN_KEY, MN_SPI};
use lab::scenario::{demo_on, run_demo, start_capture, DemoOpts, MipLab};
use lab::topo::{Segment, CN_ADDR, HA_ADDR, MN_HOME};
use lab::traffic::{Client, ClientOpts};
use serde_json::Value;

static LOCK: Mutex<()> = Mutex::new(());

fn exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mipsec-lab"))
}

/// Serialises the lab tests; None (after a loud SKIP) when the lab cannot run here.
fn lab_lock(test: &str) -> Option<MutexGuard<'static, ()>> {
    let g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    lab::lab_available(test).then_some(g)
}

fn ha_at(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(HA_ADDR, port)
}

fn obj_u64(v: &Value, path: &[&str], key: &str) -> u64 {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    cur.get(key).and_then(Value::as_u64).unwrap_or(0)
}

fn binding_coa(ha: &Value, hoa: Ipv4Addr) -> Option<String> {
    ha["bindings"]
        .as_array()?
        .iter()
        .find(|b| b["home_address"] == hoa.to_string())
        .and_then(|b| b["care_of"].as_str().map(str::to_string))
}

/// (a) The demo, the README's main job: home -> int-a (co-located) -> int-b (through the
/// foreign agent) -> nat (co-located, UDP tunneling) -> home under a TCP transfer in
/// both directions and 5 ms UDP probes: zero TCP resets, every interruption within 3000 ms, the MN's
/// status right at every stay, and the HA accepted every registration.
#[test]
fn demo_moves_keep_tcp_and_bound_interruptions() {
    let Some(_g) = lab_lock("demo_moves_keep_tcp_and_bound_interruptions") else {
        return;
    };
    let o = DemoOpts {
        stay: Duration::from_secs(3),
        ..DemoOpts::default()
    };
    let rep = run_demo(&exe(), &o).unwrap();
    let text = rep.render(&o);
    eprintln!("{text}");
    assert!(
        rep.faults.is_empty(),
        "TCP resets: {:?}\n{text}",
        rep.faults
    );
    for st in &rep.stays {
        assert!(
            st.interruption_ms <= o.bound_ms,
            "{} -> {}: {} ms\n{text}",
            st.from.name(),
            st.to.name(),
            st.interruption_ms
        );
        assert!(
            st.up_bytes > 0 && st.down_bytes > 0,
            "no TCP progress in a stay\n{text}"
        );
        let s = st.status_json.as_ref().expect("MN status");
        match st.to {
            Segment::Home => assert!(MipLab::at_home(s), "{s}"),
            seg => assert!(MipLab::registered_at(s, seg.mn_addr()), "{s}"),
        }
    }
    assert!(rep.passed(), "{text}");
    let ha = rep.ha_status.as_ref().expect("HA status");
    let accepted = obj_u64(ha, &["counters", "replies_by_code"], "0");
    assert!(accepted >= 4, "HA accepted {accepted} registrations: {ha}");
}

/// Negative control for (a): without the daemons the same move breaks the transfer
/// (its source address vanishes), and the demo's measurement says so.
#[test]
fn plain_routing_move_stalls_tcp() {
    let Some(_g) = lab_lock("plain_routing_move_stalls_tcp") else {
        return;
    };
    let o = DemoOpts {
        plain: true,
        stay: Duration::from_millis(2500),
        stall_ms: 1000.0,
        moves: vec![Segment::IntA],
        ..DemoOpts::default()
    };
    let rep = run_demo(&exe(), &o).unwrap();
    let text = rep.render(&o);
    eprintln!("{text}");
    assert!(!rep.passed(), "plain routing should fail the demo\n{text}");
    let last = rep.stays.last().unwrap();
    assert!(last.stall_ms >= 1500.0 || !rep.faults.is_empty(), "{text}");
}

fn tshark(file: &Path, extra: &[&str]) -> String {
    let out = Command::new("tshark")
        .arg("-n")
        .arg("-r")
        .arg(file)
        .args(extra)
        .output()
        .expect("tshark");
    assert!(
        out.status.success(),
        "tshark {extra:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn count(file: &Path, filter: &str) -> usize {
    tshark(file, &["-Y", filter]).lines().count()
}

/// (b) A capture on the HA's home link during the demo decodes in tshark without any
/// malformed packet or warning, and shows the registrations and IP-in-IP with TCP
/// inside. A truncated request injected at the end is the only packet flagged, which
/// shows that the check can fail.
#[test]
fn capture_decodes_cleanly_in_tshark() {
    let Some(_g) = lab_lock("capture_decodes_cleanly_in_tshark") else {
        return;
    };
    let mut ml = MipLab::start(&exe(), true, 300).unwrap();
    let cap = ml.lab.dir.join("home.pcap");
    start_capture(&mut ml.lab, "ha", "eth0", &cap, "").unwrap();
    let o = DemoOpts {
        stay: Duration::from_secs(2),
        rate: 300_000,
        moves: vec![Segment::IntA, Segment::IntC, Segment::Home],
        ..DemoOpts::default()
    };
    let rep = demo_on(&mut ml, &o).unwrap();
    assert!(rep.passed(), "{}", rep.render(&o));
    // Negative control: 6 bytes of a Registration Request.
    let bad = vec![1u8, FLAG_D | FLAG_T, 0, 30, 10, 10];
    ml.udp_exchange("cn", ha_at(434), vec![bad], Duration::from_millis(300))
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    ml.lab.stop("capture-ha", libc::SIGINT);
    let kept = std::env::temp_dir().join("mipsec-lab-capture.pcap");
    std::fs::copy(&cap, &kept).unwrap();
    eprintln!("capture kept in {}", kept.display());
    let cap = kept;

    // TCP sequence analysis judges the traffic pattern around moves (retransmissions,
    // segments lost while detached; the HA's link also carries each tunneled segment
    // twice, encapsulated and decapsulated), D-SACK options report such duplicates,
    // and ARP duplicate detection fires on the MN's gratuitous ARP coming home after
    // the HA's proxy ARP: all expected in Mobile IP, none a format problem, so they
    // are turned off or excluded.
    let prefs = [
        "-o",
        "tcp.analyze_sequence_numbers:FALSE",
        "-o",
        "arp.detect_duplicate_ips:FALSE",
    ];
    let mut args = prefs.to_vec();
    args.extend([
        "-Y",
        "(_ws.malformed || _ws.expert.severity >= \"Warning\") && !tcp.options.sack.dsack",
        "-T",
        "fields",
        "-e",
        "ip.src",
        "-e",
        "udp.dstport",
        "-e",
        "_ws.expert.message",
    ]);
    let flagged = tshark(&cap, &args);
    let lines: Vec<&str> = flagged.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "expected only the injected truncated request to be flagged:\n{flagged}"
    );
    assert!(
        lines[0].starts_with(&format!("{CN_ADDR}\t434")),
        "{flagged}"
    );

    let requests = count(&cap, "mip.type == 1");
    let accepted = count(&cap, "mip.type == 3 && mip.code == 0");
    let ipip = count(&cap, "ip.proto == 4");
    let ipip_tcp = count(&cap, "ip.proto == 4 && tcp");
    eprintln!(
        "capture: {requests} requests, {accepted} accepted replies, {ipip} IP-in-IP ({ipip_tcp} with TCP inside)"
    );
    // int-a, int-c, and the deregistration at home (the start at home precedes the capture).
    assert!(
        requests >= 3,
        "registration requests in capture: {requests}"
    );
    assert!(accepted >= 3, "accepted replies in capture: {accepted}");
    assert!(
        ipip >= 100 && ipip_tcp >= 50,
        "IP-in-IP: {ipip}, with TCP: {ipip_tcp}"
    );
    // Both tunnel directions with the right endpoints.
    assert!(
        count(
            &cap,
            "ip.proto == 4 && ip.src == 10.20.0.50 && ip.dst == 10.10.0.1"
        ) > 0
    );
    assert!(
        count(
            &cap,
            "ip.proto == 4 && ip.src == 10.10.0.1 && ip.dst == 10.60.0.50"
        ) > 0
    );
}

/// (c) The HA is killed (SIGKILL) while the MN is away and restarted after the MN's
/// renewal has failed: the MN counts the failure, re-registers with the new HA, and
/// traffic flows again within a bound; the TCP connection survives.
#[test]
fn ha_restart_mn_recovers() {
    let Some(_g) = lab_lock("ha_restart_mn_recovers") else {
        return;
    };
    let lifetime = 4;
    let mut ml = MipLab::start(&exe(), true, lifetime).unwrap();
    ml.lab.move_mn(Segment::IntA).unwrap();
    let coa = Segment::IntA.mn_addr();
    ml.wait_mn(Duration::from_secs(10), |v| MipLab::registered_at(v, coa))
        .unwrap();
    let mut c = Client::start(
        &ml.lab.ns("mn"),
        &ClientOpts {
            bind: Some(MN_HOME),
            cn: CN_ADDR,
            rate: 200_000,
            up: true,
            down: true,
            probe_interval: Some(Duration::from_millis(10)),
        },
    )
    .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let before = ml.mn_status().unwrap();
    let t_kill = c.now_us();
    ml.lab.stop("ha", libc::SIGKILL);
    // Keep the HA down until the MN has tried to renew and got no answer.
    let failed0 = mip::get_u64(&before, &["counters", "registrations_failed"]);
    let sent0 = mip::get_u64(&before, &["counters", "requests_sent"]);
    let retx0 = mip::get_u64(&before, &["counters", "retransmissions"]);
    let noticed = ml.wait_mn(Duration::from_secs(15), |v| {
        mip::get_u64(v, &["counters", "requests_sent"]) > sent0
            && (mip::get_u64(v, &["counters", "retransmissions"]) > retx0
                || mip::get_u64(v, &["counters", "registrations_failed"]) > failed0)
    });
    let noticed = noticed.unwrap_or_else(|e| panic!("MN did not retry while the HA was down: {e}"));
    eprintln!(
        "MN retried {:?} after the kill: {}",
        noticed.1,
        mip::mn_summary(&noticed.0)
    );
    ml.start_ha().unwrap();
    let t_restart = c.now_us();
    let bound = Duration::from_secs(u64::from(lifetime) + 6);
    let t0 = Instant::now();
    let st = ml.wait_mn(bound, |v| {
        MipLab::registered_at(v, coa)
            && mip::get_u64(v, &["counters", "registrations_ok"])
                > mip::get_u64(&before, &["counters", "registrations_ok"])
    });
    let st = st.unwrap_or_else(|e| panic!("MN did not re-register within {bound:?}: {e}"));
    // Traffic again: probes echoed, and TCP moves again (after its own backoff).
    let mut recovered = None;
    while t0.elapsed() < bound {
        if c.bytes().0 > 0 && ml.echo_ok(Some(MN_HOME), Duration::from_millis(200)) {
            recovered = Some(t0.elapsed());
            break;
        }
    }
    let recovered =
        recovered.unwrap_or_else(|| panic!("no traffic within {bound:?} of the HA restart"));
    let (u0, d0) = c.bytes();
    let t1 = Instant::now();
    let mut tcp_again = false;
    while t1.elapsed() < Duration::from_secs(20) {
        let (u, d) = c.bytes();
        if u > u0 && d > d0 {
            tcp_again = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let rec = c.stop();
    let first_after = rec
        .first_ok_after(t_restart)
        .map(|t| (t - t_restart) as f64 / 1e3);
    eprintln!(
        "HA killed at {:.2} s, restarted at {:.2} s; MN registered again ({}), probes back {first_after:?} ms after restart (echo check {recovered:?}); outage {:.0} ms",
        t_kill as f64 / 1e6,
        t_restart as f64 / 1e6,
        mip::mn_summary(&st.0),
        rec.max_gap_ms(t_kill, t_restart + 1)
    );
    assert!(
        tcp_again,
        "TCP did not move again within 20 s after recovery"
    );
    assert!(rec.faults.is_empty(), "TCP faults: {:?}", rec.faults);
    assert!(
        ml.lab.is_running("mn"),
        "MN died:\n{}",
        ml.lab.log_tail("mn", 20)
    );
    let ha = ml.ha_status().unwrap();
    eprintln!("restarted HA: {ha}\nMN: {}", ml.mn_status().unwrap());
    assert_eq!(binding_coa(&ha, MN_HOME), Some(coa.to_string()), "{ha}");
}

/// (d) Bad input to both daemons: malformed datagrams to UDP 434, a request signed with
/// a wrong key, a replayed request, a forged reply to the MN. Each is counted in
/// `mipsec status --json`, the binding is not hijacked, and nobody crashes.
#[test]
fn bad_input_is_counted_and_survived() {
    let Some(_g) = lab_lock("bad_input_is_counted_and_survived") else {
        return;
    };
    let mut ml = MipLab::start(&exe(), true, 300).unwrap();
    // Capture the MN's registration at int-a, to replay it once the MN is at int-c.
    let cap = ml.lab.dir.join("reg.pcap");
    start_capture(&mut ml.lab, "ha", "eth0", &cap, "udp dst port 434").unwrap();
    ml.lab.move_mn(Segment::IntA).unwrap();
    ml.wait_mn(Duration::from_secs(10), |v| {
        MipLab::registered_at(v, Segment::IntA.mn_addr())
    })
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    ml.lab.stop("capture-ha", libc::SIGINT);
    let hexes = tshark(
        &cap,
        &[
            "-Y",
            "mip.type == 1 && mip.coa == 10.20.0.50",
            "-T",
            "fields",
            "-e",
            "udp.payload",
        ],
    );
    let captured = hex::decode(hexes.lines().next().unwrap_or("").replace(':', "")).unwrap();
    assert!(captured.len() >= 46, "no request captured: {hexes:?}");
    let coa = Segment::IntC.mn_addr();
    ml.lab.move_mn(Segment::IntC).unwrap();
    ml.wait_mn(Duration::from_secs(10), |v| MipLab::registered_at(v, coa))
        .unwrap();

    // --- HA ---
    let ha0 = ml.ha_status().unwrap();
    let malformed: Vec<Vec<u8>> = vec![
        vec![],
        vec![1],
        vec![1, 0x22, 0, 30, 10, 10, 0, 100], // truncated request
        {
            // a request whose extension length runs past the end
            let mut m = mip::encode_request(&good_request(coa), MN_SPI, &mip::key_bytes(MN_KEY));
            m[25] = 200;
            m
        },
        vec![0xff; 100], // unknown type
        vec![
            3, 0, 0, 0, 10, 10, 0, 100, 10, 10, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0,
        ], // a reply, to the HA
    ];
    let n_malformed = malformed.len() as u64;
    ml.udp_exchange("cn", ha_at(434), malformed, Duration::from_millis(200))
        .unwrap();
    let ha1 = ml.ha_status().unwrap();
    // Each one is either dropped (counted by reason) or answered with a denial
    // (134 = poorly formed request, counted by code).
    let rejected = |v: &Value| {
        mip::sum_obj(v, &["counters", "drops"]) + mip::sum_obj(v, &["counters", "replies_by_code"])
            - obj_u64(v, &["counters", "replies_by_code"], "0")
    };
    let d_rej = rejected(&ha1) - rejected(&ha0);
    assert_eq!(
        d_rej, n_malformed,
        "HA counted {d_rej} rejections for {n_malformed} malformed datagrams:\n{ha0}\n{ha1}"
    );
    assert_eq!(
        obj_u64(&ha1, &["counters", "replies_by_code"], "0"),
        obj_u64(&ha0, &["counters", "replies_by_code"], "0")
    );

    let wrong_key = mip::encode_request(&good_request(CN_ADDR), MN_SPI, &[0x42; 16]);
    let replies = ml
        .udp_exchange(
            "cn",
            ha_at(434),
            vec![wrong_key, captured],
            Duration::from_millis(500),
        )
        .unwrap();
    let codes: Vec<Option<u8>> = replies
        .iter()
        .map(|r| r.as_deref().and_then(mip::reply_code))
        .collect();
    eprintln!(
        "HA reply codes: wrong key {:?}, replay {:?}",
        codes[0], codes[1]
    );
    let ha2 = ml.ha_status().unwrap();
    eprintln!("HA status after bad input: {ha2}");
    // RFC 5944 3.4: 131 = mobile node failed authentication, 133 = identification mismatch.
    assert_eq!(codes[0], Some(131), "wrong key");
    assert_eq!(codes[1], Some(133), "replay");
    assert!(
        obj_u64(&ha2, &["counters", "replies_by_code"], "131")
            > obj_u64(&ha1, &["counters", "replies_by_code"], "131")
    );
    assert!(
        obj_u64(&ha2, &["counters", "replies_by_code"], "133")
            > obj_u64(&ha1, &["counters", "replies_by_code"], "133")
    );
    assert_eq!(
        binding_coa(&ha2, MN_HOME),
        Some(coa.to_string()),
        "binding hijacked: {ha2}"
    );

    // --- MN (its registration socket is the care-of address, port 434) ---
    let mn0 = ml.mn_status().unwrap();
    let forged = mip::encode_reply(
        0,
        300,
        MN_HOME,
        HA_ADDR,
        mip::timestamp_id(),
        MN_SPI,
        &[0x42; 16],
    );
    let to_mn: Vec<Vec<u8>> = vec![vec![], vec![3], vec![3, 0, 1], vec![0xff; 64], forged];
    let n_mn = to_mn.len() as u64;
    ml.udp_exchange(
        "cn",
        SocketAddrV4::new(coa, 434),
        to_mn,
        Duration::from_millis(100),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let mn1 = ml.mn_status().unwrap();
    eprintln!("MN status after bad input: {mn1}");
    let mn_drops = |v: &Value| {
        mip::sum_obj(v, &["counters", "drops"]) + mip::sum_obj(v, &["counters", "reply_drops"])
    };
    let d_mn = mn_drops(&mn1) - mn_drops(&mn0);
    assert!(
        d_mn >= n_mn,
        "MN counted {d_mn} drops for {n_mn} bad datagrams:\n{mn0}\n{mn1}"
    );
    assert!(MipLab::registered_at(&mn1, coa), "{mn1}");

    for n in ["ha", "mn"] {
        assert!(
            ml.lab.is_running(n),
            "mipsec {n} died:\n{}",
            ml.lab.log_tail(n, 20)
        );
    }
    assert!(
        ml.echo_ok(Some(MN_HOME), Duration::from_secs(2)),
        "traffic broken after bad input"
    );
}

fn good_request(coa: Ipv4Addr) -> Request {
    Request {
        flags: FLAG_D | FLAG_T,
        lifetime: 300,
        home_address: MN_HOME,
        home_agent: HA_ADDR,
        care_of: coa,
        identification: mip::timestamp_id(),
    }
}

/// Starts `mipsec-lab up --plain` and returns it with its lab prefix once it is up.
fn start_up() -> (std::process::Child, String) {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(exe())
        .args(["up", "--plain"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let prefix = line
        .strip_prefix("lab ")
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("unexpected output of `up`: {line:?}"))
        .to_string();
    assert!(lab_namespaces(&prefix) == lab::netns::ROLES.len(), "{line}");
    (child, prefix)
}

fn lab_namespaces(prefix: &str) -> usize {
    lab::netns::list_netns()
        .iter()
        .filter(|n| n.starts_with(prefix))
        .count()
}

/// Cleanup: SIGTERM removes a running lab's namespaces; after a SIGKILL the namespaces
/// are left over and `mipsec-lab cleanup` removes them (and not a live lab's).
#[test]
fn signals_and_cleanup_leave_nothing_behind() {
    let Some(_g) = lab_lock("signals_and_cleanup_leave_nothing_behind") else {
        return;
    };
    let (mut a, pa) = start_up();
    send_signal(&a, libc::SIGTERM);
    let st = a.wait().unwrap();
    assert_eq!(st.code(), Some(128 + libc::SIGTERM), "{st:?}");
    assert_eq!(lab_namespaces(&pa), 0, "SIGTERM left namespaces of {pa}");

    let (mut b, pb) = start_up();
    let (mut live, plive) = start_up();
    b.kill().unwrap();
    b.wait().unwrap();
    assert_eq!(
        lab_namespaces(&pb),
        lab::netns::ROLES.len(),
        "SIGKILL cannot clean up"
    );
    let out = Command::new(exe()).arg("cleanup").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains(&pb), "{text}");
    assert_eq!(lab_namespaces(&pb), 0, "cleanup left namespaces of {pb}");
    assert_eq!(
        lab_namespaces(&plive),
        lab::netns::ROLES.len(),
        "cleanup removed a live lab"
    );
    assert!(!lab::netns::run_dir(&pb).exists());
    send_signal(&live, libc::SIGINT);
    live.wait().unwrap();
    assert_eq!(lab_namespaces(&plive), 0);
}

fn send_signal(c: &std::process::Child, sig: i32) {
    lab::netns::kill(c.id() as i32, sig);
}

/// Outer minus inner IPv4 length of every tunneled packet matching `filter`.
fn overheads(cap: &Path, filter: &str) -> Vec<i64> {
    tshark(cap, &["-Y", filter, "-T", "fields", "-e", "ip.len"])
        .lines()
        .filter_map(|l| {
            let v: Vec<i64> = l.split(',').filter_map(|x| x.trim().parse().ok()).collect();
            (v.len() >= 2).then(|| v[0] - v[1])
        })
        .collect()
}

/// Issue 4: one TCP session (both directions) and 5 ms probes survive
/// home -> int-a (co-located) -> int-b (through the foreign agent, mode f) -> nat
/// (co-located behind a masquerading NAT: RFC 3519 UDP tunneling, with the NAT's
/// connection tracking flushed mid-stay) -> home. Every interruption is bounded; the
/// MN's status shows each mode; the HA's capture decodes cleanly in tshark and shows
/// the per-packet overhead of each tunnel on the wire (RFC 5265 section 5.2: IP-in-IP
/// 20 octets, the MIP UDP tunnel 12 more).
#[test]
fn foreign_agent_and_nat_traversal_keep_tcp() {
    let Some(_g) = lab_lock("foreign_agent_and_nat_traversal_keep_tcp") else {
        return;
    };
    let mut ml = MipLab::start(&exe(), true, 300).unwrap();
    let cap = ml.lab.dir.join("fa-nat.pcap");
    // 4 s stays: the NAT stay loses its mapping a third of the way in, and TCP should
    // be back at full rate well before the next move.
    let o = DemoOpts {
        stay: Duration::from_secs(4),
        moves: vec![Segment::IntA, Segment::IntB, Segment::Nat, Segment::Home],
        flush_nat: true,
        capture: Some(cap.clone()),
        ..DemoOpts::default()
    };
    // The visited link of the foreign agent too: its advertisements and relays.
    let fa_cap = ml.lab.dir.join("int-b.pcap");
    start_capture(&mut ml.lab, "fa", "eth0", &fa_cap, "").unwrap();
    let rep = demo_on(&mut ml, &o).unwrap();
    ml.lab.stop("capture-fa", libc::SIGINT);
    let text = rep.render(&o);
    eprintln!("{text}");
    assert!(
        rep.faults.is_empty(),
        "TCP resets: {:?}\n{text}",
        rep.faults
    );
    assert!(rep.passed(), "{text}");
    let adverts = count(&fa_cap, "icmp.type == 9 && icmp.mip.flags");
    let relayed = count(&fa_cap, "mip.type == 1 && ip.src == 10.30.0.1");
    let fa_bad = tshark(
        &fa_cap,
        &[
            "-o",
            "tcp.analyze_sequence_numbers:FALSE",
            "--disable-protocol",
            "daytime",
            "-Y",
            "(_ws.malformed || _ws.expert.severity >= \"Warning\") && !tcp.options.sack.dsack",
            "-T",
            "fields",
            "-e",
            "frame.number",
            "-e",
            "_ws.col.Info",
        ],
    );
    assert_eq!(fa_bad.trim(), "", "tshark flags frames on int-b: {fa_bad}");
    assert!(adverts >= 3, "agent advertisements on int-b: {adverts}");
    assert!(relayed >= 1, "requests relayed by the FA: {relayed}");
    eprintln!("int-b capture: {adverts} agent advertisements, {relayed} relayed requests, no malformed packet");
    let status = |seg: Segment| {
        rep.stays
            .iter()
            .find(|s| s.to == seg && s.from != seg)
            .and_then(|s| s.status_json.clone())
            .unwrap()
    };
    let c = status(Segment::IntB);
    assert_eq!(c["mode"], "foreign", "{c}");
    assert_eq!(c["care_of"], lab::topo::FA_ADDR.to_string(), "{c}");
    assert_eq!(c["registered"], true, "{c}");
    let n = status(Segment::Nat);
    assert_eq!(n["mode"], "colocated", "{n}");
    assert_eq!(n["udp_tunnel"], true, "NAT not detected: {n}");
    let fa = ml.fa_status().unwrap();
    assert!(obj_u64(&fa, &["counters"], "requests_relayed") >= 1, "{fa}");
    assert!(
        obj_u64(&fa, &["counters"], "forwarded_packets") > 100,
        "{fa}"
    );
    assert!(obj_u64(&fa, &["counters"], "reverse_packets") > 100, "{fa}");
    // Both directions keep their paced rate in every stay: a move costs tens of
    // milliseconds, not seconds of TCP backoff (the upload once stalled for ~3 s after
    // the mode-f stay, its segments held in an ARP queue for the agent left behind).
    // The NAT stay loses its mapping a third of the way in: the node needs a silence, an unanswered
    // keepalive and a registration to recover, and TCP its next retransmission, so
    // that stay gets a looser bound.
    let due = o.rate as f64 * o.stay.as_secs_f64();
    for st in &rep.stays {
        let (share, stall) = if st.to == Segment::Nat {
            (0.25, 3000.0)
        } else {
            (0.5, 1500.0)
        };
        for (dir, bytes) in [("up", st.up_bytes), ("down", st.down_bytes)] {
            assert!(
                bytes as f64 >= share * due,
                "TCP {dir} carried {bytes} B on {}, under {share} of the paced {due:.0} B\n{text}",
                st.to.name()
            );
        }
        assert!(
            st.stall_ms <= stall,
            "TCP stalled {} ms on {}\n{text}",
            st.stall_ms,
            st.to.name()
        );
    }
    // The new mapping: the HA dropped data from the port nobody registered, and the MN
    // noticed the silence and re-registered from the new port.
    assert!(
        obj_u64(&n, &["counters"], "nat_reregistrations") >= 1,
        "the MN did not re-register after the NAT's mapping changed: {n}"
    );
    let ha = rep.ha_status.as_ref().expect("HA status");
    assert!(
        obj_u64(
            ha,
            &["counters", "drops"],
            "tunnel data from an address or port the node did not register from"
        ) >= 1,
        "the HA never saw data from the new mapping: {ha}"
    );

    // The capture: clean, with every kind of message, and the overheads. As in the
    // capture test above, TCP sequence analysis, D-SACK and ARP duplicate detection
    // judge the effects of moves, not packet formats, and are left out.
    // Kept for inspection after the lab is gone; the pid keeps concurrent runs apart.
    let kept = std::env::temp_dir().join(format!("mipsec-lab-fa-nat-{}.pcap", std::process::id()));
    std::fs::copy(&cap, &kept).unwrap();
    let cap = kept;
    let bad = tshark(
        &cap,
        &[
            "-o",
            "tcp.analyze_sequence_numbers:FALSE",
            "-o",
            "arp.detect_duplicate_ips:FALSE",
            // Ephemeral ports of the lab's traffic can land on well-known ones.
            "--disable-protocol",
            "daytime",
            "-Y",
            "(_ws.malformed || _ws.expert.severity >= \"Warning\") && !tcp.options.sack.dsack",
            "-T",
            "fields",
            "-e",
            "frame.number",
            "-e",
            "_ws.col.Info",
            "-e",
            "_ws.expert.message",
        ],
    );
    assert_eq!(bad.trim(), "", "tshark flags frames {bad}");
    assert!(count(&cap, "mip.type == 1") >= 4, "registrations");
    assert!(
        count(&cap, "mip.type == 4 && tcp") > 100,
        "UDP-tunneled TCP"
    );
    let fragments = count(&cap, "ip.flags.mf == 1 || ip.frag_offset > 0");
    assert_eq!(fragments, 0, "tunnel packets were fragmented");
    let ipip = overheads(&cap, "ip.proto == 4 && !udp");
    let udp = overheads(&cap, "mip.type == 4 && !icmp");
    let distinct = |v: &[i64]| {
        let mut d = v.to_vec();
        d.sort_unstable();
        d.dedup();
        d
    };
    assert!(
        !ipip.is_empty() && distinct(&ipip) == [20],
        "IP-in-IP overheads {:?}",
        distinct(&ipip)
    );
    assert!(
        !udp.is_empty() && distinct(&udp) == [32],
        "UDP tunnel overheads {:?}",
        distinct(&udp)
    );
    eprintln!(
        "per-packet overhead on the wire: IP-in-IP {} octets ({} packets), MIP UDP tunnel {} octets ({} packets): {} more, as RFC 5265 5.2 counts",
        ipip[0],
        ipip.len(),
        udp[0],
        udp.len(),
        udp[0] - ipip[0]
    );
}

/// Issue 4, RFC 3024 section 5.2: through the foreign agent with the encapsulating
/// delivery style, the node tunnels its packets to the agent (IP-in-IP), which
/// re-tunnels them to the home agent; traffic flows both ways and the agent's
/// visitor entry records the style.
#[test]
fn encapsulating_delivery_style_through_the_agent() {
    let Some(_g) = lab_lock("encapsulating_delivery_style_through_the_agent") else {
        return;
    };
    let mut ml = MipLab::start(&exe(), true, 300).unwrap();
    // Restart the MN asking for the encapsulating style.
    ml.lab.stop("mn", libc::SIGTERM);
    let mut cfg = std::fs::read_to_string(&ml.mn_cfg).unwrap();
    cfg.push_str("encapsulating_delivery = true\n");
    std::fs::write(&ml.mn_cfg, cfg).unwrap();
    ml.start_mn().unwrap();
    ml.wait_mn(Duration::from_secs(10), MipLab::at_home)
        .unwrap();
    ml.lab.move_mn(Segment::IntB).unwrap();
    let (st, _) = ml
        .wait_mn(Duration::from_secs(10), |v| {
            v["mode"] == "foreign" && v["registered"] == true
        })
        .unwrap();
    assert_eq!(st["care_of"], lab::topo::FA_ADDR.to_string(), "{st}");
    assert!(
        ml.echo_ok(Some(MN_HOME), Duration::from_secs(5)),
        "no echo through the agent\n{}\n{}",
        ml.lab.log_tail("mn", 20),
        ml.lab.log_tail("fa", 20)
    );
    let fa = ml.fa_status().unwrap();
    let v = &fa["visitors"][0];
    eprintln!("FA status: {fa}");
    assert_eq!(v["delivery"], "encapsulating", "{fa}");
    assert!(obj_u64(&fa, &["counters"], "reverse_packets") > 0, "{fa}");
    assert!(obj_u64(&fa, &["counters"], "forwarded_packets") > 0, "{fa}");
    // The node really encapsulated: its tunnel counters moved, the agent's
    // direct-style path (the TUN) did not see the packets.
    let mn = ml.mn_status().unwrap();
    assert!(obj_u64(&mn, &["counters"], "tx_packets") > 0, "{mn}");
}

/// An IPv4/UDP packet built by hand (header checksum included, UDP checksum 0).
fn ipv4_udp(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let total = (20 + 8 + payload.len()) as u16;
    let mut p = vec![0x45, 0, 0, 0, 0, 1, 0, 0, 64, 17, 0, 0];
    p[2..4].copy_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    let sum = p
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum::<u32>();
    let sum = (sum & 0xffff) + (sum >> 16);
    let sum = !(((sum & 0xffff) + (sum >> 16)) as u16);
    p[10..12].copy_from_slice(&sum.to_be_bytes());
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&(8 + payload.len() as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    p
}

/// RFC 3519 section 6.1: behind a NAT, anybody sharing the node's public address can
/// send tunnel data from another port. The HA drops and counts it, the binding stays
/// on the port the node registered from (only an authenticated request moves it), and
/// the node's own traffic keeps flowing.
#[test]
fn nat_binding_moves_on_registrations_not_on_data() {
    let Some(_g) = lab_lock("nat_binding_moves_on_registrations_not_on_data") else {
        return;
    };
    let mut ml = MipLab::start(&exe(), true, 300).unwrap();
    ml.lab.move_mn(Segment::Nat).unwrap();
    ml.wait_mn(Duration::from_secs(10), |v| {
        MipLab::registered_at(v, Segment::Nat.mn_addr()) && v["udp_tunnel"] == true
    })
    .unwrap();
    let peer = |ha: &Value| {
        ha["bindings"]
            .as_array()
            .and_then(|bs| bs.iter().find(|b| b["home_address"] == MN_HOME.to_string()))
            .map(|b| b["udp_peer"].clone())
            .unwrap_or(Value::Null)
    };
    let dropped = |ha: &Value| {
        obj_u64(
            ha,
            &["counters", "drops"],
            "tunnel data from an address or port the node did not register from",
        )
    };
    let before = ml.ha_status().unwrap();
    let registered_peer = peer(&before);
    assert!(
        registered_peer.is_string(),
        "no UDP tunnel binding: {before}"
    );
    // Tunnel Data (type 4, next header 4 = IPv4), carrying a datagram "from" the home
    // address to the CN's echo port, sent from the NAT segment on a fresh port.
    let inner = ipv4_udp(MN_HOME, CN_ADDR, 40000, lab::traffic::UDP_PORT, b"forged");
    let mut forged = vec![4u8, 4, 0, 0];
    forged.extend_from_slice(&inner);
    ml.udp_exchange(
        "mn",
        ha_at(434),
        vec![forged; 5],
        Duration::from_millis(100),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let after = ml.ha_status().unwrap();
    assert_eq!(
        dropped(&after) - dropped(&before),
        5,
        "forged tunnel data not dropped: {after}"
    );
    assert_eq!(peer(&after), registered_peer, "binding moved: {after}");
    assert!(
        ml.echo_ok(Some(MN_HOME), Duration::from_secs(5)),
        "the node's own traffic stopped\n{}",
        ml.lab.log_tail("mn", 20)
    );
    eprintln!("5 forged datagrams dropped; binding stays on {registered_peer}");
}

/// The foreign agent daemon under bad input on UDP 434 while it serves a visitor: from
/// its link, a truncated message, an unknown message type and a malformed request; from
/// off the link, a reply that answers no relayed request (forging the HA's fields) and a
/// request. Each is dropped and counted by reason; the agent keeps running and the visitor stays
/// registered with traffic flowing.
#[test]
fn foreign_agent_counts_bad_input_and_keeps_serving() {
    let Some(_g) = lab_lock("foreign_agent_counts_bad_input_and_keeps_serving") else {
        return;
    };
    let mut ml = MipLab::start(&exe(), true, 300).unwrap();
    ml.lab.move_mn(Segment::IntB).unwrap();
    ml.wait_mn(Duration::from_secs(10), |v| {
        v["mode"] == "foreign" && v["registered"] == true
    })
    .unwrap();
    let before = ml.fa_status().unwrap();
    let mut reply = vec![3u8, 0, 0, 60];
    reply.extend_from_slice(&MN_HOME.octets());
    reply.extend_from_slice(&HA_ADDR.octets());
    reply.extend_from_slice(&0x0123_4567_89ab_cdefu64.to_be_bytes());
    let fa = SocketAddrV4::new(lab::topo::FA_ADDR, 434);
    // From the visitor's own link (the MN namespace): the agent parses these.
    let on_link = vec![
        vec![1u8, 0, 0],                   // truncated request
        vec![99u8; 24],                    // unknown message type
        vec![1u8, 0x02, 0, 60, 10, 10, 0], // request cut inside its fixed part
    ];
    ml.udp_exchange("mn", fa, on_link, Duration::from_millis(100))
        .unwrap();
    // From off the link (the CN): a reply for no relayed request, and a request,
    // which the agent refuses to serve for a sender that is not on its link.
    let off_link = vec![reply, vec![1u8, 0, 0]];
    ml.udp_exchange("cn", fa, off_link, Duration::from_millis(100))
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(ml.lab.is_running("fa"), "{}", ml.lab.log_tail("fa", 20));
    let after = ml.fa_status().unwrap();
    let d = |v: &Value, k: &str| obj_u64(v, &["counters", "drops"], k);
    // The agent takes each on-link sender's MAC from the frame (so the cut request
    // reaches the parser too): two truncated requests from the link, one from off it.
    for (k, n) in [
        ("Truncated", 3),
        ("UnexpectedMessage", 1),
        ("UnsolicitedReply", 1),
    ] {
        assert!(
            d(&after, k) >= d(&before, k) + n,
            "{k} not counted {n} more times:\nbefore {before}\nafter {after}"
        );
    }
    let no_mac = "no link-layer address for the sender";
    assert_eq!(d(&after, no_mac), d(&before, no_mac), "{after}");
    assert_eq!(
        obj_u64(&after, &["counters"], "replies_relayed"),
        obj_u64(&before, &["counters"], "replies_relayed"),
        "the forged reply was relayed: {after}"
    );
    let st = ml.mn_status().unwrap();
    assert!(st["mode"] == "foreign" && st["registered"] == true, "{st}");
    assert!(
        ml.echo_ok(Some(MN_HOME), Duration::from_secs(5)),
        "no echo through the agent after the bad input\n{}",
        ml.lab.log_tail("fa", 20)
    );
    eprintln!("FA after bad input: {}", after["counters"]);
}

/// Replies to `count` pings from the CN to the home address (downstream first: only a
/// live NAT mapping lets the request reach the MN behind the NAT).
fn ping_home_from_cn(ml: &MipLab, count: u32) -> usize {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ml.lab.ns("cn"),
            "ping",
            "-n",
            "-q",
            "-i",
            "0.3",
        ])
        .args(["-W", "1", "-c", &count.to_string(), &MN_HOME.to_string()])
        .output()
        .expect("ping");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split(',')
        .find(|f| f.contains("received"))
        .and_then(|f| f.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// RFC 3519 keepalives at the interval the HA asks for. The NAT forgets an idle UDP
/// mapping after 3 s. Control: with the default interval (110 s) the mapping is gone
/// after 6 idle seconds and pings from the CN to the home address are lost. With
/// `udp_keepalive_s = 1` the MN sends a keepalive every second, the HA echoes it, the
/// mapping stays, and the pings arrive.
#[test]
fn nat_keepalives_hold_an_idle_mapping() {
    let Some(_g) = lab_lock("nat_keepalives_hold_an_idle_mapping") else {
        return;
    };
    let mut ml = MipLab::start(&exe(), true, 300).unwrap();
    for (k, v) in [
        ("net.netfilter.nf_conntrack_udp_timeout", "3"),
        ("net.netfilter.nf_conntrack_udp_timeout_stream", "3"),
    ] {
        lab::netns::run(
            "ip",
            &[
                "netns",
                "exec",
                &ml.lab.ns("rt"),
                "sysctl",
                "-qw",
                &format!("{k}={v}"),
            ],
        )
        .unwrap();
    }
    let at_nat =
        |v: &Value| MipLab::registered_at(v, Segment::Nat.mn_addr()) && v["udp_tunnel"] == true;
    let rx = |ml: &MipLab| obj_u64(&ml.mn_status().unwrap(), &["counters"], "rx_packets");

    // Control: the RFC 3519 default interval, far above the NAT's timeout.
    ml.lab.move_mn(Segment::Nat).unwrap();
    ml.wait_mn(Duration::from_secs(10), at_nat).unwrap();
    std::thread::sleep(Duration::from_secs(6));
    let lost = ping_home_from_cn(&ml, 3);
    assert_eq!(
        lost, 0,
        "the mapping should have expired without keepalives"
    );

    // Keepalives every second.
    ml.lab.stop("ha", libc::SIGTERM);
    let cfg = std::fs::read_to_string(&ml.ha_cfg).unwrap();
    std::fs::write(
        &ml.ha_cfg,
        cfg.replacen("[ha]\n", "[ha]\nudp_keepalive_s = 1\n", 1),
    )
    .unwrap();
    ml.start_ha().unwrap();
    ml.lab.move_mn(Segment::IntA).unwrap();
    ml.wait_mn(Duration::from_secs(10), |v| {
        MipLab::registered_at(v, Segment::IntA.mn_addr())
    })
    .unwrap();
    ml.lab.move_mn(Segment::Nat).unwrap();
    ml.wait_mn(Duration::from_secs(10), at_nat).unwrap();
    let rx0 = rx(&ml);
    std::thread::sleep(Duration::from_secs(6));
    let echoes = rx(&ml) - rx0;
    let got = ping_home_from_cn(&ml, 3);
    eprintln!("idle 6 s behind a 3 s NAT timeout: {echoes} keepalive echoes, {got}/3 pings");
    assert!(
        (4..=8).contains(&echoes),
        "expected about 6 keepalive echoes in 6 s, got {echoes}"
    );
    assert!(got >= 2, "pings lost although keepalives ran: {got}/3");
}
