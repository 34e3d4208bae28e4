//! The properties checked as the run goes: each user packet the shell lets
//! out (P1-P3) and each connected segment (P4).

use std::time::Duration;

use super::oracle::{Check, Violation};
use super::scenario::NetKind;
use super::world::World;
use crate::Gate;

impl World {
    pub(super) fn user_packet_out(&mut self, i: u32, g: Gate) {
        self.packets_out += 1;
        let s = &self.ifs[&i];
        let on_inside = s
            .net
            .is_some_and(|n| matches!(self.sc.nets[n].kind, NetKind::Inside { .. }));
        let t = &self.truth[&i];
        let silent = t
            .silent_at
            .is_some_and(|s| t.changed_at.is_none_or(|c| s > c));
        let c = Check {
            now: self.now,
            rel: self.rel(),
            iface: i,
            truth: t,
            t_monitor: self.sc.t_monitor,
        };
        let v = match g {
            Gate::OpenInside(_) => c.plain(on_inside, silent),
            Gate::OpenViaVpn(_) => c.vpn(self.gw.sas.contains_key(&i)),
            _ => None,
        };
        if let Some(v) = v {
            self.violations.push(v);
        }
    }

    /// P4 on a working network: the gate opened within the derived bound.
    pub(super) fn check_liveness(&mut self, i: u32, took: Duration) {
        let t = &self.truth[&i];
        if !self.sc.working || t.excused {
            return;
        }
        let silent = t
            .silent_at
            .is_some_and(|s| t.changed_at.is_none_or(|c| s > c));
        let mut bound = self.sc.liveness_bound();
        if silent {
            // Undetected move: the re-registration at T_MONITOR - grace must fail first.
            bound += self.sc.t_monitor + Duration::from_secs(12) + Duration::from_secs(3);
        }
        if took > bound {
            self.violations.push(Violation {
                property: "P4",
                at: self.rel(),
                iface: i,
                detail: format!(
                    "gate opened after {:.3}s, bound {:.3}s",
                    took.as_secs_f64(),
                    bound.as_secs_f64()
                ),
            });
        }
    }

    /// Ends a connected segment: on a working network, a gate that never
    /// opened although the segment outlasted the bound violates P4.
    pub(super) fn close_segment(&mut self, i: u32) {
        let now = self.now;
        let rel = self.rel();
        let bound = self.sc.liveness_bound();
        let working = self.sc.working;
        let t = self.truth.entry(i).or_default();
        let silent = t
            .silent_at
            .is_some_and(|s| t.changed_at.is_none_or(|c| s > c));
        if let Some((start, opened)) = t.segment.take() {
            let net = self.ifs.get(&i).and_then(|s| s.net);
            // Outside::None: only an inside network can ever connect.
            let connected = net.is_some_and(|n| {
                !self.sc.plain_only || matches!(self.sc.nets[n].kind, NetKind::Inside { .. })
            });
            // x-MIP: one interface at a time holds the outside path (the x-home
            // address exists once): another interface's open VPN gate excuses.
            let connected = connected && !t.excused;
            if working && connected && !opened && !silent && now - start > bound {
                self.violations.push(Violation {
                    property: "P4",
                    at: rel,
                    iface: i,
                    detail: format!(
                        "gate never opened in a {:.3}s segment, bound {:.3}s",
                        (now - start).as_secs_f64(),
                        bound.as_secs_f64()
                    ),
                });
            }
        }
    }
}
