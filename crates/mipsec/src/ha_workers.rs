//! The home agent's registration workers beyond the first (`workers` in
//! `ha.toml`; see `ha_shards` for how the nodes are split).
//!
//! Worker 0 is the daemon's own event loop (data path, control socket, signals,
//! the state file). Workers 1..N each run a thread with a single-threaded tokio
//! runtime: one UDP 434 socket of the `SO_REUSEPORT` group, the timers of their
//! shard, and, when the tunnel device has several queues, a queue of their own
//! into which they deliver the RFC 3519 Tunnel Data of their shard's nodes (the
//! steering program gives it to them by inner source). They tell worker 0 when
//! bindings changed (it saves the state file) and stop when it says so.

use super::shards::{Plane, Shards, WorkerStats};
use crate::ha_guard::Guard;
use crate::shell::BATCH;
use mip4::wire::{MessageType, MIP_PORT};
use netio::udp_batch::RecvBatch;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{watch, Notify};
use tracing::warn;

/// A worker wakes at least this often to expire its shard's bindings: worker 0
/// can add a binding to any shard (a request that reached it, a restore), and
/// the worker's sleep would not know of it.
const TIMER_RECHECK: Duration = Duration::from_secs(1);

/// The next wake-up of a worker for `next` (its shard's next expiry).
pub(super) fn timer_deadline(next: Option<Instant>, now: Instant) -> Instant {
    let cap = now + TIMER_RECHECK;
    next.map_or(cap, |d| d.min(cap))
}

/// A running worker thread.
pub(super) struct WorkerHandle {
    pub(super) stats: Arc<WorkerStats>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl WorkerHandle {
    /// The thread ended without being asked to (a bug: its shard's requests
    /// would go unanswered).
    pub(super) fn finished(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| t.is_finished())
    }

    pub(super) fn join(&mut self) {
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                warn!("a registration worker panicked");
            }
        }
    }
}

/// What a worker shares with worker 0.
pub(super) struct Shared {
    pub(super) shards: Arc<Shards>,
    pub(super) routes: super::routes::RouteWorker,
    pub(super) guard: Guard,
    /// Signalled when a binding changed (worker 0 saves the state file).
    pub(super) changed: Arc<Notify>,
    pub(super) stop: watch::Receiver<bool>,
    pub(super) ha_address: Ipv4Addr,
    /// UDP GRO is on the group's sockets: a receive can hold 64 KiB of datagrams.
    pub(super) gro: bool,
    /// Tunnel Data goes to worker 0, which runs the data path, unless this worker
    /// has a queue of the tunnel device.
    pub(super) tunnel_tx: tokio::sync::mpsc::Sender<Handoff>,
    /// How to attach this worker's queue of the tunnel device (a multi-queue device
    /// whose reads all go to worker 0's queue); `None`: hand Tunnel Data over.
    pub(super) queue: Option<netio::QueueSpec>,
}

/// A worker's own queue of the tunnel device and the buffers that merge what it
/// writes: the Tunnel Data it receives is decapsulated and written here, on this
/// worker's core, instead of being copied to worker 0.
struct Delivery {
    tun: netio::Tun,
    dp: crate::datapath::DataPath,
}

impl Delivery {
    /// Attaches the queue inside the worker's runtime (the one that polls it).
    fn open(me: usize, spec: &netio::QueueSpec) -> Option<Delivery> {
        match spec.open() {
            Ok(tun) => Some(Delivery {
                dp: crate::datapath::DataPath::new(tun.vnet_hdr()),
                tun,
            }),
            Err(e) => {
                warn!("worker {me}: no queue of the tunnel device ({e}); its Tunnel Data goes to worker 0");
                None
            }
        }
    }

    /// One Tunnel Data datagram: checked by its shard's core, then queued for the
    /// device (written by [`Delivery::flush`]).
    async fn take(
        &mut self,
        shards: &Shards,
        st: &WorkerStats,
        now: Instant,
        from: SocketAddrV4,
        payload: &[u8],
    ) {
        let written = match super::data::admit_tunnel_data(shards, now, from, payload) {
            Ok(inner) => super::data::write_inner(&mut self.dp, &self.tun, inner, false)
                .await
                .map(|()| inner.len()),
            Err(why) => Err(why),
        };
        match written {
            Ok(len) => {
                WorkerStats::add(&st.tunnel_rx_packets, 1);
                WorkerStats::add(&st.tunnel_rx_bytes, len as u64);
            }
            Err(why) => st.drop_tunnel_data(why),
        }
    }

