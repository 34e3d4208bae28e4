//! Raw IP-in-IP (protocol 4) and ESP (protocol 50) between two namespaces (root only).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::Ipv4Addr;
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use netio::raw::{IPPROTO_ESP, IPPROTO_IPIP};
use netio::{RawIp, RawIpOptions};

const HOA: Ipv4Addr = Ipv4Addr::new(10, 10, 0, 100);
const CN: Ipv4Addr = Ipv4Addr::new(10, 40, 0, 10);
const A_SECOND: Ipv4Addr = Ipv4Addr::new(10, 99, 1, 11);

/// The inner packet: a UDP datagram from the home address to a correspondent node.
fn inner_packet() -> Vec<u8> {
    let data = b"inner user datagram";
    let mut udp = Vec::new();
    udp.extend_from_slice(&5000u16.to_be_bytes());
    udp.extend_from_slice(&7u16.to_be_bytes());
    udp.extend_from_slice(&u16::try_from(8 + data.len()).unwrap().to_be_bytes());
    udp.extend_from_slice(&[0, 0]); // no UDP checksum (allowed for IPv4)
    udp.extend_from_slice(data);
    ipv4_packet(HOA, CN, 17, &udp, 64)
}

/// `packet` with the TOS octet `tos` and its header checksum made right again.
fn with_tos(mut packet: Vec<u8>, tos: u8) -> Vec<u8> {
    packet[1] = tos;
    packet[10..12].copy_from_slice(&[0, 0]);
    let sum = checksum(&packet[..20]);
    packet[10..12].copy_from_slice(&sum.to_be_bytes());
    packet
}

async fn recv(sock: &RawIp) -> (Vec<u8>, Ipv4Addr) {
    let mut buf = vec![0u8; 2048];
    let (n, from) = tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf))
        .await
        .expect("nothing received on the raw socket within 5 s")
        .unwrap();
    buf.truncate(n);
    (buf, from)
}

#[test]
fn ip_in_ip_between_namespaces_kernel_and_caller_built_headers() {
    if !lab("ip_in_ip_between_namespaces_kernel_and_caller_built_headers") {
        return;
    }
    let p = Pair::new("raw");
    p.a.exec(&["ip", "addr", "add", "10.99.1.11/24", "dev", "a0"]);
    let (ready_tx, ready_rx) = mpsc::channel();

    // Receiver in b: bound to b's address, proto 4.
    let rx = p.b.spawn(move || async move {
        let sock = RawIp::open_with(
            IPPROTO_IPIP,
            &RawIpOptions {
                bind_addr: Some(B_ADDR),
                device: Some("b0".into()),
                header_included: false,
            },
        )
        .unwrap();
        assert_eq!(sock.protocol(), 4);
        ready_tx.send(()).unwrap();
        let first = recv(&sock).await;
        let second = recv(&sock).await;
        (first, second)
    });
    ready_rx.recv_timeout(Duration::from_secs(5)).unwrap();

    p.a.run(move || async move {
        // DSCP EF (46) and ECT(1).
        let inner = with_tos(inner_packet(), 0xb9);
        // 1. The kernel builds the outer header.
        let k = RawIp::open(IPPROTO_IPIP).unwrap();
        assert_eq!(k.send_to(&inner, B_ADDR).await.unwrap(), inner.len());
        let err = k.send_packet(&inner).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
        // 2. We build the outer header, with a source the routing table would not pick.
        let h = RawIp::open_with(
            IPPROTO_IPIP,
            &RawIpOptions {
                header_included: true,
                ..RawIpOptions::default()
            },
        )
        .unwrap();
        let mut outer = ipv4_header(A_SECOND, B_ADDR, 4, inner.len(), 0x4242, 17);
        outer[10] = 0; // let the kernel compute the checksum
        outer[11] = 0;
        outer.extend_from_slice(&inner);
        assert_eq!(h.send_packet(&outer).await.unwrap(), outer.len());
        let err = h.send_to(&inner, B_ADDR).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    });

    let ((p1, from1), (p2, from2)) = join(rx);
    let inner = with_tos(inner_packet(), 0xb9);

    // Kernel-built outer header: received whole, header first.
    assert_eq!(from1, A_ADDR);
    assert_eq!(p1[0], 0x45);
    assert_eq!(p1[9], 4, "outer protocol");
    assert_eq!(&p1[12..16], &A_ADDR.octets());
    assert_eq!(&p1[16..20], &B_ADDR.octets());
    assert_eq!(checksum(&p1[..20]), 0, "outer header checksum");
    assert_eq!(
        p1[1], 0xb8,
        "outer TOS: the inner DSCP (RFC 2003 3.1), ECN Not-ECT (RFC 6040 compatibility mode)"
    );
    assert_eq!(
        &p1[20..],
        &inner[..],
        "inner packet unchanged, its ECT(1) too"
    );
    assert_eq!(
        scapy_eval(&p1, "(p.proto, p.src, p[IP].payload.src, p[IP].payload.dst, p[IP].payload.dport, bytes(p[IP].payload.payload.payload))"),
        "(4, '10.99.1.1', '10.10.0.100', '10.40.0.10', 7, b'inner user datagram')"
    );

    // Caller-built header: our source, ID and TTL survive; the kernel fixed the checksum.
    assert_eq!(from2, A_SECOND);
    assert_eq!(&p2[12..16], &A_SECOND.octets());
    assert_eq!(&p2[4..6], &[0x42, 0x42], "IP ID");
    assert_eq!(p2[8], 17, "TTL");
    assert_eq!(
        checksum(&p2[..20]),
        0,
        "outer header checksum filled by the kernel"
    );
    assert_eq!(&p2[20..], &inner[..]);
    // scapy recomputes the header checksum independently and decodes the fields.
    assert_eq!(
        scapy_eval(
            &p2,
            "(p.src, p.id, p.ttl, (lambda q: (delattr(q, 'chksum'), IP(raw(q)).chksum)[1])(p.copy()) == p.chksum)"
        ),
        "('10.99.1.11', 16962, 17, True)"
    );
}

