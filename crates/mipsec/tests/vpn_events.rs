//! `mipsec vpn --config F --events` (the way `mipsec mn` runs the VPN client): commands on
//! stdin are answered on stdout, `stop` ends it with a last `down` and exit status 0. The
//! gateway never answers (root: a network namespace with a veth pair); the lab tests
//! against strongSwan are in `crates/vpnc/tests/supervise.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn sh(args: &[&str]) {
    let o = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn mipsec_vpn_events_answers_commands_and_stops() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        if std::env::var("MIPSEC_SKIP_LAB").as_deref() == Ok("1") {
            eprintln!("\n*** SKIP mipsec_vpn_events_answers_commands_and_stops: needs root ***");
            return;
        }
        panic!("needs root (network namespaces); MIPSEC_SKIP_LAB=1 skips");
    }
    let ns = format!("vev{}", std::process::id() % 100000);
    let dir = tempfile::tempdir().unwrap();
    sh(&["ip", "netns", "add", &ns]);
    struct Ns(String);
    impl Drop for Ns {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }
    let _ns = Ns(ns.clone());
    sh(&[
        "ip", "-n", &ns, "link", "add", "ev0", "type", "veth", "peer", "name", "ev1",
    ]);
    sh(&["ip", "-n", &ns, "link", "set", "ev1", "up"]);
    sh(&["ip", "-n", &ns, "addr", "add", "192.0.2.1/24", "dev", "ev0"]);
    sh(&["ip", "-n", &ns, "link", "set", "ev0", "up"]);
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
