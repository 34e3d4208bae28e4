//! Mobile IPv4 wire formats: parse and emit, never panicking on any input.
//!
//! * [`registration`]: Registration Request (type 1) and Reply (type 3) of RFC 5944
//!   section 3.3/3.4, with flags and reply codes as open code points.
//! * [`extension`]: the extensions that follow them (authentication, NAI, RFC 3024,
//!   RFC 3519, RFC 5265 TNC), with a TLV iterator that keeps each extension's offset so
//!   authenticators can be checked over the exact octets received.
//! * [`agent`]: ICMP Agent Advertisement and Solicitation (RFC 5944 section 2).
//! * [`tunnel`]: the RFC 3519 Tunnel Data message (type 4).
//!
//! Parsers return [`Error`] (shared with the `wire` crate: layer and field) for input
//! they cannot accept. Emitters append to a `Vec<u8>` and never fail.

pub mod agent;
pub mod extension;
pub mod registration;
pub mod tunnel;

pub use ::wire::Error;
pub use extension::{Extension, ExtensionIter, ExtensionRef, ExtensionType};
pub use registration::{Flags, RegistrationReply, RegistrationRequest, ReplyCode};

/// UDP port of Mobile IP registration (RFC 5944) and of RFC 3519 tunnel data.
pub const MIP_PORT: u16 = 434;

/// The Mobile IP message type, the first octet of every UDP 434 payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageType(pub u8);

impl MessageType {
    pub const REGISTRATION_REQUEST: MessageType = MessageType(1);
    pub const REGISTRATION_REPLY: MessageType = MessageType(3);
    /// RFC 3519 Tunnel Data message.
    pub const TUNNEL_DATA: MessageType = MessageType(4);

    /// The type of the message in `payload`, if it has one octet.
    pub fn of(payload: &[u8]) -> Option<MessageType> {
        payload.first().map(|t| MessageType(*t))
    }
}
