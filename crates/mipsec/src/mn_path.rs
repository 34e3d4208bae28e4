//! The mobile node's path on the physical interface: sockets bound to the
//! attachment the core chose, the routes of user data, the foreign agent's host
//! route, agent solicitations and advertisements.

use super::{net_err, Daemon, Error, Routes};
use mip4::wire::MIP_PORT;
use netio::netlink::Route;
use netio::raw::{RawIp, RawIpOptions, IPPROTO_IPIP};
use netio::udp::UdpOptions;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Instant, SystemTime};
use tokio::net::UdpSocket;
use tracing::{debug, info, warn};

/// The receive buffer of a registration socket: RFC 3519 Tunnel Data bursts.
const TUNNEL_RECV_BUFFER: usize = 8 << 20;

impl Daemon {
    /// Follows the core's attachment: a new one gets its sockets and, through a
    /// foreign agent, a host route to the agent; the old agent is forgotten
    /// (user data moved off it first).
    pub(super) async fn sync_attachment(&mut self, li: usize) {
        let phys = self.links[li].ifindex;
        let now = self.node.attachment(phys);
        if now == self.links[li].attached {
            return;
        }
        let old = std::mem::replace(&mut self.links[li].attached, now);
        info!(interface = %self.links[li].name, from = ?old, to = ?now, "attachment");
        self.links[li].live = super::Liveness::default();
        let new_agent = now.and_then(|a| a.agent);
        if let Some(agent) = self.links[li].agent_route.filter(|a| Some(*a) != new_agent) {
            self.links[li].agent_route = None;
            self.forget_agent(li, agent).await;
        }
        if let Some(agent) = new_agent {
            self.route_to_agent(phys, agent).await;
            self.links[li].agent_route = Some(agent);
            self.introduce_to_agent(li, agent).await;
            if let Some(r) = self.gateway_via_agent(phys, agent) {
                if let Err(e) = self.nl.replace_route(&r).await {
                    warn!("route to the VPN gateway via the agent {agent}: {e}");
                }
            }
        }
        let home = self.file.mn.home_address;
        // IP-in-IP from the care-of address (mode c), or from the home address to
        // the agent in the encapsulating delivery style (RFC 3024 section 5.2).
        let raw_at = match now {
            Some(a) if a.agent.is_none() && a.care_of != home => Some(a.care_of),
            Some(a) if a.agent.is_some() && self.file.mn.encapsulating_delivery => Some(home),
            _ => None,
        };
        let l = &mut self.links[li];
        l.raw_want = raw_at;
        if l.raw.as_ref().map(|r| r.0) != raw_at {
            l.raw = None;
            self.ensure_raw(li);
        }
        // The registration sockets follow the requests (see `udp_for`); one bound
        // to an address of an attachment we left is useless.
        let x_home = self.x_home();
        self.links[li].udp.retain(|u| {
            now.is_some_and(|a| u.0 == a.care_of || u.0 == home || Some(u.0) == x_home)
        });
    }

    /// The registration socket bound to `addr`:434 on the interface (opened on
    /// first use; replies come back to it).
    pub(super) fn udp_for(&mut self, li: usize, addr: Ipv4Addr) -> Option<&UdpSocket> {
        if !self.links[li].udp.iter().any(|u| u.0 == addr) {
            let mut o = UdpOptions::new(SocketAddrV4::new(addr, MIP_PORT));
            o.device = Some(self.links[li].name.clone());
            o.reuse_addr = true;
            match o.bind() {
                Ok(s) => {
                    // Tunnel Data arrives here, from a home agent whose kernel sends
                    // at line rate (`kernel_encap`): room for the bursts this
                    // process takes a moment to read (as wireguard-go's 7 MB).
                    if let Err(e) = netio::udp::set_recv_buffer(&s, TUNNEL_RECV_BUFFER) {
                        debug!("registration socket buffer: {e}");
                    }
                    // A burst in one receive where the interface merges (GRO).
                    if self.dp.udp_gro {
                        if let Err(e) = netio::udp::set_gro(&s, true) {
                            warn!("{e}: Tunnel Data taken one datagram at a time");
                            self.dp.udp_gro = false;
                        }
                    }
                    self.links[li].udp.push((addr, s))
                }
                Err(e) => {
                    warn!("registration socket on {addr}: {e}");
                    self.counters
                        .drop("registration socket could not be opened");
                    return None;
                }
            }
        }
        self.links[li]
            .udp
            .iter()
            .find(|u| u.0 == addr)
            .map(|u| &u.1)
    }

