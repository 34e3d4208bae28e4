use super::*;
use crate::offload::{fix_ipv4_checksum, l4_checksum_ok, segment, PacketList};

const SRC: [u8; 4] = [10, 10, 0, 100];
const DST: [u8; 4] = [10, 40, 0, 10];

/// One IPv4/TCP segment with timestamps (32-octet header), full checksums.
fn tcp_segment(id: u16, seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x45, 0, 0, 0];
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&[0x40, 0, 64, 6, 0, 0]);
    p.extend_from_slice(&SRC);
    p.extend_from_slice(&DST);
    p.extend_from_slice(&[0x9c, 0x45, 0x14, 0x51]);
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&7u32.to_be_bytes());
    p.extend_from_slice(&[0x80, flags, 0, 63, 0, 0, 0, 0]);
    p.extend_from_slice(&[1, 1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 8]);
    p.extend_from_slice(payload);
    let total = p.len() as u16;
    p[2..4].copy_from_slice(&total.to_be_bytes());
    fix_ipv4_checksum(&mut p, 20);
    let len = (p.len() - 20) as u16;
    let c = checksum::finish(crate::offload::csum_add(
        &p[20..],
        checksum::pseudo_header(SRC, DST, 6, len),
    ));
    p[36..38].copy_from_slice(&c.to_be_bytes());
    assert!(l4_checksum_ok(&p, 20));
    p
}

/// `n` segments of `mss` octets (the last `last` octets, PSH on it), ids and
/// sequence numbers consecutive.
fn flow(n: usize, mss: usize, last: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let len = if i + 1 == n { last } else { mss };
            let payload: Vec<u8> = (0..len).map(|j| (i * 31 + j * 7) as u8).collect();
            let flags = if i + 1 == n { 0x18 } else { 0x10 };
            tcp_segment(0x1000 + i as u16, 5000 + (i * mss) as u32, flags, &payload)
        })
        .collect()
}

/// What the kernel's GRO makes of them: one packet, lengths of the whole, the first
/// segment's headers with every segment's PSH, the TCP checksum field holding the
/// pseudo-header sum (`tcp4_gro_complete`).
fn gro_merge(segs: &[Vec<u8>]) -> Vec<u8> {
    let mut m = segs[0].clone();
    for s in &segs[1..] {
        m.extend_from_slice(&s[52..]);
        m[33] |= s[33] & 0x08;
    }
    let total = m.len() as u16;
    m[2..4].copy_from_slice(&total.to_be_bytes());
    fix_ipv4_checksum(&mut m, 20);
    let partial = !checksum::finish(checksum::pseudo_header(SRC, DST, 6, total - 20));
    m[36..38].copy_from_slice(&partial.to_be_bytes());
    m
}

fn ipip(inner: &[u8]) -> Vec<u8> {
    let mut p = vec![0x45, 0, 0, 0, 0x12, 0x34, 0, 0, 64, 4, 0, 0];
    p.extend_from_slice(&[10, 20, 0, 50, 10, 10, 0, 1]);
    p.extend_from_slice(inner);
    let total = p.len() as u16;
    p[2..4].copy_from_slice(&total.to_be_bytes());
    fix_ipv4_checksum(&mut p, 20);
    p
}

