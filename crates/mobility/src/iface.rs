//! One interface's state (MN-2: every interface is tracked separately) and
//! its data gate, computed from the state and `now`.

use mip4::client::{Attachment, RegistrationClient};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use crate::config::{Config, FaultCheck, Outside};
use crate::proof::{DirectIha, TncProof};
use crate::{Advertisement, Gate, IfaceId, Layer, Mode, Phase, Tunnel};

const MIP_PORT: u16 = 434;

/// The interface's timers, one slot each (an enum-indexed table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Timer {
    /// MN-5: re-register with the i-HA at T_MONITOR - grace.
    Rereg,
    /// MN-5: the proof runs out (the gate closes by itself; this wakes the
    /// shell so that it hears about it).
    TMonitor,
    /// MN-6: end of the detection period: stop asking the i-HA.
    DetectEnd,
    /// MN-6: IKE waited for the detection period.
    Ike,
    /// MN-8: an inside hint postponed the x-HA request.
    XhaDelay,
    /// Nothing answered: start detection again.
    Retry,
    /// The VPN went down outside: start IKE again.
    VpnRetry,
    /// The i-HA registration through the VPN failed: try again.
    VpnRegRetry,
    /// The foreign agent we use stops advertising.
    AgentExpiry,
    /// The shell could not send a request: send it again shortly.
    SendRetry,
}

pub(crate) const TIMERS: [Timer; 10] = [
    Timer::Rereg,
    Timer::TMonitor,
    Timer::DetectEnd,
    Timer::Ike,
    Timer::XhaDelay,
    Timer::Retry,
    Timer::VpnRetry,
    Timer::VpnRegRetry,
    Timer::AgentExpiry,
    Timer::SendRetry,
];

impl Timer {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Timer::Rereg => "re-registration (T_MONITOR - grace)",
            Timer::TMonitor => "T_MONITOR",
            Timer::DetectEnd => "end of detection period",
            Timer::Ike => "IKE after detection period",
            Timer::XhaDelay => "x-HA request after an inside hint",
            Timer::Retry => "detection retry",
            Timer::VpnRetry => "VPN retry",
            Timer::VpnRegRetry => "i-HA through VPN retry",
            Timer::AgentExpiry => "foreign agent advertisement lifetime",
            Timer::SendRetry => "request again after a failed send",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VpnState {
    None,
    Starting,
    /// A MOBIKE update is outstanding; the old TIA stays.
    Updating {
        tia: Ipv4Addr,
    },
    Up {
        tia: Ipv4Addr,
    },
}

/// The attachment chosen for the current epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Attach {
    pub(crate) care_of: Ipv4Addr,
    /// The foreign agent relaying our requests; `None` co-located (or at home).
    pub(crate) agent: Option<Ipv4Addr>,
    pub(crate) inside_mode: Mode,
}

#[derive(Debug, Clone)]
pub(crate) struct AgentSeen {
    pub(crate) adv: Advertisement,
    pub(crate) expires: Instant,
}

pub(crate) struct Iface {
    pub(crate) id: IfaceId,
    /// MN-3: bumped at every connection status change; proofs of an older epoch
    /// are void.
    pub(crate) epoch: u64,
    pub(crate) phase: Phase,
    pub(crate) reason: &'static str,
    pub(crate) carrier: bool,
    pub(crate) addrs: Vec<Ipv4Addr>,
    pub(crate) gateway: Option<(Ipv4Addr, [u8; 6])>,
    /// MN-8: Some(true) when a hint says inside, Some(false) outside.
    pub(crate) hint_inside: Option<bool>,
    pub(crate) agent: Option<AgentSeen>,
    pub(crate) attach: Option<Attach>,
    pub(crate) direct: DirectIha,
    pub(crate) direct_failed: bool,
    pub(crate) xha: Option<RegistrationClient>,
    /// The epoch in which the x-HA last accepted us.
    pub(crate) xha_epoch: Option<u64>,
    pub(crate) xha_failed: bool,
    pub(crate) via_vpn: RegistrationClient,
    pub(crate) vpn: VpnState,
    /// The epoch in which the VPN path was last shown to work (IKE up, MOBIKE
    /// answered, or the x-HA re-registered under a running VPN).
    pub(crate) vpn_epoch: Option<u64>,
    pub(crate) vpn_failed: bool,
    /// VPN clients that went down (or never came up) since the last one that
    /// came up: the next IKE waits [`ike_backoff`] after the previous start.
    pub(crate) ike_failures: u32,
    /// When the last IKE was commanded.
    pub(crate) ike_started: Option<Instant>,
    pub(crate) proof: Option<TncProof>,
    /// The shell reported the home agent's tunnel silent and a re-registration
    /// probes the binding: the gate is closed until a new proof arrives (a silent
    /// move onto a network that only looks inside stops plaintext within the
    /// shell's silence bound, not T_MONITOR).
    pub(crate) binding_silent: bool,
    pub(crate) timers: [Option<Instant>; 10],
    pub(crate) last_gate: Gate,
    /// Per `Via` (Plain, Vpn): a send failed and a prompt retry is due.
    pub(crate) send_failed: [bool; 2],
    /// Prompt retries used in this epoch (bounded by `Config::send_retry_max`).
    pub(crate) send_retries: u32,
    /// The tunnelling last reported per `Layer` (for `Event::TunnelChanged`).
    pub(crate) last_tunnel: [Option<Tunnel>; 3],
    pub(crate) mode: Option<Mode>,
    /// MN-2: outside with the VPN up while another interface is open inside:
    /// the TIA is not registered with the i-HA (see `MobileNode::vpn_standby`).
    pub(crate) standby: bool,
    /// MN-2: detecting while another interface held the x-MIP layer: the x-HA
    /// is asked as soon as that one lets go.
    pub(crate) xmip_waiting: bool,
}

