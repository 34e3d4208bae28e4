//! Sans-IO ESP (RFC 4303) in tunnel mode, with UDP encapsulation (RFC 3948).
//!
//! This crate contains no networking code, reads no clock and draws no randomness of its
//! own: time is passed in as `now: Instant`, CBC IVs come from a caller-provided
//! [`IvSource`], and every buffer belongs to the caller.
//!
//! - [`OutboundSa::seal`] turns an inner packet into an ESP packet (header, IV, encrypted
//!   payload, padding 1, 2, 3, ..., pad length, next header, ICV).
//! - [`InboundSa::open`] (or [`Sad::open`] to look the SPI up) checks the replay window,
//!   verifies the ICV, then commits the window, checks the padding and returns where the
//!   inner packet lies; it decrypts in place.
//! - [`udp_encap::classify`] tells NAT-keepalives, IKE (non-ESP marker) and ESP apart on
//!   port 4500.
//! - Lifetimes: `poll_timeout` / `handle_timeout(now)` / `poll_event` report
//!   [`SaEvent::SoftExpired`] (rekey) and [`SaEvent::HardExpired`] (refuse and delete).
//!
//! Bad input never panics; it gives an [`EspError`] whose [`DropReason`] is counted.
//!
//! ```
//! use esp::{InboundSa, OutboundSa, SaConfig, Suite};
//! let now = std::time::Instant::now();
//! let keymat = [7u8; 20]; // AES-128 key | 4-octet salt
//! let cfg = SaConfig::new(0x1000, Suite::AesGcm128);
//! let mut tx = OutboundSa::new(cfg, &keymat, &[], now).unwrap();
//! let mut rx = InboundSa::new(cfg, &keymat, &[], now).unwrap();
//! let inner = [0x45u8; 40];
//! let mut pkt = Vec::new();
//! tx.seal(now, esp::NEXT_HEADER_IPV4, &inner, &mut pkt).unwrap();
//! let opened = rx.open(now, &mut pkt).unwrap();
//! assert_eq!(&pkt[opened.payload], &inner[..]);
//! ```

#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::disallowed_methods))]

mod error;
mod lifetime;
pub mod replay;
mod sa;
mod sad;
pub mod suite;
pub mod udp_encap;
pub mod wire;

pub use error::{ConfigError, DropCounters, DropReason, EspError};
pub use lifetime::{Direction, Lifetime, SaEvent, Trigger};
pub use replay::ReplayWindow;
pub use sa::{InboundSa, IvSource, Opened, OutboundSa, RandomIv, SaConfig, SaStats, SeqIv};
pub use sad::{Sad, UdpInbound};
pub use suite::{Suite, Transform};
pub use wire::{EspHeader, NEXT_HEADER_IPV4, NEXT_HEADER_IPV6, NEXT_HEADER_NO_NEXT};

#[cfg(test)]
mod tests;
