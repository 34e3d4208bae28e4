//! Lab bench (ignored; root): IKE setup time, MOBIKE move interruption, and TCP throughput
//! through our client vs strongSwan's own client to the same strongSwan gateway.
//!
//! `cargo test -p vpnc --release --test bench -- --ignored --nocapture`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use common::*;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

#[test]
#[ignore = "bench: run with --ignored --nocapture (root)"]
fn lab_bench() {
    if !need_lab("lab_bench") {
        return;
    }
    assert!(
        std::path::Path::new("/usr/bin/iperf3").exists(),
        "the bench needs iperf3"
    );
    let mut lab = Lab::up("z", GwOpts::default());
    // 1. IKE setup: first IKE_SA_INIT to CHILD_SA installed (two round trips, X25519).
    let mut setup = Vec::new();
    for _ in 0..7 {
        lab.start_client("");
        let s = lab.wait_up();
        setup.push(s["child_setup_ms"].as_f64().unwrap());
        lab.stop_client();
        std::thread::sleep(Duration::from_millis(200));
    }
    println!(
        "IKE setup (IKE_SA_INIT + IKE_AUTH, CHILD_SA installed): median {:.2} ms over {} runs {:?}",
        median(&mut setup),
        setup.len(),
        setup.iter().map(|x| format!("{x:.1}")).collect::<Vec<_>>()
    );

    // 2. MOBIKE moves under a 5 ms ping: answered pings lost, and the IKE exchange.
    lab.start_client("");
    lab.wait_up();
    let (cl, dev) = (lab.cl(), lab.cl_if());
    let mut old = "192.0.2.1".to_string();
    for (n, new) in ["192.0.2.3", "192.0.2.4", "192.0.2.5"].iter().enumerate() {
        let ping = std::process::Command::new("ip")
            .args([
                "netns", "exec", &cl, "ping", "-i", "0.005", "-c", "400", "-W", "1", "-q", INTERNAL,
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(700));
        sh(&[
            "ip",
            "-n",
            &cl,
            "addr",
            "add",
            &format!("{new}/24"),
            "dev",
            &dev,
        ])
        .unwrap();
        sh(&[
            "ip",
            "-n",
            &cl,
            "addr",
            "del",
            &format!("{old}/24"),
            "dev",
            &dev,
        ])
        .unwrap();
        let s = lab.wait_status(Duration::from_secs(10), "move", |s| {
            s["mobike_moves"].as_u64() >= Some(n as u64 + 1)
        });
        let out = ping.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find(|l| l.contains("transmitted"))
            .unwrap_or("");
        println!(
            "MOBIKE move {old} -> {new}: UPDATE_SA_ADDRESSES answered in {:.2} ms, {} IKE datagrams out / {} in; ping every 5 ms: {line}",
            s["last_move_ms"].as_f64().unwrap_or(f64::NAN),
            s["last_move_ike_tx"],
            s["last_move_ike_rx"]
        );
        old = new.to_string();
    }
    lab.stop_client();
    // Back to the original address for the throughput runs.
    ip_n(&cl, &format!("addr add 192.0.2.1/24 dev {dev}")).unwrap();
    sh(&[
        "ip",
        "-n",
        &cl,
        "addr",
        "del",
        &format!("{old}/24"),
        "dev",
        &dev,
    ])
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));

    // 3. Throughput, unlimited TCP for 6 s, 3 alternating rounds, same gateway and suite.
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    let (mut cpu_ours, mut cpu_theirs, mut cpu_gw) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..3 {
        lab.start_client("esp_proposals = [\"aes256gcm16\"]");
        lab.wait_up();
        let (pid, gw) = (lab.client_pid().unwrap(), lab.gw_pid().unwrap());
        let (c0, g0) = (cpu_secs(pid), cpu_secs(gw));
        let (gwns, clns) = (lab.gw(), lab.cl());
        let (e0, f0) = (
            udp_rcvbuf_errors(&lab, &gwns),
            udp_rcvbuf_errors(&lab, &clns),
        );
        let ip = lab.iperf_start(6, "0");
        let (_, _, bps) = lab.iperf_finish(ip);
        ours.push(bps / 1e6);
        println!(
            "  ours: {:.0} Mbit/s, UDP receive-buffer drops: gateway {}, client {}",
            bps / 1e6,
            udp_rcvbuf_errors(&lab, &gwns) - e0,
            udp_rcvbuf_errors(&lab, &clns) - f0
        );
        cpu_ours.push((cpu_secs(pid) - c0) / 6.0 * 100.0);
        cpu_gw.push((cpu_secs(gw) - g0) / 6.0 * 100.0);
        lab.stop_client();
        std::thread::sleep(Duration::from_millis(300));
        lab.start_strongswan_client("aes256gcm16");
        std::thread::sleep(Duration::from_millis(500));
        assert!(lab.ping(2), "strongSwan client tunnel");
        let pid = lab.sw_client_pid().unwrap();
        let c0 = cpu_secs(pid);
        let (gwns, clns) = (lab.gw(), lab.cl());
        let (e0, f0) = (
            udp_rcvbuf_errors(&lab, &gwns),
            udp_rcvbuf_errors(&lab, &clns),
        );
        let ip = lab.iperf_start(6, "0");
        let (_, _, bps) = lab.iperf_finish(ip);
        theirs.push(bps / 1e6);
        println!(
            "  strongSwan client: {:.0} Mbit/s, UDP receive-buffer drops: gateway {}, client {}",
            bps / 1e6,
            udp_rcvbuf_errors(&lab, &gwns) - e0,
            udp_rcvbuf_errors(&lab, &clns) - f0
        );
        cpu_theirs.push((cpu_secs(pid) - c0) / 6.0 * 100.0);
        lab.stop_sw_client();
        std::thread::sleep(Duration::from_millis(500));
    }
    let (o, t) = (median(&mut ours), median(&mut theirs));
    let (co, ct, cg) = (
        median(&mut cpu_ours),
        median(&mut cpu_theirs),
        median(&mut cpu_gw),
    );
    println!(
        "CPU during the run (% of one core): our client {co:.0}%, strongSwan client {ct:.0}%, gateway charon {cg:.0}% (with our client); \
         our client's projected ceiling at 100% of a core: {:.0} Mbit/s",
        o * 100.0 / co.max(1.0)
    );
    println!("TCP throughput through the tunnel (AES-256-GCM, iperf3 6 s, median of 3): ours {o:.0} Mbit/s {ours:.0?}, strongSwan client {t:.0} Mbit/s {theirs:.0?}, ratio {:.2}", o / t);
    drop(lab);

    // 4. Our ceiling: our client against a gateway made of our own Responder + ESP (plain ESP,
    //    no NAT), same topology and suite.
    let mut lab = Lab::up(
        "y",
        GwOpts {
            no_charon: true,
            ..Default::default()
        },
    );
    // Plain routing first, on the same path (client -> gateway namespace -> internal
    // host), for the issue-14 ratio: the tunnel's figure against what the lab routes.
    let cl = lab.cl();
    sh(&[
        "ip",
        "-n",
        &cl,
        "route",
        "add",
        "10.1.0.0/16",
        "via",
        "192.0.2.2",
    ])
    .unwrap();
    let (mut plain, mut plain_down) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let ip = lab.iperf_start(6, "0");
        plain.push(lab.iperf_finish(ip).2 / 1e6);
        let ip = lab.iperf_start_with(6, "0", &["-R"]);
        plain_down.push(lab.iperf_finish(ip).2 / 1e6);
    }
    sh(&[
        "ip",
        "-n",
        &cl,
        "route",
        "del",
        "10.1.0.0/16",
        "via",
        "192.0.2.2",
    ])
    .unwrap();
    let p = median(&mut plain);
    let pd = median(&mut plain_down);
    println!(
        "TCP throughput with plain routing on the same path: {p:.0} Mbit/s {plain:.0?}; \
         the other way {pd:.0} Mbit/s {plain_down:.0?}"
    );
    let gw = ourgw::spawn(&lab.gw(), &format!("{}b", lab.name));
    lab.start_client("esp_proposals = [\"aes256gcm16\"]");
    lab.wait_up();
    let pid = lab.client_pid().unwrap();
    let mut both = Vec::new();
    let mut cpu = Vec::new();
    for _ in 0..3 {
        let c0 = cpu_secs(pid);
        let ip = lab.iperf_start(6, "0");
        let (_, _, bps) = lab.iperf_finish(ip);
        both.push(bps / 1e6);
        cpu.push((cpu_secs(pid) - c0) / 6.0 * 100.0);
    }
    let (b, c) = (median(&mut both), median(&mut cpu));
    println!(
        "TCP throughput, our client to our own gateway (Responder + esp, plain ESP): {b:.0} Mbit/s {both:.0?}, \
         our client at {c:.0}% of a core; ratio to our client via strongSwan's gateway {:.2}, \
         to plain routing {:.2}",
        b / o,
        b / p
    );
    // 5. The same with ESP in UDP (`encap = true`): a burst leaves in one GSO send.
    lab.stop_client();
    std::thread::sleep(Duration::from_millis(300));
    lab.start_client("esp_proposals = [\"aes256gcm16\"]\nencap = true");
    let s = lab.wait_up();
    assert_eq!(s["udp_encap"], true, "{s}");
    let pid = lab.client_pid().unwrap();
    let (mut udp, mut ucpu) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let c0 = cpu_secs(pid);
        let ip = lab.iperf_start(6, "0");
        udp.push(lab.iperf_finish(ip).2 / 1e6);
        ucpu.push((cpu_secs(pid) - c0) / 6.0 * 100.0);
    }
    let (u, uc) = (median(&mut udp), median(&mut ucpu));
    println!(
        "TCP throughput, our client to our own gateway, ESP in UDP (encap = true, GSO): {u:.0} Mbit/s {udp:.0?}, \
         our client at {uc:.0}% of a core; ratio to plain routing {:.2}",
        u / p
    );
    // 6. And the other way: the gateway sends (GSO), our client receives (UDP GRO
    // takes a super-datagram whole, then opens each ESP packet).
    let (mut down, mut dcpu) = (Vec::new(), Vec::new());
    let gro0 = lab.status().unwrap()["udp_gro_datagrams"]
        .as_u64()
        .unwrap_or(0);
    for _ in 0..3 {
        let c0 = cpu_secs(pid);
        let ip = lab.iperf_start_with(6, "0", &["-R"]);
        down.push(lab.iperf_finish(ip).2 / 1e6);
        dcpu.push((cpu_secs(pid) - c0) / 6.0 * 100.0);
    }
    let s = lab.status().unwrap();
    let (d, dc) = (median(&mut down), median(&mut dcpu));
    println!(
        "TCP throughput, our own gateway to our client, ESP in UDP (gateway GSO, client UDP GRO): \
         {d:.0} Mbit/s {down:.0?}, our client at {dc:.0}% of a core; ratio to plain routing {:.2}; \
         the client's merged receives held {} datagrams",
        d / pd,
        s["udp_gro_datagrams"].as_u64().unwrap_or(0) - gro0
    );
    drop(gw);
}