    /// The registration socket of the care-of address (RFC 3519 tunnel data).
    pub(super) fn udp_at_care_of(&self, li: usize) -> Option<&UdpSocket> {
        let l = &self.links[li];
        let coa = l.attached?.care_of;
        l.udp.iter().find(|u| u.0 == coa).map(|u| &u.1)
    }

    /// Opens the tunnel socket the attachment wants if it is not open. It can
    /// fail for a moment (the address went away and came back): the next packet
    /// tries again, instead of dropping everything until the next move.
    pub(super) fn ensure_raw(&mut self, li: usize) {
        let l = &self.links[li];
        let Some(addr) = l.raw_want.filter(|_| l.raw.is_none()) else {
            return;
        };
        match open_raw(&l.name, addr) {
            Ok(r) => self.links[li].raw = Some((addr, r)),
            Err(e) => {
                debug!("{e}");
                self.counters.drop("tunnel socket could not be opened");
            }
        }
    }

    /// Forgets a foreign agent: user data is moved off the routes through it first
    /// (into the TUN, fail closed), then its host route and neighbour entry go.
    /// Deleting the neighbour entry also frees the packets the kernel queued while
    /// resolving an agent that is no longer on the link; TCP does not retransmit a
    /// segment still held there, so without this an upstream flow stalls for the
    /// ARP failure time (3 s) after leaving mode f.
    pub(super) async fn forget_agent(&mut self, li: usize, agent: Ipv4Addr) {
        let phys = self.links[li].ifindex;
        if matches!(self.routes, Routes::Agent(_, dev) if dev == phys) {
            self.set_routes(Routes::Tunnel).await;
        }
        if let Some(r) = self.gateway_via_agent(phys, agent) {
            if let Err(e) = self.nl.del_route(&r).await {
                debug!("remove route to the VPN gateway via {agent}: {e}");
            }
        }
        let r = Route::new(agent, 32).dev(phys);
        if let Err(e) = self.nl.del_route(&r).await {
            debug!("remove route to the foreign agent {agent}: {e}");
        }
        let r = r.table(self.file.mn.user_table);
        if let Err(e) = self.nl.del_route(&r).await {
            debug!("remove route to the foreign agent {agent} (user table): {e}");
        }
        if let Err(e) = self.nl.del_neighbour(phys, agent).await {
            debug!("remove neighbour entry of the foreign agent {agent}: {e}");
        }
    }

    /// Resolves the agent with an ARP probe (sender address 0.0.0.0) and pins its
    /// MAC in a permanent neighbour entry, so the kernel never ARPs for it: its
    /// request would name the address of whichever packet needed the agent, the home
    /// address included, on a visited, maybe outside, link (RFC 5944 4.6). The agent
    /// learns our MAC from the frame of each registration request (RFC 5944 3.7.2;
    /// `mipsec fa` does).
    pub(super) async fn introduce_to_agent(&self, li: usize, agent: Ipv4Addr) {
        let phys = self.links[li].ifindex;
        let Ok(link) = self.nl.link_by_index(phys).await else {
            return;
        };
        let Ok(mac) = <[u8; 6]>::try_from(link.mac.as_slice()) else {
            return;
        };
        let wait = std::time::Duration::from_millis(100);
        match netio::netlink::arp_probe::resolve(phys, mac, agent, wait).await {
            Ok(Some(agent_mac)) => {
                if let Err(e) = self.nl.set_neighbour(phys, agent, agent_mac).await {
                    debug!("neighbour entry of the foreign agent {agent}: {e}");
                }
            }
            Ok(None) => debug!("the foreign agent {agent} did not answer an ARP probe"),
            Err(e) => debug!("ARP probe for the foreign agent {agent}: {e}"),
        }
    }

    /// The agent is on the link, whatever addresses the interface has (none, on a
    /// network that only offers a foreign agent).
    async fn route_to_agent(&self, phys: u32, agent: Ipv4Addr) {
        let r = Route::new(agent, 32).dev(phys);
        if let Err(e) = self.nl.replace_route(&r).await {
            warn!("route to the foreign agent {agent}: {e}");
        }
    }

