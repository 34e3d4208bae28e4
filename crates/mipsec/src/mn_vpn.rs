//! The outside path of the mobile node (RFC 5265 cvc/fvc, RFC 5266 mc): the VPN
//! session (`vpnc::engine::Engine`: IKEv2 and ESP) runs inside this process,
//! commanded by the core's `StartIke`, `MobikeUpdate` and `StopVpn` actions, and the
//! three layers meet here with no kernel device between them:
//!
//! ```text
//!  user packet (home address, from the home TUN)
//!   -> i-MIP  IP-in-IP  TIA -> i-HA            (`send_via_vpn_data`)
//!   -> ESP    sealed by the engine, in UDP 4500 when NAT-T (or plain protocol 50),
//!             x-home address -> gateway         (`seal_and_send`)
//!   -> x-MIP  IP-in-IP or RFC 3519 UDP, care-of -> x-HA (cvc), or natively to the
//!             x-FA (fvc)                        (`send_xmip`)
//! ```
//!
//! Inbound, each layer checks what it strips: the x-MIP tunnel must come from the
//! x-HA and carry a packet for the x-home address (`deliver_xhome`), the packet
//! inside must come from the gateway (`on_vpn_outer`), ESP is opened with its
//! anti-replay window, and what it carried must come from the i-HA to the TIA
//! (`on_vpn_inner`) before the reverse-tunnel checks of `on_tia_tunnel`.
//!
//! IKE rides the same layers: its datagrams are built as UDP from the x-home
//! address and handed to x-MIP. In fvc the x-FA delivers the answers natively, to
//! the x-home address, which is therefore also put on the home TUN (so the kernel
//! takes them in) and read from the session's UDP and ESP sockets.
//!
//! In mc the session runs from the physical interface's address with sockets bound
//! to that interface, and moves with MOBIKE; there is no x-MIP layer.
//!
//! Nothing here owns a TUN or a route of its own: the TIA is never a kernel
//! address, so no kernel-originated packet can use it, and while no session is up
//! the user packets meet the closed gate (the home TUN's fail-closed table).

use super::{Daemon, Error};
use crate::config::OutsideMode;
use mobility::{IfaceId, Layer, Tunnel, Via, VpnEvent};
use netio::raw::{RawIp, RawIpOptions};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Instant, SystemTime};
use tracing::{debug, info, warn};
use vpnc::engine::{Engine, Note};
pub(super) use vpnc::sockets::VpnSockets;

/// The MTUs of the stacked path, so that nothing fragments at any layer on a
/// 1500-octet outside link (RFC 5265 section 5.2 lists the same layers):
///
/// ```text
///   1500  outside link
///   - 32  x-MIP, worst case RFC 3519 UDP (IP 20 + UDP 8 + Tunnel Data 4; IP-in-IP: 20)
///   = 1468  IKE/ESP packets from the x-home address
///   - 20  IP (x-home -> gateway)   - 8 UDP 4500 (ESP in UDP)
///   - 8   ESP header (SPI, sequence)   - 8 IV (AES-GCM)   - 16 ICV
///   - 2   pad length + next header, and up to 2 octets of padding (to 4 octets)
///   = 1400 + 4 spare  the largest packet sealed (VPN_MTU): i-MIP from the TIA
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

/// The running VPN session.
pub(super) struct VpnSession {
    pub(super) eng: Engine,
    cfg: vpnc::VpnConfig,
    /// The interface it was started for (MN-2: one session at a time).
    pub(super) iface: IfaceId,
    /// The TIA, once the first CHILD_SA is up.
    pub(super) tia: Option<Ipv4Addr>,
    pub(super) socks: Option<VpnSockets>,
    /// Reused per packet (no allocation on the data path): the sealed ESP, the
    /// i-MIP datagram around a user packet, and the x-home datagram around the ESP.
    sealbuf: Vec<u8>,
    imip: Vec<u8>,
    xhome: Vec<u8>,
    /// Reused for each received ESP (opened in place).
    openbuf: Vec<u8>,
}

