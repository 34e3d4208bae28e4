//! Typed link, IPv4 address and (on request) IPv4 route events from rtnetlink
//! multicast groups.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use futures::channel::mpsc::UnboundedReceiver;
use futures::StreamExt;
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteType};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};
use rtnetlink::sys::SocketAddr;
use rtnetlink::MulticastGroup;

use super::{IfAddr, Link, Netlink};
use crate::{Error, Result};

/// A change in the network configuration that a mobility daemon reacts to.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NetEvent {
    /// The link became usable: administratively up with carrier (`IFF_UP` and
    /// `IFF_LOWER_UP`). Also reported for a newly appearing link that is already usable.
    LinkUp {
        /// Interface index.
        ifindex: u32,
        /// Interface name.
        name: String,
    },
    /// The link stopped being usable (admin down or carrier lost). Also reported for a
    /// newly appearing link that is not usable.
    LinkDown {
        /// Interface index.
        ifindex: u32,
        /// Interface name.
        name: String,
    },
    /// The link was deleted (or moved to another namespace).
    LinkRemoved {
        /// Interface index.
        ifindex: u32,
        /// Interface name.
        name: String,
    },
    /// An IPv4 address was assigned.
    AddrAdded {
        /// Interface index.
        ifindex: u32,
        /// Address.
        addr: Ipv4Addr,
        /// Prefix length.
        prefix: u8,
    },
    /// An IPv4 address was removed.
    AddrRemoved {
        /// Interface index.
        ifindex: u32,
        /// Address.
        addr: Ipv4Addr,
        /// Prefix length.
        prefix: u8,
    },
    /// An IPv4 unicast route was added or replaced (only on a stream from
    /// [`Netlink::events_with_routes`]): a destination that had no path may have one now.
    RouteAdded {
        /// Routing table.
        table: u32,
        /// Destination prefix.
        dst: Ipv4Addr,
        /// Its length.
        prefix: u8,
        /// Output interface, when the route names one.
        oif: Option<u32>,
    },
}

/// Last known usability of each link, used to turn the kernel's many `RTM_NEWLINK`
/// notifications (statistics, flags, MTU...) into edge-triggered up/down events.
#[derive(Debug, Default, Clone)]
pub struct LinkState {
    links: BTreeMap<u32, (String, bool)>,
}

impl LinkState {
    /// Record a link's state without emitting anything (seeding from a dump).
    pub fn seed(&mut self, link: &Link) {
        self.links
            .insert(link.ifindex, (link.name.clone(), link.is_running()));
    }

    /// Whether the link is known and running.
    pub fn is_running(&self, ifindex: u32) -> Option<bool> {
        self.links.get(&ifindex).map(|(_, r)| *r)
    }

    /// Translate one rtnetlink notification into at most one event.
    pub fn apply(&mut self, msg: &RouteNetlinkMessage) -> Option<NetEvent> {
        match msg {
            RouteNetlinkMessage::NewLink(m) => {
                let link = Link::from_message(m);
                let running = link.is_running();
                let prev = self
                    .links
                    .insert(link.ifindex, (link.name.clone(), running));
                match prev {
                    Some((_, was)) if was == running => None,
                    _ if running => Some(NetEvent::LinkUp {
                        ifindex: link.ifindex,
                        name: link.name,
                    }),
                    _ => Some(NetEvent::LinkDown {
                        ifindex: link.ifindex,
                        name: link.name,
                    }),
                }
            }
            RouteNetlinkMessage::DelLink(m) => {
                let link = Link::from_message(m);
                let prev = self.links.remove(&link.ifindex);
                let name = if link.name.is_empty() {
                    prev.map(|(n, _)| n).unwrap_or_default()
                } else {
                    link.name
                };
                Some(NetEvent::LinkRemoved {
                    ifindex: link.ifindex,
                    name,
                })
            }
            RouteNetlinkMessage::NewAddress(m) => {
                IfAddr::from_message(m).map(|a| NetEvent::AddrAdded {
                    ifindex: a.ifindex,
                    addr: a.addr,
                    prefix: a.prefix,
                })
            }
            RouteNetlinkMessage::DelAddress(m) => {
                IfAddr::from_message(m).map(|a| NetEvent::AddrRemoved {
                    ifindex: a.ifindex,
                    addr: a.addr,
                    prefix: a.prefix,
                })
            }
            RouteNetlinkMessage::NewRoute(m) => route_added(m),
            _ => None,
        }
    }
}

