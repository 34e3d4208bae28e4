//! Network-namespace lab: an unmodified strongSwan 5.9.8 gateway (charon with
//! kernel-libipsec loaded before kernel-netlink, because this kernel has no ESP), an
//! internal host behind it, and our client (`mipsec-vpn`) in its own namespace, directly on
//! the gateway's network or behind an nftables masquerade router.
//!
//! ```text
//!  cl (mipsec-vpn) --[192.0.2.0/24]-- gw (charon) --[10.1.0.0/16]-- in (10.1.0.2)
//!  cl --[192.168.1.0/24]-- rt (masquerade) --[192.0.2.0/24]-- gw      (with `nat`)
//! ```
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    dead_code,
    clippy::disallowed_methods
)]

pub mod ourgw;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const PSK: &str = "correct horse battery staple";
pub const INTERNAL: &str = "10.1.0.2";

use testsupport::{fresh_prefix, Charon, Inside, Topology};
#[allow(unused_imports)] // not every test binary uses every helper
pub use testsupport::{in_ns, ip_n, ns_exec, sh, stop};

/// True when the lab can run; a loud SKIP when MIPSEC_SKIP_LAB=1; a failure otherwise.
pub fn need_lab(what: &str) -> bool {
    let root = testsupport::is_root();
    let tools = [
        "/usr/lib/ipsec/charon",
        "/usr/sbin/swanctl",
        "/usr/bin/iperf3",
    ]
    .iter()
    .all(|p| std::path::Path::new(p).exists());
    if root && tools {
        return true;
    }
    if std::env::var("MIPSEC_SKIP_LAB").as_deref() == Ok("1") {
        // Straight to the process's stderr: libtest's capture would hide an eprintln!.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "\n*** SKIP [vpnc lab] {what}: needs root, charon and swanctl (MIPSEC_SKIP_LAB=1) ***"
        );
        return false;
    }
    panic!("vpnc lab test {what} needs root and strongSwan (charon, swanctl; scripts/install-deps.sh); set MIPSEC_SKIP_LAB=1 to skip");
}

#[derive(Default)]
pub struct GwOpts<'a> {
    /// Extra lines inside `connections.rw`.
    pub conn_extra: &'a str,
    /// Extra lines inside `connections.rw.children.net`.
    pub child_extra: &'a str,
    pub nat: bool,
    /// No charon: the caller runs `ourgw::spawn` instead.
    pub no_charon: bool,
    /// Certificates both ways (ikev2's test PKI) instead of the PSK.
    pub certs: bool,
    /// The `local {..} remote {..}` blocks of `connections.rw`, instead of PSK or `certs`.
    pub auth: Option<String>,
    /// Credentials (x509/, x509ca/, private/) copied next to swanctl.conf, where swanctl
    /// looks for them.
    pub swanctl_dir: Option<PathBuf>,
}

/// The ikev2 crate's test PKI: CA, gateway (ECDSA) and client (RSA) certificates.
pub fn pki() -> String {
    format!("{}/../ikev2/tests/data", env!("CARGO_MANIFEST_DIR"))
}

