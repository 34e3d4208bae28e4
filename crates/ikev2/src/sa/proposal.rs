//! SA payload construction and proposal selection (RFC 7296 2.7, 3.3).

use crate::config::{EspProposal, IkeProposal};
use crate::crypto::{Encr, Integ, Prf};
use crate::wire::{
    DhId, EncrId, EsnId, IntegId, Payload, PrfId, Proposal, ProtocolId, Transform, TransformType,
};

/// Negotiated IKE SA algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Suite {
    pub encr: Encr,
    pub prf: Prf,
    pub integ: Option<Integ>,
    pub dh: DhId,
}

/// Negotiated ESP algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EspSuite {
    pub encr: Encr,
    pub integ: Option<Integ>,
    pub esn: bool,
    pub dh: Option<DhId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SelectError {
    NoProposal,
    /// Acceptable, but only with this DH group (send INVALID_KE_PAYLOAD).
    InvalidKe(DhId),
}

fn encr_transform(e: Encr) -> Transform {
    Transform::with_key_len(TransformType::ENCR, e.id().0, e.key_bits())
}

/// SA payload listing our IKE proposals. `spi` is empty in IKE_SA_INIT, 8 octets in a rekey.
pub(crate) fn ike_sa_payload(props: &[IkeProposal], spi: &[u8]) -> Payload {
    let proposals = props
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut t = vec![
                encr_transform(p.encr),
                Transform::new(TransformType::PRF, p.prf.id().0),
            ];
            if let (false, Some(integ)) = (p.encr.is_aead(), p.integ) {
                t.push(Transform::new(TransformType::INTEG, integ.id().0));
            }
            for g in &p.dh {
                t.push(Transform::new(TransformType::DH, g.0));
            }
            Proposal {
                num: u8::try_from(i + 1).unwrap_or(u8::MAX),
                protocol: ProtocolId::IKE,
                spi: spi.to_vec(),
                transforms: t,
            }
        })
        .collect();
    Payload::Sa(proposals)
}

/// The single-proposal SA payload a responder returns.
pub(crate) fn chosen_ike_payload(s: &Suite, num: u8, spi: &[u8]) -> Payload {
    let mut t = vec![
        encr_transform(s.encr),
        Transform::new(TransformType::PRF, s.prf.id().0),
    ];
    if let Some(i) = s.integ {
        t.push(Transform::new(TransformType::INTEG, i.id().0));
    }
    t.push(Transform::new(TransformType::DH, s.dh.0));
    Payload::Sa(vec![Proposal {
        num,
        protocol: ProtocolId::IKE,
        spi: spi.to_vec(),
        transforms: t,
    }])
}

fn of_type(p: &Proposal, ty: TransformType) -> impl Iterator<Item = &Transform> {
    p.transforms.iter().filter(move |t| t.ty == ty)
}

fn has_encr(p: &Proposal, e: Encr) -> bool {
    of_type(p, TransformType::ENCR)
        .any(|t| Encr::from_transform(EncrId(t.id), t.key_len()) == Some(e))
}

fn integ_ok(p: &Proposal, encr: Encr, integ: Option<Integ>) -> bool {
    let mut theirs = of_type(p, TransformType::INTEG)
        .map(|t| IntegId(t.id))
        .peekable();
    if encr.is_aead() {
        // AEAD: no integrity transform, or only NONE.
        return theirs.all(|i| i == IntegId::NONE);
    }
    match integ {
        Some(i) => theirs.any(|x| x == i.id()),
        None => false,
    }
}

