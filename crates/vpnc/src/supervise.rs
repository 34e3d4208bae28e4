//! The channel to a supervising process (`mipsec vpn --events`, used by `mipsec mn`).
//!
//! - **Events**: one JSON object per line on stdout, for every state change (`up`, `down`,
//!   `mobike`, `rekeyed`, `error`); see [`Event`]. Logs stay on stderr.
//! - **Commands**: one per line on stdin: `mobike <ipv4>` (UPDATE_SA_ADDRESSES from that
//!   address now, RFC 4555) and `stop` (Delete towards the gateway, clean exit 0). End of
//!   stdin means the supervisor is gone: the same as `stop`.
//! - **Parent death**: `PR_SET_PDEATHSIG` delivers SIGTERM (a clean stop) when the thread
//!   that spawned us dies, even by `kill -9`.
//!
//! stdin and stdout are served by two plain threads, so the tokio loop never waits for a
//! slow or stuck supervisor; the loop only sends into and receives from channels.

use std::io::{BufRead, Write};
use std::net::Ipv4Addr;
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{json, Value};

/// The longest command line read; a longer one is refused (and skipped to its end).
pub const MAX_LINE: usize = 256;

/// What the supervisor asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Move the IKE SA (MOBIKE) to this local address now.
    Mobike(Ipv4Addr),
    /// Delete the IKE SA and exit; the reason is reported in the last `down` event.
    Stop(&'static str),
}

/// Parse one command line (without its newline).
pub fn parse_command(line: &str) -> Result<Command, String> {
    let mut w = line.split_whitespace();
    match (w.next(), w.next(), w.next()) {
        (Some("stop"), None, _) => Ok(Command::Stop("stop")),
        (Some("mobike"), Some(a), None) => a
            .parse()
            .map(Command::Mobike)
            .map_err(|_| format!("mobike: `{a}` is not an IPv4 address")),
        (Some("mobike"), ..) => Err("usage: mobike <ipv4>".into()),
        (None, ..) => Err("empty command".into()),
        (Some(c), ..) => Err(format!(
            "unknown command `{}` (mobike <ipv4>, stop)",
            c.chars().take(32).collect::<String>()
        )),
    }
}

/// One line of the event stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The tunnel carries traffic: the TIA is on the TUN, the routes are in.
    Up {
        tia: Ipv4Addr,
        tun: String,
        local: Ipv4Addr,
        interface: String,
        gateway: Ipv4Addr,
        /// ESP is UDP-encapsulated (a NAT on the path).
        natt: bool,
        ike_spi: String,
        setup_ms: f64,
    },
    /// The tunnel stopped carrying traffic (or an attempt failed); the client reconnects on
    /// its own unless `reason` is `stop`, `stdin closed` or `signal`.
    Down { reason: String },
    /// The answer to `mobike <address>`.
    Mobike {
        ok: bool,
        local: Ipv4Addr,
        ms: Option<f64>,
        reason: Option<String>,
    },
    /// A CHILD_SA (`what` = `child`) or the IKE SA was rekeyed; nothing else changes.
    Rekeyed { what: &'static str, spi: String },
    /// A command that could not be understood.
    Error { reason: String },
}

impl Event {
    pub fn to_json(&self) -> Value {
        match self {
            Event::Up {
                tia,
                tun,
                local,
                interface,
                gateway,
                natt,
                ike_spi,
                setup_ms,
            } => json!({
                "event": "up", "tia": tia.to_string(), "tun": tun, "local": local.to_string(),
                "interface": interface, "gateway": gateway.to_string(), "natt": natt,
                "ike_spi": ike_spi, "setup_ms": round(*setup_ms),
            }),
            Event::Down { reason } => json!({"event": "down", "reason": reason}),
            Event::Mobike {
                ok,
                local,
                ms,
                reason,
            } => {
                let mut v = json!({"event": "mobike", "ok": ok, "local": local.to_string()});
                if let Some(ms) = ms {
                    v["ms"] = json!(round(*ms));
                }
                if let Some(r) = reason {
                    v["reason"] = json!(r);
                }
                v
            }
            Event::Rekeyed { what, spi } => json!({"event": "rekeyed", "what": what, "spi": spi}),
            Event::Error { reason } => json!({"event": "error", "reason": reason}),
        }
    }
}

