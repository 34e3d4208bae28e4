//! One IKE SA: message IDs, retransmission, response cache, SK protection, fragmentation
//! and dispatch to the exchange handlers in the sibling modules.

mod auth;
mod child;
mod info;
mod init;
mod parts;
mod proposal;
mod protect;

use std::collections::{BTreeMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::RngCore;

use crate::config::Config;
use crate::crypto::dh::KeyShare;
use crate::crypto::IkeKeys;
use crate::event::{ChildSaInfo, Event, IkeError, Stats, Transmit};
use crate::wire::{
    self, parse_chain, ExchangeType, Header, Notify, NotifyType, Payload, PayloadType,
    FLAG_INITIATOR, FLAG_RESPONSE,
};

pub(crate) use init::InitOutcome;
pub(crate) use proposal::Suite;

/// A responder forgets a half-open SA after this long without IKE_AUTH.
const HALF_OPEN_TIMEOUT: Duration = Duration::from_secs(30);

/// Which end of the IKE SA we are (the original initiator of *this* SA).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Initiator,
    Responder,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// Initiator: IKE_SA_INIT request sent.
    InitSent,
    /// Initiator: IKE_AUTH request sent.
    AuthSent,
    /// Responder: IKE_SA_INIT answered, waiting for IKE_AUTH.
    InitDone,
    Established,
    /// Terminal.
    Closed,
}

/// What an outstanding request was for.
#[derive(Debug)]
pub(crate) enum Pending {
    Init,
    Auth,
    Liveness,
    DeleteIke,
    DeleteChild { spi_in: u32 },
    RekeyChild(Box<child::RekeyChild>),
    RekeyIke(Box<child::RekeyIke>),
    UpdateAddresses,
}

#[derive(Debug)]
pub(crate) struct Outstanding {
    pub msg_id: u32,
    pub kind: Pending,
    /// IKE messages (several when fragmented), without the non-ESP marker.
    pub packets: Vec<Vec<u8>>,
    pub tries: u32,
    pub timeout: Duration,
    pub deadline: Instant,
}

/// Work that starts a new request once the window is free.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Work {
    Liveness,
    DeleteIke,
    DeleteChild(u32),
    RekeyChild(u32),
    RekeyIke,
    UpdateAddresses,
}

#[derive(Debug)]
pub(crate) struct Child {
    pub info: ChildSaInfo,
    pub created: Instant,
    pub rekeyed: bool,
}

#[derive(Debug, Default)]
struct Reassembly {
    msg_id: u32,
    first: PayloadType,
    total: u16,
    parts: BTreeMap<u16, Vec<u8>>,
}

/// Address pool used by a responder.
#[derive(Debug, Default)]
pub(crate) struct Pool {
    pub start: Option<Ipv4Addr>,
    pub size: u32,
    pub used: std::collections::BTreeSet<u32>,
}

impl Pool {
    pub fn allocate(&mut self) -> Option<Ipv4Addr> {
        let start = u32::from(self.start?);
        let i = (0..self.size).find(|i| !self.used.contains(i))?;
        self.used.insert(i);
        Some(Ipv4Addr::from(start.wrapping_add(i)))
    }
    pub fn release(&mut self, a: Ipv4Addr) {
        if let Some(start) = self.start {
            self.used
                .remove(&u32::from(a).wrapping_sub(u32::from(start)));
        }
    }
}

/// Handshake material kept until the IKE SA is authenticated.
#[derive(Debug, Default)]
pub(crate) struct Handshake {
    pub share: Option<KeyShare>,
    pub init_req: Vec<u8>,
    pub init_resp: Vec<u8>,
    pub cookie: Option<Vec<u8>>,
    pub invalid_ke_retries: u8,
    /// Initiator: SPI for the first CHILD_SA.
    pub child_spi: u32,
}

