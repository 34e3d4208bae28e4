//! The enterprise lab of RFC 5265 Figure 1 (RFC 4093 deployment 2.1), built around the
//! base lab of `topo.rs` (home, int-a, int-b, int-c, servers stay as they are). The
//! drawing and address plan are in the crate README ("Enterprise lab").
//!
//! TIA pool 10.99.0.0/24 (routed by rt to the gateway's inner leg 10.10.0.2 on the home
//! network), x-home network 100.64.0.0/24 (virtual, at the x-HA 100.64.0.1, reached via
//! its DMZ address 192.0.2.2). Every segment is a bridge in the switch namespace, so
//! the MN's port moves onto ext-a/ext-b/ext-nat as onto any other segment.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::mip::{self, write_private, MN_KEY, MN_SPI, PROBE_KEY, PROBE_SPI};
use crate::netns::{self, ip, other, Result};
use crate::topo::{Lab, HA_ADDR, MN_HOME, XFA_ADDR};

pub const GW_OUTER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// The gateway's inner leg is on the home network, next to the i-HA (see gateway.rs
/// for why kernel-libipsec wants it inside the VPN-1 selector).
pub const GW_INNER: Ipv4Addr = Ipv4Addr::new(10, 10, 0, 2);
/// The x-HA's address, inside its (virtual) home network of x-home addresses; it is
/// held on the x-HA's loopback and reached through its DMZ address [`XHA_DMZ`].
pub const XHA_ADDR: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 1);
/// The x-HA's interface in the DMZ.
pub const XHA_DMZ: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
/// The x-HA's leg on the intranet side (where HA-5 drops requests).
pub const XHA_INNER: Ipv4Addr = Ipv4Addr::new(10, 50, 0, 2);
pub const FW_DMZ: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 254);
pub const FW_CORE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub const TIA_POOL: &str = "10.99.0.0/24";
pub const XHOME_NET: &str = "100.64.0.0/24";
/// The MN's x-home address (at the x-HA), and a second one for the lab's own sender.
pub const MN_XHOME: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 100);
pub const PROBE_XHOME: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 101);
/// The internal subnets the i-HA trusts (HA-2): home, int-a, int-b, servers, int-c and
/// the TIA pool (inner addresses handed out by the gateway are internal addresses).
pub const TRUSTED: [&str; 6] = [
    "10.10.0.0/24",
    "10.20.0.0/24",
    "10.30.0.0/24",
    "10.40.0.0/24",
    "10.60.0.0/24",
    TIA_POOL,
];
pub const PSK: &str = "enterprise lab pre-shared key";
pub const GW_ID: &str = "vpn.example.com";
pub const MN_ID: &str = "mn.example.com";
/// DN identities of the certificate variant.
pub const GW_DN: &str = "C=CH, O=mipsec lab, CN=vpn.example.com";
pub const MN_DN: &str = "C=CH, O=mipsec lab, CN=mn.example.com";
pub const CA_DN: &str = "C=CH, O=mipsec lab, CN=mipsec lab Root CA";

/// Segments of the enterprise lab that are outside the enterprise (captures on these
/// must show nothing but IKE/ESP and the x-MIP layer).
pub const OUTSIDE: [&str; 4] = ["core", "ext-a", "ext-b", "ext-nat"];

/// (segment name, bridge) for every segment of the enterprise lab, base lab included.
pub const SEGMENTS: [(&str, &str); 12] = [
    ("home", "br-home"),
    ("int-a", "br-inta"),
    ("int-b", "br-intb"),
    ("int-c", "br-intc"),
    ("servers", "br-srv"),
    ("gwin", "br-gwin"),
    ("dmz", "br-dmz"),
    ("core", "br-core"),
    ("ext-a", "br-exta"),
    ("ext-b", "br-extb"),
    ("ext-nat", "br-extnat"),
    ("nat", "br-nat"),
];

fn nsexec(ns: &str, args: &[&str]) -> Result<String> {
    let mut a = vec!["netns", "exec", ns];
    a.extend_from_slice(args);
    netns::run("ip", &a)
}

/// Builds the lab of [`Lab::build`] plus the enterprise of RFC 5265 Figure 1 around
/// it (VPN gateway, DMZ with the x-HA, border firewall, internet core, ext-a, ext-b,
/// ext-nat). No daemon is started. The MN starts at home.
pub fn build(exe: &Path) -> Result<Lab> {
    let mut lab = Lab::build(exe)?;
    setup(&mut lab)?;
    Ok(lab)
}

