//! The outside path of the mobile node (RFC 5265 cvc/fvc, RFC 5266 mc): the VPN
//! client runs as a child process (`mipsec vpn --events`), commanded by the core's
//! `StartIke`, `MobikeUpdate` and `StopVpn` actions, and the three layers meet here:
//!
//! * x-MIP (cvc): the x-home address lives on a TUN device of ours (`mipx0`); the
//!   VPN client is pinned to it, so IKE and ESP to the gateway come out of that
//!   device. Only IKE (UDP 500/4500) and ESP to the gateway are let through, and
//!   only while the x-HA holds our binding; they are tunnelled to the x-HA from the
//!   care-of address (IP-in-IP, or RFC 3519 UDP behind a NAT). The x-HA's tunnel
//!   back is written into the device.
//! * the VPN: the child's TUN holds the TIA; its routes (its own table) carry the
//!   i-HA's address through the tunnel.
//! * i-MIP through the VPN: the registration of the TIA goes from a socket bound to
//!   the TIA (on the child's TUN), and user data is tunnelled IP-in-IP from the TIA
//!   to the i-HA, only while the core's gate says `OpenViaVpn`.
//!
//! In mc the child runs from the physical interface's address and moves with
//! MOBIKE; there is no x-MIP layer.

use super::{net_err, Daemon, Error};
use crate::config::OutsideMode;
use mip4::wire::MIP_PORT;
use mobility::{IfaceId, Layer, Tunnel, Via, VpnEvent};
use netio::raw::{RawIp, RawIpOptions, IPPROTO_IPIP};
use netio::tun::Tun;
use netio::udp::UdpOptions;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Instant, SystemTime};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::UdpSocket;
use tokio::process::{Child, ChildStdin, ChildStdout};
use tracing::{debug, info, warn};

/// The MTUs of the stacked path, so that nothing fragments at any layer on a
/// 1500-octet outside link (RFC 5265 section 5.2 lists the same layers):
///
/// ```text
///   1500  outside link
///   - 32  x-MIP, worst case RFC 3519 UDP (IP 20 + UDP 8 + Tunnel Data 4; IP-in-IP: 20)
///   = 1468  the x-home device (TUNNEL_MTU): IKE/ESP packets from the x-home address
///   - 20  IP (x-home -> gateway)   - 8 UDP 4500 (ESP in UDP)
///   - 8   ESP header (SPI, sequence)   - 8 IV (AES-GCM)   - 16 ICV
///   - 2   pad length + next header, and up to 2 octets of padding (to 4 octets)
///   = 1400 + 4 spare  the VPN client's TUN (VPN_MTU): i-MIP packets from the TIA
///   - 20  i-MIP IP-in-IP (TIA -> i-HA)
///   = 1380  the home address's TUN in the outside modes (HOME_MTU_OUTSIDE)
/// ```
pub const VPN_MTU: u32 = 1400;
pub const HOME_MTU_OUTSIDE: u32 = VPN_MTU - 20;

/// Keys of the VPN client's file that the mobile node sets itself.
pub const OWNED_KEYS: [&str; 10] = [
    "mtu",
    "interface",
    "interfaces",
    "local_address",
    "bind_interface",
    "kill_switch",
    "tun",
    "table",
    "rule_priority",
    "auto_mobike",
];

/// The running VPN client and what it gave us.
pub(super) struct VpnChild {
    child: Child,
    stdin: Option<ChildStdin>,
    pub(super) lines: Lines<BufReader<ChildStdout>>,
    /// The derived configuration file (deleted once the child has read it).
    cfg_path: Option<PathBuf>,
    iface: IfaceId,
}

/// The sockets on the TIA, once the VPN is up.
pub(super) struct TiaPath {
    pub(super) tia: Ipv4Addr,
    pub(super) udp: UdpSocket,
    pub(super) raw: RawIp,
}