    /// Points the two halves of the address space (0.0.0.0/1, 128.0.0.0/1) of the
    /// user table at the TUN, at the foreign agent, or nowhere (then the main table
    /// decides: mode h at home). The user table is looked up before main (see
    /// [`Daemon::install_user_rule`]), so no route a visited network adds to main
    /// (DHCP option 121, TunnelVision) can take user data past the gate.
    pub(super) async fn set_routes(&mut self, want: Routes) {
        if self.routes == want {
            return;
        }
        self.install_routes(want).await;
    }

    /// Installs `want` whatever the recorded state (replacing what is there).
    pub(super) async fn install_routes(&mut self, want: Routes) {
        let home = self.file.mn.home_address;
        let table = self.file.mn.user_table;
        if let Routes::Agent(a, dev) = want {
            // The kernel drops routes through the agent when addresses on the
            // interface go (a DHCP client's flush): put the host route back first.
            self.route_to_agent(dev, a).await;
            let r = Route::new(a, 32).dev(dev).table(table);
            if let Err(e) = self.nl.replace_route(&r).await {
                warn!("route to the foreign agent {a} (user table): {e}");
            }
        }
        for half in [Ipv4Addr::new(0, 0, 0, 0), Ipv4Addr::new(128, 0, 0, 0)] {
            let r = match want {
                Routes::None => {
                    let old = match self.routes {
                        Routes::Agent(a, dev) => Route::new(half, 1).via(a).dev(dev),
                        _ => Route::new(half, 1).dev(self.tun_ifindex),
                    }
                    .table(table);
                    if let Err(e) = self.nl.del_route(&old).await {
                        debug!("remove route {half}/1: {e}");
                    }
                    continue;
                }
                Routes::Tunnel => Route::new(half, 1).dev(self.tun_ifindex).src(home),
                Routes::Agent(a, dev) => Route::new(half, 1).via(a).dev(dev).src(home),
            }
            .table(table);
            if let Err(e) = self.nl.replace_route(&r).await {
                warn!("route {half}/1: {e}");
            }
        }
        self.routes = want;
    }

    /// The policy rule `from all lookup user_table` at priority `user_table`, before
    /// main, over a table whose two halves point into the TUN. A killed predecessor's
    /// table and rule are taken over without a moment where user data could fall
    /// through to main: the halves are replaced in place first, then every other route
    /// it left (agent host routes, the x-MIP gateway route) goes, and its rule stays.
    /// The rule outlives the process, with the routes into the persistent TUN: after a
    /// kill -9 user data still goes nowhere but the TUN.
    pub(super) async fn install_user_rule(&mut self) -> Result<(), Error> {
        let table = self.file.mn.user_table;
        self.install_routes(Routes::Tunnel).await;
        vpnc::killswitch::flush_table_where(&self.nl, table, |m| {
            m.header.destination_prefix_length != 1
        })
        .await
        .map_err(Error::Routes)?;
        match self.nl.add_rule(&self.user_rule()).await {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
            Err(source) => Err(Error::Net {
                what: format!("policy rule for the user table {table}"),
                source,
            }),
        }
    }

    /// Clean stop: the rule and the table go.
    pub(super) async fn remove_user_rule(&mut self) {
        while self.nl.del_rule(&self.user_rule()).await.is_ok() {}
        if let Err(e) = vpnc::killswitch::flush_table(&self.nl, self.file.mn.user_table).await {
            warn!("{e}");
        }
        self.routes = Routes::None;
    }

    fn user_rule(&self) -> netio::netlink::Rule {
        netio::netlink::Rule {
            from: Some((Ipv4Addr::UNSPECIFIED, 0)),
            fwmark: None,
            table: self.file.mn.user_table,
            priority: Some(self.file.mn.user_table),
        }
    }

    /// RFC 5944 section 4.6: at home, a gratuitous ARP takes the home address back
    /// from the home agent's proxy.
    pub(super) async fn announce_home(&self, li: usize) {
        if let Err(e) = self
            .nl
            .gratuitous_arp(self.links[li].ifindex, self.file.mn.home_address)
            .await
        {
            warn!("gratuitous ARP at home: {e}");
        }
    }

