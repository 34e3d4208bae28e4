//! The home agent's binding table split into shards, one per worker (issue 15,
//! `workers` in `ha.toml`).
//!
//! Each shard is a whole [`HomeAgent`] core holding a disjoint part of the mobile
//! nodes: a node with a NAI (and so the dynamic pool, RFC 2794) lives on shard 0,
//! any other node on `home address mod N` ([`Router`]). Every worker owns one UDP
//! 434 socket of an `SO_REUSEPORT` group whose classic BPF program
//! ([`Router::steering`]) gives a Registration Request to the worker of its home
//! address's shard, and RFC 3519 Tunnel Data to worker 0 (which owns the data
//! path). The program only chooses a socket; correctness does not depend on it: a
//! worker that receives a request for another shard (a NAI node renewing with its
//! pool address, a kernel without the program) takes that shard's lock and handles
//! it there. So each shard's lock is, in the steady state, taken by one worker
//! only, and the cores scale like the workers.
//!
//! A node whose identity changes shard on SIGHUP (a NAI added to or removed from a
//! statically addressed node) starts that reload without its binding; it
//! re-registers.

use crate::ha_guard::Guard;
use mip4::ha::{
    Binding, ConfigError, HaConfig, HaEvent, HaStats, HomeAgent, MobileNodeConfig, ReloadSummary,
};
use mip4::wire::MessageType;
use mip4::Transmit;
use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard};
use std::time::{Instant, SystemTime};
use tracing::{info, warn};

use super::routes::RouteWorker;

/// Which shard holds a node, a request or a home address.
#[derive(Debug, Clone)]
pub(crate) struct Router {
    n: u32,
    /// The dynamic pool as (first address, size): its addresses belong to NAI nodes.
    pool: Option<(u32, u32)>,
    /// Static home addresses of nodes that also have a NAI (they live on shard 0).
    nai_statics: HashSet<Ipv4Addr>,
    /// Every worker delivers RFC 3519 Tunnel Data (each owns a queue of the tunnel
    /// device): it goes to the shard of its inner source, the node's home address.
    /// Otherwise only worker 0 can, and it all goes there.
    tunnel_data_by_source: bool,
}

impl Router {
    pub(crate) fn new(
        n: usize,
        pool: Option<(Ipv4Addr, u32)>,
        nodes: &[MobileNodeConfig],
    ) -> Router {
        Router {
            n: u32::try_from(n.max(1)).unwrap_or(u32::MAX),
            pool: pool.map(|(a, s)| (u32::from(a), s)),
            nai_statics: nodes
                .iter()
                .filter(|m| m.nai.is_some())
                .filter_map(|m| m.home_addr)
                .collect(),
            tunnel_data_by_source: false,
        }
    }

    /// Tunnel Data goes to its inner source's shard (see `tunnel_data_by_source`).
    pub(crate) fn with_tunnel_data_by_source(mut self, on: bool) -> Router {
        self.tunnel_data_by_source = on;
        self
    }

    /// The shard of a (bound or configured) home address.
    pub(crate) fn of_addr(&self, a: Ipv4Addr) -> usize {
        if self.n == 1 {
            return 0;
        }
        let v = u32::from(a);
        if self
            .pool
            .is_some_and(|(first, size)| v.wrapping_sub(first) < size)
            || self.nai_statics.contains(&a)
        {
            return 0;
        }
        (v % self.n) as usize
    }

    /// The shard of a configured node.
    pub(crate) fn of_node(&self, m: &MobileNodeConfig) -> usize {
        match (&m.nai, m.home_addr) {
            (None, Some(h)) => self.of_addr(h),
            _ => 0,
        }
    }

    /// The shard of a datagram received on UDP 434: the home address of a request
    /// (0.0.0.0, a NAI node asking for an address, is shard 0's), 0 for anything
    /// too short to say. Tunnel Data: its inner source's with
    /// [`Router::with_tunnel_data_by_source`], else 0.
    pub(crate) fn of_request(&self, p: &[u8]) -> usize {
        if self.n == 1 || p.len() < 8 {
            return 0;
        }
        // The home address: in a request at 4, in Tunnel Data the inner source (a
        // 4-octet header, then IPv4's source at 12).
        let at = match p[0] == MessageType::TUNNEL_DATA.0 {
            false => 4,
            true if self.tunnel_data_by_source => 16,
            true => return 0,
        };
        let Some(a) = p.get(at..at + 4) else {
            return 0;
        };
        match Ipv4Addr::new(a[0], a[1], a[2], a[3]) {
            Ipv4Addr::UNSPECIFIED => 0,
            a => self.of_addr(a),
        }
    }