/// A new IPv4 unicast route as an event.
fn route_added(m: &RouteMessage) -> Option<NetEvent> {
    if m.header.address_family != AddressFamily::Inet || m.header.kind != RouteType::Unicast {
        return None;
    }
    let mut table = u32::from(m.header.table);
    let (mut dst, mut oif) = (Ipv4Addr::UNSPECIFIED, None);
    for a in &m.attributes {
        match a {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(RouteAddress::Inet(d)) => dst = *d,
            RouteAttribute::Oif(i) => oif = Some(*i),
            _ => {}
        }
    }
    Some(NetEvent::RouteAdded {
        table,
        dst,
        prefix: m.header.destination_prefix_length,
        oif,
    })
}

type Messages = UnboundedReceiver<(NetlinkMessage<RouteNetlinkMessage>, SocketAddr)>;

/// A stream of [`NetEvent`]s from the network namespace it was created in.
#[derive(Debug)]
pub struct NetEvents {
    messages: Messages,
    state: LinkState,
}

impl NetEvents {
    pub(super) async fn subscribe(nl: &Netlink, routes: bool) -> Result<NetEvents> {
        // Join the groups first, then dump: a change racing with the dump is either in
        // the dump or queued on this socket, and the state filter drops the duplicate.
        let mut groups = vec![MulticastGroup::Link, MulticastGroup::Ipv4Ifaddr];
        if routes {
            groups.push(MulticastGroup::Ipv4Route);
        }
        let (conn, _handle, messages) = rtnetlink::new_multicast_connection(&groups)
            .map_err(Error::io("open rtnetlink multicast socket"))?;
        tokio::spawn(conn);
        let mut state = LinkState::default();
        for link in nl.links().await? {
            state.seed(&link);
        }
        Ok(NetEvents { messages, state })
    }

    /// The next event; `None` when the netlink connection closed.
    ///
    /// If the process falls far behind, the kernel drops notifications (`ENOBUFS`) and
    /// the link table here can go stale; a daemon should re-dump links and addresses
    /// periodically or after a gap.
    pub async fn next(&mut self) -> Option<NetEvent> {
        while let Some((msg, _)) = self.messages.next().await {
            if let NetlinkPayload::InnerMessage(m) = msg.payload {
                if let Some(ev) = self.state.apply(&m) {
                    tracing::debug!(?ev, "netlink event");
                    return Some(ev);
                }
            }
        }
        None
    }

