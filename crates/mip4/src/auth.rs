//! Registration authentication (RFC 5944 section 3.5).
//!
//! An authenticator covers the message's fixed part, every extension before the
//! authentication extension, and that extension's Type, Length and SPI
//! (RFC 5944 section 3.5.1). The key and algorithm come from the mobility security
//! association selected by the SPI. mipsec implements:
//!
//! * HMAC-MD5 (RFC 2104), the RFC 5944 default;
//! * keyed MD5 in prefix+suffix mode (RFC 2002 section 3.5.1), `MD5(key | data | key)`,
//!   for peers that predate RFC 3344.
//!
//! Verification compares in constant time.

use crate::wire::extension::{AuthKind, ExtensionIter, ExtensionType};
use crate::wire::Error;
use ::wire::reader::Reader;
use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use subtle::ConstantTimeEq;

/// Length of an HMAC-MD5 or keyed-MD5 authenticator.
pub const AUTHENTICATOR_LEN: usize = 16;

/// The authentication algorithm of a security association.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// HMAC-MD5 (RFC 5944 section 3.5.1, the default).
    HmacMd5,
    /// Keyed MD5, prefix+suffix (RFC 2002), for legacy peers.
    PrefixSuffixMd5,
}

/// A mobility security association: SPI, algorithm and key.
#[derive(Clone)]
pub struct SecurityAssociation {
    pub spi: u32,
    pub algorithm: Algorithm,
    key: Vec<u8>,
    /// HMAC state with the key already absorbed, cloned per message.
    keyed: Hmac<Md5>,
}

impl std::fmt::Debug for SecurityAssociation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecurityAssociation")
            .field("spi", &self.spi)
            .field("algorithm", &self.algorithm)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// Why authentication failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, thiserror::Error)]
pub enum AuthError {
    #[error("no authentication extension")]
    Missing,
    #[error("no security association for the SPI")]
    UnknownSpi,
    #[error("authenticator does not match")]
    Mismatch,
    #[error("malformed extensions")]
    Malformed,
}

impl SecurityAssociation {
    /// A security association. RFC 5944 requires keys of at least 128 bits for
    /// HMAC-MD5; shorter keys are accepted (legacy peers) but callers should warn.
    pub fn new(spi: u32, algorithm: Algorithm, key: &[u8]) -> Self {
        // HMAC accepts keys of any length, so this cannot fail.
        let keyed = <Hmac<Md5> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable_hmac());
        SecurityAssociation {
            spi,
            algorithm,
            key: key.to_vec(),
            keyed,
        }
    }

    pub fn key_len(&self) -> usize {
        self.key.len()
    }

    /// The authenticator over `covered`.
    pub fn compute(&self, covered: &[u8]) -> [u8; AUTHENTICATOR_LEN] {
        match self.algorithm {
            Algorithm::HmacMd5 => {
                let mut m = self.keyed.clone();
                m.update(covered);
                m.finalize().into_bytes().into()
            }
            Algorithm::PrefixSuffixMd5 => {
                let mut h = Md5::new();
                h.update(&self.key);
                h.update(covered);
                h.update(&self.key);
                h.finalize().into()
            }
        }
    }

    /// Checks `authenticator` over `covered` in constant time.
    pub fn verify(&self, covered: &[u8], authenticator: &[u8]) -> bool {
        let want = self.compute(covered);
        authenticator.len() == AUTHENTICATOR_LEN && bool::from(want.ct_eq(authenticator))
    }

    /// Appends an authentication extension of `kind` to the message in `msg`,
    /// computing the authenticator over everything before it.
    pub fn append(&self, kind: AuthKind, msg: &mut Vec<u8>) {
        msg.push(kind.ext_type().0);
        msg.push((4 + AUTHENTICATOR_LEN) as u8);
        msg.extend_from_slice(&self.spi.to_be_bytes());
        let a = self.compute(msg);
        msg.extend_from_slice(&a);
    }
}

