//! Configuration for either role.

use std::net::Ipv4Addr;
use std::time::Duration;

use crate::crypto::cert::LocalCert;
use crate::crypto::{Encr, Integ, Prf};
use crate::wire::{DhId, Identification, TrafficSelector};

/// One IKE SA proposal: one of each algorithm plus an ordered list of DH groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IkeProposal {
    pub encr: Encr,
    pub prf: Prf,
    /// Required unless `encr` is AEAD.
    pub integ: Option<Integ>,
    pub dh: Vec<DhId>,
}

impl IkeProposal {
    /// AES-GCM-16-256, PRF-HMAC-SHA2-256, with the given DH groups.
    pub fn aes_gcm_256(dh: &[DhId]) -> Self {
        IkeProposal {
            encr: Encr::AesGcm16 { key: 32 },
            prf: Prf::HmacSha256,
            integ: None,
            dh: dh.to_vec(),
        }
    }
    /// AES-CBC-128, HMAC-SHA2-256-128, PRF-HMAC-SHA2-256, with the given DH groups.
    pub fn aes_cbc_128_sha256(dh: &[DhId]) -> Self {
        IkeProposal {
            encr: Encr::AesCbc { key: 16 },
            prf: Prf::HmacSha256,
            integ: Some(Integ::HmacSha256_128),
            dh: dh.to_vec(),
        }
    }
}

/// One ESP proposal for a CHILD_SA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EspProposal {
    pub encr: Encr,
    pub integ: Option<Integ>,
    pub esn: bool,
    /// DH group for PFS in CREATE_CHILD_SA (not sent in IKE_AUTH).
    pub pfs: Option<DhId>,
}

impl EspProposal {
    pub fn aes_gcm_128() -> Self {
        EspProposal {
            encr: Encr::AesGcm16 { key: 16 },
            integ: None,
            esn: false,
            pfs: None,
        }
    }
    pub fn aes_cbc_128_sha256() -> Self {
        EspProposal {
            encr: Encr::AesCbc { key: 16 },
            integ: Some(Integ::HmacSha256_128),
            esn: false,
            pfs: None,
        }
    }
}

/// Retransmission schedule (RFC 7296 2.1): `base`, doubling, at most `max_tries` sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retransmit {
    pub base: Duration,
    pub max_timeout: Duration,
    pub max_tries: u32,
}

impl Default for Retransmit {
    fn default() -> Self {
        Retransmit {
            base: Duration::from_millis(1000),
            max_timeout: Duration::from_secs(16),
            max_tries: 6,
        }
    }
}

/// Settings shared by initiator and responder.
#[derive(Debug, Clone)]
pub struct Config {
    /// Pre-shared key; empty disables PSK authentication (ours and the peer's).
    pub psk: Vec<u8>,
    /// Authenticate ourselves with this certificate (RFC 7427 signature) instead of the PSK.
    pub local_cert: Option<LocalCert>,
    /// DER CA certificates we accept for a peer that authenticates with a certificate.
    pub trust_anchors: Vec<Vec<u8>>,
    pub local_id: Identification,
    /// Expected peer ID (the initiator also sends it as IDr when set).
    pub remote_id: Option<Identification>,
    pub ike_proposals: Vec<IkeProposal>,
    pub esp_proposals: Vec<EspProposal>,
    /// Traffic we protect on our side (TSi for the initiator, TSr for the responder).
    pub ts_local: Vec<TrafficSelector>,
    /// Traffic we accept on the peer's side.
    pub ts_remote: Vec<TrafficSelector>,
    /// Initiator: ask for INTERNAL_IP4_ADDRESS and INTERNAL_IP4_DNS.
    pub request_vip: bool,
    pub retransmit: Retransmit,
    /// Send a liveness check after this long without hearing from the peer.
    pub dpd_interval: Option<Duration>,
    /// Offer/accept MOBIKE (RFC 4555).
    pub mobike: bool,
    /// Offer/accept IKE fragmentation (RFC 7383).
    pub fragmentation: bool,
    /// Largest IKE message (UDP payload) before fragmenting.
    pub fragment_size: usize,
    /// Rekey the IKE SA after this long.
    pub ike_lifetime: Option<Duration>,
    /// Rekey each CHILD_SA after this long.
    pub child_lifetime: Option<Duration>,
    /// Responder: demand a COOKIE round trip before keeping state.
    pub require_cookie: bool,
    /// Responder: first address and size of the virtual IP pool.
    pub vip_pool: Option<(Ipv4Addr, u32)>,
    /// Responder: DNS servers handed out in CFG_REPLY.
    pub dns: Vec<Ipv4Addr>,
    /// Port used for NAT traversal (RFC 3948), normally 4500.
    pub natt_port: u16,
    /// When we are behind a NAT, send a NAT-keepalive (RFC 3948 2.3) after this long without
    /// sending anything to the peer.
    pub nat_keepalive: Option<Duration>,
    /// Pretend to be behind a NAT (strongSwan's `encap = yes`): our NAT_DETECTION_SOURCE_IP
    /// hashes an address that is not ours, so the peer sees a NAT and both sides put ESP
    /// in UDP (RFC 3948) on the NAT-T port; for networks that pass UDP but drop IP
    /// protocol 50, and for UDP GSO on the ESP path.
    pub force_encap: bool,
}

impl Config {
    /// Whether certificates take part (we sign, or we accept signatures).
    pub fn uses_certificates(&self) -> bool {
        self.local_cert.is_some() || !self.trust_anchors.is_empty()
    }

    /// A PSK configuration with defaults close to strongSwan's.
    pub fn psk(psk: &[u8], local_id: Identification) -> Self {
        Config {
            psk: psk.to_vec(),
            local_cert: None,
            trust_anchors: Vec::new(),
            local_id,
            remote_id: None,
            ike_proposals: vec![IkeProposal::aes_gcm_256(&[
                DhId::CURVE25519,
                DhId::ECP_256,
                DhId::MODP_2048,
            ])],
            esp_proposals: vec![EspProposal::aes_gcm_128()],
            ts_local: vec![TrafficSelector::ipv4_any()],
            ts_remote: vec![TrafficSelector::ipv4_any()],
            request_vip: false,
            retransmit: Retransmit::default(),
            dpd_interval: Some(Duration::from_secs(30)),
            mobike: true,
            fragmentation: true,
            fragment_size: 1280,
            ike_lifetime: None,
            child_lifetime: None,
            require_cookie: false,
            vip_pool: None,
            dns: Vec::new(),
            natt_port: 4500,
            nat_keepalive: Some(Duration::from_secs(20)),
            force_encap: false,
        }
    }
}
