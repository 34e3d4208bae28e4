//! The home agent's registration processing (RFC 5944 section 3.8, RFC 3024,
//! RFC 2794, RFC 3519, RFC 5265 sections 3.1 and 4.3).
//!
//! [`HomeAgent`] validates Registration Requests in the order of RFC 5944
//! section 3.8.2 (authentication first, then replay, then the rest), keeps the
//! mobility bindings with their expiry, and produces replies ([`Transmit`]) and
//! binding events ([`HaEvent`]) for the I/O shell, which installs tunnels and
//! routes. Every input that is not answered is counted by [`DropReason`]. The
//! data path asks it too (`ha_admit`): [`HomeAgent::admit_reverse`],
//! [`HomeAgent::admit_udp_tunnel`] and [`HomeAgent::forward`].
//!
//! When a list of trusted networks is configured (the internal home agent of
//! RFC 5265), requests from other sources are silently dropped and counted, and
//! every reply carries the Trusted Networks Configured extension.

use crate::auth::{self, AuthError, SecurityAssociation};
use crate::expiry::ExpiryWheel;
use crate::net::Ipv4Net;
use crate::replay::{self, NtpTime, ReplayMethod, ReplayState, Verdict};
use crate::wire::extension::{AuthKind, ExtensionIter, ExtensionType, UdpTunnelReplyCode};
use crate::wire::registration::REQUEST_FIXED_LEN;
use crate::wire::{
    Extension, Flags, MessageType, RegistrationReply, RegistrationRequest, ReplyCode,
};
use crate::Transmit;
use rand::{rngs::StdRng, Rng, SeedableRng};
use smallvec::SmallVec;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant, SystemTime};

/// Whether the home agent offers reverse tunneling (RFC 3024).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReverseTunneling {
    Unsupported,
    Supported,
    /// Requests without the T bit are denied with code 138.
    Mandatory,
}

/// RFC 3519 UDP tunneling policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpTunneling {
    pub enabled: bool,
    /// Keepalive interval asked of the mobile node, seconds (RFC 3519 default 110).
    pub keepalive: u16,
    /// Tunnel over UDP whenever the mobile node asks, even without a NAT.
    pub force: bool,
}

impl Default for UdpTunneling {
    fn default() -> Self {
        UdpTunneling {
            enabled: true,
            keepalive: 110,
            force: false,
        }
    }
}

/// What the home agent knows about one mobile node.
#[derive(Debug, Clone)]
pub struct MobileNodeConfig {
    /// The static home address; `None` for a node identified by NAI that gets a
    /// home address from the pool (RFC 2794).
    pub home_addr: Option<Ipv4Addr>,
    pub nai: Option<String>,
    /// Security associations, selected by SPI.
    pub sas: Vec<SecurityAssociation>,
    pub replay: ReplayMethod,
}

/// Home agent configuration.
#[derive(Debug, Clone)]
pub struct HaConfig {
    /// The home agent address mobile nodes register with.
    pub address: Ipv4Addr,
    /// Longest lifetime granted, seconds (requests asking more are clamped).
    pub max_lifetime: u16,
    /// Simultaneous bindings per mobile node (the S flag); 1 disables them.
    pub max_bindings_per_mn: usize,
    pub replay_tolerance: Duration,
    /// RFC 5265 trusted networks; empty (the default) for a plain or external HA.
    pub trusted_networks: Vec<Ipv4Net>,
    pub reverse_tunneling: ReverseTunneling,
    pub udp_tunneling: UdpTunneling,
    /// First address and size of the pool for NAI-identified nodes without a home address.
    pub dynamic_pool: Option<(Ipv4Addr, u32)>,
    /// Foreign agents with which an FA-HA security association exists: their
    /// relayed requests must carry a valid FA-HA authentication extension.
    pub fa_ha_sas: Vec<(Ipv4Addr, SecurityAssociation)>,
}

