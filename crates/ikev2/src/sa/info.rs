//! INFORMATIONAL exchanges: liveness, Delete (RFC 7296 1.4) and MOBIKE address updates
//! (RFC 4555 3.5, 3.8 COOKIE2, 3.9 NO_NATS_ALLOWED).

use std::net::SocketAddr;
use std::time::Instant;

use rand::RngCore;

use super::parts::Parts;
use super::{IkeSa, Pending, Pool, State, Work};
use crate::crypto::{ct_eq, nat_detection_hash};
use crate::event::{Event, IkeError};
use crate::wire::{Delete, ExchangeType, Header, Notify, NotifyType, Payload, ProtocolId};

impl IkeSa {
    pub(super) fn start_delete_ike(&mut self, now: Instant) {
        let p = [Payload::Delete(Delete {
            protocol: ProtocolId::IKE,
            spi_size: 0,
            spis: vec![],
        })];
        self.send_request(now, ExchangeType::INFORMATIONAL, &p, Pending::DeleteIke);
    }

    /// NAT-D notifies for a message from us (`src`) to `dst`; with `force_encap` the
    /// source hash names an address that is not ours.
    fn nat_d(&self, src: SocketAddr, dst: SocketAddr) -> [Payload; 2] {
        let src = if self.cfg.force_encap {
            super::init::FAKE_NAT_SOURCE
        } else {
            src
        };
        [
            Payload::Notify(Notify::new(
                NotifyType::NAT_DETECTION_SOURCE_IP,
                nat_detection_hash(self.spi_i, self.spi_r, src.ip(), src.port()).to_vec(),
            )),
            Payload::Notify(Notify::new(
                NotifyType::NAT_DETECTION_DESTINATION_IP,
                nat_detection_hash(self.spi_i, self.spi_r, dst.ip(), dst.port()).to_vec(),
            )),
        ]
    }

    fn nat_from(&self, parts: &Parts<'_>, src: SocketAddr, dst: SocketAddr) -> (bool, bool) {
        let src_h = nat_detection_hash(self.spi_i, self.spi_r, src.ip(), src.port());
        let dst_h = nat_detection_hash(self.spi_i, self.spi_r, dst.ip(), dst.port());
        let srcs: Vec<_> = parts
            .notifies
            .iter()
            .filter(|n| n.ty == NotifyType::NAT_DETECTION_SOURCE_IP)
            .collect();
        let src_nat = !srcs.is_empty() && !srcs.iter().any(|n| ct_eq(&n.data, &src_h));
        let dst_nat = parts
            .notify(NotifyType::NAT_DETECTION_DESTINATION_IP)
            .is_some_and(|n| !ct_eq(&n.data, &dst_h));
        (src_nat, dst_nat)
    }

    pub(super) fn start_update_addresses(&mut self, now: Instant) {
        let mut cookie2 = vec![0u8; 16];
        self.rng.fill_bytes(&mut cookie2);
        let mut p = vec![Payload::Notify(Notify::new(
            NotifyType::UPDATE_SA_ADDRESSES,
            vec![],
        ))];
        p.extend(self.nat_d(self.local, self.remote));
        p.push(Payload::Notify(Notify::new(
            NotifyType::COOKIE2,
            cookie2.clone(),
        )));
        self.mobike_cookie2 = Some(cookie2);
        self.send_request(
            now,
            ExchangeType::INFORMATIONAL,
            &p,
            Pending::UpdateAddresses,
        );
    }

    pub(super) fn handle_update_response(
        &mut self,
        from: SocketAddr,
        to: SocketAddr,
        payloads: Vec<Payload>,
    ) {
        let parts = Parts::of(&payloads);
        let echoed = parts.notify(NotifyType::COOKIE2).map(|n| n.data.clone());
        let sent = self.mobike_cookie2.take();
        if echoed.is_none() || echoed != sent {
            // RFC 4555 3.8: a wrong COOKIE2 means the response is not for us.
            return self.fail(IkeError::Protocol("COOKIE2 mismatch"));
        }
        if let Some(e) = parts.error() {
            return self.fail(IkeError::PeerNotify(e));
        }
        let (remote_nat, local_nat) = self.nat_from(&parts, from, to);
        self.remote_nat = remote_nat;
        self.local_nat = local_nat || self.cfg.force_encap;
        self.addresses_changed();
    }

    fn addresses_changed(&mut self) {
        let (local, remote, encap) = (self.local, self.remote, self.udp_encap());
        for c in self.children.values_mut() {
            c.info.local = local;
            c.info.remote = remote;
            c.info.udp_encap = encap;
        }
        self.events.push_back(Event::AddressesUpdated {
            local,
            remote,
            udp_encap: encap,
        });
    }

