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

/// `ping -i 0.01` for `secs` in the client namespace, on a thread: (sent, received).
fn ping_run(lab: &Lab, secs: u32) -> std::thread::JoinHandle<(u64, u64)> {
    let cl = lab.cl();
    std::thread::spawn(move || {
        let n = (secs * 100).to_string();
        let o = std::process::Command::new("ip")
            .args(["netns", "exec", &cl, "ping", "-q", "-i", "0.01", "-W", "1"])
            .args(["-c", &n, INTERNAL])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        let line = text
            .lines()
            .find(|l| l.contains("transmitted"))
            .unwrap_or_default()
            .to_string();
        let num = |key: &str| -> u64 {
            line.split(',')
                .find(|p| p.contains(key))
                .and_then(|p| p.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        };
        (num("transmitted"), num("received"))
    })
}

/// Wired to Wi-Fi and back, twice: the address leaves interface A and appears on
/// interface B a moment later (break-before-make), then A gets its address back before B
/// loses its own (make-before-break, A is preferred); then A -> B make-before-break and
/// B -> A break-before-make. MOBIKE follows all four moves on the same IKE SA under a TCP
/// stream and a 100/s ping; status names the current address and interface.
#[test]
fn interface_moves_follow_with_mobike() {
    if !need_lab("interface_moves_follow_with_mobike") {
        return;
    }
    let mut lab = Lab::up("m", GwOpts::default());
    let (cl, a) = (lab.cl(), lab.cl_if());
    let (x, _) = lab.add_second_link(None);
    lab.start_client(&format!("interfaces = [\"{x}\"]"));
    let s0 = lab.wait_up();
    assert_eq!(s0["interface"], a.as_str(), "{s0}");
    let tcp = lab.tcp_start(20, 8);
    std::thread::sleep(Duration::from_secs(2));

    // A -> B, break before make (the address is gone 200 ms before the new one appears).
    let pings = ping_run(&lab, 3);
    std::thread::sleep(Duration::from_millis(500));
    ip_n(&cl, &format!("addr del 192.0.2.1/24 dev {a}")).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    // The route first (onlink), so the new address is usable the moment it appears, as
    // when DHCP hands out both.
    ip_n(
        &cl,
        &format!("route add 192.0.2.2/32 via 198.51.100.2 dev {x} onlink"),
    )
    .unwrap();
    ip_n(&cl, &format!("addr add 198.51.100.1/24 dev {x}")).unwrap();
    let s1 = lab.wait_status(Duration::from_secs(10), "move to B", |s| {
        s["local"] == "198.51.100.1:4500" && s["mobike_moves"].as_u64() >= Some(1)
    });
    let (sent1, got1) = pings.join().unwrap();
    assert_eq!(s1["interface"], x.as_str(), "{s1}");
    assert_eq!(s1["ike_spi_i"], s0["ike_spi_i"], "{s1}");

    // B -> A, make before break.
    std::thread::sleep(Duration::from_secs(1));
    let pings = ping_run(&lab, 3);
    std::thread::sleep(Duration::from_millis(500));
    ip_n(&cl, &format!("addr add 192.0.2.1/24 dev {a}")).unwrap();
    ip_n(&cl, &format!("route del 192.0.2.2/32 dev {x}")).unwrap();
    let s2 = lab.wait_status(Duration::from_secs(10), "move back to A", |s| {
        s["local"] == "192.0.2.1:4500" && s["mobike_moves"].as_u64() >= Some(2)
    });
    ip_n(&cl, &format!("addr del 198.51.100.1/24 dev {x}")).unwrap();
    let (sent2, got2) = pings.join().unwrap();
    assert_eq!(s2["interface"], a.as_str(), "{s2}");

    // Second round, the other way: A -> B make-before-break (B is up before A goes),
    // B -> A break-before-make.
    std::thread::sleep(Duration::from_secs(1));
    let pings = ping_run(&lab, 3);
    std::thread::sleep(Duration::from_millis(500));
    ip_n(
        &cl,
        &format!("route add 192.0.2.2/32 via 198.51.100.2 dev {x} onlink"),
    )
    .unwrap();
    ip_n(&cl, &format!("addr add 198.51.100.1/24 dev {x}")).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    ip_n(&cl, &format!("addr del 192.0.2.1/24 dev {a}")).unwrap();
    let s3 = lab.wait_status(Duration::from_secs(10), "A -> B make-before-break", |s| {
        s["local"] == "198.51.100.1:4500" && s["mobike_moves"].as_u64() >= Some(3)
    });
    let (sent3, got3) = pings.join().unwrap();
    assert_eq!(s3["interface"], x.as_str(), "{s3}");
    std::thread::sleep(Duration::from_secs(1));
    let pings = ping_run(&lab, 3);
    std::thread::sleep(Duration::from_millis(500));
    ip_n(&cl, &format!("addr del 198.51.100.1/24 dev {x}")).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    ip_n(&cl, &format!("addr add 192.0.2.1/24 dev {a}")).unwrap();
    let s4 = lab.wait_status(Duration::from_secs(10), "B -> A break-before-make", |s| {
        s["local"] == "192.0.2.1:4500" && s["mobike_moves"].as_u64() >= Some(4)
    });
    let (sent4, got4) = pings.join().unwrap();
    assert_eq!(s4["interface"], a.as_str(), "{s4}");
    eprintln!(
        "interface move A->B (make-before-break): {} of {sent3} pings lost, MOBIKE {} ms; \
         B->A (break-before-make, 200 ms): {} of {sent4} lost, MOBIKE {} ms",
        sent3.saturating_sub(got3),
        s3["last_move_ms"],
        sent4.saturating_sub(got4),
        s4["last_move_ms"]
    );
    assert!(sent3 > 200 && sent4 > 200, "{sent3} {sent4}");
    assert!(
        sent3 - got3.min(sent3) <= 100,
        "A->B mbb lost {}",
        sent3 - got3.min(sent3)
    );
    assert!(
        sent4 - got4.min(sent4) <= 150,
        "B->A bbm lost {}",
        sent4 - got4.min(sent4)
    );

    let (bytes, iv) = lab.tcp_finish(tcp);
    let s = lab.status().unwrap();
    assert_eq!(s["ike_spi_i"], s0["ike_spi_i"], "{s}");
    assert_eq!(s["reconnects"], 0, "{s}");
    let sas = lab.list_sas();
    assert!(sas.contains("192.0.2.1[4500]"), "{sas}");
    eprintln!(
        "interface move A->B (break-before-make, 200 ms without an address): {} of {sent1} pings \
         lost (10 ms apart), MOBIKE {} ms; B->A (make-before-break): {} of {sent2} lost, MOBIKE {} ms; \
         TCP {bytes} bytes, per second {iv:?}",
        sent1.saturating_sub(got1),
        s1["last_move_ms"],
        sent2.saturating_sub(got2),
        s2["last_move_ms"]
    );
    // TCP survives all four moves; each break-before-make gap may empty one second.
    let empty = iv.iter().skip(1).filter(|b| **b == 0).count();
    assert!(
        bytes > 1_000_000 && empty <= 2,
        "{bytes} {iv:?}\n{}",
        lab.logs()
    );
    // 200 ms without any address is 20 pings; the bounds leave room for a loaded machine
    // (not following at all loses every ping and times out above).
    assert!(sent1 > 200 && sent2 > 200, "{sent1} {sent2}");
    let (lost1, lost2) = (sent1 - got1.min(sent1), sent2 - got2.min(sent2));
    assert!(lost1 <= 150, "A->B lost {lost1} of {sent1}\n{}", lab.logs());
    assert!(lost2 <= 100, "B->A lost {lost2} of {sent2}\n{}", lab.logs());
    assert!(lab.ping(2), "{}", lab.logs());
}
