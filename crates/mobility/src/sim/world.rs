//! The simulated world: event queue, links, home agents, gateway, adversary,
//! and the shell that drives the core.

use mip4::auth::{Algorithm, SecurityAssociation};
use mip4::ha::{HaConfig, HomeAgent, MobileNodeConfig};
use mip4::wire::{Extension, RegistrationReply};
use mip4::Ipv4Net;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::hash_map::DefaultHasher;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::gateway::{Gateway, Report};
use super::oracle::{Truth, Violation};
use super::scenario::{NetKind, Scenario};
use crate::{Action, Config, Gate, LinkEvent, MobileNode, Outside, Transmit, Via, VpnEvent};

pub(crate) const I_HA: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
pub(crate) const X_HA: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
pub(crate) const X_HOME: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 50);
pub(crate) const TRUSTED_AGENT: Ipv4Addr = Ipv4Addr::new(10, 1, 10, 1);
pub(crate) const ROGUE_AGENT: Ipv4Addr = Ipv4Addr::new(10, 20, 0, 66);
pub(crate) const INTERNAL_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
const I_KEY: &[u8] = b"inner-key-0123456";
const X_KEY: &[u8] = b"outer-key-0123456";

#[derive(Debug, Clone)]
pub(super) enum Ev {
    Move(super::scenario::Move),
    Link(u32, u64, LinkEvent),
    ToHa {
        iface: u32,
        gen: u64,
        via: Via,
        inner: bool,
        src: SocketAddrV4,
        payload: Vec<u8>,
    },
    ToMn {
        iface: u32,
        gen: u64,
        via: Via,
        from: SocketAddrV4,
        payload: Vec<u8>,
        /// A genuine plaintext i-HA reply with TNC (ground truth for the oracle).
        genuine_tnc: bool,
        genuine_xha: bool,
    },
    /// An IKE datagram on the interface's outer path (to the gateway or back).
    Ike(u32, bool, ikev2::Transmit),
    User(u32),
    Adversary(u32, u64),
}

impl Ev {
    fn tag(&self) -> u8 {
        match self {
            Ev::Move(_) => 0,
            Ev::Link(..) => 1,
            Ev::ToHa { .. } => 2,
            Ev::ToMn { .. } => 3,
            Ev::Ike(..) => 4,
            Ev::User(_) => 6,
            Ev::Adversary(..) => 7,
        }
    }
}

#[derive(Debug, Default, Clone)]
pub(super) struct SimIface {
    pub(super) net: Option<usize>,
    pub(super) addr: Option<Ipv4Addr>,
    /// Bumped at every move (silent ones too): packets of an older attachment are lost.
    pub(super) gen: u64,
    pub(super) queue: usize,
}

/// What one run produced.
#[derive(Debug, Clone)]
pub(crate) struct RunResult {
    pub(crate) violations: Vec<Violation>,
    pub(crate) trace: u64,
    /// Per interface: time from the first attachment to the first open gate.
    pub(crate) first_open: Vec<Option<Duration>>,
    pub(crate) events: u64,
    pub(crate) packets_out: u64,
    /// IKE SAs started with the real ikev2 cores, and established.
    pub(crate) ike_started: u64,
    pub(crate) ike_up: u64,
}

pub(crate) struct World {
    pub(super) sc: Scenario,
    pub(super) start: Instant,
    pub(super) now: Instant,
    pub(super) rng: StdRng,
    pub(super) node: MobileNode,
    pub(super) iha: HomeAgent,
    pub(super) xha: HomeAgent,
    pub(super) gw: Gateway,
    pub(super) ifs: BTreeMap<u32, SimIface>,
    pub(super) truth: BTreeMap<u32, Truth>,
    pub(super) queue: BTreeMap<(Instant, u64), Ev>,
    pub(super) seq: u64,
    pub(super) captured: Vec<Vec<u8>>,
    pub(super) violations: Vec<Violation>,
    pub(super) hasher: DefaultHasher,
    pub(super) events: u64,
    pub(super) packets_out: u64,
    pub(super) ike_up: u64,
    /// Print every core output (MOBILITY_TRACE=1 with replay_one_seed).
    pub(super) print: bool,
}

pub(super) fn sa(key: &[u8]) -> SecurityAssociation {
    SecurityAssociation::new(0x100, Algorithm::HmacMd5, key)
}

