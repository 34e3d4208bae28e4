//! IKE_SA_INIT for both roles (RFC 7296 1.2, 2.6 cookies, 2.23 NAT detection).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use rand::rngs::StdRng;
use sha2::{Digest, Sha256};

use super::proposal::{self, SelectError};
use super::{nonce, nonzero_u64, IkeSa, Pending, Pool, Role, State};
use crate::config::Config;
use crate::crypto::dh::{self, KeyShare};
use crate::crypto::{ct_eq, derive_ike_keys, nat_detection_hash, skeyseed};
use crate::event::IkeError;
use crate::wire::{
    find_notify, DhId, ExchangeType, Header, Message, Notify, NotifyType, Payload, FLAG_RESPONSE,
};

/// What a responder does with an IKE_SA_INIT request.
pub(crate) enum InitOutcome {
    /// A stateless answer (COOKIE, INVALID_KE_PAYLOAD, NO_PROPOSAL_CHOSEN, errors).
    Reply(Vec<u8>),
    /// A new half-open SA whose response is already queued.
    Created(Box<IkeSa>),
    Drop,
}

/// The address our NAT_DETECTION_SOURCE_IP hashes with `force_encap`: none of ours,
/// so the peer concludes there is a NAT in front of us.
pub(crate) const FAKE_NAT_SOURCE: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::UNSPECIFIED,
    0,
));

fn nat_notifies(spi_i: u64, spi_r: u64, src: SocketAddr, dst: SocketAddr) -> [Payload; 2] {
    [
        Payload::Notify(Notify::new(
            NotifyType::NAT_DETECTION_SOURCE_IP,
            nat_detection_hash(spi_i, spi_r, src.ip(), src.port()).to_vec(),
        )),
        Payload::Notify(Notify::new(
            NotifyType::NAT_DETECTION_DESTINATION_IP,
            nat_detection_hash(spi_i, spi_r, dst.ip(), dst.port()).to_vec(),
        )),
    ]
}

/// (source behind NAT, destination behind NAT) from the NAT-D notifies received in a message
/// that went `src` -> `dst`. No NAT-D notifies means no detection.
fn nat_check(
    payloads: &[Payload],
    spi_i: u64,
    spi_r: u64,
    src: SocketAddr,
    dst: SocketAddr,
) -> (bool, bool) {
    let mut saw_src = false;
    let mut src_match = false;
    let mut dst_match = None;
    for p in payloads {
        if let Payload::Notify(n) = p {
            if n.ty == NotifyType::NAT_DETECTION_SOURCE_IP {
                saw_src = true;
                src_match |= ct_eq(
                    &n.data,
                    &nat_detection_hash(spi_i, spi_r, src.ip(), src.port()),
                );
            } else if n.ty == NotifyType::NAT_DETECTION_DESTINATION_IP {
                dst_match = Some(ct_eq(
                    &n.data,
                    &nat_detection_hash(spi_i, spi_r, dst.ip(), dst.port()),
                ));
            }
        }
    }
    (saw_src && !src_match, dst_match == Some(false))
}

fn cookie_for(secret: &[u8; 32], ni: &[u8], from: SocketAddr, spi_i: u64) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(ni);
    match from.ip() {
        std::net::IpAddr::V4(a) => h.update(a.octets()),
        std::net::IpAddr::V6(a) => h.update(a.octets()),
    }
    h.update(spi_i.to_be_bytes());
    h.update(secret);
    let mut v = vec![0u8]; // version of the secret
    v.extend_from_slice(&h.finalize());
    v
}

fn stateless_reply(h: &Header, n: Notify) -> Vec<u8> {
    Message {
        header: Header {
            spi_r: 0,
            flags: FLAG_RESPONSE,
            ..*h
        },
        payloads: vec![Payload::Notify(n)],
    }
    .emit()
}

impl IkeSa {
    /// Initiator: choose SPI, nonce and key share, then send IKE_SA_INIT.
    pub fn start_initiator(&mut self, now: Instant) {
        self.spi_i = nonzero_u64(&mut self.rng);
        self.ni = nonce(&mut self.rng);
        self.hs.child_spi = super::child_spi(&mut self.rng);
        let group = self
            .cfg
            .ike_proposals
            .first()
            .and_then(|p| p.dh.first().copied())
            .unwrap_or(DhId::CURVE25519);
        match KeyShare::generate(group, &mut self.rng) {
            Ok(s) => self.hs.share = Some(s),
            Err(_) => return self.fail(IkeError::Protocol("unsupported DH group")),
        }
        self.send_init(now);
    }