impl HaConfig {
    pub fn new(address: Ipv4Addr) -> Self {
        HaConfig {
            address,
            max_lifetime: 1800,
            max_bindings_per_mn: 4,
            replay_tolerance: replay::DEFAULT_TOLERANCE,
            trusted_networks: Vec::new(),
            reverse_tunneling: ReverseTunneling::Supported,
            udp_tunneling: UdpTunneling::default(),
            dynamic_pool: None,
            fa_ha_sas: Vec::new(),
        }
    }
}

/// How packets for a binding are tunneled to the care-of address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tunnel {
    /// IP-in-IP (RFC 2003) to the care-of address.
    IpInIp,
    /// RFC 3519: Tunnel Data messages over UDP to `peer` (the NAT's public side).
    Udp { peer: SocketAddrV4, keepalive: u16 },
}

/// A mobility binding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub home_addr: Ipv4Addr,
    pub care_of: Ipv4Addr,
    /// Where the request came from (the care-of address, a foreign agent or a NAT).
    pub source: SocketAddrV4,
    /// The address the request was sent to (the HA's own address on that path).
    pub local: SocketAddrV4,
    /// Granted lifetime, seconds.
    pub lifetime: u16,
    pub expires: Instant,
    /// The T bit: the node (or its FA) reverse tunnels to the HA.
    pub reverse_tunnel: bool,
    /// The D bit: the node decapsulates itself (co-located care-of address).
    pub colocated: bool,
    pub broadcast: bool,
    pub tunnel: Tunnel,
    pub nai: Option<String>,
}

/// Why a binding went away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoveReason {
    Deregistered,
    Expired,
    /// A registration without the S flag replaced it.
    Replaced,
    /// Its node was removed from the configuration (a key file reload).
    Revoked,
}

/// What the I/O shell must apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HaEvent {
    BindingAdded(Binding),
    /// Renewed, possibly with new tunnel parameters (e.g. a new NAT mapping).
    BindingRenewed(Binding),
    BindingRemoved {
        home_addr: Ipv4Addr,
        care_of: Ipv4Addr,
        reason: RemoveReason,
    },
}

/// Why an input produced no reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DropReason {
    Empty,
    /// Not a Registration Request (e.g. a reply or an unknown type on port 434).
    UnexpectedMessage,
    /// Shorter than the fixed part.
    Truncated,
    /// RFC 5265: source outside the trusted networks (silently dropped).
    UntrustedSource,
}

/// Counters, for the status command and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HaStats {
    pub requests: u64,
    pub replies_by_code: BTreeMap<u8, u64>,
    pub drops: BTreeMap<DropReason, u64>,
    /// Authentication failures (answered with 131), by reason.
    pub auth_failures: BTreeMap<AuthError, u64>,
    pub bindings_expired: u64,
}

struct MnRecord {
    /// The first security association, kept inline: one cache miss less per request.
    sa0: SecurityAssociation,
    /// `cfg.sas` holds the node's other security associations (not `sa0` again).
    cfg: MobileNodeConfig,
    home_addr: Option<Ipv4Addr>,
    replay: ReplayState,
    /// Usually one binding: kept inline, another cache miss saved.
    bindings: SmallVec<[Binding; 1]>,
    /// For each binding (by care-of address), the deadline of its one live entry
    /// in the expiry wheel. See [`HomeAgent::schedule`].
    scheduled: SmallVec<[(Ipv4Addr, Instant); 1]>,
}

/// The home agent core. See the module documentation.
pub struct HomeAgent {
    cfg: HaConfig,
    mns: Vec<MnRecord>,
    by_home: HashMap<Ipv4Addr, usize, BuildAddrHasher>,
    by_nai: HashMap<Vec<u8>, usize>,
    /// Expiry of bindings: (home address, care-of address); one live entry per
    /// binding, stale entries skipped (see [`HomeAgent::schedule`]).
    expiry: ExpiryWheel<(Ipv4Addr, Ipv4Addr)>,
    binding_count: usize,
    pool_next: u32,
    rng: StdRng,
    transmits: VecDeque<Transmit>,
    events: VecDeque<HaEvent>,
    stats: HaStats,
}