    /// The classic BPF program for the `SO_REUSEPORT` group (one socket per worker,
    /// in worker order): the same choice as [`Router::of_request`] except for the
    /// static addresses of NAI nodes, which it cannot know (their worker hands them
    /// to shard 0). A load beyond the datagram ends the program with 0: worker 0.
    pub(crate) fn steering(&self) -> Vec<libc::sock_filter> {
        const LD_B_ABS: u16 = 0x30; // BPF_LD | BPF_B | BPF_ABS
        const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
        const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
        const JGE_K: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
        const SUB_K: u16 = 0x14; // BPF_ALU | BPF_SUB | BPF_K
        const MOD_K: u16 = 0x94; // BPF_ALU | BPF_MOD | BPF_K
        const TAX: u16 = 0x07; // BPF_MISC | BPF_TAX
        const TXA: u16 = 0x87; // BPF_MISC | BPF_TXA
        const RET_A: u16 = 0x16; // BPF_RET | BPF_A
        const RET_K: u16 = 0x06; // BPF_RET | BPF_K
        const JA: u16 = 0x05; // BPF_JMP | BPF_JA
        let op = |code, k| libc::sock_filter {
            code,
            jt: 0,
            jf: 0,
            k,
        };
        let td = u32::from(MessageType::TUNNEL_DATA.0);
        // (instruction, jump to "return 0" when true / when false)
        let mut prog: Vec<(libc::sock_filter, bool, bool)> = match self.tunnel_data_by_source {
            false => vec![
                (op(LD_B_ABS, 0), false, false),
                (op(JEQ_K, td), true, false),
                (op(LD_W_ABS, 4), false, false),
            ],
            // Tunnel Data: the inner source at 16 instead of the home address at 4.
            true => vec![
                (op(LD_B_ABS, 0), false, false),
                (
                    libc::sock_filter {
                        jt: 2,
                        ..op(JEQ_K, td)
                    },
                    false,
                    false,
                ),
                (op(LD_W_ABS, 4), false, false),
                (op(JA, 1), false, false),
                (op(LD_W_ABS, 16), false, false),
            ],
        };
        prog.push((op(JEQ_K, 0), true, false));
        if let Some((first, size)) = self.pool {
            prog.push((op(TAX, 0), false, false));
            prog.push((op(SUB_K, first), false, false));
            // Below `size` after the subtraction: in the pool.
            prog.push((op(JGE_K, size), false, true));
            prog.push((op(TXA, 0), false, false));
        }
        prog.push((op(MOD_K, self.n), false, false));
        prog.push((op(RET_A, 0), false, false));
        let ret0 = prog.len();
        let mut out: Vec<libc::sock_filter> = prog
            .iter()
            .enumerate()
            .map(|(i, (ins, t, f))| {
                let skip = u8::try_from(ret0 - i - 1).unwrap_or(0);
                libc::sock_filter {
                    jt: if *t { skip } else { ins.jt },
                    jf: if *f { skip } else { ins.jf },
                    ..*ins
                }
            })
            .collect();
        out.push(op(RET_K, 0));
        out
    }
}

/// The cores, one per worker, and the rule that says which holds what.
pub(crate) struct Shards {
    cores: Vec<Mutex<HomeAgent>>,
    router: RwLock<Router>,
    has_pool: bool,
}

impl Shards {
    /// `n` cores of configuration `cfg` (the pool on shard 0 only), with `nodes`
    /// split among them. `seed` gives each core its random seed.
    pub(crate) fn new(
        cfg: &HaConfig,
        n: usize,
        mut seed: impl FnMut() -> [u8; 32],
        nodes: Vec<MobileNodeConfig>,
    ) -> Result<Shards, ConfigError> {
        let n = n.max(1);
        let router = Router::new(n, cfg.dynamic_pool, &nodes);
        let cores = (0..n)
            .map(|i| {
                let mut c = cfg.clone();
                if i > 0 {
                    c.dynamic_pool = None;
                }
                Mutex::new(HomeAgent::new(c, seed()))
            })
            .collect();
        let s = Shards {
            cores,
            router: RwLock::new(router),
            has_pool: cfg.dynamic_pool.is_some(),
        };
        s.replace_nodes(nodes)?;
        Ok(s)
    }

    pub(crate) fn len(&self) -> usize {
        self.cores.len()
    }

