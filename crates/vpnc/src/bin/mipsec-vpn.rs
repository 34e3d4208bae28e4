//! `mipsec-vpn --config <file> [--events]`: run the VPN client in the foreground.

use clap::Parser;

/// Userspace IPsec VPN client (IKEv2, ESP in UDP, MOBIKE).
#[derive(Parser)]
#[command(name = "mipsec-vpn")]
struct Args {
    /// TOML configuration file.
    #[arg(long)]
    config: std::path::PathBuf,
    /// Run under a supervising process: one JSON event per line on stdout, commands
    /// (`mobike <ipv4>`, `stop`) on stdin, stop at the end of stdin or when the parent dies.
    #[arg(long)]
    events: bool,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match vpnc::run_with(
        &args.config,
        vpnc::RunOptions {
            events: args.events,
        },
    ) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mipsec-vpn: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
