//! The inbound SA database, keyed by SPI (RFC 4301 section 4.4.2).

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Instant;

use crate::error::{DropCounters, DropReason, EspError};
use crate::lifetime::SaEvent;
use crate::sa::{InboundSa, Opened};
use crate::udp_encap::{self, UdpPayload};
use crate::wire::EspHeader;

/// A datagram received on the NAT-T port (4500), demultiplexed by [`Sad::open_udp`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UdpInbound {
    /// A NAT-keepalive (RFC 3948 section 2.3): ignore it.
    Keepalive,
    /// An IKE message at this range of the payload (after the non-ESP marker).
    Ike(Range<usize>),
    /// An ESP packet that opened; its range is relative to the UDP payload.
    Esp(Opened),
}

/// Inbound SAs by SPI. Packets whose SPI is unknown, or that are too short to carry one,
/// are counted here; everything else is counted by the SA that saw it.
#[derive(Debug, Default)]
pub struct Sad {
    sas: BTreeMap<u32, InboundSa>,
    drops: DropCounters,
}

impl Sad {
    pub fn new() -> Self {
        Self::default()
    }

    /// Installs `sa`, returning the SA it replaces (same SPI), if any.
    pub fn insert(&mut self, sa: InboundSa) -> Option<InboundSa> {
        self.sas.insert(sa.spi(), sa)
    }

    /// Removes the SA with `spi`. Its drop counters stay in [`Sad::drops`], which only
    /// ever grows.
    pub fn remove(&mut self, spi: u32) -> Option<InboundSa> {
        let sa = self.sas.remove(&spi)?;
        self.drops.add(&sa.stats().drops);
        Some(sa)
    }

    pub fn get(&self, spi: u32) -> Option<&InboundSa> {
        self.sas.get(&spi)
    }

    pub fn get_mut(&mut self, spi: u32) -> Option<&mut InboundSa> {
        self.sas.get_mut(&spi)
    }

    pub fn len(&self) -> usize {
        self.sas.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sas.is_empty()
    }

    /// SPIs in ascending order.
    pub fn spis(&self) -> impl Iterator<Item = u32> + '_ {
        self.sas.keys().copied()
    }

    /// Looks the SPI up and opens the packet with that SA.
    pub fn open(&mut self, now: Instant, packet: &mut [u8]) -> Result<Opened, EspError> {
        let header = match EspHeader::parse(packet) {
            Ok(h) => h,
            Err(e) => {
                self.drops.count_error(&e);
                return Err(e);
            }
        };
        match self.sas.get_mut(&header.spi) {
            Some(sa) => sa.open(now, packet),
            None => {
                self.drops.count(DropReason::UnknownSpi);
                Err(EspError::UnknownSpi(header.spi))
            }
        }
    }

    /// Demultiplexes a UDP payload received on port 4500 (RFC 3948) and opens it if it
    /// is ESP. A payload that is none of keepalive, IKE or ESP is counted as too short.
    pub fn open_udp(&mut self, now: Instant, payload: &mut [u8]) -> Result<UdpInbound, EspError> {
        match udp_encap::classify(payload) {
            Ok(UdpPayload::Keepalive) => Ok(UdpInbound::Keepalive),
            Ok(UdpPayload::Ike(_)) => Ok(UdpInbound::Ike(
                udp_encap::NON_ESP_MARKER.len()..payload.len(),
            )),
            Ok(UdpPayload::Esp(_)) => self.open(now, payload).map(UdpInbound::Esp),
            Err(e) => {
                let e = EspError::from(e);
                self.drops.count_error(&e);
                Err(e)
            }
        }
    }

    /// Counts a drop that happened before the SPI could be looked up
    /// (for example a malformed UDP-encapsulated payload).
    pub fn count_drop(&mut self, e: &EspError) {
        self.drops.count_error(e);
    }

    /// Drops seen by the database itself plus those of every installed SA.
    pub fn drops(&self) -> DropCounters {
        let mut total = self.drops;
        for sa in self.sas.values() {
            total.add(&sa.stats().drops);
        }
        total
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        for sa in self.sas.values_mut() {
            sa.handle_timeout(now);
        }
    }

    /// The earliest lifetime deadline over all SAs.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.sas.values().filter_map(InboundSa::poll_timeout).min()
    }

    /// The next event of any SA, in SPI order.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<SaEvent> {
        self.sas.values_mut().find_map(InboundSa::poll_event)
    }

    /// Removes every hard-expired SA, returning their SPIs.
    pub fn remove_hard_expired(&mut self) -> Vec<u32> {
        let dead: Vec<u32> = self
            .sas
            .iter()
            .filter(|(_, sa)| sa.is_hard_expired())
            .map(|(spi, _)| *spi)
            .collect();
        for spi in &dead {
            self.remove(*spi);
        }
        dead
    }
}