fn round(ms: f64) -> f64 {
    (ms * 10.0).round() / 10.0
}

/// Queues event lines for the stdout thread (`None` = write out and stop).
#[derive(Clone)]
pub struct Emitter(mpsc::Sender<Option<String>>);

impl Emitter {
    /// Queue one event line (never blocks).
    pub fn emit(&self, ev: &Event) {
        let line = ev.to_json().to_string();
        tracing::debug!("event {line}");
        let _ = self.0.send(Some(line));
    }
}

/// Our end of the channel: events go out through `events`; commands arrive on the
/// [`Commands`] returned with it.
pub struct Supervisor {
    pub events: Emitter,
    written: mpsc::Receiver<()>,
}

/// Commands from stdin (and a `Stop` when stdin or stdout closes).
pub type Commands = tokio::sync::mpsc::UnboundedReceiver<Command>;

impl Supervisor {
    /// Ask for SIGTERM when our parent dies, then start the stdin and stdout threads.
    pub fn start() -> Result<(Supervisor, Commands), String> {
        die_with_parent()?;
        let (cmd_tx, cmd_rx) = tokio::sync::mpsc::unbounded_channel();
        let (out, lines) = mpsc::channel::<Option<String>>();
        let (done_tx, written) = mpsc::channel();
        let stop_tx = cmd_tx.clone();
        std::thread::Builder::new()
            .name("events-out".into())
            .spawn(move || {
                let mut stdout = std::io::stdout().lock();
                for l in lines.iter().map_while(|l| l) {
                    if writeln!(stdout, "{l}")
                        .and_then(|()| stdout.flush())
                        .is_err()
                    {
                        // Nobody reads our events any more: the supervisor is gone.
                        let _ = stop_tx.send(Command::Stop("stdout closed"));
                        break;
                    }
                }
                let _ = done_tx.send(());
            })
            .map_err(|e| format!("events thread: {e}"))?;
        let errors = out.clone();
        std::thread::Builder::new()
            .name("commands-in".into())
            .spawn(move || read_commands(std::io::stdin().lock(), &cmd_tx, &errors))
            .map_err(|e| format!("commands thread: {e}"))?;
        Ok((
            Supervisor {
                events: Emitter(out),
                written,
            },
            cmd_rx,
        ))
    }

    /// Write out what is queued, waiting at most `limit` for a slow reader.
    pub fn finish(self, limit: Duration) {
        let _ = self.events.0.send(None);
        let _ = self.written.recv_timeout(limit);
    }
}

