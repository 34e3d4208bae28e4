//! The lab topology: seven namespaces (switch, router, HA, MN, CN, FA, and EV, a
//! stranger's host at 10.30.0.66 on the foreign agent's link), six bridged
//! segments inside the switch namespace, and MN moves between segments.
//!
//! int-b is served by a foreign agent (FA namespace at 10.30.0.1) and has no "DHCP", so
//! the MN uses mode f there. Besides the segments drawn below: int-c 10.60.0.0/24 is a
//! second co-located segment, and nat 192.168.1.0/24 sits behind an nftables
//! masquerade in the router (RFC 3519 UDP tunneling).
//!
//! ```text
//!   home 10.10.0.0/24        int-a 10.20.0.0/24   int-b 10.30.0.0/24   servers 10.40.0.0/24
//!   [br-home]                [br-inta]            [br-intb]            [br-srv]
//!    |  ha  |  mn(port moves)    |                    |                   |  cn
//!   HA .1   MN .100 / .50        |    FA .1 (CoA)     |                  CN .10
//!    +--------- rt eth0 .254 --- rt eth1 .254 ------- rt eth2 .254 ------ rt eth3 .254
//! ```

use std::fs::File;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::netns::{self, ip, other, Result};

/// A segment the MN can be attached to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Segment {
    Home,
    IntA,
    /// A foreign-agent-only network: no address is handed out.
    IntB,
    IntC,
    /// Behind a masquerading NAT.
    Nat,
    /// Enterprise lab only (see `enterprise.rs`): outside, co-located care-of addresses.
    ExtA,
    /// Enterprise lab only: outside, served by the x-HA's foreign agent, no addresses.
    ExtB,
    /// Enterprise lab only: outside, behind the internet core's masquerade (a hotel).
    ExtNat,
}

impl Segment {
    pub fn name(self) -> &'static str {
        match self {
            Segment::Home => "home",
            Segment::IntA => "int-a",
            Segment::IntB => "int-b",
            Segment::IntC => "int-c",
            Segment::Nat => "nat",
            Segment::ExtA => "ext-a",
            Segment::ExtB => "ext-b",
            Segment::ExtNat => "ext-nat",
        }
    }
    pub fn bridge(self) -> &'static str {
        match self {
            Segment::Home => "br-home",
            Segment::IntA => "br-inta",
            Segment::IntB => "br-intb",
            Segment::IntC => "br-intc",
            Segment::Nat => "br-nat",
            Segment::ExtA => "br-exta",
            Segment::ExtB => "br-extb",
            Segment::ExtNat => "br-extnat",
        }
    }
    /// The address the lab's "DHCP" gives the MN on this segment, which is also the
    /// care-of address it registers; on int-b (no DHCP), the foreign agent's.
    pub fn mn_addr(self) -> Ipv4Addr {
        match self {
            Segment::Home => MN_HOME,
            Segment::IntA => Ipv4Addr::new(10, 20, 0, 50),
            Segment::IntB => FA_ADDR,
            Segment::IntC => Ipv4Addr::new(10, 60, 0, 50),
            Segment::Nat => Ipv4Addr::new(192, 168, 1, 50),
            Segment::ExtA => Ipv4Addr::new(198, 51, 100, 50),
            Segment::ExtB => XFA_ADDR,
            Segment::ExtNat => Ipv4Addr::new(192, 168, 100, 50),
        }
    }

    /// Whether the lab plays DHCP on this segment.
    pub fn has_dhcp(self) -> bool {
        !matches!(self, Segment::IntB | Segment::ExtB)
    }
    /// The segment's router (x.x.x.254).
    pub fn gateway(self) -> Ipv4Addr {
        let o = self.mn_addr().octets();
        Ipv4Addr::new(o[0], o[1], o[2], 254)
    }
    pub fn parse(s: &str) -> Option<Segment> {
        match s {
            "home" => Some(Segment::Home),
            "int-a" | "inta" => Some(Segment::IntA),
            "int-b" | "intb" => Some(Segment::IntB),
            "int-c" | "intc" => Some(Segment::IntC),
            "nat" => Some(Segment::Nat),
            "ext-a" | "exta" => Some(Segment::ExtA),
            "ext-b" | "extb" => Some(Segment::ExtB),
            "ext-nat" | "extnat" => Some(Segment::ExtNat),
            _ => None,
        }
    }
}

