//! Linux I/O shell for mipsec: the part that owns file descriptors, so the sans-IO
//! protocol cores (`mip4`, `esp`, `ikev2`, `mobility`) never have to.
//!
//! * [`tun`]: TUN devices (`IFF_TUN | IFF_NO_PI`), whole IP packets in and out.
//! * [`raw`]: raw IPv4 sockets for one protocol number (4 = IP-in-IP, 50 = ESP),
//!   because this kernel has neither the `ipip` module nor kernel ESP.
//! * [`offload`], [`coalesce`]: `IFF_VNET_HDR` TUN offloads: segmenting TCP/UDP
//!   super-packets in userspace, completing partial checksums, merging TCP segments.
//! * [`raw_batch`]: `sendmmsg`/`recvmmsg` on raw sockets.
//! * [`udp`]: UDP sockets with `SO_REUSEADDR`, `SO_BINDTODEVICE` and `IP_PKTINFO`,
//!   so a home agent learns which of its addresses a request was sent to.
//! * [`ipip_encap`]: IP-in-IP encapsulation in the kernel (a tc program on the TUN
//!   device, filled from the binding table), so TCP super-packets leave whole.
//! * [`ipip_gro`]: IP-in-IP the kernel's GRO merged: recognising it, and its segment size
//!   from an `AF_PACKET` tap.
//! * [`udp_tap`]: an `AF_PACKET` tap for UDP to one port, with each frame's source MAC.
//! * [`netlink`]: rtnetlink operations (links, addresses, routes, rules, proxy ARP,
//!   neighbours), a typed event stream, and gratuitous ARP over `AF_PACKET`.
//!
//! Everything async here runs on tokio and works on a current-thread runtime.
//! A socket, TUN device or netlink socket belongs to the network namespace of the
//! thread that created it; tests exploit that by calling `setns` on a dedicated thread.

mod bpf;
pub mod coalesce;
pub mod datapath;
mod error;
pub mod ipip_encap;
pub mod ipip_gro;
mod ipip_steps;
mod ipip_xdp;
pub mod netlink;
pub mod offload;
pub mod raw;
pub mod raw_batch;
mod sys;
pub mod tun;
pub mod udp;
pub mod udp_batch;
pub mod udp_tap;

pub use error::{Error, Result};
pub use netlink::{NetEvent, NetEvents, Netlink};
pub use raw::{RawIp, RawIpOptions};
pub use tun::{QueueSpec, Tun, TunOptions};
pub use udp::{Datagrams, RecvMeta, UdpOptions};
