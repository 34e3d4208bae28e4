//! Running commands and threads, in the host or in a network namespace.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// `ip -n NS <words>`, the words split on whitespace: `ip_n(&cl, &format!("addr add {a}
/// dev {dev}"))`. As [`sh`].
pub fn ip_n(ns: &str, words: &str) -> Result<String, String> {
    let mut args = vec!["ip", "-n", ns];
    args.extend(words.split_whitespace());
    sh(&args)
}

/// Run `args[0]` with the rest as arguments; its stdout when it exits 0, otherwise an error
/// holding the command, its stdout and its stderr.
pub fn sh(args: &[&str]) -> Result<String, String> {
    let (prog, rest) = args.split_first().ok_or("sh: empty command")?;
    let o = Command::new(prog)
        .args(rest)
        .output()
        .map_err(|e| format!("{args:?}: {e}"))?;
    if !o.status.success() {
        return Err(format!(
            "{args:?}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// `sh` inside network namespace `ns` (`ip netns exec`).
pub fn ns_exec(ns: &str, args: &[&str]) -> Result<String, String> {
    let mut a = vec!["ip", "netns", "exec", ns];
    a.extend_from_slice(args);
    sh(&a)
}

/// Run `f` on a new thread that has joined network namespace `ns` first (sockets it binds
/// stay in that namespace). Panics on the thread if the namespace cannot be joined.
pub fn in_ns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        use std::os::fd::AsRawFd;
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        // SAFETY: plain syscall on a valid fd; only this thread changes namespace.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}");
        f()
    })
}

/// True when the process runs as root (the labs need it).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Stop a child we spawned: SIGTERM, then SIGKILL after 2 s; by process id only.
pub fn stop(mut c: Child) {
    if let Ok(pid) = i32::try_from(c.id()) {
        // SAFETY: signalling a child we spawned and have not reaped.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    let end = Instant::now() + Duration::from_secs(2);
    while Instant::now() < end {
        if let Ok(Some(_)) = c.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = c.kill();
    let _ = c.wait();
}