    fn send_init(&mut self, now: Instant) {
        let Some(share) = self.hs.share.as_ref() else {
            return;
        };
        let mut p = Vec::new();
        if let Some(c) = &self.hs.cookie {
            p.push(Payload::Notify(Notify::new(NotifyType::COOKIE, c.clone())));
        }
        p.push(proposal::ike_sa_payload(&self.cfg.ike_proposals, &[]));
        p.push(Payload::Ke {
            group: share.group(),
            data: share.public().to_vec(),
        });
        p.push(Payload::Nonce(self.ni.clone()));
        let src = if self.cfg.force_encap {
            FAKE_NAT_SOURCE
        } else {
            self.local
        };
        p.extend(nat_notifies(self.spi_i, 0, src, self.remote));
        if self.cfg.fragmentation {
            p.push(Payload::Notify(Notify::new(
                NotifyType::IKEV2_FRAGMENTATION_SUPPORTED,
                vec![],
            )));
        }
        if self.cfg.uses_certificates() {
            p.push(Payload::Notify(Notify::new(
                NotifyType::SIGNATURE_HASH_ALGORITHMS,
                crate::crypto::cert::SIGNATURE_HASHES.to_vec(),
            )));
        }
        let m = Message {
            header: self.header(ExchangeType::IKE_SA_INIT, 0, false),
            payloads: p,
        }
        .emit();
        self.hs.init_req = m.clone();
        self.next_req_id = 1;
        self.start_outstanding(now, 0, Pending::Init, vec![m]);
    }

