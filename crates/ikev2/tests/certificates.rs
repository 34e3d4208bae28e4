#![allow(clippy::unwrap_used)]
//! X.509 authentication (RFC 7427 digital signatures) between our initiator and responder.
mod common;

use std::time::Duration;

use common::*;
use ikev2::crypto::cert::LocalCert;
use ikev2::wire::{DhId, NotifyType};
use ikev2::IkeError;

fn data(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

const T2026: u64 = 1_780_000_000;

fn gw_cert() -> LocalCert {
    LocalCert {
        cert_der: data("gw.der"),
        key_pkcs8: data("gw.key.p8"),
    }
}

fn client_cert() -> LocalCert {
    LocalCert {
        cert_der: data("client.der"),
        key_pkcs8: data("client.key.p8"),
    }
}

fn run(ci: ikev2::Config, cr: ikev2::Config, seed: u64) -> Pair {
    let mut p = Pair::new(ci, cr, seed);
    p.i.set_unix_time(T2026);
    p.r.set_unix_time(T2026);
    p.run(Duration::from_secs(3));
    p
}

#[test]
fn certificates_both_ways() {
    let (mut ci, mut cr) = configs(DhId::ECP_256);
    ci.local_cert = Some(client_cert());
    ci.trust_anchors = vec![data("ca.der")];
    ci.psk.clear();
    cr.local_cert = Some(gw_cert());
    cr.trust_anchors = vec![data("ca.der")];
    cr.psk.clear();
    let p = run(ci, cr, 60);
    assert!(p.i.is_established(), "{:?} {:?}", p.i_events, p.r_events);
    assert_mirror(
        &Pair::child(&p.i_events).unwrap(),
        &Pair::child(&p.r_events).unwrap(),
    );
    // IKE_SA_INIT carried SIGNATURE_HASH_ALGORITHMS both ways
    let init: Vec<_> = p
        .wire
        .iter()
        .take(2)
        .map(|(_, t)| ikev2::wire::Message::parse(&t.payload).unwrap())
        .collect();
    for m in &init {
        let n = m.notify(NotifyType::SIGNATURE_HASH_ALGORITHMS).unwrap();
        // SHA2-256, SHA2-384, SHA2-512 and Identity (RFC 8420, for Ed25519).
        assert_eq!(n.data, vec![0, 2, 0, 3, 0, 4, 0, 5]);
    }
}

#[test]
fn gateway_certificate_client_psk() {
    let (mut ci, mut cr) = configs(DhId::CURVE25519);
    ci.trust_anchors = vec![data("ca.der")];
    cr.local_cert = Some(gw_cert());
    let p = run(ci, cr, 61);
    assert!(p.i.is_established(), "{:?} {:?}", p.i_events, p.r_events);
}

#[test]
fn untrusted_gateway_certificate_is_rejected() {
    let (mut ci, mut cr) = configs(DhId::CURVE25519);
    ci.trust_anchors = vec![data("other-ca.der")];
    ci.psk = b"correct horse battery staple".to_vec();
    cr.local_cert = Some(gw_cert());
    let p = run(ci, cr, 62);
    assert_eq!(
        Pair::down(&p.i_events),
        Some(Some(IkeError::AuthenticationFailed))
    );
}

#[test]
fn certificate_for_another_name_is_rejected() {
    let (mut ci, mut cr) = configs(DhId::CURVE25519);
    ci.trust_anchors = vec![data("ca.der")];
    // The gateway presents the client's certificate while claiming to be gw.example.
    cr.local_cert = Some(client_cert());
    let p = run(ci, cr, 63);
    assert_eq!(
        Pair::down(&p.i_events),
        Some(Some(IkeError::AuthenticationFailed))
    );
}

#[test]
fn client_certificate_without_trust_on_gateway_fails() {
    let (mut ci, mut cr) = configs(DhId::CURVE25519);
    ci.local_cert = Some(client_cert());
    cr.trust_anchors = vec![];
    let p = run(ci, cr, 64);
    assert_eq!(
        Pair::down(&p.i_events),
        Some(Some(IkeError::PeerNotify(
            NotifyType::AUTHENTICATION_FAILED
        )))
    );
}
