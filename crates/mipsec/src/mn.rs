//! `mipsec mn`: the mobile node daemon (modes h, c and f of RFC 5265).
//!
//! The home address lives on a TUN device, so applications keep using it
//! wherever the node is. The daemon follows the physical interface through
//! rtnetlink (whatever configures it: a DHCP client, the lab):
//!
//! * carrier lost, or no usable address: **detached**. User data is dropped
//!   (never sent in the clear somewhere else) until a registration succeeds.
//! * the home address is on the interface: **home** (mode h). It deregisters,
//!   removes its routes and announces itself with a gratuitous ARP (RFC 5944
//!   section 4.6); applications use the link directly.
//! * another address: **co-located care-of address** (mode c). It registers
//!   that address with reverse tunneling; once accepted, 0.0.0.0/1 and
//!   128.0.0.0/1 via the TUN carry user data, which is tunneled IP-in-IP to the
//!   home agent from the care-of address. The registration client renews before
//!   the lifetime ends.
//! * an advertisement from a trusted foreign agent (`trusted_agents`):
//!   **foreign agent care-of address** (mode f). It registers through the agent,
//!   routes user data via the agent, and on leaving it moves user data back
//!   into the TUN before deleting the agent's host route and neighbour entry.
//!
//! Behind a NAT the home agent may grant RFC 3519 UDP tunnelling, with
//! keepalives. The outside modes (cvc, fvc, mc) are decided by
//! `mobility::MobileNode`, which this daemon is not yet built on; configured
//! without them it fails closed (`require_tnc`).
//!
//! The node notices a move by the carrier and address events themselves, so
//! the time to notice is the time the interface takes to be reconfigured.

use crate::config::MnFile;
use crate::control::{ControlServer, StatusRequest};
use crate::shell::io_err;
use mip4::auth::SecurityAssociation;
use mip4::client::{Attachment, ClientConfig, ClientEvent, RegistrationClient};
use mip4::wire::MIP_PORT;
use netio::netlink::{NetEvent, Netlink, Route};
use netio::raw::{RawIp, RawIpOptions, IPPROTO_IPIP};
use netio::tun::Tun;
use netio::udp::UdpOptions;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};
use tokio::net::UdpSocket;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

/// How long addresses left on an interface whose carrier came back are
/// distrusted, absent any address change (see `settle_until`).
const ADDRESS_SETTLE: Duration = Duration::from_millis(500);
/// How often a request waiting for a route to the home agent checks again.
const ROUTE_POLL: Duration = Duration::from_millis(5);
/// Behind a NAT (RFC 3519 UDP tunneling): when we keep sending user data but have
/// heard nothing from the home agent for this long, the NAT may have dropped or
/// changed our mapping (RFC 3519 section 4.10), and a keepalive is sent at once.
const NAT_SILENCE: Duration = Duration::from_millis(500);
/// How long that keepalive's echo reply may take before we re-register (at least; twice
/// the registration round trip if longer): the home agent moves a binding to a new NAT
/// port only on an authenticated request.
const NAT_PROBE_WAIT: Duration = Duration::from_millis(300);

/// IP-in-IP (no NAT): user data goes out but nothing came back from the home agent
/// for this long: ask it (an echo through the tunnel).
const BINDING_SILENCE: Duration = Duration::from_millis(1000);
/// How long that echo may take before the binding is presumed lost and the node
/// re-registers (at least; twice the registration round trip if longer).
const BINDING_PROBE_WAIT: Duration = Duration::from_millis(1000);

/// Why the gate stays closed on a link the i-HA did not prove inside.
const OUTSIDE_NO_VPN: &str =
    "registered without TNC: outside, and mipsec mn has no VPN data path yet (issue 12)";

#[path = "mn_status.rs"]
mod status;

/// Runs the mobile node until SIGINT or SIGTERM.
pub fn run(config: &Path) -> Result<(), String> {
    let file = MnFile::load(config).map_err(|e| e.to_string())?;
    crate::shell::block_on(async move {
        let mut d = Daemon::start(file).await?;
        let r = d.run().await;
        d.cleanup().await;
        r
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Detached,
    Home,
    Colocated(Ipv4Addr),
    /// Through a foreign agent (mode f): its address and the care-of address it offers.
    Foreign {
        agent: Ipv4Addr,
        care_of: Ipv4Addr,
    },
}

/// What the routes for user data point at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Routes {
    None,
    /// Into the TUN: tunneled when registered, dropped otherwise (fail closed).
    Tunnel,
    /// Natively through the foreign agent (RFC 3024 direct delivery style).
    Agent(Ipv4Addr),
}

/// The foreign agent heard on the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct AgentInfo {
    addr: Ipv4Addr,
    care_of: Ipv4Addr,
    sequence: u16,
    expires: Instant,
    /// The agent's network, from the Prefix-Lengths extension, if it sent one.
    prefix: Option<mip4::Ipv4Net>,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Detached => "detached",
            Mode::Home => "home",
            Mode::Colocated(_) => "colocated",
            Mode::Foreign { .. } => "foreign",
        }
    }

    fn care_of(self) -> Option<Ipv4Addr> {
        match self {
            Mode::Colocated(a) => Some(a),
            Mode::Foreign { care_of, .. } => Some(care_of),
            _ => None,
        }
    }
}

