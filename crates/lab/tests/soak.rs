//! The soak of issue 17 in CI (root, strongSwan): a short seeded walk that must leak
//! nothing and recover from every move and restart, and its negative control (an i-HA
//! that trusts every network) that must leak. Plus two regressions the soak found in the
//! mobile node, ignored until fixed (they fail today; see the crate README).

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::Duration;

use lab::gateway::GwAuth;
use lab::roam::Outside;
use lab::scenario::MipLab;
use lab::soak::{self, SoakOpts, Step};
use lab::testing::{exe, lab_lock_needing, STRONGSWAN};
use lab::topo::{Segment, MN_HOME};

/// The plan is a function of the seed alone: the same seed gives the same steps, another
/// seed other steps; every kind of step appears in a long plan.
#[test]
fn plan_replays_from_its_seed() {
    let segs = soak::segments(false, false);
    let a = soak::plan(7, 300, &segs, false);
    assert_eq!(a, soak::plan(7, 300, &segs, false));
    assert_ne!(a, soak::plan(8, 300, &segs, false));
    let moves = a.iter().filter(|s| matches!(s, Step::Move { .. })).count();
    assert_eq!(moves, 300);
    assert!(a.iter().any(|s| matches!(s, Step::NatFlush { .. })));
    for who in [
        soak::Daemon::Iha,
        soak::Daemon::Xha,
        soak::Daemon::Fa,
        soak::Daemon::Gateway,
        soak::Daemon::Mn,
    ] {
        assert!(
            a.iter()
                .any(|s| matches!(s, Step::Restart { who: w, .. } if *w == who)),
            "no restart of {who:?} in 300 moves"
        );
    }
    // Never the same segment twice in a row; the negative control starts on ext-a.
    let mut cur = Segment::Home;
    for s in &a {
        if let Step::Move { to, .. } = s {
            assert_ne!(*to, cur);
            cur = *to;
        }
    }
    assert!(matches!(
        soak::plan(7, 5, &segs, true)[0],
        Step::Move {
            to: Segment::ExtA,
            ..
        }
    ));
}

/// CI's soak: seed 308, 80 moves over home, int-a, int-b, int-c, ext-a, ext-b (fvc
/// through the x-FA) and the hotel NAT (with NAT mapping changes) in mode cvc, stays
/// shortened to 40 %, with restarts of
/// every daemon (the x-HA killed and the i-HA restarted while the node is outside
/// among them), 30 % loss bursts, silent moves, and attacks on ext-a (an intranet
/// look-alike DHCP server with a real client; replayed and forged packets): no leak on
/// any outside segment, user data back after every step, no daemon dead.
#[test]
fn short_soak_leaks_nothing_and_recovers() {
    let Some(_g) = lab_lock_needing("short_soak_leaks_nothing_and_recovers", STRONGSWAN) else {
        return;
    };
    let o = SoakOpts {
        moves: 80,
        seed: 308,
        stay_factor: 0.4,
        // The bugs these once hit are fixed (see the regressions below).
        int_b: true,
        ext_b: true,
        nat_changes: true,
        ha_restart_outside: true,
        extras: soak::Extras {
            loss: true,
            silent: true,
            attacks: true,
            // Not withstood yet (see `soak_extra.rs`).
            tunnelvision: false,
        },
        ..SoakOpts::default()
    };
    let sum = soak::run(&exe(), &o).unwrap();
    let text = sum.render(&o);
    eprintln!("{text}");
    assert_eq!(sum.moves, 80, "{text}");
    assert!(sum.unrecovered.is_empty() && sum.died.is_empty(), "{text}");
    assert_eq!(sum.leaks, 0, "{text}");
    assert!(
        sum.moves_by_kind.keys().any(|k| k.contains("->outside"))
            && sum.moves_by_kind.keys().any(|k| k.contains("->hotel"))
            && sum.moves_by_kind.keys().any(|k| k.contains("->x-fa"))
            && sum.moves_by_kind.keys().any(|k| k.starts_with("silent ")),
        "{text}"
    );
    // Seed 308 restarts every daemon (the x-HA with kill -9 and the i-HA while the node
    // is outside), and draws every extra kind but TunnelVision.
    for k in [
        "restart MN (kill -9)",
        "restart gateway (kill -9)",
        "restart i-HA (",
        "restart x-HA (kill -9)",
        "restart FA (",
        "loss burst 30 %",
        "attack injected",
        "attack intranet look-alike",
    ] {
        assert!(
            sum.faults_by_kind.keys().any(|f| f.starts_with(k)),
            "no {k} in: {text}"
        );
    }
    assert!(sum.up_bytes > 0 && sum.down_bytes > 0, "{text}");
    assert!(text.contains("\nleaks: 0\n") && text.contains("verdict: PASS"));
}

