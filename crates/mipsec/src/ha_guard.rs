//! RFC 5265 admission rules of `mipsec ha` that depend on the host, not the
//! protocol: HA-5 (an external home agent may drop requests arriving on the
//! internal interface; the core does not know interfaces) and the log side of
//! HA-3 (the core drops requests from untrusted sources silently and counts them;
//! the shell also logs them, at most one line per [`LOG_EVERY`]).

use mip4::ha::{DropReason, HomeAgent};
use mip4::wire::MessageType;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};
use tracing::warn;

/// Shortest time between two log lines about untrusted sources.
pub(crate) const LOG_EVERY: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub(crate) struct Guard {
    /// HA-5: the internal interface, when requests arriving on it are dropped.
    internal_ifindex: Option<u32>,
    trusted: Vec<mip4::Ipv4Net>,
    last_log: Option<Instant>,
    /// Untrusted drops not yet reported in a log line.
    unlogged: u64,
    /// Total log lines written (status).
    pub(crate) log_lines: u64,
}

impl Guard {
    pub(crate) fn new(internal_ifindex: Option<u32>, trusted: Vec<mip4::Ipv4Net>) -> Guard {
        Guard {
            internal_ifindex,
            trusted,
            last_log: None,
            unlogged: 0,
            log_lines: 0,
        }
    }

    /// HA-5: whether a datagram that arrived on `ifindex` is a Registration Request
    /// to drop before the core sees it.
    pub(crate) fn drops_internal(&self, ifindex: u32, payload: &[u8]) -> bool {
        self.internal_ifindex == Some(ifindex)
            && MessageType::of(payload) == Some(MessageType::REGISTRATION_REQUEST)
    }

    /// The core's count of requests dropped for an untrusted source.
    pub(crate) fn untrusted_count(core: &HomeAgent) -> u64 {
        core.stats()
            .drops
            .get(&DropReason::UntrustedSource)
            .copied()
            .unwrap_or(0)
    }

    /// HA-3: after the core handled requests from `sources`, `before` being the
    /// untrusted count before: logs the new drops, rate-limited.
    pub(crate) fn after_core(
        &mut self,
        now: Instant,
        before: u64,
        core: &HomeAgent,
        sources: &[SocketAddrV4],
    ) {
        let new = Self::untrusted_count(core).saturating_sub(before);
        if new == 0 {
            return;
        }
        self.unlogged += new;
        if self
            .last_log
            .is_some_and(|t| now.saturating_duration_since(t) < LOG_EVERY)
        {
            return;
        }
        let example = sources
            .iter()
            .find(|s| !self.trusted.iter().any(|n| n.contains(*s.ip())))
            .map_or(Ipv4Addr::UNSPECIFIED, |s| *s.ip());
        warn!(
            source = %example,
            dropped = self.unlogged,
            "registration requests from outside the trusted networks dropped silently (RFC 5265 HA-3); next report in {} s at the earliest",
            LOG_EVERY.as_secs()
        );
        self.unlogged = 0;
        self.last_log = Some(now);
        self.log_lines += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_requests_on_the_internal_interface_are_dropped() {
        let g = Guard::new(Some(3), vec![]);
        let rrq = [1u8; 28];
        let reply = [3u8; 20];
        assert!(g.drops_internal(3, &rrq));
        assert!(!g.drops_internal(2, &rrq));
        assert!(!g.drops_internal(3, &reply));
        assert!(!Guard::new(None, vec![]).drops_internal(3, &rrq));
    }

    /// HA-3: a flood from an untrusted source is counted in full but logged once per
    /// LOG_EVERY, and the next line reports what was dropped in between.
    #[test]
    fn untrusted_drops_are_logged_rate_limited() {
        use mip4::ha::HaConfig;
        use std::time::SystemTime;
        let trusted: mip4::Ipv4Net = "10.20.0.0/24".parse().unwrap_or_else(|_| unreachable!());
        let mut cfg = HaConfig::new(Ipv4Addr::new(10, 10, 0, 1));
        cfg.trusted_networks = vec![trusted];
        let mut core = HomeAgent::new(cfg, [1; 32]);
        let mut g = Guard::new(None, vec![trusted]);
        let from = SocketAddrV4::new(Ipv4Addr::new(10, 40, 0, 10), 434);
        let to = SocketAddrV4::new(Ipv4Addr::new(10, 10, 0, 1), 434);
        let t0 = Instant::now();
        for k in 0..1000u64 {
            let now = t0 + Duration::from_millis(k * 10);
            let before = Guard::untrusted_count(&core);
            core.handle_datagram(now, SystemTime::now(), from, to, &[1u8; 28]);
            g.after_core(now, before, &core, &[from]);
        }
        assert_eq!(Guard::untrusted_count(&core), 1000);
        // 10 s of requests: at t=0 and at t=10 s (the loop ends at 9.99 s).
        assert_eq!(g.log_lines, 1);
        assert_eq!(g.unlogged, 999);
        let now = t0 + LOG_EVERY;
        let before = Guard::untrusted_count(&core);
        core.handle_datagram(now, SystemTime::now(), from, to, &[1u8; 28]);
        g.after_core(now, before, &core, &[from]);
        assert_eq!((g.log_lines, g.unlogged), (2, 0));
    }
}
