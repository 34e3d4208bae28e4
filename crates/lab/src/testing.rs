//! What the lab's integration tests (`crates/lab/tests/*.rs`) share: the lock that runs
//! them one at a time, the check that the lab can run here, the `mipsec-lab` binary,
//! tshark over a capture, counters out of a daemon's status JSON, and waiting.
//!
//! Each test file is its own binary, so the lock serialises the tests of one file; the
//! files themselves run concurrently in separate labs (fresh name prefixes). Everything
//! here panics on failure with what failed: it is test code, and a panic is a failed test.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::scenario::MipLab;
use crate::topo::{Segment, MN_HOME};

static LOCK: Mutex<()> = Mutex::new(());

/// strongSwan's daemon and control tool, for tests that run the gateway.
pub const STRONGSWAN: &[&str] = &["/usr/lib/ipsec/charon", "/usr/sbin/swanctl"];
/// strongSwan's `pki`, for tests that issue certificates.
pub const PKI: &str = "/usr/bin/pki";
/// dnsmasq and busybox (udhcpc), for tests with a DHCP server and client.
pub const DHCP: &[&str] = &["/usr/sbin/dnsmasq", "/usr/bin/busybox"];

/// The `mipsec-lab` binary cargo built beside this test binary
/// (`target/<profile>/deps/<test>-<hash>` -> `target/<profile>/mipsec-lab`).
pub fn exe() -> PathBuf {
    let me = std::env::current_exe().expect("the test binary's path");
    let mut dir = me.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let exe = dir.join(format!("mipsec-lab{}", std::env::consts::EXE_SUFFIX));
    assert!(
        exe.exists(),
        "{} not found: run the lab tests through `cargo test -p lab`, which builds it",
        exe.display()
    );
    exe
}

/// Serialises the lab tests of one test binary; None (after a loud SKIP) when the lab
/// cannot run here (see [`crate::lab_available`]).
pub fn lab_lock(test: &str) -> Option<MutexGuard<'static, ()>> {
    lab_lock_needing(test, &[])
}

/// [`lab_lock`] for a test that also needs the files in `needs` (tools outside the
/// lab's basics, e.g. [`STRONGSWAN`]): a missing one fails the test and names it.
pub fn lab_lock_needing(test: &str, needs: &[&str]) -> Option<MutexGuard<'static, ()>> {
    let g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if !crate::lab_available(test) {
        return None;
    }
    for p in needs {
        assert!(
            Path::new(p).exists(),
            "{test} needs {p} (scripts/install-deps.sh)"
        );
    }
    Some(g)
}

