//! AES-CBC (RFC 3602) with HMAC-SHA1-96 (RFC 2404) or HMAC-SHA-256-128 (RFC 4868),
//! encrypt-then-MAC.

use aes::{Aes128Dec, Aes128Enc, Aes256Dec, Aes256Enc};
use cbc::cipher::{
    block_padding::NoPadding, BlockCipher, BlockDecryptMut, BlockEncryptMut, InnerIvInit, KeyInit,
};
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::Sha256;

use super::{split, Suite, Transform};
use crate::error::{ConfigError, EspError};

const BLOCK: usize = 16;

// Lives once per SA behind a Box<dyn Transform>; boxing the variants would add a pointer chase.
#[allow(clippy::large_enum_variant)]
enum Aes {
    A128(Aes128Enc, Aes128Dec),
    A256(Aes256Enc, Aes256Dec),
}

/// A keyed HMAC whose inner and outer pads are hashed once; each packet clones it.
#[derive(Clone)]
pub(crate) enum Integ {
    Sha1(Hmac<Sha1>),
    Sha256(Hmac<Sha256>),
}

impl Integ {
    fn new(suite: Suite, key: &[u8]) -> Result<Self, ConfigError> {
        let bad = |_| ConfigError::KeyLength {
            what: "integrity",
            expected: suite.integ_key_len(),
            got: key.len(),
        };
        Ok(match suite {
            Suite::AesCbc128HmacSha1 | Suite::AesCbc256HmacSha1 => {
                Integ::Sha1(<Hmac<Sha1> as KeyInit>::new_from_slice(key).map_err(bad)?)
            }
            _ => Integ::Sha256(<Hmac<Sha256> as KeyInit>::new_from_slice(key).map_err(bad)?),
        })
    }

    /// Full-length MAC over `parts` (then truncated by the caller).
    fn compute(&self, parts: &[&[u8]], out: &mut [u8]) {
        fn run<M: Mac + Clone>(m: &M, parts: &[&[u8]], out: &mut [u8]) {
            let mut m = m.clone();
            for p in parts {
                m.update(p);
            }
            let tag = m.finalize().into_bytes();
            for (o, t) in out.iter_mut().zip(tag.iter()) {
                *o = *t;
            }
        }
        match self {
            Integ::Sha1(m) => run(m, parts, out),
            Integ::Sha256(m) => run(m, parts, out),
        }
    }

    /// Constant-time check of a truncated ICV.
    fn verify(&self, parts: &[&[u8]], icv: &[u8]) -> bool {
        fn run<M: Mac + Clone>(m: &M, parts: &[&[u8]], icv: &[u8]) -> bool {
            let mut m = m.clone();
            for p in parts {
                m.update(p);
            }
            m.verify_truncated_left(icv).is_ok()
        }
        match self {
            Integ::Sha1(m) => run(m, parts, icv),
            Integ::Sha256(m) => run(m, parts, icv),
        }
    }
}

/// AES-CBC with an HMAC. `integ` is `None` only for the RFC 3602 known-answer tests,
/// which are encryption-only; no public constructor builds that.
pub(crate) struct CbcHmac {
    aes: Aes,
    integ: Option<Integ>,
    icv_len: usize,
}

impl CbcHmac {
    pub(crate) fn new(suite: Suite, enc_key: &[u8], integ_key: &[u8]) -> Result<Self, ConfigError> {
        Ok(CbcHmac {
            aes: aes_keys(enc_key)?,
            integ: Some(Integ::new(suite, integ_key)?),
            icv_len: suite.icv_len(),
        })
    }

    /// Encryption without integrity (RFC 3602 section 4 cases 5-8). Test use only.
    #[cfg(test)]
    pub(crate) fn new_unauthenticated(enc_key: &[u8]) -> Result<Self, ConfigError> {
        Ok(CbcHmac {
            aes: aes_keys(enc_key)?,
            integ: None,
            icv_len: 0,
        })
    }
}

