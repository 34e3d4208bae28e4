//! Marked entries (protocol ids on neighbours and routes, rules by priority and
//! table): what a daemon uses to find and remove what a killed instance left.
//! Checked with iproute2 (root only).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::Ipv4Addr;

use common::*;
use netio::netlink::{Route, Rule};
use netio::Netlink;

const MARK: u8 = 241;

#[test]
fn marked_neighbours_routes_and_rules_are_found_and_removed() {
    if !lab("marked_neighbours_routes_and_rules_are_found_and_removed") {
        return;
    }
    let p = Pair::new("mk1");
    let a = p.a.name.clone();
    p.a.run(move || async move {
        let ip = |args: &[&str]| {
            let mut v = vec!["ip", "netns", "exec", &a, "ip"];
            v.extend_from_slice(args);
            sh(&v)
        };
        let nl = Netlink::new().unwrap();
        let idx = nl.ifindex("a0").await.unwrap();
        let home = Ipv4Addr::new(10, 10, 0, 100);
        let other = Ipv4Addr::new(10, 10, 0, 101);
        nl.set_neighbour_marked(idx, home, [2, 0, 0, 0, 0, 1], MARK)
            .await
            .unwrap();
        // Unmarked entries are somebody else's and stay.
        nl.set_neighbour(idx, other, [2, 0, 0, 0, 0, 2])
            .await
            .unwrap();
        nl.add_proxy_arp_marked(idx, home, MARK).await.unwrap();
        nl.add_proxy_arp(idx, other).await.unwrap();
        let r_main = Route::new(home, 32).dev(idx);
        let r_table = Route::new(Ipv4Addr::UNSPECIFIED, 0).dev(idx).table(434);
        nl.replace_route_marked(&r_main, MARK).await.unwrap();
        nl.replace_route_marked(&r_table, MARK).await.unwrap();
        nl.replace_route(&Route::new(other, 32).dev(idx))
            .await
            .unwrap();
        for from in [home, other] {
            nl.add_rule(&Rule {
                from: Some((from, 32)),
                fwmark: None,
                table: 434,
                priority: Some(1000),
            })
            .await
            .unwrap();
        }
        nl.add_rule(&Rule {
            from: Some((home, 32)),
            fwmark: None,
            table: 435,
            priority: Some(1000),
        })
        .await
        .unwrap();
        assert!(ip(&["-d", "neigh", "show", "dev", "a0"]).contains("PERMANENT proto 241"));
        assert_eq!(
            nl.neighbours_marked(MARK, false).await.unwrap(),
            vec![(idx, home)]
        );
        assert_eq!(
            nl.neighbours_marked(MARK, true).await.unwrap(),
            vec![(idx, home)]
        );
        let mut routes = nl.routes_marked(MARK).await.unwrap();
        routes.sort_by_key(|r| r.prefix);
        assert_eq!(routes.len(), 2, "{routes:?}");
        assert_eq!(
            (routes[0].dst, routes[0].table, routes[0].oif),
            (Ipv4Addr::UNSPECIFIED, Some(434), Some(idx))
        );
        assert_eq!(
            (routes[1].dst, routes[1].prefix, routes[1].table),
            (home, 32, Some(254))
        );
        for r in &routes {
            nl.del_route_marked(r, MARK).await.unwrap();
        }
        assert!(nl.routes_marked(MARK).await.unwrap().is_empty());
        assert!(ip(&["route", "show", "table", "all"]).contains(&format!("{other} dev a0")));
        assert_eq!(nl.del_rules_at(1000, 434).await.unwrap(), 2);
        let rules = ip(&["rule", "show"]);
        assert!(!rules.contains("lookup 434"), "{rules}");
        assert!(rules.contains("lookup 435"), "{rules}");
    });
}

/// Host routes in bulk (the home agent's route worker): 2000 added in batches,
/// found with iproute2 with their mark, replaced without error, removed; the
/// removal of a route that is not there comes back as that request's error,
/// and the others of its batch still apply.
#[test]
fn route_batches_add_replace_and_remove_host_routes() {
    if !lab("route_batches_add_replace_and_remove_host_routes") {
        return;
    }
    let p = Pair::new("mk2");
    let a = p.a.name.clone();
    p.a.run(move || async move {
        let count_marked = || {
            let out = std::process::Command::new("ip")
                .args(["netns", "exec", &a, "ip", "-4", "route", "show", "proto"])
                .arg(MARK.to_string())
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).lines().count()
        };
        let nl = Netlink::new().unwrap();
        let idx = nl.ifindex("a0").await.unwrap();
        let mut b = netio::netlink::route_batch::RouteBatch::new().unwrap();
        let addrs: Vec<Ipv4Addr> = (0..2000u32)
            .map(|k| Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 77, 0, 0)) + k))
            .collect();
        let add: Vec<(Ipv4Addr, bool)> = addrs.iter().map(|a| (*a, true)).collect();
        assert!(b.apply(&add, idx, MARK).unwrap().is_empty());
        assert_eq!(count_marked(), 2000);
        // Replace: idempotent.
        assert!(b.apply(&add[..10], idx, MARK).unwrap().is_empty());
        assert_eq!(count_marked(), 2000);
        // Remove all but the last; one of them twice in the same batch.
        let mut del: Vec<(Ipv4Addr, bool)> = addrs[..1999].iter().map(|a| (*a, false)).collect();
        del.insert(700, (addrs[3], false));
        let failed = b.apply(&del, idx, MARK).unwrap();
        assert_eq!(failed.len(), 1, "{failed:?}");
        assert_eq!(failed[0].dst, addrs[3]);
        assert_eq!(failed[0].error.raw_os_error(), Some(libc::ESRCH));
        assert_eq!(count_marked(), 1);
        // A device that does not exist: every request of the batch fails, counted.
        let failed = b.apply(&add[..3], 999_999, MARK).unwrap();
        assert_eq!(failed.len(), 3);
    });
}
