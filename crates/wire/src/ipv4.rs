//! IPv4 header (RFC 791): a checked zero-copy view ([`Ipv4Packet`], read and written
//! in place), its owned form ([`Ipv4Header`]) and an emitter.

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
        Ok(Ipv4Packet::new_checked(buf)?.header())
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
        let mut out = Vec::with_capacity(MIN_HEADER_LEN + payload.len());
        Self::build_into(&mut out, src, dst, protocol, payload);
        out
    }

    /// [`build`](Self::build) into `out` (cleared first), so that a data path can
    /// reuse one buffer instead of allocating a datagram per packet.
    pub fn build_into(
        out: &mut Vec<u8>,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        protocol: u8,
        payload: &[u8],
    ) {
        out.clear();
        out.resize(MIN_HEADER_LEN, 0);
        let h = Self::new(src, dst, protocol, payload.len());
        // Cannot fail: `out` is 20 octets long.
        let _ = h.emit(out);
        out.extend_from_slice(payload);
    }
}

/// A checked, zero-copy view of an IPv4 datagram at the start of a buffer, in the
/// style of smoltcp's `Packet`: [`new_checked`](Self::new_checked) validates the
/// version, the header and total lengths against the buffer, and the header
/// checksum once; the accessors then read fields in place and cannot go out of
/// bounds. On a mutable buffer the setters write fields in place, and
/// [`fill_checksum`](Self::fill_checksum) makes the header checksum right again.
/// [`Ipv4Header`] is the owned form of the same fields ([`header`](Self::header)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Packet<T> {
    buf: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// The view of `buf`, with every check, the header checksum included.
    pub fn new_checked(buf: T) -> Result<Self, Error> {
        let p = Self::new_lengths_checked(buf)?;
        if checksum::checksum(p.header_bytes()) != 0 {
            return Err(Error::Malformed {
                layer: "ipv4",
                field: "header checksum",
            });
        }
        Ok(p)
    }

    /// The view of `buf` with the version and lengths checked but not the header
    /// checksum: for a datagram whose checksum is about to be rewritten (a
    /// packet being rebuilt in place, or one the local kernel handed over with
    /// its checksum left to offload).
    pub fn new_lengths_checked(buf: T) -> Result<Self, Error> {
        const L: &str = "ipv4";
        let b = buf.as_ref();
        need(L, b, MIN_HEADER_LEN)?;
        if b[0] >> 4 != 4 {
            return Err(Error::Malformed {
                layer: L,
                field: "version",
            });
        }
        let header_len = usize::from(b[0] & 0x0f) * 4;
        if header_len < MIN_HEADER_LEN {
            return Err(Error::Malformed {
                layer: L,
                field: "IHL",
            });
        }
        need(L, b, header_len)?;
        let total_len = usize::from(u16::from_be_bytes([b[2], b[3]]));
        if total_len < header_len {
            return Err(Error::Malformed {
                layer: L,
                field: "total length",
            });
        }
        need(L, b, total_len)?;
        Ok(Ipv4Packet { buf })
    }

    /// The buffer back.
    pub fn into_inner(self) -> T {
        self.buf
    }

    fn b(&self) -> &[u8] {
        self.buf.as_ref()
    }

    fn be16(&self, at: usize) -> u16 {
        // In bounds: the constructors checked at least 20 octets.
        u16::from_be_bytes([self.b()[at], self.b()[at + 1]])
    }

    /// Header length in octets, options included.
    pub fn header_len(&self) -> usize {
        usize::from(self.b()[0] & 0x0f) * 4
    }

    /// Total length of the datagram (header and payload).
    pub fn total_len(&self) -> u16 {
        self.be16(2)
    }

    pub fn tos(&self) -> u8 {
        self.b()[1]
    }

    pub fn ident(&self) -> u16 {
        self.be16(4)
    }

    pub fn dont_fragment(&self) -> bool {
        self.be16(6) & 0x4000 != 0
    }

    pub fn more_fragments(&self) -> bool {
        self.be16(6) & 0x2000 != 0
    }

    /// Fragment offset, in units of 8 octets.
    pub fn frag_offset(&self) -> u16 {
        self.be16(6) & 0x1fff
    }

    pub fn ttl(&self) -> u8 {
        self.b()[8]
    }

    pub fn protocol(&self) -> u8 {
        self.b()[9]
    }

    pub fn src(&self) -> Ipv4Addr {
        let b = self.b();
        Ipv4Addr::new(b[12], b[13], b[14], b[15])
    }

    pub fn dst(&self) -> Ipv4Addr {
        let b = self.b();
        Ipv4Addr::new(b[16], b[17], b[18], b[19])
    }

    /// The header's octets, options included.
    pub fn header_bytes(&self) -> &[u8] {
        let hl = self.header_len();
        self.b().get(..hl).unwrap_or_default()
    }

    /// The payload, `[header_len..total_len]`: octets past the total length (link
    /// padding) are left out. Empty if a setter made the total length inconsistent.
    pub fn payload(&self) -> &[u8] {
        let (hl, tl) = (self.header_len(), usize::from(self.total_len()));
        self.b().get(hl..tl).unwrap_or_default()
    }

    /// The owned form of the header's fields.
    pub fn header(&self) -> Ipv4Header {
        Ipv4Header {
            tos: self.tos(),
            total_len: self.total_len(),
            ident: self.ident(),
            dont_fragment: self.dont_fragment(),
            more_fragments: self.more_fragments(),
            frag_offset: self.frag_offset(),
            ttl: self.ttl(),
            protocol: self.protocol(),
            src: self.src(),
            dst: self.dst(),
            header_len: self.header_len(),
        }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    fn put16(&mut self, at: usize, v: u16) {
        self.buf.as_mut()[at..at + 2].copy_from_slice(&v.to_be_bytes());
    }

    /// Sets the total length; refused (`TooLong`) beyond the buffer, so the view
    /// stays consistent.
    pub fn set_total_len(&mut self, v: u16) -> Result<(), Error> {
        let max = self.buf.as_ref().len();
        crate::fits("ipv4", "total length", usize::from(v), max)?;
        if usize::from(v) < self.header_len() {
            return Err(Error::Malformed {
                layer: "ipv4",
                field: "total length",
            });
        }
        self.put16(2, v);
        Ok(())
    }

    pub fn set_ident(&mut self, v: u16) {
        self.put16(4, v);
    }

    pub fn set_ttl(&mut self, v: u8) {
        self.buf.as_mut()[8] = v;
    }

    /// The TOS octet (DSCP and ECN).
    pub fn set_tos(&mut self, v: u8) {
        self.buf.as_mut()[1] = v;
    }

    pub fn set_src(&mut self, a: Ipv4Addr) {
        self.buf.as_mut()[12..16].copy_from_slice(&a.octets());
    }

    pub fn set_dst(&mut self, a: Ipv4Addr) {
        self.buf.as_mut()[16..20].copy_from_slice(&a.octets());
    }

    /// Recomputes the header checksum over the header as it is now.
    pub fn fill_checksum(&mut self) {
        self.put16(10, 0);
        let c = checksum::checksum(self.header_bytes());
        self.put16(10, c);
    }

    /// The payload, writable (see [`payload`](Self::payload)).
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (hl, tl) = (self.header_len(), usize::from(self.total_len()));
        self.buf.as_mut().get_mut(hl..tl).unwrap_or_default()
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

    #[test]
    fn the_view_reads_what_parse_reads_and_writes_in_place() {
        let mut p = Ipv4Header::build(
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(10, 0, 0, 2),
            proto::UDP,
            &[9; 8],
        );
        p.extend_from_slice(&[0; 6]); // link padding
        let v = Ipv4Packet::new_checked(&p[..]).unwrap();
        assert_eq!(v.header(), Ipv4Header::parse(&p).unwrap());
        assert_eq!(v.payload(), &[9; 8]);
        assert_eq!(v.header_bytes().len(), 20);
        let mut v = Ipv4Packet::new_checked(&mut p[..]).unwrap();
        v.set_ttl(1);
        v.set_src(Ipv4Addr::new(192, 0, 2, 1));
        v.set_dst(Ipv4Addr::new(192, 0, 2, 2));
        v.set_ident(0x1234);
        v.payload_mut()[0] = 7;
        assert!(
            v.set_total_len(20 + 8 + 6 + 1).is_err(),
            "beyond the buffer"
        );
        assert!(v.set_total_len(19).is_err(), "shorter than the header");
        v.set_total_len(20 + 4).unwrap();
        // Not yet: the checksum is stale until filled.
        assert!(Ipv4Packet::new_checked(v.into_inner()).is_err());
        let mut v = Ipv4Packet::new_lengths_checked(&mut p[..]).unwrap();
        v.fill_checksum();
        let h = Ipv4Header::parse(&p).unwrap();
        assert_eq!(
            (h.ttl, h.src, h.dst, h.ident, h.total_len),
            (
                1,
                Ipv4Addr::new(192, 0, 2, 1),
                Ipv4Addr::new(192, 0, 2, 2),
                0x1234,
                24
            )
        );
        assert_eq!(Ipv4Header::split(&p).unwrap().1, &[7, 9, 9, 9]);
    }

    #[test]
    fn the_view_refuses_what_parse_refuses() {
        let p = Ipv4Header::build(
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(10, 0, 0, 2),
            proto::UDP,
            &[0; 8],
        );
        for n in 0..p.len() {
            assert!(Ipv4Packet::new_checked(&p[..n]).is_err(), "{n} octets");
            assert!(Ipv4Packet::new_lengths_checked(&p[..n]).is_err(), "{n}");
        }
        let mut bad = p.clone();
        bad[0] = 0x46; // IHL 24 with no option
        bad[2..4].copy_from_slice(&22u16.to_be_bytes());
        assert!(Ipv4Packet::new_lengths_checked(&bad[..]).is_err());
        let mut bad = p.clone();
        bad[2..4].copy_from_slice(&19u16.to_be_bytes());
        assert!(Ipv4Packet::new_lengths_checked(&bad[..]).is_err());
        let mut bad = p;
        bad[11] ^= 1;
        assert!(Ipv4Packet::new_checked(&bad[..]).is_err());
        assert!(Ipv4Packet::new_lengths_checked(&bad[..]).is_ok());
    }
}
