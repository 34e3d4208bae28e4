//! The leak classifier (issue 17 item 4): every frame captured on an outside segment is
//! put into one of three classes, plus one for the lab's own attack frames:
//!
//! * **control**: IKE (UDP 500, and 4500 with the non-ESP marker) and NAT keepalives
//!   with a VPN gateway; Mobile IP registrations (UDP 434) whose home agent is an
//!   x-HA; ICMP; IGMP; ARP; DHCP;
//! * **encrypted**: ESP (IP protocol 50) and ESP in UDP 4500 (RFC 3948) with a VPN
//!   gateway, and an outer layer with an x-HA (IP-in-IP, or RFC 3519 tunnel data on
//!   UDP 434) whose inner packet is itself ESP with the gateway (an outer layer whose
//!   inner packet is control is control; DHCP inside one is a leak);
//! * **leak**: any frame that carries an intranet address, the mobile node's home
//!   address or a TIA in the clear at any layer (IP headers, inner headers of a tunnel,
//!   headers quoted in ICMP errors, ARP, DHCP address fields and options 50/54), or
//!   user payload outside ESP (TCP, UDP other than the above, other protocols, an
//!   outer layer not with an x-HA, a fragment whose first fragment was not seen,
//!   anything that does not parse). Unknown means leak: the check fails closed.
//! * **injected**: frames sent by a MAC listed in [`Plan::injectors`] (the lab's own
//!   attacker); counted apart and never leaks.
//!
//! The one exception to the address rule: on a segment whose DHCP server (a hostile
//! one, say) hands out an address inside the intranet's range, the addresses that
//! server names in its replies (the lease, its server identifier and routers) are that
//! network's local addresses, not the intranet's, and are not flagged on that segment
//! (never the home address or a TIA), anywhere in that segment's capture (a server
//! checks an address by ARP or ping before it offers it). Payload rules still apply.
//!
//! The decoder is our own strict parser (pcap with Ethernet, raw IPv4 or Linux cooked
//! link types; Ethernet/VLAN, ARP, IPv4, UDP, ICMP, BOOTP/DHCP, Mobile IP), cross-checked
//! against tshark's fields by `tests/leak_classifier.rs`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::path::Path;

use crate::netns::{other, Result};

/// The lab's address plan as the classifier needs it.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Intranet prefixes (the home network and the TIA pool are inside these in the lab).
    pub intranet: Vec<(Ipv4Addr, u8)>,
    /// Home addresses: never acceptable in the clear, not even as a DHCP lease.
    pub home_addresses: Vec<Ipv4Addr>,
    /// The VPN gateway's TIA pool: never acceptable in the clear either.
    pub tia_pool: Vec<(Ipv4Addr, u8)>,
    /// VPN gateways (IKE and ESP peers).
    pub gateways: Vec<Ipv4Addr>,
    /// External home agents (registrations, IP-in-IP and UDP tunnel peers).
    pub xhas: Vec<Ipv4Addr>,
    /// Source MACs of the lab's own attack tools.
    pub injectors: Vec<[u8; 6]>,
    /// Internal home agents whose detection requests are expected on outside links
    /// (RFC 5265 MN-6: on every attachment the node sends an authenticated request to
    /// the i-HA in parallel with the x-HA; the border drops it). With an i-HA here, a
    /// Registration Request (type 1, outermost layer) to it on UDP 434 whose home agent
    /// field is that i-HA and whose home address is one of `home_addresses` is control
    /// (`mn-6 detection request`); every other packet naming it, replies included, is
    /// still a leak. Empty by default: the strict check flags even these.
    pub detection_to: Vec<Ipv4Addr>,
    /// Foreign agents on outside links (the x-FA). A node registers through an agent
    /// from its home address (RFC 5944 3.6.1.1; RFC 5265 MN-6 sends the i-HA's
    /// detection request through it too), so a Registration Request from a home address
    /// to the agent, and the agent's Registration Reply to it, are control when strictly
    /// well-formed (`leak_mip.rs`): outermost, unfragmented, UDP 434, the home address
    /// in the message equal to the one in the IP header, the agent as care-of address,
    /// an i-HA of `detection_to` or an x-HA as home agent, and only registration
    /// extensions of their sizes to the last octet. Anything else with the home
    /// address stays a leak. Empty by default.
    pub agents: Vec<Ipv4Addr>,
}