/// The outside path's state.
#[derive(Default)]
pub(super) struct Outer {
    /// The x-home device (x-MIP flavour only).
    pub(super) xdev: Option<Tun>,
    pub(super) child: Option<VpnChild>,
    pub(super) tia: Option<TiaPath>,
    pub(super) starts: u64,
    /// fvc: IKE/ESP handed natively to the x-FA (which reverse-tunnels it to the
    /// x-HA), through a header-included raw socket bound to the interface (its
    /// ifindex).
    native: Option<(u32, RawIp)>,
    /// A client told to stop, until it has exited (it holds the TUN and the table
    /// a new one needs), and when it gets killed if it has not.
    pub(super) stopping: Option<Child>,
    pub(super) stop_deadline: Option<Instant>,
    /// A start commanded while the old client was still stopping.
    pending_start: Option<(IfaceId, Ipv4Addr)>,
}

impl Daemon {
    /// The x-home address of the x-MIP flavour.
    pub(super) fn x_home(&self) -> Option<Ipv4Addr> {
        match self.node.config().outside {
            mobility::Outside::Xmip { x_home_addr, .. } => Some(x_home_addr),
            _ => None,
        }
    }

    pub(super) fn x_ha(&self) -> Option<Ipv4Addr> {
        match self.node.config().outside {
            mobility::Outside::Xmip { x_ha, .. } => Some(x_ha),
            _ => None,
        }
    }

    /// Opens the x-home device (x-MIP): the x-home address on it, and the gateway
    /// routed through it, so that the VPN client's IKE and ESP come out here.
    pub(super) async fn open_outer(&mut self) -> Result<(), Error> {
        let m = &self.file.mn;
        if m.outside == OutsideMode::None {
            return Ok(());
        }
        remove_stale_configs(std::path::Path::new(RUN_DIR));
        // The same MTU inside and outside: a connection keeps its segment size
        // when the node moves out.
        if let Err(e) = self
            .nl
            .set_link_mtu(self.tun_ifindex, HOME_MTU_OUTSIDE)
            .await
        {
            warn!("MTU of the home address's device: {e}");
        }
        if m.outside != OutsideMode::Xmip {
            return Ok(());
        }
        let (Some(xh), Some(gw)) = (self.x_home(), self.vpn_gateway) else {
            return Ok(());
        };
        let (tun, idx) = crate::shell::open_tunnel(&m.xhome_device)?;
        if let Err(e) = self.nl.add_address(idx, xh, 32).await {
            debug!("x-home address on {}: {e}", m.xhome_device);
        }
        let r = netio::netlink::Route::new(gw, 32).dev(idx).src(xh);
        self.nl.replace_route(&r).await.map_err(net_err(format!(
            "route to the VPN gateway via {}",
            m.xhome_device
        )))?;
        // The client's sockets are not bound to a device here (see `derived_config`):
        // its IKE and ESP meet the user table first, which sends them the same way.
        let r = r.table(m.user_table);
        self.nl.replace_route(&r).await.map_err(net_err(format!(
            "route to the VPN gateway via {} (user table)",
            m.xhome_device
        )))?;
        self.outer.xdev = Some(tun);
        Ok(())
    }

