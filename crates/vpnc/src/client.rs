//! The tokio shell: sockets, TUN, routes and netlink around the sans-IO `ikev2::Initiator`
//! and the `esp` SAs.
//!
//! One task owns everything. Each wakeup handles one input (a UDP datagram on port 500 or
//! 4500, a packet from the TUN, a netlink event, a status request, a timer), then drains the
//! Initiator's transmits and events, then re-arms the timer.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use esp::UdpInbound;
use ikev2::{ChildSaInfo, Event, Initiator};
use netio::netlink::Route;
use netio::{Netlink, RawIp, RawIpOptions, Tun, TunOptions, UdpOptions};
use rand::{RngCore, SeedableRng};
use tokio::net::{UdpSocket, UnixListener};

use crate::config::VpnConfig;
use crate::killswitch::KillSwitch;
use crate::sas::EspSas;
use crate::status::Status;
use crate::supervise::{Commands, Emitter, Event as SupEvent, Supervisor};

mod addresses;
mod prefixes;

pub use prefixes::range_to_prefixes;

const MAX_PACKET: usize = 65536;
/// Packets handled per wakeup beyond the first (TUN reads, ESP datagrams).
const BATCH: usize = 63;
/// Socket buffers: a burst from the TUN must not be dropped by our own socket.
const SOCK_BUF: usize = 4 << 20;

/// What the loop owns besides the protocol state.
struct Io {
    s500: UdpSocket,
    s4500: UdpSocket,
    /// ESP without UDP encapsulation (IP protocol 50), for CHILD_SAs negotiated without a NAT.
    raw: Option<RawIp>,
    tun: Tun,
    nl: Netlink,
    tun_ifindex: u32,
}

/// Protocol and bookkeeping state.
struct State {
    cfg: VpnConfig,
    ike_cfg: ikev2::Config,
    ike: Option<Initiator>,
    sas: EspSas,
    /// Our current IPv4 address and the interface (index, name) that holds it.
    local_ip: Option<Ipv4Addr>,
    local_if: Option<(u32, String)>,
    /// The kill switch as installed (its blocked networks follow the traffic selectors
    /// when `kill_switch` is not configured).
    kill: KillSwitch,
    tia: Option<Ipv4Addr>,
    routes: Vec<Route>,
    reconnect_at: Option<Instant>,
    backoff: Duration,
    attempt_started: Instant,
    move_started: Option<(Instant, u64, u64)>,
    rng: rand::rngs::StdRng,
    status: Status,
    sealbuf: Vec<u8>,
    warned_raw_esp: bool,
    /// Last ESP sent / received, and the last NAT rebinding probe (see `check_nat_path`).
    last_esp_tx: Instant,
    last_esp_rx: Instant,
    /// Last IKE datagram or authentic ESP packet from the gateway (dead-gateway detection).
    last_heard: Instant,
    /// The first ESP packet sent since the last one received (NAT path check).
    unanswered_since: Option<Instant>,
    last_probe: Option<Instant>,
    /// The supervisor's event stream (`--events`).
    events: Option<Emitter>,
    /// Follow address changes with MOBIKE on our own (`auto_mobike`).
    follow: bool,
    /// The only address we may use (`local_address`, then the last `mobike` command).
    pinned: Option<Ipv4Addr>,
    /// The interface the sockets are bound to (`bind_interface`).
    bound_if: Option<String>,
    /// `up` was sent for the current IKE SA.
    up_sent: bool,
    /// A `mobike` command waiting for the gateway's answer: (sent at, address).
    pending_mobike: Option<(Instant, Ipv4Addr)>,
    /// An IKE request could not leave the host (no route: an address change the
    /// routes have not followed yet): it is sent again at this time instead of at
    /// its retransmission deadline.
    resend_at: Option<Instant>,
    /// When a new route last made us send an outstanding IKE request again.
    route_resent: Option<Instant>,
}

/// How soon a request that could not leave the host is tried again (the default route
/// usually follows a new address within milliseconds).
const RESEND_UNREACHABLE: Duration = Duration::from_millis(20);

