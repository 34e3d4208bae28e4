//! [`MobileNode`]: the interfaces, their detection (RFC 5265 section 3.3) and
//! the composition of the registration clients.

use mip4::client::{ClientConfig, RegistrationClient};
use mip4::wire::RegistrationReply;
use std::collections::{BTreeMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddrV4};

use std::time::{Instant, SystemTime};

use crate::config::{Config, ConfigError, Outside};
use crate::iface::{Iface, Timer, VpnState, TIMERS};
use crate::proof::DirectIha;
use crate::{
    Action, Advertisement, Attachment, Deadline, Event, Gate, IfaceId, Layer, LinkEvent, Phase,
    Transmit, Tunnel, Via, VpnEvent,
};

fn via_index(via: Via) -> usize {
    match via {
        Via::Plain => 0,
        Via::Vpn => 1,
    }
}

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
    /// Re-registrations because the shell reported a silent binding.
    pub silence_probes: u64,
    /// Re-registrations because the foreign agent in use rebooted.
    pub agent_reboots: u64,
    /// Registration requests handed to the shell (first sends and
    /// retransmissions, every layer; summed over the clients).
    pub requests_sent: u64,
    /// Of those, retransmissions after a timeout.
    pub retransmissions: u64,
    /// MN-4: plaintext replies on the direct i-HA path refused as a proof:
    /// forged (bad authenticator), unsolicited or replayed (Identification does
    /// not match), malformed, or carrying a stale home-agent time. Accepted
    /// proofs are `inside_proofs`; accepted replies without TNC are
    /// `accepted_without_tnc`.
    pub proofs_refused: u64,
    /// Replies refused by any of the registration clients (the direct ones
    /// included), for the same reasons.
    pub replies_refused: u64,
    /// The shell reported a request it could not send (`handle_send_failed`).
    pub send_failures: u64,
    /// Requests sent again promptly after a failed send.
    pub send_retries: u64,
    /// Authentic replies that accepted a request (codes 0 and 1), every layer
    /// (summed over the clients).
    pub replies_accepted: u64,
    /// Authentic replies that denied a request, every layer.
    pub replies_denied: u64,
}

/// The mobile node's decision engine. See the crate documentation.
///
/// Inputs (`handle_*`) take `now`; outputs are drained in this order after
/// every input: [`poll_transmit`](Self::poll_transmit),
/// [`poll_action`](Self::poll_action), [`poll_event`](Self::poll_event), then
/// one timer is armed at [`poll_timeout`](Self::poll_timeout). The shell asks
/// [`gate`](Self::gate) for every user packet.
pub struct MobileNode {
    pub(crate) cfg: Config,
    pub(crate) seed: [u8; 32],
    pub(crate) ifaces: BTreeMap<IfaceId, Iface>,
    pub(crate) transmits: VecDeque<Transmit>,
    pub(crate) actions: VecDeque<Action>,
    pub(crate) events: VecDeque<Event>,
    pub(crate) stats: Stats,
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

    /// The counters (the per-client ones summed at the time of the call).
    pub fn stats(&self) -> Stats {
        let mut s = self.stats.clone();
        for i in self.ifaces.values() {
            let refused = |c: &mip4::client::ClientStats| c.drops.values().sum::<u64>();
            let mut add = |c: &mip4::client::ClientStats| {
                s.requests_sent += c.requests;
                s.retransmissions += c.retransmissions;
                s.replies_refused += refused(c);
                for (code, n) in &c.replies_by_code {
                    if *code <= 1 {
                        s.replies_accepted += n;
                    } else {
                        s.replies_denied += n;
                    }
                }
            };
            add(i.direct.client_stats());
            if let Some(x) = &i.xha {
                add(x.stats());
            }
            add(i.via_vpn.stats());
            s.proofs_refused += refused(i.direct.client_stats()) + i.direct.stale_replies;
            s.replies_refused += i.direct.stale_replies;
        }
        s
    }