/// Error adding a mobile node to the home agent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("mobile node has neither a home address nor a NAI")]
    NoIdentity,
    #[error("mobile node has no security association")]
    NoSa,
    #[error("home address {0} is configured twice")]
    DuplicateHome(Ipv4Addr),
    #[error("NAI {0:?} is configured twice")]
    DuplicateNai(String),
    #[error("NAI {0:?} has no home address and no dynamic pool is configured")]
    NoPool(String),
}

struct Parsed {
    nai: Option<Vec<u8>>,
    udp_request: Option<bool>,
    unknown_nonskippable: bool,
    malformed: bool,
    /// Well-formed extensions after MN-HA that RFC 5944 does not allow there
    /// (see [`crate::trailer`]).
    bad_trailer: bool,
}

impl HomeAgent {
    pub fn new(cfg: HaConfig, rng_seed: [u8; 32]) -> Self {
        HomeAgent {
            cfg,
            mns: Vec::new(),
            by_home: HashMap::default(),
            by_nai: HashMap::new(),
            expiry: ExpiryWheel::default(),
            binding_count: 0,
            pool_next: 0,
            rng: StdRng::from_seed(rng_seed),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: HaStats::default(),
        }
    }

    pub fn config(&self) -> &HaConfig {
        &self.cfg
    }

    /// Adds a mobile node and its security associations.
    pub fn add_mobile_node(&mut self, mn: MobileNodeConfig) -> Result<(), ConfigError> {
        if mn.home_addr.is_none() && mn.nai.is_none() {
            return Err(ConfigError::NoIdentity);
        }
        if mn.sas.is_empty() {
            return Err(ConfigError::NoSa);
        }
        if let Some(h) = mn.home_addr {
            if self.by_home.contains_key(&h) {
                return Err(ConfigError::DuplicateHome(h));
            }
        }
        if let Some(n) = &mn.nai {
            if self.by_nai.contains_key(n.as_bytes()) {
                return Err(ConfigError::DuplicateNai(n.clone()));
            }
            if mn.home_addr.is_none() && self.cfg.dynamic_pool.is_none() {
                return Err(ConfigError::NoPool(n.clone()));
            }
        }
        let idx = self.mns.len();
        if let Some(h) = mn.home_addr {
            self.by_home.insert(h, idx);
        }
        if let Some(n) = &mn.nai {
            self.by_nai.insert(n.as_bytes().to_vec(), idx);
        }
        // The first SA lives inline only; `cfg.sas` keeps the others (issue 15: a
        // copy of every node's keyed HMAC state cost ~250 octets a node).
        let mut mn = mn;
        let sa0 = mn.sas.remove(0);
        mn.sas.shrink_to_fit();
        self.mns.push(MnRecord {
            sa0,
            home_addr: mn.home_addr,
            cfg: mn,
            replay: ReplayState::default(),
            bindings: SmallVec::new(),
            scheduled: SmallVec::new(),
        });
        Ok(())
    }

    pub fn stats(&self) -> &HaStats {
        &self.stats
    }

    /// Number of mobile nodes configured.
    pub fn node_count(&self) -> usize {
        self.mns.len()
    }

    /// Number of mobility bindings.
    pub fn binding_count(&self) -> usize {
        self.binding_count
    }

    /// All current bindings, in home-address order.
    pub fn bindings(&self) -> Vec<Binding> {
        let mut v: Vec<Binding> = self
            .mns
            .iter()
            .flat_map(|m| m.bindings.iter().cloned())
            .collect();
        v.sort_by_key(|b| (b.home_addr, b.care_of));
        v
    }

    /// Every binding with its node's last accepted Identification, in no
    /// particular order and without a copy or a sort of the table (for a shell
    /// that saves its state often at a million bindings).
    pub fn for_each_binding(&self, mut f: impl FnMut(&Binding, Option<u64>)) {
        for m in &self.mns {
            if m.bindings.is_empty() {
                continue;
            }
            let ident = m.replay.last_accepted();
            for b in &m.bindings {
                f(b, ident);
            }
        }
    }

