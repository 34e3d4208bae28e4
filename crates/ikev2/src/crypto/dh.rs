//! Diffie-Hellman groups 14 (MODP-2048, RFC 3526), 19 (ECP-256, RFC 5903) and
//! 31 (Curve25519, RFC 8031).
//!
//! Groups 19 and 31 use ring ephemeral keys; ring draws those private keys from the
//! operating system (it accepts no caller RNG). Group 14 private exponents come from the
//! caller's RNG and the modular exponentiation is constant-time (crypto-bigint).

use crypto_bigint::modular::runtime_mod::{DynResidue, DynResidueParams};
use crypto_bigint::{Encoding, U2048, U256};
use rand::RngCore;
use ring::agreement;

use super::CryptoError;
use crate::wire::DhId;

/// RFC 3526 section 3, 2048-bit MODP group prime (generator 2).
pub const MODP2048_P: [u8; 256] = hex_array(
    b"FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7EDEE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF0598DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3BE39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF6955817183995497CEA956AE515D2261898FA051015728E5A8AACAA68FFFFFFFFFFFFFFFF",
);

const fn hex_array(h: &[u8; 512]) -> [u8; 256] {
    const fn nib(c: u8) -> u8 {
        match c {
            b'0'..=b'9' => c - b'0',
            b'A'..=b'F' => c - b'A' + 10,
            _ => c - b'a' + 10,
        }
    }
    let mut out = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        out[i] = (nib(h[2 * i]) << 4) | nib(h[2 * i + 1]);
        i += 1;
    }
    out
}

/// Private exponent size for group 14 (RFC 3526 suggests 2 x 112-bit strength; we use 256).
const MODP_EXP_BITS: usize = 256;

enum Private {
    Ring(agreement::EphemeralPrivateKey),
    Modp(U256),
}

/// One side's ephemeral key share: the KE payload data and the secret to finish the exchange.
pub struct KeyShare {
    group: DhId,
    public: Vec<u8>,
    private: Private,
}

impl core::fmt::Debug for KeyShare {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "KeyShare({:?})", self.group)
    }
}

/// Groups we implement.
pub fn is_supported(group: DhId) -> bool {
    matches!(group, DhId::MODP_2048 | DhId::ECP_256 | DhId::CURVE25519)
}

/// Length of the KE payload data for a supported group.
pub fn public_len(group: DhId) -> Option<usize> {
    match group {
        DhId::MODP_2048 => Some(256),
        DhId::ECP_256 => Some(64),
        DhId::CURVE25519 => Some(32),
        _ => None,
    }
}

fn modp_params() -> DynResidueParams<{ U2048::LIMBS }> {
    DynResidueParams::new(&U2048::from_be_bytes(MODP2048_P))
}

impl KeyShare {
    /// Generate a key share for `group`.
    pub fn generate(group: DhId, rng: &mut dyn RngCore) -> Result<KeyShare, CryptoError> {
        match group {
            DhId::CURVE25519 | DhId::ECP_256 => {
                let alg = if group == DhId::CURVE25519 {
                    &agreement::X25519
                } else {
                    &agreement::ECDH_P256
                };
                let sys = ring::rand::SystemRandom::new();
                let k = agreement::EphemeralPrivateKey::generate(alg, &sys)
                    .map_err(|_| CryptoError::Unsupported)?;
                let pk = k
                    .compute_public_key()
                    .map_err(|_| CryptoError::Unsupported)?;
                let pk = pk.as_ref();
                // RFC 5903: KE data is x | y without the 0x04 point-format octet.
                let public = if group == DhId::ECP_256 {
                    pk.get(1..).unwrap_or_default().to_vec()
                } else {
                    pk.to_vec()
                };
                Ok(KeyShare {
                    group,
                    public,
                    private: Private::Ring(k),
                })
            }
            DhId::MODP_2048 => {
                let mut b = [0u8; 32];
                rng.fill_bytes(&mut b);
                Ok(Self::modp_from_private(U256::from_be_bytes(b)))
            }
            _ => Err(CryptoError::Unsupported),
        }
    }

    /// Group 14 share from a fixed private exponent (tests and known-answer checks).
    pub fn modp_from_private(x: U256) -> KeyShare {
        let g = DynResidue::new(&U2048::from_u8(2), modp_params());
        let public = g
            .pow_bounded_exp(&x, MODP_EXP_BITS)
            .retrieve()
            .to_be_bytes()
            .to_vec();
        KeyShare {
            group: DhId::MODP_2048,
            public,
            private: Private::Modp(x),
        }
    }

    pub fn group(&self) -> DhId {
        self.group
    }

    /// The KE payload data.
    pub fn public(&self) -> &[u8] {
        &self.public
    }

    /// Finish the exchange with the peer's KE data; returns g^ir as used by IKE.
    pub fn agree(self, peer: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if Some(peer.len()) != public_len(self.group) {
            return Err(CryptoError::BadPublicValue);
        }
        match self.private {
            Private::Ring(k) => {
                let (alg, peer_bytes) = if self.group == DhId::CURVE25519 {
                    (&agreement::X25519, peer.to_vec())
                } else {
                    let mut v = Vec::with_capacity(65);
                    v.push(0x04);
                    v.extend_from_slice(peer);
                    (&agreement::ECDH_P256, v)
                };
                let pk = agreement::UnparsedPublicKey::new(alg, peer_bytes);
                agreement::agree_ephemeral(k, &pk, |s| s.to_vec())
                    .map_err(|_| CryptoError::BadPublicValue)
            }
            Private::Modp(x) => {
                let p = U2048::from_be_bytes(MODP2048_P);
                let y = U2048::from_be_slice(peer);
                // RFC 7296 / SP 800-56A: reject y <= 1 and y >= p - 1.
                let pm1 = p.wrapping_sub(&U2048::ONE);
                if y <= U2048::ONE || y >= pm1 {
                    return Err(CryptoError::BadPublicValue);
                }
                let r = DynResidue::new(&y, modp_params()).pow_bounded_exp(&x, MODP_EXP_BITS);
                Ok(r.retrieve().to_be_bytes().to_vec())
            }
        }
    }
}
