//! Payload bodies (RFC 7296 section 3) and the generic payload chain.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::codec::{Reader, Writer};
use super::codes::*;
use super::ParseError;

/// Critical bit in the generic payload header.
pub const CRITICAL: u8 = 0x80;
/// Generic payload header length.
pub const GENERIC_HEADER_LEN: usize = 4;

/// A transform attribute (RFC 7296 3.3.5). TV attributes carry 2 octets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attribute {
    Tv { ty: u16, value: u16 },
    Tlv { ty: u16, value: Vec<u8> },
}

/// A transform substructure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transform {
    pub ty: TransformType,
    pub id: u16,
    pub attributes: Vec<Attribute>,
}

impl Transform {
    pub fn new(ty: TransformType, id: u16) -> Self {
        Transform {
            ty,
            id,
            attributes: Vec::new(),
        }
    }

    pub fn with_key_len(ty: TransformType, id: u16, bits: u16) -> Self {
        Transform {
            ty,
            id,
            attributes: vec![Attribute::Tv {
                ty: ATTR_KEY_LENGTH,
                value: bits,
            }],
        }
    }

    /// The Key Length attribute, if present.
    pub fn key_len(&self) -> Option<u16> {
        self.attributes.iter().find_map(|a| match a {
            Attribute::Tv { ty, value } if *ty == ATTR_KEY_LENGTH => Some(*value),
            _ => None,
        })
    }
}

/// A proposal substructure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    pub num: u8,
    pub protocol: ProtocolId,
    pub spi: Vec<u8>,
    pub transforms: Vec<Transform>,
}

/// An identification payload body (IDi/IDr).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identification {
    pub ty: IdType,
    pub data: Vec<u8>,
}

impl Identification {
    pub fn fqdn(name: &str) -> Self {
        Identification {
            ty: IdType::FQDN,
            data: name.as_bytes().to_vec(),
        }
    }
    pub fn ipv4(a: Ipv4Addr) -> Self {
        Identification {
            ty: IdType::IPV4_ADDR,
            data: a.octets().to_vec(),
        }
    }
    /// The body as covered by MACedIDFor* (type, 3 reserved octets, data).
    pub fn body(&self) -> Vec<u8> {
        let mut v = vec![self.ty.0, 0, 0, 0];
        v.extend_from_slice(&self.data);
        v
    }
}

/// A notify payload body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notify {
    pub protocol: ProtocolId,
    pub spi: Vec<u8>,
    pub ty: NotifyType,
    pub data: Vec<u8>,
}

impl Notify {
    pub fn new(ty: NotifyType, data: Vec<u8>) -> Self {
        Notify {
            protocol: ProtocolId::NONE,
            spi: Vec::new(),
            ty,
            data,
        }
    }
}

/// A delete payload body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delete {
    pub protocol: ProtocolId,
    pub spi_size: u8,
    pub spis: Vec<Vec<u8>>,
}

/// A traffic selector (RFC 7296 3.13.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrafficSelector {
    pub ip_proto: u8,
    pub start_port: u16,
    pub end_port: u16,
    pub start: IpAddr,
    pub end: IpAddr,
}

impl TrafficSelector {
    /// All IPv4 addresses, ports and protocols.
    pub fn ipv4_any() -> Self {
        TrafficSelector {
            ip_proto: 0,
            start_port: 0,
            end_port: 65535,
            start: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            end: IpAddr::V4(Ipv4Addr::BROADCAST),
        }
    }
    /// One IPv4 host, any port/protocol.
    pub fn ipv4_host(a: Ipv4Addr) -> Self {
        TrafficSelector {
            ip_proto: 0,
            start_port: 0,
            end_port: 65535,
            start: IpAddr::V4(a),
            end: IpAddr::V4(a),
        }
    }
    /// An IPv4 range, any port/protocol.
    pub fn ipv4_range(start: Ipv4Addr, end: Ipv4Addr) -> Self {
        TrafficSelector {
            ip_proto: 0,
            start_port: 0,
            end_port: 65535,
            start: IpAddr::V4(start),
            end: IpAddr::V4(end),
        }
    }
}

