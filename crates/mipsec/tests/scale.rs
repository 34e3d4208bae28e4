//! Issue 15, end to end (root: a network namespace of its own): `mipsec ha` with
//! a key file of N nodes (MIPSEC_SCALE_NODES, default 20 000) under the load
//! generator, while `status` is read over and over; then a SIGHUP reload.
//! Without root it fails, unless MIPSEC_SKIP_LAB=1 (a loud SKIP).
#![allow(clippy::unwrap_used)]

use serde_json::{json, Value};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

const KEY: &str = "00112233445566778899aabbccddeeff";
const HA: Ipv4Addr = Ipv4Addr::new(10, 128, 0, 1);
const FIRST: Ipv4Addr = Ipv4Addr::new(10, 129, 0, 0);

fn root_or_skip(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var("MIPSEC_SKIP_LAB").is_ok_and(|v| v == "1") {
        eprintln!("\n!!!!!!!! SKIP [lab] {test} needs root (MIPSEC_SKIP_LAB=1) !!!!!!!!\n");
        return false;
    }
    panic!("{test} needs root for a network namespace (MIPSEC_SKIP_LAB=1 to skip)");
}

struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("ms{tag}{:04x}", std::process::id() & 0xffff);
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(std::process::Stdio::null())
            .status();
        let ok = |args: &[&str]| {
            assert!(
                Command::new("ip").args(args).status().unwrap().success(),
                "{args:?}"
            )
        };
        ok(&["netns", "add", &name]);
        ok(&["-n", &name, "link", "set", "lo", "up"]);
        ok(&["-n", &name, "addr", "add", &format!("{HA}/32"), "dev", "lo"]);
        Netns(name)
    }

    /// Runs `f` on a thread inside the namespace.
    fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = format!("/var/run/netns/{}", self.0);
        std::thread::spawn(move || {
            let fd = std::fs::File::open(&path).unwrap();
            // SAFETY: setns on a namespace file this thread owns; affects only this thread.
            let r =
                unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&fd), libc::CLONE_NEWNET) };
            assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

struct Ha {
    child: Child,
    log: PathBuf,
}

impl Ha {
    fn start(ns: &Netns, config: &Path, log: PathBuf, sock: &Path) -> Ha {
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns.0,
                env!("CARGO_BIN_EXE_mipsec"),
                "ha",
                "--config",
            ])
            .arg(config)
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let ha = Ha { child, log };
        let t = Instant::now();
        while mipsec::control::query(sock).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "HA did not start: {}",
                ha.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        ha
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, sig: libc::c_int) {
        // `ip netns exec` execs the daemon: the child's pid is the daemon's.
        // SAFETY: kill on our own child's pid.
        unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
    }
}

impl Drop for Ha {
    fn drop(&mut self) {
        self.signal(libc::SIGTERM);
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
    }
}

fn load(first: Ipv4Addr, nodes: u32, renew: Duration) -> loadgen::Config {
    loadgen::Config {
        ha: SocketAddrV4::new(HA, 434),
        first_home: first,
        nodes,
        spi: 256,
        key: hex::decode(KEY).unwrap(),
        window: 128,
        duration: renew,
        lifetime: 1800,
        care_of: Ipv4Addr::new(192, 0, 2, 1),
        bind: SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0),
        timeout: Duration::from_secs(1),
        verify: true,
    }
}

/// Reads `status` with `params`: (reply, its size in octets, how long it took).
fn status(sock: &Path, params: Option<Value>) -> (Value, usize, Duration) {
    let t = Instant::now();
    let v = mipsec::control::query_with(sock, params.as_ref()).unwrap();
    (v.clone(), v.to_string().len(), t.elapsed())
}

#[test]
fn registrations_flow_while_status_is_read_and_keys_reload_on_sighup() {
    if !root_or_skip("registrations_flow_while_status_is_read_and_keys_reload_on_sighup") {
        return;
    }
    scale_run(1, 1);
}

