use super::*;
use crate::offload::tests::tcp_packet;
use crate::offload::{segment, PacketList};

fn run(pkts: &[Vec<u8>]) -> Vec<(VnetHdr, Vec<u8>)> {
    let mut c = Coalescer::new();
    for p in pkts {
        c.push(p);
    }
    let out = c
        .finish()
        .map(|b| {
            let (h, p) = VnetHdr::parse(b).unwrap();
            (h, p.to_vec())
        })
        .collect();
    c.clear();
    out
}

fn seg(seq: u32, len: usize, flags: u8) -> Vec<u8> {
    tcp_packet(seq as u16, seq, 5, flags, &[], &vec![seq as u8; len], false)
}

#[test]
fn consecutive_segments_become_one_super_packet_the_kernel_can_cut_again() {
    let pkts = vec![
        seg(1000, 1400, 0x10),
        seg(2400, 1400, 0x10),
        seg(3800, 600, 0x18),
    ];
    let out = run(&pkts);
    assert_eq!(out.len(), 1);
    let (h, p) = &out[0];
    assert_eq!(h.gso_type, GSO_TCPV4);
    assert_eq!(h.gso_size, 1400);
    assert_eq!(h.flags, F_NEEDS_CSUM);
    assert_eq!((h.hdr_len, h.csum_start, h.csum_offset), (40, 20, 16));
    assert_eq!(p.len(), 40 + 3400);
    assert_eq!(p[33], 0x18, "PSH of the last segment kept");
    let mut again = PacketList::new();
    assert_eq!(segment(h, p, &mut again), Ok(3));
    // The kernel numbers IP ids on from the first (these were not consecutive), so
    // compare everything but the id and the header checksum.
    for (a, b) in again.iter().zip(&pkts) {
        assert_eq!(a[..4], b[..4]);
        assert_eq!(a[6..10], b[6..10]);
        assert_eq!(&a[12..], &b[12..]);
    }
}

#[test]
fn a_damaged_segment_is_not_merged_and_keeps_its_bad_checksum() {
    let mut bad = seg(2400, 1400, 0x10);
    bad[100] ^= 1;
    let pkts = vec![seg(1000, 1400, 0x10), bad.clone(), seg(3800, 1400, 0x10)];
    let out = run(&pkts);
    assert_eq!(out.len(), 3);
    assert_eq!(out[1].1, bad);
    assert!(out.iter().all(|(h, _)| *h == VnetHdr::default()));
}

#[test]
fn gaps_flags_options_and_other_flows_end_a_super_packet() {
    // A sequence gap.
    assert_eq!(run(&[seg(1000, 100, 0x10), seg(1200, 100, 0x10)]).len(), 2);
    // A longer segment after a shorter one.
    assert_eq!(run(&[seg(1000, 100, 0x10), seg(1100, 200, 0x10)]).len(), 2);
    // After a short one nothing joins.
    assert_eq!(
        run(&[
            seg(1000, 100, 0x10),
            seg(1100, 50, 0x10),
            seg(1150, 50, 0x10)
        ])
        .len(),
        2
    );
    // FIN is not merged and keeps its place after the flow's data.
    let out = run(&[
        seg(1000, 100, 0x10),
        seg(1100, 100, 0x10),
        seg(1200, 10, 0x11),
    ]);
    assert_eq!(out.len(), 2);
    assert_eq!(out[1].1[33], 0x11);
    // Different timestamps.
    let a = tcp_packet(
        1,
        1000,
        5,
        0x10,
        &[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0],
        &[1; 100],
        false,
    );
    let b = tcp_packet(
        2,
        1100,
        5,
        0x10,
        &[1, 1, 8, 10, 0, 0, 0, 2, 0, 0, 0, 0],
        &[1; 100],
        false,
    );
    assert_eq!(run(&[a, b]).len(), 2);
    // A different acknowledgment number.
    let a = tcp_packet(1, 1000, 5, 0x10, &[], &[1; 100], false);
    let b = tcp_packet(2, 1100, 6, 0x10, &[], &[1; 100], false);
    assert_eq!(run(&[a, b]).len(), 2);
}

#[test]
fn interleaved_flows_are_merged_each_and_non_tcp_passes_through() {
    let a1 = seg(1000, 100, 0x10);
    let a2 = seg(1100, 100, 0x10);
    let mut b1 = seg(5000, 100, 0x10);
    let mut b2 = seg(5100, 100, 0x10);
    for p in [&mut b1, &mut b2] {
        // Another source port: checksum adjusted by rebuilding the sum.
        p[20..22].copy_from_slice(&5002u16.to_be_bytes());
        p[36..38].copy_from_slice(&[0, 0]);
        let pseudo = wire::checksum::pseudo_header([10, 20, 0, 50], [10, 10, 0, 100], 6, 120);
        let c = wire::checksum::finish(wire::checksum::sum(&p[20..], pseudo));
        p[36..38].copy_from_slice(&c.to_be_bytes());
    }
    let udp = wire::udp::build_ipv4(
        "10.0.0.1".parse().unwrap(),
        "10.0.0.2".parse().unwrap(),
        1,
        2,
        b"x",
    );
    let out = run(&[a1, b1, udp.clone(), a2, b2]);
    assert_eq!(out.len(), 3);
    assert_eq!(out[0].1.len(), 40 + 200);
    assert_eq!(out[1].1.len(), 40 + 200);
    assert_eq!(out[2].1, udp);
    // Garbage is passed through, not parsed into a panic.
    assert_eq!(run(&[vec![], vec![0x45], vec![0xff; 60]]).len(), 3);
}
