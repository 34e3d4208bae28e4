//! UDP encapsulation of ESP (RFC 3948) on port 4500.
//!
//! One UDP port carries three kinds of payload, told apart by their first octets:
//! - a NAT-keepalive: exactly one octet, 0xFF (section 2.3);
//! - IKE: a 4-octet non-ESP marker of zeros, then the IKE message (section 2.2);
//! - ESP: the ESP packet itself; its SPI is never zero, so it cannot look like the marker.

use crate::error::EspError;
use crate::wire::HEADER_LEN;

/// The UDP port for IKE and UDP-encapsulated ESP (RFC 3948 section 2).
pub const NAT_T_PORT: u16 = 4500;
/// The non-ESP marker that prefixes IKE messages on port 4500.
pub const NON_ESP_MARKER: [u8; 4] = [0; 4];
/// The payload of a NAT-keepalive packet.
pub const NAT_KEEPALIVE: [u8; 1] = [0xFF];
/// Octets of the UDP header that UDP-encapsulated ESP adds.
pub const UDP_HEADER_LEN: usize = 8;

/// What a UDP datagram received on port 4500 carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UdpPayload<'a> {
    /// A NAT-keepalive. RFC 3948 section 2.3: the receiver SHOULD ignore it; section 4:
    /// it MUST NOT be used to detect whether a connection is live.
    Keepalive,
    /// An IKE message, with the non-ESP marker already removed.
    Ike(&'a [u8]),
    /// An ESP packet (starting with the SPI).
    Esp(&'a [u8]),
}

/// Why a port-4500 payload is none of the three kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UdpEncapError {
    #[error("empty UDP payload")]
    Empty,
    #[error("{0} octets: too short for ESP and not a keepalive or marked IKE")]
    TooShort(usize),
}

impl From<UdpEncapError> for EspError {
    fn from(e: UdpEncapError) -> Self {
        match e {
            UdpEncapError::Empty => EspError::TooShort {
                len: 0,
                min: HEADER_LEN,
            },
            UdpEncapError::TooShort(len) => EspError::TooShort {
                len,
                min: HEADER_LEN,
            },
        }
    }
}

/// Classifies the payload of a UDP datagram received on the NAT-T port.
pub fn classify(payload: &[u8]) -> Result<UdpPayload<'_>, UdpEncapError> {
    match payload {
        [] => Err(UdpEncapError::Empty),
        [0xFF] => Ok(UdpPayload::Keepalive),
        [0, 0, 0, 0, ike @ ..] => Ok(UdpPayload::Ike(ike)),
        esp if esp.len() >= HEADER_LEN => Ok(UdpPayload::Esp(esp)),
        short => Err(UdpEncapError::TooShort(short.len())),
    }
}

/// Writes a UDP header for an encapsulated ESP packet of `payload_len` octets.
///
/// The checksum is zero, as RFC 3948 section 2.1 says it SHOULD be for ESP-in-UDP
/// (receivers MUST NOT depend on that; [`classify`] never looks at it).
/// Returns `None` if the datagram would exceed 65535 octets.
pub fn udp_header(src_port: u16, dst_port: u16, payload_len: usize) -> Option<[u8; 8]> {
    let len = u16::try_from(payload_len.checked_add(UDP_HEADER_LEN)?).ok()?;
    let mut h = [0u8; UDP_HEADER_LEN];
    h[0..2].copy_from_slice(&src_port.to_be_bytes());
    h[2..4].copy_from_slice(&dst_port.to_be_bytes());
    h[4..6].copy_from_slice(&len.to_be_bytes());
    Some(h)
}

/// Appends the non-ESP marker and an IKE message to `out` (for sending IKE on port 4500).
pub fn push_ike(out: &mut Vec<u8>, ike: &[u8]) {
    out.extend_from_slice(&NON_ESP_MARKER);
    out.extend_from_slice(ike);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_each_kind() {
        assert_eq!(classify(&[0xFF]), Ok(UdpPayload::Keepalive));
        let mut ike = Vec::new();
        push_ike(&mut ike, &[0xAA; 28]);
        assert_eq!(classify(&ike), Ok(UdpPayload::Ike(&[0xAA; 28])));
        let esp = [0, 0, 0x43, 0x21, 0, 0, 0, 1, 9, 9];
        assert_eq!(classify(&esp), Ok(UdpPayload::Esp(&esp)));
        assert_eq!(classify(&[]), Err(UdpEncapError::Empty));
        assert_eq!(classify(&[1, 2, 3]), Err(UdpEncapError::TooShort(3)));
        // 0xFF followed by more octets is not a keepalive; too short for ESP.
        assert_eq!(classify(&[0xFF, 0]), Err(UdpEncapError::TooShort(2)));
        // A bare marker is an (empty) IKE message, for IKE to reject.
        assert_eq!(classify(&[0, 0, 0, 0]), Ok(UdpPayload::Ike(&[])));
    }

    #[test]
    fn header_fields() {
        let h = udp_header(4500, 4500, 100).unwrap();
        assert_eq!(h, [0x11, 0x94, 0x11, 0x94, 0, 108, 0, 0]);
        assert_eq!(udp_header(1, 2, 65528), None);
    }
}
