//! IPv4 header (RFC 791): a checked parse into [`Ipv4Header`] and an emitter.

use crate::{checksum, need, Error};
use std::net::Ipv4Addr;

/// IP protocol numbers used by mipsec.
pub mod proto {
    pub const ICMP: u8 = 1;
    pub const IPIP: u8 = 4;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const GRE: u8 = 47;
    pub const ESP: u8 = 50;
    pub const MINIMAL_ENCAP: u8 = 55;
}

pub const MIN_HEADER_LEN: usize = 20;

/// The fields of an IPv4 header that mipsec reads or writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv4Header {
    pub tos: u8,
    /// Total length of the datagram (header and payload).
    pub total_len: u16,
    pub ident: u16,
    pub dont_fragment: bool,
    pub more_fragments: bool,
    pub frag_offset: u16,
    pub ttl: u8,
    pub protocol: u8,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    /// Header length in octets, options included.
    pub header_len: usize,
}

impl Ipv4Header {
    /// Parses the header at the start of `buf`, checking version, lengths and
    /// checksum. The payload is `buf[header_len..total_len]`.
    pub fn parse(buf: &[u8]) -> Result<Self, Error> {
        const L: &str = "ipv4";
        need(L, buf, MIN_HEADER_LEN)?;
        if buf[0] >> 4 != 4 {
            return Err(Error::Malformed {
                layer: L,
                field: "version",
            });
        }
        let header_len = usize::from(buf[0] & 0x0f) * 4;
        if header_len < MIN_HEADER_LEN {
            return Err(Error::Malformed {
                layer: L,
                field: "IHL",
            });
        }
        need(L, buf, header_len)?;
        let total_len = u16::from_be_bytes([buf[2], buf[3]]);
        if usize::from(total_len) < header_len {
            return Err(Error::Malformed {
                layer: L,
                field: "total length",
            });
        }
        need(L, buf, usize::from(total_len))?;
        if checksum::checksum(&buf[..header_len]) != 0 {
            return Err(Error::Malformed {
                layer: L,
                field: "header checksum",
            });
        }
        let frag = u16::from_be_bytes([buf[6], buf[7]]);
        Ok(Ipv4Header {
            tos: buf[1],
            total_len,
            ident: u16::from_be_bytes([buf[4], buf[5]]),
            dont_fragment: frag & 0x4000 != 0,
            more_fragments: frag & 0x2000 != 0,
            frag_offset: frag & 0x1fff,
            ttl: buf[8],
            protocol: buf[9],
            src: Ipv4Addr::new(buf[12], buf[13], buf[14], buf[15]),
            dst: Ipv4Addr::new(buf[16], buf[17], buf[18], buf[19]),
            header_len,
        })
    }

    /// Parses the header at the start of `buf` (as [`parse`](Self::parse)) and returns
    /// it with its payload, `buf[header_len..total_len]`: octets past `total_len` (link
    /// padding) are left out, so no caller slices by hand.
    pub fn split(buf: &[u8]) -> Result<(Self, &[u8]), Error> {
        let h = Self::parse(buf)?;
        let payload = buf
            .get(h.header_len..usize::from(h.total_len))
            .ok_or(Error::Malformed {
                layer: "ipv4",
                field: "total length",
            })?;
        Ok((h, payload))
    }

    /// Like [`new`](Self::new), but a datagram longer than 65535 octets is an
    /// [`Error::TooLong`] instead of a capped `total_len`.
    pub fn try_new(
        src: Ipv4Addr,
        dst: Ipv4Addr,
        protocol: u8,
        payload_len: usize,
    ) -> Result<Self, Error> {
        let total = MIN_HEADER_LEN.saturating_add(payload_len);
        crate::fits("ipv4", "total length", total, usize::from(u16::MAX))?;
        Ok(Self::new(src, dst, protocol, payload_len))
    }

    /// A 20-octet header for `payload_len` octets of `protocol` from `src` to `dst`.
    /// `total_len` is capped at 65535; use [`try_new`](Self::try_new) to get an error.
    pub fn new(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, payload_len: usize) -> Self {
        Ipv4Header {
            tos: 0,
            total_len: u16::try_from(MIN_HEADER_LEN + payload_len).unwrap_or(u16::MAX),
            ident: 0,
            dont_fragment: false,
            more_fragments: false,
            frag_offset: 0,
            ttl: 64,
            protocol,
            src,
            dst,
            header_len: MIN_HEADER_LEN,
        }
    }

