//! The kernel IP-in-IP encapsulator (`netio::ipip_encap`) between two namespaces
//! (root only): what it sends for a map entry, what it leaves to the device, and a
//! TCP super-packet it keeps whole until the kernel cuts it at the device, compared
//! with our own segmentation of the same super-packet.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::Ipv4Addr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use netio::ipip_encap::IpipEncap;
use netio::offload::{self, PacketList, VnetHdr, F_NEEDS_CSUM, GSO_TCPV4};
use netio::raw::IPPROTO_IPIP;
use netio::tun::{TUN_F_CSUM, TUN_F_TSO4};
use netio::{RawIp, RawIpOptions, Tun, TunOptions};

const HOA: Ipv4Addr = Ipv4Addr::new(10, 10, 0, 100);
const CN: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);

/// A read from an offloading TUN (virtio header first) is IPv4 to HOA (the device
/// also gets IPv6 neighbour discovery of its own).
fn to_hoa(read: &[u8]) -> bool {
    read.len() >= 30 && read[10] >> 4 == 4 && read[26..30] == HOA.octets()
}

/// A TCP super-packet CN -> HOA of `n` octets of payload, with the partial
/// checksum a sender's GSO leaves, and its virtio header for segments of `mss`.
fn tcp_super(n: usize, mss: u16) -> (VnetHdr, Vec<u8>) {
    let mut tcp = vec![0u8; 20];
    tcp[0..2].copy_from_slice(&40_000u16.to_be_bytes());
    tcp[2..4].copy_from_slice(&5001u16.to_be_bytes());
    tcp[4..8].copy_from_slice(&1_000_000u32.to_be_bytes());
    tcp[8..12].copy_from_slice(&77u32.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = 0x18; // ACK | PSH
    tcp[14..16].copy_from_slice(&512u16.to_be_bytes());
    tcp.extend((0..n).map(|i| (i * 7 % 251) as u8));
    let mut pkt = ipv4_header(CN, HOA, 6, tcp.len(), 0x2000, 64);
    pkt.extend_from_slice(&tcp);
    // The pseudo-header sum, as TCP leaves it for the device to finish.
    let mut ph = Vec::new();
    ph.extend_from_slice(&CN.octets());
    ph.extend_from_slice(&HOA.octets());
    ph.extend_from_slice(&[0, 6]);
    ph.extend_from_slice(&u16::try_from(tcp.len()).unwrap().to_be_bytes());
    let partial = !checksum(&ph);
    pkt[36..38].copy_from_slice(&partial.to_be_bytes());
    let hdr = VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: GSO_TCPV4,
        hdr_len: 40,
        gso_size: mss,
        csum_start: 20,
        csum_offset: 16,
    };
    (hdr, pkt)
}

/// An up TUN device with offloads and MTU 1480 (room for the outer header).
fn offload_tun(name: &str) -> Tun {
    let opts = TunOptions {
        mtu: Some(1480),
        up: true,
        ..TunOptions::default()
    };
    Tun::open_with_offload(name, &opts, TUN_F_CSUM | TUN_F_TSO4).unwrap()
}

/// In `a`: the tunnel device `t0` with the route to HOA through it, and the index of
/// `a0`, the interface toward `b`.
async fn tunnel_device() -> (Tun, u32) {
    let tun = offload_tun("t0");
    sh(&["ip", "route", "add", "10.10.0.100/32", "dev", "t0"]);
    let a0 = netio::Netlink::new().unwrap().ifindex("a0").await.unwrap();
    (tun, a0)
}

/// `a`: the device `t0` (offloads on, MTU 1480) with a route to HOA through it and
/// forwarding on; `b`: a raw IP-in-IP socket.
fn setup(tag: &str) -> Pair {
    let p = Pair::new(tag);
    p.a.sysctl("net.ipv4.ip_forward=1");
    p.a.sysctl("net.ipv4.conf.all.rp_filter=0");
    p.a.sysctl("net.ipv4.conf.default.rp_filter=0");
    p
}

/// How many packets to HOA the device `tun` gets within 200 ms of quiet.
async fn tun_gets(tun: &Tun, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while let Ok(r) = tokio::time::timeout(Duration::from_millis(200), tun.recv(buf)).await {
        n += usize::from(to_hoa(&buf[..r.unwrap()]));
    }
    n
}

async fn recv_all(sock: &RawIp, quiet: Duration) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 70_000];
    while let Ok(r) = tokio::time::timeout(quiet, sock.recv_from(&mut buf)).await {
        let (n, _) = r.unwrap();
        got.push(buf[..n].to_vec());
    }
    got
}

