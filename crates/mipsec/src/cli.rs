//! Command line: `mipsec ha|mn|status`.

use clap::{Parser, Subcommand};
use std::ffi::OsString;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "mipsec",
    version,
    about = "Secure Mobile IPv4 for enterprise networks (RFC 5944, RFC 5265)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run a home agent.
    Ha {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run a foreign agent.
    Fa {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run the IPsec VPN client (IKEv2 + ESP, RFC 7296/4303) against a gateway.
    Vpn {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run a mobile node.
    Mn {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Show a running daemon's state.
    Status {
        /// The daemon's control socket.
        #[arg(long, short)]
        socket: PathBuf,
        /// Print JSON for scripts instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MIPSEC_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Runs the command line `args` (program name first) and returns the exit code.
pub fn run<I, T>(args: I) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    match cli.cmd {
        Cmd::Ha { config } => {
            init_logs();
            daemon(|| crate::ha::run(&config))
        }
        Cmd::Fa { config } => {
            init_logs();
            daemon(|| crate::fa::run(&config))
        }
        Cmd::Vpn { config } => {
            init_logs();
            daemon(|| vpnc::run(&config))
        }
        Cmd::Mn { config } => {
            init_logs();
            daemon(|| crate::mn::run(&config))
        }
        Cmd::Status { socket, json } => match crate::control::query(&socket) {
            Ok(v) => {
                if json {
                    println!("{v}");
                } else if v["role"] == "vpn" {
                    print!("{}", vpnc::status::render(&v));
                } else {
                    print!("{}", crate::control::render(&v));
                }
                0
            }
            Err(e) => {
                eprintln!("mipsec status: {e}");
                1
            }
        },
    }
}

fn daemon(f: impl FnOnce() -> Result<(), String>) -> i32 {
    match f() {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("mipsec: {e}");
            1
        }
    }
}
