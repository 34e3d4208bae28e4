//! `mipsec status` for the mobile node (issue 16 item 7): the node's own fields,
//! and per interface its state, mode, gate, the age of the last TNC proof and the
//! reason of the last change, with the core's counters (detections, T_MONITOR
//! expiries, gate closures, proofs) and the shell's (packets, drops).

use super::Daemon;
use mobility::{Gate, Layer, Mode, Phase};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Seconds, rounded to milliseconds.
fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

fn gate_name(g: Gate) -> &'static str {
    match g {
        Gate::Closed => "closed",
        Gate::Queued { .. } => "queued",
        Gate::OpenInside(Mode::H) => "open-home",
        Gate::OpenInside(_) => "open-inside",
        Gate::OpenViaVpn(_) => "open-vpn",
    }
}

impl Daemon {
    /// One interface's state (MN-2: each has its own).
    fn interface_status(&self, li: usize, now: Instant) -> Value {
        let l = &self.links[li];
        let id = l.ifindex;
        let gate = self.node.gate(id, now);
        let att = self.node.attachment(id);
        let state = match (self.node.phase(id), gate) {
            (Phase::Inside, Gate::OpenInside(Mode::H)) => "home",
            (Phase::Inside, _) => "inside",
            (Phase::Outside, _) => "outside",
            (Phase::Detecting, _) => "detecting",
            (Phase::Down, _) => "down",
        };
        let mode = match gate {
            Gate::OpenInside(m) | Gate::OpenViaVpn(m) => Some(m.name()),
            _ => None,
        };
        json!({
            "name": l.name,
            "state": state,
            "carries_user_data": self.last_gate.0 == li && gate.is_open(),
            "mode": mode,
            "gate": gate_name(gate),
            "epoch": self.node.epoch(id),
            "care_of": att.map(|a| a.care_of.to_string()),
            "foreign_agent": att.and_then(|a| a.agent).map(|a| a.to_string()),
            "tnc_proof_age_s": self.node.proof(id).map(|p| secs(now.duration_since(p.at()))),
            "last_change": self.node.reason(id),
            "last_change_age_s": secs(now.duration_since(l.changed_at)),
            "udp_tunnel": matches!(self.node.tunnel(id, Layer::IhaDirect, now), Some(mobility::Tunnel::Udp { .. })),
            "last_registration_rtt_ms": l.last_rtt.map(|d| secs(d) * 1000.0),
            "vpn": self.vpn_iface() == Some(id),
        })
    }

    pub(super) fn status(&self) -> Value {
        let m = &self.file.mn;
        let now = Instant::now();
        // The top-level fields describe the interface that carries user data.
        let (li, gate) = self.data_path(now);
        let id = self.links[li].ifindex;
        let att = self.node.attachment(id);
        let s = self.node.stats();
        let mut drops: BTreeMap<String, u64> = self
            .counters
            .drops
            .iter()
            .map(|(k, v)| ((*k).to_string(), *v))
            .collect();
        if s.untrusted_agent_ads > 0 {
            drops.insert(
                "advertisement from an untrusted agent".into(),
                s.untrusted_agent_ads,
            );
        }
        if s.dropped_datagrams > 0 {
            drops.insert("unwanted registration datagram".into(), s.dropped_datagrams);
        }
        // The attachment, as the user knows it (the lab and older tools read it).
        let mode = match att {
            None => "detached",
            Some(a) if a.care_of == m.home_address => "home",
            Some(a) if a.agent.is_some() => "foreign",
            Some(_) => "colocated",
        };
        let counters = json!({
            "registrations_ok": s.replies_accepted,
            "registrations_failed": s.replies_denied + s.t_monitor_expiries,
            "requests_sent": s.requests_sent,
            "retransmissions": s.retransmissions,
            "status_changes": s.status_changes,
            "detections": s.detections,
            "inside_proofs": s.inside_proofs,
            "proofs_refused": s.proofs_refused,
            "accepted_without_tnc": s.accepted_without_tnc,
            "t_monitor_expiries": s.t_monitor_expiries,
            "gate_closures": s.gate_closures,
            "replies_refused": s.replies_refused,
            "agent_reboots": s.agent_reboots,
            "silence_probes": s.silence_probes,
            "send_failures": s.send_failures,
            "send_retries": s.send_retries,
            "nat_reregistrations": self.counters.nat_reregistrations,
            "dead_binding_reregistrations": self.counters.dead_binding_reregistrations,
            "vpn_starts": self.outer.starts,
            // Fragmented datagrams of the VPN layers given up (timeout, eviction, overlap,
            // bounds; see wire::reassembly) and those still waiting for their rest.
            "reassembly_dropped": self.outer.frags.dropped,
            "reassembly_pending": self.outer.frags.len(),
            "queued": self.queue.len(),
            "tx_packets": self.counters.tx_packets,
            "tx_bytes": self.counters.tx_bytes,
            "rx_packets": self.counters.rx_packets,
            "rx_bytes": self.counters.rx_bytes,
            "drops": drops,
            // Replies the registration clients refused (forged, replayed,
            // unsolicited, malformed extensions, a stale home-agent time).
            "reply_drops": { "refused": s.replies_refused },
        });
        json!({
            "role": "mn",
            "mode": mode,
            "registered": gate.is_open(),
            "care_of": att.map(|a| a.care_of.to_string()),
            "foreign_agent": att.and_then(|a| a.agent).map(|a| a.to_string()),
            "home_address": m.home_address.to_string(),
            "home_agent": m.home_agent.to_string(),
            "udp_tunnel": matches!(self.node.tunnel(id, Layer::IhaDirect, now), Some(mobility::Tunnel::Udp { .. })),
            "last_registration_rtt_ms": self.links[li].last_rtt.map(|d| secs(d) * 1000.0),
            "interface": self.links[li].name,
            "interfaces": (0..self.links.len()).map(|i| self.interface_status(i, now)).collect::<Vec<_>>(),
            "t_monitor_s": m.t_monitor_s,
            "outside": format!("{:?}", m.outside).to_lowercase(),
            "tia": self.outer.vpn.as_ref().and_then(|s| s.tia).map(|t| t.to_string()),
            "vpn_running": self.outer.vpn.is_some(),
            "vpn": self.outer.vpn.as_ref().map(|s| s.eng.status()),
            "data_path": crate::datapath::status(&self.dp),
            "kernel_encap": self.kernel_status(),
            "counters": counters,
        })
    }
}