/// A configuration attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CfgAttribute {
    pub ty: CfgAttrType,
    pub value: Vec<u8>,
}

/// A configuration payload body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Configuration {
    pub ty: CfgType,
    pub attributes: Vec<CfgAttribute>,
}

/// Every payload we know, plus unknown non-critical ones kept raw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    Sa(Vec<Proposal>),
    Ke {
        group: DhId,
        data: Vec<u8>,
    },
    IdI(Identification),
    IdR(Identification),
    Cert {
        encoding: CertEncoding,
        data: Vec<u8>,
    },
    CertReq {
        encoding: CertEncoding,
        data: Vec<u8>,
    },
    Auth {
        method: AuthMethod,
        data: Vec<u8>,
    },
    Nonce(Vec<u8>),
    Notify(Notify),
    Delete(Delete),
    Vendor(Vec<u8>),
    TsI(Vec<TrafficSelector>),
    TsR(Vec<TrafficSelector>),
    Cp(Configuration),
    /// Encrypted and authenticated payload: `first` is the type of the first inner payload,
    /// `body` is IV | ciphertext | ICV.
    Sk {
        first: PayloadType,
        body: Vec<u8>,
    },
    /// Encrypted fragment (RFC 7383 2.5).
    Skf {
        first: PayloadType,
        number: u16,
        total: u16,
        body: Vec<u8>,
    },
    /// An unrecognized payload whose critical bit was clear.
    Unknown {
        ty: PayloadType,
        body: Vec<u8>,
    },
}

impl Payload {
    pub fn ty(&self) -> PayloadType {
        match self {
            Payload::Sa(_) => PayloadType::SA,
            Payload::Ke { .. } => PayloadType::KE,
            Payload::IdI(_) => PayloadType::IDI,
            Payload::IdR(_) => PayloadType::IDR,
            Payload::Cert { .. } => PayloadType::CERT,
            Payload::CertReq { .. } => PayloadType::CERTREQ,
            Payload::Auth { .. } => PayloadType::AUTH,
            Payload::Nonce(_) => PayloadType::NONCE,
            Payload::Notify(_) => PayloadType::NOTIFY,
            Payload::Delete(_) => PayloadType::DELETE,
            Payload::Vendor(_) => PayloadType::VENDOR,
            Payload::TsI(_) => PayloadType::TSI,
            Payload::TsR(_) => PayloadType::TSR,
            Payload::Cp(_) => PayloadType::CP,
            Payload::Sk { .. } => PayloadType::SK,
            Payload::Skf { .. } => PayloadType::SKF,
            Payload::Unknown { ty, .. } => *ty,
        }
    }

