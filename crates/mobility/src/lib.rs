//! The RFC 5265 mobile node's decision engine, sans-IO.
//!
//! This crate contains no networking code and never reads the clock: every
//! input carries `now` (monotonic) and `wall` (for the Mobile IP
//! Identification). It decides, per network interface, whether the interface
//! is inside the enterprise (proven by an i-HA reply with the Trusted Networks
//! Configured extension, MN-4) or outside (x-MIP + VPN, or MOBIKE), and keeps a
//! fail-closed data gate per interface.
//!
//! Drive loop for a shell (see the README for the full contract):
//!
//! ```text
//! loop {
//!     node.handle_link / handle_advertisement / handle_datagram / handle_vpn / handle_timeout
//!     while let Some(t) = node.poll_transmit() { send t.payload on t.iface, plain or through the VPN }
//!     while let Some(a) = node.poll_action()   { start IKE, MOBIKE update, stop VPN, flush queue }
//!     while let Some(e) = node.poll_event()    { gate changes: routes, logs, status }
//!     arm one timer at node.poll_timeout()
//!     per user packet: match node.gate(iface, now) { OpenInside => plain, OpenViaVpn => VPN, Queued => queue, Closed => drop }
//! }
//! ```
//!
//! [`MobileNode::gate`] is computed from `now` at every call, so a shell that
//! asks per packet can never send on an expired T_MONITOR, even when its timer
//! fires late.

#![forbid(unsafe_code)]

mod config;
mod detect;
mod iface;
mod node;
mod proof;

#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;

pub use config::{Config, ConfigError, Outside};
pub use node::{MobileNode, Stats};

/// One of an interface's three Mobile IP registration layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Layer {
    /// The plaintext registration with the i-HA (inside: h, c, f).
    IhaDirect,
    /// The registration with the x-HA (outside, x-MIP flavour: the outer layer).
    Xha,
    /// The registration of the TIA with the i-HA through the VPN (outside: the
    /// inner layer).
    IhaViaVpn,
}

/// How a home agent tunnels to us, as granted in its registration reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tunnel {
    /// IP-in-IP (no UDP Tunnel Reply extension, or not "will tunnel").
    IpInIp,
    /// RFC 3519 UDP tunnelling on port 434; send keepalives every `keepalive`
    /// seconds (the interval the home agent asked for).
    Udp { keepalive: u16 },
}
pub use proof::TncProof;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Instant;

/// A network interface, as the shell numbers them (e.g. the ifindex).
pub type IfaceId = u32;

/// What happened on an interface's link. Every variant except
/// [`LinkEvent::DhcpHints`] is a connection status change (MN-3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    CarrierUp,
    CarrierDown,
    AddressAdded(Ipv4Addr),
    AddressRemoved(Ipv4Addr),
    /// The default gateway (address, MAC) changed, or went away.
    DefaultGateway(Option<(Ipv4Addr, [u8; 6])>),
    /// MN-8: hints only; never a proof, never a status change.
    DhcpHints {
        domain: Option<String>,
        gateway_mac: Option<[u8; 6]>,
    },
}

/// A foreign agent advertisement heard on an interface (parsed by the shell).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advertisement {
    pub agent: Ipv4Addr,
    pub care_of: Ipv4Addr,
    /// Advertisement lifetime, seconds.
    pub lifetime: u16,
    /// The agent's advertisement sequence number (RFC 5944 section 2.1.1): a
    /// number below 256 after a higher one means the agent rebooted and lost its
    /// visitor list (section 3.6.1.2).
    pub sequence: u16,
    /// A foreign agent NAI, if present: a hint only (MN-8).
    pub nai: Option<String>,
}

/// The VPN (IKE) layer, as reported by the shell that runs the IKE initiator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VpnEvent {
    /// IKE and the first CHILD_SA are up; `tia` is the tunnel inner address.
    Up {
        tia: Ipv4Addr,
    },
    Down,
    /// The MOBIKE UPDATE_SA_ADDRESSES exchange ended.
    MobikeAnswered {
        ok: bool,
    },
}

/// Where a registration datagram arrived from, or must leave by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Via {
    /// Plaintext on a socket bound to the physical interface (MN-6: policy
    /// routing must not be able to divert it into the VPN or another interface).
    Plain,
    /// Inside the interface's VPN tunnel.
    Vpn,
}

/// A registration datagram for the shell to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub iface: IfaceId,
    pub via: Via,
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    pub payload: Vec<u8>,
}

/// Commands for the shell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start IKE to the VPN gateway from `local` (the x-home address in cvc/fvc,
    /// the interface address in mc), bound to `iface`.
    StartIke { iface: IfaceId, local: Ipv4Addr },
    /// MN-14: send a MOBIKE UPDATE_SA_ADDRESSES from the new address.
    MobikeUpdate { iface: IfaceId, local: Ipv4Addr },
    /// Tear the interface's VPN down (inside proven, x-MIP flavour).
    StopVpn { iface: IfaceId },
    /// MN-5/MN-3: drop whatever the shell queued for this interface.
    FlushQueue { iface: IfaceId },
    /// Install the routes of a new mode on this interface (h, c, f, cvc, fvc, mc).
    /// The gate still decides per packet.
    SetMode { iface: IfaceId, mode: Option<Mode> },
}

/// Access modes (MN-1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Mode {
    H,
    C,
    F,
    Cvc,
    Fvc,
    Mc,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::H => "h",
            Mode::C => "c",
            Mode::F => "f",
            Mode::Cvc => "cvc",
            Mode::Fvc => "fvc",
            Mode::Mc => "mc",
        }
    }

    pub fn is_inside(self) -> bool {
        matches!(self, Mode::H | Mode::C | Mode::F)
    }
}

/// The per-interface data gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Gate {
    Closed,
    /// MN-5: T_MONITOR passed while a re-registration runs; queue (bounded by
    /// `limit`), release only when the gate opens again.
    Queued {
        limit: usize,
    },
    /// Inside, proven: plaintext, direct i-MIP (h, c or f).
    OpenInside(Mode),
    /// Outside: only through the VPN (cvc, fvc or mc).
    OpenViaVpn(Mode),
}

impl Gate {
    pub fn is_open(self) -> bool {
        matches!(self, Gate::OpenInside(_) | Gate::OpenViaVpn(_))
    }
}

/// The interface's detection state, for status and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    /// No carrier or no usable attachment.
    Down,
    Detecting,
    Inside,
    Outside,
}

/// Reports for the shell (status, logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    GateChanged {
        iface: IfaceId,
        gate: Gate,
        reason: &'static str,
    },
    PhaseChanged {
        iface: IfaceId,
        phase: Phase,
        reason: &'static str,
    },
    /// The tunnelling granted on one registration layer changed; `None` when
    /// that layer is no longer registered (or, at home, deregistered).
    TunnelChanged {
        iface: IfaceId,
        layer: Layer,
        tunnel: Option<Tunnel>,
    },
}

/// An interface's attachment (see [`MobileNode::attachment`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attachment {
    /// The care-of address: the interface's address (co-located), the foreign
    /// agent's (through an agent), or the home address (at home).
    pub care_of: Ipv4Addr,
    /// The foreign agent that relays the registrations, if any.
    pub agent: Option<Ipv4Addr>,
    /// The mode this attachment gives once proven inside (h, c or f).
    pub inside_mode: Mode,
}

/// A deadline with the reason it exists (for logs).
pub type Deadline = (Instant, &'static str);