impl Iface {
    pub(crate) fn timer(&self, t: Timer) -> Option<Instant> {
        self.timers[t as usize]
    }
    pub(crate) fn set(&mut self, t: Timer, at: Instant) {
        self.timers[t as usize] = Some(at);
    }
    pub(crate) fn stop(&mut self, t: Timer) {
        self.timers[t as usize] = None;
    }
    pub(crate) fn take_due(&mut self, t: Timer, now: Instant) -> bool {
        if self.timer(t).is_some_and(|at| at <= now) {
            self.stop(t);
            return true;
        }
        false
    }

    pub(crate) fn poll_timeout(&self) -> Option<(Instant, &'static str)> {
        let mut best: Option<(Instant, &'static str)> = None;
        let mut consider = |at: Option<Instant>, why: &'static str| {
            if let Some(at) = at {
                if best.is_none_or(|(b, _)| at < b) {
                    best = Some((at, why));
                }
            }
        };
        for t in TIMERS {
            consider(self.timer(t), t.name());
        }
        consider(self.direct.poll_timeout(), "i-HA request (plaintext)");
        if let Some(x) = &self.xha {
            consider(x.poll_timeout(), "x-HA request");
        }
        consider(
            self.via_vpn.poll_timeout(),
            "i-HA request (through the VPN)",
        );
        best
    }

    /// The usable co-located address added last: a DHCP client may add the new
    /// link's address before it removes the old link's, and the old one must not
    /// be used on the new link.
    pub(crate) fn address(&self) -> Option<Ipv4Addr> {
        self.addrs
            .iter()
            .rev()
            .copied()
            .find(|a| !a.is_unspecified())
    }

    /// The outside mode; `None` for `Outside::None`, which has no outside path.
    pub(crate) fn outside_mode(&self, cfg: &Config) -> Option<Mode> {
        match cfg.outside {
            Outside::Mobike => Some(Mode::Mc),
            Outside::Xmip { .. } => Some(if self.attach.is_some_and(|a| a.agent.is_some()) {
                Mode::Fvc
            } else {
                Mode::Cvc
            }),
            Outside::None => None,
        }
    }

    /// The tunnelling granted on `layer` at `now` (`None`: not registered).
    pub(crate) fn tunnel(&self, layer: Layer, now: Instant) -> Option<Tunnel> {
        let granted = match layer {
            Layer::IhaDirect => self.direct.udp_tunnel(now),
            Layer::Xha => self.xha.as_ref().and_then(|x| x.udp_tunnel(now)),
            Layer::IhaViaVpn => self.via_vpn.udp_tunnel(now),
        }?;
        Some(match granted {
            Some(keepalive) => Tunnel::Udp { keepalive },
            None => Tunnel::IpInIp,
        })
    }

    /// MN-9, MN-10, MN-14: the path through the VPN is proven for this epoch:
    /// the VPN is up and was shown to work since the last status change, the
    /// i-HA accepted the TIA, and (x-MIP flavour) the x-HA accepted us in this
    /// epoch.
    pub(crate) fn outside_proven(&self, cfg: &Config, now: Instant) -> bool {
        let VpnState::Up { tia } = self.vpn else {
            return false;
        };
        if self.vpn_epoch != Some(self.epoch) {
            return false;
        }
        if !self.via_vpn.is_registered(now) || self.via_vpn.care_of() != Some(tia) {
            return false;
        }
        match (&cfg.outside, &self.xha) {
            (Outside::Xmip { .. }, Some(x)) => {
                self.xha_epoch == Some(self.epoch) && x.is_registered(now)
            }
            (Outside::Xmip { .. }, None) => false,
            (Outside::Mobike, _) => true,
            // Fail closed: no outside path exists in this flavour.
            (Outside::None, _) => false,
        }
    }

