//! Two interfaces at once (MN-2, issue 13 item 3), in the enterprise lab with
//! `mipsec mn` (`interfaces = ["eth0", "eth1"]`, outside = x-MIP) under TCP both
//! ways and 5 ms UDP probes: one link inside (mode c) and the other outside (cvc),
//! each with its own layering; user data takes the proven-inside one; losing it
//! moves the traffic through the VPN on the other without a TCP reset; its return
//! brings the traffic back inside. Each test prints its timeline (per step: the
//! time to the new data path and the longest probe gap). Root and strongSwan are
//! required.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::Path;
use std::time::{Duration, Instant};

use lab::gateway::GwAuth;
use lab::leak::{self, Class, Plan};
use lab::roam::Outside;
use lab::scenario::MipLab;
use lab::testing::{self, exe};
use lab::topo::Segment;
use lab::transit::{self, Start, Timeline};
use lab::twoif::{self, MnLink, ETH0, ETH1};

const OPEN: Duration = Duration::from_secs(20);
/// Time with the traffic running on a data path.
const STAY: Duration = Duration::from_secs(2);
/// The largest probe gap accepted for a change of data path (the figures are
/// printed; this catches a node that takes far longer than the lab's milliseconds).
const BOUND_MS: f64 = 3000.0;

fn lab_lock(test: &str) -> Option<std::sync::MutexGuard<'static, ()>> {
    testing::lab_lock_needing(test, testing::STRONGSWAN)
}

/// The enterprise lab with the MN's second link, `mipsec mn` on both, `first` on
/// `seg` (the other link detached). Returns once `first` carries user data.
fn start(first: MnLink, seg: Segment) -> MipLab {
    let mut ml = transit::start_lab(
        &exe(),
        GwAuth::Psk,
        Outside::Xmip,
        Start::NoNetwork,
        twoif::INTERFACES,
    )
    .unwrap();
    twoif::add_second_link(&ml.lab).unwrap();
    twoif::attach(&ml.lab, first, seg).unwrap();
    ml.start_mn().unwrap();
    let want = transit::settled_gate(seg);
    twoif::wait_carrier(&ml, first.ifname, want, OPEN)
        .unwrap_or_else(|e| panic!("{e}\n{}", ml.lab.log_tail("mn", 40)));
    ml
}

/// Octets sent on each link while `f` runs.
fn sent_during(ml: &MipLab, f: impl FnOnce()) -> (u64, u64) {
    let b = |n| twoif::tx_bytes(&ml.lab, n).unwrap();
    let (a0, b0) = (b("eth0"), b("eth1"));
    f();
    (b("eth0") - a0, b("eth1") - b0)
}

/// Asserts that the traffic of the last `STAY` went out on `busy` (megabytes) and
/// that the other link carried at most control traffic.
fn assert_carried(test: &str, step: &str, (e0, e1): (u64, u64), busy: &str) {
    eprintln!("{test}: {step}: sent on eth0 {e0} octets, on eth1 {e1} octets");
    let (on, off) = if busy == "eth0" { (e0, e1) } else { (e1, e0) };
    assert!(on > 1_000_000, "{test}: {step}: {busy} carried {on} octets");
    assert!(
        off < 100_000,
        "{test}: {step}: the other link carried {off} octets"
    );
}

/// Frames on an outside segment that would be leaks: user data in the clear, any
/// intranet address except the registration requests to the i-HA (MN-6 detection).
fn leaks(pcap: &Path) -> (u64, String) {
    let r = leak::classify_file(&Plan::lab(), "seg", pcap).unwrap();
    let n = r
        .by_kind
        .iter()
        .filter(|((c, w), _)| {
            *c == Class::Leak
                && w != "destination 10.10.0.1 in the clear"
                && !w.starts_with("ARP sender 10.")
        })
        .map(|(_, n)| *n)
        .sum();
    let p = pcap.display().to_string();
    let not_rrq = lab::netns::run(
        "tshark",
        &[
            "-n",
            "-r",
            &p,
            "-Y",
            "ip.dst == 10.10.0.1 && !(mip.type == 1)",
        ],
    )
    .unwrap();
    assert!(
        not_rrq.trim().is_empty(),
        "to the i-HA, not a request:\n{not_rrq}"
    );
    let user = transit::clear_user_frames(pcap).unwrap();
    assert!(
        user.is_empty(),
        "{} user frames in the clear in {}",
        user.len(),
        pcap.display()
    );
    (n, leak::render_one(&r))
}