/// Runs a classic BPF program as the kernel does on a packet socket (only the
/// instructions [`filter`] emits); `pkttype` answers the ancillary load.
fn run_cbpf(prog: &[libc::sock_filter], p: &[u8], pkttype: u32) -> u32 {
    let (mut a, mut x, mut pc) = (0u32, 0u32, 0usize);
    let mut mem = [0u32; 16];
    loop {
        let i = prog[pc];
        pc += 1;
        let k = i.k.wrapping_sub(SKF_NET_OFF) as usize;
        match i.code {
            0x20 if i.k == SKF_AD_PKTTYPE => a = pkttype,
            // The ethertype: IPv4 for a version 4 packet, else ARP's.
            0x20 if i.k == SKF_AD_PROTOCOL => {
                a = if p.first().map(|b| b >> 4) == Some(4) {
                    0x0800
                } else {
                    0x0806
                }
            }
            // Every packet load is relative to the network header (SKF_NET_OFF).
            0x20 | 0x28 | 0x30 if i.k < SKF_NET_OFF => panic!("load without SKF_NET_OFF"),
            0x20 => match p.get(k..k + 4) {
                Some(w) => a = u32::from_be_bytes([w[0], w[1], w[2], w[3]]),
                None => return 0,
            },
            0x28 => match p.get(k..k + 2) {
                Some(w) => a = u32::from(u16::from_be_bytes([w[0], w[1]])),
                None => return 0,
            },
            0x30 => match p.get(k) {
                Some(b) => a = u32::from(*b),
                None => return 0,
            },
            0x60 => a = mem[i.k as usize],
            0x02 => mem[i.k as usize] = a,
            0x04 => a = a.wrapping_add(i.k),
            0x14 => a = a.wrapping_sub(i.k),
            0x0c => a = a.wrapping_add(x),
            0x54 => a &= i.k,
            0x74 => a >>= i.k,
            0x07 => x = a,
            0x15 => pc += usize::from(if a == i.k { i.jt } else { i.jf }),
            0x1d => pc += usize::from(if a == x { i.jt } else { i.jf }),
            0x45 => pc += usize::from(if a & i.k != 0 { i.jt } else { i.jf }),
            0x06 => return i.k,
            c => panic!("opcode {c:#x} not expected"),
        }
    }
}

#[test]
fn a_merged_segment_train_is_recognised_and_cut_back_exactly() {
    for (n, mss, last) in [(2, 1416, 1416), (45, 1416, 700), (7, 536, 1), (3, 100, 100)] {
        let segs = flow(n, mss, last);
        let merged = gro_merge(&segs);
        let (hdr, certain) = merged_tcp(&merged).expect("merged");
        assert!(certain);
        assert_eq!(
            (
                hdr.gso_type,
                hdr.flags,
                hdr.hdr_len,
                hdr.csum_start,
                hdr.csum_offset
            ),
            (GSO_TCPV4, F_NEEDS_CSUM, 52, 20, 16)
        );
        // Cut at the sender's size, it gives back the sender's segments, byte for byte.
        let mut out = PacketList::new();
        let hdr = VnetHdr {
            gso_size: mss as u16,
            ..hdr
        };
        assert_eq!(segment(&hdr, &merged, &mut out), Ok(n));
        let back: Vec<&[u8]> = out.iter().collect();
        assert_eq!(back.len(), segs.len());
        for (a, b) in back.iter().zip(&segs) {
            assert_eq!(a, &b.as_slice(), "n={n} mss={mss}");
        }
    }
}

#[test]
fn ordinary_packets_are_not_taken_for_merged_ones() {
    let segs = flow(3, 1000, 1000);
    // Each segment alone (a lone segment keeps its full checksum).
    for s in &segs {
        assert!(merged_tcp(s).is_none());
    }
    // One whose true checksum equals its pseudo-header sum: possibly merged, not
    // certainly (and the other way round: a merged packet whose full checksum happens
    // to verify). The payload's last two octets are chosen to make it so.
    let mut odd = segs[0].clone();
    let n = odd.len();
    let want = !checksum::finish(checksum::pseudo_header(SRC, DST, 6, (n - 20) as u16));
    odd[36..38].copy_from_slice(&want.to_be_bytes());
    odd[n - 2..].copy_from_slice(&[0, 0]);
    let rest = !checksum::finish(crate::offload::csum_add(
        &odd[20..],
        checksum::pseudo_header(SRC, DST, 6, (n - 20) as u16),
    ));
    odd[n - 2..].copy_from_slice(&(!rest).to_be_bytes());
    assert!(l4_checksum_ok(&odd, 20));
    assert_eq!(merged_tcp(&odd).map(|m| m.1), Some(false));
    // A damaged checksum that is not the pseudo-header sum.
    let mut bad = gro_merge(&segs);
    bad[37] ^= 0x40;
    assert!(merged_tcp(&bad).is_none());
    // A fragment, UDP, a wrong total length.
    let mut frag = gro_merge(&segs);
    frag[6] = 0x20;
    fix_ipv4_checksum(&mut frag, 20);
    assert!(merged_tcp(&frag).is_none());
    let mut udp = gro_merge(&segs);
    udp[9] = 17;
    assert!(merged_tcp(&udp).is_none());
    let merged = gro_merge(&segs);
    assert!(merged_tcp(&merged[..merged.len() - 1]).is_none());
    // No input panics.
    for cut in 0..60 {
        let _ = merged_tcp(&merged[..cut]);
        let _ = parse_tapped(&merged[..cut]);
    }
}