pub(crate) struct IkeSa {
    pub cfg: Arc<Config>,
    pub rng: StdRng,
    pub role: Role,
    pub state: State,
    pub spi_i: u64,
    pub spi_r: u64,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub local_nat: bool,
    pub remote_nat: bool,
    pub suite: Option<Suite>,
    pub keys: Option<IkeKeys>,
    pub ni: Vec<u8>,
    pub nr: Vec<u8>,
    pub hs: Handshake,
    pub next_req_id: u32,
    pub peer_next_req_id: u32,
    pub outstanding: Option<Outstanding>,
    pub work: VecDeque<Work>,
    last_response: Option<(u32, Vec<Vec<u8>>)>,
    reassembly: Option<Reassembly>,
    pub last_rx: Instant,
    pub created: Instant,
    pub peer_frag: bool,
    pub mobike: bool,
    pub children: BTreeMap<u32, Child>,
    pub vip: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub transmits: VecDeque<Transmit>,
    pub events: VecDeque<Event>,
    pub stats: Stats,
    /// The old SA after an IKE rekey, kept until its delete exchange completes.
    pub retired: Option<Box<IkeSa>>,
    pub mobike_cookie2: Option<Vec<u8>>,
    pub last_tx: Instant,
    /// The latest `now` we were given (stamps transmissions).
    clock: Instant,
    /// DH group the peer asked for with INVALID_KE_PAYLOAD in CREATE_CHILD_SA.
    pub child_pfs_group: Option<crate::wire::DhId>,
    /// Wall-clock time (seconds since 1970) for certificate validity checks.
    pub unix_time: Option<u64>,
}

impl core::fmt::Debug for IkeSa {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("IkeSa")
            .field("role", &self.role)
            .field("state", &self.state)
            .field("spi_i", &format_args!("{:016x}", self.spi_i))
            .field("spi_r", &format_args!("{:016x}", self.spi_r))
            .finish_non_exhaustive()
    }
}

pub(crate) fn nonce(rng: &mut StdRng) -> Vec<u8> {
    let mut n = vec![0u8; 32];
    rng.fill_bytes(&mut n);
    n
}

pub(crate) fn nonzero_u64(rng: &mut StdRng) -> u64 {
    loop {
        let v = rng.next_u64();
        if v != 0 {
            return v;
        }
    }
}

pub(crate) fn child_spi(rng: &mut StdRng) -> u32 {
    // SPIs 1..=255 are reserved (RFC 4303 2.1).
    loop {
        let v = rng.next_u32();
        if v > 255 {
            return v;
        }
    }
}

impl IkeSa {
    pub fn new(
        cfg: Arc<Config>,
        rng: StdRng,
        role: Role,
        local: SocketAddr,
        remote: SocketAddr,
        now: Instant,
    ) -> Self {
        IkeSa {
            cfg,
            rng,
            role,
            state: if role == Role::Initiator {
                State::InitSent
            } else {
                State::InitDone
            },
            spi_i: 0,
            spi_r: 0,
            local,
            remote,
            local_nat: false,
            remote_nat: false,
            suite: None,
            keys: None,
            ni: Vec::new(),
            nr: Vec::new(),
            hs: Handshake::default(),
            next_req_id: 0,
            peer_next_req_id: 0,
            outstanding: None,
            work: VecDeque::new(),
            last_response: None,
            reassembly: None,
            last_rx: now,
            created: now,
            peer_frag: false,
            mobike: false,
            children: BTreeMap::new(),
            vip: None,
            dns: Vec::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
            retired: None,
            mobike_cookie2: None,
            last_tx: now,
            clock: now,
            child_pfs_group: None,
            unix_time: None,
        }
    }

    /// The SPI we chose (routing key at a responder).
    pub fn our_spi(&self) -> u64 {
        match self.role {
            Role::Initiator => self.spi_i,
            Role::Responder => self.spi_r,
        }
    }

    pub fn is_closed(&self) -> bool {
        self.state == State::Closed && self.retired.is_none()
    }

