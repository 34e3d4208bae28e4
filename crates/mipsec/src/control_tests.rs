//! The control socket's limits: permissions, stale files, request size, idle
//! timeout and connection limit.
#![allow(clippy::unwrap_used)]

use super::*;
use std::os::unix::fs::PermissionsExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream as TokioStream;

/// A server at a fresh path whose event loop answers `{"ok": true}`.
fn server(dir: &Path, limits: ControlLimits) -> (ControlServer, PathBuf) {
    let path = dir.join("ctl.sock");
    let (tx, mut rx) = mpsc::channel::<StatusRequest>(8);
    tokio::spawn(async move {
        while let Some(r) = rx.recv().await {
            let _ = r.send(serde_json::json!({"ok": true}));
        }
    });
    (ControlServer::start_with(&path, tx, limits).unwrap(), path)
}

/// Everything the server sends until it closes (or `wait` passes: None).
async fn read_all(s: &mut TokioStream, wait: Duration) -> Option<String> {
    let mut out = Vec::new();
    tokio::time::timeout(wait, s.read_to_end(&mut out))
        .await
        .ok()
        .map(|_| String::from_utf8_lossy(&out).into_owned())
}

#[tokio::test(flavor = "current_thread")]
async fn socket_is_0600_whatever_the_umask() {
    let dir = tempfile::tempdir().unwrap();
    // SAFETY: umask has no preconditions; restored below.
    let old = unsafe { libc::umask(0) };
    let (_srv, path) = server(dir.path(), ControlLimits::default());
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{mode:o}");
    // Nothing left under a temporary name.
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(names.len(), 1);
}

#[tokio::test(flavor = "current_thread")]
async fn stale_socket_file_is_replaced_and_a_live_one_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ctl.sock");
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists(), "a killed daemon leaves its socket file");
    let (_srv, path) = server(dir.path(), ControlLimits::default());
    let v = tokio::task::spawn_blocking(move || query(&path))
        .await
        .unwrap();
    assert_eq!(v.unwrap()["ok"], true);
    let (tx, _rx) = mpsc::channel(1);
    let second = ControlServer::start(&dir.path().join("ctl.sock"), tx);
    assert_eq!(
        second.err().map(|e| e.kind()),
        Some(std::io::ErrorKind::AddrInUse)
    );
}

#[tokio::test(flavor = "current_thread")]
async fn oversize_request_is_refused_without_buffering_it() {
    let dir = tempfile::tempdir().unwrap();
    let (_srv, path) = server(dir.path(), ControlLimits::default());
    let mut s = TokioStream::connect(&path).await.unwrap();
    // 64 KiB without a newline: the server answers after 256 bytes and closes.
    let _ = s.write_all(&vec![b'a'; 64 << 10]).await;
    let got = read_all(&mut s, Duration::from_secs(2)).await.unwrap();
    assert!(got.contains("longer than 256 bytes"), "{got}");
}

#[tokio::test(flavor = "current_thread")]
async fn idle_connection_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let limits = ControlLimits {
        idle_timeout: Duration::from_millis(200),
        ..ControlLimits::default()
    };
    let (_srv, path) = server(dir.path(), limits);
    let mut s = TokioStream::connect(&path).await.unwrap();
    let t0 = std::time::Instant::now();
    let got = read_all(&mut s, Duration::from_secs(3)).await;
    assert_eq!(got.as_deref(), Some(""), "closed without an answer");
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
}

#[tokio::test(flavor = "current_thread")]
async fn connections_beyond_the_limit_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let limits = ControlLimits {
        max_connections: 2,
        idle_timeout: Duration::from_secs(30),
        ..ControlLimits::default()
    };
    let (_srv, path) = server(dir.path(), limits);
    let idle1 = TokioStream::connect(&path).await.unwrap();
    let _idle2 = TokioStream::connect(&path).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut third = TokioStream::connect(&path).await.unwrap();
    let _ = third.write_all(b"status\n").await;
    let got = read_all(&mut third, Duration::from_secs(2)).await;
    assert_eq!(got.as_deref(), Some(""), "the third connection was served");
    // A slot frees when a connection ends.
    drop(idle1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut fourth = TokioStream::connect(&path).await.unwrap();
    fourth.write_all(b"status\n").await.unwrap();
    let got = read_all(&mut fourth, Duration::from_secs(2)).await.unwrap();
    assert!(got.contains("\"ok\":true"), "{got}");
}
