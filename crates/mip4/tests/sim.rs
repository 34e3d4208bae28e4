#![allow(clippy::unwrap_used)]
//! Home agent and mobile node client over an in-memory lossy link, on simulated
//! time: every scenario of the registration protocol, deterministic (seeded).

use mip4::auth::{Algorithm, SecurityAssociation};
use mip4::client::{Attachment, ClientConfig, ClientDrop, ClientEvent, RegistrationClient};
use mip4::ha::{DropReason, HaConfig, HaEvent, HomeAgent, MobileNodeConfig, RemoveReason};
use mip4::replay::ReplayMethod;
use mip4::wire::ReplyCode;
use mip4::Transmit;
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const HA: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
const HOME: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 50);
const KEY: [u8; 16] = *b"0123456789abcdef";

fn sa(key: &[u8]) -> SecurityAssociation {
    SecurityAssociation::new(0x100, Algorithm::HmacMd5, key)
}

/// Two parties, one link with seeded loss and fixed latency, one clock.
struct Sim {
    start: Instant,
    now: Instant,
    wall0: SystemTime,
    /// Seconds the mobile node's wall clock is off by.
    mn_skew: i64,
    ha: HomeAgent,
    mn: RegistrationClient,
    rng: StdRng,
    loss: f64,
    latency: Duration,
    in_flight: Vec<(Instant, Transmit)>,
    ha_events: Vec<HaEvent>,
    mn_events: Vec<(Duration, ClientEvent)>,
    /// Every request the mobile node sent, for replay attacks.
    sent_requests: Vec<Transmit>,
}

impl Sim {
    fn new(ha_cfg: HaConfig, mn_cfg: ClientConfig, mn_replay: ReplayMethod) -> Sim {
        let now = Instant::now();
        let mut ha = HomeAgent::new(ha_cfg, [1; 32]);
        ha.add_mobile_node(MobileNodeConfig {
            home_addr: Some(HOME),
            nai: None,
            sas: vec![sa(&KEY)],
            replay: mn_replay,
        })
        .unwrap();
        Sim {
            start: now,
            now,
            wall0: UNIX_EPOCH + Duration::from_secs(1_790_000_000),
            mn_skew: 0,
            ha,
            mn: RegistrationClient::new(mn_cfg, [2; 32]),
            rng: StdRng::seed_from_u64(42),
            loss: 0.0,
            latency: Duration::from_millis(20),
            in_flight: Vec::new(),
            ha_events: Vec::new(),
            mn_events: Vec::new(),
            sent_requests: Vec::new(),
        }
    }

    fn ha_wall(&self) -> SystemTime {
        self.wall0 + (self.now - self.start)
    }

    fn mn_wall(&self) -> SystemTime {
        let w = self.ha_wall();
        if self.mn_skew >= 0 {
            w + Duration::from_secs(self.mn_skew as u64)
        } else {
            w - Duration::from_secs(self.mn_skew.unsigned_abs())
        }
    }

    fn collect(&mut self) {
        while let Some(t) = self.mn.poll_transmit() {
            self.sent_requests.push(t.clone());
            self.send(t);
        }
        while let Some(t) = self.ha.poll_transmit() {
            self.send(t);
        }
        while let Some(e) = self.ha.poll_event() {
            self.ha_events.push(e);
        }
        while let Some(e) = self.mn.poll_event() {
            self.mn_events.push((self.now - self.start, e));
        }
    }

    fn send(&mut self, t: Transmit) {
        if self.rng.gen::<f64>() >= self.loss {
            self.in_flight.push((self.now + self.latency, t));
        }
    }

