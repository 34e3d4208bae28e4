//! UDP (RFC 768): a checked zero-copy view ([`UdpPacket`]), its owned header
//! ([`UdpHeader`]) and builders.

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
        Ok(UdpPacket::new_checked(buf)?.header())
    }
}

/// A checked, zero-copy view of a UDP datagram at the start of a buffer (the IPv4
/// payload), like [`ipv4::Ipv4Packet`]: [`new_checked`](Self::new_checked) checks the
/// length field against the buffer once; accessors read in place, setters write in
/// place, and [`fill_checksum`](Self::fill_checksum) recomputes the checksum under
/// the IPv4 pseudo-header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpPacket<T> {
    buf: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    pub fn new_checked(buf: T) -> Result<Self, Error> {
        let b = buf.as_ref();
        need("udp", b, HEADER_LEN)?;
        let len = usize::from(u16::from_be_bytes([b[4], b[5]]));
        if len < HEADER_LEN {
            return Err(Error::Malformed {
                layer: "udp",
                field: "length",
            });
        }
        need("udp", b, len)?;
        Ok(UdpPacket { buf })
    }

    pub fn into_inner(self) -> T {
        self.buf
    }

    fn be16(&self, at: usize) -> u16 {
        // In bounds: `new_checked` saw at least 8 octets.
        let b = self.buf.as_ref();
        u16::from_be_bytes([b[at], b[at + 1]])
    }

    pub fn src_port(&self) -> u16 {
        self.be16(0)
    }

    pub fn dst_port(&self) -> u16 {
        self.be16(2)
    }

    /// Header plus payload, in octets.
    pub fn len(&self) -> u16 {
        self.be16(4)
    }

    /// Never true: the header alone is 8 octets.
    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn checksum(&self) -> u16 {
        self.be16(6)
    }

    /// The payload, up to the length field (octets after it are left out).
    pub fn payload(&self) -> &[u8] {
        self.buf
            .as_ref()
            .get(HEADER_LEN..usize::from(self.len()))
            .unwrap_or_default()
    }

    /// Whether the checksum is right under the pseudo-header of `src` and `dst` (a
    /// zero checksum means none was computed: RFC 768).
    pub fn checksum_ok(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        if self.checksum() == 0 {
            return true;
        }
        let len = self.len();
        let b = self
            .buf
            .as_ref()
            .get(..usize::from(len))
            .unwrap_or_default();
        let acc = checksum::pseudo_header(src.octets(), dst.octets(), ipv4::proto::UDP, len);
        checksum::finish(checksum::sum(b, acc)) == 0
    }

    /// The owned form of the header's fields.
    pub fn header(&self) -> UdpHeader {
        UdpHeader {
            src_port: self.src_port(),
            dst_port: self.dst_port(),
            len: self.len(),
            checksum: self.checksum(),
        }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    pub fn set_src_port(&mut self, v: u16) {
        self.buf.as_mut()[0..2].copy_from_slice(&v.to_be_bytes());
    }

    pub fn set_dst_port(&mut self, v: u16) {
        self.buf.as_mut()[2..4].copy_from_slice(&v.to_be_bytes());
    }

    /// Recomputes the checksum under the pseudo-header of `src` and `dst` (a result
    /// of 0 is sent as 0xffff: RFC 768).
    pub fn fill_checksum(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        let len = self.len();
        let b = self.buf.as_mut();
        b[6..8].fill(0);
        let body = b.get(..usize::from(len)).unwrap_or_default();
        let acc = checksum::pseudo_header(src.octets(), dst.octets(), ipv4::proto::UDP, len);
        let mut c = checksum::finish(checksum::sum(body, acc));
        if c == 0 {
            c = 0xffff;
        }
        b[6..8].copy_from_slice(&c.to_be_bytes());
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
    let mut out = Vec::with_capacity(ipv4::MIN_HEADER_LEN + HEADER_LEN + payload.len());
    build_ipv4_into(&mut out, src, dst, sport, dport, payload);
    out
}

/// [`build_ipv4`] into `out` (cleared first): no allocation once `out` has grown.
pub fn build_ipv4_into(
    out: &mut Vec<u8>,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    payload: &[u8],
) {
    let len = u16::try_from(HEADER_LEN + payload.len()).unwrap_or(u16::MAX);
    out.clear();
    out.resize(ipv4::MIN_HEADER_LEN, 0);
    let h = ipv4::Ipv4Header::new(src, dst, ipv4::proto::UDP, HEADER_LEN + payload.len());
    // Cannot fail: `out` is 20 octets long.
    let _ = h.emit(out);
    out.extend_from_slice(&sport.to_be_bytes());
    out.extend_from_slice(&dport.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(payload);
    let udp = &mut out[ipv4::MIN_HEADER_LEN..];
    let acc = checksum::pseudo_header(src.octets(), dst.octets(), ipv4::proto::UDP, len);
    let mut c = checksum::finish(checksum::sum(udp, acc));
    if c == 0 {
        c = 0xffff;
    }
    udp[6..8].copy_from_slice(&c.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_into_reuses_the_buffer_and_matches_the_two_step_build() {
        let s = Ipv4Addr::new(192, 0, 2, 1);
        let d = Ipv4Addr::new(198, 51, 100, 7);
        for payload in [&b""[..], &b"x"[..], &[0xa5u8; 1400][..]] {
            let two_step =
                ipv4::Ipv4Header::build(s, d, ipv4::proto::UDP, &build(s, d, 4500, 4500, payload));
            let mut out = vec![0xeeu8; 3000];
            let cap = out.capacity();
            build_ipv4_into(&mut out, s, d, 4500, 4500, payload);
            assert_eq!(out, two_step);
            assert_eq!(out.capacity(), cap, "no new allocation");
            let mut ip = vec![1u8; 7];
            ipv4::Ipv4Header::build_into(&mut ip, s, d, 4, payload);
            assert_eq!(ip, ipv4::Ipv4Header::build(s, d, 4, payload));
        }
    }

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

    #[test]
    fn the_view_reads_writes_and_rechecksums_in_place() {
        let s = Ipv4Addr::new(192, 0, 2, 1);
        let d = Ipv4Addr::new(192, 0, 2, 2);
        let mut u = build(s, d, 434, 434, b"hello");
        u.extend_from_slice(&[0; 3]); // octets after the datagram
        let v = UdpPacket::new_checked(&u[..]).unwrap();
        assert_eq!(v.header(), UdpHeader::parse(&u).unwrap());
        assert_eq!(v.payload(), b"hello");
        assert!(v.checksum_ok(s, d));
        assert!(!v.checksum_ok(s, Ipv4Addr::new(192, 0, 2, 3)));
        let mut v = UdpPacket::new_checked(&mut u[..]).unwrap();
        v.set_src_port(4500);
        v.set_dst_port(4501);
        assert!(!v.checksum_ok(s, d), "stale until refilled");
        v.fill_checksum(s, d);
        assert!(v.checksum_ok(s, d));
        assert_eq!((v.src_port(), v.dst_port(), v.len()), (4500, 4501, 13));
        for n in 0..13 {
            assert!(UdpPacket::new_checked(&u[..n]).is_err(), "{n} octets");
        }
        let mut bad = u.clone();
        bad[4..6].copy_from_slice(&7u16.to_be_bytes());
        assert!(UdpPacket::new_checked(&bad[..]).is_err(), "length below 8");
    }
}
