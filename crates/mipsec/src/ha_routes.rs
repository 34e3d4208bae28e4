//! Route, proxy ARP and gratuitous ARP work for the home agent, off the
//! registration path: the event loop queues "intercept this home address" or
//! "stop" and goes on; a worker thread applies the queue in batches, the last
//! request for an address winning within a batch. Host routes go hundreds per
//! system call on a raw netlink socket (`netio::netlink::route_batch`: 2.5 us of
//! CPU a route at a million, kernel included, against 4.6 us one request at a
//! time through rtnetlink); proxy ARP entries, on a real home link only, go
//! through rtnetlink, many in flight at once. All workers share the one queue.
//!
//! Order where it matters: before the loop sends replies after a binding went
//! away, it waits until the removals are applied ([`RouteWorker::settle`]), so
//! the reply to a node deregistering at home goes out on the home link, not into
//! the tunnel device. New bindings do not wait: their replies go to the care-of
//! address, and the route follows within the batch.

use futures::StreamExt;
use netio::ipip_encap::IpipEncap;
use netio::netlink::arp::ArpAnnouncer;
use netio::netlink::route_batch::RouteBatch;
use netio::netlink::{ArpOp, Netlink};
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

/// Routes and proxy ARP entries carry the home agent's mark, so a later instance
/// can take over what a killed one left (see `take_over_leftovers`).
use crate::shell::PROTO_HA;

/// Requests at most applied per batch.
const BATCH: usize = 4096;
/// Proxy ARP requests in flight at once.
const IN_FLIGHT: usize = 64;
/// How long the interface toward a care-of address is taken as known.
const OIF_FOR: Duration = Duration::from_secs(60);
/// Care-of addresses whose interface is remembered at once.
const OIF_CACHE: usize = 65_536;

/// Where the kernel sends a home address's packets (`kernel_encap`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct EncapTo {
    /// The outer destination: the care-of address (IP-in-IP), or the node's NAT
    /// (RFC 3519).
    pub(super) peer: Ipv4Addr,
    /// The binding's expiry.
    pub(super) until: Instant,
    /// RFC 3519: Tunnel Data in UDP from this local address and port, to `peer` at
    /// this port.
    pub(super) udp: Option<(SocketAddrV4, u16)>,
}

enum Cmd {
    Intercept(Ipv4Addr, bool),
    /// Kernel encapsulation of a home address's packets, or none (the tunnel
    /// device's reader decides).
    Encap(Ipv4Addr, Option<EncapTo>),
    /// Answered once everything queued before it is applied.
    Flush(oneshot::Sender<()>),
}

/// The event loop's end of the worker.
#[derive(Clone)]
pub(super) struct RouteWorker {
    tx: mpsc::UnboundedSender<Cmd>,
    removals: bool,
    /// Kernel encapsulation is attached: binding changes are passed on.
    encap: bool,
}

/// The kernel encapsulator and what its entries need besides the binding.
pub(super) struct Encap {
    pub(super) prog: Arc<IpipEncap>,
    /// The outer source: the address the raw socket is bound to.
    pub(super) source: Ipv4Addr,
    /// The tunnel device's MTU: an interface that cannot take that plus the outer
    /// header gets no entries.
    pub(super) tun_mtu: u32,
}

struct Ctx {
    nl: Netlink,
    /// Host routes, many requests per system call.
    batch: RouteBatch,
    tun_ifindex: u32,
    home: Option<(u32, ArpAnnouncer)>,
    encap: Option<Encap>,
    /// The interface toward each peer (and whether it was checked for the UDP
    /// tunnel's headers), looked up at most once a minute.
    oif: HashMap<(Ipv4Addr, bool), (Option<u32>, Instant)>,
}

