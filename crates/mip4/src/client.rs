//! The mobile node's registration client (RFC 5944 sections 3.6 and 3.7).
//!
//! [`RegistrationClient`] builds and signs Registration Requests for a given
//! attachment (care-of address, where to send, whether the address is co-located),
//! retransmits them with exponential backoff and a fresh Identification each time,
//! resynchronises its Identification after a code 133 denial, renews before the
//! granted lifetime ends, deregisters, and reports the outcome as
//! [`ClientEvent`]s. It never reads the clock; `now` and `wall` are inputs.
//!
//! Replies must carry a valid MN-HA authenticator. An unauthenticated denial
//! (code 131 from a home agent that does not share our key, or a foreign agent's
//! code) cannot be trusted, so it does not stop retransmission: it is remembered
//! and reported as the reason when the attempts run out.

use crate::auth::{self, SecurityAssociation};
use crate::replay::{low32, IdentGenerator, NtpTime, ReplayMethod};
use crate::wire::extension::{AuthKind, UdpTunnelReplyCode};
use crate::wire::registration::REPLY_FIXED_LEN;
use crate::wire::{
    Extension, Flags, MessageType, RegistrationReply, RegistrationRequest, ReplyCode,
};
use crate::Transmit;
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::collections::{BTreeMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant, SystemTime};

/// Mobile node registration settings.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The home address; 0.0.0.0 to ask for one by NAI (RFC 2794).
    pub home_addr: Ipv4Addr,
    pub home_agent: Ipv4Addr,
    pub nai: Option<String>,
    pub sa: SecurityAssociation,
    pub replay: ReplayMethod,
    /// Lifetime asked for, seconds.
    pub lifetime: u16,
    /// Ask for reverse tunneling (the T bit, RFC 3024).
    pub reverse_tunnel: bool,
    /// Ask for simultaneous bindings (the S bit).
    pub simultaneous: bool,
    /// Through a foreign agent, ask it for the encapsulating delivery style of
    /// reverse tunneling (RFC 3024); the extension follows the MN-HA authenticator.
    pub encapsulating_delivery: bool,
    /// Ask for RFC 3519 UDP tunneling; `Some(true)` forces it (the F bit).
    pub udp_tunnel: Option<bool>,
    /// First retransmission timeout (RFC 5944 suggests at least one second).
    pub initial_rto: Duration,
    pub max_rto: Duration,
    /// Requests sent before giving up (first transmission included).
    pub max_attempts: u32,
    /// Renew when this fraction of the granted lifetime has passed.
    pub renew_fraction: f64,
    /// Renew at least this often, whatever the lifetime (RFC 5265 T_MONITOR - grace).
    pub max_renew_interval: Option<Duration>,
}

impl ClientConfig {
    pub fn new(home_addr: Ipv4Addr, home_agent: Ipv4Addr, sa: SecurityAssociation) -> Self {
        ClientConfig {
            home_addr,
            home_agent,
            nai: None,
            sa,
            replay: ReplayMethod::Timestamp,
            lifetime: 1800,
            reverse_tunnel: true,
            simultaneous: false,
            encapsulating_delivery: false,
            udp_tunnel: None,
            initial_rto: Duration::from_secs(1),
            max_rto: Duration::from_secs(8),
            max_attempts: 5,
            renew_fraction: 0.8,
            max_renew_interval: None,
        }
    }
}

/// Where and how the node registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attachment {
    /// The care-of address (co-located, or the foreign agent's); the home address
    /// itself when deregistering at home.
    pub care_of: Ipv4Addr,
    /// Local address and port requests are sent from.
    pub local: SocketAddrV4,
    /// The home agent (or the foreign agent relaying to it), port 434.
    pub dest: SocketAddrV4,
    /// The D bit: the node decapsulates (co-located care-of address).
    pub colocated: bool,
}

/// Outcomes reported to the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    Registered {
        care_of: Ipv4Addr,
        home_addr: Ipv4Addr,
        code: ReplyCode,
        /// Lifetime granted, seconds.
        lifetime: u16,
        /// The reply carried the RFC 5265 Trusted Networks Configured extension.
        tnc: bool,
        /// The home agent will tunnel over UDP (RFC 3519): keepalive interval.
        udp_tunnel: Option<u16>,
    },
    Deregistered,
    Denied {
        code: ReplyCode,
        /// False when the denial was not authenticated (see the module docs).
        authenticated: bool,
    },
    TimedOut {
        attempts: u32,
    },
    /// The registration lifetime ended without a successful renewal.
    Expired,
    /// A code 133 taught us the home agent's clock (seconds of offset).
    Resynchronized {
        clock_offset: i64,
    },
}