impl World {
    pub(crate) fn node_config(sc: &Scenario) -> Config {
        let outside = if sc.plain_only {
            Outside::None
        } else if sc.mobike {
            Outside::Mobike
        } else {
            Outside::Xmip {
                x_ha: X_HA,
                x_home_addr: X_HOME,
                x_sa: sa(X_KEY),
            }
        };
        let mut c = Config::new(Scenario::home_addr(), I_HA, sa(I_KEY), outside);
        c.t_monitor = sc.t_monitor;
        c.grace = sc.grace;
        c.detection_period = sc.detection_period;
        c.ike_waits_for_detection = sc.ike_waits;
        c.queue_limit = sc.queue_limit;
        c.interface_order = vec![2, 1];
        c.trusted_agents = vec![TRUSTED_AGENT];
        c.internal_domains = vec!["corp.example".into()];
        c.internal_gateway_macs = vec![INTERNAL_MAC];
        c.fault = sc.fault;
        c
    }

    /// `start` is the origin of simulated time; the test that builds the world reads
    /// it once, so nothing in the simulator reads the clock.
    pub(crate) fn new(sc: Scenario, start: Instant) -> World {
        let mut iha_cfg = HaConfig::new(I_HA);
        iha_cfg.max_lifetime = 600;
        // HA-2: the internal networks and the VPN's inner address pool.
        iha_cfg.trusted_networks = vec![
            Ipv4Net::new(Ipv4Addr::new(10, 1, 0, 0), 16).unwrap(),
            Ipv4Net::new(Ipv4Addr::new(10, 99, 0, 0), 16).unwrap(),
        ];
        let mut iha = HomeAgent::new(iha_cfg, [7; 32]);
        iha.add_mobile_node(MobileNodeConfig {
            home_addr: Some(Scenario::home_addr()),
            nai: None,
            sas: vec![sa(I_KEY)],
            replay: mip4::replay::ReplayMethod::Timestamp,
        })
        .unwrap();
        let mut xha = HomeAgent::new(HaConfig::new(X_HA), [8; 32]);
        xha.add_mobile_node(MobileNodeConfig {
            home_addr: Some(X_HOME),
            nai: None,
            sas: vec![sa(X_KEY)],
            replay: mip4::replay::ReplayMethod::Timestamp,
        })
        .unwrap();
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&sc.seed.to_le_bytes());
        let node = MobileNode::new(World::node_config(&sc), seed).unwrap();
        let mut w = World {
            rng: StdRng::seed_from_u64(sc.seed ^ 0x5eed),
            start,
            now: start,
            node,
            iha,
            xha,
            gw: Gateway::new(sc.seed),
            ifs: BTreeMap::new(),
            truth: BTreeMap::new(),
            queue: BTreeMap::new(),
            seq: 0,
            captured: Vec::new(),
            violations: Vec::new(),
            hasher: DefaultHasher::new(),
            events: 0,
            packets_out: 0,
            ike_up: 0,
            print: std::env::var_os("MOBILITY_TRACE").is_some(),
            sc,
        };
        for m in w.sc.moves.clone() {
            w.at(Duration::from_millis(m.at_ms), Ev::Move(m));
        }
        for i in 1..=w.sc.ifaces {
            w.ifs.insert(i, SimIface::default());
            w.truth.insert(i, Truth::default());
            let gap = w.sc.traffic_gap;
            w.at(gap, Ev::User(i));
        }
        w
    }

    pub(super) fn rel(&self) -> Duration {
        self.now - self.start
    }

    pub(super) fn wall(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_790_000_000) + self.rel()
    }

    pub(super) fn at(&mut self, rel: Duration, ev: Ev) {
        self.seq += 1;
        self.queue.insert((self.start + rel, self.seq), ev);
    }

    pub(super) fn after(&mut self, d: Duration, ev: Ev) {
        let rel = self.rel() + d;
        self.at(rel, ev);
    }

    /// Delivery delays over `net` now: empty when lost, two when duplicated.
    pub(super) fn link(&mut self, net: usize) -> Vec<Duration> {
        let t = self.rel().as_secs_f64();
        let imp = &self.sc.nets[net].imp;
        if imp.blackholes.iter().any(|(a, b)| t >= *a && t < *b) {
            return Vec::new();
        }
        let (loss, dup, lo, hi) = (imp.loss, imp.dup, imp.delay_min, imp.delay_max);
        if self.rng.gen::<f64>() < loss {
            return Vec::new();
        }
        let d = |r: &mut StdRng| {
            if hi > lo {
                lo + (hi - lo).mul_f64(r.gen::<f64>())
            } else {
                lo
            }
        };
        let mut out = vec![d(&mut self.rng)];
        if self.rng.gen::<f64>() < dup {
            out.push(d(&mut self.rng));
        }
        out
    }

    pub(super) fn nat_gen(&self, net: usize) -> usize {
        let t = self.rel().as_secs_f64();
        self.sc.nets[net]
            .imp
            .nat_rebinds
            .iter()
            .filter(|r| **r <= t)
            .count()
    }

    /// The outer path from the interface to the VPN gateway works now.
    pub(super) fn vpn_path_ok(&self, iface: u32) -> bool {
        let Some(s) = self.ifs.get(&iface) else {
            return false;
        };
        let (Some(net), Some(addr)) = (s.net, s.addr) else {
            return false;
        };
        let kind = self.sc.nets[net].kind;
        if self.sc.mobike {
            matches!(
                kind,
                NetKind::Outside { .. } | NetKind::Inside { reach_gw: true, .. }
            )
        } else {
            let reach = matches!(
                kind,
                NetKind::Outside { .. }
                    | NetKind::Inside {
                        reach_xha: true,
                        ..
                    }
            );
            reach
                && self
                    .xha
                    .bindings_of(X_HOME)
                    .iter()
                    .any(|b| b.care_of == addr)
        }
    }

    pub(crate) fn run(mut self) -> RunResult {
        let end = self.start + self.sc.duration;
        loop {
            let next_ev = self.queue.keys().next().map(|(t, _)| *t);
            let next_node = self.node.poll_timeout().map(|(t, _)| t);
            let next_ha = [
                self.iha.poll_timeout(),
                self.xha.poll_timeout(),
                self.gw.poll_timeout(),
            ]
            .into_iter()
            .flatten()
            .min();
            let Some(next) = [next_ev, next_node, next_ha].into_iter().flatten().min() else {
                break;
            };
            if next > end {
                break;
            }
            self.now = self.now.max(next);
            let now = self.now;
            if next_ha.is_some_and(|t| t <= now) {
                self.iha.handle_timeout(now);
                self.xha.handle_timeout(now);
                self.gw.handle_timeout(now);
                self.pump_ike();
                self.step_done(0xfe, 0);
            }
            if next_node.is_some_and(|t| t <= now) {
                let w = self.wall();
                self.node.handle_timeout(now, w);
                self.step_done(0xff, 0);
            }
            while let Some((&(t, s), _)) = self.queue.iter().next() {
                if t > now {
                    break;
                }
                let Some(ev) = self.queue.remove(&(t, s)) else {
                    break;
                };
                let (tag, iface) = (ev.tag(), ev_iface(&ev));
                self.handle(ev);
                self.step_done(tag, iface);
            }
        }
        self.now = end;
        let ids: Vec<u32> = self.ifs.keys().copied().collect();
        for i in ids {
            self.close_segment(i);
        }
        // P3, the other half: on a working network without silent moves the
        // re-registration at T_MONITOR - grace always lands in time.
        let silent = self.sc.moves.iter().any(|m| m.silent);
        let expiries = self.node.stats().t_monitor_expiries;
        if self.sc.working && !silent && expiries > 0 {
            self.violations.push(Violation {
                property: "P3",
                at: self.rel(),
                iface: 0,
                detail: format!("{expiries} T_MONITOR expiries on a working network"),
            });
        }
        RunResult {
            violations: self.violations,
            trace: self.hasher.finish(),
            first_open: self.truth.values().map(|t| t.first_open).collect(),
            events: self.events,
            packets_out: self.packets_out,
            ike_started: self.gw.handshakes,
            ike_up: self.ike_up,
        }
    }

    /// After every input: drain the core, follow the gates.
    fn step_done(&mut self, tag: u8, iface: u32) {
        self.events += 1;
        (self.rel().as_micros(), tag, iface).hash(&mut self.hasher);
        self.drain();
        let now = self.now;
        let ids: Vec<u32> = self.ifs.keys().copied().collect();
        for i in ids {
            let g = self.node.gate(i, now);
            g.hash(&mut self.hasher);
            if !self.sc.mobike && self.ifs.keys().any(|o| *o != i && self.node.holds_xmip(*o)) {
                self.truth.get_mut(&i).unwrap().excused = true;
            }
            // MN-2: one binding at the i-HA: while another interface is open
            // inside, an outside one stands by (its gate stays closed).
            if !g.is_open()
                && self
                    .ifs
                    .keys()
                    .any(|o| *o != i && matches!(self.node.gate(*o, now), Gate::OpenInside(_)))
            {
                self.truth.get_mut(&i).unwrap().excused = true;
            }
            if g.is_open() {
                let rel = self.rel();
                let t = self.truth.entry(i).or_default();
                if let Some((start, opened)) = t.segment.as_mut() {
                    if !*opened {
                        *opened = true;
                        let took = now - *start;
                        if t.first_open.is_none() {
                            t.first_open = Some(took);
                        }
                        let _ = rel;
                        self.check_liveness(i, took);
                    }
                }
                // Queued packets go out once the gate opens again.
                let q = std::mem::take(&mut self.ifs.get_mut(&i).unwrap().queue);
                for _ in 0..q {
                    self.user_packet_out(i, g);
                }
            }
        }
    }

    fn drain(&mut self) {
        loop {
            let mut any = false;
            while let Some(t) = self.node.poll_transmit() {
                any = true;
                if self.print {
                    println!(
                        "{:10.3} tx if{} {:?} {} -> {}",
                        self.rel().as_secs_f64(),
                        t.iface,
                        t.via,
                        t.src,
                        t.dst
                    );
                }
                self.send_from_mn(t);
            }
            while let Some(a) = self.node.poll_action() {
                any = true;
                if self.print {
                    println!("{:10.3} action {a:?}", self.rel().as_secs_f64());
                }
                self.action(a);
            }
            while let Some(e) = self.node.poll_event() {
                if self.print {
                    println!("{:10.3} event {e:?}", self.rel().as_secs_f64());
                }
            }
            if !any {
                break;
            }
        }
    }

    fn handle(&mut self, ev: Ev) {
        let (now, wall) = (self.now, self.wall());
        if self.print && !matches!(ev, Ev::User(_)) {
            let mut d = format!("{ev:?}");
            d.truncate(160);
            println!("{:10.3} in {d}", self.rel().as_secs_f64());
        }
        match ev {
            Ev::Move(m) => self.do_move(m),
            Ev::Link(i, gen, le) => {
                if self.ifs[&i].gen == gen {
                    self.node.handle_link(now, wall, i, le);
                }
            }
            Ev::ToHa {
                iface,
                gen,
                via,
                inner,
                src,
                payload,
            } => self.at_ha(iface, gen, via, inner, src, payload),
            Ev::ToMn {
                iface,
                gen,
                via,
                from,
                payload,
                genuine_tnc,
                genuine_xha,
            } => {
                let s = &self.ifs[&iface];
                let ok = match via {
                    Via::Plain => s.gen == gen,
                    Via::Vpn => self.gw.sas.contains_key(&iface) && self.vpn_path_ok(iface),
                };
                if !ok {
                    return;
                }
                if genuine_tnc {
                    self.truth.get_mut(&iface).unwrap().last_tnc = Some(now);
                }
                if genuine_xha && self.gw.sas.contains_key(&iface) {
                    self.truth.get_mut(&iface).unwrap().vpn_ok = Some(now);
                }
                self.node
                    .handle_datagram(now, wall, iface, via, from, &payload);
            }
            Ev::Ike(i, to_gw, t) => {
                if !self.vpn_path_ok(i) {
                    return;
                }
                if to_gw {
                    self.gw.deliver_to_responder(now, &t);
                } else {
                    self.gw.deliver_to_initiator(now, i, &t);
                }
                self.pump_ike();
            }
            Ev::User(i) => {
                let g = self.node.gate(i, now);
                match g {
                    Gate::OpenInside(_) | Gate::OpenViaVpn(_) => self.user_packet_out(i, g),
                    Gate::Queued { limit } => {
                        let s = self.ifs.get_mut(&i).unwrap();
                        if s.queue < limit {
                            s.queue += 1;
                        }
                    }
                    Gate::Closed => {}
                }
                let gap = self.sc.traffic_gap.mul_f64(self.rng.gen_range(0.5..1.5));
                self.after(gap, Ev::User(i));
            }
            Ev::Adversary(i, gen) => self.adversary(i, gen),
        }
    }

    fn do_move(&mut self, m: super::scenario::Move) {
        let i = m.iface;
        let now = self.now;
        self.close_segment(i);
        let old = self.ifs[&i].clone();
        let s = self.ifs.get_mut(&i).unwrap();
        s.gen += 1;
        s.net = m.net;
        let gen = s.gen;
        let t = self.truth.get_mut(&i).unwrap();
        if m.silent {
            // Upstream change: no link event; the old address stays.
            t.silent_at = Some(now);
            t.segment = Some((now, false));
            t.excused = false;
            self.schedule_adversary(i, gen);
            return;
        }
        t.changed_at = Some(now);
        let wall = self.wall();
        if let Some(a) = old.addr {
            self.node
                .handle_link(now, wall, i, LinkEvent::AddressRemoved(a));
        }
        if old.net.is_some() {
            self.node.handle_link(now, wall, i, LinkEvent::CarrierDown);
        }
        self.ifs.get_mut(&i).unwrap().addr = None;
        let Some(net) = m.net else {
            return;
        };
        self.node.handle_link(now, wall, i, LinkEvent::CarrierUp);
        let addr = self.sc.addr_on(net, i);
        self.ifs.get_mut(&i).unwrap().addr = Some(addr);
        let t = self.truth.get_mut(&i).unwrap();
        t.segment = Some((now, false));
        t.excused = false;
        let gw_ip = Ipv4Addr::new(addr.octets()[0], addr.octets()[1], addr.octets()[2], 1);
        let mac = match self.sc.nets[net].kind {
            NetKind::Inside { .. } => INTERNAL_MAC,
            // The adversary fakes the internal gateway MAC; other networks differ.
            NetKind::Outside {
                adversary: true, ..
            } => INTERNAL_MAC,
            NetKind::Outside { .. } => [2, 0, 0, 0, 9, net as u8],
        };
        let domain = match self.sc.nets[net].kind {
            // The adversary fakes the internal domain too.
            NetKind::Inside { .. }
            | NetKind::Outside {
                adversary: true, ..
            } => "corp.example",
            NetKind::Outside { .. } => "hotel.example",
        };
        let dhcp = Duration::from_millis(5);
        self.after(
            dhcp,
            Ev::Link(i, gen, LinkEvent::DefaultGateway(Some((gw_ip, mac)))),
        );
        self.after(
            dhcp,
            Ev::Link(
                i,
                gen,
                LinkEvent::DhcpHints {
                    domain: Some(domain.into()),
                    gateway_mac: Some(mac),
                },
            ),
        );
        self.after(dhcp, Ev::Link(i, gen, LinkEvent::AddressAdded(addr)));
        self.schedule_adversary(i, gen);
    }

    fn send_from_mn(&mut self, t: Transmit) {
        let i = t.iface;
        let s = self.ifs[&i].clone();
        let Some(net) = s.net else { return };
        let kind = self.sc.nets[net].kind;
        match t.via {
            Via::Plain => {
                if let NetKind::Outside {
                    adversary: true, ..
                } = kind
                {
                    self.forge(i, s.gen, &t.payload, net);
                }
                let inner = *t.dst.ip() == I_HA;
                // The firewall blocks the i-HA from outside; HA-5 may block the x-HA
                // from inside. Requests through a foreign agent go nowhere (none here).
                let reach = match kind {
                    NetKind::Inside { reach_xha, .. } => {
                        inner || (reach_xha && *t.dst.ip() == X_HA)
                    }
                    NetKind::Outside { .. } => *t.dst.ip() == X_HA,
                };
                if !reach {
                    return;
                }
                let src = match kind {
                    NetKind::Outside { nat: true, .. } => SocketAddrV4::new(
                        Ipv4Addr::new(203, 0, 113, 10 + net as u8),
                        40_000 + self.nat_gen(net) as u16,
                    ),
                    _ => t.src,
                };
                for d in self.link(net) {
                    let ev = Ev::ToHa {
                        iface: i,
                        gen: s.gen,
                        via: Via::Plain,
                        inner,
                        src,
                        payload: t.payload.clone(),
                    };
                    self.after(d, ev);
                }
            }
            Via::Vpn => {
                if !self.gw.sas.contains_key(&i) || !self.vpn_path_ok(i) {
                    return;
                }
                for d in self.link(net) {
                    let ev = Ev::ToHa {
                        iface: i,
                        gen: s.gen,
                        via: Via::Vpn,
                        inner: true,
                        src: t.src,
                        payload: t.payload.clone(),
                    };
                    self.after(d + Duration::from_millis(1), ev);
                }
            }
        }
    }

    fn at_ha(&mut self, i: u32, gen: u64, via: Via, inner: bool, src: SocketAddrV4, p: Vec<u8>) {
        let (now, wall) = (self.now, self.wall());
        let (ha, addr) = if inner {
            (&mut self.iha, I_HA)
        } else {
            (&mut self.xha, X_HA)
        };
        ha.handle_datagram(now, wall, src, SocketAddrV4::new(addr, 434), &p);
        let mut replies = Vec::new();
        while let Some(t) = ha.poll_transmit() {
            replies.push(t);
        }
        while ha.poll_event().is_some() {}
        let net = self.ifs[&i].net;
        for r in replies {
            let accepted_tnc = RegistrationReply::parse(&r.payload).is_ok_and(|rep| {
                rep.code.is_accepted()
                    && rep
                        .extensions
                        .contains(&Extension::TrustedNetworksConfigured)
            });
            let genuine_tnc = inner && via == Via::Plain && accepted_tnc;
            if genuine_tnc {
                self.captured.push(r.payload.clone());
                if self.captured.len() > 64 {
                    self.captured.remove(0);
                }
            }
            let genuine_xha = !inner
                && RegistrationReply::parse(&r.payload).is_ok_and(|rep| rep.code.is_accepted());
            let Some(net) = net else { continue };
            if via == Via::Plain && !inner {
                if let NetKind::Outside { nat: true, .. } = self.sc.nets[net].kind {
                    // The reply follows the mapping it was sent to.
                    if r.dst.port() != 40_000 + self.nat_gen(net) as u16 {
                        continue;
                    }
                }
            }
            for d in self.link(net) {
                let ev = Ev::ToMn {
                    iface: i,
                    gen,
                    via,
                    from: r.src,
                    payload: r.payload.clone(),
                    genuine_tnc,
                    genuine_xha,
                };
                self.after(d, ev);
            }
        }
    }

    fn action(&mut self, a: Action) {
        match a {
            Action::StartIke { iface, local } => {
                let now = self.now;
                self.gw.start(now, iface, local);
                self.pump_ike();
            }
            Action::MobikeUpdate { iface, local } => {
                let now = self.now;
                if !self.gw.mobike(now, iface, local) {
                    let w = self.wall();
                    self.gw.stop(iface);
                    self.node
                        .handle_vpn(now, w, iface, VpnEvent::MobikeAnswered { ok: false });
                }
                self.pump_ike();
            }
            Action::StopVpn { iface } => self.gw.stop(iface),
            Action::FlushQueue { iface } => self.ifs.get_mut(&iface).unwrap().queue = 0,
            Action::SetMode { .. } => {}
        }
    }

    /// Carries IKE datagrams over the outer paths and tells the core what the
    /// shell's IKE side reports.
    fn pump_ike(&mut self) {
        for (i, to_gw, t) in self.gw.poll_transmits() {
            if !self.vpn_path_ok(i) {
                continue;
            }
            let Some(net) = self.ifs.get(&i).and_then(|s| s.net) else {
                continue;
            };
            for d in self.link(net) {
                self.after(d, Ev::Ike(i, to_gw, t.clone()));
            }
        }
        let (now, wall) = (self.now, self.wall());
        for (i, r) in self.gw.poll_reports() {
            let ev = match r {
                Report::Up(tia) => {
                    self.ike_up += 1;
                    self.truth.get_mut(&i).unwrap().vpn_ok = Some(now);
                    VpnEvent::Up { tia }
                }
                Report::Down => VpnEvent::Down,
                Report::MobikeOk => {
                    self.truth.get_mut(&i).unwrap().vpn_ok = Some(now);
                    VpnEvent::MobikeAnswered { ok: true }
                }
                Report::MobikeFailed => VpnEvent::MobikeAnswered { ok: false },
            };
            self.node.handle_vpn(now, wall, i, ev);
        }
    }
}

fn ev_iface(ev: &Ev) -> u32 {
    match ev {
        Ev::Move(m) => m.iface,
        Ev::Link(i, ..) | Ev::Ike(i, ..) | Ev::User(i) | Ev::Adversary(i, _) => *i,
        Ev::ToHa { iface, .. } | Ev::ToMn { iface, .. } => *iface,
    }
}
