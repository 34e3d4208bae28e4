//! Registration Request and Reply (RFC 5944 sections 3.3 and 3.4).

use super::extension::{self, Extension, ExtensionIter};
use super::{Error, MessageType};
use ::wire::reader::Reader;
use std::fmt;
use std::net::Ipv4Addr;

/// Length of the fixed part of a Registration Request.
pub const REQUEST_FIXED_LEN: usize = 24;
/// Length of the fixed part of a Registration Reply.
pub const REPLY_FIXED_LEN: usize = 20;

/// The flags octet of a Registration Request.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Flags(pub u8);

impl Flags {
    /// Simultaneous bindings.
    pub const S: Flags = Flags(0x80);
    /// Broadcast datagrams.
    pub const B: Flags = Flags(0x40);
    /// Decapsulation by the mobile node (co-located care-of address).
    pub const D: Flags = Flags(0x20);
    /// Minimal encapsulation.
    pub const M: Flags = Flags(0x10);
    /// GRE encapsulation.
    pub const G: Flags = Flags(0x08);
    /// Reserved, sent as zero, ignored on reception.
    pub const R_RESERVED: Flags = Flags(0x04);
    /// Reverse tunneling requested (RFC 3024).
    pub const T: Flags = Flags(0x02);
    /// Reserved, sent as zero, ignored on reception.
    pub const X_RESERVED: Flags = Flags(0x01);

    pub const fn empty() -> Flags {
        Flags(0)
    }
    pub const fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }
    pub const fn union(self, other: Flags) -> Flags {
        Flags(self.0 | other.0)
    }
    pub const fn without(self, other: Flags) -> Flags {
        Flags(self.0 & !other.0)
    }
}

impl std::ops::BitOr for Flags {
    type Output = Flags;
    fn bitor(self, rhs: Flags) -> Flags {
        self.union(rhs)
    }
}

impl fmt::Debug for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NAMES: [(u8, char); 8] = [
            (0x80, 'S'),
            (0x40, 'B'),
            (0x20, 'D'),
            (0x10, 'M'),
            (0x08, 'G'),
            (0x04, 'r'),
            (0x02, 'T'),
            (0x01, 'x'),
        ];
        let s: String = NAMES
            .iter()
            .filter(|(bit, _)| self.0 & bit != 0)
            .map(|(_, c)| *c)
            .collect();
        write!(f, "Flags({s})")
    }
}

/// A Registration Reply code (RFC 5944 section 3.4, RFC 3024, RFC 2794).
/// An open code point: unknown values are kept as they are.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReplyCode(pub u8);

macro_rules! reply_codes {
    ($($name:ident = $v:expr, $desc:expr;)*) => {
        impl ReplyCode {
            $(#[doc = $desc] pub const $name: ReplyCode = ReplyCode($v);)*
            /// The RFC's description of the code, if it is one mipsec knows.
            pub fn description(self) -> Option<&'static str> {
                match self.0 { $($v => Some($desc),)* _ => None }
            }
        }
    };
}