/// Why a received datagram was ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ClientDrop {
    Malformed,
    NotAReply,
    /// No request outstanding, or the Identification does not match it.
    Unsolicited,
    /// Failed MN-HA authentication.
    BadAuthenticator,
}

/// Counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientStats {
    pub requests: u64,
    pub retransmissions: u64,
    pub replies_by_code: BTreeMap<u8, u64>,
    pub drops: BTreeMap<ClientDrop, u64>,
}

#[derive(Debug, Clone)]
struct Pending {
    att: Attachment,
    lifetime: u16,
    attempts: u32,
    rto: Duration,
    deadline: Instant,
    ident: u64,
    sent_at: Instant,
    resyncs: u32,
    hint: Option<ReplyCode>,
}

#[derive(Debug, Clone)]
struct Registered {
    att: Attachment,
    expires: Instant,
    renew_at: Instant,
    /// RFC 3519: the home agent will tunnel over UDP, with this keepalive interval.
    udp_keepalive: Option<u16>,
}

/// The registration client. See the module documentation.
pub struct RegistrationClient {
    cfg: ClientConfig,
    ids: IdentGenerator,
    rng: StdRng,
    pending: Option<Pending>,
    registered: Option<Registered>,
    home_addr: Ipv4Addr,
    transmits: VecDeque<Transmit>,
    events: VecDeque<ClientEvent>,
    stats: ClientStats,
    last_accepted_tnc: bool,
}

impl RegistrationClient {
    pub fn new(cfg: ClientConfig, rng_seed: [u8; 32]) -> Self {
        RegistrationClient {
            ids: IdentGenerator::new(cfg.replay),
            home_addr: cfg.home_addr,
            cfg,
            rng: StdRng::from_seed(rng_seed),
            pending: None,
            registered: None,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: ClientStats::default(),
            last_accepted_tnc: false,
        }
    }

    /// Whether the last accepted, authenticated reply (a registration or a
    /// deregistration) carried the Trusted Networks Configured extension. A node at
    /// home deregisters, and [`ClientEvent::Deregistered`] has no field for it.
    pub fn last_accepted_tnc(&self) -> bool {
        self.last_accepted_tnc
    }

    pub fn config(&self) -> &ClientConfig {
        &self.cfg
    }

    pub fn stats(&self) -> &ClientStats {
        &self.stats
    }

    /// The home address (assigned by the home agent when registering by NAI).
    pub fn home_addr(&self) -> Ipv4Addr {
        self.home_addr
    }

    /// True while a granted registration has not expired.
    pub fn is_registered(&self, now: Instant) -> bool {
        self.registered.as_ref().is_some_and(|r| r.expires > now)
    }

    /// When the current registration expires (`None`: not registered).
    pub fn registered_until(&self) -> Option<Instant> {
        self.registered.as_ref().map(|r| r.expires)
    }

    /// True while a request is outstanding.
    pub fn is_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// The current registration's care-of address.
    pub fn care_of(&self) -> Option<Ipv4Addr> {
        self.registered.as_ref().map(|r| r.att.care_of)
    }

    /// The tunnelling the home agent granted for the registration in force at
    /// `now`: `None` when not registered, `Some(None)` for IP-in-IP, and
    /// `Some(Some(keepalive))` when it tunnels over UDP (RFC 3519, keepalive
    /// interval in seconds, from the reply's UDP Tunnel Reply extension).
    pub fn udp_tunnel(&self, now: Instant) -> Option<Option<u16>> {
        self.registered
            .as_ref()
            .filter(|r| r.expires > now)
            .map(|r| r.udp_keepalive)
    }

    /// The caller could not send the outstanding request (for example the
    /// interface has no route yet): send it again at once, as a fresh first
    /// attempt with the same attachment and lifetime (new Identification,
    /// retransmission timer back to `initial_rto`). Returns false when no request
    /// is outstanding.
    pub fn resend_now(&mut self, now: Instant, wall: SystemTime) -> bool {
        let Some(p) = self.pending.as_mut() else {
            return false;
        };
        p.attempts = 0;
        p.rto = self.cfg.initial_rto;
        self.send_pending(now, wall);
        true
    }