/// The negative control: the same soak with an i-HA that trusts 0.0.0.0/0 (and a border
/// that lets it be reached) makes ext-a look inside, the node sends user data in the
/// clear there, and the classifier counts it: leaks > 0, verdict FAIL.
#[test]
fn negative_control_soak_sees_leaks() {
    let Some(_g) = lab_lock_needing("negative_control_soak_sees_leaks", STRONGSWAN) else {
        return;
    };
    let o = SoakOpts {
        moves: 5,
        seed: 5,
        negative_control: true,
        give_up: Duration::from_secs(30),
        ..SoakOpts::default()
    };
    let sum = soak::run(&exe(), &o).unwrap();
    let text = sum.render(&o);
    eprintln!("{text}");
    assert!(sum.leaks > 0, "the negative control must leak: {text}");
    assert!(!sum.passed(), "{text}");
}

/// Found by the soak: after a stay on int-a, the node moved to int-b (the FA) never gets
/// user data through: the FA relays the i-HA's reply to the home address and the node
/// answers ICMP port unreachable (no socket for it), retransmitting for ever.
#[test]
fn fa_after_a_visited_network() {
    let Some(_g) = lab_lock_needing("fa_after_a_visited_network", STRONGSWAN) else {
        return;
    };
    let mut ml = MipLab::start_enterprise(&exe(), GwAuth::Psk, Outside::Xmip).unwrap();
    ml.lab.move_mn(Segment::IntA).unwrap();
    assert!(ml.echo_ok(Some(MN_HOME), Duration::from_secs(10)));
    std::thread::sleep(Duration::from_secs(2));
    ml.lab.move_mn(Segment::IntB).unwrap();
    assert!(
        ml.echo_ok(Some(MN_HOME), Duration::from_secs(15)),
        "no user data via the FA 15 s after int-a -> int-b:\n{}\n{}",
        ml.mn_status().map(|v| v.to_string()).unwrap_or_default(),
        ml.lab.log_tail("mn", 20)
    );
}

/// Found by the soak: once the node is through behind the hotel NAT (x-MIP over UDP,
/// VPN, i-MIP), the NAT changes its mapping (new port range, conntrack flushed): the
/// x-HA keeps tunnelling to the old mapping, the node does not re-register
/// (`nat_reregistrations` stays 0), its IKE SA dies and it stays `outside` with the gate
/// closed.
#[test]
fn nat_mapping_change_behind_the_hotel_nat() {
    let Some(_g) = lab_lock_needing("nat_mapping_change_behind_the_hotel_nat", STRONGSWAN) else {
        return;
    };
    let mut ml = MipLab::start_enterprise(&exe(), GwAuth::Psk, Outside::Xmip).unwrap();
    ml.lab.move_mn(Segment::ExtNat).unwrap();
    assert!(ml.echo_ok(Some(MN_HOME), Duration::from_secs(20)));
    std::thread::sleep(Duration::from_secs(1));
    soak::flush_hotel_nat(&ml, 1).unwrap();
    assert!(
        ml.echo_ok(Some(MN_HOME), Duration::from_secs(30)),
        "no user data 30 s after the hotel NAT changed its mapping:\n{}\n{}",
        ml.mn_status().map(|v| v.to_string()).unwrap_or_default(),
        ml.lab.log_tail("mn", 20)
    );
}

/// Found by the soak: the node is through outside (x-MIP, VPN, i-MIP of the TIA); a home
/// agent restarts (SIGTERM or kill -9) and comes back without the binding: the i-HA
/// drops the TIA's reverse tunnel ("reverse tunnel from an unregistered source") and the
/// node stays `open-vpn` and registered; the x-HA's loss kills the IKE SA and the node
/// restarts IKE through x-MIP for ever without registering again. No user data in 30 s.
fn ha_restart_while_outside(test: &str, proc_name: &str, seg: Segment) {
    let Some(_g) = lab_lock_needing(test, STRONGSWAN) else {
        return;
    };
    let mut ml = MipLab::start_enterprise(&exe(), GwAuth::Psk, Outside::Xmip).unwrap();
    ml.lab.move_mn(seg).unwrap();
    assert!(ml.echo_ok(Some(MN_HOME), Duration::from_secs(20)));
    ml.lab.stop(proc_name, libc::SIGTERM);
    std::thread::sleep(Duration::from_secs(1));
    if proc_name == "ha" {
        ml.start_ha().unwrap();
    } else {
        let (c, s) = lab::enterprise::write_xha_config(&ml.lab).unwrap();
        lab::enterprise::start_daemon(&mut ml.lab, "xha", "xha", "ha", &c, &s).unwrap();
    }
    assert!(
        ml.echo_ok(Some(MN_HOME), Duration::from_secs(30)),
        "no user data 30 s after a restart of {proc_name}:\n{}\n{}",
        ml.mn_status().map(|v| v.to_string()).unwrap_or_default(),
        ml.lab.log_tail(proc_name, 20)
    );
}

