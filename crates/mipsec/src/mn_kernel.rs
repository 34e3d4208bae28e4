//! The mobile node's IP-in-IP in the kernel (`kernel_encap`, as the agents'): while
//! the data path is open inside in mode c over IP-in-IP, a tc program on the TUN
//! sends the home address's packets to the i-HA itself (`netio::ipip_encap`, keyed
//! by the inner source), and one on the interface takes the i-HA's tunnel back into
//! the TUN. A TCP super-packet then leaves as one packet that the kernel cuts at the
//! interface, and never crosses this process.
//!
//! The entry is a cache of the core's gate, never a decision of its own:
//!
//! * it exists only while `data_path` is open inside in mode c on one link, the
//!   direct tunnel is IP-in-IP (not RFC 3519), and nothing is queued;
//! * it expires by itself when the gate may close without any input
//!   (`MobileNode::gate_open_until`: T_MONITOR, the registration's expiry), checked
//!   by the program against `CLOCK_MONOTONIC`;
//! * every input to the core is followed by [`Daemon::sync_kernel`] (at the start
//!   and the end of `drive`), which removes or replaces it before anything else.
//!
//! Whatever the program does not take (no entry, expired, another source) goes into
//! the TUN and through the gate here as before. A killed node leaves no program (the
//! links die with their fds), and the routes into the persistent TUN still drop.
//!
//! Liveness: user data sent by the kernel does not pass `check_liveness`, and the
//! i-HA's answers do not pass `deliver`; every [`POLL`] the programs' counters
//! stand in for them (sent: the binding is being used; taken back: the i-HA was
//! heard), before the probe deadlines are judged.

use super::Daemon;
use mobility::{Gate, Layer, Mode, Tunnel};
use netio::ipip_encap::{EncapKey, IpipEncap};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// How often the programs' counters are read while an entry is set.
pub(super) const POLL: Duration = Duration::from_millis(250);

/// The entry set in the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Entry {
    pub(super) link: usize,
    care_of: Ipv4Addr,
    ifindex: u32,
    until: Instant,
}

/// The kernel's part of the node's data path.
#[derive(Default)]
pub(super) struct Kernel {
    pub(super) encap: Option<IpipEncap>,
    pub(super) entry: Option<Entry>,
    /// The counters at the last poll: (sent, taken back).
    seen: (u64, u64),
    pub(super) next_poll: Option<Instant>,
}

impl Kernel {
    /// Attaches the program to the node's TUN when `on`; a kernel that refuses
    /// leaves every packet to the process, said once.
    pub(super) fn attach(on: bool, tun_ifindex: u32) -> Kernel {
        let encap = match on {
            true => match IpipEncap::attach_keyed(tun_ifindex, 4, EncapKey::Source) {
                Ok(e) => Some(e),
                Err(e) => {
                    warn!("kernel IP-in-IP not attached ({e}): the node moves every packet itself");
                    None
                }
            },
            false => None,
        };
        Kernel {
            encap,
            ..Kernel::default()
        }
    }
}

impl Daemon {
    /// What the kernel may do for user data at `now`, per the core (see the module
    /// documentation).
    fn kernel_want(&self, now: Instant) -> Option<Entry> {
        let (li, gate) = self.data_path(now);
        if gate != Gate::OpenInside(Mode::C) || !self.queue.is_empty() {
            return None;
        }
        let l = &self.links[li];
        if self.node.tunnel(l.ifindex, Layer::IhaDirect, now) != Some(Tunnel::IpInIp) {
            return None;
        }
        let care_of = l.attached?.care_of;
        let until = self.node.gate_open_until(l.ifindex, now)?;
        Some(Entry {
            link: li,
            care_of,
            ifindex: l.ifindex,
            until,
        })
    }

    /// Makes the kernel's entry what the core says now: set, replaced or removed.
    pub(super) async fn sync_kernel(&mut self) {
        if self.kernel.encap.is_none() {
            return;
        }
        let now = Instant::now();
        let mut want = self.kernel_want(now);
        if want == self.kernel.entry {
            return;
        }
        // The interface must take the TUN's largest packet plus the outer header
        // (a redirected packet meets no MTU check).
        if let Some(w) = want {
            let tun_mtu = self.tun.mtu().unwrap_or(u32::MAX - 20);
            let fits = match self.nl.link_by_index(w.ifindex).await {
                Ok(l) => l.mtu.is_some_and(|m| m >= tun_mtu + 20),
                Err(_) => false,
            };
            if !fits {
                want = None;
            }
            // The core may have moved meanwhile (the lookup awaited).
            if self.kernel_want(Instant::now()) != Some(w) {
                want = None;
            }
        }
        let home = self.file.mn.home_address;
        let ha = self.file.mn.home_agent;
        let Some(enc) = &self.kernel.encap else {
            return;
        };
        let set = match want {
            Some(w) => enc.set(home, w.care_of, ha, w.ifindex, w.until),
            None => enc.remove(home).map(drop),
        };
        if let Err(e) = set {
            warn!("kernel IP-in-IP entry: {e}");
            let _ = enc.remove(home);
            want = None;
        }
        if let Some(w) = want {
            match enc.decap_on(w.ifindex) {
                Ok(true) => info!(ifindex = w.ifindex, "kernel IP-in-IP decapsulation attached"),
                Ok(false) => {}
                Err(e) => warn!(
                    ifindex = w.ifindex,
                    "kernel IP-in-IP decapsulation not attached ({e}): the node takes the tunnel itself there"
                ),
            }
        }
        if want.map(|w| (w.link, w.care_of)) != self.kernel.entry.map(|e| (e.link, e.care_of)) {
            info!(entry = ?want.map(|w| (w.care_of, w.ifindex)), "kernel IP-in-IP");
        }
        self.kernel.entry = want;
        self.kernel.next_poll = want.map(|_| now + POLL);
    }

    /// The programs' counters since the last poll stand in for the packets the
    /// process did not see: the i-HA heard, user data sent (`check_liveness`).
    pub(super) async fn poll_kernel(&mut self, now: Instant) {
        let Some(enc) = &self.kernel.encap else {
            return;
        };
        let (Ok(sent), Ok(taken)) = (enc.counters(), enc.decap_counters()) else {
            return;
        };
        let (sent0, taken0) = std::mem::replace(&mut self.kernel.seen, (sent.sends, taken.sends));
        let Some(e) = self.kernel.entry else {
            self.kernel.next_poll = None;
            return;
        };
        self.kernel.next_poll = Some(now + POLL);
        if taken.sends > taken0 {
            if let Some(l) = self.links.get_mut(e.link) {
                l.live.ha_heard = Some(now);
            }
        }
        if sent.sends > sent0 {
            self.check_liveness(e.link, now).await;
        }
    }

    /// The `kernel_encap` part of the node's status.
    pub(super) fn kernel_status(&self) -> serde_json::Value {
        let mut v = crate::datapath::encap_status(self.kernel.encap.as_ref());
        if let Some(o) = v.as_object_mut() {
            o.insert(
                "entry".into(),
                serde_json::json!(self.kernel.entry.map(|e| e.care_of.to_string())),
            );
        }
        v
    }
}
