//! rtnetlink: configure links, addresses, routes, rules and neighbours, and watch events.
//!
//! Built on the `rtnetlink` crate (message types from `netlink-packet-route`): its request
//! builders cover every operation an agent needs, and it keeps the netlink sequence/ACK
//! bookkeeping out of this crate. [`Netlink`] wraps it in a small IPv4-only API with typed
//! arguments, and maps kernel refusals to [`Error::Netlink`] (see [`Error::raw_os_error`]
//! for `EEXIST`/`ESRCH`). Gratuitous ARP is not a netlink operation; it goes out on an
//! `AF_PACKET` socket (module [`arp`]).
//!
//! A netlink socket talks to the network namespace it was created in.

pub mod arp;
pub mod arp_probe;
mod events;
mod marked;
pub mod route_batch;

use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{RouteMessage, RouteScope};
use netlink_packet_route::rule::{RuleAction, RuleMessage};
use netlink_packet_route::AddressFamily;
use rtnetlink::{AddressMessageBuilder, Handle, LinkUnspec, RouteMessageBuilder};

pub use events::{LinkState, NetEvent, NetEvents};

use crate::{Error, Result};

/// A handle to the kernel's routing netlink in the current network namespace.
/// Cheap to clone; all clones share one socket and one background task.
#[derive(Clone, Debug)]
pub struct Netlink {
    handle: Handle,
}

/// One interface as seen over netlink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Interface index.
    pub ifindex: u32,
    /// Interface name.
    pub name: String,
    /// `IFF_UP`: administratively up.
    pub admin_up: bool,
    /// `IFF_LOWER_UP`: carrier present.
    pub lower_up: bool,
    /// MTU, when the kernel reported it.
    pub mtu: Option<u32>,
    /// Hardware address (6 bytes on Ethernet, empty on TUN).
    pub mac: Vec<u8>,
}

impl Link {
    /// Usable for traffic: administratively up and with carrier.
    pub fn is_running(&self) -> bool {
        self.admin_up && self.lower_up
    }

    pub(crate) fn from_message(m: &LinkMessage) -> Link {
        let mut link = Link {
            ifindex: m.header.index,
            name: String::new(),
            admin_up: m.header.flags.contains(LinkFlags::Up),
            lower_up: m.header.flags.contains(LinkFlags::LowerUp),
            mtu: None,
            mac: Vec::new(),
        };
        for a in &m.attributes {
            match a {
                LinkAttribute::IfName(n) => link.name = n.clone(),
                LinkAttribute::Mtu(v) => link.mtu = Some(*v),
                LinkAttribute::Address(mac) => link.mac = mac.clone(),
                _ => {}
            }
        }
        link
    }
}

/// An IPv4 address assigned to an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IfAddr {
    /// Interface index.
    pub ifindex: u32,
    /// The local address.
    pub addr: Ipv4Addr,
    /// Prefix length.
    pub prefix: u8,
}

impl IfAddr {
    pub(crate) fn from_message(m: &AddressMessage) -> Option<IfAddr> {
        if m.header.family != AddressFamily::Inet {
            return None;
        }
        // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer on
        // point-to-point links and equal to IFA_LOCAL elsewhere.
        let mut local = None;
        let mut address = None;
        for a in &m.attributes {
            match a {
                AddressAttribute::Local(IpAddr::V4(v)) => local = Some(*v),
                AddressAttribute::Address(IpAddr::V4(v)) => address = Some(*v),
                _ => {}
            }
        }
        Some(IfAddr {
            ifindex: m.header.index,
            addr: local.or(address)?,
            prefix: m.header.prefix_len,
        })
    }
}

