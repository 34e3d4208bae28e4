//! Ground truth and the properties P1-P4, kept by the simulator, not the core.

use std::fmt;
use std::time::{Duration, Instant};

/// A property violation, with enough to understand it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Violation {
    pub(crate) property: &'static str,
    pub(crate) at: Duration,
    pub(crate) iface: u32,
    pub(crate) detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} at {:.3}s on iface {}: {}",
            self.property,
            self.at.as_secs_f64(),
            self.iface,
            self.detail
        )
    }
}

/// What the simulator knows about one interface.
#[derive(Debug, Clone, Default)]
pub(crate) struct Truth {
    /// The last signaled status change (link event).
    pub(crate) changed_at: Option<Instant>,
    /// The last genuine i-HA reply with TNC delivered in plaintext on this
    /// interface (from the real i-HA, for this interface's own request).
    pub(crate) last_tnc: Option<Instant>,
    /// The last time the VPN path was shown to work after a change: IKE done,
    /// MOBIKE answered, or (x-MIP) a genuine x-HA acceptance under a live SA.
    pub(crate) vpn_ok: Option<Instant>,
    /// The last silent network change (no link event).
    pub(crate) silent_at: Option<Instant>,
    /// P4: when the current connected segment began, and whether the gate has
    /// opened since.
    pub(crate) segment: Option<(Instant, bool)>,
    pub(crate) first_open: Option<Duration>,
    /// x-MIP: during this segment another interface held the outside path.
    pub(crate) excused: bool,
}

/// Checks for one user packet that the core let out.
pub(crate) struct Check<'a> {
    pub(crate) now: Instant,
    pub(crate) rel: Duration,
    pub(crate) iface: u32,
    pub(crate) truth: &'a Truth,
    pub(crate) t_monitor: Duration,
}

impl Check<'_> {
    fn v(&self, property: &'static str, detail: String) -> Violation {
        Violation {
            property,
            at: self.rel,
            iface: self.iface,
            detail,
        }
    }

    /// P1/P2/P3 for a plaintext packet.
    pub(crate) fn plain(&self, on_inside_net: bool, silent_grace: bool) -> Option<Violation> {
        let Some(p) = self.truth.last_tnc else {
            return Some(self.v("P1", "plaintext without any i-HA TNC reply".into()));
        };
        if self.truth.changed_at.is_some_and(|c| c >= p) {
            return Some(self.v(
                "P2",
                "plaintext after a status change, before a new TNC reply".into(),
            ));
        }
        if self.now.duration_since(p) >= self.t_monitor {
            return Some(self.v(
                "P3",
                format!(
                    "plaintext {:.3}s after the last TNC reply (T_MONITOR {:?})",
                    self.now.duration_since(p).as_secs_f64(),
                    self.t_monitor
                ),
            ));
        }
        // Ground truth: plaintext on an outside network is only tolerated after a
        // silent move (RFC 5265 3.2.4: bounded by T_MONITOR, checked above).
        if !on_inside_net && !silent_grace {
            return Some(self.v("P1", "plaintext on an outside network".into()));
        }
        None
    }

    /// P1/P2 for a packet through the VPN.
    pub(crate) fn vpn(&self, gateway_has_sa: bool) -> Option<Violation> {
        if !gateway_has_sa {
            return Some(self.v("P1", "VPN path used without an SA at the gateway".into()));
        }
        match self.truth.vpn_ok {
            None => Some(self.v("P1", "VPN path never shown to work".into())),
            Some(ok) if self.truth.changed_at.is_some_and(|c| c > ok) => Some(self.v(
                "P2",
                "VPN path used after a status change, before it was shown to work again".into(),
            )),
            Some(_) => None,
        }
    }
}