    /// Parse one payload body of type `ty`. `next` is the value of the Next Payload field,
    /// needed for SK/SKF whose field names the first inner payload.
    pub fn parse_body(
        ty: PayloadType,
        next: PayloadType,
        body: &[u8],
    ) -> Result<Payload, ParseError> {
        let mut r = Reader::new(body);
        let p = match ty {
            PayloadType::SA => Payload::Sa(parse_proposals(&mut r)?),
            PayloadType::KE => {
                let group = DhId(r.u16("KE group")?);
                r.u16("KE reserved")?;
                Payload::Ke {
                    group,
                    data: r.rest().to_vec(),
                }
            }
            PayloadType::IDI | PayloadType::IDR => {
                let id_ty = IdType(r.u8("ID type")?);
                r.take(3, "ID reserved")?;
                let id = Identification {
                    ty: id_ty,
                    data: r.rest().to_vec(),
                };
                if ty == PayloadType::IDI {
                    Payload::IdI(id)
                } else {
                    Payload::IdR(id)
                }
            }
            PayloadType::CERT | PayloadType::CERTREQ => {
                let encoding = CertEncoding(r.u8("CERT encoding")?);
                let data = r.rest().to_vec();
                if ty == PayloadType::CERT {
                    Payload::Cert { encoding, data }
                } else {
                    Payload::CertReq { encoding, data }
                }
            }
            PayloadType::AUTH => {
                let method = AuthMethod(r.u8("AUTH method")?);
                r.take(3, "AUTH reserved")?;
                Payload::Auth {
                    method,
                    data: r.rest().to_vec(),
                }
            }
            PayloadType::NONCE => {
                let n = r.rest();
                // RFC 7296 3.9: between 16 and 256 octets.
                if n.len() < 16 || n.len() > 256 {
                    return Err(ParseError::BadLength { what: "nonce" });
                }
                Payload::Nonce(n.to_vec())
            }
            PayloadType::NOTIFY => {
                let protocol = ProtocolId(r.u8("N protocol")?);
                let spi_size = r.u8("N SPI size")?;
                let nty = NotifyType(r.u16("N type")?);
                let spi = r.take(usize::from(spi_size), "N SPI")?.to_vec();
                Payload::Notify(Notify {
                    protocol,
                    spi,
                    ty: nty,
                    data: r.rest().to_vec(),
                })
            }
            PayloadType::DELETE => {
                let protocol = ProtocolId(r.u8("D protocol")?);
                let spi_size = r.u8("D SPI size")?;
                let n = usize::from(r.u16("D number of SPIs")?);
                let size = usize::from(spi_size);
                // RFC 7296 3.11: the SPIs fill the rest of the payload exactly, so the
                // count is bounded by the bytes left. SPI size 0 (the IKE SA) carries no
                // SPIs; a count with size 0 would let 8 octets ask for 65,535 entries.
                if (size == 0 && n != 0) || n.checked_mul(size) != Some(r.remaining()) {
                    return Err(ParseError::BadLength { what: "delete" });
                }
                let mut spis = Vec::with_capacity(n);
                for _ in 0..n {
                    spis.push(r.take(size, "D SPI")?.to_vec());
                }
                Payload::Delete(Delete {
                    protocol,
                    spi_size,
                    spis,
                })
            }
            PayloadType::VENDOR => Payload::Vendor(r.rest().to_vec()),
            PayloadType::TSI | PayloadType::TSR => {
                let ts = parse_ts(&mut r)?;
                if ty == PayloadType::TSI {
                    Payload::TsI(ts)
                } else {
                    Payload::TsR(ts)
                }
            }
            PayloadType::CP => {
                let cty = CfgType(r.u8("CP type")?);
                r.take(3, "CP reserved")?;
                let mut attributes = Vec::new();
                while !r.is_empty() {
                    let aty = r.u16("CP attribute type")? & 0x7fff;
                    let len = r.u16("CP attribute length")?;
                    let value = r.take(usize::from(len), "CP attribute value")?.to_vec();
                    attributes.push(CfgAttribute {
                        ty: CfgAttrType(aty),
                        value,
                    });
                }
                Payload::Cp(Configuration {
                    ty: cty,
                    attributes,
                })
            }
            PayloadType::SK => Payload::Sk {
                first: next,
                body: r.rest().to_vec(),
            },
            PayloadType::SKF => {
                let number = r.u16("SKF fragment number")?;
                let total = r.u16("SKF total fragments")?;
                if number == 0 || total == 0 || number > total {
                    return Err(ParseError::BadValue {
                        what: "SKF fragment number",
                    });
                }
                Payload::Skf {
                    first: next,
                    number,
                    total,
                    body: r.rest().to_vec(),
                }
            }
            other => Payload::Unknown {
                ty: other,
                body: r.rest().to_vec(),
            },
        };
        if !r.is_empty() {
            return Err(ParseError::TrailingData { what: "payload" });
        }
        Ok(p)
    }