impl Plan {
    /// The enterprise lab's plan (crate README, "Enterprise lab").
    pub fn lab() -> Plan {
        Plan {
            intranet: vec![(Ipv4Addr::new(10, 0, 0, 0), 8)],
            home_addresses: vec![crate::topo::MN_HOME],
            tia_pool: vec![(Ipv4Addr::new(10, 99, 0, 0), 24)],
            gateways: vec![Ipv4Addr::new(192, 0, 2, 1)],
            xhas: vec![Ipv4Addr::new(192, 0, 2, 2), Ipv4Addr::new(100, 64, 0, 1)],
            injectors: Vec::new(),
            detection_to: Vec::new(),
            agents: Vec::new(),
        }
    }

    fn always_secret(&self, a: Ipv4Addr) -> bool {
        self.home_addresses.contains(&a) || self.tia_pool.iter().any(|&(n, l)| in_net(a, n, l))
    }

    fn secret(&self, a: Ipv4Addr) -> bool {
        self.always_secret(a) || self.intranet.iter().any(|&(n, l)| in_net(a, n, l))
    }
}

pub fn in_net(a: Ipv4Addr, net: Ipv4Addr, len: u8) -> bool {
    let mask = if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len.min(32)))
    };
    u32::from(a) & mask == u32::from(net) & mask
}

/// Parses `a.b.c.d/len`.
pub fn parse_net(s: &str) -> Option<(Ipv4Addr, u8)> {
    let (a, l) = s.split_once('/')?;
    let l: u8 = l.parse().ok()?;
    (l <= 32).then_some(())?;
    Some((a.parse().ok()?, l))
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut m = [0u8; 6];
    let mut parts = s.split(':');
    for b in m.iter_mut() {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(m)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Class {
    Control,
    Encrypted,
    Leak,
    Injected,
}

impl Class {
    pub fn name(self) -> &'static str {
        match self {
            Class::Control => "control",
            Class::Encrypted => "encrypted",
            Class::Leak => "LEAK",
            Class::Injected => "injected",
        }
    }
}

/// A class and what put the frame there ("ike", "esp-in-udp", "tcp 5001 outside ESP").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub class: Class,
    pub what: String,
}

fn v(class: Class, what: impl Into<String>) -> Verdict {
    Verdict {
        class,
        what: what.into(),
    }
}

fn leak(what: impl Into<String>) -> Verdict {
    v(Class::Leak, what)
}

/// One captured frame.
#[derive(Debug, Clone)]
pub struct Frame {
    pub linktype: u32,
    pub data: Vec<u8>,
}

/// Reads a classic pcap file (either byte order, micro- or nanosecond stamps). A cut
/// record at the end (tcpdump killed mid-write) is dropped; anything else malformed is
/// an error.
pub fn read_pcap(path: &Path) -> Result<Vec<Frame>> {
    let b = std::fs::read(path)?;
    parse_pcap(&b).map_err(|e| other(format!("{}: {e}", path.display())))
}

pub fn parse_pcap(b: &[u8]) -> std::result::Result<Vec<Frame>, String> {
    let mut frames = Vec::new();
    each_frame(b, |f| frames.push(f.clone()))?;
    Ok(frames)
}

/// Reads until `buf` is full or the input ends; the number of octets read.
fn read_full(r: &mut impl std::io::Read, buf: &mut [u8]) -> std::result::Result<usize, String> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(n)
}

/// Streams the frames of a classic pcap (either byte order, micro- or nanosecond
/// stamps) to `f`, one at a time, so a soak's captures need no more memory than a
/// frame. A cut record at the end (tcpdump killed mid-write) ends the stream; a record
/// longer than 256 KiB is an error. Returns the number of frames.
pub fn each_frame(
    r: impl std::io::Read,
    mut f: impl FnMut(&Frame),
) -> std::result::Result<usize, String> {
    each_frame_while(r, |fr| {
        f(fr);
        true
    })
}

