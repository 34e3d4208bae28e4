//! Certificates and private keys as files hold them: PEM or DER; keys as PKCS#8 ("PRIVATE
//! KEY"), PKCS#1 ("RSA PRIVATE KEY", what strongSwan's `pki --gen --type rsa` writes) or
//! SEC1 ("EC PRIVATE KEY", `pki --gen --type ecdsa`). Keys come out as PKCS#8, the form
//! [`super::cert::sign`] takes, and are checked by signing once.
//!
//! Only parsing: the caller reads the file and names it in the error.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::cert::{check_local, LocalCert};
use crate::wire::ident::tlv;

const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];

fn is_pem(bytes: &[u8]) -> bool {
    bytes.windows(11).any(|w| w == b"-----BEGIN ")
}

/// The first certificate in a PEM file, or a DER certificate. Checked to parse as X.509.
pub fn certificate(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let der = if is_pem(bytes) {
        CertificateDer::from_pem_slice(bytes)
            .map_err(|e| format!("no PEM CERTIFICATE: {e}"))?
            .as_ref()
            .to_vec()
    } else {
        bytes.to_vec()
    };
    let c = CertificateDer::from(der.as_slice());
    webpki::EndEntityCert::try_from(&c).map_err(|e| format!("not an X.509 certificate: {e:?}"))?;
    Ok(der)
}

/// All certificates in a PEM file (a CA bundle), or one DER certificate.
pub fn certificates(bytes: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    if !is_pem(bytes) {
        return certificate(bytes).map(|c| vec![c]);
    }
    let all: Vec<Vec<u8>> = CertificateDer::pem_slice_iter(bytes)
        .map(|c| c.map(|c| c.as_ref().to_vec()))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("bad PEM: {e}"))?;
    if all.is_empty() {
        return Err("no PEM CERTIFICATE".into());
    }
    for c in &all {
        let d = CertificateDer::from(c.as_slice());
        webpki::anchor_from_trusted_cert(&d)
            .map_err(|e| format!("not a usable CA certificate: {e:?}"))?;
    }
    Ok(all)
}

/// A private key (PEM or DER; PKCS#8, PKCS#1 or SEC1) as PKCS#8, checked to sign with
/// `cert_der` (RSA, ECDSA P-256/P-384, Ed25519).
pub fn private_key(bytes: &[u8], cert_der: &[u8]) -> Result<Vec<u8>, String> {
    let candidates: Vec<Vec<u8>> = if is_pem(bytes) {
        match PrivateKeyDer::from_pem_slice(bytes)
            .map_err(|e| format!("no PEM private key: {e}"))?
        {
            PrivateKeyDer::Pkcs8(k) => vec![k.secret_pkcs8_der().to_vec()],
            PrivateKeyDer::Pkcs1(k) => vec![rsa_pkcs1_to_pkcs8(k.secret_pkcs1_der())],
            PrivateKeyDer::Sec1(k) => vec![sec1_to_pkcs8(k.secret_sec1_der())?],
            _ => return Err("unsupported private key format".into()),
        }
    } else {
        let mut c = vec![bytes.to_vec(), rsa_pkcs1_to_pkcs8(bytes)];
        if let Ok(k) = sec1_to_pkcs8(bytes) {
            c.push(k);
        }
        c
    };
    for key in candidates {
        let local = LocalCert {
            cert_der: cert_der.to_vec(),
            key_pkcs8: key,
        };
        if check_local(&local).is_ok() {
            return Ok(local.key_pkcs8);
        }
    }
    Err(
        "not a usable private key (RSA, ECDSA P-256/P-384 or Ed25519; PKCS#8, PKCS#1 or SEC1)"
            .into(),
    )
}

/// PKCS#8 PrivateKeyInfo around a PKCS#1 RSAPrivateKey.
fn rsa_pkcs1_to_pkcs8(pkcs1: &[u8]) -> Vec<u8> {
    let mut alg = tlv(0x06, OID_RSA);
    alg.extend_from_slice(&[0x05, 0x00]);
    let mut body = vec![0x02, 0x01, 0x00];
    body.extend_from_slice(&tlv(0x30, &alg));
    body.extend_from_slice(&tlv(0x04, pkcs1));
    tlv(0x30, &body)
}

/// PKCS#8 PrivateKeyInfo around a SEC1 ECPrivateKey; the curve comes from its
/// `parameters [0]`, which SEC1 files written by openssl and strongSwan carry.
fn sec1_to_pkcs8(sec1: &[u8]) -> Result<Vec<u8>, String> {
    let bad = || "malformed SEC1 EC private key".to_string();
    let (tag, mut body, _) = der(sec1).ok_or_else(bad)?;
    if tag != 0x30 {
        return Err(bad());
    }
    let mut curve = None;
    while !body.is_empty() {
        let (t, v, rest) = der(body).ok_or_else(bad)?;
        if t == 0xa0 {
            let (0x06, oid, _) = der(v).ok_or_else(bad)? else {
                return Err(bad());
            };
            curve = Some(oid);
        }
        body = rest;
    }
    let curve = curve.ok_or("SEC1 key without the curve parameter")?;
    let mut alg = tlv(0x06, OID_EC_PUBLIC_KEY);
    alg.extend_from_slice(&tlv(0x06, curve));
    let mut out = vec![0x02, 0x01, 0x00];
    out.extend_from_slice(&tlv(0x30, &alg));
    out.extend_from_slice(&tlv(0x04, sec1));
    Ok(tlv(0x30, &out))
}

