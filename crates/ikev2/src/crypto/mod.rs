//! IKEv2 cryptography: PRF and prf+, key derivation (RFC 7296 2.13-2.14, 2.17), integrity,
//! SK payload protection (RFC 7296 3.14, RFC 5282 for AES-GCM), PSK AUTH (2.15) and
//! NAT detection hashes (2.23).

pub mod cert;
pub mod dh;
pub mod keyfile;
pub mod sk;

use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Sha256, Sha384, Sha512};
use std::net::IpAddr;

use crate::wire::{EncrId, IntegId, PrfId};

/// Crypto failures. Integrity failures are reported without detail on purpose.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("integrity check failed")]
    Integrity,
    #[error("bad ciphertext length or padding")]
    BadCiphertext,
    #[error("invalid Diffie-Hellman public value")]
    BadPublicValue,
    #[error("unsupported algorithm")]
    Unsupported,
    #[error("prf+ output too long")]
    TooLong,
}

macro_rules! hmac_of {
    ($h:ty, $key:expr, $parts:expr) => {{
        // HMAC accepts keys of any length; new_from_slice cannot fail for it.
        match <Hmac<$h> as Mac>::new_from_slice($key) {
            Ok(mut m) => {
                for p in $parts {
                    m.update(p);
                }
                m.finalize().into_bytes().to_vec()
            }
            Err(_) => Vec::new(),
        }
    }};
}

/// Negotiated pseudo-random function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prf {
    HmacSha1,
    HmacSha256,
    HmacSha384,
    HmacSha512,
}

impl Prf {
    pub fn from_id(id: PrfId) -> Option<Prf> {
        Some(match id {
            PrfId::HMAC_SHA1 => Prf::HmacSha1,
            PrfId::HMAC_SHA2_256 => Prf::HmacSha256,
            PrfId::HMAC_SHA2_384 => Prf::HmacSha384,
            PrfId::HMAC_SHA2_512 => Prf::HmacSha512,
            _ => return None,
        })
    }

    pub fn id(self) -> PrfId {
        match self {
            Prf::HmacSha1 => PrfId::HMAC_SHA1,
            Prf::HmacSha256 => PrfId::HMAC_SHA2_256,
            Prf::HmacSha384 => PrfId::HMAC_SHA2_384,
            Prf::HmacSha512 => PrfId::HMAC_SHA2_512,
        }
    }

    /// Output length; for HMAC PRFs also the preferred key length (RFC 7296 2.13).
    pub fn out_len(self) -> usize {
        match self {
            Prf::HmacSha1 => 20,
            Prf::HmacSha256 => 32,
            Prf::HmacSha384 => 48,
            Prf::HmacSha512 => 64,
        }
    }

    /// prf(key, part0 | part1 | ...).
    pub fn prf(self, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        match self {
            Prf::HmacSha1 => hmac_of!(Sha1, key, parts),
            Prf::HmacSha256 => hmac_of!(Sha256, key, parts),
            Prf::HmacSha384 => hmac_of!(Sha384, key, parts),
            Prf::HmacSha512 => hmac_of!(Sha512, key, parts),
        }
    }

    /// prf+(K, S) truncated to `len` octets (RFC 7296 2.13).
    pub fn prf_plus(self, key: &[u8], seed: &[u8], len: usize) -> Result<Vec<u8>, CryptoError> {
        if len > 255 * self.out_len() {
            return Err(CryptoError::TooLong);
        }
        let mut out = Vec::with_capacity(len + self.out_len());
        let mut t: Vec<u8> = Vec::new();
        let mut n: u8 = 1;
        while out.len() < len {
            t = self.prf(key, &[&t, seed, &[n]]);
            out.extend_from_slice(&t);
            n = n.wrapping_add(1);
        }
        out.truncate(len);
        Ok(out)
    }
}

/// Negotiated integrity algorithm (IKE SK or ESP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Integ {
    HmacSha1_96,
    HmacSha256_128,
    HmacSha384_192,
    HmacSha512_256,
}

