//! The outer TOS of every tunnel the base lab's daemons build (root): RFC 2003 section
//! 3.1 copies the TOS from the inner header into the outer one, and with exits that do
//! not copy a congestion mark back inwards the ECN field must be Not-ECT outside (RFC
//! 6040's compatibility mode). Checked on the HA's link, which every tunnel of the lab
//! crosses both ways, with pings marked DSCP EF and ECT(1) from the home address (the
//! CN's answers keep the request's TOS): mode c (IP-in-IP between the node and the HA),
//! mode f (the FA's reverse tunnel and the HA's tunnel to it) and RFC 3519 behind the
//! NAT (Tunnel Data), first with the kernel's encapsulation (the default), then with
//! the daemons' own (`kernel_encap = false`: raw sockets and UDP sends).

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::Duration;

use lab::scenario::{start_capture, MipLab};
use lab::testing::{exe, fields, in_foreign_mode, lab_lock};
use lab::topo::{Segment, CN_ADDR, MN_HOME};

/// DSCP EF (46) with ECN ECT(1).
const MARKED: &str = "0xb9";

/// Pings from the home address to the CN marked [`MARKED`], 50 ms apart.
fn marked_pings(ml: &MipLab, count: u32) -> String {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &ml.lab.ns("mn"), "ping", "-n", "-q"])
        .args([
            "-Q",
            MARKED,
            "-i",
            "0.05",
            "-W",
            "1",
            "-c",
            &count.to_string(),
        ])
        .args(["-I", &MN_HOME.to_string(), &CN_ADDR.to_string()])
        .output()
        .expect("ping");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn registered(ml: &mut MipLab, seg: Segment) {
    let ok = match seg {
        Segment::IntB => ml.wait_mn(Duration::from_secs(10), in_foreign_mode),
        Segment::Home => ml.wait_mn(Duration::from_secs(10), MipLab::at_home),
        s => ml.wait_mn(Duration::from_secs(10), |v| {
            MipLab::registered_at(v, s.mn_addr())
        }),
    };
    ok.unwrap_or_else(|e| panic!("not registered at {}: {e}", seg.name()));
}

/// Moves the node to each tunnel's segment, captures the HA's link during marked
/// pings, and checks every tunnelled echo both ways: outer DSCP 46 and ECN 0, inner
/// DSCP 46 and ECN 1.
fn check_tunnels(ml: &mut MipLab, how: &str) {
    for (seg, tunnel) in [
        (Segment::IntA, "mode c, IP-in-IP"),
        (Segment::IntB, "mode f, IP-in-IP through the FA"),
        (Segment::Nat, "RFC 3519 Tunnel Data"),
    ] {
        ml.lab.move_mn(seg).unwrap();
        registered(ml, seg);
        std::thread::sleep(Duration::from_millis(300));
        let cap = ml.lab.dir.join(format!("tos-{how}-{}.pcap", seg.name()));
        start_capture(&mut ml.lab, "ha", "eth0", &cap, "").unwrap();
        let out = marked_pings(ml, 20);
        std::thread::sleep(Duration::from_millis(200));
        ml.lab.stop("capture-ha", libc::SIGINT);
        let what = format!("{tunnel} ({how})");
        assert!(out.contains(" 0% packet loss"), "{what}: {out}");
        // Echo requests and replies of the home address inside a tunnel: two IPv4
        // layers, outer first.
        let rows = fields(
            &cap,
            &[],
            &format!("icmp && ip.addr == {MN_HOME} && (ip.proto == 4 || udp.port == 434)"),
            &["icmp.type", "ip.dsfield.dscp", "ip.dsfield.ecn"],
        );
        let (mut requests, mut replies) = (0, 0);
        for r in &rows {
            let f: Vec<&str> = r.split('\t').collect();
            assert_eq!(f.len(), 3, "{what}: {r}");
            match f[0] {
                "8" => requests += 1,
                "0" => replies += 1,
                t => panic!("{what}: ICMP type {t}"),
            }
            assert_eq!(f[1], "46,46", "{what}: DSCP outer,inner in {r}");
            assert_eq!(f[2], "0,1", "{what}: ECN outer,inner in {r}");
        }
        // All 20 were answered (above); the capture may miss the first as it starts.
        assert!(
            requests >= 15 && replies >= 15,
            "{what}: {requests} requests and {replies} replies tunnelled on the HA's link"
        );
        eprintln!("{what}: {requests} requests, {replies} replies, outer DSCP 46 ECN 0");
    }
    ml.lab.move_mn(Segment::Home).unwrap();
    registered(ml, Segment::Home);
}

#[test]
fn every_tunnel_carries_the_inner_dscp_and_no_ecn_outside() {
    let Some(_g) = lab_lock("every_tunnel_carries_the_inner_dscp_and_no_ecn_outside") else {
        return;
    };
    let mut ml = MipLab::start(&exe(), true, 300).unwrap();
    check_tunnels(&mut ml, "kernel");
    for role in ["ha", "fa", "mn"] {
        ml.restart_agent_with(role, "kernel_encap", "false")
            .unwrap();
    }
    check_tunnels(&mut ml, "processes");
}
