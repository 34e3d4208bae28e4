//! Mobile node, foreign agent and home agent on simulated time (mode f):
//! relay, the agent's own checks and codes, consumed extensions, FA-HA
//! authentication, timeouts, two home agents through one agent, advertisements.
#![allow(clippy::unwrap_used)]

use mip4::auth::{Algorithm, SecurityAssociation};
use mip4::client::{Attachment, ClientConfig, ClientEvent, RegistrationClient};
use mip4::fa::{DeliveryStyle, FaConfig, FaDrop, FaEvent, FaTransmit, ForeignAgent};
use mip4::ha::{HaConfig, HaEvent, HomeAgent, MobileNodeConfig};
use mip4::replay::ReplayMethod;
use mip4::wire::agent::{AgentAdvertisement, AgentFlags};
use mip4::wire::extension::AuthKind;
use mip4::wire::{Extension, Flags, RegistrationReply, RegistrationRequest, ReplyCode};
use mip4::Transmit;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const HA1: Ipv4Addr = Ipv4Addr::new(10, 10, 0, 1);
const HA2: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const FA: Ipv4Addr = Ipv4Addr::new(10, 30, 0, 1);
const HOME: Ipv4Addr = Ipv4Addr::new(10, 10, 0, 100);
const MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x42];

fn mn_sa() -> SecurityAssociation {
    SecurityAssociation::new(256, Algorithm::HmacMd5, b"mn-ha key 012345")
}
fn fa_ha_sa() -> SecurityAssociation {
    SecurityAssociation::new(400, Algorithm::HmacMd5, b"fa-ha key 012345")
}

fn home_agent(addr: Ipv4Addr, fa_key: Option<SecurityAssociation>) -> HomeAgent {
    let mut c = HaConfig::new(addr);
    if let Some(k) = fa_key {
        c.fa_ha_sas = vec![(FA, k)];
    }
    let mut h = HomeAgent::new(c, [5; 32]);
    h.add_mobile_node(MobileNodeConfig {
        home_addr: Some(HOME),
        nai: None,
        sas: vec![mn_sa()],
        replay: ReplayMethod::Timestamp,
    })
    .unwrap();
    h
}

struct Net {
    start: Instant,
    now: Instant,
    wall0: SystemTime,
    fa: ForeignAgent,
    has: Vec<HomeAgent>,
    mns: Vec<RegistrationClient>,
    /// Link-layer address of each node's frames (MAC unless a test changes it).
    macs: Vec<[u8; 6]>,
    /// (destination link-layer address, reply) of every reply the agent sent.
    to_nodes: Vec<([u8; 6], RegistrationReply)>,
    mn_events: Vec<(usize, ClientEvent)>,
    fa_events: Vec<FaEvent>,
    ha_events: Vec<HaEvent>,
    /// (time, what) of every advertisement.
    adverts: Vec<(Duration, Ipv4Addr, Vec<u8>)>,
    /// Requests as they reached each home agent.
    at_ha: Vec<Vec<u8>>,
    ha_alive: bool,
}

impl Net {
    fn new(fa: FaConfig, has: Vec<HomeAgent>) -> Net {
        let now = Instant::now();
        Net {
            start: now,
            now,
            wall0: UNIX_EPOCH + Duration::from_secs(1_790_000_000),
            fa: ForeignAgent::new(fa, now),
            has,
            mns: Vec::new(),
            macs: Vec::new(),
            to_nodes: Vec::new(),
            mn_events: Vec::new(),
            fa_events: Vec::new(),
            ha_events: Vec::new(),
            adverts: Vec::new(),
            at_ha: Vec::new(),
            ha_alive: true,
        }
    }

    fn wall(&self) -> SystemTime {
        self.wall0 + (self.now - self.start)
    }

