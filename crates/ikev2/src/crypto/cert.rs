//! X.509 certificate authentication: RFC 7427 "Digital Signature" AUTH (method 14), plus
//! verification of ECDSA P-256 (method 9) signatures, CERTREQ hashes (RFC 7296 3.7) and
//! SIGNATURE_HASH_ALGORITHMS (RFC 7427 4).
//!
//! Chain validation, validity period and name checks use rustls-webpki. The signing keys are
//! ring key pairs (ECDSA P-256 or RSA 2048..4096, PKCS#8); ring's ECDSA and RSA-PSS signing
//! draw from the OS RNG.

use std::time::Duration;

use rustls_pki_types::{CertificateDer, ServerName, SignatureVerificationAlgorithm, UnixTime};
use sha1::{Digest, Sha1};

use crate::wire::{AuthMethod, IdType, Identification};

/// Why certificate authentication failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    #[error("bad local key or certificate")]
    BadLocalKey,
    #[error("peer sent no certificate")]
    NoCertificate,
    #[error("certificate not trusted: {0}")]
    Untrusted(String),
    #[error("identity not in certificate")]
    IdMismatch,
    #[error("unsupported signature algorithm")]
    UnsupportedAlgorithm,
    #[error("signature does not verify")]
    BadSignature,
    #[error("no wall-clock time given for certificate validation")]
    NoTime,
}

/// Our certificate and its private key.
#[derive(Clone, PartialEq, Eq)]
pub struct LocalCert {
    /// DER X.509 certificate sent in the CERT payload.
    pub cert_der: Vec<u8>,
    /// PKCS#8 DER private key (ECDSA P-256 or RSA).
    pub key_pkcs8: Vec<u8>,
}

impl core::fmt::Debug for LocalCert {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("LocalCert(..)")
    }
}

/// SIGNATURE_HASH_ALGORITHMS data: SHA2-256, SHA2-384, SHA2-512, Identity (RFC 7427, RFC
/// 8420 for Ed25519; IANA 2, 3, 4, 5).
pub const SIGNATURE_HASHES: [u8; 8] = [0, 2, 0, 3, 0, 4, 0, 5];

// DER AlgorithmIdentifiers used in method-14 AUTH data (RFC 7427 appendix A).
const ECDSA_SHA256: &[u8] = &[
    0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02,
];
const ECDSA_SHA384: &[u8] = &[
    0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03,
];
const ECDSA_SHA512: &[u8] = &[
    0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04,
];
const RSA_SHA256: &[u8] = &[
    0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b, 0x05, 0x00,
];
const RSA_SHA384: &[u8] = &[
    0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c, 0x05, 0x00,
];
const RSA_SHA512: &[u8] = &[
    0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d, 0x05, 0x00,
];

fn algorithm(alg_id: &[u8]) -> Option<&'static dyn SignatureVerificationAlgorithm> {
    use webpki::ring as a;
    Some(match alg_id {
        ECDSA_SHA256 => a::ECDSA_P256_SHA256,
        ECDSA_SHA384 => a::ECDSA_P384_SHA384,
        ECDSA_SHA512 => return None,
        RSA_SHA256 => a::RSA_PKCS1_2048_8192_SHA256,
        RSA_SHA384 => a::RSA_PKCS1_2048_8192_SHA384,
        RSA_SHA512 => a::RSA_PKCS1_2048_8192_SHA512,
        ED25519 => a::ED25519,
        _ => return None,
    })
}

/// AlgorithmIdentifier of Ed25519 (RFC 8420).
const ED25519: &[u8] = &[0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70];

