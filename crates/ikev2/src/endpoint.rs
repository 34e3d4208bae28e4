//! The public sans-IO endpoints.
//!
//! Drive either endpoint like this: feed every received UDP datagram to `handle_datagram`,
//! then drain `poll_transmit` and `poll_event`, then sleep until `poll_timeout` and call
//! `handle_timeout`. No method reads a clock or a socket.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

use crate::config::Config;
use crate::event::{ChildSaInfo, DebugIkeKeys, Event, Stats, Transmit};
use crate::sa::{IkeSa, Pool, Role, State, Work};
use crate::wire::{ExchangeType, Header};

/// RFC 3948 2.2: IKE over the NAT-T port is prefixed by four zero octets.
const NON_ESP_MARKER: [u8; 4] = [0; 4];

/// Strip the non-ESP marker when the datagram used the NAT-T port.
fn ike_bytes<'a>(
    natt_port: u16,
    from: SocketAddr,
    to: SocketAddr,
    d: &'a [u8],
    stats: &mut Stats,
) -> Option<&'a [u8]> {
    if d.len() == 1 && d.first() == Some(&0xff) {
        // NAT-keepalive (RFC 3948 2.3).
        return None;
    }
    if from.port() == natt_port || to.port() == natt_port {
        match d.split_first_chunk::<4>() {
            Some((m, rest)) if *m == NON_ESP_MARKER => Some(rest),
            Some(_) => {
                stats.dropped_esp_on_ike_port += 1;
                None
            }
            None => {
                stats.dropped_malformed += 1;
                None
            }
        }
    } else {
        Some(d)
    }
}

/// The IKE initiator (our VPN client side): one IKE SA towards one gateway.
///
/// Methods come in four families, used in this order by the driving loop:
/// 1. input: [`Initiator::handle_datagram`] for every UDP datagram on our port-500/4500
///    sockets, [`Initiator::handle_timeout`] when [`Initiator::poll_timeout`] has passed;
/// 2. output: drain [`Initiator::poll_transmit`] (send from `src`, to `dst`);
/// 3. effects: drain [`Initiator::poll_event`] (install/remove CHILD_SAs, report errors);
/// 4. commands: `rekey_child`, `rekey_ike`, `check_liveness`, `update_addresses` (MOBIKE),
///    `close`, `set_unix_time` (certificates); each may queue transmits and events.
#[derive(Debug)]
pub struct Initiator {
    sa: IkeSa,
    pool: Pool,
    stats: Stats,
}

impl Initiator {
    /// Create the IKE SA and queue the IKE_SA_INIT request. `seed` feeds every random
    /// choice (SPIs, nonces, IVs, group-14 exponents).
    pub fn new(
        config: Config,
        local: SocketAddr,
        remote: SocketAddr,
        seed: [u8; 32],
        now: Instant,
    ) -> Self {
        let rng = StdRng::from_seed(seed);
        let mut sa = IkeSa::new(Arc::new(config), rng, Role::Initiator, local, remote, now);
        sa.start_initiator(now);
        Initiator {
            sa,
            pool: Pool::default(),
            stats: Stats::default(),
        }
    }

