//! [`MobileNode`]: the interfaces, their detection (RFC 5265 section 3.3) and
//! the composition of the registration clients.

use mip4::client::{ClientConfig, ClientEvent, RegistrationClient};
use mip4::wire::RegistrationReply;
use std::collections::{BTreeMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddrV4};

use std::time::{Instant, SystemTime};

use crate::config::{Config, ConfigError, FaultCheck, Outside};
use crate::iface::{Attach, Iface, Timer, VpnState, TIMERS};
use crate::proof::{DirectIha, DirectOutcome};
use crate::{
    Action, Advertisement, Deadline, Event, Gate, IfaceId, LinkEvent, Mode, Phase, Transmit, Via,
    VpnEvent,
};

/// Counters, for status and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub status_changes: u64,
    pub detections: u64,
    pub inside_proofs: u64,
    pub t_monitor_expiries: u64,
    pub gate_closures: u64,
    /// MN-4: i-HA accepted us without TNC: stayed outside.
    pub accepted_without_tnc: u64,
    /// Advertisements from agents not in `trusted_agents`, ignored.
    pub untrusted_agent_ads: u64,
    /// Registration datagrams no client wanted (malformed, unknown HA, no VPN).
    pub dropped_datagrams: u64,
}

/// The mobile node's decision engine. See the crate documentation.
///
/// Inputs (`handle_*`) take `now`; outputs are drained in this order after
/// every input: [`poll_transmit`](Self::poll_transmit),
/// [`poll_action`](Self::poll_action), [`poll_event`](Self::poll_event), then
/// one timer is armed at [`poll_timeout`](Self::poll_timeout). The shell asks
/// [`gate`](Self::gate) for every user packet.
pub struct MobileNode {
    cfg: Config,
    seed: [u8; 32],
    ifaces: BTreeMap<IfaceId, Iface>,
    transmits: VecDeque<Transmit>,
    actions: VecDeque<Action>,
    events: VecDeque<Event>,
    stats: Stats,
}

impl MobileNode {
    pub fn new(cfg: Config, seed: [u8; 32]) -> Result<Self, ConfigError> {
        cfg.validate()?;
        Ok(MobileNode {
            cfg,
            seed,
            ifaces: BTreeMap::new(),
            transmits: VecDeque::new(),
            actions: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
        })
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The data gate of `iface` at `now` (closed for an unknown interface).
    pub fn gate(&self, iface: IfaceId, now: Instant) -> Gate {
        self.ifaces
            .get(&iface)
            .map_or(Gate::Closed, |i| i.gate(&self.cfg, now))
    }

    pub fn phase(&self, iface: IfaceId) -> Phase {
        self.ifaces.get(&iface).map_or(Phase::Down, |i| i.phase)
    }

    /// The reason of the interface's last change.
    pub fn reason(&self, iface: IfaceId) -> &'static str {
        self.ifaces
            .get(&iface)
            .map_or("unknown interface", |i| i.reason)
    }

    /// The status epoch of the interface (bumped at every status change).
    pub fn epoch(&self, iface: IfaceId) -> u64 {
        self.ifaces.get(&iface).map_or(0, |i| i.epoch)
    }

    /// The current TNC proof of an interface, if any.
    pub fn proof(&self, iface: IfaceId) -> Option<&crate::TncProof> {
        self.ifaces.get(&iface).and_then(|i| i.proof.as_ref())
    }

    /// MN-2: the interface that carries user data: the first open-inside
    /// interface in the configured order, else the first open-through-VPN one.
    pub fn preferred(&self, now: Instant) -> Option<(IfaceId, Gate)> {
        let mut order: Vec<IfaceId> = self
            .cfg
            .interface_order
            .iter()
            .copied()
            .filter(|i| self.ifaces.contains_key(i))
            .collect();
        for id in self.ifaces.keys() {
            if !order.contains(id) {
                order.push(*id);
            }
        }
        let gates: Vec<(IfaceId, Gate)> = order.iter().map(|i| (*i, self.gate(*i, now))).collect();
        gates
            .iter()
            .find(|(_, g)| matches!(g, Gate::OpenInside(_)))
            .or_else(|| gates.iter().find(|(_, g)| matches!(g, Gate::OpenViaVpn(_))))
            .copied()
    }

    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The next deadline over every interface, with its reason.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Deadline> {
        self.ifaces
            .values()
            .filter_map(Iface::poll_timeout)
            .min_by_key(|(t, _)| *t)
    }