    /// Sends an Agent Solicitation on the link (RFC 5944 section 2.4), from
    /// 0.0.0.0 (RFC 1256 3.1): the link may be outside, and the home address must not
    /// show there. It goes as a link-layer frame, because a raw IP socket would fill
    /// in a source address of its own choosing; agents answer an unspecified source
    /// by multicast.
    pub(super) async fn solicit(&mut self, li: usize) {
        if !self.file.mn.use_foreign_agents || self.file.mn.trusted_agents.is_empty() {
            return;
        }
        let phys = self.links[li].ifindex;
        let mac = match self.nl.link_by_index(phys).await {
            Ok(l) => match <[u8; 6]>::try_from(l.mac.as_slice()) {
                Ok(m) => m,
                Err(_) => return,
            },
            Err(e) => return debug!("agent solicitation: {e}"),
        };
        let mut icmp = Vec::new();
        mip4::wire::agent::AgentSolicitation.emit(&mut icmp);
        let all_routers = Ipv4Addr::new(224, 0, 0, 2);
        let mut h = wire::ipv4::Ipv4Header::new(Ipv4Addr::UNSPECIFIED, all_routers, 1, icmp.len());
        h.ttl = 1;
        let mut ip = vec![0u8; 20 + icmp.len()];
        if h.emit(&mut ip).is_err() {
            return;
        }
        ip[20..].copy_from_slice(&icmp);
        let dst = [0x01, 0x00, 0x5e, 0x00, 0x00, 0x02];
        let mut frame = Vec::with_capacity(14 + ip.len());
        frame.extend_from_slice(&dst);
        frame.extend_from_slice(&mac);
        frame.extend_from_slice(&0x0800u16.to_be_bytes());
        frame.extend_from_slice(&ip);
        if let Err(e) = netio::netlink::arp::send_frame(phys, &frame, dst, 0x0800) {
            debug!("agent solicitation: {e}");
        }
    }

    /// An ICMP message on the link: agent advertisements go to the core, which
    /// uses only trusted agents (and counts the others).
    pub(super) fn on_icmp(&mut self, li: usize, packet: &[u8]) {
        let Ok(h) = wire::ipv4::Ipv4Header::parse(packet) else {
            return;
        };
        let Some(icmp) = packet.get(h.header_len..usize::from(h.total_len)) else {
            return;
        };
        // The home agent's answer to a liveness echo that went out through the
        // agent (mode f, direct delivery): it still tunnels to us.
        let echo = wire::icmp::Echo::parse(icmp);
        if echo.is_ok_and(|e| !e.request && e.ident == super::data::ECHO_ID)
            && h.src == self.file.mn.home_agent
            && h.dst == self.file.mn.home_address
        {
            if let Some(l) = self.links.get_mut(li) {
                l.live.ha_heard = Some(Instant::now());
            }
            return;
        }
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
        // Not a foreign agent, or busy (RFC 5944 2.1.1): nothing to register with.
        if !f.contains(AgentFlags::F) || f.contains(AgentFlags::B) {
            return;
        }
        self.node.handle_advertisement(
            Instant::now(),
            SystemTime::now(),
            self.links[li].ifindex,
            mobility::Advertisement {
                agent: router.addr,
                care_of,
                lifetime: adv.lifetime,
                sequence: adv.mobility.sequence,
                nai: None,
            },
        );
    }
}

/// The IP-in-IP socket of an interface, bound to `addr` on it.
fn open_raw(dev: &str, addr: Ipv4Addr) -> Result<RawIp, Error> {
    let r = RawIp::open_with(
        IPPROTO_IPIP,
        &RawIpOptions {
            bind_addr: Some(addr),
            device: Some(dev.to_string()),
            header_included: false,
        },
    )
    .map_err(net_err(format!("tunnel socket on {addr}")))?;
    crate::shell::enlarge_buffers(std::os::fd::AsFd::as_fd(&r));
    crate::shell::allow_fragmentation(std::os::fd::AsFd::as_fd(&r));
    Ok(r)
}

/// True if the main routing table has a route through `iface` that covers `dst`
/// (from /proc/net/route, which lists the main table).
pub(super) fn has_route(iface: &str, dst: Ipv4Addr) -> bool {
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
