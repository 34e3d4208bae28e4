//! Shared lab plumbing for the root-only integration tests: throw-away network
//! namespaces (deleted on drop, also when a test panics), command helpers, and running
//! async code inside a namespace on a dedicated thread.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Whether lab tests can run here. Not root (or no `ip`): panic with an explanation,
/// unless `MIPSEC_SKIP_LAB=1`, in which case print a loud SKIP line and return false.
pub fn lab(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let ip = Command::new("ip").arg("-V").output().is_ok();
    let tun = std::path::Path::new("/dev/net/tun").exists();
    let why = if !root {
        "not running as root (network namespaces need CAP_SYS_ADMIN)"
    } else if !ip {
        "the `ip` command (iproute2) is missing"
    } else if !tun {
        "/dev/net/tun is missing"
    } else {
        return true;
    };
    if std::env::var("MIPSEC_SKIP_LAB").as_deref() == Ok("1") {
        eprintln!("SKIP [netio lab] {test}: {why}; skipped because MIPSEC_SKIP_LAB=1");
        false
    } else {
        panic!(
            "lab test {test} cannot run: {why}. Run the tests as root, or set \
             MIPSEC_SKIP_LAB=1 to skip them explicitly"
        );
    }
}

/// Run a command, panic with its output if it fails, return stdout.
pub fn sh(args: &[&str]) -> String {
    let out = try_sh(args);
    assert!(
        out.status.success(),
        "command failed: {}\nstdout: {}\nstderr: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Run a command and return its output whatever the status.
pub fn try_sh(args: &[&str]) -> Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", args.join(" ")))
}

/// A network namespace named `mipsec-nt-<tag>-<pid>-<n>`, deleted on drop.
pub struct Netns {
    pub name: String,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!(
            "mipsec-nt-{tag}-{}-{}-{:x}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed),
            nanos & 0xffff
        );
        sh(&["ip", "netns", "add", &name]);
        let ns = Netns { name };
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// Run a command inside the namespace; panic on failure; return stdout.
    pub fn exec(&self, args: &[&str]) -> String {
        let mut full = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(args);
        sh(&full)
    }

    /// Run a command inside the namespace and return its output whatever the status.
    pub fn try_exec(&self, args: &[&str]) -> Output {
        let mut full = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(args);
        try_sh(&full)
    }

    /// `sysctl -w key=value` inside the namespace.
    pub fn sysctl(&self, kv: &str) {
        self.exec(&["sysctl", "-q", "-w", kv]);
    }

    /// Run `f` on a new thread that first enters this namespace (setns), inside a
    /// current-thread tokio runtime. Panics in `f` propagate to the caller.
    pub fn spawn<F, Fut, T>(&self, f: F) -> std::thread::JoinHandle<T>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T>,
        T: Send + 'static,
    {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            enter_netns(&path);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(f())
        })
    }

    /// [`Netns::spawn`] and wait for the result.
    pub fn run<F, Fut, T>(&self, f: F) -> T
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T>,
        T: Send + 'static,
    {
        join(self.spawn(f))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let out = try_sh(&["ip", "netns", "del", &self.name]);
        if !out.status.success() {
            eprintln!(
                "warning: could not delete netns {}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// Join a thread, re-raising its panic.
pub fn join<T>(h: std::thread::JoinHandle<T>) -> T {
    match h.join() {
        Ok(v) => v,
        Err(p) => std::panic::resume_unwind(p),
    }
}

fn enter_netns(path: &str) {
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    use std::os::fd::AsRawFd;
    // SAFETY: setns on a valid namespace descriptor; affects only this thread.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns({path}): {}", std::io::Error::last_os_error());
}

/// Two namespaces joined by a veth pair: `a0` (10.99.1.1/24) in `a`, `b0` (10.99.1.2/24)
/// in `b`, both up.
pub struct Pair {
    pub a: Netns,
    pub b: Netns,
}

pub const A_ADDR: std::net::Ipv4Addr = std::net::Ipv4Addr::new(10, 99, 1, 1);
pub const B_ADDR: std::net::Ipv4Addr = std::net::Ipv4Addr::new(10, 99, 1, 2);

impl Pair {
    pub fn new(tag: &str) -> Pair {
        let a = Netns::new(&format!("{tag}a"));
        let b = Netns::new(&format!("{tag}b"));
        a.exec(&[
            "ip", "link", "add", "a0", "type", "veth", "peer", "name", "b0", "netns", &b.name,
        ]);
        a.exec(&["ip", "addr", "add", "10.99.1.1/24", "dev", "a0"]);
        b.exec(&["ip", "addr", "add", "10.99.1.2/24", "dev", "b0"]);
        a.exec(&["ip", "link", "set", "a0", "up"]);
        b.exec(&["ip", "link", "set", "b0", "up"]);
        Pair { a, b }
    }
}

/// Poll `f` until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The Internet checksum (RFC 1071) of `data`.
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in data.chunks(2) {
        let w = match c {
            [a, b] => u16::from_be_bytes([*a, *b]),
            [a] => u16::from_be_bytes([*a, 0]),
            _ => 0,
        };
        sum += u32::from(w);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A 20-byte IPv4 header with a correct checksum.
pub fn ipv4_header(
    src: std::net::Ipv4Addr,
    dst: std::net::Ipv4Addr,
    proto: u8,
    payload_len: usize,
    id: u16,
    ttl: u8,
) -> Vec<u8> {
    let total = u16::try_from(20 + payload_len).unwrap();
    let mut h = vec![0x45, 0];
    h.extend_from_slice(&total.to_be_bytes());
    h.extend_from_slice(&id.to_be_bytes());
    h.extend_from_slice(&[0x40, 0]); // DF
    h.push(ttl);
    h.push(proto);
    h.extend_from_slice(&[0, 0]);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    let c = checksum(&h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h
}

/// IPv4 packet = header + payload.
pub fn ipv4_packet(
    src: std::net::Ipv4Addr,
    dst: std::net::Ipv4Addr,
    proto: u8,
    payload: &[u8],
    ttl: u8,
) -> Vec<u8> {
    let mut p = ipv4_header(src, dst, proto, payload.len(), 0x1111, ttl);
    p.extend_from_slice(payload);
    p
}

/// ICMP echo (type 8 request, 0 reply) with a correct checksum.
pub fn icmp_echo(kind: u8, id: u16, seq: u16, data: &[u8]) -> Vec<u8> {
    let mut m = vec![kind, 0, 0, 0];
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(data);
    let c = checksum(&m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    m
}

/// Evaluate a Python expression over `pkt` decoded by scapy as `p = IP(pkt)`, an
/// independent parser used as an oracle. Returns the printed value.
pub fn scapy_eval(pkt: &[u8], expr: &str) -> String {
    let hex: String = pkt.iter().map(|b| format!("{b:02x}")).collect();
    let script =
        format!("from scapy.all import IP, raw\np = IP(bytes.fromhex('{hex}'))\nprint({expr})\n");
    let out = Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("python3 with scapy is a test prerequisite (scripts/install-deps.sh)");
    assert!(
        out.status.success(),
        "scapy failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}