#[cold]
fn unreachable_hmac() -> Hmac<Md5> {
    // `Hmac::new_from_slice` only fails for fixed-key-size MACs; HMAC takes any key.
    <Hmac<Md5> as Mac>::new_from_slice(&[0u8; 16]).unwrap_or_else(|_| unreachable!())
}

/// Where an authentication extension sits in a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthRef<'a> {
    pub spi: u32,
    /// The octets it covers: everything up to and including its SPI.
    pub covered: &'a [u8],
    pub authenticator: &'a [u8],
    /// Offset of the extension's Type octet.
    pub offset: usize,
    /// Offset just past the extension.
    pub end: usize,
}

/// Finds the first authentication extension of `kind` in `msg`, whose fixed part is
/// `fixed_len` octets long.
pub fn find(msg: &[u8], fixed_len: usize, kind: AuthKind) -> Result<Option<AuthRef<'_>>, Error> {
    let want = kind.ext_type();
    for e in ExtensionIter::new(msg, fixed_len) {
        let e = e?;
        if e.ty == want {
            if e.data.len() < 4 {
                return Err(Error::Malformed {
                    layer: "mip extension",
                    field: "authentication extension length",
                });
            }
            // The authenticator covers the message up to and including the SPI.
            let spi_end = e.offset + 2 + 4;
            let mut d = Reader::new(e.data);
            let spi = d.u32("mip extension")?;
            let covered = Reader::new(msg).take(spi_end, "mip extension")?;
            return Ok(Some(AuthRef {
                spi,
                covered,
                authenticator: d.rest(),
                offset: e.offset,
                end: e.offset + e.raw.len(),
            }));
        }
    }
    Ok(None)
}

/// Verifies the authentication extension of `kind` with the SA `lookup` returns for
/// its SPI. Returns the SPI on success.
pub fn verify<'s>(
    msg: &[u8],
    fixed_len: usize,
    kind: AuthKind,
    lookup: impl FnOnce(u32) -> Option<&'s SecurityAssociation>,
) -> Result<u32, AuthError> {
    let a = find(msg, fixed_len, kind)
        .map_err(|_| AuthError::Malformed)?
        .ok_or(AuthError::Missing)?;
    let sa = lookup(a.spi).ok_or(AuthError::UnknownSpi)?;
    if sa.verify(a.covered, a.authenticator) {
        Ok(a.spi)
    } else {
        Err(AuthError::Mismatch)
    }
}

