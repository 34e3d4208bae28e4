//! Path handling against an unmodified strongSwan 5.9.8 gateway: behind a NAT an idle
//! tunnel makes no address update; the client follows a move to another interface.
//! Root and network namespaces, like `tests/lab.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use common::*;

/// Behind a NAT whose UDP mappings expire after 5 s, the tunnel sits idle for 8 s, then
/// single pings go out now and then: NAT keepalives (RFC 3948) and liveness checks keep
/// the mapping, every ping is answered, and no UPDATE_SA_ADDRESSES goes out (counters
/// `nat_probes` and `mobike_moves` stay 0; charon keeps our first mapping).
#[test]
fn idle_behind_nat_makes_no_address_update() {
    if !need_lab("idle_behind_nat_makes_no_address_update") {
        return;
    }
    let mut lab = Lab::up(
        "n",
        GwOpts {
            nat: true,
            ..Default::default()
        },
    );
    for t in [
        "nf_conntrack_udp_timeout=5",
        "nf_conntrack_udp_timeout_stream=5",
    ] {
        lab.ns(&lab.rt(), &["sysctl", "-qw", &format!("net.netfilter.{t}")])
            .unwrap();
    }
    lab.start_client("nat_keepalive = 2");
    let s0 = lab.wait_up();
    assert_eq!(s0["behind_nat"], true, "{s0}");
    assert!(lab.ping(1), "{}", lab.logs());
    let before = lab.list_sas();
    std::thread::sleep(Duration::from_secs(8));
    for _ in 0..4 {
        assert!(lab.ping(1), "single ping after idle\n{}", lab.logs());
        std::thread::sleep(Duration::from_millis(1500));
    }
    let s = lab.status().unwrap();
    assert_eq!(s["nat_probes"], 0, "{s}\n{}", lab.logs());
    assert_eq!(s["mobike_moves"], 0, "{s}");
    assert_eq!(s["reconnects"], 0, "{s}");
    assert_eq!(s["ike_spi_i"], s0["ike_spi_i"], "{s}");
    let port = |sas: &str| {
        sas.lines()
            .find(|l| l.contains("remote") && l.contains("192.0.2.1["))
            .map(str::to_string)
    };
    assert_eq!(
        port(&lab.list_sas()),
        port(&before),
        "charon's view of our mapping"
    );
}
