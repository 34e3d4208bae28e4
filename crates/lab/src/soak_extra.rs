//! The soak's extra step kinds (issue 17 item 1): loss bursts on the node's segment,
//! silent moves (the switch port re-plugged without a carrier event, then plugged in
//! properly), and the attacks on ext-a at random moments (TunnelVision and an
//! intranet look-alike through a real rogue DHCP server and a real DHCP client, and the
//! injector's replayed and forged packets). They are drawn from their own generator
//! (seeded from the seed), so a seed's plan without them stays what it was.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;

use super::{Rng, Step};
use crate::dhcp::{self, RogueDhcp};
use crate::enterprise;
use crate::inject;
use crate::netns::{self, Result};
use crate::topo::{Lab, Segment, HA_ADDR, MN_HOME};

/// Which extra kinds to draw.
#[derive(Debug, Clone, Copy, Default)]
pub struct Extras {
    pub loss: bool,
    pub silent: bool,
    pub attacks: bool,
    /// Carry out the TunnelVision attacks the plan draws too (with `attacks`; off: they
    /// are skipped and counted). The node does not withstand it yet: option 121's
    /// 10.0.0.0/8 via the attacker is more specific than its 0/1 and 128/1 routes into
    /// the TUN, so user data from the home address leaves in the clear through the
    /// attacker, and nothing comes back until the next move.
    pub tunnelvision: bool,
}

impl Extras {
    pub fn any(self) -> bool {
        self.loss || self.silent || self.attacks
    }
}

/// An attack on ext-a.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attack {
    /// Rogue DHCP with option 121 (intranet, 0/1, 128/1 via the attacker), taken by a
    /// real DHCP client on the node.
    TunnelVision,
    /// Rogue DHCP handing out the intranet's domain and an int-a lease (MN-8).
    Lookalike,
    /// A replayed i-HA reply with TNC, forged replies, a rogue agent's advertisements
    /// and forged ESP from the injector.
    Inject,
}

impl Attack {
    pub fn name(self) -> &'static str {
        match self {
            Attack::TunnelVision => "attack tunnelvision (dhcp option 121)",
            Attack::Lookalike => "attack intranet look-alike dhcp",
            Attack::Inject => "attack injected replies/adverts/esp",
        }
    }
}

fn outside(s: Segment) -> bool {
    matches!(s, Segment::ExtA | Segment::ExtB | Segment::ExtNat)
}

/// A silent move from `from` to `to` is drawn only where the captures cannot call
/// the node's own packets on the wrong wire a leak by construction: onto an inside
/// network, or from outside to outside. (Inside -> outside without any link event
/// leaks until the tunnel's silence closes the gate, about 2 s: bounded by the
/// transitions test `silent_move_stops_plaintext_within_t_monitor`, not a soak step.)
pub fn silent_allowed(from: Segment, to: Segment) -> bool {
    !outside(to) || outside(from)
}

/// Adds the extra steps to a plan: before a waited move, a silent move to the same
/// segment (8 %, where allowed), so the move that follows plugs it in properly; after
/// a waited move, a loss burst of 2-5 s (6 %); after a waited move to ext-a, an attack
/// (25 %).
pub fn add(seed: u64, steps: Vec<Step>, x: Extras) -> Vec<Step> {
    if !x.any() {
        return steps;
    }
    let mut r = Rng::new(seed ^ 0x5eed_e47a_0000_0017);
    let mut out = Vec::with_capacity(steps.len() * 5 / 4);
    let mut cur = Segment::Home;
    for s in steps {
        let mut after = Vec::new();
        if let Step::Move {
            to,
            wait: true,
            stay_ms,
        } = s
        {
            if x.silent && silent_allowed(cur, to) && r.percent(8) {
                out.push(Step::Silent {
                    to,
                    stay_ms: r.range(500, 4000),
                });
            }
            if x.loss && r.percent(6) {
                after.push(Step::Loss {
                    ms: r.range(2000, 5000),
                });
            }
            if x.attacks && to == Segment::ExtA && r.percent(25) {
                let k = [Attack::TunnelVision, Attack::Lookalike, Attack::Inject]
                    [r.range(0, 3) as usize];
                after.push(Step::Attack { kind: k });
            }
            let _ = stay_ms;
        }
        if let Step::Move { to, .. } = s {
            cur = to;
        }
        out.push(s);
        out.extend(after);
    }
    out
}

