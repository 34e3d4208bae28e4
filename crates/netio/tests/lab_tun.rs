//! TUN round trips through real kernels in network namespaces (root only).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::Ipv4Addr;
use std::time::Duration;

use common::*;
use netio::{Tun, TunOptions};

const TUN_NET_HOST: Ipv4Addr = Ipv4Addr::new(10, 99, 2, 5);

/// `a` forwards between its TUN (10.99.2.1/24) and the veth to `b`.
fn topology(tag: &str) -> Pair {
    let p = Pair::new(tag);
    p.a.sysctl("net.ipv4.ip_forward=1");
    p.a.sysctl("net.ipv4.conf.all.rp_filter=0");
    p.a.sysctl("net.ipv4.conf.default.rp_filter=0");
    p.b.exec(&["ip", "route", "add", "10.99.2.0/24", "via", "10.99.1.1"]);
    p
}

/// Wait for the next IPv4 ICMP packet on the TUN (other traffic, e.g. IPv6, is skipped).
async fn next_icmp(tun: &Tun) -> Vec<u8> {
    let mut buf = vec![0u8; 2048];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), tun.recv(&mut buf))
            .await
            .expect("no packet came out of the TUN within 5 s")
            .unwrap();
        let p = &buf[..n];
        if n >= 28 && p[0] >> 4 == 4 && p[9] == 1 {
            return p.to_vec();
        }
        eprintln!("skipping non-ICMPv4 packet of {n} bytes from the TUN");
    }
}

#[test]
fn tun_packet_routed_out_through_veth_and_back() {
    if !lab("tun_packet_routed_out_through_veth_and_back") {
        return;
    }
    let p = topology("tun1");
    let a = p.a.name.clone();
    let reply = p.a.run(move || async move {
        let tun = Tun::open_with(
            "mtun0",
            &TunOptions {
                mtu: Some(1400),
                up: true,
                ..TunOptions::default()
            },
        )
        .unwrap();
        assert_eq!(tun.name(), "mtun0");
        assert_eq!(tun.mtu().unwrap(), 1400);
        sh(&[
            "ip",
            "netns",
            "exec",
            &a,
            "ip",
            "addr",
            "add",
            "10.99.2.1/24",
            "dev",
            "mtun0",
        ]);
        let shown = sh(&["ip", "netns", "exec", &a, "ip", "link", "show", "mtun0"]);
        assert!(shown.contains("mtu 1400"), "{shown}");

        // A host "behind" the TUN pings b: the packet enters a's stack from the TUN, is
        // forwarded out of a0, and b's reply is forwarded back into the TUN.
        let echo = icmp_echo(8, 0x4d49, 1, b"mipsec-tun-roundtrip");
        let pkt = ipv4_packet(TUN_NET_HOST, B_ADDR, 1, &echo, 64);
        assert_eq!(tun.send(&pkt).await.unwrap(), pkt.len());
        loop {
            let r = next_icmp(&tun).await;
            if r[20] == 0 {
                return r;
            }
        }
    });
    assert_eq!(&reply[12..16], &B_ADDR.octets(), "reply source");
    assert_eq!(&reply[16..20], &TUN_NET_HOST.octets(), "reply destination");
    assert_eq!(reply[8], 63, "TTL: b sent 64, a forwarded once");
    assert_eq!(&reply[24..28], &[0x4d, 0x49, 0, 1], "echo id/seq");
    assert_eq!(&reply[28..], b"mipsec-tun-roundtrip");
    assert_eq!(checksum(&reply[..20]), 0, "IPv4 header checksum");
    assert_eq!(checksum(&reply[20..]), 0, "ICMP checksum");
    // Independent decode.
    assert_eq!(
        scapy_eval(
            &reply,
            "(p.src, p.dst, p.proto, p.payload.type, bytes(p.payload.payload))"
        ),
        "('10.99.1.2', '10.99.2.5', 1, 0, b'mipsec-tun-roundtrip')"
    );
}