    fn add_mn(&mut self, ha: Ipv4Addr, encapsulating: bool) -> usize {
        let mut c = ClientConfig::new(HOME, ha, mn_sa());
        c.encapsulating_delivery = encapsulating;
        self.mns
            .push(RegistrationClient::new(c, [self.mns.len() as u8; 32]));
        self.macs.push(MAC);
        self.mns.len() - 1
    }

    fn register(&mut self, i: usize) {
        let att = Attachment {
            care_of: FA,
            local: SocketAddrV4::new(HOME, 434),
            dest: SocketAddrV4::new(FA, 434),
            colocated: false,
        };
        let w = self.wall();
        self.mns[i].register(self.now, w, att);
    }

    /// Delivers every queued message (zero latency) until quiet.
    fn settle(&mut self) {
        loop {
            let mut moved = false;
            for i in 0..self.mns.len() {
                while let Some(t) = self.mns[i].poll_transmit() {
                    moved = true;
                    assert_eq!(*t.dst.ip(), FA, "a node in mode f talks to its agent");
                    self.fa
                        .handle_datagram(self.now, t.src, self.macs[i], &t.payload);
                }
                while let Some(e) = self.mns[i].poll_event() {
                    self.mn_events.push((i, e));
                }
            }
            while let Some(t) = self.fa.poll_transmit() {
                moved = true;
                match t {
                    FaTransmit::Advertisement { dst, icmp } => {
                        self.adverts.push((self.now - self.start, dst, icmp))
                    }
                    FaTransmit::ToHomeAgent(t) => self.deliver_to_ha(t),
                    FaTransmit::ToMobileNode {
                        payload, src, mac, ..
                    } => {
                        if let Ok(r) = RegistrationReply::parse(&payload) {
                            self.to_nodes.push((mac, r));
                        }
                        let w = self.wall();
                        for (mn, m) in self.mns.iter_mut().zip(&self.macs) {
                            if *m == mac {
                                mn.handle_datagram(self.now, w, src, &payload);
                            }
                        }
                    }
                }
            }
            while let Some(e) = self.fa.poll_event() {
                self.fa_events.push(e);
            }
            for h in 0..self.has.len() {
                while let Some(t) = self.has[h].poll_transmit() {
                    moved = true;
                    assert_eq!(*t.dst.ip(), FA, "replies go back through the agent");
                    self.fa.handle_datagram(self.now, t.src, [0; 6], &t.payload);
                }
                while let Some(e) = self.has[h].poll_event() {
                    self.ha_events.push(e);
                }
            }
            if !moved {
                return;
            }
        }
    }

    fn deliver_to_ha(&mut self, t: Transmit) {
        self.at_ha.push(t.payload.clone());
        if !self.ha_alive {
            return;
        }
        let w = self.wall();
        let now = self.now;
        if let Some(h) = self
            .has
            .iter_mut()
            .find(|h| h.config().address == *t.dst.ip())
        {
            h.handle_datagram(now, w, t.src, t.dst, &t.payload);
        }
    }

    fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        loop {
            self.settle();
            let next = self
                .mns
                .iter()
                .filter_map(|m| m.poll_timeout())
                .chain(self.fa.poll_timeout())
                .chain(self.has.iter().filter_map(|h| h.poll_timeout()))
                .min();
            let Some(next) = next.filter(|t| *t <= until) else {
                self.now = until;
                return;
            };
            self.now = self.now.max(next);
            let (now, w) = (self.now, self.wall());
            for m in &mut self.mns {
                if m.poll_timeout().is_some_and(|t| t <= now) {
                    m.handle_timeout(now, w);
                }
            }
            if self.fa.poll_timeout().is_some_and(|t| t <= now) {
                self.fa.handle_timeout(now);
            }
            for h in &mut self.has {
                if h.poll_timeout().is_some_and(|t| t <= now) {
                    h.handle_timeout(now);
                }
            }
        }
    }
}