    /// Append the body (without generic header) to `out`.
    pub fn emit_body(&self, out: &mut Vec<u8>) {
        match self {
            Payload::Sa(props) => emit_proposals(props, out),
            Payload::Ke { group, data } => {
                out.put_u16(group.0);
                out.put_u16(0);
                out.extend_from_slice(data);
            }
            Payload::IdI(id) | Payload::IdR(id) => out.extend_from_slice(&id.body()),
            Payload::Cert { encoding, data } | Payload::CertReq { encoding, data } => {
                out.put_u8(encoding.0);
                out.extend_from_slice(data);
            }
            Payload::Auth { method, data } => {
                out.extend_from_slice(&[method.0, 0, 0, 0]);
                out.extend_from_slice(data);
            }
            Payload::Nonce(n) => out.extend_from_slice(n),
            Payload::Notify(n) => {
                out.put_u8(n.protocol.0);
                out.put_u8(u8::try_from(n.spi.len()).unwrap_or(0));
                out.put_u16(n.ty.0);
                if n.spi.len() <= usize::from(u8::MAX) {
                    out.extend_from_slice(&n.spi);
                }
                out.extend_from_slice(&n.data);
            }
            Payload::Delete(d) => {
                out.put_u8(d.protocol.0);
                out.put_u8(d.spi_size);
                out.put_u16(u16::try_from(d.spis.len()).unwrap_or(0));
                for s in &d.spis {
                    out.extend_from_slice(s);
                }
            }
            Payload::Vendor(v) => out.extend_from_slice(v),
            Payload::TsI(ts) | Payload::TsR(ts) => emit_ts(ts, out),
            Payload::Cp(c) => {
                out.extend_from_slice(&[c.ty.0, 0, 0, 0]);
                for a in &c.attributes {
                    out.put_u16(a.ty.0 & 0x7fff);
                    out.put_u16(u16::try_from(a.value.len()).unwrap_or(0));
                    out.extend_from_slice(&a.value);
                }
            }
            Payload::Sk { body, .. } => out.extend_from_slice(body),
            Payload::Skf {
                number,
                total,
                body,
                ..
            } => {
                out.put_u16(*number);
                out.put_u16(*total);
                out.extend_from_slice(body);
            }
            Payload::Unknown { body, .. } => out.extend_from_slice(body),
        }
    }

    /// The value this payload's own Next Payload field would carry if it were last:
    /// SK/SKF name their first inner payload, everything else says NONE.
    fn last_next(&self) -> PayloadType {
        match self {
            Payload::Sk { first, .. } | Payload::Skf { first, .. } => *first,
            _ => PayloadType::NONE,
        }
    }
}

