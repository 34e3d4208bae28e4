//! `mipsec vpn --config F --events` (the way `mipsec mn` runs the VPN client): commands on
//! stdin are answered on stdout, `stop` ends it with a last `down` and exit status 0. The
//! gateway never answers (root: a network namespace with a veth pair); the lab tests
//! against strongSwan are in `crates/vpnc/tests/supervise.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::Ns;

#[test]
fn mipsec_vpn_events_answers_commands_and_stops() {
    if !common::root("mipsec_vpn_events_answers_commands_and_stops") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ns_guard = Ns::with_veth("vev", "ev");
    let ns = ns_guard.0.clone();
    let cfg = dir.path().join("vpn.toml");
    std::fs::write(
        &cfg,
        "gateway = \"192.0.2.2\"\ninterface = \"ev0\"\nlocal_id = \"client.example\"\n\
         psk = \"x\"\ntun = \"vev0\"\nkill_switch = \"off\"\nbind_interface = true\n",
    )
    .unwrap();
    let mut vpn = Command::new("ip")
        .args(["netns", "exec", &ns, env!("CARGO_BIN_EXE_mipsec"), "vpn"])
        .arg("--config")
        .arg(&cfg)
        .arg("--events")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = vpn.stdin.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let out = vpn.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let next = || {
        let l = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("an event line");
        serde_json::from_str::<serde_json::Value>(&l).unwrap_or_else(|e| panic!("{e}: {l}"))
    };
    writeln!(stdin, "mobike 198.51.100.77").unwrap();
    let m = next();
    assert_eq!(m["event"], "mobike", "{m}");
    assert_eq!(m["ok"], false, "{m}");
    writeln!(stdin, "hello").unwrap();
    let e = next();
    assert_eq!(e["event"], "error", "{e}");
    writeln!(stdin, "stop").unwrap();
    let d = next();
    assert_eq!(d["event"], "down", "{d}");
    assert_eq!(d["reason"], "stop", "{d}");
    let end = Instant::now() + Duration::from_secs(3);
    loop {
        if let Some(st) = vpn.try_wait().unwrap() {
            assert!(st.success(), "{st:?}");
            break;
        }
        if Instant::now() > end {
            let _ = vpn.kill();
            panic!("mipsec vpn did not exit after stop");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
