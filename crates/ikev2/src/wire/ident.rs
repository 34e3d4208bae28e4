//! Identities written as text, the way strongSwan's `id =` takes them (RFC 7296 3.5):
//!
//! | text | type |
//! |---|---|
//! | `192.0.2.1` | ID_IPV4_ADDR |
//! | `C=XX, O=Example, CN=laptop.example` (any `=`) | ID_DER_ASN1_DN |
//! | `user@example.com` | ID_RFC822_ADDR |
//! | `@#0a1b2c` | ID_KEY_ID (hex octets) |
//! | `@vpn.example` or `vpn.example` | ID_FQDN |
//!
//! A DN is encoded as DER, one RDN per attribute in the order written; values are
//! PrintableString when they fit it, else UTF8String (E and DC: IA5String). Known attribute
//! names: C, ST, L, O, OU, CN, SN, serialNumber, E (emailAddress), DC, UID, T, G, I.

use std::net::Ipv4Addr;

use super::{IdType, Identification};

/// `(name, OID body, IA5String?)`.
const ATTRS: &[(&str, &[u8], bool)] = &[
    ("C", &[0x55, 0x04, 0x06], false),
    ("ST", &[0x55, 0x04, 0x08], false),
    ("S", &[0x55, 0x04, 0x08], false),
    ("L", &[0x55, 0x04, 0x07], false),
    ("O", &[0x55, 0x04, 0x0a], false),
    ("OU", &[0x55, 0x04, 0x0b], false),
    ("CN", &[0x55, 0x04, 0x03], false),
    ("SN", &[0x55, 0x04, 0x04], false),
    ("SERIALNUMBER", &[0x55, 0x04, 0x05], false),
    ("T", &[0x55, 0x04, 0x0c], false),
    ("G", &[0x55, 0x04, 0x2a], false),
    ("I", &[0x55, 0x04, 0x2b], false),
    (
        "E",
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01],
        true,
    ),
    (
        "EMAILADDRESS",
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01],
        true,
    ),
    (
        "DC",
        &[0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x19],
        true,
    ),
    (
        "UID",
        &[0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x01],
        false,
    ),
];

/// DER tag-length-value.
pub(crate) fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    let n = body.len();
    if n < 0x80 {
        v.push(n as u8);
    } else if n < 0x100 {
        v.extend_from_slice(&[0x81, n as u8]);
    } else {
        v.extend_from_slice(&[0x82, (n >> 8) as u8, n as u8]);
    }
    v.extend_from_slice(body);
    v
}

fn printable(s: &str) -> bool {
    s.chars()
        .all(|c| c.is_ascii_alphanumeric() || " '()+,-./:=?".contains(c))
}

/// Split at unescaped `sep` (`\,` keeps a comma inside a value).
fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut esc = false;
    for c in s.chars() {
        match c {
            '\\' if !esc => esc = true,
            c if c == sep && !esc => out.push(String::new()),
            c => {
                esc = false;
                if let Some(last) = out.last_mut() {
                    last.push(c);
                }
            }
        }
    }
    out
}

/// `C=XX, O=Example, CN=laptop.example` as a DER Name.
pub fn dn_from_str(s: &str) -> Result<Vec<u8>, String> {
    let sep = if s.contains(',') { ',' } else { '/' };
    let mut rdns = Vec::new();
    for part in split_unescaped(s, sep) {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("`{part}` in DN `{s}` is not NAME=value"))?;
        let (k, v) = (k.trim(), v.trim());
        let (_, oid, ia5) = ATTRS
            .iter()
            .find(|(n, _, _)| n.eq_ignore_ascii_case(k))
            .ok_or_else(|| format!("unknown DN attribute `{k}` in `{s}`"))?;
        if v.is_empty() {
            return Err(format!("empty value for `{k}` in DN `{s}`"));
        }
        let value = if *ia5 {
            if !v.is_ascii() {
                return Err(format!("`{k}` must be ASCII in DN `{s}`"));
            }
            tlv(0x16, v.as_bytes())
        } else if printable(v) {
            tlv(0x13, v.as_bytes())
        } else {
            tlv(0x0c, v.as_bytes())
        };
        let mut atv = tlv(0x06, oid);
        atv.extend_from_slice(&value);
        rdns.extend_from_slice(&tlv(0x31, &tlv(0x30, &atv)));
    }
    if rdns.is_empty() {
        return Err(format!("empty DN `{s}`"));
    }
    Ok(tlv(0x30, &rdns))
}

impl Identification {
    /// An identity written as text (see the module documentation).
    pub fn from_text(s: &str) -> Result<Identification, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("empty identity".into());
        }
        if let Ok(a) = s.parse::<Ipv4Addr>() {
            return Ok(Identification::ipv4(a));
        }
        if s.contains('=') {
            return Ok(Identification {
                ty: IdType::DER_ASN1_DN,
                data: dn_from_str(s)?,
            });
        }
        if let Some(h) = s.strip_prefix("@#") {
            let data = hex_octets(h).ok_or_else(|| format!("`{s}`: key ID must be hex"))?;
            return Ok(Identification {
                ty: IdType::KEY_ID,
                data,
            });
        }
        if s.chars().any(char::is_whitespace) || s.len() > 255 {
            return Err(format!(
                "`{s}` is not an IPv4 address, DN, e-mail address, @#keyid or FQDN"
            ));
        }
        if let Some(f) = s.strip_prefix('@') {
            return Ok(Identification::fqdn(f));
        }
        if s.contains('@') {
            return Ok(Identification {
                ty: IdType::RFC822_ADDR,
                data: s.as_bytes().to_vec(),
            });
        }
        Ok(Identification::fqdn(s))
    }
}