reply_codes! {
    ACCEPTED = 0, "registration accepted";
    ACCEPTED_NO_SIMULTANEOUS = 1, "registration accepted, but simultaneous mobility bindings unsupported";
    FA_UNSPECIFIED = 64, "denied by FA: reason unspecified";
    FA_ADMIN_PROHIBITED = 65, "denied by FA: administratively prohibited";
    FA_INSUFFICIENT_RESOURCES = 66, "denied by FA: insufficient resources";
    FA_MN_AUTH_FAILED = 67, "denied by FA: mobile node failed authentication";
    FA_HA_AUTH_FAILED = 68, "denied by FA: home agent failed authentication";
    FA_LIFETIME_TOO_LONG = 69, "denied by FA: requested Lifetime too long";
    FA_POORLY_FORMED_REQUEST = 70, "denied by FA: poorly formed Request";
    FA_POORLY_FORMED_REPLY = 71, "denied by FA: poorly formed Reply";
    FA_ENCAP_UNAVAILABLE = 72, "denied by FA: requested encapsulation unavailable";
    FA_RESERVED_UNAVAILABLE = 73, "denied by FA: reserved and unavailable";
    FA_REVERSE_TUNNEL_UNAVAILABLE = 74, "denied by FA: requested reverse tunnel unavailable";
    FA_REVERSE_TUNNEL_MANDATORY = 75, "denied by FA: reverse tunnel is mandatory and 'T' bit not set";
    FA_MN_TOO_DISTANT = 76, "denied by FA: mobile node too distant";
    FA_INVALID_COA = 77, "denied by FA: invalid care-of address";
    FA_REGISTRATION_TIMEOUT = 78, "denied by FA: registration timeout";
    FA_DELIVERY_STYLE_UNSUPPORTED = 79, "denied by FA: delivery style not supported";
    FA_HOME_NETWORK_UNREACHABLE = 80, "denied by FA: home network unreachable (ICMP error received)";
    FA_HA_HOST_UNREACHABLE = 81, "denied by FA: home agent host unreachable (ICMP error received)";
    FA_HA_PORT_UNREACHABLE = 82, "denied by FA: home agent port unreachable (ICMP error received)";
    FA_HA_UNREACHABLE = 88, "denied by FA: home agent unreachable (ICMP error received)";
    FA_MISSING_NAI = 97, "denied by FA: missing NAI";
    FA_MISSING_HOME_AGENT = 98, "denied by FA: missing home agent";
    FA_MISSING_HOME_ADDRESS = 99, "denied by FA: missing home address";
    FA_UNKNOWN_CHALLENGE = 104, "denied by FA: unknown challenge";
    FA_MISSING_CHALLENGE = 105, "denied by FA: missing challenge";
    FA_STALE_CHALLENGE = 106, "denied by FA: stale challenge";
    HA_UNSPECIFIED = 128, "denied by HA: reason unspecified";
    HA_ADMIN_PROHIBITED = 129, "denied by HA: administratively prohibited";
    HA_INSUFFICIENT_RESOURCES = 130, "denied by HA: insufficient resources";
    HA_MN_AUTH_FAILED = 131, "denied by HA: mobile node failed authentication";
    HA_FA_AUTH_FAILED = 132, "denied by HA: foreign agent failed authentication";
    HA_IDENT_MISMATCH = 133, "denied by HA: registration Identification mismatch";
    HA_POORLY_FORMED_REQUEST = 134, "denied by HA: poorly formed Request";
    HA_TOO_MANY_BINDINGS = 135, "denied by HA: too many simultaneous mobility bindings";
    HA_UNKNOWN_HA_ADDRESS = 136, "denied by HA: unknown home agent address";
    HA_REVERSE_TUNNEL_UNAVAILABLE = 137, "denied by HA: requested reverse tunnel unavailable";
    HA_REVERSE_TUNNEL_MANDATORY = 138, "denied by HA: reverse tunnel is mandatory and 'T' bit not set";
    HA_ENCAP_UNAVAILABLE = 139, "denied by HA: requested encapsulation unavailable";
    FA_INVALID_HA_ADDRESS = 194, "denied by FA: invalid Home Agent Address";
}

impl ReplyCode {
    /// Codes 0 and 1 accept the registration.
    pub fn is_accepted(self) -> bool {
        self.0 <= 1
    }
    /// Codes 64 to 127 are a foreign agent's denials.
    pub fn is_from_fa(self) -> bool {
        (64..=127).contains(&self.0) || self.0 == 194
    }
}

impl fmt::Debug for ReplyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.description() {
            Some(d) => write!(f, "{} ({d})", self.0),
            None => write!(f, "{} (unknown)", self.0),
        }
    }
}

impl fmt::Display for ReplyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A Registration Request: the fixed part and its extensions, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationRequest {
    pub flags: Flags,
    /// Seconds; 0 deregisters, 0xffff is infinity.
    pub lifetime: u16,
    pub home_addr: Ipv4Addr,
    pub home_agent: Ipv4Addr,
    pub care_of: Ipv4Addr,
    pub ident: u64,
    pub extensions: Vec<Extension>,
}

/// A Registration Reply: the fixed part and its extensions, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationReply {
    pub code: ReplyCode,
    pub lifetime: u16,
    pub home_addr: Ipv4Addr,
    pub home_agent: Ipv4Addr,
    pub ident: u64,
    pub extensions: Vec<Extension>,
}

fn check_type(
    buf: &[u8],
    want: MessageType,
    fixed: usize,
    layer: &'static str,
) -> Result<(), Error> {
    ::wire::need(layer, buf, fixed)?;
    if buf.first() != Some(&want.0) {
        return Err(Error::Malformed {
            layer,
            field: "type",
        });
    }
    Ok(())
}