pub const HA_ADDR: Ipv4Addr = Ipv4Addr::new(10, 10, 0, 1);
pub const MN_HOME: Ipv4Addr = Ipv4Addr::new(10, 10, 0, 100);
pub const CN_ADDR: Ipv4Addr = Ipv4Addr::new(10, 40, 0, 10);
/// The foreign agent on int-b (its address and the care-of address it offers).
pub const FA_ADDR: Ipv4Addr = Ipv4Addr::new(10, 30, 0, 1);
/// The x-HA's foreign agent on ext-b (enterprise lab).
pub const XFA_ADDR: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
/// A stranger's host on the foreign agent's link (namespace role `ev`).
pub const STRANGER_ADDR: Ipv4Addr = Ipv4Addr::new(10, 30, 0, 66);
/// The NAT's address towards the inside (what the HA sees behind it).
pub const NAT_OUTSIDE: Ipv4Addr = Ipv4Addr::new(10, 10, 0, 254);

/// A process the lab started inside one of its namespaces.
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
}

/// One running lab. Dropping it kills its processes and deletes its namespaces.
pub struct Lab {
    pub prefix: String,
    /// The `mipsec-lab` executable used for helpers and daemons.
    pub exe: PathBuf,
    /// Private directory (configs, sockets, logs) under /run/mipsec-lab.
    pub dir: PathBuf,
    pub mn_segment: Segment,
    procs: Vec<Proc>,
    keep: bool,
}

impl Lab {
    /// Builds the topology with a fresh prefix. The MN starts at home.
    pub fn build(exe: &Path) -> Result<Lab> {
        netns::install_signal_cleanup();
        let prefix = netns::fresh_prefix();
        let dir = netns::claim_prefix(&prefix)?;
        netns::register(&prefix);
        let mut lab = Lab {
            prefix,
            exe: exe.to_path_buf(),
            dir,
            mn_segment: Segment::Home,
            procs: Vec::new(),
            keep: false,
        };
        lab.setup()?; // on error, Drop removes whatever exists
        Ok(lab)
    }

    /// Namespace name of a role: `sw`, `rt`, `ha`, `mn`, `cn`.
    pub fn ns(&self, role: &str) -> String {
        format!("{}{role}", self.prefix)
    }