    /// A packet from the x-home device: the VPN client's IKE or ESP to the gateway.
    /// It leaves only as x-MIP, to the x-HA, while the x-HA holds our binding.
    pub(super) async fn on_xhome_packet(&mut self, packet: &[u8]) {
        let now = Instant::now();
        let (Some(xh), Some(gw), Some(x_ha)) = (self.x_home(), self.vpn_gateway, self.x_ha())
        else {
            return self.counters.drop("x-home packet without x-MIP");
        };
        let Ok(h) = wire::ipv4::Ipv4Header::parse(packet) else {
            return self.counters.drop("x-home: malformed packet");
        };
        // Only the VPN rides x-MIP: IKE (UDP 500/4500, ESP in UDP) and ESP, from the
        // x-home address to the gateway. Anything else would be plaintext outside.
        let ports = packet.get(h.header_len..h.header_len + 4).map(|p| {
            (
                u16::from_be_bytes([p[0], p[1]]),
                u16::from_be_bytes([p[2], p[3]]),
            )
        });
        let vpn = match h.protocol {
            50 => true,
            17 => ports.is_some_and(|(s, d)| matches!(s, 500 | 4500) && matches!(d, 500 | 4500)),
            _ => false,
        };
        if h.src != xh || h.dst != gw || !vpn {
            return self.counters.drop("x-home: not IKE/ESP to the VPN gateway");
        }
        // MN-2: the x-MIP layer exists once, on the interface holding the x-HA's
        // binding.
        let Some(li) = self.xmip_link(now) else {
            return self.counters.drop("x-home: no x-HA binding");
        };
        let l = &self.links[li];
        let colocated = l.attached.is_some_and(|a| a.agent.is_none());
        match self.node.tunnel(l.ifindex, Layer::Xha, now) {
            Some(Tunnel::IpInIp) if colocated => self.send_ipip(li, packet, x_ha).await,
            Some(Tunnel::Udp { .. }) if colocated => {
                self.send_udp_tunnel_to(li, packet, x_ha).await;
            }
            // fvc: through the x-FA, natively (RFC 3024 direct delivery): the agent
            // reverse-tunnels what comes from its visitor's x-home address.
            Some(_) => self.send_native(li, packet).await,
            None => self.counters.drop("x-home: no x-HA binding"),
        }
    }

    async fn send_native(&mut self, li: usize, packet: &[u8]) {
        let phys = self.links[li].ifindex;
        if self.outer.native.as_ref().is_none_or(|n| n.0 != phys) {
            match RawIp::open_with(
                255,
                &RawIpOptions {
                    device: Some(self.links[li].name.clone()),
                    header_included: true,
                    ..RawIpOptions::default()
                },
            ) {
                Ok(r) => self.outer.native = Some((phys, r)),
                Err(e) => {
                    warn!("fvc send socket: {e}");
                    return self.counters.drop("x-home: no send socket");
                }
            }
        }
        let Some((_, r)) = &self.outer.native else {
            return;
        };
        match r.send_packet(packet).await {
            Ok(_) => {
                self.counters.tx_packets += 1;
                self.counters.tx_bytes += packet.len() as u64;
            }
            Err(e) => {
                debug!("fvc send: {e}");
                self.counters.drop("x-home: send to the agent failed");
            }
        }
    }

    /// fvc: the VPN gateway through the agent, for the native sends (a second
    /// route next to the one through the x-home device, found only by sockets
    /// bound to the interface).
    pub(super) fn gateway_via_agent(
        &self,
        phys: u32,
        agent: Ipv4Addr,
    ) -> Option<netio::netlink::Route> {
        if self.file.mn.outside != OutsideMode::Xmip {
            return None;
        }
        let gw = self.vpn_gateway?;
        Some(
            netio::netlink::Route::new(gw, 32)
                .via(agent)
                .dev(phys)
                .metric(100),
        )
    }

    /// Inbound x-MIP: the inner packet must be for the x-home address.
    pub(super) async fn deliver_xhome(&mut self, inner: &[u8]) {
        let Some(xh) = self.x_home() else {
            return self.counters.drop("x-MIP packet without x-MIP");
        };
        if self.xmip_link(Instant::now()).is_none() {
            return self.counters.drop("x-MIP packet without an x-HA binding");
        }
        let Ok(h) = wire::ipv4::Ipv4Header::parse(inner) else {
            return self.counters.drop("x-MIP: malformed inner packet");
        };
        if h.dst != xh {
            return self
                .counters
                .drop("x-MIP: inner destination is not the x-home address");
        }
        let Some(x) = &self.outer.xdev else { return };
        if let Err(e) = x.send(inner).await {
            debug!("x-home device write: {e}");
            self.counters.drop("x-home device write failed");
        }
    }