#[test]
fn i_ha_restart_while_outside() {
    ha_restart_while_outside("i_ha_restart_while_outside", "ha", Segment::ExtNat);
}

#[test]
fn x_ha_restart_while_outside() {
    ha_restart_while_outside("x_ha_restart_while_outside", "xha", Segment::ExtA);
}

/// Found by the soak in mode mc (`--outside mobike`, seed 3: 10 LEAK frames): right
/// after a move from an inside segment to ext-a or the hotel NAT, the node ARPs for the
/// previous segment's router with the previous address as sender ("Who has 10.60.0.254?
/// Tell 10.60.0.50", also 10.10.0.100 and 10.20.0.50) on the outside link. The same
/// moves in cvc show none.
#[test]
fn mc_moves_out_without_arp_for_the_old_router() {
    let Some(_g) = lab_lock_needing("mc_moves_out_without_arp_for_the_old_router", STRONGSWAN)
    else {
        return;
    };
    let mut ml = MipLab::start_enterprise(&exe(), GwAuth::Psk, Outside::Mobike).unwrap();
    let pcaps = ml.lab.dir.join("pcap");
    lab::enterprise::start_captures(&mut ml.lab, &pcaps).unwrap();
    let mut client = lab::traffic::Client::start(
        &ml.lab.ns("mn"),
        &lab::traffic::ClientOpts {
            bind: Some(MN_HOME),
            cn: lab::topo::CN_ADDR,
            rate: 100_000,
            up: true,
            down: true,
            probe_interval: Some(Duration::from_millis(20)),
        },
    )
    .unwrap();
    for _ in 0..4 {
        for seg in [Segment::IntC, Segment::ExtA, Segment::IntA, Segment::ExtNat] {
            ml.lab.move_mn(seg).unwrap();
            assert!(ml.echo_ok(Some(MN_HOME), Duration::from_secs(30)));
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    client.stop();
    lab::enterprise::stop_captures(&mut ml.lab);
    let mut plan = lab::leak::Plan::lab();
    plan.detection_to.push(lab::topo::HA_ADDR);
    let r = lab::leak::classify_dir(&plan, &pcaps, &["ext-a", "ext-nat"]).unwrap();
    assert_eq!(lab::leak::leaks(&r), 0, "{}", lab::leak::render(&r));
}

/// TunnelVision against the mobile node in the soak (seed 4, 16 moves; the attack comes
/// on ext-a at step 21): a rogue DHCP server's option 121 puts 10.0.0.0/8, 0.0.0.0/1 and
/// 128.0.0.0/1 via the attacker into the main table through a real client. When the
/// node's 0/1 and 128/1 routes into its TUN were in main, they lost to 10.0.0.0/8 for
/// the intranet, and user data left in the clear through the attacker (5,334 LEAK
/// frames on core when found). The user-data routes now live in the node's
/// `user_table`, behind a policy rule ahead of main (its control sockets are bound to
/// their devices and fall through to main): leaks 0, data back 177 ms after the attack.
#[test]
fn tunnelvision_against_the_mobile_node() {
    let Some(_g) = lab_lock_needing("tunnelvision_against_the_mobile_node", STRONGSWAN) else {
        return;
    };
    let o = SoakOpts {
        moves: 16,
        seed: 4,
        int_b: true,
        nat_changes: true,
        ha_restart_outside: true,
        extras: soak::Extras {
            loss: true,
            silent: true,
            attacks: true,
            tunnelvision: true,
        },
        ..SoakOpts::default()
    };
    let sum = soak::run(&exe(), &o).unwrap();
    let text = sum.render(&o);
    eprintln!("{text}");
    assert!(
        sum.faults_by_kind
            .keys()
            .any(|k| k.starts_with("attack tunnelvision")),
        "{text}"
    );
    assert!(sum.unrecovered.is_empty(), "{text}");
    assert_eq!(sum.leaks, 0, "{text}");
}
