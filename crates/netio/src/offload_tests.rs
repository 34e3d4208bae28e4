use super::*;
use crate::coalesce::Coalescer;

/// An independent check of a TCP/UDP checksum: the one's-complement sum of the
/// pseudo-header and the whole segment, checksum field included, must be 0xffff.
fn l4_ok(p: &[u8]) -> bool {
    let ihl = usize::from(p[0] & 0x0f) * 4;
    let l4 = &p[ihl..];
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&p[12..20]);
    pseudo.extend_from_slice(&[0, p[9]]);
    pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    wire::checksum::checksum(&[pseudo.as_slice(), l4].concat()) == 0
}

fn ip_ok(p: &[u8]) -> bool {
    wire::ipv4::Ipv4Header::parse(p).is_ok_and(|h| usize::from(h.total_len) == p.len())
}

pub(crate) struct Rng(u64);
impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// An IPv4/TCP packet with valid checksums (or, with `partial`, the TCP checksum field
/// holding the pseudo-header sum as a TUN with TSO hands it over).
#[allow(clippy::too_many_arguments)]
pub(crate) fn tcp_packet(
    id: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    options: &[u8],
    payload: &[u8],
    partial: bool,
) -> Vec<u8> {
    assert_eq!(options.len() % 4, 0);
    let thl = 20 + options.len();
    let total = 20 + thl + payload.len();
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[4..6].copy_from_slice(&id.to_be_bytes());
    p[6] = 0x40;
    p[8] = 63;
    p[9] = 6;
    p[12..16].copy_from_slice(&[10, 20, 0, 50]);
    p[16..20].copy_from_slice(&[10, 10, 0, 100]);
    fix_ipv4_checksum(&mut p, 20);
    p[20..22].copy_from_slice(&5001u16.to_be_bytes());
    p[22..24].copy_from_slice(&40000u16.to_be_bytes());
    p[24..28].copy_from_slice(&seq.to_be_bytes());
    p[28..32].copy_from_slice(&ack.to_be_bytes());
    p[32] = ((thl / 4) as u8) << 4;
    p[33] = flags;
    p[34..36].copy_from_slice(&502u16.to_be_bytes());
    p[40..40 + options.len()].copy_from_slice(options);
    p[20 + thl..].copy_from_slice(payload);
    let pseudo = wire::checksum::pseudo_header(
        [10, 20, 0, 50],
        [10, 10, 0, 100],
        6,
        (thl + payload.len()) as u16,
    );
    let c = if partial {
        !wire::checksum::finish(pseudo)
    } else {
        wire::checksum::finish(wire::checksum::sum(&p[20..], pseudo))
    };
    p[36..38].copy_from_slice(&c.to_be_bytes());
    p
}

fn tso(mss: u16, hl: u16) -> VnetHdr {
    VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: GSO_TCPV4,
        hdr_len: hl,
        gso_size: mss,
        csum_start: 20,
        csum_offset: 16,
    }
}

#[test]
fn vnet_header_round_trips_and_short_input_is_an_error() {
    let h = tso(1428, 52);
    let mut buf = h.to_bytes().to_vec();
    buf.extend_from_slice(&[1, 2, 3]);
    let (back, rest) = VnetHdr::parse(&buf).unwrap();
    assert_eq!(back, h);
    assert_eq!(rest, &[1, 2, 3]);
    assert_eq!(VnetHdr::parse(&buf[..9]), Err(OffloadError::ShortVnetHdr));
}

#[test]
fn a_tso_super_packet_becomes_the_segments_the_kernel_would_send() {
    let payload: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
    let opts = [1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]; // NOP NOP timestamps
    let sp = tcp_packet(0x1234, 0xffff_f000, 77, 0x18 | 0x80, &opts, &payload, true);
    let mut out = PacketList::new();
    assert_eq!(segment(&tso(1400, 52), &sp, &mut out), Ok(4));
    let mut joined = Vec::new();
    for (i, s) in out.iter().enumerate() {
        assert!(ip_ok(s), "segment {i} IP header");
        assert!(l4_ok(s), "segment {i} TCP checksum");
        let want = if i < 3 { 1400 } else { 5000 - 3 * 1400 };
        assert_eq!(s.len(), 52 + want);
        assert_eq!(u16::from_be_bytes([s[4], s[5]]), 0x1234 + i as u16);
        let seq = u32::from_be_bytes([s[24], s[25], s[26], s[27]]);
        assert_eq!(seq, 0xffff_f000u32.wrapping_add(1400 * i as u32));
        // CWR only on the first, PSH only on the last; ACK everywhere.
        let f = s[33];
        assert_eq!(f & 0x80 != 0, i == 0, "CWR on {i}");
        assert_eq!(f & 0x08 != 0, i == 3, "PSH on {i}");
        assert!(f & 0x10 != 0);
        assert_eq!(&s[40..52], &opts);
        joined.extend_from_slice(&s[52..]);
    }
    assert_eq!(joined, payload);
}