/// Behind a NAT, ESP flowing out with nothing coming back for this long means the NAT
/// mapping probably changed: tell the gateway our (new) public address.
const NAT_SILENCE: Duration = Duration::from_millis(1000);
/// At most one rebinding probe per this interval.
const NAT_PROBE_EVERY: Duration = Duration::from_secs(5);

/// How long the gateway may stay silent (no IKE, no ESP) before we call it dead, tear the
/// IKE SA down and reconnect: `dpd_interval` (the Initiator's liveness check goes out then)
/// plus the longer of `dpd_interval` and 2 s for its answer. So a dead gateway is noticed
/// at most 2 x dpd_interval (at least dpd_interval + 2 s) after we last heard from it.
pub fn dead_after(dpd_interval: Duration) -> Duration {
    dpd_interval + dpd_interval.max(Duration::from_secs(2))
}

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
    let bind = |port: u16| {
        let mut o = UdpOptions::new(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port));
        o.pktinfo = true;
        o.reuse_addr = true;
        let s = o.bind().map_err(|e| format!("UDP port {port}: {e}"))?;
        let r = socket2::SockRef::from(&s);
        let _ = r.set_recv_buffer_size(SOCK_BUF);
        let _ = r.set_send_buffer_size(SOCK_BUF);
        Ok::<_, String>(s)
    };
    let s500 = bind(500)?;
    let s4500 = bind(ike_cfg.natt_port)?;
    let tun = Tun::open_with(
        &cfg.tun,
        &TunOptions {
            multi_queue: false,
            mtu: Some(cfg.mtu),
            up: true,
        },
    )
    .map_err(|e| format!("TUN {}: {e}", cfg.tun))?;
    let tun_ifindex = tun.ifindex().map_err(|e| format!("TUN {}: {e}", cfg.tun))?;
    let mut events = nl
        .events_with_routes()
        .await
        .map_err(|e| format!("netlink events: {e}"))?;
    let raw = match RawIp::open_with(netio::raw::IPPROTO_ESP, &RawIpOptions::default()) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!("no raw ESP socket ({e}): only UDP-encapsulated ESP will work");
            None
        }
    };
    let io = Io {
        s500,
        s4500,
        raw,
        tun,
        nl,
        tun_ifindex,
    };
    let now = Instant::now();
    let mut st = State {
        cfg,
        ike_cfg,
        ike: None,
        sas: EspSas::new(rand::rngs::StdRng::from_entropy()),
        local_ip: None,
        local_if: None,
        kill,
        tia: None,
        routes: Vec::new(),
        reconnect_at: Some(now),
        backoff: Duration::from_secs(1),
        attempt_started: now,
        move_started: None,
        rng: rand::rngs::StdRng::from_entropy(),
        status: Status::default(),
        sealbuf: Vec::with_capacity(MAX_PACKET),
        warned_raw_esp: false,
        last_esp_tx: now,
        last_esp_rx: now,
        last_heard: now,
        unanswered_since: None,
        last_probe: None,
        events: sup.events,
        follow: sup.follow,
        pinned: None,
        bound_if: None,
        up_sent: false,
        pending_mobike: None,
        resend_at: None,
        route_resent: None,
    };
    st.pinned = st.cfg.local_address;
    // Until we know our interface, the preferred one.
    let first_if = st.cfg.interface.clone();
    st.bind_to(&io, &first_if);
    if let Some((ip, ifindex, name)) = st.best_address(&io.nl).await {
        st.local_ip = Some(ip);
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
    if let Some(ike) = st.ike.as_mut() {
        if ike.is_established() {
            ike.close(Instant::now());
            st.flush(&io).await;
            let end = Instant::now() + Duration::from_millis(500);
            let mut buf = vec![0u8; MAX_PACKET];
            let mut buf2 = vec![0u8; MAX_PACKET];
            // Until the Delete is answered (the IKE SA then goes, `teardown`) or 500 ms.
            while Instant::now() < end && st.ike.as_ref().is_some_and(|i| !i.is_closed()) {
                tokio::select! {
                    r = netio::udp::recv_with_meta(&io.s4500, &mut buf) => if let Ok(m) = r { st.on_udp(&io, &mut buf, m, true).await },
                    r = netio::udp::recv_with_meta(&io.s500, &mut buf2) => if let Ok(m) = r { st.on_udp(&io, &mut buf2, m, false).await },
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
        let mut btun = vec![0u8; MAX_PACKET];
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
            let deadline = self.deadline().unwrap_or_else(|| {
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
                r = netio::udp::recv_with_meta(&io.s4500, &mut b4500) => match r {
                    Ok(m) => {
                        self.on_udp(io, &mut b4500, m, true).await;
                        // Drain what else is queued before going back to select!.
                        for _ in 0..BATCH {
                            let Ok((len, SocketAddr::V4(src))) = io.s4500.try_recv_from(&mut b4500) else {
                                break;
                            };
                            let m = netio::RecvMeta { len, src, dst: None, local: None, ifindex: 0, truncated: len >= b4500.len() };
                            self.on_udp(io, &mut b4500, m, true).await;
                        }
                    }
                    Err(e) => tracing::debug!("recv 4500: {e}"),
                },
                r = netio::udp::recv_with_meta(&io.s500, &mut b500) => match r {
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
                    }
                    Err(e) => tracing::debug!("recv tun: {e}"),
                },
                r = recv_raw(io.raw.as_ref(), &mut braw) => match r {
                    Ok(n) => {
                        self.on_raw_esp(io, &mut braw, n).await;
                        for _ in 0..BATCH {
                            let Some(Ok((n, _))) = io.raw.as_ref().map(|r| r.try_recv_from(&mut braw)) else {
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
                _ = &mut sleep => self.on_timer(io),
                _ = sigint.recv() => return Ok("signal"),
                _ = sigterm.recv() => return Ok("signal"),
            }
            self.flush(io).await;
        }
    }

    /// The earliest of the Initiator's timer, the next reconnection, the NAT path check
    /// and the dead-gateway deadline: one timer, no polling tick.
    fn deadline(&self) -> Option<Instant> {
        [
            self.ike.as_ref().and_then(Initiator::poll_timeout),
            self.reconnect_at,
            self.resend_at,
            self.nat_check_at(),
            self.dead_at(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// When the gateway counts as dead if nothing arrives before (established IKE SA, DPD on).
    fn dead_at(&self) -> Option<Instant> {
        let iv = self.ike_cfg.dpd_interval?;
        self.ike
            .as_ref()
            .filter(|i| i.is_established())
            .map(|_| self.last_heard + dead_after(iv))
    }

    /// When to look at the NAT path: behind a NAT, ESP kept leaving after a first packet
    /// that got nothing back; due `NAT_SILENCE` after that packet (and at most once every
    /// `NAT_PROBE_EVERY`).
    fn nat_check_at(&self) -> Option<Instant> {
        if !self.status.behind_nat || !self.sas.has_out() {
            return None;
        }
        let first = self.unanswered_since.filter(|t| self.last_esp_tx > *t)?;
        let at = first + NAT_SILENCE;
        Some(self.last_probe.map_or(at, |p| at.max(p + NAT_PROBE_EVERY)))
    }

    fn on_timer(&mut self, io: &Io) {
        let now = Instant::now();
        if self.resend_at.is_some_and(|t| t <= now) {
            self.resend_at = None;
            if let Some(ike) = self.ike.as_mut().filter(|i| i.has_outstanding()) {
                tracing::debug!("IKE request could not leave: sending it again");
                ike.resend_outstanding(now);
            }
        }
        if let Some(ike) = self.ike.as_mut() {
            if ike.poll_timeout().is_some_and(|t| t <= now) {
                ike.handle_timeout(now);
            }
        }
        if self.dead_at().is_some_and(|t| t <= now) {
            let silent = now.duration_since(self.last_heard);
            tracing::warn!(
                "gateway silent for {:.1} s (DPD bound {:?}): declaring it dead, reconnecting",
                silent.as_secs_f64(),
                self.ike_cfg.dpd_interval.map(dead_after)
            );
            self.tunnel_lost("gateway dead".into());
            self.teardown();
            self.status.state = "reconnecting";
            self.status.reconnects += 1;
            self.status.dead_gateway += 1;
            self.backoff = Duration::from_secs(1);
            self.reconnect_at = Some(now);
        }
        if self.reconnect_at.is_some_and(|t| t <= now) {
            self.connect(io, now);
        }
        self.check_nat_path(now);
    }

    /// RFC 4555 leaves NAT mapping changes to the initiator (a MOBIKE responder such as
    /// strongSwan makes no implicit address updates). When we are behind a NAT and our ESP
    /// keeps leaving while nothing has come back for `NAT_SILENCE`, the mapping has
    /// probably changed: an UPDATE_SA_ADDRESSES from the same local address tells the
    /// gateway where we are now.
    fn check_nat_path(&mut self, now: Instant) {
        // Idle time does not count: only ESP that left and got nothing back, over a whole
        // NAT_SILENCE, while more kept leaving (a lone unanswered packet proves nothing).
        if self.nat_check_at().is_none_or(|t| t > now)
            || now.duration_since(self.last_esp_tx) >= NAT_SILENCE
        {
            return;
        }
        if let Some(ike) = self.ike.as_mut() {
            let local = ike.local();
            let st = ike.stats();
            if ike.update_addresses(now, local, None) {
                tracing::info!("no ESP back for {NAT_SILENCE:?} behind a NAT: refreshing our address with the gateway");
                self.last_probe = Some(now);
                self.status.nat_probes += 1;
                self.move_started = Some((now, st.tx, st.rx));
            }
        }
    }

    /// Start a fresh IKE SA from our current address.
    fn connect(&mut self, _io: &Io, now: Instant) {
        let Some(ip) = self.local_ip else {
            tracing::info!("no usable IPv4 address on {}; waiting", self.cfg.interface);
            self.reconnect_at = None;
            return;
        };
        let mut seed = [0u8; 32];
        self.rng.fill_bytes(&mut seed);
        let gw = self.cfg.gateway.0;
        tracing::info!("connecting to {gw} from {ip}");
        let mut ike = Initiator::new(
            self.ike_cfg.clone(),
            SocketAddr::new(ip.into(), 500),
            SocketAddr::V4(gw),
            seed,
            now,
        );
        if let Ok(d) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            ike.set_unix_time(d.as_secs());
        }
        self.ike = Some(ike);
        self.last_heard = now;
        self.unanswered_since = None;
        self.attempt_started = now;
        self.reconnect_at = None;
        self.status.state = "connecting";
        self.status.attempts += 1;
    }

    async fn on_udp(&mut self, io: &Io, buf: &mut [u8], m: netio::RecvMeta, natt: bool) {
        let now = Instant::now();
        let Some(data) = buf.get_mut(..m.len) else {
            return;
        };
        if m.truncated {
            self.status.rx_dropped += 1;
            return;
        }
        let from = SocketAddr::V4(m.src);
        let port = if natt {
            io.s4500.local_addr().map(|a| a.port()).unwrap_or(4500)
        } else {
            500
        };
        let to_ip = m.dst.or(self.local_ip).unwrap_or(Ipv4Addr::UNSPECIFIED);
        let to = SocketAddr::new(to_ip.into(), port);
        if !natt {
            self.ike_datagram(now, from, to, data);
            return;
        }
        match self.sas.sad.open_udp(now, data) {
            Ok(UdpInbound::Keepalive) => {}
            Ok(UdpInbound::Ike(_)) => self.ike_datagram(now, from, to, data),
            Ok(UdpInbound::Esp(o)) => {
                if o.is_dummy() {
                    return;
                }
                if let Some(inner) = data.get(o.payload) {
                    self.esp_heard(now);
                    self.status.esp_rx_packets += 1;
                    self.status.esp_rx_bytes += inner.len() as u64;
                    if let Err(e) = io.tun.send(inner).await {
                        tracing::debug!("tun send: {e}");
                    }
                }
            }
            Err(e) => tracing::trace!("ESP drop: {e}"),
        }
    }

    /// An IKE datagram for the Initiator; one it accepts proves the gateway alive.
    fn ike_datagram(&mut self, now: Instant, from: SocketAddr, to: SocketAddr, data: &[u8]) {
        if let Some(ike) = self.ike.as_mut() {
            let before = accepted(&ike.stats());
            ike.handle_datagram(now, from, to, data);
            if accepted(&ike.stats()) > before {
                self.last_heard = now;
            }
        }
    }

    /// Authentic ESP from the gateway: the path works and the gateway is alive.
    fn esp_heard(&mut self, now: Instant) {
        self.last_esp_rx = now;
        self.last_heard = now;
        self.unanswered_since = None;
    }

    async fn on_tun(&mut self, io: &Io, pkt: &[u8]) {
        let now = Instant::now();
        if pkt.first().map(|b| b >> 4) != Some(4) {
            self.status.tun_dropped += 1;
            return;
        }
        let udp_encap = self.sas.udp_encap();
        let (Some(out), Some(ike)) = (self.sas.out_mut(), self.ike.as_ref()) else {
            self.status.tun_dropped += 1;
            return;
        };
        if let Err(e) = out.seal(now, esp::NEXT_HEADER_IPV4, pkt, &mut self.sealbuf) {
            tracing::debug!("seal: {e}");
            self.status.tun_dropped += 1;
            return;
        }
        let (SocketAddr::V4(dst), SocketAddr::V4(src)) = (ike.remote(), ike.local()) else {
            return;
        };
        let sent = if udp_encap {
            let dst = SocketAddrV4::new(*dst.ip(), self.natt_port());
            netio::udp::send_from(&io.s4500, &self.sealbuf, dst, *src.ip()).await
        } else if let Some(raw) = &io.raw {
            raw.send_to(&self.sealbuf, *dst.ip()).await
        } else {
            if !self.warned_raw_esp {
                tracing::warn!(
                    "CHILD_SA without UDP encapsulation but no raw ESP socket: dropping"
                );
                self.warned_raw_esp = true;
            }
            self.status.tun_dropped += 1;
            return;
        };
        match sent {
            Ok(_) => {
                self.last_esp_tx = now;
                self.unanswered_since.get_or_insert(now);
                self.status.esp_tx_packets += 1;
                self.status.esp_tx_bytes += pkt.len() as u64;
                // A TCP sender whose ACKs are lost backs off exponentially, so check
                // on the packets themselves, not only on the timer.
                self.check_nat_path(now);
            }
            Err(e) => {
                self.status.tx_errors += 1;
                tracing::debug!("send ESP: {e}");
            }
        }
    }

    /// An ESP packet (IP protocol 50, outer IPv4 header included) from the raw socket.
    async fn on_raw_esp(&mut self, io: &Io, buf: &mut [u8], n: usize) {
        let now = Instant::now();
        let ihl = buf.first().map_or(0, |b| usize::from(b & 0x0f) * 4);
        let Some(esp) = buf.get_mut(ihl..n).filter(|_| ihl >= 20) else {
            self.status.rx_dropped += 1;
            return;
        };
        match self.sas.sad.open(now, esp) {
            Ok(o) if !o.is_dummy() => {
                if let Some(inner) = esp.get(o.payload) {
                    self.esp_heard(now);
                    self.status.esp_rx_packets += 1;
                    self.status.esp_rx_bytes += inner.len() as u64;
                    if let Err(e) = io.tun.send(inner).await {
                        tracing::debug!("tun send: {e}");
                    }
                }
            }
            Ok(_) => {}
            Err(e) => tracing::trace!("raw ESP drop: {e}"),
        }
    }

    fn natt_port(&self) -> u16 {
        self.ike_cfg.natt_port
    }

    /// Forget the IKE SA and every ESP SA.
    fn teardown(&mut self) {
        self.ike = None;
        self.sas.clear();
    }

    /// Send what the Initiator queued and apply its events.
    async fn flush(&mut self, io: &Io) {
        loop {
            let Some(ike) = self.ike.as_mut() else {
                return;
            };
            if let Some(t) = ike.poll_transmit() {
                let sock = if t.src.port() == 500 {
                    &io.s500
                } else {
                    &io.s4500
                };
                let (SocketAddr::V4(dst), SocketAddr::V4(src)) = (t.dst, t.src) else {
                    continue;
                };
                if let Err(e) = netio::udp::send_from(sock, &t.payload, dst, *src.ip()).await {
                    self.status.tx_errors += 1;
                    tracing::debug!("send IKE to {dst}: {e}");
                    let local = matches!(
                        e.raw_os_error(),
                        Some(libc::ENETUNREACH | libc::EHOSTUNREACH | libc::EADDRNOTAVAIL)
                    );
                    if local && self.resend_at.is_none() {
                        self.resend_at = Some(Instant::now() + RESEND_UNREACHABLE);
                    }
                }
                continue;
            }
            match ike.poll_event() {
                Some(ev) => self.on_event(io, ev).await,
                None => return,
            }
        }
    }

    async fn on_event(&mut self, io: &Io, ev: Event) {
        let now = Instant::now();
        tracing::debug!(?ev, "IKE event");
        match ev {
            Event::IkeSaUp {
                spi_i,
                local,
                remote,
                local_nat,
                ..
            } => {
                let ms = now.duration_since(self.attempt_started).as_secs_f64() * 1e3;
                tracing::info!("IKE SA {spi_i:016x} up {local} -> {remote} in {ms:.1} ms (behind NAT: {local_nat})");
                self.status.state = "established";
                self.status.ike_setup_ms = Some(ms);
                self.status.behind_nat = local_nat;
                self.backoff = Duration::from_secs(1);
            }
            Event::ChildSaUp(c) => {
                self.install(now, &c, true);
                self.configure(io, &c).await;
                self.status.child_setup_ms =
                    Some(now.duration_since(self.attempt_started).as_secs_f64() * 1e3);
                self.announce_up();
            }
            Event::ChildSaRekeyed { old_spi_in, new } => {
                tracing::info!("CHILD_SA {old_spi_in:08x} rekeyed to {:08x}", new.spi_in);
                self.status.child_rekeys += 1;
                self.install(now, &new, true);
                self.configure(io, &new).await;
                self.emit(&SupEvent::Rekeyed {
                    what: "child",
                    spi: format!("{:08x}", new.spi_in),
                });
            }
            Event::ChildSaDown { spi_in, spi_out } => {
                tracing::info!("CHILD_SA {spi_in:08x}/{spi_out:08x} deleted");
                if self.sas.remove(spi_in, spi_out) {
                    // Fall back to any remaining CHILD_SA (there is normally none).
                    if let Some(c) = self
                        .ike
                        .as_ref()
                        .and_then(|i| i.child_sas().into_iter().next())
                    {
                        self.install(now, &c, false);
                    }
                }
            }
            Event::IkeSaRekeyed { spi_i, .. } => {
                tracing::info!("IKE SA rekeyed to {spi_i:016x}");
                self.status.ike_rekeys += 1;
                self.emit(&SupEvent::Rekeyed {
                    what: "ike",
                    spi: format!("{spi_i:016x}"),
                });
            }
            Event::AddressesUpdated {
                local,
                remote,
                udp_encap,
            } => {
                self.sas.set_udp_encap(udp_encap);
                self.status.mobike_moves += 1;
                if let Some((t0, tx, rx)) = self.move_started.take() {
                    let st = self.ike.as_ref().map(Initiator::stats).unwrap_or_default();
                    self.status.last_move_ms = Some(now.duration_since(t0).as_secs_f64() * 1e3);
                    self.status.last_move_ike_tx = st.tx.saturating_sub(tx);
                    self.status.last_move_ike_rx = st.rx.saturating_sub(rx);
                }
                tracing::info!("MOBIKE: now {local} -> {remote} (UDP encap {udp_encap})");
                self.mobike_done(now, local);
            }
            Event::ChildSaFailed(e) => {
                tracing::warn!("CHILD_SA failed: {e}");
                // An IKE SA without any CHILD_SA carries nothing: delete it (the gateway
                // frees it and its lease now) and start over after the backoff.
                if let Some(ike) = self.ike.as_mut() {
                    if ike.child_sas().is_empty() && ike.is_established() {
                        ike.close(now);
                    }
                }
            }
            Event::IkeSaDown { spi_i, error, .. } => {
                let why = error.map_or_else(|| "deleted".to_string(), |e| e.to_string());
                tracing::warn!("IKE SA {spi_i:016x} down: {why}");
                self.tunnel_lost(why);
                self.teardown();
                self.status.state = "reconnecting";
                self.status.reconnects += 1;
                self.reconnect_at = Some(now + self.backoff);
                self.backoff = (self.backoff * 2).min(self.cfg.reconnect_cap());
            }
        }
    }

    /// Install both directions of a CHILD_SA (see `EspSas::install`).
    fn install(&mut self, now: Instant, c: &ChildSaInfo, make_current: bool) {
        if let Some(path) = &self.cfg.esp_key_log {
            if let Err(e) = append_key_log(path, c) {
                tracing::warn!("esp_key_log {}: {e}", path.display());
            }
        }
        match self.sas.install(now, c, make_current) {
            Ok(()) => {
                if let Some(spi) = self.sas.out_spi() {
                    self.status.spi_out = spi;
                }
                self.status.spi_in = self.sas.out_child();
            }
            Err(e) => tracing::warn!("{e}"),
        }
    }

    /// Address on the TUN and routes for the remote traffic selectors in our table.
    async fn configure(&mut self, io: &Io, c: &ChildSaInfo) {
        let Some(tia) = c.tia else {
            tracing::warn!("no INTERNAL_IP4_ADDRESS from the gateway");
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
        self.status.tia = Some(tia);
        self.status.dns = c.dns.clone();
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
        let mut s = self.status.clone();
        s.role = "vpn";
        if s.state.is_empty() {
            s.state = "starting";
        }
        s.interface = self
            .local_if
            .as_ref()
            .map_or_else(String::new, |(_, n)| n.clone());
        s.local_ip = self.local_ip;
        s.bound_interface = self.bound_if.clone();
        s.supervised = self.events.is_some();
        s.auto_mobike = self.follow;
        s.kill_switch = crate::killswitch::show(&self.kill.block);
        if let Some(ike) = &self.ike {
            let (i, r) = ike.spis();
            s.ike_spi_i = format!("{i:016x}");
            s.ike_spi_r = format!("{r:016x}");
            s.local = Some(ike.local().to_string());
            s.remote = Some(ike.remote().to_string());
            s.ike_stats = format!("{:?}", ike.stats());
            s.child_sas = ike.child_sas().len();
        }
        s.esp_drops = self.sas.sad.drops().total();
        s.inbound_sas = self.sas.sad.len();
        s.udp_encap = self.sas.udp_encap();
        s.to_json()
    }
}

/// IKE datagrams the Initiator did not drop.
fn accepted(s: &ikev2::Stats) -> u64 {
    s.rx.saturating_sub(
        s.dropped_malformed
            + s.dropped_integrity
            + s.dropped_unknown_spi
            + s.dropped_unexpected
            + s.dropped_esp_on_ike_port,
    )
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

/// Appends the CHILD_SA's `esp_sa` lines to the key log (`esp_key_log`), mode 0600.
fn append_key_log(path: &std::path::Path, c: &ChildSaInfo) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let Some(lines) = crate::sas::esp_sa_lines(c) else {
        return Err(std::io::Error::other(
            "no Wireshark name for this ESP suite",
        ));
    };
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)?;
    writeln!(f, "{}\n{}", lines[0], lines[1])
}
