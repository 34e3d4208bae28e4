//! Seeded random scenarios: networks, impairments, moves, configuration.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::net::Ipv4Addr;
use std::time::Duration;

use crate::config::Fault;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NetKind {
    /// The enterprise network: the i-HA is reachable and trusts our source.
    Inside {
        /// The x-HA is reachable from here (HA-5 not configured).
        reach_xha: bool,
        /// The VPN gateway is reachable from here (mc keeps its SA alive).
        reach_gw: bool,
        /// This is the home link (the node gets its home address).
        home: bool,
    },
    /// Any external network; the firewall blocks the i-HA.
    Outside { nat: bool, adversary: bool },
}

#[derive(Debug, Clone)]
pub(crate) struct Impair {
    pub(crate) loss: f64,
    pub(crate) dup: f64,
    pub(crate) delay_min: Duration,
    pub(crate) delay_max: Duration,
    /// Windows (start, end) in seconds of simulated time when nothing passes.
    pub(crate) blackholes: Vec<(f64, f64)>,
    /// Times (seconds) when the NAT mapping changes.
    pub(crate) nat_rebinds: Vec<f64>,
}

impl Impair {
    pub(crate) fn clean(delay: Duration) -> Impair {
        Impair {
            loss: 0.0,
            dup: 0.0,
            delay_min: delay,
            delay_max: delay,
            blackholes: Vec::new(),
            nat_rebinds: Vec::new(),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Net {
    pub(crate) kind: NetKind,
    pub(crate) imp: Impair,
}

/// A move of one interface at `at` seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Move {
    pub(crate) at_ms: u64,
    pub(crate) iface: u32,
    /// `None`: the link goes away.
    pub(crate) net: Option<usize>,
    /// Silent: the network changes under the node without any link event
    /// (an upstream routing change); the old address stays.
    pub(crate) silent: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct Scenario {
    pub(crate) seed: u64,
    pub(crate) mobike: bool,
    /// `Outside::None`: plain i-MIP only (set by a dedicated test, never by
    /// `random`, so that the seeds of the main run keep their meaning).
    pub(crate) plain_only: bool,
    pub(crate) t_monitor: Duration,
    pub(crate) grace: Duration,
    pub(crate) detection_period: Duration,
    pub(crate) ike_waits: bool,
    pub(crate) queue_limit: usize,
    pub(crate) ifaces: u32,
    pub(crate) nets: Vec<Net>,
    pub(crate) moves: Vec<Move>,
    pub(crate) duration: Duration,
    /// Mean gap between user packets per interface.
    pub(crate) traffic_gap: Duration,
    pub(crate) fault: Option<Fault>,
    /// No loss, no blackholes, no NAT rebinding: the liveness property applies.
    pub(crate) working: bool,
}

/// Margin for IKE in the liveness bound (the real cores take no simulated time).
pub(crate) const IKE_CRYPTO: Duration = Duration::from_millis(30);

impl Scenario {
    pub(crate) fn random(seed: u64) -> Scenario {
        let mut r = StdRng::seed_from_u64(seed);
        let working = r.gen_bool(0.5);
        let n_nets = r.gen_range(2..=5);
        let mut nets = Vec::new();
        for k in 0..n_nets {
            let kind = if r.gen_bool(0.5) {
                NetKind::Inside {
                    reach_xha: r.gen_bool(0.5),
                    reach_gw: r.gen_bool(0.5),
                    home: k == 0 && r.gen_bool(0.3),
                }
            } else {
                NetKind::Outside {
                    nat: r.gen_bool(0.5),
                    adversary: r.gen_bool(0.6),
                }
            };
            let dmin = Duration::from_millis(r.gen_range(1..30));
            let dmax = dmin + Duration::from_millis(r.gen_range(0..40));
            let mut imp = Impair {
                loss: 0.0,
                dup: if r.gen_bool(0.3) { 0.05 } else { 0.0 },
                delay_min: dmin,
                delay_max: dmax,
                blackholes: Vec::new(),
                nat_rebinds: Vec::new(),
            };
            if !working {
                imp.loss = r.gen_range(0.0..0.3);
                for _ in 0..r.gen_range(0..3) {
                    let s = r.gen_range(0.0..400.0);
                    imp.blackholes.push((s, s + r.gen_range(1.0..40.0)));
                }
                if matches!(kind, NetKind::Outside { nat: true, .. }) {
                    for _ in 0..r.gen_range(0..4) {
                        imp.nat_rebinds.push(r.gen_range(0.0..400.0));
                    }
                }
            }
            nets.push(Net { kind, imp });
        }
        let ifaces = r.gen_range(1..=2);
        let duration = Duration::from_secs(r.gen_range(120..400));
        let mut moves = Vec::new();
        for iface in 1..=ifaces {
            let mut t = r.gen_range(0..5_000u64);
            let mut cur: Option<usize> = None;
            while t < duration.as_millis() as u64 {
                let net = if r.gen_bool(0.15) {
                    None
                } else {
                    Some(r.gen_range(0..n_nets))
                };
                let silent = cur.is_some() && net.is_some() && r.gen_bool(0.1);
                moves.push(Move {
                    at_ms: t,
                    iface,
                    net,
                    silent,
                });
                cur = net;
                t += r.gen_range(5_000..150_000);
            }
        }
        moves.sort_by_key(|m| (m.at_ms, m.iface));
        let t_monitor = Duration::from_secs([20, 30, 60][r.gen_range(0..3)]);
        Scenario {
            seed,
            mobike: r.gen_bool(0.5),
            plain_only: false,
            t_monitor,
            grace: Duration::from_secs(8),
            detection_period: Duration::from_millis([0, 1000, 3000][r.gen_range(0..3)]),
            ike_waits: r.gen_bool(0.5),
            queue_limit: if r.gen_bool(0.3) { 4 } else { 0 },
            ifaces,
            nets,
            moves,
            duration,
            traffic_gap: Duration::from_millis(r.gen_range(200..2000)),
            fault: None,
            working,
        }
    }

    /// Worst one-way delay over every network.
    pub(crate) fn max_delay(&self) -> Duration {
        self.nets
            .iter()
            .map(|n| n.imp.delay_max)
            .max()
            .unwrap_or_default()
    }

    /// P4: the derived bound from a status change on a working network to an
    /// open gate. Outside: x-HA RTT (plus the hint delay an adversary's fake
    /// hint can cause) + detection period + IKE + i-HA RTT; inside: i-HA RTT.
    /// Each registration may cost one extra round trip for an Identification
    /// resynchronisation (two interfaces share the i-HA's replay state), and one
    /// lost race against a duplicate.
    pub(crate) fn liveness_bound(&self) -> Duration {
        let rtt = self.max_delay() * 2;
        let reg = rtt * 3;
        let hint = Duration::from_millis(500);
        let ike = rtt * 2 + IKE_CRYPTO;
        hint + reg + self.detection_period + ike + reg + Duration::from_millis(50)
    }

    pub(crate) fn home_addr() -> Ipv4Addr {
        Ipv4Addr::new(10, 1, 0, 50)
    }

    /// The address an interface gets on a network.
    pub(crate) fn addr_on(&self, net: usize, iface: u32) -> Ipv4Addr {
        match self.nets[net].kind {
            NetKind::Inside { home: true, .. } => Scenario::home_addr(),
            NetKind::Inside { .. } => Ipv4Addr::new(10, 1, 10 + net as u8, 100 + iface as u8),
            NetKind::Outside { .. } => Ipv4Addr::new(192, 168, 10 + net as u8, 100 + iface as u8),
        }
    }
}