/// The outside path's state.
#[derive(Default)]
pub(super) struct Outer {
    pub(super) vpn: Option<VpnSession>,
    pub(super) starts: u64,
    /// fvc: IKE/ESP handed natively to the x-FA (which reverse-tunnels it to the
    /// x-HA), through a header-included raw socket bound to the interface (its
    /// ifindex).
    native: Option<(u32, RawIp)>,
    /// Fragments of the packets ESP carries or x-MIP carries (the i-HA's IP-in-IP goes
    /// without DF, and the gateway's TUN, MTU 1400, cuts what a connection opened with a
    /// larger MSS still sends): reassembled before the header is stripped, as the kernel
    /// did when these layers were devices.
    pub(super) frags: wire::reassembly::Reassembler,
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

    /// Prepares the outside modes: the home TUN's MTU for the stacked path, and (x-MIP)
    /// the x-home address on the home TUN, so that the kernel takes in what an x-FA
    /// delivers natively to it (fvc).
    pub(super) async fn open_outer(&mut self) -> Result<(), Error> {
        let m = &self.file.mn;
        if m.outside == OutsideMode::None {
            return Ok(());
        }
        // The same MTU inside and outside: a connection keeps its segment size
        // when the node moves out.
        if let Err(e) = self
            .nl
            .set_link_mtu(self.tun_ifindex, HOME_MTU_OUTSIDE)
            .await
        {
            warn!("MTU of the home address's device: {e}");
        }
        if let Some(xh) = self.x_home() {
            if let Err(e) = self.nl.add_address(self.tun_ifindex, xh, 32).await {
                debug!("x-home address on the home TUN: {e}");
            }
        }
        Ok(())
    }

