//! Traffic: the CN's TCP sink/source and UDP echo responder, and the MN-side client
//! (two long TCP transfers, up and down, plus a UDP probe series) that records what the
//! timeline needs.
//!
//! TCP protocol: the client sends one line, `UP\n` (CN reads and discards) or
//! `DOWN <bytes per second>\n` (CN writes at that rate, 0 = unlimited, until the client
//! closes). UDP: the CN echoes every datagram.

use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

use crate::netns::{self, other, Result};

pub const TCP_PORT: u16 = 5001;
pub const UDP_PORT: u16 = 5002;
const CHUNK: usize = 16 * 1024;

// ---- server (runs inside the CN namespace as `mipsec-lab serve`) -----------------------

/// Serves TCP on `tcp_port` and UDP echo on `udp_port` forever.
pub fn serve(tcp_port: u16, udp_port: u16) -> Result<()> {
    let udp = UdpSocket::bind(("0.0.0.0", udp_port))?;
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        loop {
            if let Ok((n, from)) = udp.recv_from(&mut buf) {
                let _ = udp.send_to(buf.get(..n).unwrap_or(&[]), from);
            }
        }
    });
    let l = TcpListener::bind(("0.0.0.0", tcp_port))?;
    eprintln!("serve: tcp {tcp_port} udp {udp_port}");
    for s in l.incoming() {
        let Ok(s) = s else { continue };
        std::thread::spawn(move || {
            let peer = s.peer_addr().ok();
            let r = serve_conn(s);
            eprintln!("serve: {peer:?} done: {r:?}");
        });
    }
    Ok(())
}

fn serve_conn(s: TcpStream) -> io::Result<u64> {
    let _ = s.set_nodelay(true);
    let mut rd = BufReader::new(s.try_clone()?);
    let mut line = String::new();
    rd.read_line(&mut line)?;
    let mut total = 0u64;
    if line.starts_with("UP") {
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = rd.read(&mut buf)?;
            if n == 0 {
                return Ok(total);
            }
            total += n as u64;
        }
    }
    let rate: u64 = line
        .strip_prefix("DOWN")
        .and_then(|r| r.trim().parse().ok())
        .unwrap_or(0);
    let mut w = s;
    let buf = vec![0x5au8; CHUNK];
    let mut pacer = Pacer::new(rate);
    loop {
        pacer.wait(total);
        w.write_all(&buf)?;
        total += buf.len() as u64;
    }
}

/// Simple rate limiter: sleeps until `sent` bytes are due at `rate` B/s.
struct Pacer {
    rate: u64,
    start: Instant,
}

impl Pacer {
    fn new(rate: u64) -> Self {
        Pacer {
            rate,
            start: Instant::now(),
        }
    }
    fn wait(&mut self, sent: u64) {
        if self.rate == 0 {
            return;
        }
        let due = Duration::from_secs_f64(sent as f64 / self.rate as f64);
        let el = self.start.elapsed();
        // After a stall, do not burst to catch up: forget debt beyond 100 ms.
        if el > due + Duration::from_millis(100) {
            self.start += el - due - Duration::from_millis(100);
        }
        if due > el {
            std::thread::sleep((due - el).min(Duration::from_millis(50)));
        }
    }
}

// ---- client (threads inside the MN namespace) ------------------------------------------

/// Options of the MN-side traffic.
#[derive(Debug, Clone)]
pub struct ClientOpts {
    /// Source address (the home address), or None for the kernel's choice.
    pub bind: Option<Ipv4Addr>,
    pub cn: Ipv4Addr,
    /// TCP rate per direction in bytes/s (0 = unlimited).
    pub rate: u64,
    pub up: bool,
    pub down: bool,
    /// UDP probe interval (None = no probes).
    pub probe_interval: Option<Duration>,
}

/// A TCP failure seen by the client.
#[derive(Debug, Clone)]
pub struct TcpFault {
    pub at: Duration,
    pub dir: &'static str,
    pub what: String,
}

