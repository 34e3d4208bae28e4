//! The enterprise lab's VPN gateway: Debian's strongSwan 5.9.8, unmodified (charon with
//! kernel-libipsec, because this kernel has no ESP), configured only through files an
//! administrator writes: a `strongswan.conf` that switches kernel-libipsec on, and a
//! swanctl directory (`swanctl.conf`, `x509ca/`, `x509/`, `private/`) loaded with
//! `swanctl --load-all`. Charon runs in the `gw` namespace, in a private mount
//! namespace with its own /run (its pid file and stroke socket never meet another lab's).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::enterprise::{CA_DN, GW_DN, GW_ID, GW_INNER, GW_OUTER, MN_DN, MN_ID, PSK, TIA_POOL};
use crate::netns::{self, other, Result};
use crate::topo::{Lab, HA_ADDR};

/// How the gateway and the mobile node authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GwAuth {
    /// Pre-shared key, FQDN identities.
    Psk,
    /// Certificates from a lab CA (ECDSA P-256, PEM, made with strongSwan's `pki`),
    /// DN identities.
    Cert,
}

/// The gateway's directory (strongswan.conf, swanctl/, charon.log, charon.vici).
pub fn gw_dir(lab: &Lab) -> PathBuf {
    lab.dir.join("gw")
}

/// The child SA: VPN-1. The TIA may send UDP to the i-HA's port 434 (registrations) and
/// IP-in-IP (protocol 4, `ipencap`) to the i-HA; nothing else is in the policy.
fn children() -> String {
    format!(
        "    children {{
      mip {{
        # VPN-1 (RFC 5265 4.2): from the TIA, Mobile IP registrations and
        # IP-in-IP to the i-HA, and nothing else. The range also holds the
        # gateway's own inner address: kernel-libipsec installs a route per policy
        # and needs a local address inside the local selector for its source.
        local_ts = {HA_ADDR}-{GW_INNER}[udp/434], {HA_ADDR}-{GW_INNER}[ipencap]
        esp_proposals = aes256gcm16, aes128gcm16
      }}
    }}"
    )
}

/// swanctl.conf as an administrator writes it, for `auth`.
pub fn swanctl_conf(auth: GwAuth) -> String {
    let (local, remote, secrets) = match auth {
        GwAuth::Psk => (
            format!("local {{\n      auth = psk\n      id = {GW_ID}\n    }}"),
            format!("remote {{\n      auth = psk\n      id = {MN_ID}\n    }}"),
            format!(
                "secrets {{\n  ike-mn {{\n    id-gw = {GW_ID}\n    id-mn = {MN_ID}\n    secret = \"{PSK}\"\n  }}\n}}\n"
            ),
        ),
        GwAuth::Cert => (
            format!(
                "local {{\n      auth = pubkey\n      certs = vpnCert.pem\n      id = \"{GW_DN}\"\n    }}"
            ),
            "remote {\n      auth = pubkey\n      cacerts = caCert.pem\n      id = \"C=CH, O=mipsec lab, CN=*\"\n    }".to_string(),
            // private/vpnKey.pem is found by swanctl --load-creds; nothing else to say.
            String::new(),
        ),
    };
    let children = children();
    format!(
        "# RFC 5265 Figure 1: the enterprise's VPN gateway (remote access, virtual IPs).
connections {{
  rw {{
    local_addrs = {GW_OUTER}
    pools = tia
    mobike = yes
    proposals = aes256gcm16-prfsha256-x25519, aes128gcm16-prfsha256-ecp256
    {local}
    {remote}
{children}
  }}
}}

pools {{
  tia {{
    addrs = {TIA_POOL}
  }}
}}

{secrets}"
    )
}

