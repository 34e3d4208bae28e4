//! Route, proxy ARP and gratuitous ARP work for the home agent, off the
//! registration path: the event loop queues "intercept this home address" or
//! "stop" and goes on; a worker thread with its own netlink socket applies the
//! queue in batches, many requests in flight at once, the last request for an
//! address winning within a batch.
//!
//! Order where it matters: before the loop sends replies after a binding went
//! away, it waits until the removals are applied ([`RouteWorker::settle`]), so
//! the reply to a node deregistering at home goes out on the home link, not into
//! the tunnel device. New bindings do not wait: their replies go to the care-of
//! address, and the route follows within the batch.

use futures::StreamExt;
use netio::netlink::arp::ArpAnnouncer;
use netio::netlink::{ArpOp, Netlink, Route};
use std::collections::HashMap;
use std::net::Ipv4Addr;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

/// Routes and proxy ARP entries carry the home agent's mark, so a later instance
/// can take over what a killed one left (see `take_over_leftovers`).
use crate::shell::PROTO_HA;

/// Requests at most applied per batch.
const BATCH: usize = 4096;
/// Netlink requests in flight at once.
const IN_FLIGHT: usize = 64;

enum Cmd {
    Intercept(Ipv4Addr, bool),
    /// Answered once everything queued before it is applied.
    Flush(oneshot::Sender<()>),
}

/// The event loop's end of the worker.
#[derive(Clone)]
pub(super) struct RouteWorker {
    tx: mpsc::UnboundedSender<Cmd>,
    removals: bool,
}

struct Ctx {
    nl: Netlink,
    tun_ifindex: u32,
    home: Option<(u32, ArpAnnouncer)>,
}

impl RouteWorker {
    /// Starts the worker thread for routes into `tun_ifindex` and, on a real home
    /// link, proxy ARP and announcements there.
    pub(super) fn start(
        tun_ifindex: u32,
        home: Option<(u32, ArpAnnouncer)>,
    ) -> Result<RouteWorker, String> {
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
                    let _ = ready_tx.send(Ok(()));
                    run(
                        rx,
                        Ctx {
                            nl,
                            tun_ifindex,
                            home,
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
        })
    }

    /// Queues: start (`on`) or stop intercepting `home`.
    pub(super) fn intercept(&mut self, home: Ipv4Addr, on: bool) {
        self.removals |= !on;
        if self.tx.send(Cmd::Intercept(home, on)).is_err() {
            warn!("route worker gone: {home} not applied");
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

async fn run(mut rx: mpsc::UnboundedReceiver<Cmd>, ctx: Ctx) {
    while let Some(first) = rx.recv().await {
        let mut last: HashMap<Ipv4Addr, bool> = HashMap::new();
        let mut acks = Vec::new();
        let mut next = Some(first);
        let mut n = 0;
        while let Some(c) = next.take() {
            match c {
                Cmd::Intercept(h, on) => {
                    last.insert(h, on);
                    n += 1;
                }
                Cmd::Flush(a) => acks.push(a),
            }
            if n < BATCH {
                next = rx.try_recv().ok();
            }
        }
        let ctx = &ctx;
        futures::stream::iter(last)
            .for_each_concurrent(IN_FLIGHT, |(h, on)| ctx.apply(h, on))
            .await;
        for a in acks {
            let _ = a.send(());
        }
    }
}

impl Ctx {
    /// Starts or stops pulling a home address's traffic into the tunnel device.
    async fn apply(&self, home: Ipv4Addr, on: bool) {
        let route = Route::new(home, 32).dev(self.tun_ifindex);
        if on {
            if let Err(e) = self.nl.replace_route_marked(&route, PROTO_HA).await {
                warn!("route {home}/32 via tunnel: {e}");
            }
            if let Some((ifx, arp)) = &self.home {
                if let Err(e) = self.nl.add_proxy_arp_marked(*ifx, home, PROTO_HA).await {
                    debug!("proxy ARP for {home}: {e}");
                }
                // RFC 5944 section 4.6: announce that the home address is now here.
                if let Err(e) = arp.announce(home, ArpOp::Request) {
                    warn!("gratuitous ARP for {home}: {e}");
                }
            }
        } else {
            if let Err(e) = self.nl.del_route_marked(&route, PROTO_HA).await {
                debug!("remove route {home}/32: {e}");
            }
            if let Some((ifx, _)) = &self.home {
                if let Err(e) = self.nl.del_proxy_arp(*ifx, home).await {
                    debug!("remove proxy ARP for {home}: {e}");
                }
            }
        }
    }
}