#[derive(Default)]
struct Shared {
    /// Probe send offsets (µs since start), indexed by sequence number.
    sent: Mutex<Vec<u64>>,
    /// (seq, receive offset µs) of echoed probes.
    echoed: Mutex<Vec<(u64, u64)>>,
    up_bytes: AtomicU64,
    down_bytes: AtomicU64,
    faults: Mutex<Vec<TcpFault>>,
    /// (offset µs, up, down) sampled every 50 ms.
    samples: Mutex<Vec<(u64, u64, u64)>>,
}

/// Running client traffic. [`Client::stop`] returns the record.
pub struct Client {
    pub start: Instant,
    stop: Arc<AtomicBool>,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<Result<()>>>,
}

/// What the client recorded.
#[derive(Debug, Default, Clone)]
pub struct Record {
    pub probes_sent: Vec<u64>,
    /// (send offset µs, rtt µs) of echoed probes, sorted by send time.
    pub probes_ok: Vec<(u64, u64)>,
    pub up_bytes: u64,
    pub down_bytes: u64,
    pub faults: Vec<TcpFault>,
    pub samples: Vec<(u64, u64, u64)>,
    pub duration: Duration,
}

fn micros(start: Instant) -> u64 {
    start.elapsed().as_micros() as u64
}

fn tcp_connect(bind: Option<Ipv4Addr>, to: SocketAddrV4) -> io::Result<TcpStream> {
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    if let Some(b) = bind {
        s.bind(&SocketAddr::V4(SocketAddrV4::new(b, 0)).into())?;
    }
    s.connect_timeout(&SocketAddr::V4(to).into(), Duration::from_secs(5))?;
    let t: TcpStream = s.into();
    t.set_nodelay(true)?;
    t.set_read_timeout(Some(Duration::from_millis(200)))?;
    t.set_write_timeout(Some(Duration::from_millis(200)))?;
    Ok(t)
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
    )
}