/// Debian's plugin configuration plus kernel-libipsec at load priority 2 (loaded before
/// kernel-netlink, so it handles the IPsec SAs), a private vici socket and a log file.
pub(crate) fn strongswan_conf(d: &Path) -> String {
    let d = d.display();
    format!(
        "charon {{
 load_modular = yes
 retransmit_timeout = 1.0
 retransmit_tries = 3
 plugins {{
  include /etc/strongswan.d/charon/*.conf
  kernel-libipsec {{ load = 2 }}
  vici {{ socket = unix://{d}/charon.vici }}
  farp {{ load = no }}
  bypass-lan {{ load = no }}
  dhcp {{ load = no }}
  tpm {{ load = no }}
  forecast {{ load = no }}
  resolve {{ load = no }}
 }}
 filelog {{ log {{ path = {d}/charon.log
  flush_line = yes
  append = yes
  time_format = %T
  time_add_ms = yes
  default = 1
  ike = 2
  cfg = 1 }} }}
 syslog {{ daemon {{ default = -1 }} }}
}}
"
    )
}

/// The gateway's charon.log from byte `from` on (its lines start with the time of day,
/// `%T` with milliseconds).
pub fn log_from(lab: &Lab, from: usize) -> String {
    let s = std::fs::read(gw_dir(lab).join("charon.log")).unwrap_or_default();
    String::from_utf8_lossy(s.get(from..).unwrap_or(&[])).into_owned()
}

/// The length of the gateway's charon.log, to slice it later with `log_from`.
pub fn log_len(lab: &Lab) -> usize {
    std::fs::metadata(gw_dir(lab).join("charon.log")).map_or(0, |m| m.len() as usize)
}

/// The time of day (seconds, UTC) a charon.log line starts with (`12:34:56.789 ...`).
pub fn log_line_time(line: &str) -> Option<f64> {
    let t = line.split_whitespace().next()?;
    let mut p = t.split(':');
    let h: f64 = p.next()?.parse().ok()?;
    let m: f64 = p.next()?.parse().ok()?;
    let s: f64 = p.next()?.parse().ok()?;
    (p.next().is_none() && h < 24.0 && m < 60.0 && s < 61.0).then_some(h * 3600.0 + m * 60.0 + s)
}

fn pki(args: &[&str], out: &Path) -> Result<()> {
    let o = Command::new("pki")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| other(format!("pki: {e}")))?;
    if !o.status.success() {
        return Err(other(format!(
            "pki {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        )));
    }
    std::fs::write(out, o.stdout)?;
    Ok(())
}

/// The lab CA, the gateway's and the MN's certificates and keys, in PEM, laid out as
/// strongSwan's documentation does: `x509ca/caCert.pem`, `x509/vpnCert.pem`,
/// `private/vpnKey.pem` under `dir`. The CA key and the MN's files (mnCert.pem,
/// mnKey.pem, a copy of caCert.pem) go to `offline`, which is not the gateway's.
pub fn make_pki(dir: &Path, offline: &Path) -> Result<()> {
    for sub in ["x509ca", "x509", "private"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    std::fs::create_dir_all(offline)?;
    let ca_key = offline.join("caKey.pem");
    let ca = dir.join("x509ca/caCert.pem");
    let s = |p: &Path| p.display().to_string();
    pki(
        &[
            "--gen",
            "--type",
            "ecdsa",
            "--size",
            "256",
            "--outform",
            "pem",
        ],
        &ca_key,
    )?;
    pki(
        &[
            "--self",
            "--ca",
            "--lifetime",
            "3650",
            "--in",
            &s(&ca_key),
            "--type",
            "ecdsa",
            "--dn",
            CA_DN,
            "--outform",
            "pem",
        ],
        &ca,
    )?;
    for (dn, san, key, cert, flag) in [
        (
            GW_DN,
            GW_ID,
            dir.join("private/vpnKey.pem"),
            dir.join("x509/vpnCert.pem"),
            "serverAuth",
        ),
        (
            MN_DN,
            MN_ID,
            offline.join("mnKey.pem"),
            offline.join("mnCert.pem"),
            "clientAuth",
        ),
    ] {
        pki(
            &[
                "--gen",
                "--type",
                "ecdsa",
                "--size",
                "256",
                "--outform",
                "pem",
            ],
            &key,
        )?;
        let req = dir.join(format!("{san}.req.pem"));
        pki(
            &[
                "--req",
                "--type",
                "priv",
                "--in",
                &s(&key),
                "--dn",
                dn,
                "--san",
                san,
                "--outform",
                "pem",
            ],
            &req,
        )?;
        pki(
            &[
                "--issue",
                "--cacert",
                &s(&ca),
                "--cakey",
                &s(&ca_key),
                "--type",
                "pkcs10",
                "--in",
                &s(&req),
                "--lifetime",
                "1825",
                "--flag",
                flag,
                "--outform",
                "pem",
            ],
            &cert,
        )?;
        let _ = std::fs::remove_file(req);
    }
    // The CA key has no business on the gateway.
    std::fs::copy(&ca, offline.join("caCert.pem"))?;
    Ok(())
}

/// Where the CA key and the MN's certificate and key are kept: next to the gateway's
/// directory `gw`, not inside it.
pub fn mn_pki_dir(gw: &Path) -> PathBuf {
    gw.with_file_name("pki-offline")
}

/// Writes the gateway's files for `auth` into `dir` (strongswan.conf and swanctl/).
pub fn write_gateway(dir: &Path, auth: GwAuth) -> Result<()> {
    let sw = dir.join("swanctl");
    std::fs::create_dir_all(&sw)?;
    if auth == GwAuth::Cert {
        make_pki(&sw, &mn_pki_dir(dir))?;
    }
    crate::mip::write_private(&sw.join("swanctl.conf"), &swanctl_conf(auth))?;
    std::fs::write(dir.join("strongswan.conf"), strongswan_conf(dir))?;
    Ok(())
}

/// `swanctl <args>` against the lab's gateway (its vici socket, its swanctl directory).
pub fn swanctl(lab: &Lab, args: &[&str]) -> Result<String> {
    swanctl_at(&gw_dir(lab), args)
}

/// `swanctl <args>` against the charon whose files are in `d`.
pub fn swanctl_at(d: &Path, args: &[&str]) -> Result<String> {
    let uri = format!("unix://{}/charon.vici", d.display());
    let o = Command::new("swanctl")
        .args(args)
        .args(["--uri", &uri])
        .env("SWANCTL_DIR", d.join("swanctl"))
        .stdin(Stdio::null())
        .output()
        .map_err(|e| other(format!("swanctl: {e}")))?;
    if !o.status.success() {
        return Err(other(format!(
            "swanctl {args:?}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// Writes the gateway's configuration, starts charon in the `gw` namespace (process
/// name `charon`) and loads it with `swanctl --load-all`. Returns the time from spawn
/// to a loaded configuration.
pub fn start_gateway(lab: &mut Lab, auth: GwAuth) -> Result<Duration> {
    let d = gw_dir(lab);
    write_gateway(&d, auth)?;
    let t0 = Instant::now();
    spawn_charon(lab, "gw", "charon", &d)?;
    load(lab, "charon", &d, t0)?;
    Ok(t0.elapsed())
}

/// Runs charon with `dir/strongswan.conf` in namespace `role`, in a private mount
/// namespace whose /run is an empty tmpfs; `dir` (under the lab's /run directory) is
/// bound back in, so its config, log and vici socket stay where they are. /mnt is only
/// the private namespace's stepping stone; nothing is mounted on the host.
pub(crate) fn spawn_charon(lab: &mut Lab, role: &str, name: &str, dir: &Path) -> Result<()> {
    let ds = dir.display().to_string();
    let script = format!(
        "mount --bind {ds} /mnt && mount -t tmpfs tmpfs /run && mkdir -p {ds} && \
         mount --bind /mnt {ds} && STRONGSWAN_CONF={ds}/strongswan.conf exec /usr/lib/ipsec/charon"
    );
    lab.spawn_prog(
        role,
        name,
        "unshare".as_ref(),
        &["-m", "--propagation", "private", "sh", "-c", &script],
    )?;
    Ok(())
}

/// `swanctl --load-all` against the charon in `dir` until it answers (15 s at most).
pub(crate) fn load(lab: &mut Lab, name: &str, dir: &Path, t0: Instant) -> Result<()> {
    loop {
        std::thread::sleep(Duration::from_millis(50));
        if !lab.is_running(name) {
            return Err(other(format!(
                "{name} exited at start:\n{}\n{}",
                lab.log_tail(name, 20),
                std::fs::read_to_string(dir.join("charon.log")).unwrap_or_default()
            )));
        }
        match swanctl_at(dir, &["--load-all"]) {
            Ok(_) => return Ok(()),
            Err(e) if t0.elapsed() > Duration::from_secs(15) => {
                return Err(other(format!("{name} did not load: {e}")))
            }
            Err(_) => {}
        }
    }
}

/// strongSwan's own charon as the mobile node's client, certificate variant: the MN's
/// DN identity, its PEM certificate and key and the lab CA in a swanctl directory,
/// asking for a virtual IP and the VPN-1 selectors. Runs in the `mn` namespace
/// (process `sw-client`); returns once `swanctl --initiate` has brought the CHILD_SA
/// up, with the time that took.
pub fn start_strongswan_client(lab: &mut Lab) -> Result<Duration> {
    let d = lab.dir.join("swclient");
    let sw = d.join("swanctl");
    let pki_dir = mn_pki_dir(&gw_dir(lab));
    for sub in ["x509ca", "x509", "private"] {
        std::fs::create_dir_all(sw.join(sub))?;
    }
    std::fs::copy(pki_dir.join("caCert.pem"), sw.join("x509ca/caCert.pem"))?;
    std::fs::copy(pki_dir.join("mnCert.pem"), sw.join("x509/mnCert.pem"))?;
    std::fs::copy(pki_dir.join("mnKey.pem"), sw.join("private/mnKey.pem"))?;
    let conf = format!(
        "connections {{
  enterprise {{
    remote_addrs = {GW_OUTER}
    vips = 0.0.0.0
    proposals = aes256gcm16-prfsha256-x25519
    local {{
      auth = pubkey
      certs = mnCert.pem
      id = \"{MN_DN}\"
    }}
    remote {{
      auth = pubkey
      id = \"{GW_DN}\"
    }}
    children {{
      mip {{
        # Whatever the gateway allows (it narrows to VPN-1). Asking for exactly
        # {HA_ADDR}/32 would narrow the gateway's selector to a range without a
        # gateway address, which kernel-libipsec cannot route (see children()).
        remote_ts = 0.0.0.0/0
        esp_proposals = aes256gcm16
      }}
    }}
  }}
}}
"
    );
    crate::mip::write_private(&sw.join("swanctl.conf"), &conf)?;
    std::fs::write(d.join("strongswan.conf"), strongswan_conf(&d))?;
    let t0 = Instant::now();
    spawn_charon(lab, "mn", "sw-client", &d)?;
    load(lab, "sw-client", &d, t0)?;
    let t1 = Instant::now();
    swanctl_at(&d, &["--initiate", "--child", "mip", "--timeout", "10"])?;
    Ok(t1.elapsed())
}

/// The mobile node's `mipsec vpn` configuration for an MN whose physical interface is
/// `eth0`; control socket `<lab>/vpn.sock`. With [`GwAuth::Cert`] it is what the MN's
/// user writes for the gateway admin's certificate config: the MN's DN as `local_id`,
/// the gateway's DN as `remote_id`, and the PEM files the admin handed out
/// (certificate, key, lab CA), read from [`mn_pki_dir`] where [`make_pki`] left them.
pub fn vpn_config(lab: &Lab, auth: GwAuth) -> Result<(String, PathBuf)> {
    let d = lab.dir.display();
    let creds = match auth {
        GwAuth::Psk => {
            format!("local_id = \"{MN_ID}\"\nremote_id = \"{GW_ID}\"\npsk = \"{PSK}\"\n")
        }
        GwAuth::Cert => {
            let p = mn_pki_dir(&gw_dir(lab));
            format!(
                "local_id = \"{MN_DN}\"\nremote_id = \"{GW_DN}\"\ncert = \"{}\"\nkey = \"{}\"\nca = [\"{}\"]\n",
                p.join("mnCert.pem").display(),
                p.join("mnKey.pem").display(),
                p.join("caCert.pem").display()
            )
        }
    };
    let cfg = format!(
        r#"gateway = "{GW_OUTER}"
interface = "eth0"
{creds}tun = "vpn0"
control = "{d}/vpn.sock"
dpd_interval = 10
retransmit_ms = 500
retransmit_tries = 4
reconnect_max = 4
"#
    );
    let p = lab.dir.join("vpn.toml");
    crate::mip::write_private(&p, &cfg)?;
    Ok((p.display().to_string(), lab.dir.join("vpn.sock")))
}

/// The JSON the `mipsec vpn` control socket answers to `status`.
pub fn vpn_status(sock: &Path) -> Result<serde_json::Value> {
    use std::io::Read;
    use std::io::Write;
    let mut s = std::os::unix::net::UnixStream::connect(sock)?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    // Ask, rather than wait for the server's quiet-client timeout (200 ms), so the time to
    // a TIA measured by polling this is the client's, not the poll's.
    s.write_all(b"status\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    serde_json::from_str(&out).map_err(|e| other(format!("vpn status: {e}: {out}")))
}

/// Starts `mipsec vpn` (PSK) in the MN namespace and waits until it holds a TIA.
/// Returns the TIA and the time from spawn.
pub fn start_vpn(lab: &mut Lab) -> Result<(std::net::Ipv4Addr, Duration)> {
    start_vpn_auth(lab, GwAuth::Psk)
}

/// [`start_vpn`] with the credentials of `auth` (see [`vpn_config`]).
pub fn start_vpn_auth(lab: &mut Lab, auth: GwAuth) -> Result<(std::net::Ipv4Addr, Duration)> {
    let (cfg, sock) = vpn_config(lab, auth)?;
    let t0 = Instant::now();
    lab.spawn("mn", "vpn", &["mipsec", "vpn", "--config", &cfg])?;
    while t0.elapsed() < Duration::from_secs(15) {
        if !lab.is_running("vpn") {
            break;
        }
        if let Ok(v) = vpn_status(&sock) {
            if let Some(t) = v["tia"].as_str().and_then(|t| t.parse().ok()) {
                return Ok((t, t0.elapsed()));
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(other(format!(
        "mipsec vpn got no TIA:\n{}\n--- charon ---\n{}",
        lab.log_tail("vpn", 30),
        netns::run(
            "tail",
            &[
                "-n",
                "40",
                &gw_dir(lab).join("charon.log").display().to_string()
            ]
        )
        .unwrap_or_default()
    )))
}

#[cfg(test)]
mod tests {
    use super::log_line_time;

    #[test]
    fn charon_log_times() {
        let t = log_line_time("01:49:22.224 08[IKE] inbound CHILD_SA mip{2} established");
        assert!((t.unwrap() - (3600.0 + 49.0 * 60.0 + 22.224)).abs() < 1e-9);
        assert_eq!(log_line_time("08[IKE] no time here"), None);
        assert_eq!(log_line_time("25:00:00.000 x"), None);
        assert_eq!(log_line_time("01:02 x"), None);
        assert_eq!(log_line_time(""), None);
    }
}
