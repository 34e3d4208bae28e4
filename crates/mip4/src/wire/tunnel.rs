//! RFC 3519 Tunnel Data message: a tunneled packet carried in UDP port 434.

use super::{Error, MessageType};
use ::wire::reader::Reader;

/// Octets before the tunneled packet.
pub const HEADER_LEN: usize = 4;

/// A Tunnel Data message view: `Type 4 | Next Header | Reserved(16) | packet`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunnelData<'a> {
    /// The protocol of `packet`: 4 (IPv4), 47 (GRE) or 55 (minimal encapsulation).
    pub next_header: u8,
    pub packet: &'a [u8],
}

impl<'a> TunnelData<'a> {
    pub fn parse(buf: &'a [u8]) -> Result<Self, Error> {
        const L: &str = "tunnel data";
        ::wire::need(L, buf, HEADER_LEN)?;
        let mut r = Reader::new(buf);
        if r.u8(L)? != MessageType::TUNNEL_DATA.0 {
            return Err(Error::Malformed {
                layer: L,
                field: "type",
            });
        }
        let next_header = r.u8(L)?;
        r.skip(HEADER_LEN - 2, L)?; // reserved
        Ok(TunnelData {
            next_header,
            packet: r.rest(),
        })
    }

    /// Appends the header and the packet.
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.reserve(HEADER_LEN + self.packet.len());
        out.extend_from_slice(&[MessageType::TUNNEL_DATA.0, self.next_header, 0, 0]);
        out.extend_from_slice(self.packet);
    }

    /// Writes only the 4-octet header, for callers that prepend in place.
    pub const fn header(next_header: u8) -> [u8; HEADER_LEN] {
        [MessageType::TUNNEL_DATA.0, next_header, 0, 0]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let t = TunnelData {
            next_header: 4,
            packet: &[0x45, 0, 0, 20],
        };
        let mut b = Vec::new();
        t.emit(&mut b);
        assert_eq!(b, [4, 4, 0, 0, 0x45, 0, 0, 20]);
        assert_eq!(TunnelData::parse(&b).unwrap(), t);
        assert!(TunnelData::parse(&b[..3]).is_err());
        assert!(TunnelData::parse(&[1, 4, 0, 0]).is_err());
    }
}
