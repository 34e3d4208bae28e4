//! One test (or more) per rule MN-1..MN-14, against the real mip4 home agents
//! with instant delivery. The randomized proof is in `sim`.

use mip4::auth::{Algorithm, SecurityAssociation};
use mip4::ha::{HaConfig, HomeAgent, MobileNodeConfig};
use mip4::replay::ReplayMethod;
use mip4::Ipv4Net;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::*;

const HOME: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 50);
const I_HA: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
const X_HA: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const X_HOME: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 50);
const IN_ADDR: Ipv4Addr = Ipv4Addr::new(10, 1, 7, 9);
const OUT_ADDR: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 9);
const TIA: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 5);
const AGENT: Ipv4Addr = Ipv4Addr::new(10, 1, 7, 1);

fn sa(k: &[u8]) -> SecurityAssociation {
    SecurityAssociation::new(0x100, Algorithm::HmacMd5, k)
}

fn xmip() -> Outside {
    Outside::Xmip {
        x_ha: X_HA,
        x_home_addr: X_HOME,
        x_sa: sa(b"x-key"),
    }
}

/// The node, both real home agents, and which of them each interface reaches.
struct Rig {
    t0: Instant,
    now: Instant,
    node: MobileNode,
    iha: HomeAgent,
    xha: HomeAgent,
    /// Per interface: (reaches the i-HA in plaintext, reaches the x-HA).
    reach: std::collections::BTreeMap<IfaceId, (bool, bool)>,
    sent: Vec<Transmit>,
    actions: Vec<Action>,
    /// i-HA replies seen, for replay attacks.
    iha_replies: Vec<Vec<u8>>,
    events: Vec<Event>,
    /// The next this many transmits cannot be sent (no route): the rig reports
    /// them with `handle_send_failed` when `report_send_failures`, else drops them.
    fail_sends: u32,
    report_send_failures: bool,
    /// While Some, the i-HA is silent (SIGSTOP): what reaches it waits here, in
    /// order, as in its socket (see `tests_late.rs`).
    iha_held: Option<Vec<Transmit>>,
}

impl Rig {
    fn new(cfg: Config) -> Rig {
        Rig::with_iha_trust(cfg, true)
    }

    fn with_iha_trust(cfg: Config, trusted: bool) -> Rig {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let mut hc = HaConfig::new(I_HA);
        if trusted {
            hc.trusted_networks = vec![
                Ipv4Net::new(Ipv4Addr::new(10, 1, 0, 0), 16).unwrap(),
                Ipv4Net::new(Ipv4Addr::new(10, 99, 0, 0), 16).unwrap(),
            ];
        }
        let mut iha = HomeAgent::new(hc, [1; 32]);
        iha.add_mobile_node(MobileNodeConfig {
            home_addr: Some(HOME),
            nai: None,
            sas: vec![sa(b"i-key")],
            replay: ReplayMethod::Timestamp,
        })
        .unwrap();
        let mut xha = HomeAgent::new(HaConfig::new(X_HA), [2; 32]);
        xha.add_mobile_node(MobileNodeConfig {
            home_addr: Some(X_HOME),
            nai: None,
            sas: vec![sa(b"x-key")],
            replay: ReplayMethod::Timestamp,
        })
        .unwrap();
        Rig {
            t0,
            now: t0,
            node: MobileNode::new(cfg, [9; 32]).unwrap(),
            iha,
            xha,
            reach: Default::default(),
            sent: Vec::new(),
            actions: Vec::new(),
            iha_replies: Vec::new(),
            events: Vec::new(),
            fail_sends: 0,
            report_send_failures: true,
            iha_held: None,
        }
    }