/// The same with two workers (an SO_REUSEPORT group steered by home address, the
/// binding table in two shards) loaded by two generator threads: every request
/// reaches the worker of its shard, both share the load, paging spans both
/// shards in address order, SIGHUP reaches both.
#[test]
fn two_workers_split_the_nodes_by_home_address() {
    if !root_or_skip("two_workers_split_the_nodes_by_home_address") {
        return;
    }
    let v = scale_run(2, 2);
    let w = v["workers"].as_array().unwrap();
    assert_eq!(w.len(), 2, "{v}");
    let total: u64 = w.iter().map(|x| x["datagrams"].as_u64().unwrap()).sum();
    for x in w {
        let d = x["datagrams"].as_u64().unwrap();
        // Home addresses alternate between the shards: about half each.
        assert!(d * 10 > total * 4, "worker share {d} of {total}: {v}");
        assert_eq!(x["other_shard"], json!(0), "steering missed: {v}");
    }
}

/// Runs the load while reading status, then reloads on SIGHUP; returns the last
/// full status.
fn scale_run(workers: usize, threads: usize) -> Value {
    let n: u32 = std::env::var("MIPSEC_SCALE_NODES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("ha.sock");
    let keys = dir.path().join("nodes.keys");
    let config = dir.path().join("ha.toml");
    std::fs::write(
        &keys,
        loadgen::key_lines(FIRST, n, 256, &hex::decode(KEY).unwrap()),
    )
    .unwrap();
    std::fs::write(
        &config,
        format!(
            "[ha]\naddress = \"{HA}\"\nhome_network = \"10.128.0.0/9\"\ntunnel_device = \"msc{workers}\"\n\
             control_socket = \"{}\"\nkey_file = \"nodes.keys\"\nworkers = {workers}\n\
             state_file = \"{}\"\n",
            sock.display(),
            dir.path().join("ha.state").display()
        ),
    )
    .unwrap();
    let ns = Netns::new(&format!("c{workers}"));
    let ha = Ha::start(&ns, &config, dir.path().join("ha.log"), &sock);

    // Registrations, and status read over and over at the same time.
    let cfg = load(FIRST, n, Duration::from_secs(4));
    let gen = ns.spawn(move || loadgen::run_threads(&cfg, threads).unwrap());
    let mut reads = Vec::new();
    let mut after: Option<String> = None;
    while !gen.is_finished() {
        let params = match reads.len() % 4 {
            0 => None,
            1 => Some(json!({"summary": true})),
            2 => Some(json!({"limit": 1000, "after": after})),
            _ => Some(json!({"node": "10.129.0.7"})),
        };
        let (v, size, took) = status(&sock, params);
        if let Some(next) = v["page"]["next_after"].as_str() {
            after = Some(next.to_string());
        }
        reads.push((size, took, v["bindings"].as_array().map_or(0, Vec::len)));
        std::thread::sleep(Duration::from_millis(20));
    }
    let (first, renew) = gen.join().unwrap();
    eprintln!("{n} nodes\nfirst registrations: {first}\nrenewals: {renew}");
    let biggest = reads.iter().map(|r| r.0).max().unwrap();
    let slowest = reads.iter().map(|r| r.1).max().unwrap();
    eprintln!(
        "{} status reads, largest {biggest} octets, slowest {slowest:?}",
        reads.len()
    );
    assert_eq!(first.accepted(), u64::from(n), "{first}\n{}", ha.logs());
    assert!(renew.accepted() > 0 && renew.bad_replies == 0, "{renew}");
    assert!(reads.len() >= 10, "only {} status reads", reads.len());
    // Bounded replies: 1000 nodes a page at most (about 250 octets a binding).
    assert!(biggest < 400_000, "a status reply of {biggest} octets");
    assert!(reads.iter().all(|r| r.2 <= 1000));
    // Nothing stalled the registrations for long (the old full status took seconds at 1 M).
    assert!(renew.max_us < 1_000_000, "{renew}");
    let (v, _, _) = status(&sock, Some(json!({"summary": true})));
    assert_eq!(v["bindings_total"], json!(n));
    // The bindings were saved meanwhile (by a thread: the renewals above never
    // waited a second), every one of them.
    let t = Instant::now();
    loop {
        let saved = std::fs::read(dir.path().join("ha.state")).unwrap_or_default();
        let v: Value = serde_json::from_slice(&saved).unwrap_or(Value::Null);
        if v.as_array().is_some_and(|a| a.len() == n as usize) {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "state file not complete"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // A page spans the shards in address order.
    let (v, _, _) = status(
        &sock,
        Some(json!({"limit": 50, "after": FIRST.to_string()})),
    );
    let page: Vec<u32> = v["bindings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            u32::from(
                b["home_address"]
                    .as_str()
                    .unwrap()
                    .parse::<Ipv4Addr>()
                    .unwrap(),
            )
        })
        .collect();
    let want: Vec<u32> = (1..=50).map(|k| u32::from(FIRST) + k).collect();
    assert_eq!(page, want, "{v}");
    assert_eq!(
        v["page"]["next_after"],
        json!(Ipv4Addr::from(u32::from(FIRST) + 50).to_string())
    );

    // SIGHUP: a new node in the key file is known, the others keep their bindings.
    let extra = Ipv4Addr::from(u32::from(FIRST) + n + 10);
    let one = move || {
        let mut c = load(extra, 1, Duration::ZERO);
        c.verify = false;
        c.timeout = Duration::from_millis(500);
        loadgen::run(&c).unwrap().0
    };
    let before = ns.spawn(one).join().unwrap();
    assert_eq!(before.codes.get(&131), Some(&1), "unknown node: {before}");
    let mut text = std::fs::read_to_string(&keys).unwrap();
    text.push_str(&format!("{extra} 256 {KEY}\n"));
    std::fs::write(&keys, &text).unwrap();
    ha.signal(libc::SIGHUP);
    let t = Instant::now();
    while !ha.logs().contains("mobile nodes reloaded") {
        assert!(t.elapsed() < Duration::from_secs(20), "{}", ha.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
    let after_hup = ns.spawn(one).join().unwrap();
    assert_eq!(after_hup.accepted(), 1, "{after_hup}");
    let (v, _, _) = status(&sock, Some(json!({"summary": true})));
    assert_eq!(v["bindings_total"], json!(n + 1), "live bindings kept");

    // A bad line: the reload is refused, naming file and line; the nodes stay.
    let bad_line = text.lines().count() + 1;
    text.push_str(&format!(
        "{} 256 nothex\n",
        Ipv4Addr::from(u32::from(extra) + 1)
    ));
    std::fs::write(&keys, &text).unwrap();
    ha.signal(libc::SIGHUP);
    let want = format!("{}:{bad_line}: key is not hexadecimal", keys.display());
    let t = Instant::now();
    while !ha.logs().contains(&want) {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "no {want:?} in\n{}",
            ha.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (v, _, _) = status(&sock, Some(json!({"summary": true})));
    assert_eq!(v["bindings_total"], json!(n + 1));
    v
}

/// A Registration Request for `home_addr` (SPI 256, `KEY`, HMAC-MD5) with a timestamp
/// Identification of now (low bits `seq`), co-located at 192.0.2.1.
fn signed_request(
    home_addr: Ipv4Addr,
    seq: u32,
    extensions: Vec<mip4::wire::Extension>,
) -> Vec<u8> {
    signed_request_flags(mip4::wire::Flags::D, home_addr, seq, extensions)
}

/// [`signed_request`] with these flags.
fn signed_request_flags(
    flags: mip4::wire::Flags,
    home_addr: Ipv4Addr,
    seq: u32,
    extensions: Vec<mip4::wire::Extension>,
) -> Vec<u8> {
    use mip4::auth::{Algorithm, SecurityAssociation};
    use mip4::wire::extension::AuthKind;
    use mip4::wire::RegistrationRequest;
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 2_208_988_800;
    let req = RegistrationRequest {
        flags,
        lifetime: 600,
        home_addr,
        home_agent: HA,
        care_of: Ipv4Addr::new(192, 0, 2, 1),
        ident: (secs << 32) | u64::from(seq),
        extensions,
    };
    let mut b = req.to_bytes();
    SecurityAssociation::new(256, Algorithm::HmacMd5, &hex::decode(KEY).unwrap())
        .append(AuthKind::MnHa, &mut b);
    b
}

/// Sends one signed request with home address 0.0.0.0 and the NAI (RFC 2794) from
/// inside `ns`; returns the reply's code and home address.
fn register_nai(ns: &Netns, nai: &'static str, seq: u32) -> (u8, Ipv4Addr) {
    use mip4::wire::{Extension, RegistrationReply};
    ns.spawn(move || {
        let b = signed_request(
            Ipv4Addr::UNSPECIFIED,
            seq,
            vec![Extension::Nai(nai.as_bytes().to_vec())],
        );
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        s.send_to(&b, SocketAddrV4::new(HA, 434)).unwrap();
        let mut buf = [0u8; 1500];
        let n = s.recv(&mut buf).unwrap();
        let r = RegistrationReply::parse(&buf[..n]).unwrap();
        (r.code.0, r.home_addr)
    })
    .join()
    .unwrap()
}

#[test]
fn nai_node_keeps_its_pool_address_across_a_restart() {
    if !root_or_skip("nai_node_keeps_its_pool_address_across_a_restart") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("ha.sock");
    let config = dir.path().join("ha.toml");
    std::fs::write(
        dir.path().join("nodes.keys"),
        format!("a@corp.example 256 {KEY}\nb@corp.example 256 {KEY}\n"),
    )
    .unwrap();
    std::fs::write(
        &config,
        format!(
            "[ha]\naddress = \"{HA}\"\nhome_network = \"10.128.0.0/9\"\ntunnel_device = \"msn0\"\n\
             control_socket = \"{}\"\nkey_file = \"nodes.keys\"\nstate_file = \"{}\"\n\
             dynamic_pool = \"10.130.0.0/29\"\nworkers = 2\n\
             [[mobile_node]]\nhome_address = \"10.129.0.3\"\nspi = 256\nkey = \"{KEY}\"\n\
             [[mobile_node]]\nhome_address = \"10.129.0.5\"\nnai = \"c@corp.example\"\nspi = 256\nkey = \"{KEY}\"\n",
            sock.display(),
            dir.path().join("ha.state").display()
        ),
    )
    .unwrap();
    let ns = Netns::new("n");
    let ha = Ha::start(&ns, &config, dir.path().join("ha1.log"), &sock);
    // b registers first: it gets the pool's first address, a the second.
    let (code, b_addr) = register_nai(&ns, "b@corp.example", 1);
    assert_eq!(
        (code, b_addr),
        (0, Ipv4Addr::new(10, 130, 0, 1)),
        "{}",
        ha.logs()
    );
    let (code, a_addr) = register_nai(&ns, "a@corp.example", 1);
    assert_eq!((code, a_addr), (0, Ipv4Addr::new(10, 130, 0, 2)));
    let (v, _, _) = status(&sock, Some(json!({"node": "a@corp.example"})));
    assert_eq!(v["bindings"][0]["home_address"], json!("10.130.0.2"));
    // A static node on the other shard (two workers here), saved with the rest.
    let stat = Ipv4Addr::new(10, 129, 0, 3);
    let one = ns
        .spawn(move || loadgen::run(&load(stat, 1, Duration::ZERO)).unwrap().0)
        .join()
        .unwrap();
    assert_eq!(one.accepted(), 1, "{one}");
    let (v, _, _) = status(&sock, None);
    for w in v["workers"].as_array().unwrap() {
        assert_eq!(w["other_shard"], json!(0), "{v}");
    }
    // A node with both a static address and a NAI lives on shard 0, but the
    // steering program sends its requests (odd address, no NAI extension) to
    // worker 1, which handles it under shard 0's lock: the steering is an
    // affinity, not a rule.
    let both = Ipv4Addr::new(10, 129, 0, 5);
    let one = ns
        .spawn(move || loadgen::run(&load(both, 1, Duration::ZERO)).unwrap().0)
        .join()
        .unwrap();
    assert_eq!(one.accepted(), 1, "{one}");
    let (v, _, _) = status(&sock, None);
    let other: Vec<u64> = v["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["other_shard"].as_u64().unwrap())
        .collect();
    assert_eq!(other, [0, 1], "{v}");
    let t = Instant::now();
    while !std::fs::read_to_string(dir.path().join("ha.state")).is_ok_and(|s| {
        s.contains("a@corp.example") && s.contains("10.129.0.3") && s.contains("c@corp.example")
    }) {
        assert!(t.elapsed() < Duration::from_secs(5), "state not saved");
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(ha);

    // After a restart, a (first to ask now) still gets its own address back.
    let ha = Ha::start(&ns, &config, dir.path().join("ha2.log"), &sock);
    let (code, again) = register_nai(&ns, "a@corp.example", 2);
    assert_eq!((code, again), (0, a_addr), "{}", ha.logs());
    let (v, _, _) = status(&sock, Some(json!({"summary": true})));
    assert_eq!(v["bindings_total"], json!(4), "all bindings restored");
    assert_eq!(
        status(&sock, Some(json!({"node": "10.129.0.3"}))).0["bindings"][0]["home_address"],
        json!("10.129.0.3")
    );
}

/// With UDP GRO on the group's sockets, a node's Registration Request and a Tunnel
/// Data message of the same size can reach the home agent as one merged receive (here
/// one UDP GSO send over loopback, which a GRO socket takes whole). The steering
/// program sees only the first datagram, the request, and gives the whole receive to
/// the worker of the request's home address (worker 1); that worker answers the
/// request and, with one queue of the tunnel device (`worker_queues = false`), hands
/// the Tunnel Data to worker 0, which runs the data path, instead of dropping it.
#[test]
fn tunnel_data_merged_behind_a_request_goes_to_worker_0() {
    if !root_or_skip("tunnel_data_merged_behind_a_request_goes_to_worker_0") {
        return;
    }
    let v = merged_request_and_tunnel_data(false);
    let w = v["workers"].as_array().unwrap();
    assert_eq!(w[1]["tunnel_data_delivered"], json!(0), "{v}");
}

/// Tunnel Data a core refused: before the binding (an unregistered source) or after
/// it (an IP-in-IP binding without the T bit), as the worker happened to see them.
fn refusals(v: &Value) -> u64 {
    v["counters"]["drops"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| k.starts_with("reverse tunnel"))
        .filter_map(|(_, n)| n.as_u64())
        .sum()
}

/// The same with a queue per worker (the default): worker 1 checks the Tunnel Data
/// behind the request itself (refused: no RFC 3519 binding), with nothing handed.
#[test]
fn tunnel_data_merged_behind_a_request_is_checked_where_it_lands() {
    if !root_or_skip("tunnel_data_merged_behind_a_request_is_checked_where_it_lands") {
        return;
    }
    let v = merged_request_and_tunnel_data(true);
    let w = v["workers"].as_array().unwrap();
    assert_eq!(w[1]["tunnel_data_handed"], json!(0), "{v}");
}

/// A request and Tunnel Data of the same size in one GSO send to an HA with two
/// workers (`worker_queues` as given); the status once worker 1 took both and a core
/// refused the Tunnel Data (no RFC 3519 binding), after it was handed over to worker 0
/// (one queue) or where it landed (a queue each).
fn merged_request_and_tunnel_data(queues: bool) -> Value {
    use mip4::wire::RegistrationReply;
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("ha.sock");
    let config = dir.path().join("ha.toml");
    std::fs::write(
        &config,
        format!(
            "[ha]\naddress = \"{HA}\"\nhome_network = \"10.128.0.0/9\"\ntunnel_device = \"msg0\"\n\
             control_socket = \"{}\"\nworkers = 2\nworker_queues = {queues}\n\
             [[mobile_node]]\nhome_address = \"10.129.0.3\"\nspi = 256\nkey = \"{KEY}\"\n",
            sock.display(),
        ),
    )
    .unwrap();
    let ns = Netns::new(if queues { "gq" } else { "g" });
    let ha = Ha::start(&ns, &config, dir.path().join("ha.log"), &sock);
    let (code, sizes) = ns
        .spawn(move || {
            let r = signed_request(Ipv4Addr::new(10, 129, 0, 3), 0, vec![]);
            // RFC 3519 Tunnel Data (type 4, next header 4 = IPv4) around an inner
            // packet padded so that both datagrams have the request's size.
            let inner_len = r.len() - 4;
            let mut td = vec![4u8, 4, 0, 0, 0x45, 0];
            td.extend_from_slice(&(inner_len as u16).to_be_bytes());
            td.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
            td.extend_from_slice(&[10, 129, 0, 3, 10, 40, 0, 10]);
            td.resize(r.len(), 0);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
                let mut both = r.clone();
                both.extend_from_slice(&td);
                let seg = u16::try_from(r.len()).unwrap();
                let to = SocketAddrV4::new(HA, 434);
                netio::udp::send_gso(&s, &both, to, None, seg)
                    .await
                    .unwrap();
                let mut buf = [0u8; 1500];
                let n = tokio::time::timeout(Duration::from_secs(3), s.recv(&mut buf))
                    .await
                    .unwrap()
                    .unwrap();
                let rep = RegistrationReply::parse(&buf[..n]).unwrap();
                (rep.code.0, (r.len(), td.len()))
            })
        })
        .join()
        .unwrap();
    assert_eq!(sizes.0, sizes.1);
    assert_eq!(code, 0, "{}", ha.logs());
    let t = Instant::now();
    loop {
        let (v, _, _) = status(&sock, None);
        let w = v["workers"].as_array().unwrap();
        let taken = refusals(&v) == 1 && (queues || w[1]["tunnel_data_handed"] == json!(1));
        if taken {
            // Both datagrams came to worker 1 in one receive and were cut apart.
            assert_eq!(w[1]["datagrams"], json!(2), "{v}");
            assert_eq!(w[1]["batches"], json!(1), "{v}");
            let drops = v["counters"]["drops"].to_string();
            assert!(!drops.contains("without the data path"), "{v}");
            return v;
        }
        assert!(t.elapsed() < Duration::from_secs(3), "not taken: {v}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// IPv4 + UDP (no UDP checksum) from `src:5000` to `dst:port`, IP checksum right.
fn inner_udp(src: Ipv4Addr, dst: Ipv4Addr, port: u16, data: &[u8]) -> Vec<u8> {
    let total = u16::try_from(28 + data.len()).unwrap();
    let mut p = vec![0x45, 0];
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&[0, 1, 0x40, 0, 64, 17, 0, 0]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    let sum = wire::checksum::checksum(&p);
    p[10..12].copy_from_slice(&sum.to_be_bytes());
    p.extend_from_slice(&5000u16.to_be_bytes());
    p.extend_from_slice(&port.to_be_bytes());
    p.extend_from_slice(&u16::try_from(8 + data.len()).unwrap().to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(data);
    p
}

/// With two workers the tunnel device has a queue per worker (multi-queue TUN) and
/// the steering program gives RFC 3519 Tunnel Data to the worker of its inner source:
/// worker 1 delivers its node's Tunnel Data into its own queue, into the stack, with
/// nothing handed to worker 0, and still only from the address and port the node
/// registered from (RFC 3519 section 6.1).
#[test]
fn each_worker_delivers_its_nodes_tunnel_data_into_its_own_queue() {
    use mip4::wire::{Extension, RegistrationReply};
    if !root_or_skip("each_worker_delivers_its_nodes_tunnel_data_into_its_own_queue") {
        return;
    }
    const NODE: Ipv4Addr = Ipv4Addr::new(10, 129, 0, 3);
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("ha.sock");
    let config = dir.path().join("ha.toml");
    std::fs::write(
        &config,
        format!(
            "[ha]\naddress = \"{HA}\"\nhome_network = \"10.128.0.0/9\"\ntunnel_device = \"msq0\"\n\
             control_socket = \"{}\"\nworkers = 2\n\
             [[mobile_node]]\nhome_address = \"{NODE}\"\nspi = 256\nkey = \"{KEY}\"\n",
            sock.display(),
        ),
    )
    .unwrap();
    let ns = Netns::new("q");
    let ha = Ha::start(&ns, &config, dir.path().join("ha.log"), &sock);
    let (code, got) = ns
        .spawn(move || {
            // From 127.0.0.1 for care-of 192.0.2.1: the HA sees a NAT (RFC 3519);
            // the T bit asks for the reverse tunnel that Tunnel Data is.
            let r = signed_request_flags(
                mip4::wire::Flags::D | mip4::wire::Flags::T,
                NODE,
                0,
                vec![Extension::UdpTunnelRequest {
                    force: false,
                    r: false,
                    encapsulation: 4,
                }],
            );
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            s.send_to(&r, SocketAddrV4::new(HA, 434)).unwrap();
            let mut buf = [0u8; 1500];
            let n = s.recv(&mut buf).unwrap();
            let code = RegistrationReply::parse(&buf[..n]).unwrap().code.0;
            let rx = std::net::UdpSocket::bind(SocketAddrV4::new(HA, 7000)).unwrap();
            rx.set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            let td = |i: u8| {
                let mut m = vec![4u8, 4, 0, 0];
                m.extend_from_slice(&inner_udp(NODE, HA, 7000, &[b't', b'd', i]));
                m
            };
            for i in 0..20 {
                s.send_to(&td(i), SocketAddrV4::new(HA, 434)).unwrap();
            }
            // The same node's Tunnel Data from another port: refused.
            let other = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            for i in 100..105 {
                other.send_to(&td(i), SocketAddrV4::new(HA, 434)).unwrap();
            }
            let mut got = Vec::new();
            while let Ok(n) = rx.recv(&mut buf) {
                got.push(buf[..n].to_vec());
            }
            (code, got)
        })
        .join()
        .unwrap();
    assert_eq!(code, 0, "{}", ha.logs());
    let (v, _, _) = status(&sock, None);
    let want: Vec<Vec<u8>> = (0..20u8).map(|i| vec![b't', b'd', i]).collect();
    assert_eq!(
        got, want,
        "the 20 inner datagrams, in order, none of the refused: {v}"
    );
    let w = v["workers"].as_array().unwrap();
    assert_eq!(w[1]["tunnel_data_delivered"], json!(20), "{v}");
    assert_eq!(w[1]["tunnel_data_handed"], json!(0), "{v}");
    assert_eq!(w[0]["tunnel_data_delivered"], json!(0), "{v}");
    assert_eq!(v["counters"]["rx_packets"], json!(20), "{v}");
    assert_eq!(
        v["counters"]["drops"]
            ["tunnel data from an address or port the node did not register from"],
        json!(5),
        "{v}"
    );
    assert!(
        ha.logs().lines().all(|l| !l.contains("no queue")),
        "{}",
        ha.logs()
    );
    // The device came up with IPv6 already off: nothing but IPv4 was ever read from it.
    assert!(
        v["counters"]["drops"]["not an IPv4 packet (from tun)"].is_null(),
        "{v}"
    );
}