fn parse_proposals(r: &mut Reader<'_>) -> Result<Vec<Proposal>, ParseError> {
    let mut props = Vec::new();
    loop {
        let last = r.u8("proposal last")?;
        r.u8("proposal reserved")?;
        let len = usize::from(r.u16("proposal length")?);
        if len < 8 {
            return Err(ParseError::BadLength { what: "proposal" });
        }
        let mut p = r.sub(len - 4, "proposal")?;
        let num = p.u8("proposal num")?;
        let protocol = ProtocolId(p.u8("protocol id")?);
        let spi_size = p.u8("SPI size")?;
        let ntrans = p.u8("number of transforms")?;
        let spi = p.take(usize::from(spi_size), "proposal SPI")?.to_vec();
        let mut transforms = Vec::new();
        for i in 0..ntrans {
            let tlast = p.u8("transform last")?;
            p.u8("transform reserved")?;
            let tlen = usize::from(p.u16("transform length")?);
            if tlen < 8 {
                return Err(ParseError::BadLength { what: "transform" });
            }
            let mut t = p.sub(tlen - 4, "transform")?;
            let ty = TransformType(t.u8("transform type")?);
            t.u8("transform reserved")?;
            let id = t.u16("transform id")?;
            let mut attributes = Vec::new();
            while !t.is_empty() {
                let raw = t.u16("attribute type")?;
                let aty = raw & 0x7fff;
                if raw & 0x8000 != 0 {
                    attributes.push(Attribute::Tv {
                        ty: aty,
                        value: t.u16("attribute value")?,
                    });
                } else {
                    let alen = usize::from(t.u16("attribute length")?);
                    attributes.push(Attribute::Tlv {
                        ty: aty,
                        value: t.take(alen, "attribute value")?.to_vec(),
                    });
                }
            }
            let expect_last = if i + 1 == ntrans { 0 } else { 3 };
            if tlast != expect_last {
                return Err(ParseError::BadValue {
                    what: "transform last substruc",
                });
            }
            transforms.push(Transform { ty, id, attributes });
        }
        if !p.is_empty() {
            return Err(ParseError::TrailingData { what: "proposal" });
        }
        props.push(Proposal {
            num,
            protocol,
            spi,
            transforms,
        });
        match last {
            0 => break,
            2 => {}
            _ => {
                return Err(ParseError::BadValue {
                    what: "proposal last substruc",
                })
            }
        }
    }
    Ok(props)
}

fn emit_proposals(props: &[Proposal], out: &mut Vec<u8>) {
    for (i, p) in props.iter().enumerate() {
        let start = out.len();
        out.put_u8(if i + 1 == props.len() { 0 } else { 2 });
        out.put_u8(0);
        out.put_u16(0);
        out.put_u8(p.num);
        out.put_u8(p.protocol.0);
        out.put_u8(u8::try_from(p.spi.len()).unwrap_or(0));
        out.put_u8(u8::try_from(p.transforms.len()).unwrap_or(0));
        out.extend_from_slice(&p.spi);
        for (j, t) in p.transforms.iter().enumerate() {
            let tstart = out.len();
            out.put_u8(if j + 1 == p.transforms.len() { 0 } else { 3 });
            out.put_u8(0);
            out.put_u16(0);
            out.put_u8(t.ty.0);
            out.put_u8(0);
            out.put_u16(t.id);
            for a in &t.attributes {
                match a {
                    Attribute::Tv { ty, value } => {
                        out.put_u16(0x8000 | ty);
                        out.put_u16(*value);
                    }
                    Attribute::Tlv { ty, value } => {
                        out.put_u16(ty & 0x7fff);
                        out.put_u16(u16::try_from(value.len()).unwrap_or(0));
                        out.extend_from_slice(value);
                    }
                }
            }
            let tlen = out.len() - tstart;
            out.patch_u16(tstart + 2, tlen);
        }
        let len = out.len() - start;
        out.patch_u16(start + 2, len);
    }
}

fn parse_ts(r: &mut Reader<'_>) -> Result<Vec<TrafficSelector>, ParseError> {
    let n = r.u8("number of TSs")?;
    r.take(3, "TS reserved")?;
    let mut out = Vec::new();
    for _ in 0..n {
        let ty = TsType(r.u8("TS type")?);
        let ip_proto = r.u8("TS IP protocol")?;
        let len = usize::from(r.u16("TS length")?);
        if len < 8 {
            return Err(ParseError::BadLength { what: "TS" });
        }
        let mut s = r.sub(len - 4, "TS")?;
        let start_port = s.u16("TS start port")?;
        let end_port = s.u16("TS end port")?;
        let (start, end) = match ty {
            TsType::IPV4_ADDR_RANGE => (
                IpAddr::V4(Ipv4Addr::from(s.array::<4>("TS start")?)),
                IpAddr::V4(Ipv4Addr::from(s.array::<4>("TS end")?)),
            ),
            TsType::IPV6_ADDR_RANGE => (
                IpAddr::V6(Ipv6Addr::from(s.array::<16>("TS start")?)),
                IpAddr::V6(Ipv6Addr::from(s.array::<16>("TS end")?)),
            ),
            _ => return Err(ParseError::BadValue { what: "TS type" }),
        };
        if !s.is_empty() {
            return Err(ParseError::TrailingData { what: "TS" });
        }
        out.push(TrafficSelector {
            ip_proto,
            start_port,
            end_port,
            start,
            end,
        });
    }
    Ok(out)
}