#[test]
fn tun_answers_a_ping_from_the_peer_namespace() {
    if !lab("tun_answers_a_ping_from_the_peer_namespace") {
        return;
    }
    assert!(
        try_sh(&["sh", "-c", "command -v ping"]).status.success(),
        "this test needs `ping` (Debian package iputils-ping, see scripts/install-deps.sh)"
    );
    let p = topology("tun2");
    let a = p.a.name.clone();
    let b = p.b.name.clone();
    let seen = p.a.run(move || async move {
        let tun = Tun::open_with(
            "mtun0",
            &TunOptions {
                up: true,
                ..TunOptions::default()
            },
        )
        .unwrap();
        sh(&[
            "ip",
            "netns",
            "exec",
            &a,
            "ip",
            "addr",
            "add",
            "10.99.2.1/24",
            "dev",
            "mtun0",
        ]);
        // b pings a host behind the TUN; we play that host in userspace.
        let ping = tokio::task::spawn_blocking(move || {
            std::process::Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &b,
                    "ping",
                    "-c",
                    "1",
                    "-W",
                    "5",
                    "10.99.2.5",
                ])
                .output()
        });
        let req = loop {
            let r = next_icmp(&tun).await;
            if r[20] == 8 {
                break r;
            }
        };
        let mut icmp = req[20..].to_vec();
        icmp[0] = 0;
        icmp[2] = 0;
        icmp[3] = 0;
        let c = checksum(&icmp);
        icmp[2..4].copy_from_slice(&c.to_be_bytes());
        let src = Ipv4Addr::new(req[16], req[17], req[18], req[19]);
        let dst = Ipv4Addr::new(req[12], req[13], req[14], req[15]);
        tun.send(&ipv4_packet(src, dst, 1, &icmp, 64))
            .await
            .unwrap();
        let out = ping.await.unwrap().unwrap();
        (req, out)
    });
    let (req, out) = seen;
    assert_eq!(&req[12..16], &B_ADDR.octets(), "request came from b");
    assert_eq!(&req[16..20], &TUN_NET_HOST.octets());
    assert_eq!(req[8], 63, "forwarded once by a");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 received"),
        "ping from b did not get our reply: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// ETHTOOL_GTSO through SIOCETHTOOL: whether `dev` offers TCP segmentation offload.
fn tso_on(dev: &str) -> bool {
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    #[repr(C)]
    struct IfReq {
        name: [u8; 16],
        data: *mut EthtoolValue,
        _pad: [u8; 16],
    }
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    const ETHTOOL_GTSO: u32 = 0x1e;
    let mut v = EthtoolValue {
        cmd: ETHTOOL_GTSO,
        data: 0,
    };
    let mut r = IfReq {
        name: [0; 16],
        data: &mut v,
        _pad: [0; 16],
    };
    r.name[..dev.len()].copy_from_slice(dev.as_bytes());
    // SAFETY: a datagram socket for the ioctl; the request points at live locals.
    unsafe {
        let s = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        assert!(s >= 0);
        let rc = libc::ioctl(s, SIOCETHTOOL as _, &mut r);
        libc::close(s);
        assert_eq!(rc, 0, "SIOCETHTOOL on {dev}");
    }
    v.data != 0
}

/// A persistent TUN keeps the offloads its earlier owner asked for; a new owner that
/// reads it without a virtio header must turn them off, or the kernel would hand it
/// unsegmented TCP super-packets.
#[test]
fn reattaching_without_offload_turns_the_offloads_off() {
    if !lab("reattaching_without_offload_turns_the_offloads_off") {
        return;
    }
    let ns = Netns::new("tofl");
    ns.run(|| async {
        let opts = TunOptions {
            up: true,
            ..TunOptions::default()
        };
        let t = Tun::open_with_offload(
            "otun0",
            &opts,
            netio::tun::TUN_F_CSUM | netio::tun::TUN_F_TSO4,
        )
        .unwrap();
        t.set_persistent(true).unwrap();
        assert!(tso_on("otun0"), "TSO is on with TUN_F_TSO4");
        drop(t);
        let t = Tun::open_with("otun0", &opts).unwrap();
        assert!(
            !tso_on("otun0"),
            "TSO must be off for a reader without a virtio header"
        );
        t.set_persistent(false).unwrap();
    });
}