/// Adds the enterprise's namespaces, segments, routes and nftables rules to a base lab.
pub fn setup(lab: &mut Lab) -> Result<()> {
    for r in netns::ENTERPRISE_ROLES {
        let ns = lab.ns(r);
        ip(&["netns", "add", &ns])?;
        nsexec(
            &ns,
            &[
                "sysctl",
                "-qw",
                "net.ipv4.ip_forward=1",
                "net.ipv4.conf.all.rp_filter=0",
                "net.ipv4.conf.default.rp_filter=0",
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            ],
        )?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
    }
    let sw = lab.ns("sw");
    for br in [
        "br-gwin",
        "br-dmz",
        "br-core",
        "br-exta",
        "br-extb",
        "br-extnat",
    ] {
        ip(&[
            "-n",
            &sw,
            "link",
            "add",
            br,
            "type",
            "bridge",
            "stp_state",
            "0",
        ])?;
        ip(&[
            "-n",
            &sw,
            "link",
            "set",
            br,
            "type",
            "bridge",
            "forward_delay",
            "0",
        ])?;
        ip(&["-n", &sw, "link", "set", br, "up"])?;
    }
    // (switch port, role, interface, bridge, address/len)
    let links: [(&str, &str, &str, &str, &str); 11] = [
        ("rt6", "rt", "eth6", "br-gwin", "10.50.0.254/24"),
        ("gw0", "gw", "eth0", "br-home", "10.10.0.2/24"),
        ("xha1", "xha", "eth1", "br-gwin", "10.50.0.2/24"),
        ("gw1", "gw", "eth1", "br-dmz", "192.0.2.1/24"),
        ("xha0", "xha", "eth0", "br-dmz", "192.0.2.2/24"),
        ("fw0", "fw", "eth0", "br-dmz", "192.0.2.254/24"),
        ("fw1", "fw", "eth1", "br-core", "198.18.0.1/24"),
        ("inet0", "inet", "eth0", "br-core", "198.18.0.254/24"),
        ("inet1", "inet", "eth1", "br-exta", "198.51.100.254/24"),
        ("inet2", "inet", "eth2", "br-extb", "203.0.113.254/24"),
        ("inet3", "inet", "eth3", "br-extnat", "192.168.100.254/24"),
    ];
    for (port, role, ifname, br, addr) in links {
        let ns = lab.ns(role);
        ip(&[
            "-n", &sw, "link", "add", port, "type", "veth", "peer", "name", ifname, "netns", &ns,
        ])?;
        ip(&["-n", &sw, "link", "set", port, "master", br])?;
        ip(&["-n", &sw, "link", "set", port, "up"])?;
        ip(&["-n", &ns, "addr", "add", addr, "dev", ifname])?;
        ip(&["-n", &ns, "link", "set", ifname, "up"])?;
    }
    let xfa = lab.ns("xfa");
    ip(&[
        "-n", &sw, "link", "add", "xfa", "type", "veth", "peer", "name", "eth0", "netns", &xfa,
    ])?;
    ip(&["-n", &sw, "link", "set", "xfa", "master", "br-extb"])?;
    ip(&["-n", &sw, "link", "set", "xfa", "up"])?;
    ip(&["-n", &xfa, "addr", "add", "203.0.113.1/24", "dev", "eth0"])?;
    ip(&["-n", &xfa, "link", "set", "eth0", "up"])?;
    // (role, destination, via)
    let routes: [(&str, &str, &str); 12] = [
        ("gw", "default", "192.0.2.254"),
        ("gw", "10.0.0.0/8", "10.10.0.254"),
        ("gw", XHOME_NET, "192.0.2.2"),
        ("xha", "default", "192.0.2.254"),
        ("fw", "default", "198.18.0.254"),
        // Outside packets for intranet addresses reach the firewall (and stop there).
        ("fw", "10.0.0.0/8", "192.0.2.1"),
        ("fw", XHOME_NET, "192.0.2.2"),
        ("inet", "192.0.2.0/24", "198.18.0.1"),
        ("inet", XHOME_NET, "198.18.0.1"),
        ("inet", "10.0.0.0/8", "198.18.0.1"),
        ("xfa", "default", "203.0.113.254"),
        // The intranet reaches the TIAs through the gateway.
        ("rt", TIA_POOL, "10.10.0.2"),
    ];
    for (role, dst, via) in routes {
        ip(&["-n", &lab.ns(role), "route", "add", dst, "via", via])?;
    }
    // The intranet reaches the x-HA on its intranet leg (so HA-5 sees those requests).
    ip(&[
        "-n",
        &lab.ns("rt"),
        "route",
        "add",
        XHOME_NET,
        "via",
        "10.50.0.2",
    ])?;
    ip(&[
        "-n",
        &lab.ns("xha"),
        "addr",
        "add",
        "100.64.0.1/32",
        "dev",
        "lo",
    ])?;
    let nat = "table ip nat {\n chain post {\n  type nat hook postrouting priority 100;\n  ip saddr 192.168.100.0/24 oifname != \"eth3\" masquerade\n }\n}\n";
    load_nft(lab, "inet", "inet-nat.nft", nat)?;
    load_nft(lab, "fw", "border.nft", &border_rules())?;
    // The x-HA's intranet leg only receives (and HA-5 drops) requests: it has no route
    // into the intranet, and nothing is forwarded out of it, so a packet decapsulated
    // from an outside tunnel cannot enter the intranet there.
    let leg = "table inet xha_leg {\n chain forward {\n  type filter hook forward priority 0;\n  oifname \"eth1\" counter drop\n }\n}\n";
    load_nft(lab, "xha", "xha-leg.nft", leg)?;
    for role in ["xha", "xfa"] {
        lab.no_udp_segmentation(role)?;
    }
    Ok(())
}

