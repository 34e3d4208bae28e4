//! `mipsec fa`: the foreign agent daemon (mode f; RFC 5944, RFC 3024).
//!
//! Drives [`mip4::fa::ForeignAgent`]: agent advertisements as ICMP multicast on
//! the visited link (and answers to solicitations), registrations relayed on
//! UDP 434, the forward tunnel's exit (IP-in-IP from a visitor's home agent,
//! delivered to the visitor by its link-layer address: a permanent neighbour
//! entry and a host route, never ARP for a home address), and reverse tunneling
//! in both RFC 3024 delivery styles: direct (a policy rule sends packets from a
//! visitor's home address into the agent's TUN) and encapsulating (IP-in-IP from
//! the visitor to the agent). A visitor's link-layer address is learned from the
//! frame that carried its Registration Request (RFC 5944 section 3.7.2), through an
//! `AF_PACKET` tap for UDP 434 on the visited link (`netio::udp_tap`), so an agent
//! restarted without its state relearns it from the node's next request; the kernel's
//! neighbour table is only the fallback when the tap cannot be opened.
//!
//! Only a registered visitor (the home agent's acceptance came back, see
//! [`mip4::fa`]) gets a neighbour entry, host route and rule; replies to nodes are
//! sent as Ethernet frames to the link-layer address the core names, so a request
//! from a stranger on the link leaves nothing behind.

use crate::config::{ConfigError, FaFile};
use crate::control::{ControlServer, StatusRequest};
use crate::drops::{DropCounts, DropReason};
use crate::shell::{io_err, os_err, SetupError, PROTO_FA};
use futures::TryStreamExt;
use mip4::auth::SecurityAssociation;
use mip4::fa::{DeliveryStyle, FaConfig, FaEvent, FaTransmit, ForeignAgent, Visitor};
use mip4::wire::MIP_PORT;
use netio::ipip_encap::{EncapKey, IpipEncap};
use netio::netlink::{Netlink, Route, Rule};
use netio::raw::{RawIp, RawIpOptions, IPPROTO_IPIP};
use netio::tun::Tun;
use netio::udp::{recv_with_meta, send_from, UdpOptions};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

/// Why the foreign agent could not start, or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration file (the message names file, line and field).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A socket, device or system setting could not be set up.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// The visited link's interface has no 6-octet hardware address.
    #[error("{0}: not an Ethernet interface")]
    NotEthernet(String),
    /// The control socket (`control_socket`) could not be created.
    #[error(transparent)]
    ControlSocket(#[from] crate::control::ControlSocketError),
}

/// Runs the foreign agent until SIGINT or SIGTERM.
/// Visitors the kernel's reverse-tunnel map holds at most.
const ENCAP_CAPACITY: u32 = 65_536;

pub fn run(config: &Path) -> Result<(), Error> {
    let file = FaFile::load(config)?;
    crate::shell::block_on(async move {
        let mut d = Daemon::start(file).await?;
        let r = d.run().await;
        d.cleanup().await;
        r
    })
}

#[derive(Default, Debug)]
struct Counters {
    forwarded_packets: u64,
    forwarded_bytes: u64,
    reverse_packets: u64,
    reverse_bytes: u64,
    drops: DropCounts,
}

impl Counters {
    fn drop(&mut self, why: DropReason) {
        self.drops.count(why);
    }
}

struct Daemon {
    file: FaFile,
    core: ForeignAgent,
    udp: UdpSocket,
    icmp_rx: RawIp,
    icmp_tx: RawIp,
    raw: RawIp,
    tun: Tun,
    /// TUN offloads, segmentation, raw-socket batches (`crate::datapath`).
    dp: crate::datapath::DataPath,
    nl: Netlink,
    ifindex: u32,
    /// UDP 434 on the visited link with each frame's source MAC (None: the kernel
    /// refused the tap; the neighbour table is asked instead).
    tap: Option<netio::udp_tap::UdpTap>,
    /// Requests the tap saw that the UDP socket has not delivered yet (bounded).
    tapped: std::collections::VecDeque<netio::udp_tap::Tapped>,
    /// The visited link's own hardware address (source of frames to nodes).
    link_mac: [u8; 6],
    tun_ifindex: u32,
    /// Home addresses with a neighbour entry and host route on the visited link.
    delivered: BTreeSet<Ipv4Addr>,
    /// Home addresses with a reverse-tunnel policy rule.
    ruled: BTreeSet<Ipv4Addr>,
    /// The kernel's reverse-tunnel encapsulation, when attached.
    encap: Option<IpipEncap>,
    counters: Counters,
    ctl_rx: mpsc::Receiver<StatusRequest>,
    _ctl: Option<ControlServer>,
}