impl RouteWorker {
    /// Starts the worker thread for routes into `tun_ifindex` and, on a real home
    /// link, proxy ARP and announcements there.
    pub(super) fn start(
        tun_ifindex: u32,
        home: Option<(u32, ArpAnnouncer)>,
        encap: Option<Encap>,
    ) -> Result<RouteWorker, String> {
        let with_encap = encap.is_some();
        let (tx, rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("ha-routes".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => return drop(ready_tx.send(Err(format!("route worker: {e}")))),
                };
                rt.block_on(async move {
                    let nl = match Netlink::new() {
                        Ok(nl) => nl,
                        Err(e) => return drop(ready_tx.send(Err(format!("netlink: {e}")))),
                    };
                    let batch = match RouteBatch::new() {
                        Ok(b) => b,
                        Err(e) => return drop(ready_tx.send(Err(format!("netlink: {e}")))),
                    };
                    let _ = ready_tx.send(Ok(()));
                    run(
                        rx,
                        Ctx {
                            nl,
                            batch,
                            tun_ifindex,
                            home,
                            encap,
                            oif: HashMap::new(),
                        },
                    )
                    .await
                });
            })
            .map_err(|e| format!("route worker: {e}"))?;
        ready_rx
            .recv()
            .map_err(|_| "route worker did not start".to_string())??;
        Ok(RouteWorker {
            tx,
            removals: false,
            encap: with_encap,
        })
    }

    /// Queues: start (`on`) or stop intercepting `home`.
    pub(super) fn intercept(&mut self, home: Ipv4Addr, on: bool) {
        self.removals |= !on;
        if self.tx.send(Cmd::Intercept(home, on)).is_err() {
            warn!("route worker gone: {home} not applied");
        }
    }

    /// Queues the kernel encapsulation of `home`'s packets (when attached): to
    /// `to`'s peer until its expiry, or none.
    pub(super) fn encap(&mut self, home: Ipv4Addr, to: Option<EncapTo>) {
        if !self.encap {
            return;
        }
        // No `settle` for a removal: a reply that follows it goes where the host
        // route sends it, and the route is what `settle` waits for.
        if self.tx.send(Cmd::Encap(home, to)).is_err() {
            warn!("route worker gone: encapsulation of {home} not applied");
        }
    }

    /// Waits until queued removals (and everything before them) are applied.
    pub(super) async fn settle(&mut self) {
        if std::mem::take(&mut self.removals) {
            self.flush().await;
        }
    }

    /// Waits until everything queued is applied.
    pub(super) async fn flush(&mut self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Cmd::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

async fn run(mut rx: mpsc::UnboundedReceiver<Cmd>, mut ctx: Ctx) {
    while let Some(first) = rx.recv().await {
        let mut last: HashMap<Ipv4Addr, bool> = HashMap::new();
        let mut encaps: HashMap<Ipv4Addr, Option<EncapTo>> = HashMap::new();
        let mut acks = Vec::new();
        let mut next = Some(first);
        let mut n = 0;
        while let Some(c) = next.take() {
            match c {
                Cmd::Intercept(h, on) => {
                    last.insert(h, on);
                    n += 1;
                }
                Cmd::Encap(h, to) => {
                    encaps.insert(h, to);
                    n += 1;
                }
                Cmd::Flush(a) => acks.push(a),
            }
            if n < BATCH {
                next = rx.try_recv().ok();
            }
        }
        let ops: Vec<(Ipv4Addr, bool)> = last.into_iter().collect();
        ctx.routes(&ops);
        ctx.encaps(encaps).await;
        if ctx.home.is_some() {
            let ctx = &ctx;
            futures::stream::iter(ops)
                .for_each_concurrent(IN_FLIGHT, |(h, on)| ctx.link(h, on))
                .await;
        }
        for a in acks {
            let _ = a.send(());
        }
    }
}

impl Ctx {
    /// Starts or stops sending home addresses into the tunnel device: host routes,
    /// all of a batch in a few system calls.
    fn routes(&mut self, ops: &[(Ipv4Addr, bool)]) {
        match self.batch.apply(ops, self.tun_ifindex, PROTO_HA) {
            Ok(failures) => {
                for f in failures {
                    if f.add {
                        warn!("route {}/32 via tunnel: {}", f.dst, f.error);
                    } else {
                        // Gone already (a removal after a failed add, a restart).
                        debug!("remove route {}/32: {}", f.dst, f.error);
                    }
                }
            }
            Err(e) => warn!("routes of {} home addresses not applied: {e}", ops.len()),
        }
    }

    /// Applies the kernel encapsulation entries of a batch. One that cannot be
    /// added (no route to the care-of address, the map full) leaves the home
    /// address to the tunnel device's reader, which forwards as before.
    async fn encaps(&mut self, ops: HashMap<Ipv4Addr, Option<EncapTo>>) {
        let Some(encap) = &self.encap else { return };
        let now = Instant::now();
        for (home, to) in ops {
            let Some(to) = to else {
                if let Err(e) = encap.prog.remove(home) {
                    warn!("kernel encapsulation of {home} not removed: {e}");
                }
                continue;
            };
            // The interface must take the tunnel device's packets plus the outer
            // headers: 20 octets, or 32 with UDP and Tunnel Data.
            let udp = to.udp.is_some();
            let oif = match self.oif.get(&(to.peer, udp)) {
                Some(&(oif, at)) if now.duration_since(at) < OIF_FOR => oif,
                _ => {
                    let mtu = encap.tun_mtu + if udp { 12 } else { 0 };
                    let oif =
                        crate::datapath::encap_oif(&self.nl, to.peer, self.tun_ifindex, mtu).await;
                    if self.oif.len() >= OIF_CACHE {
                        self.oif.clear();
                    }
                    self.oif.insert((to.peer, udp), (oif, now));
                    oif
                }
            };
            let set = match (oif, to.udp) {
                (Some(oif), None) => crate::datapath::encap_set(
                    &encap.prog,
                    home,
                    encap.source,
                    to.peer,
                    oif,
                    to.until,
                ),
                (Some(oif), Some((local, port))) => {
                    let peer = SocketAddrV4::new(to.peer, port);
                    encap
                        .prog
                        .set_udp(home, local, peer, oif, to.until)
                        .map(|()| {
                            crate::datapath::decap_follow(&encap.prog, oif);
                        })
                }
                (None, _) => encap.prog.remove(home).map(drop),
            };
            if let Err(e) = set {
                debug!("kernel encapsulation of {home} to {}: {e}", to.peer);
                let _ = encap.prog.remove(home);
            }
        }
    }

    /// On a real home link: proxy ARP for an away node, and the gratuitous ARP
    /// that announces it (RFC 5944 section 4.6); removed when it is back.
    async fn link(&self, home: Ipv4Addr, on: bool) {
        let Some((ifx, arp)) = &self.home else { return };
        if on {
            if let Err(e) = self.nl.add_proxy_arp_marked(*ifx, home, PROTO_HA).await {
                debug!("proxy ARP for {home}: {e}");
            }
            if let Err(e) = arp.announce(home, ArpOp::Request) {
                warn!("gratuitous ARP for {home}: {e}");
            }
        } else if let Err(e) = self.nl.del_proxy_arp(*ifx, home).await {
            debug!("remove proxy ARP for {home}: {e}");
        }
    }
}
