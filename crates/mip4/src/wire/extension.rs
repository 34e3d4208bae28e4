//! Mobile IPv4 extensions (RFC 5944 section 1.9-1.11, 3.5; RFC 2794; RFC 3024;
//! RFC 3519; RFC 5265).
//!
//! Extensions follow the fixed part of a message as a chain of
//! `Type | Length | Data`, except the long format (`Type | Sub-Type | Length(16)`,
//! RFC 5944 section 1.11) used by type 36. The one-octet padding of RFC 5944
//! section 2.1.3 belongs to agent advertisements only ([`super::agent`]); in a
//! registration message type 0 is an ordinary, non-skippable extension, which is
//! also how Wireshark's dissector reads it.
//! Types 0-127 must be understood by the receiver (a message with an unknown one is
//! rejected); types 128-255 may be skipped (RFC 5944 section 1.9).

use super::Error;
use ::wire::reader::Reader;

/// An extension type: an open code point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ExtensionType(pub u8);

impl ExtensionType {
    /// RFC 3519 UDP Tunnel Reply (not skippable).
    pub const UDP_TUNNEL_REPLY: ExtensionType = ExtensionType(44);
    pub const MN_HA_AUTH: ExtensionType = ExtensionType(32);
    pub const MN_FA_AUTH: ExtensionType = ExtensionType(33);
    pub const FA_HA_AUTH: ExtensionType = ExtensionType(34);
    /// RFC 3012/4721 Generalized Mobile IP Authentication (long format).
    pub const GENERALIZED_AUTH: ExtensionType = ExtensionType(36);
    /// RFC 3024 Encapsulating Delivery Style.
    pub const ENCAP_DELIVERY_STYLE: ExtensionType = ExtensionType(130);
    /// RFC 2794 Mobile Node NAI.
    pub const NAI: ExtensionType = ExtensionType(131);
    /// RFC 3519 UDP Tunnel Request (skippable).
    pub const UDP_TUNNEL_REQUEST: ExtensionType = ExtensionType(144);
    /// RFC 5265 Trusted Networks Configured (short format, sub-type 0).
    pub const TNC: ExtensionType = ExtensionType(149);

    /// RFC 5944 section 1.9: types 128 and above may be skipped when unknown.
    pub fn is_skippable(self) -> bool {
        self.0 >= 128
    }

    fn is_long_format(self) -> bool {
        self == Self::GENERALIZED_AUTH
    }
}

/// Which pair of parties an authentication extension protects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthKind {
    MnHa,
    MnFa,
    FaHa,
}

impl AuthKind {
    pub fn ext_type(self) -> ExtensionType {
        match self {
            AuthKind::MnHa => ExtensionType::MN_HA_AUTH,
            AuthKind::MnFa => ExtensionType::MN_FA_AUTH,
            AuthKind::FaHa => ExtensionType::FA_HA_AUTH,
        }
    }
}

/// The reply code of an RFC 3519 UDP Tunnel Reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UdpTunnelReplyCode(pub u8);

impl UdpTunnelReplyCode {
    pub const WILL_TUNNEL: UdpTunnelReplyCode = UdpTunnelReplyCode(0);
    pub const DECLINED: UdpTunnelReplyCode = UdpTunnelReplyCode(64);
}

/// RFC 3519 encapsulation of tunneled packets: the inner protocol.
pub mod encapsulation {
    pub const IP_IN_IP: u8 = 4;
    pub const GRE: u8 = 47;
    pub const MINIMAL: u8 = 55;
}