    fn wall(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_790_000_000) + (self.now - self.t0)
    }

    fn link(&mut self, i: IfaceId, ev: LinkEvent) {
        let (n, w) = (self.now, self.wall());
        self.node.handle_link(n, w, i, ev);
        self.pump();
    }

    /// Attaches `i` with `addr`; `inside` decides what it reaches.
    fn attach(&mut self, i: IfaceId, addr: Ipv4Addr, iha: bool, xha: bool) {
        self.reach.insert(i, (iha, xha));
        self.link(i, LinkEvent::CarrierUp);
        self.link(i, LinkEvent::AddressAdded(addr));
    }

    fn vpn(&mut self, i: IfaceId, ev: VpnEvent) {
        let (n, w) = (self.now, self.wall());
        self.node.handle_vpn(n, w, i, ev);
        self.pump();
    }

    /// Delivers everything the node sends, instantly, while reachable.
    fn pump(&mut self) {
        loop {
            while let Some(a) = self.node.poll_action() {
                self.actions.push(a);
            }
            while let Some(e) = self.node.poll_event() {
                self.events.push(e);
            }
            let Some(t) = self.node.poll_transmit() else {
                return;
            };
            if self.fail_sends > 0 {
                self.fail_sends -= 1;
                if self.report_send_failures {
                    self.node.handle_send_failed(self.now, t.iface, t.via);
                }
                continue;
            }
            self.sent.push(t.clone());
            let (iha_ok, xha_ok) = self.reach.get(&t.iface).copied().unwrap_or_default();
            // A foreign agent on the link relays to the home agent named inside.
            let via_agent = *t.dst.ip() == AGENT;
            let q = mip4::wire::RegistrationRequest::parse(&t.payload).ok();
            let to_iha =
                *t.dst.ip() == I_HA || (via_agent && q.is_some_and(|q| q.home_agent == I_HA));
            let t = if via_agent {
                let ha = if to_iha { I_HA } else { X_HA };
                Transmit {
                    src: SocketAddrV4::new(AGENT, 434),
                    dst: SocketAddrV4::new(ha, 434),
                    ..t
                }
            } else {
                t
            };
            let ok = match t.via {
                Via::Plain => (to_iha && iha_ok) || (*t.dst.ip() == X_HA && xha_ok),
                Via::Vpn => to_iha,
            };
            if !ok {
                continue;
            }
            if let (true, Some(q)) = (to_iha, self.iha_held.as_mut()) {
                q.push(t);
                continue;
            }
            self.deliver(t, to_iha);
        }
    }

    /// Hands `t` to the home agent it reached and its replies to the node.
    fn deliver(&mut self, t: Transmit, to_iha: bool) {
        let (n, w) = (self.now, self.wall());
        let ha = if to_iha { &mut self.iha } else { &mut self.xha };
        ha.handle_datagram(n, w, t.src, t.dst, &t.payload);
        while ha.poll_event().is_some() {}
        let mut replies = Vec::new();
        while let Some(r) = ha.poll_transmit() {
            replies.push(r);
        }
        for r in replies {
            if to_iha {
                self.iha_replies.push(r.payload.clone());
            }
            self.node
                .handle_datagram(n, w, t.iface, t.via, r.src, &r.payload);
        }
    }

    /// Advances simulated time, firing the node's timers on the way.
    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        while let Some((t, _)) = self.node.poll_timeout().filter(|(t, _)| *t <= end) {
            self.now = self.now.max(t);
            let (n, w) = (self.now, self.wall());
            self.node.handle_timeout(n, w);
            self.pump();
        }
        self.now = end;
    }

    fn gate(&self, i: IfaceId) -> Gate {
        self.node.gate(i, self.now)
    }

    fn took_action(&self, f: impl Fn(&Action) -> bool) -> bool {
        self.actions.iter().any(f)
    }

    fn sent_to(&self, i: IfaceId, ha: Ipv4Addr) -> usize {
        self.sent
            .iter()
            .filter(|t| t.iface == i && *t.dst.ip() == ha && t.via == Via::Plain)
            .count()
    }
}

fn cfg() -> Config {
    Config::new(HOME, I_HA, sa(b"i-key"), xmip())
}

/// Brings interface `i` outside in cvc with the VPN up.
fn outside_cvc(r: &mut Rig, i: IfaceId) {
    r.attach(i, OUT_ADDR, false, true);
    assert_eq!(r.node.phase(i), Phase::Outside);
    r.advance(Duration::from_secs(3));
    assert!(r.took_action(|a| matches!(a, Action::StartIke { local, .. } if *local == X_HOME)));
    r.vpn(i, VpnEvent::Up { tia: TIA });
}

