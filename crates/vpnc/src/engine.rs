//! The VPN session without I/O: one IKE SA (`ikev2::Initiator`), its ESP SAs, and the
//! decisions around them (reconnecting with backoff, the dead-gateway bound, the NAT
//! path check, MOBIKE moves and their answers, resending a request that could not
//! leave), driven with `now`.
//!
//! Two shells drive it: the standalone client (`client`, sockets and a TUN of its own)
//! and the mobile node (`mipsec mn`), which runs it in its own process and stacks it
//! between the i-MIP and x-MIP layers without any kernel device in between. A shell
//! feeds datagrams (`handle_ike`, `open_udp`, `open_esp`), seals with `seal`, sends what
//! `poll_transmit` gives, applies what `poll_note` says, and calls `handle_timeout` at
//! `poll_timeout`.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::ops::Range;
use std::time::{Duration, Instant};

use esp::UdpInbound;
pub use ikev2::Transmit;
use ikev2::{ChildSaInfo, Event, Initiator};
use rand::{RngCore, SeedableRng};

use crate::sas::EspSas;
use crate::status::Status;

/// How soon a request that could not leave the host is tried again (the default route
/// usually follows a new address within milliseconds).
const RESEND_UNREACHABLE: Duration = Duration::from_millis(20);
/// At most one resend for new routes per this interval (a burst of routes is one).
const ROUTE_RESEND_GAP: Duration = Duration::from_millis(20);

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

/// What the shell has to act on.
#[derive(Debug, Clone, PartialEq)]
pub enum Note {
    /// A CHILD_SA was installed (first, rekeyed, or a fallback): its keys for the key
    /// log; the standalone client puts the TIA on its TUN and routes the selectors.
    Child(Box<ChildSaInfo>),
    /// The first CHILD_SA of this IKE SA is up.
    Up {
        tia: Ipv4Addr,
        local: Ipv4Addr,
        natt: bool,
        ike_spi: u64,
        setup_ms: f64,
    },
    /// The tunnel is gone (failed, deleted, dead gateway, starting over).
    Down { reason: String },
    /// The answer to a `mobike` command.
    Mobike {
        ok: bool,
        local: Ipv4Addr,
        ms: Option<f64>,
        reason: Option<String>,
    },
    /// A rekey: `what` is "child" or "ike".
    Rekeyed { what: &'static str, spi: String },
}

/// Where a sealed packet goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EspOut {
    /// ESP in UDP (RFC 3948) to `dst` (port 4500 or the configured NAT-T port); otherwise
    /// IP protocol 50 to `dst`'s address.
    pub udp: bool,
    pub src: Ipv4Addr,
    pub dst: SocketAddrV4,
}

/// One VPN session towards one gateway.
pub struct Engine {
    ike_cfg: ikev2::Config,
    gateway: SocketAddrV4,
    reconnect_cap: Duration,
    ike: Option<Initiator>,
    sas: EspSas,
    local_ip: Option<Ipv4Addr>,
    tia: Option<Ipv4Addr>,
    reconnect_at: Option<Instant>,
    backoff: Duration,
    attempt_started: Instant,
    move_started: Option<(Instant, u64, u64)>,
    rng: rand::rngs::StdRng,
    status: Status,
    /// Last ESP sent / received, and the last NAT rebinding probe (see `check_nat_path`).
    last_esp_tx: Instant,
    last_esp_rx: Instant,
    /// Last IKE datagram or authentic ESP packet from the gateway (dead-gateway detection).
    last_heard: Instant,
    /// The first ESP packet sent since the last one received (NAT path check).
    unanswered_since: Option<Instant>,
    last_probe: Option<Instant>,
    /// A `mobike` command waiting for the gateway's answer: (sent at, address).
    pending_mobike: Option<(Instant, Ipv4Addr)>,
    /// `Up` was noted for the current IKE SA.
    up_sent: bool,
    /// An IKE request could not leave the host (no route: an address change the routes
    /// have not followed yet): it is sent again at this time instead of at its
    /// retransmission deadline.
    resend_at: Option<Instant>,
    /// When a new route last made us send an outstanding IKE request again.
    route_resent: Option<Instant>,
    notes: VecDeque<Note>,
}