#[test]
fn esp_protocol_50_reaches_a_raw_socket() {
    if !lab("esp_protocol_50_reaches_a_raw_socket") {
        return;
    }
    let p = Pair::new("esp");
    let (ready_tx, ready_rx) = mpsc::channel();
    let rx = p.b.spawn(move || async move {
        let sock = RawIp::open(IPPROTO_ESP).unwrap();
        // A proto-4 socket must not see ESP.
        let ipip = RawIp::open(IPPROTO_IPIP).unwrap();
        ready_tx.send(()).unwrap();
        let got = recv(&sock).await;
        let mut buf = [0u8; 64];
        assert_eq!(
            ipip.try_recv_from(&mut buf).unwrap_err().kind(),
            std::io::ErrorKind::WouldBlock
        );
        got
    });
    ready_rx.recv_timeout(Duration::from_secs(5)).unwrap();
    // SPI 0x1000, sequence 1, then opaque bytes: the kernel does not parse ESP here.
    let esp: Vec<u8> = [0, 0, 0x10, 0, 0, 0, 0, 1]
        .into_iter()
        .chain(0u8..40)
        .collect();
    let sent = esp.clone();
    p.a.run(move || async move {
        let s = RawIp::open(IPPROTO_ESP).unwrap();
        s.send_to(&sent, B_ADDR).await.unwrap();
    });
    let (pkt, from) = join(rx);
    assert_eq!(from, A_ADDR);
    assert_eq!(pkt[9], 50);
    assert_eq!(&pkt[20..], &esp[..]);
    assert_eq!(
        scapy_eval(&pkt, "(hex(p.payload.spi), p.payload.seq)"),
        "('0x1000', 1)"
    );
}

/// `sendmmsg` and `recvmmsg` on raw IP-in-IP sockets: 300 packets (more than one
/// system call's worth) arrive complete, in order, with their source; a packet the
/// kernel refuses (too long for a raw send) is reported and the others still go.
#[test]
fn raw_batches_send_and_receive_in_order() {
    use netio::raw_batch::{RawRecvBatch, RawSendBatch};
    if !lab("raw_batches_send_and_receive_in_order") {
        return;
    }
    let p = Pair::new("rawb");
    let (ready_tx, ready_rx) = mpsc::channel();
    let rx = p.b.spawn(move || async move {
        let sock = RawIp::open_with(
            IPPROTO_IPIP,
            &RawIpOptions {
                bind_addr: Some(B_ADDR),
                ..RawIpOptions::default()
            },
        )
        .unwrap();
        // Room for all 300 at once (the sender does not wait), even on a busy machine.
        let v: libc::c_int = 4 << 20;
        // SAFETY: a valid socket and a pointer to a c_int with its size.
        let rc = unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&std::os::fd::AsFd::as_fd(&sock)),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&v as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "SO_RCVBUFFORCE");
        ready_tx.send(()).unwrap();
        let mut rb = RawRecvBatch::new(64, 2048);
        let mut got = Vec::new();
        let mut calls = 0;
        while got.len() < 300 {
            let n = tokio::time::timeout(Duration::from_secs(5), rb.recv(&sock))
                .await
                .expect("batch within 5 s")
                .unwrap();
            calls += 1;
            for i in 0..n {
                let (pkt, src) = rb.get(i).unwrap();
                got.push((pkt.to_vec(), src));
            }
            assert!(rb.get(n).is_none());
        }
        (got, calls)
    });
    ready_rx.recv_timeout(Duration::from_secs(5)).unwrap();
    p.a.run(move || async move {
        let sock = RawIp::open(IPPROTO_IPIP).unwrap();
        let mut b = RawSendBatch::new();
        for i in 0..300u16 {
            if i == 150 {
                b.push(&vec![0u8; 70_000], B_ADDR); // EMSGSIZE
            }
            let mut inner = inner_packet();
            inner[4..6].copy_from_slice(&i.to_be_bytes());
            b.push(&with_tos(inner, batch_tos(i)), B_ADDR);
        }
        let mut errors = Vec::new();
        let (n, bytes) = b.flush(&sock, |d, e| errors.push((d, e.kind()))).await;
        assert_eq!(n, 300);
        assert_eq!(bytes, 300 * inner_packet().len());
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(b.is_empty());
    });
    let (got, calls) = join(rx);
    assert_eq!(got.len(), 300);
    assert!(calls < 300, "{calls} receive calls for 300 packets");
    for (i, (pkt, src)) in got.iter().enumerate() {
        assert_eq!(*src, A_ADDR);
        assert_eq!(pkt[9], IPPROTO_IPIP);
        let inner = &pkt[20..];
        assert_eq!(u16::from_be_bytes([inner[4], inner[5]]), i as u16);
        // Each message of one sendmmsg carries its own packet's TOS.
        assert_eq!(inner[1], batch_tos(i as u16), "inner TOS of {i}");
        assert_eq!(pkt[1], batch_tos(i as u16) & 0xfc, "outer TOS of {i}");
    }
}

/// The TOS of packet `i` of the batch test: none, then DSCP and ECN values in turn.
fn batch_tos(i: u16) -> u8 {
    [0x00, 0xb8, 0x2a, 0x03, 0x49][usize::from(i % 5)]
}
