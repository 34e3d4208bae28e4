//! The client's TOML configuration. Every error names the file, the line and the field.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ikev2::crypto::{Encr, Integ, Prf};
use ikev2::wire::{DhId, Identification};
use ikev2::{EspProposal, IkeProposal};
use serde::Deserialize;

/// The configuration file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VpnConfig {
    /// The gateway, `a.b.c.d` or `a.b.c.d:port` (IKE port, default 500).
    pub gateway: GatewayAddr,
    /// Preferred physical interface: its IPv4 address is our IKE and ESP source.
    pub interface: String,
    /// Further interfaces to move to (MOBIKE) when `interface` has no usable address, in
    /// order of preference; `"*"` = any interface but loopback and our TUN. A more
    /// preferred interface that gets an address is moved back to.
    #[serde(default)]
    pub interfaces: Vec<String>,
    /// Our IKE identity, written as strongSwan's `id =` (see `Ident`). With `cert` it may be
    /// left out: the certificate's subject DN is used.
    #[serde(default)]
    pub local_id: Option<Ident>,
    /// The gateway's expected identity; absent = whatever its certificate proves.
    #[serde(default)]
    pub remote_id: Option<Ident>,
    /// Pre-shared key: a string, or hex when written `0x...`.
    #[serde(default)]
    pub psk: Option<Psk>,
    /// Our certificate, its private key and the CA certificates we trust: PEM or DER;
    /// keys PKCS#8, PKCS#1 (RSA) or SEC1 (EC); RSA, ECDSA P-256/P-384 or Ed25519. A file
    /// that cannot be loaded is a startup error naming it.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    #[serde(default)]
    pub key: Option<PathBuf>,
    #[serde(default)]
    pub ca: Vec<PathBuf>,
    /// IKE encryption algorithms, strongSwan names (`aes256gcm16`, `aes128gcm16`,
    /// `aes128-sha256`, `aes256-sha256`).
    #[serde(default = "default_ike")]
    pub ike_proposals: Vec<Cipher>,
    /// IKE PRF: `sha256`, `sha384`, `sha512`, `sha1`.
    #[serde(default = "default_prf")]
    pub prf: PrfName,
    /// Diffie-Hellman groups by IANA number, in order of preference (31, 19, 14).
    #[serde(default = "default_groups")]
    pub groups: Vec<Group>,
    /// ESP algorithms (same names as `ike_proposals`, plus `aes128-sha1`, `aes256-sha1`).
    #[serde(default = "default_esp")]
    pub esp_proposals: Vec<Cipher>,
    /// TUN device name.
    #[serde(default = "default_tun")]
    pub tun: String,
    /// TUN MTU.
    #[serde(default = "default_mtu")]
    pub mtu: u32,
    /// Routing table for the tunnel routes (a table of our own: TunnelVision).
    #[serde(default = "default_table")]
    pub table: u32,
    /// Priority of the policy rule that sends lookups to `table` (below 32766 = before main).
    #[serde(default = "default_rule_priority")]
    pub rule_priority: u32,
    /// Unix socket answering status requests (JSON), if set.
    #[serde(default)]
    pub control: Option<PathBuf>,
    /// Seconds of silence before a liveness check (DPD); 0 turns it off.
    #[serde(default = "default_dpd")]
    pub dpd_interval: u64,
    /// Seconds between NAT keepalives when behind a NAT; 0 turns them off.
    #[serde(default = "default_keepalive")]
    pub nat_keepalive: u64,
    /// Rekey the IKE SA / CHILD_SA after this many seconds (absent: only when the gateway does).
    #[serde(default)]
    pub ike_lifetime: Option<u64>,
    #[serde(default)]
    pub child_lifetime: Option<u64>,
    /// First retransmission timeout (ms) and number of sends before giving up.
    #[serde(default = "default_rto")]
    pub retransmit_ms: u64,
    #[serde(default = "default_tries")]
    pub retransmit_tries: u32,
    /// Longest pause (seconds) between reconnection attempts (backoff doubles from 1 s).
    #[serde(default = "default_reconnect_max")]
    pub reconnect_max: u64,
    /// Networks that never leave in the clear, from start to clean stop (kill switch):
    /// unreachable in our table unless the tunnel carries them (traffic to the gateway
    /// itself excepted). Absent or `"on"`: everything until the first CHILD_SA is up, then
    /// the networks the gateway's traffic selectors cover (all of them for 0.0.0.0/0). A
    /// list: exactly those networks. `"off"` (or `[]`): nothing is blocked, for a
    /// supervisor (`mipsec mn`) that keeps its own traffic fail-closed.
    #[serde(default)]
    pub kill_switch: KillSwitchSetting,
    /// Use exactly this IPv4 address as our IKE and ESP source (it must be on `interface`
    /// or one of `interfaces`; until it is, the client waits). Absent: the first usable
    /// address of the most preferred interface.
    #[serde(default)]
    pub local_address: Option<Ipv4Addr>,
    /// Bind the IKE, NAT-T and raw ESP sockets to the interface holding our address
    /// (`SO_BINDTODEVICE`), so IKE and ESP can leave and arrive through that interface
    /// only, whatever the routing tables say (a gateway with no route through it is taken
    /// to be on-link). Rebound when we move.
    #[serde(default)]
    pub bind_interface: bool,
    /// Follow address changes with MOBIKE on our own (netlink events). Absent: yes when
    /// standalone, no under a supervisor (`--events`), which says `mobike <address>`.
    #[serde(default)]
    pub auto_mobike: Option<bool>,
    /// Lab and debugging only: append every CHILD_SA's keys to this file (created
    /// with mode 0600) in Wireshark's `esp_sa` table format, so that captures can be
    /// decrypted (`tshark -o esp.enable_encryption_decode:TRUE -o uat:esp_sa:LINE`).
    /// Anyone who reads the file reads the traffic: never set it in production.
    #[serde(default)]
    pub esp_key_log: Option<PathBuf>,
    /// TUN offloads (IFF_VNET_HDR with checksum and TSO): the kernel hands over TCP
    /// super-packets of up to 64 KB, cut into MTU-sized segments right before they are
    /// sealed; the sealed ESP-in-UDP datagrams of a burst leave in one UDP GSO send,
    /// plain ESP in one `sendmmsg`; received TCP segments are merged before they enter
    /// the TUN. Default on; off, or refused by the kernel (logged), moves one packet
    /// at a time.
    #[serde(default = "default_true")]
    pub offload: bool,
    /// Always put ESP in UDP (strongSwan's `encap = yes`): the gateway is told, through a
    /// NAT-D hash that names no address of ours, that we are behind a NAT. For networks
    /// that pass UDP but drop IP protocol 50; it also lets a burst leave in one UDP GSO
    /// send. Default off: ESP in UDP only where there is a NAT (or the gateway insists).
    #[serde(default)]
    pub encap: bool,
}