    /// One core. A worker that panicked holding it left it consistent enough to
    /// keep serving (the core never panics on input); take it over.
    pub(crate) fn lock(&self, i: usize) -> MutexGuard<'_, HomeAgent> {
        let c = &self.cores[i.min(self.cores.len() - 1)];
        c.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn router(&self) -> RwLockReadGuard<'_, Router> {
        self.router.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The core that holds home address `a`, locked.
    pub(crate) fn lock_addr(&self, a: Ipv4Addr) -> MutexGuard<'_, HomeAgent> {
        let i = self.router().of_addr(a);
        self.lock(i)
    }

    /// Replaces the set of mobile nodes, all or nothing (checked as a whole
    /// first, so no shard can refuse its part afterwards). Events of the nodes
    /// that went are left in the cores for [`Plane::drain_all`].
    pub(crate) fn replace_nodes(
        &self,
        nodes: Vec<MobileNodeConfig>,
    ) -> Result<ReloadSummary, ConfigError> {
        validate(&nodes, self.has_pool)?;
        let router = Router::new(self.len(), self.pool(), &nodes);
        let mut parts: Vec<Vec<MobileNodeConfig>> = (0..self.len()).map(|_| Vec::new()).collect();
        for m in nodes {
            parts[router.of_node(&m)].push(m);
        }
        let mut sum = ReloadSummary::default();
        for (i, part) in parts.into_iter().enumerate() {
            let s = self.lock(i).replace_mobile_nodes(part)?;
            sum.added += s.added;
            sum.kept += s.kept;
            sum.removed += s.removed;
        }
        *self.router.write().unwrap_or_else(|p| p.into_inner()) = router;
        Ok(sum)
    }

    fn pool(&self) -> Option<(Ipv4Addr, u32)> {
        self.lock(0).config().dynamic_pool
    }

    /// Every core's counters added up.
    pub(crate) fn stats(&self) -> HaStats {
        let mut all = HaStats::default();
        for i in 0..self.len() {
            let c = self.lock(i);
            let s = c.stats();
            all.requests += s.requests;
            all.bindings_expired += s.bindings_expired;
            for (k, v) in &s.replies_by_code {
                *all.replies_by_code.entry(*k).or_default() += v;
            }
            for (k, v) in &s.drops {
                *all.drops.entry(*k).or_default() += v;
            }
            for (k, v) in &s.auth_failures {
                *all.auth_failures.entry(*k).or_default() += v;
            }
        }
        all
    }

    pub(crate) fn binding_count(&self) -> usize {
        (0..self.len()).map(|i| self.lock(i).binding_count()).sum()
    }

    pub(crate) fn bindings_of(&self, a: Ipv4Addr) -> Vec<Binding> {
        self.lock_addr(a).bindings_of(a).to_vec()
    }

    pub(crate) fn bindings_of_nai(&self, nai: &str) -> Vec<Binding> {
        self.lock(0).bindings_of_nai(nai).to_vec()
    }

    /// [`HomeAgent::bindings_page`] across the shards: each core's page, merged.
    pub(crate) fn bindings_page(
        &self,
        after: Option<Ipv4Addr>,
        limit: usize,
    ) -> (Vec<Binding>, bool) {
        let limit = limit.max(1);
        let mut more = false;
        let mut all = Vec::new();
        for i in 0..self.len() {
            let (bs, m) = self.lock(i).bindings_page(after, limit);
            more |= m;
            all.extend(bs);
        }
        // Stable: each node's bindings keep their care-of order.
        all.sort_by_key(|b| b.home_addr);
        let mut nodes = 0;
        let mut last = None;
        let mut cut = all.len();
        for (k, b) in all.iter().enumerate() {
            if last != Some(b.home_addr) {
                nodes += 1;
                last = Some(b.home_addr);
                if nodes > limit {
                    cut = k;
                    more = true;
                    break;
                }
            }
        }
        all.truncate(cut);
        (all, more)
    }

    /// Every home address with a binding, in no particular order.
    pub(crate) fn bound_home_addrs(&self) -> Vec<Ipv4Addr> {
        (0..self.len())
            .flat_map(|i| self.lock(i).bound_home_addrs().collect::<Vec<_>>())
            .collect()
    }
}

/// The checks [`HomeAgent::replace_mobile_nodes`] makes, on the whole set: a
/// duplicate can straddle two shards.
fn validate(nodes: &[MobileNodeConfig], has_pool: bool) -> Result<(), ConfigError> {
    let mut homes = HashSet::with_capacity(nodes.len());
    let mut nais = HashSet::new();
    for n in nodes {
        if n.home_addr.is_none() && n.nai.is_none() {
            return Err(ConfigError::NoIdentity);
        }
        if n.sas.is_empty() {
            return Err(ConfigError::NoSa);
        }
        if let Some(h) = n.home_addr {
            if !homes.insert(h) {
                return Err(ConfigError::DuplicateHome(h));
            }
        }
        if let Some(a) = &n.nai {
            if !nais.insert(a.as_str()) {
                return Err(ConfigError::DuplicateNai(a.clone()));
            }
            if n.home_addr.is_none() && !has_pool {
                return Err(ConfigError::NoPool(a.clone()));
            }
        }
    }
    Ok(())
}

