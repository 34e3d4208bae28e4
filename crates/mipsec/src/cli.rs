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
        /// Run under a supervising process (`mipsec mn`): one JSON event per line on
        /// stdout, commands (`mobike <ipv4>`, `stop`) on stdin; stops at the end of stdin
        /// or when the parent dies.
        #[arg(long)]
        events: bool,
    },
    /// Run a mobile node.
    Mn {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Print the MN-HA key derived for a node from a fleet secret (key files'
    /// `derived` keys), to put in that node's mn.toml.
    DeriveKey {
        /// The file named by `[ha] key_derivation_secret`.
        #[arg(long)]
        secret: PathBuf,
        /// The node's NAI, or its home address when it has no NAI.
        identity: String,
    },
    /// Show a running daemon's state.
    Status {
        /// The daemon's control socket.
        #[arg(long, short)]
        socket: PathBuf,
        /// Print JSON for scripts instead of a table.
        #[arg(long)]
        json: bool,
        /// Home agent: counters only, no bindings.
        #[arg(long, conflicts_with_all = ["bindings", "node"])]
        summary: bool,
        /// Home agent: a page of bindings (with --limit and --after).
        #[arg(long)]
        bindings: bool,
        /// Home agent: nodes per page (1..=10000; default 100).
        #[arg(long, requires = "bindings")]
        limit: Option<u32>,
        /// Home agent: the page after this home address (the previous page's `next_after`).
        #[arg(long, requires = "bindings")]
        after: Option<std::net::Ipv4Addr>,
        /// Home agent: the bindings of one node, by home address or NAI.
        #[arg(long, conflicts_with = "bindings")]
        node: Option<String>,
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
        Cmd::Vpn { config, events } => {
            init_logs();
            daemon(|| vpnc::run_with(&config, vpnc::RunOptions { events }))
        }
        Cmd::Mn { config } => {
            init_logs();
            daemon(|| crate::mn::run(&config))
        }
        Cmd::DeriveKey { secret, identity } => match crate::keyfile::read_secret(&secret) {
            Ok(s) => {
                println!("{}", hex::encode(crate::keyfile::derive_key(&s, &identity)));
                0
            }
            Err(e) => {
                eprintln!("mipsec derive-key: {e}");
                1
            }
        },
        Cmd::Status {
            socket,
            json,
            summary,
            bindings,
            limit,
            after,
            node,
        } => match crate::control::query_with(
            &socket,
            status_params(summary, bindings, limit, after, node).as_ref(),
        ) {
            Ok(v) if v.get("error").is_some() => {
                eprintln!("mipsec status: {}", v["error"]);
                1
            }
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

/// The parameters of `status`, or None for a plain request (which every daemon answers).
fn status_params(
    summary: bool,
    bindings: bool,
    limit: Option<u32>,
    after: Option<std::net::Ipv4Addr>,
    node: Option<String>,
) -> Option<serde_json::Value> {
    let mut m = serde_json::Map::new();
    if summary {
        m.insert("summary".into(), true.into());
    }
    if let Some(n) = node {
        m.insert("node".into(), n.into());
    }
    if bindings {
        if let Some(l) = limit {
            m.insert("limit".into(), l.into());
        }
        if let Some(a) = after {
            m.insert("after".into(), a.to_string().into());
        }
    }
    (!m.is_empty() || bindings).then_some(serde_json::Value::Object(m))
}

fn daemon<E: std::fmt::Display>(f: impl FnOnce() -> Result<(), E>) -> i32 {
    match f() {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("mipsec: {e}");
            1
        }
    }
}