fn default_true() -> bool {
    true
}

/// `kill_switch`: `"on"` (the default), `"off"`, or a list of networks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum KillSwitchSetting {
    /// Everything until the first CHILD_SA, then what its selectors cover.
    #[default]
    Auto,
    /// Exactly these networks (empty: nothing).
    Nets(Vec<Cidr>),
}

impl<'de> Deserialize<'de> for KillSwitchSetting {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = KillSwitchSetting;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("\"on\", \"off\" or a list of IPv4 networks")
            }
            fn visit_str<E: serde::de::Error>(self, w: &str) -> Result<Self::Value, E> {
                match w {
                    "on" | "auto" => Ok(KillSwitchSetting::Auto),
                    "off" => Ok(KillSwitchSetting::Nets(Vec::new())),
                    _ => Err(E::custom(format!(
                        "`{w}`: kill_switch is \"on\", \"off\" or a list of networks"
                    ))),
                }
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                let mut nets = Vec::new();
                while let Some(c) = seq.next_element::<Cidr>()? {
                    nets.push(c);
                }
                Ok(KillSwitchSetting::Nets(nets))
            }
        }
        d.deserialize_any(V)
    }
}

impl KillSwitchSetting {
    /// The networks blocked from the start.
    pub fn initial(&self) -> Vec<(Ipv4Addr, u8)> {
        match self {
            KillSwitchSetting::Auto => vec![(Ipv4Addr::UNSPECIFIED, 0)],
            KillSwitchSetting::Nets(n) => n.iter().map(|c| (c.0, c.1)).collect(),
        }
    }
}

