//! `mipsec mn`: the mobile node daemon, a shell around `mobility::MobileNode`.
//!
//! Every decision (is this interface inside, proven by the i-HA's Trusted
//! Networks Configured extension; is the data gate open; when to register, re-
//! register, give up) is taken by the sans-IO core in `crates/mobility`. This
//! shell only moves bytes and reports what happened, with `now`:
//!
//! * rtnetlink events on the physical interface become `LinkEvent`s (carrier,
//!   addresses); agent advertisements heard on it become `Advertisement`s;
//! * registration replies on the socket bound to the interface go to
//!   `handle_datagram` (`Via::Plain`);
//! * a request that cannot leave (no route yet) is `handle_send_failed`; a
//!   tunnel that stays silent while user data goes out is `handle_binding_silent`;
//! * one timer, armed from `poll_timeout()` (plus the shell's own keepalive and
//!   liveness deadlines).
//!
//! Its outputs are registration datagrams, actions (the mode, flushing the
//! queue, the VPN commands) and gate changes, which decide the routes of user
//! data:
//!
//! * the home address lives on a TUN device, and 0.0.0.0/1 and 128.0.0.0/1 point
//!   into it from the first instant (fail closed: a packet there is sent only when
//!   `gate()` says so, at that instant, else dropped or queued);
//! * gate open inside at home (mode h): the routes go, the link is used directly;
//! * open inside through a foreign agent with direct delivery (mode f, RFC 3024
//!   direct style): the routes point at the agent;
//! * open inside co-located (mode c): user data is tunnelled IP-in-IP (or RFC 3519
//!   UDP behind a NAT) from the care-of address to the i-HA.
//!
//! The device is persistent, so after a kill -9 the routes into it stay and drop
//! everything (fail closed past the process); a restart takes them over.
//!
//! The outside modes (cvc, fvc, mc): the core runs detection with the x-HA and
//! commands IKE; `mn_vpn.rs` runs the VPN client.
//!
//! MN-2: with `interfaces = [...]` every physical interface is a `Link`
//! (`mn_link.rs`) with its own sockets, agent route, liveness and attachment; the
//! core decides per interface, and user data follows `MobileNode::preferred`.

use crate::config::{MnFile, OutsideMode, UdpTunnelMode};
use crate::control::{ControlServer, StatusRequest};
use crate::shell::io_err;
use link::{any_readable, recv_any_udp, Link, Liveness};
use mip4::auth::SecurityAssociation;
use mobility::{Action, Event, Gate, LinkEvent, MobileNode, Mode, Outside, Transmit, Via};
use netio::netlink::{NetEvent, Netlink};
use netio::raw::RawIp;
use netio::tun::Tun;
use std::collections::{BTreeMap, VecDeque};
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

#[path = "mn_data.rs"]
mod data;
#[path = "mn_kernel.rs"]
mod kernel;
#[path = "mn_link.rs"]
mod link;
#[path = "mn_path.rs"]
mod path;
#[path = "mn_status.rs"]
mod status;
#[path = "mn_vpn.rs"]
mod vpn;

/// How long addresses left on an interface whose carrier came back are
/// distrusted, absent any address change.
const ADDRESS_SETTLE: Duration = Duration::from_millis(500);