/// Responder: pick from the initiator's proposals. `ke` is the group of the KE payload.
pub(crate) fn select_ike(
    received: &[Proposal],
    local: &[IkeProposal],
    ke: DhId,
) -> Result<(Suite, u8), SelectError> {
    let mut fallback: Option<DhId> = None;
    for rp in received.iter().filter(|p| p.protocol == ProtocolId::IKE) {
        for lp in local {
            if !has_encr(rp, lp.encr)
                || !of_type(rp, TransformType::PRF).any(|t| PrfId(t.id) == lp.prf.id())
                || !integ_ok(rp, lp.encr, lp.integ)
            {
                continue;
            }
            let theirs: Vec<DhId> = of_type(rp, TransformType::DH).map(|t| DhId(t.id)).collect();
            let common: Vec<DhId> = lp
                .dh
                .iter()
                .copied()
                .filter(|g| theirs.contains(g) && crate::crypto::dh::is_supported(*g))
                .collect();
            let integ = if lp.encr.is_aead() { None } else { lp.integ };
            if common.contains(&ke) {
                return Ok((
                    Suite {
                        encr: lp.encr,
                        prf: lp.prf,
                        integ,
                        dh: ke,
                    },
                    rp.num,
                ));
            }
            if fallback.is_none() {
                fallback = common.first().copied();
            }
        }
    }
    match fallback {
        Some(g) => Err(SelectError::InvalidKe(g)),
        None => Err(SelectError::NoProposal),
    }
}

/// Initiator: read the responder's choice and check it is one we offered.
pub(crate) fn accept_ike(chosen: &[Proposal], offered: &[IkeProposal]) -> Option<Suite> {
    let [p] = chosen else { return None };
    let encr_t = of_type(p, TransformType::ENCR).next()?;
    let encr = Encr::from_transform(EncrId(encr_t.id), encr_t.key_len())?;
    let prf = Prf::from_id(PrfId(of_type(p, TransformType::PRF).next()?.id))?;
    let integ = of_type(p, TransformType::INTEG)
        .next()
        .and_then(|t| Integ::from_id(IntegId(t.id)));
    let dh = DhId(of_type(p, TransformType::DH).next()?.id);
    let ok = offered.iter().any(|o| {
        o.encr == encr && o.prf == prf && (encr.is_aead() || o.integ == integ) && o.dh.contains(&dh)
    });
    if !ok || (!encr.is_aead() && integ.is_none()) {
        return None;
    }
    Some(Suite {
        encr,
        prf,
        integ: if encr.is_aead() { None } else { integ },
        dh,
    })
}

/// SA payload with our ESP proposals and inbound SPI.
pub(crate) fn esp_sa_payload(props: &[EspProposal], spi: u32, with_dh: bool) -> Payload {
    let proposals = props
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut t = vec![encr_transform(p.encr)];
            if let (false, Some(integ)) = (p.encr.is_aead(), p.integ) {
                t.push(Transform::new(TransformType::INTEG, integ.id().0));
            }
            if let (true, Some(g)) = (with_dh, p.pfs) {
                t.push(Transform::new(TransformType::DH, g.0));
            }
            let esn = if p.esn { EsnId::ESN } else { EsnId::NO_ESN };
            t.push(Transform::new(TransformType::ESN, esn.0));
            Proposal {
                num: u8::try_from(i + 1).unwrap_or(u8::MAX),
                protocol: ProtocolId::ESP,
                spi: spi.to_be_bytes().to_vec(),
                transforms: t,
            }
        })
        .collect();
    Payload::Sa(proposals)
}

pub(crate) fn chosen_esp_payload(s: &EspSuite, num: u8, spi: u32) -> Payload {
    let mut t = vec![encr_transform(s.encr)];
    if let Some(i) = s.integ {
        t.push(Transform::new(TransformType::INTEG, i.id().0));
    }
    if let Some(g) = s.dh {
        t.push(Transform::new(TransformType::DH, g.0));
    }
    let esn = if s.esn { EsnId::ESN } else { EsnId::NO_ESN };
    t.push(Transform::new(TransformType::ESN, esn.0));
    Payload::Sa(vec![Proposal {
        num,
        protocol: ProtocolId::ESP,
        spi: spi.to_be_bytes().to_vec(),
        transforms: t,
    }])
}

