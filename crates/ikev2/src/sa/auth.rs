//! IKE_AUTH with PSK (RFC 7296 1.2, 2.15) or certificates (RFC 7427), CP (3.15), first
//! CHILD_SA and TS narrowing (2.9).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

use super::child::{contains_all, narrow, ChildKeysInput};
use super::parts::Parts;
use super::proposal::{self, SelectError};
use super::{IkeSa, Pending, Pool, Role, State};
use crate::crypto::{cert, ct_eq, psk_auth, signed_octets};
use crate::event::{Event, IkeError};
use crate::wire::{
    AuthMethod, CertEncoding, CfgAttrType, CfgAttribute, CfgType, Configuration, Delete,
    ExchangeType, Header, Identification, Notify, NotifyType, Payload, ProtocolId, TrafficSelector,
};

fn ipv4_of(v: &[u8]) -> Option<Ipv4Addr> {
    let a: [u8; 4] = v.get(..4)?.try_into().ok()?;
    Some(Ipv4Addr::from(a))
}

impl IkeSa {
    /// The octets the initiator (`initiator_side`) or the responder signs (RFC 7296 2.15).
    fn signed(&self, initiator_side: bool, id: &Identification) -> Option<Vec<u8>> {
        let s = self.suite.as_ref()?;
        let k = self.keys.as_ref()?;
        let (msg, nonce, skp) = if initiator_side {
            (&self.hs.init_req, &self.nr, &k.sk_pi)
        } else {
            (&self.hs.init_resp, &self.ni, &k.sk_pr)
        };
        Some(signed_octets(s.prf, msg, nonce, skp, &id.body()))
    }

    /// Our CERT (when we use one) and AUTH payloads.
    fn my_auth(&self, initiator_side: bool) -> Option<Vec<Payload>> {
        let cfg = &self.cfg;
        let signed = self.signed(initiator_side, &cfg.local_id)?;
        Some(match &cfg.local_cert {
            Some(c) => vec![
                Payload::Cert {
                    encoding: CertEncoding::X509_SIGNATURE,
                    data: c.cert_der.clone(),
                },
                Payload::Auth {
                    method: AuthMethod::DIGITAL_SIGNATURE,
                    data: cert::sign(c, &signed).ok()?,
                },
            ],
            // Never authenticate with an empty key.
            None if cfg.psk.is_empty() => return None,
            None => vec![Payload::Auth {
                method: AuthMethod::SHARED_KEY_MIC,
                data: psk_auth(self.suite_prf()?, &cfg.psk, &signed),
            }],
        })
    }

    fn suite_prf(&self) -> Option<crate::crypto::Prf> {
        self.suite.as_ref().map(|s| s.prf)
    }

    /// Check the peer's ID and AUTH (PSK MAC or certificate signature).
    fn verify_peer(&self, peer_is_initiator: bool, parts: &Parts<'_>) -> bool {
        let cfg = &self.cfg;
        let id = if peer_is_initiator {
            parts.idi
        } else {
            parts.idr
        };
        let (Some(id), Some((method, data))) = (id, parts.auth) else {
            return false;
        };
        if !cfg.remote_id.as_ref().is_none_or(|r| r.matches(id)) {
            return false;
        }
        let Some(signed) = self.signed(peer_is_initiator, id) else {
            return false;
        };
        match method {
            AuthMethod::SHARED_KEY_MIC if !cfg.psk.is_empty() => self
                .suite_prf()
                .is_some_and(|prf| ct_eq(&psk_auth(prf, &cfg.psk, &signed), data)),
            AuthMethod::DIGITAL_SIGNATURE if !cfg.trust_anchors.is_empty() => match parts.cert {
                Some(c) => cert::verify(
                    c,
                    &parts.intermediates,
                    &cfg.trust_anchors,
                    self.unix_time,
                    id,
                    method,
                    data,
                    &signed,
                )
                .is_ok(),
                None => false,
            },
            _ => false,
        }
    }