#[test]
fn mn1_modes_follow_the_attachment() {
    let mut r = Rig::new(cfg());
    r.attach(1, IN_ADDR, true, false);
    assert_eq!(r.gate(1), Gate::OpenInside(Mode::C));
    let mut r = Rig::new(cfg());
    r.attach(1, HOME, true, false);
    assert_eq!(
        r.gate(1),
        Gate::OpenInside(Mode::H),
        "at home: a deregistration with TNC"
    );
    let mut r = Rig::new(cfg());
    outside_cvc(&mut r, 1);
    assert_eq!(r.gate(1), Gate::OpenViaVpn(Mode::Cvc));
    let mut c = cfg();
    c.outside = Outside::Mobike;
    let mut r = Rig::new(c);
    r.attach(1, OUT_ADDR, false, false);
    assert!(r.took_action(|a| matches!(a, Action::StartIke { local, .. } if *local == OUT_ADDR)));
    r.vpn(1, VpnEvent::Up { tia: TIA });
    assert_eq!(r.gate(1), Gate::OpenViaVpn(Mode::Mc));
}

#[test]
fn mn1_mode_f_through_a_trusted_agent_and_fvc_outside() {
    let mut c = cfg();
    c.trusted_agents = vec![AGENT];
    let adv = Advertisement {
        agent: AGENT,
        care_of: AGENT,
        lifetime: 30,
        sequence: 0,
        nai: None,
    };
    // Inside, no address of our own: the agent's care-of address, proven by TNC.
    let mut r = Rig::new(c.clone());
    r.reach.insert(1, (true, false));
    r.link(1, LinkEvent::CarrierUp);
    let (n, w) = (r.now, r.wall());
    r.node.handle_advertisement(n, w, 1, adv.clone());
    r.pump();
    assert_eq!(r.gate(1), Gate::OpenInside(Mode::F));
    assert_eq!(r.node.proof(1).map(TncProof::care_of), Some(AGENT));
    // The agent stops advertising: a status change.
    r.advance(Duration::from_secs(31));
    assert_eq!(r.gate(1), Gate::Closed);
    assert_eq!(r.node.phase(1), Phase::Down);
    // Outside through the same kind of agent: x-MIP via the agent, then the VPN.
    let mut r = Rig::new(c);
    r.reach.insert(1, (false, true));
    r.link(1, LinkEvent::CarrierUp);
    let (n, w) = (r.now, r.wall());
    r.node.handle_advertisement(n, w, 1, adv);
    r.pump();
    assert_eq!(r.node.phase(1), Phase::Outside);
    r.advance(Duration::from_secs(3));
    r.vpn(1, VpnEvent::Up { tia: TIA });
    assert_eq!(r.gate(1), Gate::OpenViaVpn(Mode::Fvc));
}

#[test]
fn mn2_interfaces_are_tracked_separately_and_inside_is_preferred() {
    let mut c = cfg();
    c.interface_order = vec![2, 1];
    // The home agents keep one binding per care-of address: each path keeps its own.
    c.simultaneous_bindings = true;
    let mut r = Rig::new(c);
    outside_cvc(&mut r, 2);
    r.attach(1, IN_ADDR, true, false);
    assert_eq!(r.gate(1), Gate::OpenInside(Mode::C));
    assert_eq!(r.gate(2), Gate::OpenViaVpn(Mode::Cvc));
    // Interface 2 comes first in the order, but inside beats outside.
    assert_eq!(
        r.node.preferred(r.now),
        Some((1, Gate::OpenInside(Mode::C)))
    );
    // A proof for interface 1 says nothing about 2, and the reverse.
    assert_eq!(r.node.proof(1).map(TncProof::iface), Some(1));
    assert!(r.node.proof(2).is_none());
    r.link(1, LinkEvent::CarrierDown);
    assert_eq!(
        r.node.preferred(r.now),
        Some((2, Gate::OpenViaVpn(Mode::Cvc)))
    );
}

#[path = "tests_mn2.rs"]
mod mn2;

