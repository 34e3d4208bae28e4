//! The Mobile IP side of the lab: daemon configs (the TOML of docs/configuration.md), status
//! queries, and a minimal independent Registration Request encoder (RFC 5944 §3.3,
//! MN-HA authentication with HMAC-MD5, RFC 5944 §3.5.1) used for RTT measurement and
//! bad-input tests.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use md5::Md5;
use serde_json::Value;

use crate::netns::{other, Result};
use crate::topo::{Lab, FA_ADDR, HA_ADDR, MN_HOME};

/// The lab's HA line that makes it an i-HA (RFC 5265 HA-2): every lab subnet is
/// internal, so its replies carry the Trusted Networks Configured extension and the
/// mobile node may use them in plaintext (MN-4). Tests that want an HA that proves
/// nothing remove this exact line.
pub const HA_TRUSTED: &str = "trusted_networks = [\"10.0.0.0/8\"]";
pub const MN_SPI: u32 = 256;
pub const MN_KEY: &str = "00112233445566778899aabbccddeeff";
/// A second MN entry used only by the lab's own request sender (RTT, bad input).
pub const PROBE_HOA: Ipv4Addr = Ipv4Addr::new(10, 10, 0, 101);
pub const PROBE_SPI: u32 = 257;
pub const PROBE_KEY: &str = "0f0e0d0c0b0a09080706050403020100";

/// Writes a file only its owner can read (configurations hold keys), whatever the
/// umask; an existing file is truncated and restricted too.
pub fn write_private(path: &Path, contents: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(contents.as_bytes())?;
    Ok(())
}

/// Writes fa.toml (the foreign agent on int-b) into the lab directory.
pub fn write_fa_config(lab: &Lab) -> Result<String> {
    let d = lab.dir.display();
    let fa = format!(
        r#"[fa]
interface = "eth0"
address = "{FA_ADDR}"
prefix_len = 24
advertisement_interval_ms = 1000
control_socket = "{d}/fa.sock"
"#
    );
    let p = lab.dir.join("fa.toml");
    write_private(&p, &fa)?;
    Ok(p.display().to_string())
}

/// Writes ha.toml and mn.toml into the lab directory; returns (ha.toml, mn.toml).
pub fn write_configs(lab: &Lab, lifetime: u32) -> Result<(String, String)> {
    let d = lab.dir.display();
    // For A/B measurements of the RFC 3519 path: MIPSEC_LAB_UDP_GSO=off.
    let mut gso = if std::env::var("MIPSEC_LAB_UDP_GSO").is_ok_and(|v| v == "off") {
        "udp_gso = false\n".to_string()
    } else {
        String::new()
    };
    // And of UDP GRO on the daemons' sockets: MIPSEC_LAB_UDP_GRO=off.
    if std::env::var("MIPSEC_LAB_UDP_GRO").is_ok_and(|v| v == "off") {
        gso.push_str("udp_gro = false\n");
    }
    // And of the HA's queue per worker: MIPSEC_LAB_WORKER_QUEUES=off.
    let ha_only = match std::env::var("MIPSEC_LAB_WORKER_QUEUES").is_ok_and(|v| v == "off") {
        true => "worker_queues = false\n",
        false => "",
    };
    let ha = format!(
        r#"[ha]
address = "{HA_ADDR}"
home_network = "10.10.0.0/24"
home_interface = "eth0"
tunnel_device = "mipha0"
max_lifetime = 1800
control_socket = "{d}/ha.sock"
{gso}{ha_only}{HA_TRUSTED}

[[mobile_node]]
home_address = "{MN_HOME}"
spi = {MN_SPI}
key = "{MN_KEY}"

[[mobile_node]]
home_address = "{PROBE_HOA}"
spi = {PROBE_SPI}
key = "{PROBE_KEY}"
"#
    );
    let mn = format!(
        r#"[mn]
home_address = "{MN_HOME}"
home_agent = "{HA_ADDR}"
home_network = "10.10.0.0/24"
interface = "eth0"
tunnel_device = "mip0"
spi = {MN_SPI}
key = "{MN_KEY}"
lifetime = {lifetime}
trusted_agents = ["{FA_ADDR}"]
control_socket = "{d}/mn.sock"
{gso}"#
    );
    let hp = lab.dir.join("ha.toml");
    let mp = lab.dir.join("mn.toml");
    write_private(&hp, &ha)?;
    write_private(&mp, &mn)?;
    Ok((hp.display().to_string(), mp.display().to_string()))
}

