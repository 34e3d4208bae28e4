//! The mobile node's user data: the gate of the core decides for every packet,
//! at the instant it is sent; this file only encapsulates, decapsulates and
//! watches the home agent's tunnel for silence (a dead binding, a lost NAT
//! mapping), which it reports to the core.

use super::{Daemon, Via};
use mip4::wire::MIP_PORT;
use mobility::{Gate, Layer, Mode, Tunnel};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant, SystemTime};
use tracing::{debug, warn};

/// An RFC 3519 Tunnel Data header for IPv4, before each tunnelled packet.
const TD_HEADER: [u8; 4] = mip4::wire::tunnel::TunnelData::header(4);

/// Behind a NAT (RFC 3519 UDP tunnelling): when we keep sending user data but have
/// heard nothing from the home agent for this long, the NAT may have dropped or
/// changed our mapping (RFC 3519 section 4.10), and a keepalive is sent at once.
const NAT_SILENCE: Duration = Duration::from_millis(500);
/// How long that keepalive's echo reply may take before the binding is reported
/// silent (at least; twice the registration round trip if longer).
const NAT_PROBE_WAIT: Duration = Duration::from_millis(300);
/// IP-in-IP (no NAT): user data goes out but nothing came back from the home agent
/// for this long: ask it (an echo through the tunnel).
const BINDING_SILENCE: Duration = Duration::from_millis(1000);
/// How long that echo may take before the binding is reported silent.
const BINDING_PROBE_WAIT: Duration = Duration::from_millis(1000);
/// Mode f with direct delivery (RFC 5944 3.6.1.1): the foreign agent hands user
/// data to the node natively both ways, so it never shows whether the home agent
/// still tunnels to us. Every this often (unless the home agent was heard within
/// [`BINDING_SILENCE`], a registration reply), an echo from the home address to it
/// goes out through the agent; its answer comes back only through a binding the
/// home agent holds. One echo per 2 s while attached through an agent.
pub(super) const DIRECT_SILENCE: Duration = Duration::from_millis(2000);
/// The identifier of the node's liveness echoes ("mi").
pub(super) const ECHO_ID: u16 = 0x6d69;

/// Where a burst's sends go: one link's IP-in-IP socket, or its RFC 3519 socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TxTarget {
    Link(usize),
    /// RFC 3519 Tunnel Data from link `.0`'s care-of address to `.1`.
    Udp(usize, SocketAddrV4),
}

/// The IP-in-IP sends of one burst of user packets (a wake-up of the TUN or of the
/// x-home device and what else it had queued), sent together with `sendmmsg` at the
/// burst's end instead of one system call each. Every packet was let through by the
/// gate when it was read, as before; the burst is handled without awaiting anything
/// else, so nothing can change the gate before it leaves. Outside a burst (a
/// released queue, keepalives) sends go at once.
#[derive(Default)]
pub(super) struct TxBatch {
    on: bool,
    target: Option<TxTarget>,
    batch: netio::raw_batch::RawSendBatch,
    /// Tunnel Data messages for one UDP GSO send (`TxTarget::Udp`).
    udp: netio::udp::GsoBatch,
}

impl TxBatch {
    pub(super) fn start(&mut self) {
        self.on = true;
    }
}

impl Daemon {
    /// Queues `packet` for `target` when a burst is being read (sending what was
    /// queued for another socket first); false when it must go at once.
    pub(super) async fn batch_tx(
        &mut self,
        target: TxTarget,
        packet: &[u8],
        dst: Ipv4Addr,
    ) -> bool {
        if !self.tx.on {
            return false;
        }
        if self.tx.target != Some(target) {
            self.send_tx_batch().await;
            self.tx.target = Some(target);
        }
        self.tx.batch.push(packet, dst);
        true
    }

    /// Ends a burst: sends what it queued.
    pub(super) async fn flush_tx(&mut self) {
        self.send_tx_batch().await;
        self.tx.on = false;
    }

    /// Queues one RFC 3519 Tunnel Data message (`packet` behind its header) for `dst`
    /// when a burst is being read; false when it must go at once.
    async fn batch_udp(&mut self, li: usize, dst: SocketAddrV4, packet: &[u8]) -> bool {
        if !self.tx.on {
            return false;
        }
        let target = TxTarget::Udp(li, dst);
        if self.tx.target != Some(target) {
            self.send_tx_batch().await;
            self.tx.target = Some(target);
        }
        let tos = netio::raw::outer_tos(packet);
        if !self.tx.udp.push_with_tos(&TD_HEADER, packet, tos) {
            self.send_tx_batch().await;
            self.tx.target = Some(target);
            if !self.tx.udp.push_with_tos(&TD_HEADER, packet, tos) {
                return false;
            }
        }
        true
    }