/// True if `ty` is an authentication extension that must not be followed by
/// extensions the authenticator's owner relies on.
pub fn is_auth(ty: ExtensionType) -> bool {
    matches!(
        ty,
        ExtensionType::MN_HA_AUTH | ExtensionType::MN_FA_AUTH | ExtensionType::FA_HA_AUTH
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hmac(key: &[u8], data: &[u8]) -> String {
        hex::encode(SecurityAssociation::new(1, Algorithm::HmacMd5, key).compute(data))
    }

    #[test]
    fn rfc2202_hmac_md5() {
        assert_eq!(
            hmac(&[0x0b; 16], b"Hi There"),
            "9294727a3638bb1c13f48ef8158bfc9d"
        );
        assert_eq!(
            hmac(b"Jefe", b"what do ya want for nothing?"),
            "750c783e6ab0b503eaa86e310a5db738"
        );
        assert_eq!(
            hmac(&[0xaa; 16], &[0xdd; 50]),
            "56be34521d144c88dbb8c733f0e8b3f6"
        );
        let key4: Vec<u8> = (1..=25).collect();
        assert_eq!(hmac(&key4, &[0xcd; 50]), "697eaf0aca3a3aea3a75164746ffaa79");
        assert_eq!(
            hmac(&[0x0c; 16], b"Test With Truncation"),
            "56461ef2342edc00f9bab995690efd4c"
        );
        assert_eq!(
            hmac(
                &[0xaa; 80],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            ),
            "6b1ab7fe4bd7bf8f0b62e6ce61b9d0cd"
        );
        assert_eq!(
            hmac(
                &[0xaa; 80],
                b"Test Using Larger Than Block-Size Key and Larger Than One Block-Size Data"
            ),
            "6f630fad67cda0ee1fb1f562db3aa53e"
        );
    }

    const KEY: &str = "00112233445566778899aabbccddeeff";

    #[test]
    fn reference_request_authenticator() {
        // TEST-VECTORS.md section 6, rrq_colocated_D_T.
        let covered =
            hex::decode("012207080a0100320a010001c000020aeb1f040000000000201400000100").unwrap();
        let sa = SecurityAssociation::new(256, Algorithm::HmacMd5, &hex::decode(KEY).unwrap());
        assert_eq!(
            hex::encode(sa.compute(&covered)),
            "fcb28c2962dfe84fdb5d559a350cda1c"
        );
        let mut msg = covered[..24].to_vec();
        sa.append(AuthKind::MnHa, &mut msg);
        assert_eq!(
            hex::encode(&msg),
            "012207080a0100320a010001c000020aeb1f040000000000201400000100fcb28c2962dfe84fdb5d559a350cda1c"
        );
        assert_eq!(
            verify(&msg, 24, AuthKind::MnHa, |spi| (spi == 256).then_some(&sa)),
            Ok(256)
        );
    }

    #[test]
    fn reference_nai_and_tnc_vectors_verify() {
        let sa = SecurityAssociation::new(256, Algorithm::HmacMd5, &hex::decode(KEY).unwrap());
        let nai = hex::decode("01220708000000000a010001c000020aeb1f04040000000083106d6e3140636f72702e6578616d706c65201400000100d47f2384b2f7cb711f8022f8fc779ee0").unwrap();
        assert_eq!(verify(&nai, 24, AuthKind::MnHa, |_| Some(&sa)), Ok(256));
        let rrp = hex::decode("030007080a0100320a010001eb1f04000000000095020000201400000100347c6301c0839814397334bfd62188a1").unwrap();
        assert_eq!(verify(&rrp, 20, AuthKind::MnHa, |_| Some(&sa)), Ok(256));
    }

    #[test]
    fn failures_are_distinguished() {
        let sa = SecurityAssociation::new(256, Algorithm::HmacMd5, &hex::decode(KEY).unwrap());
        let other = SecurityAssociation::new(256, Algorithm::HmacMd5, &[1; 16]);
        let mut msg = vec![1u8; 24];
        assert_eq!(
            verify(&msg, 24, AuthKind::MnHa, |_| Some(&sa)),
            Err(AuthError::Missing)
        );
        sa.append(AuthKind::MnHa, &mut msg);
        assert_eq!(
            verify(&msg, 24, AuthKind::MnHa, |_| None),
            Err(AuthError::UnknownSpi)
        );
        assert_eq!(
            verify(&msg, 24, AuthKind::MnHa, |_| Some(&other)),
            Err(AuthError::Mismatch)
        );
        let mut tampered = msg.clone();
        tampered[3] ^= 1;
        assert_eq!(
            verify(&tampered, 24, AuthKind::MnHa, |_| Some(&sa)),
            Err(AuthError::Mismatch)
        );
        msg.truncate(msg.len() - 1);
        assert_eq!(
            verify(&msg, 24, AuthKind::MnHa, |_| Some(&sa)),
            Err(AuthError::Malformed)
        );
    }

    #[test]
    fn prefix_suffix_md5() {
        // MD5(key | data | key), computed independently with Python hashlib:
        // hashlib.md5(bytes(16) + b"abc" + bytes(16)).hexdigest()
        let sa = SecurityAssociation::new(1, Algorithm::PrefixSuffixMd5, &[0; 16]);
        let want = hex::decode("9996f5a0d379f10ac3fcfa70825979dc").unwrap();
        assert_eq!(sa.compute(b"abc").to_vec(), want);
        assert!(sa.verify(b"abc", &want));
        assert!(!sa.verify(b"abd", &want));
    }
}