    /// Runs the core's VPN commands.
    pub(super) async fn on_vpn_action(&mut self, a: mobility::Action) {
        match a {
            mobility::Action::StartIke { iface, local } => {
                self.stop_vpn("a fresh IKE was commanded").await;
                if self.outer.stopping.is_some() {
                    // The old client still holds the TUN and the routing table:
                    // start when it has gone (see `on_vpn_exited`).
                    self.outer.pending_start = Some((iface, local));
                    return;
                }
                self.start_vpn(iface, local);
            }
            mobility::Action::MobikeUpdate { iface, local } => {
                let sent = match self.outer.child.as_mut().and_then(|c| c.stdin.as_mut()) {
                    Some(s) => s
                        .write_all(format!("mobike {local}\n").as_bytes())
                        .await
                        .is_ok(),
                    None => false,
                };
                if !sent {
                    let (now, wall) = (Instant::now(), SystemTime::now());
                    self.node
                        .handle_vpn(now, wall, iface, VpnEvent::MobikeAnswered { ok: false });
                }
            }
            // MN-2: only the interface the client runs for can stop it.
            mobility::Action::StopVpn { iface } if self.vpn_iface().is_none_or(|v| v == iface) => {
                self.stop_vpn("inside").await
            }
            _ => {}
        }
    }

    fn start_vpn(&mut self, iface: IfaceId, local: Ipv4Addr) {
        match self.spawn_vpn(iface, local) {
            Ok(c) => {
                self.outer.starts += 1;
                info!(%local, "VPN client started");
                self.outer.child = Some(c);
            }
            Err(e) => {
                warn!("VPN client: {e}");
                self.counters.drop("VPN client could not start");
                let (now, wall) = (Instant::now(), SystemTime::now());
                self.node.handle_vpn(now, wall, iface, VpnEvent::Down);
            }
        }
    }

    /// The stopping client exited (or was killed): a start that waited for it runs.
    pub(super) fn on_vpn_exited(&mut self) {
        self.outer.stopping = None;
        self.outer.stop_deadline = None;
        if let Some((iface, local)) = self.outer.pending_start.take() {
            self.start_vpn(iface, local);
        }
    }

    /// A stopping client that overran its time is killed.
    pub(super) fn on_stop_deadline(&mut self, now: Instant) {
        if self.outer.stop_deadline.is_some_and(|t| t <= now) {
            self.outer.stop_deadline = None;
            if let Some(c) = self.outer.stopping.as_mut() {
                warn!("the VPN client did not stop within 3 s: killed");
                let _ = c.start_kill();
            }
        }
    }

