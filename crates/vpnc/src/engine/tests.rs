//! The engine against the real `ikev2::Responder` and an ESP SA table on the gateway's
//! side, in memory, driven with a clock of the test's own.

use super::*;
use ikev2::wire::{DhId, Identification, TrafficSelector};
use ikev2::{IkeProposal, Responder};

const PSK: &[u8] = b"engine test psk";
const GW: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const HOME: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const MOVED: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 9);

fn configs() -> (ikev2::Config, ikev2::Config) {
    let mut r = ikev2::Config::psk(PSK, Identification::fqdn("gw.example"));
    r.remote_id = Some(Identification::fqdn("mn.example"));
    r.ike_proposals = vec![IkeProposal::aes_gcm_256(&[DhId::CURVE25519])];
    r.vip_pool = Some((Ipv4Addr::new(10, 99, 0, 10), 16));
    r.ts_local = vec![TrafficSelector::ipv4_range(
        Ipv4Addr::new(10, 1, 0, 0),
        Ipv4Addr::new(10, 1, 255, 255),
    )];
    r.dpd_interval = None;
    r.nat_keepalive = None;
    let mut i = ikev2::Config::psk(PSK, Identification::fqdn("mn.example"));
    i.remote_id = Some(Identification::fqdn("gw.example"));
    i.request_vip = true;
    i.ike_proposals = vec![IkeProposal::aes_gcm_256(&[DhId::CURVE25519])];
    i.dpd_interval = Some(Duration::from_secs(5));
    i.nat_keepalive = None;
    (i, r)
}

/// The engine, the gateway, and what crossed between them.
struct World {
    now: Instant,
    eng: Engine,
    gw: Responder,
    gw_sas: EspSas,
    notes: Vec<Note>,
    /// The gateway answers (false: it is dead, datagrams to it are lost).
    alive: bool,
    ike_sent: usize,
}

impl World {
    fn new() -> World {
        let (i, r) = configs();
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        let mut eng = Engine::new(
            i,
            SocketAddrV4::new(GW, 500),
            Duration::from_secs(30),
            [3; 32],
            now,
        );
        eng.set_local(Some(HOME));
        World {
            now,
            eng,
            gw: Responder::new(r, [4; 32]),
            gw_sas: EspSas::new(rand::rngs::StdRng::from_seed([5; 32])),
            notes: Vec::new(),
            alive: true,
            ike_sent: 0,
        }
    }

    /// Moves the clock, runs due timers, and exchanges datagrams until both are quiet.
    fn step(&mut self, by: Duration) {
        self.now += by;
        if self.eng.poll_timeout().is_some_and(|t| t <= self.now) {
            self.eng.handle_timeout(self.now);
        }
        for _ in 0..20 {
            let mut quiet = true;
            while let Some(t) = self.eng.poll_transmit() {
                quiet = false;
                self.ike_sent += 1;
                if self.alive {
                    self.gw.handle_datagram(self.now, t.src, t.dst, &t.payload);
                }
            }
            while let Some(n) = self.eng.poll_note(self.now) {
                quiet = false;
                self.notes.push(n);
            }
            while let Some(t) = self.gw.poll_transmit() {
                quiet = false;
                self.eng.handle_ike(self.now, t.src, t.dst, &t.payload);
            }
            while let Some(ev) = self.gw.poll_event() {
                if let Event::ChildSaUp(c) = ev {
                    self.gw_sas.install(self.now, &c, true).expect("gateway SA");
                }
            }
            if quiet {
                return;
            }
        }
    }

    fn up(&mut self) -> Ipv4Addr {
        for _ in 0..10 {
            self.step(Duration::from_millis(10));
        }
        self.notes
            .iter()
            .find_map(|n| match n {
                Note::Up { tia, .. } => Some(*tia),
                _ => None,
            })
            .expect("up")
    }
}

fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0];
    p[2..4].copy_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(payload);
    p
}

#[test]
fn connects_and_carries_esp_both_ways() {
    let mut w = World::new();
    let tia = w.up();
    assert_eq!(
        tia,
        Ipv4Addr::new(10, 99, 0, 10),
        "the pool's first address"
    );
    assert!(w.eng.is_established());
    assert_eq!(w.eng.tia(), Some(tia));
    assert!(
        matches!(&w.notes[..], [Note::Child(_), Note::Up { local: HOME, .. }]),
        "{:?}",
        w.notes
    );
    // Out: sealed by the engine, opened by the gateway.
    let pkt = ipv4(tia, Ipv4Addr::new(10, 1, 0, 2), b"to the intranet");
    let mut out = Vec::new();
    let to = w.eng.seal(w.now, &pkt, &mut out).expect("sealed");
    assert_eq!((to.src, *to.dst.ip(), to.udp), (HOME, GW, false));
    w.eng.esp_sent(w.now, pkt.len());
    let o = w.gw_sas.sad.open(w.now, &mut out).expect("gateway opens");
    assert_eq!(out.get(o.payload), Some(&pkt[..]));
    // In: sealed by the gateway, opened by the engine; a replay is dropped.
    let back = ipv4(Ipv4Addr::new(10, 1, 0, 2), tia, b"from the intranet");
    let mut esp = Vec::new();
    let sa = w.gw_sas.out_mut().expect("gateway outbound SA");
    sa.seal(w.now, esp::NEXT_HEADER_IPV4, &back, &mut esp)
        .expect("gateway seals");
    let replay = esp.clone();
    let r = w.eng.open_esp(w.now, &mut esp).expect("engine opens");
    assert_eq!(esp.get(r), Some(&back[..]));
    let mut replay = replay;
    assert!(
        w.eng.open_esp(w.now, &mut replay).is_none(),
        "replay dropped"
    );
    let st = w.eng.status();
    assert_eq!((st.esp_tx_packets, st.esp_rx_packets), (1, 1));
    assert_eq!(st.esp_drops, 1);
    assert_eq!(st.state, "established");
}

