//! Agent discovery (RFC 5944 section 2): the ICMP Router Advertisement (RFC 1256)
//! with the Mobility Agent Advertisement extension (16), the Prefix-Lengths
//! extension (19) and one-octet padding; and the Agent Solicitation.
//!
//! These are ICMP messages: the functions here handle the ICMP part (from the ICMP
//! type octet on), checksum included.

use super::Error;
use ::wire::reader::Reader;
use std::net::Ipv4Addr;

pub const ICMP_ROUTER_ADVERTISEMENT: u8 = 9;
pub const ICMP_ROUTER_SOLICITATION: u8 = 10;
/// Router Advertisement code of a mobility agent that does not route common traffic.
pub const CODE_NOT_ROUTING_COMMON_TRAFFIC: u8 = 16;

pub const EXT_MOBILITY_AGENT: u8 = 16;
pub const EXT_PREFIX_LENGTHS: u8 = 19;
pub const EXT_PAD: u8 = 0;

const L: &str = "agent advertisement";

/// Flags of the Mobility Agent Advertisement extension (16 bits: R B H F M G r T U X I).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct AgentFlags(pub u16);

impl AgentFlags {
    /// Registration required (co-located care-of addresses not allowed).
    pub const R: AgentFlags = AgentFlags(0x8000);
    /// Busy.
    pub const B: AgentFlags = AgentFlags(0x4000);
    /// Home agent.
    pub const H: AgentFlags = AgentFlags(0x2000);
    /// Foreign agent.
    pub const F: AgentFlags = AgentFlags(0x1000);
    /// Minimal encapsulation.
    pub const M: AgentFlags = AgentFlags(0x0800);
    /// GRE encapsulation.
    pub const G: AgentFlags = AgentFlags(0x0400);
    /// Reverse tunneling supported (RFC 3024).
    pub const T: AgentFlags = AgentFlags(0x0100);
    /// UDP tunneling supported (RFC 3519).
    pub const U: AgentFlags = AgentFlags(0x0080);
    /// Registration revocation supported (RFC 3543).
    pub const X: AgentFlags = AgentFlags(0x0040);
    /// Foreign agent supports regional registration (RFC 4857).
    pub const I: AgentFlags = AgentFlags(0x0020);

    pub const fn contains(self, o: AgentFlags) -> bool {
        self.0 & o.0 == o.0
    }
}

impl std::ops::BitOr for AgentFlags {
    type Output = AgentFlags;
    fn bitor(self, rhs: AgentFlags) -> AgentFlags {
        AgentFlags(self.0 | rhs.0)
    }
}

/// A router address with its preference (RFC 1256).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouterEntry {
    pub addr: Ipv4Addr,
    pub preference: i32,
}

/// The Mobility Agent Advertisement extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MobilityAgentExt {
    pub sequence: u16,
    /// Longest lifetime (seconds) the agent accepts in a Registration Request; 0xffff = infinite.
    pub registration_lifetime: u16,
    pub flags: AgentFlags,
    pub care_of: Vec<Ipv4Addr>,
}

/// An Agent Advertisement: ICMP Router Advertisement plus extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentAdvertisement {
    /// 0, or 16 when the agent does not route common traffic.
    pub code: u8,
    /// Seconds the advertisement is valid.
    pub lifetime: u16,
    pub routers: Vec<RouterEntry>,
    pub mobility: MobilityAgentExt,
    /// Prefix lengths of the router addresses (extension 19), if present.
    pub prefix_lengths: Option<Vec<u8>>,
    /// Number of one-octet pads after the extensions.
    pub padding: usize,
}

fn malformed(field: &'static str) -> Error {
    Error::Malformed { layer: L, field }
}

