//! Every transition between inside and outside (issue 13 item 2) and MN-11 as the
//! gateway sees it (issue 12 item 3), in the enterprise lab with `mipsec mn`, under
//! TCP both ways and 5 ms UDP probes (`lab::transit::Timeline`). Each test prints its
//! timeline (per move: the time to an open gate and the longest probe gap) and
//! asserts that TCP survives. Root, strongSwan, dnsmasq and busybox are required.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use lab::gateway::GwAuth;
use lab::leak::{self, Class, Plan};
use lab::roam::Outside;
use lab::scenario::MipLab;
use lab::testing::{exe, lab_lock_needing, DHCP, STRONGSWAN};
use lab::topo::Segment;
use lab::transit::{self, gate, mode, Start, Timeline};

const OPEN: Duration = Duration::from_secs(20);
/// Time on a network with the traffic running, after its gate opened.
const STAY: Duration = Duration::from_secs(2);
/// The largest probe gap accepted for a move (the figures are printed; this only
/// catches a node that takes far longer than the lab's few hundred milliseconds).
const BOUND_MS: f64 = 6000.0;

/// Ends a timeline: prints it, asserts no TCP fault, both directions moving in the
/// last leg and every move's interruption under the bound. Returns the legs.
fn finish(ml: &MipLab, tl: Timeline, test: &str) -> Vec<transit::Leg> {
    finish_within(ml, tl, test, BOUND_MS).1
}

fn finish_within(
    ml: &MipLab,
    tl: Timeline,
    test: &str,
    bound_ms: f64,
) -> (lab::traffic::Record, Vec<transit::Leg>) {
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
        last.up_bytes > 0 && last.down_bytes > 0,
        "{test}: TCP stalled in the last leg: {last:?}"
    );
    for l in legs.iter().skip(1) {
        assert!(
            l.interruption_ms < bound_ms,
            "{test}: {}: interruption {:.0} ms\n{}",
            l.label,
            l.interruption_ms,
            ml.lab.log_tail("mn", 40)
        );
    }
    (rec, legs)
}

/// Leaks on one captured segment, leaving out what MN-6 allows outside (the
/// authenticated detection request to the i-HA, which the border drops: the frames
/// to 10.10.0.1 must all be registration requests, checked with tshark) and the
/// kernel's ARP from the previous network's address in the moment between the carrier
/// coming back and the lab's "DHCP" replacing the address (no user data; noted).
/// Not one frame may carry user data in the clear.
fn leaks(pcap: &Path, plan: &Plan) -> (u64, String) {
    let r = leak::classify_file(plan, "seg", pcap).unwrap();
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
        "{} user frames in the clear in {p}",
        user.len()
    );
    (n, leak::render_one(&r))
}