/// `mipsec status --socket <sock> --json`, through `exe mipsec ...`.
pub fn status(exe: &Path, sock: &Path) -> Result<Value> {
    let out = Command::new(exe)
        .arg("mipsec")
        .arg("status")
        .arg("--socket")
        .arg(sock)
        .arg("--json")
        .stdin(Stdio::null())
        .output()?;
    if !out.status.success() {
        return Err(other(format!(
            "mipsec status --socket {}: exit {:?}: {}",
            sock.display(),
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| {
        other(format!(
            "status JSON: {e}: {}",
            String::from_utf8_lossy(&out.stdout)
        ))
    })
}

/// Sum of all values of the object at `path` (e.g. counters.drops).
pub fn sum_obj(v: &Value, path: &[&str]) -> u64 {
    let mut cur = v;
    for p in path {
        match cur.get(p) {
            Some(x) => cur = x,
            None => return 0,
        }
    }
    cur.as_object()
        .map(|o| o.values().filter_map(Value::as_u64).sum())
        .unwrap_or(0)
}

/// A u64 at `path`, 0 if absent.
pub fn get_u64(v: &Value, path: &[&str]) -> u64 {
    let mut cur = v;
    for p in path {
        match cur.get(p) {
            Some(x) => cur = x,
            None => return 0,
        }
    }
    cur.as_u64().unwrap_or(0)
}

/// Short human summary of an MN status.
pub fn mn_summary(v: &Value) -> String {
    let mode = v.get("mode").and_then(Value::as_str).unwrap_or("?");
    let reg = v
        .get("registered")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let coa = v.get("care_of").and_then(Value::as_str).unwrap_or("-");
    let rtt = v
        .get("last_registration_rtt_ms")
        .and_then(Value::as_f64)
        .map_or(String::new(), |r| format!(" reg-rtt={r:.2}ms"));
    // How user data travels: natively at home, through the agent (mode f), or in the
    // node's own tunnel, IP-in-IP or RFC 3519 UDP.
    let path = match mode {
        "home" => "",
        "foreign" => " via-fa",
        _ if v.get("udp_tunnel").and_then(Value::as_bool) == Some(true) => " udp-tunnel",
        _ if reg => " ip-in-ip",
        _ => "",
    };
    format!(
        "{mode}{}{path} coa={coa} ok={} failed={}{rtt}",
        if reg { " registered" } else { "" },
        get_u64(v, &["counters", "registrations_ok"]),
        get_u64(v, &["counters", "registrations_failed"])
    )
}

// ---- Registration Request ---------------------------------------------------------------

pub const FLAG_D: u8 = 0x20;
pub const FLAG_T: u8 = 0x02;

/// Fields of a Registration Request.
#[derive(Debug, Clone, Copy)]
pub struct Request {
    pub flags: u8,
    pub lifetime: u16,
    pub home_address: Ipv4Addr,
    pub home_agent: Ipv4Addr,
    pub care_of: Ipv4Addr,
    pub identification: u64,
}

/// RFC 5944 §5.7.1 timestamp identification: the 64-bit NTP time (seconds since 1900 in
/// the high 32 bits, the fraction in the low 32), so successive requests increase.
pub fn timestamp_id() -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs() + 2_208_988_800;
    let frac = (u64::from(now.subsec_nanos()) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

/// Encodes the request with an MN-HA Authentication extension (type 32) whose
/// authenticator is HMAC-MD5 over everything before it (RFC 5944 §3.5.1).
pub fn encode_request(r: &Request, spi: u32, key: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(52);
    m.push(1);
    m.push(r.flags);
    m.extend_from_slice(&r.lifetime.to_be_bytes());
    m.extend_from_slice(&r.home_address.octets());
    m.extend_from_slice(&r.home_agent.octets());
    m.extend_from_slice(&r.care_of.octets());
    m.extend_from_slice(&r.identification.to_be_bytes());
    m.push(32);
    m.push(20);
    m.extend_from_slice(&spi.to_be_bytes());
    // HMAC accepts keys of any length; the error branch cannot happen.
    let Ok(mut mac) = <Hmac<Md5> as Mac>::new_from_slice(key) else {
        return m;
    };
    mac.update(&m);
    m.extend_from_slice(&mac.finalize().into_bytes());
    m
}

/// Encodes a Registration Reply (type 3) with an MN-HA Authentication extension.
pub fn encode_reply(
    code: u8,
    lifetime: u16,
    home_address: Ipv4Addr,
    home_agent: Ipv4Addr,
    identification: u64,
    spi: u32,
    key: &[u8],
) -> Vec<u8> {
    let mut m = Vec::with_capacity(46);
    m.push(3);
    m.push(code);
    m.extend_from_slice(&lifetime.to_be_bytes());
    m.extend_from_slice(&home_address.octets());
    m.extend_from_slice(&home_agent.octets());
    m.extend_from_slice(&identification.to_be_bytes());
    m.push(32);
    m.push(20);
    m.extend_from_slice(&spi.to_be_bytes());
    let Ok(mut mac) = <Hmac<Md5> as Mac>::new_from_slice(key) else {
        return m;
    };
    mac.update(&m);
    m.extend_from_slice(&mac.finalize().into_bytes());
    m
}

/// Reply code of a Registration Reply (type 3), if `b` is one.
pub fn reply_code(b: &[u8]) -> Option<u8> {
    (b.len() >= 20 && b.first() == Some(&3))
        .then(|| b.get(1).copied())
        .flatten()
}

/// Sends `msg` from a socket bound to `src` to the HA's port 434 and waits for a reply.
pub fn exchange(
    src: Ipv4Addr,
    msg: &[u8],
    timeout: Duration,
) -> Result<Option<(Vec<u8>, Duration)>> {
    let s = UdpSocket::bind((src, 0))?;
    s.set_read_timeout(Some(timeout))?;
    let t0 = Instant::now();
    s.send_to(msg, SocketAddrV4::new(HA_ADDR, 434))?;
    let mut buf = [0u8; 1500];
    match s.recv(&mut buf) {
        Ok(n) => Ok(Some((buf.get(..n).unwrap_or(&[]).to_vec(), t0.elapsed()))),
        Err(_) => Ok(None),
    }
}

pub fn key_bytes(hex_key: &str) -> Vec<u8> {
    hex::decode(hex_key).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_layout_and_hmac() {
        let r = Request {
            flags: FLAG_D | FLAG_T,
            lifetime: 300,
            home_address: MN_HOME,
            home_agent: HA_ADDR,
            care_of: Ipv4Addr::new(10, 20, 0, 50),
            identification: 0x0102_0304_0506_0708,
        };
        let key = key_bytes(MN_KEY);
        let m = encode_request(&r, MN_SPI, &key);
        assert_eq!(m.len(), 24 + 2 + 4 + 16);
        assert_eq!(&m[..4], &[1, 0x22, 1, 44]);
        assert_eq!(&m[24..30], &[32, 20, 0, 0, 1, 0]);
        let mut mac = <Hmac<Md5> as Mac>::new_from_slice(&key).unwrap();
        mac.update(&m[..30]);
        mac.verify_slice(&m[30..]).unwrap();
    }

    /// The authenticator agrees with Python's hmac module (an independent HMAC-MD5).
    #[test]
    fn hmac_matches_python() {
        let r = Request {
            flags: FLAG_D | FLAG_T,
            lifetime: 0,
            home_address: PROBE_HOA,
            home_agent: HA_ADDR,
            care_of: Ipv4Addr::new(10, 40, 0, 10),
            identification: 0xdead_beef_0000_0001,
        };
        let m = encode_request(&r, PROBE_SPI, &key_bytes(PROBE_KEY));
        let script = format!(
            "import hmac,hashlib;print(hmac.new(bytes.fromhex('{PROBE_KEY}'),bytes.fromhex('{}'),hashlib.md5).hexdigest())",
            hex::encode(&m[..30])
        );
        let out = std::process::Command::new("python3")
            .args(["-c", &script])
            .output()
            .expect("python3 on PATH");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            hex::encode(&m[30..])
        );
    }
}
