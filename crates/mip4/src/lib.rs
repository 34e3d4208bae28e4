//! Mobile IPv4 (RFC 5944) protocol core, sans-IO.
//!
//! This crate contains no networking code and never reads the clock: every
//! time-dependent call takes `now` (monotonic) and, where the protocol needs
//! it, the wall-clock time as an argument. Outputs (datagrams to send, events
//! for the I/O shell, the next deadline) are drained with `poll_*` calls:
//!
//! ```text
//! loop {
//!     core.handle_datagram(now, wall, from, to, bytes)   // or handle_timeout(now, wall)
//!     while let Some(t) = core.poll_transmit() { send(t) }
//!     while let Some(e) = core.poll_event() { apply(e) }  // routes, tunnels, logs
//!     arm_timer(core.poll_timeout())
//! }
//! ```
//!
//! * [`wire`]: message formats; [`auth`]: authenticators; [`replay`]: Identification.
//! * [`ha`]: the home agent's registration processing and binding table.
//! * [`fa`]: the foreign agent's advertisements, relay and visitor list.
//! * [`client`]: the mobile node's registration client.

#![forbid(unsafe_code)]

pub mod auth;
pub mod client;
pub mod expiry;
pub mod fa;
pub mod ha;
pub mod net;
pub mod replay;
pub mod trailer;
pub mod wire;

pub use net::Ipv4Net;

use std::net::SocketAddrV4;

/// A datagram for the I/O shell to send over UDP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Local address and port to send from.
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    pub payload: Vec<u8>,
}