    pub fn udp_encap(&self) -> bool {
        self.local_nat || self.remote_nat
    }

    fn header(&self, exchange: ExchangeType, msg_id: u32, response: bool) -> Header {
        let mut flags = 0;
        if self.role == Role::Initiator {
            flags |= FLAG_INITIATOR;
        }
        if response {
            flags |= FLAG_RESPONSE;
        }
        Header {
            spi_i: self.spi_i,
            spi_r: self.spi_r,
            next_payload: PayloadType::NONE,
            version: 0x20,
            exchange,
            flags,
            message_id: msg_id,
            length: 0,
        }
    }

    fn natt_path(&self) -> bool {
        self.local.port() == self.cfg.natt_port || self.remote.port() == self.cfg.natt_port
    }

    fn push_tx(&mut self, msg: &[u8], src: SocketAddr, dst: SocketAddr) {
        let mut payload = Vec::with_capacity(msg.len() + 4);
        if src.port() == self.cfg.natt_port || dst.port() == self.cfg.natt_port {
            payload.extend_from_slice(&[0, 0, 0, 0]);
        }
        payload.extend_from_slice(msg);
        self.stats.tx += 1;
        self.last_tx = self.clock;
        self.transmits.push_back(Transmit { src, dst, payload });
    }

    fn keepalive_due(&self) -> Option<Instant> {
        let iv = self.cfg.nat_keepalive?;
        (self.state == State::Established && self.local_nat).then(|| self.last_tx + iv)
    }

    /// RFC 3948 2.3: a single 0xFF octet, no non-ESP marker.
    fn send_keepalive(&mut self, now: Instant) {
        self.last_tx = now;
        self.transmits.push_back(Transmit {
            src: self.local,
            dst: self.remote,
            payload: vec![0xff],
        });
    }

    /// Send a new request (window size 1: the caller checked `outstanding` is empty).
    fn send_request(
        &mut self,
        now: Instant,
        exchange: ExchangeType,
        payloads: &[Payload],
        kind: Pending,
    ) {
        let msg_id = self.next_req_id;
        let packets = if exchange == ExchangeType::IKE_SA_INIT {
            let m = wire::Message {
                header: self.header(exchange, msg_id, false),
                payloads: payloads.to_vec(),
            };
            vec![m.emit()]
        } else {
            match self.seal(exchange, msg_id, false, payloads) {
                Some(p) => p,
                None => return self.fail(IkeError::Protocol("cannot protect request")),
            }
        };
        self.next_req_id = self.next_req_id.wrapping_add(1);
        self.start_outstanding(now, msg_id, kind, packets);
    }

    fn start_outstanding(
        &mut self,
        now: Instant,
        msg_id: u32,
        kind: Pending,
        packets: Vec<Vec<u8>>,
    ) {
        self.clock = self.clock.max(now);
        let (l, r) = (self.local, self.remote);
        for p in &packets {
            self.push_tx(p, l, r);
        }
        let timeout = self.cfg.retransmit.base;
        self.outstanding = Some(Outstanding {
            msg_id,
            kind,
            packets,
            tries: 1,
            timeout,
            deadline: now.checked_add(timeout).unwrap_or(now),
        });
    }

    fn send_response(
        &mut self,
        exchange: ExchangeType,
        msg_id: u32,
        payloads: &[Payload],
        from: SocketAddr,
        to: SocketAddr,
    ) {
        let packets = if exchange == ExchangeType::IKE_SA_INIT {
            let m = wire::Message {
                header: self.header(exchange, msg_id, true),
                payloads: payloads.to_vec(),
            };
            vec![m.emit()]
        } else {
            match self.seal(exchange, msg_id, true, payloads) {
                Some(p) => p,
                None => return,
            }
        };
        for p in &packets {
            self.push_tx(p, to, from);
        }
        self.last_response = Some((msg_id, packets));
    }

