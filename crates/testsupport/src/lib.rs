//! Test support for mipsec's root-only labs, shared by the strongSwan interoperability
//! tests of `ikev2` and the `vpnc` lab: running commands (also inside a network namespace),
//! the gateway topology of namespaces and veth pairs under a fresh name prefix, and an
//! unmodified strongSwan charon started in a namespace with a given configuration.
//!
//! Packet and pcap building is not here: tests use `wire` (`wire::pcap::PcapWriter`,
//! `wire::checksum`) for that.
//!
//! Everything reports failure as a `String` naming the command, so a test can `unwrap` it
//! or turn it into its own skip/fail message. A dev-dependency only.
#![forbid(unsafe_op_in_unsafe_fn)]

mod charon;
mod cmd;
mod topo;

pub use charon::{vici_uri, Charon};
pub use cmd::{in_ns, ip_n, is_root, ns_exec, sh, stop};
pub use topo::{fresh_prefix, Inside, Topology};