impl Engine {
    /// A session that connects as soon as it has a local address (`set_local`) and the
    /// shell calls `handle_timeout`.
    pub fn new(
        ike_cfg: ikev2::Config,
        gateway: SocketAddrV4,
        reconnect_cap: Duration,
        seed: [u8; 32],
        now: Instant,
    ) -> Engine {
        let mut rng = rand::rngs::StdRng::from_seed(seed);
        let mut sas_seed = [0u8; 32];
        rng.fill_bytes(&mut sas_seed);
        Engine {
            ike_cfg,
            gateway,
            reconnect_cap,
            ike: None,
            sas: EspSas::new(rand::rngs::StdRng::from_seed(sas_seed)),
            local_ip: None,
            tia: None,
            reconnect_at: Some(now),
            backoff: Duration::from_secs(1),
            attempt_started: now,
            move_started: None,
            rng,
            status: Status::default(),
            last_esp_tx: now,
            last_esp_rx: now,
            last_heard: now,
            unanswered_since: None,
            last_probe: None,
            pending_mobike: None,
            up_sent: false,
            resend_at: None,
            route_resent: None,
            notes: VecDeque::new(),
        }
    }

    pub fn local_ip(&self) -> Option<Ipv4Addr> {
        self.local_ip
    }

    /// Our address as it is now (`None`: gone). It does not move the IKE SA: see
    /// `move_to`.
    pub fn set_local(&mut self, ip: Option<Ipv4Addr>) {
        self.local_ip = ip;
    }

    pub fn ike(&self) -> Option<&Initiator> {
        self.ike.as_ref()
    }

    pub fn is_established(&self) -> bool {
        self.ike.as_ref().is_some_and(Initiator::is_established)
    }

    /// The IKE SA's local address is `ip` already.
    pub fn ike_uses(&self, ip: Ipv4Addr) -> bool {
        self.ike
            .as_ref()
            .is_some_and(|i| i.local().ip() == std::net::IpAddr::V4(ip))
    }

    pub fn tia(&self) -> Option<Ipv4Addr> {
        self.tia
    }

    pub fn gateway(&self) -> SocketAddrV4 {
        self.gateway
    }

    pub fn natt_port(&self) -> u16 {
        self.ike_cfg.natt_port
    }

    pub fn udp_encap(&self) -> bool {
        self.sas.udp_encap()
    }

    /// Counters and state for a status reply (the shell adds what it owns).
    pub fn status(&self) -> Status {
        let mut s = self.status.clone();
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
        s
    }

    /// Counts a packet the shell dropped before or after us (`tun_dropped`,
    /// `rx_dropped`, `tx_errors`).
    pub fn status_mut(&mut self) -> &mut Status {
        &mut self.status
    }