    /// The bindings of one home address.
    pub fn bindings_of(&self, home_addr: Ipv4Addr) -> &[Binding] {
        self.by_home
            .get(&home_addr)
            .and_then(|i| self.mns.get(*i))
            .map(|m| m.bindings.as_slice())
            .unwrap_or(&[])
    }

    /// The last Identification accepted from the node with this home address
    /// (saved with the bindings so a restarted home agent still refuses replays).
    pub fn last_ident(&self, home_addr: Ipv4Addr) -> Option<u64> {
        self.by_home
            .get(&home_addr)
            .and_then(|i| self.mns.get(*i))
            .and_then(|m| m.replay.last_accepted())
    }

    /// Re-installs a binding saved before a restart, with the node's last accepted
    /// Identification. Emits `BindingAdded` so the shell re-creates routes. Returns
    /// false (and changes nothing) for a binding that fails [`HomeAgent::check_restore`]
    /// (unknown node, expired, or out of the configuration's bounds).
    pub fn restore_binding(
        &mut self,
        now: Instant,
        binding: Binding,
        last_ident: Option<u64>,
    ) -> bool {
        if self.check_restore(now, &binding).is_err() {
            return false;
        }
        let Some(&idx) = self.by_home.get(&binding.home_addr) else {
            return false;
        };
        if let Some(l) = last_ident {
            if self.mns[idx].replay.last_accepted().is_none_or(|x| x < l) {
                self.mns[idx].replay = ReplayState::restored(Some(l));
            }
        }
        let simultaneous = self.cfg.max_bindings_per_mn > 1;
        self.bind(now, idx, binding, simultaneous);
        true
    }

    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    #[must_use]
    pub fn poll_event(&mut self) -> Option<HaEvent> {
        self.events.pop_front()
    }