/// What one worker did, for `status` (`workers`) and the test that checks the
/// steering.
#[derive(Default, Debug)]
pub(crate) struct WorkerStats {
    /// Datagrams received on this worker's socket.
    pub(crate) datagrams: AtomicU64,
    /// Registration datagrams that belonged to another worker's shard.
    pub(crate) other_shard: AtomicU64,
    /// recvmmsg batches.
    pub(crate) batches: AtomicU64,
    /// Requests dropped on the internal interface (RFC 5265 HA-5).
    pub(crate) internal_dropped: AtomicU64,
    /// Tunnel Data that reached a worker without the data path: handed to worker 0,
    /// or dropped when its queue was full.
    pub(crate) tunnel_data_handed: AtomicU64,
    pub(crate) tunnel_data_dropped: AtomicU64,
    /// Tunnel Data this worker delivered into its own queue of the tunnel device
    /// (inner packets and octets), and what it dropped doing so.
    pub(crate) tunnel_rx_packets: AtomicU64,
    pub(crate) tunnel_rx_bytes: AtomicU64,
    pub(crate) tunnel_drops: Mutex<crate::drops::DropCounts>,
}

impl WorkerStats {
    pub(crate) fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts a drop of Tunnel Data this worker delivers itself (rare: the lock is
    /// taken only then).
    pub(crate) fn drop_tunnel_data(&self, why: crate::drops::DropReason) {
        if let Ok(mut d) = self.tunnel_drops.lock() {
            d.count(why);
        }
    }

    pub(crate) fn json(&self, i: usize) -> serde_json::Value {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        serde_json::json!({
            "worker": i,
            "datagrams": g(&self.datagrams),
            "batches": g(&self.batches),
            "other_shard": g(&self.other_shard),
            "tunnel_data_handed": g(&self.tunnel_data_handed),
            "tunnel_data_delivered": g(&self.tunnel_rx_packets),
        })
    }
}

/// One worker's side of the registration path: hands datagrams to the cores by
/// shard, applies their events (routes before replies) and gathers the replies.
pub(crate) struct Plane {
    pub(crate) shards: std::sync::Arc<Shards>,
    pub(crate) routes: RouteWorker,
    pub(crate) guard: Guard,
    pub(crate) stats: std::sync::Arc<WorkerStats>,
    /// The shard this worker owns (its timers, its steered requests).
    pub(crate) me: usize,
    out: Vec<Transmit>,
    /// A binding changed since the last [`Plane::take_changed`].
    changed: bool,
}

impl Plane {
    pub(crate) fn new(
        shards: std::sync::Arc<Shards>,
        routes: RouteWorker,
        guard: Guard,
        me: usize,
    ) -> Plane {
        Plane {
            shards,
            routes,
            guard,
            stats: std::sync::Arc::default(),
            me,
            out: Vec::new(),
            changed: false,
        }
    }

    /// Registration datagrams of one receive batch, each handed to its shard's
    /// core (one `handle_datagrams` call per shard present, in arrival order).
    pub(crate) fn registrations(
        &mut self,
        now: Instant,
        wall: SystemTime,
        regs: &[(SocketAddrV4, SocketAddrV4, &[u8])],
    ) {
        if regs.is_empty() {
            return;
        }
        let keys: Vec<usize> = {
            let r = self.shards.router();
            regs.iter().map(|(_, _, p)| r.of_request(p)).collect()
        };
        let first = keys[0];
        if keys.iter().all(|k| *k == first) {
            self.on_shard(first, now, wall, regs);
        } else {
            for s in 0..self.shards.len() {
                let part: Vec<_> = regs
                    .iter()
                    .zip(&keys)
                    .filter(|(_, k)| **k == s)
                    .map(|(r, _)| *r)
                    .collect();
                if !part.is_empty() {
                    self.on_shard(s, now, wall, &part);
                }
            }
        }
    }