/// [`each_frame`] that stops reading as soon as `f` returns false (a search that has
/// found what it looked for in a capture of gigabytes); the frames seen, that one
/// included.
pub fn each_frame_while(
    mut r: impl std::io::Read,
    mut f: impl FnMut(&Frame) -> bool,
) -> std::result::Result<usize, String> {
    let mut head = [0u8; 24];
    if read_full(&mut r, &mut head)? < 24 {
        return Err("shorter than a pcap header".into());
    }
    let magic = [head[0], head[1], head[2], head[3]];
    let le = match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
        _ => {
            return Err(format!(
                "not a pcap file (magic {magic:02x?}; pcapng is not read)"
            ))
        }
    };
    let u32_at = |s: &[u8], o: usize| -> u32 {
        let x = [s[o], s[o + 1], s[o + 2], s[o + 3]];
        if le {
            u32::from_le_bytes(x)
        } else {
            u32::from_be_bytes(x)
        }
    };
    let mut frame = Frame {
        linktype: u32_at(&head, 20) & 0x0fff_ffff,
        data: Vec::new(),
    };
    let mut n = 0;
    loop {
        let mut rec = [0u8; 16];
        if read_full(&mut r, &mut rec)? < 16 {
            return Ok(n); // the end, or a cut record header
        }
        let incl = u32_at(&rec, 8) as usize;
        if incl > 262_144 {
            return Err(format!("record {}: length {incl} out of bounds", n + 1));
        }
        frame.data.resize(incl, 0);
        if read_full(&mut r, &mut frame.data)? < incl {
            return Ok(n); // a cut record at the end
        }
        n += 1;
        if !f(&frame) {
            return Ok(n);
        }
    }
}

/// What one segment's frames came to.
#[derive(Debug, Clone, Default)]
pub struct SegmentReport {
    pub name: String,
    pub frames: u64,
    pub by_class: BTreeMap<Class, u64>,
    /// (class, what) -> frames, for the summary.
    pub by_kind: BTreeMap<(Class, String), u64>,
    /// (1-based frame number, reason) of the first leaks (at most 20 kept).
    pub leaks: Vec<(usize, String)>,
    /// Addresses the segment's DHCP servers named (exempt from the address rule there).
    pub local: BTreeSet<Ipv4Addr>,
}

impl SegmentReport {
    pub fn count(&self, c: Class) -> u64 {
        self.by_class.get(&c).copied().unwrap_or(0)
    }
}

/// What the classifier decoded of one frame, for the cross-check against tshark
/// (`leak_xcheck.rs`): the addresses of every IP header it walked (outer, IP-in-IP and
/// RFC 3519 inner packets, headers quoted by ICMP errors), the ESP SPI and the ARP
/// protocol addresses. A frame judged a leak may stop being walked at the leak.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trace {
    pub ip_addrs: BTreeSet<Ipv4Addr>,
    pub esp_spi: Option<u32>,
    pub arp: Option<(Ipv4Addr, Ipv4Addr)>,
}

/// Per-segment state while classifying.
#[derive(Default)]
struct Seg {
    local: BTreeSet<Ipv4Addr>,
    /// First fragments: (src, dst, id, proto) -> class.
    frags: HashMap<(Ipv4Addr, Ipv4Addr, u16, u8), Verdict>,
    /// The frame being classified.
    trace: Trace,
}

/// Classifies the frames of one segment, in order.
pub fn classify_frames(plan: &Plan, name: &str, frames: &[Frame]) -> SegmentReport {
    let mut seg = Seg::default();
    let mut r = SegmentReport {
        name: name.to_string(),
        ..Default::default()
    };
    for vd in classify_each_in(plan, &mut seg, frames) {
        tally(&mut r, vd);
    }
    r.local = seg.local;
    r
}

/// The verdict on each frame of one segment, in order.
pub fn classify_each(plan: &Plan, frames: &[Frame]) -> Vec<Verdict> {
    classify_each_in(plan, &mut Seg::default(), frames)
}

/// [`classify_each`] with what the classifier decoded of each frame.
pub fn classify_traced(plan: &Plan, frames: &[Frame]) -> Vec<(Verdict, Trace)> {
    let mut seg = Seg::default();
    for f in frames {
        learn_frame(plan, &mut seg, f);
    }
    frames
        .iter()
        .map(|f| {
            seg.trace = Trace::default();
            let vd = classify_frame(plan, &mut seg, f);
            (vd, std::mem::take(&mut seg.trace))
        })
        .collect()
}

fn classify_each_in(plan: &Plan, seg: &mut Seg, frames: &[Frame]) -> Vec<Verdict> {
    // First the addresses the segment's DHCP servers name anywhere in the capture (a
    // server checks an address, by ARP or ping from its own, before it offers it).
    for f in frames {
        learn_frame(plan, seg, f);
    }
    frames
        .iter()
        .map(|f| classify_frame(plan, seg, f))
        .collect()
}