    /// Initiator: send IKE_AUTH with IDi, AUTH, CP request, SA, TSi, TSr.
    pub(super) fn send_auth(&mut self, now: Instant) {
        let cfg = self.cfg.clone();
        let Some(mut auth) = self.my_auth(true) else {
            return self.fail(IkeError::Protocol("cannot compute AUTH"));
        };
        let mut p = vec![
            Payload::IdI(cfg.local_id.clone()),
            Payload::Notify(Notify::new(NotifyType::INITIAL_CONTACT, vec![])),
        ];
        // RFC 7296 1.2 order: IDi, [CERT,] [CERTREQ,] [IDr,] AUTH
        if auth.len() == 2 {
            p.push(auth.remove(0));
        }
        if !cfg.trust_anchors.is_empty() {
            p.push(Payload::CertReq {
                encoding: CertEncoding::X509_SIGNATURE,
                data: cert::certreq_hashes(&cfg.trust_anchors),
            });
        }
        if let Some(r) = &cfg.remote_id {
            p.push(Payload::IdR(r.clone()));
        }
        p.extend(auth);
        if cfg.request_vip {
            p.push(Payload::Cp(Configuration {
                ty: CfgType::CFG_REQUEST,
                attributes: vec![
                    CfgAttribute {
                        ty: CfgAttrType::INTERNAL_IP4_ADDRESS,
                        value: vec![],
                    },
                    CfgAttribute {
                        ty: CfgAttrType::INTERNAL_IP4_DNS,
                        value: vec![],
                    },
                ],
            }));
        }
        p.push(proposal::esp_sa_payload(
            &cfg.esp_proposals,
            self.hs.child_spi,
            false,
        ));
        p.push(Payload::TsI(cfg.ts_local.clone()));
        p.push(Payload::TsR(cfg.ts_remote.clone()));
        if cfg.mobike {
            p.push(Payload::Notify(Notify::new(
                NotifyType::MOBIKE_SUPPORTED,
                vec![],
            )));
        }
        self.state = State::AuthSent;
        self.send_request(now, ExchangeType::IKE_AUTH, &p, Pending::Auth);
    }

    /// Responder: verify the initiator, assign an address, pick the CHILD_SA and answer.
    pub(super) fn handle_auth_request(
        &mut self,
        now: Instant,
        from: SocketAddr,
        to: SocketAddr,
        header: &Header,
        payloads: Vec<Payload>,
        pool: &mut Pool,
    ) {
        let cfg = self.cfg.clone();
        let parts = Parts::of(&payloads);
        let mid = header.message_id;
        // The initiator may have floated to port 4500 (NAT-T / MOBIKE).
        self.remote = from;
        self.local = to;
        if !self.verify_peer(true, &parts) {
            let n = [Payload::Notify(Notify::new(
                NotifyType::AUTHENTICATION_FAILED,
                vec![],
            ))];
            self.send_response(ExchangeType::IKE_AUTH, mid, &n, from, to);
            return self.fail(IkeError::AuthenticationFailed);
        }
        let Some(my_auth) = self.my_auth(false) else {
            return;
        };
        let mut resp = vec![Payload::IdR(cfg.local_id.clone())];
        resp.extend(my_auth);
        self.mobike = cfg.mobike && parts.notify(NotifyType::MOBIKE_SUPPORTED).is_some();
        self.state = State::Established;
        self.events.push_back(Event::IkeSaUp {
            spi_i: self.spi_i,
            spi_r: self.spi_r,
            local: self.local,
            remote: self.remote,
            local_nat: self.local_nat,
            remote_nat: self.remote_nat,
            mobike: self.mobike,
        });
        match self.auth_child(&parts, pool) {
            Ok((child_payloads, input)) => {
                resp.extend(child_payloads);
                if self.mobike {
                    resp.push(Payload::Notify(Notify::new(
                        NotifyType::MOBIKE_SUPPORTED,
                        vec![],
                    )));
                }
                self.send_response(ExchangeType::IKE_AUTH, mid, &resp, from, to);
                if let Some(info) = self.make_child(input, None) {
                    self.install_child(now, info, None);
                }
            }
            Err((ty, e)) => {
                resp.push(Payload::Notify(Notify::new(ty, vec![])));
                if self.mobike {
                    resp.push(Payload::Notify(Notify::new(
                        NotifyType::MOBIKE_SUPPORTED,
                        vec![],
                    )));
                }
                self.send_response(ExchangeType::IKE_AUTH, mid, &resp, from, to);
                self.events.push_back(Event::ChildSaFailed(e));
            }
        }
        self.last_rx = now;
    }

