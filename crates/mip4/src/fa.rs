//! The foreign agent's relay logic (RFC 5944 sections 2 and 3.7, RFC 3024,
//! RFC 5265 section 3.5), sans-IO.
//!
//! [`ForeignAgent`] sends agent advertisements (periodically and in answer to
//! solicitations), checks a visiting node's Registration Request with its own
//! rules and codes, relays it to the home agent (everything up to and including
//! the MN-HA authenticator, plus an FA-HA authenticator when it shares a key with
//! that home agent), relays the reply back to the node by its link-layer address,
//! and keeps the visitor list. Extensions meant for the foreign agent (the
//! encapsulating delivery style, MN-FA authentication) follow the MN-HA
//! authenticator and are consumed, not relayed.
//!
//! Visitors are keyed by link-layer address, home address and home agent, so one
//! node can hold registrations towards two home agents at once (RFC 5265 section
//! 3.5: an internal and an external home agent through the same FA).
//!
//! A visited link is shared with strangers, so a request changes nothing by itself
//! (RFC 5944 section 3.7.2.2 keeps it as a *pending* registration): the visitor list,
//! and with it the shell's neighbour entry, host route and reverse-tunnel rule, moves
//! only when the home agent's acceptance (which it sends only for a request whose
//! MN-HA authenticator it verified) comes back through the agent. A pending request
//! from one link-layer address never touches a visitor registered from another, and
//! each sender may hold only a few pending requests and send at a bounded rate
//! ([`FaConfig::pending_per_sender`], [`FaConfig::sender_burst`]). Replies to a node
//! go out by its link-layer address ([`FaTransmit::ToMobileNode`]); the shell sends
//! them as frames and installs nothing for them.

use crate::auth::{self, SecurityAssociation};
use crate::replay::low32;
use crate::wire::agent::{AgentAdvertisement, AgentFlags, MobilityAgentExt, RouterEntry};
use crate::wire::extension::{AuthKind, ExtensionIter, ExtensionType};
use crate::wire::registration::{REPLY_FIXED_LEN, REQUEST_FIXED_LEN};
use crate::wire::{
    Flags, MessageType, RegistrationReply, RegistrationRequest, ReplyCode, MIP_PORT,
};
use crate::Transmit;
use std::collections::{BTreeMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

/// Foreign agent settings.
#[derive(Debug, Clone)]
pub struct FaConfig {
    /// The agent's address on the visited link (the advertised router address).
    pub address: Ipv4Addr,
    /// The care-of address it offers (usually `address`).
    pub care_of: Ipv4Addr,
    /// Prefix length of the visited link, advertised in the Prefix-Lengths extension.
    pub prefix_len: u8,
    /// Time between unsolicited advertisements.
    pub adv_interval: Duration,
    /// Longest registration lifetime accepted, seconds.
    pub max_lifetime: u16,
    pub reverse_tunneling: bool,
    /// Reverse tunneling is required (requests without T are denied with 75).
    pub reverse_tunneling_required: bool,
    /// Visitors (accepted and pending) before the agent says it is busy.
    pub max_visitors: usize,
    /// How long a relayed request waits for the home agent's reply.
    pub pending_timeout: Duration,
    /// Home agents with which the FA shares an FA-HA security association.
    pub fa_ha_sas: Vec<(Ipv4Addr, SecurityAssociation)>,
    /// Mobile nodes (by home address) with an MN-FA security association: their
    /// requests must carry a valid MN-FA authenticator.
    pub mn_fa_sas: Vec<(Ipv4Addr, SecurityAssociation)>,
    /// Pending requests one link-layer address may hold at once (a node with an
    /// internal and an external home agent needs two).
    pub pending_per_sender: usize,
    /// Requests one link-layer address may send in a burst; the allowance then
    /// refills by one every [`FaConfig::sender_refill`].
    pub sender_burst: u32,
    pub sender_refill: Duration,
}

impl FaConfig {
    pub fn new(address: Ipv4Addr, prefix_len: u8) -> Self {
        FaConfig {
            address,
            care_of: address,
            prefix_len,
            adv_interval: Duration::from_secs(1),
            max_lifetime: 1800,
            reverse_tunneling: true,
            reverse_tunneling_required: false,
            max_visitors: 1024,
            pending_timeout: Duration::from_secs(7),
            fa_ha_sas: Vec::new(),
            mn_fa_sas: Vec::new(),
            pending_per_sender: 4,
            sender_burst: 8,
            sender_refill: Duration::from_millis(500),
        }
    }
}

/// How a visitor hands reverse-tunneled packets to the agent (RFC 3024 section 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStyle {
    /// Plain packets to the agent as the default router.
    Direct,
    /// Packets encapsulated to the agent's address.
    Encapsulating,
}