/// An IPv4 network `a.b.c.d/len` (a bare address is a /32). Host bits must be zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Cidr(pub Ipv4Addr, pub u8);

impl TryFrom<String> for Cidr {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let (a, l) = s.split_once('/').unwrap_or((&s, "32"));
        let (Ok(a), Ok(l)) = (a.trim().parse::<Ipv4Addr>(), l.trim().parse::<u8>()) else {
            return Err(format!("`{s}` is not an IPv4 network (a.b.c.d/len)"));
        };
        if l > 32 {
            return Err(format!("`{s}`: prefix length above 32"));
        }
        let mask = if l == 0 { 0 } else { u32::MAX << (32 - l) };
        if u32::from(a) & !mask != 0 {
            return Err(format!(
                "`{s}`: host bits set (did you mean {}/{l}?)",
                Ipv4Addr::from(u32::from(a) & mask)
            ));
        }
        Ok(Cidr(a, l))
    }
}

fn default_ike() -> Vec<Cipher> {
    vec![Cipher::AesGcm256, Cipher::AesGcm128]
}
fn default_esp() -> Vec<Cipher> {
    vec![Cipher::AesGcm256, Cipher::AesGcm128]
}
fn default_prf() -> PrfName {
    PrfName(Prf::HmacSha256)
}
fn default_groups() -> Vec<Group> {
    vec![
        Group(DhId::CURVE25519),
        Group(DhId::ECP_256),
        Group(DhId::MODP_2048),
    ]
}
fn default_tun() -> String {
    "mipsec-vpn0".into()
}
fn default_mtu() -> u32 {
    1400
}
fn default_table() -> u32 {
    1057
}
fn default_rule_priority() -> u32 {
    1057
}
fn default_dpd() -> u64 {
    30
}
fn default_keepalive() -> u64 {
    20
}
fn default_rto() -> u64 {
    1000
}
fn default_tries() -> u32 {
    6
}
fn default_reconnect_max() -> u64 {
    30
}

fn named(p: &Path, e: String) -> String {
    format!("{}: {e}", p.display())
}

/// `a.b.c.d[:port]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct GatewayAddr(pub SocketAddrV4);

impl TryFrom<String> for GatewayAddr {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if let Ok(a) = s.parse::<SocketAddrV4>() {
            return Ok(GatewayAddr(a));
        }
        s.parse::<Ipv4Addr>()
            .map(|a| GatewayAddr(SocketAddrV4::new(a, 500)))
            .map_err(|_| format!("`{s}` is not an IPv4 address (optionally with :port)"))
    }
}

/// An IKE identity as strongSwan writes it: `192.0.2.1` (ID_IPV4_ADDR),
/// `C=XX, O=Example, CN=laptop.example` (ID_DER_ASN1_DN), `user@example.com`
/// (ID_RFC822_ADDR), `@#0a1b` (ID_KEY_ID, hex), `vpn.example` or `@vpn.example` (ID_FQDN).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Ident(pub String, pub Identification);

impl TryFrom<String> for Ident {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let id = Identification::from_text(&s)?;
        Ok(Ident(s, id))
    }
}

impl Ident {
    pub fn to_ike(&self) -> Identification {
        self.1.clone()
    }
}

