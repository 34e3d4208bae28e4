//! UDP header (RFC 768).

use crate::{checksum, ipv4, need, Error};
use std::net::Ipv4Addr;

pub const HEADER_LEN: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpHeader {
    pub src_port: u16,
    pub dst_port: u16,
    /// Header plus payload, in octets.
    pub len: u16,
    pub checksum: u16,
}

impl UdpHeader {
    /// Parses the header and checks that the length field fits `buf`.
    pub fn parse(buf: &[u8]) -> Result<Self, Error> {
        need("udp", buf, HEADER_LEN)?;
        let len = u16::from_be_bytes([buf[4], buf[5]]);
        if usize::from(len) < HEADER_LEN {
            return Err(Error::Malformed {
                layer: "udp",
                field: "length",
            });
        }
        need("udp", buf, usize::from(len))?;
        Ok(UdpHeader {
            src_port: u16::from_be_bytes([buf[0], buf[1]]),
            dst_port: u16::from_be_bytes([buf[2], buf[3]]),
            len,
            checksum: u16::from_be_bytes([buf[6], buf[7]]),
        })
    }
}

/// Like [`build`], but a datagram longer than 65535 octets is an [`Error::TooLong`]
/// instead of a capped length field.
pub fn try_build(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    payload: &[u8],
) -> Result<Vec<u8>, Error> {
    let len = HEADER_LEN.saturating_add(payload.len());
    crate::fits("udp", "length", len, usize::from(u16::MAX))?;
    Ok(build(src, dst, sport, dport, payload))
}

/// Like [`build_ipv4`], but errs if the UDP or the IPv4 length would overflow.
pub fn try_build_ipv4(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    payload: &[u8],
) -> Result<Vec<u8>, Error> {
    let udp = try_build(src, dst, sport, dport, payload)?;
    ipv4::Ipv4Header::try_build(src, dst, ipv4::proto::UDP, &udp)
}

/// Builds a UDP datagram with a correct checksum. The length field is capped at
/// 65535 (for callers with bounded payloads); [`try_build`] returns an error instead.
pub fn build(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let len = u16::try_from(HEADER_LEN + payload.len()).unwrap_or(u16::MAX);
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&sport.to_be_bytes());
    out.extend_from_slice(&dport.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(payload);
    let acc = checksum::pseudo_header(src.octets(), dst.octets(), ipv4::proto::UDP, len);
    let mut c = checksum::finish(checksum::sum(&out, acc));
    if c == 0 {
        c = 0xffff;
    }
    out[6..8].copy_from_slice(&c.to_be_bytes());
    out
}

/// Builds IPv4 + UDP around `payload`.
pub fn build_ipv4(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    ipv4::Ipv4Header::build(
        src,
        dst,
        ipv4::proto::UDP,
        &build(src, dst, sport, dport, payload),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversize_is_an_error_not_a_capped_length() {
        let s = Ipv4Addr::new(192, 0, 2, 1);
        let d = Ipv4Addr::new(192, 0, 2, 2);
        // Largest UDP payload that fits the UDP length field: 65535 - 8.
        let ok = vec![0u8; 65535 - 8];
        let u = try_build(s, d, 1, 2, &ok).expect("fits");
        assert_eq!(UdpHeader::parse(&u).map(|h| h.len), Ok(65535));
        let big = vec![0u8; 65535 - 7];
        assert_eq!(
            try_build(s, d, 1, 2, &big),
            Err(Error::TooLong {
                layer: "udp",
                field: "length",
                len: 65536,
                max: 65535
            })
        );
        // The IPv4 total length overflows first when UDP still fits.
        let ip_big = vec![0u8; 65535 - 8 - 19];
        assert!(matches!(
            try_build_ipv4(s, d, 1, 2, &ip_big),
            Err(Error::TooLong { layer: "ipv4", .. })
        ));
        let ip_ok = vec![0u8; 65535 - 8 - 20];
        let p = try_build_ipv4(s, d, 1, 2, &ip_ok).expect("fits");
        assert_eq!(ipv4::Ipv4Header::parse(&p).map(|h| h.total_len), Ok(65535));
        assert!(ipv4::Ipv4Header::try_new(s, d, 17, usize::MAX).is_err());
    }

    #[test]
    fn checksum_verifies() {
        let s = Ipv4Addr::new(192, 0, 2, 1);
        let d = Ipv4Addr::new(192, 0, 2, 2);
        let u = build(s, d, 434, 434, b"hello");
        let acc = checksum::pseudo_header(s.octets(), d.octets(), 17, u.len() as u16);
        assert_eq!(checksum::finish(checksum::sum(&u, acc)), 0);
        let h = UdpHeader::parse(&u).unwrap();
        assert_eq!((h.src_port, h.dst_port, h.len), (434, 434, 13));
        assert!(UdpHeader::parse(&u[..12]).is_err());
    }
}
