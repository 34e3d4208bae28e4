//! IKEv2 wire formats (RFC 7296 section 3, RFC 7383 section 2.5).
//!
//! Parsing never panics: every length is checked and bad input yields a [`ParseError`].
//! [`Message::parse`] handles the clear part; the SK/SKF payload bodies are opened by
//! [`crate::crypto::sk`].

pub mod codec;
pub mod codes;
pub mod ident;
pub mod payload;

pub use codes::*;
pub use payload::*;

use codec::{Reader, Writer};

/// Fixed IKE header length.
pub const HEADER_LEN: usize = 28;

/// Header flag: sender is the original initiator.
pub const FLAG_INITIATOR: u8 = 0x08;
/// Header flag: higher version supported.
pub const FLAG_VERSION: u8 = 0x10;
/// Header flag: this message is a response.
pub const FLAG_RESPONSE: u8 = 0x20;

/// Why a message could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("truncated {what}: need {need} octets, have {have}")]
    Truncated {
        what: &'static str,
        need: usize,
        have: usize,
    },
    #[error("bad length in {what}")]
    BadLength { what: &'static str },
    #[error("bad value in {what}")]
    BadValue { what: &'static str },
    #[error("trailing data after {what}")]
    TrailingData { what: &'static str },
    #[error("unsupported IKE major version {0}")]
    BadVersion(u8),
    #[error("unsupported critical payload {0}")]
    UnsupportedCritical(PayloadType),
}

impl ParseError {
    /// The notify a responder sends for this error (RFC 7296 2.5 / 3.10.1).
    pub fn notify_type(&self) -> NotifyType {
        match self {
            ParseError::UnsupportedCritical(_) => NotifyType::UNSUPPORTED_CRITICAL_PAYLOAD,
            ParseError::BadVersion(_) => NotifyType::INVALID_MAJOR_VERSION,
            _ => NotifyType::INVALID_SYNTAX,
        }
    }
}

/// The fixed IKE header (RFC 7296 3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub spi_i: u64,
    pub spi_r: u64,
    pub next_payload: PayloadType,
    /// Major version in the high nibble, minor in the low nibble (0x20 for IKEv2).
    pub version: u8,
    pub exchange: ExchangeType,
    pub flags: u8,
    pub message_id: u32,
    pub length: u32,
}

impl Header {
    pub fn is_response(&self) -> bool {
        self.flags & FLAG_RESPONSE != 0
    }
    pub fn is_initiator(&self) -> bool {
        self.flags & FLAG_INITIATOR != 0
    }

    /// Parse the header. Checks the major version and that `length` matches `buf.len()`.
    pub fn parse(buf: &[u8]) -> Result<Header, ParseError> {
        let mut r = Reader::new(buf);
        let h = Header {
            spi_i: r.u64("IKE SPIi")?,
            spi_r: r.u64("IKE SPIr")?,
            next_payload: PayloadType(r.u8("next payload")?),
            version: r.u8("version")?,
            exchange: ExchangeType(r.u8("exchange type")?),
            flags: r.u8("flags")?,
            message_id: r.u32("message id")?,
            length: r.u32("length")?,
        };
        if h.version >> 4 != 2 {
            return Err(ParseError::BadVersion(h.version >> 4));
        }
        if usize::try_from(h.length).ok() != Some(buf.len()) {
            return Err(ParseError::BadLength { what: "IKE header" });
        }
        Ok(h)
    }

    pub fn emit(&self, out: &mut Vec<u8>) {
        out.put_u64(self.spi_i);
        out.put_u64(self.spi_r);
        out.put_u8(self.next_payload.0);
        out.put_u8(self.version);
        out.put_u8(self.exchange.0);
        out.put_u8(self.flags);
        out.put_u32(self.message_id);
        out.put_u32(self.length);
    }
}

/// A whole IKE message with its clear payload chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub header: Header,
    pub payloads: Vec<Payload>,
}

impl Message {
    /// Parse a message (the UDP payload without any non-ESP marker).
    pub fn parse(buf: &[u8]) -> Result<Message, ParseError> {
        let header = Header::parse(buf)?;
        let body = buf.get(HEADER_LEN..).unwrap_or(&[]);
        let payloads = parse_chain(header.next_payload, body)?;
        Ok(Message { header, payloads })
    }

    /// Emit; `next_payload` and `length` in the header are recomputed.
    pub fn emit(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        let mut h = self.header;
        h.emit(&mut out);
        let first = emit_chain(&self.payloads, &mut out);
        h.next_payload = first;
        h.length = u32::try_from(out.len()).unwrap_or(u32::MAX);
        let mut hb = Vec::with_capacity(HEADER_LEN);
        h.emit(&mut hb);
        if let Some(s) = out.get_mut(..HEADER_LEN) {
            s.copy_from_slice(&hb);
        }
        out
    }

    /// Notifies in this message, in order.
    pub fn notifies(&self) -> impl Iterator<Item = &Notify> {
        self.payloads.iter().filter_map(|p| match p {
            Payload::Notify(n) => Some(n),
            _ => None,
        })
    }

    pub fn notify(&self, ty: NotifyType) -> Option<&Notify> {
        self.notifies().find(|n| n.ty == ty)
    }
}

/// Find the first notify of a type in a payload list.
pub fn find_notify(payloads: &[Payload], ty: NotifyType) -> Option<&Notify> {
    payloads.iter().find_map(|p| match p {
        Payload::Notify(n) if n.ty == ty => Some(n),
        _ => None,
    })
}

#[cfg(test)]
mod tests;