#[test]
fn mn3_a_status_change_closes_the_gate_at_once() {
    for ev in [
        LinkEvent::CarrierDown,
        LinkEvent::AddressAdded(Ipv4Addr::new(10, 1, 8, 1)),
        LinkEvent::AddressRemoved(IN_ADDR),
        LinkEvent::DefaultGateway(Some((Ipv4Addr::new(10, 1, 7, 1), [2, 0, 0, 0, 0, 7]))),
    ] {
        let mut r = Rig::new(cfg());
        r.attach(1, IN_ADDR, true, false);
        assert!(r.gate(1).is_open());
        // The i-HA is gone before the event is even handled: no new proof.
        r.reach.insert(1, (false, false));
        r.link(1, ev.clone());
        assert_eq!(r.gate(1), Gate::Closed, "{ev:?}");
        assert!(r.took_action(|a| *a == Action::FlushQueue { iface: 1 }));
    }
}

#[test]
fn mn4_inside_only_with_tnc_through_that_interface() {
    // An i-HA without trusted networks sends no TNC: never inside, VPN kept.
    let mut r = Rig::with_iha_trust(cfg(), false);
    r.attach(1, IN_ADDR, true, true);
    assert_ne!(r.node.phase(1), Phase::Inside);
    assert!(r.node.stats().accepted_without_tnc >= 1);
    assert!(!matches!(r.gate(1), Gate::OpenInside(_)));
    assert!(!r.took_action(|a| matches!(a, Action::StopVpn { .. })));
    // A reply through the VPN carries TNC (the i-HA trusts the TIA pool) and
    // still proves nothing.
    let mut r = Rig::new(cfg());
    outside_cvc(&mut r, 1);
    assert!(r
        .iha_replies
        .iter()
        .any(|p| p.windows(2).any(|w| w == [149, 2])));
    assert_eq!(r.node.phase(1), Phase::Outside);
    assert!(r.node.proof(1).is_none());
}

#[test]
fn mn4_forged_and_replayed_replies_never_prove() {
    let mut r = Rig::new(cfg());
    r.attach(1, IN_ADDR, true, false);
    let captured = r.iha_replies.clone();
    r.link(1, LinkEvent::CarrierDown);
    r.reach.insert(1, (false, true));
    r.advance(Duration::from_secs(30));
    r.link(1, LinkEvent::CarrierUp);
    r.link(1, LinkEvent::AddressAdded(OUT_ADDR));
    let (n, w) = (r.now, r.wall());
    for p in &captured {
        r.node
            .handle_datagram(n, w, 1, Via::Plain, SocketAddrV4::new(I_HA, 434), p);
    }
    // A forged reply with the right Identification but a guessed key.
    let req = r.sent.iter().rev().find(|t| *t.dst.ip() == I_HA).unwrap();
    let q = mip4::wire::RegistrationRequest::parse(&req.payload).unwrap();
    let mut b = Vec::new();
    mip4::wire::RegistrationReply {
        code: mip4::wire::ReplyCode::ACCEPTED,
        lifetime: 600,
        home_addr: HOME,
        home_agent: I_HA,
        ident: q.ident,
        extensions: vec![mip4::wire::Extension::TrustedNetworksConfigured],
    }
    .emit(&mut b);
    sa(b"guess").append(mip4::wire::extension::AuthKind::MnHa, &mut b);
    r.node
        .handle_datagram(n, w, 1, Via::Plain, SocketAddrV4::new(I_HA, 434), &b);
    r.pump();
    assert_ne!(r.node.phase(1), Phase::Inside);
    assert!(r.node.proof(1).is_none());
    assert!(!matches!(r.gate(1), Gate::OpenInside(_)));
}

#[test]
fn mn5_t_monitor_defaults_and_re_registration() {
    let c = cfg();
    assert_eq!(c.t_monitor, Duration::from_secs(60));
    let mut r = Rig::new(c);
    r.attach(1, IN_ADDR, true, false);
    let before = r.sent_to(1, I_HA);
    r.advance(Duration::from_secs(49));
    assert_eq!(
        r.sent_to(1, I_HA),
        before,
        "no re-registration before T_MONITOR - grace"
    );
    r.advance(Duration::from_secs(2));
    assert_eq!(r.sent_to(1, I_HA), before + 1, "re-registration at 50 s");
    // Hours inside: the gate never closes while the i-HA answers.
    for _ in 0..200 {
        r.advance(Duration::from_secs(30));
        assert_eq!(r.gate(1), Gate::OpenInside(Mode::C));
    }
    assert_eq!(r.node.stats().t_monitor_expiries, 0);
}

