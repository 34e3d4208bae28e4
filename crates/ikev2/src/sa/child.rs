//! CHILD_SA keys and traffic selectors, CREATE_CHILD_SA rekeying of CHILD and IKE SAs
//! (RFC 7296 1.3, 2.8, 2.9, 2.17, 2.18).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand::SeedableRng;

use super::parts::Parts;
use super::proposal::{self, EspSuite, SelectError, Suite};
use super::{nonce, nonzero_u64, Child, IkeSa, Pending, Role, State, Work};
use crate::crypto::dh::KeyShare;
use crate::crypto::{derive_child_keys, derive_ike_keys, skeyseed_rekey};
use crate::event::{ChildSaInfo, Event, IkeError};
use crate::wire::{
    Delete, ExchangeType, Header, Notify, NotifyType, Payload, ProtocolId, TrafficSelector,
};

/// Material for one CHILD_SA's KEYMAT.
#[derive(Debug, Clone)]
pub(crate) struct ChildKeysInput {
    pub suite: EspSuite,
    pub spi_in: u32,
    pub spi_out: u32,
    pub ts_local: Vec<TrafficSelector>,
    pub ts_remote: Vec<TrafficSelector>,
    /// Nonce of the exchange initiator / responder.
    pub ni: Vec<u8>,
    pub nr: Vec<u8>,
    pub gir: Option<Vec<u8>>,
}

#[derive(Debug)]
pub(crate) struct RekeyChild {
    pub old_spi_in: u32,
    pub spi_in: u32,
    pub ni: Vec<u8>,
    pub share: Option<KeyShare>,
    pub ts_local: Vec<TrafficSelector>,
    pub ts_remote: Vec<TrafficSelector>,
    /// Set when the peer rekeyed the same CHILD_SA meanwhile (RFC 7296 2.8.1): the nonces
    /// of its exchange.
    pub collision: Option<(Vec<u8>, Vec<u8>)>,
}

#[derive(Debug)]
pub(crate) struct RekeyIke {
    pub spi: u64,
    pub ni: Vec<u8>,
    pub share: Option<KeyShare>,
}

fn proto_ok(a: u8, b: u8) -> Option<u8> {
    match (a, b) {
        (0, x) | (x, 0) => Some(x),
        (x, y) if x == y => Some(x),
        _ => None,
    }
}

fn same_family(a: IpAddr, b: IpAddr) -> bool {
    a.is_ipv4() == b.is_ipv4()
}

/// `outer` covers every packet `inner` covers.
pub(crate) fn contains_all(outer: &TrafficSelector, inner: &TrafficSelector) -> bool {
    same_family(outer.start, inner.start)
        && (outer.ip_proto == 0 || outer.ip_proto == inner.ip_proto)
        && outer.start_port <= inner.start_port
        && outer.end_port >= inner.end_port
        && outer.start <= inner.start
        && outer.end >= inner.end
}

fn intersect(a: &TrafficSelector, b: &TrafficSelector) -> Option<TrafficSelector> {
    if !same_family(a.start, b.start) {
        return None;
    }
    let ip_proto = proto_ok(a.ip_proto, b.ip_proto)?;
    let start_port = a.start_port.max(b.start_port);
    let end_port = a.end_port.min(b.end_port);
    let start = a.start.max(b.start);
    let end = a.end.min(b.end);
    (start_port <= end_port && start <= end).then_some(TrafficSelector {
        ip_proto,
        start_port,
        end_port,
        start,
        end,
    })
}

/// The part of `proposed` that `allowed` permits.
pub(crate) fn narrow(
    proposed: &[TrafficSelector],
    allowed: &[TrafficSelector],
) -> Vec<TrafficSelector> {
    let mut out: Vec<TrafficSelector> = Vec::new();
    for p in proposed {
        for a in allowed {
            if let Some(x) = intersect(p, a) {
                if !out.contains(&x) {
                    out.push(x);
                }
            }
        }
    }
    out
}

