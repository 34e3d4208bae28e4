//! The VPN gateway: the real `ikev2::Responder`, and one real
//! `ikev2::Initiator` per interface of the node (the shell's side of IKE).
//!
//! IKE_SA_INIT, IKE_AUTH with a configuration request (the TIA comes from the
//! responder's pool), MOBIKE UPDATE_SA_ADDRESSES, retransmissions and SA
//! failure are the real cores'. The world carries their datagrams over the
//! interface's outer path with its impairments. ESP itself is not run: user
//! datagrams "through the VPN" pass while the gateway's SA exists and the
//! outer path works.

use ikev2::wire::{DhId, Identification, TrafficSelector};
use ikev2::{Event, IkeProposal, Initiator, Responder, Retransmit, Transmit};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

pub(crate) const GW: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const PSK: &[u8] = b"correct horse battery staple";

/// What the gateway holds per interface of the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sa {
    pub(crate) tia: Ipv4Addr,
}

/// What the shell's IKE side reports, per interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Report {
    Up(Ipv4Addr),
    Down,
    MobikeOk,
    MobikeFailed,
}

pub(crate) struct Gateway {
    /// Interfaces with an established CHILD_SA (and its TIA).
    pub(crate) sas: BTreeMap<u32, Sa>,
    responder: Responder,
    initiators: BTreeMap<u32, Initiator>,
    mobike_pending: BTreeSet<u32>,
    started: BTreeMap<u32, u64>,
    seed: u64,
    pub(crate) handshakes: u64,
}

fn retransmit() -> Retransmit {
    Retransmit {
        base: Duration::from_secs(1),
        max_timeout: Duration::from_secs(4),
        max_tries: 4,
    }
}

fn proposals() -> Vec<IkeProposal> {
    vec![IkeProposal::aes_gcm_256(&[DhId::CURVE25519])]
}

/// The port an interface's initiator starts from.
fn port(iface: u32) -> u16 {
    5000 + iface as u16
}

impl Gateway {
    pub(crate) fn new(seed: u64) -> Gateway {
        let mut r = ikev2::Config::psk(PSK, Identification::fqdn("gw.example"));
        r.remote_id = Some(Identification::fqdn("mn.example"));
        r.ike_proposals = proposals();
        r.vip_pool = Some((Ipv4Addr::new(10, 99, 0, 10), 4000));
        r.ts_local = vec![TrafficSelector::ipv4_range(
            Ipv4Addr::new(10, 1, 0, 0),
            Ipv4Addr::new(10, 1, 255, 255),
        )];
        r.retransmit = retransmit();
        r.dpd_interval = None;
        r.nat_keepalive = None;
        let mut s = [0u8; 32];
        s[..8].copy_from_slice(&seed.to_le_bytes());
        s[8] = 0x6e;
        Gateway {
            sas: BTreeMap::new(),
            responder: Responder::new(r, s),
            initiators: BTreeMap::new(),
            mobike_pending: BTreeSet::new(),
            started: BTreeMap::new(),
            seed,
            handshakes: 0,
        }
    }

    fn initiator_config() -> ikev2::Config {
        let mut i = ikev2::Config::psk(PSK, Identification::fqdn("mn.example"));
        i.remote_id = Some(Identification::fqdn("gw.example"));
        i.request_vip = true;
        i.ike_proposals = proposals();
        i.retransmit = retransmit();
        i.dpd_interval = None;
        i.nat_keepalive = None;
        i
    }

    /// Action::StartIke: a fresh initiator replaces any attempt of this interface.
    pub(crate) fn start(&mut self, now: Instant, iface: u32, local: Ipv4Addr) {
        self.sas.remove(&iface);
        self.mobike_pending.remove(&iface);
        self.seed += 1;
        self.handshakes += 1;
        let mut s = [0u8; 32];
        s[..8].copy_from_slice(&self.seed.to_le_bytes());
        s[8] = iface as u8;
        let i = Initiator::new(
            Gateway::initiator_config(),
            SocketAddr::new(local.into(), port(iface)),
            SocketAddr::new(GW.into(), 500),
            s,
            now,
        );
        self.initiators.insert(iface, i);
        self.started.insert(iface, self.seed);
    }