fn load_nft(lab: &Lab, role: &str, file: &str, rules: &str) -> Result<()> {
    let path = lab.dir.join(file);
    std::fs::write(&path, rules)?;
    nsexec(&lab.ns(role), &["nft", "-f", &path.display().to_string()])?;
    Ok(())
}

/// The border firewall (namespace `fw`, eth0 = enterprise side, eth1 = internet core).
/// From the internet only IKE (UDP 500), NAT-T (UDP 4500: IKE and ESP in UDP) and ESP
/// to the gateway, and Mobile IP (UDP 434: registrations and RFC 3519 tunnel data) and
/// IP-in-IP to the x-HA pass; everything else is counted in `denied` and dropped.
pub fn border_rules() -> String {
    format!(
        "table inet border {{
 counter ike_to_gw {{ }}
 counter natt_to_gw {{ }}
 counter esp_to_gw {{ }}
 counter mip_to_xha {{ }}
 counter ipip_to_xha {{ }}
 counter outbound {{ }}
 counter denied {{ }}
 chain forward {{
  type filter hook forward priority 0; policy drop;
  iifname \"eth0\" oifname \"eth1\" counter name outbound accept
  iifname \"eth1\" ip daddr {GW_OUTER} udp dport 500 counter name ike_to_gw accept
  iifname \"eth1\" ip daddr {GW_OUTER} udp dport 4500 counter name natt_to_gw accept
  iifname \"eth1\" ip daddr {GW_OUTER} ip protocol esp counter name esp_to_gw accept
  iifname \"eth1\" ip daddr {XHA_ADDR} udp dport 434 counter name mip_to_xha accept
  iifname \"eth1\" ip daddr {XHA_ADDR} ip protocol ipencap counter name ipip_to_xha accept
  counter name denied drop
 }}
}}
"
    )
}

/// Packet counts of the border firewall's named counters.
pub fn fw_counters(lab: &Lab) -> Result<BTreeMap<String, u64>> {
    let out = nsexec(&lab.ns("fw"), &["nft", "-j", "list", "counters"])?;
    let v: Value = serde_json::from_str(&out).map_err(|e| other(format!("nft -j: {e}")))?;
    let mut m = BTreeMap::new();
    for item in v["nftables"].as_array().into_iter().flatten() {
        if let Some(c) = item.get("counter") {
            if let (Some(n), Some(p)) = (c["name"].as_str(), c["packets"].as_u64()) {
                m.insert(n.to_string(), p);
            }
        }
    }
    Ok(m)
}

// ---- daemons -----------------------------------------------------------------------------

/// i-HA config: the base lab's HA plus HA-2 trusted networks (the internal subnets).
pub fn write_iha_config(lab: &Lab) -> Result<(String, PathBuf)> {
    let d = lab.dir.display();
    let trusted: Vec<String> = TRUSTED.iter().map(|t| format!("\"{t}\"")).collect();
    let cfg = format!(
        r#"[ha]
address = "{HA_ADDR}"
home_network = "10.10.0.0/24"
home_interface = "eth0"
tunnel_device = "mipha0"
trusted_networks = [{}]
control_socket = "{d}/iha.sock"

[[mobile_node]]
home_address = "{MN_HOME}"
spi = {MN_SPI}
key = "{MN_KEY}"

[[mobile_node]]
home_address = "{}"
spi = {PROBE_SPI}
key = "{PROBE_KEY}"
"#,
        trusted.join(", "),
        mip::PROBE_HOA
    );
    let p = lab.dir.join("iha.toml");
    write_private(&p, &cfg)?;
    Ok((p.display().to_string(), lab.dir.join("iha.sock")))
}

