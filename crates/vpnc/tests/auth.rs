//! Authentication against an unmodified strongSwan 5.9.8 gateway: failure hygiene (the
//! gateway learns at once that we rejected it) and certificate identities as a gateway
//! admin writes them (subject DNs, PEM files in x509/, x509ca/, private/).
//! Root and network namespaces, like `tests/lab.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use std::time::{Duration, Instant};

use common::*;

/// We do not trust the gateway's certificate (wrong CA): the client sends AUTHENTICATION_FAILED
/// and a Delete of the IKE SA, so charon drops the SA and the address lease at once instead
/// of holding them until its DPD gives up.
#[test]
fn rejected_gateway_auth_frees_its_sa_at_once() {
    if !need_lab("rejected_gateway_auth_frees_its_sa_at_once") {
        return;
    }
    let mut lab = Lab::up(
        "h",
        GwOpts {
            certs: true,
            ..Default::default()
        },
    );
    let d = pki();
    lab.start_client(&format!(
        "cert = \"{d}/client.der\"\nkey = \"{d}/client.key.p8\"\nca = [\"{d}/other-ca.der\"]"
    ));
    // The gateway establishes its side (it trusts us), then hears from us.
    let end = Instant::now() + Duration::from_secs(10);
    while !lab.charon_log().contains("established between") {
        assert!(Instant::now() < end, "no IKE_AUTH at charon\n{}", lab.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
    let t0 = Instant::now();
    let mut freed = None;
    while t0.elapsed() < Duration::from_secs(3) {
        if !lab.list_sas().contains("ESTABLISHED") {
            freed = Some(t0.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let s = lab.status().unwrap();
    assert_ne!(s["state"], "established", "{s}");
    let freed = freed.unwrap_or_else(|| {
        panic!(
            "charon still holds the SA 3 s later: {}\n{}",
            lab.list_sas(),
            lab.logs()
        )
    });
    eprintln!(
        "gateway freed the rejected SA {} ms after establishing it",
        freed.as_millis()
    );
    let pool = lab.swanctl(&["--list-pools", "--leases"]);
    assert!(!pool.contains("online"), "lease still online: {pool}");
}