impl IkeSa {
    /// KEYMAT for a CHILD_SA. `we_initiated` refers to the exchange that created it: its
    /// initiator's outbound keys come first (RFC 7296 2.17).
    pub(super) fn make_child(
        &self,
        input: ChildKeysInput,
        we_initiated: Option<bool>,
    ) -> Option<ChildSaInfo> {
        let s = self.suite.as_ref()?;
        let k = self.keys.as_ref()?;
        let we_initiated = we_initiated.unwrap_or(self.role == Role::Initiator);
        let keys = derive_child_keys(
            s.prf,
            &k.sk_d,
            input.suite.encr,
            input.suite.integ,
            input.gir.as_deref(),
            &input.ni,
            &input.nr,
        )
        .ok()?;
        let (ein, iin, eout, iout) = if we_initiated {
            (keys.encr_r, keys.integ_r, keys.encr_i, keys.integ_i)
        } else {
            (keys.encr_i, keys.integ_i, keys.encr_r, keys.integ_r)
        };
        Some(ChildSaInfo {
            spi_in: input.spi_in,
            spi_out: input.spi_out,
            encr: input.suite.encr,
            integ: input.suite.integ,
            esn: input.suite.esn,
            encr_key_in: ein,
            integ_key_in: iin,
            encr_key_out: eout,
            integ_key_out: iout,
            ts_local: input.ts_local,
            ts_remote: input.ts_remote,
            tia: self.vip,
            dns: self.dns.clone(),
            local: self.local,
            remote: self.remote,
            udp_encap: self.udp_encap(),
        })
    }

    pub(super) fn install_child(&mut self, now: Instant, info: ChildSaInfo, replaces: Option<u32>) {
        let ev = match replaces {
            Some(old) => Event::ChildSaRekeyed {
                old_spi_in: old,
                new: info.clone(),
            },
            None => Event::ChildSaUp(info.clone()),
        };
        self.children.insert(
            info.spi_in,
            Child {
                info,
                created: now,
                rekeyed: false,
            },
        );
        self.events.push_back(ev);
    }

    pub(super) fn queue_delete_ike(&mut self) {
        if !self.work.contains(&Work::DeleteIke) {
            self.work.push_back(Work::DeleteIke);
        }
    }

    pub(super) fn start_rekey_child(&mut self, now: Instant, old_spi_in: u32) {
        let Some(c) = self.children.get(&old_spi_in) else {
            return;
        };
        let (ts_local, ts_remote) = (c.info.ts_local.clone(), c.info.ts_remote.clone());
        let cfg = self.cfg.clone();
        let ni = nonce(&mut self.rng);
        let spi_in = super::child_spi(&mut self.rng);
        let mut props = cfg.esp_proposals.clone();
        if let Some(g) = self.child_pfs_group {
            // The peer asked for this group with INVALID_KE_PAYLOAD.
            for p in props.iter_mut() {
                p.pfs = Some(g);
            }
        }
        let pfs = props.first().and_then(|p| p.pfs);
        let share = match pfs {
            Some(g) => KeyShare::generate(g, &mut self.rng).ok(),
            None => None,
        };
        let mut p = vec![
            Payload::Notify(Notify {
                protocol: ProtocolId::ESP,
                spi: old_spi_in.to_be_bytes().to_vec(),
                ty: NotifyType::REKEY_SA,
                data: vec![],
            }),
            proposal::esp_sa_payload(&props, spi_in, true),
            Payload::Nonce(ni.clone()),
        ];
        if let Some(s) = &share {
            p.push(Payload::Ke {
                group: s.group(),
                data: s.public().to_vec(),
            });
        }
        p.push(Payload::TsI(ts_local.clone()));
        p.push(Payload::TsR(ts_remote.clone()));
        let r = RekeyChild {
            old_spi_in,
            spi_in,
            ni,
            share,
            ts_local,
            ts_remote,
            collision: None,
        };
        self.send_request(
            now,
            ExchangeType::CREATE_CHILD_SA,
            &p,
            Pending::RekeyChild(Box::new(r)),
        );
    }

