//! The mipsec network-namespace lab: RFC 5265's home/internal/servers segments on one
//! machine, mobile-node moves with a carrier flip and "DHCP", traffic that measures the
//! interruption of each move, the demo and bench scenarios, and the end-to-end tests'
//! shared helpers. See README.md.

pub mod bench;
pub mod bench_ent;
pub mod bench_handover;
pub mod demo_ent;
pub mod dhcp;
pub mod enterprise;
pub mod gateway;
pub mod inject;
pub mod leak;
pub mod leak_xcheck;
pub mod mip;
pub mod netns;
pub mod roam;
pub mod roam_bench;
pub mod scenario;
pub mod soak;
pub mod testing;
pub mod topo;
pub mod traffic;
pub mod transit;
pub mod twoif;

pub use netns::{Error, Result};

/// Fails (or, with `MIPSEC_SKIP_LAB=1`, returns false after a loud SKIP line) when the
/// lab cannot run here: not root, or `ip`/`tcpdump`/`tshark` missing.
pub fn lab_available(test: &str) -> bool {
    let skip = std::env::var("MIPSEC_SKIP_LAB").is_ok_and(|v| v == "1");
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let mut missing: Vec<&str> = [("ip", "-V"), ("tcpdump", "--version"), ("tshark", "-v")]
        .into_iter()
        .filter(|(p, v)| {
            std::process::Command::new(p)
                .arg(v)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .is_err()
        })
        .map(|(p, _)| p)
        .collect();
    if !root {
        missing.insert(0, "root (network namespaces)");
    }
    if missing.is_empty() {
        return true;
    }
    let why = format!("lab test `{test}` needs {}", missing.join(", "));
    if skip {
        eprintln!("\n!!!!!!!! SKIP [lab] {why} (MIPSEC_SKIP_LAB=1) !!!!!!!!\n");
        return false;
    }
    panic!("{why}; run as root (e.g. `sudo -E cargo test -p lab`) or set MIPSEC_SKIP_LAB=1 to skip loudly");
}