fn emit_ts(ts: &[TrafficSelector], out: &mut Vec<u8>) {
    out.extend_from_slice(&[u8::try_from(ts.len()).unwrap_or(0), 0, 0, 0]);
    for t in ts {
        let (ty, len) = match t.start {
            IpAddr::V4(_) => (TsType::IPV4_ADDR_RANGE, 16u16),
            IpAddr::V6(_) => (TsType::IPV6_ADDR_RANGE, 40u16),
        };
        out.put_u8(ty.0);
        out.put_u8(t.ip_proto);
        out.put_u16(len);
        out.put_u16(t.start_port);
        out.put_u16(t.end_port);
        for a in [t.start, t.end] {
            match (ty, a) {
                (TsType::IPV4_ADDR_RANGE, IpAddr::V4(v)) => out.extend_from_slice(&v.octets()),
                (TsType::IPV4_ADDR_RANGE, IpAddr::V6(_)) => out.extend_from_slice(&[0; 4]),
                (_, IpAddr::V6(v)) => out.extend_from_slice(&v.octets()),
                (_, IpAddr::V4(v)) => out.extend_from_slice(&v.to_ipv6_mapped().octets()),
            }
        }
    }
}

/// Parse a payload chain starting with type `first`. Stops after SK/SKF (which must be last,
/// RFC 7296 3.14). Unknown payloads with the critical bit set yield
/// [`ParseError::UnsupportedCritical`].
pub fn parse_chain(first: PayloadType, bytes: &[u8]) -> Result<Vec<Payload>, ParseError> {
    let mut r = Reader::new(bytes);
    let mut ty = first;
    let mut out = Vec::new();
    while ty != PayloadType::NONE {
        let next = PayloadType(r.u8("next payload")?);
        let flags = r.u8("payload flags")?;
        let len = usize::from(r.u16("payload length")?);
        if len < GENERIC_HEADER_LEN {
            return Err(ParseError::BadLength { what: "payload" });
        }
        let body = r.take(len - GENERIC_HEADER_LEN, "payload body")?;
        if (ty.name().is_none() || ty == PayloadType::EAP) && flags & CRITICAL != 0 {
            return Err(ParseError::UnsupportedCritical(ty));
        }
        let p = Payload::parse_body(ty, next, body)?;
        let is_sk = matches!(p, Payload::Sk { .. } | Payload::Skf { .. });
        out.push(p);
        if is_sk {
            if !r.is_empty() {
                return Err(ParseError::TrailingData { what: "after SK" });
            }
            return Ok(out);
        }
        ty = next;
    }
    if !r.is_empty() {
        return Err(ParseError::TrailingData {
            what: "payload chain",
        });
    }
    Ok(out)
}

/// Emit a payload chain; returns the type of the first payload (for the header or the
/// enclosing SK payload's Next Payload field).
pub fn emit_chain(payloads: &[Payload], out: &mut Vec<u8>) -> PayloadType {
    for (i, p) in payloads.iter().enumerate() {
        let next = match payloads.get(i + 1) {
            Some(n) => n.ty(),
            None => p.last_next(),
        };
        let start = out.len();
        out.put_u8(next.0);
        out.put_u8(0);
        out.put_u16(0);
        p.emit_body(out);
        let len = out.len() - start;
        out.patch_u16(start + 2, len);
    }
    payloads
        .first()
        .map(Payload::ty)
        .unwrap_or(PayloadType::NONE)
}
