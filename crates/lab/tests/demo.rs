//! The lab's demo (root): home -> int-a (co-located) -> int-b (foreign agent) -> nat ->
//! home under TCP both ways with UDP probes, its negative control with plain routing,
//! and a capture of it that tshark decodes cleanly. Each test builds its own lab with a
//! fresh prefix; `lab::testing::lab_lock` runs them one at a time. Without root they
//! fail, unless MIPSEC_SKIP_LAB=1, which prints a loud SKIP instead.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::net::SocketAddrV4;
use std::time::Duration;

use lab::mip::{FLAG_D, FLAG_T};
use lab::scenario::{demo_on, run_demo, start_capture, DemoOpts, MipLab};
use lab::testing::{
    count, counter, exe, fields, keep_capture, lab_lock, FLAGGED_BUT_DSACK, PATTERN_PREFS,
};
use lab::topo::{Segment, CN_ADDR, HA_ADDR};

const HA_434: SocketAddrV4 = SocketAddrV4::new(HA_ADDR, 434);

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
    let accepted = counter(ha, &["counters", "replies_by_code"], "0");
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
    ml.udp_exchange("cn", HA_434, vec![bad], Duration::from_millis(300))
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    ml.lab.stop("capture-ha", libc::SIGINT);
    let cap = keep_capture(&cap, "mipsec-lab-capture");

    // D-SACK options report the duplicates that moves cause, and PATTERN_PREFS turn off
    // the other judgements of the traffic pattern: all expected in Mobile IP, none a
    // format problem.
    let flagged = fields(
        &cap,
        PATTERN_PREFS,
        FLAGGED_BUT_DSACK,
        &["ip.src", "udp.dstport", "_ws.expert.message"],
    );
    assert_eq!(
        flagged.len(),
        1,
        "expected only the injected truncated request to be flagged:\n{flagged:#?}"
    );
    assert!(
        flagged[0].starts_with(&format!("{CN_ADDR}\t434")),
        "{flagged:#?}"
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