#[test]
fn registration_through_the_agent_with_fa_ha_authentication() {
    let mut n = Net::new(
        FaConfig {
            fa_ha_sas: vec![(HA1, fa_ha_sa())],
            ..FaConfig::new(FA, 24)
        },
        vec![home_agent(HA1, Some(fa_ha_sa()))],
    );
    let i = n.add_mn(HA1, true);
    n.register(i);
    n.run_for(Duration::from_millis(10));
    let reg = n
        .mn_events
        .iter()
        .find(|(_, e)| matches!(e, ClientEvent::Registered { .. }))
        .unwrap();
    assert!(matches!(
        reg.1,
        ClientEvent::Registered {
            care_of: FA,
            lifetime: 1800,
            ..
        }
    ));
    // The HA bound the agent's care-of address, not co-located, reverse tunneled.
    let b = &n.has[0].bindings()[0];
    assert_eq!(
        (b.care_of, b.colocated, b.reverse_tunnel),
        (FA, false, true)
    );
    // The agent kept the visitor with the encapsulating delivery style.
    let v = n.fa.visitors().next().unwrap().clone();
    assert_eq!(
        (v.mac, v.home_addr, v.delivery),
        (MAC, HOME, DeliveryStyle::Encapsulating)
    );
    assert!(matches!(n.fa_events[0], FaEvent::VisitorAdded(_)));
    // What reached the HA: up to MN-HA, then FA-HA; the delivery style was consumed.
    let at_ha = RegistrationRequest::parse(&n.at_ha[0]).unwrap();
    let kinds: Vec<_> = at_ha.extensions.iter().map(|e| e.ext_type().0).collect();
    assert_eq!(kinds, vec![32, 34]);
}

#[test]
fn wrong_fa_ha_key_is_denied_132_by_the_home_agent() {
    let mut n = Net::new(
        FaConfig {
            fa_ha_sas: vec![(
                HA1,
                SecurityAssociation::new(400, Algorithm::HmacMd5, b"not the fa key!!"),
            )],
            ..FaConfig::new(FA, 24)
        },
        vec![home_agent(HA1, Some(fa_ha_sa()))],
    );
    let i = n.add_mn(HA1, false);
    n.register(i);
    n.run_for(Duration::from_millis(10));
    // The HA's 132 carries no valid FA-HA authenticator either: the agent turns it
    // into its own 68 (home agent failed authentication) for the node.
    assert_eq!(n.has[0].stats().replies_by_code.get(&132), Some(&1));
    assert_eq!(n.fa.stats().denials_by_code.get(&68), Some(&1));
    assert_eq!(n.has[0].binding_count(), 0);
    assert_eq!(n.fa.visitors().count(), 0);
}

fn one_request(
    fa: FaConfig,
    edit: impl FnOnce(&mut RegistrationRequest),
    after_mn_ha: &[Extension],
) -> (ForeignAgent, Option<RegistrationReply>) {
    let mut fa = ForeignAgent::new(fa, Instant::now());
    let mut req = RegistrationRequest {
        flags: Flags::T,
        lifetime: 600,
        home_addr: HOME,
        home_agent: HA1,
        care_of: FA,
        ident: 0xec00_0000_0000_0001,
        extensions: vec![],
    };
    edit(&mut req);
    let mut b = req.to_bytes();
    mn_sa().append(AuthKind::MnHa, &mut b);
    for e in after_mn_ha {
        e.emit(&mut b);
    }
    fa.handle_datagram(Instant::now(), SocketAddrV4::new(HOME, 434), MAC, &b);
    let mut reply = None;
    while let Some(t) = fa.poll_transmit() {
        if let FaTransmit::ToMobileNode { payload, mac, .. } = t {
            assert_eq!(mac, MAC);
            reply = Some(RegistrationReply::parse(&payload).unwrap());
        }
    }
    (fa, reply)
}

