//! The mipsec daemons' side of the shared tunnel data path (`netio::datapath`): opening
//! the tunnel device with offloads when the kernel agrees, the receive buffers of an
//! event loop, and the `data_path` object of a status reply.

use crate::shell::{open_tunnel, open_tunnel_with, SetupError};
pub(crate) use netio::datapath::DataPath;
use netio::raw_batch::RawRecvBatch;
use netio::tun::{Tun, TUN_F_CSUM, TUN_F_TSO4};
use tracing::warn;

/// Opens a tunnel device, with offloads when `offload` and the kernel agrees.
pub(crate) fn open(name: &str, offload: bool) -> Result<(Tun, u32, DataPath), SetupError> {
    open_queues(name, offload, false)
}

/// [`open`], and with `multi_queue` a device that more queues can attach to
/// (`Tun::queue_spec`).
pub(crate) fn open_queues(
    name: &str,
    offload: bool,
    multi_queue: bool,
) -> Result<(Tun, u32, DataPath), SetupError> {
    let opened = if offload {
        match open_tunnel_with(name, Some(TUN_F_CSUM | TUN_F_TSO4), multi_queue) {
            Ok(t) => Some(t),
            Err(e) => {
                warn!(
                    "{name}: the kernel refused TUN offloads ({e}); moving packets one at a time"
                );
                None
            }
        }
    } else {
        None
    };
    let on = opened.is_some();
    let (tun, ifindex) = match opened {
        Some(t) => t,
        None => open_tunnel(name, multi_queue)?,
    };
    let mut dp = DataPath::new(on);
    // Every daemon that opens a tunnel device here decapsulates IP-in-IP from a raw
    // socket, where the kernel's GRO may hand it merged packets (`netio::ipip_gro`).
    if let Err(e) = dp.open_gso_tap() {
        warn!("no tap for GRO-merged IP-in-IP ({e}): merged packets are cut at 536 octets");
    }
    Ok((tun, ifindex, dp))
}

/// Receive buffers for an event loop (owned by the loop, so that a pending receive
/// does not borrow the daemon): `recvmmsg` slots and one TUN read.
pub(crate) fn buffers() -> (RawRecvBatch, Vec<u8>) {
    (
        RawRecvBatch::new(crate::shell::BATCH, 65536),
        vec![0u8; netio::offload::VNET_HDR_LEN + 65536],
    )
}

/// The `data_path` object of a status reply.
pub(crate) fn status(dp: &DataPath) -> serde_json::Value {
    serde_json::json!({
        "offload": dp.offload,
        "tun_super_packets": dp.super_packets,
        "tun_segments": dp.segments,
        "coalesced_segments": dp.coalesced(),
        "udp_gso": dp.udp_gso,
        "udp_gso_sends": dp.udp_gso_sends,
        "udp_gso_datagrams": dp.udp_gso_datagrams,
        "udp_gro": dp.udp_gro,
        "udp_gro_receives": dp.udp_gro_receives,
        "udp_gro_datagrams": dp.udp_gro_datagrams,
        "ipip_gso_tap": dp.has_gso_tap(),
        "ipip_merged": dp.ipip_merged,
        "ipip_merged_guessed": dp.ipip_merged_guessed,
        "ipip_partial": dp.ipip_partial,
    })
}

/// The `kernel_encap` part of an agent's status: whether the kernel encapsulates,
/// and what it sent.
pub fn encap_status(encap: Option<&netio::ipip_encap::IpipEncap>) -> serde_json::Value {
    match encap {
        None => serde_json::json!({ "attached": false }),
        Some(e) => match (e.counters(), e.decap_counters()) {
            (Ok(c), Ok(d)) => serde_json::json!({
                "attached": true,
                "sends": c.sends,
                "bytes": c.bytes,
                "decap_interfaces": e.decap_interfaces(),
                "decap_packets": d.sends,
                "decap_bytes": d.bytes,
            }),
            (Err(err), _) | (_, Err(err)) => {
                serde_json::json!({ "attached": true, "error": err.to_string() })
            }
        },
    }
}

/// Sets the kernel's entry for `home` (see `IpipEncap::set`), and has the kernel
/// take that tunnel's packets the other way on `oif` too ([`decap_follow`]).
pub(crate) fn encap_set(
    encap: &netio::ipip_encap::IpipEncap,
    home: std::net::Ipv4Addr,
    source: std::net::Ipv4Addr,
    peer: std::net::Ipv4Addr,
    oif: u32,
    until: std::time::Instant,
) -> netio::Result<()> {
    encap.set(home, source, peer, oif, until)?;
    decap_follow(encap, oif);
    Ok(())
}

/// Has the kernel take the tunnels of `encap`'s entries back on `oif`
/// (`IpipEncap::decap_on`). An interface where that cannot be attached (not
/// Ethernet, say) leaves them to the daemon's sockets, said once.
pub(crate) fn decap_follow(encap: &netio::ipip_encap::IpipEncap, oif: u32) {
    match encap.decap_on(oif) {
        Ok(true) => tracing::info!(ifindex = oif, "kernel decapsulation attached"),
        Ok(false) => {}
        Err(e) => tracing::warn!(
            ifindex = oif,
            "kernel decapsulation not attached ({e}): the daemon takes the tunnel there"
        ),
    }
}

/// The interface the kernel's encapsulation may send IP-in-IP to `dst` out of: the
/// one its route goes through, when that is not the tunnel device itself and its MTU
/// takes the largest packet of the tunnel device (`tun_mtu`) with the outer header
/// (the redirected packet meets no MTU check). `None`: leave `dst`'s packets to the
/// tunnel device's reader.
pub(crate) async fn encap_oif(
    nl: &netio::Netlink,
    dst: std::net::Ipv4Addr,
    tun_ifindex: u32,
    tun_mtu: u32,
) -> Option<u32> {
    let oif = match nl.route_oif(dst).await {
        Ok(Some(oif)) if oif != tun_ifindex => oif,
        Ok(_) => return None,
        Err(e) => {
            tracing::debug!("route to {dst}: {e}");
            return None;
        }
    };
    let mtu = nl.link_by_index(oif).await.ok()?.mtu?;
    (mtu >= tun_mtu + 20).then_some(oif)
}