/// A visiting mobile node with an accepted registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Visitor {
    pub mac: [u8; 6],
    pub home_addr: Ipv4Addr,
    pub home_agent: Ipv4Addr,
    /// UDP port the node sent its request from (replies go there).
    pub port: u16,
    pub lifetime: u16,
    pub expires: Instant,
    pub reverse_tunnel: bool,
    pub delivery: DeliveryStyle,
}

/// What the I/O shell must send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaTransmit {
    /// An ICMP agent advertisement to `dst` (224.0.0.1 or a soliciting node), TTL 1.
    Advertisement { dst: Ipv4Addr, icmp: Vec<u8> },
    /// A relayed request to a home agent over UDP.
    ToHomeAgent(Transmit),
    /// A reply to a visiting node, addressed by link-layer address: IP destination
    /// is its home address, which is not on this link (RFC 5944 section 3.7.2.3).
    ToMobileNode {
        mac: [u8; 6],
        home_addr: Ipv4Addr,
        port: u16,
        src: SocketAddrV4,
        payload: Vec<u8>,
    },
}

/// Visitor list changes for the shell (neighbour entries, routes, reverse tunnels).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaEvent {
    VisitorAdded(Visitor),
    VisitorRenewed(Visitor),
    VisitorRemoved {
        mac: [u8; 6],
        home_addr: Ipv4Addr,
        home_agent: Ipv4Addr,
    },
}

/// Why an input was dropped without an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaDrop {
    Truncated,
    UnexpectedMessage,
    /// A reply matching no relayed request.
    UnsolicitedReply,
    /// A reply whose FA-HA authenticator failed.
    HomeAgentAuthFailed,
    /// A request over its sender's pending or rate allowance.
    RateLimited,
}

/// Counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FaStats {
    pub advertisements: u64,
    pub requests_relayed: u64,
    pub replies_relayed: u64,
    /// Denials the agent itself sent, by code.
    pub denials_by_code: BTreeMap<u8, u64>,
    pub drops: BTreeMap<FaDrop, u64>,
}

#[derive(Debug, Clone)]
struct Pending {
    mac: [u8; 6],
    home_addr: Ipv4Addr,
    home_agent: Ipv4Addr,
    ident: u64,
    port: u16,
    reverse_tunnel: bool,
    delivery: DeliveryStyle,
    deadline: Instant,
}

type VisitorKey = ([u8; 6], Ipv4Addr, Ipv4Addr);

/// A sender's request allowance (token bucket): tokens left as of `at`.
#[derive(Debug, Clone, Copy)]
struct Allowance {
    tokens: u32,
    at: Instant,
}

/// The foreign agent core. See the module documentation.
pub struct ForeignAgent {
    cfg: FaConfig,
    sequence: u16,
    next_adv: Option<Instant>,
    pending: Vec<Pending>,
    visitors: BTreeMap<VisitorKey, Visitor>,
    /// Request allowances by link-layer address (bounded, see `admit_sender`).
    allowances: BTreeMap<[u8; 6], Allowance>,
    transmits: VecDeque<FaTransmit>,
    events: VecDeque<FaEvent>,
    stats: FaStats,
}

impl ForeignAgent {
    /// A foreign agent that sends its first advertisement at `now`.
    pub fn new(cfg: FaConfig, now: Instant) -> Self {
        ForeignAgent {
            cfg,
            sequence: 0,
            next_adv: Some(now),
            pending: Vec::new(),
            visitors: BTreeMap::new(),
            allowances: BTreeMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: FaStats::default(),
        }
    }