impl AgentAdvertisement {
    /// Parses an ICMP message (from the type octet) and verifies its checksum.
    pub fn parse(icmp: &[u8]) -> Result<Self, Error> {
        ::wire::need(L, icmp, 8)?;
        let mut r = Reader::new(icmp);
        if r.u8(L)? != ICMP_ROUTER_ADVERTISEMENT {
            return Err(malformed("ICMP type"));
        }
        if ::wire::checksum::checksum(icmp) != 0 {
            return Err(malformed("ICMP checksum"));
        }
        let code = r.u8(L)?;
        r.skip(2, L)?; // checksum
        let num = usize::from(r.u8(L)?);
        let entry_size = usize::from(r.u8(L)?);
        if entry_size < 2 {
            return Err(malformed("address entry size"));
        }
        let lifetime = r.u16(L)?;
        let mut routers = Vec::with_capacity(num);
        for _ in 0..num {
            // An entry is `entry_size` 32-bit words; only the first two are defined.
            let mut e = r.sub(entry_size * 4, L)?;
            routers.push(RouterEntry {
                addr: e.ipv4(L)?,
                preference: i32::from_be_bytes(e.array(L)?),
            });
        }
        let mut mobility = None;
        let mut prefix_lengths = None;
        let mut padding = 0;
        while !r.is_empty() {
            let ty = r.u8(L)?;
            if ty == EXT_PAD {
                padding += 1;
                continue;
            }
            let len = usize::from(r.u8(L)?);
            let mut d = r.sub(len, L)?;
            match ty {
                EXT_MOBILITY_AGENT => {
                    if len < 6 || (len - 6) % 4 != 0 {
                        return Err(malformed("mobility agent extension length"));
                    }
                    mobility = Some(MobilityAgentExt {
                        sequence: d.u16(L)?,
                        registration_lifetime: d.u16(L)?,
                        flags: AgentFlags(d.u16(L)?),
                        care_of: (0..(len - 6) / 4)
                            .map(|_| d.ipv4(L))
                            .collect::<Result<_, _>>()?,
                    });
                }
                EXT_PREFIX_LENGTHS => {
                    let d = d.rest();
                    if d.iter().any(|&p| p > 32) {
                        return Err(malformed("prefix length"));
                    }
                    prefix_lengths = Some(d.to_vec());
                }
                // Other extensions (e.g. RFC 4721 challenge) are skipped.
                _ => {}
            }
        }
        let mobility = mobility.ok_or(malformed("missing mobility agent extension"))?;
        Ok(AgentAdvertisement {
            code,
            lifetime,
            routers,
            mobility,
            prefix_lengths,
            padding,
        })
    }

    /// `Err(TooLong)` if a list does not fit its count or length octet: at most
    /// 255 router entries, 62 care-of addresses, 255 prefix lengths.
    pub fn check_lengths(&self) -> Result<(), Error> {
        ::wire::fits(L, "router entries", self.routers.len(), 255)?;
        ::wire::fits(L, "care-of addresses", self.mobility.care_of.len(), 62)?;
        let prefixes = self.prefix_lengths.as_ref().map_or(0, Vec::len);
        ::wire::fits(L, "prefix lengths", prefixes, 255)
    }

    /// Like [`emit`](Self::emit), but returns `Err(TooLong)` and appends nothing
    /// where `emit` would drop entries to fit a count or length octet.
    pub fn try_emit(&self, out: &mut Vec<u8>) -> Result<(), Error> {
        self.check_lengths()?;
        self.emit(out);
        Ok(())
    }

    /// Appends the ICMP message with its checksum. Lists longer than their count
    /// or length octet allows are cut to fit; [`try_emit`](Self::try_emit) errs.
    pub fn emit(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[ICMP_ROUTER_ADVERTISEMENT, self.code, 0, 0]);
        out.push(self.routers.len().min(255) as u8);
        out.push(2);
        out.extend_from_slice(&self.lifetime.to_be_bytes());
        for r in self.routers.iter().take(255) {
            out.extend_from_slice(&r.addr.octets());
            out.extend_from_slice(&r.preference.to_be_bytes());
        }
        let m = &self.mobility;
        let coas = &m.care_of[..m.care_of.len().min(62)];
        out.push(EXT_MOBILITY_AGENT);
        out.push((6 + 4 * coas.len()) as u8);
        out.extend_from_slice(&m.sequence.to_be_bytes());
        out.extend_from_slice(&m.registration_lifetime.to_be_bytes());
        out.extend_from_slice(&m.flags.0.to_be_bytes());
        for c in coas {
            out.extend_from_slice(&c.octets());
        }
        if let Some(p) = &self.prefix_lengths {
            let p = &p[..p.len().min(255)];
            out.push(EXT_PREFIX_LENGTHS);
            out.push(p.len() as u8);
            out.extend_from_slice(p);
        }
        out.extend(std::iter::repeat_n(EXT_PAD, self.padding));
        let c = ::wire::checksum::checksum(&out[start..]);
        out[start + 2..start + 4].copy_from_slice(&c.to_be_bytes());
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.emit(&mut v);
        v
    }
}