    fn setup(&mut self) -> Result<()> {
        for r in netns::ROLES {
            ip(&["netns", "add", &self.ns(r)])?;
        }
        for r in netns::ROLES {
            let ns = self.ns(r);
            let forward = if matches!(r, "rt" | "ha" | "fa") {
                "1"
            } else {
                "0"
            };
            netns::run(
                "ip",
                &[
                    "netns",
                    "exec",
                    &ns,
                    "sysctl",
                    "-qw",
                    &format!("net.ipv4.ip_forward={forward}"),
                    "net.ipv4.conf.all.rp_filter=0",
                    "net.ipv4.conf.default.rp_filter=0",
                    "net.ipv6.conf.all.disable_ipv6=1",
                    "net.ipv6.conf.default.disable_ipv6=1",
                ],
            )?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        let sw = self.ns("sw");
        for br in [
            "br-home", "br-inta", "br-intb", "br-srv", "br-intc", "br-nat",
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
        // (switch port, namespace, interface, bridge, address/len)
        let links: [(&str, &str, &str, &str, &str); 11] = [
            ("rt4", "rt", "eth4", "br-intc", "10.60.0.254/24"),
            ("rt5", "rt", "eth5", "br-nat", "192.168.1.254/24"),
            ("fa", "fa", "eth0", "br-intb", "10.30.0.1/24"),
            ("ev", "ev", "eth0", "br-intb", "10.30.0.66/24"),
            ("ha", "ha", "eth0", "br-home", "10.10.0.1/24"),
            ("cn", "cn", "eth0", "br-srv", "10.40.0.10/24"),
            ("rt0", "rt", "eth0", "br-home", "10.10.0.254/24"),
            ("rt1", "rt", "eth1", "br-inta", "10.20.0.254/24"),
            ("rt2", "rt", "eth2", "br-intb", "10.30.0.254/24"),
            ("rt3", "rt", "eth3", "br-srv", "10.40.0.254/24"),
            ("mn", "mn", "eth0", "br-home", "10.10.0.100/24"),
        ];
        for (port, role, ifname, br, addr) in links {
            let ns = self.ns(role);
            ip(&[
                "-n", &sw, "link", "add", port, "type", "veth", "peer", "name", ifname, "netns",
                &ns,
            ])?;
            ip(&["-n", &sw, "link", "set", port, "master", br])?;
            ip(&["-n", &sw, "link", "set", port, "up"])?;
            ip(&["-n", &ns, "addr", "add", addr, "dev", ifname])?;
            ip(&["-n", &ns, "link", "set", ifname, "up"])?;
        }
        for (role, gw) in [
            ("ha", "10.10.0.254"),
            ("cn", "10.40.0.254"),
            ("mn", "10.10.0.254"),
            ("fa", "10.30.0.254"),
            ("ev", "10.30.0.254"),
        ] {
            ip(&["-n", &self.ns(role), "route", "add", "default", "via", gw])?;
        }
        // The NAT segment: masquerade whatever leaves it (a home router).
        let rules = "table ip nat {\n chain post {\n  type nat hook postrouting priority 100;\n  ip saddr 192.168.1.0/24 oifname != \"eth5\" masquerade\n }\n}\n";
        let path = self.dir.join("nat.nft");
        std::fs::write(&path, rules)?;
        netns::run(
            "ip",
            &[
                "netns",
                "exec",
                &self.ns("rt"),
                "nft",
                "-f",
                &path.display().to_string(),
            ],
        )?;
        // MIPSEC_LAB_USO=on keeps UDP segmentation offload on the daemons' links, as on
        // a NIC with USO: a GSO send then crosses the lab whole (benches only: captures
        // there show super-datagrams, not the wire).
        if !std::env::var("MIPSEC_LAB_USO").is_ok_and(|v| v == "on") {
            for role in ["ha", "mn", "fa"] {
                self.no_udp_segmentation(role)?;
            }
        }
        // For A/B measurements: GRO on the daemons' links, as a NIC has it by default
        // (a veth merges nothing unless asked). MIPSEC_LAB_GRO=on.
        if std::env::var("MIPSEC_LAB_GRO").is_ok_and(|v| v == "on") {
            for role in ["ha", "mn", "fa"] {
                self.set_gro(role, true)?;
            }
        }
        Ok(())
    }

    /// Generic receive offload on every interface of `role`'s namespace (`ethtool -K
    /// <dev> gro on|off`): a veth with GRO merges what it receives of one flow before
    /// the stack, as a NIC's driver does, so a UDP socket with `UDP_GRO` takes a burst
    /// in one receive. A veth only takes forwarded packets through its GRO path when
    /// its peer has no TSO (`veth_skb_is_eligible_for_gro`), so the switch's port of
    /// `role` gets `tso off` with it (a TCP super-packet forwarded to `role` is then
    /// cut at that port and merged again by the GRO, as between two NICs). A capture
    /// on `role`'s interface sees the merged packets, not the wire: capture on the
    /// switch side instead.
    pub fn set_gro(&self, role: &str, on: bool) -> Result<()> {
        let v = if on { "on" } else { "off" };
        let tso = if on { "off" } else { "on" };
        let sw = self.ns("sw");
        netns::run(
            "ip",
            &["netns", "exec", &sw, "ethtool", "-K", role, "tso", tso],
        )
        .map_err(|e| other(format!("ethtool -K {role} tso {tso} in {sw}: {e}")))?;
        let ns = self.ns(role);
        for (name, ether) in self.links_of(role)? {
            if !ether {
                continue;
            }
            netns::run(
                "ip",
                &["netns", "exec", &ns, "ethtool", "-K", &name, "gro", v],
            )
            .map_err(|e| other(format!("ethtool -K {name} gro {v} in {ns}: {e}")))?;
        }
        Ok(())
    }

    /// The interfaces of `role`'s namespace but `lo`: (name, whether it is an Ethernet
    /// device, as a veth is and a TUN is not).
    fn links_of(&self, role: &str) -> Result<Vec<(String, bool)>> {
        let links = netns::run("ip", &["-n", &self.ns(role), "-o", "link", "show"])?;
        Ok(links
            .lines()
            .filter_map(|l| {
                // "3: eth0@if4: <...": the name before '@' or ':'.
                let name = l.split(": ").nth(1)?;
                let name = name.split('@').next().unwrap_or(name);
                (name != "lo").then(|| (name.to_string(), l.contains("link/ether")))
            })
            .collect())
    }

    /// Turns UDP segmentation offload off on every interface of `role`'s namespace:
    /// the daemons' UDP GSO sends (RFC 3519 Tunnel Data) are then cut into their
    /// datagrams before the device, as for a NIC without it, so captures and the leak
    /// check see the datagrams a wire would carry (a veth would carry the
    /// super-datagram whole to the receiver). Needs `ethtool`.
    pub fn no_udp_segmentation(&self, role: &str) -> Result<()> {
        let ns = self.ns(role);
        for (name, _) in self.links_of(role)? {
            no_udp_segmentation_on(&ns, &name)?;
        }
        Ok(())
    }

    /// Moves the MN: carrier flip of its switch port onto the other bridge, then "DHCP"
    /// (flush eth0, add the segment's address and default route). Returns when done.
    /// The NAT changes its mapping, as a home router does after a reboot: masquerade
    /// moves to ports 41000-41999 and connection tracking is flushed, so the next
    /// packet from the NAT segment leaves from a new port.
    pub fn renew_nat_mapping(&self) -> Result<()> {
        let rt = self.ns("rt");
        let nft = |args: &[&str]| {
            let mut a = vec!["netns", "exec", rt.as_str(), "nft"];
            a.extend_from_slice(args);
            netns::run("ip", &a)
        };
        nft(&["flush", "chain", "ip", "nat", "post"])?;
        let rule = "ip saddr 192.168.1.0/24 oifname != \"eth5\"";
        nft(&[
            "add",
            "rule",
            "ip",
            "nat",
            "post",
            &format!("{rule} meta l4proto {{ tcp, udp }} masquerade to :41000-41999"),
        ])?;
        nft(&[
            "add",
            "rule",
            "ip",
            "nat",
            "post",
            &format!("{rule} masquerade"),
        ])?;
        netns::run("ip", &["netns", "exec", &rt, "conntrack", "-F"])?;
        Ok(())
    }

    pub fn move_mn(&mut self, to: Segment) -> Result<()> {
        self.move_mn_route_late(to, Duration::ZERO)
    }

    /// As `move_mn`, with the default route added `late` after the address (a DHCP
    /// client that is slow to add its routes).
    pub fn move_mn_route_late(&mut self, to: Segment, late: Duration) -> Result<()> {
        move_mn_with(&self.prefix, to, late)?;
        self.mn_segment = to;
        Ok(())
    }

    /// Starts `mipsec-lab <args>` inside namespace `role`; stdout+stderr go to a log file.
    pub fn spawn(&mut self, role: &str, name: &str, args: &[&str]) -> Result<u32> {
        let exe = self.exe.clone();
        self.spawn_prog(role, name, exe.as_os_str(), args)
    }

    /// Starts any program inside namespace `role`; stdout+stderr go to `<name>.log`.
    pub fn spawn_prog(
        &mut self,
        role: &str,
        name: &str,
        prog: &std::ffi::OsStr,
        args: &[&str],
    ) -> Result<u32> {
        let log = self.dir.join(format!("{name}.log"));
        let out = File::options().create(true).append(true).open(&log)?;
        let err = out.try_clone()?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns(role)])
            .arg(prog)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        set_pdeathsig(&mut cmd);
        let child = cmd
            .spawn()
            .map_err(|e| other(format!("spawn {name}: {e}")))?;
        let pid = child.id();
        self.procs.push(Proc {
            name: name.to_string(),
            child,
            log,
        });
        Ok(pid)
    }