    fn spawn_vpn(&mut self, iface: IfaceId, local: Ipv4Addr) -> Result<VpnChild, Error> {
        let m = &self.file.mn;
        let Some(user) = &m.vpn_config else {
            return Err(Error::VpnConfig("no vpn_config".into()));
        };
        let text = std::fs::read_to_string(user)
            .map_err(|e| Error::VpnConfig(format!("{}: cannot read: {e}", user.display())))?;
        let interface = match m.outside {
            OutsideMode::Xmip => m.xhome_device.clone(),
            _ => self
                .link_of(iface)
                .map_or_else(|| m.interface.clone(), |li| self.links[li].name.clone()),
        };
        let derived = derived_config(&text, &interface, Some(local), m);
        let dir = PathBuf::from(RUN_DIR);
        crate::shell::create_private_dir(&dir).map_err(Error::VpnClient)?;
        let path = dir.join(format!("mn-{}-vpn.toml", std::process::id()));
        crate::shell::write_private(&path, &derived).map_err(Error::VpnClient)?;
        let (prog, name, mut args) = self_command();
        args.extend(
            ["vpn", "--config"]
                .iter()
                .map(|s| s.to_string())
                .chain([path.display().to_string(), "--events".into()]),
        );
        let mut child = tokio::process::Command::new(prog)
            .arg0(name)
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| Error::VpnClient(format!("spawn mipsec vpn: {e}")))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| Error::VpnClient("no stdout".into()))?;
        let stdin = child.stdin.take();
        Ok(VpnChild {
            child,
            stdin,
            lines: BufReader::new(stdout).lines(),
            cfg_path: Some(path),
            iface,
        })
    }

    /// Stops the VPN client (Delete to the gateway) and forgets the TIA.
    pub(super) async fn stop_vpn(&mut self, why: &str) {
        // A start still waiting for the previous client to exit is cancelled too:
        // otherwise it ran after the node had gone inside (mc soak: a client started
        // on int-a after the gate opened there reconnected from the int-a address on
        // the next link, ARPing for int-a's router on ext-a).
        self.outer.pending_start = None;
        self.outer.tia = None;
        let Some(mut c) = self.outer.child.take() else {
            return;
        };
        info!(why, "stopping the VPN client");
        if let Some(mut s) = c.stdin.take() {
            let _ = s.write_all(b"stop\n").await;
        }
        if let Some(p) = c.cfg_path.take() {
            let _ = std::fs::remove_file(p);
        }
        // It exits after its Delete: the loop waits for that without blocking
        // (see `on_vpn_exited`), and kills it after 3 s.
        if let Some(mut old) = self.outer.stopping.replace(c.child) {
            let _ = old.start_kill();
        }
        self.outer.stop_deadline = Some(Instant::now() + std::time::Duration::from_secs(3));
    }

    /// One line from the VPN client (or its end).
    pub(super) async fn on_vpn_line(&mut self, line: Option<String>) {
        let (now, wall) = (Instant::now(), SystemTime::now());
        let Some(iface) = self.outer.child.as_ref().map(|c| c.iface) else {
            return;
        };
        if let Some(p) = self.outer.child.as_mut().and_then(|c| c.cfg_path.take()) {
            // It has read its configuration (it holds credentials): remove it.
            let _ = std::fs::remove_file(p);
        }
        let Some(line) = line else {
            warn!("the VPN client exited");
            self.outer.child = None;
            self.outer.tia = None;
            self.node.handle_vpn(now, wall, iface, VpnEvent::Down);
            return;
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            return self.counters.drop("VPN client: unreadable event");
        };
        match v["event"].as_str() {
            Some("up") => {
                let tia = v["tia"].as_str().and_then(|t| t.parse::<Ipv4Addr>().ok());
                let tun = v["tun"]
                    .as_str()
                    .unwrap_or(&self.file.mn.vpn_tun)
                    .to_string();
                let Some(tia) = tia else {
                    return self.counters.drop("VPN client: up without a TIA");
                };
                info!(%tia, %tun, natt = ?v["natt"], setup_ms = ?v["setup_ms"], "VPN up");
                match open_tia(tia, &tun) {
                    Ok(p) => self.outer.tia = Some(p),
                    Err(e) => {
                        warn!("{e}");
                        self.outer.tia = None;
                    }
                }
                self.node.handle_vpn(now, wall, iface, VpnEvent::Up { tia });
            }
            Some("down") => {
                info!(reason = ?v["reason"], "VPN down");
                self.outer.tia = None;
                self.node.handle_vpn(now, wall, iface, VpnEvent::Down);
            }
            Some("mobike") => {
                let ok = v["ok"].as_bool() == Some(true);
                info!(ok, ms = ?v["ms"], "MOBIKE answered");
                self.node
                    .handle_vpn(now, wall, iface, VpnEvent::MobikeAnswered { ok });
            }
            Some(other) => debug!(event = other, "VPN client"),
            None => self.counters.drop("VPN client: event without a name"),
        }
    }

    /// A registration request through the VPN (from the TIA to the i-HA).
    pub(super) async fn send_via_vpn(&mut self, t: mobility::Transmit) {
        let now = Instant::now();
        let Some(p) = self.outer.tia.as_ref().filter(|p| p.tia == *t.src.ip()) else {
            self.counters.drop("request through the VPN: no tunnel");
            self.node.handle_send_failed(now, t.iface, Via::Vpn);
            return;
        };
        if let Err(e) = p.udp.send_to(&t.payload, t.dst).await {
            debug!("request through the VPN: {e}");
            self.node.handle_send_failed(now, t.iface, Via::Vpn);
        }
    }

    /// User data through the VPN: IP-in-IP from the TIA to the i-HA.
    pub(super) async fn send_via_vpn_data(&mut self, packet: &[u8]) {
        let ha = self.file.mn.home_agent;
        if self.outer.tia.is_none() {
            return self.counters.drop("outside: no tunnel");
        }
        if self.batch_tx(super::data::TxTarget::Tia, packet, ha).await {
            return;
        }
        let Some(p) = &self.outer.tia else {
            return self.counters.drop("outside: no tunnel");
        };
        match p.raw.send_to(packet, ha).await {
            Ok(_) => {
                self.counters.tx_packets += 1;
                self.counters.tx_bytes += packet.len() as u64;
            }
            Err(e) => {
                debug!("send through the VPN: {e}");
                self.counters.drop("send through the VPN failed");
            }
        }
    }

    /// The interface the VPN client runs for (MN-2: one client at a time).
    pub(super) fn vpn_iface(&self) -> Option<IfaceId> {
        self.outer.child.as_ref().map(|c| c.iface)
    }

    /// A reply of the i-HA through the VPN.
    pub(super) fn on_tia_udp(&mut self, from: SocketAddrV4, payload: &[u8]) {
        let Some(iface) = self.vpn_iface() else {
            return self.counters.drop("reply through the VPN: no client");
        };
        self.node.handle_datagram(
            Instant::now(),
            SystemTime::now(),
            iface,
            Via::Vpn,
            from,
            payload,
        );
    }

    /// IP-in-IP from the i-HA through the VPN.
    pub(super) async fn on_tia_tunnel(&mut self, outer_src: Ipv4Addr, packet: &[u8]) {
        if outer_src != self.file.mn.home_agent {
            return self.counters.drop("VPN tunnel packet not from the i-HA");
        }
        let Some(li) = self.vpn_iface().and_then(|i| self.link_of(i)) else {
            return self.counters.drop("VPN tunnel packet without a client");
        };
        if !self.via_vpn_open(li) {
            return self.counters.drop("gate closed");
        }
        let Ok(outer) = wire::ipv4::Ipv4Header::parse(packet) else {
            return self.counters.drop("malformed outer header");
        };
        let Some(inner) = packet.get(outer.header_len..usize::from(outer.total_len)) else {
            return self.counters.drop("malformed outer header");
        };
        self.deliver(li, inner).await;
    }
}