/// `inside_link` on int-a (mode c), `outside_link` on ext-a (cvc, the VPN up on
/// standby): data inside in plaintext; the inside link goes (detached): data
/// through the VPN on the other; it comes back: data inside again. `inside_first`
/// says which link is attached first.
fn inside_plus_outside(test: &str, inside_link: MnLink, outside_link: MnLink, inside_first: bool) {
    let (i, o) = (inside_link.ifname, outside_link.ifname);
    let (first, first_seg, second, second_seg) = if inside_first {
        (inside_link, Segment::IntA, outside_link, Segment::ExtA)
    } else {
        (outside_link, Segment::ExtA, inside_link, Segment::IntA)
    };
    let mut ml = start(first, first_seg);
    let dir = ml.lab.dir.join("pcap");
    let ext_pcap = dir.join("ext-a.pcap");
    transit::capture(&mut ml.lab, "cap-ext-a", "br-exta", &ext_pcap).unwrap();
    let mut tl = Timeline::start(&ml, &format!("{} {}", first.ifname, first_seg.name())).unwrap();
    std::thread::sleep(STAY);

    // The second link comes up: the data stays inside, or moves there.
    tl.mark(format!("+ {} {}", second.ifname, second_seg.name()));
    let t0 = Instant::now();
    twoif::attach(&ml.lab, second, second_seg).unwrap();
    twoif::wait_carrier(&ml, i, "open-inside", OPEN).unwrap();
    // The outside link: outside, its VPN up, standing by (gate closed: the i-HA's
    // binding is on the inside link).
    let (st, _) = ml
        .wait_mn(OPEN, |v| {
            twoif::iface(v, o)["state"] == "outside" && v["tia"].is_string()
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", ml.lab.log_tail("mn", 40)));
    tl.opened(t0.elapsed(), "c");
    eprintln!("{test}: both links up after {:?}: {st}", t0.elapsed());
    assert!(twoif::carries(&st, i), "{st}");
    assert_eq!(twoif::gate(&st, i), "open-inside", "{st}");
    assert_eq!(twoif::iface(&st, i)["mode"], "c", "{st}");
    assert_eq!(twoif::gate(&st, o), "closed", "{st}");
    assert!(
        twoif::iface(&st, o)["last_change"]
            .as_str()
            .unwrap_or("")
            .starts_with("standby"),
        "{st}"
    );
    assert_eq!(twoif::iface(&st, o)["vpn"], true, "{st}");
    let starts = lab::mip::get_u64(&st, &["counters", "vpn_starts"]);
    let sent = sent_during(&ml, || std::thread::sleep(STAY));
    assert_carried(test, "both up", sent, i);

    // The inside link goes: through the VPN on the other, at once.
    tl.mark(format!("{i} away"));
    let t0 = Instant::now();
    twoif::detach(&ml.lab, inside_link).unwrap();
    let (st, _) = twoif::wait_carrier(&ml, o, "open-vpn", OPEN)
        .unwrap_or_else(|e| panic!("{e}\n{}", ml.lab.log_tail("mn", 40)));
    tl.opened(t0.elapsed(), "cvc");
    eprintln!(
        "{test}: {i} away: {o} open-vpn after {:?}: {st}",
        t0.elapsed()
    );
    assert_eq!(twoif::iface(&st, o)["mode"], "cvc", "{st}");
    assert_ne!(twoif::gate(&st, i), "open-inside", "{st}");
    let sent = sent_during(&ml, || std::thread::sleep(STAY));
    assert_carried(test, &format!("{i} away"), sent, o);

    // It comes back: inside again, the VPN stays up on standby.
    tl.mark(format!("{i} back"));
    let t0 = Instant::now();
    twoif::attach(&ml.lab, inside_link, Segment::IntA).unwrap();
    let (st, _) = twoif::wait_carrier(&ml, i, "open-inside", OPEN)
        .unwrap_or_else(|e| panic!("{e}\n{}", ml.lab.log_tail("mn", 40)));
    tl.opened(t0.elapsed(), "c");
    eprintln!(
        "{test}: {i} back: open-inside after {:?}: {st}",
        t0.elapsed()
    );
    assert_eq!(twoif::gate(&st, o), "closed", "{st}");
    let sent = sent_during(&ml, || std::thread::sleep(STAY));
    assert_carried(test, &format!("{i} back"), sent, i);

    let (rec, legs) = tl.finish();
    eprintln!("{test}:\n{}", transit::render_legs(&legs));
    assert!(
        rec.faults.is_empty(),
        "{test}: TCP broke: {:?}\n{}",
        rec.faults,
        ml.lab.log_tail("mn", 40)
    );
    for l in legs.iter().skip(1) {
        assert!(
            l.interruption_ms < BOUND_MS && l.up_bytes > 0 && l.down_bytes > 0,
            "{test}: {}: {l:?}\n{}",
            l.label,
            ml.lab.log_tail("mn", 40)
        );
    }
    // One IKE for the whole test: the VPN waited on standby.
    let st = ml.mn_status().unwrap();
    assert_eq!(
        lab::mip::get_u64(&st, &["counters", "vpn_starts"]),
        starts,
        "{st}"
    );
    ml.lab.stop("cap-ext-a", libc::SIGINT);
    let (bad, report) = leaks(&ext_pcap);
    eprintln!("{test}: ext-a: {report}");
    assert_eq!(bad, 0, "{test}: leaks on ext-a:\n{report}");
}

/// eth0 on int-a (inside, c) first, then eth1 on ext-a (outside, cvc).
#[test]
fn eth0_inside_eth1_outside() {
    let Some(_g) = lab_lock("eth0_inside_eth1_outside") else {
        return;
    };
    inside_plus_outside("eth0_inside_eth1_outside", ETH0, ETH1, true);
}

/// The reverse: eth0 on ext-a (cvc, carrying data through the VPN) first, then eth1
/// comes up on int-a and takes the data inside.
#[test]
fn eth0_outside_then_eth1_inside() {
    let Some(_g) = lab_lock("eth0_outside_then_eth1_inside") else {
        return;
    };
    inside_plus_outside("eth0_outside_then_eth1_inside", ETH1, ETH0, false);
}

/// Both links outside: eth0 on ext-a, eth1 on ext-nat. The x-MIP layer (and the
/// VPN run over it) exists once: eth0 holds it and carries the data, eth1 waits
/// (detecting, gate closed). eth0 goes: eth1 registers with the x-HA and the VPN
/// starts over from it (a new IKE); TCP survives.
#[test]
fn both_outside_the_second_takes_over() {
    let test = "both_outside_the_second_takes_over";
    let Some(_g) = lab_lock(test) else {
        return;
    };
    let ml = start(ETH0, Segment::ExtA);
    let mut tl = Timeline::start(&ml, "eth0 ext-a").unwrap();
    std::thread::sleep(STAY);
    tl.mark("+ eth1 ext-nat");
    twoif::attach(&ml.lab, ETH1, Segment::ExtNat).unwrap();
    let (st, _) = ml
        .wait_mn(OPEN, |v| twoif::iface(v, "eth1")["state"] == "detecting")
        .unwrap();
    std::thread::sleep(STAY);
    let st2 = ml.mn_status().unwrap();
    eprintln!("{test}: both links up: {st2}");
    assert!(twoif::carries(&st2, "eth0"), "{st2}");
    assert_eq!(twoif::gate(&st2, "eth1"), "closed", "{st} {st2}");
    let sent = sent_during(&ml, || std::thread::sleep(STAY));
    assert_carried(test, "both up", sent, "eth0");

    tl.mark("eth0 away");
    let t0 = Instant::now();
    twoif::detach(&ml.lab, ETH0).unwrap();
    let (st, _) = twoif::wait_carrier(&ml, "eth1", "open-vpn", OPEN)
        .unwrap_or_else(|e| panic!("{e}\n{}", ml.lab.log_tail("mn", 40)));
    tl.opened(t0.elapsed(), "cvc");
    eprintln!(
        "{test}: eth0 away: eth1 open-vpn after {:?}: {st}",
        t0.elapsed()
    );
    let sent = sent_during(&ml, || std::thread::sleep(STAY));
    assert_carried(test, "eth0 away", sent, "eth1");

    let (rec, legs) = tl.finish();
    eprintln!("{test}:\n{}", transit::render_legs(&legs));
    assert!(
        rec.faults.is_empty(),
        "{test}: TCP broke: {:?}\n{}",
        rec.faults,
        ml.lab.log_tail("mn", 40)
    );
    let last = legs.last().unwrap();
    assert!(
        last.interruption_ms < 6000.0 && last.up_bytes > 0 && last.down_bytes > 0,
        "{test}: {last:?}"
    );
}