/// Read command lines until end of input; a line longer than `MAX_LINE` is refused.
fn read_commands(
    mut input: impl BufRead,
    cmds: &tokio::sync::mpsc::UnboundedSender<Command>,
    errors: &mpsc::Sender<Option<String>>,
) {
    let mut buf = Vec::with_capacity(MAX_LINE + 1);
    loop {
        buf.clear();
        let n = match std::io::Read::take(&mut input, MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut buf)
        {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let complete = buf.last() == Some(&b'\n');
        let res = if !complete && n > MAX_LINE {
            // Skip the rest of the over-long line.
            loop {
                let mut rest = Vec::new();
                match std::io::Read::take(&mut input, 4096).read_until(b'\n', &mut rest) {
                    Ok(0) | Err(_) => break,
                    Ok(_) if rest.last() == Some(&b'\n') => break,
                    Ok(_) => {}
                }
            }
            Err(format!("command longer than {MAX_LINE} octets"))
        } else {
            std::str::from_utf8(&buf)
                .map_err(|_| "command is not UTF-8".to_string())
                .and_then(|l| parse_command(l.trim()))
        };
        match res {
            Ok(c) => {
                if cmds.send(c).is_err() {
                    return;
                }
            }
            Err(reason) => {
                tracing::warn!("supervisor: {reason}");
                let _ = errors.send(Some(Event::Error { reason }.to_json().to_string()));
            }
        }
    }
    let _ = cmds.send(Command::Stop("stdin closed"));
}

/// `PR_SET_PDEATHSIG(SIGTERM)`: the kernel signals us when the thread that forked us exits,
/// so the supervisor must spawn us from a thread that lives as long as it does. A parent
/// that died before this call is caught by the end of stdin instead (its end of the pipe
/// closed). No `getppid() == 1` check: the supervisor may itself be PID 1 in a container.
#[allow(unsafe_code)]
fn die_with_parent() -> Result<(), String> {
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes a signal number and touches no memory of ours.
    let rc = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong) };
    if rc != 0 {
        return Err(format!(
            "prctl(PR_SET_PDEATHSIG): {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands() {
        assert_eq!(parse_command("stop"), Ok(Command::Stop("stop")));
        assert_eq!(
            parse_command("mobike 192.0.2.3"),
            Ok(Command::Mobike(Ipv4Addr::new(192, 0, 2, 3)))
        );
        assert_eq!(
            parse_command("  mobike\t10.0.0.1 "),
            Ok(Command::Mobike(Ipv4Addr::new(10, 0, 0, 1)))
        );
        assert!(parse_command("mobike").is_err());
        assert!(parse_command("mobike 1.2.3.4 5").is_err());
        assert!(parse_command("mobike ::1").unwrap_err().contains("IPv4"));
        assert!(parse_command("stop now").is_err());
        assert!(parse_command("").is_err());
        assert!(parse_command("reboot").unwrap_err().contains("unknown"));
    }

    #[test]
    fn reader_refuses_long_lines_and_stops_at_eof() {
        let long = "x".repeat(10_000);
        let input = format!("stop\n{long}\nmobike 10.0.0.9\nnonsense\n");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let (etx, erx) = mpsc::channel();
        read_commands(std::io::Cursor::new(input), &tx, &etx);
        let mut got = Vec::new();
        while let Ok(c) = rx.try_recv() {
            got.push(c);
        }
        assert_eq!(
            got,
            vec![
                Command::Stop("stop"),
                Command::Mobike(Ipv4Addr::new(10, 0, 0, 9)),
                Command::Stop("stdin closed")
            ]
        );
        let errs: Vec<String> = erx.try_iter().flatten().collect();
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(errs[0].contains("longer than 256"), "{errs:?}");
        assert!(errs[1].contains("unknown command"), "{errs:?}");
    }

    #[test]
    fn event_lines() {
        let up = Event::Up {
            tia: Ipv4Addr::new(10, 99, 0, 1),
            tun: "t0".into(),
            local: Ipv4Addr::new(192, 0, 2, 1),
            interface: "eth0".into(),
            gateway: Ipv4Addr::new(192, 0, 2, 2),
            natt: true,
            ike_spi: "00ff".into(),
            setup_ms: 12.345,
        }
        .to_json();
        assert_eq!(up["event"], "up");
        assert_eq!(up["tia"], "10.99.0.1");
        assert_eq!(up["natt"], true);
        assert_eq!(up["setup_ms"], 12.3);
        let m = Event::Mobike {
            ok: false,
            local: Ipv4Addr::new(192, 0, 2, 3),
            ms: None,
            reason: Some("x".into()),
        }
        .to_json();
        assert_eq!(m["ok"], false);
        assert_eq!(m["local"], "192.0.2.3");
        assert_eq!(m["reason"], "x");
        assert!(m.get("ms").is_none() && !m.to_string().contains('\n'));
    }
}