fn nft_sw(lab: &Lab, script: &str) -> Result<()> {
    let f = lab.dir.join("soak-loss.nft");
    std::fs::write(&f, script)?;
    netns::run(
        "ip",
        &[
            "netns",
            "exec",
            &lab.ns("sw"),
            "nft",
            "-f",
            &f.display().to_string(),
        ],
    )?;
    Ok(())
}

/// 30 % of the frames to and from the node's switch port dropped (nftables on the
/// bridges, both directions), until [`loss_off`].
pub fn loss_on(lab: &Lab) -> Result<()> {
    nft_sw(
        lab,
        "table bridge soakloss {\n  chain burst {\n    type filter hook forward priority 0;\n    \
         iifname \"mn\" numgen random mod 100 < 30 drop\n    \
         oifname \"mn\" numgen random mod 100 < 30 drop\n  }\n}\n",
    )
}

pub fn loss_off(lab: &Lab) -> Result<()> {
    nft_sw(lab, "delete table bridge soakloss\n")
}

/// The node's switch port re-plugged into `to`'s bridge while it stays up: no
/// carrier, address or router change.
pub fn silent(lab: &Lab, to: Segment) -> Result<()> {
    crate::transit::rewire_silently(lab, to.bridge())
}

/// Sets the attacker up on ext-a (the stranger leaves int-b); its MAC, for the
/// classifier's `injectors`.
pub fn attacker(lab: &Lab) -> Result<[u8; 6]> {
    dhcp::stranger_to_ext_a(lab)?;
    inject::mac_of(lab, "ev", "eth0")
}

