//! What the state machines hand back to the caller: datagrams, events, counters.

use std::net::{Ipv4Addr, SocketAddr};

use crate::crypto::{Encr, Integ};
use crate::wire::{NotifyType, TrafficSelector};

/// A datagram to send. `payload` already carries the 4-octet non-ESP marker when it goes
/// over the NAT-T port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub payload: Vec<u8>,
}

/// Everything an ESP layer needs to install one CHILD_SA (both directions).
#[derive(Clone, PartialEq, Eq)]
pub struct ChildSaInfo {
    /// SPI we chose: peer -> us.
    pub spi_in: u32,
    /// SPI the peer chose: us -> peer.
    pub spi_out: u32,
    pub encr: Encr,
    pub integ: Option<Integ>,
    pub esn: bool,
    /// Encryption key (with 4-octet salt for AES-GCM) for inbound packets.
    pub encr_key_in: Vec<u8>,
    pub integ_key_in: Vec<u8>,
    pub encr_key_out: Vec<u8>,
    pub integ_key_out: Vec<u8>,
    /// Traffic selectors for our side and the peer's side, as narrowed by the responder.
    pub ts_local: Vec<TrafficSelector>,
    pub ts_remote: Vec<TrafficSelector>,
    /// Inner tunnel address assigned by the responder through CP (initiator side), or the
    /// address we assigned (responder side).
    pub tia: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// ESP in UDP (RFC 3948) because a NAT was detected.
    pub udp_encap: bool,
}

impl core::fmt::Debug for ChildSaInfo {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ChildSaInfo")
            .field("spi_in", &format_args!("{:08x}", self.spi_in))
            .field("spi_out", &format_args!("{:08x}", self.spi_out))
            .field("encr", &self.encr)
            .field("integ", &self.integ)
            .field("ts_local", &self.ts_local)
            .field("ts_remote", &self.ts_remote)
            .field("tia", &self.tia)
            .field("local", &self.local)
            .field("remote", &self.remote)
            .field("udp_encap", &self.udp_encap)
            .finish_non_exhaustive()
    }
}

/// Why an IKE SA or exchange failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IkeError {
    #[error("peer sent error notify {0}")]
    PeerNotify(NotifyType),
    #[error("peer AUTH payload did not verify")]
    AuthenticationFailed,
    #[error("no acceptable proposal")]
    NoProposalChosen,
    #[error("traffic selectors unacceptable")]
    TsUnacceptable,
    #[error("peer did not answer (retransmissions exhausted)")]
    Timeout,
    #[error("protocol violation: {0}")]
    Protocol(&'static str),
}

/// State changes reported to the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The IKE SA is authenticated.
    IkeSaUp {
        spi_i: u64,
        spi_r: u64,
        local: SocketAddr,
        remote: SocketAddr,
        /// We are behind a NAT.
        local_nat: bool,
        /// The peer is behind a NAT.
        remote_nat: bool,
        mobike: bool,
    },
    ChildSaUp(ChildSaInfo),
    /// A CHILD_SA was replaced; install `new` before removing the SA with `old_spi_in`.
    ChildSaRekeyed {
        old_spi_in: u32,
        new: ChildSaInfo,
    },
    ChildSaDown {
        spi_in: u32,
        spi_out: u32,
    },
    /// The IKE SA was rekeyed to new SPIs.
    IkeSaRekeyed {
        spi_i: u64,
        spi_r: u64,
    },
    /// MOBIKE moved the IKE SA and its CHILD_SAs to new addresses.
    AddressesUpdated {
        local: SocketAddr,
        remote: SocketAddr,
        udp_encap: bool,
    },
    /// A CHILD_SA could not be created although the IKE SA is up.
    ChildSaFailed(IkeError),
    /// The IKE SA failed or was closed; `None` means an orderly delete.
    IkeSaDown {
        spi_i: u64,
        spi_r: u64,
        error: Option<IkeError>,
    },
}

/// Counters for dropped and handled datagrams.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub rx: u64,
    pub tx: u64,
    pub retransmits: u64,
    pub dropped_malformed: u64,
    pub dropped_integrity: u64,
    pub dropped_unknown_spi: u64,
    pub dropped_unexpected: u64,
    pub dropped_esp_on_ike_port: u64,
    pub replayed_responses: u64,
}

/// IKE SA keys exported for packet-capture decryption (see `Initiator::ike_keys_for_debug`).
#[derive(Clone, PartialEq, Eq)]
pub struct DebugIkeKeys {
    pub spi_i: u64,
    pub spi_r: u64,
    pub sk_ei: Vec<u8>,
    pub sk_er: Vec<u8>,
    pub sk_ai: Vec<u8>,
    pub sk_ar: Vec<u8>,
}

impl core::fmt::Debug for DebugIkeKeys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "DebugIkeKeys({:016x}, {:016x}, ..)",
            self.spi_i, self.spi_r
        )
    }
}
