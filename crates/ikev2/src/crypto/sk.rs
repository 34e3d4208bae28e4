//! Encrypted payload (SK, RFC 7296 3.14 / RFC 5282) and encrypted fragment (SKF, RFC 7383 2.5).

use aes::cipher::{block_padding::NoPadding, BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use rand::RngCore;
use ring::aead;

use super::{ct_eq, CryptoError, Encr, Integ};
use crate::wire::{codec::Writer, Header, Message, ParseError, Payload, PayloadType, HEADER_LEN};

/// Keys for one direction of SK protection.
#[derive(Clone, Copy, Debug)]
pub struct SkKeys<'a> {
    pub encr: Encr,
    pub integ: Option<Integ>,
    /// SK_e (with salt for AEAD).
    pub ke: &'a [u8],
    /// SK_a (empty for AEAD).
    pub ka: &'a [u8],
}

/// Failure to open an SK/SKF message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Parse(#[from] ParseError),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error("message carries no encrypted payload")]
    NotEncrypted,
}

/// A decrypted message: the header, the first inner payload type, the fragment numbers (for
/// SKF) and the plaintext inner payload chain.
#[derive(Debug, Clone)]
pub struct Opened {
    pub header: Header,
    pub first: PayloadType,
    pub fragment: Option<(u16, u16)>,
    pub inner: Vec<u8>,
}

impl SkKeys<'_> {
    fn iv_len(&self) -> usize {
        match self.encr {
            Encr::AesGcm16 { .. } => 8,
            Encr::AesCbc { .. } => 16,
        }
    }
    fn icv_len(&self) -> usize {
        match self.encr {
            Encr::AesGcm16 { .. } => 16,
            Encr::AesCbc { .. } => self.integ.map(Integ::icv_len).unwrap_or(0),
        }
    }

    /// Bytes an SK payload adds around `inner_len` plaintext octets (generic header included).
    pub fn overhead(&self, inner_len: usize) -> usize {
        let block = if self.encr.is_aead() { 1 } else { 16 };
        let padded = (inner_len + 1).div_ceil(block) * block;
        4 + self.iv_len() + padded + self.icv_len() - inner_len
    }

    /// Build a whole message: `header` (next_payload/length are filled in), then an SK payload
    /// (or SKF when `fragment` is `Some((number, total))`) whose plaintext is `inner`, a payload
    /// chain beginning with type `first`.
    pub fn seal(
        &self,
        header: &Header,
        first: PayloadType,
        fragment: Option<(u16, u16)>,
        inner: &[u8],
        rng: &mut dyn RngCore,
    ) -> Result<Vec<u8>, CryptoError> {
        let block = if self.encr.is_aead() { 1 } else { 16 };
        let padded = (inner.len() + 1).div_ceil(block) * block;
        let pad = padded - inner.len() - 1;
        let mut plain = Vec::with_capacity(padded);
        plain.extend_from_slice(inner);
        plain.resize(inner.len() + pad, 0);
        plain.push(u8::try_from(pad).unwrap_or(0));

        let frag_len = if fragment.is_some() { 4 } else { 0 };
        let payload_len = 4 + frag_len + self.iv_len() + padded + self.icv_len();
        let total = HEADER_LEN + payload_len;
        let mut h = *header;
        h.next_payload = if fragment.is_some() {
            PayloadType::SKF
        } else {
            PayloadType::SK
        };
        h.length = u32::try_from(total).map_err(|_| CryptoError::TooLong)?;
        let mut out = Vec::with_capacity(total);
        h.emit(&mut out);
        out.put_u8(first.0);
        out.put_u8(0);
        out.put_u16(u16::try_from(payload_len).map_err(|_| CryptoError::TooLong)?);
        if let Some((n, t)) = fragment {
            out.put_u16(n);
            out.put_u16(t);
        }
        let aad_end = out.len();
        let mut iv = vec![0u8; self.iv_len()];
        rng.fill_bytes(&mut iv);
        out.extend_from_slice(&iv);
        match self.encr {
            Encr::AesGcm16 { key } => {
                let (k, salt) = split_salt(self.ke, key)?;
                let lk = gcm_key(k)?;
                let nonce = gcm_nonce(salt, &iv)?;
                let tag = lk
                    .seal_in_place_separate_tag(nonce, aead::Aad::from(&out[..aad_end]), &mut plain)
                    .map_err(|_| CryptoError::Unsupported)?;
                out.extend_from_slice(&plain);
                out.extend_from_slice(tag.as_ref());
            }
            Encr::AesCbc { .. } => {
                cbc_encrypt(self.ke, &iv, &mut plain)?;
                out.extend_from_slice(&plain);
                let integ = self.integ.ok_or(CryptoError::Unsupported)?;
                let icv = integ.icv(self.ka, &out);
                out.extend_from_slice(&icv);
            }
        }
        Ok(out)
    }

    /// Verify and decrypt a whole message whose last payload is SK or SKF.
    pub fn open(&self, bytes: &[u8]) -> Result<Opened, OpenError> {
        let msg = Message::parse(bytes)?;
        let (first, fragment, body_len) = match msg.payloads.last() {
            Some(Payload::Sk { first, body }) => (*first, None, body.len()),
            Some(Payload::Skf {
                first,
                number,
                total,
                body,
            }) => (*first, Some((*number, *total)), body.len()),
            _ => return Err(OpenError::NotEncrypted),
        };
        let body_start = bytes.len() - body_len;
        let iv_len = self.iv_len();
        let icv_len = self.icv_len();
        if body_len < iv_len + icv_len + 1 {
            return Err(CryptoError::BadCiphertext.into());
        }
        let aad = bytes.get(..body_start).ok_or(CryptoError::BadCiphertext)?;
        let iv = bytes
            .get(body_start..body_start + iv_len)
            .ok_or(CryptoError::BadCiphertext)?;
        let ct_end = bytes.len() - icv_len;
        let mut plain = match self.encr {
            Encr::AesGcm16 { key } => {
                let (k, salt) = split_salt(self.ke, key)?;
                let lk = gcm_key(k)?;
                let nonce = gcm_nonce(salt, iv)?;
                let mut buf = bytes
                    .get(body_start + iv_len..)
                    .ok_or(CryptoError::BadCiphertext)?
                    .to_vec();
                let n = lk
                    .open_in_place(nonce, aead::Aad::from(aad), &mut buf)
                    .map_err(|_| CryptoError::Integrity)?
                    .len();
                buf.truncate(n);
                buf
            }
            Encr::AesCbc { .. } => {
                let integ = self.integ.ok_or(CryptoError::Unsupported)?;
                let covered = bytes.get(..ct_end).ok_or(CryptoError::BadCiphertext)?;
                let icv = bytes.get(ct_end..).ok_or(CryptoError::BadCiphertext)?;
                if !ct_eq(&integ.icv(self.ka, covered), icv) {
                    return Err(CryptoError::Integrity.into());
                }
                let mut buf = bytes
                    .get(body_start + iv_len..ct_end)
                    .ok_or(CryptoError::BadCiphertext)?
                    .to_vec();
                if buf.is_empty() || buf.len() % 16 != 0 {
                    return Err(CryptoError::BadCiphertext.into());
                }
                cbc_decrypt(self.ke, iv, &mut buf)?;
                buf
            }
        };
        let pad = usize::from(*plain.last().ok_or(CryptoError::BadCiphertext)?);
        if pad + 1 > plain.len() {
            return Err(CryptoError::BadCiphertext.into());
        }
        plain.truncate(plain.len() - pad - 1);
        Ok(Opened {
            header: msg.header,
            first,
            fragment,
            inner: plain,
        })
    }
}