    /// Runs until `until` (simulated), jumping from event to event.
    fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        loop {
            self.collect();
            let next = [
                self.in_flight.iter().map(|(t, _)| *t).min(),
                self.ha.poll_timeout(),
                self.mn.poll_timeout(),
            ]
            .into_iter()
            .flatten()
            .min();
            let Some(next) = next.filter(|t| *t <= until) else {
                self.now = until;
                return;
            };
            self.now = self.now.max(next);
            let now = self.now;
            let due: Vec<Transmit> = {
                let (due, rest): (Vec<_>, Vec<_>) =
                    self.in_flight.drain(..).partition(|(t, _)| *t <= now);
                self.in_flight = rest;
                due.into_iter().map(|(_, t)| t).collect()
            };
            for t in due {
                self.deliver(t);
            }
            let (hw, mw) = (self.ha_wall(), self.mn_wall());
            if self.ha.poll_timeout().is_some_and(|t| t <= now) {
                self.ha.handle_timeout(now);
            }
            if self.mn.poll_timeout().is_some_and(|t| t <= now) {
                self.mn.handle_timeout(now, mw);
            }
            let _ = hw;
        }
    }

    fn deliver(&mut self, t: Transmit) {
        if t.dst.port() == 434 && *t.dst.ip() == HA {
            let w = self.ha_wall();
            self.ha
                .handle_datagram(self.now, w, t.src, t.dst, &t.payload);
        } else {
            let w = self.mn_wall();
            self.mn.handle_datagram(self.now, w, t.src, &t.payload);
        }
    }

    fn attach(&mut self, coa: Ipv4Addr) -> Attachment {
        let att = Attachment {
            care_of: coa,
            local: SocketAddrV4::new(coa, 434),
            dest: SocketAddrV4::new(HA, 434),
            colocated: true,
        };
        let w = self.mn_wall();
        self.mn.register(self.now, w, att);
        att
    }

    fn registered_events(&self) -> Vec<&ClientEvent> {
        self.mn_events
            .iter()
            .map(|(_, e)| e)
            .filter(|e| matches!(e, ClientEvent::Registered { .. }))
            .collect()
    }
}

fn ha_cfg() -> HaConfig {
    let mut c = HaConfig::new(HA);
    c.max_lifetime = 600;
    c
}

fn mn_cfg() -> ClientConfig {
    ClientConfig::new(HOME, HA, sa(&KEY))
}

#[test]
fn registers_and_renews_for_hours_over_a_lossy_link() {
    let mut s = Sim::new(ha_cfg(), mn_cfg(), ReplayMethod::Timestamp);
    s.loss = 0.3;
    s.attach(Ipv4Addr::new(192, 0, 2, 10));
    s.run_for(Duration::from_secs(4 * 3600));
    let regs = s.registered_events();
    // 600 s granted, renewed at 80%: about 30 renewals in 4 hours.
    assert!(regs.len() >= 25, "only {} registrations", regs.len());
    assert!(matches!(
        regs[0],
        ClientEvent::Registered {
            lifetime: 600,
            tnc: false,
            ..
        }
    ));
    assert!(
        s.mn.stats().retransmissions > 0,
        "30% loss must cause retransmissions"
    );
    assert!(
        !s.mn_events
            .iter()
            .any(|(_, e)| matches!(e, ClientEvent::Expired)),
        "registration lapsed: {:?}",
        s.mn_events
    );
    assert!(!s
        .ha_events
        .iter()
        .any(|e| matches!(e, HaEvent::BindingRemoved { .. })));
    assert_eq!(s.ha.binding_count(), 1);
    assert!(s.mn.is_registered(s.now));
}

#[test]
fn replayed_request_is_rejected_and_changes_nothing() {
    let mut s = Sim::new(ha_cfg(), mn_cfg(), ReplayMethod::Timestamp);
    s.attach(Ipv4Addr::new(192, 0, 2, 10));
    s.run_for(Duration::from_secs(1));
    assert_eq!(s.ha.binding_count(), 1);
    // The node moves; then an attacker replays its first request from the old address.
    s.attach(Ipv4Addr::new(198, 51, 100, 20));
    s.run_for(Duration::from_secs(1));
    let old = s.sent_requests[0].clone();
    s.send(old);
    s.run_for(Duration::from_secs(1));
    assert_eq!(s.ha.stats().replies_by_code.get(&133), Some(&1));
    let b = s.ha.bindings();
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].care_of, Ipv4Addr::new(198, 51, 100, 20));
    // The 133 went to the old address; the client ignores it as unsolicited.
    assert_eq!(s.mn.care_of(), Some(Ipv4Addr::new(198, 51, 100, 20)));
}

