//! What the root tests of `mipsec vpn` share: a network namespace with one veth pair
//! whose far end never answers (the gateway address is on the link but nobody holds
//! it), removed when dropped.
#![allow(clippy::unwrap_used, dead_code)]

use std::process::Command;

/// Runs a command; fails the test with its stderr if it fails.
pub fn sh(args: &[&str]) {
    let o = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// False (after a loud SKIP line) with `MIPSEC_SKIP_LAB=1` when not root; a
/// failure when not root without it.
pub fn root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var("MIPSEC_SKIP_LAB").as_deref() == Ok("1") {
        eprintln!("\n*** SKIP {test}: needs root ***");
        return false;
    }
    panic!("needs root (network namespaces); MIPSEC_SKIP_LAB=1 skips");
}

/// A namespace `<prefix><pid>` with veth `<dev>0` (192.0.2.1/24, up) and its
/// peer `<dev>1` (up), deleted on drop.
pub struct Ns(pub String);

impl Ns {
    pub fn with_veth(prefix: &str, dev: &str) -> Ns {
        let ns = Ns(format!("{prefix}{}", std::process::id() % 100000));
        let (a, b) = (format!("{dev}0"), format!("{dev}1"));
        sh(&["ip", "netns", "add", &ns.0]);
        sh(&[
            "ip", "-n", &ns.0, "link", "add", &a, "type", "veth", "peer", "name", &b,
        ]);
        sh(&["ip", "-n", &ns.0, "link", "set", &b, "up"]);
        sh(&["ip", "-n", &ns.0, "addr", "add", "192.0.2.1/24", "dev", &a]);
        sh(&["ip", "-n", &ns.0, "link", "set", &a, "up"]);
        ns
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}