    /// Starts registering `att` (a new attachment or a forced renewal). Any
    /// outstanding request is abandoned.
    pub fn register(&mut self, now: Instant, wall: SystemTime, att: Attachment) {
        if self.registered.as_ref().is_some_and(|r| r.att != att) {
            // The old registration is useless on the new attachment.
            self.registered = None;
        }
        self.start(now, wall, att, self.cfg.lifetime);
    }

    /// Deregisters: lifetime 0 for `att.care_of` (the home address at home
    /// deregisters every binding).
    pub fn deregister(&mut self, now: Instant, wall: SystemTime, att: Attachment) {
        self.registered = None;
        self.start(now, wall, att, 0);
    }

    /// Forgets everything (e.g. the interface went down); no message is sent.
    pub fn reset(&mut self) {
        self.pending = None;
        self.registered = None;
    }

    fn start(&mut self, now: Instant, wall: SystemTime, att: Attachment, lifetime: u16) {
        self.pending = Some(Pending {
            att,
            lifetime,
            attempts: 0,
            rto: self.cfg.initial_rto,
            deadline: now,
            ident: 0,
            sent_at: now,
            resyncs: 0,
            hint: None,
        });
        self.send_pending(now, wall);
    }

    fn send_pending(&mut self, now: Instant, wall: SystemTime) {
        let mn_nonce: u32 = self.rng.gen();
        let Some(p) = self.pending.as_mut() else {
            return;
        };
        p.ident = self.ids.next(NtpTime::from_system_time(wall), mn_nonce);
        p.attempts += 1;
        p.sent_at = now;
        if p.attempts > 1 {
            self.stats.retransmissions += 1;
            p.rto = (p.rto * 2).min(self.cfg.max_rto);
        }
        p.deadline = now + p.rto;
        self.stats.requests += 1;
        let mut flags = Flags::empty();
        if p.att.colocated {
            flags = flags | Flags::D;
        }
        if self.cfg.reverse_tunnel {
            flags = flags | Flags::T;
        }
        if self.cfg.simultaneous {
            flags = flags | Flags::S;
        }
        let mut extensions = Vec::new();
        if let Some(n) = &self.cfg.nai {
            extensions.push(Extension::Nai(n.as_bytes().to_vec()));
        }
        if let Some(force) = self.cfg.udp_tunnel {
            extensions.push(Extension::UdpTunnelRequest {
                force,
                r: false,
                encapsulation: crate::wire::extension::encapsulation::IP_IN_IP,
            });
        }
        let req = RegistrationRequest {
            flags,
            lifetime: p.lifetime,
            home_addr: self.home_addr,
            home_agent: self.cfg.home_agent,
            care_of: p.att.care_of,
            ident: p.ident,
            extensions,
        };
        let mut payload = Vec::with_capacity(req.buffer_len() + 22);
        req.emit(&mut payload);
        self.cfg.sa.append(AuthKind::MnHa, &mut payload);
        if !p.att.colocated && self.cfg.reverse_tunnel && self.cfg.encapsulating_delivery {
            Extension::EncapDeliveryStyle.emit(&mut payload);
        }
        self.transmits.push_back(Transmit {
            src: p.att.local,
            dst: p.att.dest,
            payload,
        });
    }

    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    #[must_use]
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let p = self.pending.as_ref().map(|p| p.deadline);
        let r = self.registered.as_ref().map(|r| {
            if self.pending.is_some() {
                r.expires
            } else {
                r.renew_at.min(r.expires)
            }
        });
        match (p, r) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn handle_timeout(&mut self, now: Instant, wall: SystemTime) {
        if let Some(r) = &self.registered {
            if r.expires <= now {
                self.registered = None;
                self.events.push_back(ClientEvent::Expired);
            }
        }
        if let Some(p) = &self.pending {
            if p.deadline <= now {
                if p.attempts >= self.cfg.max_attempts {
                    let ev = match p.hint {
                        Some(code) => ClientEvent::Denied {
                            code,
                            authenticated: false,
                        },
                        None => ClientEvent::TimedOut {
                            attempts: p.attempts,
                        },
                    };
                    self.pending = None;
                    self.events.push_back(ev);
                } else {
                    self.send_pending(now, wall);
                }
            }
        } else if let Some(r) = &self.registered {
            if r.renew_at <= now {
                let att = r.att;
                self.start(now, wall, att, self.cfg.lifetime);
            }
        }
    }