#[test]
fn wrong_key_is_denied_131() {
    let mut cfg = mn_cfg();
    cfg.sa = sa(b"not-the-real-key");
    let mut s = Sim::new(ha_cfg(), cfg, ReplayMethod::Timestamp);
    s.attach(Ipv4Addr::new(192, 0, 2, 10));
    s.run_for(Duration::from_secs(60));
    let last = &s.mn_events.last().unwrap().1;
    assert_eq!(
        last,
        &ClientEvent::Denied {
            code: ReplyCode::HA_MN_AUTH_FAILED,
            authenticated: false
        }
    );
    assert_eq!(s.ha.stats().replies_by_code.get(&131), Some(&5));
    assert_eq!(
        s.mn.stats().drops.get(&ClientDrop::BadAuthenticator),
        Some(&5)
    );
    assert_eq!(s.ha.binding_count(), 0);
}

#[test]
fn stale_timestamp_is_resynchronised_via_133() {
    let mut s = Sim::new(ha_cfg(), mn_cfg(), ReplayMethod::Timestamp);
    s.mn_skew = -3600;
    s.attach(Ipv4Addr::new(192, 0, 2, 10));
    s.run_for(Duration::from_secs(2));
    let evs: Vec<_> = s.mn_events.iter().map(|(_, e)| e.clone()).collect();
    assert_eq!(evs[0], ClientEvent::Resynchronized { clock_offset: 3600 });
    assert!(matches!(evs[1], ClientEvent::Registered { .. }));
    // Two round trips of 40 ms, no retransmission timeout involved.
    assert!(
        s.mn_events[1].0 <= Duration::from_millis(100),
        "{:?}",
        s.mn_events[1].0
    );
    // Renewals keep working with the learned offset.
    s.run_for(Duration::from_secs(1200));
    assert!(s.registered_events().len() >= 3);
    assert_eq!(s.ha.stats().replies_by_code.get(&133), Some(&1));
}

#[test]
fn nonce_replay_protection_end_to_end() {
    let mut cfg = mn_cfg();
    cfg.replay = ReplayMethod::Nonce;
    let mut s = Sim::new(ha_cfg(), cfg, ReplayMethod::Nonce);
    s.attach(Ipv4Addr::new(192, 0, 2, 10));
    s.run_for(Duration::from_secs(1300));
    // The first request cannot know the HA's nonce: one 133, then accepted and renewed.
    assert_eq!(s.ha.stats().replies_by_code.get(&133), Some(&1));
    assert!(s.registered_events().len() >= 3);
    let old = s.sent_requests[1].clone();
    s.send(old);
    s.run_for(Duration::from_secs(1));
    assert_eq!(s.ha.stats().replies_by_code.get(&133), Some(&2));
}

#[test]
fn lifetime_expiry_on_both_sides_when_the_link_dies() {
    let mut s = Sim::new(ha_cfg(), mn_cfg(), ReplayMethod::Timestamp);
    s.attach(Ipv4Addr::new(192, 0, 2, 10));
    s.run_for(Duration::from_secs(1));
    assert_eq!(s.ha.binding_count(), 1);
    s.loss = 1.0;
    s.run_for(Duration::from_secs(700));
    assert_eq!(s.ha.binding_count(), 0);
    assert!(s.ha_events.iter().any(|e| matches!(
        e,
        HaEvent::BindingRemoved {
            reason: RemoveReason::Expired,
            ..
        }
    )));
    assert!(s
        .mn_events
        .iter()
        .any(|(_, e)| matches!(e, ClientEvent::TimedOut { .. })));
    let (t, _) = s
        .mn_events
        .iter()
        .find(|(_, e)| *e == ClientEvent::Expired)
        .unwrap();
    // Lifetime 600 s counted from the first request.
    assert_eq!(t.as_secs(), 600);
    assert_eq!(s.ha.stats().bindings_expired, 1);
}