/// `tshark -n -r file <args>`; its standard output. A tshark that fails fails the test.
pub fn tshark(file: &Path, args: &[&str]) -> String {
    let out = Command::new("tshark")
        .arg("-n")
        .arg("-r")
        .arg(file)
        .args(args)
        .output()
        .expect("tshark");
    assert!(
        out.status.success(),
        "tshark {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// How many frames of `file` match the display filter.
pub fn count(file: &Path, filter: &str) -> usize {
    tshark(file, &["-Y", filter]).lines().count()
}

/// The display filter for frames tshark flags: malformed, or an expert warning or worse.
pub const FLAGGED: &str = "_ws.malformed || _ws.expert.severity >= \"Warning\"";

/// [`FLAGGED`] without D-SACK (a TCP option that reports duplicates, which moves cause).
pub const FLAGGED_BUT_DSACK: &str =
    "(_ws.malformed || _ws.expert.severity >= \"Warning\") && !tcp.options.sack.dsack";

/// tshark preferences that turn off judgements of a traffic pattern rather than of a
/// packet's format: TCP sequence analysis (retransmissions and segments lost while the
/// node is detached; a tunnel endpoint's link carries each segment twice) and ARP
/// duplicate detection (a node's gratuitous ARP coming home after the HA's proxy ARP).
pub const PATTERN_PREFS: &[&str] = &[
    "-o",
    "tcp.analyze_sequence_numbers:FALSE",
    "-o",
    "arp.detect_duplicate_ips:FALSE",
];

/// The frames of `file` that match `filter`, one line each, with the given fields
/// tab-separated (`-T fields -e ...`), after the preferences in `prefs`.
pub fn fields(file: &Path, prefs: &[&str], filter: &str, fields: &[&str]) -> Vec<String> {
    let mut args: Vec<&str> = prefs.to_vec();
    args.extend(["-Y", filter, "-T", "fields"]);
    for f in fields {
        args.extend(["-e", f]);
    }
    tshark(file, &args).lines().map(str::to_string).collect()
}

/// Copies a capture out of the lab's directory (which goes with the lab) to the
/// temporary directory, under `name` and this process's id, says where, and returns it.
pub fn keep_capture(cap: &Path, name: &str) -> PathBuf {
    let kept = std::env::temp_dir().join(format!("{name}-{}.pcap", std::process::id()));
    std::fs::copy(cap, &kept).unwrap_or_else(|e| panic!("copy {}: {e}", cap.display()));
    eprintln!("capture kept in {}", kept.display());
    kept
}

/// The number at `v[path...][key]` of a status JSON, 0 when absent (a counter that
/// never moved is often left out).
pub fn counter(v: &Value, path: &[&str], key: &str) -> u64 {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    cur.get(key).and_then(Value::as_u64).unwrap_or(0)
}

/// The care-of address of the home agent's binding for `hoa`, from its status JSON.
pub fn binding_coa(ha: &Value, hoa: Ipv4Addr) -> Option<String> {
    ha["bindings"]
        .as_array()?
        .iter()
        .find(|b| b["home_address"] == hoa.to_string())
        .and_then(|b| b["care_of"].as_str().map(str::to_string))
}

/// `count` pings from the CN to the home address, `interval` apart (ping's `-i`, e.g.
/// "0.2"), one second each to answer; how many came back. Downstream first, so only a
/// working tunnel (and a live NAT mapping) brings an answer.
pub fn ping_home_from_cn(ml: &MipLab, count: u32, interval: &str) -> usize {
    let out = Command::new("ip")
        .args(["netns", "exec", &ml.lab.ns("cn"), "ping", "-n", "-q"])
        .args(["-i", interval, "-W", "1", "-c", &count.to_string()])
        .arg(MN_HOME.to_string())
        .output()
        .expect("ping");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split(',')
        .find(|f| f.contains("received"))
        .and_then(|f| f.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Whether a mobile node's status says it is registered through a foreign agent.
pub fn in_foreign_mode(v: &Value) -> bool {
    v["mode"] == "foreign" && v["registered"] == true
}

/// A lab with its daemons (bindings of 300 s) and the node moved to int-b, registered
/// through the foreign agent there (mode f).
pub fn lab_in_foreign_mode() -> MipLab {
    let mut ml = MipLab::start(&exe(), true, 300).expect("lab");
    ml.lab.move_mn(Segment::IntB).expect("move to int-b");
    ml.wait_mn(Duration::from_secs(10), in_foreign_mode)
        .expect("registered through the agent on int-b");
    ml
}

/// A lab with the MN behind the NAT, registered co-located with RFC 3519 UDP
/// tunnelling (`udp_tunnel` in its status).
pub fn lab_behind_nat() -> MipLab {
    lab_behind_nat_with(&[])
}

/// [`lab_behind_nat`] with these settings, each (role, key, value) in the role's
/// section, applied by a restart before the node moves.
pub fn lab_behind_nat_with(settings: &[(&str, &str, &str)]) -> MipLab {
    let mut ml = MipLab::start(&exe(), true, 300).expect("lab");
    for (role, key, value) in settings {
        ml.restart_agent_with(role, key, value).expect("restarted");
    }
    ml.lab.move_mn(Segment::Nat).expect("move to nat");
    ml.wait_mn(Duration::from_secs(10), |v| {
        MipLab::registered_at(v, Segment::Nat.mn_addr()) && v["udp_tunnel"] == true
    })
    .expect("registered behind the NAT with UDP tunnelling");
    ml
}

/// Calls `f` every 100 ms until it is true or `timeout` has passed; its last answer.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < timeout {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    f()
}
