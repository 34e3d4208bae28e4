//! `mipsec status --socket <vpn.sock> [--json]` against a running `mipsec vpn` (root: a
//! network namespace with a veth pair; the gateway never answers, so the client
//! stays "connecting"). It used to fail with "Connection reset by peer" / "Broken pipe".
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::Ns;

#[test]
fn mipsec_status_talks_to_the_vpn_client() {
    if !common::root("mipsec_status_talks_to_the_vpn_client") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ns_guard = Ns::with_veth("vst", "up");
    let ns = ns_guard.0.clone();
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
