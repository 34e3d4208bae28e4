//! Cipher suites behind one small trait, [`Transform`].
//!
//! | suite | KEYMAT (encryption) | integrity key | IV | ICV | alignment |
//! |---|---|---|---|---|---|
//! | AES-GCM-16 (RFC 4106), 128/256 | key \| 4-octet salt (20/36) | - | 8 | 16 | 4 |
//! | ChaCha20-Poly1305 (RFC 7634) | key \| 4-octet salt (36) | - | 8 | 16 | 4 |
//! | AES-CBC (RFC 3602) 128/256 + HMAC-SHA1-96 (RFC 2404) | 16/32 | 20 | 16 | 12 | 16 |
//! | AES-CBC 128/256 + HMAC-SHA-256-128 (RFC 4868) | 16/32 | 32 | 16 | 16 | 16 |
//!
//! AEAD suites use `ring` (nonce = salt | IV, AAD = SPI | seq or SPI | ESN-high | seq-low);
//! CBC suites use RustCrypto `aes` + `cbc` and encrypt-then-MAC, with the ICV over
//! SPI | seq | IV | ciphertext, followed by the ESN high half when ESN is on
//! (RFC 4303 section 2.2.1).

use crate::error::{ConfigError, EspError};
use crate::wire::HEADER_LEN;

mod aead;
mod cbc;

pub use cbc::hmac_icv;
pub(crate) use cbc::CbcHmac;

/// A negotiated ESP transform combination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Suite {
    /// ENCR_AES_GCM_16 with a 128-bit key.
    AesGcm128,
    /// ENCR_AES_GCM_16 with a 256-bit key.
    AesGcm256,
    /// ENCR_CHACHA20_POLY1305.
    ChaCha20Poly1305,
    /// ENCR_AES_CBC 128 + AUTH_HMAC_SHA1_96.
    AesCbc128HmacSha1,
    /// ENCR_AES_CBC 256 + AUTH_HMAC_SHA1_96.
    AesCbc256HmacSha1,
    /// ENCR_AES_CBC 128 + AUTH_HMAC_SHA2_256_128.
    AesCbc128HmacSha256,
    /// ENCR_AES_CBC 256 + AUTH_HMAC_SHA2_256_128.
    AesCbc256HmacSha256,
}

/// IKEv2 transform IDs (RFC 7296 / IANA "IKEv2 Transform Type 1 and 3").
pub mod ikev2_id {
    pub const ENCR_AES_CBC: u16 = 12;
    pub const ENCR_AES_GCM_16: u16 = 20;
    pub const ENCR_CHACHA20_POLY1305: u16 = 28;
    pub const AUTH_NONE: u16 = 0;
    pub const AUTH_HMAC_SHA1_96: u16 = 2;
    pub const AUTH_HMAC_SHA2_256_128: u16 = 12;
}

impl Suite {
    /// Every supported suite.
    pub const ALL: [Suite; 7] = [
        Suite::AesGcm128,
        Suite::AesGcm256,
        Suite::ChaCha20Poly1305,
        Suite::AesCbc128HmacSha1,
        Suite::AesCbc256HmacSha1,
        Suite::AesCbc128HmacSha256,
        Suite::AesCbc256HmacSha256,
    ];

    /// Maps negotiated IKEv2 transforms (encryption ID, key length in bits, integrity ID).
    pub fn from_ikev2(encr: u16, key_bits: u16, integ: u16) -> Option<Suite> {
        use ikev2_id::*;
        Some(match (encr, key_bits, integ) {
            (ENCR_AES_GCM_16, 128, AUTH_NONE) => Suite::AesGcm128,
            (ENCR_AES_GCM_16, 256, AUTH_NONE) => Suite::AesGcm256,
            (ENCR_CHACHA20_POLY1305, _, AUTH_NONE) => Suite::ChaCha20Poly1305,
            (ENCR_AES_CBC, 128, AUTH_HMAC_SHA1_96) => Suite::AesCbc128HmacSha1,
            (ENCR_AES_CBC, 256, AUTH_HMAC_SHA1_96) => Suite::AesCbc256HmacSha1,
            (ENCR_AES_CBC, 128, AUTH_HMAC_SHA2_256_128) => Suite::AesCbc128HmacSha256,
            (ENCR_AES_CBC, 256, AUTH_HMAC_SHA2_256_128) => Suite::AesCbc256HmacSha256,
            _ => return None,
        })
    }

    /// True for the combined-mode (AEAD) suites.
    pub fn is_aead(self) -> bool {
        matches!(
            self,
            Suite::AesGcm128 | Suite::AesGcm256 | Suite::ChaCha20Poly1305
        )
    }

    /// Octets of encryption KEYMAT, including the 4-octet salt of AEAD suites.
    pub fn enc_key_len(self) -> usize {
        match self {
            Suite::AesGcm128 => 16 + 4,
            Suite::AesGcm256 | Suite::ChaCha20Poly1305 => 32 + 4,
            Suite::AesCbc128HmacSha1 | Suite::AesCbc128HmacSha256 => 16,
            Suite::AesCbc256HmacSha1 | Suite::AesCbc256HmacSha256 => 32,
        }
    }

