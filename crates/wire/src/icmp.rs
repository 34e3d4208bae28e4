//! ICMP echo request and reply (RFC 792), which the mobile node uses to ask its home
//! agent whether it still holds the binding. The agent discovery messages are ICMP
//! too; they are parsed in `mip4::wire::agent`.

use crate::{checksum, need, Error};

/// ICMP type of an echo reply.
pub const ECHO_REPLY: u8 = 0;
/// ICMP type of an echo request.
pub const ECHO_REQUEST: u8 = 8;

/// An echo request or reply, borrowing its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Echo<'a> {
    /// True for a request (type 8), false for a reply (type 0).
    pub request: bool,
    pub ident: u16,
    pub seq: u16,
    pub data: &'a [u8],
}

impl<'a> Echo<'a> {
    /// Parses an ICMP message (the IPv4 payload) as an echo request or reply, checking
    /// its length, code and checksum. Any other type is `Malformed { field: "type" }`.
    pub fn parse(buf: &'a [u8]) -> Result<Self, Error> {
        const L: &str = "icmp";
        need(L, buf, 8)?;
        let request = match buf[0] {
            ECHO_REQUEST => true,
            ECHO_REPLY => false,
            _ => {
                return Err(Error::Malformed {
                    layer: L,
                    field: "type",
                })
            }
        };
        if buf[1] != 0 {
            return Err(Error::Malformed {
                layer: L,
                field: "code",
            });
        }
        if checksum::checksum(buf) != 0 {
            return Err(Error::Malformed {
                layer: L,
                field: "checksum",
            });
        }
        Ok(Echo {
            request,
            ident: u16::from_be_bytes([buf[4], buf[5]]),
            seq: u16::from_be_bytes([buf[6], buf[7]]),
            data: &buf[8..],
        })
    }

    /// The message with its checksum.
    pub fn emit(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + self.data.len());
        out.push(if self.request {
            ECHO_REQUEST
        } else {
            ECHO_REPLY
        });
        out.extend_from_slice(&[0, 0, 0]);
        out.extend_from_slice(&self.ident.to_be_bytes());
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(self.data);
        let c = checksum::checksum(&out);
        out[2..4].copy_from_slice(&c.to_be_bytes());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_round_trip_and_rfc792_layout() {
        let e = Echo {
            request: true,
            ident: 0x6d69,
            seq: 7,
            data: b"ab",
        };
        let b = e.emit();
        assert_eq!(&b[..2], &[8, 0]);
        assert_eq!(&b[4..8], &[0x6d, 0x69, 0, 7]);
        assert_eq!(checksum::checksum(&b), 0);
        assert_eq!(Echo::parse(&b), Ok(e));
        // The reply the peer makes of it: type 0, checksum adjusted.
        let r = Echo {
            request: false,
            ..e
        }
        .emit();
        assert_eq!(Echo::parse(&r).map(|x| x.request), Ok(false));
    }

    #[test]
    fn refuses_what_is_not_a_well_formed_echo() {
        let b = Echo {
            request: false,
            ident: 1,
            seq: 2,
            data: &[],
        }
        .emit();
        for n in 0..b.len() {
            assert!(Echo::parse(&b[..n]).is_err(), "{n} octets");
        }
        let mut bad = b.clone();
        bad[7] ^= 1;
        assert!(Echo::parse(&bad).is_err(), "checksum");
        let mut bad = b.clone();
        bad[1] = 1;
        assert!(Echo::parse(&bad).is_err(), "code");
        let mut adv = b;
        adv[0] = 9; // a router advertisement
        assert!(Echo::parse(&adv).is_err(), "type");
    }
}