    /// Whether the named process is still running.
    pub fn is_running(&mut self, name: &str) -> bool {
        self.procs
            .iter_mut()
            .find(|p| p.name == name)
            .is_some_and(|p| matches!(p.child.try_wait(), Ok(None)))
    }

    /// Process id of the named process (the last one started under that name).
    pub fn pid(&self, name: &str) -> Option<u32> {
        self.procs
            .iter()
            .rev()
            .find(|p| p.name == name)
            .map(|p| p.child.id())
    }

    /// Exit status of the named process, if it has exited.
    pub fn exit_status(&mut self, name: &str) -> Option<std::process::ExitStatus> {
        self.procs
            .iter_mut()
            .find(|p| p.name == name)
            .and_then(|p| p.child.try_wait().ok().flatten())
    }

    /// Sends `sig` to the named process without waiting (e.g. SIGSTOP/SIGCONT to
    /// make a daemon fall silent and come back). False if it is not running.
    pub fn signal(&mut self, name: &str, sig: i32) -> bool {
        match self.procs.iter().find(|p| p.name == name) {
            Some(p) => {
                netns::kill(p.child.id() as i32, sig);
                true
            }
            None => false,
        }
    }

    /// Sends `sig` to the named process and waits (up to 5 s, then SIGKILL) for it to exit.
    pub fn stop(&mut self, name: &str, sig: i32) -> Option<std::process::ExitStatus> {
        let idx = self.procs.iter().position(|p| p.name == name)?;
        let mut p = self.procs.remove(idx);
        netns::kill(p.child.id() as i32, sig);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Ok(Some(st)) = p.child.try_wait() {
                return Some(st);
            }
            if Instant::now() > deadline {
                let _ = p.child.kill();
                return p.child.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The log file of a process started with [`Lab::spawn`].
    pub fn log_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.log"))
    }

    /// Last `n` lines of a process log (for error messages).
    pub fn log_tail(&self, name: &str, n: usize) -> String {
        let s = std::fs::read_to_string(self.log_path(name)).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Keep namespaces after drop (debugging); `mipsec-lab cleanup --all` removes them.
    pub fn keep(&mut self) {
        self.keep = true;
    }

    /// Stops all processes (SIGTERM, then SIGKILL) and deletes the namespaces.
    pub fn destroy(&mut self) {
        let names: Vec<String> = self.procs.iter().map(|p| p.name.clone()).collect();
        for n in names.iter().rev() {
            self.stop(n, libc::SIGTERM);
        }
        if !self.keep {
            netns::destroy_prefix(&self.prefix);
        }
        netns::unregister(&self.prefix);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.destroy();
    }
}

/// Moves the MN of the lab with `prefix` (see [`Lab::move_mn`]); usable from another
/// process, e.g. `mipsec-lab move <prefix> int-a` next to `mipsec-lab up`.
/// `ethtool -K <dev> tx-udp-segmentation off` in namespace `ns` (see
/// `Lab::no_udp_segmentation`).
pub fn no_udp_segmentation_on(ns: &str, dev: &str) -> Result<()> {
    netns::run(
        "ip",
        &[
            "netns",
            "exec",
            ns,
            "ethtool",
            "-K",
            dev,
            "tx-udp-segmentation",
            "off",
        ],
    )
    .map(|_| ())
    .map_err(|e| {
        other(format!(
            "ethtool {dev} in {ns} (scripts/install-deps.sh installs ethtool): {e}"
        ))
    })
}

pub fn move_mn(prefix: &str, to: Segment) -> Result<()> {
    move_mn_with(prefix, to, Duration::ZERO)
}

fn move_mn_with(prefix: &str, to: Segment, route_late: Duration) -> Result<()> {
    let sw = format!("{prefix}sw");
    let mn = format!("{prefix}mn");
    ip(&["-n", &sw, "link", "set", "mn", "down"])?;
    ip(&["-n", &sw, "link", "set", "mn", "master", to.bridge()])?;
    ip(&["-n", &sw, "link", "set", "mn", "up"])?;
    ip(&["-n", &mn, "addr", "flush", "dev", "eth0"])?;
    if !to.has_dhcp() {
        return Ok(());
    }
    let addr = format!("{}/24", to.mn_addr());
    ip(&["-n", &mn, "addr", "add", &addr, "dev", "eth0"])?;
    std::thread::sleep(route_late);
    let gw = to.gateway().to_string();
    ip(&[
        "-n", &mn, "route", "replace", "default", "via", &gw, "dev", "eth0",
    ])?;
    Ok(())
}

/// Children die with the lab (even on SIGKILL of the lab).
pub fn set_pdeathsig(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches only the child.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
}
