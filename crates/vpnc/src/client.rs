//! The tokio shell: sockets, TUN, routes and netlink around the sans-IO `ikev2::Initiator`
//! and the `esp` SAs.
//!
//! One task owns everything. Each wakeup handles one input (a UDP datagram on port 500 or
//! 4500, a packet from the TUN, a netlink event, a status request, a timer), then drains the
//! Initiator's transmits and events, then re-arms the timer.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use ikev2::ChildSaInfo;
use netio::datapath::DataPath;
use netio::netlink::Route;
use netio::tun::{TUN_F_CSUM, TUN_F_TSO4};
use netio::udp::GsoBatch;
use netio::{Netlink, RawIp, Tun, TunOptions};
use rand::{RngCore, SeedableRng};
use tokio::net::UnixListener;

use crate::config::VpnConfig;
use crate::engine::{log_child_keys, Engine, Note};
use crate::killswitch::KillSwitch;
use crate::sockets::VpnSockets;
use crate::supervise::{Commands, Emitter, Event as SupEvent, Supervisor};

mod addresses;
mod prefixes;

pub use prefixes::range_to_prefixes;

const MAX_PACKET: usize = 65536;
/// Packets handled per wakeup beyond the first (TUN reads, ESP datagrams).
const BATCH: usize = 63;

/// What the loop owns besides the protocol state.
struct Io {
    /// UDP 500, the NAT-T port, and raw ESP (IP protocol 50) for CHILD_SAs without a NAT.
    socks: VpnSockets,
    tun: Tun,
    nl: Netlink,
    tun_ifindex: u32,
}

/// The shell's state around the protocol session (`Engine`).
struct State {
    cfg: VpnConfig,
    eng: Engine,
    /// The interface (index, name) that holds our address (`eng.local_ip()`).
    local_if: Option<(u32, String)>,
    /// The kill switch as installed (its blocked networks follow the traffic selectors
    /// when `kill_switch` is not configured).
    kill: KillSwitch,
    /// The TIA on our TUN, and the routes of the selectors in our table.
    tia: Option<Ipv4Addr>,
    routes: Vec<Route>,
    sealbuf: Vec<u8>,
    warned_raw_esp: bool,
    /// TUN offloads: segments of the last read, merged writes into the TUN, and the
    /// plain-ESP `sendmmsg` batch.
    dp: DataPath,
    /// The ESP-in-UDP datagrams of a burst, for one GSO send to `gso_to` (dst, src).
    gso: GsoBatch,
    gso_to: Option<(SocketAddrV4, Ipv4Addr)>,
    /// The supervisor's event stream (`--events`).
    events: Option<Emitter>,
    /// Follow address changes with MOBIKE on our own (`auto_mobike`).
    follow: bool,
    /// The only address we may use (`local_address`, then the last `mobike` command).
    pinned: Option<Ipv4Addr>,
    /// The interface the sockets are bound to (`bind_interface`).
    bound_if: Option<String>,
}

pub use crate::engine::dead_after;

/// How the client is run.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Under a supervising process: events on stdout, commands on stdin (`supervise`).
    pub events: bool,
}

/// Run the client until SIGINT/SIGTERM (or, supervised, `stop` or the end of stdin).
///
/// Startup errors remove what was installed before them (control socket, kill switch);
/// the kill switch otherwise stays until a clean stop (see `killswitch`).
pub async fn run(cfg: VpnConfig, opts: RunOptions) -> Result<(), String> {
    let (sup, commands) = if opts.events {
        let (s, c) = Supervisor::start()?;
        (Some(s), Some(c))
    } else {
        (None, None)
    };
    let events = sup.as_ref().map(|s| s.events.clone());
    let result = run_with(cfg, opts, events.clone(), commands).await;
    if let (Some(sup), Some(ev)) = (sup, events) {
        ev.emit(&SupEvent::Down {
            reason: match &result {
                Ok(r) => (*r).to_string(),
                Err(e) => e.clone(),
            },
        });
        sup.finish(Duration::from_secs(1));
    }
    result.map(|_| ())
}