impl Client {
    /// Starts the traffic from namespace `ns`. Connections are established before return.
    pub fn start(ns: &str, o: &ClientOpts) -> Result<Client> {
        let start = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared::default());
        let mut threads = Vec::new();
        let tcp_to = SocketAddrV4::new(o.cn, TCP_PORT);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<()>>();
        let mut expected = 0;
        for (dir, on) in [("up", o.up), ("down", o.down)] {
            if !on {
                continue;
            }
            expected += 1;
            let (stop, sh, bind, rate, ready) = (
                stop.clone(),
                shared.clone(),
                o.bind,
                o.rate,
                ready_tx.clone(),
            );
            threads.push(netns::spawn_in(ns, move || {
                let s = match tcp_connect(bind, tcp_to) {
                    Ok(s) => s,
                    Err(e) => {
                        let err = other(format!("tcp {dir} connect to {tcp_to}: {e}"));
                        let _ = ready.send(Err(other(err.to_string())));
                        return Err(err);
                    }
                };
                let _ = ready.send(Ok(()));
                if dir == "up" {
                    tcp_up(s, rate, start, &stop, &sh)
                } else {
                    tcp_down(s, rate, start, &stop, &sh)
                }
            }));
        }
        if let Some(iv) = o.probe_interval {
            expected += 1;
            let (stop, sh, bind, cn, ready) =
                (stop.clone(), shared.clone(), o.bind, o.cn, ready_tx.clone());
            threads.push(netns::spawn_in(ns, move || {
                let sock = UdpSocket::bind((bind.unwrap_or(Ipv4Addr::UNSPECIFIED), 0));
                let sock = match sock {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = ready.send(Err(other(format!("udp bind: {e}"))));
                        return Err(e.into());
                    }
                };
                let _ = ready.send(Ok(()));
                probe(sock, SocketAddrV4::new(cn, UDP_PORT), iv, start, &stop, &sh)
            }));
        }
        drop(ready_tx);
        let mut client = Client {
            start,
            stop,
            shared: shared.clone(),
            threads,
        };
        for _ in 0..expected {
            match ready_rx.recv_timeout(Duration::from_secs(10)) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    client.stop();
                    return Err(e);
                }
                Err(_) => {
                    client.stop();
                    return Err(other("traffic threads did not start"));
                }
            }
        }
        let (stop2, sh) = (client.stop.clone(), shared);
        client.threads.push(std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                let s = (
                    micros(start),
                    sh.up_bytes.load(Ordering::Relaxed),
                    sh.down_bytes.load(Ordering::Relaxed),
                );
                if let Ok(mut v) = sh.samples.lock() {
                    v.push(s);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Ok(())
        }));
        Ok(client)
    }

    /// Offset of now from the client start.
    pub fn now_us(&self) -> u64 {
        micros(self.start)
    }

    /// Bytes transferred so far (up, down).
    pub fn bytes(&self) -> (u64, u64) {
        (
            self.shared.up_bytes.load(Ordering::Relaxed),
            self.shared.down_bytes.load(Ordering::Relaxed),
        )
    }

    /// When the probe of the last echo to arrive was sent (µs since start), if any
    /// came back.
    pub fn last_echoed_sent_us(&self) -> Option<u64> {
        let seq = self.shared.echoed.lock().ok()?.last()?.0;
        let sent = self.shared.sent.lock().ok()?;
        sent.get(usize::try_from(seq).ok()?).copied()
    }

    /// Number of TCP faults so far.
    pub fn faults(&self) -> usize {
        self.shared.faults.lock().map(|v| v.len()).unwrap_or(0)
    }

    /// Stops every thread and returns the record.
    pub fn stop(&mut self) -> Record {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            if let Ok(Err(e)) = t.join() {
                eprintln!("traffic thread: {e}");
            }
        }
        let sh = &self.shared;
        let sent = sh.sent.lock().map(|v| v.clone()).unwrap_or_default();
        let mut ok: Vec<(u64, u64)> = sh
            .echoed
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(seq, rx)| {
                let tx = *sent.get(usize::try_from(seq).ok()?)?;
                Some((tx, rx.saturating_sub(tx)))
            })
            .collect();
        ok.sort_unstable();
        ok.dedup_by_key(|p| p.0);
        Record {
            probes_sent: sent,
            probes_ok: ok,
            up_bytes: sh.up_bytes.load(Ordering::Relaxed),
            down_bytes: sh.down_bytes.load(Ordering::Relaxed),
            faults: sh.faults.lock().map(|v| v.clone()).unwrap_or_default(),
            samples: sh.samples.lock().map(|v| v.clone()).unwrap_or_default(),
            duration: self.start.elapsed(),
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.stop();
        }
    }
}

fn fault(sh: &Shared, start: Instant, dir: &'static str, what: String) {
    if let Ok(mut v) = sh.faults.lock() {
        v.push(TcpFault {
            at: start.elapsed(),
            dir,
            what,
        });
    }
}