impl Integ {
    pub fn from_id(id: IntegId) -> Option<Integ> {
        Some(match id {
            IntegId::HMAC_SHA1_96 => Integ::HmacSha1_96,
            IntegId::HMAC_SHA2_256_128 => Integ::HmacSha256_128,
            IntegId::HMAC_SHA2_384_192 => Integ::HmacSha384_192,
            IntegId::HMAC_SHA2_512_256 => Integ::HmacSha512_256,
            _ => return None,
        })
    }
    pub fn id(self) -> IntegId {
        match self {
            Integ::HmacSha1_96 => IntegId::HMAC_SHA1_96,
            Integ::HmacSha256_128 => IntegId::HMAC_SHA2_256_128,
            Integ::HmacSha384_192 => IntegId::HMAC_SHA2_384_192,
            Integ::HmacSha512_256 => IntegId::HMAC_SHA2_512_256,
        }
    }
    pub fn key_len(self) -> usize {
        match self {
            Integ::HmacSha1_96 => 20,
            Integ::HmacSha256_128 => 32,
            Integ::HmacSha384_192 => 48,
            Integ::HmacSha512_256 => 64,
        }
    }
    pub fn icv_len(self) -> usize {
        match self {
            Integ::HmacSha1_96 => 12,
            Integ::HmacSha256_128 => 16,
            Integ::HmacSha384_192 => 24,
            Integ::HmacSha512_256 => 32,
        }
    }
    /// Truncated ICV over `data`.
    pub fn icv(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        let mut full = match self {
            Integ::HmacSha1_96 => hmac_of!(Sha1, key, [data]),
            Integ::HmacSha256_128 => hmac_of!(Sha256, key, [data]),
            Integ::HmacSha384_192 => hmac_of!(Sha384, key, [data]),
            Integ::HmacSha512_256 => hmac_of!(Sha512, key, [data]),
        };
        full.truncate(self.icv_len());
        full
    }
}

/// Negotiated encryption algorithm (IKE SK or ESP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encr {
    /// AES-GCM with a 16-octet ICV; `key` is 16 or 32 octets (plus a 4-octet salt in KEYMAT).
    AesGcm16 { key: usize },
    /// AES-CBC; `key` is 16, 24 or 32 octets; needs a separate integrity algorithm.
    AesCbc { key: usize },
}

impl Encr {
    /// From a transform ID and its Key Length attribute in bits.
    pub fn from_transform(id: EncrId, key_bits: Option<u16>) -> Option<Encr> {
        let key = match key_bits? {
            128 => 16,
            192 => 24,
            256 => 32,
            _ => return None,
        };
        match id {
            EncrId::AES_GCM_16 if key != 24 => Some(Encr::AesGcm16 { key }),
            EncrId::AES_CBC => Some(Encr::AesCbc { key }),
            _ => None,
        }
    }
    pub fn id(self) -> EncrId {
        match self {
            Encr::AesGcm16 { .. } => EncrId::AES_GCM_16,
            Encr::AesCbc { .. } => EncrId::AES_CBC,
        }
    }
    pub fn key_bits(self) -> u16 {
        match self {
            Encr::AesGcm16 { key } | Encr::AesCbc { key } => u16::try_from(key * 8).unwrap_or(0),
        }
    }
    /// Key material length including the salt for AEAD (RFC 5282 7.1).
    pub fn keymat_len(self) -> usize {
        match self {
            Encr::AesGcm16 { key } => key + 4,
            Encr::AesCbc { key } => key,
        }
    }
    pub fn is_aead(self) -> bool {
        matches!(self, Encr::AesGcm16 { .. })
    }
}

/// IKE SA keys, split in the order of RFC 7296 2.14.
#[derive(Clone, PartialEq, Eq)]
pub struct IkeKeys {
    pub sk_d: Vec<u8>,
    pub sk_ai: Vec<u8>,
    pub sk_ar: Vec<u8>,
    pub sk_ei: Vec<u8>,
    pub sk_er: Vec<u8>,
    pub sk_pi: Vec<u8>,
    pub sk_pr: Vec<u8>,
}

impl core::fmt::Debug for IkeKeys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("IkeKeys(..)")
    }
}

fn split(dkm: &[u8], lens: &[usize]) -> Vec<Vec<u8>> {
    let mut out = Vec::with_capacity(lens.len());
    let mut pos = 0;
    for l in lens {
        out.push(
            dkm.get(pos..pos + l)
                .map(<[u8]>::to_vec)
                .unwrap_or_default(),
        );
        pos += l;
    }
    out
}

/// SKEYSEED = prf(Ni | Nr, g^ir) (RFC 7296 2.14).
pub fn skeyseed(prf: Prf, ni: &[u8], nr: &[u8], gir: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(ni.len() + nr.len());
    k.extend_from_slice(ni);
    k.extend_from_slice(nr);
    prf.prf(&k, &[gir])
}

/// SKEYSEED for a rekeyed IKE SA = prf(SK_d (old), g^ir (new) | Ni | Nr) (RFC 7296 2.18).
pub fn skeyseed_rekey(old_prf: Prf, old_sk_d: &[u8], gir: &[u8], ni: &[u8], nr: &[u8]) -> Vec<u8> {
    old_prf.prf(old_sk_d, &[gir, ni, nr])
}

