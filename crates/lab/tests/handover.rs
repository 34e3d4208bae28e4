//! Issue 13 item 4: one short round of `mipsec-lab bench --handover` (strongSwan's own
//! client with MOBIKE, mipsec mc, mipsec cvc, each over ext-a -> ext-nat -> ext-a ->
//! int-a -> ext-a under TCP both ways and 5 ms probes). Asserts what each did, not
//! figures: strongSwan's client moved its IKE SA with a MOBIKE update the gateway
//! processed (same IKE SPIs, new peer address) and its probes came back on every
//! outside network; mc moved with MOBIKE, cvc with one x-HA registration and no IKE.
//! Prints the table. Root, strongSwan (charon, swanctl) are required.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::time::Duration;

use lab::bench_handover::{self, Round, Who};

const STAY: Duration = Duration::from_millis(1500);
/// strongSwan's client on int-a cannot reach the gateway (see the bench's notes); it
/// is given this long before the round moves on.
const RECOVER: Duration = Duration::from_secs(4);

fn exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mipsec-lab"))
}

fn ready() -> bool {
    if !lab::lab_available("handover_against_strongswans_client") {
        return false;
    }
    for p in ["/usr/lib/ipsec/charon", "/usr/sbin/swanctl"] {
        assert!(
            Path::new(p).exists(),
            "handover test needs {p} (scripts/install-deps.sh)"
        );
    }
    true
}

fn leg<'a>(r: &'a Round, label: &str) -> &'a bench_handover::MoveFig {
    r.moves
        .iter()
        .find(|m| m.label == label)
        .unwrap_or_else(|| panic!("{}: no move {label}: {r:?}", r.who.name()))
}

/// The moves onto an outside network.
const OUTSIDE: [&str; 3] = ["ext-a -> ext-nat", "ext-nat -> ext-a", "int-a -> ext-a"];

/// The moves onto an outside network after which probes did not flow again.
fn unrecovered(r: &Round) -> Vec<&'static str> {
    OUTSIDE
        .into_iter()
        .filter(|l| r.moves.iter().any(|m| m.label == *l && !m.recovered))
        .collect()
}

#[test]
fn handover_against_strongswans_client() {
    if !ready() {
        return;
    }
    let mut rounds = Vec::new();
    for who in [Who::StrongSwan, Who::Mc, Who::Cvc] {
        let mut r = bench_handover::round(&exe(), who, STAY, RECOVER, None).unwrap();
        eprintln!("{}", bench_handover::render(std::slice::from_ref(&r)));
        // strongSwan's client is the baseline, not the product: in about one round
        // in ten (CI saw it once) it takes more than RECOVER to carry probes again
        // after ext-nat -> ext-a, after its MOBIKE update went through. That is
        // its figure for the bench (marked "!"), and the round is run again here:
        // a lab that cannot carry a standard MOBIKE client fails every time.
        for attempt in 2..=3 {
            if who != Who::StrongSwan || unrecovered(&r).is_empty() {
                break;
            }
            eprintln!(
                "strongSwan's client did not recover on {:?}; round {attempt}",
                unrecovered(&r)
            );
            r = bench_handover::round(&exe(), who, STAY, RECOVER, None).unwrap();
            eprintln!("{}", bench_handover::render(std::slice::from_ref(&r)));
        }
        assert!(
            r.tcp_faults.is_empty(),
            "{}: TCP broke: {:?}",
            who.name(),
            r.tcp_faults
        );
        // Every move onto an outside network: probes flow again by the window's end.
        for l in OUTSIDE {
            let m = leg(&r, l);
            assert!(m.recovered, "{}: {l} did not recover: {m:?}", who.name());
        }
        rounds.push(r);
    }
    let [sw, mc, cvc] = [&rounds[0], &rounds[1], &rounds[2]];

    // strongSwan's client: one MOBIKE update moved the same IKE SA behind the NAT.
    let (b, a) = (
        sw.gw_before.as_ref().unwrap(),
        sw.gw_after.as_ref().unwrap(),
    );
    assert_eq!(b.ike.len(), 1, "one IKE SA at the gateway: {b:?}");
    assert_eq!(a.ike, b.ike, "same IKE SPIs after the move: {b:?} -> {a:?}");
    assert_ne!(a.remote, b.remote, "the peer address moved: {b:?} -> {a:?}");
    assert!(
        a.remote.iter().all(|r| r.starts_with("198.18.0.254[")),
        "behind the internet core's masquerade: {a:?}"
    );
    let m = leg(sw, "ext-a -> ext-nat");
    assert!(m.mobike_updates >= 1 && m.ike >= 2, "{m:?}");
    assert!(sw.vip.is_some());

    // mc: MOBIKE as well, the same IKE SA, one UPDATE_SA_ADDRESSES per move (the
    // VPN client's own address watcher once added a second one from the old address,
    // and the node's update then waited about 1 s for its retransmission).
    for l in ["ext-a -> ext-nat", "ext-nat -> ext-a"] {
        let m = leg(mc, l);
        assert_eq!(m.mobike_updates, 1, "mc {l}: {m:?}");
    }
    let m = leg(mc, "ext-a -> ext-nat");
    assert_eq!(m.settled, "mc");
    let (b, a) = (
        mc.gw_before.as_ref().unwrap(),
        mc.gw_after.as_ref().unwrap(),
    );
    assert_eq!(a.ike, b.ike, "mc keeps the IKE SA: {b:?} -> {a:?}");
    // Inside: mc drops to mode c.
    assert_eq!(leg(mc, "ext-a -> int-a").settled, "c");

    // cvc: the move outside is an x-HA registration, no IKE datagram at all.
    for l in ["ext-a -> ext-nat", "ext-nat -> ext-a"] {
        let m = leg(cvc, l);
        assert_eq!(m.ike, 0, "cvc {l}: {m:?}");
        assert!(m.mip_requests >= 1, "cvc {l}: {m:?}");
        assert_eq!(m.settled, "cvc");
    }

    let table = bench_handover::render(&rounds);
    eprintln!("{table}");
    for l in [
        "ext-a -> ext-nat",
        "ext-nat -> ext-a",
        "ext-a -> int-a",
        "int-a -> ext-a",
    ] {
        assert!(table.contains(l), "{table}");
    }
}
