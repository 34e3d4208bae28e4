//! The control socket: a Unix stream socket on which a daemon answers `status`
//! with one JSON document. `mipsec status` is its client.

use serde_json::Value;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot};

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

/// Serves the control socket at `path`, forwarding each `status` request to the
/// event loop through `tx`. Removes a stale socket file first.
pub struct ControlServer {
    path: PathBuf,
}

impl ControlServer {
    pub fn start(path: &Path, tx: mpsc::Sender<StatusRequest>) -> std::io::Result<ControlServer> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path)?;
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let tx = tx.clone();
                tokio::spawn(async move {
                    let (r, mut w) = stream.into_split();
                    let mut line = String::new();
                    let mut r = BufReader::new(r);
                    if r.read_line(&mut line).await.is_err() {
                        return;
                    }
                    let (cmd, query) = split_command(line.trim());
                    let reply = match (cmd, query) {
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
                    };
                    let mut s = reply.to_string();
                    s.push('\n');
                    let _ = w.write_all(s.as_bytes()).await;
                });
            }
        });
        Ok(ControlServer {
            path: path.to_path_buf(),
        })
    }
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