    async fn send_tx_batch(&mut self) {
        let Some(target) = self.tx.target.take() else {
            return;
        };
        if let TxTarget::Udp(li, dst) = target {
            let n = self.tx.udp.len();
            let inner = self.tx.udp.bytes().saturating_sub(n * TD_HEADER.len());
            let l = &self.links[li];
            let sock = l
                .attached
                .and_then(|a| l.udp.iter().find(|u| u.0 == a.care_of))
                .map(|u| &u.1);
            let Some(sock) = sock else {
                for _ in 0..n {
                    self.counters.drop("no registration socket");
                }
                self.tx.udp.clear();
                return;
            };
            let out = self.dp.send_udp(&mut self.tx.udp, sock, dst, None).await;
            self.counters.tx_packets += out.sent as u64;
            if out.failed == 0 {
                self.counters.tx_bytes += inner as u64;
            } else {
                debug!("udp tunnel send: {:?}", out.error);
                for _ in 0..out.failed {
                    self.counters.drop("tunnel send failed");
                }
            }
            return;
        }
        if self.tx.batch.is_empty() {
            return;
        }
        let sock = match target {
            TxTarget::Link(li) => self
                .links
                .get(li)
                .and_then(|l| l.raw.as_ref())
                .map(|r| &r.1),
            TxTarget::Udp(..) => None,
        };
        let Some(sock) = sock else {
            for _ in 0..self.tx.batch.len() {
                self.counters.drop("no tunnel socket");
            }
            self.tx.batch = netio::raw_batch::RawSendBatch::new();
            return;
        };
        let counters = &mut self.counters;
        let (sent, bytes) = self
            .tx
            .batch
            .flush(sock, |dst, e| {
                debug!("tunnel send to {dst}: {e}");
                counters.drop("tunnel send failed");
            })
            .await;
        self.counters.tx_packets += sent as u64;
        self.counters.tx_bytes += bytes as u64;
    }

    /// A datagram on the registration socket: RFC 3519 tunnel data, or a reply.
    /// A receive on a registration socket: with UDP GRO several datagrams of one
    /// flow (a burst of Tunnel Data), each handled as if received alone.
    pub(super) async fn on_udp_merged(&mut self, li: usize, buf: &[u8], m: netio::RecvMeta) {
        self.dp.count_gro(&m);
        for (at, d) in m.datagrams() {
            let Some(p) = buf.get(at..at + d.len) else {
                return;
            };
            if d.truncated {
                self.counters.drop("truncated datagram");
                continue;
            }
            self.on_udp(li, d.src, p).await;
        }
    }

    pub(super) async fn on_udp(&mut self, li: usize, from: SocketAddrV4, payload: &[u8]) {
        if payload.first() == Some(&mip4::wire::MessageType::TUNNEL_DATA.0) {
            return self.on_udp_tunnel(li, from, payload).await;
        }
        self.node.handle_datagram(
            Instant::now(),
            SystemTime::now(),
            self.links[li].ifindex,
            Via::Plain,
            from,
            payload,
        );
    }

    /// One read from the TUN: a packet, or (offloading) a TCP super-packet cut into
    /// the segments the kernel would have sent; each goes through the gate.
    pub(super) async fn on_tun_read(&mut self, buf: &[u8]) {
        if self.dp.take_tun_read(buf).is_err() {
            return self
                .counters
                .drop(crate::drops::DropReason::BadOffloadPacket.name());
        }
        let segs = self.dp.lend_packets();
        for p in segs.iter() {
            self.on_user_packet(p).await;
        }
        self.dp.restore_packets(segs);
    }

    /// Writes the packets `deliver` queued for the TUN (merged TCP segments).
    pub(super) async fn flush_delivered(&mut self) {
        for _ in 0..self.dp.flush_tun(&self.tun).await {
            self.counters.drop("tun write failed");
        }
    }