#[test]
fn mn5_past_t_monitor_data_stops_and_detection_restarts() {
    for queue in [0, 8] {
        let mut c = cfg();
        c.queue_limit = queue;
        let mut r = Rig::new(c);
        r.attach(1, IN_ADDR, true, false);
        let at = r.node.proof(1).unwrap().at();
        // Upstream routing changes silently: the i-HA is unreachable.
        r.reach.insert(1, (false, false));
        r.advance(at + Duration::from_secs(60) - Duration::from_millis(1) - r.now);
        assert_eq!(r.gate(1), Gate::OpenInside(Mode::C));
        // Exactly at T_MONITOR, even without handling any timer.
        assert_eq!(
            r.node.gate(1, at + Duration::from_secs(60)),
            if queue > 0 {
                Gate::Queued { limit: 8 }
            } else {
                Gate::Closed
            }
        );
        r.advance(Duration::from_secs(15));
        assert_eq!(r.node.phase(1), Phase::Detecting, "re-registration failed");
        assert_eq!(r.gate(1), Gate::Closed);
        assert!(r.took_action(|a| *a == Action::FlushQueue { iface: 1 }));
        assert_eq!(r.node.stats().t_monitor_expiries, 1);
    }
}

#[test]
fn mn5_a_queue_is_released_only_after_success_without_a_status_change() {
    let mut c = cfg();
    c.queue_limit = 4;
    c.max_attempts = 6; // requests at 50, 51, 53, 57, 61, 65 s
    let mut r = Rig::new(c);
    r.attach(1, IN_ADDR, true, false);
    r.reach.insert(1, (false, false));
    r.advance(Duration::from_millis(60_500));
    assert_eq!(r.gate(1), Gate::Queued { limit: 4 });
    let flushes = r.actions.len();
    r.reach.insert(1, (true, false));
    r.advance(Duration::from_secs(1));
    assert_eq!(
        r.gate(1),
        Gate::OpenInside(Mode::C),
        "the retransmission got through"
    );
    assert!(
        !r.actions[flushes..].contains(&Action::FlushQueue { iface: 1 }),
        "released, not flushed"
    );
    // The same with a status change in between: the queue is dropped instead.
    r.reach.insert(1, (false, false));
    r.advance(Duration::from_millis(60_500));
    assert_eq!(r.gate(1), Gate::Queued { limit: 4 });
    r.link(1, LinkEvent::CarrierDown);
    assert!(r.took_action(|a| *a == Action::FlushQueue { iface: 1 }));
    assert_eq!(r.gate(1), Gate::Closed);
}

#[test]
fn mn6_parallel_requests_then_late_i_ha_reply_switches_to_direct() {
    let mut c = cfg();
    c.detection_period = Duration::from_secs(5);
    let mut r = Rig::new(c);
    r.attach(1, IN_ADDR, false, true);
    assert_eq!(r.sent_to(1, I_HA), 1);
    assert_eq!(r.sent_to(1, X_HA), 1);
    assert!(r.sent.iter().all(|t| t.via == Via::Plain));
    assert_eq!(r.node.phase(1), Phase::Outside, "tentatively outside");
    assert!(r.took_action(|a| matches!(a, Action::StartIke { .. })));
    r.vpn(1, VpnEvent::Up { tia: TIA });
    assert_eq!(r.gate(1), Gate::OpenViaVpn(Mode::Cvc));
    // The i-HA answers a retransmission within the detection period.
    r.reach.insert(1, (true, true));
    r.advance(Duration::from_secs(2));
    assert_eq!(r.gate(1), Gate::OpenInside(Mode::C));
    assert!(r.took_action(|a| *a == Action::StopVpn { iface: 1 }));
    assert!(
        r.xha.bindings_of(X_HOME).is_empty(),
        "deregistered from the x-HA"
    );
    // Plaintext re-registrations go to the i-HA only.
    let x = r.sent_to(1, X_HA);
    r.advance(Duration::from_secs(200));
    assert_eq!(r.sent_to(1, X_HA), x);
}

