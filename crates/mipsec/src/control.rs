//! The control socket: a Unix stream socket on which a daemon answers `status`
//! with one JSON document. `mipsec status` is its client.

use serde_json::Value;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tracing::debug;

/// A status request from a control connection to the daemon's event loop:
/// `status` alone, or `status {json}` with parameters (the home agent's paging,
/// see `crate::ha_status`), in `query` (an empty object when there are none).
#[derive(Debug)]
pub struct StatusRequest {
    pub query: Value,
    reply: oneshot::Sender<Value>,
}

impl StatusRequest {
    /// Answers the request; `Err` gives the document back if the client left.
    pub fn send(self, v: Value) -> Result<(), Value> {
        self.reply.send(v)
    }
}

/// Splits a command line into the command word and its JSON parameters.
fn split_command(line: &str) -> (&str, Result<Value, String>) {
    match line.split_once(char::is_whitespace) {
        None => (line, Ok(Value::Object(Default::default()))),
        Some((cmd, rest)) => match serde_json::from_str::<Value>(rest.trim()) {
            Ok(v @ Value::Object(_)) => (cmd, Ok(v)),
            Ok(_) => (cmd, Err("parameters must be a JSON object".into())),
            Err(e) => (cmd, Err(format!("parameters are not JSON: {e}"))),
        },
    }
}

/// Limits on the control socket: it answers local clients only, but any local
/// process that can reach it must not be able to grow the daemon or starve it.
#[derive(Debug, Clone, Copy)]
pub struct ControlLimits {
    /// Longest request line, newline included; longer ones get an error and close.
    pub max_request: usize,
    /// A connection that has not sent its request (or not taken its answer) within
    /// this time is closed.
    pub idle_timeout: Duration,
    /// Connections served at once; more are closed at once.
    pub max_connections: usize,
}

impl Default for ControlLimits {
    fn default() -> Self {
        ControlLimits {
            max_request: 256,
            idle_timeout: Duration::from_secs(5),
            max_connections: 16,
        }
    }
}

/// Serves the control socket at `path`, forwarding each `status` request to the
/// event loop through `tx`. The socket file is mode 0600 whatever the umask. A
/// stale socket file (no daemon answers on it) is removed first; a live one is an
/// error, so two daemons cannot steal each other's socket.
pub struct ControlServer {
    path: PathBuf,
}

/// The control socket at `path` could not be created.
#[derive(Debug, thiserror::Error)]
#[error("control socket {}: {source}", path.display())]
pub struct ControlSocketError {
    /// The configured path.
    pub path: PathBuf,
    /// Why it failed.
    #[source]
    pub source: std::io::Error,
}

impl ControlServer {
    /// [`ControlServer::start`] when a daemon's `control_socket` is set; none when
    /// it is not.
    pub fn start_optional(
        path: Option<&Path>,
        tx: mpsc::Sender<StatusRequest>,
    ) -> Result<Option<ControlServer>, ControlSocketError> {
        path.map(|p| {
            Self::start(p, tx).map_err(|source| ControlSocketError {
                path: p.to_path_buf(),
                source,
            })
        })
        .transpose()
    }

    pub fn start(path: &Path, tx: mpsc::Sender<StatusRequest>) -> std::io::Result<ControlServer> {
        Self::start_with(path, tx, ControlLimits::default())
    }

    pub fn start_with(
        path: &Path,
        tx: mpsc::Sender<StatusRequest>,
        limits: ControlLimits,
    ) -> std::io::Result<ControlServer> {
        use std::os::unix::fs::PermissionsExt;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        if std::fs::symlink_metadata(path).is_ok() {
            if UnixStream::connect(path).is_ok() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    "another daemon answers on this control socket",
                ));
            }
            std::fs::remove_file(path)?;
        }
        // Bound under a temporary name, restricted, then renamed into place: the
        // socket is never reachable at `path` with umask-derived permissions.
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(format!(".{}.tmp", std::process::id()));
        let tmp = PathBuf::from(tmp);
        let _ = std::fs::remove_file(&tmp);
        let listener = UnixListener::bind(&tmp)?;
        let placed = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = placed {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    // Out of descriptors or similar: do not spin.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    debug!("control socket: connection limit reached, closing a connection");
                    continue;
                };
                let tx = tx.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    let t = limits.idle_timeout;
                    let _ = tokio::time::timeout(t, serve(stream, tx, limits.max_request)).await;
                });
            }
        });
        Ok(ControlServer {
            path: path.to_path_buf(),
        })
    }
}