#[test]
fn the_agents_own_checks_and_codes() {
    let code = |r: Option<RegistrationReply>| r.map(|r| r.code.0);
    let (_, r) = one_request(FaConfig::new(FA, 24), |r| r.lifetime = 4000, &[]);
    let r = r.unwrap();
    assert_eq!((r.code.0, r.lifetime), (69, 1800));
    assert_eq!(
        code(
            one_request(
                FaConfig::new(FA, 24),
                |r| r.care_of = Ipv4Addr::new(10, 30, 0, 9),
                &[]
            )
            .1
        ),
        Some(77)
    );
    assert_eq!(
        code(
            one_request(
                FaConfig::new(FA, 24),
                |r| r.flags = Flags::T | Flags::G,
                &[]
            )
            .1
        ),
        Some(72)
    );
    let no_rt = FaConfig {
        reverse_tunneling: false,
        ..FaConfig::new(FA, 24)
    };
    assert_eq!(code(one_request(no_rt, |_| {}, &[]).1), Some(74));
    let rt_required = FaConfig {
        reverse_tunneling_required: true,
        ..FaConfig::new(FA, 24)
    };
    assert_eq!(
        code(one_request(rt_required, |r| r.flags = Flags::empty(), &[]).1),
        Some(75)
    );
    // An unknown non-skippable extension meant for the agent: poorly formed.
    assert_eq!(
        code(
            one_request(
                FaConfig::new(FA, 24),
                |_| {},
                &[Extension::Unknown {
                    ty: 100,
                    data: vec![]
                }]
            )
            .1
        ),
        Some(70)
    );
    // A skippable one is ignored and the request relayed.
    let (fa, r) = one_request(
        FaConfig::new(FA, 24),
        |_| {},
        &[Extension::Unknown {
            ty: 200,
            data: vec![],
        }],
    );
    assert!(r.is_none());
    assert_eq!(fa.stats().requests_relayed, 1);
    // No MN-HA authenticator at all: poorly formed, nothing relayed.
    let mut fa = ForeignAgent::new(FaConfig::new(FA, 24), Instant::now());
    let req = RegistrationRequest {
        flags: Flags::T,
        lifetime: 600,
        home_addr: HOME,
        home_agent: HA1,
        care_of: FA,
        ident: 1,
        extensions: vec![],
    };
    fa.handle_datagram(
        Instant::now(),
        SocketAddrV4::new(HOME, 434),
        MAC,
        &req.to_bytes(),
    );
    assert!(matches!(
        fa.poll_transmit(),
        Some(FaTransmit::ToMobileNode { .. })
    ));
    assert_eq!(fa.stats().denials_by_code.get(&70), Some(&1));
    // MN-FA authentication required for this node and missing: 67.
    let strict = FaConfig {
        mn_fa_sas: vec![(
            HOME,
            SecurityAssociation::new(300, Algorithm::HmacMd5, b"mn-fa key 012345"),
        )],
        ..FaConfig::new(FA, 24)
    };
    assert_eq!(code(one_request(strict, |_| {}, &[]).1), Some(67));
}

#[test]
fn silent_home_agent_times_out_with_78() {
    let mut n = Net::new(FaConfig::new(FA, 24), vec![home_agent(HA1, None)]);
    n.ha_alive = false;
    let i = n.add_mn(HA1, false);
    n.register(i);
    n.run_for(Duration::from_secs(60));
    assert!(n
        .fa
        .stats()
        .denials_by_code
        .get(&78)
        .is_some_and(|n| *n >= 1));
    // The agent's denial is not MN-HA authenticated, so the node keeps trying and
    // reports it only when its attempts run out.
    assert!(n.mn_events.iter().any(|(_, e)| *e
        == ClientEvent::Denied {
            code: ReplyCode::FA_REGISTRATION_TIMEOUT,
            authenticated: false
        }));
    assert_eq!(n.fa.visitors().count(), 0);
}

