//! The strongSwan lab topology: a gateway namespace, a client namespace directly on the
//! gateway's network or behind an nftables masquerade router, and the protected network
//! behind the gateway.
//!
//! ```text
//!  cl --[192.0.2.0/24]-- gw (192.0.2.2) --[10.1.0.0/16]-- in (10.1.0.2)  (Inside::Host)
//!  cl --[192.168.1.0/24]-- rt (masquerade) --[192.0.2.0/24]-- gw         (with `nat`)
//! ```
//!
//! Namespaces are `<prefix>gw`, `<prefix>cl`, `<prefix>rt`, `<prefix>in`; veth ends
//! `<prefix>a` (client or router side) / `<prefix>b` (gateway), `<prefix>c` (client) /
//! `<prefix>r` (router) with NAT, `<prefix>i` (gateway) / `<prefix>j` (internal host).

use crate::cmd::sh;

/// A name prefix no other lab of this process or another one uses: `short` names the
/// crate, `tag` the test; the process id keeps concurrent runs apart. Keep
/// `short` + `tag` within 4 characters so interface names stay under 16 bytes.
pub fn fresh_prefix(short: &str, tag: &str) -> String {
    format!("{short}{tag}{}", std::process::id() % 100000)
}

/// What stands for the protected network behind the gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inside {
    /// 10.1.0.1/16 on the gateway's loopback (charon needs a source address in it).
    Loopback,
    /// A host namespace `<prefix>in` at 10.1.0.2/16, routed through the gateway (10.1.0.1).
    Host,
}

/// The namespaces of one lab; dropping it deletes them (and with them their interfaces).
pub struct Topology {
    pub prefix: String,
    pub nat: bool,
}

impl Drop for Topology {
    fn drop(&mut self) {
        for ns in ["gw", "cl", "rt", "in"] {
            let _ = sh(&["ip", "netns", "del", &format!("{}{ns}", self.prefix)]);
        }
    }
}

impl Topology {
    pub fn gw(&self) -> String {
        format!("{}gw", self.prefix)
    }
    pub fn cl(&self) -> String {
        format!("{}cl", self.prefix)
    }
    pub fn rt(&self) -> String {
        format!("{}rt", self.prefix)
    }
    pub fn inner(&self) -> String {
        format!("{}in", self.prefix)
    }
    /// The client's physical interface.
    pub fn cl_if(&self) -> String {
        if self.nat {
            format!("{}c", self.prefix)
        } else {
            format!("{}a", self.prefix)
        }
    }
    /// The client's address on it.
    pub fn cl_ip(&self) -> &'static str {
        if self.nat {
            "192.168.1.2"
        } else {
            "192.0.2.1"
        }
    }

    /// Build the namespaces and links under `prefix`. On failure, what was built is
    /// removed again.
    pub fn build(prefix: &str, nat: bool, inside: Inside) -> Result<Topology, String> {
        let topo = Topology {
            prefix: prefix.to_string(),
            nat,
        };
        let (gw, cl, rt, inn) = (topo.gw(), topo.cl(), topo.rt(), topo.inner());
        let (a, b) = (format!("{prefix}a"), format!("{prefix}b"));
        let (c, r) = (format!("{prefix}c"), format!("{prefix}r"));
        let (i, j) = (format!("{prefix}i"), format!("{prefix}j"));
        let mut cmds: Vec<Vec<&str>> = vec![
            vec!["ip", "netns", "add", &gw],
            vec!["ip", "netns", "add", &cl],
            vec!["ip", "link", "add", &a, "type", "veth", "peer", "name", &b],
            vec!["ip", "link", "set", &b, "netns", &gw],
            vec!["ip", "-n", &gw, "addr", "add", "192.0.2.2/24", "dev", &b],
            vec!["ip", "-n", &gw, "link", "set", &b, "up"],
            vec!["ip", "-n", &gw, "link", "set", "lo", "up"],
            vec!["ip", "-n", &cl, "link", "set", "lo", "up"],
        ];
        match inside {
            Inside::Loopback => {
                cmds.push(vec![
                    "ip",
                    "-n",
                    &gw,
                    "addr",
                    "add",
                    "10.1.0.1/16",
                    "dev",
                    "lo",
                ]);
            }
            Inside::Host => cmds.extend([
                vec!["ip", "netns", "add", &inn],
                vec!["ip", "-n", &inn, "link", "set", "lo", "up"],
                vec!["ip", "link", "add", &i, "type", "veth", "peer", "name", &j],
                vec!["ip", "link", "set", &i, "netns", &gw],
                vec!["ip", "link", "set", &j, "netns", &inn],
                vec!["ip", "-n", &gw, "addr", "add", "10.1.0.1/16", "dev", &i],
                vec!["ip", "-n", &gw, "link", "set", &i, "up"],
                vec!["ip", "-n", &inn, "addr", "add", "10.1.0.2/16", "dev", &j],
                vec!["ip", "-n", &inn, "link", "set", &j, "up"],
                vec![
                    "ip", "-n", &inn, "route", "add", "default", "via", "10.1.0.1",
                ],
                forward(&gw),
            ]),
        }
        if nat {
            cmds.extend([
                vec!["ip", "netns", "add", &rt],
                vec!["ip", "link", "set", &a, "netns", &rt],
                vec!["ip", "-n", &rt, "addr", "add", "192.0.2.1/24", "dev", &a],
                vec!["ip", "-n", &rt, "link", "set", &a, "up"],
                vec!["ip", "link", "add", &c, "type", "veth", "peer", "name", &r],
                vec!["ip", "link", "set", &c, "netns", &cl],
                vec!["ip", "link", "set", &r, "netns", &rt],
                vec!["ip", "-n", &rt, "addr", "add", "192.168.1.1/24", "dev", &r],
                vec!["ip", "-n", &rt, "link", "set", &r, "up"],
                vec!["ip", "-n", &cl, "addr", "add", "192.168.1.2/24", "dev", &c],
                vec!["ip", "-n", &cl, "link", "set", &c, "up"],
                vec![
                    "ip",
                    "-n",
                    &cl,
                    "route",
                    "add",
                    "default",
                    "via",
                    "192.168.1.1",
                ],
                forward(&rt),
                nft(&rt, &["add", "table", "ip", "nat"]),
                nft(
                    &rt,
                    &[
                        "add",
                        "chain",
                        "ip",
                        "nat",
                        "post",
                        "{ type nat hook postrouting priority 100 ; }",
                    ],
                ),
                nft(
                    &rt,
                    &[
                        "add",
                        "rule",
                        "ip",
                        "nat",
                        "post",
                        "oifname",
                        &a,
                        "masquerade",
                    ],
                ),
            ]);
        } else {
            cmds.extend([
                vec!["ip", "link", "set", &a, "netns", &cl],
                vec!["ip", "-n", &cl, "addr", "add", "192.0.2.1/24", "dev", &a],
                vec!["ip", "-n", &cl, "link", "set", &a, "up"],
            ]);
        }
        for cmd in cmds {
            sh(&cmd)?;
        }
        Ok(topo)
    }
}

fn forward(ns: &str) -> Vec<&str> {
    vec![
        "ip",
        "netns",
        "exec",
        ns,
        "sysctl",
        "-qw",
        "net.ipv4.ip_forward=1",
    ]
}

fn nft<'a>(ns: &'a str, args: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["ip", "netns", "exec", ns, "nft"];
    v.extend_from_slice(args);
    v
}