    /// A datagram arrived on one of our IKE sockets.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        to: SocketAddr,
        datagram: &[u8],
    ) {
        let port = self.sa.cfg.natt_port;
        let Some(msg) = ike_bytes(port, from, to, datagram, &mut self.stats) else {
            return;
        };
        self.sa.handle_message(now, from, to, msg, &mut self.pool);
    }

    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.sa.transmits.pop_front()
    }

    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.sa.events.pop_front()
    }

    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.sa.poll_timeout()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.sa.handle_timeout(now);
    }

    /// Queues the request that waits for an answer again, now, with no effect on its
    /// retransmission count or deadline: call it when sending it failed locally (for
    /// example ENETUNREACH right after an address change, before the default route
    /// is back), so the request does not wait for the retransmission timer.
    pub fn resend_outstanding(&mut self, now: Instant) {
        self.sa.resend_outstanding(now);
    }

    /// Whether a request waits for the peer's answer.
    #[must_use]
    pub fn has_outstanding(&self) -> bool {
        self.sa.has_outstanding()
    }

    /// Delete the IKE SA (and its CHILD_SAs) with an INFORMATIONAL exchange.
    pub fn close(&mut self, now: Instant) {
        self.sa.close(now);
    }

    /// Wall-clock time (seconds since 1970) used to check certificate validity; required
    /// when the peer authenticates with a certificate. Call it whenever convenient (e.g. with
    /// every `handle_datagram`).
    pub fn set_unix_time(&mut self, secs: u64) {
        self.sa.unix_time = Some(secs);
        if let Some(r) = self.sa.retired.as_mut() {
            r.unix_time = Some(secs);
        }
    }

    /// Rekey the CHILD_SA whose inbound SPI is `spi_in`.
    pub fn rekey_child(&mut self, now: Instant, spi_in: u32) {
        self.sa.request(now, Work::RekeyChild(spi_in));
    }

    /// Rekey the IKE SA.
    pub fn rekey_ike(&mut self, now: Instant) {
        self.sa.request(now, Work::RekeyIke);
    }

    /// Send a liveness check now.
    pub fn check_liveness(&mut self, now: Instant) {
        self.sa.request(now, Work::Liveness);
    }

    /// MOBIKE: our address changed (and optionally the gateway's). Returns false when
    /// MOBIKE was not negotiated or the SA is not up.
    pub fn update_addresses(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: Option<SocketAddr>,
    ) -> bool {
        self.sa.move_to(now, local, remote)
    }

    pub fn is_established(&self) -> bool {
        self.sa.state == State::Established
    }

    pub fn is_closed(&self) -> bool {
        self.sa.is_closed()
    }

    pub fn local(&self) -> SocketAddr {
        self.sa.local
    }

    pub fn remote(&self) -> SocketAddr {
        self.sa.remote
    }

    pub fn spis(&self) -> (u64, u64) {
        (self.sa.spi_i, self.sa.spi_r)
    }

    /// The current IKE SA's SK_e/SK_a keys. These are secrets: this exists to feed
    /// Wireshark's `ikev2_decryption_table` when debugging.
    pub fn ike_keys_for_debug(&self) -> Option<DebugIkeKeys> {
        let k = self.sa.keys.as_ref()?;
        Some(DebugIkeKeys {
            spi_i: self.sa.spi_i,
            spi_r: self.sa.spi_r,
            sk_ei: k.sk_ei.clone(),
            sk_er: k.sk_er.clone(),
            sk_ai: k.sk_ai.clone(),
            sk_ar: k.sk_ar.clone(),
        })
    }

    pub fn child_sas(&self) -> Vec<ChildSaInfo> {
        self.sa.children.values().map(|c| c.info.clone()).collect()
    }

    pub fn stats(&self) -> Stats {
        let mut s = self.sa.stats;
        s.dropped_malformed += self.stats.dropped_malformed;
        s.dropped_esp_on_ike_port += self.stats.dropped_esp_on_ike_port;
        s
    }
}

/// An IKE responder serving any number of initiators (used for in-memory tests and as a
/// reference peer).
#[derive(Debug)]
pub struct Responder {
    cfg: Arc<Config>,
    rng: StdRng,
    cookie_secret: [u8; 32],
    sas: BTreeMap<u64, IkeSa>,
    half_open: BTreeMap<(u64, SocketAddr), u64>,
    pool: Pool,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    stats: Stats,
    unix_time: Option<u64>,
}

impl Responder {
    /// Wall-clock time (seconds since 1970) for certificate validity checks.
    pub fn set_unix_time(&mut self, secs: u64) {
        self.unix_time = Some(secs);
    }

