//! The mipsec daemons and command-line interface.
//!
//! * [`ha`]: the home agent (`mipsec ha`): registrations on UDP 434, forward
//!   tunnel to the care-of address, reverse-tunnel decapsulation (RFC 3024),
//!   routes and proxy ARP for away mobile nodes (RFC 5944 section 4.6).
//! * [`mn`]: the mobile node (`mipsec mn`): a TUN carrying the home address,
//!   care-of addresses learned from rtnetlink, registration and tunneling.
//! * [`fa`]: the foreign agent (`mipsec fa`): agent advertisements, relay of
//!   registrations, forward-tunnel exit and reverse tunneling for visitors.
//! * [`control`]: the control socket behind `mipsec status`.
//! * [`config`]: TOML configuration with errors that name file, line and field.
//! * [`keyfile`]: the home agent's key file (one mobile node a line, SIGHUP reload).

pub mod cli;
pub mod config;
pub mod control;
mod datapath;
mod drops;
pub mod fa;
pub mod ha;
mod ha_guard;
pub mod keyfile;
pub mod mn;
mod shell;

pub use shell::SetupError;
