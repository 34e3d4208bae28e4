//! AES-GCM-16 (RFC 4106) and ChaCha20-Poly1305 (RFC 7634) through `ring`, in place.

use ring::aead::{Aad, Algorithm, LessSafeKey, Nonce, UnboundKey, NONCE_LEN};

use super::{aead_aad, split, Transform};
use crate::error::{ConfigError, EspError};

const SALT_LEN: usize = 4;
const IV_LEN: usize = 8;
const ICV_LEN: usize = 16;

/// A ring AEAD key plus the 4-octet salt from the end of the KEYMAT.
pub(crate) struct RingAead {
    key: LessSafeKey,
    salt: [u8; SALT_LEN],
}

impl RingAead {
    /// `keymat` = key | salt (RFC 4106 section 8.1, RFC 7634 section 4).
    pub(crate) fn new(alg: &'static Algorithm, keymat: &[u8]) -> Result<Self, ConfigError> {
        let bad = ConfigError::KeyLength {
            what: "encryption",
            expected: alg.key_len() + SALT_LEN,
            got: keymat.len(),
        };
        let key_len = keymat.len().checked_sub(SALT_LEN).ok_or(bad.clone())?;
        let (key, salt) = keymat.split_at_checked(key_len).ok_or(bad.clone())?;
        let salt: [u8; SALT_LEN] = salt.try_into().map_err(|_| bad.clone())?;
        let key = UnboundKey::new(alg, key).map_err(|_| bad)?;
        Ok(RingAead {
            key: LessSafeKey::new(key),
            salt,
        })
    }

    fn nonce(&self, iv: &[u8]) -> Result<Nonce, EspError> {
        let mut n = [0u8; NONCE_LEN];
        let (salt, rest) = n.split_at_mut(SALT_LEN);
        salt.copy_from_slice(&self.salt);
        if iv.len() != rest.len() {
            return Err(EspError::TooShort {
                len: iv.len(),
                min: IV_LEN,
            });
        }
        rest.copy_from_slice(iv);
        Ok(Nonce::assume_unique_for_key(n))
    }
}

impl Transform for RingAead {
    fn iv_len(&self) -> usize {
        IV_LEN
    }

    fn icv_len(&self) -> usize {
        ICV_LEN
    }

    fn align(&self) -> usize {
        4
    }

    fn seal(&self, esn_hi: Option<u32>, packet: &mut [u8]) -> Result<(), EspError> {
        let p = split(packet, IV_LEN, ICV_LEN)?;
        let (aad, aad_len) = aead_aad(p.header, esn_hi);
        let nonce = self.nonce(p.iv)?;
        let aad = Aad::from(aad.get(..aad_len).unwrap_or_default());
        let tag = self
            .key
            .seal_in_place_separate_tag(nonce, aad, p.text)
            .map_err(|_| EspError::TooLong { len: p.text.len() })?;
        let tag = tag.as_ref();
        if tag.len() != p.icv.len() {
            return Err(EspError::TooShort {
                len: p.icv.len(),
                min: tag.len(),
            });
        }
        p.icv.copy_from_slice(tag);
        Ok(())
    }

    fn open(&self, esn_hi: Option<u32>, packet: &mut [u8]) -> Result<(), EspError> {
        let p = split(packet, IV_LEN, ICV_LEN)?;
        let (aad, aad_len) = aead_aad(p.header, esn_hi);
        let nonce = self.nonce(p.iv)?;
        let aad = Aad::from(aad.get(..aad_len).unwrap_or_default());
        // Ciphertext and tag are adjacent in the packet: open them in place together.
        let ct_start = HEADER_IV;
        let in_out = packet.get_mut(ct_start..).ok_or(EspError::TooShort {
            len: 0,
            min: ct_start,
        })?;
        self.key
            .open_in_place(nonce, aad, in_out)
            .map(|_| ())
            .map_err(|_| EspError::AuthFailed)
    }
}

const HEADER_IV: usize = crate::wire::HEADER_LEN + IV_LEN;