#[test]
fn nothing_is_sealed_before_the_tunnel_is_up() {
    let mut w = World::new();
    let mut out = Vec::new();
    let pkt = ipv4(HOME, GW, b"x");
    assert!(w.eng.seal(w.now, &pkt, &mut out).is_none());
    assert!(w.eng.seal(w.now, b"\x60not v4", &mut out).is_none());
    assert_eq!(w.eng.status().tun_dropped, 2);
}

#[test]
fn a_mobike_command_is_answered_by_the_gateway() {
    let mut w = World::new();
    w.up();
    let (spi, _) = w.eng.ike().expect("ike").spis();
    w.notes.clear();
    w.eng.mobike(w.now, MOVED);
    w.step(Duration::from_millis(10));
    assert!(
        w.notes.iter().any(|n| matches!(
            n,
            Note::Mobike {
                ok: true,
                local: MOVED,
                ..
            }
        )),
        "{:?}",
        w.notes
    );
    assert!(w.eng.ike_uses(MOVED));
    assert_eq!(w.eng.ike().expect("ike").spis().0, spi, "same IKE SA");
    assert_eq!(w.eng.status().mobike_moves, 1);
    // ESP now leaves from the new address.
    let mut out = Vec::new();
    let tia = w.eng.tia().expect("tia");
    let to = w.eng.seal(w.now, &ipv4(tia, GW, b"y"), &mut out);
    assert_eq!(to.map(|t| t.src), Some(MOVED));
}

#[test]
fn a_mobike_command_without_an_ike_sa_is_refused_and_connects_from_the_address() {
    let mut w = World::new();
    w.eng.mobike(w.now, MOVED);
    let n = w.eng.poll_note(w.now);
    assert!(
        matches!(
            n,
            Some(Note::Mobike {
                ok: false,
                local: MOVED,
                ..
            })
        ),
        "{n:?}"
    );
    let t = w.eng.poll_transmit().expect("IKE_SA_INIT");
    assert_eq!(t.src.ip(), std::net::IpAddr::V4(MOVED));
}

#[test]
fn a_silent_gateway_is_declared_dead_and_the_engine_reconnects() {
    let mut w = World::new();
    w.up();
    w.notes.clear();
    w.alive = false;
    // DPD 5 s: dead after 5 + 5 s of silence.
    for _ in 0..11 {
        w.step(Duration::from_secs(1));
    }
    assert!(
        w.notes
            .iter()
            .any(|n| matches!(n, Note::Down { reason } if reason == "gateway dead")),
        "{:?}",
        w.notes
    );
    let st = w.eng.status();
    assert_eq!((st.dead_gateway, st.reconnects), (1, 1));
    assert!(!w.eng.is_established());
    assert_eq!(w.eng.tia(), None, "no TIA while down");
    // Back: a new IKE SA, a new Up.
    w.alive = true;
    w.notes.clear();
    for _ in 0..5 {
        w.step(Duration::from_secs(1));
    }
    assert!(
        w.notes.iter().any(|n| matches!(n, Note::Up { .. })),
        "{:?}",
        w.notes
    );
    assert_eq!(w.eng.status().attempts, 2);
}

#[test]
fn an_unreachable_send_is_resent_soon_without_a_retransmission() {
    let mut w = World::new();
    w.eng.handle_timeout(w.now);
    let first = w.eng.poll_transmit().expect("IKE_SA_INIT");
    w.eng.ike_send_failed(w.now, true);
    let due = w.eng.poll_timeout().expect("deadline");
    assert_eq!(due, w.now + RESEND_UNREACHABLE);
    w.eng.handle_timeout(due);
    let again = w.eng.poll_transmit().expect("sent again");
    assert_eq!(again.payload, first.payload);
    assert_eq!(w.eng.ike().expect("ike").stats().retransmits, 0);
    assert_eq!(w.eng.status().tx_errors, 1);
}

#[test]
fn close_sends_a_delete_and_the_gateway_answers() {
    let mut w = World::new();
    w.up();
    assert!(w.eng.close(w.now));
    assert!(!w.eng.is_closed());
    w.step(Duration::from_millis(10));
    assert!(w.eng.is_closed());
}

/// The new address's subnet route and its local route come before the default route;
/// they do not cover the gateway, and must neither resend nor use up the 20 ms
/// allowance that the default route then needs.
#[test]
fn only_a_route_covering_the_gateway_resends_an_outstanding_request() {
    let mut w = World::new();
    w.up();
    w.alive = false;
    w.eng.mobike(w.now, MOVED);
    let first = w.eng.poll_transmit().expect("the update");
    assert!(w.eng.poll_transmit().is_none());
    w.eng.route_added(w.now, Ipv4Addr::new(203, 0, 113, 0), 24);
    w.eng.route_added(w.now, MOVED, 32);
    assert!(
        w.eng.poll_transmit().is_none(),
        "no resend for other routes"
    );
    w.eng
        .route_added(w.now + Duration::from_millis(3), Ipv4Addr::UNSPECIFIED, 0);
    let again = w.eng.poll_transmit().expect("resent for the default route");
    assert_eq!(again.payload, first.payload);
    // A second covering route within 20 ms: no second resend.
    w.eng.route_added(
        w.now + Duration::from_millis(5),
        Ipv4Addr::new(192, 0, 2, 0),
        24,
    );
    assert!(w.eng.poll_transmit().is_none());
    assert_eq!(w.eng.ike().expect("ike").stats().retransmits, 0);
}