/// outside -> inside (cvc): on the way in from ext-a to int-a the i-HA's TNC reply
/// makes the node drop the VPN (the client process is gone) and stop using the x-HA
/// (which receives nothing from it any more; a deregistration cannot reach it from
/// inside, HA-5), and TCP survives.
#[test]
fn outside_to_inside_cvc() {
    let Some(_g) = lab_lock_needing("outside_to_inside_cvc", &[STRONGSWAN, DHCP].concat()) else {
        return;
    };
    let mut ml = transit::start(&exe(), GwAuth::Psk, Outside::Xmip, Start::Home, "").unwrap();
    transit::wait_gate(&ml, "open-home", OPEN).unwrap();
    let mut tl = Timeline::start(&ml, "start home").unwrap();
    std::thread::sleep(STAY);
    let st = transit::move_and_wait(&mut ml, &mut tl, Segment::ExtA, OPEN).unwrap();
    assert_eq!(mode(&st), "cvc", "{st}");
    assert!(transit::xha_bound(&ml).unwrap());
    std::thread::sleep(STAY);
    let st = transit::move_and_wait(&mut ml, &mut tl, Segment::IntA, OPEN).unwrap();
    assert_eq!(mode(&st), "c", "{st}");
    let (st, took) = ml
        .wait_mn(Duration::from_secs(5), |v| v["vpn_running"] == false)
        .unwrap();
    eprintln!("VPN stopped {took:?} after the gate opened inside: {st}");
    // The x-HA: the node no longer uses it. It cannot deregister from inside: the
    // x-HA drops every request arriving on its intranet leg (HA-5), so the binding
    // stays until its lifetime runs out. What is checked: nothing but those dropped
    // requests reaches the x-HA any more.
    std::thread::sleep(Duration::from_millis(500));
    let x0 = ml.xha_status().unwrap();
    std::thread::sleep(STAY);
    let x1 = ml.xha_status().unwrap();
    eprintln!("x-HA after the move inside: {x1}");
    // What its process took and what its kernel took back (`kernel_encap`).
    let rx = |x: &serde_json::Value| {
        lab::mip::get_u64(x, &["counters", "rx_packets"])
            + lab::mip::get_u64(x, &["kernel_encap", "decap_packets"])
    };
    assert_eq!(
        rx(&x1),
        rx(&x0),
        "x-MIP traffic after the move inside: {x1}"
    );
    std::thread::sleep(STAY);
    finish(&ml, tl, "outside_to_inside_cvc");
}

/// inside -> outside: int-a -> ext-a, then back, then int-a -> ext-nat (cvc). The
/// gate closes at once (the first status after the move is not open-inside), then
/// opens through the VPN; TCP survives every move; the outside captures carry no user
/// packet in the clear.
#[test]
fn inside_to_outside_cvc() {
    let Some(_g) = lab_lock_needing("inside_to_outside_cvc", &[STRONGSWAN, DHCP].concat()) else {
        return;
    };
    inside_to_outside(Outside::Xmip, "cvc");
}

/// The same in mode mc (MOBIKE, no x-HA).
#[test]
fn inside_to_outside_mc() {
    let Some(_g) = lab_lock_needing("inside_to_outside_mc", &[STRONGSWAN, DHCP].concat()) else {
        return;
    };
    inside_to_outside(Outside::Mobike, "mc");
}

fn inside_to_outside(outside: Outside, want_mode: &str) {
    let test = format!("inside_to_outside_{want_mode}");
    let mut ml =
        transit::start(&exe(), GwAuth::Psk, outside, Start::On(Segment::IntA), "").unwrap();
    transit::wait_gate(&ml, "open-inside", OPEN).unwrap();
    let dir = ml.lab.dir.join("pcap");
    let caps = [("ext-a", "br-exta"), ("ext-nat", "br-extnat")];
    for (n, br) in caps {
        transit::capture(
            &mut ml.lab,
            &format!("cap-{n}"),
            br,
            &dir.join(format!("{n}.pcap")),
        )
        .unwrap();
    }
    let mut tl = Timeline::start(&ml, "start int-a").unwrap();
    std::thread::sleep(STAY);
    for out in [Segment::ExtA, Segment::ExtNat] {
        tl.mark(format!("int-a -> {}", out.name()));
        let t0 = Instant::now();
        ml.lab.move_mn(out).unwrap();
        let first = ml.mn_status().unwrap();
        let closed_after = t0.elapsed();
        assert_ne!(
            gate(&first),
            "open-inside",
            "{test}: the gate is still open {closed_after:?} after the move: {first}"
        );
        let (st, _) = ml
            .wait_mn(OPEN, |v| {
                gate(v) == "open-vpn" && v["care_of"] == out.mn_addr().to_string()
            })
            .unwrap();
        tl.opened(t0.elapsed(), mode(&st));
        eprintln!(
            "{test}: int-a -> {}: gate {} at the first status ({closed_after:?}), open-vpn ({}) after {:?}",
            out.name(),
            gate(&first),
            mode(&st),
            t0.elapsed()
        );
        assert_eq!(mode(&st), want_mode, "{st}");
        std::thread::sleep(STAY);
        transit::move_and_wait(&mut ml, &mut tl, Segment::IntA, OPEN).unwrap();
        std::thread::sleep(STAY);
    }
    finish(&ml, tl, &test);
    for (n, _) in caps {
        ml.lab.stop(&format!("cap-{n}"), libc::SIGINT);
        let (bad, report) = leaks(&dir.join(format!("{n}.pcap")), &Plan::lab());
        eprintln!("{test}: {n}: {report}");
        let p = dir.join(format!("{n}.pcap"));
        let shown = lab::netns::run(
            "tshark",
            &[
                "-n",
                "-r",
                &p.display().to_string(),
                "-Y",
                "ip.addr == 10.0.0.0/8",
            ],
        )
        .unwrap_or_default();
        assert_eq!(bad, 0, "{test}: leaks on {n}:\n{report}\n{shown}");
    }
}

