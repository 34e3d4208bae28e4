//! What the control socket reports (one JSON object per connection), and its protocol.
//!
//! The protocol is the one every mipsec daemon speaks (`mipsec status --socket`): the
//! client sends `status\n`, the daemon answers one JSON line and closes. A client that
//! sends nothing (e.g. `socat - UNIX-CONNECT:vpn.sock`) gets the answer after
//! `QUIET_CLIENT`.

use std::net::Ipv4Addr;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

/// How long we wait for a request line before answering anyway.
pub const QUIET_CLIENT: Duration = Duration::from_millis(200);
/// The longest request line read; the rest of an oversize request is not read.
pub const MAX_REQUEST: u64 = 256;
/// Connections answered at once; more are closed at once.
pub const MAX_CONNECTIONS: usize = 16;

static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// Binds the control socket mode 0600 whatever the umask: bound under a temporary name,
/// restricted, then renamed into place, so nobody else can connect in between.
pub fn bind_private(path: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", std::process::id()));
    let tmp = std::path::PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let listener = UnixListener::bind(&tmp)?;
    let placed = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(listener)
}

/// Client state and counters.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
    /// Always "vpn" (`mipsec status` picks its rendering by role).
    pub role: &'static str,
    pub state: &'static str,
    /// The physical interface we use and our address on it (IKE and ESP source).
    pub interface: String,
    pub local_ip: Option<Ipv4Addr>,
    /// The interface the IKE and ESP sockets are bound to (`bind_interface`).
    pub bound_interface: Option<String>,
    /// Run under a supervisor (`--events`); following address changes on our own.
    pub supervised: bool,
    pub auto_mobike: bool,
    /// Networks the kill switch blocks unless tunnelled.
    pub kill_switch: Vec<String>,
    pub tia: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub ike_spi_i: String,
    pub ike_spi_r: String,
    pub local: Option<String>,
    pub remote: Option<String>,
    pub behind_nat: bool,
    pub udp_encap: bool,
    pub spi_in: u32,
    pub spi_out: u32,
    pub child_sas: usize,
    pub inbound_sas: usize,
    /// Connection attempts and IKE SAs lost (each followed by a reconnect).
    pub attempts: u64,
    pub reconnects: u64,
    /// Times the gateway stayed silent past the DPD bound (`client::dead_after`).
    pub dead_gateway: u64,
    pub child_rekeys: u64,
    pub ike_rekeys: u64,
    pub mobike_moves: u64,
    /// UPDATE_SA_ADDRESSES sent from an unchanged address after a suspected NAT rebinding.
    pub nat_probes: u64,
    /// Last IKE setup: first IKE_SA_INIT to IKE SA / CHILD_SA up.
    pub ike_setup_ms: Option<f64>,
    pub child_setup_ms: Option<f64>,
    /// Last MOBIKE move: address change noticed to UPDATE_SA_ADDRESSES answered, and the
    /// IKE datagrams sent/received meanwhile.
    pub last_move_ms: Option<f64>,
    pub last_move_ike_tx: u64,
    pub last_move_ike_rx: u64,
    pub esp_tx_packets: u64,
    pub esp_tx_bytes: u64,
    pub esp_rx_packets: u64,
    pub esp_rx_bytes: u64,
    pub esp_drops: u64,
    pub tun_dropped: u64,
    pub rx_dropped: u64,
    pub tx_errors: u64,
    pub ike_stats: String,
    /// TUN offloads (`offload`): super-packets read and the segments they gave, TCP
    /// segments merged before entering the TUN, and the GSO sends of ESP in UDP with
    /// the datagrams they carried.
    pub offload: bool,
    pub tun_super_packets: u64,
    pub tun_segments: u64,
    pub coalesced_segments: u64,
    pub udp_gso_sends: u64,
    pub udp_gso_datagrams: u64,
    /// UDP GRO on the NAT-T socket (with `offload`), the receives that held several
    /// datagrams and how many they held.
    pub udp_gro: bool,
    pub udp_gro_receives: u64,
    pub udp_gro_datagrams: u64,
}

impl Status {
    pub fn to_json(&self) -> String {
        let mut s =
            serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
        s.push('\n');
        s
    }
}

