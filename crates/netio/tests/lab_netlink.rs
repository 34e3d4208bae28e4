//! rtnetlink operations, events and gratuitous ARP, checked with iproute2 (root only).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::Ipv4Addr;
use std::time::Duration;

use common::*;
use netio::netlink::arp::{self, ArpOp};
use netio::netlink::{Route, Rule};
use netio::{NetEvent, NetEvents, Netlink};

fn ip4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn mac_str(mac: &[u8]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[test]
fn addresses_routes_rules_neighbours_round_trip_through_iproute2() {
    if !lab("addresses_routes_rules_neighbours_round_trip_through_iproute2") {
        return;
    }
    let p = Pair::new("nl1");
    let a = p.a.name.clone();
    p.a.run(move || async move {
        let ip = |args: &[&str]| {
            let mut v = vec!["ip", "netns", "exec", &a, "ip"];
            v.extend_from_slice(args);
            sh(&v)
        };
        let nl = Netlink::new().unwrap();
        let idx = nl.ifindex("a0").await.unwrap();
        let sys_idx = sh(&[
            "ip",
            "netns",
            "exec",
            &a,
            "cat",
            "/sys/class/net/a0/ifindex",
        ]);
        assert_eq!(idx.to_string(), sys_idx.trim());
        assert!(matches!(
            nl.ifindex("nope0").await,
            Err(netio::Error::NoSuchLink(_))
        ));
        let link = nl.link_by_index(idx).await.unwrap();
        assert_eq!(link.name, "a0");
        assert_eq!(link.mac.len(), 6);
        assert!(link.is_running());

        // Addresses.
        nl.add_address(idx, ip4("10.99.3.1"), 24).await.unwrap();
        assert!(ip(&["-4", "-o", "addr", "show", "dev", "a0"]).contains("inet 10.99.3.1/24"));
        let addrs = nl.addresses(Some(idx)).await.unwrap();
        let listed: Vec<String> = addrs
            .iter()
            .map(|a| format!("{}/{}", a.addr, a.prefix))
            .collect();
        assert_eq!(listed, vec!["10.99.1.1/24", "10.99.3.1/24"]);
        assert!(addrs.iter().all(|a| a.ifindex == idx));
        let dup = nl.add_address(idx, ip4("10.99.3.1"), 24).await.unwrap_err();
        assert_eq!(dup.raw_os_error(), Some(libc::EEXIST), "{dup}");

        // Routes: via a gateway in table 100 with a metric; on-link in main; table > 255.
        let r1 = Route::new(ip4("10.99.50.0"), 24)
            .via(ip4("10.99.3.254"))
            .dev(idx)
            .table(100)
            .metric(77);
        let r2 = Route::new(ip4("10.99.60.0"), 24)
            .dev(idx)
            .src(ip4("10.99.3.1"));
        let r3 = Route::new(ip4("0.0.0.0"), 0)
            .via(ip4("10.99.1.2"))
            .table(1000);
        nl.add_route(&r1).await.unwrap();
        nl.add_route(&r2).await.unwrap();
        nl.add_route(&r3).await.unwrap();
        assert!(ip(&["route", "show", "table", "100"])
            .contains("10.99.50.0/24 via 10.99.3.254 dev a0 proto static metric 77"));
        assert!(ip(&["route", "show"])
            .contains("10.99.60.0/24 dev a0 proto static scope link src 10.99.3.1"));
        assert!(ip(&["route", "show", "table", "1000"])
            .contains("default via 10.99.1.2 dev a0 proto static"));
        let dup = nl.add_route(&r1).await.unwrap_err();
        assert_eq!(dup.raw_os_error(), Some(libc::EEXIST));
        nl.replace_route(&r1).await.unwrap();
        // Policy rules.
        let from = Rule {
            from: Some((ip4("10.99.3.0"), 24)),
            fwmark: None,
            table: 100,
            priority: Some(1000),
        };
        let mark = Rule {
            from: None,
            fwmark: Some(0x42),
            table: 1000,
            priority: Some(1001),
        };
        nl.add_rule(&from).await.unwrap();
        nl.add_rule(&mark).await.unwrap();
        let rules = ip(&["rule", "show"]);
        assert!(
            rules.contains("1000:\tfrom 10.99.3.0/24 lookup 100"),
            "{rules}"
        );
        assert!(
            rules.contains("1001:\tfrom all fwmark 0x42 lookup 1000"),
            "{rules}"
        );
        // The rule routes: a lookup from 10.99.3.1 to 10.99.50.9 uses table 100.
        let got = ip(&["route", "get", "10.99.50.9", "from", "10.99.3.1"]);
        assert!(got.contains("via 10.99.3.254"), "{got}");
        let got = ip(&["route", "get", "192.0.2.9", "mark", "0x42"]);
        assert!(
            got.contains("via 10.99.1.2") && got.contains("table 1000"),
            "{got}"
        );

        // Proxy ARP and a permanent neighbour.
        nl.add_proxy_arp(idx, ip4("10.99.3.50")).await.unwrap();
        assert!(ip(&["neigh", "show", "proxy"]).contains("10.99.3.50 dev a0 proxy"));
        assert_eq!(
            nl.proxy_arps(Some(idx)).await.unwrap(),
            vec![(idx, ip4("10.99.3.50"))]
        );
        nl.set_neighbour(idx, ip4("10.99.3.60"), [2, 0, 0, 0, 0, 0x60])
            .await
            .unwrap();
        assert!(ip(&["neigh", "show", "dev", "a0"])
            .contains("10.99.3.60 lladdr 02:00:00:00:00:60 PERMANENT"));

        // Tear everything down again and check it is gone.
        nl.del_neighbour(idx, ip4("10.99.3.60")).await.unwrap();
        nl.del_proxy_arp(idx, ip4("10.99.3.50")).await.unwrap();
        nl.del_rule(&from).await.unwrap();
        nl.del_rule(&mark).await.unwrap();
        nl.del_route(&r1).await.unwrap();
        nl.del_route(&r2).await.unwrap();
        nl.del_route(&r3).await.unwrap();
        let gone = nl.del_route(&r1).await.unwrap_err();
        assert_eq!(gone.raw_os_error(), Some(libc::ESRCH), "{gone}");
        nl.del_address(idx, ip4("10.99.3.1"), 24).await.unwrap();
        assert!(!ip(&["neigh", "show", "proxy"]).contains("10.99.3.50"));
        assert!(!ip(&["neigh", "show", "dev", "a0"]).contains("10.99.3.60"));
        assert!(!ip(&["rule", "show"]).contains("lookup 100"));
        assert!(ip(&["route", "show", "table", "100"]).trim().is_empty());
        assert!(!ip(&["route", "show"]).contains("10.99.60.0"));
        assert!(!ip(&["-4", "addr", "show", "dev", "a0"]).contains("10.99.3.1"));
        assert!(nl.proxy_arps(Some(idx)).await.unwrap().is_empty());

        // Link down/up and MTU.
        nl.set_link_mtu(idx, 1400).await.unwrap();
        nl.set_link_up(idx, false).await.unwrap();
        let shown = ip(&["-o", "link", "show", "a0"]);
        assert!(
            shown.contains("mtu 1400") && shown.contains("state DOWN"),
            "{shown}"
        );
        assert!(!nl.link_by_index(idx).await.unwrap().admin_up);
        nl.set_link_up(idx, true).await.unwrap();
        assert!(nl.link_by_index(idx).await.unwrap().admin_up);

        // Invalid arguments never reach the kernel.
        assert!(matches!(
            nl.add_address(idx, ip4("10.0.0.1"), 33).await,
            Err(netio::Error::InvalidArgument(_))
        ));
        assert!(matches!(
            nl.add_route(&Route::new(ip4("10.0.0.0"), 8)).await,
            Err(netio::Error::InvalidArgument(_))
        ));
    });
}

/// A home agent's proxy ARP: `a` answers b's ARP for an address routed elsewhere.
#[test]
fn proxy_arp_entry_makes_the_kernel_answer_for_an_away_node() {
    if !lab("proxy_arp_entry_makes_the_kernel_answer_for_an_away_node") {
        return;
    }
    assert!(
        try_sh(&["sh", "-c", "command -v ping"]).status.success(),
        "this test needs `ping` (Debian package iputils-ping, see scripts/install-deps.sh)"
    );
    let p = Pair::new("nl2");
    p.a.sysctl("net.ipv4.ip_forward=1");
    // Proxied ARP replies are delayed by up to proxy_delay (0.8 s by default).
    p.a.sysctl("net.ipv4.neigh.a0.proxy_delay=0");
    let b = p.b.name.clone();
    p.a.run(move || async move {
        let ping_from_b = || {
            let b = b.clone();
            tokio::task::spawn_blocking(move || {
                try_sh(&[
                    "ip",
                    "netns",
                    "exec",
                    &b,
                    "ping",
                    "-c",
                    "1",
                    "-W",
                    "1",
                    "10.99.1.50",
                ]);
                sh(&[
                    "ip",
                    "netns",
                    "exec",
                    &b,
                    "ip",
                    "neigh",
                    "show",
                    "10.99.1.50",
                    "dev",
                    "b0",
                ])
            })
        };
        let nl = Netlink::new().unwrap();
        // The away node's address leaves through the TUN, not through a0.
        let tun = netio::Tun::open_with(
            "mtun0",
            &netio::TunOptions {
                up: true,
                ..Default::default()
            },
        )
        .unwrap();
        let a0 = nl.ifindex("a0").await.unwrap();
        let mac = mac_str(&nl.link_by_index(a0).await.unwrap().mac);
        nl.add_route(&Route::new(ip4("10.99.1.50"), 32).dev(tun.ifindex().unwrap()))
            .await
            .unwrap();
        // Control: without the proxy entry nobody answers b's ARP.
        let before = ping_from_b().await.unwrap();
        assert!(
            !before.contains("lladdr"),
            "answered without proxy entry: {before}"
        );
        nl.add_proxy_arp(a0, ip4("10.99.1.50")).await.unwrap();
        // b retries until the (possibly delayed) proxied answer lands in its table.
        let mut after = String::new();
        for _ in 0..3 {
            after = ping_from_b().await.unwrap();
            if after.contains(&format!("lladdr {mac}")) {
                break;
            }
        }
        assert!(
            after.contains(&format!("lladdr {mac}")),
            "b did not learn 10.99.1.50 at a0's MAC {mac}: {after}"
        );
        drop(tun);
    });
}

async fn expect(ev: &mut NetEvents, what: &str, pred: impl Fn(&NetEvent) -> bool) -> NetEvent {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let e = tokio::time::timeout_at(deadline, ev.next())
            .await
            .unwrap_or_else(|_| panic!("no {what} event within 5 s"))
            .expect("event stream closed");
        if pred(&e) {
            return e;
        }
    }
}