#[test]
fn one_link_layer_address_two_home_agents() {
    // RFC 5265 section 3.5: an internal and an external HA through the same agent.
    let mut n = Net::new(
        FaConfig::new(FA, 24),
        vec![home_agent(HA1, None), home_agent(HA2, None)],
    );
    let a = n.add_mn(HA1, false);
    let b = n.add_mn(HA2, false);
    n.register(a);
    n.register(b);
    n.run_for(Duration::from_millis(10));
    let mut hs: Vec<_> = n.fa.visitors().map(|v| (v.mac, v.home_agent)).collect();
    hs.sort();
    assert_eq!(hs, vec![(MAC, HA1), (MAC, HA2)]);
    assert_eq!(n.has[0].binding_count() + n.has[1].binding_count(), 2);
}

#[test]
fn deregistration_and_expiry_remove_visitors() {
    let mut n = Net::new(FaConfig::new(FA, 24), vec![home_agent(HA1, None)]);
    let i = n.add_mn(HA1, false);
    n.register(i);
    n.run_for(Duration::from_millis(10));
    assert_eq!(n.fa.visitors().count(), 1);
    let att = Attachment {
        care_of: FA,
        local: SocketAddrV4::new(HOME, 434),
        dest: SocketAddrV4::new(FA, 434),
        colocated: false,
    };
    let w = n.wall();
    n.mns[i].deregister(n.now, w, att);
    n.run_for(Duration::from_millis(10));
    assert_eq!(n.fa.visitors().count(), 0);
    assert!(matches!(
        n.fa_events.last(),
        Some(FaEvent::VisitorRemoved { .. })
    ));
    // Expiry: register, then the node vanishes.
    n.register(i);
    n.run_for(Duration::from_millis(10));
    n.mns[i].reset();
    n.run_for(Duration::from_secs(1801));
    assert_eq!(n.fa.visitors().count(), 0);
}

#[test]
fn advertisements_periodic_solicited_and_busy() {
    let mut n = Net::new(
        FaConfig {
            max_visitors: 1,
            ..FaConfig::new(FA, 24)
        },
        vec![home_agent(HA1, None)],
    );
    n.run_for(Duration::from_millis(3500));
    assert_eq!(n.adverts.len(), 4, "at 0, 1, 2 and 3 s");
    let seqs: Vec<u16> = n
        .adverts
        .iter()
        .map(|(_, _, b)| AgentAdvertisement::parse(b).unwrap().mobility.sequence)
        .collect();
    assert_eq!(seqs, vec![0, 1, 2, 3]);
    let a = AgentAdvertisement::parse(&n.adverts[0].2).unwrap();
    assert_eq!(n.adverts[0].1, Ipv4Addr::new(224, 0, 0, 1));
    assert!(a.mobility.flags.contains(AgentFlags::F) && a.mobility.flags.contains(AgentFlags::T));
    assert_eq!(a.mobility.care_of, vec![FA]);
    assert_eq!(a.prefix_lengths, Some(vec![24]));
    assert_eq!(a.code, 0);
    n.fa.handle_solicitation(n.now, Ipv4Addr::new(10, 30, 0, 77));
    n.settle();
    assert_eq!(n.adverts.last().unwrap().1, Ipv4Addr::new(10, 30, 0, 77));
    // A visitor solicits from its home address: the answer is multicast.
    n.fa.handle_solicitation(n.now, HOME);
    n.settle();
    assert_eq!(n.adverts.last().unwrap().1, Ipv4Addr::new(224, 0, 0, 1));
    // One visitor fills it: advertisements say busy, a second node is refused (66).
    let i = n.add_mn(HA1, false);
    n.register(i);
    n.run_for(Duration::from_millis(1100));
    let last = AgentAdvertisement::parse(&n.adverts.last().unwrap().2).unwrap();
    assert!(last.mobility.flags.contains(AgentFlags::B));
}