#[test]
fn the_kernel_filter_passes_merged_ip_in_ip_tcp_and_nothing_else() {
    let prog = filter();
    let segs = flow(4, 1416, 300);
    let merged = ipip(&gro_merge(&segs));
    assert_eq!(run_cbpf(&prog, &merged, 0), SNAP, "merged, to this host");
    assert_eq!(run_cbpf(&prog, &merged, 3), 0, "merged, to another host");
    assert_eq!(run_cbpf(&prog, &ipip(&segs[0]), 0), 0, "one segment");
    let mut arp = merged.clone();
    arp[0] = 0x00;
    assert_eq!(run_cbpf(&prog, &arp, 0), 0, "not IPv4");
    assert_eq!(run_cbpf(&prog, &gro_merge(&segs), 0), 0, "not IP-in-IP");
    let mut frag = gro_merge(&segs);
    frag[6] = 0x20;
    assert_eq!(run_cbpf(&prog, &ipip(&frag), 0), 0, "inner fragment");
    // Many sums, so that the fold's carries are exercised: the filter agrees with the
    // Rust test on every one.
    for i in 0..2000u32 {
        let mut inner = gro_merge(&flow(2, 1 + (i as usize * 37) % 1400, 1));
        inner[12..16].copy_from_slice(&i.wrapping_mul(0x9e37_79b9).to_be_bytes());
        inner[16..20].copy_from_slice(&(!i).wrapping_mul(0x85eb_ca6b).to_be_bytes());
        let total = u16::from_be_bytes([inner[2], inner[3]]);
        let src = [inner[12], inner[13], inner[14], inner[15]];
        let dst = [inner[16], inner[17], inner[18], inner[19]];
        let partial = !checksum::finish(checksum::pseudo_header(src, dst, 6, total - 20));
        inner[36..38].copy_from_slice(&partial.to_be_bytes());
        fix_ipv4_checksum(&mut inner, 20);
        assert_eq!(merged_tcp(&inner).map(|m| m.1), Some(true), "sum {i}");
        assert_eq!(run_cbpf(&prog, &ipip(&inner), 0), SNAP, "sum {i}");
        inner[37] ^= 1;
        assert_eq!(run_cbpf(&prog, &ipip(&inner), 0), 0, "sum {i}, off by one");
    }
}

#[test]
fn a_tap_read_gives_the_key_the_raw_socket_s_copy_has() {
    let merged = gro_merge(&flow(5, 1416, 1416));
    let outer = ipip(&merged);
    // As the kernel fills it for the skb: offsets from the Ethernet header on.
    assert!(merged_tcp(&merged).is_some());
    let hdr = VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: GSO_TCPV4,
        hdr_len: 14 + 20 + 52,
        gso_size: 1416,
        csum_start: 14 + 20 + 20,
        csum_offset: 16,
    };
    let mut frame = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 8, 0];
    frame.extend_from_slice(&outer);
    frame.truncate(SNAP as usize);
    let read = [&hdr.to_bytes()[..], &frame].concat();
    let (key, size) = parse_tapped(&read).expect("parses");
    assert_eq!(size, 1416);
    assert_eq!(Some(key), key_of(&merged));
    // No partial checksum: no answer; one segment with its checksum left partial: 0.
    let plain = [&VnetHdr::default().to_bytes()[..], &frame].concat();
    assert!(parse_tapped(&plain).is_none());
    let lone = VnetHdr {
        gso_type: GSO_NONE,
        gso_size: 0,
        ..hdr
    };
    let lone = parse_tapped(&[&lone.to_bytes()[..], &frame].concat());
    assert_eq!(lone.map(|l| l.1), Some(0));
    let no_csum = VnetHdr { flags: 0, ..hdr };
    assert!(parse_tapped(&[&no_csum.to_bytes()[..], &frame].concat()).is_none());
    for cut in 0..read.len() {
        let _ = parse_tapped(&read[..cut]);
    }
}