#[test]
fn link_carrier_and_address_events() {
    if !lab("link_carrier_and_address_events") {
        return;
    }
    let p = Pair::new("nl3");
    let a = p.a.name.clone();
    let b = p.b.name.clone();
    p.a.run(move || async move {
        let in_a = |args: &[&str]| {
            let mut v = vec!["ip", "netns", "exec", &a];
            v.extend_from_slice(args);
            sh(&v)
        };
        let in_b = |args: &[&str]| {
            let mut v = vec!["ip", "netns", "exec", &b];
            v.extend_from_slice(args);
            sh(&v)
        };
        let nl = Netlink::new().unwrap();
        let a0 = nl.ifindex("a0").await.unwrap();
        let mut ev = nl.events().await.unwrap();
        assert_eq!(
            ev.link_state().is_running(a0),
            Some(true),
            "seeded from the dump"
        );

        // Administrative down/up of our own end.
        in_a(&["ip", "link", "set", "a0", "down"]);
        let e = expect(&mut ev, "LinkDown(a0)", |e| {
            matches!(e, NetEvent::LinkDown { .. })
        })
        .await;
        assert_eq!(
            e,
            NetEvent::LinkDown {
                ifindex: a0,
                name: "a0".into()
            }
        );
        in_a(&["ip", "link", "set", "a0", "up"]);
        let e = expect(&mut ev, "LinkUp(a0)", |e| {
            matches!(e, NetEvent::LinkUp { .. })
        })
        .await;
        assert_eq!(
            e,
            NetEvent::LinkUp {
                ifindex: a0,
                name: "a0".into()
            }
        );

        // Carrier: the peer going down takes IFF_LOWER_UP away from a0.
        in_b(&["ip", "link", "set", "b0", "down"]);
        let e = expect(&mut ev, "carrier loss", |e| {
            matches!(e, NetEvent::LinkDown { .. })
        })
        .await;
        assert_eq!(
            e,
            NetEvent::LinkDown {
                ifindex: a0,
                name: "a0".into()
            }
        );
        let shown = in_a(&["ip", "link", "show", "a0"]);
        assert!(
            shown.contains("NO-CARRIER") && shown.contains(",UP"),
            "{shown}"
        );
        in_b(&["ip", "link", "set", "b0", "up"]);
        let e = expect(&mut ev, "carrier back", |e| {
            matches!(e, NetEvent::LinkUp { .. })
        })
        .await;
        assert_eq!(
            e,
            NetEvent::LinkUp {
                ifindex: a0,
                name: "a0".into()
            }
        );

        // Addresses, as a DHCP client would configure them.
        in_a(&["ip", "addr", "add", "198.51.100.7/24", "dev", "a0"]);
        let e = expect(&mut ev, "AddrAdded", |e| {
            matches!(e, NetEvent::AddrAdded { .. })
        })
        .await;
        assert_eq!(
            e,
            NetEvent::AddrAdded {
                ifindex: a0,
                addr: ip4("198.51.100.7"),
                prefix: 24
            }
        );
        in_a(&["ip", "addr", "del", "198.51.100.7/24", "dev", "a0"]);
        let e = expect(&mut ev, "AddrRemoved", |e| {
            matches!(e, NetEvent::AddrRemoved { .. })
        })
        .await;
        assert_eq!(
            e,
            NetEvent::AddrRemoved {
                ifindex: a0,
                addr: ip4("198.51.100.7"),
                prefix: 24
            }
        );

        // Deleting the link.
        in_a(&["ip", "link", "del", "a0"]);
        let e = expect(&mut ev, "LinkRemoved", |e| {
            matches!(e, NetEvent::LinkRemoved { .. })
        })
        .await;
        assert_eq!(
            e,
            NetEvent::LinkRemoved {
                ifindex: a0,
                name: "a0".into()
            }
        );
    });
}