fn aes_keys(key: &[u8]) -> Result<Aes, ConfigError> {
    let bad = |_: cbc::cipher::InvalidLength| ConfigError::KeyLength {
        what: "encryption",
        expected: if key.len() < 32 { 16 } else { 32 },
        got: key.len(),
    };
    match key.len() {
        16 => Ok(Aes::A128(
            Aes128Enc::new_from_slice(key).map_err(bad)?,
            Aes128Dec::new_from_slice(key).map_err(bad)?,
        )),
        32 => Ok(Aes::A256(
            Aes256Enc::new_from_slice(key).map_err(bad)?,
            Aes256Dec::new_from_slice(key).map_err(bad)?,
        )),
        _ => Err(bad(cbc::cipher::InvalidLength)),
    }
}

fn cbc_encrypt<C>(cipher: &C, iv: &[u8], text: &mut [u8]) -> Result<(), EspError>
where
    C: BlockEncryptMut + BlockCipher + Clone,
{
    let bad = EspError::BadLength {
        len: text.len(),
        block: BLOCK,
    };
    let len = text.len();
    cbc::Encryptor::<C>::inner_iv_slice_init(cipher.clone(), iv)
        .map_err(|_| bad)?
        .encrypt_padded_mut::<NoPadding>(text, len)
        .map(|_| ())
        .map_err(|_| bad)
}

fn cbc_decrypt<C>(cipher: &C, iv: &[u8], text: &mut [u8]) -> Result<(), EspError>
where
    C: BlockDecryptMut + BlockCipher + Clone,
{
    let bad = EspError::BadLength {
        len: text.len(),
        block: BLOCK,
    };
    cbc::Decryptor::<C>::inner_iv_slice_init(cipher.clone(), iv)
        .map_err(|_| bad)?
        .decrypt_padded_mut::<NoPadding>(text)
        .map(|_| ())
        .map_err(|_| bad)
}

impl Transform for CbcHmac {
    fn iv_len(&self) -> usize {
        BLOCK
    }

    fn icv_len(&self) -> usize {
        self.icv_len
    }

    fn align(&self) -> usize {
        BLOCK
    }

    //= https://www.rfc-editor.org/rfc/rfc4303#section-3.3.2.1
    //# If
    //# the ESN option is enabled for the SA, the high-order 32
    //# bits of the sequence number are appended after the Next
    //# Header field for purposes of this computation, but are not
    //# transmitted.
    fn seal(&self, esn_hi: Option<u32>, packet: &mut [u8]) -> Result<(), EspError> {
        let p = split(packet, BLOCK, self.icv_len)?;
        if p.text.is_empty() || p.text.len() % BLOCK != 0 {
            return Err(EspError::BadLength {
                len: p.text.len(),
                block: BLOCK,
            });
        }
        match &self.aes {
            Aes::A128(e, _) => cbc_encrypt(e, p.iv, p.text)?,
            Aes::A256(e, _) => cbc_encrypt(e, p.iv, p.text)?,
        }
        if let Some(integ) = &self.integ {
            let hi = esn_hi.map(u32::to_be_bytes);
            let esn: &[u8] = hi.as_ref().map_or(&[], |h| h.as_slice());
            integ.compute(&[p.header.as_slice(), p.iv, p.text, esn], p.icv);
        }
        Ok(())
    }

    fn open(&self, esn_hi: Option<u32>, packet: &mut [u8]) -> Result<(), EspError> {
        let p = split(packet, BLOCK, self.icv_len)?;
        if p.text.is_empty() || p.text.len() % BLOCK != 0 {
            return Err(EspError::BadLength {
                len: p.text.len(),
                block: BLOCK,
            });
        }
        if let Some(integ) = &self.integ {
            let hi = esn_hi.map(u32::to_be_bytes);
            let esn: &[u8] = hi.as_ref().map_or(&[], |h| h.as_slice());
            if !integ.verify(&[p.header.as_slice(), p.iv, p.text, esn], p.icv) {
                return Err(EspError::AuthFailed);
            }
        }
        match &self.aes {
            Aes::A128(_, d) => cbc_decrypt(d, p.iv, p.text),
            Aes::A256(_, d) => cbc_decrypt(d, p.iv, p.text),
        }
    }
}

/// The truncated HMACs ESP uses, exposed for known-answer tests.
pub fn hmac_icv(suite: Suite, key: &[u8], data: &[u8]) -> Result<Vec<u8>, ConfigError> {
    let integ = Integ::new(suite, key)?;
    let mut out = vec![0u8; suite.icv_len()];
    integ.compute(&[data], &mut out);
    Ok(out)
}