    pub fn fail(&mut self, e: IkeError) {
        if self.state == State::Closed {
            return;
        }
        self.close_children();
        self.state = State::Closed;
        self.outstanding = None;
        self.work.clear();
        self.events.push_back(Event::IkeSaDown {
            spi_i: self.spi_i,
            spi_r: self.spi_r,
            error: Some(e),
        });
    }

    pub fn close_children(&mut self) {
        let children = std::mem::take(&mut self.children);
        for (_, c) in children {
            self.events.push_back(Event::ChildSaDown {
                spi_in: c.info.spi_in,
                spi_out: c.info.spi_out,
            });
        }
    }

    pub fn closed_orderly(&mut self) {
        if self.state == State::Closed {
            return;
        }
        self.close_children();
        self.state = State::Closed;
        self.outstanding = None;
        self.work.clear();
        self.events.push_back(Event::IkeSaDown {
            spi_i: self.spi_i,
            spi_r: self.spi_r,
            error: None,
        });
    }

    /// Entry for every datagram routed to this SA (marker already stripped).
    pub fn handle_message(
        &mut self,
        now: Instant,
        from: SocketAddr,
        to: SocketAddr,
        msg: &[u8],
        pool: &mut Pool,
    ) {
        self.stats.rx += 1;
        let header = match Header::parse(msg) {
            Ok(h) => h,
            Err(_) => {
                self.stats.dropped_malformed += 1;
                return;
            }
        };
        // Messages for the SA we replaced by rekeying.
        if (header.spi_i, header.spi_r) != (self.spi_i, self.spi_r) && self.spi_r != 0 {
            if let Some(old) = self.retired.as_mut() {
                if (header.spi_i, header.spi_r) == (old.spi_i, old.spi_r) {
                    old.handle_message(now, from, to, msg, pool);
                    self.absorb_retired();
                    return;
                }
            }
        }
        if header.exchange == ExchangeType::IKE_SA_INIT {
            return self.handle_init_message(now, from, to, msg, &header, pool);
        }
        if (header.spi_i, header.spi_r) != (self.spi_i, self.spi_r) {
            self.stats.dropped_unknown_spi += 1;
            return;
        }
        if self.state == State::Closed {
            self.stats.dropped_unexpected += 1;
            return;
        }
        if header.is_response() {
            match &self.outstanding {
                Some(o) if o.msg_id == header.message_id => {}
                _ => {
                    self.stats.dropped_unexpected += 1;
                    return;
                }
            }
        } else if header.message_id != self.peer_next_req_id {
            if header.message_id.wrapping_add(1) == self.peer_next_req_id {
                // Retransmitted request: verify, then replay our cached response.
                if self.open(msg).is_some() {
                    if let Some((id, packets)) = self.last_response.clone() {
                        if id == header.message_id {
                            self.stats.replayed_responses += 1;
                            for p in &packets {
                                self.push_tx(p, to, from);
                            }
                        }
                    }
                }
            } else {
                self.stats.dropped_unexpected += 1;
            }
            return;
        }
        let Some(opened) = self.open(msg) else {
            return;
        };
        let (first, inner) = match opened.fragment {
            None => (opened.first, opened.inner),
            Some((n, total)) => {
                match self.reassemble(header.message_id, n, total, opened.first, opened.inner) {
                    Some(x) => x,
                    None => return,
                }
            }
        };
        let payloads = match parse_chain(first, &inner) {
            Ok(p) => p,
            Err(e) => {
                self.stats.dropped_malformed += 1;
                if !header.is_response() {
                    // Authenticated but malformed: answer INVALID_SYNTAX (RFC 7296 2.21.2)
                    // or UNSUPPORTED_CRITICAL_PAYLOAD.
                    self.peer_next_req_id = self.peer_next_req_id.wrapping_add(1);
                    let n = vec![Payload::Notify(Notify::new(
                        e.notify_type(),
                        unsupported_data(&e),
                    ))];
                    self.send_response(header.exchange, header.message_id, &n, from, to);
                }
                return;
            }
        };
        self.last_rx = now;
        if header.is_response() {
            let Some(o) = self.outstanding.take() else {
                return;
            };
            self.handle_response(now, from, to, &header, o.kind, payloads);
        } else {
            self.peer_next_req_id = self.peer_next_req_id.wrapping_add(1);
            self.handle_request(now, from, to, &header, payloads, pool);
        }
        self.drive(now);
    }