#[test]
fn mn6_detection_period_ends_the_i_ha_requests_and_ike_may_wait() {
    let mut c = cfg();
    c.detection_period = Duration::from_secs(3);
    c.ike_waits_for_detection = true;
    let mut r = Rig::new(c);
    r.attach(1, OUT_ADDR, false, true);
    assert!(
        !r.took_action(|a| matches!(a, Action::StartIke { .. })),
        "IKE waits"
    );
    r.advance(Duration::from_millis(2900));
    assert!(!r.took_action(|a| matches!(a, Action::StartIke { .. })));
    r.advance(Duration::from_millis(200));
    assert!(r.took_action(|a| matches!(a, Action::StartIke { .. })));
    let n = r.sent_to(1, I_HA);
    r.advance(Duration::from_secs(60));
    assert_eq!(
        r.sent_to(1, I_HA),
        n,
        "outside, plaintext goes to the x-HA only"
    );
    // Zero detection period: no i-HA retransmission at all after the x-HA reply.
    let mut c = cfg();
    c.detection_period = Duration::ZERO;
    let mut r = Rig::new(c);
    r.attach(1, OUT_ADDR, false, true);
    assert!(r.took_action(|a| matches!(a, Action::StartIke { .. })));
    r.advance(Duration::from_secs(30));
    assert_eq!(r.sent_to(1, I_HA), 1);
}

#[test]
fn mn7_same_home_agent_address_skips_detection() {
    let mut c = cfg();
    c.outside = Outside::Xmip {
        x_ha: I_HA,
        x_home_addr: X_HOME,
        x_sa: sa(b"x-key"),
    };
    let mut r = Rig::new(c);
    r.attach(1, OUT_ADDR, false, false);
    let to_ha: Vec<_> = r.sent.iter().filter(|t| *t.dst.ip() == I_HA).collect();
    assert_eq!(to_ha.len(), 1);
    let q = mip4::wire::RegistrationRequest::parse(&to_ha[0].payload).unwrap();
    assert_eq!(q.home_addr, X_HOME, "only the x-MIP request, no detection");
}

#[test]
fn mn8_hints_never_prove_and_only_delay_the_x_ha() {
    let mut c = cfg();
    c.internal_domains = vec!["corp.example".into()];
    c.internal_gateway_macs = vec![[2, 0, 0, 0, 0, 1]];
    let mut r = Rig::new(c);
    r.reach.insert(1, (false, true));
    r.link(1, LinkEvent::CarrierUp);
    r.link(
        1,
        LinkEvent::DhcpHints {
            domain: Some("corp.example".into()),
            gateway_mac: Some([2, 0, 0, 0, 0, 1]),
        },
    );
    r.link(1, LinkEvent::AddressAdded(OUT_ADDR));
    assert_eq!(r.gate(1), Gate::Closed);
    assert_eq!(r.sent_to(1, X_HA), 0, "postponed by the inside hint");
    r.advance(Duration::from_secs(1));
    assert_eq!(r.sent_to(1, X_HA), 1, "but never skipped");
    assert_eq!(r.node.phase(1), Phase::Outside);
    assert!(r.node.proof(1).is_none());
}

#[test]
fn mn9_mn10_outside_the_vpn_layer_is_never_skipped() {
    let mut c = cfg();
    c.detection_period = Duration::ZERO;
    let mut r = Rig::new(c);
    r.attach(1, OUT_ADDR, false, true);
    assert_eq!(r.node.phase(1), Phase::Outside);
    assert_eq!(r.gate(1), Gate::Closed, "x-HA alone is not a path");
    // The VPN is up but the i-HA has not accepted the TIA yet.
    let (n, w) = (r.now, r.wall());
    r.node.handle_vpn(n, w, 1, VpnEvent::Up { tia: TIA });
    assert_eq!(
        r.gate(1),
        Gate::Closed,
        "no i-MIP registration through the VPN yet"
    );
    let t = r.node.poll_transmit().unwrap();
    assert_eq!(t.via, Via::Vpn);
    let q = mip4::wire::RegistrationRequest::parse(&t.payload).unwrap();
    assert_eq!(
        q.care_of, TIA,
        "MN-9: the TIA is the co-located care-of address"
    );
    assert!(
        q.flags.contains(mip4::wire::Flags::T),
        "reverse tunnelling on"
    );
    // Delivered by hand: the i-HA accepts the TIA.
    let (n, w) = (r.now, r.wall());
    r.iha.handle_datagram(n, w, t.src, t.dst, &t.payload);
    let rep = r.iha.poll_transmit().unwrap();
    r.node
        .handle_datagram(n, w, 1, Via::Vpn, rep.src, &rep.payload);
    assert_eq!(r.gate(1), Gate::OpenViaVpn(Mode::Cvc));
    // The VPN goes down: closed at once, whatever MIP says.
    r.vpn(1, VpnEvent::Down);
    assert_eq!(r.gate(1), Gate::Closed);
}

