//! The mobile node with two links at once (MN-2; think wired plus Wi-Fi): besides
//! `eth0` (switch port `mn`, moved by [`crate::topo::Lab::move_mn`]) a second veth
//! `eth1` (switch port `mn1`). Each link can be attached to any segment's bridge
//! (carrier flip plus the lab's "DHCP": the segment's address and a default route
//! through that link, `eth1`'s with a higher metric) or detached (carrier down,
//! addresses gone).

use std::time::Duration;

use serde_json::Value;

use crate::netns::{ip, run, Result};
use crate::scenario::MipLab;
use crate::topo::{Lab, Segment};

/// One of the MN's links: its switch port, its interface, the metric of its
/// default route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MnLink {
    pub port: &'static str,
    pub ifname: &'static str,
    pub metric: u32,
}

pub const ETH0: MnLink = MnLink {
    port: "mn",
    ifname: "eth0",
    metric: 0,
};
pub const ETH1: MnLink = MnLink {
    port: "mn1",
    ifname: "eth1",
    metric: 100,
};

/// The mn.toml line for both links (appended to the lab's file).
pub const INTERFACES: &str = "interfaces = [\"eth0\", \"eth1\"]";

/// Creates `eth1` in the MN's namespace, up, with its switch port detached (no
/// carrier). Call before `mipsec mn` starts (it resolves its interfaces then).
pub fn add_second_link(lab: &Lab) -> Result<()> {
    let (sw, mn) = (lab.ns("sw"), lab.ns("mn"));
    ip(&[
        "-n",
        &sw,
        "link",
        "add",
        ETH1.port,
        "type",
        "veth",
        "peer",
        "name",
        ETH1.ifname,
        "netns",
        &mn,
    ])?;
    run(
        "ip",
        &[
            "netns",
            "exec",
            &mn,
            "sysctl",
            "-qw",
            "net.ipv4.conf.eth1.rp_filter=0",
        ],
    )?;
    ip(&["-n", &mn, "link", "set", ETH1.ifname, "up"])?;
    crate::topo::no_udp_segmentation_on(&mn, ETH1.ifname)?;
    Ok(())
}

/// Attaches `link` to `to`: its port onto the segment's bridge with a carrier flip,
/// then the segment's address and a default route through it.
pub fn attach(lab: &Lab, link: MnLink, to: Segment) -> Result<()> {
    let (sw, mn) = (lab.ns("sw"), lab.ns("mn"));
    ip(&["-n", &sw, "link", "set", link.port, "down"])?;
    ip(&["-n", &sw, "link", "set", link.port, "master", to.bridge()])?;
    ip(&["-n", &sw, "link", "set", link.port, "up"])?;
    ip(&["-n", &mn, "addr", "flush", "dev", link.ifname])?;
    if !to.has_dhcp() {
        return Ok(());
    }
    let addr = format!("{}/24", to.mn_addr());
    ip(&["-n", &mn, "addr", "add", &addr, "dev", link.ifname])?;
    let (gw, metric) = (to.gateway().to_string(), link.metric.to_string());
    ip(&[
        "-n",
        &mn,
        "route",
        "replace",
        "default",
        "via",
        &gw,
        "dev",
        link.ifname,
        "metric",
        &metric,
    ])?;
    Ok(())
}

/// Takes `link`'s network away: its port down (carrier lost) and off its bridge,
/// its addresses gone.
pub fn detach(lab: &Lab, link: MnLink) -> Result<()> {
    let (sw, mn) = (lab.ns("sw"), lab.ns("mn"));
    ip(&["-n", &sw, "link", "set", link.port, "down"])?;
    ip(&["-n", &sw, "link", "set", link.port, "nomaster"])?;
    ip(&["-n", &mn, "addr", "flush", "dev", link.ifname])?;
    Ok(())
}

/// The status entry of the MN's interface `name`.
pub fn iface<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["interfaces"]
        .as_array()
        .and_then(|a| a.iter().find(|i| i["name"] == name))
        .unwrap_or(&Value::Null)
}

/// The gate of the MN's interface `name` (closed, open-inside, open-vpn, ...).
pub fn gate<'a>(v: &'a Value, name: &str) -> &'a str {
    iface(v, name)["gate"].as_str().unwrap_or("")
}

/// Whether interface `name` carries the user data.
pub fn carries(v: &Value, name: &str) -> bool {
    iface(v, name)["carries_user_data"] == true
}

/// Waits until interface `name` carries user data with gate `want`.
pub fn wait_carrier(
    ml: &MipLab,
    name: &str,
    want: &str,
    timeout: Duration,
) -> Result<(Value, Duration)> {
    ml.wait_mn(timeout, |v| gate(v, name) == want && carries(v, name))
}

/// Octets the MN sent on `ifname` so far (the kernel's counter).
pub fn tx_bytes(lab: &Lab, ifname: &str) -> Result<u64> {
    let out = run(
        "ip",
        &[
            "netns",
            "exec",
            &lab.ns("mn"),
            "cat",
            &format!("/sys/class/net/{ifname}/statistics/tx_bytes"),
        ],
    )?;
    out.trim()
        .parse()
        .map_err(|e| crate::netns::other(format!("tx_bytes of {ifname}: {e}: {out}")))
}
