//! Namespace plumbing: running `ip`, entering a namespace from a thread, the registry of
//! live labs that the signal handler cleans up, and removal of leftovers.

use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Mutex, Once};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Errors of the lab. The lab is a test tool: most errors carry the failing command.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("`{cmd}` failed: {msg}")]
    Cmd { cmd: String, msg: String },
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Other(String),
}

pub type Result<T> = std::result::Result<T, Error>;

pub fn other(msg: impl Into<String>) -> Error {
    Error::Other(msg.into())
}

/// Directory that holds one sub-directory per live lab (owner pid, configs, sockets, logs).
pub const RUN_DIR: &str = "/run/mipsec-lab";

/// Roles, i.e. namespace suffixes, of one lab. `ev` is a stranger's host on the
/// foreign agent's link (int-b, 10.30.0.66), for the hostile-link tests.
pub const ROLES: [&str; 7] = ["sw", "rt", "ha", "mn", "cn", "fa", "ev"];

/// Runs a command and returns its stdout; a non-zero exit becomes an error with stderr.
pub fn run(prog: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::Cmd {
            cmd: format!("{prog} {}", args.join(" ")),
            msg: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(Error::Cmd {
            cmd: format!("{prog} {}", args.join(" ")),
            msg: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `ip <args>`.
pub fn ip(args: &[&str]) -> Result<String> {
    run("ip", args)
}

/// Names of all network namespaces (`ip netns list`, first column).
pub fn list_netns() -> Vec<String> {
    let Ok(out) = ip(&["netns", "list"]) else {
        return Vec::new();
    };
    out.lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// Process ids living in a namespace.
pub fn netns_pids(ns: &str) -> Vec<i32> {
    ip(&["netns", "pids", ns])
        .map(|o| o.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// Whether `name` is `ml<4 hex>-<role>` and, if so, its prefix `ml<4 hex>-`.
pub fn lab_prefix_of(name: &str) -> Option<&str> {
    let b = name.as_bytes();
    if b.len() < 8 || !name.starts_with("ml") || b[6] != b'-' {
        return None;
    }
    if !b[2..6].iter().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    ROLES.contains(&&name[7..]).then_some(&name[..7])
}

/// Sends `sig` to `pid`; errors (already gone) are ignored.
pub fn kill(pid: i32, sig: i32) {
    if pid > 0 && pid != std::process::id() as i32 {
        // SAFETY: plain syscall on a pid number.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks existence.
    pid > 0 && unsafe { libc::kill(pid, 0) } == 0
}

/// Kills every process in the lab's namespaces and deletes them and the run directory.
/// Safe to call repeatedly and on partial labs.
pub fn destroy_prefix(prefix: &str) {
    let nss: Vec<String> = ROLES.iter().map(|r| format!("{prefix}{r}")).collect();
    let existing = list_netns();
    let present: Vec<&String> = nss.iter().filter(|n| existing.contains(n)).collect();
    for sig in [libc::SIGTERM, libc::SIGKILL] {
        let mut any = false;
        for ns in &present {
            for pid in netns_pids(ns) {
                any = true;
                kill(pid, sig);
            }
        }
        if !any {
            break;
        }
        let deadline = Instant::now() + Duration::from_millis(1500);
        while Instant::now() < deadline && present.iter().any(|ns| !netns_pids(ns).is_empty()) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    for ns in present {
        let _ = ip(&["netns", "del", ns]);
    }
    let _ = fs::remove_dir_all(Path::new(RUN_DIR).join(prefix.trim_end_matches('-')));
}

/// Removes leftovers of earlier runs: every `ml????-*` namespace whose owning process is
/// gone (or every one with `all`). Returns the prefixes removed.
pub fn cleanup_leftovers(all: bool) -> Vec<String> {
    let mut prefixes: Vec<String> = list_netns()
        .iter()
        .filter_map(|n| lab_prefix_of(n).map(str::to_string))
        .collect();
    if let Ok(rd) = fs::read_dir(RUN_DIR) {
        for e in rd.flatten() {
            let name = format!("{}-", e.file_name().to_string_lossy());
            if lab_prefix_of(&format!("{name}sw")).is_some() {
                prefixes.push(name);
            }
        }
    }
    prefixes.sort();
    prefixes.dedup();
    let mut removed = Vec::new();
    for p in prefixes {
        let owner = fs::read_to_string(owner_file(&p))
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok());
        let live = owner.is_some_and(|pid| alive(pid) && pid != std::process::id() as i32);
        if live && !all {
            continue;
        }
        destroy_prefix(&p);
        removed.push(p);
    }
    removed
}

/// The lab's private directory under [`RUN_DIR`].
pub fn run_dir(prefix: &str) -> PathBuf {
    Path::new(RUN_DIR).join(prefix.trim_end_matches('-'))
}

fn owner_file(prefix: &str) -> PathBuf {
    run_dir(prefix).join("owner.pid")
}

/// Creates the run directory and records this process as the owner.
pub fn claim_prefix(prefix: &str) -> Result<PathBuf> {
    let dir = run_dir(prefix);
    fs::create_dir_all(&dir)?;
    fs::write(owner_file(prefix), format!("{}\n", std::process::id()))?;
    Ok(dir)
}

/// A fresh prefix `ml<4 hex>-` not used by any existing namespace or run directory.
pub fn fresh_prefix() -> String {
    let existing = list_netns();
    loop {
        let n: u16 = rand::random();
        let p = format!("ml{n:04x}-");
        if !existing.iter().any(|e| e.starts_with(&p)) && !run_dir(&p).exists() {
            return p;
        }
    }
}

/// Runs `f` on a new thread that first enters network namespace `ns`. Sockets that `f`
/// creates belong to that namespace.
pub fn spawn_in<T, F>(ns: &str, f: F) -> JoinHandle<Result<T>>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        enter(&path)?;
        f()
    })
}

/// Moves the calling thread into the namespace at `path` (`/run/netns/<name>`).
pub fn enter(path: &str) -> Result<()> {
    let f = fs::File::open(path).map_err(|e| other(format!("open {path}: {e}")))?;
    // SAFETY: setns on a valid fd; affects only the calling thread for CLONE_NEWNET.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(other(format!(
            "setns {path}: {}",
            io::Error::last_os_error()
        )));
    }
    Ok(())
}

// ---- registry + signals --------------------------------------------------------------

static LIVE: Mutex<Vec<String>> = Mutex::new(Vec::new());
static SIG_PIPE_W: AtomicI32 = AtomicI32::new(-1);
static SIG_ONCE: Once = Once::new();

/// Registers a lab so that SIGINT/SIGTERM remove it.
pub fn register(prefix: &str) {
    if let Ok(mut v) = LIVE.lock() {
        v.push(prefix.to_string());
    }
}

/// Forgets a lab (after its own cleanup).
pub fn unregister(prefix: &str) {
    if let Ok(mut v) = LIVE.lock() {
        v.retain(|p| p != prefix);
    }
}

extern "C" fn on_signal(sig: libc::c_int) {
    let fd = SIG_PIPE_W.load(Ordering::Relaxed);
    if fd >= 0 {
        let b = sig as u8;
        // SAFETY: write(2) is async-signal-safe.
        unsafe {
            libc::write(fd, (&b as *const u8).cast(), 1);
        }
    }
}

/// Installs SIGINT/SIGTERM/SIGHUP handlers: a helper thread deletes every registered
/// lab and exits with 128+signal.
pub fn install_signal_cleanup() {
    SIG_ONCE.call_once(|| {
        let mut fds = [0i32; 2];
        // SAFETY: pipe with a valid 2-element array.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return;
        }
        SIG_PIPE_W.store(fds[1], Ordering::Relaxed);
        let rfd = fds[0];
        std::thread::spawn(move || {
            let mut b = 0u8;
            // SAFETY: blocking read of one byte from our pipe.
            let n = unsafe { libc::read(rfd, (&mut b as *mut u8).cast(), 1) };
            if n != 1 {
                return;
            }
            let labs = LIVE.lock().map(|v| v.clone()).unwrap_or_default();
            for p in &labs {
                eprintln!("mipsec-lab: signal {b}: removing lab {p}*");
                destroy_prefix(p);
            }
            std::process::exit(128 + i32::from(b));
        });
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            // SAFETY: installing a handler that only calls write(2).
            unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
                sa.sa_flags = libc::SA_RESTART;
                libc::sigemptyset(&mut sa.sa_mask);
                libc::sigaction(sig, &sa, std::ptr::null_mut());
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_matching() {
        assert_eq!(lab_prefix_of("ml1a2b-sw"), Some("ml1a2b-"));
        assert_eq!(lab_prefix_of("ml1A2b-mn"), Some("ml1A2b-"));
        assert_eq!(lab_prefix_of("ml1a2b-xx"), None);
        assert_eq!(lab_prefix_of("mlzz2b-sw"), None);
        assert_eq!(lab_prefix_of("ikss447cl"), None);
        assert_eq!(lab_prefix_of("ml1a2b"), None);
    }
}