#[derive(Default, Debug)]
struct Counters {
    registrations_ok: u64,
    registrations_failed: u64,
    moves: u64,
    /// Registrations started on a new attachment (status: detections).
    detections: u64,
    /// The gate went from open to closed.
    gate_closures: u64,
    /// Re-registrations because the home agent fell silent behind a NAT.
    nat_reregistrations: u64,
    /// Re-registrations because the home agent fell silent in the IP-in-IP tunnel
    /// (e.g. it restarted without its bindings).
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

/// Sockets bound to the current address on the physical interface.
struct PathSockets {
    udp: UdpSocket,
    raw: Option<RawIp>,
}

struct Daemon {
    file: MnFile,
    client: RegistrationClient,
    tun: Tun,
    tun_ifindex: u32,
    nl: Netlink,
    events: netio::netlink::NetEvents,
    phys_ifindex: u32,
    phys_up: bool,
    phys_addrs: Vec<(Ipv4Addr, u8)>,
    mode: Mode,
    socks: Option<PathSockets>,
    /// User data may flow (registered away from home).
    open: bool,
    routes: Routes,
    icmp_rx: RawIp,
    icmp_tx: RawIp,
    agent: Option<AgentInfo>,
    /// After a carrier comes back, addresses are not trusted until this time
    /// or an address change.
    settle_until: Option<Instant>,
    /// RFC 3519: the home agent tunnels over UDP; keepalive interval (s).
    udp_tunnel: Option<u16>,
    next_keepalive: Option<Instant>,
    keepalive_seq: u16,
    /// The last packet from the home agent through the UDP tunnel (or its reply).
    ha_heard: Option<Instant>,
    /// A liveness keepalive is out: (sent at, deadline for an answer).
    nat_probe: Option<(Instant, Instant)>,
    register_started: Option<Instant>,
    last_rtt: Option<Duration>,
    retry_at: Option<Instant>,
    /// Resend the current request soon (it could not leave the host).
    resend_at: Option<Instant>,
    counters: Counters,
    /// Why the interface's state or gate last changed, and when (status).
    change_reason: &'static str,
    changed_at: Instant,
    /// The last registration whose reply carried the Trusted Networks Configured
    /// extension (RFC 5265), on the current attachment.
    tnc_at: Option<Instant>,
    /// Registered, but the reply carried no TNC while TNC is required: outside.
    outside: bool,
    ctl_rx: mpsc::Receiver<StatusRequest>,
    _ctl: Option<ControlServer>,
}

impl Daemon {
    async fn start(file: MnFile) -> Result<Daemon, String> {
        let m = &file.mn;
        let sa = SecurityAssociation::new(m.spi, m.algorithm.into(), &m.key.0);
        let mut cc = ClientConfig::new(m.home_address, m.home_agent, sa);
        cc.lifetime = m.lifetime;
        cc.reverse_tunnel = m.reverse_tunnel;
        cc.replay = m.replay.into();
        cc.initial_rto = Duration::from_millis(m.retransmit_ms.max(50));
        cc.encapsulating_delivery = m.encapsulating_delivery;
        cc.udp_tunnel = match m.udp_tunnel {
            crate::config::UdpTunnelMode::Off => None,
            crate::config::UdpTunnelMode::Auto => Some(false),
            crate::config::UdpTunnelMode::Force => Some(true),
        };
        let mut seed = [0u8; 32];
        crate::shell::getrandom(&mut seed);
        let client = RegistrationClient::new(cc, seed);

        let nl = Netlink::new().map_err(io_err("netlink"))?;
        let phys_ifindex = nl
            .ifindex(&m.interface)
            .await
            .map_err(io_err("interface"))?;
        let (tun, tun_ifindex) = crate::shell::open_tunnel(&m.tunnel_device)?;
        // Fail closed beyond the process: the routes for user data point into this
        // device, and a persistent device keeps them after a crash (kill -9), where
        // its packets are dropped unread instead of leaving in the clear through the
        // default route. A restart attaches to the same device; a clean stop clears it.
        tun.set_persistent(true)
            .map_err(|e| format!("tunnel device {}: {e}", m.tunnel_device))?;
        if let Err(e) = nl.add_address(tun_ifindex, m.home_address, 32).await {
            debug!("home address on tunnel device: {e}");
        }
        let events = nl.events().await.map_err(io_err("netlink events"))?;
        let link = nl
            .link_by_index(phys_ifindex)
            .await
            .map_err(io_err("interface"))?;
        let phys_addrs = nl
            .addresses(Some(phys_ifindex))
            .await
            .map_err(io_err("addresses"))?
            .into_iter()
            .map(|a| (a.addr, a.prefix))
            .collect();
        let icmp_rx = RawIp::open_with(
            1,
            &RawIpOptions {
                device: Some(m.interface.clone()),
                ..RawIpOptions::default()
            },
        )
        .map_err(io_err("ICMP socket"))?;
        let icmp_tx = RawIp::open_with(
            1,
            &RawIpOptions {
                device: Some(m.interface.clone()),
                header_included: true,
                ..RawIpOptions::default()
            },
        )
        .map_err(io_err("ICMP send socket"))?;
        // Packets from a foreign agent arrive for the home address, which lives on the TUN.
        std::fs::write(
            format!("/proc/sys/net/ipv4/conf/{}/rp_filter", m.interface),
            "0",
        )
        .ok();
        // Nothing but our registrations may edit the routes of a mobility interface:
        // an ICMP redirect (e.g. from a foreign agent's host after a crash) would
        // steer user data natively past the tunnel (issue 16 item 5).
        for conf in [m.interface.as_str(), "all", "default"] {
            crate::shell::write_sysctl(
                &format!("/proc/sys/net/ipv4/conf/{conf}/accept_redirects"),
                "0",
            );
        }
        let (ctl_tx, ctl_rx) = mpsc::channel(8);
        let ctl = match &m.control_socket {
            Some(p) => Some(
                ControlServer::start(p, ctl_tx)
                    .map_err(|e| format!("control socket {}: {e}", p.display()))?,
            ),
            None => None,
        };
        info!(home = %m.home_address, home_agent = %m.home_agent, interface = %m.interface, "mobile node started");
        if !m.require_tnc && m.outside == crate::config::OutsideMode::None {
            warn!("require_tnc is off and no outside mode is configured: user data is tunnelled in plaintext IP-in-IP wherever the home agent answers, inside or not");
        }
        let mut d = Daemon {
            file,
            client,
            tun,
            tun_ifindex,
            nl,
            events,
            phys_ifindex,
            phys_up: link.is_running(),
            phys_addrs,
            mode: Mode::Detached,
            socks: None,
            open: false,
            routes: Routes::None,
            icmp_rx,
            icmp_tx,
            agent: None,
            settle_until: None,
            udp_tunnel: None,
            next_keepalive: None,
            keepalive_seq: 0,
            ha_heard: None,
            nat_probe: None,
            register_started: None,
            last_rtt: None,
            retry_at: None,
            resend_at: None,
            counters: Counters::default(),
            change_reason: "started",
            changed_at: Instant::now(),
            tnc_at: None,
            outside: false,
            ctl_rx,
            _ctl: ctl,
        };
        // Closed from the first instant, and a predecessor killed with its routes
        // in place is taken over: they are replaced, or removed at home.
        d.install_routes(Routes::Tunnel).await;
        Ok(d)
    }