impl Daemon {
    async fn start(file: FaFile) -> Result<Daemon, Error> {
        let f = &file.fa;
        let mut cfg = FaConfig::new(f.address, f.prefix_len);
        cfg.adv_interval = Duration::from_millis(f.advertisement_interval_ms);
        cfg.max_lifetime = f.max_lifetime;
        cfg.reverse_tunneling = f.reverse_tunneling;
        cfg.reverse_tunneling_required = f.reverse_tunneling_required;
        cfg.fa_ha_sas = file
            .home_agents
            .iter()
            .map(|h| {
                (
                    h.address,
                    SecurityAssociation::new(h.spi, h.algorithm.into(), &h.key.0),
                )
            })
            .collect();
        let core = ForeignAgent::new(cfg, Instant::now());
        let nl = Netlink::new().map_err(io_err("netlink"))?;
        let ifindex = nl
            .ifindex(&f.interface)
            .await
            .map_err(io_err("interface"))?;
        let link_mac: [u8; 6] = nl
            .link_by_index(ifindex)
            .await
            .map_err(io_err("interface"))?
            .mac
            .as_slice()
            .try_into()
            .map_err(|_| Error::NotEthernet(f.interface.clone()))?;
        take_over_leftovers(&nl, ifindex, f.reverse_table).await;
        // Before the UDP socket: a request the socket delivers has its frame here.
        let tap = netio::udp_tap::UdpTap::open(ifindex, MIP_PORT)
            .map_err(|e| {
                warn!(
                    "UDP 434 tap on {} (visitors' MACs from the neighbour table instead): {e}",
                    f.interface
                )
            })
            .ok();
        let (tun, tun_ifindex, dp) = crate::datapath::open(&f.tunnel_device, f.offload)?;
        let encap = match f.kernel_encap {
            false => None,
            true => IpipEncap::attach_keyed(tun_ifindex, ENCAP_CAPACITY, EncapKey::Source)
                .map_err(|e| {
                    warn!("kernel reverse-tunnel encapsulation unavailable, every packet goes through this process: {e}")
                })
                .ok(),
        };
        for (path, v) in [
            ("/proc/sys/net/ipv4/ip_forward".to_string(), "1"),
            // Visitors send from home addresses that are not on this link: the
            // reverse-path filter would drop their ARP requests and packets.
            (
                format!("/proc/sys/net/ipv4/conf/{}/rp_filter", f.interface),
                "0",
            ),
            ("/proc/sys/net/ipv4/conf/all/rp_filter".to_string(), "0"),
        ] {
            crate::shell::write_sysctl(&path, v);
        }
        let mut uopts = UdpOptions::new(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, MIP_PORT));
        uopts.pktinfo = true;
        uopts.reuse_addr = true;
        let udp = uopts.bind().map_err(io_err("UDP port 434"))?;
        let icmp_rx = RawIp::open_with(
            1,
            &RawIpOptions {
                device: Some(f.interface.clone()),
                ..RawIpOptions::default()
            },
        )
        .map_err(io_err("ICMP socket"))?;
        // Solicitations go to the all-routers group (RFC 1256), which a host does
        // not receive unless it joins it.
        if let Err(e) = socket2::SockRef::from(&icmp_rx)
            .join_multicast_v4(&Ipv4Addr::new(224, 0, 0, 2), &f.address)
        {
            warn!("cannot join 224.0.0.2 (solicitations will go unanswered): {e}");
        }
        let icmp_tx = RawIp::open_with(
            1,
            &RawIpOptions {
                device: Some(f.interface.clone()),
                header_included: true,
                ..RawIpOptions::default()
            },
        )
        .map_err(io_err("ICMP send socket"))?;
        let raw = RawIp::open_with(
            IPPROTO_IPIP,
            &RawIpOptions {
                bind_addr: Some(f.address),
                ..RawIpOptions::default()
            },
        )
        .map_err(io_err("raw IP-in-IP socket"))?;
        crate::shell::enlarge_buffers(std::os::fd::AsFd::as_fd(&raw));
        crate::shell::allow_fragmentation(std::os::fd::AsFd::as_fd(&raw));
        // Reverse tunneling, direct delivery style: the table holds one route into the TUN.
        let default = Route::new(Ipv4Addr::UNSPECIFIED, 0)
            .dev(tun_ifindex)
            .table(f.reverse_table);
        if let Err(e) = nl.replace_route(&default).await {
            warn!("reverse-tunnel table {}: {e}", f.reverse_table);
        }
        let (ctl_tx, ctl_rx) = mpsc::channel(8);
        let ctl = ControlServer::start_optional(f.control_socket.as_deref(), ctl_tx)?;
        info!(address = %f.address, interface = %f.interface, "foreign agent started");
        Ok(Daemon {
            file,
            core,
            udp,
            icmp_rx,
            icmp_tx,
            raw,
            tun,
            dp,
            nl,
            ifindex,
            tap,
            tapped: std::collections::VecDeque::new(),
            link_mac,
            tun_ifindex,
            delivered: BTreeSet::new(),
            ruled: BTreeSet::new(),
            encap,
            counters: Counters::default(),
            ctl_rx,
            _ctl: ctl,
        })
    }

    async fn run(&mut self) -> Result<(), Error> {
        let mut term = signal(SignalKind::terminate()).map_err(os_err("signal handler"))?;
        let mut int = signal(SignalKind::interrupt()).map_err(os_err("signal handler"))?;
        let mut ubuf = vec![0u8; 65536];
        let mut ibuf = vec![0u8; 65536];
        let (mut rrb, mut tbuf) = crate::datapath::buffers();
        self.core.handle_timeout(Instant::now());
        self.drain().await;
        loop {
            let deadline = self.core.poll_timeout();
            let sleep = async move {
                match deadline {
                    Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = recv_with_meta(&self.udp, &mut ubuf) => match r {
                    Ok(m) => {
                        let n = m.len;
                        self.on_udp(m, &ubuf[..n]).await;
                    }
                    Err(e) => warn!("udp receive: {e}"),
                },
                r = self.icmp_rx.recv_from(&mut ibuf) => match r {
                    Ok((n, src)) => self.on_icmp(src, &ibuf[..n]),
                    Err(e) => warn!("icmp receive: {e}"),
                },
                r = rrb.recv(&self.raw) => match r {
                    // One recvmmsg (and one more if it was full), then the TUN writes
                    // and reverse-tunnel sends it caused.
                    Ok(n) => {
                        for i in 0..n {
                            if let Some((p, src)) = rrb.get(i) {
                                self.on_ipip(src, p).await;
                            }
                        }
                        if n == crate::shell::BATCH {
                            if let Ok(n) = rrb.try_recv(&self.raw) {
                                for i in 0..n {
                                    if let Some((p, src)) = rrb.get(i) {
                                        self.on_ipip(src, p).await;
                                    }
                                }
                            }
                        }
                        self.flush_data().await;
                    }
                    Err(e) => warn!("raw receive: {e}"),
                },
                r = self.tun.recv(&mut tbuf) => match r {
                    Ok(n) => {
                        self.on_reverse(&tbuf[..n]).await;
                        for _ in 0..crate::shell::BATCH {
                            let Ok(n) = self.tun.try_recv(&mut tbuf) else { break };
                            self.on_reverse(&tbuf[..n]).await;
                        }
                        self.flush_data().await;
                    }
                    Err(e) => warn!("tun receive: {e}"),
                },
                Some(req) = self.ctl_rx.recv() => { let _ = req.send(self.status()); }
                _ = sleep => self.core.handle_timeout(Instant::now()),
                _ = term.recv() => { info!("SIGTERM: shutting down"); break }
                _ = int.recv() => { info!("SIGINT: shutting down"); break }
            }
            self.drain().await;
        }
        Ok(())
    }

    /// The link-layer address of `addr` on the visited link, from the neighbour
    /// table (the node's ARP request for our address put it there).
    async fn mac_of(&self, addr: Ipv4Addr) -> Option<[u8; 6]> {
        use netlink_packet_route::neighbour::{NeighbourAddress, NeighbourAttribute};
        let mut req = self.nl.handle().neighbours().get().execute();
        while let Ok(Some(m)) = req.try_next().await {
            if m.header.ifindex != self.ifindex {
                continue;
            }
            let dst = m.attributes.iter().any(|a| matches!(a, NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) if *a == addr));
            if !dst {
                continue;
            }
            for a in &m.attributes {
                if let NeighbourAttribute::LinkLayerAddress(mac) = a {
                    if let Ok(mac) = <[u8; 6]>::try_from(mac.as_slice()) {
                        return Some(mac);
                    }
                }
            }
        }
        None
    }

    /// The link-layer source of the frame that carried this request from `from`: the
    /// tap saw the frame before the socket delivered the datagram.
    fn mac_from_frame(&mut self, from: SocketAddrV4, payload: &[u8]) -> Option<[u8; 6]> {
        let tap = self.tap.as_ref()?;
        let mut buf = [0u8; 2048];
        self.tapped.extend(tap.drain(&mut buf));
        while self.tapped.len() > 64 {
            self.tapped.pop_front();
        }
        let i = self.tapped.iter().position(|t| {
            t.src == *from.ip() && t.src_port == from.port() && t.payload == payload
        })?;
        self.tapped.remove(i).map(|t| t.mac)
    }

    async fn on_udp(&mut self, m: netio::RecvMeta, payload: &[u8]) {
        let from = m.src;
        // Requests come from visiting nodes on our link; replies from home agents.
        let from_visitor = m.ifindex == self.ifindex && payload.first() == Some(&1);
        let mac = if from_visitor {
            // From a visiting node on our link: the frame's source, else (no tap) the
            // neighbour table.
            let mac = match self.mac_from_frame(from, payload) {
                Some(mac) => Some(mac),
                None if self.tap.is_none() => self.mac_of(*from.ip()).await,
                None => None,
            };
            match mac {
                Some(mac) => mac,
                None => return self.counters.drop(DropReason::NoLinkLayerAddress),
            }
        } else {
            [0; 6]
        };
        // Nothing is installed for the sender here: the core answers by link-layer
        // address (see `send_to_node`), and only an accepted registration changes
        // the neighbour table.
        self.core
            .handle_datagram(Instant::now(), from, mac, payload);
    }

    fn on_icmp(&mut self, src: Ipv4Addr, packet: &[u8]) {
        let Ok((_, icmp)) = wire::ipv4::Ipv4Header::split(packet) else {
            return;
        };
        if mip4::wire::agent::AgentSolicitation::parse(icmp).is_ok() {
            self.core.handle_solicitation(Instant::now(), src);
        }
    }

    /// IP-in-IP to the agent: from a visitor's home agent (forward tunnel exit) or
    /// from a visitor (encapsulating delivery style).
    async fn on_ipip(&mut self, outer_src: Ipv4Addr, packet: &[u8]) {
        let Ok((_, inner)) = wire::ipv4::Ipv4Header::split(packet) else {
            return self.counters.drop(DropReason::MalformedOuter);
        };
        let Ok(ih) = wire::ipv4::Ipv4Header::parse(inner) else {
            return self.counters.drop(DropReason::MalformedInner);
        };
        let from_ha = self
            .core
            .visitor_for(ih.dst)
            .filter(|v| v.home_agent == outer_src)
            .is_some();
        if from_ha {
            match self.dp.write_tun_ipip(&self.tun, inner).await {
                Ok(_) => {
                    self.counters.forwarded_packets += 1;
                    self.counters.forwarded_bytes += inner.len() as u64;
                }
                Err(e) => {
                    debug!("tun send: {e}");
                    self.counters.drop(DropReason::TunWriteFailed);
                }
            }
            return;
        }
        let visitor = self
            .core
            .visitor_for(outer_src)
            .filter(|v| {
                v.reverse_tunnel
                    && v.delivery == DeliveryStyle::Encapsulating
                    && ih.src == v.home_addr
            })
            .cloned();
        match visitor {
            Some(v) => self.reverse_to(&v, inner).await,
            None => self.counters.drop(DropReason::UnknownTunnelSource),
        }
    }

    /// A read from the TUN (a packet, or with offloads a super-packet) from a
    /// visitor, routed there by its policy rule (direct delivery style): its segments
    /// are queued for the reverse tunnel to the visitor's home agent.
    async fn on_reverse(&mut self, buf: &[u8]) {
        if self.dp.take_tun_read(buf).is_err() {
            return self
                .counters
                .drop(crate::drops::DropReason::BadOffloadPacket);
        }
        let Some((src, _)) = self.dp.packets().get(0).and_then(wire::ipv4::addresses) else {
            return self.counters.drop(DropReason::NotIpv4FromTun);
        };
        match self.core.visitor_for(src).filter(|v| v.reverse_tunnel) {
            Some(v) => self.dp.queue_packets(v.home_agent),
            None => return self.counters.drop(DropReason::NoReverseVisitor),
        }
        if self.dp.out_full() {
            self.flush_data().await;
        }
    }

    async fn reverse_to(&mut self, v: &Visitor, inner: &[u8]) {
        if self.dp.queue_ipip(inner, v.home_agent).is_err() {
            self.counters.drop(DropReason::BadOffloadPacket);
        }
    }

    /// Sends the queued reverse-tunnel packets (`sendmmsg`) and writes the queued
    /// packets for visitors into the TUN.
    async fn flush_data(&mut self) {
        let c = &mut self.counters;
        let (n, bytes) = self
            .dp
            .flush_out(&self.raw, |ha, e| {
                debug!("reverse tunnel to {ha}: {e}");
                c.drop(DropReason::ReverseSendFailed);
            })
            .await;
        c.reverse_packets += n as u64;
        c.reverse_bytes += bytes as u64;
        for _ in 0..self.dp.flush_tun(&self.tun).await {
            self.counters.drop(DropReason::TunWriteFailed);
        }
    }

    async fn drain(&mut self) {
        while let Some(e) = self.core.poll_event() {
            self.apply(e).await;
        }
        while let Some(t) = self.core.poll_transmit() {
            match t {
                FaTransmit::Advertisement { dst, icmp } => {
                    let mut h =
                        wire::ipv4::Ipv4Header::new(self.file.fa.address, dst, 1, icmp.len());
                    h.ttl = 1;
                    let mut pkt = vec![0u8; 20 + icmp.len()];
                    if h.emit(&mut pkt).is_ok() {
                        pkt[20..].copy_from_slice(&icmp);
                        if let Err(e) = self.icmp_tx.send_packet(&pkt).await {
                            debug!("advertisement: {e}");
                        }
                    }
                }
                FaTransmit::ToHomeAgent(t) => {
                    if let Err(e) = send_from(&self.udp, &t.payload, t.dst, *t.src.ip()).await {
                        warn!("relay to {}: {e}", t.dst);
                    }
                }
                FaTransmit::ToMobileNode {
                    mac,
                    home_addr,
                    port,
                    src,
                    payload,
                } => self.send_to_node(mac, home_addr, port, src, &payload),
            }
        }
    }

    /// A reply to a node, addressed to its home address (not on this link) and sent
    /// as an Ethernet frame to `mac`: no neighbour entry or route is needed, so a
    /// denial to a stranger cannot redirect a visitor's traffic.
    fn send_to_node(
        &mut self,
        mac: [u8; 6],
        home_addr: Ipv4Addr,
        port: u16,
        src: SocketAddrV4,
        payload: &[u8],
    ) {
        let ip = wire::udp::build_ipv4(*src.ip(), home_addr, src.port(), port, payload);
        let mut frame = Vec::with_capacity(14 + ip.len());
        frame.extend_from_slice(&mac);
        frame.extend_from_slice(&self.link_mac);
        frame.extend_from_slice(&0x0800u16.to_be_bytes());
        frame.extend_from_slice(&ip);
        if let Err(e) = netio::netlink::arp::send_frame(self.ifindex, &frame, mac, 0x0800) {
            warn!("reply to {home_addr}:{port}: {e}");
            self.counters.drop(DropReason::ReplyNotSent);
        }
    }

    /// A permanent neighbour entry and a host route on the visited link for a
    /// visitor's home address (delivery by link-layer address, no ARP for it).
    async fn deliver_to(&mut self, home: Ipv4Addr, mac: [u8; 6]) {
        if let Err(e) = self
            .nl
            .set_neighbour_marked(self.ifindex, home, mac, PROTO_FA)
            .await
        {
            debug!("neighbour {home}: {e}");
        }
        let r = Route::new(home, 32).dev(self.ifindex);
        if let Err(e) = self.nl.replace_route_marked(&r, PROTO_FA).await {
            debug!("route {home}/32: {e}");
        }
        self.delivered.insert(home);
    }

    async fn undeliver(&mut self, home: Ipv4Addr) {
        if !self.delivered.remove(&home) {
            return;
        }
        let _ = self
            .nl
            .del_route_marked(&Route::new(home, 32).dev(self.ifindex), PROTO_FA)
            .await;
        let _ = self.nl.del_neighbour(self.ifindex, home).await;
    }

    fn rule_for(&self, home: Ipv4Addr) -> Rule {
        Rule {
            from: Some((home, 32)),
            fwmark: None,
            table: self.file.fa.reverse_table,
            priority: Some(RULE_PRIORITY),
        }
    }

    async fn apply(&mut self, e: FaEvent) {
        match e {
            FaEvent::VisitorAdded(v) | FaEvent::VisitorRenewed(v) => {
                info!(home = %v.home_addr, home_agent = %v.home_agent, delivery = ?v.delivery, reverse = v.reverse_tunnel, "visitor registered");
                self.deliver_to(v.home_addr, v.mac).await;
                if v.reverse_tunnel && !self.ruled.contains(&v.home_addr) {
                    if let Err(e) = self.nl.add_rule(&self.rule_for(v.home_addr)).await {
                        warn!("reverse-tunnel rule for {}: {e}", v.home_addr);
                    }
                    self.ruled.insert(v.home_addr);
                }
                self.encap_follow(v.home_addr).await;
            }
            FaEvent::VisitorRemoved { home_addr, .. } => {
                info!(home = %home_addr, "visitor removed");
                if self.core.visitor_for(home_addr).is_none() {
                    self.undeliver(home_addr).await;
                    if self.ruled.remove(&home_addr) {
                        let _ = self.nl.del_rule(&self.rule_for(home_addr)).await;
                    }
                }
                self.encap_follow(home_addr).await;
            }
        }
    }

    /// Mirrors the core's reverse-tunnel decision for `home` into the kernel's
    /// encapsulation: a visitor with the T bit, to its home agent until its
    /// registration expires; otherwise no entry (the TUN's reader decides).
    async fn encap_follow(&mut self, home: Ipv4Addr) {
        let Some(encap) = &self.encap else { return };
        let to = self
            .core
            .visitor_for(home)
            .filter(|v| v.reverse_tunnel)
            .map(|v| (v.home_agent, v.expires));
        let oif = match to {
            Some((ha, _)) => {
                let mtu = self.tun.mtu().unwrap_or(u32::MAX - 20);
                crate::datapath::encap_oif(&self.nl, ha, self.tun_ifindex, mtu).await
            }
            None => None,
        };
        let set = match (to, oif) {
            (Some((ha, until)), Some(oif)) => {
                crate::datapath::encap_set(encap, home, self.file.fa.address, ha, oif, until)
            }
            _ => encap.remove(home).map(drop),
        };
        if let Err(e) = set {
            warn!("kernel reverse-tunnel encapsulation of {home}: {e}");
            let _ = encap.remove(home);
        }
    }

    fn status(&self) -> serde_json::Value {
        let now = Instant::now();
        let visitors: Vec<_> = self
            .core
            .visitors()
            .map(|v| {
                json!({
                    "home_address": v.home_addr.to_string(),
                    "home_agent": v.home_agent.to_string(),
                    "mac": v.mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":"),
                    "lifetime": v.lifetime,
                    "remaining_s": v.expires.saturating_duration_since(now).as_secs(),
                    "reverse_tunnel": v.reverse_tunnel,
                    "delivery": match v.delivery { DeliveryStyle::Direct => "direct", DeliveryStyle::Encapsulating => "encapsulating" },
                })
            })
            .collect();
        let s = self.core.stats();
        let drops = self
            .counters
            .drops
            .merged_with(s.drops.iter().map(|(k, v)| (k, *v)));
        json!({
            "role": "fa",
            "address": self.file.fa.address.to_string(),
            "visitors": visitors,
            "counters": {
                "advertisements": s.advertisements,
                "requests_relayed": s.requests_relayed,
                "replies_relayed": s.replies_relayed,
                "denials_by_code": s.denials_by_code.iter().map(|(k, v)| (k.to_string(), *v)).collect::<BTreeMap<_, _>>(),
                "forwarded_packets": self.counters.forwarded_packets,
                "forwarded_bytes": self.counters.forwarded_bytes,
                "reverse_packets": self.counters.reverse_packets,
                "reverse_bytes": self.counters.reverse_bytes,
                "drops": drops,
            },
            "data_path": crate::datapath::status(&self.dp),
            "kernel_encap": crate::datapath::encap_status(self.encap.as_ref()),
        })
    }

    async fn cleanup(&mut self) {
        let homes: Vec<Ipv4Addr> = self.delivered.iter().copied().collect();
        for h in homes {
            self.undeliver(h).await;
        }
        let ruled: Vec<Ipv4Addr> = self.ruled.iter().copied().collect();
        for h in ruled {
            let _ = self.nl.del_rule(&self.rule_for(h)).await;
        }
        let default = Route::new(Ipv4Addr::UNSPECIFIED, 0)
            .dev(self.tun_ifindex)
            .table(self.file.fa.reverse_table);
        let _ = self.nl.del_route(&default).await;
        let _ = IpAddr::V4(self.file.fa.address);
        info!("foreign agent stopped; routes, rules and neighbour entries removed");
    }
}