    /// Octets of integrity KEYMAT (0 for AEAD suites).
    pub fn integ_key_len(self) -> usize {
        match self {
            Suite::AesCbc128HmacSha1 | Suite::AesCbc256HmacSha1 => 20,
            Suite::AesCbc128HmacSha256 | Suite::AesCbc256HmacSha256 => 32,
            _ => 0,
        }
    }

    /// Octets of IV carried in each packet.
    pub fn iv_len(self) -> usize {
        if self.is_aead() {
            8
        } else {
            16
        }
    }

    /// Octets of ICV at the end of each packet.
    pub fn icv_len(self) -> usize {
        match self {
            Suite::AesCbc128HmacSha1 | Suite::AesCbc256HmacSha1 => 12,
            _ => 16,
        }
    }

    /// Ciphertext alignment: payload, padding and trailer end on a multiple of this.
    pub fn align(self) -> usize {
        if self.is_aead() {
            4
        } else {
            16
        }
    }

    /// Builds the keyed transform from KEYMAT (RFC 7296 section 2.17 order is the caller's job).
    pub fn transform(
        self,
        enc_key: &[u8],
        integ_key: &[u8],
    ) -> Result<Box<dyn Transform>, ConfigError> {
        check_len("encryption", self.enc_key_len(), enc_key.len())?;
        check_len("integrity", self.integ_key_len(), integ_key.len())?;
        Ok(match self {
            Suite::AesGcm128 => Box::new(aead::RingAead::new(&ring::aead::AES_128_GCM, enc_key)?),
            Suite::AesGcm256 => Box::new(aead::RingAead::new(&ring::aead::AES_256_GCM, enc_key)?),
            Suite::ChaCha20Poly1305 => Box::new(aead::RingAead::new(
                &ring::aead::CHACHA20_POLY1305,
                enc_key,
            )?),
            Suite::AesCbc128HmacSha1
            | Suite::AesCbc256HmacSha1
            | Suite::AesCbc128HmacSha256
            | Suite::AesCbc256HmacSha256 => Box::new(CbcHmac::new(self, enc_key, integ_key)?),
        })
    }
}

fn check_len(what: &'static str, expected: usize, got: usize) -> Result<(), ConfigError> {
    if expected == got {
        Ok(())
    } else {
        Err(ConfigError::KeyLength {
            what,
            expected,
            got,
        })
    }
}

/// A keyed ESP transform: encrypts and authenticates one packet in place.
///
/// `packet` is always the whole ESP packet: header (8) | IV | text | ICV, where text is
/// payload | padding | pad length | next header. `esn_hi` is the high half of a 64-bit
/// sequence number when ESN is negotiated.
pub trait Transform: Send + Sync {
    fn iv_len(&self) -> usize;
    fn icv_len(&self) -> usize;
    fn align(&self) -> usize;
    /// Encrypts the text (the IV is already in place) and writes the ICV.
    fn seal(&self, esn_hi: Option<u32>, packet: &mut [u8]) -> Result<(), EspError>;
    /// Verifies the ICV first, then decrypts the text in place. On error the text is garbage.
    fn open(&self, esn_hi: Option<u32>, packet: &mut [u8]) -> Result<(), EspError>;
}

/// The four regions of an ESP packet, borrowed mutably.
pub(crate) struct Parts<'a> {
    pub header: &'a mut [u8; HEADER_LEN],
    pub iv: &'a mut [u8],
    pub text: &'a mut [u8],
    pub icv: &'a mut [u8],
}

/// Splits `packet` into header | IV | text | ICV, or says it is too short.
pub(crate) fn split(
    packet: &mut [u8],
    iv_len: usize,
    icv_len: usize,
) -> Result<Parts<'_>, EspError> {
    let len = packet.len();
    let too_short = EspError::TooShort {
        len,
        min: HEADER_LEN + iv_len + icv_len,
    };
    let text_end = len.checked_sub(icv_len).ok_or(too_short)?;
    let (head, icv) = packet.split_at_mut_checked(text_end).ok_or(too_short)?;
    let (header, rest) = head
        .split_first_chunk_mut::<HEADER_LEN>()
        .ok_or(too_short)?;
    let (iv, text) = rest.split_at_mut_checked(iv_len).ok_or(too_short)?;
    Ok(Parts {
        header,
        iv,
        text,
        icv,
    })
}

/// AAD of combined-mode suites: SPI | seq, or SPI | ESN high | seq low (RFC 4106 section 5).
pub(crate) fn aead_aad(header: &[u8; HEADER_LEN], esn_hi: Option<u32>) -> ([u8; 12], usize) {
    let mut aad = [0u8; 12];
    let [s0, s1, s2, s3, q0, q1, q2, q3] = *header;
    match esn_hi {
        Some(hi) => {
            let [h0, h1, h2, h3] = hi.to_be_bytes();
            aad = [s0, s1, s2, s3, h0, h1, h2, h3, q0, q1, q2, q3];
            (aad, 12)
        }
        None => {
            aad[..HEADER_LEN].copy_from_slice(header);
            (aad, HEADER_LEN)
        }
    }
}