pub struct Lab {
    /// The name prefix of its namespaces and interfaces (`testsupport::Topology`).
    pub name: String,
    pub dir: PathBuf,
    charon: Option<Charon>,
    client: Option<Child>,
    /// strongSwan's own charon as the client (`start_strongswan_client`).
    sw_client: Option<Charon>,
    extra: Vec<Child>,
    pub nat: bool,
    /// Dropped after the processes above: deletes the namespaces.
    topo: Topology,
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            stop(c);
        }
        for c in self.extra.drain(..) {
            stop(c);
        }
        self.stop_sw_client();
        if let Some(mut c) = self.charon.take() {
            c.stop();
        }
        if std::thread::panicking() {
            eprintln!("lab files kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Lab {
    pub fn gw(&self) -> String {
        self.topo.gw()
    }
    pub fn cl(&self) -> String {
        self.topo.cl()
    }
    pub fn rt(&self) -> String {
        self.topo.rt()
    }
    pub fn inner(&self) -> String {
        self.topo.inner()
    }
    /// The client's physical interface.
    pub fn cl_if(&self) -> String {
        self.topo.cl_if()
    }
    pub fn cl_ip(&self) -> &'static str {
        self.topo.cl_ip()
    }
    pub fn swanctl(&self, args: &[&str]) -> String {
        let mut a = vec!["swanctl"];
        a.extend_from_slice(args);
        let uri = testsupport::vici_uri(&self.dir);
        a.extend_from_slice(&["--uri", &uri]);
        sh(&a).unwrap()
    }
    pub fn charon_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("charon.log")).unwrap_or_default()
    }
    pub fn client_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("client.log")).unwrap_or_default()
    }
    pub fn logs(&self) -> String {
        format!(
            "--- client log ---\n{}\n--- charon log (tail) ---\n{}",
            self.client_log(),
            tail(&self.charon_log(), 150)
        )
    }
    pub fn ns(&self, ns: &str, args: &[&str]) -> Result<String, String> {
        ns_exec(ns, args)
    }

    pub fn up(tag: &str, opts: GwOpts) -> Lab {
        let name = fresh_prefix("vp", tag);
        let dir = std::env::temp_dir().join(format!("vpnc-lab-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let topo = Topology::build(&name, opts.nat, Inside::Host).unwrap();
        let mut lab = Lab {
            name: name.clone(),
            dir,
            charon: None,
            client: None,
            sw_client: None,
            extra: Vec::new(),
            nat: opts.nat,
            topo,
        };
        if !opts.nat {
            // a second address on the same link must survive the first one's removal
            let promote = format!("net.ipv4.conf.{name}a.promote_secondaries=1");
            let cl = lab.cl();
            for key in ["net.ipv4.conf.all.promote_secondaries=1", promote.as_str()] {
                ns_exec(&cl, &["sysctl", "-qw", key]).unwrap();
            }
        }
        let d = pki();
        let auth = if let Some(a) = &opts.auth {
            a.clone()
        } else if opts.certs {
            std::fs::create_dir_all(lab.dir.join("pkcs8")).unwrap();
            std::fs::copy(format!("{d}/gw.key.p8"), lab.dir.join("pkcs8/gw.key.p8")).unwrap();
            format!(
                "local {{ auth = pubkey\n certs = {d}/gw.der }}\n remote {{ auth = pubkey\n id = client.example }}"
            )
        } else {
            "local { auth = psk\n id = gw.example }\n remote { auth = psk\n id = client.example }"
                .to_string()
        };
        let authorities = if opts.certs {
            format!("authorities {{ testca {{ cacert = {d}/ca.der }} }}")
        } else {
            String::new()
        };
        let swanctl = format!(
            r#"
connections {{
  rw {{
    local_addrs = 192.0.2.2
    pools = p4
    mobike = yes
    {conn}
    {auth}
    children {{ net {{ local_ts = 10.1.0.0/16
                     esp_proposals = aes256gcm16,aes128gcm16
                     {child} }} }}
  }}
}}
pools {{ p4 {{ addrs = 10.99.0.0/24
             dns = 10.99.0.1 }} }}
secrets {{ ike-a {{ id-a = client.example
                  id-b = gw.example
                  secret = "{PSK}" }} }}
{authorities}
"#,
            conn = opts.conn_extra,
            child = opts.child_extra
        );
        std::fs::write(lab.dir.join("swanctl.conf"), swanctl).unwrap();
        let d = lab.dir.display();
        // Debian's plugin configuration, with kernel-libipsec switched on at a higher
        // priority than kernel-netlink (so it is loaded first and handles the IPsec SAs).
        let conf = format!(
            "charon {{\n load_modular = yes\n retransmit_timeout = 1.0\n retransmit_tries = 3\n \
             plugins {{\n  include /etc/strongswan.d/charon/*.conf\n  kernel-libipsec {{ load = 2 }}\n  \
             vici {{ socket = unix://{d}/charon.vici }}\n  farp {{ load = no }}\n  bypass-lan {{ load = no }}\n  \
             dhcp {{ load = no }}\n  tpm {{ load = no }}\n  forecast {{ load = no }}\n }}\n \
             filelog {{ log {{ path = {d}/charon.log\n flush_line = yes\n append = yes\n default = 1\n ike = 2\n cfg = 1 }} }}\n \
             syslog {{ daemon {{ default = -1 }} }}\n}}\n"
        );
        std::fs::write(lab.dir.join("strongswan.conf"), conf).unwrap();
        if let Some(src) = &opts.swanctl_dir {
            let (src, dst) = (
                format!("{}/.", src.display()),
                lab.dir.display().to_string(),
            );
            sh(&["cp", "-r", &src, &dst]).unwrap();
        }
        if !opts.no_charon {
            lab.start_charon();
        }
        // internal host: an iperf3 server for the bench
        if !std::path::Path::new("/usr/bin/iperf3").exists() {
            return lab;
        }
        let srv = Command::new("ip")
            .args(["netns", "exec", &lab.inner(), "iperf3", "-s", "-p", "5201"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        lab.extra.push(srv);
        lab
    }

    pub fn start_charon(&mut self) {
        self.charon = Some(Charon::start(&self.gw(), &self.dir).unwrap_or_else(|e| panic!("{e}")));
    }

    /// Kill charon (no Delete sent: the gateway "crashes") and start a fresh one.
    pub fn restart_charon(&mut self) {
        if let Some(mut c) = self.charon.take() {
            c.kill();
        }
        // libipsec's TUN device goes with the process; give the kernel a moment.
        std::thread::sleep(Duration::from_millis(300));
        self.start_charon();
    }

    /// Client configuration; `extra` lines are appended. A PSK unless `extra` sets `cert`.
    pub fn client_config(&self, extra: &str) -> PathBuf {
        let auth = if extra.contains("cert =") {
            String::new()
        } else {
            format!("remote_id = \"gw.example\"\npsk = \"{PSK}\"\n")
        };
        let text = format!(
            "gateway = \"192.0.2.2\"\ninterface = \"{}\"\nlocal_id = \"client.example\"\n\
             {auth}tun = \"{}t\"\ncontrol = \"{}/vpn.sock\"\ndpd_interval = 3\nretransmit_ms = 500\n\
             retransmit_tries = 4\nreconnect_max = 4\n",
            self.cl_if(),
            self.name,
            self.dir.display()
        );
        // A key set in `extra` replaces the default line above.
        let key = |l: &str| l.split('=').next().map(|k| k.trim().to_string());
        let overridden: Vec<String> = extra.lines().filter_map(key).collect();
        let mut text: String = text
            .lines()
            .filter(|l| !key(l).is_some_and(|k| !k.is_empty() && overridden.contains(&k)))
            .map(|l| format!("{l}\n"))
            .collect();
        text.push_str(extra);
        text.push('\n');
        let p = self.dir.join("vpn.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    pub fn tun(&self) -> String {
        format!("{}t", self.name)
    }

    /// Start `mipsec-vpn` in the client namespace.
    pub fn start_client(&mut self, extra: &str) {
        let cfg = self.client_config(extra);
        self.spawn_client(&cfg);
    }

    /// Start `mipsec-vpn` with the configuration file `cfg` (its log is appended to).
    pub fn spawn_client(&mut self, cfg: &std::path::Path) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("client.log"))
            .unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.cl()])
            .arg(env!("CARGO_BIN_EXE_mipsec-vpn"))
            .arg("--config")
            .arg(cfg)
            .env("RUST_LOG", "info,vpnc=debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.client = Some(child);
    }

    /// SIGKILL our client: no cleanup at all (a crash).
    pub fn kill9_client(&mut self) {
        if let Some(mut c) = self.client.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kill charon (no Delete sent) and leave it down.
    pub fn kill_charon(&mut self) {
        if let Some(mut c) = self.charon.take() {
            c.kill();
        }
    }

    /// Stop our client (SIGTERM: it deletes the IKE SA and removes its routes and rule).
    pub fn stop_client(&mut self) {
        if let Some(c) = self.client.take() {
            stop(c);
        }
    }

    /// Start strongSwan's own charon as the client in the client namespace (kernel-libipsec
    /// as well, virtual IP requested, same PSK and ESP suite) and bring the tunnel up.
    pub fn start_strongswan_client(&mut self, esp: &str) {
        let d = self.dir.join("swclient");
        std::fs::create_dir_all(&d).unwrap();
        let dd = d.display().to_string();
        let conf = format!(
            "charon {{\n load_modular = yes\n plugins {{\n  include /etc/strongswan.d/charon/*.conf\n  \
             kernel-libipsec {{ load = 2 }}\n  vici {{ socket = unix://{dd}/charon.vici }}\n  farp {{ load = no }}\n  \
             bypass-lan {{ load = no }}\n  dhcp {{ load = no }}\n  tpm {{ load = no }}\n  forecast {{ load = no }}\n  \
             resolve {{ load = no }}\n }}\n filelog {{ log {{ path = {dd}/charon.log\n default = 1 }} }}\n \
             syslog {{ daemon {{ default = -1 }} }}\n}}\n"
        );
        std::fs::write(d.join("strongswan.conf"), conf).unwrap();
        let swanctl = format!(
            r#"
connections {{
  home {{
    remote_addrs = 192.0.2.2
    vips = 0.0.0.0
    proposals = aes256gcm16-prfsha256-x25519
    local {{ auth = psk
            id = client.example }}
    remote {{ auth = psk
             id = gw.example }}
    children {{ home {{ remote_ts = 10.1.0.0/16
                      esp_proposals = {esp} }} }}
  }}
}}
secrets {{ ike-a {{ id-a = client.example
                  id-b = gw.example
                  secret = "{PSK}" }} }}
"#
        );
        std::fs::write(d.join("swanctl.conf"), swanctl).unwrap();
        let client = Charon::start(&self.cl(), &d).unwrap_or_else(|e| panic!("client {e}"));
        client.swanctl(&["--initiate", "--child", "home"]).unwrap();
        self.sw_client = Some(client);
    }

    /// Process ids: our client, the gateway's charon, strongSwan's client.
    pub fn client_pid(&self) -> Option<u32> {
        self.client.as_ref().map(Child::id)
    }
    pub fn gw_pid(&self) -> Option<u32> {
        self.charon.as_ref().and_then(Charon::pid)
    }
    pub fn sw_client_pid(&self) -> Option<u32> {
        self.sw_client.as_ref().and_then(Charon::pid)
    }

    /// Stop strongSwan's client (`start_strongswan_client`).
    pub fn stop_sw_client(&mut self) {
        if let Some(mut c) = self.sw_client.take() {
            c.stop();
        }
    }

    /// The client's status (JSON from its control socket).
    pub fn status(&self) -> Option<serde_json::Value> {
        use std::io::{Read, Write};
        let mut s = std::os::unix::net::UnixStream::connect(self.dir.join("vpn.sock")).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        s.write_all(b"status\n").ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Wait until the client reports `pred` or panic after `limit`.
    pub fn wait_status(
        &self,
        limit: Duration,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let end = Instant::now() + limit;
        loop {
            if let Some(s) = self.status() {
                if pred(&s) {
                    return s;
                }
                if Instant::now() > end {
                    panic!("timeout waiting for {what}: {s}\n{}", self.logs());
                }
            } else if Instant::now() > end {
                panic!("timeout waiting for {what}: no status\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn wait_up(&self) -> serde_json::Value {
        self.wait_status(Duration::from_secs(15), "tunnel up", |s| {
            s["state"] == "established"
                && s["tia"].is_string()
                && s["child_sas"].as_u64() >= Some(1)
        })
    }

    /// `ping -c n` from the client to the internal host; true if any answer came back
    /// (ping exits 0 on the first reply).
    pub fn ping(&self, n: u32) -> bool {
        self.ns(
            &self.cl(),
            &[
                "ping",
                "-c",
                &n.to_string(),
                "-i",
                "0.2",
                "-W",
                "1",
                "-q",
                INTERNAL,
            ],
        )
        .is_ok()
    }

    /// Start an iperf3 TCP stream of `secs` seconds (rate-limited so the lab stays light).
    pub fn iperf_start(&mut self, secs: u32, rate: &str) -> Child {
        self.iperf_start_with(secs, rate, &[])
    }

    /// [`iperf_start`](Self::iperf_start) with more iperf3 arguments (`-R`: the
    /// internal host sends).
    pub fn iperf_start_with(&mut self, secs: u32, rate: &str, extra: &[&str]) -> Child {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.cl(),
                "iperf3",
                "-c",
                INTERNAL,
                "-p",
                "5201",
                "-J",
            ])
            .args([
                "-t",
                &secs.to_string(),
                "-b",
                rate,
                "--connect-timeout",
                "3000",
            ])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Wait for iperf3 and return (received bytes, per-interval received bytes).
    pub fn iperf_finish(&self, c: Child) -> (u64, Vec<u64>, f64) {
        let o = c.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&o.stdout);
        let v: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("iperf3 output ({e}): {text}\n{}", self.logs()));
        assert!(
            o.status.success() && v.get("error").is_none(),
            "iperf3 failed: {}\n{}",
            v["error"],
            self.logs()
        );
        let recv = v["end"]["sum_received"]["bytes"].as_u64().unwrap_or(0);
        let bps = v["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .unwrap_or(0.0);
        let iv = v["intervals"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|i| i["sum"]["bytes"].as_u64().unwrap_or(0))
                    .collect()
            })
            .unwrap_or_default();
        (recv, iv, bps)
    }

    /// The IKE SA line(s) charon lists.
    pub fn list_sas(&self) -> String {
        self.swanctl(&["--list-sas"])
    }
}

pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// CPU seconds (user + system) a process has used so far.
pub fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz
}

/// The `Udp: RcvbufErrors` counter of a namespace (datagrams dropped at a full socket buffer).
pub fn udp_rcvbuf_errors(lab: &Lab, ns: &str) -> u64 {
    let snmp = lab.ns(ns, &["cat", "/proc/net/snmp"]).unwrap_or_default();
    let udp: Vec<&str> = snmp.lines().filter(|l| l.starts_with("Udp:")).collect();
    let (Some(h), Some(v)) = (udp.first(), udp.get(1)) else {
        return 0;
    };
    h.split_whitespace()
        .zip(v.split_whitespace())
        .find(|(k, _)| *k == "RcvbufErrors")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// A TCP stream from the client namespace to the internal host, made by the test itself
/// (no external tool that something else could kill).
pub struct TcpStreamTest {
    server: std::thread::JoinHandle<(Vec<u64>, Option<String>)>,
    client: std::thread::JoinHandle<Result<u64, String>>,
    secs: u32,
}

impl Lab {
    /// Start a TCP stream of `secs` seconds at about `mbit` Mbit/s to 10.1.0.2:5300.
    pub fn tcp_start(&self, secs: u32, mbit: u32) -> TcpStreamTest {
        use std::io::{Read, Write};
        let (tx, rx) = std::sync::mpsc::channel();
        let server = in_ns(&self.inner(), move || {
            let l = std::net::TcpListener::bind("10.1.0.2:5300").unwrap();
            tx.send(()).unwrap();
            let (mut c, _) = l.accept().unwrap();
            c.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
            let start = Instant::now();
            let mut iv = Vec::new();
            let mut buf = vec![0u8; 65536];
            loop {
                match c.read(&mut buf) {
                    Ok(0) => return (iv, None),
                    Ok(n) => {
                        let i = start.elapsed().as_secs() as usize;
                        if iv.len() <= i {
                            iv.resize(i + 1, 0);
                        }
                        iv[i] += n as u64;
                    }
                    Err(e) => return (iv, Some(format!("server read: {e}"))),
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(5)).unwrap();
        let client = in_ns(&self.cl(), move || {
            let addr: std::net::SocketAddr = "10.1.0.2:5300".parse().unwrap();
            let mut c = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(3))
                .map_err(|e| format!("connect: {e}"))?;
            c.set_write_timeout(Some(Duration::from_secs(15))).unwrap();
            let chunk = vec![0x5au8; 16384];
            let bytes_per_sec = u64::from(mbit) * 1_000_000 / 8;
            let start = Instant::now();
            let mut sent = 0u64;
            while start.elapsed() < Duration::from_secs(u64::from(secs)) {
                c.write_all(&chunk)
                    .map_err(|e| format!("write after {sent} bytes: {e}"))?;
                sent += chunk.len() as u64;
                let due = Duration::from_secs_f64(sent as f64 / bytes_per_sec as f64);
                if let Some(wait) = due.checked_sub(start.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
            c.shutdown(std::net::Shutdown::Write)
                .map_err(|e| e.to_string())?;
            // Wait for the server to finish reading (it closes after EOF).
            let mut b = [0u8; 1];
            let _ = c.read(&mut b);
            Ok(sent)
        });
        TcpStreamTest {
            server,
            client,
            secs,
        }
    }

    /// Wait for the stream; panics (with logs) unless every byte arrived. Returns
    /// (bytes, bytes per 1-s interval at the receiver).
    pub fn tcp_finish(&self, t: TcpStreamTest) -> (u64, Vec<u64>) {
        let sent = t.client.join().unwrap();
        let (iv, err) = t.server.join().unwrap();
        let got: u64 = iv.iter().sum();
        let sent = sent.unwrap_or_else(|e| {
            panic!(
                "TCP stream broke: {e} ({got} received, {iv:?})\n{}",
                self.logs()
            )
        });
        assert!(err.is_none(), "{err:?} {iv:?}\n{}", self.logs());
        assert_eq!(got, sent, "{iv:?}\n{}", self.logs());
        let mut iv = iv;
        iv.truncate(t.secs as usize);
        (got, iv)
    }
}

impl Lab {
    /// A second link between the client and the gateway, 198.51.100.0/24: the veth
    /// `<name>x` in the client's namespace (with `client_addr`, e.g. "198.51.100.1/24",
    /// if given) and `<name>y` (198.51.100.2/24) in the gateway's, both up, with the
    /// client's reverse-path filter off (the gateway may answer through the link that is
    /// not the client's route back to it). Returns (x, y).
    pub fn add_second_link(&self, client_addr: Option<&str>) -> (String, String) {
        let (cl, gw) = (self.cl(), self.gw());
        let (x, y) = (format!("{}x", self.name), format!("{}y", self.name));
        let mut cmds = vec![
            vec!["ip", "link", "add", &x, "type", "veth", "peer", "name", &y],
            vec!["ip", "link", "set", &x, "netns", &cl],
            vec!["ip", "link", "set", &y, "netns", &gw],
            vec!["ip", "-n", &gw, "addr", "add", "198.51.100.2/24", "dev", &y],
            vec!["ip", "-n", &gw, "link", "set", &y, "up"],
        ];
        if let Some(a) = client_addr {
            cmds.push(vec!["ip", "-n", &cl, "addr", "add", a, "dev", &x]);
        }
        cmds.push(vec!["ip", "-n", &cl, "link", "set", &x, "up"]);
        for cmd in cmds {
            sh(&cmd).unwrap();
        }
        for key in [
            "net.ipv4.conf.all.rp_filter=0".to_string(),
            format!("net.ipv4.conf.{x}.rp_filter=0"),
        ] {
            self.ns(&cl, &["sysctl", "-qw", &key]).unwrap();
        }
        // charon looks at its paths 100 ms after an address or link of its own changes
        // (kernel-netlink's roam delay). Had that check come after a client's MOBIKE move
        // to this link, charon found "the old path not available anymore", moved its own
        // end to 198.51.100.2 and asked for an address change that a client need not make
        // (RFC 4555 leaves the path to the initiator): the ESP it kept sending to
        // 192.0.2.2 then met no SA (CI, 2026-12-05). Let that check run before any SA
        // exists.
        std::thread::sleep(std::time::Duration::from_millis(300));
        (x, y)
    }
}

/// A text capture (`tcpdump -n -l FILTER`) on `dev` in namespace `ns`, returned once
/// tcpdump's filter is attached (it says "listening on").
pub struct TextCapture {
    child: Child,
    file: PathBuf,
}

/// Starts tcpdump on `dev` in `ns` with `args` (stdout into `out`, stderr into `err`) and
/// returns once its filter is attached (it says "listening on").
fn tcpdump(ns: &str, dev: &str, args: &[&str], out: Stdio, err: &std::path::Path) -> Child {
    let child = Command::new("ip")
        .args(["netns", "exec", ns, "tcpdump", "-Z", "root", "-i", dev])
        .args(args)
        .stdout(out)
        .stderr(std::fs::File::create(err).unwrap())
        .spawn()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(err)
        .unwrap_or_default()
        .contains("listening on")
    {
        assert!(Instant::now() < end, "tcpdump did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

/// Stops tcpdump (SIGINT, after 300 ms for the last packets) and reaps it.
fn stop_tcpdump(child: &mut Child) {
    std::thread::sleep(Duration::from_millis(300));
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: signalling a child we spawned and have not reaped.
        unsafe { libc::kill(pid, libc::SIGINT) };
    }
    let _ = child.wait();
}

impl TextCapture {
    /// Starts it; `name` names its files in the lab's directory.
    pub fn start(lab: &Lab, name: &str, ns: &str, dev: &str, filter: &str) -> TextCapture {
        let file = lab.dir.join(format!("{name}.txt"));
        let out = Stdio::from(std::fs::File::create(&file).unwrap());
        let err = lab.dir.join(format!("{name}.err"));
        let child = tcpdump(ns, dev, &["-n", "-l", filter], out, &err);
        TextCapture { child, file }
    }

    /// Stops it and returns the non-empty lines it printed.
    pub fn lines(mut self) -> Vec<String> {
        stop_tcpdump(&mut self.child);
        std::fs::read_to_string(&self.file)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect()
    }
}

/// A pcap capture (`tcpdump -w FILE FILTER`) on `dev` in namespace `ns`, returned once
/// tcpdump's filter is attached.
pub struct PcapCapture {
    child: Child,
}

impl PcapCapture {
    pub fn start(
        lab: &Lab,
        ns: &str,
        dev: &str,
        filter: &str,
        file: &std::path::Path,
    ) -> PcapCapture {
        let f = file.display().to_string();
        let err = lab.dir.join("pcap.err");
        let args = ["-s", "0", "-U", "-w", &f, filter];
        let child = tcpdump(ns, dev, &args, Stdio::null(), &err);
        PcapCapture { child }
    }

    /// Stops it; the file is complete.
    pub fn stop(mut self) {
        stop_tcpdump(&mut self.child);
    }
}