/// One DER element: (tag, contents, rest).
fn der(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, b) = b.split_first()?;
    let (&l0, b) = b.split_first()?;
    let (len, b) = match l0 {
        0..=0x7f => (usize::from(l0), b),
        0x81 => (usize::from(*b.first()?), b.get(1..)?),
        0x82 => (
            usize::from(u16::from_be_bytes([*b.first()?, *b.get(1)?])),
            b.get(2..)?,
        ),
        _ => return None,
    };
    Some((tag, b.get(..len)?, b.get(len..)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(name: &str) -> Vec<u8> {
        std::fs::read(format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    fn pem(label: &str, der: &[u8]) -> Vec<u8> {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut b64 = String::new();
        for c in der.chunks(3) {
            let n = (u32::from(c[0]) << 16)
                | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
                | u32::from(*c.get(2).unwrap_or(&0));
            for i in 0..4 {
                if i <= c.len() {
                    b64.push(char::from(A[((n >> (18 - 6 * i)) & 63) as usize]));
                } else {
                    b64.push('=');
                }
            }
        }
        let mut out = format!("-----BEGIN {label}-----\n");
        for line in b64.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(line).unwrap());
            out.push('\n');
        }
        out.push_str(&format!("-----END {label}-----\n"));
        out.into_bytes()
    }

    /// The PKCS#1 RSAPrivateKey inside a PKCS#8 RSA key.
    fn inner(pkcs8: &[u8]) -> Vec<u8> {
        let (_, body, _) = der(pkcs8).unwrap();
        let (_, _, rest) = der(body).unwrap(); // version
        let (_, _, rest) = der(rest).unwrap(); // algorithm
        let (tag, key, _) = der(rest).unwrap();
        assert_eq!(tag, 0x04);
        key.to_vec()
    }

    #[test]
    fn certificates_and_keys_in_every_form() {
        let cert = data("client.der");
        let p8 = data("client.key.p8");
        assert_eq!(certificate(&cert).unwrap(), cert);
        assert_eq!(certificate(&pem("CERTIFICATE", &cert)).unwrap(), cert);
        let two = [
            pem("CERTIFICATE", &data("ca.der")),
            pem("CERTIFICATE", &data("other-ca.der")),
        ]
        .concat();
        assert_eq!(certificates(&two).unwrap().len(), 2);
        // RSA: PKCS#8 DER and PEM, PKCS#1 DER and PEM ("RSA PRIVATE KEY").
        assert_eq!(private_key(&p8, &cert).unwrap(), p8);
        assert_eq!(private_key(&pem("PRIVATE KEY", &p8), &cert).unwrap(), p8);
        let p1 = inner(&p8);
        assert!(private_key(&p1, &cert).is_ok());
        assert!(private_key(&pem("RSA PRIVATE KEY", &p1), &cert).is_ok());
        // ECDSA P-256 PKCS#8.
        let gw = data("gw.key.p8");
        assert_eq!(private_key(&gw, &data("gw.der")).unwrap(), gw);
        // Garbage is an error, never a panic.
        assert!(certificate(b"-----BEGIN CERTIFICATE-----\nAAAA\n").is_err());
        assert!(certificate(&[0x30, 0x82, 0xff]).is_err());
        assert!(private_key(&[0x30, 0x03, 0x02, 0x01, 0x00], &cert).is_err());
        assert!(private_key(&pem("EC PRIVATE KEY", &[0x30, 0x00]), &cert).is_err());
        assert!(certificates(b"").is_err());
    }

    #[test]
    fn sec1_gets_the_curve_from_its_parameters() {
        // SEC1 with parameters [0] = P-256: wrapped with id-ecPublicKey + the curve.
        let p256 = [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
        let mut body = vec![0x02, 0x01, 0x01, 0x04, 0x01, 0x00];
        body.extend_from_slice(&tlv(0xa0, &tlv(0x06, &p256)));
        let sec1 = tlv(0x30, &body);
        let p8 = sec1_to_pkcs8(&sec1).unwrap();
        assert!(p8.windows(p256.len()).filter(|w| *w == p256).count() == 2);
        assert!(p8.windows(sec1.len()).any(|w| w == sec1.as_slice()));
        assert!(sec1_to_pkcs8(&tlv(0x30, &[0x02, 0x01, 0x01])).is_err());
    }
}