/// {SK_d | SK_ai | SK_ar | SK_ei | SK_er | SK_pi | SK_pr} = prf+(SKEYSEED, Ni | Nr | SPIi | SPIr).
#[allow(clippy::too_many_arguments)]
pub fn derive_ike_keys(
    prf: Prf,
    encr: Encr,
    integ: Option<Integ>,
    skeyseed: &[u8],
    ni: &[u8],
    nr: &[u8],
    spi_i: u64,
    spi_r: u64,
) -> Result<IkeKeys, CryptoError> {
    let a = if encr.is_aead() {
        0
    } else {
        integ.map(Integ::key_len).ok_or(CryptoError::Unsupported)?
    };
    let e = encr.keymat_len();
    let p = prf.out_len();
    let lens = [p, a, a, e, e, p, p];
    let mut seed = Vec::with_capacity(ni.len() + nr.len() + 16);
    seed.extend_from_slice(ni);
    seed.extend_from_slice(nr);
    seed.extend_from_slice(&spi_i.to_be_bytes());
    seed.extend_from_slice(&spi_r.to_be_bytes());
    let dkm = prf.prf_plus(skeyseed, &seed, lens.iter().sum())?;
    let mut v = split(&dkm, &lens).into_iter();
    let mut next = || v.next().unwrap_or_default();
    Ok(IkeKeys {
        sk_d: next(),
        sk_ai: next(),
        sk_ar: next(),
        sk_ei: next(),
        sk_er: next(),
        sk_pi: next(),
        sk_pr: next(),
    })
}

/// CHILD_SA keys for ESP: initiator-to-responder first (RFC 7296 2.17).
#[derive(Clone, PartialEq, Eq)]
pub struct ChildKeys {
    /// Encryption key (with salt for AEAD) initiator -> responder.
    pub encr_i: Vec<u8>,
    /// Integrity key initiator -> responder (empty for AEAD).
    pub integ_i: Vec<u8>,
    pub encr_r: Vec<u8>,
    pub integ_r: Vec<u8>,
}

impl core::fmt::Debug for ChildKeys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("ChildKeys(..)")
    }
}

/// KEYMAT = prf+(SK_d, [g^ir (new) |] Ni | Nr).
pub fn derive_child_keys(
    prf: Prf,
    sk_d: &[u8],
    encr: Encr,
    integ: Option<Integ>,
    gir_new: Option<&[u8]>,
    ni: &[u8],
    nr: &[u8],
) -> Result<ChildKeys, CryptoError> {
    let e = encr.keymat_len();
    let a = if encr.is_aead() {
        0
    } else {
        integ.map(Integ::key_len).ok_or(CryptoError::Unsupported)?
    };
    let mut seed = Vec::new();
    if let Some(g) = gir_new {
        seed.extend_from_slice(g);
    }
    seed.extend_from_slice(ni);
    seed.extend_from_slice(nr);
    let lens = [e, a, e, a];
    let km = prf.prf_plus(sk_d, &seed, lens.iter().sum())?;
    let mut v = split(&km, &lens).into_iter();
    let mut next = || v.next().unwrap_or_default();
    Ok(ChildKeys {
        encr_i: next(),
        integ_i: next(),
        encr_r: next(),
        integ_r: next(),
    })
}

/// The octets signed by AUTH (RFC 7296 2.15):
/// RealMessage | peer's Nonce data | prf(SK_p, ID body).
pub fn signed_octets(
    prf: Prf,
    real_message: &[u8],
    peer_nonce: &[u8],
    sk_p: &[u8],
    id_body: &[u8],
) -> Vec<u8> {
    let mut v = Vec::with_capacity(real_message.len() + peer_nonce.len() + prf.out_len());
    v.extend_from_slice(real_message);
    v.extend_from_slice(peer_nonce);
    v.extend_from_slice(&prf.prf(sk_p, &[id_body]));
    v
}

/// AUTH = prf(prf(Shared Secret, "Key Pad for IKEv2"), `<SignedOctets>`).
pub fn psk_auth(prf: Prf, psk: &[u8], signed: &[u8]) -> Vec<u8> {
    let k = prf.prf(psk, &[b"Key Pad for IKEv2"]);
    prf.prf(&k, &[signed])
}

/// NAT_DETECTION_*_IP data = SHA-1(SPIi | SPIr | IP | port) (RFC 7296 2.23).
pub fn nat_detection_hash(spi_i: u64, spi_r: u64, ip: IpAddr, port: u16) -> [u8; 20] {
    use sha1::Digest;
    let mut h = Sha1::new();
    h.update(spi_i.to_be_bytes());
    h.update(spi_r.to_be_bytes());
    match ip {
        IpAddr::V4(a) => h.update(a.octets()),
        IpAddr::V6(a) => h.update(a.octets()),
    }
    h.update(port.to_be_bytes());
    h.finalize().into()
}

/// Constant-time equality.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests;