impl Identification {
    /// Same identity: equal octets, or for DNs the same attributes and values in the same
    /// order whatever string types encode them (values compared ignoring ASCII case), as
    /// certificates from different tools encode the same DN differently.
    pub fn matches(&self, other: &Identification) -> bool {
        if self == other {
            return true;
        }
        if self.ty != IdType::DER_ASN1_DN || other.ty != IdType::DER_ASN1_DN {
            return false;
        }
        match (dn_parts(&self.data), dn_parts(&other.data)) {
            (Some(a), Some(b)) => {
                a.len() == b.len()
                    && a.iter()
                        .zip(&b)
                        .all(|((o1, v1), (o2, v2))| o1 == o2 && v1.eq_ignore_ascii_case(v2))
            }
            _ => false,
        }
    }
}

/// One DER element: (tag, contents, rest). None when malformed.
fn der(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, b) = b.split_first()?;
    let (&l0, b) = b.split_first()?;
    let (len, b) = match l0 {
        0..=0x7f => (usize::from(l0), b),
        0x81 => (usize::from(*b.first()?), b.get(1..)?),
        0x82 => (
            usize::from(u16::from_be_bytes([*b.first()?, *b.get(1)?])),
            b.get(2..)?,
        ),
        _ => return None,
    };
    Some((tag, b.get(..len)?, b.get(len..)?))
}

/// A DER Name as (OID, value octets) pairs in order.
fn dn_parts(name: &[u8]) -> Option<Vec<(&[u8], &[u8])>> {
    let (0x30, mut rdns, []) = der(name)? else {
        return None;
    };
    let mut out = Vec::new();
    while !rdns.is_empty() {
        let (0x31, mut set, rest) = der(rdns)? else {
            return None;
        };
        rdns = rest;
        while !set.is_empty() {
            let (0x30, atv, rest) = der(set)? else {
                return None;
            };
            set = rest;
            let (0x06, oid, v) = der(atv)? else {
                return None;
            };
            let (_, value, []) = der(v)? else {
                return None;
            };
            out.push((oid, value));
        }
    }
    Some(out)
}

fn hex_octets(h: &str) -> Option<Vec<u8>> {
    if h.is_empty() || h.len() & 1 == 1 {
        return None;
    }
    (0..h.len())
        .step_by(2)
        .map(|i| h.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        let t = |s: &str| Identification::from_text(s).unwrap();
        assert_eq!(
            t("192.0.2.1"),
            Identification::ipv4(Ipv4Addr::new(192, 0, 2, 1))
        );
        assert_eq!(t("vpn.example"), Identification::fqdn("vpn.example"));
        assert_eq!(t("@vpn.example"), Identification::fqdn("vpn.example"));
        assert_eq!(t("alice@example.com").ty, IdType::RFC822_ADDR);
        assert_eq!(t("@#0aFF").data, vec![0x0a, 0xff]);
        assert_eq!(t("@#0aFF").ty, IdType::KEY_ID);
        assert_eq!(t("CN=x").ty, IdType::DER_ASN1_DN);
        assert!(Identification::from_text("@#0g").is_err());
        assert!(Identification::from_text("a b").is_err());
        assert!(Identification::from_text("XX=1").is_err());
    }

    #[test]
    fn dn_encoding() {
        // C=XX, O=Example, CN=laptop.example as openssl/strongSwan's pki encode it.
        let dn = dn_from_str("C=XX, O=Example, CN=laptop.example").unwrap();
        let mut want = vec![0x30, 0x38];
        want.extend_from_slice(&[0x31, 0x0b, 0x30, 0x09, 0x06, 0x03, 0x55, 0x04, 0x06]);
        want.extend_from_slice(&[0x13, 0x02, b'X', b'X']);
        want.extend_from_slice(&[0x31, 0x10, 0x30, 0x0e, 0x06, 0x03, 0x55, 0x04, 0x0a]);
        want.extend_from_slice(&[0x13, 0x07]);
        want.extend_from_slice(b"Example");
        want.extend_from_slice(&[0x31, 0x17, 0x30, 0x15, 0x06, 0x03, 0x55, 0x04, 0x03]);
        want.extend_from_slice(&[0x13, 0x0e]);
        want.extend_from_slice(b"laptop.example");
        assert_eq!(dn, want);
        assert_eq!(
            dn_from_str("/C=XX/O=Example/CN=laptop.example").unwrap(),
            want
        );
        // Non-printable characters go to UTF8String; escaped commas stay in the value.
        let u = dn_from_str("CN=Zoë").unwrap();
        assert_eq!(u[u.len() - 6], 0x0c);
        let e = dn_from_str(r"O=A\, B, CN=c").unwrap();
        assert!(e.windows(4).any(|w| w == b"A, B"));
    }

    #[test]
    fn dn_match_ignores_string_type_and_case() {
        let a = Identification::from_text("C=XX, O=Example, CN=gw.example").unwrap();
        // The same DN with UTF8String values (as openssl writes them).
        let mut utf8 = a.clone();
        for i in 0..utf8.data.len().saturating_sub(1) {
            if utf8.data[i] == 0x13 && utf8.data[i - 5] == 0x06 && utf8.data[i - 4] == 3 {
                utf8.data[i] = 0x0c;
            }
        }
        assert_ne!(a, utf8);
        assert!(a.matches(&utf8));
        assert!(a.matches(&Identification::from_text("c=xx, o=example, cn=GW.example").unwrap()));
        assert!(!a.matches(&Identification::from_text("C=XX, O=Example, CN=other").unwrap()));
        assert!(!a.matches(&Identification::from_text("C=XX, CN=gw.example").unwrap()));
        let junk = Identification {
            ty: IdType::DER_ASN1_DN,
            data: vec![0x30, 0x05, 0x31, 0x09],
        };
        assert!(!a.matches(&junk));
    }
}
