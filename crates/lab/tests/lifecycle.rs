//! Daemons and the lab itself across restarts and signals (root): the HA killed and
//! restarted while the node is away, and `mipsec-lab up` stopped by SIGTERM, SIGKILL
//! (then `mipsec-lab cleanup`) and SIGINT. Each test builds its own lab with a fresh
//! prefix; `lab::testing::lab_lock` runs them one at a time.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::process::Command;
use std::time::{Duration, Instant};

use lab::mip;
use lab::scenario::MipLab;
use lab::testing::{binding_coa, exe, lab_lock};
use lab::topo::{Segment, CN_ADDR, MN_HOME};
use lab::traffic::{Client, ClientOpts};

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