    async fn run(&mut self) -> Result<(), String> {
        let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
        let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
        let mut tbuf = vec![0u8; 65536];
        let mut ubuf = vec![0u8; 65536];
        let mut rbuf = vec![0u8; 65536];
        let mut ibuf = vec![0u8; 65536];
        self.solicit().await;
        self.evaluate().await;
        self.drain().await;
        loop {
            let deadline = [
                self.client.poll_timeout(),
                self.retry_at,
                self.resend_at,
                self.agent.map(|a| a.expires),
                self.next_keepalive,
                self.nat_probe.map(|p| p.1),
                self.settle_until,
            ]
            .into_iter()
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
                    None => return Err("netlink event stream ended".into()),
                },
                r = recv_udp(self.socks.as_ref().map(|s| &s.udp), &mut ubuf) => match r {
                    Ok((n, std::net::SocketAddr::V4(from))) => {
                        if ubuf.first() == Some(&mip4::wire::MessageType::TUNNEL_DATA.0) && n > 0 {
                            self.on_udp_tunnel(from, &ubuf[..n]).await;
                            // Tunnel data comes in bursts: drain what is queued.
                            for _ in 0..crate::shell::BATCH {
                                let Some(Ok((n, std::net::SocketAddr::V4(from)))) =
                                    self.socks.as_ref().map(|s| s.udp.try_recv_from(&mut ubuf))
                                else {
                                    break;
                                };
                                if ubuf.first() == Some(&mip4::wire::MessageType::TUNNEL_DATA.0) {
                                    self.on_udp_tunnel(from, &ubuf[..n]).await;
                                } else {
                                    self.client.handle_datagram(Instant::now(), SystemTime::now(), from, &ubuf[..n]);
                                }
                            }
                        } else {
                            self.client.handle_datagram(Instant::now(), SystemTime::now(), from, &ubuf[..n]);
                        }
                    }
                    Ok(_) => {}
                    Err(e) => debug!("registration socket: {e}"),
                },
                r = recv_raw(self.socks.as_ref().and_then(|s| s.raw.as_ref()), &mut rbuf) => match r {
                    Ok((n, src)) => {
                        self.on_tunnel(src, &rbuf[..n]).await;
                        for _ in 0..crate::shell::BATCH {
                            let Some(Ok((n, src))) = self.socks.as_ref().and_then(|s| s.raw.as_ref()).map(|r| r.try_recv_from(&mut rbuf)) else { break };
                            self.on_tunnel(src, &rbuf[..n]).await;
                        }
                    }
                    Err(e) => debug!("raw receive: {e}"),
                },
                r = self.tun.recv(&mut tbuf) => match r {
                    Ok(n) => {
                        self.on_user_packet(&tbuf[..n]).await;
                        for _ in 0..crate::shell::BATCH {
                            let Ok(n) = self.tun.try_recv(&mut tbuf) else { break };
                            self.on_user_packet(&tbuf[..n]).await;
                        }
                    }
                    Err(e) => warn!("tun receive: {e}"),
                },
                r = self.icmp_rx.recv_from(&mut ibuf) => match r {
                    Ok((n, src)) => self.on_icmp(src, &ibuf[..n]).await,
                    Err(e) => debug!("icmp receive: {e}"),
                },
                Some(req) = self.ctl_rx.recv() => { let _ = req.send(self.status()); }
                _ = sleep => {
                    let now = Instant::now();
                    if self.retry_at.is_some_and(|t| t <= now) {
                        self.retry_at = None;
                        self.reregister().await;
                    }
                    if self.resend_at.is_some_and(|t| t <= now) {
                        self.resend_at = None;
                        self.resend();
                    }
                    if let Some(k) = self.udp_tunnel.filter(|k| *k > 0 && self.next_keepalive.is_some_and(|t| t <= now)) {
                        self.next_keepalive = Some(now + Duration::from_secs(u64::from(k)));
                        if self.open {
                            self.send_keepalive().await;
                        }
                    }
                    if let Some((sent, _)) = self.nat_probe.filter(|p| p.1 <= now) {
                        self.nat_probe = None;
                        if self.open && self.ha_heard.is_none_or(|h| h < sent) {
                            if self.udp_tunnel.is_some() {
                                warn!("no answer from the home agent through the NAT: re-registering for a fresh mapping");
                                self.counters.nat_reregistrations += 1;
                            } else {
                                warn!("no answer from the home agent through the tunnel: binding presumed lost, re-registering");
                                self.counters.dead_binding_reregistrations += 1;
                            }
                            self.reregister().await;
                        }
                    }
                    if self.settle_until.is_some_and(|t| t <= now) {
                        self.settle_until = None;
                        self.evaluate().await;
                    }
                    if self.agent.is_some_and(|a| a.expires <= now) {
                        // Movement detection by advertisement lifetime (RFC 5944 2.4.2.1).
                        info!("foreign agent advertisement expired");
                        self.agent = None;
                        self.evaluate().await;
                    }
                    self.client.handle_timeout(now, SystemTime::now());
                }
                _ = term.recv() => { info!("SIGTERM: shutting down"); break }
                _ = int.recv() => { info!("SIGINT: shutting down"); break }
            }
            self.drain().await;
        }
        Ok(())
    }

    async fn on_net_event(&mut self, ev: NetEvent) {
        match ev {
            NetEvent::LinkUp { ifindex, .. } if ifindex == self.phys_ifindex => {
                self.phys_up = true;
                // The addresses still on the interface may belong to the link we
                // left: a DHCP client replaces them a moment later. Trust them only
                // after an address change, or after ADDRESS_SETTLE without one (the
                // same link came back).
                self.settle_until = Some(Instant::now() + ADDRESS_SETTLE);
                self.solicit().await;
            }
            NetEvent::LinkDown { ifindex, .. } | NetEvent::LinkRemoved { ifindex, .. }
                if ifindex == self.phys_ifindex =>
            {
                self.phys_up = false;
                // A new link: whatever agent was there must be heard again.
                self.agent = None;
            }
            NetEvent::AddrAdded {
                ifindex,
                addr,
                prefix,
            } if ifindex == self.phys_ifindex => {
                if !self.phys_addrs.contains(&(addr, prefix)) {
                    self.phys_addrs.push((addr, prefix));
                }
                self.settle_until = None;
            }
            NetEvent::AddrRemoved {
                ifindex,
                addr,
                prefix,
            } if ifindex == self.phys_ifindex => {
                self.phys_addrs.retain(|a| *a != (addr, prefix));
                // Wait for the replacement, if it is coming, before acting.
                if self.phys_addrs.is_empty() {
                    self.settle_until = None;
                }
            }
            _ => return,
        }
        self.evaluate().await;
        if let (Mode::Foreign { agent, .. }, Routes::Agent(_)) = (self.mode, self.routes) {
            // Address changes on the link may have taken the routes through the agent.
            self.routes = Routes::None;
            self.set_routes(Routes::Agent(agent)).await;
        }
    }

    /// Decides the mode from the interface's state and acts on a change.
    async fn evaluate(&mut self) {
        let m = self.file.mn.clone();
        let now = Instant::now();
        let agent = self
            .agent
            .filter(|a| a.expires > now && m.use_foreign_agents);
        let settling = self.settle_until.is_some_and(|t| t > now);
        let want = if !self.phys_up {
            Mode::Detached
        } else if let Some(a) = agent.filter(|_| settling) {
            // Advertisements heard since the link came up are fresh.
            Mode::Foreign {
                agent: a.addr,
                care_of: a.care_of,
            }
        } else if settling {
            Mode::Detached
        } else if self.phys_addrs.iter().any(|(a, _)| *a == m.home_address) {
            Mode::Home
        } else if let Some(a) = agent {
            // An agent on the link is preferred; a co-located address is the fallback.
            Mode::Foreign {
                agent: a.addr,
                care_of: a.care_of,
            }
        } else if let Some((a, _)) = self
            .phys_addrs
            .iter()
            .find(|(a, _)| !m.home_network.0.contains(*a))
        {
            Mode::Colocated(*a)
        } else {
            Mode::Detached
        };
        if want == self.mode {
            return;
        }
        info!(from = self.mode.name(), to = want.name(), care_of = ?want.care_of(), "attachment changed");
        self.counters.moves += 1;
        if want != Mode::Detached {
            self.counters.detections += 1;
        }
        // MN-3: stop relaying user data at once on any change.
        self.set_open(
            false,
            match want {
                Mode::Detached => "no carrier or no usable address",
                Mode::Home => "home address on the link",
                Mode::Colocated(_) => "new co-located care-of address",
                Mode::Foreign { .. } => "foreign agent on the link",
            },
        );
        self.tnc_at = None;
        self.outside = false;
        self.socks = None;
        self.client.reset();
        self.retry_at = None;
        self.resend_at = None;
        self.udp_tunnel = None;
        self.next_keepalive = None;
        self.ha_heard = None;
        self.nat_probe = None;
        let left = std::mem::replace(&mut self.mode, want);
        if let Mode::Foreign { agent, .. } = left {
            self.leave_agent(agent, want).await;
        }
        match want {
            Mode::Detached => {
                // Fail closed until we know where we are: whatever link comes next
                // gets no user data in the clear, neither through an agent that is
                // not there nor through a default route we did not choose.
                self.set_routes(Routes::Tunnel).await;
            }
            Mode::Home => {
                self.set_routes(Routes::None).await;
                match self.open_sockets(m.home_address, m.encapsulating_delivery) {
                    Ok(s) => self.socks = Some(s),
                    Err(e) => warn!("{e}"),
                }
                self.announce_home().await;
                let att = self.attachment(self.file.mn.home_address, false);
                self.register_started = Some(Instant::now());
                self.client
                    .deregister(Instant::now(), SystemTime::now(), att);
            }
            Mode::Colocated(coa) => {
                // Fail closed: user data goes into the TUN (and is dropped there)
                // until the registration is accepted, never out in the clear.
                self.set_routes(Routes::Tunnel).await;
                match self.open_sockets(coa, true) {
                    Ok(s) => self.socks = Some(s),
                    Err(e) => {
                        warn!("{e}");
                        self.retry_at = Some(Instant::now() + Duration::from_secs(1));
                        return;
                    }
                }
                self.register_started = Some(Instant::now());
                let att = self.attachment(coa, true);
                self.client.register(Instant::now(), SystemTime::now(), att);
            }
            Mode::Foreign { agent, care_of } => {
                self.set_routes(Routes::Tunnel).await;
                self.route_to_agent(agent).await;
                match self.open_sockets(m.home_address, m.encapsulating_delivery) {
                    Ok(s) => self.socks = Some(s),
                    Err(e) => {
                        warn!("{e}");
                        self.retry_at = Some(Instant::now() + Duration::from_secs(1));
                        return;
                    }
                }
                self.register_started = Some(Instant::now());
                let att = self.agent_attachment(agent, care_of);
                self.client.register(Instant::now(), SystemTime::now(), att);
            }
        }
    }

    /// Forgets the foreign agent we were registered through. User data is moved off
    /// the routes through it first (into the TUN, fail closed), then its host route
    /// and neighbour entry go. Deleting the neighbour entry also frees the packets the
    /// kernel queued while resolving an agent that is no longer on the link; TCP
    /// does not retransmit a segment still held there, so without this an upstream
    /// flow stalls for the ARP failure time (3 s) after leaving mode f.
    async fn leave_agent(&mut self, agent: Ipv4Addr, next: Mode) {
        if matches!(next, Mode::Foreign { agent: a, .. } if a == agent) {
            return;
        }
        if matches!(self.routes, Routes::Agent(_)) {
            self.set_routes(Routes::Tunnel).await;
        }
        let r = Route::new(agent, 32).dev(self.phys_ifindex);
        if let Err(e) = self.nl.del_route(&r).await {
            debug!("remove route to the foreign agent {agent}: {e}");
        }
        if let Err(e) = self.nl.del_neighbour(self.phys_ifindex, agent).await {
            debug!("remove neighbour entry of the foreign agent {agent}: {e}");
        }
    }

    /// The agent is on the link, whatever addresses the interface has (none, on a
    /// network that only offers a foreign agent).
    async fn route_to_agent(&self, agent: Ipv4Addr) {
        let r = Route::new(agent, 32).dev(self.phys_ifindex);
        if let Err(e) = self.nl.replace_route(&r).await {
            warn!("route to the foreign agent {agent}: {e}");
        }
    }

    fn agent_attachment(&self, agent: Ipv4Addr, care_of: Ipv4Addr) -> Attachment {
        Attachment {
            care_of,
            local: SocketAddrV4::new(self.file.mn.home_address, MIP_PORT),
            dest: SocketAddrV4::new(agent, MIP_PORT),
            colocated: false,
        }
    }

    /// Sends an Agent Solicitation on the link (RFC 5944 section 2.4).
    async fn solicit(&mut self) {
        if !self.file.mn.use_foreign_agents {
            return;
        }
        let mut icmp = Vec::new();
        mip4::wire::agent::AgentSolicitation.emit(&mut icmp);
        let mut h = wire::ipv4::Ipv4Header::new(
            self.file.mn.home_address,
            Ipv4Addr::new(224, 0, 0, 2),
            1,
            icmp.len(),
        );
        h.ttl = 1;
        let mut pkt = vec![0u8; 20 + icmp.len()];
        if h.emit(&mut pkt).is_ok() {
            pkt[20..].copy_from_slice(&icmp);
            if let Err(e) = self.icmp_tx.send_packet(&pkt).await {
                debug!("agent solicitation: {e}");
            }
        }
    }

    /// An ICMP message on the link: foreign agent advertisements matter.
    async fn on_icmp(&mut self, _src: Ipv4Addr, packet: &[u8]) {
        let Ok(h) = wire::ipv4::Ipv4Header::parse(packet) else {
            return;
        };
        let icmp = &packet[h.header_len..usize::from(h.total_len)];
        if icmp.first() != Some(&mip4::wire::agent::ICMP_ROUTER_ADVERTISEMENT) {
            return;
        }
        let Ok(adv) = mip4::wire::agent::AgentAdvertisement::parse(icmp) else {
            return self.counters.drop("malformed agent advertisement");
        };
        use mip4::wire::agent::AgentFlags;
        let f = adv.mobility.flags;
        let (Some(care_of), Some(router)) =
            (adv.mobility.care_of.first().copied(), adv.routers.first())
        else {
            return;
        };
        let trusted = &self.file.mn.trusted_agents;
        if !trusted.is_empty() && !trusted.contains(&router.addr) {
            // A rogue (or merely unknown) agent never moves the node: its
            // advertisement is counted and otherwise ignored.
            return self.counters.drop("advertisement from an untrusted agent");
        }
        if !f.contains(AgentFlags::F)
            || f.contains(AgentFlags::B)
            || !self.file.mn.use_foreign_agents
        {
            return;
        }
        let info = AgentInfo {
            addr: router.addr,
            care_of,
            sequence: adv.mobility.sequence,
            expires: Instant::now() + Duration::from_secs(u64::from(adv.lifetime.max(1))),
            prefix: adv
                .prefix_lengths
                .as_ref()
                .and_then(|p| p.first())
                .and_then(|len| mip4::Ipv4Net::new(router.addr, *len)),
        };
        // Movement detection (RFC 5944 section 2.4.2): a second agent on the same
        // network prefix is not a move while the current one's advertisement is
        // valid; a different prefix is (2.4.2.2), as is the current one expiring
        // (2.4.2.1, in the timer).
        if let Some(cur) = self
            .agent
            .filter(|c| c.addr != info.addr && c.expires > Instant::now())
        {
            let same_network = matches!((cur.prefix, info.prefix), (Some(a), Some(b)) if a == b);
            if same_network {
                return;
            }
        }
        let prev = self.agent.replace(info);
        let changed = prev.is_none_or(|p| p.addr != info.addr || p.care_of != info.care_of);
        // A sequence number that went back below 256 means the agent rebooted and
        // lost its visitor list (RFC 5944 section 3.6.1.2): register again.
        let rebooted = prev.is_some_and(|p| info.sequence < p.sequence && info.sequence < 256);
        if changed {
            self.evaluate().await;
        } else if rebooted && matches!(self.mode, Mode::Foreign { .. }) {
            info!("foreign agent rebooted; registering again");
            self.reregister().await;
        }
    }

    /// Starts the registration of the current attachment over again.
    async fn reregister(&mut self) {
        self.mode = Mode::Detached;
        self.counters.moves = self.counters.moves.saturating_sub(1);
        self.evaluate().await;
    }

    /// Sends the current registration (or deregistration) again, at once.
    fn resend(&mut self) {
        let (now, wall) = (Instant::now(), SystemTime::now());
        match self.mode {
            Mode::Colocated(coa) if self.client.is_pending() => {
                let att = self.attachment(coa, true);
                self.client.register(now, wall, att);
            }
            Mode::Home if self.client.is_pending() => {
                let att = self.attachment(self.file.mn.home_address, false);
                self.client.deregister(now, wall, att);
            }
            Mode::Foreign { agent, care_of } if self.client.is_pending() => {
                let att = self.agent_attachment(agent, care_of);
                self.client.register(now, wall, att);
            }
            _ => {}
        }
    }

    fn attachment(&self, addr: Ipv4Addr, colocated: bool) -> Attachment {
        Attachment {
            care_of: addr,
            local: SocketAddrV4::new(addr, MIP_PORT),
            dest: SocketAddrV4::new(self.file.mn.home_agent, MIP_PORT),
            colocated,
        }
    }

    fn open_sockets(&self, addr: Ipv4Addr, with_raw: bool) -> Result<PathSockets, String> {
        let dev = self.file.mn.interface.clone();
        let mut o = UdpOptions::new(SocketAddrV4::new(addr, MIP_PORT));
        o.device = Some(dev.clone());
        o.reuse_addr = true;
        let udp = o
            .bind()
            .map_err(|e| format!("registration socket on {addr}: {e}"))?;
        let raw = if with_raw {
            Some(
                RawIp::open_with(
                    IPPROTO_IPIP,
                    &RawIpOptions {
                        bind_addr: Some(addr),
                        device: Some(dev),
                        header_included: false,
                    },
                )
                .map_err(|e| format!("tunnel socket on {addr}: {e}"))?,
            )
            .inspect(|r| {
                crate::shell::enlarge_buffers(std::os::fd::AsFd::as_fd(r));
                crate::shell::allow_fragmentation(std::os::fd::AsFd::as_fd(r));
            })
        } else {
            None
        };
        Ok(PathSockets { udp, raw })
    }

    /// Points the two halves of the address space (0.0.0.0/1, 128.0.0.0/1, more
    /// specific than any default route) at the TUN, at the foreign agent, or nowhere.
    async fn set_routes(&mut self, want: Routes) {
        if self.routes == want {
            return;
        }
        self.install_routes(want).await;
    }

    /// Installs `want` whatever the recorded state (replacing what is there).
    async fn install_routes(&mut self, want: Routes) {
        let home = self.file.mn.home_address;
        if let Routes::Agent(a) = want {
            // The kernel drops routes through the agent when addresses on the
            // interface go (a DHCP client's flush): put the host route back first.
            self.route_to_agent(a).await;
        }
        for half in [Ipv4Addr::new(0, 0, 0, 0), Ipv4Addr::new(128, 0, 0, 0)] {
            let r = match want {
                Routes::None => {
                    let old = match self.routes {
                        Routes::Agent(a) => Route::new(half, 1).via(a).dev(self.phys_ifindex),
                        _ => Route::new(half, 1).dev(self.tun_ifindex),
                    };
                    if let Err(e) = self.nl.del_route(&old).await {
                        debug!("remove route {half}/1: {e}");
                    }
                    continue;
                }
                Routes::Tunnel => Route::new(half, 1).dev(self.tun_ifindex).src(home),
                Routes::Agent(a) => Route::new(half, 1).via(a).dev(self.phys_ifindex).src(home),
            };
            if let Err(e) = self.nl.replace_route(&r).await {
                warn!("route {half}/1: {e}");
            }
        }
        self.routes = want;
    }

    async fn announce_home(&self) {
        if let Err(e) = self
            .nl
            .gratuitous_arp(self.phys_ifindex, self.file.mn.home_address)
            .await
        {
            warn!("gratuitous ARP at home: {e}");
        }
    }

    /// A packet from an application, to be tunneled to the home agent.
    async fn on_user_packet(&mut self, packet: &[u8]) {
        if !self.open {
            return self.counters.drop("not registered");
        }
        let Some((src, _)) = wire::ipv4::addresses(packet) else {
            return self.counters.drop("not an IPv4 packet (from tun)");
        };
        if src != self.file.mn.home_address {
            return self.counters.drop("source is not the home address");
        }
        if self.udp_tunnel.is_some() && matches!(self.mode, Mode::Colocated(_)) {
            self.send_udp_tunnel(packet).await;
            return self.check_nat_liveness().await;
        }
        let Some(raw) = self.socks.as_ref().and_then(|s| s.raw.as_ref()) else {
            return self.counters.drop("not registered");
        };
        // IP-in-IP to the home agent, or to the foreign agent in the encapsulating
        // delivery style (RFC 3024 section 5.2).
        let dst = match self.mode {
            Mode::Foreign { agent, .. } => agent,
            _ => self.file.mn.home_agent,
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
        if matches!(self.mode, Mode::Colocated(_)) {
            self.check_nat_liveness().await;
        }
    }

    /// We are sending through the NAT: if the home agent has been silent for
    /// NAT_SILENCE, ask it for an answer (a keepalive's echo). A NAT that lost or
    /// changed our mapping shows as that answer not coming back, and the timer
    /// then re-registers, which installs the new mapping at the home agent.
    async fn check_nat_liveness(&mut self) {
        if self.nat_probe.is_some() {
            return;
        }
        let now = Instant::now();
        // Without a NAT there is no mapping to lose quickly, only a binding (a home
        // agent restarted without its state): ask less eagerly, so that a loaded
        // link does not look dead. Bound: silence + wait + one registration.
        let (silence, floor) = if self.udp_tunnel.is_some() {
            (NAT_SILENCE, NAT_PROBE_WAIT)
        } else {
            (BINDING_SILENCE, BINDING_PROBE_WAIT)
        };
        if self
            .ha_heard
            .is_some_and(|h| now.duration_since(h) < silence)
        {
            return;
        }
        self.send_keepalive().await;
        // A slow path (satellite, congested LTE) gets longer than the floor: twice the
        // last registration round trip, so a slow echo does not look like a lost mapping.
        let wait = floor.max(self.last_rtt.unwrap_or_default() * 2);
        self.nat_probe = Some((now, now + wait));
    }

    /// RFC 3519 Tunnel Data from the home agent (the node is behind a NAT).
    async fn on_udp_tunnel(&mut self, from: SocketAddrV4, payload: &[u8]) {
        if *from.ip() != self.file.mn.home_agent || self.udp_tunnel.is_none() {
            return self.counters.drop("tunnel data not from the home agent");
        }
        if self.require_tnc() && !self.open {
            return self.counters.drop("gate closed");
        }
        let Ok(td) = mip4::wire::tunnel::TunnelData::parse(payload) else {
            return self.counters.drop("malformed tunnel data");
        };
        let Ok(h) = wire::ipv4::Ipv4Header::parse(td.packet) else {
            return self.counters.drop("malformed inner packet");
        };
        if td.next_header != 4 || h.dst != self.file.mn.home_address {
            return self
                .counters
                .drop("inner destination is not the home address");
        }
        self.ha_heard = Some(Instant::now());
        match self.tun.send(td.packet).await {
            Ok(_) => {
                self.counters.rx_packets += 1;
                self.counters.rx_bytes += td.packet.len() as u64;
            }
            Err(e) => {
                warn!("tun send: {e}");
                self.counters.drop("tun write failed");
            }
        }
    }

    /// An RFC 3519 keepalive: an ICMP echo request to the home agent through the
    /// UDP tunnel, which keeps the NAT's mapping alive in both directions.
    async fn send_keepalive(&mut self) {
        if self.udp_tunnel.is_none() {
            return self.send_ipip_echo().await;
        }
        let m = &self.file.mn;
        let mut icmp = vec![8u8, 0, 0, 0, 0x6d, 0x69, 0, 0];
        self.keepalive_seq = self.keepalive_seq.wrapping_add(1);
        icmp[6..8].copy_from_slice(&self.keepalive_seq.to_be_bytes());
        let c = wire::checksum::checksum(&icmp);
        icmp[2..4].copy_from_slice(&c.to_be_bytes());
        let inner = wire::ipv4::Ipv4Header::build(m.home_address, m.home_agent, 1, &icmp);
        self.send_udp_tunnel(&inner).await;
    }

    /// The same liveness question without a NAT: an ICMP echo to the home agent
    /// inside the IP-in-IP tunnel. The home agent's answer comes back through its
    /// tunnel only while it holds our binding; a home agent that restarted without
    /// its state answers towards the home link, and the silence makes the timer
    /// re-register (dead binding, issue 16 item 5).
    async fn send_ipip_echo(&mut self) {
        let m = &self.file.mn;
        let mut icmp = vec![8u8, 0, 0, 0, 0x6d, 0x69, 0, 0];
        self.keepalive_seq = self.keepalive_seq.wrapping_add(1);
        icmp[6..8].copy_from_slice(&self.keepalive_seq.to_be_bytes());
        let c = wire::checksum::checksum(&icmp);
        icmp[2..4].copy_from_slice(&c.to_be_bytes());
        let inner = wire::ipv4::Ipv4Header::build(m.home_address, m.home_agent, 1, &icmp);
        let Some(raw) = self.socks.as_ref().and_then(|s| s.raw.as_ref()) else {
            return;
        };
        if let Err(e) = raw.send_to(&inner, m.home_agent).await {
            debug!("liveness echo: {e}");
        }
    }

    async fn send_udp_tunnel(&mut self, packet: &[u8]) {
        let Some(s) = &self.socks else {
            return self.counters.drop("not registered");
        };
        let mut msg = Vec::with_capacity(packet.len() + 4);
        mip4::wire::tunnel::TunnelData {
            next_header: 4,
            packet,
        }
        .emit(&mut msg);
        let dst = SocketAddrV4::new(self.file.mn.home_agent, MIP_PORT);
        match s.udp.send_to(&msg, dst).await {
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

    /// TNC required (or an outside mode configured): the gate is closed both ways
    /// until the link is proven inside.
    fn require_tnc(&self) -> bool {
        self.file.mn.require_tnc || self.file.mn.outside != crate::config::OutsideMode::None
    }

    /// IP-in-IP from the home agent.
    async fn on_tunnel(&mut self, outer_src: Ipv4Addr, packet: &[u8]) {
        if outer_src != self.file.mn.home_agent {
            return self.counters.drop("tunnel packet not from the home agent");
        }
        if self.require_tnc() && !self.open {
            return self.counters.drop("gate closed");
        }
        let Ok(outer) = wire::ipv4::Ipv4Header::parse(packet) else {
            return self.counters.drop("malformed outer header");
        };
        let inner = &packet[outer.header_len..usize::from(outer.total_len)];
        let Ok(h) = wire::ipv4::Ipv4Header::parse(inner) else {
            return self.counters.drop("malformed inner packet");
        };
        if h.dst != self.file.mn.home_address {
            return self
                .counters
                .drop("inner destination is not the home address");
        }
        self.ha_heard = Some(Instant::now());
        match self.tun.send(inner).await {
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

    async fn drain(&mut self) {
        while let Some(t) = self.client.poll_transmit() {
            // Linux sends from a device-bound socket even without a route, as if the
            // destination were on the link, and the request dies in ARP. Until the
            // interface has a route to the home agent (a DHCP client or the lab adds
            // it a moment after the address), hold the request and try again soon.
            if !has_route(&self.file.mn.interface, *t.dst.ip()) {
                self.counters.drop("no route to the home agent yet");
                self.resend_at = Some(Instant::now() + ROUTE_POLL);
                continue;
            }
            match &self.socks {
                Some(s) => {
                    if let Err(e) = s.udp.send_to(&t.payload, t.dst).await {
                        debug!("registration send: {e}");
                        // The interface has its address but not yet its routes (a DHCP
                        // client or the lab sets them a moment later): the request never
                        // left, so try again shortly instead of waiting a full timeout.
                        if matches!(
                            e.raw_os_error(),
                            Some(libc::ENETUNREACH) | Some(libc::EHOSTUNREACH)
                        ) {
                            self.counters.drop("no route to the home agent yet");
                            self.resend_at = Some(Instant::now() + ROUTE_POLL);
                        }
                    }
                }
                None => self.counters.drop("registration with no socket"),
            }
        }
        while let Some(e) = self.client.poll_event() {
            self.on_client_event(e).await;
        }
    }

    async fn on_client_event(&mut self, e: ClientEvent) {
        match e {
            ClientEvent::Registered {
                care_of,
                lifetime,
                tnc,
                udp_tunnel,
                ..
            } => {
                self.counters.registrations_ok += 1;
                self.ha_heard = Some(Instant::now());
                if tnc && self.mode.care_of() == Some(care_of) {
                    self.tnc_at = Some(Instant::now());
                }
                if self.udp_tunnel != udp_tunnel {
                    info!(keepalive_s = ?udp_tunnel, "RFC 3519 UDP tunneling {}", if udp_tunnel.is_some() { "on (NAT detected or forced)" } else { "off" });
                }
                self.udp_tunnel = udp_tunnel;
                self.next_keepalive = udp_tunnel
                    .filter(|k| *k > 0)
                    .map(|k| Instant::now() + Duration::from_secs(u64::from(k)));
                if let Some(t) = self.register_started.take() {
                    self.last_rtt = Some(t.elapsed());
                }
                // RFC 5265 MN-4: without TNC this link is not proven inside, and
                // this shell has no VPN data path: the gate stays closed.
                self.outside = self.require_tnc() && !tnc;
                if self.outside {
                    if self.open || self.change_reason != OUTSIDE_NO_VPN {
                        warn!(care_of = %care_of, "{OUTSIDE_NO_VPN}");
                    }
                    self.set_open(false, OUTSIDE_NO_VPN);
                    return;
                }
                if let Mode::Foreign { agent, care_of: c } = self.mode {
                    if c == care_of {
                        if !self.file.mn.encapsulating_delivery {
                            // RFC 3024 direct delivery: user data goes natively to the agent.
                            self.set_routes(Routes::Agent(agent)).await;
                        }
                        if !self.open {
                            info!(care_of = %care_of, agent = %agent, lifetime, rtt_ms = ?self.last_rtt.map(|d| d.as_secs_f64() * 1e3), "registered through a foreign agent");
                        }
                        self.set_open(true, "registration accepted through the foreign agent");
                    }
                }
                if self.mode == Mode::Colocated(care_of) {
                    if !self.open {
                        info!(care_of = %care_of, lifetime, tnc, rtt_ms = ?self.last_rtt.map(|d| d.as_secs_f64() * 1e3), "registered");
                    }
                    self.set_open(true, "registration accepted");
                }
            }
            ClientEvent::Deregistered => {
                self.counters.registrations_ok += 1;
                if let Some(t) = self.register_started.take() {
                    self.last_rtt = Some(t.elapsed());
                }
                if self.client.last_accepted_tnc() {
                    self.tnc_at = Some(Instant::now());
                }
                info!("deregistered at home");
                self.announce_home().await;
            }
            ClientEvent::Denied {
                code,
                authenticated,
            } => {
                self.counters.registrations_failed += 1;
                warn!(%code, authenticated, "registration denied; retrying in 5 s");
                self.set_open(false, "registration denied");
                self.retry_at = Some(Instant::now() + Duration::from_secs(5));
            }
            ClientEvent::TimedOut { attempts } => {
                self.counters.registrations_failed += 1;
                warn!(attempts, "no reply from the home agent; retrying");
                if !self.client.is_registered(Instant::now()) {
                    self.set_open(false, "no reply from the home agent");
                }
                self.retry_at = Some(Instant::now() + Duration::from_secs(1));
            }
            ClientEvent::Expired => {
                warn!("registration expired");
                self.counters.registrations_failed += 1;
                self.set_open(false, "registration expired");
                self.retry_at = Some(Instant::now());
            }
            ClientEvent::Resynchronized { clock_offset } => {
                info!(
                    clock_offset,
                    "Identification resynchronised with the home agent's clock"
                );
            }
        }
    }

    async fn cleanup(&mut self) {
        self.set_routes(Routes::None).await;
        if let Err(e) = self.tun.set_persistent(false) {
            warn!("tunnel device: {e}");
        }
        info!("mobile node stopped; routes removed");
    }
}

async fn recv_udp(
    sock: Option<&UdpSocket>,
    buf: &mut [u8],
) -> std::io::Result<(usize, std::net::SocketAddr)> {
    match sock {
        Some(s) => s.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

async fn recv_raw(sock: Option<&RawIp>, buf: &mut [u8]) -> std::io::Result<(usize, Ipv4Addr)> {
    match sock {
        Some(s) => s.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

/// True if the main routing table has a route through `iface` that covers `dst`
/// (from /proc/net/route, which lists the main table).
fn has_route(iface: &str, dst: Ipv4Addr) -> bool {
    let Ok(text) = std::fs::read_to_string("/proc/net/route") else {
        return true;
    };
    let dst = u32::from_le_bytes(dst.octets());
    text.lines().skip(1).any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < 8 || f[0] != iface {
            return false;
        }
        let (Ok(d), Ok(m)) = (u32::from_str_radix(f[1], 16), u32::from_str_radix(f[7], 16)) else {
            return false;
        };
        dst & m == d & m
    })
}