/// Checks the VPN client's file at start: readable, free of the keys the mobile
/// node sets, and valid once they are added.
pub(super) fn check_vpn_config(m: &crate::config::MnSection) -> Result<(), Error> {
    vpn_config_problem(m).map_err(Error::VpnConfig)
}

fn vpn_config_problem(m: &crate::config::MnSection) -> Result<(), String> {
    let Some(path) = &m.vpn_config else {
        return Err("mn: an outside mode needs vpn_config".into());
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("vpn_config {}: cannot read: {e}", path.display()))?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| {
        format!(
            "vpn_config {}: {}",
            path.display(),
            e.to_string().trim_end()
        )
    })?;
    if let Some(k) = OWNED_KEYS.iter().find(|k| table.contains_key(**k)) {
        return Err(format!(
            "vpn_config {}: `{k}` is set by mipsec mn (it runs the VPN client from the \
             x-home address or the interface, with its own device and table); remove it",
            path.display()
        ));
    }
    let names = m.interface_names();
    let interface = match m.outside {
        OutsideMode::Xmip => m.xhome_device.as_str(),
        _ => names.first().map_or("", String::as_str),
    };
    let derived = derived_config(&text, interface, m.external_home_address, m);
    vpnc::VpnConfig::parse(path, &derived).map(|_| ())
}