fn learn_frame(plan: &Plan, seg: &mut Seg, f: &Frame) {
    let ip = match f.linktype {
        1 if be16(&f.data, 12) == Some(0x0800) => f.data.get(14..),
        101 | 228 => Some(&f.data[..]),
        _ => None,
    };
    if let Some(Ok(ip)) = ip.map(parse_ip) {
        if ip.proto == 17 && ip.frag_off == 0 && be16(ip.payload, 0) == Some(67) {
            learn_dhcp(plan, seg, ip.payload.get(8..).unwrap_or(&[]));
        }
    }
}

fn classify_frame(plan: &Plan, seg: &mut Seg, f: &Frame) -> Verdict {
    let d = &f.data;
    let (ethertype, payload) = match f.linktype {
        1 => {
            let (Some(src), Some(mut et)) = (d.get(6..12), be16(d, 12)) else {
                return leak("truncated Ethernet header");
            };
            if plan.injectors.iter().any(|m| m[..] == *src) {
                return v(Class::Injected, "from an injector");
            }
            let mut off = 14;
            while et == 0x8100 || et == 0x88a8 {
                let Some(t) = be16(d, off + 2) else {
                    return leak("truncated VLAN tag");
                };
                et = t;
                off += 4;
            }
            (et, d.get(off..).unwrap_or(&[]))
        }
        101 | 228 => (0x0800, &d[..]),
        113 => match be16(d, 14) {
            Some(et) => (et, d.get(16..).unwrap_or(&[])),
            None => return leak("truncated cooked header"),
        },
        lt => return leak(format!("link type {lt} not decoded")),
    };
    match ethertype {
        0x0806 => arp(plan, seg, payload),
        0x0800 => ipv4(plan, seg, payload, 0),
        et => leak(format!("ethertype {et:#06x} not decoded")),
    }
}

fn be16(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(o..o + 2)?.try_into().ok()?))
}

fn be32(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(o..o + 4)?.try_into().ok()?))
}

fn addr(b: &[u8], o: usize) -> Option<Ipv4Addr> {
    be32(b, o).map(Ipv4Addr::from)
}

/// A leak verdict if `a` is secret on this segment.
fn check_addr(plan: &Plan, seg: &Seg, a: Ipv4Addr, role: &str) -> Option<Verdict> {
    let exempt = seg.local.contains(&a) && !plan.always_secret(a);
    (plan.secret(a) && !exempt).then(|| leak(format!("{role} {a} in the clear")))
}

fn arp(plan: &Plan, seg: &mut Seg, p: &[u8]) -> Verdict {
    // htype 1, ptype IPv4, hlen 6, plen 4
    if be16(p, 0) != Some(1) || be16(p, 2) != Some(0x0800) || p.get(4..6) != Some(&[6, 4]) {
        return leak("ARP not Ethernet/IPv4");
    }
    let (Some(sip), Some(tip)) = (addr(p, 14), addr(p, 24)) else {
        return leak("truncated ARP");
    };
    seg.trace.arp = Some((sip, tip));
    for (a, role) in [(sip, "ARP sender"), (tip, "ARP target")] {
        if let Some(l) = check_addr(plan, seg, a, role) {
            return l;
        }
    }
    v(Class::Control, "arp")
}

/// The IPv4 header fields the classifier uses.
struct Ip<'a> {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    id: u16,
    frag_off: u16,
    more: bool,
    payload: &'a [u8],
}

fn parse_ip(p: &[u8]) -> std::result::Result<Ip<'_>, &'static str> {
    let b0 = *p.first().ok_or("empty IP packet")?;
    if b0 >> 4 != 4 {
        return Err("not IPv4");
    }
    let ihl = usize::from(b0 & 0xf) * 4;
    let total = usize::from(be16(p, 2).ok_or("truncated IP header")?);
    if ihl < 20 || total < ihl || total > p.len() {
        return Err("bad IP header or total length");
    }
    let ff = be16(p, 6).ok_or("truncated IP header")?;
    Ok(Ip {
        src: addr(p, 12).ok_or("truncated IP header")?,
        dst: addr(p, 16).ok_or("truncated IP header")?,
        proto: p[9],
        id: be16(p, 4).ok_or("truncated IP header")?,
        frag_off: ff & 0x1fff,
        more: ff & 0x2000 != 0,
        payload: p.get(ihl..total).ok_or("bad IP header length")?,
    })
}