    pub(super) fn handle_rekey_child_response(
        &mut self,
        now: Instant,
        r: RekeyChild,
        payloads: Vec<Payload>,
    ) {
        let parts = Parts::of(&payloads);
        let fail = |s: &mut Self, e| {
            s.events.push_back(Event::ChildSaFailed(e));
            if let Some(c) = s.children.get_mut(&r.old_spi_in) {
                c.rekeyed = false;
                c.created = now;
            }
        };
        if let Some(n) = parts.notify(NotifyType::INVALID_KE_PAYLOAD) {
            let g = <[u8; 2]>::try_from(n.data.as_slice())
                .map(|g| crate::wire::DhId(u16::from_be_bytes(g)));
            if let Ok(g) = g {
                let offered = self.cfg.esp_proposals.iter().any(|p| p.pfs.is_some());
                if offered && self.child_pfs_group != Some(g) && crate::crypto::dh::is_supported(g)
                {
                    // RFC 7296 1.3: retry with the group the responder wants.
                    self.child_pfs_group = Some(g);
                    self.work.push_front(Work::RekeyChild(r.old_spi_in));
                    return;
                }
            }
        }
        if let Some(e) = parts.error() {
            return fail(self, IkeError::PeerNotify(e));
        }
        let (Some(sa), Some(nr)) = (parts.sa, parts.nonce) else {
            return fail(
                self,
                IkeError::Protocol("CREATE_CHILD_SA response lacks SA/Nr"),
            );
        };
        let Some((suite, spi_out)) = proposal::accept_esp(sa, &self.cfg.esp_proposals) else {
            return fail(self, IkeError::NoProposalChosen);
        };
        let gir = match (r.share, parts.ke) {
            (Some(s), Some((g, data))) if g == s.group() => match s.agree(data) {
                Ok(x) => Some(x),
                Err(_) => return fail(self, IkeError::Protocol("bad KE")),
            },
            (None, None) => None,
            _ => return fail(self, IkeError::Protocol("KE mismatch")),
        };
        let input = ChildKeysInput {
            suite,
            spi_in: r.spi_in,
            spi_out,
            ts_local: parts.tsi.map(<[_]>::to_vec).unwrap_or(r.ts_local),
            ts_remote: parts.tsr.map(<[_]>::to_vec).unwrap_or(r.ts_remote),
            ni: r.ni,
            nr: nr.to_vec(),
            gir,
        };
        let ours_lost = r.collision.as_ref().is_some_and(|(peer_ni, our_nr)| {
            // RFC 7296 2.8.1: the SA created with the lowest of the four nonces is redundant
            // and is closed by the node that created it.
            let ours = input.ni.as_slice().min(input.nr.as_slice());
            let theirs = peer_ni.as_slice().min(our_nr.as_slice());
            ours < theirs
        });
        if let Some(info) = self.make_child(input, Some(true)) {
            let new_spi = info.spi_in;
            self.install_child(now, info, Some(r.old_spi_in));
            if ours_lost {
                // Our new SA is the redundant one; the peer deletes the old SA.
                self.work.push_back(Work::DeleteChild(new_spi));
            } else {
                // The exchange initiator deletes the old SA (RFC 7296 1.3.3).
                self.work.push_back(Work::DeleteChild(r.old_spi_in));
            }
        }
    }

