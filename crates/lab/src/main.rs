//! `mipsec-lab`: the network-namespace lab's command line. See README.md.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use lab::scenario::{self, DemoOpts};
use lab::topo::Segment;
use lab::{netns, traffic};

const USAGE: &str = "usage:
  mipsec-lab demo [--stay SECS] [--rate MBPS] [--bound MS] [--stall MS] [--probe-ms MS]
                  [--lifetime SECS] [--moves int-a,int-b,int-c,nat,home] [--plain] [--capture FILE]
                  [--flush-nat] [--keep]
  mipsec-lab bench [--repeat N] [--secs SECS] [--tcp-only]
                                   registration RTT, interruption per move, then TCP
                                   (1 and 4 connections, up and down) and idle RTT for plain
                                   routing and mode c through the HA with and without TUN
                                   offload (--tcp-only: that last part alone)
  mipsec-lab roam-bench [--secs SECS]   gate-open time and TCP up/down per mode (c, cvc, fvc, cvc+NAT)
  mipsec-lab demo --enterprise [--mode cvc|mc] [--cert] [--stay SECS] [--pcap DIR]
                  [--moves int-a,ext-a,ext-nat,int-b,home] [--keep]
                                   the enterprise route through RFC 5265 Figure 1 (mipsec mn,
                                   strongSwan gateway, x-HA) under TCP both ways and 5 ms probes;
                                   one capture per segment in DIR
  mipsec-lab bench --enterprise [--secs SECS]
                                   setup outside and its parts (cvc, mc), TCP throughput per
                                   mode against plain routing
  mipsec-lab bench --handover [--stay SECS] [--repeat N] [--logs DIR]
                                   handover figures against strongSwan's own client (MOBIKE)
                                   in the enterprise lab: per move ext-a/ext-nat/int-a, the
                                   interruption and IKE datagrams for strongSwan, mc and cvc,
                                   and the ratios
  mipsec-lab up [--plain]          build the lab (and daemons) and wait for Ctrl-C
  mipsec-lab up --enterprise [--cert] [--pcap DIR]
                                   the enterprise lab of RFC 5265 Figure 1: strongSwan gateway
                                   (PSK, or certificates with --cert), i-HA, x-HA, x-FA, border
                                   firewall, ext-a/ext-b/ext-nat; one capture per segment in DIR
  mipsec-lab move PREFIX SEGMENT   move the MN of a running lab (home, int-a, int-b, int-c, nat;
                                   enterprise lab also ext-a, ext-b, ext-nat)
  mipsec-lab classify --pcap DIR [--segments core,ext-a,...] [--home ADDR]... [--injector MAC]...
                                   leak check of DIR/<segment>.pcap (default: the outside
                                   segments core, ext-a, ext-b, ext-nat that exist): counts by
                                   class per segment, `leaks: N`; exit 1 on any leak
  mipsec-lab soak [--moves N] [--seed S] [--pcap DIR] [--outside xmip|mobike] [--int-b] [--ext-b] [--nat-changes]
                  [--ha-restart-outside] [--loss] [--silent] [--attacks [--tunnelvision]]
                  [--max-minutes M] [--rate KBPS] [--negative-control]
                                   seeded random walk of the MN over the enterprise lab with TCP
                                   and probes, NAT changes and daemon restarts (--loss: 30 %
                                   loss bursts; --silent: silent moves; --attacks: rogue DHCP
                                   and injected packets on ext-a); leak check of the
                                   outside captures; summary ending in `verdict:`; exit 1 on a leak
                                   or an unrecovered fault (--negative-control: the i-HA trusts
                                   0.0.0.0/0, so leaks must appear)
  mipsec-lab cleanup [--all]       remove leftovers of earlier runs (--all: also live ones)
  mipsec-lab mipsec <args...>      the mipsec CLI (daemons, status)
  mipsec-lab serve [--tcp PORT] [--udp PORT]   CN helper: TCP sink/source + UDP echo";

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("mipsec") {
        let rest = std::env::args_os().skip(2);
        let code = mipsec::cli::run(std::iter::once("mipsec".into()).chain(rest));
        std::process::exit(code);
    }
    if args.is_empty() {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    }
    let cmd = args.remove(0);
    match run(&cmd, &args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mipsec-lab {cmd}: {e}");
            ExitCode::from(1)
        }
    }
}

fn opt<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

fn num<T: std::str::FromStr>(args: &[String], name: &str, dflt: T) -> Result<T, String> {
    match opt(args, name) {
        None => Ok(dflt),
        Some(v) => v.parse().map_err(|_| format!("bad value for {name}: {v}")),
    }
}

