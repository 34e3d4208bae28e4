//! The mobile node's configuration, validated once by [`Config::validate`].

use mip4::auth::SecurityAssociation;
use mip4::replay::ReplayMethod;
use std::net::Ipv4Addr;
use std::time::Duration;

use crate::IfaceId;

/// How the node reaches the enterprise from outside (MN-1). There is no
/// "plaintext outside" variant: outside, user data always goes through the VPN
/// (MN-9, MN-10).
#[derive(Debug, Clone)]
pub enum Outside {
    /// RFC 5265 `cvc`/`fvc`: register with the external home agent, run IKE from
    /// the x-home address, then register the VPN inner address with the i-HA.
    Xmip {
        x_ha: Ipv4Addr,
        x_home_addr: Ipv4Addr,
        x_sa: SecurityAssociation,
    },
    /// MOBIKE draft `mc`: IKEv2 + MOBIKE from the interface's own address; no
    /// x-MIP layer.
    Mobike,
    /// No outside path at all (no VPN, no x-HA): plain i-MIP (h, c, f) wherever
    /// the i-HA answers through the interface WITH the Trusted Networks
    /// Configured extension (MN-4). Anywhere else the gate stays closed: a reply
    /// without TNC, or no reply, leaves the interface detecting and retrying
    /// (fail closed). Plaintext outside is impossible by construction: the only
    /// way to open a gate in plaintext is a `TncProof`, and with this flavour no
    /// other gate ever opens (`Gate::OpenViaVpn` needs a VPN, which is never
    /// started).
    None,
}

/// A deliberately broken rule, for the simulator's negative control only.
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// MN-3/MN-4 broken: a TNC proof survives a status change of its interface.
    KeepProofAcrossStatusChange,
    /// MN-5 broken: the inside gate ignores T_MONITOR.
    IgnoreTMonitor,
}

/// Mobile node settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub home_addr: Ipv4Addr,
    /// The internal home agent.
    pub i_ha: Ipv4Addr,
    pub i_sa: SecurityAssociation,
    pub nai: Option<String>,
    pub replay: ReplayMethod,
    pub outside: Outside,
    /// MN-5: longest time without a successful i-HA registration while inside.
    pub t_monitor: Duration,
    /// MN-5: re-register every `t_monitor - grace`.
    pub grace: Duration,
    /// MN-6: how long the i-HA is still tried after the x-HA (or the VPN
    /// gateway) answered. Zero allowed.
    pub detection_period: Duration,
    /// MN-6: whether IKE waits for the end of the detection period.
    pub ike_waits_for_detection: bool,
    /// MN-5: user packets queued per interface once T_MONITOR has passed while a
    /// re-registration is running; 0 drops them.
    pub queue_limit: usize,
    /// MN-2: interfaces in order of preference (inside beats outside first).
    /// Interfaces not listed come after, by id.
    pub interface_order: Vec<IfaceId>,
    /// Foreign agents that may be used at all (advertisements from others are
    /// counted and ignored). Empty: co-located care-of addresses only.
    pub trusted_agents: Vec<Ipv4Addr>,
    /// Use a trusted foreign agent even when the interface has an address.
    pub prefer_foreign_agent: bool,
    /// MN-8 hints: DHCP domains and default-gateway MACs known to be internal.
    pub internal_domains: Vec<String>,
    pub internal_gateway_macs: Vec<[u8; 6]>,
    /// MN-8: with an "inside" hint, the x-HA request waits this long.
    pub hint_xha_delay: Duration,
    /// Registration lifetime asked for, seconds.
    pub lifetime: u16,
    /// Ask the home agents for simultaneous bindings (the S bit), so that two
    /// connected interfaces both receive. Off by default: bindings of care-of
    /// addresses left behind would pile up until they expire (code 135); the
    /// latest registration then carries inbound traffic. Gates are unaffected.
    pub simultaneous_bindings: bool,
    /// MN-12: ask both MIP layers for RFC 3519 UDP tunnelling (`Some(true)`
    /// forces it); `None` leaves it to the home agent's NAT detection.
    pub udp_tunnel: Option<bool>,
    /// Ask the i-HA for reverse tunnelling (the T bit, RFC 3024) on the direct
    /// (inside) layer. The x-HA and the through-VPN registrations always ask for
    /// it (MN-14: the x-home address and the TIA must be reverse-tunnelled).
    pub reverse_tunnel: bool,
    /// Through a foreign agent (mode f, fvc), ask it for the encapsulating
    /// delivery style of reverse tunnelling (RFC 3024); passed to the i-HA and
    /// x-HA clients (it only goes out with reverse tunnelling via an agent).
    pub encapsulating_delivery: bool,
    pub initial_rto: Duration,
    pub max_rto: Duration,
    pub max_attempts: u32,
    /// After the shell reports that a request could not be sent
    /// (`MobileNode::handle_send_failed`, e.g. no route yet), send it again after
    /// this short delay instead of waiting for `initial_rto`.
    pub send_retry: Duration,
    /// At most this many such prompt retries per interface and status epoch;
    /// after that the ordinary retransmission schedule applies.
    pub send_retry_max: u32,
    /// After a detection round in which nothing answered, start again after this.
    pub retry_after: Duration,
    #[cfg(test)]
    pub(crate) fault: Option<Fault>,
}

