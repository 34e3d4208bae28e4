//! MN-6, the late i-HA reply, in the enterprise lab (issue 13 item 2): "An i-HA reply
//! arriving after the MN went outside: switch to the i-HA directly".
//!
//! In the lab the x-HA drops requests from the intranet (HA-5), so a node inside never
//! hears it. Here the x-HA is restarted without `drop_requests_on_interface` and with a
//! route back into the intranet on its intranet leg, so a node on int-a whose i-HA is
//! silent (SIGSTOP) is answered by the x-HA and goes outside (cvc: IKE through the
//! x-HA). Then the i-HA comes back (SIGCONT) and answers the requests waiting in its
//! socket, among them the node's retransmitted direct request: the node must switch
//! to the i-HA directly (open-inside, mode c, VPN client stopped), the i-HA's binding
//! must name the node's int-a address (not the TIA it was told through the tunnel),
//! and TCP both ways must survive and flow again.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lab::enterprise;
use lab::gateway::GwAuth;
use lab::mip;
use lab::netns::ip;
use lab::roam::Outside;
use lab::scenario::MipLab;
use lab::topo::Segment;
use lab::transit::{self, gate, mode, Start, Timeline};

fn exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mipsec-lab"))
}

fn ready(test: &str) -> bool {
    if !lab::lab_available(test) {
        return false;
    }
    for p in ["/usr/lib/ipsec/charon", "/usr/sbin/swanctl"] {
        assert!(
            Path::new(p).exists(),
            "{test} needs {p} (scripts/install-deps.sh)"
        );
    }
    true
}