    /// IKE or ESP from the x-home address to the gateway: it leaves only as x-MIP, to
    /// the x-HA, while the x-HA holds our binding. False when it could not.
    async fn send_xmip(&mut self, packet: &[u8]) -> bool {
        let now = Instant::now();
        let (Some(xh), Some(gw), Some(x_ha)) = (self.x_home(), self.vpn_gateway, self.x_ha())
        else {
            self.counters.drop("x-home packet without x-MIP");
            return false;
        };
        let Ok(h) = wire::ipv4::Ipv4Header::parse(packet) else {
            self.counters.drop("x-home: malformed packet");
            return false;
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
            self.counters.drop("x-home: not IKE/ESP to the VPN gateway");
            return false;
        }
        // MN-2: the x-MIP layer exists once, on the interface holding the x-HA's
        // binding.
        let Some(li) = self.xmip_link(now) else {
            self.counters.drop("x-home: no x-HA binding");
            return false;
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
            None => {
                self.counters.drop("x-home: no x-HA binding");
                return false;
            }
        }
        true
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

    /// Runs the core's VPN commands.
    pub(super) async fn on_vpn_action(&mut self, a: mobility::Action) {
        match a {
            mobility::Action::StartIke { iface, local } => {
                self.stop_vpn("a fresh IKE was commanded").await;
                self.start_vpn(iface, local).await;
            }
            mobility::Action::MobikeUpdate { iface, local } => {
                let now = Instant::now();
                let name = self.link_of(iface).map(|li| self.links[li].name.clone());
                let Some(s) = self.outer.vpn.as_mut() else {
                    let wall = SystemTime::now();
                    self.node
                        .handle_vpn(now, wall, iface, VpnEvent::MobikeAnswered { ok: false });
                    return;
                };
                if let (Some(socks), Some(name)) = (&s.socks, name) {
                    if self.file.mn.outside == OutsideMode::Mobike {
                        socks.bind_to(&name);
                    }
                }
                s.eng.mobike(now, local);
                self.flush_vpn().await;
            }
            // MN-2: only the interface the session runs for can stop it.
            mobility::Action::StopVpn { iface } if self.vpn_iface().is_none_or(|v| v == iface) => {
                self.stop_vpn("inside").await
            }
            _ => {}
        }
    }

    async fn start_vpn(&mut self, iface: IfaceId, local: Ipv4Addr) {
        match self.new_session(iface, local) {
            Ok(mut s) => {
                self.outer.starts += 1;
                info!(%local, gateway = %s.eng.gateway(), "VPN session started");
                s.eng.set_local(Some(local));
                s.eng.handle_timeout(Instant::now());
                self.outer.vpn = Some(s);
                self.flush_vpn().await;
            }
            Err(e) => {
                warn!("VPN: {e}");
                self.counters.drop("VPN session could not start");
                let (now, wall) = (Instant::now(), SystemTime::now());
                self.node.handle_vpn(now, wall, iface, VpnEvent::Down);
            }
        }
    }

    fn new_session(&self, iface: IfaceId, local: Ipv4Addr) -> Result<VpnSession, Error> {
        let m = &self.file.mn;
        let Some(path) = &m.vpn_config else {
            return Err(Error::VpnConfig("no vpn_config".into()));
        };
        // Read again at every start: credentials and proposals can change without a
        // restart of the node.
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::VpnConfig(format!("{}: cannot read: {e}", path.display())))?;
        let link = self.link_of(iface).map(|li| self.links[li].name.clone());
        let interface = match m.outside {
            OutsideMode::Xmip => m.xhome_device.clone(),
            _ => link.clone().unwrap_or_else(|| m.interface.clone()),
        };
        let cfg = vpnc::VpnConfig::parse(path, &derived_config(&text, &interface, Some(local), m))
            .map_err(Error::VpnConfig)?;
        let ike_cfg = cfg.ike_config().map_err(Error::VpnConfig)?;
        // Natively arriving IKE and ESP: mc (bound to the interface), and fvc (the x-FA
        // delivers to the x-home address on whatever interface we are on).
        let bind = match m.outside {
            OutsideMode::Mobike => Some(link.unwrap_or(interface)),
            _ => None,
        };
        let socks =
            VpnSockets::open(ike_cfg.natt_port, bind.as_deref()).map_err(Error::VpnClient)?;
        if self.dp.udp_gro {
            if let Err(e) = netio::udp::set_gro(&socks.s4500, true) {
                warn!("VPN: {e}: ESP in UDP taken one datagram at a time");
            }
        }
        let mut seed = [0u8; 32];
        crate::shell::getrandom(&mut seed);
        let eng = Engine::new(
            ike_cfg,
            cfg.gateway.0,
            cfg.reconnect_cap(),
            seed,
            Instant::now(),
        );
        Ok(VpnSession {
            eng,
            cfg,
            iface,
            tia: None,
            socks: Some(socks),
            sealbuf: Vec::with_capacity(2048),
            imip: Vec::with_capacity(2048),
            xhome: Vec::with_capacity(2048),
            openbuf: Vec::with_capacity(2048),
        })
    }

    /// Ends the session: a Delete to the gateway (not waited for), and the TIA is
    /// forgotten.
    pub(super) async fn stop_vpn(&mut self, why: &str) {
        let Some(mut s) = self.outer.vpn.take() else {
            return;
        };
        info!(why, "stopping the VPN session");
        if s.eng.close(Instant::now()) {
            while let Some(t) = s.eng.poll_transmit() {
                self.send_ike(&mut s, t).await;
            }
        }
    }

    /// Sends what the session queued and applies what it says; true when it said
    /// something (the core may then have actions).
    pub(super) async fn flush_vpn(&mut self) -> bool {
        let mut noted = false;
        let Some(mut s) = self.outer.vpn.take() else {
            return false;
        };
        loop {
            if let Some(t) = s.eng.poll_transmit() {
                self.send_ike(&mut s, t).await;
                continue;
            }
            match s.eng.poll_note(Instant::now()) {
                Some(n) => {
                    noted = true;
                    self.on_vpn_note(&mut s, n);
                }
                None => break,
            }
        }
        self.outer.vpn = Some(s);
        noted
    }