    pub(super) fn handle_create_child_request(
        &mut self,
        now: Instant,
        from: SocketAddr,
        to: SocketAddr,
        header: &Header,
        payloads: Vec<Payload>,
    ) {
        let parts = Parts::of(&payloads);
        let mid = header.message_id;
        let reply = |s: &mut Self, ty: NotifyType, data: Vec<u8>| {
            let n = [Payload::Notify(Notify::new(ty, data))];
            s.send_response(ExchangeType::CREATE_CHILD_SA, mid, &n, from, to);
        };
        let (Some(sa), Some(ni)) = (parts.sa, parts.nonce) else {
            return reply(self, NotifyType::INVALID_SYNTAX, vec![]);
        };
        if sa.first().map(|p| p.protocol) == Some(ProtocolId::IKE) {
            return self.handle_rekey_ike_request(now, from, to, header, &parts);
        }
        let Some(rekey) = parts
            .notify(NotifyType::REKEY_SA)
            .filter(|n| n.protocol == ProtocolId::ESP)
        else {
            // Only rekeying is supported, not additional CHILD_SAs.
            return reply(self, NotifyType::NO_ADDITIONAL_SAS, vec![]);
        };
        let old = <[u8; 4]>::try_from(rekey.spi.as_slice())
            .ok()
            .map(u32::from_be_bytes);
        let Some(old_spi_in) = self
            .children
            .values()
            .find(|c| Some(c.info.spi_out) == old)
            .map(|c| c.info.spi_in)
        else {
            return reply(self, NotifyType::CHILD_SA_NOT_FOUND, vec![]);
        };
        let (suite, num, spi_out) =
            match proposal::select_esp(sa, &self.cfg.esp_proposals, parts.ke.map(|k| k.0)) {
                Ok(x) => x,
                Err(SelectError::InvalidKe(g)) => {
                    return reply(
                        self,
                        NotifyType::INVALID_KE_PAYLOAD,
                        g.0.to_be_bytes().to_vec(),
                    )
                }
                Err(SelectError::NoProposal) => {
                    return reply(self, NotifyType::NO_PROPOSAL_CHOSEN, vec![])
                }
            };
        let mut ke_out = None;
        let gir = match (suite.dh, parts.ke) {
            (Some(g), Some((_, data))) => {
                let Ok(share) = KeyShare::generate(g, &mut self.rng) else {
                    return reply(self, NotifyType::NO_PROPOSAL_CHOSEN, vec![]);
                };
                ke_out = Some(Payload::Ke {
                    group: g,
                    data: share.public().to_vec(),
                });
                match share.agree(data) {
                    Ok(x) => Some(x),
                    Err(_) => return reply(self, NotifyType::INVALID_SYNTAX, vec![]),
                }
            }
            _ => None,
        };
        let Some(c) = self.children.get_mut(&old_spi_in) else {
            return;
        };
        c.rekeyed = true;
        let (ts_local, ts_remote) = (c.info.ts_local.clone(), c.info.ts_remote.clone());
        let nr = nonce(&mut self.rng);
        let nr_for_collision = nr.clone();
        let spi_in = super::child_spi(&mut self.rng);
        let mut p = vec![
            proposal::chosen_esp_payload(&suite, num, spi_in),
            Payload::Nonce(nr.clone()),
        ];
        p.extend(ke_out);
        p.push(Payload::TsI(ts_remote.clone()));
        p.push(Payload::TsR(ts_local.clone()));
        self.send_response(ExchangeType::CREATE_CHILD_SA, mid, &p, from, to);
        let input = ChildKeysInput {
            suite,
            spi_in,
            spi_out,
            ts_local,
            ts_remote,
            ni: ni.to_vec(),
            nr,
            gir,
        };
        let peer_ni = input.ni.clone();
        if let Some(info) = self.make_child(input, Some(false)) {
            self.install_child(now, info, Some(old_spi_in));
        }
        // Simultaneous rekeying of the same CHILD_SA by both ends?
        if let Some(super::Outstanding {
            kind: Pending::RekeyChild(r),
            ..
        }) = self.outstanding.as_mut()
        {
            if r.old_spi_in == old_spi_in {
                r.collision = Some((peer_ni, nr_for_collision));
            }
        }
    }

    pub(super) fn start_delete_child(&mut self, now: Instant, spi_in: u32) {
        if !self.children.contains_key(&spi_in) {
            return;
        }
        let p = [Payload::Delete(Delete {
            protocol: ProtocolId::ESP,
            spi_size: 4,
            spis: vec![spi_in.to_be_bytes().to_vec()],
        })];
        self.send_request(
            now,
            ExchangeType::INFORMATIONAL,
            &p,
            Pending::DeleteChild { spi_in },
        );
    }

    pub(super) fn finish_delete_child(&mut self, spi_in: u32) {
        if let Some(c) = self.children.remove(&spi_in) {
            self.events.push_back(Event::ChildSaDown {
                spi_in: c.info.spi_in,
                spi_out: c.info.spi_out,
            });
        }
    }

