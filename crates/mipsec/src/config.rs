//! Configuration files. Every error names the file, the line and the field.

use mip4::Ipv4Net;
use serde::de::{self, Deserializer};
use serde::Deserialize;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// A configuration that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// A prefix written as "a.b.c.d/len".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Net(pub Ipv4Net);

impl<'de> Deserialize<'de> for Net {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map(Net).map_err(de::Error::custom)
    }
}

/// A key written in hexadecimal.
#[derive(Clone, PartialEq, Eq)]
pub struct HexKey(pub Vec<u8>);

impl std::fmt::Debug for HexKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HexKey(<{} octets>)", self.0.len())
    }
}

impl<'de> Deserialize<'de> for HexKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let k = hex::decode(s.trim())
            .map_err(|e| de::Error::custom(format!("key is not hexadecimal: {e}")))?;
        if k.len() < 16 {
            return Err(de::Error::custom(format!(
                "key has {} octets; RFC 5944 requires at least 128 bits (32 hex digits)",
                k.len()
            )));
        }
        Ok(HexKey(k))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum AlgorithmName {
    #[default]
    HmacMd5,
    KeyedMd5,
}

impl From<AlgorithmName> for mip4::auth::Algorithm {
    fn from(a: AlgorithmName) -> Self {
        match a {
            AlgorithmName::HmacMd5 => mip4::auth::Algorithm::HmacMd5,
            AlgorithmName::KeyedMd5 => mip4::auth::Algorithm::PrefixSuffixMd5,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum UdpTunnelMode {
    #[default]
    Auto,
    Force,
    Off,
}

/// How the mobile node reaches the enterprise from outside (RFC 5265).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum OutsideMode {
    /// No outside path configured (plain Mobile IPv4, modes h, c, f).
    #[default]
    None,
    /// x-MIP to the external home agent, then the VPN (cvc, fvc).
    Xmip,
    /// IKEv2 + MOBIKE to the VPN gateway (mc).
    Mobike,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ReplayName {
    #[default]
    Timestamp,
    Nonce,
}

impl From<ReplayName> for mip4::replay::ReplayMethod {
    fn from(r: ReplayName) -> Self {
        match r {
            ReplayName::Timestamp => mip4::replay::ReplayMethod::Timestamp,
            ReplayName::Nonce => mip4::replay::ReplayMethod::Nonce,
        }
    }
}

/// `ha.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HaFile {
    pub ha: HaSection,
    #[serde(default, rename = "mobile_node")]
    pub mobile_nodes: Vec<MobileNodeEntry>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HaSection {
    pub address: Ipv4Addr,
    pub home_network: Net,
    /// A real home link (proxy ARP, gratuitous ARP); absent for a virtual home network.
    pub home_interface: Option<String>,
    #[serde(default = "default_ha_tun")]
    pub tunnel_device: String,
    #[serde(default = "default_max_lifetime")]
    pub max_lifetime: u16,
    #[serde(default = "default_max_bindings")]
    pub max_bindings_per_mn: usize,
    #[serde(default = "default_tolerance")]
    pub replay_tolerance_s: u64,
    #[serde(default)]
    pub trusted_networks: Vec<Net>,
    #[serde(default = "default_true")]
    pub udp_tunneling: bool,
    /// RFC 3519 keepalive interval asked of nodes behind a NAT, seconds: shorter than
    /// the NATs' UDP mapping timeout (RFC 3519 default 110).
    #[serde(default = "default_udp_keepalive")]
    pub udp_keepalive_s: u16,
    pub control_socket: Option<PathBuf>,
    /// Where bindings are saved so that a restarted home agent keeps them.
    pub state_file: Option<PathBuf>,
    /// A key file, or a directory of `*.keys` files: one mobile node a line,
    /// re-read on SIGHUP (see `crate::keyfile`).
    pub key_file: Option<PathBuf>,
    /// Home addresses for nodes known only by their NAI (RFC 2794).
    pub dynamic_pool: Option<Net>,
    /// A file holding the fleet secret (hex, at least 256 bits) from which key
    /// file lines with the key `derived` get their keys (see `crate::keyfile`).
    pub key_derivation_secret: Option<PathBuf>,
    /// RFC 5265 HA-5, for an external home agent: Registration Requests arriving on
    /// this (internal) interface are dropped and counted.
    pub drop_requests_on_interface: Option<String>,
    /// TUN offloads on the tunnel device (TCP super-packets cut in userspace before
    /// IP-in-IP, segments merged before they enter the TUN); `false` moves packets one
    /// at a time. Falls back to that, with a warning, when the kernel refuses.
    #[serde(default = "default_true")]
    pub offload: bool,
    /// The tunnel to a care-of address (IP-in-IP) or to a node's NAT (RFC 3519) is
    /// encapsulated by the kernel, in a tc program on the tunnel device that the
    /// binding table fills (`netio::ipip_encap`), and taken back by one on the
    /// interface: a TCP super-packet leaves as one packet that the kernel cuts at the
    /// interface, and never crosses this process. Only bindings that forward to one
    /// care-of address go there; everything else (no binding, simultaneous bindings)
    /// is read from the device as before. Needs Linux 6.6 (tcx) and `CAP_BPF`;
    /// without them the daemon warns and moves every packet itself. `false`: never.
    #[serde(default = "default_true")]
    pub kernel_encap: bool,
    /// RFC 3519 Tunnel Data of one super-packet leaves in one UDP GSO send
    /// (`UDP_SEGMENT`); `false` sends each datagram on its own. Turned off, with a
    /// warning, when the kernel refuses it.
    #[serde(default = "default_true")]
    pub udp_gso: bool,
    /// UDP GRO on UDP 434 (`UDP_GRO`): where the interface merges received datagrams
    /// of one flow (GRO, on by default on most NICs), a burst of RFC 3519 Tunnel Data
    /// comes in one receive and is cut back into its datagrams; `false` takes them
    /// one by one. Turned off, with a warning, when the kernel refuses it.
    #[serde(default = "default_true")]
    pub udp_gro: bool,
    /// Registration workers (threads), each with its own UDP 434 socket and its
    /// share of the nodes (`ha_shards`); 0 means one per CPU. Worker 0 also runs
    /// the data path.
    #[serde(default = "default_workers")]
    pub workers: usize,
    /// With several workers, the tunnel device gets a queue per worker
    /// (`IFF_MULTI_QUEUE`): each worker writes the RFC 3519 Tunnel Data of its share
    /// of the nodes into its own queue, on its own core, and every read goes to worker
    /// 0's queue. `false`: one queue; the other workers hand Tunnel Data to worker 0.
    #[serde(default = "default_true")]
    pub worker_queues: bool,
}

fn default_workers() -> usize {
    0
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MobileNodeEntry {
    pub home_address: Option<Ipv4Addr>,
    pub nai: Option<String>,
    pub spi: u32,
    pub key: HexKey,
    #[serde(default)]
    pub algorithm: AlgorithmName,
    #[serde(default)]
    pub replay: ReplayName,
}

/// `fa.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaFile {
    pub fa: FaSection,
    #[serde(default, rename = "home_agent")]
    pub home_agents: Vec<FaHaEntry>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaSection {
    /// The visited link the agent serves.
    pub interface: String,
    /// The agent's address on that link, advertised as router and care-of address.
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    #[serde(default = "default_adv_ms")]
    pub advertisement_interval_ms: u64,
    #[serde(default = "default_max_lifetime")]
    pub max_lifetime: u16,
    #[serde(default = "default_true")]
    pub reverse_tunneling: bool,
    #[serde(default)]
    pub reverse_tunneling_required: bool,
    #[serde(default = "default_fa_tun")]
    pub tunnel_device: String,
    /// Routing table for visitors' reverse-tunneled traffic.
    #[serde(default = "default_fa_table")]
    pub reverse_table: u32,
    pub control_socket: Option<PathBuf>,
    /// TUN offloads on the tunnel device, as the home agent's `offload`.
    #[serde(default = "default_true")]
    pub offload: bool,
    /// The reverse tunnel (RFC 3024, direct delivery style) encapsulated by the
    /// kernel, as the home agent's `kernel_encap`: a visitor's packets, keyed by its
    /// home address, go to its home agent from this agent's address while its
    /// registration with the T bit lasts.
    #[serde(default = "default_true")]
    pub kernel_encap: bool,
}

/// An FA-HA security association.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaHaEntry {
    pub address: Ipv4Addr,
    pub spi: u32,
    pub key: HexKey,
    #[serde(default)]
    pub algorithm: AlgorithmName,
}

fn default_adv_ms() -> u64 {
    1000
}
fn default_fa_tun() -> String {
    "mipfa0".into()
}
fn default_fa_table() -> u32 {
    434
}

impl FaFile {
    pub fn load(path: &Path) -> Result<FaFile, ConfigError> {
        let text = read(path)?;
        let f: FaFile = parse(path, &text)?;
        let at = |key, msg: String| invalid_at(path, Some(&text), ("fa", None), key, msg);
        if f.fa.prefix_len > 32 {
            return Err(at("prefix_len", format!("{} is above 32", f.fa.prefix_len)));
        }
        if f.fa.advertisement_interval_ms < 100 {
            return Err(at(
                "advertisement_interval_ms",
                "must be at least 100".into(),
            ));
        }
        if f.fa.max_lifetime == 0 {
            return Err(at("max_lifetime", "must be at least 1 s".into()));
        }
        Ok(f)
    }
}

/// `mn.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MnFile {
    pub mn: MnSection,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MnSection {
    pub home_address: Ipv4Addr,
    pub home_agent: Ipv4Addr,
    pub home_network: Net,
    /// The physical interface (one), or `interfaces` (several, MN-2).
    #[serde(default)]
    pub interface: String,
    /// MN-2: several physical interfaces, in order of preference (an interface
    /// proven inside is preferred over any outside one whatever the order).
    #[serde(default)]
    pub interfaces: Vec<String>,
    #[serde(default = "default_mn_tun")]
    pub tunnel_device: String,
    /// TUN offloads on the home address's device, as the home agent's `offload`:
    /// the kernel hands over TCP super-packets, cut into segments right before
    /// encapsulation, and segments from the tunnel are merged before the TUN.
    #[serde(default = "default_true")]
    pub offload: bool,
    /// The tunnel to and from the i-HA in the kernel (IP-in-IP, or RFC 3519 behind a
    /// NAT), as the home agent's `kernel_encap`, while the gate is open inside in
    /// mode c (never outside): the entry follows the core's gate and expires when it
    /// may close by itself (T_MONITOR). `false`: every packet through the node.
    #[serde(default = "default_true")]
    pub kernel_encap: bool,
    /// RFC 3519 Tunnel Data in UDP GSO sends, as the home agent's `udp_gso`.
    #[serde(default = "default_true")]
    pub udp_gso: bool,
    /// UDP GRO on the registration sockets and the in-process VPN's NAT-T socket, as
    /// the home agent's `udp_gro`: bursts of Tunnel Data or ESP in UDP in one receive.
    #[serde(default = "default_true")]
    pub udp_gro: bool,
    pub spi: u32,
    pub key: HexKey,
    #[serde(default)]
    pub algorithm: AlgorithmName,
    #[serde(default)]
    pub replay: ReplayName,
    #[serde(default = "default_lifetime")]
    pub lifetime: u16,
    #[serde(default = "default_true")]
    pub reverse_tunnel: bool,
    /// Register through a foreign agent when one advertises on the link (mode f),
    /// falling back to a co-located address otherwise.
    #[serde(default = "default_true")]
    pub use_foreign_agents: bool,
    /// Foreign agents that may be used (issue 16 item 5: a rogue agent on a visited
    /// link must not take the node off a working registration). Advertisements
    /// from others are counted and ignored. Empty: no foreign agent is ever used
    /// (co-located care-of addresses only).
    #[serde(default)]
    pub trusted_agents: Vec<Ipv4Addr>,
    /// RFC 5265 MN-4: user data in plaintext only after a registration whose reply
    /// carried the Trusted Networks Configured extension (the i-HA proved the link
    /// inside). Always on; `false` is refused (kept so that old files still load).
    #[serde(default)]
    pub require_tnc: Option<bool>,
    /// The x-home address: the node's address on the x-HA's home network
    /// (`outside = "xmip"`).
    pub external_home_address: Option<Ipv4Addr>,
    /// The SPI and key (hex) shared with the x-HA (`outside = "xmip"`).
    pub external_spi: Option<u32>,
    pub external_key: Option<HexKey>,
    /// The outside flavour: "none", "xmip" (cvc/fvc: needs external_home_agent and
    /// vpn_gateway) or "mobike" (mc: needs vpn_gateway). Outside, user data only
    /// ever goes through the VPN; a config asking for it without a VPN gateway is
    /// refused.
    #[serde(default)]
    pub outside: OutsideMode,
    /// The external home agent (x-HA) for `outside = "xmip"`.
    pub external_home_agent: Option<Ipv4Addr>,
    /// The VPN gateway for any outside mode.
    pub vpn_gateway: Option<Ipv4Addr>,
    /// The `mipsec vpn` file for the outside modes (gateway, identities,
    /// credentials, timers; see the VPN client's section). The mobile node runs
    /// the client itself and sets where it runs from: the file must not set
    /// interface, interfaces, local_address, bind_interface, kill_switch, tun,
    /// table, rule_priority or auto_mobike.
    pub vpn_config: Option<PathBuf>,
    /// Accepted and ignored since the VPN runs in the node's own process (they named
    /// the devices and the table of the child-process VPN): `xhome_device` is only the
    /// `interface` written into the session's configuration, `vpn_tun` and `vpn_table`
    /// its unused `tun` and `table`.
    #[serde(default = "default_xhome_dev")]
    pub xhome_device: String,
    #[serde(default = "default_vpn_tun")]
    pub vpn_tun: String,
    #[serde(default = "default_vpn_table")]
    pub vpn_table: u32,
    /// The routing table for user data, looked up by a policy rule (at this
    /// priority) before the main table, so that no route a visited network pushes
    /// into the main table (DHCP option 121: TunnelVision) can pull user data out
    /// of the tunnel device. The node's own sockets are bound to their devices and
    /// pass on to the main table.
    #[serde(default = "default_user_table")]
    pub user_table: u32,
    /// MN-5 T_MONITOR, seconds (used by the mobility core; 60 by default).
    #[serde(default = "default_t_monitor")]
    pub t_monitor_s: u64,
    /// RFC 3519 UDP tunneling: "auto" asks for it and lets the home agent decide
    /// (it tunnels over UDP when it sees a NAT), "force" insists, "off" never asks.
    #[serde(default)]
    pub udp_tunnel: UdpTunnelMode,
    /// Ask a foreign agent for the encapsulating delivery style (RFC 3024).
    #[serde(default)]
    pub encapsulating_delivery: bool,
    /// First retransmission timeout, milliseconds (RFC 5944 suggests >= 1000).
    #[serde(default = "default_rto")]
    pub retransmit_ms: u64,
    pub control_socket: Option<PathBuf>,
}

#[path = "config_mn.rs"]
mod mn_interfaces;

fn default_xhome_dev() -> String {
    "mipx0".into()
}
fn default_vpn_tun() -> String {
    "mipv0".into()
}
fn default_vpn_table() -> u32 {
    1058
}
fn default_user_table() -> u32 {
    1057
}
fn default_ha_tun() -> String {
    "mipha0".into()
}
fn default_mn_tun() -> String {
    "mip0".into()
}
fn default_max_lifetime() -> u16 {
    1800
}
fn default_max_bindings() -> usize {
    4
}
fn default_tolerance() -> u64 {
    7
}
fn default_true() -> bool {
    true
}
fn default_udp_keepalive() -> u16 {
    110
}
fn default_lifetime() -> u16 {
    1800
}
fn default_t_monitor() -> u64 {
    60
}
fn default_rto() -> u64 {
    1000
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Parses `text` as if read from `path` (for error messages).
pub fn parse<T: for<'de> Deserialize<'de>>(path: &Path, text: &str) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Invalid {
        path: path.to_path_buf(),
        message: e.to_string().trim_end().to_string(),
    })
}

/// The line (1-based) where `key` is written in table `table` (the `nth` of an
/// array of tables, 0-based, when `nth` is Some), or the table's header line when the
/// key is absent (a default applies). A plain line scanner: configuration files are
/// key = value lines under table headers.
fn line_of(text: &str, table: &str, nth: Option<usize>, key: &str) -> Option<usize> {
    let mut seen = 0usize;
    let mut inside = false;
    let mut header = None;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("[[") {
            let name = rest.split("]]").next().unwrap_or("").trim();
            inside = false;
            if name == table {
                inside = nth == Some(seen);
                seen += 1;
            }
        } else if let Some(rest) = t.strip_prefix('[') {
            let name = rest.split(']').next().unwrap_or("").trim();
            inside = nth.is_none() && name == table;
        } else if inside && t.split('=').next().map(str::trim) == Some(key) {
            return Some(i + 1);
        } else {
            continue;
        }
        if inside {
            header = Some(i + 1);
        }
    }
    header
}

/// An error naming the file, the line (when `text` is known) and the field.
fn invalid_at(
    path: &Path,
    text: Option<&str>,
    (table, nth): (&str, Option<usize>),
    key: &str,
    msg: String,
) -> ConfigError {
    let field = match nth {
        Some(n) => format!("[[{table}]] #{} {key}", n + 1),
        None => format!("[{table}] {key}"),
    };
    let line = text
        .and_then(|t| line_of(t, table, nth, key))
        .map_or(String::new(), |l| format!("line {l}: "));
    ConfigError::Invalid {
        path: path.to_path_buf(),
        message: format!("{line}{field}: {msg}"),
    }
}

impl HaFile {
    pub fn load(path: &Path) -> Result<HaFile, ConfigError> {
        let text = read(path)?;
        let f: HaFile = parse(path, &text)?;
        f.check(path, Some(&text))?;
        Ok(f)
    }