    fn handle_response(
        &mut self,
        now: Instant,
        from: SocketAddr,
        to: SocketAddr,
        header: &Header,
        kind: Pending,
        payloads: Vec<Payload>,
    ) {
        match kind {
            Pending::Auth => self.handle_auth_response(now, header, payloads),
            Pending::Liveness => {}
            Pending::DeleteIke => self.closed_orderly(),
            Pending::DeleteChild { spi_in } => self.finish_delete_child(spi_in),
            Pending::RekeyChild(r) => self.handle_rekey_child_response(now, *r, payloads),
            Pending::RekeyIke(r) => self.handle_rekey_ike_response(now, *r, payloads),
            Pending::UpdateAddresses => self.handle_update_response(from, to, payloads),
            Pending::Init => self.stats.dropped_unexpected += 1,
        }
    }

    fn handle_request(
        &mut self,
        now: Instant,
        from: SocketAddr,
        to: SocketAddr,
        header: &Header,
        payloads: Vec<Payload>,
        pool: &mut Pool,
    ) {
        match (header.exchange, self.state) {
            (ExchangeType::IKE_AUTH, State::InitDone) if self.role == Role::Responder => {
                self.handle_auth_request(now, from, to, header, payloads, pool)
            }
            (ExchangeType::INFORMATIONAL, State::Established | State::InitDone) => {
                self.handle_informational(now, from, to, header, payloads, pool)
            }
            (ExchangeType::CREATE_CHILD_SA, State::Established) => {
                self.handle_create_child_request(now, from, to, header, payloads)
            }
            _ => {
                self.stats.dropped_unexpected += 1;
                // Answer so the peer's window does not stall.
                let n = vec![Payload::Notify(Notify::new(
                    NotifyType::INVALID_SYNTAX,
                    vec![],
                ))];
                self.send_response(header.exchange, header.message_id, &n, from, to);
            }
        }
    }