/// `pkt` with its transport checksum field set to the pseudo-header sum, as a sender's
/// kernel leaves it for the device (`CHECKSUM_PARTIAL`).
fn left_partial(mut pkt: Vec<u8>, offset: usize) -> Vec<u8> {
    let len = (pkt.len() - 20) as u16;
    let partial = !checksum::finish(checksum::pseudo_header(SRC, DST, pkt[9], len));
    pkt[20 + offset..22 + offset].copy_from_slice(&partial.to_be_bytes());
    pkt
}

fn udp_datagram(payload: &[u8]) -> Vec<u8> {
    let mut p = tcp_segment(0x2000, 0, 0x10, &[]);
    p.truncate(20);
    p[9] = 17;
    let len = (8 + payload.len()) as u16;
    p.extend_from_slice(&[0x13, 0x88, 0x00, 0x07]);
    p.extend_from_slice(&len.to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    let total = p.len() as u16;
    p[2..4].copy_from_slice(&total.to_be_bytes());
    fix_ipv4_checksum(&mut p, 20);
    let c = checksum::finish(crate::offload::csum_add(
        &p[20..],
        checksum::pseudo_header(SRC, DST, 17, len),
    ));
    p[26..28].copy_from_slice(&c.to_be_bytes());
    assert!(l4_checksum_ok(&p, 20));
    p
}

#[test]
fn a_lone_packet_left_partial_is_completed_and_nothing_else_is_touched() {
    // A SYN-ACK and a UDP datagram whose checksums a veth peer left partial.
    let syn_ack = tcp_segment(0x3000, 99, 0x12, &[]);
    let dgram = udp_datagram(b"a datagram of some length");
    for (whole, offset) in [(syn_ack, 16usize), (dgram, 6)] {
        let partial = left_partial(whole.clone(), offset);
        let hdr = partial_single(&partial).expect("left partial");
        assert_eq!(hdr.gso_type, GSO_NONE);
        assert_eq!(hdr.flags, F_NEEDS_CSUM);
        assert_eq!(usize::from(hdr.csum_offset), offset);
        let mut out = PacketList::new();
        assert_eq!(segment(&hdr, &partial, &mut out).unwrap(), 1);
        assert_eq!(
            out.get(0).unwrap(),
            &whole[..],
            "completed as the sender would have"
        );
        // The same packet with its full checksum: ordinary.
        assert!(partial_single(&whole).is_none());
        // A fragment, a cut packet: not taken.
        let mut frag = partial.clone();
        frag[6] |= 0x20;
        assert!(partial_single(&frag).is_none());
        assert!(partial_single(&partial[..partial.len() - 1]).is_none());
        for cut in 0..partial.len() {
            let _ = partial_single(&partial[..cut]);
        }
    }
    // UDP without a checksum (0) stays as it is.
    let mut none = udp_datagram(b"x");
    none[26..28].copy_from_slice(&[0, 0]);
    assert!(partial_single(&none).is_none());
    // TCP with payload is merged_tcp's, not this.
    let data = left_partial(tcp_segment(0x3001, 99, 0x18, b"payload"), 16);
    assert!(partial_single(&data).is_none());
    assert!(merged_tcp(&data).is_some());
}
