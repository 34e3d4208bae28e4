//! Detection (RFC 5265 section 3.3) and the transitions of one interface:
//! status changes, the parallel i-HA/x-HA requests, going outside, and the
//! outcomes of the three registration clients.

use mip4::client::{ClientEvent, RegistrationClient};
use std::time::{Instant, SystemTime};

use crate::config::FaultCheck;
use crate::iface::{Attach, Iface, Timer, VpnState};
use crate::node::MobileNode;
use crate::proof::DirectOutcome;
use crate::{Action, Event, IfaceId, Mode, Outside, Phase};

impl MobileNode {
    /// MN-3: a connection status change: the gate closes at once (the epoch
    /// moves, every proof of the old one is void), queued data is dropped,
    /// detection starts again.
    pub(crate) fn status_change(
        &mut self,
        now: Instant,
        wall: SystemTime,
        id: IfaceId,
        reason: &'static str,
    ) {
        self.stats.status_changes += 1;
        let keep = self.cfg.faulty(FaultCheck::KeepProof);
        let i = self.iface(id);
        i.epoch += 1;
        i.send_retries = 0;
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
    pub(crate) fn restart(
        &mut self,
        now: Instant,
        wall: SystemTime,
        id: IfaceId,
        reason: &'static str,
    ) {
        let cfg = self.cfg.clone();
        self.stats.detections += 1;
        let keep_proof = cfg.faulty(FaultCheck::KeepProof);
        let i = self.iface(id);
        i.reason = reason;
        if !keep_proof {
            i.proof = None;
        }
        i.binding_silent = false;
        for t in [
            Timer::Rereg,
            Timer::TMonitor,
            Timer::DetectEnd,
            Timer::Ike,
            Timer::XhaDelay,
            Timer::Retry,
            Timer::VpnRegRetry,
            // The round's requests are sent afresh below; a retry of the old
            // ones would only add a duplicate.
            Timer::SendRetry,
        ] {
            i.stop(t);
        }
        i.send_failed = [false; 2];
        i.xmip_waiting = false;
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
                // checks for inside, and asks the x-HA as soon as the holder
                // lets go (see `MobileNode::release_xmip`).
                i.xha_failed = true;
                i.xmip_waiting = true;
            }
            Outside::Xmip { .. } => {
                // MN-8: an inside hint may postpone the x-HA request, never skip it.
                if i.hint_inside == Some(true) && !cfg.same_home_agents() {
                    i.set(Timer::XhaDelay, now + cfg.hint_xha_delay);
                } else {
                    self.xha_register(now, wall, id);
                }
            }
            // Fail closed: only the direct i-HA request; without TNC the round
            // fails and is retried, the gate never opens.
            Outside::None => i.xha_failed = true,
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

    /// Whether interface `id` holds the x-MIP layer: outside, or asking the x-HA.
    pub(crate) fn holds_xmip(&self, id: IfaceId) -> bool {
        self.ifaces.get(&id).is_some_and(|i| match i.phase {
            Phase::Outside => true,
            Phase::Detecting => i.xha.as_ref().is_some_and(|x| x.is_pending()),
            Phase::Inside | Phase::Down => false,
        })
    }

    /// Another interface holds the x-MIP layer (outside, or asking the x-HA).
    pub(crate) fn xmip_held_by_other(&self, me: IfaceId) -> bool {
        self.ifaces
            .keys()
            .any(|id| *id != me && self.holds_xmip(*id))
    }

    pub(crate) fn xha_register(&mut self, now: Instant, wall: SystemTime, id: IfaceId) {
        let cfg = self.cfg.clone();
        if self.xmip_held_by_other(id) {
            self.iface(id).xha_failed = true;
            self.iface(id).xmip_waiting = true;
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

    pub(crate) fn start_ike(&mut self, now: Instant, id: IfaceId) {
        let local = match self.cfg.outside {
            Outside::Xmip { x_home_addr, .. } => Some(x_home_addr),
            Outside::Mobike => self.ifaces.get(&id).and_then(|i| i.address()),
            Outside::None => None,
        };
        let i = self.iface(id);
        let Some(local) = local else { return };
        if let Some(t) = i.ike_started {
            let at = t + crate::iface::ike_backoff(i.ike_failures);
            if now < at {
                i.vpn = VpnState::None;
                i.set(Timer::VpnRetry, at);
                return;
            }
        }
        i.ike_started = Some(now);
        i.vpn = VpnState::Starting;
        i.vpn_epoch = None;
        i.vpn_failed = false;
        self.actions
            .push_back(Action::StartIke { iface: id, local });
    }

    /// MN-6: tentatively outside; the i-HA is still asked for the detection
    /// period, IKE waits for it if configured.
    pub(crate) fn go_outside(
        &mut self,
        now: Instant,
        wall: SystemTime,
        id: IfaceId,
        reason: &'static str,
    ) {
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
        // (MN-14: it is told only when the TIA changes), or another interface
        // holds the i-HA's binding inside (MN-2, see `vpn_standby`).
        let standby = self.vpn_standby(id, now);
        let i = self.iface(id);
        if let VpnState::Up { tia } = i.vpn {
            let known = i.via_vpn.care_of() == Some(tia) && i.via_vpn.is_registered(now);
            if !known && !standby {
                // A request still out went by the old path: again, at once.
                if !i.via_vpn.resend_now(now, wall) {
                    i.via_vpn
                        .register(now, wall, Iface::vpn_attachment(&cfg, tia));
                }
            }
        }
        self.set_phase(id, Phase::Outside, reason);
    }

    /// Processes the outcomes of the interface's three clients.
    pub(crate) fn drain_clients(&mut self, now: Instant, wall: SystemTime, id: IfaceId) {
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
                i.binding_silent = false;
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
                // MN-6: if the TIA was (being) registered through the tunnel, the
                // i-HA may process that request after the direct one (both waited
                // in its socket while it was silent) and end bound to the TIA.
                let told_via_vpn = i.via_vpn.is_pending() || i.via_vpn.is_registered(now);
                i.via_vpn.reset();
                // MN-13: inside, only the inner MIP layer. mc could keep its IKE SA,
                // but a client left running inside keeps the inside address and
                // sends from it on the next network before its MOBIKE update (the
                // kernel's ARP then names an intranet address outside): stopped too.
                if !matches!(cfg.outside, Outside::None) && i.vpn != VpnState::None {
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
                if was == Phase::Outside && told_via_vpn {
                    // One direct re-registration now, processed after anything
                    // that still waits there, leaves the binding on this link.
                    self.iface(id).set(Timer::Rereg, now);
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
                if i.phase == Phase::Detecting {
                    i.reason = match cfg.outside {
                        Outside::None => {
                            "i-HA reply without TNC: not inside, and no outside path is configured"
                        }
                        _ => "i-HA reply without TNC: not inside",
                    };
                }
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
    pub(crate) fn check_stuck(&mut self, now: Instant, id: IfaceId) {
        let retry = self.cfg.retry_after;
        let outside = self.cfg.outside.clone();
        let i = self.iface(id);
        if i.phase != Phase::Detecting || !i.direct_failed {
            return;
        }
        let outside_failed = match outside {
            Outside::Mobike => i.vpn_failed,
            Outside::Xmip { .. } => i.xha_failed,
            Outside::None => true,
        };
        if outside_failed && i.timer(Timer::Retry).is_none() {
            i.set(Timer::Retry, now + retry);
        }
    }

    pub(crate) fn set_phase(&mut self, id: IfaceId, phase: Phase, reason: &'static str) {
        let cfg = self.cfg.clone();
        let i = self.iface(id);
        i.reason = reason;
        let mode = match phase {
            Phase::Inside => i.proof.as_ref().map(|p| p.mode()),
            Phase::Outside => i.outside_mode(&cfg),
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
}