#[test]
fn mn11_a_move_between_external_networks_costs_one_x_ha_registration() {
    let mut r = Rig::new(cfg());
    outside_cvc(&mut r, 1);
    assert_eq!(r.gate(1), Gate::OpenViaVpn(Mode::Cvc));
    let iked = r
        .actions
        .iter()
        .filter(|a| matches!(a, Action::StartIke { .. }))
        .count();
    let x = r.sent_to(1, X_HA);
    let vpn = r.sent.iter().filter(|t| t.via == Via::Vpn).count();
    r.link(1, LinkEvent::AddressRemoved(OUT_ADDR));
    r.link(1, LinkEvent::AddressAdded(Ipv4Addr::new(192, 168, 2, 9)));
    assert_eq!(
        r.gate(1),
        Gate::OpenViaVpn(Mode::Cvc),
        "open again after the x-HA reply"
    );
    assert_eq!(r.sent_to(1, X_HA), x + 1, "one x-HA registration");
    let iked_after = r
        .actions
        .iter()
        .filter(|a| matches!(a, Action::StartIke { .. }))
        .count();
    assert_eq!(iked_after, iked, "no IKE exchange");
    assert_eq!(
        r.sent.iter().filter(|t| t.via == Via::Vpn).count(),
        vpn,
        "the i-HA is not told"
    );
}

#[test]
fn mn12_udp_tunnelling_is_asked_on_both_layers() {
    let mut c = cfg();
    c.udp_tunnel = Some(true);
    let mut r = Rig::new(c);
    r.attach(1, OUT_ADDR, false, true);
    r.advance(Duration::from_secs(1));
    r.vpn(1, VpnEvent::Up { tia: TIA });
    for t in r
        .sent
        .iter()
        .filter(|t| *t.dst.ip() == X_HA || t.via == Via::Vpn)
    {
        let q = mip4::wire::RegistrationRequest::parse(&t.payload).unwrap();
        assert!(
            q.extensions.iter().any(|e| matches!(
                e,
                mip4::wire::Extension::UdpTunnelRequest { force: true, .. }
            )),
            "{t:?}"
        );
    }
    assert!(r.sent.iter().any(|t| t.via == Via::Vpn));
}

#[test]
fn mn13_inside_uses_the_inner_layer_only() {
    let mut r = Rig::new(cfg());
    outside_cvc(&mut r, 1);
    r.link(1, LinkEvent::AddressRemoved(OUT_ADDR));
    r.reach.insert(1, (true, true));
    let vpn_before = r.sent.iter().filter(|t| t.via == Via::Vpn).count();
    r.link(1, LinkEvent::AddressAdded(IN_ADDR));
    assert_eq!(r.gate(1), Gate::OpenInside(Mode::C));
    assert!(r.took_action(|a| *a == Action::StopVpn { iface: 1 }));
    r.advance(Duration::from_secs(300));
    assert_eq!(
        r.sent.iter().filter(|t| t.via == Via::Vpn).count(),
        vpn_before
    );
}