/// Why the mobile node could not start, or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration file (the message names file, line and field).
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// `outside = "xmip"` without every x-HA setting.
    #[error("outside = \"xmip\": the x-HA settings are incomplete")]
    XhaIncomplete,
    /// The mobility core refused the settings.
    #[error("mn: {0}")]
    Core(#[from] mobility::ConfigError),
    /// The VPN client's file (`vpn_config`): missing, unreadable, with a key the node
    /// sets itself, or invalid.
    #[error("{0}")]
    VpnConfig(String),
    /// A socket, device or system setting could not be set up.
    #[error(transparent)]
    Setup(#[from] crate::shell::SetupError),
    /// An interface, route, rule or socket the node needs.
    #[error("{what}: {source}")]
    Net {
        /// What it was for (names the device, address or table).
        what: String,
        /// What `netio` reported.
        #[source]
        source: netio::Error,
    },
    /// The routes of a table could not be listed.
    #[error("{0}")]
    Routes(String),
    /// The control socket (`control_socket`) could not be created.
    #[error(transparent)]
    ControlSocket(#[from] crate::control::ControlSocketError),
    /// The SIGTERM or SIGINT handler.
    #[error("signal handler: {0}")]
    Signal(#[source] std::io::Error),
    /// The kernel's netlink notifications stopped: the node can no longer see moves.
    #[error("netlink event stream ended")]
    EventsEnded,
    /// The VPN client could not be started.
    #[error("VPN client: {0}")]
    VpnClient(String),
}

/// `Error::Net` naming what failed.
fn net_err(what: impl Into<String>) -> impl FnOnce(netio::Error) -> Error {
    let what = what.into();
    move |source| Error::Net { what, source }
}

/// Runs the mobile node until SIGINT or SIGTERM.
pub fn run(config: &Path) -> Result<(), Error> {
    let file = MnFile::load(config)?;
    crate::shell::block_on(async move {
        let mut d = Daemon::start(file).await?;
        let r = d.run().await;
        d.cleanup().await;
        r
    })
}

/// The mobility core's configuration from the file (validated there too).
pub fn core_config(file: &MnFile) -> Result<mobility::Config, Error> {
    let m = &file.mn;
    let sa = SecurityAssociation::new(m.spi, m.algorithm.into(), &m.key.0);
    let outside = match m.outside {
        OutsideMode::None => Outside::None,
        OutsideMode::Mobike => Outside::Mobike,
        OutsideMode::Xmip => {
            let (Some(x_ha), Some(x_home_addr), Some(spi), Some(key)) = (
                m.external_home_agent,
                m.external_home_address,
                m.external_spi,
                m.external_key.as_ref(),
            ) else {
                return Err(Error::XhaIncomplete);
            };
            Outside::Xmip {
                x_ha,
                x_home_addr,
                x_sa: SecurityAssociation::new(spi, m.algorithm.into(), &key.0),
            }
        }
    };
    let mut c = mobility::Config::new(m.home_address, m.home_agent, sa, outside);
    c.replay = m.replay.into();
    c.t_monitor = Duration::from_secs(m.t_monitor_s);
    c.lifetime = m.lifetime;
    c.reverse_tunnel = m.reverse_tunnel;
    c.encapsulating_delivery = m.encapsulating_delivery;
    c.initial_rto = Duration::from_millis(m.retransmit_ms);
    c.max_rto = c.max_rto.max(c.initial_rto);
    c.udp_tunnel = match m.udp_tunnel {
        UdpTunnelMode::Off => None,
        UdpTunnelMode::Auto => Some(false),
        UdpTunnelMode::Force => Some(true),
    };
    // An agent on the link is preferred, a co-located address is the fallback
    // (RFC 5944 3.1); never an agent that is not trusted.
    c.prefer_foreign_agent = m.use_foreign_agents;
    c.trusted_agents = if m.use_foreign_agents {
        m.trusted_agents.clone()
    } else {
        Vec::new()
    };
    // A failed detection round (e.g. the i-HA answered without TNC) is tried again
    // after this; short enough that a fixed i-HA is noticed soon.
    c.retry_after = Duration::from_secs(2);
    c.validate()?;
    Ok(c)
}

/// Counters of the shell itself (the core keeps its own, see `MobileNode::stats`).
#[derive(Default, Debug)]
struct Counters {
    /// Re-registrations because the home agent fell silent behind a NAT.
    nat_reregistrations: u64,
    /// Re-registrations because the home agent fell silent in the IP-in-IP tunnel.
    dead_binding_reregistrations: u64,
    tx_packets: u64,
    tx_bytes: u64,
    rx_packets: u64,
    rx_bytes: u64,
    drops: BTreeMap<&'static str, u64>,
}

impl Counters {
    fn drop(&mut self, why: &'static str) {
        *self.drops.entry(why).or_default() += 1;
    }
}

/// What the routes for user data point at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Routes {
    None,
    /// Into the TUN: sent when the gate is open, dropped otherwise (fail closed).
    Tunnel,
    /// Natively through the foreign agent (RFC 3024 direct delivery style), on
    /// the interface with this ifindex.
    Agent(Ipv4Addr, u32),
}

struct Daemon {
    file: MnFile,
    node: MobileNode,
    /// MN-2: the physical interfaces, in the configured order (each one's ifindex
    /// is the core's `IfaceId`).
    links: Vec<Link>,
    tun: Tun,
    tun_ifindex: u32,
    /// The home address's TUN: offloads, segmentation, merging (as the agents').
    dp: crate::datapath::DataPath,
    nl: Netlink,
    events: netio::netlink::NetEvents,
    routes: Routes,
    /// MN-5: user packets held while the gate is `Queued`.
    queue: VecDeque<Vec<u8>>,
    counters: Counters,
    /// The data path the routes were set for: (link, its gate).
    last_gate: (usize, Gate),
    /// The VPN gateway (outside modes): the only destination of the x-MIP layer.
    vpn_gateway: Option<Ipv4Addr>,
    outer: vpn::Outer,
    /// The raw sends of one burst of user packets (see `data::TxBatch`).
    tx: data::TxBatch,
    /// One RFC 3519 Tunnel Data message sent alone (reused: no allocation per packet).
    udp_msg: Vec<u8>,
    /// IP-in-IP in the kernel while the gate allows it (`mn_kernel.rs`).
    kernel: kernel::Kernel,
    ctl_rx: mpsc::Receiver<StatusRequest>,
    _ctl: Option<ControlServer>,
}

impl Daemon {
    async fn start(file: MnFile) -> Result<Daemon, Error> {
        let mut cfg = core_config(&file)?;
        let m = file.mn.clone();
        let nl = Netlink::new().map_err(io_err("netlink"))?;
        let mut links = Vec::new();
        for name in m.interface_names() {
            links.push(Link::open(&nl, &name).await?);
        }
        // MN-2: inside beats outside; among equals, the configured order.
        cfg.interface_order = links.iter().map(|l| l.ifindex).collect();
        let mut seed = [0u8; 32];
        crate::shell::getrandom(&mut seed);
        let node = MobileNode::new(cfg, seed)?;
        let (tun, tun_ifindex, mut dp) = crate::datapath::open(&m.tunnel_device, m.offload)?;
        dp.udp_gso = m.udp_gso;
        dp.udp_gro = m.udp_gro;
        // Fail closed beyond the process: the routes for user data point into this
        // device, and a persistent device keeps them after a crash (kill -9), where
        // its packets are dropped unread instead of leaving in the clear through the
        // default route. A restart attaches to the same device; a clean stop clears it.
        tun.set_persistent(true)
            .map_err(net_err(format!("tunnel device {}", m.tunnel_device)))?;
        if let Err(e) = nl.add_address(tun_ifindex, m.home_address, 32).await {
            debug!("home address on tunnel device: {e}");
        }
        let events = nl
            .events_with_routes()
            .await
            .map_err(io_err("netlink events"))?;
        crate::shell::write_sysctl("/proc/sys/net/ipv4/conf/all/accept_redirects", "0");
        crate::shell::write_sysctl("/proc/sys/net/ipv4/conf/default/accept_redirects", "0");
        let (ctl_tx, ctl_rx) = mpsc::channel(8);
        let ctl = ControlServer::start_optional(m.control_socket.as_deref(), ctl_tx)?;
        info!(home = %m.home_address, home_agent = %m.home_agent, interfaces = ?m.interface_names(),
              outside = ?m.outside, t_monitor_s = m.t_monitor_s, "mobile node started");
        if m.outside != OutsideMode::None {
            vpn::check_vpn_config(&m)?;
        }
        let kernel = kernel::Kernel::attach(m.kernel_encap, tun_ifindex);
        let mut d = Daemon {
            file,
            node,
            links,
            tun,
            tun_ifindex,
            dp,
            nl,
            events,
            routes: Routes::None,
            queue: VecDeque::new(),
            tx: data::TxBatch::default(),
            udp_msg: Vec::new(),
            kernel,
            counters: Counters::default(),
            last_gate: (0, Gate::Closed),
            vpn_gateway: m.vpn_gateway,
            outer: vpn::Outer::default(),
            ctl_rx,
            _ctl: ctl,
        };
        // Closed from the first instant, and a predecessor killed with its routes
        // in place is taken over: they are replaced.
        d.install_user_rule().await?;
        d.open_outer().await?;
        // The interfaces as they are now.
        for phys in d.links.iter().map(|l| l.ifindex).collect::<Vec<_>>() {
            let link =
                d.nl.link_by_index(phys)
                    .await
                    .map_err(io_err("interface"))?;
            let addrs =
                d.nl.addresses(Some(phys))
                    .await
                    .map_err(io_err("addresses"))?;
            let (now, wall) = (Instant::now(), SystemTime::now());
            if link.is_running() {
                d.node.handle_link(now, wall, phys, LinkEvent::CarrierUp);
            }
            for a in addrs {
                d.node
                    .handle_link(now, wall, phys, LinkEvent::AddressAdded(a.addr));
            }
        }
        Ok(d)
    }

    async fn run(&mut self) -> Result<(), Error> {
        let mut term = signal(SignalKind::terminate()).map_err(Error::Signal)?;
        let mut int = signal(SignalKind::interrupt()).map_err(Error::Signal)?;
        let mut tbuf = vec![0u8; netio::offload::VNET_HDR_LEN + 65536];
        let mut ubuf = vec![0u8; 65536];
        let mut rbuf = vec![0u8; 65536];
        let mut ibuf = vec![0u8; 65536];
        let mut xbuf = vec![0u8; 65536];
        let mut vbuf = vec![0u8; 65536];
        let mut wbuf = vec![0u8; 65536];
        for li in 0..self.links.len() {
            self.solicit(li).await;
        }
        self.drive().await;
        loop {
            let deadline = self
                .links
                .iter()
                .flat_map(|l| {
                    [
                        l.live.next_keepalive,
                        l.live.probe.map(|p| p.1),
                        l.live.next_direct_check,
                        l.settle_until,
                    ]
                })
                .chain([
                    self.node.poll_timeout().map(|(t, _)| t),
                    self.vpn_deadline(),
                    self.kernel.next_poll,
                ])
                .flatten()
                .min();
            let sleep = async move {
                match deadline {
                    Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                ev = self.events.next() => match ev {
                    Some(ev) => self.on_net_event(ev).await,
                    None => return Err(Error::EventsEnded),
                },
                r = recv_any_udp(&self.links, &mut ubuf) => match r {
                    Ok((m, li, i)) => {
                        self.on_udp_merged(li, &ubuf, m).await;
                        // Tunnel data comes in bursts: drain what is queued.
                        for _ in 0..crate::shell::BATCH {
                            let Some(Ok(m)) = self
                                .links
                                .get(li)
                                .and_then(|l| l.udp.get(i))
                                .map(|s| netio::udp::try_recv_with_meta(&s.1, &mut ubuf))
                            else {
                                break;
                            };
                            self.on_udp_merged(li, &ubuf, m).await;
                        }
                    }
                    Err(e) => debug!("registration socket: {e}"),
                },
                li = any_readable(&self.links, |l| l.raw.as_ref().map(|r| &r.1)) => {
                    for _ in 0..=crate::shell::BATCH {
                        let Some(Ok((n, src))) = self
                            .links
                            .get(li)
                            .and_then(|l| l.raw.as_ref())
                            .map(|r| r.1.try_recv_from(&mut rbuf))
                        else {
                            break;
                        };
                        self.on_tunnel(li, src, &rbuf[..n]).await;
                    }
                },
                r = self.tun.recv(&mut tbuf) => match r {
                    Ok(n) => {
                        // One burst: the tunnel sends go out together (sendmmsg).
                        self.tx.start();
                        self.on_tun_read(&tbuf[..n]).await;
                        for _ in 0..crate::shell::BATCH {
                            let Ok(n) = self.tun.try_recv(&mut tbuf) else { break };
                            self.on_tun_read(&tbuf[..n]).await;
                        }
                        self.flush_tx().await;
                    }
                    Err(e) => warn!("tun receive: {e}"),
                },
                li = any_readable(&self.links, |l| Some(&l.icmp_rx)) => {
                    for _ in 0..=crate::shell::BATCH {
                        let Some(Ok((n, _))) =
                            self.links.get(li).map(|l| l.icmp_rx.try_recv_from(&mut ibuf))
                        else {
                            break;
                        };
                        self.on_icmp(li, &ibuf[..n]);
                    }
                },
                r = recv_vpn_udp(self.outer.vpn.as_ref(), false, &mut xbuf) => match r {
                    Ok(m) => self.on_vpn_udp(&mut xbuf, m, false).await,
                    Err(e) => debug!("VPN UDP 500: {e}"),
                },
                r = recv_vpn_udp(self.outer.vpn.as_ref(), true, &mut vbuf) => match r {
                    Ok(m) => {
                        // ESP comes in bursts: one user packet each.
                        self.on_vpn_udp_merged(&mut vbuf, m).await;
                        for _ in 0..crate::shell::BATCH {
                            let Some(Ok(m)) = self.outer.vpn.as_ref().and_then(|s| s.socks.as_ref())
                                .map(|k| netio::udp::try_recv_with_meta(&k.s4500, &mut vbuf)) else { break };
                            self.on_vpn_udp_merged(&mut vbuf, m).await;
                        }
                    }
                    Err(e) => debug!("VPN UDP NAT-T: {e}"),
                },
                r = recv_raw(self.outer.vpn.as_ref().and_then(|s| s.socks.as_ref()).and_then(|k| k.raw.as_ref()), &mut wbuf) => match r {
                    Ok((n, _)) => self.on_vpn_raw_esp(&mut wbuf, n).await,
                    Err(e) => debug!("VPN ESP socket: {e}"),
                },
                Some(req) = self.ctl_rx.recv() => {
                    // The answer describes now: a core deadline that passed while the
                    // request waited its turn (T_MONITOR, say) is handled first, so
                    // the gates and the counters of one answer agree.
                    let (now, wall) = (Instant::now(), SystemTime::now());
                    if self.node.poll_timeout().is_some_and(|(t, _)| t <= now) {
                        self.node.handle_timeout(now, wall);
                    }
                    let _ = req.send(self.status());
                }
                _ = sleep => self.on_timer().await,
                _ = term.recv() => { info!("SIGTERM: shutting down"); break }
                _ = int.recv() => { info!("SIGINT: shutting down"); break }
            }
            // Packets for the TUN that the wake-up queued (merged when offloading).
            self.flush_delivered().await;
            self.drive().await;
            // What the VPN session queued (IKE) or said (up, down, MOBIKE answers),
            // and the core's answers to that.
            while self.flush_vpn().await {
                self.drive().await;
            }
        }
        Ok(())
    }

    async fn on_timer(&mut self) {
        let (now, wall) = (Instant::now(), SystemTime::now());
        self.on_vpn_timer(now);
        for l in &mut self.links {
            if l.settle_until.is_some_and(|t| t <= now) {
                l.settle_until = None;
                self.node
                    .handle_link(now, wall, l.ifindex, LinkEvent::CarrierUp);
            }
        }
        if self.node.poll_timeout().is_some_and(|(t, _)| t <= now) {
            self.node.handle_timeout(now, wall);
        }
        // What the kernel sent and took back, before the probes are judged.
        if self.kernel.next_poll.is_some() {
            self.poll_kernel(now).await;
        }
        self.on_liveness_timer(now, wall).await;
    }

    async fn on_net_event(&mut self, ev: NetEvent) {
        let (now, wall) = (Instant::now(), SystemTime::now());
        if let NetEvent::RouteAdded {
            table,
            oif,
            dst,
            prefix,
        } = ev
        {
            return self.on_vpn_route(table, oif, dst, prefix);
        }
        let ifindex = match &ev {
            NetEvent::LinkUp { ifindex, .. }
            | NetEvent::LinkDown { ifindex, .. }
            | NetEvent::LinkRemoved { ifindex, .. }
            | NetEvent::AddrAdded { ifindex, .. }
            | NetEvent::AddrRemoved { ifindex, .. } => *ifindex,
            _ => return,
        };
        let Some(li) = self.link_of(ifindex) else {
            return;
        };
        let ev = match ev {
            NetEvent::LinkUp { .. } => {
                // The addresses still on the interface may belong to the link we
                // left (a DHCP client replaces them a moment later), and using one
                // would put the old link's address on the new one. The core hears
                // of the carrier after the first address change, or after
                // ADDRESS_SETTLE without one (the same link came back).
                self.links[li].settle_until = Some(now + ADDRESS_SETTLE);
                // A new link may have an agent: ask at once (RFC 5944 2.4).
                self.solicit(li).await;
                return;
            }
            NetEvent::LinkDown { .. } | NetEvent::LinkRemoved { .. } => {
                self.links[li].settle_until = None;
                LinkEvent::CarrierDown
            }
            NetEvent::AddrAdded { addr, .. } => LinkEvent::AddressAdded(addr),
            NetEvent::AddrRemoved { addr, .. } => LinkEvent::AddressRemoved(addr),
            _ => return,
        };
        self.node.handle_link(now, wall, ifindex, ev);
        if self.links[li].settle_until.take().is_some() {
            self.node
                .handle_link(now, wall, ifindex, LinkEvent::CarrierUp);
        }
    }

    /// Drains the core's outputs after every input: the attachment's sockets and
    /// agent route first (a request may need them), then datagrams, actions and
    /// events, until the core has nothing more to say.
    async fn drive(&mut self) {
        // The kernel's entry follows every input first (`mn_kernel.rs`).
        self.sync_kernel().await;
        for _ in 0..64 {
            for li in 0..self.links.len() {
                self.sync_attachment(li).await;
            }
            let mut any = false;
            // Actions and events before datagrams: a status change may have to
            // reset the link (see `FlushQueue`) before the new request leaves.
            while let Some(a) = self.node.poll_action() {
                any = true;
                self.on_action(a).await;
            }
            while let Some(e) = self.node.poll_event() {
                any = true;
                self.on_event(e).await;
            }
            while let Some(t) = self.node.poll_transmit() {
                any = true;
                self.send_transmit(t).await;
            }
            if !any {
                break;
            }
        }
        // The gate is worked out from `now`: a T_MONITOR that passed without an
        // event still moves the routes back into the TUN.
        let (li, g) = self.data_path(Instant::now());
        if (li, g) != self.last_gate {
            self.apply_gate(li, g, "gate changed").await;
        }
        self.sync_kernel().await;
    }

    async fn send_transmit(&mut self, t: Transmit) {
        let now = Instant::now();
        if t.via == Via::Vpn {
            return self.send_via_vpn(t).await;
        }
        let Some(li) = self.link_of(t.iface) else {
            return;
        };
        let agent = self.links[li].attached.and_then(|a| a.agent);
        if Some(*t.dst.ip()) != agent && !path::has_route(&self.links[li].name, *t.dst.ip()) {
            // Linux sends from a device-bound socket even without a route, as if the
            // destination were on the link, and the request dies in ARP. Until the
            // interface has its route (a DHCP client adds it a moment after the
            // address), the core retries promptly.
            self.counters.drop("no route to the home agent yet");
            self.node.handle_send_failed(now, t.iface, Via::Plain);
            return;
        }
        let Some(sock) = self.udp_for(li, *t.src.ip()) else {
            self.node.handle_send_failed(now, t.iface, Via::Plain);
            return;
        };
        match sock.send_to(&t.payload, t.dst).await {
            Ok(_) => self.links[li].request_sent = Some(now),
            Err(e) => {
                debug!("registration send to {}: {e}", t.dst);
                self.counters.drop("registration send failed");
                self.node.handle_send_failed(now, t.iface, Via::Plain);
            }
        }
    }

    async fn on_action(&mut self, a: Action) {
        match a {
            Action::SetMode { iface, mode } => {
                let name = self.link_of(iface).map(|li| self.links[li].name.as_str());
                info!(interface = name, mode = mode.map(Mode::name), "mode");
            }
            Action::FlushQueue { iface } => {
                let Some(li) = self.link_of(iface) else {
                    return;
                };
                // MN-3: a status change; what was queued for the old state goes.
                if self.last_gate.0 == li {
                    self.queue.clear();
                }
                // Through an agent: resolve it afresh (a new link may have another
                // host behind the same address). The pinned entry is replaced, not
                // deleted first: without it the kernel would ARP for the agent from
                // the home address meanwhile (long soak: 2 such frames on ext-b).
                if let Some(agent) = self.links[li].attached.and_then(|a| a.agent) {
                    self.introduce_to_agent(li, agent).await;
                }
            }
            a
            @ (Action::StartIke { .. } | Action::MobikeUpdate { .. } | Action::StopVpn { .. }) => {
                self.on_vpn_action(a).await
            }
        }
    }

    async fn on_event(&mut self, e: Event) {
        match e {
            Event::GateChanged {
                iface,
                gate,
                reason,
            } => {
                if let Some(li) = self.link_of(iface) {
                    info!(interface = %self.links[li].name, ?gate, reason, "interface gate");
                    self.links[li].changed_at = Instant::now();
                }
                let (li, g) = self.data_path(Instant::now());
                if (li, g) != self.last_gate {
                    self.apply_gate(li, g, reason).await;
                }
            }
            Event::PhaseChanged {
                iface,
                phase,
                reason,
            } => {
                let Some(li) = self.link_of(iface) else {
                    return;
                };
                info!(interface = %self.links[li].name, ?phase, reason, "interface state");
                self.links[li].changed_at = Instant::now();
            }
            Event::TunnelChanged {
                iface,
                layer: mobility::Layer::IhaDirect,
                tunnel,
            } => {
                let Some(li) = self.link_of(iface) else {
                    return;
                };
                let l = &mut self.links[li];
                let udp = match tunnel {
                    Some(mobility::Tunnel::Udp { keepalive }) => Some(keepalive),
                    _ => None,
                };
                if udp != l.live.udp_tunnel {
                    info!(interface = %l.name, keepalive_s = ?udp, "RFC 3519 UDP tunnelling {}", if udp.is_some() { "on (NAT detected or forced)" } else { "off" });
                }
                l.live.udp_tunnel = udp;
                l.live.next_keepalive = udp
                    .filter(|k| *k > 0)
                    .map(|k| Instant::now() + Duration::from_secs(u64::from(k)));
                if tunnel.is_some() {
                    l.live.ha_heard = Some(Instant::now());
                    if let Some(t) = l.request_sent.take() {
                        l.last_rtt = Some(t.elapsed());
                    }
                }
            }
            Event::TunnelChanged { .. } => {}
        }
    }

    /// Points the routes of user data where the data path (link `li`, its gate)
    /// says, and releases what was queued once it opens.
    async fn apply_gate(&mut self, li: usize, gate: Gate, reason: &'static str) {
        if (li, gate) == self.last_gate {
            return;
        }
        info!(interface = %self.links[li].name, ?gate, reason, "data path");
        self.last_gate = (li, gate);
        let want = match gate {
            Gate::OpenInside(Mode::H) => Routes::None,
            Gate::OpenInside(Mode::F) if !self.file.mn.encapsulating_delivery => {
                match self.links[li].attached.and_then(|a| a.agent) {
                    Some(agent) => Routes::Agent(agent, self.links[li].ifindex),
                    None => Routes::Tunnel,
                }
            }
            _ => Routes::Tunnel,
        };
        self.set_routes(want).await;
        if gate == Gate::OpenInside(Mode::H) {
            self.announce_home(li).await;
        }
        if gate.is_open() {
            let l = &mut self.links[li];
            if let Some(t) = l.request_sent.take() {
                l.last_rtt = Some(t.elapsed());
            }
            l.live.ha_heard = Some(Instant::now());
            if matches!(want, Routes::Agent(..)) && l.live.next_direct_check.is_none() {
                l.live.next_direct_check = Some(Instant::now() + data::DIRECT_SILENCE);
            }
            let q = std::mem::take(&mut self.queue);
            for p in q {
                self.on_user_packet(&p).await;
            }
        }
    }

    async fn cleanup(&mut self) {
        if let Some(enc) = &self.kernel.encap {
            let _ = enc.remove(self.file.mn.home_address);
        }
        self.stop_vpn("shutting down").await;
        self.set_routes(Routes::None).await;
        self.remove_user_rule().await;
        for li in 0..self.links.len() {
            if let Some(agent) = self.links[li].agent_route.take() {
                self.forget_agent(li, agent).await;
            }
        }
        if let Err(e) = self.tun.set_persistent(false) {
            warn!("tunnel device: {e}");
        }
        info!("mobile node stopped; routes removed");
    }
}

/// A datagram on the VPN session's UDP 500 or NAT-T socket.
async fn recv_vpn_udp(
    s: Option<&vpn::VpnSession>,
    natt: bool,
    buf: &mut [u8],
) -> std::io::Result<netio::RecvMeta> {
    match s.and_then(|s| s.socks.as_ref()) {
        Some(k) if natt => netio::udp::recv_with_meta(&k.s4500, buf).await,
        Some(k) => netio::udp::recv_with_meta(&k.s500, buf).await,
        None => std::future::pending().await,
    }
}

async fn recv_raw(sock: Option<&RawIp>, buf: &mut [u8]) -> std::io::Result<(usize, Ipv4Addr)> {
    match sock {
        Some(s) => s.recv_from(buf).await,
        None => std::future::pending().await,
    }
}