/// Carries out `a` against the node on ext-a; a line on what happened.
pub fn attack(lab: &mut Lab, a: Attack, pcap: &Path) -> Result<String> {
    match a {
        Attack::TunnelVision | Attack::Lookalike => {
            let r = if a == Attack::TunnelVision {
                RogueDhcp::tunnelvision()
            } else {
                // Not int-a's own address for the node (10.20.0.50): the lease's
                // exemption from the address rule then covers nothing the node uses
                // inside.
                RogueDhcp {
                    lease: Ipv4Addr::new(10, 20, 0, 77),
                    ..RogueDhcp::intranet_lookalike()
                }
            };
            let _ = std::fs::remove_file(lab.dir.join("rogue.leases"));
            // A previous look-alike's address and masquerade stay until the next attack
            // (the node keeps using its lease until it moves); they go before it adds
            // them again.
            let ev = lab.ns("ev");
            let _ = netns::ip(&["-n", &ev, "addr", "del", "10.20.0.1/24", "dev", "eth0"]);
            let _ = netns::run(
                "ip",
                &[
                    "netns", "exec", &ev, "nft", "delete", "table", "ip", "rogue",
                ],
            );
            dhcp::start_rogue(lab, &r)?;
            let got = dhcp::run_client(lab);
            lab.stop("rogue-dhcp", libc::SIGTERM);
            Ok(match got {
                Ok(l) => format!(
                    "lease {} routes [{}] domain [{}]",
                    l.get("ip"),
                    l.get("staticroutes"),
                    l.get("domain")
                ),
                Err(e) => format!("no lease: {e}"),
            })
        }
        Attack::Inject => {
            let coa = Segment::ExtA.mn_addr();
            let mut pkts = Vec::new();
            // A real i-HA reply with TNC from a capture of an inside segment, replayed.
            let replayed = ["home", "int-a", "int-c"].iter().find_map(|s| {
                inject::captured_reply(&pcap.join(format!("{s}.pcap")), HA_ADDR).ok()
            });
            if let Some(reply) = &replayed {
                let ihl = usize::from(reply[0] & 0xf) * 4;
                let body = reply.get(ihl + 8..).unwrap_or(&[]).to_vec();
                pkts.push(inject::udp(
                    SocketAddrV4::new(HA_ADDR, 434),
                    SocketAddrV4::new(coa, 434),
                    &body,
                ));
            }
            let mut ext = vec![149, 0, 32, 20, 0, 0, 1, 0];
            ext.extend_from_slice(&inject::random_bytes(16));
            let m = inject::registration_reply(0, MN_HOME, HA_ADDR, rand::random(), &ext);
            pkts.push(inject::udp(
                SocketAddrV4::new(HA_ADDR, 434),
                SocketAddrV4::new(coa, 434),
                &m,
            ));
            for seq in 0..3 {
                pkts.push(inject::agent_advertisement(
                    dhcp::ROGUE_ADDR,
                    Ipv4Addr::BROADCAST,
                    dhcp::ROGUE_ADDR,
                    seq,
                ));
            }
            let gw = SocketAddrV4::new(enterprise::GW_OUTER, 4500);
            for i in 0..10u32 {
                let spi = rand::random::<u32>() | 0x100;
                pkts.push(inject::udp(
                    gw,
                    SocketAddrV4::new(coa, 4500),
                    &inject::forged_esp(spi, i + 1, 64),
                ));
            }
            let n = inject::send_raw(&lab.ns("ev"), pkts)?;
            Ok(format!(
                "{n} packets ({} replayed i-HA reply)",
                if replayed.is_some() { "with a" } else { "no" }
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{plan, segments};
    use super::*;

    fn all() -> Extras {
        Extras {
            loss: true,
            silent: true,
            attacks: true,
            tunnelvision: true,
        }
    }

    /// The extras leave the seed's own steps as they were, in order, and over a long
    /// walk draw every kind: loss bursts, silent moves (only where allowed, each
    /// followed by the move to the same segment) and every attack (only on ext-a).
    #[test]
    fn extras_keep_the_plan_and_draw_every_kind() {
        let segs = segments(true, false);
        let base = plan(22, 400, &segs, false);
        let with = add(22, base.clone(), all());
        let kept: Vec<Step> = with
            .iter()
            .copied()
            .filter(|s| {
                !matches!(
                    s,
                    Step::Loss { .. } | Step::Silent { .. } | Step::Attack { .. }
                )
            })
            .collect();
        assert_eq!(kept, base);
        assert_eq!(add(22, base.clone(), Extras::default()), base);
        let mut cur = Segment::Home;
        let mut kinds = std::collections::BTreeSet::new();
        for (i, s) in with.iter().enumerate() {
            match *s {
                Step::Move { to, .. } => cur = to,
                Step::Silent { to, .. } => {
                    assert!(silent_allowed(cur, to), "step {i}");
                    assert!(
                        matches!(with[i + 1], Step::Move { to: t, .. } if t == to),
                        "step {i}"
                    );
                    kinds.insert("silent".to_string());
                }
                Step::Attack { kind } => {
                    assert_eq!(cur, Segment::ExtA, "step {i}");
                    kinds.insert(kind.name().to_string());
                }
                Step::Loss { ms } => {
                    assert!((2000..5000).contains(&ms));
                    kinds.insert("loss".to_string());
                }
                _ => {}
            }
        }
        assert_eq!(kinds.len(), 5, "{kinds:?}");
    }

    #[test]
    fn silent_moves_never_from_inside_to_outside() {
        assert!(!silent_allowed(Segment::IntA, Segment::ExtA));
        assert!(!silent_allowed(Segment::Home, Segment::ExtNat));
        assert!(silent_allowed(Segment::ExtA, Segment::ExtNat));
        assert!(silent_allowed(Segment::ExtA, Segment::IntA));
        assert!(silent_allowed(Segment::IntA, Segment::IntC));
    }
}