#[test]
fn deregistration_removes_the_binding() {
    let mut s = Sim::new(ha_cfg(), mn_cfg(), ReplayMethod::Timestamp);
    s.attach(Ipv4Addr::new(192, 0, 2, 10));
    s.run_for(Duration::from_secs(1));
    // Back home: deregister all bindings (care-of address = home address).
    let att = Attachment {
        care_of: HOME,
        local: SocketAddrV4::new(HOME, 434),
        dest: SocketAddrV4::new(HA, 434),
        colocated: false,
    };
    let w = s.mn_wall();
    s.mn.deregister(s.now, w, att);
    s.run_for(Duration::from_secs(1));
    assert_eq!(s.ha.binding_count(), 0);
    assert!(s.ha_events.contains(&HaEvent::BindingRemoved {
        home_addr: HOME,
        care_of: Ipv4Addr::new(192, 0, 2, 10),
        reason: RemoveReason::Deregistered
    }));
    assert_eq!(s.mn_events.last().unwrap().1, ClientEvent::Deregistered);
    assert!(!s.mn.is_registered(s.now));
    // Nothing more happens: no renewals.
    let n = s.sent_requests.len();
    s.run_for(Duration::from_secs(3600));
    assert_eq!(s.sent_requests.len(), n);
}

#[test]
fn tnc_only_for_trusted_sources_and_untrusted_silently_dropped() {
    let mut cfg = ha_cfg();
    cfg.trusted_networks = vec!["10.20.0.0/16".parse().unwrap()];
    let mut s = Sim::new(cfg, mn_cfg(), ReplayMethod::Timestamp);
    s.attach(Ipv4Addr::new(10, 20, 0, 7));
    s.run_for(Duration::from_secs(1));
    assert!(matches!(
        s.registered_events()[0],
        ClientEvent::Registered { tnc: true, .. }
    ));
    // Outside: the same HA stays silent.
    s.attach(Ipv4Addr::new(198, 51, 100, 20));
    s.run_for(Duration::from_secs(60));
    assert_eq!(
        s.mn_events.last().unwrap().1,
        ClientEvent::TimedOut { attempts: 5 }
    );
    assert_eq!(
        s.ha.stats().drops.get(&DropReason::UntrustedSource),
        Some(&5)
    );
    assert_eq!(s.ha.stats().replies_by_code.values().sum::<u64>(), 1);
}

#[test]
fn retransmissions_back_off_exponentially() {
    let mut s = Sim::new(ha_cfg(), mn_cfg(), ReplayMethod::Timestamp);
    s.loss = 1.0;
    s.attach(Ipv4Addr::new(192, 0, 2, 10));
    s.run_for(Duration::from_secs(60));
    // Sent at 0, 1, 3, 7, 15 (RTO 1, 2, 4, 8 capped at 8); timed out at 23.
    assert_eq!(s.sent_requests.len(), 5);
    let (t, e) = s.mn_events.last().unwrap();
    assert_eq!(e, &ClientEvent::TimedOut { attempts: 5 });
    assert_eq!(t.as_secs(), 23);
    // Each retransmission carries a fresh Identification.
    let mut ids: Vec<&[u8]> = s.sent_requests.iter().map(|t| &t.payload[16..24]).collect();
    ids.dedup();
    assert_eq!(ids.len(), 5);
}

