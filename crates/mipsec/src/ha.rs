//! `mipsec ha`: the home agent daemon.
//!
//! It drives the sans-IO [`mip4::ha::HomeAgent`] from real sockets:
//! registrations on UDP 434; the forward tunnel (IP-in-IP on a raw socket, or
//! RFC 3519 Tunnel Data on UDP 434 behind NATs) to each binding's care-of
//! address; reverse-tunnel decapsulation (RFC 3024). Which packets may enter and
//! where packets for a home address go are the core's decisions, on its binding
//! table ([`HomeAgent::admit_reverse`], [`HomeAgent::admit_udp_tunnel`],
//! [`HomeAgent::forward`]); this daemon keeps no copy of it. Packets for away mobile
//! nodes reach it through a TUN device: while a binding exists, a host route
//! sends the home address into the TUN, and on a real home link a proxy ARP
//! entry plus a gratuitous ARP (RFC 5944 section 4.6) pull the traffic to it.
//! On SIGINT/SIGTERM it removes every route and proxy ARP entry it installed.
//! With `state_file`, bindings (and the last accepted Identification of each
//! node) are saved and restored, so a restarted home agent carries on.

#[path = "ha_data.rs"]
mod data;
#[path = "ha_routes.rs"]
mod routes;
#[path = "ha_shards.rs"]
mod shards;
#[path = "ha_status.rs"]
pub mod status;
#[path = "ha_workers.rs"]
mod workers;

use crate::config::{ConfigError, HaFile};
use crate::control::{ControlServer, StatusRequest};
use crate::drops::{DropCounts, DropReason};
use crate::shell::{
    allow_fragmentation, enlarge_buffers, getrandom, io_err, os_err, write_sysctl, SetupError,
    BATCH,
};
use mip4::ha::{Binding, ForwardTo, HaConfig, MobileNodeConfig, Tunnel, UdpTunneling};
use mip4::wire::{MessageType, MIP_PORT};
use netio::netlink::{Netlink, Route};
use netio::raw::{RawIp, RawIpOptions, IPPROTO_IPIP};
use netio::tun::Tun;
use netio::udp::UdpOptions;
use netio::udp_batch::RecvBatch;
use routes::RouteWorker;
use serde::{Deserialize, Serialize};
use serde_json::json;
use shards::{Plane, Shards};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::net::UdpSocket;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, watch, Notify};
use tracing::{info, warn};