#[test]
fn garbage_never_panics() {
    let mut fa = ForeignAgent::new(FaConfig::new(FA, 24), Instant::now());
    let from = SocketAddrV4::new(HOME, 434);
    let mut req = RegistrationRequest {
        flags: Flags::T,
        lifetime: 600,
        home_addr: HOME,
        home_agent: HA1,
        care_of: FA,
        ident: 1,
        extensions: vec![],
    }
    .to_bytes();
    mn_sa().append(AuthKind::MnHa, &mut req);
    for n in 0..req.len() {
        fa.handle_datagram(Instant::now(), from, MAC, &req[..n]);
        let mut r = req[..n].to_vec();
        if let Some(t) = r.first_mut() {
            *t = 3;
        }
        fa.handle_datagram(Instant::now(), SocketAddrV4::new(HA1, 434), [0; 6], &r);
    }
    fa.handle_datagram(Instant::now(), from, MAC, &[]);
    // Empty (3 times), requests of 1-23 octets, replies of 1-19 octets.
    assert_eq!(
        fa.stats().drops.get(&FaDrop::Truncated),
        Some(&(3 + 23 + 19))
    );
    assert!(fa.stats().drops.contains_key(&FaDrop::UnsolicitedReply));
}

const STRANGER: [u8; 6] = [2, 0, 0, 0, 0, 0x66];

/// A request for HOME as a stranger on the link forges it: well formed, but with an
/// authenticator made with a key the home agent does not know.
fn forged_request(ident: u64) -> Vec<u8> {
    forged_request_for(HOME, ident)
}

fn forged_request_for(home_addr: Ipv4Addr, ident: u64) -> Vec<u8> {
    let req = RegistrationRequest {
        flags: Flags::T,
        lifetime: 600,
        home_addr,
        home_agent: HA1,
        care_of: FA,
        ident,
        extensions: vec![],
    };
    let mut b = req.to_bytes();
    SecurityAssociation::new(256, Algorithm::HmacMd5, b"guessed key 0123")
        .append(AuthKind::MnHa, &mut b);
    b
}

fn registered(n: &Net) -> Vec<([u8; 6], Ipv4Addr)> {
    n.fa.visitors().map(|v| (v.mac, v.home_addr)).collect()
}

/// RFC 5944 pending registrations: a forged request for a registered visitor's home
/// address, from another link-layer address, changes nothing for the visitor while
/// it is pending, when the home agent denies it, and when it times out; the denials
/// go to the stranger's address, never to the visitor's.
#[test]
fn forged_request_from_a_stranger_changes_nothing_for_the_visitor() {
    let mut n = Net::new(FaConfig::new(FA, 24), vec![home_agent(HA1, None)]);
    let i = n.add_mn(HA1, false);
    n.register(i);
    n.run_for(Duration::from_millis(10));
    assert_eq!(registered(&n), vec![(MAC, HOME)]);
    let events = n.fa_events.len();
    let from = SocketAddrV4::new(Ipv4Addr::new(10, 30, 0, 66), 434);
    // Denied by the home agent (131, authentication failed).
    let now = n.now;
    n.fa.handle_datagram(now, from, STRANGER, &forged_request(0xee00_0000_0000_0001));
    n.settle();
    assert_eq!(n.has[0].stats().replies_by_code.get(&131), Some(&1));
    assert_eq!(registered(&n), vec![(MAC, HOME)]);
    assert_eq!(n.fa_events.len(), events, "{:?}", &n.fa_events[events..]);
    let last = n.to_nodes.last().unwrap();
    assert_eq!((last.0, last.1.code.0), (STRANGER, 131));
    // Pending while the home agent is silent, then timed out (78).
    n.ha_alive = false;
    let now = n.now;
    n.fa.handle_datagram(now, from, STRANGER, &forged_request(0xee00_0000_0000_0002));
    n.settle();
    assert_eq!(n.fa.visitor_for(HOME).map(|v| v.mac), Some(MAC));
    n.run_for(Duration::from_secs(8));
    let last = n.to_nodes.last().unwrap();
    assert_eq!((last.0, last.1.code.0), (STRANGER, 78));
    assert_eq!(registered(&n), vec![(MAC, HOME)]);
    assert_eq!(n.fa_events.len(), events, "{:?}", &n.fa_events[events..]);
    assert!(n
        .to_nodes
        .iter()
        .filter(|(m, _)| *m == MAC)
        .all(|(_, r)| r.code.is_accepted()));
}