    pub fn new(config: Config, seed: [u8; 32]) -> Self {
        let mut rng = StdRng::from_seed(seed);
        let mut cookie_secret = [0u8; 32];
        rng.fill_bytes(&mut cookie_secret);
        let pool = Pool {
            start: config.vip_pool.map(|p| p.0),
            size: config.vip_pool.map(|p| p.1).unwrap_or(0),
            used: Default::default(),
        };
        Responder {
            cfg: Arc::new(config),
            rng,
            cookie_secret,
            sas: BTreeMap::new(),
            half_open: BTreeMap::new(),
            pool,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
            unix_time: None,
        }
    }

    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        to: SocketAddr,
        datagram: &[u8],
    ) {
        self.stats.rx += 1;
        let Some(msg) = ike_bytes(self.cfg.natt_port, from, to, datagram, &mut self.stats) else {
            return;
        };
        let header = match Header::parse(msg) {
            Ok(h) => h,
            Err(_) => {
                self.stats.dropped_malformed += 1;
                return;
            }
        };
        let key = if header.exchange == ExchangeType::IKE_SA_INIT
            && !header.is_response()
            && header.spi_r == 0
        {
            match self.half_open.get(&(header.spi_i, from)) {
                Some(k) => Some(*k),
                None => {
                    let mut seed = [0u8; 32];
                    self.rng.fill_bytes(&mut seed);
                    let rng = StdRng::from_seed(seed);
                    match IkeSa::respond_init(
                        &self.cfg,
                        rng,
                        &self.cookie_secret,
                        now,
                        from,
                        to,
                        msg,
                    ) {
                        crate::sa::InitOutcome::Reply(r) => {
                            let mut payload = Vec::new();
                            if from.port() == self.cfg.natt_port || to.port() == self.cfg.natt_port
                            {
                                payload.extend_from_slice(&NON_ESP_MARKER);
                            }
                            payload.extend_from_slice(&r);
                            self.stats.tx += 1;
                            self.transmits.push_back(Transmit {
                                src: to,
                                dst: from,
                                payload,
                            });
                        }
                        crate::sa::InitOutcome::Created(sa) => {
                            let k = sa.our_spi();
                            self.half_open.insert((header.spi_i, from), k);
                            self.sas.insert(k, *sa);
                            self.collect(k);
                        }
                        crate::sa::InitOutcome::Drop => self.stats.dropped_malformed += 1,
                    }
                    None
                }
            }
        } else {
            let ours = if header.is_initiator() {
                header.spi_r
            } else {
                header.spi_i
            };
            if self.sas.contains_key(&ours) {
                Some(ours)
            } else {
                self.sas
                    .iter()
                    .find(|(_, s)| s.retired.as_ref().is_some_and(|r| r.our_spi() == ours))
                    .map(|(k, _)| *k)
            }
        };
        let Some(k) = key else {
            if !(header.exchange == ExchangeType::IKE_SA_INIT && header.spi_r == 0) {
                self.stats.dropped_unknown_spi += 1;
            }
            return;
        };
        if let Some(sa) = self.sas.get_mut(&k) {
            sa.unix_time = self.unix_time;
            sa.handle_message(now, from, to, msg, &mut self.pool);
        }
        self.collect(k);
    }

    /// Move an SA's output up, re-key it after an IKE rekey, drop it once closed.
    fn collect(&mut self, k: u64) {
        let Some(mut sa) = self.sas.remove(&k) else {
            return;
        };
        self.transmits.extend(sa.transmits.drain(..));
        self.events.extend(sa.events.drain(..));
        if sa.state != State::InitDone {
            self.half_open.retain(|_, v| *v != k);
        }
        if sa.is_closed() {
            if let Some(v) = sa.vip.take() {
                self.pool.release(v);
            }
            let s = sa.stats;
            self.stats.dropped_integrity += s.dropped_integrity;
            self.stats.dropped_malformed += s.dropped_malformed;
            self.stats.dropped_unexpected += s.dropped_unexpected;
            self.stats.retransmits += s.retransmits;
            return;
        }
        self.sas.insert(sa.our_spi(), sa);
    }

    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.sas.values().filter_map(IkeSa::poll_timeout).min()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        let keys: Vec<u64> = self.sas.keys().copied().collect();
        for k in keys {
            if let Some(sa) = self.sas.get_mut(&k) {
                sa.handle_timeout(now);
            }
            self.collect(k);
        }
    }

    /// Ask every established IKE SA to rekey its CHILD_SA `spi_in` (responder-initiated).
    pub fn rekey_child(&mut self, now: Instant, spi_in: u32) {
        self.each(now, |sa, now| sa.request(now, Work::RekeyChild(spi_in)));
    }

    /// Rekey every established IKE SA (responder-initiated).
    pub fn rekey_ike(&mut self, now: Instant) {
        self.each(now, |sa, now| sa.request(now, Work::RekeyIke));
    }

    /// Liveness check on every IKE SA.
    pub fn check_liveness(&mut self, now: Instant) {
        self.each(now, |sa, now| sa.request(now, Work::Liveness));
    }

    /// Delete every IKE SA.
    pub fn close_all(&mut self, now: Instant) {
        self.each(now, |sa, now| sa.close(now));
    }

    fn each(&mut self, now: Instant, f: impl Fn(&mut IkeSa, Instant)) {
        let keys: Vec<u64> = self.sas.keys().copied().collect();
        for k in keys {
            if let Some(sa) = self.sas.get_mut(&k) {
                f(sa, now);
            }
            self.collect(k);
        }
    }

    /// Number of IKE SAs held (half-open included).
    pub fn sa_count(&self) -> usize {
        self.sas.len()
    }

    pub fn child_sas(&self) -> Vec<ChildSaInfo> {
        self.sas
            .values()
            .flat_map(|s| s.children.values().map(|c| c.info.clone()))
            .collect()
    }

    pub fn stats(&self) -> Stats {
        let mut s = self.stats;
        for sa in self.sas.values() {
            s.dropped_integrity += sa.stats.dropped_integrity;
            s.dropped_malformed += sa.stats.dropped_malformed;
            s.dropped_unexpected += sa.stats.dropped_unexpected;
            s.dropped_unknown_spi += sa.stats.dropped_unknown_spi;
            s.retransmits += sa.stats.retransmits;
            s.replayed_responses += sa.stats.replayed_responses;
            s.tx += sa.stats.tx;
        }
        s
    }
}