    /// Responder side of the first CHILD_SA: CP, proposal, narrowing.
    fn auth_child(
        &mut self,
        parts: &Parts<'_>,
        pool: &mut Pool,
    ) -> Result<(Vec<Payload>, ChildKeysInput), (NotifyType, IkeError)> {
        let cfg = self.cfg.clone();
        let (Some(sa), Some(tsi), Some(tsr)) = (parts.sa, parts.tsi, parts.tsr) else {
            return Err((
                NotifyType::INVALID_SYNTAX,
                IkeError::Protocol("IKE_AUTH lacks SA/TS"),
            ));
        };
        let (suite, num, spi_out) = match proposal::select_esp(sa, &cfg.esp_proposals, None) {
            Ok(x) => x,
            Err(SelectError::NoProposal | SelectError::InvalidKe(_)) => {
                return Err((NotifyType::NO_PROPOSAL_CHOSEN, IkeError::NoProposalChosen))
            }
        };
        let mut out = Vec::new();
        let mut vip = None;
        if let Some(cp) = parts.cp.filter(|c| c.ty == CfgType::CFG_REQUEST) {
            if cp
                .attributes
                .iter()
                .any(|a| a.ty == CfgAttrType::INTERNAL_IP4_ADDRESS)
            {
                let Some(a) = pool.allocate() else {
                    return Err((
                        NotifyType::INTERNAL_ADDRESS_FAILURE,
                        IkeError::PeerNotify(NotifyType::INTERNAL_ADDRESS_FAILURE),
                    ));
                };
                vip = Some(a);
                let mut attrs = vec![CfgAttribute {
                    ty: CfgAttrType::INTERNAL_IP4_ADDRESS,
                    value: a.octets().to_vec(),
                }];
                if cp
                    .attributes
                    .iter()
                    .any(|a| a.ty == CfgAttrType::INTERNAL_IP4_DNS)
                {
                    for d in &cfg.dns {
                        attrs.push(CfgAttribute {
                            ty: CfgAttrType::INTERNAL_IP4_DNS,
                            value: d.octets().to_vec(),
                        });
                    }
                }
                out.push(Payload::Cp(Configuration {
                    ty: CfgType::CFG_REPLY,
                    attributes: attrs,
                }));
            }
        }
        // Narrow: the initiator's side becomes its virtual IP when we assigned one.
        let ts_i = match vip {
            Some(a) => {
                let host = TrafficSelector::ipv4_host(a);
                if tsi.iter().any(|t| contains_all(t, &host)) {
                    vec![host]
                } else {
                    Vec::new()
                }
            }
            None => narrow(tsi, &cfg.ts_remote),
        };
        let ts_r = narrow(tsr, &cfg.ts_local);
        if ts_i.is_empty() || ts_r.is_empty() {
            if let Some(a) = vip {
                pool.release(a);
            }
            return Err((NotifyType::TS_UNACCEPTABLE, IkeError::TsUnacceptable));
        }
        self.vip = vip;
        self.dns = if vip.is_some() {
            cfg.dns.clone()
        } else {
            Vec::new()
        };
        let spi_in = super::child_spi(&mut self.rng);
        out.push(proposal::chosen_esp_payload(&suite, num, spi_in));
        out.push(Payload::TsI(ts_i.clone()));
        out.push(Payload::TsR(ts_r.clone()));
        Ok((
            out,
            ChildKeysInput {
                suite,
                spi_in,
                spi_out,
                ts_local: ts_r,
                ts_remote: ts_i,
                ni: self.ni.clone(),
                nr: self.nr.clone(),
                gir: None,
            },
        ))
    }

