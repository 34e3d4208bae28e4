//! Shared packet formats for every mipsec layer: the Internet checksum, IPv4 and UDP
//! (each a checked zero-copy view, read and written in place, and an owned header
//! struct), a bounded
//! [`reader::Reader`] that every parser uses for untrusted bytes, and a pcap writer
//! used by tests and the lab to feed captures to independent dissectors (tshark).
//! ICMP echo ([`icmp::Echo`]) is here; the agent advertisements and solicitations
//! (ICMP too) are parsed in `mip4::wire::agent`.
//!
//! Sans-IO: no sockets, no clock. Every parser checks every length and returns a
//! [`Error`] instead of panicking, whatever the input.

#![forbid(unsafe_code)]

pub mod checksum;
pub mod icmp;
pub mod ipv4;
pub mod pcap;
pub mod reader;
pub mod reassembly;
pub mod udp;

/// Why a packet could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Fewer bytes than the format needs.
    #[error("{layer}: truncated, need {need} octets, have {have}")]
    Truncated {
        layer: &'static str,
        need: usize,
        have: usize,
    },
    /// A field holds a value the format forbids.
    #[error("{layer}: malformed {field}")]
    Malformed {
        layer: &'static str,
        field: &'static str,
    },
    /// On emit: `len` octets do not fit a length field whose maximum is `max`.
    #[error("{layer}: {field} of {len} octets exceeds the maximum {max}")]
    TooLong {
        layer: &'static str,
        field: &'static str,
        len: usize,
        max: usize,
    },
}

/// Returns `Err(TooLong)` unless `len <= max` (checked emitters use it instead of
/// capping a length field).
#[inline]
pub fn fits(layer: &'static str, field: &'static str, len: usize, max: usize) -> Result<(), Error> {
    if len > max {
        Err(Error::TooLong {
            layer,
            field,
            len,
            max,
        })
    } else {
        Ok(())
    }
}

/// Returns `Err(Truncated)` unless `buf` holds at least `need` octets.
#[inline]
pub fn need(layer: &'static str, buf: &[u8], need: usize) -> Result<(), Error> {
    if buf.len() < need {
        Err(Error::Truncated {
            layer,
            need,
            have: buf.len(),
        })
    } else {
        Ok(())
    }
}
