use super::*;
use mip4::auth::{Algorithm, SecurityAssociation};
use mip4::replay::ReplayMethod;

fn node(home: Option<[u8; 4]>, nai: Option<&str>) -> MobileNodeConfig {
    MobileNodeConfig {
        home_addr: home.map(Ipv4Addr::from),
        nai: nai.map(str::to_string),
        sas: vec![SecurityAssociation::new(
            256,
            Algorithm::HmacMd5,
            b"0123456789abcdef",
        )],
        replay: ReplayMethod::Timestamp,
    }
}

fn request(home: [u8; 4]) -> Vec<u8> {
    let mut p = vec![1u8, 0, 0, 0];
    p.extend_from_slice(&home);
    p.extend_from_slice(&[0; 16]);
    p
}

/// Runs the classic BPF program on a datagram's payload, as the kernel does for
/// a reuseport group (only the instructions [`Router::steering`] emits).
fn run_cbpf(prog: &[libc::sock_filter], p: &[u8]) -> u32 {
    let (mut a, mut x, mut pc) = (0u32, 0u32, 0usize);
    loop {
        let i = prog[pc];
        pc += 1;
        match i.code {
            0x30 => match p.get(i.k as usize) {
                Some(b) => a = u32::from(*b),
                None => return 0,
            },
            0x20 => match p.get(i.k as usize..i.k as usize + 4) {
                Some(w) => a = u32::from_be_bytes([w[0], w[1], w[2], w[3]]),
                None => return 0,
            },
            0x05 => pc += i.k as usize,
            0x15 => pc += usize::from(if a == i.k { i.jt } else { i.jf }),
            0x35 => pc += usize::from(if a >= i.k { i.jt } else { i.jf }),
            0x14 => a = a.wrapping_sub(i.k),
            0x94 => a %= i.k,
            0x07 => x = a,
            0x87 => a = x,
            0x16 => return a,
            0x06 => return i.k,
            c => panic!("opcode {c:#x} not expected"),
        }
    }
}

#[test]
fn nodes_and_requests_meet_on_the_same_shard() {
    let nodes = vec![
        node(Some([10, 1, 0, 7]), None),
        node(Some([10, 1, 0, 8]), None),
        node(Some([10, 1, 0, 9]), Some("static@corp")),
        node(None, Some("roamer@corp")),
    ];
    let pool = Some((Ipv4Addr::new(10, 1, 1, 0), 64));
    let r = Router::new(2, pool, &nodes);
    assert_eq!(r.of_node(&nodes[0]), 1);
    assert_eq!(r.of_node(&nodes[1]), 0);
    // Anything with a NAI lives on shard 0, and so do its requests.
    assert_eq!(r.of_node(&nodes[2]), 0);
    assert_eq!(r.of_request(&request([10, 1, 0, 9])), 0);
    assert_eq!(r.of_node(&nodes[3]), 0);
    assert_eq!(r.of_request(&request([0, 0, 0, 0])), 0);
    // A NAI node renewing with its pool address (odd or not).
    assert_eq!(r.of_request(&request([10, 1, 1, 5])), 0);
    assert_eq!(r.of_addr(Ipv4Addr::new(10, 1, 1, 5)), 0);
    assert_eq!(r.of_request(&request([10, 1, 0, 7])), 1);
    assert_eq!(r.of_request(&[1, 0, 0]), 0);
    let mut td = request([10, 1, 0, 7]);
    td[0] = 4;
    assert_eq!(r.of_request(&td), 0);
    assert_eq!(
        Router::new(1, pool, &nodes).of_request(&request([10, 1, 0, 7])),
        0
    );
}

#[test]
fn steering_program_agrees_with_the_router() {
    for (n, pool) in [
        (2, None),
        (3, Some((Ipv4Addr::new(10, 1, 1, 0), 64))),
        (4, Some((Ipv4Addr::new(10, 1, 0, 250), 10))),
    ] {
        let r = Router::new(n, pool, &[]);
        let prog = r.steering();
        for last in [0u8, 1, 2, 3, 5, 7, 200, 249, 250, 255] {
            for third in [0u8, 1] {
                let p = request([10, 1, third, last]);
                assert_eq!(run_cbpf(&prog, &p) as usize, r.of_request(&p), "{p:?}");
            }
        }
        let mut td = request([10, 1, 0, 7]);
        td[0] = 4;
        assert_eq!(run_cbpf(&prog, &td), 0);
        assert_eq!(run_cbpf(&prog, &[1, 0, 0, 0, 10]), 0);
        assert_eq!(run_cbpf(&prog, &request([0, 0, 0, 0])), 0);

        // Every worker delivering Tunnel Data: by its inner source.
        let r = r.with_tunnel_data_by_source(true);
        let prog = r.steering();
        for last in [0u8, 1, 2, 3, 5, 7, 200, 249, 250, 255] {
            for third in [0u8, 1] {
                let p = request([10, 1, third, last]);
                assert_eq!(run_cbpf(&prog, &p) as usize, r.of_request(&p), "{p:?}");
                let t = tunnel_data([10, 1, third, last]);
                let shard = r.of_addr(Ipv4Addr::new(10, 1, third, last));
                assert_eq!(r.of_request(&t), shard, "{t:?}");
                assert_eq!(run_cbpf(&prog, &t) as usize, shard, "{t:?}");
            }
        }
        // Too short to hold an inner source, or a source of 0.0.0.0: worker 0.
        let t = tunnel_data([10, 1, 0, 7]);
        assert_eq!(run_cbpf(&prog, &t[..19]), 0);
        assert_eq!(r.of_request(&t[..19]), 0);
        assert_eq!(run_cbpf(&prog, &tunnel_data([0, 0, 0, 0])), 0);
    }
}

/// RFC 3519 Tunnel Data (type 4, next header 4) around an IPv4 header from `src`.
fn tunnel_data(src: [u8; 4]) -> Vec<u8> {
    let mut p = vec![4u8, 4, 0, 0, 0x45, 0, 0, 20, 0, 0, 0x40, 0, 64, 17, 0, 0];
    p.extend_from_slice(&src);
    p.extend_from_slice(&[10, 40, 0, 10]);
    p
}

#[test]
fn a_reload_is_checked_across_shards_before_any_changes() {
    let cfg = HaConfig::new(Ipv4Addr::new(10, 1, 0, 1));
    let mut k = 0u8;
    let s = Shards::new(
        &cfg,
        2,
        || {
            k += 1;
            [k; 32]
        },
        vec![
            node(Some([10, 1, 0, 7]), None),
            node(Some([10, 1, 0, 8]), None),
        ],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.lock(0).stats().requests, 0);
    // The same address twice, once with a NAI: the two would land on different
    // shards, and neither alone sees the duplicate.
    let bad = vec![
        node(Some([10, 1, 0, 7]), None),
        node(Some([10, 1, 0, 7]), Some("x@corp")),
    ];
    assert!(matches!(
        s.replace_nodes(bad),
        Err(ConfigError::DuplicateHome(_))
    ));
    // Nothing changed: both nodes still where they were.
    let sum = s
        .replace_nodes(vec![
            node(Some([10, 1, 0, 7]), None),
            node(Some([10, 1, 0, 8]), None),
        ])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((sum.added, sum.kept, sum.removed), (0, 2, 0));
}
