//! `mipsec status` for the mobile node (issue 16 item 7): the node's own fields,
//! and per interface its state, mode, gate, the age of the last TNC proof and the
//! reason of the last change, with counters for detections and gate closures.

use super::{Daemon, Mode};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Instant;

/// Milliseconds, rounded to 3 decimals.
fn ms(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1e3 * 1000.0).round() / 1000.0
}

impl Daemon {
    /// Opens or closes the gate for user data, recording why (status).
    pub(super) fn set_open(&mut self, open: bool, reason: &'static str) {
        if self.open && !open {
            self.counters.gate_closures += 1;
        }
        if self.open != open || !open {
            self.change_reason = reason;
            self.changed_at = Instant::now();
        }
        self.open = open;
    }

    /// One interface's state (this shell drives one physical interface).
    fn interface_status(&self, now: Instant) -> Value {
        let home = self.mode == Mode::Home;
        let home_done = home && !self.client.is_pending();
        let state = match self.mode {
            Mode::Detached => "down",
            Mode::Home if home_done => "home",
            _ if self.open => "registered",
            _ if self.outside => "outside",
            _ => "registering",
        };
        let mode = match self.mode {
            Mode::Detached => None,
            Mode::Home => Some("h"),
            Mode::Colocated(_) => Some("c"),
            Mode::Foreign { .. } => Some("f"),
        };
        // At home the link is used directly; elsewhere user data passes only while
        // the registration holds (else it is dropped in the TUN).
        let gate = if home_done {
            "open-home"
        } else if self.open {
            "open-tunnel"
        } else {
            "closed"
        };
        json!({
            "name": self.file.mn.interface,
            "state": state,
            "mode": mode,
            "gate": gate,
            "care_of": self.mode.care_of().map(|a| a.to_string()),
            "tnc_proof_age_s": self.tnc_at.map(|t| (now.duration_since(t).as_secs_f64() * 1000.0).round() / 1000.0),
            "last_change": self.change_reason,
            "last_change_age_s": (now.duration_since(self.changed_at).as_secs_f64() * 1000.0).round() / 1000.0,
        })
    }

    pub(super) fn status(&self) -> Value {
        let m = &self.file.mn;
        let now = Instant::now();
        let drops: BTreeMap<String, u64> = self
            .counters
            .drops
            .iter()
            .map(|(k, v)| ((*k).to_string(), *v))
            .collect();
        let cs = self.client.stats();
        json!({
            "role": "mn",
            "mode": self.mode.name(),
            "registered": self.open || (self.mode == Mode::Home && !self.client.is_pending()),
            "care_of": self.mode.care_of().map(|a| a.to_string()),
            "foreign_agent": match self.mode { Mode::Foreign { agent, .. } => Some(agent.to_string()), _ => None },
            "home_address": m.home_address.to_string(),
            "home_agent": m.home_agent.to_string(),
            "udp_tunnel": self.udp_tunnel.is_some(),
            "last_registration_rtt_ms": self.last_rtt.map(ms),
            "interfaces": [self.interface_status(now)],
            // This shell runs modes h, c and f only; T_MONITOR and the outside
            // modes come with the mobility core (issue 16 item 4).
            "t_monitor_s": Value::Null,
            "require_tnc": self.require_tnc(),
            "counters": {
                "registrations_ok": self.counters.registrations_ok,
                "registrations_failed": self.counters.registrations_failed,
                "requests_sent": cs.requests,
                "retransmissions": cs.retransmissions,
                "attachment_changes": self.counters.moves,
                "detections": self.counters.detections,
                "gate_closures": self.counters.gate_closures,
                "nat_reregistrations": self.counters.nat_reregistrations,
                "dead_binding_reregistrations": self.counters.dead_binding_reregistrations,
                "tx_packets": self.counters.tx_packets,
                "tx_bytes": self.counters.tx_bytes,
                "rx_packets": self.counters.rx_packets,
                "rx_bytes": self.counters.rx_bytes,
                "drops": drops,
                "reply_drops": cs.drops.iter().map(|(k, v)| (format!("{k:?}"), *v)).collect::<BTreeMap<_, _>>(),
            }
        })
    }
}