/// A pre-shared key: `0x` + hex, or the string's bytes.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Psk(pub Vec<u8>);

impl std::fmt::Debug for Psk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Psk(<{} octets>)", self.0.len())
    }
}

impl TryFrom<String> for Psk {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let key = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
            Some(h) => hex::decode(h).map_err(|e| format!("bad hex PSK: {e}"))?,
            None => s.into_bytes(),
        };
        if key.is_empty() {
            return Err("empty PSK".into());
        }
        Ok(Psk(key))
    }
}

/// An encryption (+ integrity) algorithm by strongSwan name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum Cipher {
    AesGcm128,
    AesGcm256,
    AesCbc128Sha256,
    AesCbc256Sha256,
    AesCbc128Sha1,
    AesCbc256Sha1,
}

impl TryFrom<String> for Cipher {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Ok(match s.as_str() {
            "aes128gcm16" => Cipher::AesGcm128,
            "aes256gcm16" => Cipher::AesGcm256,
            "aes128-sha256" => Cipher::AesCbc128Sha256,
            "aes256-sha256" => Cipher::AesCbc256Sha256,
            "aes128-sha1" => Cipher::AesCbc128Sha1,
            "aes256-sha1" => Cipher::AesCbc256Sha1,
            _ => {
                return Err(format!(
                    "unknown algorithm `{s}` (aes128gcm16, aes256gcm16, aes128-sha256, aes256-sha256, aes128-sha1, aes256-sha1)"
                ))
            }
        })
    }
}

