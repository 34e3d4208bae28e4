//! The payloads of an IKE_AUTH or CREATE_CHILD_SA message, sorted out by kind (used by
//! both exchanges, so neither module depends on the other for it).

use crate::wire::{
    AuthMethod, CertEncoding, Configuration, Identification, Notify, NotifyType, Payload,
    TrafficSelector,
};

/// The payloads of an IKE_AUTH or CREATE_CHILD_SA message, sorted out.
#[derive(Default)]
pub(super) struct Parts<'a> {
    pub idi: Option<&'a Identification>,
    pub idr: Option<&'a Identification>,
    pub auth: Option<(AuthMethod, &'a [u8])>,
    pub sa: Option<&'a [crate::wire::Proposal]>,
    pub tsi: Option<&'a [TrafficSelector]>,
    pub tsr: Option<&'a [TrafficSelector]>,
    pub cp: Option<&'a Configuration>,
    pub nonce: Option<&'a [u8]>,
    pub ke: Option<(crate::wire::DhId, &'a [u8])>,
    pub notifies: Vec<&'a Notify>,
    /// The first X.509 certificate (the end entity).
    pub cert: Option<&'a [u8]>,
    /// Further X.509 certificates (intermediate CAs).
    pub intermediates: Vec<&'a [u8]>,
}

impl<'a> Parts<'a> {
    pub fn of(payloads: &'a [Payload]) -> Self {
        let mut p = Parts::default();
        for x in payloads {
            match x {
                Payload::IdI(i) => p.idi = Some(i),
                Payload::IdR(i) => p.idr = Some(i),
                Payload::Auth { method, data } => p.auth = Some((*method, data)),
                Payload::Sa(s) => p.sa = Some(s),
                Payload::TsI(t) => p.tsi = Some(t),
                Payload::TsR(t) => p.tsr = Some(t),
                Payload::Cp(c) => p.cp = Some(c),
                Payload::Nonce(n) => p.nonce = Some(n),
                Payload::Ke { group, data } => p.ke = Some((*group, data)),
                Payload::Notify(n) => p.notifies.push(n),
                Payload::Cert { encoding, data } if *encoding == CertEncoding::X509_SIGNATURE => {
                    match p.cert {
                        None => p.cert = Some(data),
                        Some(_) => p.intermediates.push(data),
                    }
                }
                _ => {}
            }
        }
        p
    }
    pub fn notify(&self, ty: NotifyType) -> Option<&'a Notify> {
        self.notifies.iter().copied().find(|n| n.ty == ty)
    }
    pub fn error(&self) -> Option<NotifyType> {
        self.notifies.iter().map(|n| n.ty).find(|t| t.is_error())
    }
}