    /// The tunnelling the home agent granted on one layer of `iface` at `now`:
    /// `None` when that layer is not registered (at home, mode h, the direct
    /// layer is deregistered: no tunnel). Inside (h, c, f) user data uses
    /// `Layer::IhaDirect`; outside, the VPN's outer path uses `Layer::Xha`
    /// (cvc, fvc) and the traffic inside the VPN `Layer::IhaViaVpn`. With
    /// `Tunnel::Udp { keepalive }` the shell sends RFC 3519 UDP-encapsulated
    /// data to port 434 and a keepalive at least every `keepalive` seconds.
    pub fn tunnel(&self, iface: IfaceId, layer: Layer, now: Instant) -> Option<Tunnel> {
        self.ifaces.get(&iface).and_then(|i| i.tunnel(layer, now))
    }

    /// The data gate of `iface` at `now` (closed for an unknown interface).
    pub fn gate(&self, iface: IfaceId, now: Instant) -> Gate {
        self.ifaces
            .get(&iface)
            .map_or(Gate::Closed, |i| i.gate(&self.cfg, now))
    }

    /// While `gate(iface, now)` is open inside: the moment it may close with no
    /// input at all (T_MONITOR, the registration's expiry). Until then it changes
    /// only through a `handle_*` call, after which the shell asks again; a shell
    /// that hands the decision to a cache (the kernel's encapsulation) lets it
    /// expire then. `None` when the gate is not open inside.
    pub fn gate_open_until(&self, iface: IfaceId, now: Instant) -> Option<Instant> {
        self.ifaces
            .get(&iface)
            .and_then(|i| i.open_inside_until(&self.cfg, now))
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

    /// The attachment chosen for the interface's current epoch: the care-of
    /// address (the home address at home, mode h), the foreign agent relaying
    /// the requests (mode f, fvc) and the inside mode it would give. The shell
    /// binds its sockets and agent routes to it; `None` while down.
    pub fn attachment(&self, iface: IfaceId) -> Option<Attachment> {
        self.ifaces
            .get(&iface)
            .and_then(|i| i.attach)
            .map(|a| Attachment {
                care_of: a.care_of,
                agent: a.agent,
                inside_mode: a.inside_mode,
            })
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

    pub(crate) fn iface(&mut self, id: IfaceId) -> &mut Iface {
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
            let client = |home: Ipv4Addr,
                          ha: Ipv4Addr,
                          sa: &mip4::auth::SecurityAssociation,
                          reverse: bool| {
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
                // MN-14: reverse tunnel whenever MIP runs inside IPsec (forced
                // for the x-HA and through-VPN layers); configurable inside.
                c.reverse_tunnel = reverse;
                // RFC 3024 encapsulating delivery, via a foreign agent only.
                c.encapsulating_delivery = cfg.encapsulating_delivery;
                // MN-12: RFC 3519 on both MIP layers.
                c.udp_tunnel = cfg.udp_tunnel;
                c
            };
            let xha = match &cfg.outside {
                Outside::Xmip {
                    x_ha,
                    x_home_addr,
                    x_sa,
                } => Some(RegistrationClient::new(
                    client(*x_home_addr, *x_ha, x_sa, true),
                    sub(2),
                )),
                Outside::Mobike | Outside::None => None,
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
                direct: DirectIha::new(
                    id,
                    client(cfg.home_addr, cfg.i_ha, &cfg.i_sa, cfg.reverse_tunnel),
                    sub(1),
                ),
                direct_failed: false,
                xha,
                xha_epoch: None,
                xha_failed: false,
                via_vpn: RegistrationClient::new(
                    client(cfg.home_addr, cfg.i_ha, &cfg.i_sa, true),
                    sub(3),
                ),
                vpn: VpnState::None,
                vpn_epoch: None,
                vpn_failed: false,
                ike_failures: 0,
                ike_started: None,
                proof: None,
                binding_silent: false,
                timers: [None; 10],
                last_gate: Gate::Closed,
                send_failed: [false; 2],
                send_retries: 0,
                last_tunnel: [None; 3],
                mode: None,
                standby: false,
                xmip_waiting: false,
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
        self.flush(now, wall);
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
        // RFC 5944 3.6.1.2: a sequence number below 256 after a higher one from
        // the agent we use means it rebooted and forgot us: our binding through it
        // is gone, so this is a status change (gate closed, registered again).
        let rebooted = using
            && i.agent.as_ref().is_some_and(|g| {
                g.adv.agent == adv.agent && adv.sequence < g.adv.sequence && adv.sequence < 256
            });
        i.agent = Some(crate::iface::AgentSeen { adv, expires });
        if rebooted && i.carrier {
            self.stats.agent_reboots += 1;
            self.status_change(now, wall, iface, "foreign agent rebooted");
            self.flush(now, wall);
            return;
        }
        let i = self.iface(iface);
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
        self.flush(now, wall);
    }

    /// The shell saw user data leave `iface` through the home agent's tunnel
    /// while nothing came back, and a liveness echo inside the tunnel went
    /// unanswered (or, behind a NAT, an RFC 3519 keepalive): the binding may be
    /// gone (a home agent restarted without its state, a NAT that lost its
    /// mapping). Inside, this re-registers at once, at most one request at a
    /// time, and closes the gate (or queues) until that re-registration proves
    /// the link again: after a silent move onto a network that only looks like
    /// the inside, plaintext stops within the shell's silence bound instead of
    /// T_MONITOR. A failed re-registration is a status change (MN-5). Elsewhere
    /// it does nothing.
    pub fn handle_binding_silent(&mut self, now: Instant, wall: SystemTime, iface: IfaceId) {
        let cfg = self.cfg.clone();
        let standby = self.vpn_standby(iface, now);
        let Some(i) = self.ifaces.get_mut(&iface) else {
            return;
        };
        if i.phase == Phase::Inside && i.attach.is_some() {
            // Closed at once, whether or not a request is already out (a periodic
            // re-registration may be): the answer to it reopens the gate.
            i.binding_silent = true;
        }
        if let (Phase::Inside, Some(a), true) = (i.phase, i.attach, i.direct.is_pending()) {
            // A renewal is already out: its answer decides, as a probe's would
            // (without this the renewal's reply reopened nothing, and the gate
            // stayed closed until T_MONITOR).
            i.direct.adopt_pending(i.epoch, a.inside_mode);
        } else if let (Phase::Inside, Some(a)) = (i.phase, i.attach) {
            let att = i.direct_attachment(&cfg, a);
            let ep = i.epoch;
            i.direct.probe(now, wall, ep, a.inside_mode, att);
            self.stats.silence_probes += 1;
        }
        if i.phase == Phase::Outside {
            // Outside, the layers under the user data may have lost their state (an
            // x-HA or i-HA restarted without it): register again with the x-HA and,
            // through the VPN, with the i-HA. The gate stays: everything is
            // encrypted, and a failure is a status change.
            let mut probed = false;
            if let VpnState::Up { tia } = i.vpn {
                if !i.via_vpn.is_pending() && !standby {
                    i.via_vpn
                        .register(now, wall, Iface::vpn_attachment(&cfg, tia));
                    probed = true;
                }
            }
            let xha_idle = i.xha.as_ref().is_some_and(|x| !x.is_pending());
            if xha_idle {
                self.xha_register(now, wall, iface);
                probed = true;
            }
            if probed {
                self.stats.silence_probes += 1;
            }
        }
        self.flush(now, wall);
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
            Outside::Mobike | Outside::None => None,
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
        self.flush(now, wall);
    }

    /// The VPN layer of `iface` changed.
    /// With `Outside::None` there is no VPN: the event is ignored.
    pub fn handle_vpn(&mut self, now: Instant, wall: SystemTime, iface: IfaceId, ev: VpnEvent) {
        let cfg = self.cfg.clone();
        if matches!(cfg.outside, Outside::None) {
            return;
        }
        let standby = self.vpn_standby(iface, now);
        let i = self.iface(iface);
        let mut outside_now = false;
        match ev {
            VpnEvent::Up { tia } => {
                i.vpn = VpnState::Up { tia };
                i.vpn_failed = false;
                i.ike_failures = 0;
                i.vpn_epoch = Some(i.epoch);
                // MN-14: the i-HA hears only when the TIA changes.
                let registered = i.via_vpn.is_registered(now) && i.via_vpn.care_of() == Some(tia);
                if !registered && i.phase != Phase::Inside && !standby {
                    i.via_vpn
                        .register(now, wall, Iface::vpn_attachment(&cfg, tia));
                }
                outside_now = matches!(cfg.outside, Outside::Mobike);
            }
            VpnEvent::Down => {
                i.ike_failures = i.ike_failures.saturating_add(1);
                i.vpn = VpnState::None;
                i.vpn_epoch = None;
                i.via_vpn.reset();
                i.vpn_failed = true;
                if i.phase == Phase::Outside {
                    // The path under the VPN may be what failed (an x-HA that lost
                    // our binding, a NAT that changed): detect again from scratch,
                    // which registers with the x-HA before IKE starts over.
                    self.status_change(now, wall, iface, "VPN down");
                    self.drain_clients(now, wall, iface);
                    self.flush(now, wall);
                    return;
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
        self.flush(now, wall);
    }

    /// The shell could not send a request `poll_transmit` gave it for `iface`
    /// and `via` (for example: no route on the interface yet). The node sends
    /// the outstanding requests of that path again after `Config::send_retry`
    /// (at most `send_retry_max` times per interface and status epoch), instead
    /// of waiting for the first retransmission (`initial_rto`). The gate is
    /// unaffected (a request proves nothing until it is answered).
    pub fn handle_send_failed(&mut self, now: Instant, iface: IfaceId, via: Via) {
        let cfg = &self.cfg;
        self.stats.send_failures += 1;
        let Some(i) = self.ifaces.get_mut(&iface) else {
            return;
        };
        if i.send_retries >= cfg.send_retry_max {
            return; // the ordinary retransmission schedule takes over
        }
        i.send_failed[via_index(via)] = true;
        if i.timer(Timer::SendRetry).is_none() {
            i.set(Timer::SendRetry, now + cfg.send_retry);
        }
    }

    /// The shell now has a route on `iface`: a prompt retry that is waiting
    /// after `handle_send_failed` goes out at once.
    pub fn handle_route_ready(&mut self, now: Instant, wall: SystemTime, iface: IfaceId) {
        let Some(i) = self.ifaces.get_mut(&iface) else {
            return;
        };
        if i.timer(Timer::SendRetry).is_some() {
            i.set(Timer::SendRetry, now);
            self.run_timers(now, wall, iface);
            self.flush(now, wall);
        }
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
        self.flush(now, wall);
    }

    fn run_timers(&mut self, now: Instant, wall: SystemTime, id: IfaceId) {
        let cfg = self.cfg.clone();
        for t in TIMERS {
            let standby = self.vpn_standby(id, now);
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
                    // A start held back by `ike_backoff`; a status change since
                    // then stopped this timer and decided again.
                    if matches!(i.phase, Phase::Outside | Phase::Detecting)
                        && i.vpn == VpnState::None
                    {
                        self.start_ike(now, id);
                    }
                }
                Timer::XhaDelay => self.xha_register(now, wall, id),
                Timer::VpnRegRetry => {
                    if let (Phase::Outside, VpnState::Up { tia }, false) = (i.phase, i.vpn, standby)
                    {
                        i.via_vpn
                            .register(now, wall, Iface::vpn_attachment(&cfg, tia));
                    }
                }
                Timer::Retry => {
                    // A retry is not a change: the reason of the failed round stays.
                    let why = i.reason;
                    self.restart(now, wall, id, why)
                }
                Timer::AgentExpiry => self.status_change(now, wall, id, "foreign agent gone"),
                Timer::SendRetry => {
                    let [plain, vpn] = std::mem::take(&mut i.send_failed);
                    let mut sent = 0u64;
                    if plain {
                        sent += u64::from(i.direct.resend_now(now, wall));
                        if let Some(x) = i.xha.as_mut() {
                            sent += u64::from(x.resend_now(now, wall));
                        }
                    }
                    if vpn {
                        sent += u64::from(i.via_vpn.resend_now(now, wall));
                    }
                    if sent > 0 {
                        i.send_retries += 1;
                    }
                    self.stats.send_retries += sent;
                }
            }
        }
    }

    /// Moves the clients' datagrams into the node's queue, labelled.
    pub(crate) fn collect(&mut self, id: IfaceId) {
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

    /// MN-2: the i-HA holds one binding for the home address (unless
    /// `simultaneous_bindings`), and inbound user data follows it. An interface
    /// outside with its VPN up is on standby while another interface is open
    /// inside: it does not register its TIA with the i-HA (that would take the
    /// binding off the inside interface), and its gate stays closed.
    pub(crate) fn vpn_standby(&self, me: IfaceId, now: Instant) -> bool {
        !self.cfg.simultaneous_bindings
            && self
                .ifaces
                .values()
                .any(|i| i.id != me && matches!(i.gate(&self.cfg, now), crate::Gate::OpenInside(_)))
    }

    /// MN-2: the i-HA's binding follows the preferred interface. While one is
    /// open inside, an outside interface forgets its TIA registration (the
    /// inside registration replaced it at the i-HA); once none is, an outside
    /// interface with its VPN up registers its TIA through the tunnel again.
    fn reconcile_bindings(&mut self, now: Instant, wall: SystemTime) {
        let cfg = self.cfg.clone();
        let ids: Vec<IfaceId> = self.ifaces.keys().copied().collect();
        for id in ids {
            let standby = self.vpn_standby(id, now);
            let Some(i) = self.ifaces.get_mut(&id) else {
                continue;
            };
            let VpnState::Up { tia } = i.vpn else {
                continue;
            };
            if i.phase != Phase::Outside {
                continue;
            }
            let held = i.via_vpn.is_pending()
                || (i.via_vpn.is_registered(now) && i.via_vpn.care_of() == Some(tia));
            if standby {
                if held || i.via_vpn.care_of().is_some() {
                    i.via_vpn.reset();
                    i.stop(Timer::VpnRegRetry);
                    while i.via_vpn.poll_transmit().is_some() {}
                }
                if !i.standby {
                    i.standby = true;
                    i.reason = "standby: the i-HA binding is on an interface inside";
                }
            } else if i.standby && !held {
                i.standby = false;
                i.via_vpn
                    .register(now, wall, Iface::vpn_attachment(&cfg, tia));
                i.reason = "no interface inside any more: TIA registered through the VPN";
            }
        }
    }

    /// MN-2: the x-MIP layer (the x-home address) exists once. An interface
    /// that found it held by another while detecting asks the x-HA the moment
    /// that one lets go (went down, or inside), instead of after its own round of
    /// i-HA retransmissions.
    fn release_xmip(&mut self, now: Instant, wall: SystemTime) {
        let ids: Vec<IfaceId> = self.ifaces.keys().copied().collect();
        for id in ids {
            let free = !self.xmip_held_by_other(id);
            let Some(i) = self.ifaces.get_mut(&id) else {
                continue;
            };
            if i.xmip_waiting && free && i.phase == Phase::Detecting {
                i.xmip_waiting = false;
                i.xha_failed = false;
                self.xha_register(now, wall, id);
            }
        }
    }

    /// After every input: collect datagrams, report gate and tunnel changes.
    fn flush(&mut self, now: Instant, wall: SystemTime) {
        self.release_xmip(now, wall);
        self.reconcile_bindings(now, wall);
        let ids: Vec<IfaceId> = self.ifaces.keys().copied().collect();
        for id in ids {
            self.collect(id);
            let cfg = &self.cfg;
            let Some(i) = self.ifaces.get_mut(&id) else {
                continue;
            };
            for layer in [Layer::IhaDirect, Layer::Xha, Layer::IhaViaVpn] {
                let t = i.tunnel(layer, now);
                let last = &mut i.last_tunnel[layer as usize];
                if *last != t {
                    *last = t;
                    self.events.push_back(Event::TunnelChanged {
                        iface: id,
                        layer,
                        tunnel: t,
                    });
                }
            }
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