    /// Action::MobikeUpdate; false when there is no SA to move.
    pub(crate) fn mobike(&mut self, now: Instant, iface: u32, local: Ipv4Addr) -> bool {
        let Some(i) = self.initiators.get_mut(&iface) else {
            return false;
        };
        if !i.is_established() {
            return false;
        }
        self.mobike_pending.insert(iface);
        i.update_addresses(now, SocketAddr::new(local.into(), port(iface)), None)
    }

    pub(crate) fn stop(&mut self, iface: u32) {
        self.sas.remove(&iface);
        self.mobike_pending.remove(&iface);
        self.initiators.remove(&iface);
    }

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.initiators
            .values()
            .filter_map(Initiator::poll_timeout)
            .chain(self.responder.poll_timeout())
            .min()
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        for i in self.initiators.values_mut() {
            if i.poll_timeout().is_some_and(|t| t <= now) {
                i.handle_timeout(now);
            }
        }
        if self.responder.poll_timeout().is_some_and(|t| t <= now) {
            self.responder.handle_timeout(now);
        }
    }

    pub(crate) fn deliver_to_responder(&mut self, now: Instant, t: &Transmit) {
        self.responder
            .handle_datagram(now, t.src, t.dst, &t.payload);
    }

    pub(crate) fn deliver_to_initiator(&mut self, now: Instant, iface: u32, t: &Transmit) {
        if let Some(i) = self.initiators.get_mut(&iface) {
            i.handle_datagram(now, t.src, t.dst, &t.payload);
        }
    }

    /// Datagrams to carry: (interface, towards the gateway?, datagram).
    pub(crate) fn poll_transmits(&mut self) -> Vec<(u32, bool, Transmit)> {
        let mut out = Vec::new();
        for (id, i) in self.initiators.iter_mut() {
            while let Some(t) = i.poll_transmit() {
                out.push((*id, true, t));
            }
        }
        while let Some(t) = self.responder.poll_transmit() {
            // MOBIKE moves both sides to port 4500, so the address tells the
            // interfaces apart (x-MIP: one interface holds the x-home address at
            // a time; the newest initiator wins).
            let iface = self
                .initiators
                .iter()
                .filter(|(_, i)| i.local().ip() == t.dst.ip())
                .max_by_key(|(id, _)| self.started.get(id).copied().unwrap_or(0))
                .map(|(id, _)| *id);
            if let Some(iface) = iface {
                out.push((iface, false, t));
            }
        }
        while self.responder.poll_event().is_some() {}
        out
    }

    /// What the initiators report, as the shell would tell the core.
    pub(crate) fn poll_reports(&mut self) -> Vec<(u32, Report)> {
        let mut out = Vec::new();
        let mut dead = Vec::new();
        for (id, i) in self.initiators.iter_mut() {
            while let Some(e) = i.poll_event() {
                match e {
                    Event::ChildSaUp(info) => {
                        if let Some(tia) = info.tia {
                            self.sas.insert(*id, Sa { tia });
                            out.push((*id, Report::Up(tia)));
                        }
                    }
                    Event::AddressesUpdated { .. } if self.mobike_pending.remove(id) => {
                        out.push((*id, Report::MobikeOk));
                    }
                    Event::IkeSaDown { .. } => {
                        self.sas.remove(id);
                        dead.push(*id);
                        out.push((
                            *id,
                            if self.mobike_pending.remove(id) {
                                Report::MobikeFailed
                            } else {
                                Report::Down
                            },
                        ));
                    }
                    _ => {}
                }
            }
        }
        for id in dead {
            self.initiators.remove(&id);
        }
        out
    }
}