/// Refused configurations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// T_MONITOR must exceed the grace period, and the grace must be non-zero.
    TMonitor,
    /// The retransmission schedule cannot finish within T_MONITOR - grace.
    RetransmitLongerThanGrace,
    MaxAttemptsZero,
    LifetimeZero,
    /// A duration longer than a day (timer arithmetic must never overflow).
    DurationTooLong(&'static str),
    /// `send_retry` must be non-zero and shorter than `initial_rto`.
    SendRetry,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ConfigError::TMonitor => "t_monitor must be larger than grace, and grace non-zero",
            ConfigError::RetransmitLongerThanGrace => {
                "initial_rto must be shorter than the grace period"
            }
            ConfigError::MaxAttemptsZero => "max_attempts must be at least 1",
            ConfigError::LifetimeZero => "lifetime must be at least 1 second",
            ConfigError::SendRetry => "send_retry must be non-zero and shorter than initial_rto",
            ConfigError::DurationTooLong(what) => {
                return write!(f, "{what} must not exceed one day");
            }
        })
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Defaults: T_MONITOR 60 s (MN-5), grace 10 s, detection period 2 s, IKE
    /// does not wait, no queue, no foreign agents.
    pub fn new(
        home_addr: Ipv4Addr,
        i_ha: Ipv4Addr,
        i_sa: SecurityAssociation,
        outside: Outside,
    ) -> Self {
        Config {
            home_addr,
            i_ha,
            i_sa,
            nai: None,
            replay: ReplayMethod::Timestamp,
            outside,
            t_monitor: Duration::from_secs(60),
            grace: Duration::from_secs(10),
            detection_period: Duration::from_secs(2),
            ike_waits_for_detection: false,
            queue_limit: 0,
            interface_order: Vec::new(),
            trusted_agents: Vec::new(),
            prefer_foreign_agent: false,
            internal_domains: Vec::new(),
            internal_gateway_macs: Vec::new(),
            hint_xha_delay: Duration::from_millis(500),
            lifetime: 600,
            simultaneous_bindings: false,
            udp_tunnel: None,
            reverse_tunnel: true,
            encapsulating_delivery: false,
            initial_rto: Duration::from_secs(1),
            max_rto: Duration::from_secs(4),
            max_attempts: 4,
            send_retry: Duration::from_millis(10),
            send_retry_max: 20,
            retry_after: Duration::from_secs(3),
            #[cfg(test)]
            fault: None,
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.grace.is_zero() || self.t_monitor <= self.grace {
            return Err(ConfigError::TMonitor);
        }
        if self.initial_rto >= self.grace {
            return Err(ConfigError::RetransmitLongerThanGrace);
        }
        if self.max_attempts == 0 {
            return Err(ConfigError::MaxAttemptsZero);
        }
        if self.lifetime == 0 {
            return Err(ConfigError::LifetimeZero);
        }
        if self.send_retry.is_zero() || self.send_retry >= self.initial_rto {
            return Err(ConfigError::SendRetry);
        }
        let day = Duration::from_secs(86_400);
        for (what, d) in [
            ("t_monitor", self.t_monitor),
            ("detection_period", self.detection_period),
            ("hint_xha_delay", self.hint_xha_delay),
            ("max_rto", self.max_rto),
            ("retry_after", self.retry_after),
        ] {
            if d > day {
                return Err(ConfigError::DurationTooLong(what));
            }
        }
        Ok(())
    }

    /// MN-7: the i-HA and x-HA share an address: always outside, no detection.
    pub fn same_home_agents(&self) -> bool {
        matches!(self.outside, Outside::Xmip { x_ha, .. } if x_ha == self.i_ha)
    }

    pub(crate) fn faulty(&self, _f: FaultCheck) -> bool {
        #[cfg(test)]
        {
            return match _f {
                FaultCheck::KeepProof => self.fault == Some(Fault::KeepProofAcrossStatusChange),
                FaultCheck::IgnoreTMonitor => self.fault == Some(Fault::IgnoreTMonitor),
            };
        }
        #[allow(unreachable_code)]
        false
    }
}

/// Which fault a rule asks about (always false outside tests).
#[derive(Clone, Copy)]
pub(crate) enum FaultCheck {
    KeepProof,
    IgnoreTMonitor,
}
