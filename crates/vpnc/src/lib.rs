//! mipsec-vpn: a userspace IPsec VPN client (IKEv2 + ESP in UDP) for an unmodified gateway.
//!
//! [`run`] reads a TOML configuration ([`config::VpnConfig`]), brings the tunnel up on a
//! TUN device holding the address the gateway assigns (the TIA), routes the negotiated
//! traffic selectors through it from a routing table of its own, and keeps it up: rekeys,
//! DPD, NAT keepalives, MOBIKE on address changes, reconnection with backoff.

// One `unsafe` call, prctl(PR_SET_PDEATHSIG) in `supervise`.
#![deny(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod client;
pub mod config;
pub mod engine;
pub mod killswitch;
pub mod sas;
pub mod sockets;
pub mod status;
pub mod supervise;

pub use config::VpnConfig;

pub use client::RunOptions;

/// Run the client with the configuration at `config` until SIGINT or SIGTERM.
pub fn run(config: &std::path::Path) -> Result<(), String> {
    run_with(config, RunOptions::default())
}

/// Run the client with the configuration at `config`; with `opts.events` under a
/// supervising process (see `supervise`).
pub fn run_with(config: &std::path::Path, opts: RunOptions) -> Result<(), String> {
    let cfg = VpnConfig::load(config)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    rt.block_on(client::run(cfg, opts))
}