fn flag(args: &[String], name: &str) -> bool {
    args.iter().any(|a| a == name)
}

fn exe() -> lab::Result<PathBuf> {
    Ok(std::env::current_exe()?)
}

/// Options taking a value, and flags, per command; anything else is an error.
fn check_args(cmd: &str, args: &[String]) -> Result<(), String> {
    let (valued, flags): (&[&str], &[&str]) = match cmd {
        "demo" => (
            &[
                "--stay",
                "--rate",
                "--bound",
                "--stall",
                "--probe-ms",
                "--lifetime",
                "--moves",
                "--capture",
                "--mode",
                "--pcap",
            ],
            &["--plain", "--keep", "--flush-nat", "--enterprise", "--cert"],
        ),
        "bench" => (
            &["--repeat", "--secs", "--stay", "--logs"],
            &["--tcp-only", "--enterprise", "--handover"],
        ),
        "roam-bench" => (&["--secs"], &[]),
        "up" => (&["--pcap"], &["--plain", "--enterprise", "--cert"]),
        "cleanup" => (&[], &["--all"]),
        "soak" => (
            &[
                "--moves",
                "--seed",
                "--pcap",
                "--outside",
                "--max-minutes",
                "--rate",
            ],
            &[
                "--negative-control",
                "--ext-b",
                "--int-b",
                "--nat-changes",
                "--ha-restart-outside",
                "--loss",
                "--silent",
                "--attacks",
                "--tunnelvision",
            ],
        ),
        "classify" => (&["--pcap", "--segments", "--home", "--injector"], &[]),
        "serve" => (&["--tcp", "--udp"], &[]),
        _ => return Ok(()),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if valued.contains(&a.as_str()) {
            if it.next().is_none() {
                return Err(format!("{a} needs a value"));
            }
        } else if !flags.contains(&a.as_str()) {
            return Err(format!("unknown argument {a}\n{USAGE}"));
        }
    }
    Ok(())
}