fn parse_extensions(buf: &[u8], fixed: usize) -> Result<Vec<Extension>, Error> {
    ExtensionIter::new(buf, fixed)
        .map(|r| r.and_then(|e| Extension::parse(&e)))
        .collect()
}

impl RegistrationRequest {
    /// Parses the fixed part and every extension.
    pub fn parse(buf: &[u8]) -> Result<Self, Error> {
        let mut r = Self::parse_fixed(buf)?;
        r.extensions = parse_extensions(buf, REQUEST_FIXED_LEN)?;
        Ok(r)
    }

    /// Parses only the fixed part; `extensions` is left empty. Use
    /// [`ExtensionIter`] over `buf` from [`REQUEST_FIXED_LEN`] for the rest.
    pub fn parse_fixed(buf: &[u8]) -> Result<Self, Error> {
        check_type(
            buf,
            MessageType::REGISTRATION_REQUEST,
            REQUEST_FIXED_LEN,
            "registration request",
        )?;
        const L: &str = "registration request";
        let mut r = Reader::new(buf);
        r.skip(1, L)?;
        Ok(RegistrationRequest {
            flags: Flags(r.u8(L)?),
            lifetime: r.u16(L)?,
            home_addr: r.ipv4(L)?,
            home_agent: r.ipv4(L)?,
            care_of: r.ipv4(L)?,
            ident: r.u64(L)?,
            extensions: Vec::new(),
        })
    }

    /// Octets [`emit`](Self::emit) will append.
    pub fn buffer_len(&self) -> usize {
        REQUEST_FIXED_LEN
            + self
                .extensions
                .iter()
                .map(Extension::buffer_len)
                .sum::<usize>()
    }

    /// Appends the message with all its extensions to `out`.
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.reserve(self.buffer_len());
        out.push(MessageType::REGISTRATION_REQUEST.0);
        out.push(self.flags.0);
        out.extend_from_slice(&self.lifetime.to_be_bytes());
        out.extend_from_slice(&self.home_addr.octets());
        out.extend_from_slice(&self.home_agent.octets());
        out.extend_from_slice(&self.care_of.octets());
        out.extend_from_slice(&self.ident.to_be_bytes());
        extension::emit_all(&self.extensions, out);
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.emit(&mut v);
        v
    }

    /// Like [`emit`](Self::emit), but returns `Err(TooLong)` and appends nothing if
    /// an extension's data does not fit its length field (instead of capping it).
    pub fn try_emit(&self, out: &mut Vec<u8>) -> Result<(), Error> {
        extension::check_all(&self.extensions)?;
        self.emit(out);
        Ok(())
    }
}

impl RegistrationReply {
    /// Parses the fixed part and every extension.
    pub fn parse(buf: &[u8]) -> Result<Self, Error> {
        let mut r = Self::parse_fixed(buf)?;
        r.extensions = parse_extensions(buf, REPLY_FIXED_LEN)?;
        Ok(r)
    }

    /// Parses only the fixed part; `extensions` is left empty.
    pub fn parse_fixed(buf: &[u8]) -> Result<Self, Error> {
        check_type(
            buf,
            MessageType::REGISTRATION_REPLY,
            REPLY_FIXED_LEN,
            "registration reply",
        )?;
        const L: &str = "registration reply";
        let mut r = Reader::new(buf);
        r.skip(1, L)?;
        Ok(RegistrationReply {
            code: ReplyCode(r.u8(L)?),
            lifetime: r.u16(L)?,
            home_addr: r.ipv4(L)?,
            home_agent: r.ipv4(L)?,
            ident: r.u64(L)?,
            extensions: Vec::new(),
        })
    }

    pub fn buffer_len(&self) -> usize {
        REPLY_FIXED_LEN
            + self
                .extensions
                .iter()
                .map(Extension::buffer_len)
                .sum::<usize>()
    }

    pub fn emit(&self, out: &mut Vec<u8>) {
        out.reserve(self.buffer_len());
        out.push(MessageType::REGISTRATION_REPLY.0);
        out.push(self.code.0);
        out.extend_from_slice(&self.lifetime.to_be_bytes());
        out.extend_from_slice(&self.home_addr.octets());
        out.extend_from_slice(&self.home_agent.octets());
        out.extend_from_slice(&self.ident.to_be_bytes());
        extension::emit_all(&self.extensions, out);
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.emit(&mut v);
        v
    }