#[test]
fn mn14_mobike_update_and_direct_request_go_out_together() {
    let mut c = cfg();
    c.outside = Outside::Mobike;
    let mut r = Rig::new(c);
    r.attach(1, OUT_ADDR, false, false);
    r.vpn(1, VpnEvent::Up { tia: TIA });
    assert_eq!(r.gate(1), Gate::OpenViaVpn(Mode::Mc));
    let new = Ipv4Addr::new(192, 168, 2, 9);
    r.actions.clear();
    let sent = r.sent.len();
    r.link(1, LinkEvent::AddressRemoved(OUT_ADDR));
    r.link(1, LinkEvent::AddressAdded(new));
    assert!(r.took_action(|a| *a
        == Action::MobikeUpdate {
            iface: 1,
            local: new
        }));
    assert!(r.sent[sent..]
        .iter()
        .any(|t| *t.dst.ip() == I_HA && t.via == Via::Plain && *t.src.ip() == new));
    assert_eq!(r.gate(1), Gate::Closed, "until the gateway answers");
    let vpn_regs = r.sent.iter().filter(|t| t.via == Via::Vpn).count();
    r.vpn(1, VpnEvent::MobikeAnswered { ok: true });
    assert_eq!(r.gate(1), Gate::OpenViaVpn(Mode::Mc));
    assert_eq!(
        r.sent.iter().filter(|t| t.via == Via::Vpn).count(),
        vpn_regs,
        "same TIA: the i-HA is not told"
    );
}

#[test]
fn mn14_no_foreign_agent_care_of_address_on_an_untrusted_network() {
    let mut c = cfg();
    c.outside = Outside::Mobike;
    c.trusted_agents = vec![Ipv4Addr::new(10, 1, 7, 1)];
    let mut r = Rig::new(c);
    r.link(1, LinkEvent::CarrierUp);
    let (n, w) = (r.now, r.wall());
    let adv = Advertisement {
        agent: Ipv4Addr::new(10, 1, 7, 1),
        care_of: Ipv4Addr::new(10, 1, 7, 1),
        lifetime: 60,
        sequence: 0,
        nai: None,
    };
    r.node.handle_advertisement(n, w, 1, adv);
    r.pump();
    assert!(!r.took_action(|a| matches!(a, Action::StartIke { .. } | Action::MobikeUpdate { .. })));
}

#[path = "tests_hostile.rs"]
mod hostile;
#[path = "tests_late.rs"]
mod late;
#[path = "tests_shell.rs"]
mod shell;

/// `gate_open_until` bounds the open-inside gate: it stays open at every moment
/// before the bound with no input (soundness, sampled over hours of
/// re-registrations), the bound is T_MONITOR when the i-HA falls silent (the gate
/// closes exactly there), and there is no bound unless the gate is open inside.
#[test]
fn mn5_the_gate_stays_open_inside_until_the_published_bound() {
    let mut r = Rig::new(cfg());
    assert_eq!(r.node.gate_open_until(1, r.now), None, "down: no bound");
    r.attach(1, IN_ADDR, true, false);
    for _ in 0..100 {
        let until = r.node.gate_open_until(1, r.now).expect("open inside");
        assert!(until > r.now);
        let span = until - r.now;
        for k in 0..=16u32 {
            let t = r.now + span * k / 17;
            assert_eq!(r.node.gate(1, t), Gate::OpenInside(Mode::C), "{k}/17");
        }
        assert_eq!(
            r.node.gate(1, until - Duration::from_nanos(1)),
            Gate::OpenInside(Mode::C)
        );
        r.advance(Duration::from_secs(7));
    }
    // The i-HA falls silent: the bound is the proof's T_MONITOR, where it closes.
    let at = r.node.proof(1).unwrap().at();
    r.reach.insert(1, (false, false));
    r.advance(Duration::from_secs(1));
    let until = r.node.gate_open_until(1, r.now).unwrap();
    assert_eq!(until, at + Duration::from_secs(60));
    assert_ne!(r.node.gate(1, until), Gate::OpenInside(Mode::C));
    r.advance(until - r.now);
    assert_eq!(r.node.gate_open_until(1, r.now), None, "closed: no bound");
    // A status change (input) closes at once: no bound either.
    let mut r = Rig::new(cfg());
    r.attach(1, IN_ADDR, true, false);
    assert!(r.node.gate_open_until(1, r.now).is_some());
    r.link(1, LinkEvent::CarrierDown);
    assert_eq!(r.node.gate_open_until(1, r.now), None);
}