    /// Initiator: the IKE_AUTH response.
    pub(super) fn handle_auth_response(
        &mut self,
        now: Instant,
        _header: &Header,
        payloads: Vec<Payload>,
    ) {
        let cfg = self.cfg.clone();
        let parts = Parts::of(&payloads);
        if parts.notify(NotifyType::AUTHENTICATION_FAILED).is_some() {
            return self.fail(IkeError::PeerNotify(NotifyType::AUTHENTICATION_FAILED));
        }
        let ok = self.verify_peer(false, &parts);
        if !ok {
            // We cannot trust the peer, but the gateway thinks the IKE SA is up and holds
            // it (and any address lease) until its own DPD gives up. Tell it at once (RFC
            // 7296 2.21.2): one INFORMATIONAL with AUTHENTICATION_FAILED and a Delete of
            // the IKE SA, under the IKE_SA_INIT keys, which reveals nothing. We do not wait
            // for, or retransmit, it.
            let p = [
                Payload::Notify(Notify::new(NotifyType::AUTHENTICATION_FAILED, vec![])),
                Payload::Delete(Delete {
                    protocol: ProtocolId::IKE,
                    spi_size: 0,
                    spis: vec![],
                }),
            ];
            self.send_request(now, ExchangeType::INFORMATIONAL, &p, Pending::DeleteIke);
            return self.fail(IkeError::AuthenticationFailed);
        }
        self.mobike = cfg.mobike && parts.notify(NotifyType::MOBIKE_SUPPORTED).is_some();
        self.state = State::Established;
        self.created = now;
        self.events.push_back(Event::IkeSaUp {
            spi_i: self.spi_i,
            spi_r: self.spi_r,
            local: self.local,
            remote: self.remote,
            local_nat: self.local_nat,
            remote_nat: self.remote_nat,
            mobike: self.mobike,
        });
        if let Some(e) = parts.error() {
            let err = match e {
                NotifyType::NO_PROPOSAL_CHOSEN => IkeError::NoProposalChosen,
                NotifyType::TS_UNACCEPTABLE => IkeError::TsUnacceptable,
                other => IkeError::PeerNotify(other),
            };
            self.events.push_back(Event::ChildSaFailed(err));
            return;
        }
        if let Some(cp) = parts.cp.filter(|c| c.ty == CfgType::CFG_REPLY) {
            for a in &cp.attributes {
                match a.ty {
                    CfgAttrType::INTERNAL_IP4_ADDRESS => self.vip = ipv4_of(&a.value),
                    CfgAttrType::INTERNAL_IP4_DNS => self.dns.extend(ipv4_of(&a.value)),
                    _ => {}
                }
            }
        }
        let (Some(sa), Some(tsi), Some(tsr)) = (parts.sa, parts.tsi, parts.tsr) else {
            self.events
                .push_back(Event::ChildSaFailed(IkeError::Protocol(
                    "IKE_AUTH response lacks SA/TS",
                )));
            return;
        };
        let Some((suite, spi_out)) = proposal::accept_esp(sa, &cfg.esp_proposals) else {
            self.events
                .push_back(Event::ChildSaFailed(IkeError::NoProposalChosen));
            return self.queue_delete_ike();
        };
        // Accept narrowing: every returned selector must lie inside what we proposed.
        let proposed_i = if cfg.request_vip && self.vip.is_some() {
            vec![TrafficSelector::ipv4_any()]
        } else {
            cfg.ts_local.clone()
        };
        let inside = |got: &[TrafficSelector], proposed: &[TrafficSelector]| {
            !got.is_empty()
                && got
                    .iter()
                    .all(|g| proposed.iter().any(|p| contains_all(p, g)))
        };
        if !inside(tsi, &proposed_i) || !inside(tsr, &cfg.ts_remote) {
            self.events
                .push_back(Event::ChildSaFailed(IkeError::TsUnacceptable));
            return;
        }
        let input = ChildKeysInput {
            suite,
            spi_in: self.hs.child_spi,
            spi_out,
            ts_local: tsi.to_vec(),
            ts_remote: tsr.to_vec(),
            ni: self.ni.clone(),
            nr: self.nr.clone(),
            gir: None,
        };
        if let Some(info) = self.make_child(input, None) {
            self.install_child(now, info, None);
        }
        let _ = (Role::Initiator, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    }
}