    pub(super) fn start_rekey_ike(&mut self, now: Instant) {
        let cfg = self.cfg.clone();
        let spi = nonzero_u64(&mut self.rng);
        let ni = nonce(&mut self.rng);
        let group = self.suite.map(|s| s.dh).unwrap_or_default();
        let Ok(share) = KeyShare::generate(group, &mut self.rng) else {
            return;
        };
        let p = [
            proposal::ike_sa_payload(&cfg.ike_proposals, &spi.to_be_bytes()),
            Payload::Nonce(ni.clone()),
            Payload::Ke {
                group,
                data: share.public().to_vec(),
            },
        ];
        let r = RekeyIke {
            spi,
            ni,
            share: Some(share),
        };
        self.send_request(
            now,
            ExchangeType::CREATE_CHILD_SA,
            &p,
            Pending::RekeyIke(Box::new(r)),
        );
    }

    fn retry_rekey_ike(&mut self, now: Instant) {
        let jitter =
            Duration::from_millis(5000 + u64::from(rand::RngCore::next_u32(&mut self.rng) % 15000));
        match self.cfg.ike_lifetime {
            Some(iv) => self.created = now.checked_sub(iv).map_or(now, |t| t + jitter),
            None => self.created = now,
        }
    }

    pub(super) fn handle_rekey_ike_response(
        &mut self,
        now: Instant,
        r: RekeyIke,
        payloads: Vec<Payload>,
    ) {
        let parts = Parts::of(&payloads);
        let (Some(sa), Some(nr), Some((g, data))) = (parts.sa, parts.nonce, parts.ke) else {
            // Keep the current SA and try again after a random 5..20 s (RFC 7296 2.25:
            // TEMPORARY_FAILURE, e.g. a rekey collision), or at the next lifetime.
            self.retry_rekey_ike(now);
            return;
        };
        let Some(suite) = proposal::accept_ike(sa, &self.cfg.ike_proposals) else {
            self.created = now;
            return;
        };
        let peer_spi = sa
            .first()
            .and_then(|p| <[u8; 8]>::try_from(p.spi.as_slice()).ok())
            .map(u64::from_be_bytes);
        let (Some(share), Some(peer_spi)) = (r.share, peer_spi) else {
            return;
        };
        if g != suite.dh || share.group() != g || peer_spi == 0 {
            self.created = now;
            return;
        }
        let Ok(gir) = share.agree(data) else {
            return;
        };
        self.switch_to_rekeyed(
            now,
            suite,
            Role::Initiator,
            r.spi,
            peer_spi,
            &gir,
            &r.ni,
            nr,
        );
    }