/// a0 neither cuts GSO packets of kind `feature` nor finishes checksums in
/// "hardware": the kernel does both in software before the veth, so b sees the
/// segments as a wire would carry them.
fn cut_in_software(p: &Pair, feature: &str) {
    p.a.exec(&["ethtool", "-K", "a0", feature, "off", "tx", "off"]);
}

/// What b's raw socket for `protocol` receives until 2 s of quiet.
fn collect_in_b(p: &Pair, protocol: u8) -> std::thread::JoinHandle<Vec<Vec<u8>>> {
    let (ready_tx, ready_rx) = mpsc::channel();
    let rx = p.b.spawn(move || async move {
        let sock = RawIp::open_with(protocol, &RawIpOptions::default()).unwrap();
        ready_tx.send(()).unwrap();
        recv_all(&sock, Duration::from_secs(2)).await
    });
    ready_rx.recv_timeout(Duration::from_secs(5)).unwrap();
    rx
}

#[test]
fn kernel_ipip_encap_sends_what_the_map_says_and_leaves_the_rest_to_the_device() {
    if !lab("kernel_ipip_encap_sends_what_the_map_says_and_leaves_the_rest_to_the_device") {
        return;
    }
    let p = setup("ke1");
    let (ready_tx, ready_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let rx = p.b.spawn(move || async move {
        let sock = RawIp::open_with(IPPROTO_IPIP, &RawIpOptions::default()).unwrap();
        ready_tx.send(()).unwrap();
        let mut all = Vec::new();
        loop {
            all.extend(recv_all(&sock, Duration::from_millis(300)).await);
            if done_rx.try_recv().is_ok() {
                return all;
            }
        }
    });
    ready_rx.recv_timeout(Duration::from_secs(5)).unwrap();

    let sent = p.a.run(move || async move {
        let (tun, a0) = tunnel_device().await;
        let enc = IpipEncap::attach(tun.ifindex().unwrap(), 16).unwrap();
        let sock = std::net::UdpSocket::bind("10.99.1.1:0").unwrap();
        let mut buf = vec![0u8; 70_000];

        // 1. No entry: into the device.
        sock.send_to(b"one", (HOA, 7)).unwrap();
        assert_eq!(
            tun_gets(&tun, &mut buf).await,
            1,
            "no entry: the device has it"
        );
        // 2. An entry: encapsulated to b, the device sees nothing.
        let until = Instant::now() + Duration::from_secs(60);
        enc.set(HOA, A_ADDR, B_ADDR, a0, until).unwrap();
        assert_eq!(enc.get(HOA).unwrap(), Some((A_ADDR, B_ADDR, a0)));
        // DSCP EF (46) and ECT(1) on this one.
        socket2::SockRef::from(&sock).set_tos(0xb9).unwrap();
        sock.send_to(b"two", (HOA, 7)).unwrap();
        socket2::SockRef::from(&sock).set_tos(0).unwrap();
        assert_eq!(
            tun_gets(&tun, &mut buf).await,
            0,
            "an entry: not into the device"
        );
        // 3. Expired: into the device again.
        enc.set(HOA, A_ADDR, B_ADDR, a0, Instant::now()).unwrap();
        sock.send_to(b"three", (HOA, 7)).unwrap();
        assert_eq!(
            tun_gets(&tun, &mut buf).await,
            1,
            "expired: the device has it"
        );
        // 4. Removed: the same.
        enc.set(HOA, A_ADDR, B_ADDR, a0, until).unwrap();
        assert!(enc.remove(HOA).unwrap());
        assert!(!enc.remove(HOA).unwrap());
        sock.send_to(b"four", (HOA, 7)).unwrap();
        assert_eq!(
            tun_gets(&tun, &mut buf).await,
            1,
            "removed: the device has it"
        );
        let c = enc.counters().unwrap();
        assert_eq!(c.sends, 1);
        assert_eq!(c.bytes, 20 + 8 + 3);
        c
    });
    done_tx.send(()).unwrap();
    let got = join(rx);
    assert_eq!(
        got.len(),
        1,
        "exactly the one packet with a live entry: {got:?}"
    );
    let pkt = &got[0];
    assert_eq!(pkt.len(), 20 + 20 + 8 + 3);
    assert_eq!(checksum(&pkt[..20]), 0, "outer header checksum");
    assert_eq!(&pkt[0..1], &[0x45]);
    assert_eq!(usize::from(u16::from_be_bytes([pkt[2], pkt[3]])), pkt.len());
    assert_eq!(pkt[8], 64, "TTL");
    assert_eq!(pkt[9], 4, "IP-in-IP");
    assert_eq!(pkt[21], 0xb9, "the inner TOS as sent");
    assert_eq!(
        pkt[1], 0xb8,
        "outer TOS: the inner DSCP (RFC 2003 3.1), ECN Not-ECT (RFC 6040 compatibility mode)"
    );
    assert_eq!(pkt[26] & 0x40, 0x40, "the inner packet has DF");
    assert_eq!(
        &pkt[6..8],
        &[0, 0],
        "the outer one lets the path fragment it"
    );
    assert_eq!(&pkt[12..16], &A_ADDR.octets());
    assert_eq!(&pkt[16..20], &B_ADDR.octets());
    assert_eq!(&pkt[36..40], &HOA.octets());
    assert_eq!(&pkt[48..], b"two");
    assert_eq!(sent.sends, 1);
    // scapy agrees on the outer and inner headers.
    assert_eq!(
        scapy_eval(pkt, "(p.proto, p.payload.dst, p.payload.payload.dport)"),
        "(4, '10.10.0.100', 7)"
    );
}

#[test]
fn kernel_ipip_encap_keeps_a_tcp_super_packet_whole_until_the_device_cuts_it() {
    if !lab("kernel_ipip_encap_keeps_a_tcp_super_packet_whole_until_the_device_cuts_it") {
        return;
    }
    let p = setup("ke2");
    cut_in_software(&p, "tx-ipxip4-segmentation");
    let rx = collect_in_b(&p, IPPROTO_IPIP);
    let (hdr, sup) = tcp_super(30_000, 1440);
    let sup2 = sup.clone();
    let counters = p.a.run(move || async move {
        let (t0, a0) = tunnel_device().await;
        // The super-packet comes in on a second device, as from a GRO link.
        let s0 = offload_tun("s0");
        sh(&["ip", "route", "add", "10.77.0.0/24", "dev", "s0"]);
        let enc = IpipEncap::attach(t0.ifindex().unwrap(), 16).unwrap();
        enc.set(
            HOA,
            A_ADDR,
            B_ADDR,
            a0,
            Instant::now() + Duration::from_secs(60),
        )
        .unwrap();
        let mut frame = hdr.to_bytes().to_vec();
        frame.extend_from_slice(&sup2);
        s0.send_raw(&frame).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut buf = vec![0u8; 70_000];
        assert_eq!(tun_gets(&t0, &mut buf).await, 0, "nothing into the device");
        enc.counters().unwrap()
    });
    let got = join(rx);
    // Our own segmentation of the same super-packet after forwarding (TTL - 1).
    let mut fwd = sup.clone();
    fwd[8] -= 1;
    offload::fix_ipv4_checksum(&mut fwd, 20);
    let mut want = PacketList::new();
    offload::segment(&hdr, &fwd, &mut want).unwrap();
    assert_eq!(want.len(), 21);
    assert_eq!(got.len(), want.len(), "one IP-in-IP packet per segment");
    assert_eq!(counters.sends, 1, "one GSO packet");
    assert_eq!(counters.bytes, sup.len() as u64);
    let mut ids = Vec::new();
    for (g, w) in got.iter().zip(want.iter()) {
        assert_eq!(checksum(&g[..20]), 0, "outer checksum");
        assert_eq!(usize::from(u16::from_be_bytes([g[2], g[3]])), g.len());
        assert_eq!(&g[12..20], &[A_ADDR.octets(), B_ADDR.octets()].concat()[..]);
        ids.push(u16::from_be_bytes([g[4], g[5]]));
        let inner = &g[20..];
        // IP ids and checksums of the inner headers follow the same rule in both.
        assert_eq!(inner.len(), w.len());
        assert_eq!(&inner[20..], &w[20..], "TCP header, checksum and payload");
        assert_eq!(checksum(&inner[..20]), 0);
        assert_eq!(&inner[12..20], &w[12..20]);
    }
    ids.dedup();
    assert_eq!(ids.len(), got.len(), "an identification per outer header");
}

/// An RFC 3519 entry (`set_udp`): a single packet leaves as one Tunnel Data message
/// (UDP from the entry's port, no UDP checksum, the 4-octet header), and a TCP
/// super-packet stays one packet until a link that cuts in software makes it one
/// datagram per segment, each with its own copy of the headers, identical inside to
/// `offload::segment`'s cut of the same super-packet.
#[test]
fn kernel_udp_tunnel_encap_sends_one_tunnel_data_message_per_segment() {
    if !lab("kernel_udp_tunnel_encap_sends_one_tunnel_data_message_per_segment") {
        return;
    }
    let p = setup("ku1");
    cut_in_software(&p, "tx-udp_tnl-segmentation");
    p.a.exec(&["ethtool", "-K", "a0", "tx-udp_tnl-csum-segmentation", "off"]);
    let rx = collect_in_b(&p, 17);
    // Segments of 1420: with 32 octets of headers they fit a0's 1500.
    let (hdr, sup) = tcp_super(30_000, 1420);
    let sup2 = sup.clone();
    let peer = std::net::SocketAddrV4::new(B_ADDR, 40_000);
    let counters = p.a.run(move || async move {
        let (t0, a0) = tunnel_device().await;
        let s0 = offload_tun("s0");
        sh(&["ip", "route", "add", "10.77.0.0/24", "dev", "s0"]);
        let enc = IpipEncap::attach(t0.ifindex().unwrap(), 16).unwrap();
        let until = Instant::now() + Duration::from_secs(60);
        let local = std::net::SocketAddrV4::new(A_ADDR, 434);
        enc.set_udp(HOA, local, peer, a0, until).unwrap();
        // One small packet first.
        let sock = std::net::UdpSocket::bind("10.99.1.1:0").unwrap();
        sock.send_to(b"one", (HOA, 7)).unwrap();
        let mut frame = hdr.to_bytes().to_vec();
        frame.extend_from_slice(&sup2);
        s0.send_raw(&frame).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut buf = vec![0u8; 70_000];
        assert_eq!(tun_gets(&t0, &mut buf).await, 0, "nothing into the device");
        // An entry for the way back only leaves the packet to the device.
        enc.set_udp_inbound(HOA, local, peer, a0, until).unwrap();
        sock.send_to(b"back only", (HOA, 7)).unwrap();
        assert_eq!(tun_gets(&t0, &mut buf).await, 1, "inbound only: the device");
        enc.counters().unwrap()
    });
    let got: Vec<Vec<u8>> = join(rx)
        .into_iter()
        .filter(|g| g.len() > 28 && g[20..22] == 434u16.to_be_bytes())
        .collect();
    assert_eq!(counters.sends, 2, "one small packet, one GSO packet");
    fn check(g: &[u8]) -> &[u8] {
        assert_eq!(checksum(&g[..20]), 0, "outer checksum");
        assert_eq!(g[9], 17, "UDP");
        assert_eq!(&g[6..8], &[0, 0], "DF clear");
        assert_eq!(usize::from(u16::from_be_bytes([g[2], g[3]])), g.len());
        assert_eq!(&g[12..20], &[A_ADDR.octets(), B_ADDR.octets()].concat()[..]);
        assert_eq!(
            &g[20..24],
            &[434u16.to_be_bytes(), 40_000u16.to_be_bytes()].concat()[..]
        );
        assert_eq!(
            usize::from(u16::from_be_bytes([g[24], g[25]])),
            g.len() - 20
        );
        assert_eq!(&g[26..28], &[0, 0], "no UDP checksum");
        assert_eq!(&g[28..32], &[4, 4, 0, 0], "Tunnel Data, IPv4");
        &g[32..]
    }
    let small = check(&got[0]);
    assert_eq!(&small[16..20], &HOA.octets());
    assert_eq!(&small[28..], b"one");
    let mut fwd = sup.clone();
    fwd[8] -= 1;
    offload::fix_ipv4_checksum(&mut fwd, 20);
    let mut want = PacketList::new();
    offload::segment(&hdr, &fwd, &mut want).unwrap();
    assert_eq!(got.len() - 1, want.len(), "one datagram per segment");
    for (g, w) in got[1..].iter().zip(want.iter()) {
        let inner = check(g);
        assert_eq!(inner.len(), w.len());
        assert_eq!(&inner[20..], &w[20..], "TCP header, checksum and payload");
        assert_eq!(checksum(&inner[..20]), 0);
        assert_eq!(&inner[12..20], &w[12..20]);
    }
    // scapy reads one as UDP to 40000 carrying the Tunnel Data message.
    assert_eq!(
        scapy_eval(
            &got[1],
            "(p.proto, p.payload.dport, bytes(p.payload.payload)[:4].hex())"
        ),
        "(17, 40000, '04040000')"
    );
}

/// The program lives as long as the object's link fd: dropping it (as the kernel
/// closes every fd of a process that exits, `kill -9` included) detaches it, and a
/// packet that had an entry goes into the device again.
#[test]
fn kernel_ipip_encap_is_gone_with_its_fd() {
    if !lab("kernel_ipip_encap_is_gone_with_its_fd") {
        return;
    }
    let p = setup("ke3");
    let got = p.a.run(move || async move {
        let (tun, a0) = tunnel_device().await;
        let sock = std::net::UdpSocket::bind("10.99.1.1:0").unwrap();
        let mut buf = vec![0u8; 70_000];
        let enc = IpipEncap::attach(tun.ifindex().unwrap(), 16).unwrap();
        enc.set(
            HOA,
            A_ADDR,
            B_ADDR,
            a0,
            Instant::now() + Duration::from_secs(60),
        )
        .unwrap();
        sock.send_to(b"kept", (HOA, 7)).unwrap();
        let with = tun_gets(&tun, &mut buf).await;
        drop(enc);
        sock.send_to(b"back", (HOA, 7)).unwrap();
        (with, tun_gets(&tun, &mut buf).await)
    });
    assert_eq!(
        got,
        (0, 1),
        "encapsulated while attached, into the device after"
    );
}

/// IP-in-IP from `outer_src` to a's address carrying UDP HOA:4000 -> a:9000 with
/// `data`; `flags` is the outer header's flags and offset field.
fn ipip_udp(outer_src: Ipv4Addr, data: &[u8], flags: u16) -> Vec<u8> {
    let mut udp = Vec::new();
    udp.extend_from_slice(&4000u16.to_be_bytes());
    udp.extend_from_slice(&9000u16.to_be_bytes());
    udp.extend_from_slice(&u16::try_from(8 + data.len()).unwrap().to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(data);
    let inner = ipv4_packet(HOA, A_ADDR, 17, &udp, 64);
    let mut outer = ipv4_header(outer_src, A_ADDR, 4, inner.len(), 0x2222, 64);
    outer[6..8].copy_from_slice(&flags.to_be_bytes());
    outer[10..12].copy_from_slice(&[0, 0]);
    let c = checksum(&outer);
    outer[10..12].copy_from_slice(&c.to_be_bytes());
    outer.extend_from_slice(&inner);
    outer
}

/// A sender in b of what a asks for, headers and all; each packet is answered once
/// it left.
type Send = mpsc::Sender<(Vec<u8>, mpsc::Sender<()>)>;
fn sender_in_b(p: &Pair) -> (std::thread::JoinHandle<()>, Send) {
    let (send_tx, send_rx) = mpsc::channel::<(Vec<u8>, mpsc::Sender<()>)>();
    let tx = p.b.spawn(move || async move {
        let opts = RawIpOptions {
            header_included: true,
            ..RawIpOptions::default()
        };
        let sock = RawIp::open_with(IPPROTO_IPIP, &opts).unwrap();
        while let Ok((pkt, sent)) = send_rx.recv() {
            sock.send_packet(&pkt).await.unwrap();
            sent.send(()).unwrap();
        }
    });
    (tx, send_tx)
}

#[test]
fn kernel_ipip_decap_takes_only_the_entry_s_own_tunnel() {
    if !lab("kernel_ipip_decap_takes_only_the_entry_s_own_tunnel") {
        return;
    }
    let p = setup("kd1");
    let (tx, send_tx) = sender_in_b(&p);
    let got = p.a.run(move || async move {
        let (tun, a0) = tunnel_device().await;
        let enc = IpipEncap::attach(tun.ifindex().unwrap(), 16).unwrap();
        assert!(enc.decap_on(a0).unwrap(), "attached");
        assert!(!enc.decap_on(a0).unwrap(), "once");
        assert_eq!(enc.decap_interfaces(), vec![a0]);
        let raw = RawIp::open(IPPROTO_IPIP).unwrap();
        let udp = tokio::net::UdpSocket::bind("10.99.1.1:9000").await.unwrap();
        let mut buf = vec![0u8; 70_000];
        // What a's raw socket and its UDP socket get for one packet from b.
        let mut exchange = async |pkt: Vec<u8>| {
            let (done_tx, done_rx) = mpsc::channel();
            send_tx.send((pkt, done_tx)).unwrap();
            done_rx.recv_timeout(Duration::from_secs(5)).unwrap();
            let quiet = Duration::from_millis(200);
            let raws = recv_all(&raw, quiet).await.len();
            let mut udps = Vec::new();
            while let Ok(r) = tokio::time::timeout(quiet, udp.recv_from(&mut buf)).await {
                let (n, from) = r.unwrap();
                udps.push((buf[..n].to_vec(), from));
            }
            (raws, udps)
        };
        let until = Instant::now() + Duration::from_secs(60);
        let mut seen = Vec::new();
        // 1. No entry: the raw socket has it.
        seen.push(("no entry", exchange(ipip_udp(B_ADDR, b"one", 0)).await));
        // 2. The entry (HOA bound to B_ADDR, on a0): decapsulated, delivered.
        enc.set(HOA, A_ADDR, B_ADDR, a0, until).unwrap();
        seen.push(("entry", exchange(ipip_udp(B_ADDR, b"two", 0)).await));
        // 3. From another care-of address: not the entry's tunnel.
        let other = Ipv4Addr::new(10, 99, 1, 3);
        seen.push(("other source", exchange(ipip_udp(other, b"three", 0)).await));
        // 4. The entry on another interface.
        enc.set(HOA, A_ADDR, B_ADDR, 1, until).unwrap();
        seen.push((
            "other interface",
            exchange(ipip_udp(B_ADDR, b"four", 0)).await,
        ));
        // 5. A first fragment (MF): never decapsulated alone.
        enc.set(HOA, A_ADDR, B_ADDR, a0, until).unwrap();
        seen.push((
            "fragment",
            exchange(ipip_udp(B_ADDR, b"five", 0x2000)).await,
        ));
        // 6. Expired.
        enc.set(HOA, A_ADDR, B_ADDR, a0, Instant::now()).unwrap();
        seen.push(("expired", exchange(ipip_udp(B_ADDR, b"six", 0)).await));
        (seen, enc.decap_counters().unwrap(), enc.counters().unwrap())
    });
    drop(tx);
    let (seen, decap, encap) = got;
    let summary: Vec<_> = seen
        .iter()
        .map(|(what, (raws, udps))| (*what, *raws, udps.len()))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("no entry", 1, 0),
            ("entry", 0, 1),
            ("other source", 1, 0),
            ("other interface", 1, 0),
            ("fragment", 0, 0),
            ("expired", 1, 0),
        ],
        "(case, raw socket, UDP socket)"
    );
    let (data, from) = &seen[1].1 .1[0];
    assert_eq!(data, b"two");
    assert_eq!(from, &std::net::SocketAddr::from((HOA, 4000)));
    assert_eq!((decap.sends, decap.bytes), (1, 20 + 8 + 3));
    assert_eq!(encap.sends, 0);
}