    fn on_vpn_note(&mut self, s: &mut VpnSession, n: Note) {
        let (now, wall) = (Instant::now(), SystemTime::now());
        match n {
            Note::Child(c) => vpnc::engine::log_child_keys(s.cfg.esp_key_log.as_deref(), &c),
            Note::Up {
                tia,
                local,
                natt,
                ike_spi,
                setup_ms,
            } => {
                info!(%tia, %local, natt, ike_spi = format!("{ike_spi:016x}"), setup_ms, "VPN up");
                s.tia = Some(tia);
                self.node
                    .handle_vpn(now, wall, s.iface, VpnEvent::Up { tia });
            }
            Note::Down { reason } => {
                info!(reason, "VPN down");
                s.tia = None;
                self.node.handle_vpn(now, wall, s.iface, VpnEvent::Down);
            }
            Note::Mobike { ok, ms, reason, .. } => {
                info!(ok, ?ms, ?reason, "MOBIKE answered");
                self.node
                    .handle_vpn(now, wall, s.iface, VpnEvent::MobikeAnswered { ok });
            }
            Note::Rekeyed { what, spi } => info!(what, spi, "VPN rekeyed"),
        }
    }

    /// One IKE datagram: through x-MIP as UDP from the x-home address, or (mc) from
    /// the session's socket.
    async fn send_ike(&mut self, s: &mut VpnSession, t: vpnc::engine::Transmit) {
        let (SocketAddr::V4(src), SocketAddr::V4(dst)) = (t.src, t.dst) else {
            return;
        };
        if self.file.mn.outside == OutsideMode::Xmip {
            let pkt =
                wire::udp::build_ipv4(*src.ip(), *dst.ip(), src.port(), dst.port(), &t.payload);
            self.send_xmip(&pkt).await;
            return;
        }
        let Some(socks) = &s.socks else { return };
        let sock = if src.port() == 500 {
            &socks.s500
        } else {
            &socks.s4500
        };
        if let Err(e) = netio::udp::send_from(sock, &t.payload, dst, *src.ip()).await {
            debug!("send IKE to {dst}: {e}");
            let local = matches!(
                e.raw_os_error(),
                Some(libc::ENETUNREACH | libc::EHOSTUNREACH | libc::EADDRNOTAVAIL)
            );
            s.eng.ike_send_failed(Instant::now(), local);
        }
    }

    /// Seals `inner` (an IPv4 packet from the TIA) and sends the ESP; false when it
    /// could not (no session or SA, or the layer below refused).
    async fn seal_and_send(&mut self, inner: &[u8]) -> bool {
        let Some(mut s) = self.outer.vpn.take() else {
            return false;
        };
        let now = Instant::now();
        let mut buf = std::mem::take(&mut s.sealbuf);
        // Tunnel mode: the ESP packet's header carries the inner DSCP, ECN Not-ECT (RFC
        // 4301 5.1.2.1, RFC 6040's compatibility mode; `netio::raw::outer_tos`).
        let tos = netio::raw::outer_tos(inner);
        let sent = match s.eng.seal(now, inner, &mut buf) {
            None => false,
            Some(out) if self.file.mn.outside == OutsideMode::Xmip => {
                let mut pkt = std::mem::take(&mut s.xhome);
                if out.udp {
                    let sport = s.eng.natt_port();
                    let dport = out.dst.port();
                    wire::udp::build_ipv4_into(
                        &mut pkt,
                        out.src,
                        *out.dst.ip(),
                        sport,
                        dport,
                        &buf,
                    );
                } else {
                    wire::ipv4::Ipv4Header::build_into(&mut pkt, out.src, *out.dst.ip(), 50, &buf);
                }
                set_tos(&mut pkt, tos);
                let sent = self.send_xmip(&pkt).await;
                s.xhome = pkt;
                sent
            }
            Some(out) => match &s.socks {
                Some(socks) if out.udp => {
                    netio::udp::send_with_tos(&socks.s4500, &buf, out.dst, Some(out.src), tos)
                        .await
                        .is_ok()
                }
                Some(VpnSockets { raw: Some(r), .. }) => {
                    r.send_to_tos(&buf, *out.dst.ip(), tos).await.is_ok()
                }
                _ => false,
            },
        };
        if sent {
            s.eng.esp_sent(now, inner.len());
        } else {
            s.eng.status_mut().tx_errors += 1;
        }
        s.sealbuf = buf;
        self.outer.vpn = Some(s);
        sent
    }