/// Priority of the reverse-tunnel rules; with `reverse_table` it marks them as ours.
const RULE_PRIORITY: u32 = 1000;

/// Removes what an earlier instance killed without cleanup left: its reverse-tunnel
/// rules (priority 1000, the configured table) and the neighbour entries and host
/// routes on its interface marked [`PROTO_FA`]. Visitors are not persisted: their
/// nodes register again.
async fn take_over_leftovers(nl: &Netlink, ifindex: u32, reverse_table: u32) {
    let rules = nl
        .del_rules_at(RULE_PRIORITY, reverse_table)
        .await
        .unwrap_or(0);
    let mut neighbours = 0;
    for (ifx, addr) in nl
        .neighbours_marked(PROTO_FA, false)
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n.0 == ifindex)
    {
        if nl.del_neighbour(ifx, addr).await.is_ok() {
            neighbours += 1;
        }
    }
    let mut routes = 0;
    for r in nl
        .routes_marked(PROTO_FA)
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.oif == Some(ifindex))
    {
        if nl.del_route_marked(&r, PROTO_FA).await.is_ok() {
            routes += 1;
        }
    }
    if rules + neighbours + routes > 0 {
        warn!(
            rules,
            neighbours, routes, "removed what a previous foreign agent left behind"
        );
    }
}