    /// The data gate at `now`. Fail closed: every branch that is not proven
    /// ends in `Closed`.
    pub(crate) fn gate(&self, cfg: &Config, now: Instant) -> Gate {
        if cfg.faulty(FaultCheck::KeepProof) {
            // Negative control only: MN-3 broken, a status change does not close
            // the gate while the old proof is young.
            if let Some(p) = &self.proof {
                if p.iface() == self.id && now < p.at() + cfg.t_monitor {
                    return Gate::OpenInside(p.mode());
                }
            }
        }
        if self.phase == Phase::Inside && self.binding_silent {
            return match cfg.queue_limit {
                0 => Gate::Closed,
                limit => Gate::Queued { limit },
            };
        }
        if self.phase == Phase::Inside {
            if let Some(p) = &self.proof {
                let holds = if cfg.faulty(FaultCheck::IgnoreTMonitor) {
                    p.iface() == self.id && p.epoch() == self.epoch
                } else {
                    // MN-4 + MN-5: this interface, this epoch, younger than T_MONITOR.
                    p.holds(self.id, self.epoch, now, cfg.t_monitor)
                };
                if holds {
                    return Gate::OpenInside(p.mode());
                }
                // MN-5: past T_MONITOR, a re-registration is running: drop or queue.
                if cfg.queue_limit > 0 && p.epoch() == self.epoch {
                    return Gate::Queued {
                        limit: cfg.queue_limit,
                    };
                }
            }
            return Gate::Closed;
        }
        if self.phase == Phase::Outside && self.outside_proven(cfg, now) {
            if let Some(m) = self.outside_mode(cfg) {
                return Gate::OpenViaVpn(m);
            }
        }
        Gate::Closed
    }

    /// While the gate is open inside at `now`: the moment it may close without any
    /// input (the proof's T_MONITOR, the direct registration's expiry, whichever
    /// comes first). Every other change of the gate comes from an input, after
    /// which the shell asks again. `None` when it is not open inside, or under a
    /// negative-control fault (the shell then decides packet by packet).
    pub(crate) fn open_inside_until(&self, cfg: &Config, now: Instant) -> Option<Instant> {
        if cfg.faulty(FaultCheck::KeepProof) || cfg.faulty(FaultCheck::IgnoreTMonitor) {
            return None;
        }
        if !matches!(self.gate(cfg, now), Gate::OpenInside(_)) {
            return None;
        }
        let proof = self.proof.as_ref()?.at() + cfg.t_monitor;
        let registration = self.direct.registered_until()?;
        Some(proof.min(registration))
    }

    // Attachments for the three registration clients.

    pub(crate) fn direct_attachment(&self, cfg: &Config, a: Attach) -> Attachment {
        let i_ha = SocketAddrV4::new(cfg.i_ha, MIP_PORT);
        match (a.inside_mode, a.agent) {
            (Mode::H, _) => Attachment {
                care_of: cfg.home_addr,
                local: SocketAddrV4::new(cfg.home_addr, MIP_PORT),
                dest: i_ha,
                colocated: false,
            },
            (_, Some(agent)) => Attachment {
                care_of: a.care_of,
                local: SocketAddrV4::new(cfg.home_addr, MIP_PORT),
                dest: SocketAddrV4::new(agent, MIP_PORT),
                colocated: false,
            },
            (_, None) => Attachment {
                care_of: a.care_of,
                local: SocketAddrV4::new(a.care_of, MIP_PORT),
                dest: i_ha,
                colocated: true,
            },
        }
    }

    pub(crate) fn xha_attachment(cfg: &Config, a: Attach) -> Option<Attachment> {
        let Outside::Xmip {
            x_ha, x_home_addr, ..
        } = cfg.outside
        else {
            return None;
        };
        Some(match a.agent {
            Some(agent) => Attachment {
                care_of: a.care_of,
                local: SocketAddrV4::new(x_home_addr, MIP_PORT),
                dest: SocketAddrV4::new(agent, MIP_PORT),
                colocated: false,
            },
            None => Attachment {
                care_of: a.care_of,
                local: SocketAddrV4::new(a.care_of, MIP_PORT),
                dest: SocketAddrV4::new(x_ha, MIP_PORT),
                colocated: true,
            },
        })
    }

    pub(crate) fn vpn_attachment(cfg: &Config, tia: Ipv4Addr) -> Attachment {
        Attachment {
            care_of: tia,
            local: SocketAddrV4::new(tia, MIP_PORT),
            dest: SocketAddrV4::new(cfg.i_ha, MIP_PORT),
            colocated: true,
        }
    }
}

/// How long after the previous start a new IKE waits, after `failures` clients in a
/// row went down without coming up: none for the first (an x-HA or NAT that lost
/// our path is repaired at once), then 250 ms doubling up to 4 s, so a client that
/// cannot start (a missing binary, a config the client refuses, a gateway that is
/// down) is retried a few times a minute, not thousands of times a second.
pub(crate) fn ike_backoff(failures: u32) -> Duration {
    match failures {
        0 | 1 => Duration::ZERO,
        n => Duration::from_millis(250u64 << (n - 2).min(4)),
    }
}
