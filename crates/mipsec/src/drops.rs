//! Why the agent daemons (`mipsec ha`, `mipsec fa`) drop a packet, and the counts by
//! reason that their status shows under `counters.drops`.
//!
//! The counter keys are [`DropReason::name`]: fixed strings, because operators' scripts
//! and the lab tests read them. The cores count their own drops (`mip4`'s stats, keyed
//! by the Debug name of their reason); [`DropCounts::merged_with`] puts both in one map.

use mip4::ha::ReverseDrop;
use std::collections::BTreeMap;
use std::fmt;
use tracing::debug;

/// A packet an agent daemon dropped, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DropReason {
    /// An IP-in-IP packet whose outer IPv4 header does not parse.
    MalformedOuter,
    /// A tunnelled packet whose inner IPv4 header does not parse.
    MalformedInner,
    /// RFC 3519 Tunnel Data that does not parse.
    MalformedTunnelData,
    /// RFC 3519 Tunnel Data carrying something other than IPv4.
    TunnelDataNotIpv4,
    /// A TUN read with a virtio header, or a super-packet, that cannot be cut up.
    BadOffloadPacket,
    /// A TUN read that is not an IPv4 packet.
    NotIpv4FromTun,
    /// The write into the TUN failed.
    TunWriteFailed,
    /// The send into a tunnel towards a care-of address failed.
    TunnelSendFailed,
    /// A packet for a home address with no binding.
    NoBinding,
    /// The home agent core refused a reverse-tunnelled packet or Tunnel Data
    /// (RFC 3024, RFC 3519 section 6.1).
    Refused(ReverseDrop),
    /// A registration on the interface the home agent must not serve (HA-5).
    InternalInterface,
    /// A request from the visited link whose sender's link-layer address is unknown.
    NoLinkLayerAddress,
    /// IP-in-IP to the foreign agent from neither a visitor's home agent nor a
    /// visitor using the encapsulating delivery style.
    UnknownTunnelSource,
    /// A packet from a home address that has no reverse-tunnelled visitor.
    NoReverseVisitor,
    /// The send into the reverse tunnel towards a home agent failed.
    ReverseSendFailed,
    /// A reply to a visiting node could not be sent on the visited link.
    ReplyNotSent,
    TunnelDataOffDataPath,
}

impl DropReason {
    /// The key of this reason's counter in the status (stable).
    pub(crate) fn name(self) -> &'static str {
        match self {
            DropReason::MalformedOuter => "malformed outer header",
            DropReason::MalformedInner => "malformed inner packet",
            DropReason::MalformedTunnelData => "malformed tunnel data",
            DropReason::TunnelDataNotIpv4 => "tunnel data not IPv4",
            DropReason::BadOffloadPacket => "bad offload packet from tun",
            DropReason::NotIpv4FromTun => "not an IPv4 packet (from tun)",
            DropReason::TunWriteFailed => "tun write failed",
            DropReason::TunnelSendFailed => "tunnel send failed",
            DropReason::NoBinding => "no binding for destination",
            DropReason::Refused(why) => why.label(),
            DropReason::InternalInterface => "request on the internal interface (HA-5)",
            DropReason::NoLinkLayerAddress => "no link-layer address for the sender",
            DropReason::UnknownTunnelSource => {
                "tunnel packet from neither a visitor's home agent nor a visitor"
            }
            DropReason::NoReverseVisitor => {
                "packet from a home address with no reverse-tunneled visitor"
            }
            DropReason::ReverseSendFailed => "reverse tunnel send failed",
            DropReason::ReplyNotSent => "reply to a node could not be sent",
            DropReason::TunnelDataOffDataPath => "tunnel data on a worker without the data path",
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A daemon's drops, counted by [`DropReason::name`].
#[derive(Default, Debug)]
pub(crate) struct DropCounts(BTreeMap<&'static str, u64>);

impl DropCounts {
    /// Counts one drop (and logs it at debug level).
    pub(crate) fn count(&mut self, why: DropReason) {
        *self.0.entry(why.name()).or_default() += 1;
        debug!(reason = why.name(), "packet dropped");
    }

    /// Adds these counts into a status map (another worker's drops).
    pub(crate) fn add_into(&self, all: &mut BTreeMap<String, u64>) {
        for (k, v) in &self.0 {
            *all.entry((*k).to_string()).or_default() += *v;
        }
    }

    /// The core's drops (keyed by the Debug name of its reason) and these, in one map
    /// for the status.
    pub(crate) fn merged_with<K: fmt::Debug>(
        &self,
        core: impl IntoIterator<Item = (K, u64)>,
    ) -> BTreeMap<String, u64> {
        let mut all: BTreeMap<String, u64> = core
            .into_iter()
            .map(|(k, v)| (format!("{k:?}"), v))
            .collect();
        for (k, v) in &self.0 {
            all.insert((*k).to_string(), *v);
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The keys are what the status showed before the reasons were typed: scripts and
    /// the lab tests read them.
    #[test]
    fn names_are_the_status_keys() {
        assert_eq!(
            DropReason::Refused(ReverseDrop::WrongUdpPeer).name(),
            "tunnel data from an address or port the node did not register from"
        );
        assert_eq!(
            DropReason::NoLinkLayerAddress.name(),
            "no link-layer address for the sender"
        );
        assert_eq!(
            DropReason::InternalInterface.name(),
            "request on the internal interface (HA-5)"
        );
        let mut c = DropCounts::default();
        c.count(DropReason::TunWriteFailed);
        c.count(DropReason::TunWriteFailed);
        #[derive(Debug)]
        enum CoreReason {
            Truncated,
        }
        let m = c.merged_with([(CoreReason::Truncated, 3u64)]);
        assert_eq!(m.get("tun write failed"), Some(&2));
        assert_eq!(m.get("Truncated"), Some(&3));
    }
}