    /// A registration request through the VPN (from the TIA to the i-HA).
    pub(super) async fn send_via_vpn(&mut self, t: mobility::Transmit) {
        let now = Instant::now();
        let tia = self.outer.vpn.as_ref().and_then(|s| s.tia);
        if tia != Some(*t.src.ip()) {
            self.counters.drop("request through the VPN: no tunnel");
            self.node.handle_send_failed(now, t.iface, Via::Vpn);
            return;
        }
        let pkt = wire::udp::build_ipv4(
            *t.src.ip(),
            *t.dst.ip(),
            t.src.port(),
            t.dst.port(),
            &t.payload,
        );
        if !self.seal_and_send(&pkt).await {
            debug!("request through the VPN could not leave");
            self.node.handle_send_failed(now, t.iface, Via::Vpn);
        }
    }

    /// User data through the VPN: IP-in-IP from the TIA to the i-HA.
    pub(super) async fn send_via_vpn_data(&mut self, packet: &[u8]) {
        let ha = self.file.mn.home_agent;
        let Some(s) = self.outer.vpn.as_mut() else {
            return self.counters.drop("outside: no tunnel");
        };
        let Some(tia) = s.tia else {
            return self.counters.drop("outside: no tunnel");
        };
        let mut pkt = std::mem::take(&mut s.imip);
        wire::ipv4::Ipv4Header::build_into(&mut pkt, tia, ha, netio::raw::IPPROTO_IPIP, packet);
        // RFC 2003 3.1: the i-MIP header carries the user packet's DSCP.
        set_tos(&mut pkt, netio::raw::outer_tos(packet));
        let sent = self.seal_and_send(&pkt).await;
        if let Some(s) = self.outer.vpn.as_mut() {
            s.imip = pkt;
        }
        if sent {
            self.counters.tx_packets += 1;
            self.counters.tx_bytes += packet.len() as u64;
        } else {
            self.counters.drop("send through the VPN failed");
        }
    }

    /// The interface the VPN session runs for (MN-2: one session at a time).
    pub(super) fn vpn_iface(&self) -> Option<IfaceId> {
        self.outer.vpn.as_ref().map(|s| s.iface)
    }

    /// The session's next deadline.
    pub(super) fn vpn_deadline(&self) -> Option<Instant> {
        self.outer.vpn.as_ref().and_then(|s| s.eng.poll_timeout())
    }

    pub(super) fn on_vpn_timer(&mut self, now: Instant) {
        if let Some(s) = self.outer.vpn.as_mut() {
            if s.eng.poll_timeout().is_some_and(|t| t <= now) {
                s.eng.handle_timeout(now);
            }
        }
    }

    /// mc: a route appeared; through the session's interface (or any, when the kernel
    /// did not say), an outstanding IKE request goes again (see `Engine::route_added`).
    pub(super) fn on_vpn_route(&mut self, table: u32, oif: Option<u32>, dst: Ipv4Addr, prefix: u8) {
        if self.file.mn.outside != OutsideMode::Mobike || table == self.file.mn.user_table {
            return;
        }
        if let Some(s) = self.outer.vpn.as_mut() {
            if oif.is_none_or(|o| o == s.iface) {
                s.eng.route_added(Instant::now(), dst, prefix);
            }
        }
    }

