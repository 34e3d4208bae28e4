//! Entries a daemon marks as its own, so that a later instance can find and remove
//! what one killed by SIGKILL left behind: neighbour entries (permanent and proxy)
//! and routes carry a protocol id (`NDA_PROTOCOL`, `rtm_protocol`; `ip neigh show
//! proto N`, `ip route show proto N`), and policy rules are identified by a priority
//! and table the daemon owns.

use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteProtocol};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use netlink_packet_route::AddressFamily;

use super::{Netlink, Route};
use crate::{Error, Result};

impl Netlink {
    /// [`Netlink::set_neighbour`] with the entry marked by `protocol`.
    pub async fn set_neighbour_marked(
        &self,
        ifindex: u32,
        addr: Ipv4Addr,
        mac: [u8; 6],
        protocol: u8,
    ) -> Result<()> {
        let mut req = self
            .handle
            .neighbours()
            .add(ifindex, IpAddr::V4(addr))
            .link_layer_address(&mac)
            .state(NeighbourState::Permanent)
            .replace();
        req.message_mut()
            .attributes
            .push(NeighbourAttribute::Protocol(RouteProtocol::from(protocol)));
        req.execute().await.map_err(Error::netlink("set neighbour"))
    }

    /// [`Netlink::add_proxy_arp`] with the entry marked by `protocol`.
    pub async fn add_proxy_arp_marked(
        &self,
        ifindex: u32,
        addr: Ipv4Addr,
        protocol: u8,
    ) -> Result<()> {
        let mut req = self
            .handle
            .neighbours()
            .add(ifindex, IpAddr::V4(addr))
            .flags(NeighbourFlags::Proxy)
            .replace();
        req.message_mut()
            .attributes
            .push(NeighbourAttribute::Protocol(RouteProtocol::from(protocol)));
        req.execute()
            .await
            .map_err(Error::netlink("add proxy neighbour"))
    }

    /// [`Netlink::replace_route`] with the route marked by `protocol`.
    pub async fn replace_route_marked(&self, route: &Route, protocol: u8) -> Result<()> {
        let mut msg = route.message()?;
        msg.header.protocol = RouteProtocol::from(protocol);
        self.handle
            .route()
            .add(msg)
            .replace()
            .execute()
            .await
            .map_err(Error::netlink("replace route"))
    }

    /// [`Netlink::del_route`] for a route installed with
    /// [`Netlink::replace_route_marked`] (the kernel matches the protocol too).
    pub async fn del_route_marked(&self, route: &Route, protocol: u8) -> Result<()> {
        let mut msg = route.message()?;
        msg.header.protocol = RouteProtocol::from(protocol);
        self.handle
            .route()
            .del(msg)
            .execute()
            .await
            .map_err(Error::netlink("delete route"))
    }

    /// IPv4 neighbour entries marked `protocol` (proxy entries with `proxies`), as
    /// (ifindex, address).
    pub async fn neighbours_marked(
        &self,
        protocol: u8,
        proxies: bool,
    ) -> Result<Vec<(u32, Ipv4Addr)>> {
        let mut req = self.handle.neighbours().get();
        if proxies {
            req = req.proxies();
        }
        let msgs: Vec<NeighbourMessage> = req
            .set_address_family(AddressFamily::Inet)
            .execute()
            .try_collect()
            .await
            .map_err(Error::netlink("dump neighbours"))?;
        let want = RouteProtocol::from(protocol);
        let mut out = Vec::new();
        for m in msgs {
            let marked = m
                .attributes
                .iter()
                .any(|a| matches!(a, NeighbourAttribute::Protocol(p) if *p == want));
            if !marked {
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

    /// IPv4 routes marked `protocol`, in every table (remove them with
    /// [`Netlink::del_route_marked`]).
    pub async fn routes_marked(&self, protocol: u8) -> Result<Vec<Route>> {
        let mut q = RouteMessage::default();
        q.header.address_family = AddressFamily::Inet;
        let msgs: Vec<RouteMessage> = self
            .handle
            .route()
            .get(q)
            .execute()
            .try_collect()
            .await
            .map_err(Error::netlink("dump routes"))?;
        let want = RouteProtocol::from(protocol);
        let mut out = Vec::new();
        for m in msgs.into_iter().filter(|m| m.header.protocol == want) {
            let mut r = Route::new(Ipv4Addr::UNSPECIFIED, m.header.destination_prefix_length);
            r.table = Some(u32::from(m.header.table));
            for a in &m.attributes {
                match a {
                    RouteAttribute::Destination(RouteAddress::Inet(d)) => r.dst = *d,
                    RouteAttribute::Gateway(RouteAddress::Inet(g)) => r.gateway = Some(*g),
                    RouteAttribute::Oif(i) => r.oif = Some(*i),
                    RouteAttribute::Table(t) => r.table = Some(*t),
                    RouteAttribute::Priority(p) => r.metric = Some(*p),
                    _ => {}
                }
            }
            out.push(r);
        }
        Ok(out)
    }

    /// Removes every IPv4 policy rule at `priority` that looks up `table` (however it
    /// selects its traffic). Returns how many went.
    pub async fn del_rules_at(&self, priority: u32, table: u32) -> Result<usize> {
        let mut n = 0;
        // One rule per round; bounded so that a kernel that ignores the selectors
        // cannot keep us here.
        for _ in 0..65_536 {
            let mut m = RuleMessage::default();
            m.header.family = AddressFamily::Inet;
            m.header.action = RuleAction::ToTable;
            m.header.table = u8::try_from(table).unwrap_or(0);
            m.attributes.push(RuleAttribute::Priority(priority));
            m.attributes.push(RuleAttribute::Table(table));
            match self.handle.rule().del(m).execute().await {
                Ok(()) => n += 1,
                Err(_) => break,
            }
        }
        Ok(n)
    }
}