    /// Writes a 20-octet header (no options) with a valid checksum into `out[..20]`.
    /// Returns `Err` if `out` is shorter than 20 octets.
    pub fn emit(&self, out: &mut [u8]) -> Result<(), Error> {
        need("ipv4", out, MIN_HEADER_LEN)?;
        out[0] = 0x45;
        out[1] = self.tos;
        out[2..4].copy_from_slice(&self.total_len.to_be_bytes());
        out[4..6].copy_from_slice(&self.ident.to_be_bytes());
        let mut frag = self.frag_offset & 0x1fff;
        if self.dont_fragment {
            frag |= 0x4000;
        }
        if self.more_fragments {
            frag |= 0x2000;
        }
        out[6..8].copy_from_slice(&frag.to_be_bytes());
        out[8] = self.ttl;
        out[9] = self.protocol;
        out[10..12].fill(0);
        out[12..16].copy_from_slice(&self.src.octets());
        out[16..20].copy_from_slice(&self.dst.octets());
        let c = checksum::checksum(&out[..MIN_HEADER_LEN]);
        out[10..12].copy_from_slice(&c.to_be_bytes());
        Ok(())
    }

    /// Like [`build`](Self::build), but an oversize payload is an error.
    pub fn try_build(
        src: Ipv4Addr,
        dst: Ipv4Addr,
        protocol: u8,
        payload: &[u8],
    ) -> Result<Vec<u8>, Error> {
        Self::try_new(src, dst, protocol, payload.len())?;
        Ok(Self::build(src, dst, protocol, payload))
    }

    /// Builds a whole datagram: a header followed by `payload`. The length is capped
    /// at 65535 (callers with bounded payloads); [`try_build`](Self::try_build) errs.
    pub fn build(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; MIN_HEADER_LEN + payload.len()];
        let h = Self::new(src, dst, protocol, payload.len());
        // Cannot fail: `out` is at least 20 octets long.
        let _ = h.emit(&mut out);
        out[MIN_HEADER_LEN..].copy_from_slice(payload);
        out
    }
}

/// The source and destination addresses of an IPv4 packet, without validating the rest.
pub fn addresses(buf: &[u8]) -> Option<(Ipv4Addr, Ipv4Addr)> {
    if buf.len() < MIN_HEADER_LEN || buf[0] >> 4 != 4 {
        return None;
    }
    Some((
        Ipv4Addr::new(buf[12], buf[13], buf[14], buf[15]),
        Ipv4Addr::new(buf[16], buf[17], buf[18], buf[19]),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_then_parse() {
        let p = Ipv4Header::build(
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(10, 0, 0, 2),
            proto::IPIP,
            &[1, 2, 3],
        );
        let h = Ipv4Header::parse(&p).unwrap();
        assert_eq!(h.total_len, 23);
        assert_eq!(h.protocol, 4);
        assert_eq!(h.src, Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(&p[h.header_len..], &[1, 2, 3]);
    }

    #[test]
    fn split_leaves_out_link_padding() {
        let mut p = Ipv4Header::build(
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(10, 0, 0, 2),
            proto::IPIP,
            &[1, 2, 3],
        );
        p.extend_from_slice(&[0; 20]); // an Ethernet minimum frame's padding
        let (h, payload) = Ipv4Header::split(&p).unwrap();
        assert_eq!(h.total_len, 23);
        assert_eq!(payload, &[1, 2, 3]);
        for n in 0..23 {
            assert!(Ipv4Header::split(&p[..n]).is_err());
        }
    }

    #[test]
    fn rejects_bad_input() {
        let mut p = Ipv4Header::build(
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(10, 0, 0, 2),
            proto::UDP,
            &[0; 8],
        );
        assert!(Ipv4Header::parse(&p[..19]).is_err());
        assert!(Ipv4Header::parse(&p[..27]).is_err());
        p[8] ^= 1;
        assert!(matches!(
            Ipv4Header::parse(&p),
            Err(Error::Malformed {
                field: "header checksum",
                ..
            })
        ));
        p[0] = 0x44;
        assert!(Ipv4Header::parse(&p).is_err());
        for n in 0..p.len() {
            let _ = Ipv4Header::parse(&p[..n]);
        }
    }
}
