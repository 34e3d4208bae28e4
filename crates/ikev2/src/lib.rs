//! Sans-IO IKEv2 (RFC 7296) with NAT traversal, MOBIKE (RFC 4555) and IKE fragmentation
//! (RFC 7383).
//!
//! This crate contains no networking code and reads no clock: time comes in as
//! `now: std::time::Instant` arguments, randomness from a caller-provided seed (except the
//! ephemeral X25519/P-256 keys, which ring draws from the OS), datagrams through
//! `handle_datagram` and leave through `poll_transmit`. See [`Initiator`] and [`Responder`].

#![forbid(unsafe_code)]

pub mod config;
pub mod crypto;
mod endpoint;
pub mod event;
mod sa;
pub mod wire;

pub use config::{Config, EspProposal, IkeProposal, Retransmit};
pub use endpoint::{Initiator, Responder};
pub use event::{ChildSaInfo, Event, IkeError, Stats, Transmit};