/// One extension as a typed value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Extension {
    /// MN-HA (32), MN-FA (33) or FA-HA (34) authentication: SPI and authenticator.
    Auth {
        kind: AuthKind,
        spi: u32,
        authenticator: Vec<u8>,
    },
    /// RFC 2794 Mobile Node NAI (131), without a terminating NUL.
    Nai(Vec<u8>),
    /// RFC 3024 Encapsulating Delivery Style (130): no data.
    EncapDeliveryStyle,
    /// RFC 3519 UDP Tunnel Request (144).
    UdpTunnelRequest {
        /// F: the MN asks for UDP tunneling even without a detected NAT.
        force: bool,
        /// R: the MN registers with a co-located address for which it asks reverse tunneling.
        r: bool,
        /// The encapsulation the MN will use inside UDP (4, 47 or 55).
        encapsulation: u8,
    },
    /// RFC 3519 UDP Tunnel Reply (44).
    UdpTunnelReply {
        code: UdpTunnelReplyCode,
        /// F: the HA forces UDP tunneling.
        force: bool,
        /// Keepalive interval in seconds (0: none asked).
        keepalive: u16,
    },
    /// RFC 5265 Trusted Networks Configured (149, sub-type 0).
    TrustedNetworksConfigured,
    /// A long-format extension (RFC 5944 section 1.11) mipsec does not interpret.
    Long { ty: u8, sub_type: u8, data: Vec<u8> },
    /// Any other extension, kept verbatim.
    Unknown { ty: u8, data: Vec<u8> },
}

/// One extension as found in a buffer: its type, its offset from the start of the
/// message, its data, and the whole TLV.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtensionRef<'a> {
    pub ty: ExtensionType,
    /// Offset of the Type octet from the start of the message.
    pub offset: usize,
    /// The octets after the Type and Length octet(s).
    pub data: &'a [u8],
    /// The whole extension, Type and Length included.
    pub raw: &'a [u8],
    /// For long-format extensions, the Sub-Type.
    pub sub_type: Option<u8>,
}

/// Iterates over the extensions of a message starting at `start`.
/// Stops after the first error (which it yields).
#[derive(Debug, Clone)]
pub struct ExtensionIter<'a> {
    buf: &'a [u8],
    pos: usize,
    failed: bool,
}

impl<'a> ExtensionIter<'a> {
    pub fn new(message: &'a [u8], start: usize) -> Self {
        ExtensionIter {
            buf: message,
            pos: start,
            failed: false,
        }
    }
}