/// A network that imitates int-a (MN-8): the same prefix and router address, the
/// internal router's MAC, a DHCP server (real dnsmasq and udhcpc) leasing int-a's
/// address with the intranet's domain name. From int-a the node moves there: it never
/// opens the plaintext gate, goes outside through the VPN, and TCP survives; not one
/// user packet in the clear on the imitation's segment.
#[test]
fn imitation_of_inside_is_not_trusted() {
    let Some(_g) = lab_lock_needing(
        "imitation_of_inside_is_not_trusted",
        &[STRONGSWAN, DHCP].concat(),
    ) else {
        return;
    };
    let mut ml = transit::start(
        &exe(),
        GwAuth::Psk,
        Outside::Xmip,
        Start::On(Segment::IntA),
        "",
    )
    .unwrap();
    let mac = transit::build_imitation(&mut ml.lab).unwrap();
    transit::wait_gate(&ml, "open-inside", OPEN).unwrap();
    let pcap = ml.lab.dir.join("imit.pcap");
    transit::capture(&mut ml.lab, "cap-imit", transit::IMIT_BRIDGE, &pcap).unwrap();
    let mut tl = Timeline::start(&ml, "start int-a").unwrap();
    std::thread::sleep(STAY);
    let proofs0 = ml.mn_status().unwrap()["counters"]["inside_proofs"].clone();
    tl.mark("int-a -> imitation");
    let t0 = Instant::now();
    let domain = transit::move_to_imitation(&mut ml.lab).unwrap();
    assert_eq!(domain, lab::dhcp::INTRANET_DOMAIN);
    // Watch every status until the VPN is open: never open-inside on the way.
    let mut seen = Vec::new();
    let st = loop {
        let st = ml.mn_status().unwrap();
        let g = gate(&st).to_string();
        assert_ne!(g, "open-inside", "plaintext on the imitation: {st}");
        if seen.last() != Some(&g) {
            seen.push(g.clone());
        }
        if g == "open-vpn" {
            break st;
        }
        assert!(
            t0.elapsed() < OPEN,
            "no VPN on the imitation: {st}\n{}",
            ml.lab.log_tail("mn", 40)
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    tl.opened(t0.elapsed(), mode(&st));
    eprintln!(
        "imitation (router MAC {mac:02x?}, domain {domain}): gates {seen:?}, open-vpn ({}) after {:?}; proofs refused {}",
        mode(&st),
        t0.elapsed(),
        st["counters"]["proofs_refused"]
    );
    std::thread::sleep(STAY * 2);
    let st = ml.mn_status().unwrap();
    assert_eq!(gate(&st), "open-vpn", "{st}");
    assert_eq!(
        st["counters"]["inside_proofs"], proofs0,
        "a proof on the imitation: {st}"
    );
    finish(&ml, tl, "imitation_of_inside_is_not_trusted");
    ml.lab.stop("cap-imit", libc::SIGINT);
    let clear = transit::clear_user_frames(&pcap).unwrap();
    assert!(
        clear.is_empty(),
        "{} user frames in the clear on the imitation",
        clear.len()
    );
    // The classifier over the same capture: the lease and the router are that
    // network's own addresses (learned from its DHCP replies).
    let (bad, report) = leaks(&pcap, &Plan::lab());
    eprintln!("imitation segment: {report}");
    assert_eq!(bad, 0, "{report}");
}

/// The silent move: the MN sits on int-a (mode c) and its switch port is re-plugged
/// into the imitation network without any carrier, address or router change. The
/// node must stop plaintext within T_MONITOR (11 s here), and in fact within about
/// 2 s, when the home agent's tunnel goes silent (the core closes the gate while the
/// binding is probed): the last user frame in the clear on the imitation comes less
/// than 4 s after the re-wiring, none comes
/// after the node's status showed the gate no longer open-inside, and the node goes
/// outside through the VPN with TCP surviving.
#[test]
fn silent_move_stops_plaintext_within_t_monitor() {
    let Some(_g) = lab_lock_needing(
        "silent_move_stops_plaintext_within_t_monitor",
        &[STRONGSWAN, DHCP].concat(),
    ) else {
        return;
    };
    let mut ml = transit::start(
        &exe(),
        GwAuth::Psk,
        Outside::Xmip,
        Start::On(Segment::IntA),
        "t_monitor_s = 11",
    )
    .unwrap();
    transit::build_imitation(&mut ml.lab).unwrap();
    transit::wait_gate(&ml, "open-inside", OPEN).unwrap();
    let pcap = ml.lab.dir.join("imit.pcap");
    transit::capture(&mut ml.lab, "cap-imit", transit::IMIT_BRIDGE, &pcap).unwrap();
    let mut tl = Timeline::start(&ml, "start int-a").unwrap();
    std::thread::sleep(STAY);
    let before = ml.mn_status().unwrap();
    tl.mark("int-a ~> imitation (silent)");
    let wall0 = SystemTime::now();
    let t0 = Instant::now();
    transit::rewire_silently(&ml.lab, transit::IMIT_BRIDGE).unwrap();
    let (st, closed) = ml
        .wait_mn(Duration::from_secs(15), |v| gate(v) != "open-inside")
        .unwrap();
    let wall_closed = SystemTime::now();
    eprintln!(
        "silent move: gate {} after {closed:?} ({}); epoch {} -> {}",
        gate(&st),
        st["interfaces"][0]["last_change"],
        before["interfaces"][0]["epoch"],
        st["interfaces"][0]["epoch"]
    );
    let (st, _) = ml.wait_mn(OPEN, |v| gate(v) == "open-vpn").unwrap();
    tl.opened(t0.elapsed(), mode(&st));
    eprintln!(
        "silent move: open-vpn ({}) after {:?}",
        mode(&st),
        t0.elapsed()
    );
    std::thread::sleep(STAY);
    // The interruption of a silent move is bounded by T_MONITOR, plus the way out.
    finish_within(&ml, tl, "silent_move", 11_000.0 + BOUND_MS);
    ml.lab.stop("cap-imit", libc::SIGINT);
    let clear = transit::clear_user_frames(&pcap).unwrap();
    let (s0, sc) = (transit::epoch_s(wall0), transit::epoch_s(wall_closed));
    let last = clear.iter().copied().fold(s0, f64::max);
    eprintln!(
        "silent move: {} user frames in the clear on the imitation, the last {:.0} ms after the re-wiring (gate seen closed at {:.0} ms)",
        clear.len(),
        (last - s0) * 1e3,
        (sc - s0) * 1e3
    );
    assert!(last - s0 < 11.0, "plaintext past T_MONITOR");
    // The tunnel goes silent at once on the look-alike network: the shell's probe
    // (1 s of silence, then 1 s for the echo) closes the gate long before T_MONITOR.
    assert!(
        last - s0 < 4.0,
        "plaintext {:.0} ms after the re-wiring: the silent binding did not close the gate",
        (last - s0) * 1e3
    );
    let after: Vec<f64> = clear.iter().copied().filter(|t| *t > sc).collect();
    assert!(
        after.is_empty(),
        "{} user frames in the clear after the gate closed (first {:.0} ms after it)",
        after.len(),
        (after[0] - sc) * 1e3
    );
}

/// The node starts outside (on ext-a), starts inside (on int-a), and starts with no
/// network at all (carrier down), which it then gets (ext-a). Each comes to the right
/// gate, and TCP then runs through one more move.
#[test]
fn starts_outside_inside_and_without_network() {
    let Some(_g) = lab_lock_needing(
        "starts_outside_inside_and_without_network",
        &[STRONGSWAN, DHCP].concat(),
    ) else {
        return;
    };
    for (at, want, next) in [
        (Start::On(Segment::ExtA), "open-vpn", Segment::IntA),
        (Start::On(Segment::IntA), "open-inside", Segment::ExtA),
        (Start::NoNetwork, "open-vpn", Segment::IntA),
    ] {
        let mut ml = transit::start_lab(&exe(), GwAuth::Psk, Outside::Xmip, at, "").unwrap();
        let t0 = Instant::now();
        ml.start_mn().unwrap();
        let started = t0.elapsed();
        if at == Start::NoNetwork {
            let st = ml.mn_status().unwrap();
            std::thread::sleep(Duration::from_secs(1));
            let st2 = ml.mn_status().unwrap();
            eprintln!("no network: {}", st2["interfaces"][0]);
            assert_eq!(gate(&st2), "closed", "{st}");
            assert!(!ml.echo_ok(Some(lab::topo::MN_HOME), Duration::from_millis(500)));
            ml.lab.move_mn(Segment::ExtA).unwrap();
        }
        let t1 = Instant::now();
        let (st, took) = transit::wait_gate(&ml, want, OPEN).unwrap();
        eprintln!(
            "start {at:?}: status answered {started:?} after the spawn, gate {want} ({}) {took:?} after that ({:?} since the network came, {:?} since the spawn)",
            mode(&st),
            t1.elapsed(),
            t0.elapsed()
        );
        let mut tl = Timeline::start(&ml, &format!("start {at:?}")).unwrap();
        std::thread::sleep(STAY);
        transit::move_and_wait(&mut ml, &mut tl, next, OPEN).unwrap();
        std::thread::sleep(STAY);
        finish(&ml, tl, &format!("start {at:?}"));
    }
}

/// MN-11 as the gateway sees it (issue 12 item 3): five moves between outside networks
/// (ext-a <-> ext-nat, cvc) under TCP leave the gateway with the same one IKE SA (the
/// same SPIs), the same CHILD SA, and no new IKE_SA_INIT; only the x-HA registration
/// moved.
#[test]
fn gateway_keeps_the_ike_sa_across_outside_moves() {
    let Some(_g) = lab_lock_needing(
        "gateway_keeps_the_ike_sa_across_outside_moves",
        &[STRONGSWAN, DHCP].concat(),
    ) else {
        return;
    };
    let mut ml = transit::start(
        &exe(),
        GwAuth::Psk,
        Outside::Xmip,
        Start::On(Segment::ExtA),
        "",
    )
    .unwrap();
    transit::wait_gate(&ml, "open-vpn", OPEN).unwrap();
    let sas0 = transit::gw_sas(&ml.lab).unwrap();
    let inits0 = transit::gw_ike_sa_inits(&ml.lab);
    eprintln!("gateway after the first IKE: {sas0:?}, {inits0} IKE_SA_INIT");
    assert_eq!(sas0.ike.len(), 1, "{sas0:?}");
    assert_eq!(inits0, 1);
    assert_eq!(
        sas0.remote,
        vec![format!("{}[4500]", lab::enterprise::MN_XHOME)],
        "the gateway's peer is the x-home address"
    );
    let mut tl = Timeline::start(&ml, "start ext-a").unwrap();
    std::thread::sleep(STAY);
    for seg in [
        Segment::ExtNat,
        Segment::ExtA,
        Segment::ExtNat,
        Segment::ExtA,
        Segment::ExtNat,
    ] {
        transit::move_and_wait(&mut ml, &mut tl, seg, OPEN).unwrap();
        std::thread::sleep(STAY);
        let sas = transit::gw_sas(&ml.lab).unwrap();
        assert_eq!(
            sas.ike,
            sas0.ike,
            "IKE SA changed after the move to {}",
            seg.name()
        );
        assert_eq!(
            sas.child_in,
            sas0.child_in,
            "CHILD SA changed after the move to {}",
            seg.name()
        );
        assert_eq!(
            sas.remote, sas0.remote,
            "the gateway's peer is the x-home address: {sas:?}"
        );
    }
    assert_eq!(
        transit::gw_ike_sa_inits(&ml.lab),
        inits0,
        "a new IKE_SA_INIT"
    );
    let st = ml.mn_status().unwrap();
    assert_eq!(st["counters"]["vpn_starts"], 1, "{st}");
    finish(&ml, tl, "gateway_keeps_the_ike_sa");
}

/// MN-11 in mode mc: the IKE SA follows the care-of address by MOBIKE, so the gateway
/// keeps the same IKE SPIs (its remote endpoint changes) and parses no new IKE_SA_INIT.
#[test]
fn gateway_keeps_the_ike_sa_across_mobike_moves() {
    let Some(_g) = lab_lock_needing(
        "gateway_keeps_the_ike_sa_across_mobike_moves",
        &[STRONGSWAN, DHCP].concat(),
    ) else {
        return;
    };
    let mut ml = transit::start(
        &exe(),
        GwAuth::Psk,
        Outside::Mobike,
        Start::On(Segment::ExtA),
        "",
    )
    .unwrap();
    transit::wait_gate(&ml, "open-vpn", OPEN).unwrap();
    let sas0 = transit::gw_sas(&ml.lab).unwrap();
    let inits0 = transit::gw_ike_sa_inits(&ml.lab);
    eprintln!("gateway after IKE (mc): {sas0:?}, {inits0} IKE_SA_INIT");
    assert_eq!(sas0.ike.len(), 1, "{sas0:?}");
    let mut tl = Timeline::start(&ml, "start ext-a").unwrap();
    std::thread::sleep(STAY);
    // Per move: the gateway's own CHILD SA rekey after the update (strongSwan's
    // kernel-libipsec cannot move an SA, so it rekeys), as the client's clock places
    // the lines of its charon.log that establish the new CHILD SA and close the old.
    // (move, rekey times, update times, the client's log, how late the route came)
    type Rekey = (String, Vec<u64>, Vec<u64>, String, Duration);
    let mut rekeys: Vec<Rekey> = Vec::new();
    let mn_log_len = |ml: &MipLab| std::fs::metadata(ml.lab.log_path("mn")).map_or(0, |m| m.len());
    // The last move's default route comes 100 ms after the address (a slow DHCP
    // client): the update that went out before it must go again when it comes.
    let late = Duration::from_millis(100);
    let moves = [
        (Segment::ExtNat, Duration::ZERO),
        (Segment::ExtA, Duration::ZERO),
        (Segment::ExtNat, Duration::ZERO),
        (Segment::ExtA, late),
    ];
    for (seg, route_late) in moves {
        let from = lab::gateway::log_len(&ml.lab);
        let mn_from = mn_log_len(&ml);
        let child_before = transit::gw_sas(&ml.lab).unwrap().child_in;
        transit::move_and_wait_route_late(&mut ml, &mut tl, seg, OPEN, route_late).unwrap();
        std::thread::sleep(STAY);
        let sas = transit::gw_sas(&ml.lab).unwrap();
        eprintln!("after the move to {}: {sas:?}", seg.name());
        assert_eq!(
            sas.ike,
            sas0.ike,
            "IKE SA changed after the move to {}",
            seg.name()
        );
        assert_ne!(
            sas.child_in,
            child_before,
            "the gateway did not rekey the CHILD SA after the move to {}",
            seg.name()
        );
        let log = lab::gateway::log_from(&ml.lab, from);
        let times: Vec<u64> = log
            .lines()
            .filter(|l| {
                (l.contains("CHILD_SA") && l.contains("established with SPIs"))
                    || l.contains("closing CHILD_SA")
            })
            .inspect(|l| eprintln!("  gateway: {l}"))
            .filter_map(lab::gateway::log_line_time)
            .filter_map(|t| tl.us_at_time_of_day(t))
            .collect();
        assert!(
            !times.is_empty(),
            "no CHILD SA rekey in the gateway's log after the move to {}",
            seg.name()
        );
        // When charon parsed the update (the first copy that reached it).
        let updates: Vec<u64> = log
            .lines()
            .filter(|l| l.contains("parsed INFORMATIONAL request") && l.contains("UPD_SA_ADDR"))
            .filter_map(lab::gateway::log_line_time)
            .filter_map(|t| tl.us_at_time_of_day(t))
            .collect();
        let mn_log = std::fs::read(ml.lab.log_path("mn")).unwrap_or_default();
        let mn_log =
            String::from_utf8_lossy(mn_log.get(mn_from as usize..).unwrap_or(&[])).into_owned();
        rekeys.push((
            format!("{} (route {} ms late)", seg.name(), route_late.as_millis()),
            times,
            updates,
            format!("{mn_log}\ngateway:\n{log}"),
            route_late,
        ));
    }
    assert_eq!(
        transit::gw_ike_sa_inits(&ml.lab),
        inits0,
        "a new IKE_SA_INIT"
    );
    let (rec, legs) = finish_within(&ml, tl, "gateway_keeps_the_ike_sa_mc", BOUND_MS);
    // The rekey costs no user packet: from the first probe echoed after the gateway
    // began it (or 2 ms after its last line, for the log's millisecond resolution) until
    // 200 ms after it, every probe was echoed. The probes lost before are the move's own
    // interruption (the gateway learns the new address in the same millisecond, and the
    // node's gate opens on the answer); they are printed.
    let mut covered = 0;
    for ((seg, times, updates, mn_log, route_late), leg) in rekeys.iter().zip(legs.iter().skip(1)) {
        let rel = |t: u64| (t as f64 - leg.start_us as f64) / 1e3;
        let (first, last) = (*times.iter().min().unwrap(), *times.iter().max().unwrap());
        let echo = rec.first_ok_after(first).unwrap();
        assert!(
            echo < last + 100_000,
            "no probe echoed within 100 ms of the rekey after the move to {seg}"
        );
        // The update reaches the gateway promptly: not after its 500 ms
        // retransmission (1 move in 10 did, before vpnc resent it when the route
        // appeared). Measured where charon parses it: the rekey it starts then can
        // still wait for charon's own retransmission if the network loses our answer
        // (seen once: the answer left the client 1.5 ms after the request and the
        // gateway's CHILD SA came 1 s later), which is not the client's doing.
        let bound_ms = route_late.as_secs_f64() * 1e3 + 300.0;
        let update = updates.iter().min().copied();
        assert!(
            update.is_some_and(|u| rel(u) < bound_ms),
            "the gateway got the update {:?} ms after the move to {seg}; the logs:\n{mn_log}",
            update.map(rel)
        );
        let lo = echo.max(last + 2_000);
        let before: Vec<f64> = rec
            .lost_probes(leg.start_us, lo)
            .into_iter()
            .map(rel)
            .collect();
        let after: Vec<f64> = rec
            .lost_probes(lo, last + 200_000)
            .into_iter()
            .map(rel)
            .collect();
        eprintln!(
            "move to {seg}: gateway rekey {:.1}-{:.1} ms after the move, first echo after it {:.1} ms; probes lost before {:.1} ms at {before:.1?}, after at {after:.1?}",
            rel(first),
            rel(last),
            rel(echo),
            rel(lo)
        );
        assert!(
            after.is_empty(),
            "the rekey after the move to {seg} lost probes: {after:?}"
        );
        covered += 1;
    }
    assert_eq!(covered, moves.len());
}

/// Issue 12 item 5: the ESP keys the client writes in lab mode (`esp_key_log` in the
/// user's VPN file, Wireshark's esp_sa format) let tshark decrypt the ESP on ext-a
/// (cvc: inside the x-MIP layer) and find the i-MIP IP-in-IP from the TIA to the i-HA
/// with the user's TCP inside, both ways. Negative control: without the keys the same
/// filter finds nothing.
#[test]
fn esp_key_log_decrypts_the_outside_capture() {
    let Some(_g) = lab_lock_needing(
        "esp_key_log_decrypts_the_outside_capture",
        &[STRONGSWAN, DHCP].concat(),
    ) else {
        return;
    };
    let mut ml = transit::start_lab(&exe(), GwAuth::Psk, Outside::Xmip, Start::Home, "").unwrap();
    // The lab's MN VPN file already logs the ESP keys (lab::roam::esp_keylog).
    let keylog = lab::roam::esp_keylog(&ml.lab);
    ml.start_mn().unwrap();
    transit::wait_gate(&ml, "open-home", OPEN).unwrap();
    let pcap = ml.lab.dir.join("ext-a.pcap");
    transit::capture(&mut ml.lab, "cap-ext-a", "br-exta", &pcap).unwrap();
    let mut tl = Timeline::start(&ml, "start home").unwrap();
    let st = transit::move_and_wait(&mut ml, &mut tl, Segment::ExtA, OPEN).unwrap();
    let tia = st["tia"].as_str().unwrap().to_string();
    std::thread::sleep(STAY);
    finish(&ml, tl, "esp_key_log");
    ml.lab.stop("cap-ext-a", libc::SIGINT);
    let keys = std::fs::read_to_string(&keylog).unwrap();
    let mode = std::fs::metadata(&keylog).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );
    let mut args: Vec<String> = vec!["-o".into(), "esp.enable_encryption_decode:TRUE".into()];
    for l in keys.lines() {
        args.push("-o".into());
        args.push(format!("uat:esp_sa:{l}"));
    }
    let p = pcap.display().to_string();
    let count = |extra: &[String], filter: &str| {
        let mut a: Vec<String> = vec!["-n".into(), "-r".into(), p.clone()];
        a.extend_from_slice(extra);
        a.push("-Y".into());
        a.push(filter.into());
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        lab::netns::run("tshark", &a).unwrap().lines().count()
    };
    let up = format!("esp && ip.src == {tia} && ip.dst == 10.10.0.1 && tcp.dstport == 5001");
    let down = format!("esp && ip.src == 10.10.0.1 && ip.dst == {tia} && tcp.srcport == 5001");
    let (n_up, n_down) = (count(&args, &up), count(&args, &down));
    let plain = count(&[], &format!("{up} || {down}"));
    eprintln!(
        "key log: {} lines; ext-a decrypted: {n_up} frames TIA -> i-HA with TCP to the CN inside, {n_down} back; without the keys {plain}",
        keys.lines().count()
    );
    assert!(
        n_up > 100 && n_down > 100,
        "decrypted: {n_up} up, {n_down} down\n{keys}"
    );
    assert_eq!(plain, 0, "the filter matches without the keys");
}