    /// Semantic checks of a parsed file (errors without line numbers).
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        self.check(path, None)
    }

    fn check(&self, path: &Path, text: Option<&str>) -> Result<(), ConfigError> {
        let ha = |key, msg: String| invalid_at(path, text, ("ha", None), key, msg);
        if self.ha.udp_keepalive_s == 0 {
            return Err(ha(
                "udp_keepalive_s",
                "must be at least 1 (RFC 3519 default 110)".into(),
            ));
        }
        if self.ha.max_lifetime == 0 {
            return Err(ha("max_lifetime", "must be at least 1 s".into()));
        }
        if self.ha.max_bindings_per_mn == 0 {
            return Err(ha("max_bindings_per_mn", "must be at least 1".into()));
        }
        if !self.ha.home_network.0.contains(self.ha.address) {
            return Err(ha(
                "address",
                format!(
                    "{} is not inside home_network {}",
                    self.ha.address, self.ha.home_network.0
                ),
            ));
        }
        let node = |i, key, msg: String| invalid_at(path, text, ("mobile_node", Some(i)), key, msg);
        for (i, m) in self.mobile_nodes.iter().enumerate() {
            if m.home_address.is_none() && m.nai.is_none() {
                return Err(node(i, "home_address", "needs home_address or nai".into()));
            }
            if let Some(h) = m.home_address {
                if !self.ha.home_network.0.contains(h) {
                    return Err(node(
                        i,
                        "home_address",
                        format!("{h} is not inside home_network"),
                    ));
                }
                if let Some(j) = self.mobile_nodes[..i]
                    .iter()
                    .position(|o| o.home_address == Some(h))
                {
                    let first = text
                        .and_then(|t| line_of(t, "mobile_node", Some(j), "home_address"))
                        .map_or(String::new(), |l| format!(", line {l}"));
                    return Err(node(
                        i,
                        "home_address",
                        format!("{h} is already used by [[mobile_node]] #{}{first}", j + 1),
                    ));
                }
            }
            if let Some(n) = &m.nai {
                if let Some(j) = self.mobile_nodes[..i]
                    .iter()
                    .position(|o| o.nai.as_deref() == Some(n))
                {
                    return Err(node(
                        i,
                        "nai",
                        format!("{n:?} is already used by [[mobile_node]] #{}", j + 1),
                    ));
                }
            }
        }
        Ok(())
    }
}