fn split_salt(ke: &[u8], key: usize) -> Result<(&[u8], &[u8]), CryptoError> {
    if ke.len() != key + 4 {
        return Err(CryptoError::Unsupported);
    }
    Ok(ke.split_at(key))
}

fn gcm_key(k: &[u8]) -> Result<aead::LessSafeKey, CryptoError> {
    let alg = match k.len() {
        16 => &aead::AES_128_GCM,
        32 => &aead::AES_256_GCM,
        _ => return Err(CryptoError::Unsupported),
    };
    let uk = aead::UnboundKey::new(alg, k).map_err(|_| CryptoError::Unsupported)?;
    Ok(aead::LessSafeKey::new(uk))
}

fn gcm_nonce(salt: &[u8], iv: &[u8]) -> Result<aead::Nonce, CryptoError> {
    let mut n = [0u8; 12];
    n.get_mut(..4)
        .ok_or(CryptoError::Unsupported)?
        .copy_from_slice(salt);
    n.get_mut(4..)
        .ok_or(CryptoError::Unsupported)?
        .copy_from_slice(iv);
    Ok(aead::Nonce::assume_unique_for_key(n))
}

fn cbc_encrypt(key: &[u8], iv: &[u8], buf: &mut [u8]) -> Result<(), CryptoError> {
    let n = buf.len();
    let r = match key.len() {
        16 => cbc::Encryptor::<aes::Aes128>::new_from_slices(key, iv)
            .map_err(|_| CryptoError::Unsupported)?
            .encrypt_padded_mut::<NoPadding>(buf, n)
            .map(|_| ()),
        24 => cbc::Encryptor::<aes::Aes192>::new_from_slices(key, iv)
            .map_err(|_| CryptoError::Unsupported)?
            .encrypt_padded_mut::<NoPadding>(buf, n)
            .map(|_| ()),
        32 => cbc::Encryptor::<aes::Aes256>::new_from_slices(key, iv)
            .map_err(|_| CryptoError::Unsupported)?
            .encrypt_padded_mut::<NoPadding>(buf, n)
            .map(|_| ()),
        _ => return Err(CryptoError::Unsupported),
    };
    r.map_err(|_| CryptoError::BadCiphertext)
}

fn cbc_decrypt(key: &[u8], iv: &[u8], buf: &mut [u8]) -> Result<(), CryptoError> {
    let r = match key.len() {
        16 => cbc::Decryptor::<aes::Aes128>::new_from_slices(key, iv)
            .map_err(|_| CryptoError::Unsupported)?
            .decrypt_padded_mut::<NoPadding>(buf)
            .map(|_| ()),
        24 => cbc::Decryptor::<aes::Aes192>::new_from_slices(key, iv)
            .map_err(|_| CryptoError::Unsupported)?
            .decrypt_padded_mut::<NoPadding>(buf)
            .map(|_| ()),
        32 => cbc::Decryptor::<aes::Aes256>::new_from_slices(key, iv)
            .map_err(|_| CryptoError::Unsupported)?
            .decrypt_padded_mut::<NoPadding>(buf)
            .map(|_| ()),
        _ => return Err(CryptoError::Unsupported),
    };
    r.map_err(|_| CryptoError::BadCiphertext)
}