/// Classifies an IPv4 packet; `depth` > 0 inside an outer layer with an x-HA.
fn ipv4(plan: &Plan, seg: &mut Seg, p: &[u8], depth: usize) -> Verdict {
    if depth > 3 {
        return leak("tunnels nested deeper than 3");
    }
    let ip = match parse_ip(p) {
        Ok(ip) => ip,
        Err(e) => return leak(e),
    };
    seg.trace.ip_addrs.extend([ip.src, ip.dst]);
    if depth == 0 && detection_request(plan, seg, &ip) {
        return v(Class::Control, "mn-6 detection request to the i-HA");
    }
    if depth == 0 {
        if let Some(what) = mip::via_agent(plan, &ip) {
            return v(Class::Control, what);
        }
    }
    for (a, role) in [(ip.src, "source"), (ip.dst, "destination")] {
        if let Some(l) = check_addr(plan, seg, a, role) {
            return l;
        }
    }
    let key = (ip.src, ip.dst, ip.id, ip.proto);
    if ip.frag_off != 0 {
        return match seg.frags.get(&key) {
            Some(vd) => v(vd.class, format!("{} (fragment)", vd.what)),
            None => leak("fragment whose first fragment was not seen"),
        };
    }
    let vd = transport(plan, seg, &ip, depth);
    if ip.more {
        seg.frags.insert(key, vd.clone());
    }
    vd
}

/// A whole (unfragmented) Registration Request on UDP 434 to an i-HA of
/// `plan.detection_to`, naming that i-HA as its home agent and one of the home addresses,
/// from a source that is not secret on this segment (see [`Plan::detection_to`]; a
/// look-alike's DHCP lease in the intranet's range is that segment's own address).
fn detection_request(plan: &Plan, seg: &Seg, ip: &Ip) -> bool {
    let p = ip.payload;
    let m = p.get(8..).unwrap_or(&[]);
    plan.detection_to.contains(&ip.dst)
        && ip.proto == 17
        && ip.frag_off == 0
        && !ip.more
        && check_addr(plan, seg, ip.src, "source").is_none()
        && be16(p, 2) == Some(434)
        && m.first() == Some(&1)
        && addr(m, 8) == Some(ip.dst)
        && addr(m, 4).is_some_and(|h| plan.home_addresses.contains(&h))
}

fn with_xha(plan: &Plan, ip: &Ip) -> bool {
    plan.xhas.contains(&ip.src) || plan.xhas.contains(&ip.dst)
}

fn with_gw(plan: &Plan, ip: &Ip) -> bool {
    plan.gateways.contains(&ip.src) || plan.gateways.contains(&ip.dst)
}

/// The verdict on a packet inside an outer layer with an x-HA.
fn inner(plan: &Plan, seg: &mut Seg, p: &[u8], depth: usize, outer: &str) -> Verdict {
    let vd = ipv4(plan, seg, p, depth + 1);
    match vd.class {
        Class::Leak => leak(format!("inside {outer}: {}", vd.what)),
        c => v(c, format!("{outer}({})", vd.what)),
    }
}

fn transport(plan: &Plan, seg: &mut Seg, ip: &Ip, depth: usize) -> Verdict {
    let p = ip.payload;
    match ip.proto {
        50 if !with_gw(plan, ip) => {
            leak(format!("ESP between {} and {}, no gateway", ip.src, ip.dst))
        }
        50 => match be32(p, 0) {
            Some(spi) if spi != 0 => {
                seg.trace.esp_spi = Some(spi);
                v(Class::Encrypted, "esp")
            }
            _ => leak("ESP without an SPI"),
        },
        4 if with_xha(plan, ip) => inner(plan, seg, p, depth, "ipip"),
        4 => leak(format!(
            "IP-in-IP between {} and {}, no x-HA",
            ip.src, ip.dst
        )),
        1 => icmp(plan, seg, p),
        // Group membership on the link (the kernel reports joins when an address comes).
        2 => v(Class::Control, "igmp"),
        17 => udp(plan, seg, ip, depth),
        6 => {
            let port = be16(p, 2).unwrap_or(0);
            leak(format!("tcp port {port} outside ESP"))
        }
        n => leak(format!("IP protocol {n} outside ESP")),
    }
}