#[test]
fn a_partial_checksum_without_gso_is_completed() {
    let p = tcp_packet(1, 2, 3, 0x18, &[], b"hello, world", true);
    assert!(!l4_ok(&p));
    let h = VnetHdr {
        flags: F_NEEDS_CSUM,
        csum_start: 20,
        csum_offset: 16,
        ..VnetHdr::default()
    };
    let mut out = PacketList::new();
    assert_eq!(segment(&h, &p, &mut out), Ok(1));
    let s = out.get(0).unwrap();
    assert!(l4_ok(s));
    assert_eq!(
        s,
        &tcp_packet(1, 2, 3, 0x18, &[], b"hello, world", false)[..]
    );
    // Without NEEDS_CSUM the packet goes out unchanged.
    out.clear();
    segment(&VnetHdr::default(), &p, &mut out).unwrap();
    assert_eq!(out.get(0).unwrap(), &p[..]);
}

#[test]
fn a_tcp_checksum_that_computes_to_zero_is_sent_as_zero() {
    // Choose the last payload word so that the sum becomes 0xffff: the checksum is 0.
    let probe = tcp_packet(1, 2, 3, 0x18, &[], b"hello, world\0\0", false);
    let c = u16::from_be_bytes([probe[36], probe[37]]);
    let payload = [&b"hello, world"[..], &c.to_be_bytes()].concat();
    let whole = tcp_packet(1, 2, 3, 0x18, &[], &payload, false);
    assert_eq!(
        &whole[36..38],
        &[0, 0],
        "the chosen payload makes a zero checksum"
    );
    let p = tcp_packet(1, 2, 3, 0x18, &[], &payload, true);
    let h = VnetHdr {
        flags: F_NEEDS_CSUM,
        csum_start: 20,
        csum_offset: 16,
        ..VnetHdr::default()
    };
    let mut out = PacketList::new();
    assert_eq!(segment(&h, &p, &mut out), Ok(1));
    // 0x0000, not 0xffff: tshark flags the latter ("see RFC 1624").
    assert_eq!(out.get(0).unwrap(), &whole[..]);
}

#[test]
fn udp_gso_gives_datagrams_with_their_own_length_and_checksum() {
    let payload: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
    let mut p = wire::udp::build_ipv4(
        "10.0.0.1".parse().unwrap(),
        "10.0.0.2".parse().unwrap(),
        1000,
        2000,
        &payload,
    );
    p[26] = 0;
    p[27] = 0;
    let h = VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: GSO_UDP_L4,
        hdr_len: 28,
        gso_size: 1200,
        csum_start: 20,
        csum_offset: 6,
    };
    let mut out = PacketList::new();
    assert_eq!(segment(&h, &p, &mut out), Ok(3));
    let mut joined = Vec::new();
    for s in out.iter() {
        assert!(ip_ok(s) && l4_ok(s));
        assert_eq!(
            usize::from(u16::from_be_bytes([s[24], s[25]])),
            s.len() - 20
        );
        joined.extend_from_slice(&s[28..]);
    }
    assert_eq!(joined, payload);
}

#[test]
fn bad_headers_are_refused_and_leave_the_output_untouched() {
    let sp = tcp_packet(1, 1, 1, 0x10, &[], &[0u8; 3000], true);
    let mut out = PacketList::new();
    out.push(b"keep");
    let cases: Vec<(VnetHdr, Vec<u8>, OffloadError)> = vec![
        (tso(0, 40), sp.clone(), OffloadError::GsoSize),
        (tso(1, 40), sp.clone(), OffloadError::TooManySegments),
        (tso(1000, 40), sp[..100].to_vec(), OffloadError::Ipv4Length),
        (tso(1000, 40), vec![], OffloadError::Ipv4),
        (tso(1000, 40), vec![0x46, 0, 0, 20], OffloadError::Ipv4),
        (
            VnetHdr {
                gso_type: GSO_TCPV6,
                ..tso(1000, 40)
            },
            sp.clone(),
            OffloadError::GsoType(GSO_TCPV6),
        ),
        (
            VnetHdr {
                gso_type: GSO_UDP_L4,
                ..tso(1000, 40)
            },
            sp.clone(),
            OffloadError::Protocol,
        ),
        (
            VnetHdr {
                csum_offset: 4000,
                ..VnetHdr::default()
            }
            .with_flags(F_NEEDS_CSUM),
            sp.clone(),
            OffloadError::CsumRange,
        ),
    ];
    for (h, p, want) in cases {
        assert_eq!(segment(&h, &p, &mut out), Err(want), "{h:?}");
        assert_eq!(out.len(), 1);
        assert_eq!(out.get(0).unwrap(), b"keep");
    }
    // A fragment cannot be segmented.
    let mut frag = sp.clone();
    frag[6] |= 0x20;
    assert_eq!(
        segment(&tso(1000, 40), &frag, &mut out),
        Err(OffloadError::Fragment)
    );
    // A TCP data offset pointing past the packet.
    let mut short = tcp_packet(1, 1, 1, 0x10, &[], &[], true);
    short[32] = 0xf0;
    assert_eq!(
        segment(&tso(1000, 40), &short, &mut out),
        Err(OffloadError::L4Header)
    );
}