    /// The link states as currently tracked.
    pub fn link_state(&self) -> &LinkState {
        &self.state
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_route::address::{AddressAttribute, AddressMessage};
    use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
    use netlink_packet_route::AddressFamily;
    use std::net::IpAddr;

    fn link(idx: u32, name: &str, flags: LinkFlags) -> RouteNetlinkMessage {
        let mut m = LinkMessage::default();
        m.header.index = idx;
        m.header.flags = flags;
        m.attributes.push(LinkAttribute::IfName(name.into()));
        RouteNetlinkMessage::NewLink(m)
    }

    fn addr(idx: u32, a: Ipv4Addr, p: u8) -> AddressMessage {
        let mut m = AddressMessage::default();
        m.header.family = AddressFamily::Inet;
        m.header.index = idx;
        m.header.prefix_len = p;
        m.attributes.push(AddressAttribute::Local(IpAddr::V4(a)));
        m.attributes.push(AddressAttribute::Address(IpAddr::V4(a)));
        m
    }

    #[test]
    fn unicast_ipv4_routes_only() {
        use netlink_packet_route::route::RouteHeader;
        let mut m = RouteMessage::default();
        m.header.address_family = AddressFamily::Inet;
        m.header.kind = RouteType::Unicast;
        m.header.table = RouteHeader::RT_TABLE_MAIN;
        m.header.destination_prefix_length = 0;
        m.attributes.push(RouteAttribute::Oif(7));
        let mut st = LinkState::default();
        assert_eq!(
            st.apply(&RouteNetlinkMessage::NewRoute(m.clone())),
            Some(NetEvent::RouteAdded {
                table: 254,
                dst: Ipv4Addr::UNSPECIFIED,
                prefix: 0,
                oif: Some(7)
            })
        );
        // A table above 255 comes as an attribute.
        let mut t = m.clone();
        t.header.destination_prefix_length = 24;
        t.attributes.push(RouteAttribute::Table(1057));
        t.attributes
            .push(RouteAttribute::Destination(RouteAddress::Inet(
                Ipv4Addr::new(10, 1, 2, 0),
            )));
        assert_eq!(
            st.apply(&RouteNetlinkMessage::NewRoute(t)),
            Some(NetEvent::RouteAdded {
                table: 1057,
                dst: Ipv4Addr::new(10, 1, 2, 0),
                prefix: 24,
                oif: Some(7)
            })
        );
        // Unreachable, throw, IPv6: nothing.
        let mut u = m.clone();
        u.header.kind = RouteType::Unreachable;
        assert_eq!(st.apply(&RouteNetlinkMessage::NewRoute(u)), None);
        let mut v6 = m;
        v6.header.address_family = AddressFamily::Inet6;
        assert_eq!(st.apply(&RouteNetlinkMessage::NewRoute(v6)), None);
    }

    #[test]
    fn carrier_edges_only() {
        let mut st = LinkState::default();
        let up = LinkFlags::Up | LinkFlags::LowerUp | LinkFlags::Running;
        assert_eq!(
            st.apply(&link(3, "eth0", up)),
            Some(NetEvent::LinkUp {
                ifindex: 3,
                name: "eth0".into()
            })
        );
        // Same state again (a stats or MTU notification): nothing.
        assert_eq!(st.apply(&link(3, "eth0", up)), None);
        // Carrier lost while admin-up.
        assert_eq!(
            st.apply(&link(3, "eth0", LinkFlags::Up)),
            Some(NetEvent::LinkDown {
                ifindex: 3,
                name: "eth0".into()
            })
        );
        assert_eq!(st.apply(&link(3, "eth0", LinkFlags::Up)), None);
        // Lower up but admin down is not usable.
        assert_eq!(st.apply(&link(3, "eth0", LinkFlags::LowerUp)), None);
        assert!(st.apply(&link(3, "eth0", up)).is_some());
        let mut del = LinkMessage::default();
        del.header.index = 3;
        assert_eq!(
            st.apply(&RouteNetlinkMessage::DelLink(del)),
            Some(NetEvent::LinkRemoved {
                ifindex: 3,
                name: "eth0".into()
            })
        );
        assert_eq!(st.is_running(3), None);
    }

    #[test]
    fn seeded_state_suppresses_duplicate() {
        let mut st = LinkState::default();
        st.seed(&Link {
            ifindex: 5,
            name: "veth0".into(),
            admin_up: true,
            lower_up: true,
            mtu: Some(1500),
            mac: vec![],
        });
        let up = LinkFlags::Up | LinkFlags::LowerUp;
        assert_eq!(st.apply(&link(5, "veth0", up)), None);
        assert!(matches!(
            st.apply(&link(5, "veth0", LinkFlags::empty())),
            Some(NetEvent::LinkDown { ifindex: 5, .. })
        ));
    }

    #[test]
    fn address_events_and_non_ipv4_ignored() {
        let mut st = LinkState::default();
        let a = Ipv4Addr::new(10, 20, 0, 7);
        assert_eq!(
            st.apply(&RouteNetlinkMessage::NewAddress(addr(2, a, 24))),
            Some(NetEvent::AddrAdded {
                ifindex: 2,
                addr: a,
                prefix: 24
            })
        );
        assert_eq!(
            st.apply(&RouteNetlinkMessage::DelAddress(addr(2, a, 24))),
            Some(NetEvent::AddrRemoved {
                ifindex: 2,
                addr: a,
                prefix: 24
            })
        );
        let mut v6 = AddressMessage::default();
        v6.header.family = AddressFamily::Inet6;
        assert_eq!(st.apply(&RouteNetlinkMessage::NewAddress(v6)), None);
        // An IPv4 message with no address attribute is dropped, not a panic.
        let mut empty = AddressMessage::default();
        empty.header.family = AddressFamily::Inet;
        assert_eq!(st.apply(&RouteNetlinkMessage::NewAddress(empty)), None);
    }

    #[test]
    fn point_to_point_prefers_local() {
        let mut m = AddressMessage::default();
        m.header.family = AddressFamily::Inet;
        m.header.index = 9;
        m.header.prefix_len = 32;
        m.attributes
            .push(AddressAttribute::Address(IpAddr::V4(Ipv4Addr::new(
                10, 0, 0, 2,
            ))));
        m.attributes
            .push(AddressAttribute::Local(IpAddr::V4(Ipv4Addr::new(
                10, 0, 0, 1,
            ))));
        assert_eq!(
            IfAddr::from_message(&m).map(|a| a.addr),
            Some(Ipv4Addr::new(10, 0, 0, 1))
        );
    }
}