async fn run_with(
    cfg: VpnConfig,
    opts: RunOptions,
    events: Option<Emitter>,
    commands: Option<Commands>,
) -> Result<&'static str, String> {
    let ike_cfg = cfg.ike_config()?;
    // The control socket first: a bad path fails before anything is installed.
    let listener = match &cfg.control {
        Some(p) => Some(
            crate::status::bind_private(p)
                .map_err(|e| format!("control socket {}: {e}", p.display()))?,
        ),
        None => None,
    };
    let sup = Sup {
        follow: cfg.follows_addresses(opts.events),
        events,
        commands,
    };
    let result = match Netlink::new() {
        Ok(nl) => with_kill_switch(cfg.clone(), ike_cfg, nl, listener, sup).await,
        Err(e) => Err(format!("netlink: {e}")),
    };
    if let Some(p) = &cfg.control {
        let _ = std::fs::remove_file(p);
    }
    result
}

/// The supervisor's side of a run.
struct Sup {
    follow: bool,
    events: Option<Emitter>,
    commands: Option<Commands>,
}

/// Install the kill switch, run, and remove it on every way out of `serve` (a process
/// that dies instead leaves it in place: that is the point).
async fn with_kill_switch(
    cfg: VpnConfig,
    ike_cfg: ikev2::Config,
    nl: Netlink,
    listener: Option<UnixListener>,
    sup: Sup,
) -> Result<&'static str, String> {
    let ks = KillSwitch {
        table: cfg.table,
        rule_priority: cfg.rule_priority,
        block: cfg.kill_switch.initial(),
        gateway: *cfg.gateway.0.ip(),
    };
    let result = match ks.install(&nl).await {
        Ok(()) => {
            tracing::info!(
                "kill switch: {:?} unreachable in table {} unless tunnelled",
                crate::killswitch::show(&ks.block),
                cfg.table
            );
            serve(cfg, ike_cfg, nl.clone(), listener, ks.clone(), sup).await
        }
        Err(e) => Err(e),
    };
    ks.remove(&nl).await;
    result
}

async fn serve(
    cfg: VpnConfig,
    ike_cfg: ikev2::Config,
    nl: Netlink,
    listener: Option<UnixListener>,
    kill: KillSwitch,
    sup: Sup,
) -> Result<&'static str, String> {
    nl.link_by_name(&cfg.interface)
        .await
        .map_err(|e| format!("interface {}: {e}", cfg.interface))?;
    // Wildcard-bound: we may move between addresses. With `bind_interface` the sockets are
    // bound to our interface below (and rebound when we move); otherwise ESP to the gateway
    // cannot loop into the TUN because the kill switch's `throw` route sends it to main.
    let socks = VpnSockets::open(ike_cfg.natt_port, None)?;
    let topts = TunOptions {
        multi_queue: false,
        mtu: Some(cfg.mtu),
        up: true,
    };
    let offloaded = if cfg.offload {
        match Tun::open_with_offload(&cfg.tun, &topts, TUN_F_CSUM | TUN_F_TSO4) {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::warn!(
                    "TUN {}: the kernel refused offloads ({e}); one packet at a time",
                    cfg.tun
                );
                None
            }
        }
    } else {
        None
    };
    let offload = offloaded.is_some();
    // UDP GRO on the NAT-T socket goes with the offloads: where the interface merges
    // (GRO), a burst of ESP in UDP comes in one receive, cut back into its datagrams.
    let gro = offload
        && netio::udp::set_gro(&socks.s4500, true)
            .map_err(|e| tracing::warn!("{e}: ESP in UDP taken one datagram at a time"))
            .is_ok();
    let tun = match offloaded {
        Some(t) => t,
        None => Tun::open_with(&cfg.tun, &topts).map_err(|e| format!("TUN {}: {e}", cfg.tun))?,
    };
    let tun_ifindex = tun.ifindex().map_err(|e| format!("TUN {}: {e}", cfg.tun))?;
    let mut events = nl
        .events_with_routes()
        .await
        .map_err(|e| format!("netlink events: {e}"))?;
    let io = Io {
        socks,
        tun,
        nl,
        tun_ifindex,
    };
    let now = Instant::now();
    let mut seed = [0u8; 32];
    rand::rngs::StdRng::from_entropy().fill_bytes(&mut seed);
    let gateway = cfg.gateway.0;
    let reconnect_cap = cfg.reconnect_cap();
    let mut st = State {
        cfg,
        eng: Engine::new(ike_cfg, gateway, reconnect_cap, seed, now),
        local_if: None,
        kill,
        tia: None,
        routes: Vec::new(),
        sealbuf: Vec::with_capacity(MAX_PACKET),
        warned_raw_esp: false,
        dp: {
            let mut dp = DataPath::new(offload);
            dp.udp_gro = gro;
            dp
        },
        gso: GsoBatch::new(),
        gso_to: None,
        events: sup.events,
        follow: sup.follow,
        pinned: None,
        bound_if: None,
    };
    st.pinned = st.cfg.local_address;
    // Until we know our interface, the preferred one.
    let first_if = st.cfg.interface.clone();
    st.bind_to(&io, &first_if);
    if let Some((ip, ifindex, name)) = st.best_address(&io.nl).await {
        st.eng.set_local(Some(ip));
        st.bind_to(&io, &name);
        st.local_if = Some((ifindex, name));
    }
    let mut commands = sup.commands;
    let result = st
        .event_loop(&io, &mut events, listener.as_ref(), commands.as_mut())
        .await;
    // Orderly shutdown: Delete towards the gateway, then our routes (the kill switch
    // goes in `with_kill_switch`). The supervisor gets one last `down` (from `run`).
    st.events = None;
    {
        if st.eng.close(Instant::now()) {
            st.flush(&io).await;
            let end = Instant::now() + Duration::from_millis(500);
            let mut buf = vec![0u8; MAX_PACKET];
            let mut buf2 = vec![0u8; MAX_PACKET];
            // Until the Delete is answered (the IKE SA then goes, `teardown`) or 500 ms.
            while Instant::now() < end && !st.eng.is_closed() {
                tokio::select! {
                    r = netio::udp::recv_with_meta(&io.socks.s4500, &mut buf) => if let Ok(m) = r { st.on_udp(&io, &mut buf, m, true).await },
                    r = netio::udp::recv_with_meta(&io.socks.s500, &mut buf2) => if let Ok(m) = r { st.on_udp(&io, &mut buf2, m, false).await },
                    _ = tokio::time::sleep_until(end.into()) => {}
                }
                st.flush(&io).await;
            }
        }
    }
    st.clear_routes(&io).await;
    result
}