/// x-HA config: a virtual home network of x-home addresses, no trusted networks (it
/// trusts nobody: no TNC), requests on its intranet leg dropped (HA-5).
pub fn write_xha_config(lab: &Lab) -> Result<(String, PathBuf)> {
    let d = lab.dir.display();
    let cfg = format!(
        r#"[ha]
address = "{XHA_ADDR}"
home_network = "{XHOME_NET}"
tunnel_device = "xha0"
drop_requests_on_interface = "eth1"
control_socket = "{d}/xha.sock"

[[mobile_node]]
home_address = "{MN_XHOME}"
spi = {MN_SPI}
key = "{MN_KEY}"

[[mobile_node]]
home_address = "{PROBE_XHOME}"
spi = {PROBE_SPI}
key = "{PROBE_KEY}"
"#
    );
    let p = lab.dir.join("xha.toml");
    write_private(&p, &cfg)?;
    Ok((p.display().to_string(), lab.dir.join("xha.sock")))
}

/// x-FA config (ext-b).
pub fn write_xfa_config(lab: &Lab) -> Result<(String, PathBuf)> {
    let d = lab.dir.display();
    let cfg = format!(
        r#"[fa]
interface = "eth0"
address = "{XFA_ADDR}"
prefix_len = 24
advertisement_interval_ms = 1000
control_socket = "{d}/xfa.sock"
"#
    );
    let p = lab.dir.join("xfa.toml");
    write_private(&p, &cfg)?;
    Ok((p.display().to_string(), lab.dir.join("xfa.sock")))
}

/// Starts `mipsec <kind> --config cfg` as process `name` in `role` and waits for its
/// control socket to answer.
pub fn start_daemon(
    lab: &mut Lab,
    role: &str,
    name: &str,
    kind: &str,
    cfg: &str,
    sock: &Path,
) -> Result<()> {
    lab.spawn(role, name, &["mipsec", kind, "--config", cfg])?;
    let t0 = Instant::now();
    let mut last = String::new();
    while t0.elapsed() < Duration::from_secs(10) {
        if !lab.is_running(name) {
            return Err(other(format!(
                "{name} exited at start:\n{}",
                lab.log_tail(name, 20)
            )));
        }
        match mip::status(&lab.exe, sock) {
            Ok(_) => return Ok(()),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(other(format!(
        "{name}: no status within 10 s ({last}):\n{}",
        lab.log_tail(name, 20)
    )))
}

/// Starts the i-HA, the x-HA and the x-FA.
pub fn start_agents(lab: &mut Lab) -> Result<()> {
    let (c, s) = write_iha_config(lab)?;
    start_daemon(lab, "ha", "iha", "ha", &c, &s)?;
    let (c, s) = write_xha_config(lab)?;
    start_daemon(lab, "xha", "xha", "ha", &c, &s)?;
    let (c, s) = write_xfa_config(lab)?;
    start_daemon(lab, "xfa", "xfa", "fa", &c, &s)?;
    Ok(())
}

pub use crate::gateway::{start_gateway, start_vpn, swanctl, GwAuth};

/// Starts one tcpdump per segment in the switch namespace (on the segment's bridge, which
/// is promiscuous while captured, so it sees every forwarded frame), writing
/// `DIR/<segment>.pcap`. Process names are `capture-<segment>`.
pub fn start_captures(lab: &mut Lab, dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut files = Vec::new();
    for (seg, br) in SEGMENTS {
        let file = dir.join(format!("{seg}.pcap"));
        let _ = std::fs::remove_file(&file);
        let f = file.display().to_string();
        let name = format!("capture-{seg}");
        lab.spawn_prog(
            "sw",
            &name,
            "tcpdump".as_ref(),
            &[
                "-i",
                br,
                "-n",
                "--immediate-mode",
                "-U",
                "-s",
                "0",
                "-w",
                &f,
            ],
        )?;
        files.push(file);
    }
    let t0 = Instant::now();
    for (seg, _) in SEGMENTS {
        let log = lab.log_path(&format!("capture-{seg}"));
        while !std::fs::read_to_string(&log).is_ok_and(|s| s.contains("listening on")) {
            if t0.elapsed() > Duration::from_secs(10) {
                return Err(other(format!("tcpdump on {seg} did not start")));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(files)
}

/// Stops the captures started by [`start_captures`] (SIGINT: tcpdump flushes).
pub fn stop_captures(lab: &mut Lab) {
    for (seg, _) in SEGMENTS {
        lab.stop(&format!("capture-{seg}"), libc::SIGINT);
    }
}