    pub fn config(&self) -> &FaConfig {
        &self.cfg
    }

    pub fn stats(&self) -> &FaStats {
        &self.stats
    }

    pub fn visitors(&self) -> impl Iterator<Item = &Visitor> {
        self.visitors.values()
    }

    /// The visitor to deliver a packet for `home_addr` to (forward tunnel exit).
    pub fn visitor_for(&self, home_addr: Ipv4Addr) -> Option<&Visitor> {
        self.visitors.values().find(|v| v.home_addr == home_addr)
    }

    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<FaTransmit> {
        self.transmits.pop_front()
    }

    #[must_use]
    pub fn poll_event(&mut self) -> Option<FaEvent> {
        self.events.pop_front()
    }

    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let p = self.pending.iter().map(|p| p.deadline).min();
        let v = self.visitors.values().map(|v| v.expires).min();
        [self.next_adv, p, v].into_iter().flatten().min()
    }

    fn busy(&self) -> bool {
        self.visitors.len() + self.pending.len() >= self.cfg.max_visitors
    }

    /// The advertisement the agent sends now (the sequence number advances).
    fn advertisement(&mut self) -> Vec<u8> {
        let mut flags = AgentFlags::F;
        if self.cfg.reverse_tunneling {
            flags = flags | AgentFlags::T;
        }
        if self.busy() {
            flags = flags | AgentFlags::B;
        }
        let adv = AgentAdvertisement {
            // Code 0: the agent also routes its visitors' ordinary traffic.
            code: 0,
            lifetime: u16::try_from(self.cfg.adv_interval.as_secs().saturating_mul(3).max(3))
                .unwrap_or(u16::MAX),
            routers: vec![RouterEntry {
                addr: self.cfg.address,
                preference: 0,
            }],
            mobility: MobilityAgentExt {
                sequence: self.sequence,
                registration_lifetime: self.cfg.max_lifetime,
                flags,
                care_of: vec![self.cfg.care_of],
            },
            prefix_lengths: Some(vec![self.cfg.prefix_len]),
            padding: 0,
        };
        // RFC 5944 section 2.3.1: after 0xffff the sequence wraps to 256, so that a
        // node can tell a rollover from an agent reboot.
        self.sequence = if self.sequence == 0xffff {
            256
        } else {
            self.sequence + 1
        };
        self.stats.advertisements += 1;
        adv.to_bytes()
    }

    /// Answers an Agent Solicitation from `from`: by unicast when the solicitor's
    /// address is on the agent's link, by multicast to 224.0.0.1 otherwise (a
    /// visiting node solicits from its home address, which IP would route away).
    pub fn handle_solicitation(&mut self, _now: Instant, from: Ipv4Addr) {
        let icmp = self.advertisement();
        let on_link = crate::Ipv4Net::new(self.cfg.address, self.cfg.prefix_len)
            .is_some_and(|n| n.contains(from));
        let dst = if on_link && !from.is_unspecified() {
            from
        } else {
            Ipv4Addr::new(224, 0, 0, 1)
        };
        self.transmits
            .push_back(FaTransmit::Advertisement { dst, icmp });
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.next_adv.is_none_or(|t| t <= now) {
            let icmp = self.advertisement();
            self.transmits.push_back(FaTransmit::Advertisement {
                dst: Ipv4Addr::new(224, 0, 0, 1),
                icmp,
            });
            self.next_adv = Some(now + self.cfg.adv_interval);
        }
        let (due, keep): (Vec<_>, Vec<_>) = self.pending.drain(..).partition(|p| p.deadline <= now);
        self.pending = keep;
        for p in due {
            // RFC 5944: the agent tells the node its request timed out (code 78).
            self.deny_pending(&p, ReplyCode::FA_REGISTRATION_TIMEOUT);
        }
        let expired: Vec<VisitorKey> = self
            .visitors
            .iter()
            .filter(|(_, v)| v.expires <= now)
            .map(|(k, _)| *k)
            .collect();
        for k in expired {
            self.visitors.remove(&k);
            self.events.push_back(FaEvent::VisitorRemoved {
                mac: k.0,
                home_addr: k.1,
                home_agent: k.2,
            });
        }
    }

    fn deny_pending(&mut self, p: &Pending, code: ReplyCode) {
        let r = RegistrationReply {
            code,
            lifetime: 0,
            home_addr: p.home_addr,
            home_agent: p.home_agent,
            ident: p.ident,
            extensions: vec![],
        };
        self.send_denial(p.mac, p.home_addr, p.port, r);
    }

    fn send_denial(
        &mut self,
        mac: [u8; 6],
        home_addr: Ipv4Addr,
        port: u16,
        mut r: RegistrationReply,
    ) {
        *self.stats.denials_by_code.entry(r.code.0).or_default() += 1;
        let mut payload = Vec::new();
        r.extensions.clear();
        r.emit(&mut payload);
        if let Some((_, sa)) = self.cfg.mn_fa_sas.iter().find(|(h, _)| *h == home_addr) {
            sa.append(AuthKind::MnFa, &mut payload);
        }
        self.transmits.push_back(FaTransmit::ToMobileNode {
            mac,
            home_addr,
            port,
            src: SocketAddrV4::new(self.cfg.address, MIP_PORT),
            payload,
        });
    }

    /// Handles a UDP 434 datagram: a Registration Request from a visiting node
    /// (`mac` is the link-layer source of its frame) or a Reply from a home agent.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddrV4,
        mac: [u8; 6],
        payload: &[u8],
    ) {
        match MessageType::of(payload) {
            Some(MessageType::REGISTRATION_REQUEST) => self.handle_request(now, from, mac, payload),
            Some(MessageType::REGISTRATION_REPLY) => self.handle_reply(now, from, payload),
            Some(_) => self.drop(FaDrop::UnexpectedMessage),
            None => self.drop(FaDrop::Truncated),
        }
    }

    fn drop(&mut self, d: FaDrop) {
        *self.stats.drops.entry(d).or_default() += 1;
    }

    /// Whether `mac` may send another request now: under its pending limit and with
    /// an allowance token left. The table of allowances is bounded; when it is full,
    /// senders whose allowance has refilled are forgotten first, and a new sender is
    /// refused while none can be.
    fn admit_sender(&mut self, now: Instant, mac: [u8; 6]) -> bool {
        if self.pending.iter().filter(|p| p.mac == mac).count() >= self.cfg.pending_per_sender {
            return false;
        }
        let burst = self.cfg.sender_burst.max(1);
        let refill = self.cfg.sender_refill.max(Duration::from_millis(1));
        let refilled = |a: &Allowance| {
            let gained = now.saturating_duration_since(a.at).as_nanos() / refill.as_nanos();
            let gained = u32::try_from(gained).unwrap_or(u32::MAX);
            a.tokens.saturating_add(gained).min(burst)
        };
        let limit = self.cfg.max_visitors.saturating_mul(4).max(64);
        if !self.allowances.contains_key(&mac) && self.allowances.len() >= limit {
            self.allowances.retain(|_, a| refilled(a) < burst);
            if self.allowances.len() >= limit {
                return false;
            }
        }
        let a = self.allowances.entry(mac).or_insert(Allowance {
            tokens: burst,
            at: now,
        });
        let tokens = refilled(a);
        if tokens == 0 {
            return false;
        }
        // Keep the fractional refill: advance `at` only by whole refill periods.
        if tokens != a.tokens {
            a.at = if tokens == burst {
                now
            } else {
                a.at + refill * (tokens - a.tokens)
            };
        }
        a.tokens = tokens - 1;
        true
    }

    fn handle_request(&mut self, now: Instant, from: SocketAddrV4, mac: [u8; 6], payload: &[u8]) {
        let Ok(req) = RegistrationRequest::parse_fixed(payload) else {
            return self.drop(FaDrop::Truncated);
        };
        if !self.admit_sender(now, mac) {
            return self.drop(FaDrop::RateLimited);
        }
        let deny = |code: ReplyCode, lifetime: u16| RegistrationReply {
            code,
            lifetime,
            home_addr: req.home_addr,
            home_agent: req.home_agent,
            ident: req.ident,
            extensions: vec![],
        };
        // Where the MN-HA authenticator ends, and what follows it for us.
        let mut mn_ha_end = None;
        let mut encapsulating = false;
        let mut malformed = false;
        let mut unknown_for_us = false;
        for e in ExtensionIter::new(payload, REQUEST_FIXED_LEN) {
            let Ok(e) = e else {
                malformed = true;
                break;
            };
            if mn_ha_end.is_none() {
                if e.ty == ExtensionType::MN_HA_AUTH {
                    mn_ha_end = Some(e.offset + e.raw.len());
                }
                continue;
            }
            match e.ty {
                ExtensionType::ENCAP_DELIVERY_STYLE => encapsulating = true,
                ExtensionType::MN_FA_AUTH => break,
                t if !t.is_skippable() => unknown_for_us = true,
                _ => {}
            }
        }
        let reply_to = |fa: &mut Self, r| fa.send_denial(mac, req.home_addr, from.port(), r);
        let Some(relay_end) = mn_ha_end.filter(|_| !malformed && !unknown_for_us) else {
            return reply_to(self, deny(ReplyCode::FA_POORLY_FORMED_REQUEST, 0));
        };
        if let Some((_, sa)) = self.cfg.mn_fa_sas.iter().find(|(h, _)| *h == req.home_addr) {
            if auth::verify(payload, REQUEST_FIXED_LEN, AuthKind::MnFa, |spi| {
                (spi == sa.spi).then_some(sa)
            })
            .is_err()
            {
                return reply_to(self, deny(ReplyCode::FA_MN_AUTH_FAILED, 0));
            }
        }
        let code = if req.care_of != self.cfg.care_of {
            Some(ReplyCode::FA_INVALID_COA)
        } else if req.flags.contains(Flags::M) || req.flags.contains(Flags::G) {
            Some(ReplyCode::FA_ENCAP_UNAVAILABLE)
        } else if req.flags.contains(Flags::T) && !self.cfg.reverse_tunneling {
            Some(ReplyCode::FA_REVERSE_TUNNEL_UNAVAILABLE)
        } else if !req.flags.contains(Flags::T)
            && req.lifetime != 0
            && self.cfg.reverse_tunneling_required
        {
            Some(ReplyCode::FA_REVERSE_TUNNEL_MANDATORY)
        } else if encapsulating && !req.flags.contains(Flags::T) {
            // The delivery style only means something with reverse tunneling.
            Some(ReplyCode::FA_POORLY_FORMED_REQUEST)
        } else if req.lifetime > self.cfg.max_lifetime {
            return reply_to(
                self,
                deny(ReplyCode::FA_LIFETIME_TOO_LONG, self.cfg.max_lifetime),
            );
        } else if req.home_agent.is_unspecified() || req.home_agent.is_broadcast() {
            Some(ReplyCode::FA_MISSING_HOME_AGENT)
        } else if self.busy()
            && !self
                .visitors
                .contains_key(&(mac, req.home_addr, req.home_agent))
        {
            Some(ReplyCode::FA_INSUFFICIENT_RESOURCES)
        } else {
            None
        };
        if let Some(code) = code {
            return reply_to(self, deny(code, 0));
        }
        // Relay: everything through the MN-HA authenticator, then FA-HA if we can.
        let mut relayed = payload[..relay_end].to_vec();
        if let Some((_, sa)) = self
            .cfg
            .fa_ha_sas
            .iter()
            .find(|(h, _)| *h == req.home_agent)
        {
            sa.append(AuthKind::FaHa, &mut relayed);
        }
        self.pending.retain(|p| {
            !(p.mac == mac && p.home_agent == req.home_agent && p.home_addr == req.home_addr)
        });
        self.pending.push(Pending {
            mac,
            home_addr: req.home_addr,
            home_agent: req.home_agent,
            ident: req.ident,
            port: from.port(),
            reverse_tunnel: req.flags.contains(Flags::T),
            delivery: if encapsulating {
                DeliveryStyle::Encapsulating
            } else {
                DeliveryStyle::Direct
            },
            deadline: now + self.cfg.pending_timeout,
        });
        self.stats.requests_relayed += 1;
        self.transmits.push_back(FaTransmit::ToHomeAgent(Transmit {
            src: SocketAddrV4::new(self.cfg.address, MIP_PORT),
            dst: SocketAddrV4::new(req.home_agent, MIP_PORT),
            payload: relayed,
        }));
    }

    fn handle_reply(&mut self, now: Instant, from: SocketAddrV4, payload: &[u8]) {
        let Ok(rep) = RegistrationReply::parse_fixed(payload) else {
            return self.drop(FaDrop::Truncated);
        };
        let Some(pos) = self.pending.iter().position(|p| {
            p.home_agent == *from.ip()
                && low32(p.ident) == low32(rep.ident)
                && (p.home_addr == rep.home_addr || p.home_addr.is_unspecified())
        }) else {
            return self.drop(FaDrop::UnsolicitedReply);
        };
        let p = self.pending.remove(pos);
        if let Some((_, sa)) = self.cfg.fa_ha_sas.iter().find(|(h, _)| h == from.ip()) {
            if auth::verify(payload, REPLY_FIXED_LEN, AuthKind::FaHa, |spi| {
                (spi == sa.spi).then_some(sa)
            })
            .is_err()
            {
                self.drop(FaDrop::HomeAgentAuthFailed);
                return self.deny_pending(&p, ReplyCode::FA_HA_AUTH_FAILED);
            }
        }
        // Relay through the MN-HA authenticator (or whole, if there is none, e.g.
        // an unauthenticated denial); what follows was for us.
        let end = auth::find(payload, REPLY_FIXED_LEN, AuthKind::MnHa)
            .ok()
            .flatten()
            .map(|a| a.end)
            .unwrap_or(payload.len());
        let mut out = payload[..end].to_vec();
        if let Some((_, sa)) = self.cfg.mn_fa_sas.iter().find(|(h, _)| *h == p.home_addr) {
            sa.append(AuthKind::MnFa, &mut out);
        }
        let home_addr = if rep.home_addr.is_unspecified() {
            p.home_addr
        } else {
            rep.home_addr
        };
        let key = (p.mac, home_addr, p.home_agent);
        if rep.code.is_accepted() {
            if rep.lifetime == 0 {
                if self.visitors.remove(&key).is_some() {
                    self.events.push_back(FaEvent::VisitorRemoved {
                        mac: key.0,
                        home_addr: key.1,
                        home_agent: key.2,
                    });
                }
            } else {
                // The home agent authenticated this node: a registration of the same
                // home address with the same home agent from another link-layer
                // address (the node changed interface) ends.
                let stale: Vec<VisitorKey> = self
                    .visitors
                    .keys()
                    .filter(|k| k.1 == home_addr && k.2 == p.home_agent && k.0 != p.mac)
                    .copied()
                    .collect();
                for k in stale {
                    self.visitors.remove(&k);
                    self.events.push_back(FaEvent::VisitorRemoved {
                        mac: k.0,
                        home_addr: k.1,
                        home_agent: k.2,
                    });
                }
                let v = Visitor {
                    mac: p.mac,
                    home_addr,
                    home_agent: p.home_agent,
                    port: p.port,
                    lifetime: rep.lifetime,
                    expires: now + Duration::from_secs(u64::from(rep.lifetime)),
                    reverse_tunnel: p.reverse_tunnel,
                    delivery: p.delivery,
                };
                let ev = if self.visitors.insert(key, v.clone()).is_some() {
                    FaEvent::VisitorRenewed(v)
                } else {
                    FaEvent::VisitorAdded(v)
                };
                self.events.push_back(ev);
            }
        }
        self.stats.replies_relayed += 1;
        self.transmits.push_back(FaTransmit::ToMobileNode {
            mac: p.mac,
            home_addr,
            port: p.port,
            src: SocketAddrV4::new(self.cfg.address, MIP_PORT),
            payload: out,
        });
    }
}