async fn first_addresses(nl: &Netlink, ifindex: u32) -> Vec<Ipv4Addr> {
    nl.addresses(Some(ifindex))
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|a| a.addr)
        .filter(|a| !a.is_loopback() && !a.is_link_local())
        .collect()
}

impl State {
    async fn event_loop(
        &mut self,
        io: &Io,
        events: &mut netio::NetEvents,
        listener: Option<&UnixListener>,
        mut commands: Option<&mut Commands>,
    ) -> Result<&'static str, String> {
        let mut b500 = vec![0u8; MAX_PACKET];
        let mut b4500 = vec![0u8; MAX_PACKET];
        let mut btun = vec![0u8; netio::offload::VNET_HDR_LEN + MAX_PACKET];
        let mut braw = vec![0u8; MAX_PACKET];
        use tokio::signal::unix::{signal, SignalKind};
        let mut sigterm =
            signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM handler: {e}"))?;
        let mut sigint =
            signal(SignalKind::interrupt()).map_err(|e| format!("SIGINT handler: {e}"))?;
        // One timer, moved only when the deadline changes (not re-registered every wakeup).
        let mut armed = Instant::now() + Duration::from_secs(3600);
        let sleep = tokio::time::sleep_until(armed.into());
        tokio::pin!(sleep);
        loop {
            let now = Instant::now();
            let deadline = self.eng.poll_timeout().unwrap_or_else(|| {
                if armed > now {
                    armed
                } else {
                    now + Duration::from_secs(3600)
                }
            });
            if deadline != armed {
                sleep.as_mut().reset(deadline.into());
                armed = deadline;
            }
            tokio::select! {
                r = netio::udp::recv_with_meta(&io.socks.s4500, &mut b4500) => match r {
                    Ok(m) => {
                        self.on_udp_merged(io, &mut b4500, m).await;
                        // Drain what else is queued before going back to select!.
                        for _ in 0..BATCH {
                            let Ok(m) = netio::udp::try_recv_with_meta(&io.socks.s4500, &mut b4500) else {
                                break;
                            };
                            self.on_udp_merged(io, &mut b4500, m).await;
                        }
                    }
                    Err(e) => tracing::debug!("recv 4500: {e}"),
                },
                r = netio::udp::recv_with_meta(&io.socks.s500, &mut b500) => match r {
                    Ok(m) => self.on_udp(io, &mut b500, m, false).await,
                    Err(e) => tracing::debug!("recv 500: {e}"),
                },
                r = io.tun.recv(&mut btun) => match r {
                    Ok(n) => {
                        self.on_tun(io, btun.get(..n).unwrap_or_default()).await;
                        for _ in 0..BATCH {
                            let Ok(n) = io.tun.try_recv(&mut btun) else {
                                break;
                            };
                            self.on_tun(io, btun.get(..n).unwrap_or_default()).await;
                        }
                        // The burst's ESP leaves together (GSO, sendmmsg).
                        self.flush_esp(io).await;
                    }
                    Err(e) => tracing::debug!("recv tun: {e}"),
                },
                r = recv_raw(io.socks.raw.as_ref(), &mut braw) => match r {
                    Ok(n) => {
                        self.on_raw_esp(io, &mut braw, n).await;
                        for _ in 0..BATCH {
                            let Some(Ok((n, _))) = io.socks.raw.as_ref().map(|r| r.try_recv_from(&mut braw)) else {
                                break;
                            };
                            self.on_raw_esp(io, &mut braw, n).await;
                        }
                    }
                    Err(e) => tracing::debug!("recv raw ESP: {e}"),
                },
                ev = events.next() => match ev {
                    Some(ev) => self.on_net(io, ev).await,
                    None => return Err("netlink event stream ended".into()),
                },
                c = accept(listener) => {
                    if let Ok((s, _)) = c {
                        // Answered on its own task: a slow client cannot stall the tunnel.
                        tokio::spawn(crate::status::serve(s, self.status_json()));
                    }
                }
                c = next_command(commands.as_deref_mut()) => {
                    // A closed channel cannot happen (the reader sends a last `Stop`), but
                    // would mean the same.
                    let c = c.unwrap_or(crate::supervise::Command::Stop("stdin closed"));
                    if let Some(reason) = self.on_command(io, c).await {
                        return Ok(reason);
                    }
                }
                _ = &mut sleep => self.on_timer(),
                _ = sigint.recv() => return Ok("signal"),
                _ = sigterm.recv() => return Ok("signal"),
            }
            // What this wake-up opened enters the TUN (merged TCP segments with offload).
            if self.dp.flush_tun(&io.tun).await > 0 {
                self.eng.status_mut().rx_dropped += 1;
            }
            self.flush(io).await;
        }
    }

    fn on_timer(&mut self) {
        self.eng.handle_timeout(Instant::now());
    }

    /// One receive on the NAT-T socket: with UDP GRO several datagrams of one flow,
    /// each handled as if received alone.
    async fn on_udp_merged(&mut self, io: &Io, buf: &mut [u8], m: netio::RecvMeta) {
        self.dp.count_gro(&m);
        for (at, d) in m.datagrams() {
            let Some(b) = buf.get_mut(at..) else { return };
            self.on_udp(io, b, d, true).await;
        }
    }

    async fn on_udp(&mut self, io: &Io, buf: &mut [u8], m: netio::RecvMeta, natt: bool) {
        let now = Instant::now();
        let Some(data) = buf.get_mut(..m.len) else {
            return;
        };
        if m.truncated {
            self.eng.status_mut().rx_dropped += 1;
            return;
        }
        let from = SocketAddr::V4(m.src);
        let port = if natt {
            io.socks
                .s4500
                .local_addr()
                .map(|a| a.port())
                .unwrap_or(4500)
        } else {
            500
        };
        let to_ip = m
            .dst
            .or(self.eng.local_ip())
            .unwrap_or(Ipv4Addr::UNSPECIFIED);
        let to = SocketAddr::new(to_ip.into(), port);
        if !natt {
            self.eng.handle_ike(now, from, to, data);
            return;
        }
        if let Some(r) = self.eng.open_udp(now, from, to, data) {
            if let Some(inner) = data.get(r) {
                if let Err(e) = self.dp.write_tun(&io.tun, inner).await {
                    tracing::debug!("tun send: {e}");
                }
            }
        }
    }

    /// One TUN read: with offloads a super-packet is cut into MTU-sized segments first.
    /// Each packet is sealed and queued; `flush_esp` sends the burst.
    async fn on_tun(&mut self, io: &Io, buf: &[u8]) {
        let now = Instant::now();
        if self.dp.take_tun_read(buf).is_err() {
            self.eng.status_mut().tun_dropped += 1;
            return;
        }
        let segs = self.dp.lend_packets();
        for pkt in segs.iter() {
            self.seal_one(io, now, pkt).await;
        }
        self.dp.restore_packets(segs);
    }

    async fn seal_one(&mut self, io: &Io, now: Instant, pkt: &[u8]) {
        let Some(out) = self.eng.seal(now, pkt, &mut self.sealbuf) else {
            return;
        };
        // Tunnel mode: the outer header carries the inner DSCP, ECN Not-ECT (RFC 4301
        // 5.1.2.1, RFC 6040's compatibility mode; `netio::raw::outer_tos`).
        let tos = netio::raw::outer_tos(pkt);
        if out.udp {
            let to = (out.dst, out.src);
            if self.gso_to != Some(to) {
                self.flush_esp(io).await;
                self.gso_to = Some(to);
            }
            if !self.gso.push_with_tos(&[], &self.sealbuf, tos) {
                self.flush_esp(io).await;
                self.gso_to = Some(to);
                if !self.gso.push_with_tos(&[], &self.sealbuf, tos) {
                    self.eng.status_mut().tx_errors += 1;
                    return;
                }
            }
        } else if io.socks.raw.is_some() {
            self.dp.queue_tos(&self.sealbuf, *out.dst.ip(), tos);
            if self.dp.out_full() {
                self.flush_esp(io).await;
            }
        } else {
            if !self.warned_raw_esp {
                tracing::warn!(
                    "CHILD_SA without UDP encapsulation but no raw ESP socket: dropping"
                );
                self.warned_raw_esp = true;
            }
            self.eng.status_mut().tun_dropped += 1;
            return;
        }
        self.eng.esp_sent(now, pkt.len());
    }

    /// Sends the sealed ESP of a burst: ESP in UDP in one GSO send (one by one when the
    /// kernel refuses GSO), plain ESP in one `sendmmsg`.
    async fn flush_esp(&mut self, io: &Io) {
        if let Some((dst, src)) = self.gso_to.take() {
            if !self.gso.is_empty() {
                let out = self
                    .dp
                    .send_udp(&mut self.gso, &io.socks.s4500, dst, Some(src))
                    .await;
                if out.failed > 0 {
                    tracing::debug!("send ESP: {:?}", out.error);
                    self.eng.status_mut().tx_errors += out.failed as u64;
                }
            }
        }
        if let Some(raw) = &io.socks.raw {
            let mut failed = 0u64;
            self.dp
                .flush_out(raw, |dst, e| {
                    tracing::debug!("send ESP to {dst}: {e}");
                    failed += 1;
                })
                .await;
            self.eng.status_mut().tx_errors += failed;
        }
    }

    /// An ESP packet (IP protocol 50, outer IPv4 header included) from the raw socket.
    async fn on_raw_esp(&mut self, io: &Io, buf: &mut [u8], n: usize) {
        let now = Instant::now();
        let ihl = buf.first().map_or(0, |b| usize::from(b & 0x0f) * 4);
        let Some(esp) = buf.get_mut(ihl..n).filter(|_| ihl >= 20) else {
            self.eng.status_mut().rx_dropped += 1;
            return;
        };
        if let Some(r) = self.eng.open_esp(now, esp) {
            if let Some(inner) = esp.get(r) {
                if let Err(e) = self.dp.write_tun(&io.tun, inner).await {
                    tracing::debug!("tun send: {e}");
                }
            }
        }
    }

    /// Send what the session queued and apply what it says.
    async fn flush(&mut self, io: &Io) {
        loop {
            if let Some(t) = self.eng.poll_transmit() {
                let sock = if t.src.port() == 500 {
                    &io.socks.s500
                } else {
                    &io.socks.s4500
                };
                let (SocketAddr::V4(dst), SocketAddr::V4(src)) = (t.dst, t.src) else {
                    continue;
                };
                if let Err(e) = netio::udp::send_from(sock, &t.payload, dst, *src.ip()).await {
                    tracing::debug!("send IKE to {dst}: {e}");
                    let local = matches!(
                        e.raw_os_error(),
                        Some(libc::ENETUNREACH | libc::EHOSTUNREACH | libc::EADDRNOTAVAIL)
                    );
                    self.eng.ike_send_failed(Instant::now(), local);
                }
                continue;
            }
            match self.eng.poll_note(Instant::now()) {
                Some(n) => self.on_note(io, n).await,
                None => return,
            }
        }
    }

    async fn on_note(&mut self, io: &Io, n: Note) {
        match n {
            Note::Child(c) => {
                log_child_keys(self.cfg.esp_key_log.as_deref(), &c);
                self.configure(io, &c).await;
            }
            Note::Up {
                tia,
                local,
                natt,
                ike_spi,
                setup_ms,
            } => self.emit(&SupEvent::Up {
                tia,
                tun: self.cfg.tun.clone(),
                local,
                interface: self
                    .local_if
                    .as_ref()
                    .map_or_else(String::new, |(_, n)| n.clone()),
                gateway: *self.cfg.gateway.0.ip(),
                natt,
                ike_spi: format!("{ike_spi:016x}"),
                setup_ms,
            }),
            Note::Down { reason } => self.emit(&SupEvent::Down { reason }),
            Note::Mobike {
                ok,
                local,
                ms,
                reason,
            } => self.emit(&SupEvent::Mobike {
                ok,
                local,
                ms,
                reason,
            }),
            Note::Rekeyed { what, spi } => self.emit(&SupEvent::Rekeyed { what, spi }),
        }
    }

    /// Address on the TUN and routes for the remote traffic selectors in our table.
    async fn configure(&mut self, io: &Io, c: &ChildSaInfo) {
        let Some(tia) = c.tia else {
            return;
        };
        let mut want = Vec::new();
        for ts in &c.ts_remote {
            let (std::net::IpAddr::V4(a), std::net::IpAddr::V4(b)) = (ts.start, ts.end) else {
                continue;
            };
            for (net, len) in range_to_prefixes(a, b) {
                want.push(
                    Route::new(net, len)
                        .dev(io.tun_ifindex)
                        .table(self.cfg.table)
                        .src(tia),
                );
            }
        }
        if self.tia == Some(tia) && self.routes == want {
            return;
        }
        self.clear_routes(io).await;
        if let Some(old) = self.tia.take() {
            let _ = io.nl.del_address(io.tun_ifindex, old, 32).await;
        }
        if let Err(e) = io.nl.add_address(io.tun_ifindex, tia, 32).await {
            tracing::warn!("TIA {tia} on {}: {e}", self.cfg.tun);
        }
        self.tia = Some(tia);
        for r in &want {
            if let Err(e) = io.nl.replace_route(r).await {
                tracing::warn!("route {}/{}: {e}", r.dst, r.prefix);
            }
        }
        tracing::info!(
            "tunnel address {tia}, {} route(s) in table {}",
            want.len(),
            self.cfg.table
        );
        // Default kill switch: from now on, block what the tunnel carries (it stays
        // blocked while the tunnel is down, and after a kill -9).
        if self.cfg.kill_switch == crate::config::KillSwitchSetting::Auto && !want.is_empty() {
            let nets = want.iter().map(|r| (r.dst, r.prefix)).collect();
            self.kill.replace_block(&io.nl, nets).await;
        }
        self.routes = want;
    }

    async fn clear_routes(&mut self, io: &Io) {
        for r in std::mem::take(&mut self.routes) {
            let _ = io.nl.del_route(&r).await;
        }
    }

    fn status_json(&self) -> String {
        let mut s = self.eng.status();
        s.role = "vpn";
        if s.state.is_empty() {
            s.state = "starting";
        }
        s.interface = self
            .local_if
            .as_ref()
            .map_or_else(String::new, |(_, n)| n.clone());
        s.local_ip = self.eng.local_ip();
        s.bound_interface = self.bound_if.clone();
        s.supervised = self.events.is_some();
        s.auto_mobike = self.follow;
        s.kill_switch = crate::killswitch::show(&self.kill.block);
        s.offload = self.dp.offload;
        s.tun_super_packets = self.dp.super_packets;
        s.tun_segments = self.dp.segments;
        s.coalesced_segments = self.dp.coalesced();
        s.udp_gso_sends = self.dp.udp_gso_sends;
        s.udp_gso_datagrams = self.dp.udp_gso_datagrams;
        s.udp_gro = self.dp.udp_gro;
        s.udp_gro_receives = self.dp.udp_gro_receives;
        s.udp_gro_datagrams = self.dp.udp_gro_datagrams;
        s.to_json()
    }
}

async fn accept(
    l: Option<&UnixListener>,
) -> std::io::Result<(tokio::net::UnixStream, tokio::net::unix::SocketAddr)> {
    match l {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

async fn next_command(c: Option<&mut Commands>) -> Option<crate::supervise::Command> {
    match c {
        Some(c) => c.recv().await,
        None => std::future::pending().await,
    }
}

async fn recv_raw(r: Option<&RawIp>, buf: &mut [u8]) -> std::io::Result<usize> {
    match r {
        Some(r) => r.recv_from(buf).await.map(|(n, _)| n),
        None => std::future::pending().await,
    }
}
