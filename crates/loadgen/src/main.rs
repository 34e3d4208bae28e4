//! `mipsec-loadgen`: see the crate README.

use clap::{Parser, Subcommand};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "mipsec-loadgen",
    about = "Simulated mobile nodes against a home agent"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Write the HA key file for the simulated nodes.
    Keys {
        #[command(flatten)]
        set: NodeSet,
        #[arg(long)]
        out: PathBuf,
    },
    /// Register every node once, then renew round robin; print the figures.
    Run {
        #[command(flatten)]
        nodes: Nodes,
        /// Requests in flight at most.
        #[arg(long, default_value_t = 256)]
        window: usize,
        /// Seconds of renewals after the first registrations.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        #[arg(long, default_value_t = 1800)]
        lifetime: u16,
        /// Care-of address in the requests (default: the bind address, or 192.0.2.1).
        #[arg(long)]
        care_of: Option<Ipv4Addr>,
        #[arg(long, default_value = "0.0.0.0:0")]
        bind: SocketAddrV4,
        /// Check every reply's MN-HA authenticator.
        #[arg(long)]
        verify: bool,
        /// Generator threads, each with its own socket and share of the nodes.
        #[arg(long, default_value_t = 1)]
        threads: usize,
    },
    /// Register every node with RFC 3519 UDP tunnelling (each from its own port, as
    /// behind a NAT of its own), then send Tunnel Data from all of them for
    /// `--duration` seconds; print what was sent.
    Tunnel {
        #[command(flatten)]
        nodes: Nodes,
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// Care-of address in the requests; a source address other than it is
        /// what makes the home agent see a NAT.
        #[arg(long, default_value = "192.0.2.1")]
        care_of: Ipv4Addr,
        #[arg(long, default_value = "0.0.0.0:0")]
        bind: SocketAddrV4,
        /// The inner packets' destination (give it a blackhole route at the HA).
        #[arg(long, default_value = "10.200.0.1:9")]
        sink: SocketAddrV4,
        /// Inner packet length (IPv4 + UDP + payload), 28..=1472.
        #[arg(long, default_value_t = 1400)]
        size: usize,
        /// Tunnel Data messages per send (above 1: one UDP GSO send, as a GRO burst).
        #[arg(long, default_value_t = 16)]
        per_send: u16,
        #[arg(long, default_value_t = 1)]
        threads: usize,
    },
}

/// The simulated nodes, as every command takes them.
#[derive(clap::Args, Debug)]
struct NodeSet {
    #[arg(long)]
    first_home: Ipv4Addr,
    #[arg(long)]
    nodes: u32,
    #[arg(long, default_value_t = 256)]
    spi: u32,
    #[arg(long, default_value = "00112233445566778899aabbccddeeff")]
    key: String,
}

/// The simulated nodes and their home agent, as the load modes take them.
#[derive(clap::Args, Debug)]
struct Nodes {
    /// The home agent address (UDP port 434 unless given).
    #[arg(long)]
    ha: String,
    #[command(flatten)]
    set: NodeSet,
}

impl Nodes {
    /// A generator configuration for these nodes; the rest as given.
    fn config(
        &self,
        window: usize,
        duration: f64,
        lifetime: u16,
        care_of: Ipv4Addr,
        bind: SocketAddrV4,
        verify: bool,
    ) -> Result<loadgen::Config, String> {
        let ha: SocketAddrV4 = match self.ha.parse() {
            Ok(a) => a,
            Err(_) => SocketAddrV4::new(self.ha.parse().map_err(|e| format!("--ha: {e}"))?, 434),
        };
        Ok(loadgen::Config {
            ha,
            first_home: self.set.first_home,
            nodes: self.set.nodes,
            spi: self.set.spi,
            key: hex::decode(&self.set.key).map_err(|e| format!("key: {e}"))?,
            window: window.max(1),
            duration: Duration::from_secs_f64(duration.max(0.0)),
            lifetime,
            care_of,
            bind,
            timeout: Duration::from_secs(1),
            verify,
        })
    }
}

fn main() {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Keys { set, out } => hex::decode(&set.key)
            .map_err(|e| format!("key: {e}"))
            .and_then(|k| {
                std::fs::write(
                    &out,
                    loadgen::key_lines(set.first_home, set.nodes, set.spi, &k),
                )
                .map_err(|e| format!("{}: {e}", out.display()))
            }),
        Cmd::Run {
            nodes,
            window,
            duration,
            lifetime,
            care_of,
            bind,
            verify,
            threads,
        } => (|| {
            let care_of = care_of.unwrap_or(if bind.ip().is_unspecified() {
                Ipv4Addr::new(192, 0, 2, 1)
            } else {
                *bind.ip()
            });
            let cfg = nodes.config(window, duration, lifetime, care_of, bind, verify)?;
            let (first, renew) = loadgen::run_threads(&cfg, threads).map_err(|e| e.to_string())?;
            println!("first registrations: {first}");
            println!("renewals:            {renew}");
            Ok(())
        })(),
        Cmd::Tunnel {
            nodes,
            duration,
            care_of,
            bind,
            sink,
            size,
            per_send,
            threads,
        } => (|| {
            if !(28..=1472).contains(&size) || u32::from(per_send) * (size as u32 + 4) > 65_000 {
                return Err(
                    "--size must be 28..=1472 and --per-send * (size + 4) at most 65000".into(),
                );
            }
            let tc = loadgen::tunnel::TunnelConfig {
                base: nodes.config(1, duration, 1800, care_of, bind, false)?,
                size,
                sink,
                per_send: per_send.max(1),
                threads,
            };
            let f = loadgen::tunnel::run_tunnel(&tc).map_err(|e| e.to_string())?;
            println!("tunnel data: {f}");
            Ok(())
        })(),
    };
    if let Err(e) = r {
        eprintln!("mipsec-loadgen: {e}");
        std::process::exit(1);
    }
}