#[test]
fn gratuitous_arp_updates_the_peer_neighbour_table() {
    if !lab("gratuitous_arp_updates_the_peer_neighbour_table") {
        return;
    }
    let p = Pair::new("garp");
    // Accept gratuitous ARP for addresses not yet in the table (off by default).
    p.b.sysctl("net.ipv4.conf.all.arp_accept=1");
    p.b.sysctl("net.ipv4.conf.b0.arp_accept=1");
    let mac = p.a.run(|| async {
        let nl = Netlink::new().unwrap();
        let a0 = nl.ifindex("a0").await.unwrap();
        // Request opcode, a0's own MAC (the home agent intercepting for 10.99.1.77).
        nl.gratuitous_arp(a0, ip4("10.99.1.77")).await.unwrap();
        // Reply opcode, an explicit MAC (RFC 5944 4.6 allows either).
        arp::send_gratuitous(
            a0,
            [2, 0, 0, 0xaa, 0xbb, 0xcc],
            ip4("10.99.1.78"),
            ArpOp::Reply,
        )
        .unwrap();
        nl.link_by_index(a0).await.unwrap().mac
    });
    let want77 = format!("10.99.1.77 lladdr {}", mac_str(&mac));
    let got = wait_for(Duration::from_secs(3), || {
        let s = p.b.exec(&["ip", "neigh", "show", "dev", "b0"]);
        (s.contains(&want77) && s.contains("10.99.1.78 lladdr 02:00:00:aa:bb:cc")).then_some(s)
    });
    assert!(
        got.is_some(),
        "b's neighbour table lacks the announced entries: {}",
        p.b.exec(&["ip", "neigh", "show", "dev", "b0"])
    );
}