    /// Like [`emit`](Self::emit), but returns `Err(TooLong)` and appends nothing if
    /// an extension's data does not fit its length field (instead of capping it).
    pub fn try_emit(&self, out: &mut Vec<u8>) -> Result<(), Error> {
        extension::check_all(&self.extensions)?;
        self.emit(out);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::extension::AuthKind;

    // rrq_colocated_D_T from TEST-VECTORS.md section 6 (independent implementation).
    const RRQ_D_T: &str = "012207080a0100320a010001c000020aeb1f040000000000201400000100fcb28c2962dfe84fdb5d559a350cda1c";
    const RRP_TNC: &str = "030007080a0100320a010001eb1f04000000000095020000201400000100347c6301c0839814397334bfd62188a1";

    #[test]
    fn try_emit_refuses_an_extension_that_does_not_fit() {
        let mut req = RegistrationRequest::parse(&hex::decode(RRQ_D_T).unwrap()).unwrap();
        let mut b = Vec::new();
        assert_eq!(req.try_emit(&mut b), Ok(()));
        assert_eq!(b, req.to_bytes());
        req.extensions.insert(0, Extension::Nai(vec![b'a'; 256]));
        let mut b = Vec::new();
        assert!(matches!(
            req.try_emit(&mut b),
            Err(Error::TooLong {
                len: 256,
                max: 255,
                ..
            })
        ));
        assert!(b.is_empty());
    }

    #[test]
    fn parse_reference_request() {
        let b = hex::decode(RRQ_D_T).unwrap();
        let r = RegistrationRequest::parse(&b).unwrap();
        assert_eq!(r.flags, Flags::D | Flags::T);
        assert_eq!(r.lifetime, 1800);
        assert_eq!(r.home_addr, Ipv4Addr::new(10, 1, 0, 50));
        assert_eq!(r.home_agent, Ipv4Addr::new(10, 1, 0, 1));
        assert_eq!(r.care_of, Ipv4Addr::new(192, 0, 2, 10));
        assert_eq!(r.ident, 0xeb1f_0400_0000_0000);
        assert_eq!(
            r.extensions,
            vec![Extension::Auth {
                kind: AuthKind::MnHa,
                spi: 256,
                authenticator: hex::decode("fcb28c2962dfe84fdb5d559a350cda1c").unwrap()
            }]
        );
        assert_eq!(r.to_bytes(), b);
        assert_eq!(r.buffer_len(), b.len());
    }

    #[test]
    fn parse_reference_reply_with_tnc() {
        let b = hex::decode(RRP_TNC).unwrap();
        let r = RegistrationReply::parse(&b).unwrap();
        assert_eq!(r.code, ReplyCode::ACCEPTED);
        assert_eq!(r.lifetime, 1800);
        assert_eq!(r.extensions[0], Extension::TrustedNetworksConfigured);
        assert!(matches!(
            r.extensions[1],
            Extension::Auth {
                kind: AuthKind::MnHa,
                spi: 256,
                ..
            }
        ));
        assert_eq!(r.to_bytes(), b);
    }

    #[test]
    fn truncations_and_wrong_type_are_errors() {
        let b = hex::decode(RRQ_D_T).unwrap();
        for n in 0..b.len() {
            // Every strict prefix either fails or drops whole extensions; none panics.
            if let Ok(r) = RegistrationRequest::parse(&b[..n]) {
                assert!(n == REQUEST_FIXED_LEN && r.extensions.is_empty());
            }
        }
        assert!(RegistrationReply::parse(&b).is_err());
    }

    #[test]
    fn flags_and_codes() {
        assert_eq!(format!("{:?}", Flags(0xff)), "Flags(SBDMGrTx)");
        assert!(ReplyCode(1).is_accepted());
        assert!(!ReplyCode::HA_IDENT_MISMATCH.is_accepted());
        assert!(ReplyCode(70).is_from_fa());
        assert_eq!(
            ReplyCode(133).description(),
            Some("denied by HA: registration Identification mismatch")
        );
        assert_eq!(ReplyCode(250).description(), None);
    }
}