/// An Agent Solicitation (ICMP Router Solicitation, RFC 1256).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AgentSolicitation;

impl AgentSolicitation {
    pub fn parse(icmp: &[u8]) -> Result<Self, Error> {
        ::wire::need("agent solicitation", icmp, 8)?;
        if icmp.get(..2) != Some(&[ICMP_ROUTER_SOLICITATION, 0][..]) {
            return Err(Error::Malformed {
                layer: "agent solicitation",
                field: "ICMP type or code",
            });
        }
        if ::wire::checksum::checksum(icmp) != 0 {
            return Err(Error::Malformed {
                layer: "agent solicitation",
                field: "ICMP checksum",
            });
        }
        Ok(AgentSolicitation)
    }

    pub fn emit(&self, out: &mut Vec<u8>) {
        let mut m = [ICMP_ROUTER_SOLICITATION, 0, 0, 0, 0, 0, 0, 0];
        let c = ::wire::checksum::checksum(&m);
        m[2..4].copy_from_slice(&c.to_be_bytes());
        out.extend_from_slice(&m);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> AgentAdvertisement {
        AgentAdvertisement {
            code: 0,
            lifetime: 9000,
            routers: vec![RouterEntry {
                addr: Ipv4Addr::new(10, 30, 0, 1),
                preference: 0,
            }],
            mobility: MobilityAgentExt {
                sequence: 7,
                registration_lifetime: 1800,
                flags: AgentFlags::F | AgentFlags::T | AgentFlags::U,
                care_of: vec![Ipv4Addr::new(10, 30, 0, 1)],
            },
            prefix_lengths: Some(vec![24]),
            padding: 1,
        }
    }

    #[test]
    fn round_trip_and_checksum() {
        let a = sample();
        let b = a.to_bytes();
        assert_eq!(::wire::checksum::checksum(&b), 0);
        assert_eq!(AgentAdvertisement::parse(&b).unwrap(), a);
        for n in 0..b.len() {
            let _ = AgentAdvertisement::parse(&b[..n]);
        }
        let mut bad = b.clone();
        bad[9] ^= 1;
        assert!(AgentAdvertisement::parse(&bad).is_err());
    }

    #[test]
    fn oversize_lists_are_an_error_on_try_emit() {
        let mut a = sample();
        a.mobility.care_of = vec![Ipv4Addr::new(10, 30, 0, 1); 62];
        let mut b = Vec::new();
        assert_eq!(a.try_emit(&mut b), Ok(()));
        assert_eq!(
            AgentAdvertisement::parse(&b).map(|p| p.mobility.care_of.len()),
            Ok(62)
        );
        a.mobility.care_of.push(Ipv4Addr::new(10, 30, 0, 2));
        let mut b = Vec::new();
        assert!(matches!(
            a.try_emit(&mut b),
            Err(Error::TooLong {
                len: 63,
                max: 62,
                ..
            })
        ));
        assert!(b.is_empty());
        let mut a = sample();
        a.routers = vec![a.routers[0]; 256];
        assert!(matches!(
            a.try_emit(&mut b),
            Err(Error::TooLong {
                len: 256,
                max: 255,
                ..
            })
        ));
        let mut a = sample();
        a.prefix_lengths = Some(vec![24; 256]);
        assert!(a.try_emit(&mut b).is_err());
        assert!(b.is_empty());
    }

    #[test]
    fn solicitation_round_trip() {
        let mut b = Vec::new();
        AgentSolicitation.emit(&mut b);
        assert_eq!(b.len(), 8);
        assert!(AgentSolicitation::parse(&b).is_ok());
    }
}