/// RFC 3519 Tunnel Data from `from` to a:434: the 4-octet header `td`, then
/// `inner` (each a whole inner packet), the UDP checksum computed when `csum`.
fn tunnel_data(from: std::net::SocketAddrV4, td: [u8; 4], inner: &[&[u8]], csum: bool) -> Vec<u8> {
    let mut msg = td.to_vec();
    for i in inner {
        msg.extend_from_slice(i);
    }
    let mut udp = Vec::new();
    udp.extend_from_slice(&from.port().to_be_bytes());
    udp.extend_from_slice(&434u16.to_be_bytes());
    udp.extend_from_slice(&u16::try_from(8 + msg.len()).unwrap().to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(&msg);
    if csum {
        let mut ph = Vec::new();
        ph.extend_from_slice(&from.ip().octets());
        ph.extend_from_slice(&A_ADDR.octets());
        ph.extend_from_slice(&[0, 17]);
        ph.extend_from_slice(&u16::try_from(udp.len()).unwrap().to_be_bytes());
        ph.extend_from_slice(&udp);
        let c = checksum(&ph);
        udp[6..8].copy_from_slice(&c.to_be_bytes());
    }
    ipv4_packet(*from.ip(), A_ADDR, 17, &udp, 64)
}

/// The inner packet of a tunnel: UDP HOA:4000 -> a:9000 with `data`.
fn inner_udp(data: &[u8]) -> Vec<u8> {
    let mut udp = Vec::new();
    udp.extend_from_slice(&4000u16.to_be_bytes());
    udp.extend_from_slice(&9000u16.to_be_bytes());
    udp.extend_from_slice(&u16::try_from(8 + data.len()).unwrap().to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(data);
    ipv4_packet(HOA, A_ADDR, 17, &udp, 64)
}

/// The way back of an RFC 3519 entry: only its own Tunnel Data (from the entry's
/// peer and port, to its port, type 4 with IPv4 inside, no UDP checksum, one
/// message filling the datagram, before expiry) is taken into the device; the rest
/// reaches the registration socket as before, and IP-in-IP is not this entry's.
#[test]
fn kernel_udp_tunnel_decap_takes_only_the_entry_s_own_tunnel_data() {
    if !lab("kernel_udp_tunnel_decap_takes_only_the_entry_s_own_tunnel_data") {
        return;
    }
    udp_decap_cases("kd2", false);
}

/// The same cases with the XDP half attached: it strips exactly the entry's own
/// Tunnel Data (counted), and leaves every other case untouched to the tc program
/// and the sockets, with the same outcome.
#[test]
fn kernel_udp_tunnel_xdp_takes_only_the_entry_s_own_tunnel_data() {
    if !lab("kernel_udp_tunnel_xdp_takes_only_the_entry_s_own_tunnel_data") {
        return;
    }
    udp_decap_cases("kd3", true);
}

fn udp_decap_cases(tag: &str, xdp: bool) {
    let p = setup(tag);
    let (tx, send_tx) = sender_in_b(&p);
    let peer = std::net::SocketAddrV4::new(B_ADDR, 40_000);
    let got = p.a.run(move || async move {
        let (tun, a0) = tunnel_device().await;
        let enc = IpipEncap::attach(tun.ifindex().unwrap(), 16).unwrap();
        assert!(enc.decap_on(a0).unwrap(), "attached");
        if xdp {
            assert!(enc.xdp_on(a0).unwrap(), "XDP attached");
        }
        let raw = RawIp::open(IPPROTO_IPIP).unwrap();
        let reg = tokio::net::UdpSocket::bind((A_ADDR, 434)).await.unwrap();
        let udp = tokio::net::UdpSocket::bind("10.99.1.1:9000").await.unwrap();
        let mut buf = vec![0u8; 70_000];
        // What a's raw IP-in-IP socket, its registration socket and the inner
        // receiver get for one packet from b.
        let mut exchange = async |pkt: Vec<u8>| {
            let (done_tx, done_rx) = mpsc::channel();
            send_tx.send((pkt, done_tx)).unwrap();
            done_rx.recv_timeout(Duration::from_secs(5)).unwrap();
            let quiet = Duration::from_millis(200);
            let raws = recv_all(&raw, quiet).await.len();
            let mut regs = 0;
            while let Ok(r) = tokio::time::timeout(quiet, reg.recv_from(&mut buf)).await {
                r.unwrap();
                regs += 1;
            }
            let mut inner = Vec::new();
            while let Ok(r) = tokio::time::timeout(quiet, udp.recv_from(&mut buf)).await {
                let (n, from) = r.unwrap();
                inner.push((buf[..n].to_vec(), from));
            }
            (raws, regs, inner)
        };
        let td = [4, 4, 0, 0];
        let one = inner_udp(b"one");
        let until = Instant::now() + Duration::from_secs(60);
        let local = std::net::SocketAddrV4::new(A_ADDR, 434);
        let mut seen = Vec::new();
        seen.push((
            "no entry",
            exchange(tunnel_data(peer, td, &[&one], false)).await,
        ));
        enc.set_udp(HOA, local, peer, a0, until).unwrap();
        seen.push((
            "entry",
            exchange(tunnel_data(peer, td, &[&one], false)).await,
        ));
        let other = std::net::SocketAddrV4::new(B_ADDR, 40_001);
        seen.push((
            "other port",
            exchange(tunnel_data(other, td, &[&one], false)).await,
        ));
        seen.push((
            "checksummed",
            exchange(tunnel_data(peer, td, &[&one], true)).await,
        ));
        let minimal = [4, 55, 0, 0];
        seen.push((
            "not IPv4 inside",
            exchange(tunnel_data(peer, minimal, &[&one], false)).await,
        ));
        seen.push((
            "two messages",
            exchange(tunnel_data(peer, td, &[&one, &[4, 4, 0, 0], &one], false)).await,
        ));
        seen.push(("IP-in-IP", exchange(ipip_udp(B_ADDR, b"one", 0)).await));
        enc.set_udp_inbound(HOA, local, peer, a0, until).unwrap();
        seen.push((
            "inbound only",
            exchange(tunnel_data(peer, td, &[&one], false)).await,
        ));
        enc.set_udp(HOA, local, peer, a0, Instant::now()).unwrap();
        seen.push((
            "expired",
            exchange(tunnel_data(peer, td, &[&one], false)).await,
        ));
        let counters = (enc.decap_counters().unwrap(), enc.xdp_counters().unwrap());
        (seen, counters)
    });
    drop(tx);
    let (seen, (decap, stripped)) = got;
    assert_eq!(stripped.sends, 2 * u64::from(xdp), "stripped before GRO");
    let summary: Vec<_> = seen
        .iter()
        .map(|(what, (raws, regs, inner))| (*what, *raws, *regs, inner.len()))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("no entry", 0, 1, 0),
            ("entry", 0, 0, 1),
            ("other port", 0, 1, 0),
            ("checksummed", 0, 1, 0),
            ("not IPv4 inside", 0, 1, 0),
            ("two messages", 0, 1, 0),
            ("IP-in-IP", 1, 0, 0),
            ("inbound only", 0, 0, 1),
            ("expired", 0, 1, 0),
        ],
        "(case, raw IP-in-IP socket, registration socket, inner receiver)"
    );
    let (data, from) = &seen[1].1 .2[0];
    assert_eq!(data, b"one");
    assert_eq!(from, &std::net::SocketAddr::from((HOA, 4000)));
    assert_eq!((decap.sends, decap.bytes), (2, 2 * (20 + 8 + 3)));
}

