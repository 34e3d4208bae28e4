//! In-memory harness: an initiator and a responder on a virtual clock, with seeded loss,
//! jitter (reordering), tampering and an optional NAT in front of the initiator.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use ikev2::wire::{DhId, Identification, TrafficSelector};
use ikev2::{Config, Event, Initiator, Responder, Transmit};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub const I_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
pub const R_ADDR: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
pub const NAT_ADDR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);

pub fn sa(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::new(ip.into(), port)
}

pub fn configs(group: DhId) -> (Config, Config) {
    let mut i = Config::psk(
        b"correct horse battery staple",
        Identification::fqdn("client.example"),
    );
    i.remote_id = Some(Identification::fqdn("gw.example"));
    i.request_vip = true;
    i.ike_proposals = vec![ikev2::IkeProposal::aes_gcm_256(&[group])];
    i.dpd_interval = Some(Duration::from_secs(30));
    let mut r = Config::psk(
        b"correct horse battery staple",
        Identification::fqdn("gw.example"),
    );
    r.remote_id = Some(Identification::fqdn("client.example"));
    r.ike_proposals = vec![ikev2::IkeProposal::aes_gcm_256(&[group])];
    r.vip_pool = Some((Ipv4Addr::new(10, 99, 0, 10), 16));
    r.dns = vec![Ipv4Addr::new(10, 99, 0, 1)];
    r.ts_local = vec![TrafficSelector::ipv4_range(
        Ipv4Addr::new(10, 1, 0, 0),
        Ipv4Addr::new(10, 1, 255, 255),
    )];
    r.dpd_interval = Some(Duration::from_secs(30));
    (i, r)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    ToResponder,
    ToInitiator,
}

pub type Filter = Box<dyn FnMut(Dir, u64, &mut Transmit) -> bool>;

pub struct Pair {
    pub now: Instant,
    pub start: Instant,
    pub i: Initiator,
    pub r: Responder,
    pub latency: Duration,
    pub jitter: Duration,
    pub loss: f64,
    rng: StdRng,
    inflight: Vec<(Instant, u64, Dir, Transmit)>,
    seq: u64,
    /// Return false to drop; may modify the datagram.
    pub filter: Option<Filter>,
    pub nat: bool,
    pub i_events: Vec<Event>,
    pub r_events: Vec<Event>,
    /// Every datagram as it appeared on the wire between NAT and responder.
    pub wire: Vec<(Dir, Transmit)>,
    pub delivered: u64,
}

impl Pair {
    pub fn new(ci: Config, cr: Config, seed: u64) -> Pair {
        // The only clock read: the origin of virtual time.
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        let mut s = [0u8; 32];
        s[..8].copy_from_slice(&seed.to_be_bytes());
        let mut s2 = s;
        s2[31] = 1;
        Pair {
            now,
            start: now,
            i: Initiator::new(ci, sa(I_ADDR, 500), sa(R_ADDR, 500), s, now),
            r: Responder::new(cr, s2),
            latency: Duration::from_millis(10),
            jitter: Duration::ZERO,
            loss: 0.0,
            rng: StdRng::seed_from_u64(seed ^ 0x5eed),
            inflight: Vec::new(),
            seq: 0,
            filter: None,
            nat: false,
            i_events: Vec::new(),
            r_events: Vec::new(),
            wire: Vec::new(),
            delivered: 0,
        }
    }

    fn nat_out(&self, a: SocketAddr) -> SocketAddr {
        if self.nat && a.ip() == std::net::IpAddr::V4(I_ADDR) {
            sa(NAT_ADDR, 40000 + a.port())
        } else {
            a
        }
    }

    fn nat_in(&self, a: SocketAddr) -> SocketAddr {
        if self.nat && a.ip() == std::net::IpAddr::V4(NAT_ADDR) {
            sa(I_ADDR, a.port() - 40000)
        } else {
            a
        }
    }