    /// The earliest of the Initiator's timer, the next reconnection, a resend, the NAT
    /// path check and the dead-gateway deadline: one timer, no polling tick.
    pub fn poll_timeout(&self) -> Option<Instant> {
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

    pub fn handle_timeout(&mut self, now: Instant) {
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
            self.connect(now);
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
    fn connect(&mut self, now: Instant) {
        let Some(ip) = self.local_ip else {
            tracing::info!("no usable IPv4 address; waiting");
            self.reconnect_at = None;
            return;
        };
        let mut seed = [0u8; 32];
        self.rng.fill_bytes(&mut seed);
        let gw = self.gateway;
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

    /// Connect now if not connected or connecting (an address has come).
    pub fn connect_if_idle(&mut self, now: Instant) {
        if self.ike.is_none() {
            self.reconnect_at = Some(self.reconnect_at.map_or(now, |t| t.min(now)));
        }
    }

    /// An IKE datagram (UDP 500, or 4500 after the non-ESP marker is stripped by the
    /// Initiator); one it accepts proves the gateway alive.
    pub fn handle_ike(&mut self, now: Instant, from: SocketAddr, to: SocketAddr, data: &[u8]) {
        if let Some(ike) = self.ike.as_mut() {
            let before = accepted(&ike.stats());
            ike.handle_datagram(now, from, to, data);
            if accepted(&ike.stats()) > before {
                self.last_heard = now;
            }
        }
    }

    /// A datagram on the NAT-T port: IKE (handled here), a keepalive, or ESP in UDP,
    /// opened in place. Returns where the inner packet lies in `data`.
    pub fn open_udp(
        &mut self,
        now: Instant,
        from: SocketAddr,
        to: SocketAddr,
        data: &mut [u8],
    ) -> Option<Range<usize>> {
        match self.sas.sad.open_udp(now, data) {
            Ok(UdpInbound::Keepalive) => None,
            Ok(UdpInbound::Ike(_)) => {
                self.handle_ike(now, from, to, data);
                None
            }
            Ok(UdpInbound::Esp(o)) => {
                if o.is_dummy() {
                    return None;
                }
                self.opened(now, o.payload)
            }
            Err(e) => {
                tracing::trace!("ESP drop: {e}");
                None
            }
        }
    }

    /// An ESP packet (IP protocol 50, after the outer IPv4 header), opened in place.
    pub fn open_esp(&mut self, now: Instant, esp: &mut [u8]) -> Option<Range<usize>> {
        match self.sas.sad.open(now, esp) {
            Ok(o) if !o.is_dummy() => self.opened(now, o.payload),
            Ok(_) => None,
            Err(e) => {
                tracing::trace!("raw ESP drop: {e}");
                None
            }
        }
    }

    fn opened(&mut self, now: Instant, payload: Range<usize>) -> Option<Range<usize>> {
        // Authentic ESP from the gateway: the path works and the gateway is alive.
        self.last_esp_rx = now;
        self.last_heard = now;
        self.unanswered_since = None;
        self.status.esp_rx_packets += 1;
        self.status.esp_rx_bytes += payload.len() as u64;
        Some(payload)
    }

    /// Seals an IPv4 packet into `out` (the ESP packet, without any outer header) and
    /// says where it goes; `None` (counted in `tun_dropped`) without an outbound SA.
    pub fn seal(&mut self, now: Instant, pkt: &[u8], out: &mut Vec<u8>) -> Option<EspOut> {
        if pkt.first().map(|b| b >> 4) != Some(4) {
            self.status.tun_dropped += 1;
            return None;
        }
        let udp = self.sas.udp_encap();
        let natt_port = self.natt_port();
        let (Some(sa), Some(ike)) = (self.sas.out_mut(), self.ike.as_ref()) else {
            self.status.tun_dropped += 1;
            return None;
        };
        let (SocketAddr::V4(dst), SocketAddr::V4(src)) = (ike.remote(), ike.local()) else {
            self.status.tun_dropped += 1;
            return None;
        };
        if let Err(e) = sa.seal(now, esp::NEXT_HEADER_IPV4, pkt, out) {
            tracing::debug!("seal: {e}");
            self.status.tun_dropped += 1;
            return None;
        }
        let dst = if udp {
            SocketAddrV4::new(*dst.ip(), natt_port)
        } else {
            dst
        };
        Some(EspOut {
            udp,
            src: *src.ip(),
            dst,
        })
    }

    /// A sealed packet of `len` inner octets has left.
    pub fn esp_sent(&mut self, now: Instant, len: usize) {
        self.last_esp_tx = now;
        self.unanswered_since.get_or_insert(now);
        self.status.esp_tx_packets += 1;
        self.status.esp_tx_bytes += len as u64;
        // A TCP sender whose ACKs are lost backs off exponentially, so check on the
        // packets themselves, not only on the timer.
        self.check_nat_path(now);
    }

    /// An IKE datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.ike.as_mut()?.poll_transmit()
    }

    /// An IKE datagram could not be sent; `unreachable`: the host has no route for it
    /// yet (it goes again shortly, not counted as a retransmission).
    pub fn ike_send_failed(&mut self, now: Instant, unreachable: bool) {
        self.status.tx_errors += 1;
        if unreachable && self.resend_at.is_none() {
            self.resend_at = Some(now + RESEND_UNREACHABLE);
        }
    }

    /// What the shell must act on next. Call after `poll_transmit` gave nothing: applying
    /// the Initiator's events may queue more transmits.
    pub fn poll_note(&mut self, now: Instant) -> Option<Note> {
        loop {
            if let Some(n) = self.notes.pop_front() {
                return Some(n);
            }
            let ev = self.ike.as_mut()?.poll_event()?;
            self.on_event(now, ev);
        }
    }

    fn on_event(&mut self, now: Instant, ev: Event) {
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
                self.status.child_setup_ms =
                    Some(now.duration_since(self.attempt_started).as_secs_f64() * 1e3);
                self.announce_up();
            }
            Event::ChildSaRekeyed { old_spi_in, new } => {
                tracing::info!("CHILD_SA {old_spi_in:08x} rekeyed to {:08x}", new.spi_in);
                self.status.child_rekeys += 1;
                let spi = format!("{:08x}", new.spi_in);
                self.install(now, &new, true);
                self.notes.push_back(Note::Rekeyed { what: "child", spi });
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
                self.notes.push_back(Note::Rekeyed {
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
                if let Some((t0, want)) = self.pending_mobike.take() {
                    let ok = local.ip() == std::net::IpAddr::V4(want);
                    self.notes.push_back(Note::Mobike {
                        ok,
                        local: want,
                        ms: Some(now.duration_since(t0).as_secs_f64() * 1e3),
                        reason: (!ok).then(|| format!("moved to {local} instead")),
                    });
                }
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
                self.backoff = (self.backoff * 2).min(self.reconnect_cap);
            }
        }
    }

    /// Install both directions of a CHILD_SA (see `EspSas::install`).
    fn install(&mut self, now: Instant, c: &ChildSaInfo, make_current: bool) {
        match self.sas.install(now, c, make_current) {
            Ok(()) => {
                if let Some(spi) = self.sas.out_spi() {
                    self.status.spi_out = spi;
                }
                self.status.spi_in = self.sas.out_child();
            }
            Err(e) => tracing::warn!("{e}"),
        }
        if let Some(tia) = c.tia {
            self.tia = Some(tia);
            self.status.tia = Some(tia);
            self.status.dns = c.dns.clone();
        } else if make_current {
            tracing::warn!("no INTERNAL_IP4_ADDRESS from the gateway");
        }
        self.notes.push_back(Note::Child(Box::new(c.clone())));
    }

    /// The first CHILD_SA of this IKE SA is installed: say so once.
    fn announce_up(&mut self) {
        if self.up_sent {
            return;
        }
        let (Some(tia), Some(ike), Some(local)) = (self.tia, self.ike.as_ref(), self.local_ip)
        else {
            return;
        };
        let (spi_i, _) = ike.spis();
        self.notes.push_back(Note::Up {
            tia,
            local,
            natt: self.sas.udp_encap(),
            ike_spi: spi_i,
            setup_ms: self.status.child_setup_ms.unwrap_or_default(),
        });
        self.up_sent = true;
    }

    /// The IKE SA is gone or going (failed, deleted, dead gateway, starting over): a
    /// pending `mobike` failed, and the tunnel is down.
    fn tunnel_lost(&mut self, reason: String) {
        if let Some((_, local)) = self.pending_mobike.take() {
            self.notes.push_back(Note::Mobike {
                ok: false,
                local,
                ms: None,
                reason: Some(reason.clone()),
            });
        }
        self.up_sent = false;
        self.notes.push_back(Note::Down { reason });
    }

    /// Forget the IKE SA and every ESP SA.
    fn teardown(&mut self) {
        self.ike = None;
        self.tia = None;
        self.sas.clear();
    }

    /// Our address is now `new`: MOBIKE when the IKE SA is up, else start over from it.
    /// Returns true when an UPDATE_SA_ADDRESSES went out.
    pub fn move_to(&mut self, now: Instant, new: Ipv4Addr) -> bool {
        self.local_ip = Some(new);
        if self.is_established() {
            if let Some(ike) = self.ike.as_mut() {
                let port = ike.local().port();
                let st = ike.stats();
                if ike.update_addresses(now, SocketAddr::new(new.into(), port), None) {
                    tracing::info!("MOBIKE: moving to {new}");
                    self.move_started = Some((now, st.tx, st.rx));
                    return true;
                }
            }
        }
        tracing::info!("address now {new}: reconnecting from it");
        if self.ike.is_some() {
            self.tunnel_lost(format!("reconnecting from {new}"));
        }
        self.teardown();
        self.connect(now);
        false
    }

    /// A `mobike <new>` command: UPDATE_SA_ADDRESSES from `new` now; the answer (a
    /// `Note::Mobike`) comes with the gateway's, or at once when no update can be sent.
    pub fn mobike(&mut self, now: Instant, new: Ipv4Addr) {
        if let Some((_, old)) = self.pending_mobike.take() {
            self.notes.push_back(Note::Mobike {
                ok: false,
                local: old,
                ms: None,
                reason: Some(format!("superseded by mobike {new}")),
            });
        }
        if self.move_to(now, new) {
            self.pending_mobike = Some((now, new));
        } else {
            self.refuse_mobike(
                new,
                "no IKE SA to move (MOBIKE not negotiated or not up): connecting from it".into(),
            );
        }
    }

    /// A `mobike` command that cannot be carried out.
    pub fn refuse_mobike(&mut self, new: Ipv4Addr, reason: String) {
        tracing::warn!("mobike {new}: {reason}");
        self.notes.push_back(Note::Mobike {
            ok: false,
            local: new,
            ms: None,
            reason: Some(reason),
        });
    }

    /// A route to `dst`/`prefix` appeared. A request sent just before a route towards the
    /// gateway (a MOBIKE update the moment the new address came, before the DHCP client
    /// added the default route) may have left without an error and been lost: a socket
    /// bound to its interface with no route makes the kernel take the gateway for on-link
    /// and ARP for it in vain. The outstanding request goes again now instead of at its
    /// retransmission (500 ms), without counting a retry. Routes that do not cover the
    /// gateway (the new address's own subnet and local routes, which come first) change
    /// nothing and do not use up the once-per-20-ms allowance: the default route that
    /// follows them within milliseconds must not be skipped.
    pub fn route_added(&mut self, now: Instant, dst: Ipv4Addr, prefix: u8) {
        let mask = u32::MAX
            .checked_shl(32 - u32::from(prefix.min(32)))
            .unwrap_or(0);
        if u32::from(*self.gateway.ip()) & mask != u32::from(dst) & mask {
            return;
        }
        if self
            .route_resent
            .is_some_and(|t| now.duration_since(t) < ROUTE_RESEND_GAP)
        {
            return;
        }
        if let Some(ike) = self.ike.as_mut().filter(|i| i.has_outstanding()) {
            tracing::debug!(
                "a route appeared while an IKE request was outstanding: sending it again"
            );
            ike.resend_outstanding(now);
            self.route_resent = Some(now);
        }
    }

    /// Delete the IKE SA (orderly stop); true when a Delete went out and its answer is
    /// worth waiting for (`is_closed`).
    pub fn close(&mut self, now: Instant) -> bool {
        match self.ike.as_mut() {
            Some(ike) if ike.is_established() => {
                ike.close(now);
                true
            }
            _ => false,
        }
    }

    /// No IKE SA is left open.
    pub fn is_closed(&self) -> bool {
        self.ike.as_ref().is_none_or(Initiator::is_closed)
    }

    /// Stop without a Delete: forget everything (the shell cannot reach the gateway).
    pub fn abandon(&mut self) {
        self.teardown();
        self.reconnect_at = None;
        self.pending_mobike = None;
        self.notes.clear();
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

/// `esp_key_log`: appends the CHILD_SA's keys when a key log is configured; a failure
/// is logged, never fatal.
pub fn log_child_keys(path: Option<&std::path::Path>, c: &ChildSaInfo) {
    if let Some(path) = path {
        if let Err(e) = append_key_log(path, c) {
            tracing::warn!("esp_key_log {}: {e}", path.display());
        }
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

#[cfg(test)]
mod tests;