/// Answer one control connection: read the request line (or wait `QUIET_CLIENT` for a
/// client that sends none), reply, close. Reading before closing matters: closing a socket
/// with an unread request makes the kernel reset the connection, and the client's read
/// fails ("Connection reset by peer"); closing before the client has written makes its
/// write fail ("Broken pipe").
pub async fn serve(stream: UnixStream, status_json: String) {
    struct Slot;
    impl Drop for Slot {
        fn drop(&mut self) {
            IN_FLIGHT.fetch_sub(1, Ordering::Relaxed);
        }
    }
    if IN_FLIGHT.fetch_add(1, Ordering::Relaxed) >= MAX_CONNECTIONS {
        IN_FLIGHT.fetch_sub(1, Ordering::Relaxed);
        return;
    }
    let _slot = Slot;
    let (r, mut w) = stream.into_split();
    let mut line = String::new();
    let mut r = BufReader::new(r.take(MAX_REQUEST));
    let req = tokio::time::timeout(QUIET_CLIENT, r.read_line(&mut line)).await;
    let reply = match (req, line.trim()) {
        (Ok(Ok(_)), "status" | "") | (Err(_), _) => status_json,
        (Ok(Err(_)), _) => return,
        (Ok(Ok(_)), other) => {
            let mut s = serde_json::json!({
                "error": format!("unknown command {other:?}; try \"status\"")
            })
            .to_string();
            s.push('\n');
            s
        }
    };
    let _ = w.write_all(reply.as_bytes()).await;
    let _ = w.shutdown().await;
}

/// A status document as `mipsec status` prints it for people.
pub fn render(v: &Value) -> String {
    let s = |k: &str| match &v[k] {
        Value::String(s) if !s.is_empty() => s.clone(),
        Value::Null | Value::String(_) => "-".into(),
        other => other.to_string(),
    };
    let mut o = format!("vpn client {}  gateway {}\n", s("state"), s("remote"));
    o += &format!(
        "local {} on {}  tunnel address {}  behind NAT {}  UDP encap {}\n",
        s("local"),
        s("interface"),
        s("tia"),
        s("behind_nat"),
        s("udp_encap")
    );
    o += &format!(
        "IKE SA {}/{}  CHILD_SA in {} out {}\n",
        s("ike_spi_i"),
        s("ike_spi_r"),
        s("spi_in"),
        s("spi_out")
    );
    o += &format!(
        "kill switch {}  sockets bound to {}  supervised {}  auto MOBIKE {}\n\ncounters:\n",
        s("kill_switch"),
        s("bound_interface"),
        s("supervised"),
        s("auto_mobike")
    );
    for k in [
        "attempts",
        "reconnects",
        "dead_gateway",
        "child_rekeys",
        "ike_rekeys",
        "mobike_moves",
        "nat_probes",
        "esp_tx_packets",
        "esp_rx_packets",
        "esp_drops",
        "tun_dropped",
        "rx_dropped",
        "tx_errors",
        "ike_setup_ms",
        "last_move_ms",
    ] {
        o += &format!("  {k:<27} {}\n", s(k));
    }
    o
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("vpnc-status-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[tokio::test]
    async fn control_socket_is_0600() {
        // A plain bind gives 0777 less the umask (0755 under the usual 022).
        let p = dir().join("mode.sock");
        let _l = bind_private(&p).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "mode {mode:o}");
        let _ = std::fs::remove_file(&p);
    }

    /// One test for both, since they share the in-flight count.
    #[tokio::test]
    async fn requests_are_bounded_and_connections_limited() {
        // 64 KB without a newline: the server reads MAX_REQUEST octets and answers.
        let p = dir().join("big.sock");
        let l = bind_private(&p).unwrap();
        let server = tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            serve(s, "{\"state\":\"up\"}\n".into()).await;
        });
        let mut c = UnixStream::connect(&p).await.unwrap();
        let _ = c.write_all(&vec![b'x'; 64 * 1024]).await;
        let mut out = Vec::new();
        let _ = c.read_to_end(&mut out).await;
        server.await.unwrap();
        let out = String::from_utf8_lossy(&out);
        // The reset of the unread rest may beat the answer; an answer is the error.
        assert!(out.is_empty() || out.contains("unknown command"), "{out}");
        assert!(out.len() < MAX_REQUEST as usize + 100, "{out}");
        let _ = std::fs::remove_file(&p);

        // MAX_CONNECTIONS + 4 clients that send nothing: the extra four are closed at
        // once, the others wait QUIET_CLIENT for a request.
        let p = dir().join("many.sock");
        let l = bind_private(&p).unwrap();
        let mut idle = Vec::new();
        let mut served = Vec::new();
        for _ in 0..MAX_CONNECTIONS + 4 {
            idle.push(UnixStream::connect(&p).await.unwrap());
            let (s, _) = l.accept().await.unwrap();
            served.push(tokio::spawn(serve(s, "{}\n".into())));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let done = served.iter().filter(|h| h.is_finished()).count();
        assert_eq!(done, 4, "{done} finished before QUIET_CLIENT");
        for h in served {
            h.await.unwrap();
        }
        assert_eq!(IN_FLIGHT.load(Ordering::Relaxed), 0);
        let _ = std::fs::remove_file(&p);
    }
}