impl Cipher {
    fn parts(self) -> (Encr, Option<Integ>) {
        match self {
            Cipher::AesGcm128 => (Encr::AesGcm16 { key: 16 }, None),
            Cipher::AesGcm256 => (Encr::AesGcm16 { key: 32 }, None),
            Cipher::AesCbc128Sha256 => (Encr::AesCbc { key: 16 }, Some(Integ::HmacSha256_128)),
            Cipher::AesCbc256Sha256 => (Encr::AesCbc { key: 32 }, Some(Integ::HmacSha256_128)),
            Cipher::AesCbc128Sha1 => (Encr::AesCbc { key: 16 }, Some(Integ::HmacSha1_96)),
            Cipher::AesCbc256Sha1 => (Encr::AesCbc { key: 32 }, Some(Integ::HmacSha1_96)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct PrfName(pub Prf);

impl TryFrom<String> for PrfName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Ok(PrfName(match s.as_str() {
            "sha1" | "prfsha1" => Prf::HmacSha1,
            "sha256" | "prfsha256" => Prf::HmacSha256,
            "sha384" | "prfsha384" => Prf::HmacSha384,
            "sha512" | "prfsha512" => Prf::HmacSha512,
            _ => return Err(format!("unknown PRF `{s}` (sha1, sha256, sha384, sha512)")),
        }))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "u16")]
pub struct Group(pub DhId);

impl TryFrom<u16> for Group {
    type Error = String;
    fn try_from(n: u16) -> Result<Self, String> {
        match n {
            31 | 19 | 14 => Ok(Group(DhId(n))),
            _ => Err(format!("unsupported DH group {n} (31, 19, 14)")),
        }
    }
}

impl VpnConfig {
    /// Whether address changes are followed with MOBIKE without being told.
    pub fn follows_addresses(&self, supervised: bool) -> bool {
        self.auto_mobike.unwrap_or(!supervised)
    }

    /// Rank of interface `name` (0 = most preferred), or None when we may not use it.
    pub fn interface_rank(&self, name: &str) -> Option<usize> {
        if name == self.interface {
            return Some(0);
        }
        if let Some(i) = self.interfaces.iter().position(|n| n == name) {
            return Some(i + 1);
        }
        let any = self.interfaces.iter().any(|n| n == "*");
        (any && name != "lo" && name != self.tun).then_some(self.interfaces.len() + 1)
    }

    /// The longest pause between reconnection attempts: `reconnect_max`, and with DPD on
    /// at most `dpd_interval` (so the tunnel is back within dpd_interval of the gateway).
    pub fn reconnect_cap(&self) -> Duration {
        let mut s = self.reconnect_max.max(1);
        if self.dpd_interval > 0 {
            s = s.min(self.dpd_interval);
        }
        Duration::from_secs(s)
    }

    /// Read and check `path`.
    pub fn load(path: &Path) -> Result<VpnConfig, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        Self::parse(path, &text)
    }

    /// Parse `text` as if read from `path` (for error messages).
    pub fn parse(path: &Path, text: &str) -> Result<VpnConfig, String> {
        let c: VpnConfig = toml::from_str(text)
            .map_err(|e| format!("{}: {}", path.display(), e.to_string().trim_end()))?;
        let bad = |field: &str, msg: &str| {
            let line = text
                .lines()
                .position(|l| l.trim_start().starts_with(field))
                .map(|n| format!("line {}, ", n + 1))
                .unwrap_or_default();
            Err(format!("{}: {line}field `{field}`: {msg}", path.display()))
        };
        match (&c.psk, &c.cert, &c.key) {
            (None, None, _) => return bad("psk", "set `psk`, or `cert` and `key`"),
            (Some(_), Some(_), _) => return bad("cert", "set either `psk` or `cert`, not both"),
            (None, Some(_), None) => return bad("cert", "`cert` needs `key`"),
            _ => {}
        }
        if c.psk.is_none() && c.ca.is_empty() {
            return bad("cert", "certificate authentication needs `ca`");
        }
        if c.psk.is_some() && c.local_id.is_none() {
            return bad("local_id", "PSK authentication needs `local_id`");
        }
        if c.ike_proposals.is_empty() {
            return bad("ike_proposals", "empty list");
        }
        if c.esp_proposals.is_empty() {
            return bad("esp_proposals", "empty list");
        }
        if c.groups.is_empty() {
            return bad("groups", "empty list");
        }
        if !(576..=65535).contains(&c.mtu) {
            return bad("mtu", "must be 576..=65535");
        }
        if c.table == 0 || c.table == 253 || c.table == 254 || c.table == 255 {
            return bad(
                "table",
                "must be a table of our own (not 0, default, main or local)",
            );
        }
        if c.rule_priority == 0 || c.rule_priority >= 32766 {
            return bad(
                "rule_priority",
                "must be 1..32766 (before the main table's rule)",
            );
        }
        if c.tun.is_empty() || c.tun.len() > 15 {
            return bad("tun", "interface names are 1..15 octets");
        }
        if c.retransmit_ms == 0 || c.retransmit_tries == 0 {
            return bad(
                "retransmit_ms",
                "retransmit_ms and retransmit_tries must be > 0",
            );
        }
        Ok(c)
    }

    /// The IKE configuration (certificates are read here).
    pub fn ike_config(&self) -> Result<ikev2::Config, String> {
        use ikev2::crypto::keyfile;
        let psk = self.psk.as_ref().map(|p| p.0.clone()).unwrap_or_default();
        let read = |p: &PathBuf| {
            std::fs::read(p).map_err(|e| format!("{}: cannot read: {e}", p.display()))
        };
        let mut local_cert = None;
        let mut anchors = Vec::new();
        if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
            let cert_der = keyfile::certificate(&read(cert)?).map_err(|e| named(cert, e))?;
            let key_pkcs8 =
                keyfile::private_key(&read(key)?, &cert_der).map_err(|e| named(key, e))?;
            for ca in &self.ca {
                anchors.extend(keyfile::certificates(&read(ca)?).map_err(|e| named(ca, e))?);
            }
            local_cert = Some(ikev2::crypto::cert::LocalCert {
                cert_der,
                key_pkcs8,
            });
        }
        let local_id = match (&self.local_id, &local_cert) {
            (Some(id), _) => id.to_ike(),
            (None, Some(c)) => ikev2::crypto::cert::subject_id(&c.cert_der).map_err(|e| {
                format!(
                    "{}: no subject DN for local_id: {e}",
                    self.cert.as_deref().unwrap_or(Path::new("cert")).display()
                )
            })?,
            (None, None) => return Err("`local_id` is required with a PSK".into()),
        };
        let mut cfg = ikev2::Config::psk(&psk, local_id);
        cfg.local_cert = local_cert;
        cfg.trust_anchors = anchors;
        cfg.remote_id = self.remote_id.as_ref().map(Ident::to_ike);
        cfg.request_vip = true;
        let groups: Vec<DhId> = self.groups.iter().map(|g| g.0).collect();
        cfg.ike_proposals = self
            .ike_proposals
            .iter()
            .map(|c| {
                let (encr, integ) = c.parts();
                IkeProposal {
                    encr,
                    prf: self.prf.0,
                    integ,
                    dh: groups.clone(),
                }
            })
            .collect();
        cfg.esp_proposals = self
            .esp_proposals
            .iter()
            .map(|c| {
                let (encr, integ) = c.parts();
                EspProposal {
                    encr,
                    integ,
                    esn: false,
                    pfs: None,
                }
            })
            .collect();
        cfg.dpd_interval = (self.dpd_interval > 0).then(|| Duration::from_secs(self.dpd_interval));
        cfg.nat_keepalive =
            (self.nat_keepalive > 0).then(|| Duration::from_secs(self.nat_keepalive));
        cfg.force_encap = self.encap;
        cfg.ike_lifetime = self.ike_lifetime.map(Duration::from_secs);
        cfg.child_lifetime = self.child_lifetime.map(Duration::from_secs);
        cfg.retransmit.base = Duration::from_millis(self.retransmit_ms);
        cfg.retransmit.max_tries = self.retransmit_tries;
        // With DPD on, no IKE retransmission (liveness checks, IKE_SA_INIT while the
        // gateway is away) waits longer than dpd_interval, so a returning gateway is
        // found within dpd_interval.
        if self.dpd_interval > 0 {
            cfg.retransmit.max_timeout =
                Duration::from_secs(self.dpd_interval.clamp(1, 16)).max(cfg.retransmit.base);
        }
        cfg.mobike = true;
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
gateway = "192.0.2.2"
interface = "eth0"
local_id = "client.example"
remote_id = "gw.example"
psk = "correct horse battery staple"
"#;

    #[test]
    fn defaults() {
        let c = VpnConfig::parse(Path::new("vpn.toml"), GOOD).unwrap();
        assert_eq!(c.gateway.0, "192.0.2.2:500".parse().unwrap());
        assert_eq!(c.ike_proposals, vec![Cipher::AesGcm256, Cipher::AesGcm128]);
        assert_eq!(
            c.groups.iter().map(|g| g.0 .0).collect::<Vec<_>>(),
            [31, 19, 14]
        );
        let ike = c.ike_config().unwrap();
        assert_eq!(ike.psk, b"correct horse battery staple");
        assert_eq!(ike.ike_proposals.len(), 2);
        assert_eq!(ike.ike_proposals[0].prf, Prf::HmacSha256);
        assert_eq!(ike.esp_proposals[1].encr, Encr::AesGcm16 { key: 16 });
        assert!(ike.request_vip && ike.mobike);
        assert_eq!(ike.dpd_interval, Some(Duration::from_secs(30)));
    }

    #[test]
    fn hex_psk_and_ip_identity() {
        let t = GOOD
            .replace("\"correct horse battery staple\"", "\"0x00ff10\"")
            .replace("\"client.example\"", "\"192.0.2.1\"");
        let c = VpnConfig::parse(Path::new("vpn.toml"), &t).unwrap();
        assert_eq!(c.psk.unwrap().0, vec![0, 0xff, 0x10]);
        assert_eq!(
            c.local_id.unwrap().to_ike(),
            Identification::ipv4(Ipv4Addr::new(192, 0, 2, 1))
        );
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let e = VpnConfig::parse(
            Path::new("/etc/vpn.toml"),
            &format!("{GOOD}groups = [31, 5]\n"),
        )
        .unwrap_err();
        assert!(
            e.contains("/etc/vpn.toml") && e.contains("line 7") && e.contains("group 5"),
            "{e}"
        );
        let e =
            VpnConfig::parse(Path::new("v.toml"), &format!("{GOOD}tunnel = \"x\"\n")).unwrap_err();
        assert!(e.contains("line 7") && e.contains("tunnel"), "{e}");
        let e = VpnConfig::parse(
            Path::new("v.toml"),
            &format!("{GOOD}esp_proposals = [\"des\"]\n"),
        )
        .unwrap_err();
        assert!(e.contains("line 7") && e.contains("des"), "{e}");
        let e = VpnConfig::parse(Path::new("v.toml"), &format!("{GOOD}table = 254\n")).unwrap_err();
        assert!(e.contains("line 7") && e.contains("`table`"), "{e}");
        let e = VpnConfig::parse(Path::new("v.toml"), &GOOD.replace("psk", "# psk")).unwrap_err();
        assert!(e.contains("`psk`"), "{e}");
        let e =
            VpnConfig::parse(Path::new("v.toml"), &GOOD.replace("192.0.2.2", "gw")).unwrap_err();
        assert!(e.contains("line 2") && e.contains("gateway"), "{e}");
    }

    #[test]
    fn kill_switch_words_and_lists() {
        let ks = |v: &str| {
            VpnConfig::parse(Path::new("v.toml"), &format!("{GOOD}kill_switch = {v}\n"))
                .map(|c| c.kill_switch)
        };
        assert_eq!(ks("\"on\""), Ok(KillSwitchSetting::Auto));
        assert_eq!(ks("\"off\""), Ok(KillSwitchSetting::Nets(vec![])));
        assert_eq!(ks("[]"), Ok(KillSwitchSetting::Nets(vec![])));
        assert_eq!(
            ks("[\"10.1.0.0/16\"]"),
            Ok(KillSwitchSetting::Nets(vec![Cidr(
                Ipv4Addr::new(10, 1, 0, 0),
                16
            )]))
        );
        let c = VpnConfig::parse(Path::new("v.toml"), GOOD).unwrap();
        assert_eq!(c.kill_switch, KillSwitchSetting::Auto);
        assert_eq!(c.kill_switch.initial(), vec![(Ipv4Addr::UNSPECIFIED, 0)]);
        assert!(ks("\"off\"").unwrap().initial().is_empty());
        let e = ks("\"sometimes\"").unwrap_err();
        assert!(e.contains("line 7") && e.contains("sometimes"), "{e}");
        let e = ks("[\"10.1.0.1/16\"]").unwrap_err();
        assert!(e.contains("host bits"), "{e}");
    }

    #[test]
    fn supervised_defaults() {
        let c = VpnConfig::parse(Path::new("v.toml"), GOOD).unwrap();
        assert!(c.follows_addresses(false) && !c.follows_addresses(true));
        assert!(!c.bind_interface && c.local_address.is_none());
        let t = format!(
            "{GOOD}local_address = \"10.0.0.5\"\nbind_interface = true\nauto_mobike = true\n"
        );
        let c = VpnConfig::parse(Path::new("v.toml"), &t).unwrap();
        assert!(c.follows_addresses(true) && c.bind_interface);
        assert_eq!(c.local_address, Some(Ipv4Addr::new(10, 0, 0, 5)));
        let e = VpnConfig::parse(
            Path::new("v.toml"),
            &format!("{GOOD}local_address = \"10.0.0\"\n"),
        )
        .unwrap_err();
        assert!(e.contains("line 7") && e.contains("local_address"), "{e}");
    }
}