/// An IPv4 route, as `ip route add <dst>/<prefix> [via <gateway>] [dev <oif>] [table T]
/// [metric M] [src S]` would install it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// Destination network.
    pub dst: Ipv4Addr,
    /// Destination prefix length (0 for a default route).
    pub prefix: u8,
    /// Next hop, if any. Without one the route is on-link (scope link) through `oif`.
    pub gateway: Option<Ipv4Addr>,
    /// Output interface index.
    pub oif: Option<u32>,
    /// Routing table (`None` = main, 254).
    pub table: Option<u32>,
    /// Metric (`RTA_PRIORITY`).
    pub metric: Option<u32>,
    /// Preferred source address.
    pub pref_src: Option<Ipv4Addr>,
}

impl Route {
    /// A route to `dst/prefix` with nothing else set.
    pub fn new(dst: Ipv4Addr, prefix: u8) -> Route {
        Route {
            dst,
            prefix,
            gateway: None,
            oif: None,
            table: None,
            metric: None,
            pref_src: None,
        }
    }

    /// Set the next hop.
    pub fn via(mut self, gateway: Ipv4Addr) -> Route {
        self.gateway = Some(gateway);
        self
    }

    /// Set the output interface.
    pub fn dev(mut self, ifindex: u32) -> Route {
        self.oif = Some(ifindex);
        self
    }

    /// Set the table.
    pub fn table(mut self, table: u32) -> Route {
        self.table = Some(table);
        self
    }

    /// Set the metric.
    pub fn metric(mut self, metric: u32) -> Route {
        self.metric = Some(metric);
        self
    }

    /// Set the preferred source address.
    pub fn src(mut self, src: Ipv4Addr) -> Route {
        self.pref_src = Some(src);
        self
    }

    fn message(&self) -> Result<RouteMessage> {
        if self.prefix > 32 {
            return Err(Error::InvalidArgument("IPv4 prefix length above 32"));
        }
        if self.gateway.is_none() && self.oif.is_none() {
            return Err(Error::InvalidArgument(
                "a route needs a gateway or a device",
            ));
        }
        let mut b =
            RouteMessageBuilder::<Ipv4Addr>::new().destination_prefix(self.dst, self.prefix);
        if let Some(g) = self.gateway {
            b = b.gateway(g);
        } else {
            b = b.scope(RouteScope::Link);
        }
        if let Some(i) = self.oif {
            b = b.output_interface(i);
        }
        if let Some(t) = self.table {
            b = b.table_id(t);
        }
        if let Some(m) = self.metric {
            b = b.priority(m);
        }
        if let Some(s) = self.pref_src {
            b = b.pref_source(s);
        }
        Ok(b.build())
    }
}

/// A policy-routing rule: traffic matching `from` and/or `fwmark` looks up `table`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// Source prefix to match.
    pub from: Option<(Ipv4Addr, u8)>,
    /// Firewall mark to match.
    pub fwmark: Option<u32>,
    /// Table to look up.
    pub table: u32,
    /// Rule priority (`None` lets the kernel choose).
    pub priority: Option<u32>,
}

pub use arp::ArpOp;