fn run(cmd: &str, args: &[String]) -> lab::Result<ExitCode> {
    let bad = |e: String| lab::Error::Other(e);
    check_args(cmd, args).map_err(bad)?;
    match cmd {
        "serve" => {
            traffic::serve(
                num(args, "--tcp", traffic::TCP_PORT).map_err(bad)?,
                num(args, "--udp", traffic::UDP_PORT).map_err(bad)?,
            )?;
            Ok(ExitCode::SUCCESS)
        }
        "classify" => classify(args),
        "soak" => soak(args),
        "cleanup" => {
            let removed = netns::cleanup_leftovers(flag(args, "--all"));
            if removed.is_empty() {
                println!("no leftovers");
            }
            for p in removed {
                println!("removed {p}*");
            }
            Ok(ExitCode::SUCCESS)
        }
        "demo" if flag(args, "--enterprise") => demo_enterprise(args),
        "demo" => {
            let d = DemoOpts::default();
            let moves = match opt(args, "--moves") {
                None => d.moves.clone(),
                Some(m) => m
                    .split(',')
                    .map(|s| Segment::parse(s).ok_or_else(|| bad(format!("bad segment {s}"))))
                    .collect::<lab::Result<Vec<_>>>()?,
            };
            let o = DemoOpts {
                stay: Duration::from_secs_f64(
                    num(args, "--stay", d.stay.as_secs_f64()).map_err(bad)?,
                ),
                probe_interval: Duration::from_millis(num(args, "--probe-ms", 5u64).map_err(bad)?),
                rate: (num(args, "--rate", d.rate as f64 / 1e6).map_err(bad)? * 1e6) as u64,
                bound_ms: num(args, "--bound", d.bound_ms).map_err(bad)?,
                stall_ms: num(args, "--stall", d.stall_ms).map_err(bad)?,
                plain: flag(args, "--plain"),
                lifetime: num(args, "--lifetime", d.lifetime).map_err(bad)?,
                moves,
                capture: opt(args, "--capture").map(PathBuf::from),
                keep: flag(args, "--keep"),
                flush_nat: flag(args, "--flush-nat"),
            };
            let rep = scenario::run_demo(&exe()?, &o)?;
            print!("{}", rep.render(&o));
            Ok(if rep.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        "bench" if flag(args, "--handover") => {
            let stay = num(args, "--stay", 3.0f64).map_err(bad)?;
            let repeat = num(args, "--repeat", 1usize).map_err(bad)?;
            let d = Duration::from_secs_f64(stay);
            let logs = opt(args, "--logs").map(PathBuf::from);
            print!(
                "{}",
                lab::bench_handover::run(&exe()?, d, repeat, logs.as_deref())?
            );
            Ok(ExitCode::SUCCESS)
        }
        "bench" if flag(args, "--enterprise") => {
            let secs = num(args, "--secs", 3.0f64).map_err(bad)?;
            print!("{}", lab::bench_ent::run(&exe()?, secs)?);
            Ok(ExitCode::SUCCESS)
        }
        "bench" => {
            let o = lab::bench::BenchOpts {
                repeat: num(args, "--repeat", 3usize).map_err(bad)?,
                secs: num(args, "--secs", 3.0f64).map_err(bad)?,
                tcp_only: flag(args, "--tcp-only"),
            };
            lab::bench::run(&exe()?, &o)?;
            Ok(ExitCode::SUCCESS)
        }
        "roam-bench" => {
            let secs = num(args, "--secs", 3.0f64).map_err(bad)?;
            print!("{}", lab::roam_bench::bench(&exe()?, secs)?);
            Ok(ExitCode::SUCCESS)
        }
        "up" if flag(args, "--enterprise") => {
            up_enterprise(args)?;
            Ok(ExitCode::SUCCESS)
        }
        "up" => {
            let ml = scenario::MipLab::start(&exe()?, !flag(args, "--plain"), 300)?;
            println!(
                "lab {} is up: namespaces {}{{sw,rt,ha,mn,cn,fa}}, files in {}; Ctrl-C removes it",
                ml.lab.prefix,
                ml.lab.prefix,
                ml.lab.dir.display()
            );
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        "move" => {
            let (Some(prefix), Some(seg), None) = (args.first(), args.get(1), args.get(2)) else {
                return Err(bad(USAGE.to_string()));
            };
            let seg = Segment::parse(seg).ok_or_else(|| bad(format!("bad segment {seg}")))?;
            lab::topo::move_mn(prefix, seg)?;
            Ok(ExitCode::SUCCESS)
        }
        _ => Err(bad(format!("unknown command {cmd}\n{USAGE}"))),
    }
}

/// `mipsec-lab demo --enterprise`: the route through the enterprise lab.
fn demo_enterprise(args: &[String]) -> lab::Result<ExitCode> {
    use lab::demo_ent::{self, EntDemoOpts};
    let bad = |e: String| lab::Error::Other(e);
    let d = EntDemoOpts::default();
    let outside = match opt(args, "--mode").unwrap_or("cvc") {
        "cvc" | "xmip" => lab::roam::Outside::Xmip,
        "mc" | "mobike" => lab::roam::Outside::Mobike,
        m => return Err(bad(format!("bad --mode {m} (cvc or mc)"))),
    };
    let route = match opt(args, "--moves") {
        None => demo_ent::default_route(outside),
        Some(m) => m
            .split(',')
            .map(|s| Segment::parse(s).ok_or_else(|| bad(format!("bad segment {s}"))))
            .collect::<lab::Result<Vec<_>>>()?,
    };
    let o = EntDemoOpts {
        outside,
        auth: if flag(args, "--cert") {
            lab::gateway::GwAuth::Cert
        } else {
            lab::gateway::GwAuth::Psk
        },
        stay: Duration::from_secs_f64(num(args, "--stay", d.stay.as_secs_f64()).map_err(bad)?),
        route,
        pcap: opt(args, "--pcap").map(PathBuf::from),
        keep: flag(args, "--keep"),
        ..d
    };
    let rep = demo_ent::run(&exe()?, &o)?;
    print!("{}", rep.render(&o));
    Ok(if rep.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `mipsec-lab soak`: see `lab::soak`. Without --seed, one from the clock (printed).
fn soak(args: &[String]) -> lab::Result<ExitCode> {
    use lab::soak::{self, SoakOpts};
    let bad = |e: String| lab::Error::Other(e);
    let d = SoakOpts::default();
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |t| t.as_secs());
    let outside = match opt(args, "--outside").unwrap_or("xmip") {
        "xmip" => lab::roam::Outside::Xmip,
        "mobike" => lab::roam::Outside::Mobike,
        o => return Err(bad(format!("bad --outside {o} (xmip or mobike)"))),
    };
    let o = SoakOpts {
        moves: num(args, "--moves", d.moves).map_err(bad)?,
        seed: num(args, "--seed", clock).map_err(bad)?,
        pcap: opt(args, "--pcap").map(PathBuf::from),
        outside,
        negative_control: flag(args, "--negative-control"),
        ext_b: flag(args, "--ext-b"),
        int_b: flag(args, "--int-b"),
        nat_changes: flag(args, "--nat-changes"),
        ha_restart_outside: flag(args, "--ha-restart-outside"),
        extras: lab::soak::Extras {
            loss: flag(args, "--loss"),
            silent: flag(args, "--silent"),
            attacks: flag(args, "--attacks"),
            tunnelvision: flag(args, "--tunnelvision"),
        },
        rate: num(args, "--rate", d.rate / 1000).map_err(bad)? * 1000,
        max_time: opt(args, "--max-minutes")
            .map(|m| {
                m.parse::<f64>()
                    .map_err(|_| bad(format!("bad --max-minutes {m}")))
            })
            .transpose()?
            .map(|m| Duration::from_secs_f64(m * 60.0)),
        ..d
    };
    println!("mipsec-lab soak: seed {}", o.seed);
    let sum = soak::run(&exe()?, &o)?;
    print!("{}", sum.render(&o));
    Ok(if sum.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Every value of a repeatable option.
fn opts<'a>(args: &'a [String], name: &str) -> Vec<&'a str> {
    args.windows(2)
        .filter(|w| w[0] == name)
        .map(|w| w[1].as_str())
        .collect()
}

/// `mipsec-lab classify`: the leak check of a capture directory. Exit 0 without leaks,
/// 1 with any, 2 when nothing could be classified (an empty check must not pass).
fn classify(args: &[String]) -> lab::Result<ExitCode> {
    use lab::leak;
    let bad = |e: String| lab::Error::Other(e);
    let dir =
        PathBuf::from(opt(args, "--pcap").ok_or_else(|| bad("--pcap DIR is required".into()))?);
    let mut plan = leak::Plan::lab();
    for h in opts(args, "--home") {
        plan.home_addresses
            .push(h.parse().map_err(|_| bad(format!("bad --home {h}")))?);
    }
    for m in opts(args, "--injector") {
        plan.injectors
            .push(leak::parse_mac(m).ok_or_else(|| bad(format!("bad --injector {m}")))?);
    }
    let segments: Vec<&str> = match opt(args, "--segments") {
        Some(s) => s.split(',').collect(),
        None => lab::enterprise::OUTSIDE
            .into_iter()
            .filter(|s| dir.join(format!("{s}.pcap")).exists())
            .collect(),
    };
    if segments.is_empty() {
        eprintln!(
            "mipsec-lab classify: no outside segment's capture in {}",
            dir.display()
        );
        return Ok(ExitCode::from(2));
    }
    let reports = leak::classify_dir(&plan, &dir, &segments)?;
    print!("{}", leak::render(&reports));
    Ok(if leak::leaks(&reports) == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `mipsec-lab up --enterprise`: builds the enterprise lab, starts the CN helper, the
/// agents and the gateway (and captures), prints how to use it, waits for Ctrl-C.
fn up_enterprise(args: &[String]) -> lab::Result<()> {
    use lab::enterprise;
    use lab::gateway::{self, GwAuth};
    let auth = if flag(args, "--cert") {
        GwAuth::Cert
    } else {
        GwAuth::Psk
    };
    let mut l = lab::enterprise::build(&exe()?)?;
    if let Some(dir) = opt(args, "--pcap") {
        let files = enterprise::start_captures(&mut l, std::path::Path::new(dir))?;
        println!("capturing {} segments into {dir}", files.len());
    }
    l.spawn("cn", "cn-serve", &["serve"])?;
    enterprise::start_agents(&mut l)?;
    let up = gateway::start_gateway(&mut l, auth)?;
    let (vpn, _) = gateway::vpn_config(&l, auth)?;
    let p = l.prefix.clone();
    println!(
        "enterprise lab {p} is up (gateway {auth:?}, loaded in {} ms); files in {}
  namespaces {p}{{sw,rt,ha,mn,cn,fa,ev,gw,fw,xha,inet,xfa}}
  move the MN:      mipsec-lab move {p} ext-a     (ext-b, ext-nat, home, int-a, ...)
  VPN from the MN:  ip netns exec {p}mn mipsec-lab mipsec vpn --config {vpn}   ({auth:?})
  gateway SAs:      SWANCTL_DIR={d}/gw/swanctl swanctl --list-sas --uri unix://{d}/gw/charon.vici
  firewall:         ip netns exec {p}fw nft list counters
Ctrl-C removes it",
        up.as_millis(),
        l.dir.display(),
        d = l.dir.display()
    );
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