    /// Start queued work when the window is free; schedule liveness and rekeying.
    pub fn drive(&mut self, now: Instant) {
        self.clock = self.clock.max(now);
        if self.state != State::Established || self.outstanding.is_some() {
            return;
        }
        if let Some(iv) = self.cfg.child_lifetime {
            let due: Vec<u32> = self
                .children
                .iter()
                .filter(|(_, c)| !c.rekeyed && now >= c.created + iv)
                .map(|(k, _)| *k)
                .collect();
            for spi in due {
                if let Some(c) = self.children.get_mut(&spi) {
                    c.rekeyed = true;
                }
                self.work.push_back(Work::RekeyChild(spi));
            }
        }
        if let Some(iv) = self.cfg.ike_lifetime {
            if now >= self.created + iv
                && !self.work.contains(&Work::RekeyIke)
                && self.retired.is_none()
            {
                self.created = now;
                self.work.push_back(Work::RekeyIke);
            }
        }
        if self.work.is_empty() {
            if let Some(iv) = self.cfg.dpd_interval {
                if now >= self.last_rx + iv {
                    self.work.push_back(Work::Liveness);
                }
            }
        }
        while self.outstanding.is_none() && self.state == State::Established {
            let Some(w) = self.work.pop_front() else {
                break;
            };
            match w {
                Work::Liveness => {
                    self.send_request(now, ExchangeType::INFORMATIONAL, &[], Pending::Liveness)
                }
                Work::DeleteIke => self.start_delete_ike(now),
                Work::DeleteChild(spi) => self.start_delete_child(now, spi),
                Work::RekeyChild(spi) => self.start_rekey_child(now, spi),
                Work::RekeyIke => self.start_rekey_ike(now),
                Work::UpdateAddresses => self.start_update_addresses(now),
            }
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t: Option<Instant> = None;
        let mut consider = |x: Instant| {
            t = Some(t.map_or(x, |y| y.min(x)));
        };
        if self.state == State::InitDone {
            consider(self.created + HALF_OPEN_TIMEOUT);
        }
        if let Some(k) = self.keepalive_due() {
            consider(k);
        }
        if let Some(o) = &self.outstanding {
            consider(o.deadline);
        } else if self.state == State::Established {
            if let Some(iv) = self.cfg.dpd_interval {
                consider(self.last_rx + iv);
            }
            if let Some(iv) = self.cfg.ike_lifetime {
                if self.retired.is_none() {
                    consider(self.created + iv);
                }
            }
            if let Some(iv) = self.cfg.child_lifetime {
                for c in self.children.values().filter(|c| !c.rekeyed) {
                    consider(c.created + iv);
                }
            }
        }
        if let Some(r) = &self.retired {
            if let Some(x) = r.poll_timeout() {
                consider(x);
            }
        }
        t
    }

    /// Queues the outstanding request's packets again now, without counting a
    /// retransmission or moving its deadline: for a shell whose send never left the
    /// host (no route yet right after an address change), so the peer cannot have
    /// seen it. Nothing happens without an outstanding request.
    pub fn resend_outstanding(&mut self, now: Instant) {
        self.clock = self.clock.max(now);
        let Some(o) = &self.outstanding else {
            return;
        };
        let packets = o.packets.clone();
        let (l, r) = (self.local, self.remote);
        for p in &packets {
            self.push_tx(p, l, r);
        }
    }

    /// Whether a request of ours waits for its answer.
    pub fn has_outstanding(&self) -> bool {
        self.outstanding.is_some()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.clock = self.clock.max(now);
        if self.keepalive_due().is_some_and(|t| now >= t) {
            self.send_keepalive(now);
        }
        if self.state == State::InitDone && now >= self.created + HALF_OPEN_TIMEOUT {
            return self.fail(IkeError::Timeout);
        }
        if let Some(r) = self.retired.as_mut() {
            r.handle_timeout(now);
            self.absorb_retired();
        }
        if let Some(o) = self.outstanding.as_mut() {
            if now >= o.deadline {
                if o.tries >= self.cfg.retransmit.max_tries {
                    self.outstanding = None;
                    return self.fail(IkeError::Timeout);
                }
                o.tries += 1;
                o.timeout = o
                    .timeout
                    .saturating_mul(2)
                    .min(self.cfg.retransmit.max_timeout);
                o.deadline = now.checked_add(o.timeout).unwrap_or(now);
                let packets = o.packets.clone();
                let (l, r) = (self.local, self.remote);
                self.stats.retransmits += 1;
                for p in &packets {
                    self.push_tx(p, l, r);
                }
            }
            return;
        }
        self.drive(now);
    }

    /// Move transmits/events of the retired SA up; drop it once closed.
    fn absorb_retired(&mut self) {
        if let Some(r) = self.retired.as_mut() {
            self.transmits.extend(r.transmits.drain(..));
            // The retired SA's down event is internal: its children moved to us.
            for e in r.events.drain(..) {
                if !matches!(e, Event::IkeSaDown { error: None, .. }) {
                    self.events.push_back(e);
                }
            }
            if r.state == State::Closed {
                self.retired = None;
            }
        }
    }
}

/// For UNSUPPORTED_CRITICAL_PAYLOAD the notify data is the payload type (1 octet).
fn unsupported_data(e: &wire::ParseError) -> Vec<u8> {
    match e {
        wire::ParseError::UnsupportedCritical(t) => vec![t.0],
        _ => Vec::new(),
    }
}