/// One connection: one request line of at most `max` bytes, one answer.
async fn serve(stream: tokio::net::UnixStream, tx: mpsc::Sender<StatusRequest>, max: usize) {
    let (r, mut w) = stream.into_split();
    let mut line = Vec::new();
    let mut r = BufReader::new(r).take(max as u64);
    if r.read_until(b'\n', &mut line).await.is_err() {
        return;
    }
    let reply = if line.last() != Some(&b'\n') {
        serde_json::json!({"error": format!("request longer than {max} bytes or not ended by a newline")})
    } else {
        let line = String::from_utf8_lossy(&line);
        match split_command(line.trim()) {
            ("status", Err(e)) => serde_json::json!({ "error": e }),
            ("status", Ok(query)) => {
                let (otx, orx) = oneshot::channel();
                if tx.send(StatusRequest { query, reply: otx }).await.is_err() {
                    return;
                }
                match orx.await {
                    Ok(v) => v,
                    Err(_) => return,
                }
            }
            (other, _) => {
                serde_json::json!({"error": format!("unknown command {other:?}; try \"status\"")})
            }
        }
    };
    let mut s = reply.to_string();
    s.push('\n');
    let _ = w.write_all(s.as_bytes()).await;
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Asks the daemon at `path` for its status.
pub fn query(path: &Path) -> Result<Value, String> {
    query_with(path, None)
}

/// Asks the daemon at `path` for its status with parameters (`status {json}`).
pub fn query_with(path: &Path, params: Option<&Value>) -> Result<Value, String> {
    let mut s = UnixStream::connect(path).map_err(|e| {
        format!(
            "cannot connect to {}: {e} (is the daemon running?)",
            path.display()
        )
    })?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let cmd = match params {
        Some(p) => format!("status {p}\n"),
        None => "status\n".to_string(),
    };
    s.write_all(cmd.as_bytes()).map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out)
        .map_err(|e| format!("reading status: {e}"))?;
    serde_json::from_str(&out).map_err(|e| format!("daemon sent invalid JSON: {e}"))
}

/// Renders a status document as a human-readable table.
pub fn render(v: &Value) -> String {
    let mut o = String::new();
    let s = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    };
    match v["role"].as_str() {
        Some("ha") => {
            o += &format!("home agent {}\n\n", s(&v["address"]));
            o += &format!(
                "{:<16} {:<16} {:>8} {:>9} {:<6} {}\n",
                "HOME ADDRESS", "CARE-OF", "LIFETIME", "REMAINING", "TUNNEL", "REVERSE"
            );
            for b in v["bindings"].as_array().into_iter().flatten() {
                o += &format!(
                    "{:<16} {:<16} {:>8} {:>9} {:<6} {}\n",
                    s(&b["home_address"]),
                    s(&b["care_of"]),
                    s(&b["lifetime"]),
                    s(&b["remaining_s"]),
                    s(&b["tunnel"]),
                    s(&b["reverse_tunnel"])
                );
            }
            if let Some(total) = v["bindings_total"].as_u64() {
                o += &format!("\n{total} bindings in all");
                match v["page"]["next_after"].as_str() {
                    Some(n) => o += &format!("; next page: --bindings --after {n}\n"),
                    None => o += "\n",
                }
            }
        }
        Some("mn") => {
            o += &format!(
                "mobile node {}  home agent {}\n",
                s(&v["home_address"]),
                s(&v["home_agent"])
            );
            o += &format!(
                "mode {}  registered {}  care-of {}  last registration {} ms\n",
                s(&v["mode"]),
                s(&v["registered"]),
                s(&v["care_of"]),
                s(&v["last_registration_rtt_ms"])
            );
            o += &format!(
                "\n{:<10} {:<12} {:<5} {:<12} {:>9}  {}\n",
                "INTERFACE", "STATE", "MODE", "GATE", "TNC AGE", "LAST CHANGE"
            );
            for i in v["interfaces"].as_array().into_iter().flatten() {
                o += &format!(
                    "{:<10} {:<12} {:<5} {:<12} {:>9}  {} ({} s ago)\n",
                    s(&i["name"]),
                    s(&i["state"]),
                    s(&i["mode"]),
                    s(&i["gate"]),
                    s(&i["tnc_proof_age_s"]),
                    s(&i["last_change"]),
                    s(&i["last_change_age_s"])
                );
            }
        }
        Some("fa") => {
            o += &format!("foreign agent {}\n\n", s(&v["address"]));
            o += &format!(
                "{:<16} {:<16} {:<17} {:>9} {:<13}\n",
                "HOME ADDRESS", "HOME AGENT", "LINK ADDRESS", "REMAINING", "DELIVERY"
            );
            for x in v["visitors"].as_array().into_iter().flatten() {
                o += &format!(
                    "{:<16} {:<16} {:<17} {:>9} {:<13}\n",
                    s(&x["home_address"]),
                    s(&x["home_agent"]),
                    s(&x["mac"]),
                    s(&x["remaining_s"]),
                    s(&x["delivery"])
                );
            }
        }
        _ => return format!("{v:#}\n"),
    }
    o += "\ncounters:\n";
    if let Some(c) = v["counters"].as_object() {
        for (k, val) in c {
            match val {
                Value::Object(m) => {
                    for (k2, v2) in m {
                        o += &format!("  {k}.{k2:<24} {}\n", s(v2));
                    }
                }
                _ => o += &format!("  {k:<27} {}\n", s(val)),
            }
        }
    }
    o
}

#[cfg(test)]
#[path = "control_tests.rs"]
mod tests;