    /// A receive on the session's NAT-T socket: with UDP GRO several datagrams of
    /// one flow, each handled as if received alone.
    pub(super) async fn on_vpn_udp_merged(&mut self, buf: &mut [u8], m: netio::RecvMeta) {
        self.dp.count_gro(&m);
        for (at, d) in m.datagrams() {
            let Some(b) = buf.get_mut(at..) else { return };
            self.on_vpn_udp(b, d, true).await;
        }
    }

    /// A datagram on one of the session's UDP sockets (`natt`: the NAT-T port).
    pub(super) async fn on_vpn_udp(&mut self, buf: &mut [u8], m: netio::RecvMeta, natt: bool) {
        let now = Instant::now();
        let Some(s) = self.outer.vpn.as_mut() else {
            return;
        };
        let Some(data) = buf.get_mut(..m.len).filter(|_| !m.truncated) else {
            return self.counters.drop("VPN: truncated datagram");
        };
        let port = if natt { s.eng.natt_port() } else { 500 };
        let local = m.dst.or(s.eng.local_ip()).unwrap_or(Ipv4Addr::UNSPECIFIED);
        let (from, to) = (
            SocketAddr::V4(m.src),
            SocketAddr::V4(SocketAddrV4::new(local, port)),
        );
        if !natt {
            return s.eng.handle_ike(now, from, to, data);
        }
        if let Some(r) = s.eng.open_udp(now, from, to, data) {
            if let Some(inner) = data.get(r) {
                self.on_vpn_inner(inner).await;
            }
        }
    }

    /// An ESP packet (outer IPv4 header included) from the session's raw socket.
    pub(super) async fn on_vpn_raw_esp(&mut self, buf: &mut [u8], n: usize) {
        let now = Instant::now();
        let ihl = buf.first().map_or(0, |b| usize::from(b & 0x0f) * 4);
        let Some(s) = self.outer.vpn.as_mut() else {
            return;
        };
        let Some(esp) = buf.get_mut(ihl..n).filter(|_| ihl >= 20) else {
            return self.counters.drop("VPN: malformed ESP packet");
        };
        if let Some(r) = s.eng.open_esp(now, esp) {
            if let Some(inner) = esp.get(r) {
                self.on_vpn_inner(inner).await;
            }
        }
    }