/// Only the home agent's acceptance moves a visitor: when the node re-registers from
/// a new link-layer address (another interface), the old entry ends and the new one
/// replaces it; the agent never keeps two for one home address and home agent.
#[test]
fn accepted_registration_from_a_new_link_layer_address_replaces_the_old() {
    let mut n = Net::new(FaConfig::new(FA, 24), vec![home_agent(HA1, None)]);
    let i = n.add_mn(HA1, false);
    n.register(i);
    n.run_for(Duration::from_millis(10));
    n.run_for(Duration::from_secs(2));
    let j = n.add_mn(HA1, false);
    n.macs[j] = [2, 0, 0, 0, 0, 0x43];
    n.register(j);
    n.run_for(Duration::from_millis(10));
    assert_eq!(registered(&n), vec![([2, 0, 0, 0, 0, 0x43], HOME)]);
    assert!(n
        .fa_events
        .iter()
        .any(|e| matches!(e, FaEvent::VisitorRemoved { mac: MAC, .. })));
}

/// Per-sender limits: a flood of requests from one link-layer address gets at most
/// `pending_per_sender` relayed at once and the rest dropped as RateLimited; a burst
/// spread over time is bounded by the allowance; another sender is not affected.
#[test]
fn pending_requests_are_limited_per_sender() {
    let mut n = Net::new(FaConfig::new(FA, 24), vec![home_agent(HA1, None)]);
    n.ha_alive = false;
    let from = SocketAddrV4::new(Ipv4Addr::new(10, 30, 0, 66), 434);
    let now = n.now;
    // Each for another home address, so that none replaces another pending one.
    for k in 0..50u8 {
        let home = Ipv4Addr::new(10, 10, 1, k);
        n.fa.handle_datagram(
            now,
            from,
            STRANGER,
            &forged_request_for(home, 0xee00_0000_0000_0100),
        );
    }
    n.settle();
    let cfg = FaConfig::new(FA, 24);
    assert_eq!(n.at_ha.len(), cfg.pending_per_sender);
    assert_eq!(
        n.fa.stats().drops.get(&FaDrop::RateLimited),
        Some(&(50 - cfg.pending_per_sender as u64))
    );
    // Answered (timed out) requests free the pending slots, but the allowance stays
    // spent: over 10 s one sender gets at most the burst plus one per refill period.
    n.ha_alive = true;
    n.run_for(Duration::from_secs(8));
    let start = n.at_ha.len();
    for k in 0..1000u64 {
        n.run_for(Duration::from_millis(10));
        let now = n.now;
        n.fa.handle_datagram(
            now,
            from,
            STRANGER,
            &forged_request(0xee00_0000_0001_0000 + k),
        );
        n.settle();
    }
    let relayed = n.at_ha.len() - start;
    let bound = cfg.sender_burst as usize + (10_000 / cfg.sender_refill.as_millis() as usize) + 1;
    assert!(relayed <= bound, "{relayed} relayed in 10 s, bound {bound}");
    assert!(
        relayed >= bound / 2,
        "{relayed} relayed in 10 s, allowance {bound}"
    );
    // The genuine node on the same link registers at once.
    let i = n.add_mn(HA1, false);
    n.register(i);
    n.run_for(Duration::from_millis(10));
    assert_eq!(registered(&n), vec![(MAC, HOME)]);
}