/// Issue 15: a socket opened and closed per announcement cost ~11 ms in `close()`
/// (80 new bindings a second). One long-lived socket announces thousands a second.
#[test]
fn one_long_lived_packet_socket_announces_thousands_quickly() {
    if !lab("one_long_lived_packet_socket_announces_thousands_quickly") {
        return;
    }
    let p = Pair::new("garpn");
    p.b.sysctl("net.ipv4.conf.all.arp_accept=1");
    p.b.sysctl("net.ipv4.conf.b0.arp_accept=1");
    let (fast, slow) = p.a.run(|| async {
        let nl = Netlink::new().unwrap();
        let a0 = nl.ifindex("a0").await.unwrap();
        let ann = nl.arp_announcer(a0).await.unwrap();
        let t = std::time::Instant::now();
        let mut sent = 0;
        for i in 0..500u32 {
            // A full queue is an error, never a stall; the count shows whether it happened.
            if ann
                .announce(Ipv4Addr::from(0x0a63_0200 + i), ArpOp::Request)
                .is_ok()
            {
                sent += 1;
            }
            if i % 64 == 63 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        let fast = t.elapsed();
        assert!(sent >= 400, "only {sent} of 500 sent");
        let t = std::time::Instant::now();
        for i in 0..20u32 {
            nl.gratuitous_arp(a0, Ipv4Addr::from(0x0a63_0300 + i))
                .await
                .unwrap();
        }
        (fast, t.elapsed())
    });
    eprintln!(
        "long-lived socket: 500 announcements in {fast:?}; socket per announcement: 20 in {slow:?}"
    );
    assert!(fast < Duration::from_secs(1), "{fast:?}");
    let got = wait_for(Duration::from_secs(3), || {
        let s = p.b.exec(&["ip", "neigh", "show", "dev", "b0"]);
        s.contains("10.99.2.7 ").then_some(s)
    });
    assert!(got.is_some(), "b did not learn 10.99.2.7");
}