/// AUTH payload data for method 14: len(AlgorithmIdentifier) | AlgorithmIdentifier | signature.
/// The key (PKCS#8) may be ECDSA P-256 (SHA-256), P-384 (SHA-384), Ed25519 or RSA (PKCS#1
/// v1.5 with SHA-256).
pub fn sign(local: &LocalCert, signed_octets: &[u8]) -> Result<Vec<u8>, CertError> {
    use ring::signature::{self as sig, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
    let rng = ring::rand::SystemRandom::new();
    let k = &local.key_pkcs8;
    let ecdsa = |alg, id| {
        EcdsaKeyPair::from_pkcs8(alg, k, &rng).ok().map(|kp| {
            kp.sign(&rng, signed_octets)
                .map(|s| (id, s.as_ref().to_vec()))
                .map_err(|_| CertError::BadLocalKey)
        })
    };
    let (alg_id, sig) = if let Some(r) = ecdsa(&sig::ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_SHA256) {
        r?
    } else if let Some(r) = ecdsa(&sig::ECDSA_P384_SHA384_ASN1_SIGNING, ECDSA_SHA384) {
        r?
    } else if let Ok(kp) = Ed25519KeyPair::from_pkcs8_maybe_unchecked(k) {
        let _ = kp.public_key();
        (ED25519, kp.sign(signed_octets).as_ref().to_vec())
    } else {
        let kp = RsaKeyPair::from_pkcs8(k).map_err(|_| CertError::BadLocalKey)?;
        let mut s = vec![0u8; kp.public().modulus_len()];
        kp.sign(&sig::RSA_PKCS1_SHA256, &rng, signed_octets, &mut s)
            .map_err(|_| CertError::BadLocalKey)?;
        (RSA_SHA256, s)
    };
    let mut out = Vec::with_capacity(1 + alg_id.len() + sig.len());
    out.push(u8::try_from(alg_id.len()).map_err(|_| CertError::BadLocalKey)?);
    out.extend_from_slice(alg_id);
    out.extend_from_slice(&sig);
    Ok(out)
}

/// The subject of a DER certificate as an ID_DER_ASN1_DN identity.
pub fn subject_id(cert_der: &[u8]) -> Result<Identification, CertError> {
    let der = CertificateDer::from(cert_der);
    let ee = webpki::EndEntityCert::try_from(&der)
        .map_err(|e| CertError::Untrusted(format!("{e:?}")))?;
    Ok(Identification {
        ty: IdType::DER_ASN1_DN,
        data: crate::wire::ident::tlv(0x30, ee.subject()),
    })
}

/// CERTREQ data: SHA-1 of each trust anchor's SubjectPublicKeyInfo (RFC 7296 3.7).
pub fn certreq_hashes(anchors: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for a in anchors {
        let der = CertificateDer::from(a.as_slice());
        if let Ok(ta) = webpki::anchor_from_trusted_cert(&der) {
            let spki = webpki::spki_for_anchor(&ta);
            out.extend_from_slice(&Sha1::digest(spki.as_ref()));
        }
    }
    out
}

/// Check the peer's certificate against our trust anchors at `unix_time`, that it names
/// `peer_id`, and that `auth_data` is its signature over `signed_octets`.
#[allow(clippy::too_many_arguments)]
pub fn verify(
    peer_cert: &[u8],
    intermediates: &[&[u8]],
    anchors: &[Vec<u8>],
    unix_time: Option<u64>,
    peer_id: &Identification,
    method: AuthMethod,
    auth_data: &[u8],
    signed_octets: &[u8],
) -> Result<(), CertError> {
    let time = unix_time.ok_or(CertError::NoTime)?;
    let der = CertificateDer::from(peer_cert);
    let ee = webpki::EndEntityCert::try_from(&der)
        .map_err(|e| CertError::Untrusted(format!("{e:?}")))?;
    let anchor_ders: Vec<CertificateDer<'_>> = anchors
        .iter()
        .map(|a| CertificateDer::from(a.as_slice()))
        .collect();
    let inter: Vec<CertificateDer<'_>> = intermediates
        .iter()
        .map(|c| CertificateDer::from(*c))
        .collect();
    let tas: Vec<_> = anchor_ders
        .iter()
        .filter_map(|a| webpki::anchor_from_trusted_cert(a).ok())
        .collect();
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &tas,
        &inter,
        UnixTime::since_unix_epoch(Duration::from_secs(time)),
        webpki::KeyUsage::server_auth(),
        None,
        None,
    )
    .map_err(|e| CertError::Untrusted(format!("{e:?}")))?;
    if peer_id.ty == IdType::DER_ASN1_DN {
        // The ID is the DER Name (SEQUENCE); webpki gives the subject without that header.
        // Compared attribute by attribute: the ID and the certificate may encode the same
        // DN with different string types.
        let subject = Identification {
            ty: IdType::DER_ASN1_DN,
            data: crate::wire::ident::tlv(0x30, ee.subject()),
        };
        if der_sequence_content(&peer_id.data) != Some(ee.subject()) && !peer_id.matches(&subject) {
            return Err(CertError::IdMismatch);
        }
    } else {
        let name = match peer_id.ty {
            IdType::FQDN => std::str::from_utf8(&peer_id.data)
                .ok()
                .and_then(|s| ServerName::try_from(s.to_string()).ok()),
            IdType::IPV4_ADDR => <[u8; 4]>::try_from(peer_id.data.as_slice())
                .ok()
                .map(|a| ServerName::IpAddress(std::net::Ipv4Addr::from(a).into())),
            _ => None,
        }
        .ok_or(CertError::IdMismatch)?;
        ee.verify_is_valid_for_subject_name(&name)
            .map_err(|_| CertError::IdMismatch)?;
    }
    let (alg, sig): (&dyn SignatureVerificationAlgorithm, &[u8]) = match method {
        AuthMethod::DIGITAL_SIGNATURE => {
            let (&n, rest) = auth_data.split_first().ok_or(CertError::BadSignature)?;
            let alg_id = rest.get(..usize::from(n)).ok_or(CertError::BadSignature)?;
            let sig = rest.get(usize::from(n)..).ok_or(CertError::BadSignature)?;
            (
                algorithm(alg_id).ok_or(CertError::UnsupportedAlgorithm)?,
                sig,
            )
        }
        _ => return Err(CertError::UnsupportedAlgorithm),
    };
    ee.verify_signature(alg, signed_octets, sig)
        .map_err(|_| CertError::BadSignature)
}