impl<'a> Iterator for ExtensionIter<'a> {
    type Item = Result<ExtensionRef<'a>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.pos >= self.buf.len() {
            return None;
        }
        let offset = self.pos;
        let rest = self.buf.get(offset..).unwrap_or_default();
        match split_extension(rest) {
            Ok((ty, sub_type, data, raw)) => {
                self.pos += raw.len();
                Some(Ok(ExtensionRef {
                    ty,
                    offset,
                    data,
                    raw,
                    sub_type,
                }))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

/// One extension at the start of `rest`: its type, long-format sub-type, data and
/// raw octets (header included). Truncation is reported against the whole header
/// (`need` 2 or 4) or the whole extension (`need` header + length), with `have` the
/// octets left in the message.
#[allow(clippy::type_complexity)]
fn split_extension(rest: &[u8]) -> Result<(ExtensionType, Option<u8>, &[u8], &[u8]), Error> {
    const L: &str = "mip extension";
    let mut r = Reader::new(rest);
    let ty = ExtensionType(r.u8(L)?);
    let hdr = if ty.is_long_format() { 4 } else { 2 };
    let truncated = |need| Error::Truncated {
        layer: L,
        need,
        have: rest.len(),
    };
    let mut h = Reader::new(rest.get(1..hdr).ok_or(truncated(hdr))?);
    let (sub_type, len) = if ty.is_long_format() {
        (Some(h.u8(L)?), usize::from(h.u16(L)?))
    } else {
        (None, usize::from(h.u8(L)?))
    };
    r.skip(hdr - 1, L)?;
    let data = r.take(len, L).map_err(|_| truncated(hdr + len))?;
    let raw = rest.get(..r.position()).ok_or(truncated(hdr + len))?;
    Ok((ty, sub_type, data, raw))
}

/// `d` as exactly `N` octets, or `None` if its length differs.
fn fixed<const N: usize>(d: &[u8]) -> Option<[u8; N]> {
    d.try_into().ok()
}

fn malformed(field: &'static str) -> Error {
    Error::Malformed {
        layer: "mip extension",
        field,
    }
}

impl Extension {
    /// Interprets one extension. Known types with a wrong length are errors;
    /// unknown types are kept as [`Extension::Unknown`] / [`Extension::Long`].
    pub fn parse(e: &ExtensionRef<'_>) -> Result<Extension, Error> {
        let d = e.data;
        let auth = |kind| {
            if d.len() < 4 {
                return Err(malformed("authentication extension length"));
            }
            let mut r = Reader::new(d);
            Ok(Extension::Auth {
                kind,
                spi: r.u32("mip extension")?,
                authenticator: r.rest().to_vec(),
            })
        };
        match e.ty {
            ExtensionType::MN_HA_AUTH => auth(AuthKind::MnHa),
            ExtensionType::MN_FA_AUTH => auth(AuthKind::MnFa),
            ExtensionType::FA_HA_AUTH => auth(AuthKind::FaHa),
            ExtensionType::NAI => {
                if d.is_empty() {
                    return Err(malformed("empty NAI"));
                }
                Ok(Extension::Nai(d.to_vec()))
            }
            ExtensionType::ENCAP_DELIVERY_STYLE => {
                if !d.is_empty() {
                    return Err(malformed("encapsulating delivery style length"));
                }
                Ok(Extension::EncapDeliveryStyle)
            }
            ExtensionType::UDP_TUNNEL_REQUEST => {
                let [sub, _, flags, encapsulation, _, _] =
                    fixed::<6>(d).ok_or(malformed("UDP tunnel request length or sub-type"))?;
                if sub != 0 {
                    return Err(malformed("UDP tunnel request length or sub-type"));
                }
                Ok(Extension::UdpTunnelRequest {
                    force: flags & 0x80 != 0,
                    r: flags & 0x40 != 0,
                    encapsulation,
                })
            }
            ExtensionType::UDP_TUNNEL_REPLY => {
                let [sub, code, flags, _, k0, k1] =
                    fixed::<6>(d).ok_or(malformed("UDP tunnel reply length or sub-type"))?;
                if sub != 0 {
                    return Err(malformed("UDP tunnel reply length or sub-type"));
                }
                Ok(Extension::UdpTunnelReply {
                    code: UdpTunnelReplyCode(code),
                    force: flags & 0x80 != 0,
                    keepalive: u16::from_be_bytes([k0, k1]),
                })
            }
            ExtensionType::TNC if d.first() == Some(&0) => {
                if d.len() != 2 {
                    return Err(malformed("TNC length"));
                }
                Ok(Extension::TrustedNetworksConfigured)
            }
            ty => match e.sub_type {
                Some(sub_type) => Ok(Extension::Long {
                    ty: ty.0,
                    sub_type,
                    data: d.to_vec(),
                }),
                None => Ok(Extension::Unknown {
                    ty: ty.0,
                    data: d.to_vec(),
                }),
            },
        }
    }

    pub fn ext_type(&self) -> ExtensionType {
        match self {
            Extension::Auth { kind, .. } => kind.ext_type(),
            Extension::Nai(_) => ExtensionType::NAI,
            Extension::EncapDeliveryStyle => ExtensionType::ENCAP_DELIVERY_STYLE,
            Extension::UdpTunnelRequest { .. } => ExtensionType::UDP_TUNNEL_REQUEST,
            Extension::UdpTunnelReply { .. } => ExtensionType::UDP_TUNNEL_REPLY,
            Extension::TrustedNetworksConfigured => ExtensionType::TNC,
            Extension::Long { ty, .. } | Extension::Unknown { ty, .. } => ExtensionType(*ty),
        }
    }

    /// Octets [`emit`](Self::emit) appends.
    pub fn buffer_len(&self) -> usize {
        match self {
            Extension::Auth { authenticator, .. } => 6 + authenticator.len(),
            Extension::Nai(n) => 2 + n.len(),
            Extension::EncapDeliveryStyle => 2,
            Extension::UdpTunnelRequest { .. } | Extension::UdpTunnelReply { .. } => 8,
            Extension::TrustedNetworksConfigured => 4,
            Extension::Long { data, .. } => 4 + data.len(),
            Extension::Unknown { data, .. } => 2 + data.len(),
        }
    }

    /// `Err(TooLong)` if the data does not fit the extension's length field
    /// (255 octets, 251 for an authenticator after its SPI, 65535 long format).
    pub fn check_lengths(&self) -> Result<(), Error> {
        const L: &str = "mip extension";
        match self {
            Extension::Auth { authenticator, .. } => {
                ::wire::fits(L, "authenticator", authenticator.len(), 251)
            }
            Extension::Nai(d) | Extension::Unknown { data: d, .. } => {
                ::wire::fits(L, "data", d.len(), 255)
            }
            Extension::Long { data, .. } => ::wire::fits(L, "long data", data.len(), 0xffff),
            Extension::EncapDeliveryStyle
            | Extension::UdpTunnelRequest { .. }
            | Extension::UdpTunnelReply { .. }
            | Extension::TrustedNetworksConfigured => Ok(()),
        }
    }

    /// Appends the extension, or returns `Err(TooLong)` and appends nothing if its
    /// data does not fit the length field.
    pub fn try_emit(&self, out: &mut Vec<u8>) -> Result<(), Error> {
        self.check_lengths()?;
        self.emit(out);
        Ok(())
    }

    /// Appends the extension. Data longer than its length field can express is
    /// truncated to the maximum (255 octets, 65535 for the long format); use
    /// [`try_emit`](Self::try_emit) to get an error instead.
    pub fn emit(&self, out: &mut Vec<u8>) {
        let ty = self.ext_type().0;
        let short = |out: &mut Vec<u8>, data: &[u8]| {
            let data = &data[..data.len().min(255)];
            out.push(ty);
            out.push(data.len() as u8);
            out.extend_from_slice(data);
        };
        match self {
            Extension::Auth {
                spi, authenticator, ..
            } => {
                let a = &authenticator[..authenticator.len().min(251)];
                out.push(ty);
                out.push((4 + a.len()) as u8);
                out.extend_from_slice(&spi.to_be_bytes());
                out.extend_from_slice(a);
            }
            Extension::Nai(n) => short(out, n),
            Extension::EncapDeliveryStyle => short(out, &[]),
            Extension::UdpTunnelRequest {
                force,
                r,
                encapsulation,
            } => {
                let fr = if *force { 0x80 } else { 0 } | if *r { 0x40 } else { 0 };
                short(out, &[0, 0, fr, *encapsulation, 0, 0]);
            }
            Extension::UdpTunnelReply {
                code,
                force,
                keepalive,
            } => {
                let k = keepalive.to_be_bytes();
                short(
                    out,
                    &[0, code.0, if *force { 0x80 } else { 0 }, 0, k[0], k[1]],
                );
            }
            Extension::TrustedNetworksConfigured => short(out, &[0, 0]),
            Extension::Long { sub_type, data, .. } => {
                let data = &data[..data.len().min(0xffff)];
                out.push(ty);
                out.push(*sub_type);
                out.extend_from_slice(&(data.len() as u16).to_be_bytes());
                out.extend_from_slice(data);
            }
            Extension::Unknown { data, .. } => short(out, data),
        }
    }
}

pub(crate) fn check_all(exts: &[Extension]) -> Result<(), Error> {
    exts.iter().try_for_each(Extension::check_lengths)
}

pub(crate) fn emit_all(exts: &[Extension], out: &mut Vec<u8>) {
    for e in exts {
        e.emit(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(e: Extension) {
        let mut b = vec![0xaa; 3]; // pretend fixed part
        e.emit(&mut b);
        assert_eq!(b.len(), 3 + e.buffer_len());
        let mut it = ExtensionIter::new(&b, 3);
        let r = it.next().unwrap().unwrap();
        assert_eq!(r.offset, 3);
        assert_eq!(Extension::parse(&r).unwrap(), e);
        assert!(it.next().is_none());
    }

    #[test]
    fn oversize_data_is_an_error_on_try_emit_not_a_cap() {
        let cases = [
            (
                Extension::Nai(vec![b'n'; 255]),
                Extension::Nai(vec![b'n'; 256]),
                256,
                255,
            ),
            (
                Extension::Auth {
                    kind: AuthKind::MnHa,
                    spi: 256,
                    authenticator: vec![1; 251],
                },
                Extension::Auth {
                    kind: AuthKind::MnHa,
                    spi: 256,
                    authenticator: vec![1; 252],
                },
                252,
                251,
            ),
            (
                Extension::Long {
                    ty: ExtensionType::GENERALIZED_AUTH.0,
                    sub_type: 1,
                    data: vec![2; 0xffff],
                },
                Extension::Long {
                    ty: ExtensionType::GENERALIZED_AUTH.0,
                    sub_type: 1,
                    data: vec![2; 0x10000],
                },
                0x10000,
                0xffff,
            ),
        ];
        for (fits, too_long, len, max) in cases {
            let mut b = Vec::new();
            assert_eq!(fits.try_emit(&mut b), Ok(()));
            assert_eq!(b.len(), fits.buffer_len());
            round_trip(fits);
            let mut b = vec![7];
            let e = too_long.try_emit(&mut b).expect_err("does not fit");
            assert!(
                matches!(e, Error::TooLong { len: l, max: m, .. } if l == len && m == max),
                "{e:?}"
            );
            assert_eq!(b, [7], "nothing appended on error");
        }
    }

    #[test]
    fn every_extension_round_trips() {
        for e in [
            Extension::Auth {
                kind: AuthKind::MnHa,
                spi: 256,
                authenticator: vec![7; 16],
            },
            Extension::Auth {
                kind: AuthKind::MnFa,
                spi: 0xdead_beef,
                authenticator: vec![1; 16],
            },
            Extension::Auth {
                kind: AuthKind::FaHa,
                spi: 1,
                authenticator: vec![],
            },
            Extension::Nai(b"mn1@corp.example".to_vec()),
            Extension::EncapDeliveryStyle,
            Extension::UdpTunnelRequest {
                force: true,
                r: false,
                encapsulation: 4,
            },
            Extension::UdpTunnelRequest {
                force: false,
                r: true,
                encapsulation: 47,
            },
            Extension::UdpTunnelReply {
                code: UdpTunnelReplyCode::WILL_TUNNEL,
                force: true,
                keepalive: 110,
            },
            Extension::UdpTunnelReply {
                code: UdpTunnelReplyCode::DECLINED,
                force: false,
                keepalive: 0,
            },
            Extension::TrustedNetworksConfigured,
            Extension::Long {
                ty: 36,
                sub_type: 1,
                data: vec![9; 300],
            },
            Extension::Unknown {
                ty: 200,
                data: vec![1, 2, 3],
            },
            Extension::Unknown {
                ty: 149,
                data: vec![1, 0],
            },
        ] {
            round_trip(e);
        }
    }

    #[test]
    fn tnc_wire_form_is_rfc5265() {
        let mut b = Vec::new();
        Extension::TrustedNetworksConfigured.emit(&mut b);
        assert_eq!(b, [149, 2, 0, 0]);
    }

    #[test]
    fn udp_tunnel_wire_forms() {
        let mut b = Vec::new();
        Extension::UdpTunnelRequest {
            force: true,
            r: true,
            encapsulation: 4,
        }
        .emit(&mut b);
        assert_eq!(b, [144, 6, 0, 0, 0xc0, 4, 0, 0]);
        b.clear();
        Extension::UdpTunnelReply {
            code: UdpTunnelReplyCode::WILL_TUNNEL,
            force: false,
            keepalive: 60,
        }
        .emit(&mut b);
        assert_eq!(b, [44, 6, 0, 0, 0, 0, 0, 60]);
    }

    #[test]
    fn truncated_and_bad_lengths() {
        // Length says 20, 3 octets present.
        let b = [32u8, 20, 0, 0, 1];
        let mut it = ExtensionIter::new(&b, 0);
        assert!(it.next().unwrap().is_err());
        assert!(it.next().is_none());
        // Type octet alone.
        assert!(ExtensionIter::new(&[131], 0).next().unwrap().is_err());
        // Auth shorter than an SPI, TNC too long, UDP tunnel wrong length.
        for bad in [
            &[32u8, 2, 0, 0][..],
            &[149, 3, 0, 0, 0],
            &[144, 5, 0, 0, 0, 0, 0],
        ] {
            let r = ExtensionIter::new(bad, 0).next().unwrap().unwrap();
            assert!(Extension::parse(&r).is_err(), "{bad:?}");
        }
        // Type 0 is not padding in registration messages: it has a length.
        let r = ExtensionIter::new(&[0u8, 1, 9], 0).next().unwrap().unwrap();
        assert_eq!(
            Extension::parse(&r).unwrap(),
            Extension::Unknown {
                ty: 0,
                data: vec![9]
            }
        );
        assert!(!ExtensionType(127).is_skippable());
        assert!(ExtensionType(128).is_skippable());
    }
}