fn spi_u32(p: &Proposal) -> Option<u32> {
    let a: [u8; 4] = p.spi.as_slice().try_into().ok()?;
    Some(u32::from_be_bytes(a))
}

/// Responder: pick an ESP proposal; returns the suite, proposal number and the peer's SPI.
/// `ke` is the KE group in a CREATE_CHILD_SA (PFS), `None` in IKE_AUTH.
pub(crate) fn select_esp(
    received: &[Proposal],
    local: &[EspProposal],
    ke: Option<DhId>,
) -> Result<(EspSuite, u8, u32), SelectError> {
    let mut fallback = None;
    for rp in received.iter().filter(|p| p.protocol == ProtocolId::ESP) {
        let Some(spi) = spi_u32(rp) else { continue };
        for lp in local {
            if !has_encr(rp, lp.encr) || !integ_ok(rp, lp.encr, lp.integ) {
                continue;
            }
            let want = if lp.esn { EsnId::ESN } else { EsnId::NO_ESN };
            let mut esns = of_type(rp, TransformType::ESN)
                .map(|t| EsnId(t.id))
                .peekable();
            let esn_ok = esns.peek().is_none() && !lp.esn || esns.any(|e| e == want);
            if !esn_ok {
                continue;
            }
            let theirs: Vec<DhId> = of_type(rp, TransformType::DH)
                .map(|t| DhId(t.id))
                .filter(|g| *g != DhId::NONE)
                .collect();
            // In IKE_AUTH (`ke` is None) DH transforms are ignored (RFC 7296 1.2). With PFS we
            // take the KE group if it is the one we require (or any supported one when we
            // require none); otherwise we ask for ours with INVALID_KE_PAYLOAD.
            let dh = match (ke, lp.pfs) {
                (None, _) => None,
                (Some(g), Some(want)) if g == want && theirs.contains(&g) => Some(g),
                (Some(_), Some(want)) => {
                    if fallback.is_none() && theirs.contains(&want) {
                        fallback = Some(want);
                    }
                    continue;
                }
                (Some(g), None) if theirs.contains(&g) && crate::crypto::dh::is_supported(g) => {
                    Some(g)
                }
                (Some(_), None) => continue,
            };
            let integ = if lp.encr.is_aead() { None } else { lp.integ };
            return Ok((
                EspSuite {
                    encr: lp.encr,
                    integ,
                    esn: lp.esn,
                    dh,
                },
                rp.num,
                spi,
            ));
        }
    }
    match fallback {
        Some(g) => Err(SelectError::InvalidKe(g)),
        None => Err(SelectError::NoProposal),
    }
}

/// Initiator: read the responder's ESP choice; returns the suite and the responder's SPI.
pub(crate) fn accept_esp(chosen: &[Proposal], offered: &[EspProposal]) -> Option<(EspSuite, u32)> {
    let [p] = chosen else { return None };
    if p.protocol != ProtocolId::ESP {
        return None;
    }
    let spi = spi_u32(p)?;
    let encr_t = of_type(p, TransformType::ENCR).next()?;
    let encr = Encr::from_transform(EncrId(encr_t.id), encr_t.key_len())?;
    let integ = of_type(p, TransformType::INTEG)
        .next()
        .and_then(|t| Integ::from_id(IntegId(t.id)));
    let esn = of_type(p, TransformType::ESN).any(|t| EsnId(t.id) == EsnId::ESN);
    let dh = of_type(p, TransformType::DH)
        .map(|t| DhId(t.id))
        .find(|g| *g != DhId::NONE);
    let ok = offered
        .iter()
        .any(|o| o.encr == encr && (encr.is_aead() || o.integ == integ) && o.esn == esn);
    if !ok || (!encr.is_aead() && integ.is_none()) {
        return None;
    }
    Some((
        EspSuite {
            encr,
            integ: if encr.is_aead() { None } else { integ },
            esn,
            dh,
        },
        spi,
    ))
}
