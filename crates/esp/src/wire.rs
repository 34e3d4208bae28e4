//! ESP packet layout (RFC 4303 section 2): header, trailer and padding.
//!
//! ```text
//!  0                   1                   2                   3
//!  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//!  |               Security Parameters Index (SPI)                 |
//!  |                      Sequence Number                          |
//!  |                IV (suite-specific, 8 or 16 octets)            |
//!  |                    Payload Data (variable)                    |
//!  |     Padding (0-255)   |  Pad Length   | Next Header   |
//!  |         Integrity Check Value (ICV, 12 or 16 octets)          |
//!  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! Nothing here panics: every accessor checks the length first.

use crate::error::EspError;

/// Octets of SPI plus sequence number.
pub const HEADER_LEN: usize = 8;
/// Octets of Pad Length plus Next Header.
pub const TRAILER_LEN: usize = 2;

/// Next Header value of an IPv4 inner packet (tunnel mode).
pub const NEXT_HEADER_IPV4: u8 = 4;
/// Next Header value of an IPv6 inner packet (tunnel mode).
pub const NEXT_HEADER_IPV6: u8 = 41;
/// Next Header value of a dummy (traffic-flow-confidentiality) packet, RFC 4303 section 2.6:
/// the receiver discards it.
pub const NEXT_HEADER_NO_NEXT: u8 = 59;

/// The clear part of an ESP packet: SPI and the low 32 bits of the sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EspHeader {
    pub spi: u32,
    pub seq: u32,
}

impl EspHeader {
    /// Reads the header from the first 8 octets; the SA lookup needs only this.
    pub fn parse(packet: &[u8]) -> Result<Self, EspError> {
        match packet {
            [s0, s1, s2, s3, q0, q1, q2, q3, ..] => Ok(EspHeader {
                spi: u32::from_be_bytes([*s0, *s1, *s2, *s3]),
                seq: u32::from_be_bytes([*q0, *q1, *q2, *q3]),
            }),
            _ => Err(EspError::TooShort {
                len: packet.len(),
                min: HEADER_LEN,
            }),
        }
    }

    /// The 8 wire octets.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[..4].copy_from_slice(&self.spi.to_be_bytes());
        b[4..].copy_from_slice(&self.seq.to_be_bytes());
        b
    }
}

/// Padding octets needed so that payload, padding and the 2 trailer octets end on a
/// multiple of `align` (4 for AEAD suites, the block size for CBC).
pub fn pad_len(payload_len: usize, align: usize) -> usize {
    let align = align.max(1);
    let rem = (payload_len + TRAILER_LEN) % align;
    if rem == 0 {
        0
    } else {
        align - rem
    }
}

/// The default padding contents 1, 2, 3, ..., 255 (RFC 4303 section 2.4).
const PADDING: [u8; 255] = {
    let mut p = [0u8; 255];
    let mut i = 0;
    while i < 255 {
        p[i] = (i + 1) as u8;
        i += 1;
    }
    p
};

/// Appends padding 1, 2, 3, ... (RFC 4303 section 2.4), the pad length and next header.
/// `pad` is capped at 255, the most the Pad Length field can say.
pub fn push_trailer(buf: &mut Vec<u8>, pad: usize, next_header: u8) {
    let pad = pad.min(PADDING.len());
    buf.extend_from_slice(PADDING.get(..pad).unwrap_or_default());
    buf.extend_from_slice(&[pad as u8, next_header]);
}

/// Splits decrypted `text` (payload | padding | pad length | next header) into the payload
/// length and the next header, checking the default padding contents.
pub fn parse_trailer(text: &[u8]) -> Result<(usize, u8), EspError> {
    let [.., pad_len, next_header] = text else {
        return Err(EspError::TooShort {
            len: text.len(),
            min: TRAILER_LEN,
        });
    };
    let pad = usize::from(*pad_len);
    let payload_len = text
        .len()
        .checked_sub(TRAILER_LEN + pad)
        .ok_or(EspError::BadPadding)?;
    let padding = text
        .get(payload_len..payload_len + pad)
        .ok_or(EspError::BadPadding)?;
    // Monotonic 1, 2, 3, ...; compare all octets without an early exit.
    let bad = padding
        .iter()
        .zip(1u8..)
        .fold(0u8, |acc, (&p, want)| acc | (p ^ want));
    if bad != 0 {
        return Err(EspError::BadPadding);
    }
    Ok((payload_len, *next_header))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_short() {
        let h = EspHeader {
            spi: 0x0000_4321,
            seq: 1,
        };
        let b = h.to_bytes();
        assert_eq!(b, [0, 0, 0x43, 0x21, 0, 0, 0, 1]);
        assert_eq!(EspHeader::parse(&b).unwrap(), h);
        assert_eq!(
            EspHeader::parse(&b[..7]),
            Err(EspError::TooShort { len: 7, min: 8 })
        );
    }

    #[test]
    fn padding_lengths() {
        assert_eq!(pad_len(0, 4), 2);
        assert_eq!(pad_len(2, 4), 0);
        assert_eq!(pad_len(64, 16), 14);
        assert_eq!(pad_len(14, 16), 0);
        assert_eq!(pad_len(15, 16), 15);
    }

    #[test]
    fn trailer_round_trip() {
        for len in 0..40 {
            let mut buf: Vec<u8> = (0..len as u8).collect();
            let pad = pad_len(len, 16);
            push_trailer(&mut buf, pad, 4);
            assert_eq!(buf.len() % 16, 0);
            assert_eq!(parse_trailer(&buf).unwrap(), (len, 4));
        }
    }

    #[test]
    fn trailer_rejects_bad_padding() {
        assert_eq!(parse_trailer(&[1, 3, 2, 4]), Err(EspError::BadPadding));
        assert_eq!(parse_trailer(&[1, 2, 9, 4]), Err(EspError::BadPadding));
        assert!(matches!(
            parse_trailer(&[4]),
            Err(EspError::TooShort { .. })
        ));
        assert_eq!(parse_trailer(&[0, 4]), Ok((0, 4)));
    }
}