    fn handle_rekey_ike_request(
        &mut self,
        now: Instant,
        from: SocketAddr,
        to: SocketAddr,
        header: &Header,
        parts: &Parts<'_>,
    ) {
        let mid = header.message_id;
        let reply = |s: &mut Self, ty: NotifyType, data: Vec<u8>| {
            let n = [Payload::Notify(Notify::new(ty, data))];
            s.send_response(ExchangeType::CREATE_CHILD_SA, mid, &n, from, to);
        };
        let (Some(sa), Some(ni), Some((g, data))) = (parts.sa, parts.nonce, parts.ke) else {
            return reply(self, NotifyType::INVALID_SYNTAX, vec![]);
        };
        let (suite, num) = match proposal::select_ike(sa, &self.cfg.ike_proposals, g) {
            Ok(x) => x,
            Err(SelectError::InvalidKe(g)) => {
                return reply(
                    self,
                    NotifyType::INVALID_KE_PAYLOAD,
                    g.0.to_be_bytes().to_vec(),
                )
            }
            Err(SelectError::NoProposal) => {
                return reply(self, NotifyType::NO_PROPOSAL_CHOSEN, vec![])
            }
        };
        let peer_spi = sa
            .iter()
            .find(|p| p.num == num)
            .and_then(|p| <[u8; 8]>::try_from(p.spi.as_slice()).ok())
            .map(u64::from_be_bytes);
        let Some(peer_spi) = peer_spi.filter(|s| *s != 0) else {
            return reply(self, NotifyType::INVALID_SYNTAX, vec![]);
        };
        let busy = matches!(
            self.outstanding.as_ref().map(|o| &o.kind),
            Some(
                Pending::RekeyIke(_)
                    | Pending::RekeyChild(_)
                    | Pending::DeleteChild { .. }
                    | Pending::UpdateAddresses
            )
        );
        if busy || self.retired.is_some() {
            // Simultaneous rekeying is not handled; ask the peer to retry (RFC 7296 2.25).
            return reply(self, NotifyType::TEMPORARY_FAILURE, vec![]);
        }
        let Ok(share) = KeyShare::generate(suite.dh, &mut self.rng) else {
            return reply(self, NotifyType::NO_PROPOSAL_CHOSEN, vec![]);
        };
        let public = share.public().to_vec();
        let Ok(gir) = share.agree(data) else {
            return reply(self, NotifyType::INVALID_SYNTAX, vec![]);
        };
        let spi = nonzero_u64(&mut self.rng);
        let nr = nonce(&mut self.rng);
        let p = [
            proposal::chosen_ike_payload(&suite, num, &spi.to_be_bytes()),
            Payload::Nonce(nr.clone()),
            Payload::Ke {
                group: suite.dh,
                data: public,
            },
        ];
        self.send_response(ExchangeType::CREATE_CHILD_SA, mid, &p, from, to);
        self.switch_to_rekeyed(now, suite, Role::Responder, peer_spi, spi, &gir, ni, &nr);
    }

    /// Replace this SA by its rekeyed successor; the old one is kept in `retired` until its
    /// delete exchange is done. `role` is our role in the *new* SA.
    #[allow(clippy::too_many_arguments)]
    fn switch_to_rekeyed(
        &mut self,
        now: Instant,
        suite: Suite,
        role: Role,
        spi_i: u64,
        spi_r: u64,
        gir: &[u8],
        ni: &[u8],
        nr: &[u8],
    ) {
        let (Some(old_suite), Some(old_keys)) = (self.suite, self.keys.as_ref()) else {
            return;
        };
        let seed = skeyseed_rekey(old_suite.prf, &old_keys.sk_d, gir, ni, nr);
        let Ok(keys) = derive_ike_keys(
            suite.prf,
            suite.encr,
            suite.integ,
            &seed,
            ni,
            nr,
            spi_i,
            spi_r,
        ) else {
            return;
        };
        let rng = rand::rngs::StdRng::from_seed({
            let mut s = [0u8; 32];
            rand::RngCore::fill_bytes(&mut self.rng, &mut s);
            s
        });
        let mut fresh = IkeSa::new(self.cfg.clone(), rng, role, self.local, self.remote, now);
        fresh.state = State::Established;
        fresh.spi_i = spi_i;
        fresh.spi_r = spi_r;
        fresh.suite = Some(suite);
        fresh.keys = Some(keys);
        fresh.ni = ni.to_vec();
        fresh.nr = nr.to_vec();
        fresh.local_nat = self.local_nat;
        fresh.remote_nat = self.remote_nat;
        fresh.peer_frag = self.peer_frag;
        fresh.mobike = self.mobike;
        fresh.vip = self.vip;
        fresh.dns = self.dns.clone();
        fresh.children = std::mem::take(&mut self.children);
        fresh.work = std::mem::take(&mut self.work);
        fresh
            .work
            .retain(|w| *w != Work::DeleteIke && *w != Work::RekeyIke);
        fresh.stats = self.stats;
        fresh.events = std::mem::take(&mut self.events);
        fresh.transmits = std::mem::take(&mut self.transmits);
        fresh.events.push_back(Event::IkeSaRekeyed { spi_i, spi_r });
        let mut old = std::mem::replace(self, fresh);
        if role == Role::Initiator {
            // We initiated the rekey: we delete the old SA.
            old.work.clear();
            old.work.push_back(Work::DeleteIke);
            old.drive(now);
        }
        self.retired = Some(Box::new(old));
        self.absorb_retired();
    }
}