/// The user's file plus what the mobile node decides: where IKE runs from, and no
/// kill switch of the client's own (the node's routes and gate fail closed).
fn derived_config(
    text: &str,
    interface: &str,
    local: Option<Ipv4Addr>,
    m: &crate::config::MnSection,
) -> String {
    let local = local
        .map(|l| format!("local_address = \"{l}\"\n"))
        .unwrap_or_default();
    // x-MIP: the client's packets leave through the x-home device (its route), but
    // through a foreign agent (fvc) the answers arrive natively on the physical
    // interface: its sockets must not be bound to the device. mc: bound to the
    // physical interface.
    let bind = m.outside != OutsideMode::Xmip;
    format!(
        "{text}\n# set by mipsec mn\ninterface = \"{interface}\"\n{local}\
         bind_interface = {bind}\nkill_switch = \"off\"\ntun = \"{}\"\ntable = {}\nrule_priority = {}\nmtu = {VPN_MTU}\n",
        m.vpn_tun, m.vpn_table, m.vpn_table
    )
}

/// Where the derived VPN client files go (0700; each 0600, removed once read).
const RUN_DIR: &str = "/run/mipsec";

/// Removes derived VPN client files (they hold credentials) left by a mobile node
/// that was killed before its client read them: `mn-<pid>-vpn.toml` of a pid that
/// no longer runs.
fn remove_stale_configs(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("mn-")
            .and_then(|r| r.strip_suffix("-vpn.toml"))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            debug!("removing {name}, left by a mobile node that is gone");
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// The sockets on the TIA: registrations (port 434) and IP-in-IP with the i-HA,
/// bound to the VPN client's TUN.
fn open_tia(tia: Ipv4Addr, tun: &str) -> Result<TiaPath, Error> {
    let mut o = UdpOptions::new(SocketAddrV4::new(tia, MIP_PORT));
    o.device = Some(tun.to_string());
    o.reuse_addr = true;
    let udp = o
        .bind()
        .map_err(net_err(format!("registration socket on the TIA {tia}")))?;
    let raw = RawIp::open_with(
        IPPROTO_IPIP,
        &RawIpOptions {
            bind_addr: Some(tia),
            device: Some(tun.to_string()),
            header_included: false,
        },
    )
    .map_err(net_err(format!("tunnel socket on the TIA {tia}")))?;
    crate::shell::allow_fragmentation(std::os::fd::AsFd::as_fd(&raw));
    Ok(TiaPath { tia, udp, raw })
}

/// How to run this program's `vpn` subcommand: the executable, the name it goes by
/// (argv[0]), and the words before our own subcommand (`mipsec-lab mipsec mn ...`
/// gives `["mipsec"]`). The executable is this process's own image
/// (`/proc/self/exe`), not its path: a package upgrade that replaced or removed the
/// file while the node runs must not leave it unable to start its VPN client (the
/// path then names a deleted file, and every start outside failed with ENOENT).
fn self_command() -> (PathBuf, String, Vec<String>) {
    let args: Vec<String> = std::env::args().collect();
    let idx = args.iter().position(|a| a == "mn").unwrap_or(1);
    let prefix = args.get(1..idx).map(<[String]>::to_vec).unwrap_or_default();
    let name = args.first().cloned().unwrap_or_else(|| "mipsec".into());
    let own = PathBuf::from("/proc/self/exe");
    let prog = if own.exists() {
        own
    } else {
        std::env::current_exe().unwrap_or_else(|_| PathBuf::from(&name))
    };
    (prog, name, prefix)
}