    pub(super) fn handle_init_message(
        &mut self,
        now: Instant,
        from: SocketAddr,
        to: SocketAddr,
        msg: &[u8],
        header: &Header,
        _pool: &mut Pool,
    ) {
        if self.role == Role::Responder {
            // A retransmitted IKE_SA_INIT request: answer with the same response.
            if !header.is_response()
                && msg == self.hs.init_req.as_slice()
                && !self.hs.init_resp.is_empty()
            {
                self.stats.replayed_responses += 1;
                let r = self.hs.init_resp.clone();
                self.push_tx(&r, to, from);
            } else {
                self.stats.dropped_unexpected += 1;
            }
            return;
        }
        let expecting = self.state == State::InitSent
            && header.is_response()
            && header.message_id == 0
            && header.spi_i == self.spi_i
            && matches!(
                self.outstanding.as_ref().map(|o| &o.kind),
                Some(Pending::Init)
            );
        if !expecting {
            self.stats.dropped_unexpected += 1;
            return;
        }
        let m = match Message::parse(msg) {
            Ok(m) => m,
            Err(_) => {
                self.stats.dropped_malformed += 1;
                return;
            }
        };
        self.last_rx = now;
        if let Some(c) = m.notify(NotifyType::COOKIE) {
            if c.data.is_empty() || c.data.len() > 64 || self.hs.cookie.as_deref() == Some(&c.data)
            {
                return self.fail(IkeError::Protocol("bad COOKIE"));
            }
            self.hs.cookie = Some(c.data.clone());
            self.outstanding = None;
            return self.send_init(now);
        }
        if let Some(n) = m.notify(NotifyType::INVALID_KE_PAYLOAD) {
            let group = match <[u8; 2]>::try_from(n.data.as_slice()) {
                Ok(g) => DhId(u16::from_be_bytes(g)),
                Err(_) => return self.fail(IkeError::Protocol("bad INVALID_KE_PAYLOAD")),
            };
            let offered = self.cfg.ike_proposals.iter().any(|p| p.dh.contains(&group));
            let same = self.hs.share.as_ref().map(|s| s.group()) == Some(group);
            if !offered || same || self.hs.invalid_ke_retries >= 3 || !dh::is_supported(group) {
                return self.fail(IkeError::PeerNotify(NotifyType::INVALID_KE_PAYLOAD));
            }
            self.hs.invalid_ke_retries += 1;
            match KeyShare::generate(group, &mut self.rng) {
                Ok(s) => self.hs.share = Some(s),
                Err(_) => return self.fail(IkeError::Protocol("DH")),
            }
            self.outstanding = None;
            return self.send_init(now);
        }
        if let Some(n) = m.notifies().find(|n| n.ty.is_error()) {
            let e = if n.ty == NotifyType::NO_PROPOSAL_CHOSEN {
                IkeError::NoProposalChosen
            } else {
                IkeError::PeerNotify(n.ty)
            };
            return self.fail(e);
        }
        let mut sa = None;
        let mut ke = None;
        let mut nr = None;
        for p in &m.payloads {
            match p {
                Payload::Sa(props) => sa = Some(props),
                Payload::Ke { group, data } => ke = Some((*group, data)),
                Payload::Nonce(n) => nr = Some(n),
                _ => {}
            }
        }
        let (Some(sa), Some((group, ke_data)), Some(nr)) = (sa, ke, nr) else {
            return self.fail(IkeError::Protocol("IKE_SA_INIT response lacks SA/KE/Nr"));
        };
        let Some(suite) = proposal::accept_ike(sa, &self.cfg.ike_proposals) else {
            return self.fail(IkeError::NoProposalChosen);
        };
        if header.spi_r == 0 || group != suite.dh {
            return self.fail(IkeError::Protocol("bad SPIr or KE group"));
        }
        let Some(share) = self.hs.share.take() else {
            return;
        };
        if share.group() != group {
            return self.fail(IkeError::Protocol("KE group differs from ours"));
        }
        let gir = match share.agree(ke_data) {
            Ok(g) => g,
            Err(_) => return self.fail(IkeError::Protocol("bad KE")),
        };
        self.spi_r = header.spi_r;
        self.nr = nr.clone();
        let seed = skeyseed(suite.prf, &self.ni, &self.nr, &gir);
        match derive_ike_keys(
            suite.prf,
            suite.encr,
            suite.integ,
            &seed,
            &self.ni,
            &self.nr,
            self.spi_i,
            self.spi_r,
        ) {
            Ok(k) => self.keys = Some(k),
            Err(_) => return self.fail(IkeError::Protocol("key derivation")),
        }
        self.suite = Some(suite);
        // The response went remote -> us: its SOURCE hash is about the peer, DESTINATION about us.
        let (remote_nat, local_nat) = nat_check(&m.payloads, self.spi_i, self.spi_r, from, to);
        self.remote_nat = remote_nat;
        self.local_nat = local_nat || self.cfg.force_encap;
        self.peer_frag = self.cfg.fragmentation
            && m.notify(NotifyType::IKEV2_FRAGMENTATION_SUPPORTED)
                .is_some();
        self.hs.init_resp = msg.to_vec();
        self.outstanding = None;
        let natd_seen = m.notify(NotifyType::NAT_DETECTION_SOURCE_IP).is_some();
        if self.udp_encap() || (self.cfg.mobike && natd_seen) {
            // RFC 7296 2.23: float to port 4500 once a NAT is detected; with MOBIKE we
            // float anyway (RFC 4555 3.3) so later moves behind a NAT keep working.
            self.local.set_port(self.cfg.natt_port);
            self.remote.set_port(self.cfg.natt_port);
        }
        self.send_auth(now);
    }