/// Why the home agent could not start, or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration file (the message names file, line and field).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The key file or the mobile nodes in the configuration (file and line named).
    #[error("{0}")]
    Keys(String),
    /// The home agent core refused the set of mobile nodes.
    #[error("mobile nodes: {0}")]
    Nodes(#[source] mip4::ha::ConfigError),
    /// A socket, device or system setting could not be set up.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// The thread that applies routes and proxy ARP did not start.
    #[error("{0}")]
    RouteWorker(String),
    /// A registration worker's thread did not start.
    #[error("{0}")]
    Worker(String),
    /// The control socket (`control_socket`) could not be created.
    #[error(transparent)]
    ControlSocket(#[from] crate::control::ControlSocketError),
}

/// How long after a binding changes the state file is written: changes within it
/// (a burst of registrations) are saved together.
const SAVE_DELAY: Duration = Duration::from_secs(1);

/// Sleeps until `at`; never wakes when there is no deadline.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Runs the home agent until SIGINT or SIGTERM.
pub fn run(config: &Path) -> Result<(), Error> {
    let mut file = HaFile::load(config)?;
    crate::keyfile::resolve(&mut file, config);
    let config = config.to_path_buf();
    crate::shell::block_on(async move {
        let mut d = Daemon::start(file, config).await?;
        let r = d.run().await;
        d.cleanup().await;
        r
    })
}

#[derive(Default, Debug)]
struct Counters {
    tx_packets: u64,
    tx_bytes: u64,
    rx_packets: u64,
    rx_bytes: u64,
    drops: DropCounts,
}

impl Counters {
    fn drop(&mut self, why: DropReason) {
        self.drops.count(why);
    }
}

#[derive(Serialize, Deserialize)]
struct SavedBinding {
    home_addr: Ipv4Addr,
    care_of: Ipv4Addr,
    source: SocketAddrV4,
    local: SocketAddrV4,
    lifetime: u16,
    /// Expiry as Unix time, seconds.
    expires_unix: u64,
    reverse_tunnel: bool,
    colocated: bool,
    broadcast: bool,
    udp_peer: Option<SocketAddrV4>,
    keepalive: u16,
    last_ident: Option<u64>,
    /// The node's NAI: for a node without a static address, the binding's home
    /// address is its pool assignment, given back to it on restore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nai: Option<String>,
}

struct Daemon {
    file: HaFile,
    /// The binding table, one core per worker (`ha_shards`).
    shards: Arc<Shards>,
    /// Worker 0's registration path (this loop's); it holds the route worker.
    plane: Plane,
    /// Workers 1..N (`ha_workers`).
    workers: Vec<workers::WorkerHandle>,
    stop: watch::Sender<bool>,
    /// Signalled by the other workers when bindings changed.
    changed: Arc<Notify>,
    /// RFC 3519 Tunnel Data that reached another worker (GRO merged it behind a
    /// registration, or the kernel steered it by hash), handed over to this loop.
    tunnel_rx: mpsc::Receiver<workers::Handoff>,
    /// Where one tunnel-device read goes (reused: no allocation per read).
    fwd: Vec<ForwardTo>,
    udp: UdpSocket,
    raw: RawIp,
    tun: Tun,
    /// Buffers and counters of the tunnel data path (`ha_data`).
    dp: crate::datapath::DataPath,
    /// The kernel's IP-in-IP encapsulation, when attached (the route worker fills it).
    encap: Option<Arc<netio::ipip_encap::IpipEncap>>,
    /// For taking over a killed instance's leftovers at start.
    nl: Netlink,
    home_ifindex: Option<u32>,
    /// Static home addresses (the pool comes from the config): what leftovers may be ours.
    ours: std::collections::HashSet<Ipv4Addr>,
    /// RFC 3519 Tunnel Data gathered for one UDP GSO send.
    udp_gso: netio::udp::GsoBatch,
    counters: Counters,
    ctl_rx: mpsc::Receiver<StatusRequest>,
    _ctl: Option<ControlServer>,
    state_file: Option<PathBuf>,
    dirty: bool,
    /// When the changed bindings are saved: [`SAVE_DELAY`] after the first change.
    save_at: Option<tokio::time::Instant>,
    /// The thread writing the last snapshot (it returns how long it took).
    saving: Option<std::thread::JoinHandle<Duration>>,
    /// How long the last write took.
    last_write: Duration,
    /// How long the last snapshot held the loop.
    last_snapshot: Duration,
    started: Instant,
    /// Key file reloads (SIGHUP), parsed off the event loop.
    reloader: crate::keyfile::Reloader,
}

impl Daemon {
    async fn start(file: HaFile, config_path: PathBuf) -> Result<Daemon, Error> {
        let h = &file.ha;
        let mut cfg = HaConfig::new(h.address);
        cfg.max_lifetime = h.max_lifetime;
        cfg.max_bindings_per_mn = h.max_bindings_per_mn.max(1);
        cfg.replay_tolerance = Duration::from_secs(h.replay_tolerance_s);
        cfg.trusted_networks = h.trusted_networks.iter().map(|n| n.0).collect();
        cfg.udp_tunneling = UdpTunneling {
            enabled: h.udp_tunneling,
            keepalive: h.udp_keepalive_s,
            ..UdpTunneling::default()
        };
        cfg.dynamic_pool = crate::keyfile::pool(&file);
        let nodes = crate::keyfile::load_nodes(&file, &config_path).map_err(Error::Keys)?;
        let node_count = nodes.len();
        let ours = nodes.iter().filter_map(|n| n.home_addr).collect();
        let mut n_workers = worker_count(h.workers);
        let mut uopts = UdpOptions::new(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, MIP_PORT));
        uopts.pktinfo = true;
        uopts.reuse_addr = true;
        // One socket per worker in an SO_REUSEPORT group, in worker order (the
        // steering program returns a worker's index).
        uopts.reuse_port = n_workers > 1;
        let mut socks = Vec::with_capacity(n_workers);
        for _ in 0..n_workers {
            let udp = uopts.bind().map_err(io_err("UDP port 434"))?;
            // Bursts of renewals (every node of a site after an outage) must queue, not drop.
            enlarge_buffers(std::os::fd::AsFd::as_fd(&udp));
            socks.push(udp);
        }
        let mut gro = h.udp_gro;
        for s in &socks {
            if !gro {
                break;
            }
            if let Err(e) = netio::udp::set_gro(s, true) {
                warn!("{e}: Tunnel Data taken one datagram at a time");
                gro = false;
            }
        }
        if !gro {
            for s in &socks {
                let _ = netio::udp::set_gro(s, false);
            }
        }
        let udp = socks.remove(0);
        // With several workers the device has a queue per worker: every read goes
        // to worker 0's (which runs the data path towards the nodes), and each
        // worker writes the Tunnel Data of its shard's nodes into its own.
        let (tun, tun_ifindex, mut dp) = crate::datapath::open_queues(
            &h.tunnel_device,
            h.offload,
            n_workers > 1 && h.worker_queues,
        )?;
        let mut queue = tun.queue_spec();
        if queue.is_some() {
            if let Err(e) = tun.steer_to_first_queue() {
                warn!(
                    "{}: no queue steering program ({e}); Tunnel Data goes through worker 0",
                    h.tunnel_device
                );
                queue = None;
            }
        }
        if n_workers > 1 {
            let prog = shards::Router::new(n_workers, cfg.dynamic_pool, &[])
                .with_tunnel_data_by_source(queue.is_some())
                .steering();
            if let Err(e) = netio::udp::attach_reuseport_cbpf(&udp, &prog) {
                // Without the program the kernel would spread datagrams by address
                // hash, Tunnel Data included, which only worker 0 can deliver.
                warn!("SO_ATTACH_REUSEPORT_CBPF: {e}; running one registration worker");
                socks.clear();
                n_workers = 1;
            }
        }
        let seed = || {
            let mut seed = [0u8; 32];
            getrandom(&mut seed);
            seed
        };
        let shards = Arc::new(Shards::new(&cfg, n_workers, seed, nodes).map_err(Error::Nodes)?);
        crate::keyfile::release_parse_memory();

        let nl = Netlink::new().map_err(io_err("netlink"))?;
        let home_ifindex = match &h.home_interface {
            Some(name) => Some(nl.ifindex(name).await.map_err(io_err("home_interface"))?),
            None => None,
        };
        // One packet socket for every gratuitous ARP on the home link (issue 15: one
        // per announcement cost ~11 ms in close(), in the event loop).
        let arp = match home_ifindex {
            Some(ifx) => Some((
                ifx,
                nl.arp_announcer(ifx)
                    .await
                    .map_err(io_err("gratuitous ARP socket"))?,
            )),
            None => None,
        };
        let internal_ifindex = match &h.drop_requests_on_interface {
            Some(name) => Some(
                nl.ifindex(name)
                    .await
                    .map_err(io_err("drop_requests_on_interface"))?,
            ),
            None => None,
        };
        let guard = crate::ha_guard::Guard::new(
            internal_ifindex,
            h.trusted_networks.iter().map(|n| n.0).collect(),
        );
        dp.udp_gso = h.udp_gso;
        dp.udp_gro = gro;
        let encap = match h.kernel_encap {
            false => None,
            true => {
                let pool = cfg.dynamic_pool.map_or(0, |(_, n)| n as usize);
                let capacity = (node_count + pool).clamp(1024, ENCAP_MAX) as u32;
                match netio::ipip_encap::IpipEncap::attach(tun_ifindex, capacity) {
                    Ok(e) => Some(Arc::new(e)),
                    Err(e) => {
                        warn!("kernel IP-in-IP encapsulation unavailable, every packet goes through this process: {e}");
                        None
                    }
                }
            }
        };
        let routes = RouteWorker::start(
            tun_ifindex,
            arp,
            encap.clone().map(|prog| routes::Encap {
                prog,
                source: h.address,
                tun_mtu: tun.mtu().unwrap_or(u32::MAX - 20),
            }),
        )
        .map_err(Error::RouteWorker)?;
        write_sysctl("/proc/sys/net/ipv4/ip_forward", "1");
        if let Some(name) = &h.home_interface {
            // Answer ARP for away nodes at once, not after up to 0.8 s (proxy_delay).
            write_sysctl(&format!("/proc/sys/net/ipv4/neigh/{name}/proxy_delay"), "0");
        }
        let raw = RawIp::open_with(
            IPPROTO_IPIP,
            &RawIpOptions {
                bind_addr: Some(h.address),
                ..RawIpOptions::default()
            },
        )
        .map_err(io_err("raw IP-in-IP socket"))?;
        enlarge_buffers(std::os::fd::AsFd::as_fd(&raw));
        allow_fragmentation(std::os::fd::AsFd::as_fd(&raw));
        let (ctl_tx, ctl_rx) = mpsc::channel(8);
        let ctl = ControlServer::start_optional(h.control_socket.as_deref(), ctl_tx)?;
        let (stop, stop_rx) = watch::channel(false);
        let changed = Arc::new(Notify::new());
        let (tunnel_tx, tunnel_rx) = mpsc::channel(workers::HANDOFF);
        let mut workers = Vec::with_capacity(n_workers - 1);
        for (i, sock) in socks.into_iter().enumerate() {
            let sock = sock.into_std().map_err(os_err("UDP port 434"))?;
            let shared = workers::Shared {
                shards: shards.clone(),
                routes: routes.clone(),
                guard: guard.clone(),
                changed: changed.clone(),
                stop: stop_rx.clone(),
                ha_address: h.address,
                gro,
                tunnel_tx: tunnel_tx.clone(),
                queue: queue.clone(),
            };
            workers.push(workers::spawn(i + 1, sock, shared).map_err(Error::Worker)?);
        }
        info!(address = %h.address, home_network = %h.home_network.0, nodes = node_count, workers = n_workers, "home agent started");
        let plane = Plane::new(shards.clone(), routes, guard, 0);
        let mut d = Daemon {
            state_file: h.state_file.clone(),
            file,
            shards,
            plane,
            workers,
            stop,
            changed,
            tunnel_rx,
            fwd: Vec::new(),
            udp,
            raw,
            tun,
            dp,
            encap,
            nl,
            home_ifindex,
            ours,
            udp_gso: netio::udp::GsoBatch::new(),
            counters: Counters::default(),
            ctl_rx,
            _ctl: ctl,
            dirty: false,
            save_at: None,
            saving: None,
            last_snapshot: Duration::ZERO,
            last_write: Duration::ZERO,
            started: Instant::now(),
            reloader: crate::keyfile::Reloader::new(config_path),
        };
        d.take_over_leftovers().await;
        d.restore().await;
        Ok(d)
    }

    async fn run(&mut self) -> Result<(), Error> {
        let mut term = signal(SignalKind::terminate()).map_err(os_err("signal handler"))?;
        let mut int = signal(SignalKind::interrupt()).map_err(os_err("signal handler"))?;
        let mut hup = signal(SignalKind::hangup()).map_err(os_err("signal handler"))?;
        // Up to BATCH datagrams per recvmmsg; 64 KiB slots hold any RFC 3519 Tunnel Data.
        let mut urb = RecvBatch::new(BATCH, 65536);
        let (mut rrb, mut tbuf) = crate::datapath::buffers();
        loop {
            let deadline = if self.workers.is_empty() {
                self.plane.next_timeout()
            } else {
                Some(workers::timer_deadline(
                    self.plane.next_timeout(),
                    Instant::now(),
                ))
            };
            let sleep = sleep_until(deadline.map(tokio::time::Instant::from_std));
            tokio::select! {
                r = urb.recv(&self.udp) => match r {
                    Ok(n) => self.on_udp_batch(&urb, n).await,
                    Err(e) => warn!("udp receive: {e}"),
                },
                Some((from, data)) = self.tunnel_rx.recv() => {
                    self.on_tunnel_data(Instant::now(), from, &data).await;
                    while let Ok((from, data)) = self.tunnel_rx.try_recv() {
                        self.on_tunnel_data(Instant::now(), from, &data).await;
                    }
                    self.flush_delivered().await;
                }
                r = rrb.recv(&self.raw) => match r {
                    // One recvmmsg, then one more if the first was full.
                    Ok(n) => {
                        self.on_raw_batch(&rrb, n).await;
                        if n == BATCH {
                            if let Ok(n) = rrb.try_recv(&self.raw) {
                                self.on_raw_batch(&rrb, n).await;
                            }
                        }
                    }
                    Err(e) => warn!("raw receive: {e}"),
                },
                r = self.tun.recv(&mut tbuf) => match r {
                    Ok(n) => {
                        let now = Instant::now();
                        self.on_tun(now, &tbuf[..n]).await;
                        // Drain what else is queued, then send it all (sendmmsg).
                        for _ in 0..BATCH {
                            let Ok(n) = self.tun.try_recv(&mut tbuf) else { break };
                            self.on_tun(now, &tbuf[..n]).await;
                        }
                        self.flush_tunnel().await;
                    }
                    Err(e) => warn!("tun receive: {e}"),
                },
                Some(req) = self.ctl_rx.recv() => {
                    let v = self.status(&req.query);
                    let _ = req.send(v);
                }
                _ = sleep => {
                    self.plane.timeout(Instant::now());
                    if let Some(i) = self.workers.iter().position(|w| w.finished()) {
                        return Err(Error::Worker(format!(
                            "registration worker {} stopped; exiting so that a supervisor restarts the home agent",
                            i + 1
                        )));
                    }
                }
                _ = self.changed.notified() => self.mark_changed(),
                _ = sleep_until(self.save_at) => self.save(),
                _ = term.recv() => { info!("SIGTERM: shutting down"); break }
                _ = int.recv() => { info!("SIGINT: shutting down"); break }
                _ = hup.recv() => self.reloader.request(),
                r = self.reloader.done() => self.reload_nodes(r),
            }
            self.drain().await;
        }
        Ok(())
    }

    /// SIGHUP, once the key file is parsed (off the loop): replaces the node set;
    /// bindings of nodes that stay are untouched. A bad file changes nothing.
    fn reload_nodes(&mut self, parsed: Result<Vec<MobileNodeConfig>, String>) {
        let r = parsed.and_then(|n| {
            self.shards
                .replace_nodes(n)
                .map_err(|e| format!("mobile nodes: {e}"))
        });
        self.plane.drain_all();
        match r {
            Ok(s) => info!(
                added = s.added,
                kept = s.kept,
                removed = s.removed,
                "SIGHUP: mobile nodes reloaded"
            ),
            Err(e) => warn!("SIGHUP: nodes kept, reload refused:\n{e}"),
        }
        crate::keyfile::release_parse_memory();
    }

    /// A batch from UDP 434 (one recvmmsg): Tunnel Data goes to the data path,
    /// registrations to the core in one call, which overlaps the memory misses of
    /// looking up many nodes (see `HomeAgent::handle_datagrams`).
    async fn on_udp_batch(&mut self, rb: &RecvBatch, n: usize) {
        let now = Instant::now();
        shards::WorkerStats::add(&self.plane.stats.batches, 1);
        shards::WorkerStats::add(&self.plane.stats.datagrams, n as u64);
        let (merged, in_merged) = rb.merged();
        self.dp.udp_gro_receives += merged as u64;
        self.dp.udp_gro_datagrams += in_merged as u64;
        let mut regs: Vec<(SocketAddrV4, SocketAddrV4, &[u8])> = Vec::with_capacity(n);
        for i in 0..n {
            let (m, payload) = rb.get(i);
            if MessageType::of(payload) == Some(MessageType::TUNNEL_DATA) {
                self.on_tunnel_data(now, m.src, payload).await;
            } else if self.plane.guard.drops_internal(m.ifindex, payload) {
                self.counters.drop(DropReason::InternalInterface);
            } else {
                let local =
                    SocketAddrV4::new(m.dst.or(m.local).unwrap_or(self.file.ha.address), MIP_PORT);
                regs.push((m.src, local, payload));
            }
        }
        self.flush_delivered().await;
        self.plane.registrations(now, SystemTime::now(), &regs);
    }

    /// Sends the replies the cores made (after their routes) and notes changed
    /// bindings for the state file.
    async fn drain(&mut self) {
        self.plane.send(&self.udp).await;
        if self.plane.take_changed() {
            self.mark_changed();
        }
    }

    /// A binding changed: the state file is written [`SAVE_DELAY`] later, or
    /// later still at scale: the loop spends at most a tenth of its time on
    /// snapshots and the writing thread at most a third of a core, whatever the
    /// table's size (a million bindings: a snapshot every few seconds).
    fn mark_changed(&mut self) {
        self.dirty = true;
        let delay = SAVE_DELAY
            .max(self.last_snapshot * 10)
            .max(self.last_write * 2);
        self.save_at
            .get_or_insert_with(|| tokio::time::Instant::now() + delay);
    }

    fn status(&self, query: &serde_json::Value) -> serde_json::Value {
        let now = Instant::now();
        let (selected, paging) = match self.select_bindings(query) {
            Ok(x) => x,
            Err(e) => return json!({ "error": e }),
        };
        let bindings: Vec<_> = selected
            .iter()
            .map(|b| {
                json!({
                    "home_address": b.home_addr.to_string(),
                    "care_of": b.care_of.to_string(),
                    "source": b.source.to_string(),
                    "lifetime": b.lifetime,
                    "remaining_s": b.expires.saturating_duration_since(now).as_secs(),
                    "tunnel": match b.tunnel { Tunnel::IpInIp => "ipip", Tunnel::Udp { .. } => "udp" },
                    "udp_peer": match b.tunnel { Tunnel::Udp { peer, .. } => Some(peer.to_string()), Tunnel::IpInIp => None },
                    "reverse_tunnel": b.reverse_tunnel,
                })
            })
            .collect();
        let s = self.shards.stats();
        let mut drops = self
            .counters
            .drops
            .merged_with(s.drops.iter().map(|(k, v)| (k, *v)));
        // The other workers' own drops.
        let mut workers = vec![self.plane.stats.json(0)];
        let (mut rx_packets, mut rx_bytes) = (self.counters.rx_packets, self.counters.rx_bytes);
        for (i, w) in self.workers.iter().enumerate() {
            workers.push(w.stats.json(i + 1));
            // Tunnel Data the worker delivered into its own queue.
            rx_packets += w
                .stats
                .tunnel_rx_packets
                .load(std::sync::atomic::Ordering::Relaxed);
            rx_bytes += w
                .stats
                .tunnel_rx_bytes
                .load(std::sync::atomic::Ordering::Relaxed);
            if let Ok(d) = w.stats.tunnel_drops.lock() {
                d.add_into(&mut drops);
            }
            for (why, c) in [
                (DropReason::InternalInterface, &w.stats.internal_dropped),
                (
                    DropReason::TunnelDataOffDataPath,
                    &w.stats.tunnel_data_dropped,
                ),
            ] {
                let n = c.load(std::sync::atomic::Ordering::Relaxed);
                if n > 0 {
                    *drops.entry(why.name().to_string()).or_default() += n;
                }
            }
        }
        let auth: BTreeMap<String, u64> = s
            .auth_failures
            .iter()
            .map(|(k, v)| (format!("{k:?}"), *v))
            .collect();
        json!({
            "role": "ha",
            "address": self.file.ha.address.to_string(),
            "uptime_s": self.started.elapsed().as_secs(),
            "bindings": bindings,
            "bindings_total": paging["bindings_total"],
            "page": paging.get("page"),
            "node": paging.get("node"),
            "counters": {
                "requests": s.requests,
                "replies_by_code": s.replies_by_code.iter().map(|(k, v)| (k.to_string(), *v)).collect::<BTreeMap<_, _>>(),
                "auth_failures": auth,
                "bindings_expired": s.bindings_expired,
                "drops": drops,
                "tx_packets": self.counters.tx_packets,
                "tx_bytes": self.counters.tx_bytes,
                "rx_packets": rx_packets,
                "rx_bytes": rx_bytes,
            },
            "workers": workers,
            "data_path": crate::datapath::status(&self.dp),
            "kernel_encap": crate::datapath::encap_status(self.encap.as_deref()),
        })
    }

    /// Saves the bindings: a snapshot taken here (one pass over each shard, no
    /// copy or sort of the table), serialized and written by a thread, so that a
    /// million bindings do not stall the loop for the seconds the JSON takes
    /// (issue 15). One write at a time; a change during it is saved after.
    fn save(&mut self) {
        self.dirty = false;
        self.save_at = None;
        let Some(path) = self.state_file.clone() else {
            return;
        };
        if self.saving.as_ref().is_some_and(|h| !h.is_finished()) {
            self.mark_changed();
            return;
        }
        if let Some(h) = self.saving.take() {
            // Finished: joining does not wait.
            self.last_write = h.join().unwrap_or_default();
        }
        let t0 = Instant::now();
        let saved = self.snapshot();
        self.last_snapshot = t0.elapsed();
        let spawned = std::thread::Builder::new()
            .name("ha-save".into())
            .spawn(move || {
                let t = Instant::now();
                write_state(&path, &saved);
                t.elapsed()
            });
        match spawned {
            Ok(h) => self.saving = Some(h),
            Err(e) => warn!("cannot start saving the bindings: {e}"),
        }
    }

    /// Waits for a write in progress, then writes what changed since (at exit).
    fn save_now(&mut self) {
        if let Some(h) = self.saving.take() {
            let _ = h.join();
        }
        if self.dirty {
            if let Some(path) = self.state_file.clone() {
                let saved = self.snapshot();
                write_state(&path, &saved);
            }
            self.dirty = false;
        }
    }

    /// Bindings the configuration allows at most (several per node when
    /// simultaneous bindings are allowed): the bound of a state file.
    fn state_capacity(&self) -> u64 {
        let nodes: usize = (0..self.shards.len())
            .map(|i| self.shards.lock(i).node_count())
            .sum();
        let per_node = self.file.ha.max_bindings_per_mn.max(1);
        (nodes.saturating_mul(per_node)) as u64
    }

    fn snapshot(&self) -> Vec<SavedBinding> {
        let now = Instant::now();
        let wall = unix_now();
        let mut saved: Vec<SavedBinding> = Vec::new();
        for i in 0..self.shards.len() {
            let core = self.shards.lock(i);
            saved.reserve(core.binding_count());
            core.for_each_binding(|b, last_ident| {
                saved.push(SavedBinding {
                    home_addr: b.home_addr,
                    care_of: b.care_of,
                    source: b.source,
                    local: b.local,
                    lifetime: b.lifetime,
                    expires_unix: wall + b.expires.saturating_duration_since(now).as_secs(),
                    reverse_tunnel: b.reverse_tunnel,
                    colocated: b.colocated,
                    broadcast: b.broadcast,
                    udp_peer: match b.tunnel {
                        Tunnel::Udp { peer, .. } => Some(peer),
                        Tunnel::IpInIp => None,
                    },
                    keepalive: match b.tunnel {
                        Tunnel::Udp { keepalive, .. } => keepalive,
                        Tunnel::IpInIp => 0,
                    },
                    last_ident,
                    nai: b.nai.clone(),
                })
            });
        }
        saved
    }

    async fn restore(&mut self) {
        let Some(path) = self.state_file.clone() else {
            return;
        };
        // Bounded like any input: far more than the configuration could hold (64 MiB,
        // plus 4 KiB a node and pool address: a binding takes about 200 octets) is
        // not a state file this agent wrote.
        let max_state_bytes: u64 = (64 << 20) + 4096 * self.state_capacity();
        if std::fs::metadata(&path).is_ok_and(|m| m.len() > max_state_bytes) {
            warn!(
                "ignoring state file {}: larger than {max_state_bytes} bytes",
                path.display()
            );
            return;
        }
        let Ok(bytes) = std::fs::read(&path) else {
            return;
        };
        let saved: Vec<SavedBinding> = match serde_json::from_slice(&bytes) {
            Ok(s) => s,
            Err(e) => {
                warn!("ignoring unreadable state file {}: {e}", path.display());
                return;
            }
        };
        let now = Instant::now();
        let wall = unix_now();
        let mut n = 0;
        for s in saved {
            let Some(left) = s.expires_unix.checked_sub(wall).filter(|l| *l > 0) else {
                continue;
            };
            // Out-of-range expiries (the year 2100) are dropped below; never let them
            // overflow the clock arithmetic first.
            let expires = now
                .checked_add(Duration::from_secs(left.min(u64::from(u32::MAX))))
                .unwrap_or(now);
            let b = Binding {
                home_addr: s.home_addr,
                care_of: s.care_of,
                source: s.source,
                local: s.local,
                lifetime: s.lifetime,
                expires,
                reverse_tunnel: s.reverse_tunnel,
                colocated: s.colocated,
                broadcast: s.broadcast,
                tunnel: match s.udp_peer {
                    Some(peer) => Tunnel::Udp {
                        peer,
                        keepalive: s.keepalive,
                    },
                    None => Tunnel::IpInIp,
                },
                nai: s.nai.clone(),
            };
            // A node with a NAI lives on shard 0 (`ha_shards`).
            let mut core = match s.nai {
                Some(_) => self.shards.lock(0),
                None => self.shards.lock_addr(s.home_addr),
            };
            if let Some(n) = &s.nai {
                // Pool assignment first (false, harmless, for a static address).
                core.assign_pool_address(n, s.home_addr);
            }
            if let Err(why) = core.check_restore(now, &b) {
                warn!(
                    "state file {}: dropping the binding of {} via {} (expires_unix {}): {why}",
                    path.display(),
                    s.home_addr,
                    s.care_of,
                    s.expires_unix
                );
                continue;
            }
            if core.restore_binding(now, b, s.last_ident) {
                n += 1;
            }
        }
        info!("restored {n} bindings from {}", path.display());
        self.plane.drain_all();
        self.drain().await;
    }

    /// Removes what an earlier instance killed without cleanup left, for its
    /// configured home addresses only (another agent on the host keeps its own):
    /// routes marked [`crate::shell::PROTO_HA`] and proxy ARP entries on the home
    /// link, marked or not (versions before marking). Restored bindings then put
    /// back what they need.
    async fn take_over_leftovers(&mut self) {
        // Every configured static address (inline or key file) and the pool.
        let statics = std::mem::take(&mut self.ours);
        let pool = crate::keyfile::pool(&self.file);
        let ours = |a: &Ipv4Addr| {
            statics.contains(a)
                || pool.is_some_and(|(first, n)| u32::from(*a).wrapping_sub(u32::from(first)) < n)
        };
        let proxies: Vec<(u32, Ipv4Addr)> = match self.home_ifindex {
            Some(ifx) => self
                .nl
                .proxy_arps(Some(ifx))
                .await
                .unwrap_or_default()
                .into_iter()
                .filter(|p| ours(&p.1))
                .collect(),
            None => Vec::new(),
        };
        let routes: Vec<Route> = self
            .nl
            .routes_marked(crate::shell::PROTO_HA)
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.prefix == 32 && ours(&r.dst))
            .collect();
        for (ifx, addr) in &proxies {
            let _ = self.nl.del_proxy_arp(*ifx, *addr).await;
        }
        for r in &routes {
            let _ = self.nl.del_route_marked(r, crate::shell::PROTO_HA).await;
        }
        if !proxies.is_empty() || !routes.is_empty() {
            warn!(
                proxies = proxies.len(),
                routes = routes.len(),
                "removed what a previous home agent left behind"
            );
        }
    }

    async fn cleanup(&mut self) {
        self.save_now();
        let _ = self.stop.send(true);
        for w in &mut self.workers {
            w.join();
        }
        for h in self.shards.bound_home_addrs() {
            self.plane.routes.intercept(h, false);
        }
        self.plane.routes.flush().await;
        info!("home agent stopped; routes and proxy ARP entries removed");
    }
}

/// Writes the state file (a temporary file renamed over it: a crash leaves the
/// old one or the new one, never half of one). Compact JSON: about 200 octets a
/// binding.
fn write_state(path: &Path, saved: &[SavedBinding]) {
    let tmp = path.with_extension("tmp");
    let r = serde_json::to_vec(saved)
        .map_err(|e| e.to_string())
        .and_then(|bytes| std::fs::write(&tmp, bytes).map_err(|e| e.to_string()))
        .and_then(|()| std::fs::rename(&tmp, path).map_err(|e| e.to_string()));
    if let Err(e) = r {
        warn!("cannot save bindings to {}: {e}", path.display());
    }
}

/// `workers` from the configuration: 0 means one per CPU this process may use.
/// The most kernel encapsulation entries (a hash map; its buckets, 16 octets each
/// rounded up to a power of two, are allocated at start, the entries as added).
const ENCAP_MAX: usize = 1 << 21;

fn worker_count(configured: usize) -> usize {
    match configured {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
    .min(MAX_WORKERS)
}

/// More workers than this is a configuration mistake, not a big machine.
const MAX_WORKERS: usize = 256;

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
