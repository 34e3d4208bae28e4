//! Mobile IPv4 (RFC 5944) protocol core, sans-IO.
//!
//! This crate contains no networking code and never reads the clock: every
//! time-dependent call takes `now` (monotonic) and, where the protocol needs
//! it, the wall-clock time as an argument. Outputs (datagrams to send, events
//! for the I/O shell, the next deadline) are drained with `poll_*` calls.

pub mod auth;
pub mod client;
pub mod ha;
pub mod replay;
pub mod timer;
pub mod wire;