/// A multi-queue TUN: a second queue attached from its spec takes writes into the
/// stack; without a steering program the kernel spreads flows over both queues, and
/// with [`Tun::steer_to_first_queue`] every packet routed into the device comes out of
/// the first queue only (the home agent's workers write into their own queues and
/// never read them).
#[test]
fn multi_queue_tun_writes_on_every_queue_and_steers_reads_to_the_first() {
    if !lab("multi_queue_tun_writes_on_every_queue_and_steers_reads_to_the_first") {
        return;
    }
    let ns = Netns::new("tmq");
    let name = ns.name.clone();
    ns.run(move || async move {
        let opts = TunOptions {
            up: true,
            multi_queue: true,
            mtu: Some(1400),
        };
        let offload = netio::tun::TUN_F_CSUM | netio::tun::TUN_F_TSO4;
        let q0 = Tun::open_with_offload("qtun0", &opts, offload).unwrap();
        let spec = q0.queue_spec().expect("opened with multi_queue");
        let q1 = spec.open().unwrap();
        assert!(
            q1.vnet_hdr(),
            "the second queue has the first's virtio header"
        );
        assert!(
            Tun::open_with("qtun1", &TunOptions::default())
                .unwrap()
                .queue_spec()
                .is_none(),
            "a single-queue device has no queue spec"
        );
        sh(&[
            "ip",
            "netns",
            "exec",
            &name,
            "ip",
            "addr",
            "add",
            "10.99.2.1/24",
            "dev",
            "qtun0",
        ]);
        let tx = std::net::UdpSocket::bind("10.99.2.1:0").unwrap();
        // 64 flows into the device; count what each queue yields.
        let count = |q: &Tun| {
            let mut buf = vec![0u8; 70000];
            let mut n = 0;
            while let Ok(len) = q.try_recv(&mut buf) {
                let p = &buf[netio::offload::VNET_HDR_LEN..len];
                if p.len() >= 28 && p[0] >> 4 == 4 && p[9] == 17 {
                    n += 1;
                }
            }
            n
        };
        let flows = |tag: u8| {
            for i in 0..64u16 {
                let to = format!("10.99.2.{}:{}", 10 + (i % 32), 5000 + i);
                tx.send_to(&[tag; 20], to).unwrap();
            }
        };
        flows(1);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (a, b) = (count(&q0), count(&q1));
        assert_eq!(a + b, 64, "every datagram came out of one of the queues");
        assert!(
            a > 0 && b > 0,
            "no steering program: the kernel spreads flows ({a}/{b})"
        );

        q0.steer_to_first_queue().unwrap();
        flows(2);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            (count(&q0), count(&q1)),
            (64, 0),
            "steered to the first queue"
        );

        // A write on the second queue enters the stack: a datagram from a host behind
        // the device to a socket on its address.
        let rx = std::net::UdpSocket::bind("10.99.2.1:7000").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut udp = vec![0x13, 0x88, 0x1b, 0x58, 0, 16, 0, 0];
        udp.extend_from_slice(b"second q");
        let pkt = ipv4_packet(TUN_NET_HOST, Ipv4Addr::new(10, 99, 2, 1), 17, &udp, 64);
        assert_eq!(q1.send(&pkt).await.unwrap(), pkt.len());
        let mut got = [0u8; 64];
        let (n, from) = rx
            .recv_from(&mut got)
            .expect("the second queue's write arrived");
        assert_eq!(&got[..n], b"second q");
        assert_eq!(from, "10.99.2.5:5000".parse().unwrap());
    });
}