    /// A packet from an application (source: the home address), sent only if the
    /// gate of the interface that carries user data (MN-2: `data_path`) is open
    /// at this instant.
    pub(super) async fn on_user_packet(&mut self, packet: &[u8]) {
        let now = Instant::now();
        let Some((src, _)) = wire::ipv4::addresses(packet) else {
            return self.counters.drop("not an IPv4 packet (from tun)");
        };
        if src != self.file.mn.home_address {
            return self.counters.drop("source is not the home address");
        }
        let (li, gate) = self.data_path(now);
        let phys = self.links[li].ifindex;
        match gate {
            Gate::Closed => self.counters.drop("gate closed"),
            Gate::Queued { limit } => {
                if self.queue.len() < limit {
                    self.queue.push_back(packet.to_vec());
                } else {
                    self.counters.drop("gate queued: queue full");
                }
            }
            Gate::OpenInside(Mode::C) => {
                if let Some(Tunnel::Udp { .. }) = self.node.tunnel(phys, Layer::IhaDirect, now) {
                    self.send_udp_tunnel(li, packet).await;
                } else {
                    let ha = self.file.mn.home_agent;
                    self.send_ipip(li, packet, ha).await;
                }
                self.check_liveness(li, now).await;
            }
            Gate::OpenInside(Mode::F) => match self.links[li].attached.and_then(|a| a.agent) {
                // RFC 3024 encapsulating delivery: IP-in-IP to the agent.
                Some(agent) if self.file.mn.encapsulating_delivery => {
                    self.send_ipip(li, packet, agent).await
                }
                // Direct delivery: the routes point at the agent; a packet still in
                // the TUN was routed before they moved.
                _ => self
                    .counters
                    .drop("mode f: routed natively, not through the TUN"),
            },
            Gate::OpenInside(_) => self.counters.drop("at home: routed natively"),
            Gate::OpenViaVpn(_) => {
                self.send_via_vpn_data(packet).await;
                self.check_liveness(li, now).await;
            }
        }
    }

    pub(super) async fn send_ipip(&mut self, li: usize, packet: &[u8], dst: Ipv4Addr) {
        self.ensure_raw(li);
        if self.links[li].raw.is_none() {
            return self.counters.drop("no tunnel socket");
        }
        if self.batch_tx(TxTarget::Link(li), packet, dst).await {
            return;
        }
        let Some((_, raw)) = &self.links[li].raw else {
            return self.counters.drop("no tunnel socket");
        };
        match raw.send_to(packet, dst).await {
            Ok(_) => {
                self.counters.tx_packets += 1;
                self.counters.tx_bytes += packet.len() as u64;
            }
            Err(e) => {
                debug!("tunnel send: {e}");
                self.counters.drop("tunnel send failed");
            }
        }
    }

    async fn send_udp_tunnel(&mut self, li: usize, packet: &[u8]) {
        let ha = self.file.mn.home_agent;
        self.send_udp_tunnel_to(li, packet, ha).await
    }

    /// RFC 3519 Tunnel Data to a home agent (the i-HA inside, the x-HA outside).
    pub(super) async fn send_udp_tunnel_to(&mut self, li: usize, packet: &[u8], ha: Ipv4Addr) {
        if self.udp_at_care_of(li).is_none() {
            return self.counters.drop("no registration socket");
        }
        let dst = SocketAddrV4::new(ha, MIP_PORT);
        if self.batch_udp(li, dst, packet).await {
            return;
        }
        let mut msg = std::mem::take(&mut self.udp_msg);
        msg.clear();
        msg.extend_from_slice(&TD_HEADER);
        msg.extend_from_slice(packet);
        let Some(s) = self.udp_at_care_of(li) else {
            self.udp_msg = msg;
            return self.counters.drop("no registration socket");
        };
        // RFC 2003's outer TOS rule for this tunnel too (`netio::raw::outer_tos`).
        let tos = netio::raw::outer_tos(packet);
        let sent = netio::udp::send_with_tos(s, &msg, dst, None, tos).await;
        self.udp_msg = msg;
        match sent {
            Ok(_) => {
                self.counters.tx_packets += 1;
                self.counters.tx_bytes += packet.len() as u64;
            }
            Err(e) => {
                debug!("udp tunnel send: {e}");
                self.counters.drop("tunnel send failed");
            }
        }
    }

    /// Outside, open through the VPN.
    pub(super) fn via_vpn_open(&self, li: usize) -> bool {
        matches!(
            self.node.gate(self.links[li].ifindex, Instant::now()),
            Gate::OpenViaVpn(_)
        )
    }

    /// Inbound: only while the interface's gate is open inside in mode c (the
    /// tunnel ends at its care-of address).
    fn inbound_open(&self, li: usize) -> bool {
        matches!(
            self.node.gate(self.links[li].ifindex, Instant::now()),
            Gate::OpenInside(Mode::C)
        )
    }

