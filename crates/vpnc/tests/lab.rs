//! Lab tests against an unmodified strongSwan 5.9.8 gateway (root, network namespaces).
//! They fail when they cannot run, unless MIPSEC_SKIP_LAB=1 (then a loud SKIP line).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use common::*;

/// (a) PSK connect, TIA from the pool, ping and a TCP stream to the internal host.
#[test]
fn psk_connect_ping_tcp() {
    if !need_lab("psk_connect_ping_tcp") {
        return;
    }
    let mut lab = Lab::up("a", GwOpts::default());
    lab.start_client("");
    let s = lab.wait_up();
    assert_eq!(s["tia"], "10.99.0.1", "{s}");
    assert_eq!(s["dns"][0], "10.99.0.1", "{s}");
    let addr = lab
        .ns(&lab.cl(), &["ip", "-4", "addr", "show", "dev", &lab.tun()])
        .unwrap();
    assert!(addr.contains("10.99.0.1/32"), "{addr}");
    assert!(lab.ping(3), "ping failed\n{}", lab.logs());
    let sas = lab.list_sas();
    assert!(
        sas.contains("ESTABLISHED") && sas.contains("10.99.0.1/32"),
        "{sas}"
    );
    let ip = lab.iperf_start(3, "20M");
    let (bytes, iv, _) = lab.iperf_finish(ip);
    assert!(bytes > 1_000_000, "{bytes} {iv:?}");
    let s = lab.status().unwrap();
    assert_eq!(s["esp_drops"], 0, "{s}");
    eprintln!(
        "IKE setup {} ms, CHILD_SA {} ms",
        s["ike_setup_ms"], s["child_setup_ms"]
    );
}