impl VnetHdr {
    fn with_flags(mut self, f: u8) -> VnetHdr {
        self.flags = f;
        self
    }
}

/// Property: for random payload sizes, MSS, options and flags, every segment has
/// valid checksums, fits `hdr + mss`, and coalescing the segments gives the original
/// super-packet back (same payload, same gso_size), which the kernel would cut again
/// into the same segments.
#[test]
fn segmenting_then_coalescing_round_trips_for_random_packets() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut out = PacketList::new();
    let mut co = Coalescer::new();
    for round in 0..400 {
        let opt_len = 4 * rng.below(11) as usize;
        let opts: Vec<u8> = (0..opt_len).map(|_| rng.next() as u8).collect();
        let mss = 48 + rng.below(1500) as usize;
        let max = 65535 - 40 - opt_len;
        let len = 1 + rng.below(max.min(mss * 40) as u64) as usize;
        let payload: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        let flags = 0x10 | if rng.below(2) == 0 { 0x08 } else { 0 };
        let id = rng.next() as u16;
        let seq = rng.next() as u32;
        let sp = tcp_packet(id, seq, 9, flags, &opts, &payload, true);
        out.clear();
        let n = segment(&tso(mss as u16, (40 + opt_len) as u16), &sp, &mut out).unwrap();
        assert_eq!(n, len.div_ceil(mss), "round {round}");
        for s in out.iter() {
            assert!(ip_ok(s) && l4_ok(s), "round {round}");
            assert!(s.len() <= 40 + opt_len + mss);
        }
        co.clear();
        for s in out.iter() {
            co.push(s);
        }
        let merged: Vec<Vec<u8>> = co.finish().map(<[u8]>::to_vec).collect();
        assert_eq!(merged.len(), 1, "round {round}: one super-packet");
        let (h, p) = VnetHdr::parse(&merged[0]).unwrap();
        assert_eq!(&p[40 + opt_len..], &payload[..], "round {round}");
        if n > 1 {
            assert_eq!(h.gso_type, GSO_TCPV4);
            assert_eq!(usize::from(h.gso_size), mss);
            // Cut again: the same segments.
            let mut again = PacketList::new();
            segment(&h, p, &mut again).unwrap();
            assert!(again.iter().eq(out.iter()), "round {round}");
        } else {
            assert_eq!(h, VnetHdr::default());
            assert_eq!(p, out.get(0).unwrap());
        }
    }
}

/// Fuzz-ish: random and mutated headers and packets never panic, and whatever is
/// produced from a GSO request has valid checksums.
#[test]
fn random_input_never_panics() {
    let mut rng = Rng(12345);
    let mut out = PacketList::new();
    let base = tcp_packet(1, 1, 1, 0x18, &[1, 1, 1, 1], &[7u8; 4000], true);
    for _ in 0..20000 {
        let mut p = base.clone();
        for _ in 0..rng.below(4) {
            let i = rng.below(p.len() as u64) as usize;
            p[i] = rng.next() as u8;
        }
        p.truncate(rng.below(p.len() as u64 + 1) as usize);
        let mut hb = [0u8; VNET_HDR_LEN];
        for b in &mut hb {
            *b = rng.next() as u8;
        }
        if rng.below(2) == 0 {
            hb[1] = [GSO_NONE, GSO_TCPV4, GSO_UDP_L4][rng.below(3) as usize];
        }
        let (h, _) = VnetHdr::parse(&hb).unwrap();
        out.clear();
        if segment(&h, &p, &mut out).is_ok() && h.gso_type & !GSO_ECN != GSO_NONE {
            for s in out.iter() {
                assert!(ip_ok(s) && l4_ok(s));
            }
        }
    }
}

/// The fast sum agrees with `wire`'s for every length, alignment and start value.
#[test]
fn fast_checksum_matches_wire() {
    let mut rng = Rng(777);
    let data: Vec<u8> = (0..70_000).map(|_| rng.next() as u8).collect();
    for _ in 0..3000 {
        let start = rng.below(64) as usize;
        let max = if rng.below(4) == 0 { 66_000 } else { 80 };
        let len = rng.below(max) as usize;
        let d = &data[start..start + len];
        // Pseudo-header sums are below 2^20.
        let acc = rng.below(1 << 20) as u32;
        assert_eq!(
            wire::checksum::finish(csum_add(d, acc)),
            wire::checksum::finish(wire::checksum::sum(d, acc)),
            "len {len} start {start} acc {acc:#x}"
        );
    }
    assert_eq!(
        wire::checksum::finish(csum_add(&[0xff; 65535], 0xf_ffff)),
        wire::checksum::finish(wire::checksum::sum(&[0xff; 65535], 0xf_ffff))
    );
}
