//! The mobile node's physical interfaces (MN-2): each has its own sockets bound
//! to it and to the attachment the core chose for it, its foreign agent route,
//! its tunnel liveness and its carrier settle deadline. The core decides per
//! interface (its `IfaceId` is the ifindex); user data goes out on the one
//! `MobileNode::preferred` names (see `Daemon::data_path`).

use mobility::{Attachment, Gate, IfaceId};
use netio::netlink::Netlink;
use netio::raw::{RawIp, RawIpOptions};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;

use super::{net_err, Daemon, Error};
use crate::shell::io_err;

/// Liveness of the home agent's tunnel (dead binding, NAT mapping) and RFC 3519
/// keepalives.
#[derive(Default)]
pub(super) struct Liveness {
    /// RFC 3519: the home agent tunnels over UDP; keepalive interval (s).
    pub(super) udp_tunnel: Option<u16>,
    pub(super) next_keepalive: Option<Instant>,
    pub(super) keepalive_seq: u16,
    /// The last packet from the home agent through the tunnel.
    pub(super) ha_heard: Option<Instant>,
    /// A liveness echo is out: (sent at, deadline for an answer).
    pub(super) probe: Option<(Instant, Instant)>,
    /// Mode f with direct delivery: user data never passes the node in either
    /// direction, so the home agent is asked at this time whether it still holds the
    /// binding (see `Daemon::check_direct_delivery`).
    pub(super) next_direct_check: Option<Instant>,
}

/// One physical interface.
pub(super) struct Link {
    pub(super) name: String,
    /// The core's `IfaceId`.
    pub(super) ifindex: u32,
    /// The registration sockets, bound to (address, port 434) on the interface.
    /// One per source address in use: the care-of address (mode c, cvc), the home
    /// address (mode h, through an agent), the x-home address (fvc, through the
    /// x-FA).
    pub(super) udp: Vec<(Ipv4Addr, UdpSocket)>,
    /// IP-in-IP to and from the home agent (or the agent, encapsulating delivery).
    pub(super) raw: Option<(Ipv4Addr, RawIp)>,
    /// The address the tunnel socket should be bound to (see `ensure_raw`).
    pub(super) raw_want: Option<Ipv4Addr>,
    /// The foreign agent we hold a host route to.
    pub(super) agent_route: Option<Ipv4Addr>,
    /// The attachment the sockets and routes were set up for.
    pub(super) attached: Option<Attachment>,
    pub(super) icmp_rx: RawIp,
    pub(super) live: Liveness,
    /// The carrier came back: the core is told after the first address change or
    /// at this time (see `on_net_event`).
    pub(super) settle_until: Option<Instant>,
    /// When the request in flight left, for the round trip in status.
    pub(super) request_sent: Option<Instant>,
    pub(super) last_rtt: Option<Duration>,
    pub(super) changed_at: Instant,
}

impl Link {
    /// Resolves `name` and opens what does not depend on an attachment.
    pub(super) async fn open(nl: &Netlink, name: &str) -> Result<Link, Error> {
        let ifindex = nl
            .ifindex(name)
            .await
            .map_err(net_err(format!("interface {name}")))?;
        let icmp_rx = RawIp::open_with(
            1,
            &RawIpOptions {
                device: Some(name.to_string()),
                ..RawIpOptions::default()
            },
        )
        .map_err(io_err("ICMP socket"))?;
        // Packets from a foreign agent arrive for the home address, which lives on the TUN.
        crate::shell::write_sysctl(&format!("/proc/sys/net/ipv4/conf/{name}/rp_filter"), "0");
        // Nothing but our registrations may edit the routes of a mobility interface:
        // an ICMP redirect (e.g. from a foreign agent's host after a crash) would
        // steer user data natively past the tunnel (issue 16 item 5).
        crate::shell::write_sysctl(
            &format!("/proc/sys/net/ipv4/conf/{name}/accept_redirects"),
            "0",
        );
        Ok(Link {
            name: name.to_string(),
            ifindex,
            udp: Vec::new(),
            raw: None,
            raw_want: None,
            agent_route: None,
            attached: None,
            icmp_rx,
            live: Liveness::default(),
            settle_until: None,
            request_sent: None,
            last_rtt: None,
            changed_at: Instant::now(),
        })
    }
}

impl Daemon {
    /// The link of the core's interface `iface`.
    pub(super) fn link_of(&self, iface: IfaceId) -> Option<usize> {
        self.links.iter().position(|l| l.ifindex == iface)
    }

    /// MN-2: where user data goes at `now`: the interface the core prefers (an
    /// open-inside one first, then one open through the VPN); else one whose gate
    /// queues; else the first, closed.
    pub(super) fn data_path(&self, now: Instant) -> (usize, Gate) {
        if let Some((i, g)) = self.node.preferred(now) {
            if let Some(li) = self.link_of(i) {
                return (li, g);
            }
        }
        self.links
            .iter()
            .enumerate()
            .map(|(li, l)| (li, self.node.gate(l.ifindex, now)))
            .find(|(_, g)| matches!(g, Gate::Queued { .. }))
            .unwrap_or((0, Gate::Closed))
    }

    /// The link whose x-HA registration holds (the x-MIP layer exists once).
    pub(super) fn xmip_link(&self, now: Instant) -> Option<usize> {
        self.links.iter().position(|l| {
            self.node
                .tunnel(l.ifindex, mobility::Layer::Xha, now)
                .is_some()
        })
    }
}

/// A receive from whichever registration socket of whichever link has one: (its
/// metadata, link, socket). With UDP GRO it can hold several datagrams.
pub(super) async fn recv_any_udp(
    links: &[Link],
    buf: &mut [u8],
) -> std::io::Result<(netio::RecvMeta, usize, usize)> {
    if links.iter().all(|l| l.udp.is_empty()) {
        return std::future::pending().await;
    }
    std::future::poll_fn(|cx| {
        for (li, l) in links.iter().enumerate() {
            for (i, (_, s)) in l.udp.iter().enumerate() {
                if let std::task::Poll::Ready(r) = netio::udp::poll_recv_with_meta(s, cx, buf) {
                    return std::task::Poll::Ready(r.map(|m| (m, li, i)));
                }
            }
        }
        std::task::Poll::Pending
    })
    .await
}

/// The first link whose socket `pick` chooses may have a packet (then read it
/// with `try_recv_from`).
pub(super) async fn any_readable(links: &[Link], pick: fn(&Link) -> Option<&RawIp>) -> usize {
    let waits: Vec<_> = links
        .iter()
        .enumerate()
        .filter_map(|(li, l)| pick(l).map(|r| (li, r)))
        .map(|(li, r)| {
            Box::pin(async move {
                let _ = r.readable().await;
                li
            })
        })
        .collect();
    if waits.is_empty() {
        return std::future::pending().await;
    }
    futures::future::select_all(waits).await.0
}