fn icmp(plan: &Plan, seg: &mut Seg, p: &[u8]) -> Verdict {
    let Some(&t) = p.first() else {
        return leak("empty ICMP");
    };
    if p.len() < 8 {
        return leak("truncated ICMP");
    }
    // Errors and redirects quote a header (addresses checked as any other layer).
    if matches!(t, 3 | 4 | 5 | 11 | 12) {
        if t == 5 {
            if let Some(l) = addr(p, 4).and_then(|g| check_addr(plan, seg, g, "redirect gateway")) {
                return l;
            }
        }
        let q = &p[8..];
        if q.len() >= 20 {
            seg.trace
                .ip_addrs
                .extend([12, 16].iter().filter_map(|&o| addr(q, o)));
            for (o, role) in [(12, "quoted source"), (16, "quoted destination")] {
                if let Some(l) = addr(q, o).and_then(|a| check_addr(plan, seg, a, role)) {
                    return l;
                }
            }
        }
        return v(Class::Control, format!("icmp type {t}"));
    }
    let what = match t {
        0 | 8 => "icmp echo".to_string(),
        9 | 10 => "icmp router advertisement/solicitation".to_string(),
        t => format!("icmp type {t}"),
    };
    v(Class::Control, what)
}

fn udp(plan: &Plan, seg: &mut Seg, ip: &Ip, depth: usize) -> Verdict {
    let p = ip.payload;
    let (Some(sp), Some(dp), Some(len)) = (be16(p, 0), be16(p, 2), be16(p, 4)) else {
        return leak("truncated UDP header");
    };
    // A first fragment holds only part of the datagram.
    let len = usize::from(len);
    if len < 8 || (len > p.len() && !ip.more) {
        return leak("bad UDP length");
    }
    let data = &p[8..len.min(p.len())];
    let port = |x: u16| sp == x || dp == x;
    if port(4500) && with_gw(plan, ip) {
        return match data {
            [0xff] => v(Class::Control, "nat-keepalive"),
            [0, 0, 0, 0, ..] if data.len() >= 4 + 28 => v(Class::Control, "ike"),
            d if d.len() >= 8 && be32(d, 0) != Some(0) => {
                seg.trace.esp_spi = be32(d, 0);
                v(Class::Encrypted, "esp-in-udp")
            }
            _ => leak("malformed UDP 4500"),
        };
    }
    if port(500) && with_gw(plan, ip) {
        return if data.len() >= 28 {
            v(Class::Control, "ike")
        } else {
            leak("malformed IKE")
        };
    }
    if port(434) {
        return mip::mip(plan, seg, ip, data, depth);
    }
    if depth == 0 && ((sp == 67 && dp == 68) || (sp == 68 && dp == 67)) {
        return dhcp(plan, seg, data);
    }
    leak(format!("udp {sp} -> {dp} outside ESP"))
}

/// BOOTP fixed fields: ciaddr 12, yiaddr 16, siaddr 20, giaddr 24; magic at 236.
fn dhcp_options(b: &[u8]) -> Option<Vec<(u8, &[u8])>> {
    if be32(b, 236)? != 0x6382_5363 {
        return None;
    }
    let mut o = Vec::new();
    let mut i = 240;
    while let Some(&code) = b.get(i) {
        match code {
            0 => i += 1,
            255 => break,
            _ => {
                let l = usize::from(*b.get(i + 1)?);
                o.push((code, b.get(i + 2..i + 2 + l)?));
                i += 2 + l;
            }
        }
    }
    Some(o)
}

fn learn_dhcp(plan: &Plan, seg: &mut Seg, b: &[u8]) {
    if b.first() != Some(&2) {
        return;
    }
    let Some(opts) = dhcp_options(b) else {
        return;
    };
    let mut named: Vec<Ipv4Addr> = addr(b, 16).into_iter().collect();
    for (code, val) in opts {
        if code == 54 || code == 3 {
            named.extend(val.chunks_exact(4).filter_map(|c| addr(c, 0)));
        }
    }
    seg.local.extend(
        named
            .into_iter()
            .filter(|a| !a.is_unspecified() && !plan.always_secret(*a)),
    );
}

fn dhcp(plan: &Plan, seg: &Seg, b: &[u8]) -> Verdict {
    let Some(opts) = dhcp_options(b) else {
        return leak("malformed DHCP");
    };
    for (o, role) in [
        (12, "ciaddr"),
        (16, "yiaddr"),
        (20, "siaddr"),
        (24, "giaddr"),
    ] {
        if let Some(l) = addr(b, o).and_then(|a| check_addr(plan, seg, a, role)) {
            return l;
        }
    }
    for (code, val) in opts {
        if code == 50 || code == 54 {
            for a in val.chunks_exact(4).filter_map(|c| addr(c, 0)) {
                if let Some(l) = check_addr(plan, seg, a, &format!("DHCP option {code}")) {
                    return l;
                }
            }
        }
    }
    v(Class::Control, "dhcp")
}