    fn drop(&mut self, d: ClientDrop) {
        *self.stats.drops.entry(d).or_default() += 1;
    }

    /// Handles a datagram received on the registration socket.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        wall: SystemTime,
        from: SocketAddrV4,
        payload: &[u8],
    ) {
        let _ = from;
        if MessageType::of(payload) != Some(MessageType::REGISTRATION_REPLY) {
            return self.drop(ClientDrop::NotAReply);
        }
        let Ok(reply) = RegistrationReply::parse(payload) else {
            return self.drop(ClientDrop::Malformed);
        };
        let Some(p) = self.pending.as_mut() else {
            return self.drop(ClientDrop::Unsolicited);
        };
        if low32(reply.ident) != low32(p.ident) {
            return self.drop(ClientDrop::Unsolicited);
        }
        let sa = &self.cfg.sa;
        let authentic = auth::verify(payload, REPLY_FIXED_LEN, AuthKind::MnHa, |spi| {
            (spi == sa.spi).then_some(sa)
        })
        .is_ok();
        *self.stats.replies_by_code.entry(reply.code.0).or_default() += 1;
        if !authentic {
            if !reply.code.is_accepted() && reply.code != ReplyCode::HA_IDENT_MISMATCH {
                p.hint = Some(reply.code);
            }
            return self.drop(ClientDrop::BadAuthenticator);
        }
        if reply.code == ReplyCode::HA_IDENT_MISMATCH {
            if p.resyncs >= 2 {
                self.pending = None;
                self.events.push_back(ClientEvent::Denied {
                    code: reply.code,
                    authenticated: true,
                });
                return;
            }
            p.resyncs += 1;
            p.attempts = p.attempts.saturating_sub(1);
            self.ids
                .resync(reply.ident, NtpTime::from_system_time(wall));
            if self.ids.method() == ReplayMethod::Timestamp {
                self.events.push_back(ClientEvent::Resynchronized {
                    clock_offset: self.ids.clock_offset(),
                });
            }
            // Resend at once with the corrected Identification.
            let rto = p.rto;
            self.send_pending(now, wall);
            if let Some(p) = self.pending.as_mut() {
                p.rto = rto;
                p.deadline = now + rto;
            }
            return;
        }
        let p = p.clone();
        self.pending = None;
        if !reply.code.is_accepted() {
            self.events.push_back(ClientEvent::Denied {
                code: reply.code,
                authenticated: true,
            });
            return;
        }
        self.ids.accepted(reply.ident);
        self.last_accepted_tnc = reply
            .extensions
            .iter()
            .take_while(|e| {
                !matches!(
                    e,
                    Extension::Auth {
                        kind: AuthKind::MnHa,
                        ..
                    }
                )
            })
            .any(|e| matches!(e, Extension::TrustedNetworksConfigured));
        if p.lifetime == 0 {
            self.registered = None;
            self.events.push_back(ClientEvent::Deregistered);
            return;
        }
        if reply.home_addr != Ipv4Addr::UNSPECIFIED {
            self.home_addr = reply.home_addr;
        }
        let granted = reply.lifetime.min(p.lifetime);
        // RFC 5944 3.6.2.2: the lifetime runs from when the request was sent.
        let life = Duration::from_secs(u64::from(granted));
        let mut renew = life.mul_f64(self.cfg.renew_fraction.clamp(0.1, 1.0));
        if let Some(m) = self.cfg.max_renew_interval {
            renew = renew.min(m);
        }
        let mut tnc = false;
        let mut udp_tunnel = None;
        for e in &reply.extensions {
            match e {
                // Only extensions the authenticator covers count.
                Extension::Auth {
                    kind: AuthKind::MnHa,
                    ..
                } => break,
                Extension::TrustedNetworksConfigured => tnc = true,
                Extension::UdpTunnelReply {
                    code, keepalive, ..
                } if *code == UdpTunnelReplyCode::WILL_TUNNEL => udp_tunnel = Some(*keepalive),
                _ => {}
            }
        }
        self.registered = Some(Registered {
            att: p.att,
            expires: p.sent_at + life,
            renew_at: p.sent_at + renew,
            udp_keepalive: udp_tunnel,
        });
        self.events.push_back(ClientEvent::Registered {
            care_of: p.att.care_of,
            home_addr: self.home_addr,
            code: reply.code,
            lifetime: granted,
            tnc,
            udp_tunnel,
        });
    }
}