    fn iface(&mut self, id: IfaceId) -> &mut Iface {
        let cfg = &self.cfg;
        let seed = self.seed;
        self.ifaces.entry(id).or_insert_with(|| {
            let sub = |kind: u8| {
                let mut s = seed;
                s[0] ^= kind;
                for (k, b) in id.to_be_bytes().iter().enumerate() {
                    s[1 + k] ^= b;
                }
                s
            };
            let client = |home: Ipv4Addr, ha: Ipv4Addr, sa: &mip4::auth::SecurityAssociation| {
                let mut c = ClientConfig::new(home, ha, sa.clone());
                c.nai = cfg.nai.clone();
                c.replay = cfg.replay;
                c.lifetime = cfg.lifetime;
                c.initial_rto = cfg.initial_rto;
                c.max_rto = cfg.max_rto;
                c.max_attempts = cfg.max_attempts;
                // MN-2: each interface proves its own path; whether the home
                // agents keep one binding per interface is configuration.
                c.simultaneous = cfg.simultaneous_bindings;
                // MN-14: reverse tunnel whenever MIP runs inside IPsec.
                c.reverse_tunnel = true;
                c
            };
            let xha = match &cfg.outside {
                Outside::Xmip {
                    x_ha,
                    x_home_addr,
                    x_sa,
                } => Some(RegistrationClient::new(
                    client(*x_home_addr, *x_ha, x_sa),
                    sub(2),
                )),
                Outside::Mobike => None,
            };
            Iface {
                id,
                epoch: 0,
                phase: Phase::Down,
                reason: "new interface",
                carrier: false,
                addrs: Vec::new(),
                gateway: None,
                hint_inside: None,
                agent: None,
                attach: None,
                direct: DirectIha::new(id, client(cfg.home_addr, cfg.i_ha, &cfg.i_sa), sub(1)),
                direct_failed: false,
                xha,
                xha_epoch: None,
                xha_failed: false,
                via_vpn: RegistrationClient::new(
                    client(cfg.home_addr, cfg.i_ha, &cfg.i_sa),
                    sub(3),
                ),
                vpn: VpnState::None,
                vpn_epoch: None,
                vpn_failed: false,
                proof: None,
                timers: [None; 9],
                last_gate: Gate::Closed,
                mode: None,
            }
        })
    }

    // ---- inputs -------------------------------------------------------------