/// Restarts the x-HA so that it answers requests from the intranet: its config without
/// `drop_requests_on_interface`, and a route into the intranet via its intranet leg.
fn xha_answers_the_intranet(ml: &mut MipLab) {
    let (cfg, sock) = enterprise::write_xha_config(&ml.lab).unwrap();
    let text = std::fs::read_to_string(&cfg).unwrap();
    let open: String = text
        .lines()
        .filter(|l| !l.starts_with("drop_requests_on_interface"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(open, text, "the x-HA config had no HA-5 line to remove");
    mip::write_private(Path::new(&cfg), &open).unwrap();
    ml.lab.stop("xha", libc::SIGTERM);
    ip(&[
        "-n",
        &ml.lab.ns("xha"),
        "route",
        "add",
        "10.0.0.0/8",
        "via",
        "10.50.0.254",
        "dev",
        "eth1",
    ])
    .unwrap();
    enterprise::start_daemon(&mut ml.lab, "xha", "xha", "ha", &cfg, &sock).unwrap();
}

/// The care-of address of the i-HA's binding for the node's home address.
fn iha_care_of(ml: &MipLab) -> Option<String> {
    let st = ml.ha_status().unwrap();
    st["bindings"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|b| b["home_address"] == lab::topo::MN_HOME.to_string())
        .and_then(|b| b["care_of"].as_str().map(str::to_string))
}

#[test]
fn late_i_ha_reply_switches_to_the_i_ha_directly() {
    let test = "late_i_ha_reply_switches_to_the_i_ha_directly";
    if !ready(test) {
        return;
    }
    let mut ml = transit::start_lab(&exe(), GwAuth::Psk, Outside::Xmip, Start::Home, "").unwrap();
    xha_answers_the_intranet(&mut ml);
    ml.start_mn().unwrap();
    transit::wait_gate(&ml, "open-home", Duration::from_secs(20)).unwrap();
    let mut tl = Timeline::start(&ml, "start home").unwrap();
    std::thread::sleep(Duration::from_secs(1));

    // The i-HA falls silent, the node moves inside.
    assert!(ml.lab.signal("ha", libc::SIGSTOP));
    tl.mark("home -> int-a (i-HA stopped)");
    let t0 = Instant::now();
    ml.lab.move_mn(Segment::IntA).unwrap();
    // Only the x-HA answers: the node goes outside through it (IKE from the x-home
    // address); the TIA's registration with the i-HA cannot be answered yet.
    let (st, took) = ml
        .wait_mn(Duration::from_secs(10), |v| {
            v["interfaces"][0]["state"] == "outside" && v["tia"].is_string()
        })
        .unwrap_or_else(|e| {
            panic!(
                "{e}\n{}\nx-HA: {}",
                ml.lab.log_tail("mn", 40),
                ml.lab.log_tail("xha", 20)
            )
        });
    eprintln!("{test}: outside through the x-HA {took:?} after the move: {st}");
    assert!(transit::xha_bound(&ml).unwrap(), "the x-HA holds a binding");
    assert_eq!(st["vpn_running"], true, "{st}");
    assert_ne!(gate(&st), "open-inside", "{st}");
    // Give the node's VPN time to send the TIA's registration into the i-HA's
    // socket too, but stay within the detection period (2 s after going outside),
    // in which the node still retransmits its direct request.
    std::thread::sleep(Duration::from_millis(600));
    let before = ml.mn_status().unwrap();
    assert_eq!(
        before["interfaces"][0]["state"], "outside",
        "still outside while the i-HA is stopped: {before}"
    );

    // The i-HA answers again: its reply to the direct request is late.
    assert!(ml.lab.signal("ha", libc::SIGCONT));
    let t1 = Instant::now();
    let (st, took) = ml
        .wait_mn(Duration::from_secs(10), |v| {
            gate(v) == "open-inside" && v["vpn_running"] == false
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", ml.lab.log_tail("mn", 60)));
    tl.opened(t0.elapsed(), mode(&st));
    eprintln!(
        "{test}: open-inside, VPN stopped {took:?} after SIGCONT ({:?} after the move): {st}",
        t0.elapsed()
    );
    assert_eq!(mode(&st), "c", "{st}");
    assert_eq!(
        st["interfaces"][0]["last_change"],
        "late i-HA reply with TNC: switched to the i-HA directly",
        "{st}"
    );
    assert_eq!(st["care_of"], Segment::IntA.mn_addr().to_string(), "{st}");

    // The i-HA tunnels to the node's int-a address, not to the TIA, at once (the
    // node's silent-tunnel probe would repair a wrong binding only seconds later).
    let deadline = Instant::now() + Duration::from_millis(500);
    let coa = loop {
        let c = iha_care_of(&ml);
        if c.as_deref() == Some(&Segment::IntA.mn_addr().to_string()) || Instant::now() > deadline {
            break c;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        coa.as_deref(),
        Some(Segment::IntA.mn_addr().to_string().as_str()),
        "the i-HA's binding after the switch ({:?} after SIGCONT): {}\n{}",
        t1.elapsed(),
        ml.ha_status().unwrap(),
        ml.lab.log_tail("mn", 40)
    );

    // TCP both ways survives and flows again, and keeps flowing.
    tl.mark("inside, after the switch");
    std::thread::sleep(Duration::from_secs(3));
    let (rec, legs) = tl.finish();
    eprintln!("{test}:\n{}", transit::render_legs(&legs));
    assert!(
        rec.faults.is_empty(),
        "TCP broke: {:?}\n{}",
        rec.faults,
        ml.lab.log_tail("mn", 40)
    );
    let last = legs.last().unwrap();
    assert!(
        last.up_bytes > 0 && last.down_bytes > 0,
        "TCP does not flow after the switch: {last:?}"
    );
    // (TCP's retransmission backoff after the outage adds up to a second or so.)
    assert!(
        last.stall_ms < 3000.0 && last.interruption_ms < 1000.0,
        "user data stalls after the switch: {last:?}\n{}",
        ml.lab.log_tail("mn", 40)
    );
    let st = ml.mn_status().unwrap();
    assert_eq!(gate(&st), "open-inside", "{st}");
}