    /// Initiator-side MOBIKE: move the IKE SA to a new local address (and optionally a new
    /// peer address) and tell the peer.
    pub fn move_to(&mut self, now: Instant, local: SocketAddr, remote: Option<SocketAddr>) -> bool {
        if !self.mobike || self.state != State::Established {
            return false;
        }
        self.local = local;
        if let Some(r) = remote {
            self.remote = r;
        }
        // An exchange in flight follows the new path (RFC 4555 3.5).
        if let Some(o) = self.outstanding.as_mut() {
            o.deadline = now;
        }
        if !self.work.contains(&Work::UpdateAddresses) {
            self.work.push_back(Work::UpdateAddresses);
        }
        self.drive(now);
        true
    }

    pub(super) fn handle_informational(
        &mut self,
        _now: Instant,
        from: SocketAddr,
        to: SocketAddr,
        header: &Header,
        payloads: Vec<Payload>,
        pool: &mut Pool,
    ) {
        let parts = Parts::of(&payloads);
        let mid = header.message_id;
        let mut resp = Vec::new();
        let mut delete_ike = false;
        let mut child_deletes = Vec::new();
        for p in &payloads {
            if let Payload::Delete(d) = p {
                match d.protocol {
                    ProtocolId::IKE => delete_ike = true,
                    ProtocolId::ESP | ProtocolId::AH => {
                        for s in &d.spis {
                            let Ok(a) = <[u8; 4]>::try_from(s.as_slice()) else {
                                continue;
                            };
                            let spi_out = u32::from_be_bytes(a);
                            if let Some(spi_in) = self
                                .children
                                .values()
                                .find(|c| c.info.spi_out == spi_out)
                                .map(|c| c.info.spi_in)
                            {
                                child_deletes.push(spi_in);
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        if self.state == State::InitDone {
            // Before authentication only an error report is meaningful.
            if let Some(e) = parts.error() {
                self.send_response(ExchangeType::INFORMATIONAL, mid, &[], from, to);
                return self.fail(IkeError::PeerNotify(e));
            }
        }
        if let Some(e) = parts
            .error()
            .filter(|e| *e == NotifyType::AUTHENTICATION_FAILED)
        {
            self.send_response(ExchangeType::INFORMATIONAL, mid, &[], from, to);
            return self.fail(IkeError::PeerNotify(e));
        }
        if !child_deletes.is_empty() {
            let spis = child_deletes
                .iter()
                .map(|s| s.to_be_bytes().to_vec())
                .collect();
            resp.push(Payload::Delete(Delete {
                protocol: ProtocolId::ESP,
                spi_size: 4,
                spis,
            }));
            for s in child_deletes {
                self.finish_delete_child(s);
            }
        }
        if parts.notify(NotifyType::UPDATE_SA_ADDRESSES).is_some() && self.mobike {
            let (remote_nat, local_nat) = self.nat_from(&parts, from, to);
            if parts.notify(NotifyType::NO_NATS_ALLOWED).is_some() && (remote_nat || local_nat) {
                resp.push(Payload::Notify(Notify::new(
                    NotifyType::UNEXPECTED_NAT_DETECTED,
                    vec![],
                )));
            } else {
                self.remote = from;
                self.local = to;
                self.remote_nat = remote_nat;
                self.local_nat = local_nat || self.cfg.force_encap;
                resp.extend(self.nat_d(to, from));
                self.addresses_changed();
            }
        }
        if let Some(c) = parts.notify(NotifyType::COOKIE2) {
            resp.push(Payload::Notify(Notify::new(
                NotifyType::COOKIE2,
                c.data.clone(),
            )));
        }
        self.send_response(ExchangeType::INFORMATIONAL, mid, &resp, from, to);
        if delete_ike {
            if let Some(v) = self.vip.take() {
                if self.role == super::Role::Responder {
                    pool.release(v);
                }
            }
            self.closed_orderly();
        }
    }

    /// Local request to close the IKE SA (sends Delete).
    pub fn close(&mut self, now: Instant) {
        match self.state {
            State::Established => {
                self.work.clear();
                self.work.push_back(Work::DeleteIke);
                if self.outstanding.is_none() {
                    self.drive(now);
                }
            }
            State::Closed => {}
            _ => self.closed_orderly(),
        }
    }

    /// Local request to rekey a CHILD_SA or the IKE SA now.
    pub fn request(&mut self, now: Instant, w: Work) {
        if self.state == State::Established && !self.work.contains(&w) {
            self.work.push_back(w);
            self.drive(now);
        }
    }
}