    /// A link event on `iface`.
    pub fn handle_link(&mut self, now: Instant, wall: SystemTime, iface: IfaceId, ev: LinkEvent) {
        let internal_domain = |d: &Option<String>, cfg: &Config| {
            d.as_ref().map(|d| {
                cfg.internal_domains
                    .iter()
                    .any(|x| x.eq_ignore_ascii_case(d))
            })
        };
        let macs = self.cfg.internal_gateway_macs.clone();
        let dom = match &ev {
            LinkEvent::DhcpHints { domain, .. } => internal_domain(domain, &self.cfg),
            _ => None,
        };
        let i = self.iface(iface);
        let change: Option<&'static str> = match ev {
            LinkEvent::CarrierUp => {
                i.carrier = true;
                Some("carrier up")
            }
            LinkEvent::CarrierDown => {
                i.carrier = false;
                i.hint_inside = None;
                i.agent = None;
                Some("carrier down")
            }
            LinkEvent::AddressAdded(a) => {
                if i.addrs.contains(&a) {
                    None
                } else {
                    i.addrs.push(a);
                    Some("address added")
                }
            }
            LinkEvent::AddressRemoved(a) => {
                let before = i.addrs.len();
                i.addrs.retain(|x| *x != a);
                (i.addrs.len() != before).then_some("address removed")
            }
            LinkEvent::DefaultGateway(g) => {
                if i.gateway == g {
                    None
                } else {
                    i.gateway = g;
                    if let Some((_, mac)) = g {
                        i.hint_inside = Some(macs.contains(&mac));
                    }
                    Some("default gateway changed")
                }
            }
            LinkEvent::DhcpHints { gateway_mac, .. } => {
                // MN-8: hints only speed detection up; they never open a gate
                // and never count as a status change.
                let by_mac = gateway_mac.map(|m| macs.contains(&m));
                i.hint_inside = match (dom, by_mac) {
                    (Some(true), _) | (_, Some(true)) => Some(true),
                    (Some(false), _) | (_, Some(false)) => Some(false),
                    (None, None) => i.hint_inside,
                };
                None
            }
        };
        if let Some(reason) = change {
            self.status_change(now, wall, iface, reason);
        }
        self.flush(now);
    }

    /// A foreign agent advertisement heard on `iface`.
    pub fn handle_advertisement(
        &mut self,
        now: Instant,
        wall: SystemTime,
        iface: IfaceId,
        adv: Advertisement,
    ) {
        if !self.cfg.trusted_agents.contains(&adv.agent) {
            // MN-14 / make-before-break: an unknown agent never touches the
            // interface's state, whatever it advertises (a rogue on the link).
            self.stats.untrusted_agent_ads += 1;
            return;
        }
        let prefer = self.cfg.prefer_foreign_agent;
        let i = self.iface(iface);
        let expires = now + std::time::Duration::from_secs(u64::from(adv.lifetime.max(1)));
        let using = i.attach.and_then(|a| a.agent) == Some(adv.agent);
        i.agent = Some(crate::iface::AgentSeen { adv, expires });
        if using {
            i.set(Timer::AgentExpiry, expires);
        }
        // Make-before-break: an interface with a working (or proving) path is
        // not moved to the agent; only one without an attachment, or one still
        // detecting when agents are preferred.
        let take =
            i.carrier && !using && (i.attach.is_none() || (prefer && i.phase == Phase::Detecting));
        if take {
            self.status_change(now, wall, iface, "trusted foreign agent heard");
        }
        self.flush(now);
    }

    /// A registration reply received on `iface`: plaintext on the socket bound
    /// to it, or from inside its VPN tunnel.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        wall: SystemTime,
        iface: IfaceId,
        via: Via,
        from: SocketAddrV4,
        payload: &[u8],
    ) {
        let Ok(reply) = RegistrationReply::parse(payload) else {
            self.stats.dropped_datagrams += 1;
            return;
        };
        let same = self.cfg.same_home_agents();
        let i_ha = self.cfg.i_ha;
        let x_ha = match self.cfg.outside {
            Outside::Xmip { x_ha, .. } => Some(x_ha),
            Outside::Mobike => None,
        };
        let Some(i) = self.ifaces.get_mut(&iface) else {
            self.stats.dropped_datagrams += 1;
            return;
        };
        match via {
            // MN-4: the VPN client can never produce a TncProof.
            Via::Vpn if reply.home_agent == i_ha => {
                i.via_vpn.handle_datagram(now, wall, from, payload)
            }
            // MN-7: with one address for both, plaintext replies are the x-HA's.
            Via::Plain if reply.home_agent == i_ha && !same => {
                i.direct.handle_datagram(now, wall, from, payload)
            }
            Via::Plain if Some(reply.home_agent) == x_ha => {
                if let Some(x) = i.xha.as_mut() {
                    x.handle_datagram(now, wall, from, payload);
                }
            }
            _ => {
                self.stats.dropped_datagrams += 1;
                return;
            }
        }
        self.drain_clients(now, wall, iface);
        self.flush(now);
    }

    /// The VPN layer of `iface` changed.
    pub fn handle_vpn(&mut self, now: Instant, wall: SystemTime, iface: IfaceId, ev: VpnEvent) {
        let cfg = self.cfg.clone();
        let i = self.iface(iface);
        let mut outside_now = false;
        match ev {
            VpnEvent::Up { tia } => {
                i.vpn = VpnState::Up { tia };
                i.vpn_failed = false;
                i.vpn_epoch = Some(i.epoch);
                // MN-14: the i-HA hears only when the TIA changes.
                let registered = i.via_vpn.is_registered(now) && i.via_vpn.care_of() == Some(tia);
                if !registered && i.phase != Phase::Inside {
                    i.via_vpn
                        .register(now, wall, Iface::vpn_attachment(&cfg, tia));
                }
                outside_now = matches!(cfg.outside, Outside::Mobike);
            }
            VpnEvent::Down => {
                i.vpn = VpnState::None;
                i.vpn_epoch = None;
                i.via_vpn.reset();
                i.vpn_failed = true;
                if i.phase == Phase::Outside {
                    i.set(Timer::VpnRetry, now + cfg.retry_after);
                }
            }
            VpnEvent::MobikeAnswered { ok } => match i.vpn {
                VpnState::Updating { tia } if ok => {
                    i.vpn = VpnState::Up { tia };
                    i.vpn_epoch = Some(i.epoch);
                    outside_now = true;
                }
                VpnState::Updating { .. } => {
                    // The SA could not move: a fresh IKE from the new address.
                    i.vpn = VpnState::None;
                    i.vpn_epoch = None;
                    i.via_vpn.reset();
                    self.start_ike(now, iface);
                }
                _ => {}
            },
        }
        let i = self.iface(iface);
        if outside_now && i.phase == Phase::Detecting {
            // MN-14: the gateway's answer alone means outside.
            self.go_outside(now, wall, iface, "VPN gateway answered");
        }
        self.drain_clients(now, wall, iface);
        self.check_stuck(now, iface);
        self.flush(now);
    }

    pub fn handle_timeout(&mut self, now: Instant, wall: SystemTime) {
        let ids: Vec<IfaceId> = self.ifaces.keys().copied().collect();
        for id in ids {
            if let Some(i) = self.ifaces.get_mut(&id) {
                i.direct.handle_timeout(now, wall);
                if let Some(x) = i.xha.as_mut() {
                    if x.poll_timeout().is_some_and(|t| t <= now) {
                        x.handle_timeout(now, wall);
                    }
                }
                if i.via_vpn.poll_timeout().is_some_and(|t| t <= now) {
                    i.via_vpn.handle_timeout(now, wall);
                }
            }
            self.drain_clients(now, wall, id);
            self.run_timers(now, wall, id);
        }
        self.flush(now);
    }

    fn run_timers(&mut self, now: Instant, wall: SystemTime, id: IfaceId) {
        let cfg = self.cfg.clone();
        for t in TIMERS {
            let Some(i) = self.ifaces.get_mut(&id) else {
                return;
            };
            if !i.take_due(t, now) {
                continue;
            }
            match t {
                Timer::Rereg => {
                    // MN-5: re-register even while data flows.
                    if let (Phase::Inside, Some(a)) = (i.phase, i.attach) {
                        let att = i.direct_attachment(&cfg, a);
                        let ep = i.epoch;
                        i.direct.probe(now, wall, ep, a.inside_mode, att);
                    }
                }
                Timer::TMonitor => {
                    if i.phase == Phase::Inside {
                        self.stats.t_monitor_expiries += 1;
                    }
                }
                Timer::DetectEnd => {
                    // MN-6: plaintext re-registrations go to one HA only.
                    if i.phase == Phase::Outside {
                        i.direct.stop();
                    }
                }
                Timer::Ike => {
                    if i.phase == Phase::Outside && i.vpn == VpnState::None {
                        self.start_ike(now, id);
                    }
                }
                Timer::VpnRetry => {
                    if i.phase == Phase::Outside && i.vpn == VpnState::None {
                        self.start_ike(now, id);
                    }
                }
                Timer::XhaDelay => self.xha_register(now, wall, id),
                Timer::VpnRegRetry => {
                    if let (Phase::Outside, VpnState::Up { tia }) = (i.phase, i.vpn) {
                        i.via_vpn
                            .register(now, wall, Iface::vpn_attachment(&cfg, tia));
                    }
                }
                Timer::Retry => self.restart(now, wall, id, "detection retry"),
                Timer::AgentExpiry => self.status_change(now, wall, id, "foreign agent gone"),
            }
        }
    }

    // ---- transitions --------------------------------------------------------

    /// MN-3: a connection status change: the gate closes at once (the epoch
    /// moves, every proof of the old one is void), queued data is dropped,
    /// detection starts again.
    fn status_change(&mut self, now: Instant, wall: SystemTime, id: IfaceId, reason: &'static str) {
        self.stats.status_changes += 1;
        let keep = self.cfg.faulty(FaultCheck::KeepProof);
        let i = self.iface(id);
        i.epoch += 1;
        #[cfg(test)]
        if keep {
            let ep = i.epoch;
            i.proof = i.proof.as_ref().map(|p| p.carried_to(ep));
        }
        if !keep {
            i.proof = None;
        }
        self.actions.push_back(Action::FlushQueue { iface: id });
        self.restart(now, wall, id, reason);
    }

    /// Starts a detection round (RFC 5265 section 3.3) on the current link.
    fn restart(&mut self, now: Instant, wall: SystemTime, id: IfaceId, reason: &'static str) {
        let cfg = self.cfg.clone();
        self.stats.detections += 1;
        let keep_proof = cfg.faulty(FaultCheck::KeepProof);
        let i = self.iface(id);
        i.reason = reason;
        if !keep_proof {
            i.proof = None;
        }
        for t in [
            Timer::Rereg,
            Timer::TMonitor,
            Timer::DetectEnd,
            Timer::Ike,
            Timer::XhaDelay,
            Timer::Retry,
            Timer::VpnRegRetry,
        ] {
            i.stop(t);
        }
        i.direct.stop();
        i.direct_failed = false;
        i.xha_failed = false;
        i.xha_epoch = None;
        let agent = i
            .agent
            .as_ref()
            .filter(|g| g.expires > now && cfg.trusted_agents.contains(&g.adv.agent))
            .cloned();
        let via_agent = |g: &crate::iface::AgentSeen| Attach {
            care_of: g.adv.care_of,
            agent: Some(g.adv.agent),
            inside_mode: Mode::F,
        };
        let attach = match (i.carrier, i.address(), &agent) {
            (false, _, _) => None,
            (true, Some(a), _) if a == cfg.home_addr => Some(Attach {
                care_of: a,
                agent: None,
                inside_mode: Mode::H,
            }),
            (true, Some(_), Some(g)) if cfg.prefer_foreign_agent => Some(via_agent(g)),
            (true, Some(a), _) => Some(Attach {
                care_of: a,
                agent: None,
                inside_mode: Mode::C,
            }),
            (true, None, Some(g)) => Some(via_agent(g)),
            (true, None, None) => None,
        };
        if let (Some(g), Some(Attach { agent: Some(_), .. })) = (&agent, attach) {
            i.set(Timer::AgentExpiry, g.expires);
        }
        i.attach = attach;
        if attach.is_none_or(|a| a.agent.is_none()) {
            i.stop(Timer::AgentExpiry);
        }
        let Some(a) = attach else {
            if let Some(x) = i.xha.as_mut() {
                x.reset();
            }
            self.set_phase(id, Phase::Down, reason);
            return;
        };
        self.set_phase(id, Phase::Detecting, reason);
        let i = self.iface(id);
        // MN-7: same address for both home agents: outside, no detection.
        if cfg.same_home_agents() {
            i.direct_failed = true;
        } else {
            // MN-6, MN-13: a plaintext request to the i-HA, bound to this interface.
            let att = i.direct_attachment(&cfg, a);
            let ep = i.epoch;
            i.direct.probe(now, wall, ep, a.inside_mode, att);
        }
        let held = self.xmip_held_by_other(id);
        let i = self.iface(id);
        match cfg.outside {
            Outside::Xmip { .. } if held => {
                // MN-2: the x-home address, and the VPN run from it, exist once:
                // one interface at a time holds the x-MIP layer. This one only
                // checks for inside, and tries again later.
                i.xha_failed = true;
            }
            Outside::Xmip { .. } => {
                // MN-8: an inside hint may postpone the x-HA request, never skip it.
                if i.hint_inside == Some(true) && !cfg.same_home_agents() {
                    i.set(Timer::XhaDelay, now + cfg.hint_xha_delay);
                } else {
                    self.xha_register(now, wall, id);
                }
            }
            Outside::Mobike => {
                if a.agent.is_some() {
                    // MN-14: no FA care-of address on an untrusted network: the
                    // VPN is never run through an agent.
                    i.vpn_failed = true;
                    return;
                }
                // MN-14: the MOBIKE update and the direct i-HA request together.
                match i.vpn {
                    VpnState::Up { tia } | VpnState::Updating { tia } => {
                        i.vpn = VpnState::Updating { tia };
                        i.vpn_failed = false;
                        self.actions.push_back(Action::MobikeUpdate {
                            iface: id,
                            local: a.care_of,
                        });
                    }
                    VpnState::None | VpnState::Starting => self.start_ike(now, id),
                }
            }
        }
    }

    /// Another interface holds the x-MIP layer (outside, or asking the x-HA).
    fn xmip_held_by_other(&self, me: IfaceId) -> bool {
        self.ifaces.values().any(|i| {
            i.id != me
                && match i.phase {
                    Phase::Outside => true,
                    Phase::Detecting => i.xha.as_ref().is_some_and(|x| x.is_pending()),
                    Phase::Inside | Phase::Down => false,
                }
        })
    }

    fn xha_register(&mut self, now: Instant, wall: SystemTime, id: IfaceId) {
        let cfg = self.cfg.clone();
        if self.xmip_held_by_other(id) {
            self.iface(id).xha_failed = true;
            self.check_stuck(now, id);
            return;
        }
        let i = self.iface(id);
        let Some(a) = i.attach else { return };
        let Some(att) = Iface::xha_attachment(&cfg, a) else {
            return;
        };
        if let Some(x) = i.xha.as_mut() {
            x.register(now, wall, att);
        }
    }

    fn start_ike(&mut self, _now: Instant, id: IfaceId) {
        let local = match self.cfg.outside {
            Outside::Xmip { x_home_addr, .. } => Some(x_home_addr),
            Outside::Mobike => self.ifaces.get(&id).and_then(|i| i.address()),
        };
        let i = self.iface(id);
        let Some(local) = local else { return };
        i.vpn = VpnState::Starting;
        i.vpn_epoch = None;
        i.vpn_failed = false;
        self.actions
            .push_back(Action::StartIke { iface: id, local });
    }

    /// MN-6: tentatively outside; the i-HA is still asked for the detection
    /// period, IKE waits for it if configured.
    fn go_outside(&mut self, now: Instant, wall: SystemTime, id: IfaceId, reason: &'static str) {
        let cfg = self.cfg.clone();
        let i = self.iface(id);
        if i.direct.is_pending() && !cfg.detection_period.is_zero() {
            i.set(Timer::DetectEnd, now + cfg.detection_period);
        } else {
            i.direct.stop();
        }
        let hint_outside = i.hint_inside == Some(false);
        let vpn = i.vpn;
        let ep = i.epoch;
        if let Outside::Xmip { .. } = cfg.outside {
            match vpn {
                // MN-11: a move between external networks costs one x-HA
                // re-registration; the VPN (from the x-home address) stays.
                VpnState::Up { .. } => i.vpn_epoch = Some(ep),
                VpnState::None => {
                    let wait = cfg.ike_waits_for_detection
                        && !cfg.detection_period.is_zero()
                        && !hint_outside
                        && i.direct.is_pending();
                    if wait {
                        i.set(Timer::Ike, now + cfg.detection_period);
                    } else {
                        self.start_ike(now, id);
                    }
                }
                VpnState::Starting | VpnState::Updating { .. } => {}
            }
        }
        // The i-HA learns the TIA through the tunnel, unless it already knows it
        // (MN-14: it is told only when the TIA changes).
        let i = self.iface(id);
        if let VpnState::Up { tia } = i.vpn {
            let known = i.via_vpn.care_of() == Some(tia) && i.via_vpn.is_registered(now);
            if !known && !i.via_vpn.is_pending() {
                i.via_vpn
                    .register(now, wall, Iface::vpn_attachment(&cfg, tia));
            }
        }
        self.set_phase(id, Phase::Outside, reason);
    }

    /// Processes the outcomes of the interface's three clients.
    fn drain_clients(&mut self, now: Instant, wall: SystemTime, id: IfaceId) {
        let cfg = self.cfg.clone();
        loop {
            let Some(i) = self.ifaces.get_mut(&id) else {
                return;
            };
            if let Some((epoch, out)) = i.direct.poll_outcome(now) {
                if epoch != i.epoch {
                    continue; // a reply for a status that no longer holds
                }
                self.on_direct(now, wall, id, out);
                continue;
            }
            if let Some(ev) = i.xha.as_mut().and_then(RegistrationClient::poll_event) {
                self.on_xha(now, wall, id, ev);
                continue;
            }
            if let Some(ev) = i.via_vpn.poll_event() {
                let failed = matches!(
                    ev,
                    ClientEvent::Denied { .. }
                        | ClientEvent::TimedOut { .. }
                        | ClientEvent::Expired
                );
                if failed && i.phase == Phase::Outside {
                    i.set(Timer::VpnRegRetry, now + cfg.retry_after);
                }
                continue;
            }
            break;
        }
        self.collect(id);
    }

    fn on_direct(&mut self, now: Instant, wall: SystemTime, id: IfaceId, out: DirectOutcome) {
        let cfg = self.cfg.clone();
        let Some(i) = self.ifaces.get_mut(&id) else {
            return;
        };
        match out {
            DirectOutcome::Inside(p) => {
                // MN-4: inside, proven for this interface and epoch.
                let at = p.at();
                i.set(Timer::Rereg, at + (cfg.t_monitor - cfg.grace));
                i.set(Timer::TMonitor, at + cfg.t_monitor);
                i.stop(Timer::DetectEnd);
                i.stop(Timer::Ike);
                i.stop(Timer::XhaDelay);
                i.stop(Timer::Retry);
                i.stop(Timer::VpnRetry);
                i.stop(Timer::VpnRegRetry);
                i.proof = Some(p);
                self.stats.inside_proofs += 1;
                let was = i.phase;
                // MN-6: stop asking the x-HA; deregister if it accepted us.
                if let (Some(x), Some(a)) = (i.xha.as_mut(), i.attach) {
                    if x.is_registered(now) {
                        if let Some(att) = Iface::xha_attachment(&cfg, a) {
                            x.deregister(now, wall, att);
                        }
                    } else {
                        x.reset();
                    }
                }
                i.xha_epoch = None;
                i.via_vpn.reset();
                // MN-13: inside, only the inner MIP layer. mc may keep its IKE SA.
                if matches!(cfg.outside, Outside::Xmip { .. }) && i.vpn != VpnState::None {
                    i.vpn = VpnState::None;
                    i.vpn_epoch = None;
                    self.actions.push_back(Action::StopVpn { iface: id });
                }
                if was != Phase::Inside {
                    let reason = if was == Phase::Outside {
                        "late i-HA reply with TNC: switched to the i-HA directly"
                    } else {
                        "i-HA reply with TNC"
                    };
                    self.set_phase(id, Phase::Inside, reason);
                }
            }
            DirectOutcome::AcceptedWithoutTnc => {
                // MN-4: without TNC the VPN is never dropped; remove the plain
                // binding so that the i-HA does not send us plaintext.
                self.stats.accepted_without_tnc += 1;
                if i.phase == Phase::Inside {
                    self.status_change(now, wall, id, "i-HA reply without TNC");
                    return;
                }
                if let Some(a) = i.attach.filter(|a| a.inside_mode != Mode::H) {
                    let att = i.direct_attachment(&cfg, a);
                    let ep = i.epoch;
                    i.direct.cleanup(now, wall, ep, att);
                }
                i.direct_failed = true;
                self.check_stuck(now, id);
            }
            DirectOutcome::CleanedUp => {}
            DirectOutcome::Failed => {
                if i.phase == Phase::Inside {
                    // MN-5: failed re-registration: stop plaintext at once and
                    // restart detection.
                    self.status_change(now, wall, id, "re-registration with the i-HA failed");
                    return;
                }
                i.direct_failed = true;
                self.check_stuck(now, id);
            }
        }
    }

    fn on_xha(&mut self, now: Instant, wall: SystemTime, id: IfaceId, ev: ClientEvent) {
        let Some(i) = self.ifaces.get_mut(&id) else {
            return;
        };
        match ev {
            ClientEvent::Registered { .. } => {
                if i.phase == Phase::Inside {
                    return;
                }
                i.xha_epoch = Some(i.epoch);
                i.xha_failed = false;
                if i.phase == Phase::Detecting {
                    self.go_outside(now, wall, id, "x-HA replied");
                } else if let VpnState::Up { .. } = i.vpn {
                    // A renewal from the same care-of address keeps the path.
                    i.vpn_epoch = Some(i.epoch);
                }
            }
            ClientEvent::Denied { .. } | ClientEvent::TimedOut { .. } | ClientEvent::Expired => {
                match i.phase {
                    Phase::Detecting => {
                        i.xha_failed = true;
                        self.check_stuck(now, id);
                    }
                    Phase::Outside => self.status_change(now, wall, id, "x-HA registration lost"),
                    Phase::Inside | Phase::Down => {}
                }
            }
            ClientEvent::Deregistered | ClientEvent::Resynchronized { .. } => {}
        }
    }

    /// Nothing can answer in this round: try again later, gate closed.
    fn check_stuck(&mut self, now: Instant, id: IfaceId) {
        let retry = self.cfg.retry_after;
        let mobike = matches!(self.cfg.outside, Outside::Mobike);
        let i = self.iface(id);
        if i.phase != Phase::Detecting || !i.direct_failed {
            return;
        }
        let outside_failed = if mobike { i.vpn_failed } else { i.xha_failed };
        if outside_failed && i.timer(Timer::Retry).is_none() {
            i.set(Timer::Retry, now + retry);
        }
    }

    fn set_phase(&mut self, id: IfaceId, phase: Phase, reason: &'static str) {
        let cfg = self.cfg.clone();
        let i = self.iface(id);
        i.reason = reason;
        let mode = match phase {
            Phase::Inside => i.proof.as_ref().map(|p| p.mode()),
            Phase::Outside => Some(i.outside_mode(&cfg)),
            Phase::Down | Phase::Detecting => None,
        };
        let changed = i.phase != phase;
        i.phase = phase;
        if i.mode != mode {
            i.mode = mode;
            self.actions.push_back(Action::SetMode { iface: id, mode });
        }
        if changed {
            self.events.push_back(Event::PhaseChanged {
                iface: id,
                phase,
                reason,
            });
        }
    }

    /// Moves the clients' datagrams into the node's queue, labelled.
    fn collect(&mut self, id: IfaceId) {
        let Some(i) = self.ifaces.get_mut(&id) else {
            return;
        };
        let label = |t: mip4::Transmit, via: Via| Transmit {
            iface: id,
            via,
            src: t.src,
            dst: t.dst,
            payload: t.payload,
        };
        while let Some(t) = i.direct.poll_transmit() {
            self.transmits.push_back(label(t, Via::Plain));
        }
        if let Some(x) = i.xha.as_mut() {
            while let Some(t) = x.poll_transmit() {
                self.transmits.push_back(label(t, Via::Plain));
            }
        }
        while let Some(t) = i.via_vpn.poll_transmit() {
            self.transmits.push_back(label(t, Via::Vpn));
        }
    }

    /// After every input: collect datagrams, report gate changes.
    fn flush(&mut self, now: Instant) {
        let ids: Vec<IfaceId> = self.ifaces.keys().copied().collect();
        for id in ids {
            self.collect(id);
            let cfg = &self.cfg;
            let Some(i) = self.ifaces.get_mut(&id) else {
                continue;
            };
            let g = i.gate(cfg, now);
            if g != i.last_gate {
                if i.last_gate.is_open() && !g.is_open() {
                    self.stats.gate_closures += 1;
                }
                i.last_gate = g;
                self.events.push_back(Event::GateChanged {
                    iface: id,
                    gate: g,
                    reason: i.reason,
                });
            }
        }
    }
}
