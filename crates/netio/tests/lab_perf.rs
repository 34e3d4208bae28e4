//! Throughput figures for the raw IP-in-IP path (root only, `#[ignore]`d: run with
//! `cargo test -p netio --release --test lab_perf -- --ignored --nocapture`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use netio::raw::IPPROTO_IPIP;
use netio::RawIp;

const N: usize = 100_000;
const INNER_LEN: usize = 1400;

#[test]
#[ignore = "measurement, not a check: run explicitly with --ignored --nocapture"]
fn raw_ipip_one_packet_per_syscall() {
    if !lab("raw_ipip_one_packet_per_syscall") {
        return;
    }
    let p = Pair::new("perf");
    let (ready_tx, ready_rx) = mpsc::channel();
    let rx = p.b.spawn(move || async move {
        let sock = RawIp::open(IPPROTO_IPIP).unwrap();
        ready_tx.send(()).unwrap();
        let mut buf = vec![0u8; 2048];
        let mut got = 0usize;
        let mut first = None;
        let mut last = Instant::now();
        while got < N {
            match tokio::time::timeout(Duration::from_millis(500), sock.recv_from(&mut buf)).await {
                Ok(Ok((n, _))) => {
                    assert_eq!(n, 20 + INNER_LEN);
                    first.get_or_insert_with(Instant::now);
                    last = Instant::now();
                    got += 1;
                }
                Ok(Err(e)) => panic!("{e}"),
                Err(_) => break, // sender done, the rest was dropped
            }
        }
        (got, first.map(|f| last - f))
    });
    ready_rx.recv_timeout(Duration::from_secs(5)).unwrap();
    let sent_in = p.a.run(|| async {
        let sock = RawIp::open(IPPROTO_IPIP).unwrap();
        let inner = ipv4_packet(
            "10.10.0.100".parse().unwrap(),
            "10.40.0.10".parse().unwrap(),
            17,
            &vec![0xab; INNER_LEN - 20],
            64,
        );
        let t = Instant::now();
        for _ in 0..N {
            sock.send_to(&inner, B_ADDR).await.unwrap();
        }
        t.elapsed()
    });
    let (got, span) = join(rx);
    let span = span.unwrap_or_default();
    let tx_pps = N as f64 / sent_in.as_secs_f64();
    let rx_pps = got as f64 / span.as_secs_f64().max(1e-9);
    println!(
        "raw IP-in-IP, {INNER_LEN}-byte inner packets, one syscall each: sent {N} in {:.3} s \
         ({:.0} pkt/s, {:.2} Gbit/s); received {got} ({:.1}%) at {:.0} pkt/s ({:.2} Gbit/s)",
        sent_in.as_secs_f64(),
        tx_pps,
        tx_pps * (INNER_LEN as f64) * 8.0 / 1e9,
        100.0 * got as f64 / N as f64,
        rx_pps,
        rx_pps * (INNER_LEN as f64) * 8.0 / 1e9,
    );
    assert!(got > 0);
}
