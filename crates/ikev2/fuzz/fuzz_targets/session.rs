//! Authenticated garbage: after a real in-memory handshake, arbitrary payload chains are
//! encrypted with the genuine SK keys and fed to either side, so the post-decryption
//! handlers (INFORMATIONAL, CREATE_CHILD_SA, MOBIKE, Delete, fragments) see them.
//! Input: [direction/exchange, message-id offset, first payload type, fragment, inner...]*
//! separated by 0xfe 0xfe.
#![no_main]
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use ikev2::crypto::sk::SkKeys;
use ikev2::crypto::Encr;
use ikev2::wire::{ExchangeType, Header, Identification, PayloadType, FLAG_INITIATOR};
use ikev2::{Config, Initiator, Responder};
use libfuzzer_sys::fuzz_target;

fn pump(i: &mut Initiator, r: &mut Responder, now: Instant) {
    for _ in 0..8 {
        let mut moved = false;
        while let Some(t) = i.poll_transmit() {
            r.handle_datagram(now, t.src, t.dst, &t.payload);
            moved = true;
        }
        while let Some(t) = r.poll_transmit() {
            i.handle_datagram(now, t.src, t.dst, &t.payload);
            moved = true;
        }
        while i.poll_event().is_some() {}
        while r.poll_event().is_some() {}
        if !moved {
            break;
        }
    }
}

fuzz_target!(|data: &[u8]| {
    #[allow(clippy::disallowed_methods)]
    let mut now = Instant::now();
    let li = SocketAddr::new(Ipv4Addr::new(10, 0, 0, 2).into(), 500);
    let lr = SocketAddr::new(Ipv4Addr::new(10, 0, 0, 1).into(), 500);
    let mut ci = Config::psk(b"fuzz", Identification::fqdn("c"));
    ci.request_vip = true;
    ci.mobike = true;
    let mut cr = Config::psk(b"fuzz", Identification::fqdn("gw"));
    cr.vip_pool = Some((Ipv4Addr::new(10, 9, 0, 1), 4));
    let mut i = Initiator::new(ci, li, lr, [1; 32], now);
    let mut r = Responder::new(cr, [2; 32]);
    pump(&mut i, &mut r, now);
    let Some(k) = i.ike_keys_for_debug() else { return };
    let (il, rl) = (i.local(), i.remote());
    let mut rng = rand::rngs::mock::StepRng::new(7, 13);
    let mut next_i = 2u32;
    let mut next_r = 0u32;
    for chunk in data.split(|b| *b == 0xfe) {
        let [ctl, mid, first, frag, inner @ ..] = chunk else { continue };
        let to_responder = ctl & 0x80 == 0;
        let exchange = ExchangeType(34 + (ctl & 0x03) + 1);
        let flags = if to_responder { FLAG_INITIATOR } else { 0 } | (ctl & 0x20);
        let base = if to_responder { next_i } else { next_r };
        let header = Header {
            spi_i: k.spi_i,
            spi_r: k.spi_r,
            next_payload: PayloadType::NONE,
            version: 0x20,
            exchange,
            flags,
            message_id: base.wrapping_add(u32::from(mid % 3)),
            length: 0,
        };
        let keys = if to_responder {
            SkKeys { encr: Encr::AesGcm16 { key: 32 }, integ: None, ke: &k.sk_ei, ka: &k.sk_ai }
        } else {
            SkKeys { encr: Encr::AesGcm16 { key: 32 }, integ: None, ke: &k.sk_er, ka: &k.sk_ar }
        };
        let fragment = (frag & 0x80 != 0).then_some((u16::from(frag & 0x3) + 1, u16::from((frag >> 2) & 0x3) + 1));
        let Ok(msg) = keys.seal(&header, PayloadType(*first), fragment.filter(|(n, t)| n <= t), inner, &mut rng) else {
            continue;
        };
        let mut d = vec![0, 0, 0, 0];
        d.extend_from_slice(&msg);
        if to_responder {
            r.handle_datagram(now, il, rl, &d);
            if mid % 3 == 0 {
                next_i = next_i.wrapping_add(1);
            }
        } else {
            i.handle_datagram(now, rl, il, &d);
            if mid % 3 == 0 {
                next_r = next_r.wrapping_add(1);
            }
        }
        pump(&mut i, &mut r, now);
        now += Duration::from_millis(u64::from(ctl & 0x1f) * 500);
        i.handle_timeout(now);
        r.handle_timeout(now);
        pump(&mut i, &mut r, now);
    }
});
