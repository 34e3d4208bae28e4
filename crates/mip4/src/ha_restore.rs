//! Bounds on bindings restored from a state file (a child module of `ha`, so that
//! it reads the home agent's tables without widening their visibility).
//!
//! A state file is input like any other: a binding it holds is restored only if its
//! node is configured, its lifetime is one the agent could have granted
//! (1..=`max_lifetime`), it expires in the future but no later than its lifetime
//! from now, and the node has room under `max_bindings_per_mn`.

use super::{Binding, HomeAgent};
use std::fmt;
use std::time::{Duration, Instant};

/// Why a saved binding was not restored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestoreRefused {
    /// No configured node has this home address.
    UnknownNode,
    /// It has already expired.
    Expired,
    /// Its lifetime is 0 or above the configured maximum.
    LifetimeOutOfBounds { lifetime: u16, max: u16 },
    /// It expires later than its own lifetime from now.
    ExpiryBeyondLifetime { remaining_s: u64, lifetime: u16 },
    /// The node already holds the configured number of bindings.
    TooManyBindings { max: usize },
}

impl fmt::Display for RestoreRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestoreRefused::UnknownNode => {
                write!(f, "no configured mobile node has this home address")
            }
            RestoreRefused::Expired => write!(f, "already expired"),
            RestoreRefused::LifetimeOutOfBounds { lifetime, max } => {
                write!(f, "lifetime {lifetime} s is outside 1..={max} s")
            }
            RestoreRefused::ExpiryBeyondLifetime {
                remaining_s,
                lifetime,
            } => write!(
                f,
                "expires in {remaining_s} s, beyond its lifetime of {lifetime} s"
            ),
            RestoreRefused::TooManyBindings { max } => {
                write!(f, "the node already holds {max} bindings")
            }
        }
    }
}

impl HomeAgent {
    /// Whether `binding`, read from a state file, is within the configuration's bounds
    /// at `now` (see the module documentation). `restore_binding` restores only
    /// bindings that pass; the shell calls this first to name what it drops and why.
    pub fn check_restore(&self, now: Instant, binding: &Binding) -> Result<(), RestoreRefused> {
        let Some(&idx) = self.by_home.get(&binding.home_addr) else {
            return Err(RestoreRefused::UnknownNode);
        };
        let max = self.cfg.max_lifetime;
        if binding.lifetime == 0 || binding.lifetime > max {
            return Err(RestoreRefused::LifetimeOutOfBounds {
                lifetime: binding.lifetime,
                max,
            });
        }
        if binding.expires <= now {
            return Err(RestoreRefused::Expired);
        }
        let remaining = binding.expires.saturating_duration_since(now);
        // One second of slack: expiries are saved in whole seconds.
        if remaining > Duration::from_secs(u64::from(binding.lifetime) + 1) {
            return Err(RestoreRefused::ExpiryBeyondLifetime {
                remaining_s: remaining.as_secs(),
                lifetime: binding.lifetime,
            });
        }
        let max_bindings = self.cfg.max_bindings_per_mn.max(1);
        let others = self.mns[idx]
            .bindings
            .iter()
            .filter(|b| b.care_of != binding.care_of)
            .count();
        if max_bindings > 1 && others >= max_bindings {
            return Err(RestoreRefused::TooManyBindings { max: max_bindings });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::ha::{HaConfig, HaEvent, MobileNodeConfig, Tunnel};
    use crate::replay::ReplayMethod;
    use std::net::{Ipv4Addr, SocketAddrV4};

    const HOME: Ipv4Addr = Ipv4Addr::new(10, 10, 0, 100);

    fn agent(max_bindings: usize) -> HomeAgent {
        let mut c = HaConfig::new(Ipv4Addr::new(10, 10, 0, 1));
        c.max_lifetime = 1800;
        c.max_bindings_per_mn = max_bindings;
        let mut h = HomeAgent::new(c, [7; 32]);
        h.add_mobile_node(MobileNodeConfig {
            home_addr: Some(HOME),
            nai: None,
            sas: vec![crate::auth::SecurityAssociation::new(
                256,
                crate::auth::Algorithm::HmacMd5,
                b"0123456789abcdef",
            )],
            replay: ReplayMethod::Timestamp,
        })
        .unwrap();
        h
    }

    fn binding(now: Instant, coa: u8, lifetime: u16, left: Duration) -> Binding {
        Binding {
            home_addr: HOME,
            care_of: Ipv4Addr::new(10, 20, 0, coa),
            source: SocketAddrV4::new(Ipv4Addr::new(10, 20, 0, coa), 434),
            local: SocketAddrV4::new(Ipv4Addr::new(10, 10, 0, 1), 434),
            lifetime,
            expires: now + left,
            reverse_tunnel: true,
            colocated: true,
            broadcast: false,
            tunnel: Tunnel::IpInIp,
            nai: None,
        }
    }

    /// A state file claiming a binding valid until the year 2100 (or one year ahead)
    /// with a lifetime of 300 s is refused, naming the bound, and nothing is bound; a
    /// binding within its lifetime is restored.
    #[test]
    fn far_future_and_out_of_bounds_bindings_are_refused() {
        let now = Instant::now();
        let mut h = agent(4);
        let year_2100 = Duration::from_secs(4_102_444_800 - 1_790_000_000);
        let far = binding(now, 50, 300, year_2100);
        assert!(matches!(
            h.check_restore(now, &far),
            Err(RestoreRefused::ExpiryBeyondLifetime { lifetime: 300, .. })
        ));
        assert!(!h.restore_binding(now, far, None));
        let year = binding(now, 50, 300, Duration::from_secs(31_536_000));
        assert!(!h.restore_binding(now, year, None));
        let long = binding(now, 50, 40_000, Duration::from_secs(100));
        assert_eq!(
            h.check_restore(now, &long),
            Err(RestoreRefused::LifetimeOutOfBounds {
                lifetime: 40_000,
                max: 1800
            })
        );
        let zero = binding(now, 50, 0, Duration::from_secs(1));
        assert!(!h.restore_binding(now, zero, None));
        assert_eq!(h.binding_count(), 0);
        assert!(h.poll_event().is_none());
        assert_eq!(h.poll_timeout(), None);
        let ok = binding(now, 50, 300, Duration::from_secs(299));
        assert!(h.restore_binding(now, ok, None));
        assert!(matches!(h.poll_event(), Some(HaEvent::BindingAdded(_))));
        assert_eq!(h.poll_timeout(), Some(now + Duration::from_secs(299)));
        assert!(format!(
            "{}",
            RestoreRefused::ExpiryBeyondLifetime {
                remaining_s: 9,
                lifetime: 3
            }
        )
        .contains("lifetime of 3 s"));
    }

    /// No more bindings per node than the configuration allows.
    #[test]
    fn restored_bindings_per_node_are_bounded() {
        let now = Instant::now();
        let mut h = agent(2);
        for coa in 1..=5 {
            let _ = h.restore_binding(now, binding(now, coa, 300, Duration::from_secs(200)), None);
        }
        assert_eq!(h.binding_count(), 2);
        assert_eq!(
            h.check_restore(now, &binding(now, 9, 300, Duration::from_secs(200))),
            Err(RestoreRefused::TooManyBindings { max: 2 })
        );
    }
}