fn tcp_up(
    mut s: TcpStream,
    rate: u64,
    start: Instant,
    stop: &AtomicBool,
    sh: &Shared,
) -> Result<()> {
    if let Err(e) = s.write_all(b"UP\n") {
        fault(sh, start, "up", format!("write header: {e}"));
        return Ok(());
    }
    let buf = vec![0xa5u8; CHUNK];
    let mut pacer = Pacer::new(rate);
    let mut sent = 0u64;
    while !stop.load(Ordering::Relaxed) {
        pacer.wait(sent);
        match s.write(&buf) {
            Ok(0) => {
                fault(sh, start, "up", "write returned 0 (closed)".into());
                return Ok(());
            }
            Ok(n) => {
                sent += n as u64;
                sh.up_bytes.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(e) if is_timeout(&e) => {}
            Err(e) => {
                fault(sh, start, "up", format!("write: {e}"));
                return Ok(());
            }
        }
    }
    let _ = s.shutdown(Shutdown::Both);
    Ok(())
}

fn tcp_down(
    mut s: TcpStream,
    rate: u64,
    start: Instant,
    stop: &AtomicBool,
    sh: &Shared,
) -> Result<()> {
    if let Err(e) = s.write_all(format!("DOWN {rate}\n").as_bytes()) {
        fault(sh, start, "down", format!("write header: {e}"));
        return Ok(());
    }
    let mut buf = vec![0u8; CHUNK * 4];
    while !stop.load(Ordering::Relaxed) {
        match s.read(&mut buf) {
            Ok(0) => {
                fault(sh, start, "down", "unexpected close (EOF)".into());
                return Ok(());
            }
            Ok(n) => {
                sh.down_bytes.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(e) if is_timeout(&e) => {}
            Err(e) => {
                fault(sh, start, "down", format!("read: {e}"));
                return Ok(());
            }
        }
    }
    let _ = s.shutdown(Shutdown::Both);
    Ok(())
}

fn probe(
    sock: UdpSocket,
    to: SocketAddrV4,
    iv: Duration,
    start: Instant,
    stop: &Arc<AtomicBool>,
    sh: &Arc<Shared>,
) -> Result<()> {
    sock.set_read_timeout(Some(Duration::from_millis(100)))?;
    let rx = sock.try_clone()?;
    let (stop2, sh2) = (stop.clone(), sh.clone());
    let receiver = std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while !stop2.load(Ordering::Relaxed) {
            if let Ok(n) = rx.recv(&mut buf) {
                if let Some(seq) = buf
                    .get(..n.min(8))
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                {
                    let t = micros(start);
                    if let Ok(mut v) = sh2.echoed.lock() {
                        v.push((u64::from_be_bytes(seq), t));
                    }
                }
            }
        }
    });
    let mut seq = 0u64;
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let t = micros(start);
        if let Ok(mut v) = sh.sent.lock() {
            v.push(t);
        }
        let mut pkt = [0u8; 32];
        pkt[..8].copy_from_slice(&seq.to_be_bytes());
        // Errors (no route during a move) just mean a lost probe.
        let _ = sock.send_to(&pkt, to);
        seq += 1;
        next += iv;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            next = now;
        }
    }
    let _ = receiver.join();
    Ok(())
}

// ---- analysis ---------------------------------------------------------------------------

impl Record {
    /// Largest gap (ms) between send times of consecutive echoed probes, over gaps that
    /// overlap `[from_us, to_us]`. If no probe was echoed after `from_us` (up to the end
    /// of the record), the gap runs to the end of the window.
    pub fn max_gap_ms(&self, from_us: u64, to_us: u64) -> f64 {
        let ok = &self.probes_ok;
        let mut best = 0u64;
        let mut prev: Option<u64> = None;
        for &(t, _) in ok {
            if let Some(p) = prev {
                // A gap belongs to the window its end falls in, or to every window it
                // spans entirely.
                if t > from_us && (t <= to_us || p < from_us) {
                    best = best.max(t - p);
                }
            }
            prev = Some(t);
            if t > to_us {
                break;
            }
        }
        let last_before_end = ok.iter().rev().find(|(t, _)| *t <= to_us).map(|p| p.0);
        let any_after = ok.iter().any(|(t, _)| *t > to_us);
        if !any_after {
            let base = last_before_end.unwrap_or(from_us);
            best = best.max(to_us.saturating_sub(base));
        }
        best as f64 / 1000.0
    }

    /// Send offsets of the probes sent within `[from_us, to_us]` that were never echoed.
    pub fn lost_probes(&self, from_us: u64, to_us: u64) -> Vec<u64> {
        let ok: std::collections::HashSet<u64> = self
            .probes_ok
            .iter()
            .map(|p| p.0)
            .filter(|t| *t >= from_us && *t <= to_us)
            .collect();
        self.probes_sent
            .iter()
            .copied()
            .filter(|t| *t >= from_us && *t <= to_us && !ok.contains(t))
            .collect()
    }

    /// First echoed probe sent at or after `from_us` (its send offset).
    pub fn first_ok_after(&self, from_us: u64) -> Option<u64> {
        self.probes_ok
            .iter()
            .find(|(t, _)| *t >= from_us)
            .map(|p| p.0)
    }