    /// Responder: process an IKE_SA_INIT request that matched no existing SA.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn respond_init(
        cfg: &Arc<Config>,
        mut rng: StdRng,
        cookie_secret: &[u8; 32],
        now: Instant,
        from: SocketAddr,
        to: SocketAddr,
        msg: &[u8],
    ) -> InitOutcome {
        let Ok(m) = Message::parse(msg) else {
            return InitOutcome::Drop;
        };
        let h = m.header;
        if h.is_response() || h.message_id != 0 || h.spi_r != 0 || h.spi_i == 0 {
            return InitOutcome::Drop;
        }
        let mut sa = None;
        let mut ke = None;
        let mut ni = None;
        for p in &m.payloads {
            match p {
                Payload::Sa(props) => sa = Some(props),
                Payload::Ke { group, data } => ke = Some((*group, data)),
                Payload::Nonce(n) => ni = Some(n),
                _ => {}
            }
        }
        let (Some(sa), Some((group, ke_data)), Some(ni)) = (sa, ke, ni) else {
            return InitOutcome::Reply(stateless_reply(
                &h,
                Notify::new(NotifyType::INVALID_SYNTAX, vec![]),
            ));
        };
        if cfg.require_cookie {
            let want = cookie_for(cookie_secret, ni, from, h.spi_i);
            let first_is_cookie = matches!(m.payloads.first(),
                Some(Payload::Notify(n)) if n.ty == NotifyType::COOKIE && ct_eq(&n.data, &want));
            if !first_is_cookie {
                return InitOutcome::Reply(stateless_reply(
                    &h,
                    Notify::new(NotifyType::COOKIE, want),
                ));
            }
        }
        let (suite, num) = match proposal::select_ike(sa, &cfg.ike_proposals, group) {
            Ok(x) => x,
            Err(SelectError::InvalidKe(g)) => {
                return InitOutcome::Reply(stateless_reply(
                    &h,
                    Notify::new(NotifyType::INVALID_KE_PAYLOAD, g.0.to_be_bytes().to_vec()),
                ))
            }
            Err(SelectError::NoProposal) => {
                return InitOutcome::Reply(stateless_reply(
                    &h,
                    Notify::new(NotifyType::NO_PROPOSAL_CHOSEN, vec![]),
                ))
            }
        };
        let Ok(share) = KeyShare::generate(suite.dh, &mut rng) else {
            return InitOutcome::Drop;
        };
        let public = share.public().to_vec();
        let Ok(gir) = share.agree(ke_data) else {
            return InitOutcome::Reply(stateless_reply(
                &h,
                Notify::new(NotifyType::INVALID_SYNTAX, vec![]),
            ));
        };
        let mut sa_ = IkeSa::new(cfg.clone(), rng, Role::Responder, to, from, now);
        sa_.spi_i = h.spi_i;
        sa_.spi_r = nonzero_u64(&mut sa_.rng);
        sa_.ni = ni.clone();
        sa_.nr = nonce(&mut sa_.rng);
        let seed = skeyseed(suite.prf, &sa_.ni, &sa_.nr, &gir);
        let Ok(keys) = derive_ike_keys(
            suite.prf,
            suite.encr,
            suite.integ,
            &seed,
            &sa_.ni,
            &sa_.nr,
            sa_.spi_i,
            sa_.spi_r,
        ) else {
            return InitOutcome::Drop;
        };
        sa_.keys = Some(keys);
        sa_.suite = Some(suite);
        // The request went initiator -> us.
        let (remote_nat, local_nat) = nat_check(&m.payloads, h.spi_i, 0, from, to);
        sa_.remote_nat = remote_nat;
        sa_.local_nat = local_nat || sa_.cfg.force_encap;
        sa_.peer_frag = cfg.fragmentation
            && find_notify(&m.payloads, NotifyType::IKEV2_FRAGMENTATION_SUPPORTED).is_some();
        let mut p = vec![
            proposal::chosen_ike_payload(&suite, num, &[]),
            Payload::Ke {
                group: suite.dh,
                data: public,
            },
            Payload::Nonce(sa_.nr.clone()),
        ];
        let ours = if sa_.cfg.force_encap {
            FAKE_NAT_SOURCE
        } else {
            to
        };
        p.extend(nat_notifies(sa_.spi_i, sa_.spi_r, ours, from));
        if sa_.peer_frag {
            p.push(Payload::Notify(Notify::new(
                NotifyType::IKEV2_FRAGMENTATION_SUPPORTED,
                vec![],
            )));
        }
        if cfg.uses_certificates()
            && find_notify(&m.payloads, NotifyType::SIGNATURE_HASH_ALGORITHMS).is_some()
        {
            p.push(Payload::Notify(Notify::new(
                NotifyType::SIGNATURE_HASH_ALGORITHMS,
                crate::crypto::cert::SIGNATURE_HASHES.to_vec(),
            )));
        }
        let resp = Message {
            header: sa_.header(ExchangeType::IKE_SA_INIT, 0, true),
            payloads: p,
        }
        .emit();
        sa_.hs.init_req = msg.to_vec();
        sa_.hs.init_resp = resp.clone();
        sa_.peer_next_req_id = 1;
        sa_.push_tx(&resp, to, from);
        InitOutcome::Created(Box::new(sa_))
    }
}