impl Netlink {
    /// Open a netlink connection in the current network namespace and spawn its background
    /// task on the current tokio runtime.
    pub fn new() -> Result<Netlink> {
        let (conn, handle, _) =
            rtnetlink::new_connection().map_err(Error::io("open NETLINK_ROUTE socket"))?;
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

    /// The underlying `rtnetlink` handle, for operations this wrapper does not cover.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Look an interface up by name.
    pub async fn link_by_name(&self, name: &str) -> Result<Link> {
        crate::sys::ifname_bytes(name)?;
        let mut s = self
            .handle
            .link()
            .get()
            .match_name(name.to_owned())
            .execute();
        match s.try_next().await {
            Ok(Some(m)) => Ok(Link::from_message(&m)),
            Ok(None) => Err(Error::NoSuchLink(name.to_owned())),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => {
                Err(Error::NoSuchLink(name.to_owned()))
            }
            Err(e) => Err(Error::netlink("get link")(e)),
        }
    }

    /// Look an interface up by index.
    pub async fn link_by_index(&self, ifindex: u32) -> Result<Link> {
        let mut s = self.handle.link().get().match_index(ifindex).execute();
        match s.try_next().await {
            Ok(Some(m)) => Ok(Link::from_message(&m)),
            Ok(None) => Err(Error::NoSuchLink(ifindex.to_string())),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => {
                Err(Error::NoSuchLink(ifindex.to_string()))
            }
            Err(e) => Err(Error::netlink("get link")(e)),
        }
    }

    /// The index of interface `name`.
    pub async fn ifindex(&self, name: &str) -> Result<u32> {
        Ok(self.link_by_name(name).await?.ifindex)
    }

    /// Every interface.
    pub async fn links(&self) -> Result<Vec<Link>> {
        let msgs: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(Error::netlink("dump links"))?;
        Ok(msgs.iter().map(Link::from_message).collect())
    }

    /// Set a link administratively up or down (`ip link set dev X up|down`).
    pub async fn set_link_up(&self, ifindex: u32, up: bool) -> Result<()> {
        let b = LinkUnspec::new_with_index(ifindex);
        let msg = if up { b.up() } else { b.down() }.build();
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(Error::netlink("set link up/down"))
    }

    /// Set a link's MTU.
    pub async fn set_link_mtu(&self, ifindex: u32, mtu: u32) -> Result<()> {
        let msg = LinkUnspec::new_with_index(ifindex).mtu(mtu).build();
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(Error::netlink("set link mtu"))
    }

    /// Add `addr/prefix` to interface `ifindex` (`ip addr add`).
    pub async fn add_address(&self, ifindex: u32, addr: Ipv4Addr, prefix: u8) -> Result<()> {
        if prefix > 32 {
            return Err(Error::InvalidArgument("IPv4 prefix length above 32"));
        }
        self.handle
            .address()
            .add(ifindex, IpAddr::V4(addr), prefix)
            .execute()
            .await
            .map_err(Error::netlink("add address"))
    }

    /// Remove `addr/prefix` from interface `ifindex` (`ip addr del`).
    pub async fn del_address(&self, ifindex: u32, addr: Ipv4Addr, prefix: u8) -> Result<()> {
        if prefix > 32 {
            return Err(Error::InvalidArgument("IPv4 prefix length above 32"));
        }
        let msg = AddressMessageBuilder::<Ipv4Addr>::new()
            .index(ifindex)
            .address(addr, prefix)
            .build();
        self.handle
            .address()
            .del(msg)
            .execute()
            .await
            .map_err(Error::netlink("delete address"))
    }

    /// IPv4 addresses, of one interface or (with `None`) of all.
    pub async fn addresses(&self, ifindex: Option<u32>) -> Result<Vec<IfAddr>> {
        let mut req = self.handle.address().get();
        if let Some(i) = ifindex {
            req = req.set_link_index_filter(i);
        }
        let msgs: Vec<AddressMessage> = req
            .execute()
            .try_collect()
            .await
            .map_err(Error::netlink("dump addresses"))?;
        let mut out: Vec<IfAddr> = msgs.iter().filter_map(IfAddr::from_message).collect();
        out.sort();
        Ok(out)
    }

    /// Install a route (`ip route add`). Fails with `EEXIST` if an equal route exists.
    pub async fn add_route(&self, route: &Route) -> Result<()> {
        self.handle
            .route()
            .add(route.message()?)
            .execute()
            .await
            .map_err(Error::netlink("add route"))
    }

    /// Install or overwrite a route (`ip route replace`).
    pub async fn replace_route(&self, route: &Route) -> Result<()> {
        self.handle
            .route()
            .add(route.message()?)
            .replace()
            .execute()
            .await
            .map_err(Error::netlink("replace route"))
    }

    /// The interface the kernel would send a packet to `dst` out of (`ip route get`),
    /// `None` when it has no route.
    pub async fn route_oif(&self, dst: Ipv4Addr) -> Result<Option<u32>> {
        use netlink_packet_route::route::{RouteAddress, RouteAttribute};
        let mut msg = RouteMessage::default();
        msg.header.address_family = AddressFamily::Inet;
        msg.header.destination_prefix_length = 32;
        msg.attributes
            .push(RouteAttribute::Destination(RouteAddress::Inet(dst)));
        let mut replies = self.handle.route().get(msg).execute();
        loop {
            match replies.try_next().await {
                Ok(Some(r)) => {
                    let oif = r.attributes.iter().find_map(|a| match a {
                        RouteAttribute::Oif(i) => Some(*i),
                        _ => None,
                    });
                    if oif.is_some() {
                        return Ok(oif);
                    }
                }
                Ok(None) => return Ok(None),
                Err(e) => {
                    let err = Error::netlink("route get")(e);
                    // No route at all (ENETUNREACH, EHOSTUNREACH): not an error here.
                    return match err.raw_os_error() {
                        Some(libc::ENETUNREACH) | Some(libc::EHOSTUNREACH) => Ok(None),
                        _ => Err(err),
                    };
                }
            }
        }
    }

    /// Remove a route (`ip route del`). Fails with `ESRCH` if there is none.
    pub async fn del_route(&self, route: &Route) -> Result<()> {
        self.handle
            .route()
            .del(route.message()?)
            .execute()
            .await
            .map_err(Error::netlink("delete route"))
    }

    fn rule_message(&self, rule: &Rule) -> Result<RuleMessage> {
        if rule.from.is_none() && rule.fwmark.is_none() {
            return Err(Error::InvalidArgument("a rule needs `from` or `fwmark`"));
        }
        let mut req = self
            .handle
            .rule()
            .add()
            .v4()
            .table_id(rule.table)
            .action(RuleAction::ToTable);
        if let Some((addr, len)) = rule.from {
            if len > 32 {
                return Err(Error::InvalidArgument("IPv4 prefix length above 32"));
            }
            req = req.source_prefix(addr, len);
        }
        if let Some(mark) = rule.fwmark {
            req = req.fw_mark(mark);
        }
        if let Some(p) = rule.priority {
            req = req.priority(p);
        }
        Ok(req.message_mut().clone())
    }

    /// Add a policy rule (`ip rule add [from P] [fwmark M] table T [priority N]`).
    pub async fn add_rule(&self, rule: &Rule) -> Result<()> {
        let msg = self.rule_message(rule)?;
        let mut req = self.handle.rule().add().v4();
        *req.message_mut() = msg;
        req.execute().await.map_err(Error::netlink("add rule"))
    }

    /// Remove a policy rule (`ip rule del ...` with the same selectors).
    pub async fn del_rule(&self, rule: &Rule) -> Result<()> {
        let msg = self.rule_message(rule)?;
        self.handle
            .rule()
            .del(msg)
            .execute()
            .await
            .map_err(Error::netlink("delete rule"))
    }

    /// Answer ARP requests for `addr` on `ifindex` (`ip neigh add proxy ADDR dev X`).
    ///
    /// The kernel answers from a proxy entry only when forwarding is enabled on the
    /// interface and the route to `addr` leaves through a different interface — exactly a
    /// home agent's situation for an away mobile node. Proxied replies are delayed by a
    /// random time up to `net.ipv4.neigh.<dev>.proxy_delay` (0.8 s by default); set it to 0
    /// for immediate answers.
    pub async fn add_proxy_arp(&self, ifindex: u32, addr: Ipv4Addr) -> Result<()> {
        self.handle
            .neighbours()
            .add(ifindex, IpAddr::V4(addr))
            .flags(NeighbourFlags::Proxy)
            .replace()
            .execute()
            .await
            .map_err(Error::netlink("add proxy neighbour"))
    }

    /// Remove a proxy ARP entry (`ip neigh del proxy ADDR dev X`).
    pub async fn del_proxy_arp(&self, ifindex: u32, addr: Ipv4Addr) -> Result<()> {
        let mut m = NeighbourMessage::default();
        m.header.family = AddressFamily::Inet;
        m.header.ifindex = ifindex;
        m.header.flags = NeighbourFlags::Proxy;
        m.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
                addr,
            )));
        self.handle
            .neighbours()
            .del(m)
            .execute()
            .await
            .map_err(Error::netlink("delete proxy neighbour"))
    }

    /// Proxy ARP entries on `ifindex` (or on every interface).
    pub async fn proxy_arps(&self, ifindex: Option<u32>) -> Result<Vec<(u32, Ipv4Addr)>> {
        let msgs: Vec<NeighbourMessage> = self
            .handle
            .neighbours()
            .get()
            .proxies()
            .set_address_family(AddressFamily::Inet)
            .execute()
            .try_collect()
            .await
            .map_err(Error::netlink("dump proxy neighbours"))?;
        let mut out = Vec::new();
        for m in msgs {
            if ifindex.is_some_and(|i| i != m.header.ifindex) {
                continue;
            }
            for a in &m.attributes {
                if let NeighbourAttribute::Destination(NeighbourAddress::Inet(v)) = a {
                    out.push((m.header.ifindex, *v));
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Set a permanent neighbour entry `addr -> mac` on `ifindex` (`ip neigh replace`).
    pub async fn set_neighbour(&self, ifindex: u32, addr: Ipv4Addr, mac: [u8; 6]) -> Result<()> {
        self.handle
            .neighbours()
            .add(ifindex, IpAddr::V4(addr))
            .link_layer_address(&mac)
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await
            .map_err(Error::netlink("set neighbour"))
    }

    /// Remove a neighbour entry (`ip neigh del ADDR dev X`).
    pub async fn del_neighbour(&self, ifindex: u32, addr: Ipv4Addr) -> Result<()> {
        let mut m = NeighbourMessage::default();
        m.header.family = AddressFamily::Inet;
        m.header.ifindex = ifindex;
        m.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
                addr,
            )));
        self.handle
            .neighbours()
            .del(m)
            .execute()
            .await
            .map_err(Error::netlink("delete neighbour"))
    }

    /// Broadcast a gratuitous ARP on `ifindex` announcing that `addr` is at the link's own
    /// MAC address (what a home agent sends when it starts intercepting for a mobile node,
    /// RFC 5944 section 4.6). See [`arp::send_gratuitous`] to choose the MAC or the opcode.
    pub async fn gratuitous_arp(&self, ifindex: u32, addr: Ipv4Addr) -> Result<()> {
        let link = self.link_by_index(ifindex).await?;
        let mac: [u8; 6] = link
            .mac
            .as_slice()
            .try_into()
            .map_err(|_| Error::InvalidArgument("link has no Ethernet address"))?;
        arp::send_gratuitous(ifindex, mac, addr, ArpOp::Request)
    }

    /// A long-lived gratuitous ARP sender for `ifindex` (see [`arp::ArpAnnouncer`]).
    pub async fn arp_announcer(&self, ifindex: u32) -> Result<arp::ArpAnnouncer> {
        let link = self.link_by_index(ifindex).await?;
        let mac: [u8; 6] = link
            .mac
            .as_slice()
            .try_into()
            .map_err(|_| Error::InvalidArgument("link has no Ethernet address"))?;
        arp::ArpAnnouncer::open(ifindex, mac)
    }

    /// Subscribe to link and IPv4 address events, seeded with the current link states so
    /// the first carrier change is reported correctly.
    pub async fn events(&self) -> Result<NetEvents> {
        NetEvents::subscribe(self, false).await
    }

    /// As [`Netlink::events`], plus [`NetEvent::RouteAdded`] for every IPv4 unicast
    /// route added in any table (a daemon waiting for a path to appear).
    pub async fn events_with_routes(&self) -> Result<NetEvents> {
        NetEvents::subscribe(self, true).await
    }
}