/// The contents of a DER SEQUENCE that spans all of `der`.
fn der_sequence_content(der: &[u8]) -> Option<&[u8]> {
    let (&tag, rest) = der.split_first()?;
    let (&l0, rest) = rest.split_first()?;
    if tag != 0x30 {
        return None;
    }
    let (len, rest) = match l0 {
        0..=0x7f => (usize::from(l0), rest),
        0x81 => (usize::from(*rest.first()?), rest.get(1..)?),
        0x82 => (
            usize::from(u16::from_be_bytes([*rest.first()?, *rest.get(1)?])),
            rest.get(2..)?,
        ),
        _ => return None,
    };
    (rest.len() == len).then_some(rest)
}

/// An ID payload for our certificate's first DNS name is up to the caller; this checks that
/// a local certificate/key pair is usable (tests and configuration validation).
pub fn check_local(local: &LocalCert) -> Result<(), CertError> {
    sign(local, b"probe").map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(name: &str) -> Vec<u8> {
        std::fs::read(format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }
    const T2026: Option<u64> = Some(1_780_000_000);

    fn sign_verify(cert: &str, key: &str, id: &str) -> Result<(), CertError> {
        let local = LocalCert {
            cert_der: data(cert),
            key_pkcs8: data(key),
        };
        let auth = sign(&local, b"signed octets")?;
        verify(
            &local.cert_der,
            &[],
            &[data("ca.der")],
            T2026,
            &Identification::fqdn(id),
            AuthMethod::DIGITAL_SIGNATURE,
            &auth,
            b"signed octets",
        )
    }

    #[test]
    fn ecdsa_and_rsa_round_trip() {
        sign_verify("gw.der", "gw.key.p8", "gw.example").unwrap();
        sign_verify("client.der", "client.key.p8", "client.example").unwrap();
    }

    #[test]
    fn failures_are_typed() {
        assert_eq!(
            sign_verify("gw.der", "gw.key.p8", "other.example"),
            Err(CertError::IdMismatch)
        );
        let local = LocalCert {
            cert_der: data("gw.der"),
            key_pkcs8: data("gw.key.p8"),
        };
        let auth = sign(&local, b"a").unwrap();
        let v = |anchors: &[Vec<u8>], t, msg: &[u8]| {
            verify(
                &local.cert_der,
                &[],
                anchors,
                t,
                &Identification::fqdn("gw.example"),
                AuthMethod::DIGITAL_SIGNATURE,
                &auth,
                msg,
            )
        };
        assert_eq!(
            v(&[data("ca.der")], T2026, b"b"),
            Err(CertError::BadSignature)
        );
        assert!(matches!(
            v(&[data("other-ca.der")], T2026, b"a"),
            Err(CertError::Untrusted(_))
        ));
        assert!(matches!(
            v(&[data("ca.der")], Some(2_400_000_000), b"a"),
            Err(CertError::Untrusted(_))
        ));
        assert_eq!(v(&[data("ca.der")], None, b"a"), Err(CertError::NoTime));
        assert_eq!(v(&[data("ca.der")], T2026, b"a"), Ok(()));
        // the RSA key cannot pose as the ECDSA certificate
        let wrong = LocalCert {
            cert_der: data("gw.der"),
            key_pkcs8: data("client.key.p8"),
        };
        let auth = sign(&wrong, b"a").unwrap();
        assert_eq!(
            verify(
                &wrong.cert_der,
                &[],
                &[data("ca.der")],
                T2026,
                &Identification::fqdn("gw.example"),
                AuthMethod::DIGITAL_SIGNATURE,
                &auth,
                b"a"
            ),
            Err(CertError::BadSignature)
        );
    }

    #[test]
    fn dn_identity_matches_subject() {
        let local = LocalCert {
            cert_der: data("gw.der"),
            key_pkcs8: data("gw.key.p8"),
        };
        let auth = sign(&local, b"m").unwrap();
        // Subject DN of gw.der as DER, computed with pyca/cryptography.
        let dn = hex::decode(include_str!("../../tests/data/gw.subject.hex").trim()).unwrap();
        let id = |data: Vec<u8>| Identification {
            ty: IdType::DER_ASN1_DN,
            data,
        };
        let v = |i: &Identification| {
            verify(
                &local.cert_der,
                &[],
                &[data("ca.der")],
                T2026,
                i,
                AuthMethod::DIGITAL_SIGNATURE,
                &auth,
                b"m",
            )
        };
        assert_eq!(v(&id(dn.clone())), Ok(()));
        let mut other = dn.clone();
        let last = other.len() - 1;
        other[last] ^= 1;
        assert_eq!(v(&id(other)), Err(CertError::IdMismatch));
        assert_eq!(v(&id(dn[1..].to_vec())), Err(CertError::IdMismatch));
    }

    #[test]
    fn chain_through_an_intermediate() {
        let local = LocalCert {
            cert_der: data("chain-leaf.der"),
            key_pkcs8: data("chain-leaf.key.p8"),
        };
        let auth = sign(&local, b"m").unwrap();
        let inter = data("chain-intermediate.der");
        let v = |i: &[&[u8]]| {
            verify(
                &local.cert_der,
                i,
                &[data("chain-root.der")],
                T2026,
                &Identification::fqdn("leaf.example"),
                AuthMethod::DIGITAL_SIGNATURE,
                &auth,
                b"m",
            )
        };
        assert_eq!(v(&[inter.as_slice()]), Ok(()));
        assert!(matches!(v(&[]), Err(CertError::Untrusted(_))));
    }

    #[test]
    fn certreq_is_sha1_of_ca_spki() {
        // Independent value computed with pyca/cryptography (SHA-1 of the CA's SPKI DER).
        let h = certreq_hashes(&[data("ca.der")]);
        assert_eq!(h.len(), 20);
        assert_eq!(
            hex::encode(&h),
            include_str!("../../tests/data/ca.spki.sha1").trim()
        );
    }
}