    fn send(&mut self, dir: Dir, mut t: Transmit) {
        self.seq += 1;
        if dir == Dir::ToResponder {
            t.src = self.nat_out(t.src);
        }
        if let Some(f) = self.filter.as_mut() {
            if !f(dir, self.seq, &mut t) {
                return;
            }
        }
        if self.loss > 0.0 && self.rng.gen_bool(self.loss) {
            return;
        }
        self.wire.push((dir, t.clone()));
        let j = if self.jitter.is_zero() {
            Duration::ZERO
        } else {
            self.jitter.mul_f64(self.rng.gen::<f64>())
        };
        self.inflight
            .push((self.now + self.latency + j, self.seq, dir, t));
    }

    fn pump(&mut self) {
        while let Some(t) = self.i.poll_transmit() {
            self.send(Dir::ToResponder, t);
        }
        while let Some(t) = self.r.poll_transmit() {
            self.send(Dir::ToInitiator, t);
        }
        while let Some(e) = self.i.poll_event() {
            self.i_events.push(e);
        }
        while let Some(e) = self.r.poll_event() {
            self.r_events.push(e);
        }
    }

    /// Run the simulation for `d` of virtual time, jumping to the next delivery or timeout.
    pub fn run(&mut self, d: Duration) {
        let end = self.now + d;
        for _ in 0..100_000 {
            self.pump();
            let next_rx = self.inflight.iter().map(|x| (x.0, x.1)).min();
            let next_to = [self.i.poll_timeout(), self.r.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            let t = match (next_rx, next_to) {
                (Some((a, _)), Some(b)) => a.min(b),
                (Some((a, _)), None) => a,
                (None, Some(b)) => b,
                (None, None) => break,
            };
            if t > end {
                break;
            }
            self.now = self.now.max(t);
            if let Some((at, seq)) = next_rx.filter(|(a, _)| *a <= self.now) {
                let idx = self
                    .inflight
                    .iter()
                    .position(|x| x.0 == at && x.1 == seq)
                    .unwrap();
                let (_, _, dir, tx) = self.inflight.remove(idx);
                self.delivered += 1;
                match dir {
                    Dir::ToResponder => {
                        self.r
                            .handle_datagram(self.now, tx.src, tx.dst, &tx.payload)
                    }
                    Dir::ToInitiator => {
                        let dst = self.nat_in(tx.dst);
                        self.i.handle_datagram(self.now, tx.src, dst, &tx.payload)
                    }
                }
            } else {
                self.i.handle_timeout(self.now);
                self.r.handle_timeout(self.now);
            }
        }
        self.pump();
        self.now = self.now.max(end);
    }

    pub fn pump_events_clear(&mut self) {
        self.pump();
        self.i_events.clear();
        self.r_events.clear();
    }

    pub fn i_up(&self) -> bool {
        self.i_events
            .iter()
            .any(|e| matches!(e, Event::IkeSaUp { .. }))
    }

    pub fn child(events: &[Event]) -> Option<ikev2::ChildSaInfo> {
        events.iter().find_map(|e| match e {
            Event::ChildSaUp(c) => Some(c.clone()),
            _ => None,
        })
    }

    pub fn down(events: &[Event]) -> Option<Option<ikev2::IkeError>> {
        events.iter().find_map(|e| match e {
            Event::IkeSaDown { error, .. } => Some(error.clone()),
            _ => None,
        })
    }
}

/// The two directions of a CHILD_SA agree.
pub fn assert_mirror(a: &ikev2::ChildSaInfo, b: &ikev2::ChildSaInfo) {
    assert_eq!(a.spi_in, b.spi_out);
    assert_eq!(a.spi_out, b.spi_in);
    assert_eq!(a.encr_key_in, b.encr_key_out);
    assert_eq!(a.encr_key_out, b.encr_key_in);
    assert_eq!(a.integ_key_in, b.integ_key_out);
    assert_eq!(a.integ_key_out, b.integ_key_in);
    assert_ne!(a.encr_key_in, a.encr_key_out);
    assert_eq!(a.ts_local, b.ts_remote);
    assert_eq!(a.ts_remote, b.ts_local);
    assert_eq!(a.encr, b.encr);
}