    async fn flush(&mut self, st: &WorkerStats) {
        for _ in 0..self.dp.flush_tun(&self.tun).await {
            st.drop_tunnel_data(crate::drops::DropReason::TunWriteFailed);
        }
    }
}

/// One RFC 3519 Tunnel Data datagram for worker 0: its source and payload.
pub(super) type Handoff = (SocketAddrV4, Vec<u8>);

/// Tunnel Data datagrams that may wait for worker 0 (beyond: counted drops).
pub(super) const HANDOFF: usize = 1024;

/// Starts worker `me` on `udp` (a socket of the group, bound already); returns
/// once its runtime runs, or why it could not start.
pub(super) fn spawn(
    me: usize,
    udp: std::net::UdpSocket,
    shared: Shared,
) -> Result<WorkerHandle, String> {
    let plane = Plane::new(
        shared.shards.clone(),
        shared.routes.clone(),
        shared.guard.clone(),
        me,
    );
    let stats = plane.stats.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name(format!("ha-worker-{me}"))
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => return drop(ready_tx.send(Err(format!("worker {me}: {e}")))),
            };
            rt.block_on(async move {
                let udp = match tokio::net::UdpSocket::from_std(udp) {
                    Ok(u) => u,
                    Err(e) => return drop(ready_tx.send(Err(format!("worker {me}: {e}")))),
                };
                let _ = ready_tx.send(Ok(()));
                run(me, udp, plane, shared).await;
            });
        })
        .map_err(|e| format!("worker {me}: {e}"))?;
    ready_rx
        .recv()
        .map_err(|_| format!("worker {me} did not start"))??;
    Ok(WorkerHandle {
        stats,
        thread: Some(thread),
    })
}

async fn run(me: usize, udp: tokio::net::UdpSocket, mut plane: Plane, mut shared: Shared) {
    let mut out = shared.queue.as_ref().and_then(|q| Delivery::open(me, q));
    // Registrations are small, but with GRO one receive can hold a burst of
    // datagrams of one flow (an FA relaying, or Tunnel Data behind a request);
    // Tunnel Data delivered here can be 64 KiB even without GRO.
    let big = shared.gro || shared.queue.is_some();
    let mut rb = RecvBatch::new(BATCH, if big { 65536 } else { 2048 });
    loop {
        let wake = timer_deadline(plane.next_timeout(), Instant::now());
        tokio::select! {
            r = rb.recv(&udp) => match r {
                Ok(n) => on_batch(&mut plane, &shared, &mut out, &rb, n).await,
                Err(e) => warn!("udp receive: {e}"),
            },
            _ = tokio::time::sleep_until(wake.into()) => plane.timeout(Instant::now()),
            _ = shared.stop.changed() => break,
        }
        plane.send(&udp).await;
        if plane.take_changed() {
            shared.changed.notify_one();
        }
    }
}

async fn on_batch(
    plane: &mut Plane,
    shared: &Shared,
    out: &mut Option<Delivery>,
    rb: &RecvBatch,
    n: usize,
) {
    let now = Instant::now();
    let st = plane.stats.clone();
    WorkerStats::add(&st.batches, 1);
    WorkerStats::add(&st.datagrams, n as u64);
    let mut regs: Vec<(SocketAddrV4, SocketAddrV4, &[u8])> = Vec::with_capacity(n);
    for i in 0..n {
        let (m, payload) = rb.get(i);
        match MessageType::of(payload) {
            Some(MessageType::TUNNEL_DATA) if out.is_some() => {
                if let Some(d) = out.as_mut() {
                    d.take(&shared.shards, &st, now, m.src, payload).await;
                }
            }
            Some(MessageType::TUNNEL_DATA) => {
                // Without a queue of its own only worker 0 delivers it: the steering
                // program sends it there, but GRO can merge it behind a registration
                // of the same size from the same node, which the program steers by
                // the request's home address.
                match shared.tunnel_tx.try_send((m.src, payload.to_vec())) {
                    Ok(()) => WorkerStats::add(&st.tunnel_data_handed, 1),
                    Err(_) => WorkerStats::add(&st.tunnel_data_dropped, 1),
                }
            }
            _ if plane.guard.drops_internal(m.ifindex, payload) => {
                WorkerStats::add(&st.internal_dropped, 1);
            }
            _ => {
                let local =
                    SocketAddrV4::new(m.dst.or(m.local).unwrap_or(shared.ha_address), MIP_PORT);
                regs.push((m.src, local, payload));
            }
        }
    }
    if let Some(d) = out.as_mut() {
        d.flush(&st).await;
    }
    plane.registrations(now, SystemTime::now(), &regs);
}