/// Classifies one capture file as segment `name`, streaming it twice (first the
/// addresses its DHCP servers name, then the verdicts), in constant memory.
pub fn classify_file(plan: &Plan, name: &str, path: &Path) -> Result<SegmentReport> {
    classify_file_with(plan, name, path, &BTreeSet::new())
}

/// [`classify_file`] with addresses other segments' DHCP servers named also local.
fn classify_file_with(
    plan: &Plan,
    name: &str,
    path: &Path,
    local: &BTreeSet<Ipv4Addr>,
) -> Result<SegmentReport> {
    let open = || -> Result<std::io::BufReader<std::fs::File>> {
        Ok(std::io::BufReader::with_capacity(
            1 << 20,
            std::fs::File::open(path)?,
        ))
    };
    let at = |e: String| other(format!("{}: {e}", path.display()));
    let mut seg = Seg {
        local: local.clone(),
        ..Seg::default()
    };
    each_frame(open()?, |f| learn_frame(plan, &mut seg, f)).map_err(at)?;
    let mut r = SegmentReport {
        name: name.to_string(),
        ..Default::default()
    };
    each_frame(open()?, |f| {
        let vd = classify_frame(plan, &mut seg, f);
        tally(&mut r, vd);
    })
    .map_err(at)?;
    r.local = std::mem::take(&mut seg.local);
    Ok(r)
}

fn tally(r: &mut SegmentReport, vd: Verdict) {
    r.frames += 1;
    *r.by_class.entry(vd.class).or_default() += 1;
    if vd.class == Class::Leak && r.leaks.len() < 20 {
        r.leaks.push((r.frames as usize, vd.what.clone()));
    }
    *r.by_kind.entry((vd.class, vd.what)).or_default() += 1;
}

/// Classifies `DIR/<segment>.pcap` for each of `segments` (each file must exist).
/// The addresses a DHCP server on one outside segment named are local on all of them:
/// the node's lease there travels as a care-of address (through that network's NAT)
/// to the x-HA across the others. Never the home address or a TIA.
pub fn classify_dir(plan: &Plan, dir: &Path, segments: &[&str]) -> Result<Vec<SegmentReport>> {
    let mut local = BTreeSet::new();
    for s in segments {
        local.extend(classify_file(plan, s, &dir.join(format!("{s}.pcap")))?.local);
    }
    segments
        .iter()
        .map(|s| classify_file_with(plan, s, &dir.join(format!("{s}.pcap")), &local))
        .collect()
}

/// Total leaks over `reports`.
pub fn leaks(reports: &[SegmentReport]) -> u64 {
    reports.iter().map(|r| r.count(Class::Leak)).sum()
}

/// [`render`] of one segment.
pub fn render_one(r: &SegmentReport) -> String {
    render(std::slice::from_ref(r))
}

/// The summary: one block per segment, then `frames: N` and `leaks: N`.
pub fn render(reports: &[SegmentReport]) -> String {
    let mut o = String::new();
    for r in reports {
        o += &format!(
            "{}: {} frames, control {}, encrypted {}, LEAK {}, injected {}\n",
            r.name,
            r.frames,
            r.count(Class::Control),
            r.count(Class::Encrypted),
            r.count(Class::Leak),
            r.count(Class::Injected)
        );
        for ((c, what), n) in &r.by_kind {
            o += &format!("    {:<9} {n:>7}  {what}\n", c.name());
        }
        for (i, why) in &r.leaks {
            o += &format!("    LEAK frame {i}: {why}\n");
        }
        if !r.local.is_empty() {
            let l: Vec<String> = r.local.iter().map(|a| a.to_string()).collect();
            o += &format!(
                "    named by this segment's DHCP (local here): {}\n",
                l.join(" ")
            );
        }
    }
    let frames: u64 = reports.iter().map(|r| r.frames).sum();
    o += &format!("frames: {frames}\nleaks: {}\n", leaks(reports));
    o
}

#[path = "leak_mip.rs"]
mod mip;

#[cfg(test)]
#[path = "leak_tests.rs"]
mod tests;
