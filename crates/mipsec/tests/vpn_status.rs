//! `mipsec status --socket <vpn.sock> [--json]` against a running `mipsec vpn` (root: a
//! network namespace with a veth pair; the gateway never answers, so the client
//! stays "connecting"). It used to fail with "Connection reset by peer" / "Broken pipe".
#![allow(clippy::unwrap_used, clippy::expect_used)]

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
fn mipsec_status_talks_to_the_vpn_client() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        if std::env::var("MIPSEC_SKIP_LAB").as_deref() == Ok("1") {
            eprintln!("\n*** SKIP mipsec_status_talks_to_the_vpn_client: needs root ***");
            return;
        }
        panic!("needs root (network namespaces); MIPSEC_SKIP_LAB=1 skips");
    }
    let ns = format!("vst{}", std::process::id() % 100000);
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
        "ip", "-n", &ns, "link", "add", "up0", "type", "veth", "peer", "name", "up1",
    ]);
    sh(&["ip", "-n", &ns, "link", "set", "up1", "up"]);
    sh(&["ip", "-n", &ns, "addr", "add", "192.0.2.1/24", "dev", "up0"]);
    sh(&["ip", "-n", &ns, "link", "set", "up0", "up"]);
    let sock = dir.path().join("vpn.sock");
    let cfg = dir.path().join("vpn.toml");
    std::fs::write(
        &cfg,
        format!(
            "gateway = \"192.0.2.2\"\ninterface = \"up0\"\nlocal_id = \"client.example\"\n\
             psk = \"x\"\ntun = \"vst0\"\ncontrol = \"{}\"\n",
            sock.display()
        ),
    )
    .unwrap();
    let mut vpn = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns,
            env!("CARGO_BIN_EXE_mipsec"),
            "vpn",
            "--config",
        ])
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let status = |json: bool| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_mipsec"));
        c.args(["status", "--socket"]).arg(&sock);
        if json {
            c.arg("--json");
        }
        c.output().unwrap()
    };
    let end = Instant::now() + Duration::from_secs(10);
    while !sock.exists() {
        assert!(Instant::now() < end, "no control socket");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Many times in a row: the old failure was a race on every request.
    for _ in 0..20 {
        let o = status(true);
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["role"], "vpn", "{v}");
        assert_eq!(v["interface"], "up0", "{v}");
        assert_eq!(v["local_ip"], "192.0.2.1", "{v}");
        assert_ne!(v["state"], "established", "{v}");
    }
    let o = status(false);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(text.starts_with("vpn client "), "{text}");
    assert!(
        text.contains("on up0") && text.contains("kill switch"),
        "{text}"
    );
    if let Ok(pid) = i32::try_from(vpn.id()) {
        // SAFETY: signalling a child we spawned and have not reaped.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    let _ = vpn.wait();
    assert!(!sock.exists(), "socket removed on a clean stop");
}