    /// Counter values (up, down) at the sample nearest before `t_us`.
    pub fn bytes_at(&self, t_us: u64) -> (u64, u64) {
        self.samples
            .iter()
            .rev()
            .find(|s| s.0 <= t_us)
            .map_or((0, 0), |s| (s.1, s.2))
    }

    /// Longest period (ms) within `[from_us, to_us]` in which one direction made no
    /// progress, over the directions that carried any data in the whole record (a
    /// stalled upload is a stall even while the download runs).
    pub fn longest_stall_ms(&self, from_us: u64, to_us: u64) -> f64 {
        let mut best = 0u64;
        // Direction 0 is up, 1 is down: (t, up, down) samples.
        for dir in 0..2 {
            let value = |s: &(u64, u64, u64)| if dir == 0 { s.1 } else { s.2 };
            if self.samples.last().is_none_or(|s| value(s) == 0) {
                continue;
            }
            let mut since: Option<(u64, u64)> = None;
            for s in self
                .samples
                .iter()
                .filter(|s| s.0 >= from_us && s.0 <= to_us)
            {
                match since {
                    Some((t0, v0)) if value(s) == v0 => best = best.max(s.0 - t0),
                    _ => since = Some((s.0, value(s))),
                }
            }
        }
        best as f64 / 1000.0
    }

    /// Median RTT (ms) of probes sent within the window.
    pub fn median_rtt_ms(&self, from_us: u64, to_us: u64) -> Option<f64> {
        let mut r: Vec<u64> = self
            .probes_ok
            .iter()
            .filter(|(t, _)| *t >= from_us && *t <= to_us)
            .map(|p| p.1)
            .collect();
        r.sort_unstable();
        r.get(r.len() / 2).map(|v| *v as f64 / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(ok: &[u64]) -> Record {
        Record {
            probes_ok: ok.iter().map(|t| (*t, 100)).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn gap_spanning_window() {
        let r = rec(&[0, 5_000, 10_000, 400_000, 405_000]);
        // The move at 8 ms: the gap ends in its window.
        assert_eq!(r.max_gap_ms(8_000, 20_000), 5.0);
        assert_eq!(r.max_gap_ms(8_000, 402_000), 390.0);
        // The window before the gap does not own it.
        assert_eq!(r.max_gap_ms(0, 8_000), 5.0);
        // A window inside the gap is spanned by it.
        assert_eq!(r.max_gap_ms(20_000, 30_000), 390.0);
    }

    #[test]
    fn lost_probes_in_a_window() {
        let mut r = rec(&[0, 5_000, 20_000]);
        r.probes_sent = vec![0, 5_000, 10_000, 15_000, 20_000];
        assert_eq!(r.lost_probes(0, 20_000), vec![10_000, 15_000]);
        assert_eq!(r.lost_probes(12_000, 30_000), vec![15_000]);
        assert!(r.lost_probes(16_000, 30_000).is_empty());
    }

    #[test]
    fn gap_never_recovered() {
        let r = rec(&[0, 5_000, 10_000]);
        assert_eq!(r.max_gap_ms(8_000, 1_000_000), 990.0);
    }

    #[test]
    fn stall() {
        let r = Record {
            samples: vec![(0, 0, 0), (50, 1, 0), (100, 1, 0), (150, 1, 0), (200, 2, 0)],
            ..Default::default()
        };
        assert_eq!(r.longest_stall_ms(0, 1000), 0.1);
    }

    #[test]
    fn upload_stall_counts_while_download_runs() {
        let r = Record {
            samples: vec![
                (0, 0, 0),
                (1000, 10, 10),
                (2000, 10, 20),
                (3000, 10, 30),
                (4000, 20, 40),
            ],
            ..Default::default()
        };
        assert_eq!(r.longest_stall_ms(0, 5000), 2.0);
        // A direction that never carried data (a download-only run) is not a stall.
        let down_only = Record {
            samples: vec![(0, 0, 0), (1000, 0, 10), (2000, 0, 20)],
            ..Default::default()
        };
        assert_eq!(down_only.longest_stall_ms(0, 5000), 0.0);
    }
}