impl MnFile {
    pub fn load(path: &Path) -> Result<MnFile, ConfigError> {
        let text = read(path)?;
        let f: MnFile = parse(path, &text)?;
        f.check(path, Some(&text))?;
        Ok(f)
    }

    fn check(&self, path: &Path, text: Option<&str>) -> Result<(), ConfigError> {
        let mn = |key, msg: String| invalid_at(path, text, ("mn", None), key, msg);
        if !self.mn.home_network.0.contains(self.mn.home_address) {
            return Err(mn(
                "home_address",
                format!(
                    "{} is not inside home_network {}",
                    self.mn.home_address, self.mn.home_network.0
                ),
            ));
        }
        if self.mn.lifetime == 0 {
            // Lifetime 0 is a deregistration, not a registration to keep.
            return Err(mn("lifetime", "must be at least 1 s".into()));
        }
        if self.mn.retransmit_ms == 0 {
            return Err(mn(
                "retransmit_ms",
                "must be at least 1 (RFC 5944 suggests 1000 or more)".into(),
            ));
        }
        let m = &self.mn;
        if m.outside != OutsideMode::None && m.vpn_gateway.is_none() {
            return Err(mn(
                "outside",
                "an outside mode needs vpn_gateway: outside the enterprise user data \
                 only ever goes through the VPN (RFC 5265), never in plaintext"
                    .into(),
            ));
        }
        if m.outside != OutsideMode::None && m.vpn_config.is_none() {
            return Err(mn(
                "outside",
                "an outside mode needs vpn_config (the mipsec vpn file the node runs the VPN with)"
                    .into(),
            ));
        }
        if m.outside == OutsideMode::Xmip
            && (m.external_home_agent.is_none()
                || m.external_home_address.is_none()
                || m.external_spi.is_none()
                || m.external_key.is_none())
        {
            return Err(mn(
                "outside",
                "outside = \"xmip\" needs external_home_agent (the x-HA), \
                 external_home_address (the x-home address), external_spi and external_key"
                    .into(),
            ));
        }
        if let Err(msg) = m.check_interfaces() {
            let key = if m.interfaces.is_empty() {
                "interface"
            } else {
                "interfaces"
            };
            return Err(mn(key, msg));
        }
        if m.require_tnc == Some(false) {
            return Err(mn(
                "require_tnc",
                "cannot be false: user data goes in plaintext only on a link the home agent \
                 proved inside with the Trusted Networks Configured extension (RFC 5265 MN-4); \
                 list the internal subnets in the home agent's trusted_networks"
                    .into(),
            ));
        }
        if m.retransmit_ms <= 10 || m.retransmit_ms >= 10_000 {
            return Err(mn(
                "retransmit_ms",
                "must be between 11 and 9999 (above the 10 ms prompt retry, below the \
                 10 s re-registration grace)"
                    .into(),
            ));
        }
        // 0 (unspec) and 253-255 (default, main, local) belong to the kernel; the
        // VPN client's table is its own.
        if m.user_table == 0 || (253..=255).contains(&m.user_table) || m.user_table == m.vpn_table {
            return Err(mn(
                "user_table",
                "must be a table of its own: not 0, 253, 254 (main), 255 (local) or vpn_table"
                    .into(),
            ));
        }
        if m.external_home_agent == Some(m.home_agent) && m.outside != OutsideMode::Xmip {
            return Err(mn(
                "external_home_agent",
                "equals home_agent (RFC 5265 MN-7: always outside) but outside is not \"xmip\""
                    .into(),
            ));
        }
        // MN-5: T_MONITOR above the 10 s re-registration grace, at most a day.
        if !(11..=86_400).contains(&m.t_monitor_s) {
            return Err(mn(
                "t_monitor_s",
                "must be between 11 and 86400 (re-registration runs 10 s before it)".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "config_mn_tests.rs"]
mod mn_tests;

#[cfg(test)]
mod tests {
    use super::*;

    const HA: &str = r#"
[ha]
address = "10.10.0.1"
home_network = "10.10.0.0/24"
home_interface = "eth0"

[[mobile_node]]
home_address = "10.10.0.100"
spi = 256
key = "00112233445566778899aabbccddeeff"
"#;

    #[test]
    fn parses_the_documented_example() {
        let f: HaFile = parse(Path::new("ha.toml"), HA).unwrap();
        f.validate(Path::new("ha.toml")).unwrap();
        assert_eq!(f.ha.tunnel_device, "mipha0");
        assert_eq!(f.ha.max_lifetime, 1800);
        assert_eq!(f.mobile_nodes[0].key.0.len(), 16);
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let bad = HA.replace("spi = 256", "spi = \"x\"");
        let e = parse::<HaFile>(Path::new("/etc/mipsec/ha.toml"), &bad)
            .unwrap_err()
            .to_string();
        assert!(e.contains("/etc/mipsec/ha.toml"), "{e}");
        assert!(e.contains("line 9"), "{e}");
        assert!(e.contains("spi") || e.contains("invalid type"), "{e}");

        let bad = HA.replace("00112233445566778899aabbccddeeff", "0011");
        let e = parse::<HaFile>(Path::new("ha.toml"), &bad)
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 10") && e.contains("128 bits"), "{e}");

        let bad = HA.replace("home_interface", "home_iface");
        let e = parse::<HaFile>(Path::new("ha.toml"), &bad)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `home_iface`"), "{e}");

        let bad = HA.replace("10.10.0.0/24", "10.10.0.0/40");
        let e = parse::<HaFile>(Path::new("ha.toml"), &bad)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("line 4") && e.contains("invalid IPv4 prefix"),
            "{e}"
        );

        let bad = HA.replace(
            "home_address = \"10.10.0.100\"",
            "home_address = \"10.99.0.100\"",
        );
        let f: HaFile = parse(Path::new("ha.toml"), &bad).unwrap();
        let e = f.validate(Path::new("ha.toml")).unwrap_err().to_string();
        assert!(e.contains("not inside home_network"), "{e}");
    }

    #[test]
    fn udp_keepalive_defaults_to_rfc3519_and_refuses_zero() {
        let f: HaFile = parse(Path::new("ha.toml"), HA).unwrap();
        assert_eq!(f.ha.udp_keepalive_s, 110);
        let set = HA.replace("[ha]\n", "[ha]\nudp_keepalive_s = 20\n");
        let f: HaFile = parse(Path::new("ha.toml"), &set).unwrap();
        assert_eq!(f.ha.udp_keepalive_s, 20);
        let zero = HA.replace("[ha]\n", "[ha]\nudp_keepalive_s = 0\n");
        let f: HaFile = parse(Path::new("ha.toml"), &zero).unwrap();
        let e = f.validate(Path::new("ha.toml")).unwrap_err().to_string();
        assert!(e.contains("udp_keepalive_s: must be at least 1"), "{e}");
    }

    /// Writes `text` to a file named `name` in a fresh directory and loads it.
    fn load_as<T>(name: &str, text: &str, load: fn(&Path) -> Result<T, ConfigError>) -> String
    where
        T: std::fmt::Debug,
    {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        let e = load(&p).unwrap_err().to_string();
        assert!(e.starts_with(&p.display().to_string()), "{e}");
        e
    }

    #[test]
    fn duplicate_mobile_nodes_are_refused_naming_both_lines() {
        let dup = format!("{HA}\n[[mobile_node]]\nspi = 257\nhome_address = \"10.10.0.100\"\nkey = \"00112233445566778899aabbccddeeff\"\n");
        let e = load_as("ha.toml", &dup, HaFile::load);
        assert!(
            e.contains("line 14: [[mobile_node]] #2 home_address: 10.10.0.100 is already used by [[mobile_node]] #1, line 8"),
            "{e}"
        );
        let nai = HA.replace("home_address = \"10.10.0.100\"", "nai = \"a@example.org\"");
        let dup = format!("{nai}\n[[mobile_node]]\nnai = \"a@example.org\"\nspi = 257\nkey = \"00112233445566778899aabbccddeeff\"\n");
        let e = load_as("ha.toml", &dup, HaFile::load);
        assert!(
            e.contains("line 13: [[mobile_node]] #2 nai: \"a@example.org\" is already used"),
            "{e}"
        );
    }

    #[test]
    fn semantic_errors_name_line_and_field() {
        let bad = HA.replace("address = \"10.10.0.1\"", "address = \"10.99.0.1\"");
        let e = load_as("ha.toml", &bad, HaFile::load);
        assert!(
            e.contains("line 3: [ha] address: 10.99.0.1 is not inside"),
            "{e}"
        );
        let bad = HA.replace("[ha]\n", "[ha]\nmax_lifetime = 0\n");
        let e = load_as("ha.toml", &bad, HaFile::load);
        assert!(
            e.contains("line 3: [ha] max_lifetime: must be at least 1"),
            "{e}"
        );
        let bad = HA.replace(
            "home_address = \"10.10.0.100\"",
            "home_address = \"10.99.0.100\"",
        );
        let e = load_as("ha.toml", &bad, HaFile::load);
        assert!(e.contains("line 8: [[mobile_node]] #1 home_address"), "{e}");
        let fa = "[fa]\ninterface = \"eth0\"\naddress = \"10.30.0.1\"\nprefix_len = 24\nmax_lifetime = 0\n";
        let e = load_as("fa.toml", fa, FaFile::load);
        assert!(
            e.contains("line 5: [fa] max_lifetime: must be at least 1 s"),
            "{e}"
        );
        let fa = fa.replace("prefix_len = 24", "prefix_len = 40");
        let e = load_as("fa.toml", &fa, FaFile::load);
        assert!(e.contains("line 4: [fa] prefix_len: 40 is above 32"), "{e}");
    }

    const MN: &str = r#"[mn]
home_address = "10.10.0.100"
home_agent = "10.10.0.1"
home_network = "10.10.0.0/24"
interface = "eth0"
spi = 256
key = "00112233445566778899aabbccddeeff"
"#;

    #[test]
    fn mn_outside_modes_without_a_vpn_gateway_are_refused() {
        let e = load_as(
            "mn.toml",
            &format!("{MN}outside = \"mobike\"\n"),
            MnFile::load,
        );
        assert!(
            e.contains("line 8: [mn] outside: an outside mode needs vpn_gateway"),
            "{e}"
        );
        let e = load_as(
            "mn.toml",
            &format!("{MN}outside = \"xmip\"\nvpn_gateway = \"192.0.2.1\"\n"),
            MnFile::load,
        );
        assert!(
            e.contains("line 8: [mn] outside: an outside mode needs vpn_config"),
            "{e}"
        );
        let e = load_as(
            "mn.toml",
            &format!(
                "{MN}outside = \"xmip\"\nvpn_gateway = \"192.0.2.1\"\nvpn_config = \"/etc/vpn.toml\"\n"
            ),
            MnFile::load,
        );
        assert!(
            e.contains("line 8: [mn] outside: outside = \"xmip\" needs external_home_agent"),
            "{e}"
        );
        let e = load_as("mn.toml", &format!("{MN}t_monitor_s = 10\n"), MnFile::load);
        assert!(e.contains("line 8: [mn] t_monitor_s"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("mn.toml");
        std::fs::write(
            &p,
            format!("{MN}outside = \"xmip\"\nvpn_gateway = \"192.0.2.1\"\nvpn_config = \"/etc/vpn.toml\"\nexternal_home_agent = \"192.0.2.2\"\n"),
        )
        .unwrap();
        let e = MnFile::load(&p).unwrap_err().to_string();
        assert!(e.contains("external_home_address"), "{e}");
        std::fs::write(
            &p,
            format!(
                "{MN}outside = \"xmip\"\nvpn_gateway = \"192.0.2.1\"\nvpn_config = \"/etc/vpn.toml\"\nexternal_home_agent = \"192.0.2.2\"\n\
                 external_home_address = \"100.64.0.10\"\nexternal_spi = 300\n\
                 external_key = \"00112233445566778899aabbccddeeff\"\n"
            ),
        )
        .unwrap();
        let f = MnFile::load(&p).unwrap();
        assert_eq!((f.mn.outside, f.mn.t_monitor_s), (OutsideMode::Xmip, 60));
        // The mobility core accepts what the file check accepted.
        crate::mn::core_config(&f).unwrap();
    }

    /// MN-4 is not optional: a file that would allow plaintext without the i-HA's
    /// proof is refused, naming the home agent's trusted_networks.
    #[test]
    fn mn_require_tnc_false_is_refused() {
        let e = load_as(
            "mn.toml",
            &format!("{MN}require_tnc = false\n"),
            MnFile::load,
        );
        assert!(
            e.contains("line 8: [mn] require_tnc: cannot be false")
                && e.contains("trusted_networks"),
            "{e}"
        );
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("mn.toml");
        std::fs::write(&p, format!("{MN}require_tnc = true\n")).unwrap();
        let f = MnFile::load(&p).unwrap();
        crate::mn::core_config(&f).unwrap();
    }

    #[test]
    fn mn_lifetime_and_retransmit_zero_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("mn.toml");
        std::fs::write(&p, MN).unwrap();
        let f = MnFile::load(&p).unwrap();
        assert_eq!((f.mn.lifetime, f.mn.retransmit_ms), (1800, 1000));
        let e = load_as("mn.toml", &format!("{MN}lifetime = 0\n"), MnFile::load);
        assert!(
            e.contains("line 8: [mn] lifetime: must be at least 1 s"),
            "{e}"
        );
        let e = load_as("mn.toml", &format!("{MN}retransmit_ms = 0\n"), MnFile::load);
        assert!(
            e.contains("line 8: [mn] retransmit_ms: must be at least 1"),
            "{e}"
        );
        let e = load_as(
            "mn.toml",
            &format!("{MN}retransmit_ms = 10\n"),
            MnFile::load,
        );
        assert!(
            e.contains("line 8: [mn] retransmit_ms: must be between 11"),
            "{e}"
        );
        for t in ["254", "1058", "0"] {
            let e = load_as("mn.toml", &format!("{MN}user_table = {t}\n"), MnFile::load);
            assert!(
                e.contains("line 8: [mn] user_table: must be a table of its own"),
                "{t}: {e}"
            );
        }
    }
}