/// The XDP half of RFC 3519's way back (`xdp_on`): b's kernel sends a 30 KB TCP
/// super-packet through its own RFC 3519 entry, and its link cuts it into datagrams (as
/// a NIC without UDP tunnel segmentation would); a's driver strips each one before GRO,
/// GRO merges the inner segments, and the tc program hands the merged packet to the TUN.
/// Fewer packets reach the TUN than were stripped, and the payload arrives whole.
#[test]
fn kernel_udp_tunnel_xdp_strips_before_gro_so_the_segments_merge() {
    if !lab("kernel_udp_tunnel_xdp_strips_before_gro_so_the_segments_merge") {
        return;
    }
    let p = setup("kx1");
    p.b.sysctl("net.ipv4.ip_forward=1");
    p.b.sysctl("net.ipv4.conf.all.rp_filter=0");
    p.b.sysctl("net.ipv4.conf.default.rp_filter=0");
    let (hdr, sup) = tcp_super(30_000, 1420);
    let sup2 = sup.clone();
    let b_end = std::net::SocketAddrV4::new(B_ADDR, 40_000);
    let a_end = std::net::SocketAddrV4::new(A_ADDR, 434);
    let until = Instant::now() + Duration::from_secs(60);
    let (ready_tx, ready_rx) = mpsc::channel();
    let rx = p.a.spawn(move || async move {
        let (t0, a0) = tunnel_device().await;
        // a is the home agent's side: its entry is by the inner source (the CN).
        let enc = IpipEncap::attach(t0.ifindex().unwrap(), 16).unwrap();
        enc.set_udp(CN, a_end, b_end, a0, until).unwrap();
        let lo = 1;
        assert!(enc.xdp_on(lo).is_err(), "never without the tc program");
        assert!(!enc.xdp_on(lo).unwrap(), "refused once");
        assert!(enc.decap_on(a0).unwrap(), "tc attached");
        assert!(enc.xdp_on(a0).unwrap(), "XDP attached in the veth driver");
        assert!(!enc.xdp_on(a0).unwrap(), "once");
        assert_eq!(enc.xdp_interfaces(), vec![a0]);
        sh(&["ethtool", "-K", "a0", "gro", "on"]);
        ready_tx.send(()).unwrap();
        let mut buf = vec![0u8; 70_000];
        let mut got = Vec::new();
        while let Ok(r) = tokio::time::timeout(Duration::from_secs(1), t0.recv(&mut buf)).await {
            let n = r.unwrap();
            if to_hoa(&buf[..n]) {
                got.push(buf[..n].to_vec());
            }
        }
        (
            got,
            enc.xdp_counters().unwrap(),
            enc.decap_counters().unwrap(),
        )
    });
    ready_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let sent = p.b.run(move || async move {
        let t0 = offload_tun("t0");
        sh(&["ip", "route", "add", "10.10.0.100/32", "dev", "t0"]);
        let b0 = netio::Netlink::new().unwrap().ifindex("b0").await.unwrap();
        let s0 = offload_tun("s0");
        sh(&["ip", "route", "add", "10.77.0.0/24", "dev", "s0"]);
        let enc = IpipEncap::attach(t0.ifindex().unwrap(), 16).unwrap();
        enc.set_udp(HOA, b_end, a_end, b0, until).unwrap();
        let mut frame = hdr.to_bytes().to_vec();
        frame.extend_from_slice(&sup2);
        s0.send_raw(&frame).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        enc.counters().unwrap()
    });
    let (got, xdp, decap) = join(rx);
    assert_eq!(sent.sends, 1, "one GSO packet from b");
    let segments = 30_000u64.div_ceil(1420);
    assert_eq!(xdp.sends, segments, "every datagram stripped before GRO");
    // Inner octets: 30,000 of payload, and 40 of headers per packet.
    assert_eq!(xdp.bytes, 30_000 + 40 * xdp.sends, "stripped");
    assert_eq!(decap.bytes, 30_000 + 40 * decap.sends, "to the TUN");
    assert!(decap.sends < xdp.sends / 2, "merged: {decap:?} of {xdp:?}");
    // The payload, in order and whole, out of the TUN (a forwards it toward HOA).
    let payload: Vec<u8> = got
        .iter()
        .flat_map(|g| {
            let ip = &g[10..];
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            let thl = usize::from(ip[ihl + 12] >> 4) * 4;
            ip[ihl + thl..].to_vec()
        })
        .collect();
    assert_eq!(got.len() as u64, decap.sends, "{} packets", got.len());
    assert_eq!(payload, sup[40..], "the payload");
}