#[test]
fn simultaneous_bindings_with_s_flag() {
    let mut cfg = mn_cfg();
    cfg.simultaneous = true;
    let mut s = Sim::new(ha_cfg(), cfg, ReplayMethod::Timestamp);
    s.attach(Ipv4Addr::new(192, 0, 2, 10));
    s.run_for(Duration::from_secs(1));
    s.attach(Ipv4Addr::new(198, 51, 100, 20));
    s.run_for(Duration::from_secs(1));
    assert_eq!(s.ha.binding_count(), 2);
    // Without S, a new registration replaces the old binding.
    let mut s = Sim::new(ha_cfg(), mn_cfg(), ReplayMethod::Timestamp);
    s.attach(Ipv4Addr::new(192, 0, 2, 10));
    s.run_for(Duration::from_secs(1));
    s.attach(Ipv4Addr::new(198, 51, 100, 20));
    s.run_for(Duration::from_secs(1));
    assert_eq!(s.ha.binding_count(), 1);
    assert!(s.ha_events.iter().any(|e| matches!(
        e,
        HaEvent::BindingRemoved {
            reason: RemoveReason::Replaced,
            ..
        }
    )));
}

#[test]
fn udp_tunnel_reports_the_granted_keepalive_of_the_registration_in_force() {
    // Not asked: IP-in-IP.
    let mut s = Sim::new(ha_cfg(), mn_cfg(), ReplayMethod::Timestamp);
    assert_eq!(s.mn.udp_tunnel(s.now), None, "not registered");
    s.attach(Ipv4Addr::new(192, 0, 2, 10));
    s.run_for(Duration::from_secs(1));
    assert_eq!(s.mn.udp_tunnel(s.now), Some(None));
    // Asked (forced): the home agent's keepalive interval.
    let mut ha = ha_cfg();
    ha.udp_tunneling.keepalive = 25;
    let mut cfg = mn_cfg();
    cfg.udp_tunnel = Some(true);
    let mut s = Sim::new(ha, cfg, ReplayMethod::Timestamp);
    let att = s.attach(Ipv4Addr::new(192, 0, 2, 10));
    s.run_for(Duration::from_secs(1));
    assert_eq!(s.mn.udp_tunnel(s.now), Some(Some(25)));
    // Gone with the registration: after a deregistration, and after expiry.
    let w = s.mn_wall();
    s.mn.deregister(s.now, w, att);
    s.run_for(Duration::from_secs(1));
    assert_eq!(s.mn.udp_tunnel(s.now), None);
    s.attach(Ipv4Addr::new(192, 0, 2, 10));
    s.run_for(Duration::from_secs(1));
    s.loss = 1.0;
    s.run_for(Duration::from_secs(700));
    assert_eq!(s.mn.udp_tunnel(s.now), None, "expired");
}

#[test]
fn resend_now_sends_the_outstanding_request_at_once_as_a_first_attempt() {
    let mut s = Sim::new(ha_cfg(), mn_cfg(), ReplayMethod::Timestamp);
    let w = s.mn_wall();
    assert!(!s.mn.resend_now(s.now, w), "nothing outstanding");
    // The first send is lost (as if the shell had no route).
    s.loss = 1.0;
    s.attach(Ipv4Addr::new(192, 0, 2, 10));
    s.collect();
    s.loss = 0.0;
    s.run_for(Duration::from_millis(10));
    let w = s.mn_wall();
    assert!(s.mn.resend_now(s.now, w));
    s.run_for(Duration::from_millis(100));
    let (t, e) = &s.mn_events[0];
    assert!(matches!(e, ClientEvent::Registered { .. }), "{e:?}");
    assert_eq!(*t, Duration::from_millis(50), "10 ms + 2 x 20 ms latency");
    assert_eq!(s.sent_requests.len(), 2);
    assert_eq!(
        s.mn.stats().retransmissions,
        0,
        "not a timeout retransmission"
    );
    assert_eq!(s.mn.stats().requests, 2);
}