    /// Inbound x-MIP, stripped: the packet inside must be for the x-home address, and
    /// from the gateway (IKE, or ESP in UDP or not).
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
        self.on_vpn_outer(inner).await;
    }

    /// A packet from the gateway to our IKE/ESP address, taken out of x-MIP.
    async fn on_vpn_outer(&mut self, pkt: &[u8]) {
        let now = Instant::now();
        let Ok(h) = wire::ipv4::Ipv4Header::parse(pkt) else {
            return self.counters.drop("VPN: malformed packet");
        };
        let Some(s) = self.outer.vpn.as_mut() else {
            return self.counters.drop("VPN packet without a session");
        };
        if h.src != *s.eng.gateway().ip() {
            return self.counters.drop("VPN packet not from the gateway");
        }
        if h.more_fragments || h.frag_offset != 0 {
            return match self.outer.frags.push(now, &h, pkt) {
                wire::reassembly::Outcome::Complete(whole) => {
                    Box::pin(self.on_vpn_outer(&whole)).await
                }
                wire::reassembly::Outcome::Pending => {}
                wire::reassembly::Outcome::Dropped(why) => self.counters.drop(why),
            };
        }
        let Some(payload) = pkt.get(h.header_len..usize::from(h.total_len)) else {
            return self.counters.drop("VPN: malformed packet");
        };
        let inner = match h.protocol {
            17 => {
                let Ok(u) = wire::udp::UdpPacket::new_checked(payload) else {
                    return self.counters.drop("VPN: malformed UDP");
                };
                let (sport, dport) = (u.src_port(), u.dst_port());
                let from = SocketAddr::V4(SocketAddrV4::new(h.src, sport));
                let to = SocketAddr::V4(SocketAddrV4::new(h.dst, dport));
                if dport == 500 {
                    s.eng.handle_ike(now, from, to, u.payload());
                    return;
                }
                if dport != s.eng.natt_port() {
                    return self.counters.drop("VPN: UDP to neither IKE port");
                }
                let mut data = std::mem::take(&mut s.openbuf);
                data.clear();
                data.extend_from_slice(u.payload());
                let r = s.eng.open_udp(now, from, to, &mut data);
                (data, r)
            }
            50 => {
                let mut data = std::mem::take(&mut s.openbuf);
                data.clear();
                data.extend_from_slice(payload);
                let r = s.eng.open_esp(now, &mut data);
                (data, r)
            }
            _ => return self.counters.drop("VPN: neither IKE nor ESP"),
        };
        let (data, r) = inner;
        if let Some(p) = r.and_then(|r| data.get(r)) {
            self.on_vpn_inner(p).await;
        }
        // Back for the next packet (unless the session ended meanwhile).
        if let Some(s) = self.outer.vpn.as_mut() {
            s.openbuf = data;
        }
    }

    /// What ESP carried: from the i-HA to the TIA, a registration reply or i-MIP;
    /// fragments are put back together first.
    async fn on_vpn_inner(&mut self, pkt: &[u8]) {
        let Ok(h) = wire::ipv4::Ipv4Header::parse(pkt) else {
            return self.counters.drop("VPN: malformed inner packet");
        };
        if h.more_fragments || h.frag_offset != 0 {
            match self.outer.frags.push(Instant::now(), &h, pkt) {
                wire::reassembly::Outcome::Complete(whole) => self.on_vpn_whole(&whole).await,
                wire::reassembly::Outcome::Pending => {}
                wire::reassembly::Outcome::Dropped(why) => self.counters.drop(why),
            }
            return;
        }
        self.on_vpn_whole(pkt).await;
    }

    async fn on_vpn_whole(&mut self, pkt: &[u8]) {
        let Ok(h) = wire::ipv4::Ipv4Header::parse(pkt) else {
            return self.counters.drop("VPN: malformed inner packet");
        };
        let tia = self.outer.vpn.as_ref().and_then(|s| s.tia);
        if Some(h.dst) != tia || h.src != self.file.mn.home_agent {
            return self.counters.drop("VPN: not from the i-HA to the TIA");
        }
        match h.protocol {
            netio::raw::IPPROTO_IPIP => self.on_tia_tunnel(h.src, pkt).await,
            17 => {
                let Some(Ok(u)) = pkt
                    .get(h.header_len..usize::from(h.total_len))
                    .map(wire::udp::UdpPacket::new_checked)
                else {
                    return self.counters.drop("VPN: malformed UDP");
                };
                if u.dst_port() != mip4::wire::MIP_PORT {
                    return self.counters.drop("VPN: UDP not for the registration port");
                }
                self.on_tia_udp(SocketAddrV4::new(h.src, u.src_port()), u.payload());
            }
            _ => self.counters.drop("VPN: neither i-MIP nor a registration"),
        }
    }

    /// A reply of the i-HA through the VPN.
    fn on_tia_udp(&mut self, from: SocketAddrV4, payload: &[u8]) {
        let Some(iface) = self.vpn_iface() else {
            return self.counters.drop("reply through the VPN: no session");
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
    async fn on_tia_tunnel(&mut self, outer_src: Ipv4Addr, packet: &[u8]) {
        if outer_src != self.file.mn.home_agent {
            return self.counters.drop("VPN tunnel packet not from the i-HA");
        }
        let Some(li) = self.vpn_iface().and_then(|i| self.link_of(i)) else {
            return self.counters.drop("VPN tunnel packet without a session");
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
        self.deliver(li, inner, false).await;
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

/// Sets the TOS octet of the IPv4 packet we built in `pkt` and refills its header
/// checksum (0: left as built).
fn set_tos(pkt: &mut [u8], tos: u8) {
    if tos == 0 {
        return;
    }
    if let Ok(mut p) = wire::ipv4::Ipv4Packet::new_checked(pkt) {
        p.set_tos(tos);
        p.fill_checksum();
    }
}