    /// IP-in-IP from the home agent, on link `li`.
    pub(super) async fn on_tunnel(&mut self, li: usize, outer_src: Ipv4Addr, packet: &[u8]) {
        let from_xha = self.x_ha() == Some(outer_src);
        if outer_src != self.file.mn.home_agent && !from_xha {
            return self.counters.drop("tunnel packet not from the home agent");
        }
        let Ok(outer) = wire::ipv4::Ipv4Header::parse(packet) else {
            return self.counters.drop("malformed outer header");
        };
        let Some(inner) = packet.get(outer.header_len..usize::from(outer.total_len)) else {
            return self.counters.drop("malformed outer header");
        };
        if from_xha {
            return self.deliver_xhome(inner).await;
        }
        if !self.inbound_open(li) {
            return self.counters.drop("gate closed");
        }
        self.deliver(li, inner, true).await;
    }

    /// RFC 3519 Tunnel Data from the home agent (the node is behind a NAT).
    async fn on_udp_tunnel(&mut self, li: usize, from: SocketAddrV4, payload: &[u8]) {
        if Some(*from.ip()) == self.x_ha() {
            let Ok(td) = mip4::wire::tunnel::TunnelData::parse(payload) else {
                return self.counters.drop("malformed tunnel data");
            };
            if td.next_header != 4 {
                return self.counters.drop("tunnel data is not IPv4");
            }
            return self.deliver_xhome(td.packet).await;
        }
        if *from.ip() != self.file.mn.home_agent || self.links[li].live.udp_tunnel.is_none() {
            return self.counters.drop("tunnel data not from the home agent");
        }
        if !self.inbound_open(li) {
            return self.counters.drop("gate closed");
        }
        let Ok(td) = mip4::wire::tunnel::TunnelData::parse(payload) else {
            return self.counters.drop("malformed tunnel data");
        };
        if td.next_header != 4 {
            return self.counters.drop("tunnel data is not IPv4");
        }
        // From the home agent's kernel (`kernel_encap`) over a virtual link, the inner
        // checksum may be left partial, as through IP-in-IP: completed the same way.
        self.deliver(li, td.packet, true).await;
    }

    /// An inner packet for the home address, from the home agent's tunnel on
    /// link `li` (or through the VPN run over it); `ipip`: from a tunnel socket, where
    /// the kernel's GRO may have merged it (IP-in-IP) or the home agent's kernel may
    /// have left its checksum partial (IP-in-IP, RFC 3519).
    pub(super) async fn deliver(&mut self, li: usize, inner: &[u8], ipip: bool) {
        let Ok(h) = wire::ipv4::Ipv4Header::parse(inner) else {
            return self.counters.drop("malformed inner packet");
        };
        if h.dst != self.file.mn.home_address {
            return self
                .counters
                .drop("inner destination is not the home address");
        }
        if let Some(l) = self.links.get_mut(li) {
            l.live.ha_heard = Some(Instant::now());
        }
        let written = if ipip {
            self.dp.write_tun_ipip(&self.tun, inner).await
        } else {
            self.dp.write_tun(&self.tun, inner).await
        };
        match written {
            Ok(_) => {
                self.counters.rx_packets += 1;
                self.counters.rx_bytes += inner.len() as u64;
            }
            Err(e) => {
                warn!("tun send: {e}");
                self.counters.drop("tun write failed");
            }
        }
    }

    /// We are sending through the tunnel: if the home agent has been silent for a
    /// while, ask it for an answer (an echo inside the tunnel, or an RFC 3519
    /// keepalive behind a NAT). A home agent that lost our binding (restarted
    /// without its state) or a NAT that lost our mapping shows as that answer not
    /// coming back; the timer then tells the core, which re-registers.
    pub(super) async fn check_liveness(&mut self, li: usize, now: Instant) {
        let live = &self.links[li].live;
        if live.probe.is_some() {
            return;
        }
        // Without a NAT there is no mapping to lose quickly, only a binding: ask
        // less eagerly, so that a loaded link does not look dead.
        let (silence, floor) = if live.udp_tunnel.is_some() {
            (NAT_SILENCE, NAT_PROBE_WAIT)
        } else {
            (BINDING_SILENCE, BINDING_PROBE_WAIT)
        };
        if live
            .ha_heard
            .is_some_and(|h| now.duration_since(h) < silence)
        {
            return;
        }
        self.send_keepalive(li).await;
        // A slow path (satellite, congested LTE) gets longer than the floor: twice the
        // last registration round trip, so a slow echo does not look like a lost mapping.
        let l = &mut self.links[li];
        let wait = floor.max(l.last_rtt.unwrap_or_default() * 2);
        l.live.probe = Some((now, now + wait));
    }

    /// Keepalives (RFC 3519) and the liveness probes' deadlines, per link.
    pub(super) async fn on_liveness_timer(&mut self, now: Instant, wall: SystemTime) {
        for li in 0..self.links.len() {
            self.link_liveness_timer(li, now, wall).await;
        }
    }

