//! A deterministic simulator for the mobility core (tests only).
//!
//! One mobile node ([`MobileNode`]) with one or two interfaces, moved between
//! networks on simulated time. The home agents are the real `mip4` cores: the
//! i-HA with trusted networks (it adds TNC and silently drops untrusted
//! sources) and the x-HA. The VPN gateway is a model (see [`gateway`]): it
//! hands out a tunnel inner address after an IKE exchange whose duration and
//! loss follow the link, answers MOBIKE updates, and carries datagrams to the
//! i-HA only while its SA exists and the outer path works. Outside links may
//! carry an adversary that forges replies, replays captured i-HA replies with
//! TNC and fakes every hint. Links have seeded loss, delay (with jitter, so
//! reordering), duplication, blackholes and NAT rebinding.
//!
//! The simulated shell asks [`MobileNode::gate`] for every user packet and the
//! [`oracle`] checks each packet that leaves against ground truth that the
//! simulator, not the core, keeps.

mod adversary;
pub(crate) mod gateway;
pub(crate) mod oracle;
mod props;
pub(crate) mod scenario;
mod tests;
mod world;

pub(crate) use world::World;