    /// The next binding expiry, if any.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.expiry.next_deadline()
    }

    /// Expires bindings whose lifetime has ended.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut due = Vec::new();
        self.expiry.expire(now, |e| due.push(e));
        for (home, coa) in due {
            let Some(mn) = self.by_home.get(&home).and_then(|i| self.mns.get_mut(*i)) else {
                continue;
            };
            // Only the binding's live entry counts; any other is stale.
            let Some(si) = mn
                .scheduled
                .iter()
                .position(|(c, at)| *c == coa && *at <= now)
            else {
                continue;
            };
            mn.scheduled.swap_remove(si);
            let Some(pos) = mn.bindings.iter().position(|b| b.care_of == coa) else {
                continue;
            };
            let expires = mn.bindings[pos].expires;
            if expires > now {
                // Renewed since this entry was pushed: one new entry at the new
                // deadline, once per lifetime rather than once per renewal.
                self.expiry.push(now, expires, (home, coa));
                mn.scheduled.push((coa, expires));
            } else {
                let b = mn.bindings.swap_remove(pos);
                self.binding_count -= 1;
                self.stats.bindings_expired += 1;
                self.events.push_back(HaEvent::BindingRemoved {
                    home_addr: b.home_addr,
                    care_of: b.care_of,
                    reason: RemoveReason::Expired,
                });
            }
        }
    }

    /// Handles a batch of datagrams (as `recvmmsg` delivers them), with the same
    /// result as calling [`handle_datagram`](Self::handle_datagram) on each in
    /// order. With a million nodes, the cost of a registration is dominated by the
    /// cache and TLB misses to fetch that node's state; the batch form first looks
    /// up every node of the batch and prefetches its state, so those misses overlap
    /// instead of adding up.
    pub fn handle_datagrams(
        &mut self,
        now: Instant,
        wall: SystemTime,
        batch: &[(SocketAddrV4, SocketAddrV4, &[u8])],
    ) {
        for (_, _, payload) in batch {
            if payload.len() >= REQUEST_FIXED_LEN
                && payload[0] == MessageType::REGISTRATION_REQUEST.0
            {
                let home = Ipv4Addr::new(payload[4], payload[5], payload[6], payload[7]);
                if let Some(mn) = self.by_home.get(&home).and_then(|i| self.mns.get(*i)) {
                    cachehint::prefetch(mn);
                }
            }
        }
        for (from, to, payload) in batch {
            self.handle_datagram(now, wall, *from, *to, payload);
        }
    }

    /// Handles one UDP datagram received on port 434 from `from`, sent to `to`.
    /// `wall` is the current wall-clock time, for timestamp replay protection.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        wall: SystemTime,
        from: SocketAddrV4,
        to: SocketAddrV4,
        payload: &[u8],
    ) {
        match MessageType::of(payload) {
            None => self.drop(DropReason::Empty),
            Some(MessageType::REGISTRATION_REQUEST) => {
                self.handle_request(now, NtpTime::from_system_time(wall), from, to, payload)
            }
            Some(_) => self.drop(DropReason::UnexpectedMessage),
        }
    }

    fn drop(&mut self, r: DropReason) {
        *self.stats.drops.entry(r).or_default() += 1;
    }

    fn is_trusted(&self, a: Ipv4Addr) -> bool {
        self.cfg.trusted_networks.iter().any(|n| n.contains(a))
    }

    fn scan(payload: &[u8]) -> Parsed {
        let mut p = Parsed {
            nai: None,
            udp_request: None,
            unknown_nonskippable: false,
            malformed: false,
            bad_trailer: false,
        };
        for e in ExtensionIter::new(payload, REQUEST_FIXED_LEN) {
            let e = match e {
                Ok(e) => e,
                Err(_) => {
                    p.malformed = true;
                    break;
                }
            };
            match e.ty {
                // After MN-HA: only what RFC 5944 allows there (crate::trailer).
                ExtensionType::MN_HA_AUTH => {
                    match crate::trailer::check_after_mn_ha(payload, e.offset + e.raw.len()) {
                        Ok(()) => {}
                        Err(crate::trailer::TrailerError::Malformed) => p.malformed = true,
                        Err(crate::trailer::TrailerError::NotAllowed(_)) => p.bad_trailer = true,
                    }
                    break;
                }
                ExtensionType::ENCAP_DELIVERY_STYLE => {}
                ExtensionType::NAI | ExtensionType::UDP_TUNNEL_REQUEST => {
                    match Extension::parse(&e) {
                        Ok(Extension::Nai(n)) => p.nai = Some(n),
                        Ok(Extension::UdpTunnelRequest { force, .. }) => {
                            p.udp_request = Some(force)
                        }
                        _ => p.malformed = true,
                    }
                }
                t if !t.is_skippable() => p.unknown_nonskippable = true,
                _ => {}
            }
        }
        p
    }

    fn handle_request(
        &mut self,
        now: Instant,
        wall: NtpTime,
        from: SocketAddrV4,
        to: SocketAddrV4,
        payload: &[u8],
    ) {
        if !self.cfg.trusted_networks.is_empty() && !self.is_trusted(*from.ip()) {
            return self.drop(DropReason::UntrustedSource);
        }
        let Ok(req) = RegistrationRequest::parse_fixed(payload) else {
            return self.drop(DropReason::Truncated);
        };
        self.stats.requests += 1;
        let parsed = Self::scan(payload);
        let reply = |code: ReplyCode| Reply {
            code,
            lifetime: 0,
            home_addr: req.home_addr,
            ident: req.ident,
            nai: parsed.nai.clone(),
            udp: None,
            sa: None,
        };

        // Find the node: by home address, else by NAI (RFC 2794).
        let idx = if req.home_addr != Ipv4Addr::UNSPECIFIED {
            self.by_home.get(&req.home_addr).copied()
        } else {
            parsed
                .nai
                .as_ref()
                .and_then(|n| self.by_nai.get(n).copied())
        };
        let Some(idx) = idx else {
            // Nobody to authenticate against: deny, unauthenticated.
            *self
                .stats
                .auth_failures
                .entry(AuthError::UnknownSpi)
                .or_default() += 1;
            let code = if parsed.malformed {
                ReplyCode::HA_POORLY_FORMED_REQUEST
            } else {
                ReplyCode::HA_MN_AUTH_FAILED
            };
            return self.send_reply(from, to, reply(code));
        };
        if parsed.malformed {
            return self.send_reply(from, to, reply(ReplyCode::HA_POORLY_FORMED_REQUEST));
        }

        // 1. Authentication (RFC 5944 section 3.8.2.1).
        let mn = &self.mns[idx];
        let spi = match auth::verify(payload, REQUEST_FIXED_LEN, AuthKind::MnHa, |spi| mn.sa(spi)) {
            Ok(spi) => spi,
            Err(e) => {
                *self.stats.auth_failures.entry(e).or_default() += 1;
                // Sign the denial if the SPI names an SA, so a node with the right
                // key can trust it; otherwise it goes out unauthenticated.
                let sa = auth::find(payload, REQUEST_FIXED_LEN, AuthKind::MnHa)
                    .ok()
                    .flatten()
                    .and_then(|a| mn.sa(a.spi).map(|_| (idx, a.spi)));
                let mut r = reply(ReplyCode::HA_MN_AUTH_FAILED);
                r.sa = sa;
                return self.send_reply(from, to, r);
            }
        };
        let sa = Some((idx, spi));
        let method = mn.cfg.replay;
        let signed = |code| {
            let mut r = reply(code);
            r.sa = sa;
            r
        };

        // FA-HA authentication, when this source is a foreign agent we share an SA with.
        if let Some((_, fa_sa)) = self.cfg.fa_ha_sas.iter().find(|(a, _)| a == from.ip()) {
            if auth::verify(payload, REQUEST_FIXED_LEN, AuthKind::FaHa, |s| {
                (s == fa_sa.spi).then_some(fa_sa)
            })
            .is_err()
            {
                return self.send_reply(from, to, signed(ReplyCode::HA_FA_AUTH_FAILED));
            }
        }

        // 2. Identification (RFC 5944 section 5.7).
        let next_nonce: u32 = self.rng.gen();
        if let Verdict::Mismatch { reply_ident } = self.mns[idx].replay.check(
            method,
            self.cfg.replay_tolerance,
            req.ident,
            wall,
            next_nonce,
        ) {
            if method == ReplayMethod::Nonce {
                self.mns[idx].replay.issued_nonce(next_nonce);
            }
            let mut r = signed(ReplyCode::HA_IDENT_MISMATCH);
            r.ident = reply_ident;
            return self.send_reply(from, to, r);
        }

        // 3. The rest of the request.
        let deny = if parsed.unknown_nonskippable || parsed.bad_trailer {
            Some(ReplyCode::HA_POORLY_FORMED_REQUEST)
        } else if req.home_agent != self.cfg.address {
            Some(ReplyCode::HA_UNKNOWN_HA_ADDRESS)
        } else if req.flags.contains(Flags::M) || req.flags.contains(Flags::G) {
            Some(ReplyCode::HA_ENCAP_UNAVAILABLE)
        } else if req.flags.contains(Flags::T)
            && self.cfg.reverse_tunneling == ReverseTunneling::Unsupported
        {
            Some(ReplyCode::HA_REVERSE_TUNNEL_UNAVAILABLE)
        } else if !req.flags.contains(Flags::T)
            && req.lifetime != 0
            && self.cfg.reverse_tunneling == ReverseTunneling::Mandatory
        {
            Some(ReplyCode::HA_REVERSE_TUNNEL_MANDATORY)
        } else {
            None
        };
        if let Some(code) = deny {
            // A denial still consumes the Identification: it was authentic and fresh.
            let id = self.mns[idx].replay.commit(method, req.ident, next_nonce);
            let mut r = signed(code);
            r.ident = id;
            return self.send_reply(from, to, r);
        }

        // Home address: static, or from the pool for a NAI-identified node.
        let home_addr = match self.mns[idx].home_addr {
            Some(h) => h,
            None => match self.allocate(idx) {
                Some(h) => h,
                None => {
                    return self.send_reply(from, to, signed(ReplyCode::HA_INSUFFICIENT_RESOURCES))
                }
            },
        };

        let simultaneous = req.flags.contains(Flags::S) && self.cfg.max_bindings_per_mn > 1;
        let existing = self.mns[idx]
            .bindings
            .iter()
            .any(|b| b.care_of == req.care_of);
        if req.lifetime != 0
            && simultaneous
            && !existing
            && self.mns[idx].bindings.len() >= self.cfg.max_bindings_per_mn
        {
            let id = self.mns[idx].replay.commit(method, req.ident, next_nonce);
            let mut r = signed(ReplyCode::HA_TOO_MANY_BINDINGS);
            r.ident = id;
            return self.send_reply(from, to, r);
        }

        let ident = self.mns[idx].replay.commit(method, req.ident, next_nonce);
        let code = if req.flags.contains(Flags::S) && !simultaneous {
            ReplyCode::ACCEPTED_NO_SIMULTANEOUS
        } else {
            ReplyCode::ACCEPTED
        };

        // RFC 3519: tunnel over UDP when a NAT is detected or either side forces it.
        let udp = &self.cfg.udp_tunneling;
        let (tunnel, udp_reply) = match parsed.udp_request {
            Some(mn_force) if udp.enabled => {
                let nat = from.ip() != &req.care_of;
                if nat || mn_force || udp.force {
                    (
                        Tunnel::Udp {
                            peer: from,
                            keepalive: udp.keepalive,
                        },
                        Some((UdpTunnelReplyCode::WILL_TUNNEL, udp.force, udp.keepalive)),
                    )
                } else {
                    (Tunnel::IpInIp, None)
                }
            }
            _ => (Tunnel::IpInIp, None),
        };

        let lifetime = if req.lifetime == 0 {
            self.deregister(idx, home_addr, req.care_of);
            0
        } else {
            let lifetime = req.lifetime.min(self.cfg.max_lifetime);
            let b = Binding {
                home_addr,
                care_of: req.care_of,
                source: from,
                local: to,
                lifetime,
                expires: now + Duration::from_secs(u64::from(lifetime)),
                reverse_tunnel: req.flags.contains(Flags::T),
                colocated: req.flags.contains(Flags::D),
                broadcast: req.flags.contains(Flags::B),
                tunnel,
                nai: self.mns[idx].cfg.nai.clone(),
            };
            self.bind(now, idx, b, simultaneous);
            lifetime
        };

        let mut r = signed(code);
        r.lifetime = lifetime;
        r.home_addr = home_addr;
        r.ident = ident;
        r.udp = udp_reply;
        self.send_reply(from, to, r);
    }

    fn allocate(&mut self, idx: usize) -> Option<Ipv4Addr> {
        let a = self.pool_free_address()?;
        self.by_home.insert(a, idx);
        self.mns[idx].home_addr = Some(a);
        Some(a)
    }

    fn bind(&mut self, now: Instant, idx: usize, b: Binding, simultaneous: bool) {
        let mn = &mut self.mns[idx];
        if !simultaneous {
            let mut i = 0;
            while i < mn.bindings.len() {
                if mn.bindings[i].care_of != b.care_of {
                    let old = mn.bindings.swap_remove(i);
                    mn.scheduled.retain(|(c, _)| *c != old.care_of);
                    self.binding_count -= 1;
                    self.events.push_back(HaEvent::BindingRemoved {
                        home_addr: old.home_addr,
                        care_of: old.care_of,
                        reason: RemoveReason::Replaced,
                    });
                } else {
                    i += 1;
                }
            }
        }
        Self::schedule(&mut self.expiry, mn, now, &b);
        if let Some(slot) = mn.bindings.iter_mut().find(|x| x.care_of == b.care_of) {
            *slot = b.clone();
            self.events.push_back(HaEvent::BindingRenewed(b));
        } else {
            mn.bindings.push(b.clone());
            self.binding_count += 1;
            self.events.push_back(HaEvent::BindingAdded(b));
        }
    }

    /// Lifetime 0: remove the binding for `care_of`, or all of them when the
    /// care-of address is the home address (RFC 5944 section 3.6.1.2).
    fn deregister(&mut self, idx: usize, home_addr: Ipv4Addr, care_of: Ipv4Addr) {
        let all = care_of == home_addr;
        let mn = &mut self.mns[idx];
        let mut i = 0;
        while i < mn.bindings.len() {
            if all || mn.bindings[i].care_of == care_of {
                let old = mn.bindings.swap_remove(i);
                mn.scheduled.retain(|(c, _)| *c != old.care_of);
                self.binding_count -= 1;
                self.events.push_back(HaEvent::BindingRemoved {
                    home_addr: old.home_addr,
                    care_of: old.care_of,
                    reason: RemoveReason::Deregistered,
                });
            } else {
                i += 1;
            }
        }
    }

    fn send_reply(&mut self, to_peer: SocketAddrV4, local: SocketAddrV4, r: Reply) {
        *self.stats.replies_by_code.entry(r.code.0).or_default() += 1;
        let mut exts = Vec::with_capacity(3);
        if let Some(n) = r.nai {
            exts.push(Extension::Nai(n));
        }
        if let Some((code, force, keepalive)) = r.udp {
            exts.push(Extension::UdpTunnelReply {
                code,
                force,
                keepalive,
            });
        }
        if !self.cfg.trusted_networks.is_empty() {
            exts.push(Extension::TrustedNetworksConfigured);
        }
        let msg = RegistrationReply {
            code: r.code,
            lifetime: r.lifetime,
            home_addr: r.home_addr,
            home_agent: self.cfg.address,
            ident: r.ident,
            extensions: exts,
        };
        let mut payload = Vec::with_capacity(msg.buffer_len() + 22);
        msg.emit(&mut payload);
        if let Some(sa) = r.sa.and_then(|(i, spi)| self.mns.get(i)?.sa(spi)) {
            sa.append(AuthKind::MnHa, &mut payload);
        }
        // A reply through a foreign agent we share a key with carries FA-HA too.
        if let Some((_, sa)) = self.cfg.fa_ha_sas.iter().find(|(a, _)| a == to_peer.ip()) {
            sa.append(AuthKind::FaHa, &mut payload);
        }
        self.transmits.push_back(Transmit {
            src: local,
            dst: to_peer,
            payload,
        });
    }
}