    async fn link_liveness_timer(&mut self, li: usize, now: Instant, wall: SystemTime) {
        self.check_direct_delivery(li, now).await;
        let open = self.inbound_open(li) || self.via_vpn_open(li) || self.direct_open(li);
        let live = &self.links[li].live;
        if let Some(k) = live
            .udp_tunnel
            .filter(|k| *k > 0 && live.next_keepalive.is_some_and(|t| t <= now))
        {
            self.links[li].live.next_keepalive = Some(now + Duration::from_secs(u64::from(k)));
            if open {
                self.send_keepalive(li).await;
            }
        }
        let l = &mut self.links[li];
        if let Some((sent, _)) = l.live.probe.filter(|p| p.1 <= now) {
            l.live.probe = None;
            if open && l.live.ha_heard.is_none_or(|h| h < sent) {
                if l.live.udp_tunnel.is_some() {
                    warn!("no answer from the home agent through the NAT: re-registering for a fresh mapping");
                    self.counters.nat_reregistrations += 1;
                } else {
                    warn!("no answer from the home agent through the tunnel: binding presumed lost, re-registering");
                    self.counters.dead_binding_reregistrations += 1;
                }
                let phys = self.links[li].ifindex;
                self.node.handle_binding_silent(now, wall, phys);
            }
        }
    }

    /// Mode f with direct delivery on link `li`: user data goes to and comes from the
    /// agent natively.
    fn direct_open(&self, li: usize) -> bool {
        let phys = self.links[li].ifindex;
        matches!(self.routes, super::Routes::Agent(_, dev) if dev == phys)
            && matches!(
                self.node.gate(phys, Instant::now()),
                Gate::OpenInside(Mode::F)
            )
    }

    /// At the direct-delivery deadline: unless the home agent was heard within
    /// [`BINDING_SILENCE`], an echo from the home address to it, through the agent
    /// (the user table's routes pick the agent and the home address as source). Its
    /// answer arrives on the link's ICMP socket (`on_icmp`). A home agent that
    /// restarted without our binding sends it to the home network instead, and the
    /// probe's deadline tells the core, which re-registers through the agent.
    async fn check_direct_delivery(&mut self, li: usize, now: Instant) {
        if !self.direct_open(li) {
            self.links[li].live.next_direct_check = None;
            return;
        }
        let live = &mut self.links[li].live;
        if live.next_direct_check.is_some_and(|t| t > now) {
            return;
        }
        live.next_direct_check = Some(now + DIRECT_SILENCE);
        if live.probe.is_some()
            || live
                .ha_heard
                .is_some_and(|h| now.duration_since(h) < BINDING_SILENCE)
        {
            return;
        }
        let icmp = self.next_echo(li);
        let l = &mut self.links[li];
        if let Err(e) = l.icmp_rx.send_to(&icmp, self.file.mn.home_agent).await {
            debug!("liveness echo through the agent: {e}");
        }
        let wait = BINDING_PROBE_WAIT.max(l.last_rtt.unwrap_or_default() * 2);
        l.live.probe = Some((now, now + wait));
    }

    /// The next liveness echo request of link `li` (ICMP, checksummed).
    fn next_echo(&mut self, li: usize) -> Vec<u8> {
        let live = &mut self.links[li].live;
        live.keepalive_seq = live.keepalive_seq.wrapping_add(1);
        wire::icmp::Echo {
            request: true,
            ident: ECHO_ID,
            seq: live.keepalive_seq,
            data: &[],
        }
        .emit()
    }

    /// An ICMP echo request to the home agent inside the tunnel: an RFC 3519
    /// keepalive through the UDP tunnel (it keeps the NAT's mapping alive), or,
    /// without a NAT, inside IP-in-IP. The home agent's answer comes back through
    /// its tunnel only while it holds our binding.
    async fn send_keepalive(&mut self, li: usize) {
        let icmp = self.next_echo(li);
        let m = &self.file.mn;
        let inner = wire::ipv4::Ipv4Header::build(m.home_address, m.home_agent, 1, &icmp);
        if self.via_vpn_open(li) {
            // Outside: the echo goes the way user data does (IP-in-IP from the TIA,
            // through the VPN), so its answer shows the whole stack holds.
            return self.send_via_vpn_data(&inner).await;
        }
        if self.links[li].live.udp_tunnel.is_some() {
            return self.send_udp_tunnel(li, &inner).await;
        }
        let Some((_, raw)) = &self.links[li].raw else {
            return;
        };
        if let Err(e) = raw.send_to(&inner, m.home_agent).await {
            debug!("liveness echo: {e}");
        }
    }
}