    fn on_shard(
        &mut self,
        s: usize,
        now: Instant,
        wall: SystemTime,
        regs: &[(SocketAddrV4, SocketAddrV4, &[u8])],
    ) {
        if s != self.me {
            WorkerStats::add(&self.stats.other_shard, regs.len() as u64);
        }
        let shards = self.shards.clone();
        let mut core = shards.lock(s);
        let before = Guard::untrusted_count(&core);
        core.handle_datagrams(now, wall, regs);
        let sources: Vec<SocketAddrV4> = regs.iter().map(|r| r.0).collect();
        self.guard.after_core(now, before, &core, &sources);
        self.drain_core(&mut core);
    }

    /// The next expiry of this worker's own shard.
    pub(crate) fn next_timeout(&self) -> Option<Instant> {
        self.shards.lock(self.me).poll_timeout()
    }

    /// Expires this worker's shard's bindings that are due.
    pub(crate) fn timeout(&mut self, now: Instant) {
        let shards = self.shards.clone();
        let mut core = shards.lock(self.me);
        core.handle_timeout(now);
        self.drain_core(&mut core);
    }

    /// Events and replies every core holds (after a restore or a reload).
    pub(crate) fn drain_all(&mut self) {
        let shards = self.shards.clone();
        for i in 0..shards.len() {
            self.drain_core(&mut shards.lock(i));
        }
    }

    /// Takes a core's events (applied while its lock is held, so the route
    /// requests of one address are queued in the order the core made them) and
    /// replies.
    pub(crate) fn drain_core(&mut self, core: &mut HomeAgent) {
        while let Some(e) = core.poll_event() {
            self.changed = true;
            match e {
                // The core's table is the data path's: only routes follow the events.
                // Events are applied after the core changed (a whole batch at once),
                // so route on every new binding (idempotent: replace) and off only
                // when the address has none left now; the route worker keeps the
                // last request.
                HaEvent::BindingAdded(b) => {
                    info!(home = %b.home_addr, care_of = %b.care_of, lifetime = b.lifetime, tunnel = ?b.tunnel, "binding added");
                    self.routes.intercept(b.home_addr, true);
                    self.routes
                        .encap(b.home_addr, kernel_encap(core, b.home_addr));
                }
                // A new expiry, perhaps a new tunnel.
                HaEvent::BindingRenewed(b) => {
                    self.routes
                        .encap(b.home_addr, kernel_encap(core, b.home_addr));
                }
                HaEvent::BindingRemoved {
                    home_addr,
                    care_of,
                    reason,
                } => {
                    info!(home = %home_addr, care_of = %care_of, ?reason, "binding removed");
                    if core.bindings_of(home_addr).is_empty() {
                        self.routes.intercept(home_addr, false);
                    }
                    self.routes.encap(home_addr, kernel_encap(core, home_addr));
                }
            }
        }
        while let Some(t) = core.poll_transmit() {
            self.out.push(t);
        }
    }

    /// Whether a binding changed since the last call.
    pub(crate) fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// Waits for the route worker where a removal is pending (the reply to a node
    /// deregistering at home must go out on the home link, not into the tunnel
    /// its binding was using), then sends the gathered replies in one batch.
    pub(crate) async fn send(&mut self, udp: &tokio::net::UdpSocket) {
        self.routes.settle().await;
        if self.out.is_empty() {
            return;
        }
        let mut out = std::mem::take(&mut self.out);
        {
            let msgs: Vec<netio::udp_batch::Outgoing> = out
                .iter()
                .map(|t| (t.dst, *t.src.ip(), &t.payload[..]))
                .collect();
            netio::udp_batch::send_batch(udp, &msgs, |m, e| warn!("reply to {}: {e}", m.0)).await;
        }
        out.clear();
        self.out = out;
    }
}

/// What the kernel may do with `home`'s packets (after the core applied a batch):
/// encapsulate to the one binding it has, until that binding expires: IP-in-IP to
/// its care-of address, or RFC 3519 Tunnel Data to its NAT from the address and port
/// its request came to (as the process sends them). Simultaneous bindings, or none,
/// stay with the tunnel device's reader.
fn kernel_encap(core: &HomeAgent, home: Ipv4Addr) -> Option<super::routes::EncapTo> {
    let [b] = core.bindings_of(home) else {
        return None;
    };
    Some(match b.tunnel {
        mip4::ha::Tunnel::IpInIp => super::routes::EncapTo {
            peer: b.care_of,
            until: b.expires,
            udp: None,
        },
        mip4::ha::Tunnel::Udp { peer, .. } => super::routes::EncapTo {
            peer: *peer.ip(),
            until: b.expires,
            udp: Some((b.local, peer.port())),
        },
    })
}

#[cfg(test)]
#[path = "ha_shards_tests.rs"]
mod tests;