struct Reply {
    code: ReplyCode,
    lifetime: u16,
    home_addr: Ipv4Addr,
    ident: u64,
    nai: Option<Vec<u8>>,
    udp: Option<(UdpTunnelReplyCode, bool, u16)>,
    /// Sign with this node's SA of this SPI.
    sa: Option<(usize, u32)>,
}

impl MnRecord {
    fn sa(&self, spi: u32) -> Option<&SecurityAssociation> {
        if self.sa0.spi == spi {
            Some(&self.sa0)
        } else {
            self.cfg.sas.iter().find(|s| s.spi == spi)
        }
    }
}

/// A cheap, non-cryptographic hasher for IPv4 keys. Home addresses are chosen
/// by the operator, not by the network, so flooding the table is not a concern;
/// the default SipHash costs more than the whole lookup.
#[derive(Clone, Copy, Default)]
struct BuildAddrHasher;

struct AddrHasher(u64);

impl std::hash::BuildHasher for BuildAddrHasher {
    type Hasher = AddrHasher;
    fn build_hasher(&self) -> AddrHasher {
        AddrHasher(0)
    }
}

impl std::hash::Hasher for AddrHasher {
    fn finish(&self) -> u64 {
        // Fibonacci hashing spreads sequential addresses over the whole table.
        self.0.wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
}

#[path = "ha_provision.rs"]
mod provision;
#[path = "ha_query.rs"]
mod query;
#[path = "ha_timers.rs"]
mod timers;
pub use provision::ReloadSummary;
#[path = "ha_restore.rs"]
mod restore;
pub use restore::RestoreRefused;
#[path = "ha_admit.rs"]
mod admit;
pub use admit::{ForwardTo, ReverseDrop};

#[cfg(test)]
#[path = "ha_tests.rs"]
mod tests;
