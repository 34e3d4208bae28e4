//! The mobile node's tunnel in the kernel (`kernel_encap`, as the agents'): while
//! the data path is open inside in mode c, a tc program on the TUN sends the home
//! address's packets to the i-HA itself over IP-in-IP (`netio::ipip_encap`, keyed by
//! the inner source), and one on the interface takes the i-HA's tunnel back into the
//! TUN: IP-in-IP, or RFC 3519 Tunnel Data from the i-HA's port 434 to the registration
//! socket's address and port. A TCP super-packet then leaves as one packet that the
//! kernel cuts at the interface, and never crosses this process.
//!
//! Behind a NAT the entry is for the way back only (`set_udp_inbound`): the node's
//! Tunnel Data still leaves from this process, in UDP GSO sends with checksums,
//! because the i-HA's GRO merges only checksummed datagrams (into trains for its
//! `UDP_GRO` socket); the kernel's own Tunnel Data has none and would reach the i-HA
//! one datagram at a time (measured: 0.14 of plain routing up, against 0.21).
//! Registrations and keepalives stay with the process too (the program takes Tunnel
//! Data of IPv4 only, with no UDP checksum, which the process's socket always sets).
//!
//! The entry is a cache of the core's gate, never a decision of its own:
//!
//! * it exists only while `data_path` is open inside in mode c on one link, the
//!   direct tunnel is IP-in-IP or RFC 3519, and nothing is queued;
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
use mip4::wire::MIP_PORT;
use mobility::{Gate, Layer, Mode, Tunnel};
use netio::ipip_encap::{EncapKey, IpipEncap};
use std::net::{Ipv4Addr, SocketAddrV4};
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
    /// RFC 3519: Tunnel Data between port 434 of the care-of address and the i-HA's.
    udp: bool,
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
                    warn!("kernel tunnel not attached ({e}): the node moves every packet itself");
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
        let udp = match self.node.tunnel(l.ifindex, Layer::IhaDirect, now)? {
            Tunnel::IpInIp => false,
            Tunnel::Udp { .. } => true,
        };
        let care_of = l.attached?.care_of;
        let until = self.node.gate_open_until(l.ifindex, now)?;
        Some(Entry {
            link: li,
            care_of,
            ifindex: l.ifindex,
            until,
            udp,
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
        // The interface must take the TUN's largest packet plus the outer headers
        // (a redirected packet meets no MTU check): 20 octets, or 32 with UDP and
        // Tunnel Data.
        if let Some(w) = want {
            let outer = if w.udp { 32 } else { 20 };
            let tun_mtu = self.tun.mtu().unwrap_or(u32::MAX - outer);
            let fits = match self.nl.link_by_index(w.ifindex).await {
                Ok(l) => l.mtu.is_some_and(|m| m >= tun_mtu + outer),
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
            Some(w) if w.udp => enc.set_udp_inbound(
                home,
                SocketAddrV4::new(w.care_of, MIP_PORT),
                SocketAddrV4::new(ha, MIP_PORT),
                w.ifindex,
                w.until,
            ),
            Some(w) => enc.set(home, w.care_of, ha, w.ifindex, w.until),
            None => enc.remove(home).map(drop),
        };
        if let Err(e) = set {
            warn!("kernel tunnel entry: {e}");
            let _ = enc.remove(home);
            want = None;
        }
        if let Some(w) = want {
            crate::datapath::decap_follow(enc, w.ifindex);
        }
        let shown = |e: Option<Entry>| e.map(|e| (e.link, e.care_of, e.udp));
        if shown(want) != shown(self.kernel.entry) {
            info!(entry = ?want.map(|w| (w.care_of, w.ifindex, if w.udp { "RFC 3519" } else { "IP-in-IP" })), "kernel tunnel");
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
