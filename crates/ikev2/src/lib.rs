//! Sans-IO IKEv2 (RFC 7296).
//!
//! This crate contains no networking code and reads no clock: time comes in as
//! `now: std::time::Instant` arguments, randomness from a caller-provided seed, datagrams
//! through `handle_datagram` and out through `poll_transmit`.

pub mod crypto;
pub mod wire;
