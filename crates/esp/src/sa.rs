//! Security associations: [`OutboundSa`] seals, [`InboundSa`] opens.
//!
//! Both take `now` on every call and never read a clock. Drive each SA like this:
//! 1. pass packets through [`OutboundSa::seal`] / [`InboundSa::open`];
//! 2. call `handle_timeout(now)` when `poll_timeout()` is reached;
//! 3. drain `poll_event()` after either, and rekey on [`SaEvent::SoftExpired`],
//!    delete on [`SaEvent::HardExpired`].

use std::ops::Range;
use std::time::Instant;

use crate::error::{ConfigError, DropCounters, EspError};
use crate::lifetime::{Direction, LifeState, Lifetime, SaEvent, Trigger};
use crate::replay::{ReplayWindow, DEFAULT_WINDOW};
use crate::suite::{Suite, Transform};
use crate::wire::{self, EspHeader, HEADER_LEN, TRAILER_LEN};

/// Parameters of one SA, as negotiated by IKE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaConfig {
    pub spi: u32,
    pub suite: Suite,
    /// 64-bit extended sequence numbers (RFC 4303 section 2.2.1).
    pub esn: bool,
    /// Anti-replay window in packets (inbound only).
    pub replay_window: u32,
    pub lifetime: Lifetime,
}

impl SaConfig {
    /// Defaults: no ESN, a 128-packet window, no lifetime limits.
    pub fn new(spi: u32, suite: Suite) -> Self {
        SaConfig {
            spi,
            suite,
            esn: false,
            replay_window: DEFAULT_WINDOW,
            lifetime: Lifetime::UNLIMITED,
        }
    }

    pub fn with_esn(mut self, esn: bool) -> Self {
        self.esn = esn;
        self
    }

    pub fn with_replay_window(mut self, packets: u32) -> Self {
        self.replay_window = packets;
        self
    }

    pub fn with_lifetime(mut self, lifetime: Lifetime) -> Self {
        self.lifetime = lifetime;
        self
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.spi < 256 {
            return Err(ConfigError::ReservedSpi(self.spi));
        }
        self.lifetime.validate()
    }

    fn max_seq(&self) -> u64 {
        if self.esn {
            u64::MAX
        } else {
            u64::from(u32::MAX)
        }
    }
}

/// Where per-packet IVs come from.
///
/// AEAD suites need an IV that never repeats under one key; [`SeqIv`] uses the 64-bit
/// sequence number, which an SA never reuses. CBC needs unpredictable IVs: use
/// [`RandomIv`] with a cryptographic RNG.
pub trait IvSource: Send {
    fn fill_iv(&mut self, seq: u64, iv: &mut [u8]) -> Result<(), EspError>;
}

/// IV = the packet's 64-bit sequence number, big-endian, right-aligned (a per-key counter).
#[derive(Debug, Clone, Copy, Default)]
pub struct SeqIv;

impl IvSource for SeqIv {
    fn fill_iv(&mut self, seq: u64, iv: &mut [u8]) -> Result<(), EspError> {
        iv.fill(0);
        let b = seq.to_be_bytes();
        for (d, s) in iv.iter_mut().rev().zip(b.iter().rev()) {
            *d = *s;
        }
        Ok(())
    }
}

/// IVs from a caller-provided cryptographic RNG.
#[derive(Debug)]
pub struct RandomIv<R>(pub R);

impl<R: rand::RngCore + rand::CryptoRng + Send> IvSource for RandomIv<R> {
    fn fill_iv(&mut self, _seq: u64, iv: &mut [u8]) -> Result<(), EspError> {
        self.0.try_fill_bytes(iv).map_err(|_| EspError::IvSource)
    }
}

/// Per-SA traffic counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SaStats {
    pub packets: u64,
    /// Payload octets (inner packets), as counted for the byte lifetime.
    pub bytes: u64,
    pub drops: DropCounters,
}

/// The sending half of a child SA.
pub struct OutboundSa {
    cfg: SaConfig,
    transform: Box<dyn Transform>,
    iv: Box<dyn IvSource>,
    /// Last sequence number sent (0 = none yet).
    seq: u64,
    life: LifeState,
    stats: SaStats,
}

impl std::fmt::Debug for OutboundSa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboundSa")
            .field("cfg", &self.cfg)
            .field("seq", &self.seq)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl OutboundSa {
    /// An outbound SA for an AEAD suite, with the sequence number as IV.
    /// CBC suites need [`OutboundSa::with_iv_source`] and a random source.
    pub fn new(
        cfg: SaConfig,
        enc_key: &[u8],
        integ_key: &[u8],
        now: Instant,
    ) -> Result<Self, ConfigError> {
        if !cfg.suite.is_aead() {
            return Err(ConfigError::IvSourceRequired);
        }
        Self::with_iv_source(cfg, enc_key, integ_key, now, Box::new(SeqIv))
    }

    /// An outbound SA with an explicit IV source.
    pub fn with_iv_source(
        cfg: SaConfig,
        enc_key: &[u8],
        integ_key: &[u8],
        now: Instant,
        iv: Box<dyn IvSource>,
    ) -> Result<Self, ConfigError> {
        cfg.validate()?;
        let transform = cfg.suite.transform(enc_key, integ_key)?;
        Ok(Self::from_transform(cfg, transform, iv, now))
    }

    pub(crate) fn from_transform(
        cfg: SaConfig,
        transform: Box<dyn Transform>,
        iv: Box<dyn IvSource>,
        now: Instant,
    ) -> Self {
        OutboundSa {
            life: LifeState::new(cfg.spi, Direction::Outbound, cfg.lifetime, now),
            cfg,
            transform,
            iv,
            seq: 0,
            stats: SaStats::default(),
        }
    }

    pub fn spi(&self) -> u32 {
        self.cfg.spi
    }

    pub fn config(&self) -> &SaConfig {
        &self.cfg
    }

    /// Octets in front of the payload: ESP header and IV.
    pub fn header_len(&self) -> usize {
        HEADER_LEN + self.transform.iv_len()
    }

    /// Total ESP overhead for an inner packet of `payload_len` octets.
    pub fn overhead(&self, payload_len: usize) -> usize {
        self.header_len()
            + wire::pad_len(payload_len, self.transform.align())
            + TRAILER_LEN
            + self.transform.icv_len()
    }

    /// The largest inner packet that still fits an outer IPv4 packet of `outer_mtu`
    /// octets (20-octet IPv4 header, plus 8 for UDP when `udp_encap`); 0 if none fits.
    /// Use it as the tunnel interface MTU.
    pub fn inner_mtu(&self, outer_mtu: usize, udp_encap: bool) -> usize {
        let align = self.transform.align().max(1);
        let fixed =
            20 + if udp_encap {
                crate::udp_encap::UDP_HEADER_LEN
            } else {
                0
            } + self.header_len()
                + self.transform.icv_len();
        let text = outer_mtu.saturating_sub(fixed) / align * align;
        text.saturating_sub(TRAILER_LEN)
    }

    /// The sequence number the next packet will carry.
    pub fn next_seq(&self) -> u64 {
        self.seq.saturating_add(1)
    }

    pub fn stats(&self) -> &SaStats {
        &self.stats
    }

    /// Seals `inner` (an IPv4 packet in tunnel mode: `next_header` = 4) into `out`,
    /// which is cleared first. `out` keeps its capacity, so a reused buffer makes the
    /// hot path allocation-free.
    pub fn seal(
        &mut self,
        now: Instant,
        next_header: u8,
        inner: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), EspError> {
        out.clear();
        out.reserve(self.overhead(inner.len()) + inner.len());
        out.resize(self.header_len(), 0);
        out.extend_from_slice(inner);
        self.seal_at(now, next_header, out, 0)
    }

    /// Seals in place: `buf[headroom..]` is the inner packet and at least
    /// [`header_len`](Self::header_len) octets before it are free. Trailer and ICV are
    /// appended. Returns where the ESP packet now lies in `buf`.
    pub fn seal_in_place(
        &mut self,
        now: Instant,
        next_header: u8,
        buf: &mut Vec<u8>,
        headroom: usize,
    ) -> Result<Range<usize>, EspError> {
        let need = self.header_len();
        let start = headroom.checked_sub(need).ok_or(EspError::Headroom {
            have: headroom,
            need,
        })?;
        if headroom > buf.len() {
            return Err(EspError::Headroom {
                have: buf.len(),
                need: headroom,
            });
        }
        self.seal_at(now, next_header, buf, start)?;
        Ok(start..buf.len())
    }

    fn seal_at(
        &mut self,
        now: Instant,
        next_header: u8,
        buf: &mut Vec<u8>,
        start: usize,
    ) -> Result<(), EspError> {
        let r = self.seal_inner(now, next_header, buf, start);
        if let Err(e) = &r {
            self.stats.drops.count_error(e);
        }
        r
    }

    fn seal_inner(
        &mut self,
        now: Instant,
        next_header: u8,
        buf: &mut Vec<u8>,
        start: usize,
    ) -> Result<(), EspError> {
        self.life.check(now)?;
        //= https://www.rfc-editor.org/rfc/rfc4303#section-3.3.3
        //# the sender MUST NOT send a packet on an SA if doing so would cause the
        //# sequence number to cycle.
        let seq = self
            .seq
            .checked_add(1)
            .filter(|s| *s <= self.cfg.max_seq())
            .ok_or_else(|| {
                self.life.set_hard(Trigger::SeqNumber);
                EspError::SeqOverflow
            })?;
        let hdr_len = self.header_len();
        let payload_start = start + hdr_len;
        let payload_len = buf
            .len()
            .checked_sub(payload_start)
            .ok_or(EspError::Headroom {
                have: buf.len().saturating_sub(start),
                need: hdr_len,
            })?;
        // An IPv4 total length caps what one ESP packet can carry.
        if payload_len > 65535 {
            return Err(EspError::TooLong { len: payload_len });
        }
        let header = EspHeader {
            spi: self.cfg.spi,
            seq: seq as u32,
        };
        let (hdr, iv) = buf
            .get_mut(start..payload_start)
            .and_then(|h| h.split_first_chunk_mut::<HEADER_LEN>())
            .ok_or(EspError::Headroom {
                have: 0,
                need: hdr_len,
            })?;
        *hdr = header.to_bytes();
        self.iv.fill_iv(seq, iv)?;
        let pad = wire::pad_len(payload_len, self.transform.align());
        let icv_len = self.transform.icv_len();
        let payload_end = buf.len();
        buf.reserve(pad + TRAILER_LEN + icv_len);
        wire::push_trailer(buf, pad, next_header);
        buf.resize(buf.len() + icv_len, 0);
        let esn_hi = self.cfg.esn.then_some((seq >> 32) as u32);
        let sealed = match buf.get_mut(start..) {
            Some(packet) => self.transform.seal(esn_hi, packet),
            None => Err(EspError::TooShort { len: 0, min: start }),
        };
        if let Err(e) = sealed {
            // Leave the caller's inner packet as it was (the trailer came off again).
            buf.truncate(payload_end);
            return Err(e);
        }
        self.seq = seq;
        self.stats.packets += 1;
        self.stats.bytes += payload_len as u64;
        self.life.add_bytes(payload_len);
        // Ask for a rekey while 1/16 of the sequence space is left.
        if seq >= self.cfg.max_seq() - (self.cfg.max_seq() >> 4) {
            self.life.set_soft(Trigger::SeqNumber);
        }
        Ok(())
    }

    /// Applies time limits; call when [`poll_timeout`](Self::poll_timeout) is reached.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.life.handle_timeout(now);
    }

    /// The next lifetime deadline, if any.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.life.poll_timeout()
    }

    /// The next soft/hard expiry event, each reported once.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<SaEvent> {
        self.life.poll_event()
    }

    pub fn is_soft_expired(&self) -> bool {
        self.life.is_soft_expired()
    }

    pub fn is_hard_expired(&self) -> bool {
        self.life.is_hard_expired()
    }

    /// Test hook: pretend `last` packets were already sent.
    #[cfg(test)]
    pub(crate) fn set_last_seq(&mut self, last: u64) {
        self.seq = last;
    }
}

/// A successfully opened packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    pub spi: u32,
    /// The full (ESN-reconstructed) sequence number.
    pub seq: u64,
    /// The inner protocol: 4 = IPv4, 41 = IPv6, 59 = dummy packet to discard.
    pub next_header: u8,
    /// Where the decrypted inner packet lies in the buffer given to `open`.
    pub payload: Range<usize>,
}

impl Opened {
    /// A dummy (traffic-flow-confidentiality) packet: the caller discards it.
    ///
    /// RFC 4303 section 3.4.4.1: "If the value is "59" (no next header), the (dummy)
    /// packet is discarded without further processing."
    pub fn is_dummy(&self) -> bool {
        self.next_header == wire::NEXT_HEADER_NO_NEXT
    }
}

/// The receiving half of a child SA.
pub struct InboundSa {
    cfg: SaConfig,
    transform: Box<dyn Transform>,
    window: ReplayWindow,
    life: LifeState,
    stats: SaStats,
}

impl std::fmt::Debug for InboundSa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboundSa")
            .field("cfg", &self.cfg)
            .field("window_top", &self.window.top())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl InboundSa {
    pub fn new(
        cfg: SaConfig,
        enc_key: &[u8],
        integ_key: &[u8],
        now: Instant,
    ) -> Result<Self, ConfigError> {
        cfg.validate()?;
        let transform = cfg.suite.transform(enc_key, integ_key)?;
        Self::from_transform(cfg, transform, now)
    }

    pub(crate) fn from_transform(
        cfg: SaConfig,
        transform: Box<dyn Transform>,
        now: Instant,
    ) -> Result<Self, ConfigError> {
        Ok(InboundSa {
            window: ReplayWindow::new(cfg.replay_window)?,
            life: LifeState::new(cfg.spi, Direction::Inbound, cfg.lifetime, now),
            cfg,
            transform,
            stats: SaStats::default(),
        })
    }

    pub fn spi(&self) -> u32 {
        self.cfg.spi
    }

    pub fn config(&self) -> &SaConfig {
        &self.cfg
    }

    pub fn stats(&self) -> &SaStats {
        &self.stats
    }

    /// The anti-replay window (read-only).
    pub fn window(&self) -> &ReplayWindow {
        &self.window
    }

    /// Verifies and decrypts `packet` (starting at the SPI) in place.
    ///
    /// Order (RFC 4303 section 3.4): lifetime, replay check, ICV, then the window is
    /// advanced, then the padding is checked. A failure is counted and leaves the window
    /// untouched unless the packet authenticated.
    pub fn open(&mut self, now: Instant, packet: &mut [u8]) -> Result<Opened, EspError> {
        let r = self.open_inner(now, packet);
        if let Err(e) = &r {
            self.stats.drops.count_error(e);
        }
        r
    }

    fn open_inner(&mut self, now: Instant, packet: &mut [u8]) -> Result<Opened, EspError> {
        let header = EspHeader::parse(packet)?;
        if header.spi != self.cfg.spi {
            return Err(EspError::UnknownSpi(header.spi));
        }
        let (iv_len, icv_len) = (self.transform.iv_len(), self.transform.icv_len());
        let min = HEADER_LEN + iv_len + TRAILER_LEN + icv_len;
        if packet.len() < min {
            return Err(EspError::TooShort {
                len: packet.len(),
                min,
            });
        }
        self.life.check(now)?;
        let seq = if self.cfg.esn {
            self.window.infer_esn(header.seq).ok_or(EspError::Replay {
                seq: u64::from(header.seq),
            })?
        } else {
            u64::from(header.seq)
        };
        //= https://www.rfc-editor.org/rfc/rfc4303#section-3.4.3
        //# The preliminary Sequence Number check is effected utilizing the
        //# Sequence Number value in the ESP Header and is performed prior to
        //# integrity checking and decryption.
        self.window.check(seq)?;
        let esn_hi = self.cfg.esn.then_some((seq >> 32) as u32);
        self.transform.open(esn_hi, packet)?;
        //= https://www.rfc-editor.org/rfc/rfc4303#section-3.4.3
        //# The receive window is updated
        //# only if the integrity verification succeeds.
        self.window.commit(seq);
        let text_start = HEADER_LEN + iv_len;
        let text_end = packet.len() - icv_len;
        let text = packet.get(text_start..text_end).ok_or(EspError::TooShort {
            len: packet.len(),
            min,
        })?;
        //= https://www.rfc-editor.org/rfc/rfc4303#section-3.4.4.1
        //# If the default padding
        //# scheme (see Section 2.4) has been employed, the receiver
        //# SHOULD inspect the Padding field
        let (payload_len, next_header) = wire::parse_trailer(text)?;
        self.stats.packets += 1;
        self.stats.bytes += payload_len as u64;
        self.life.add_bytes(payload_len);
        Ok(Opened {
            spi: header.spi,
            seq,
            next_header,
            payload: text_start..text_start + payload_len,
        })
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.life.handle_timeout(now);
    }

    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.life.poll_timeout()
    }

    #[must_use]
    pub fn poll_event(&mut self) -> Option<SaEvent> {
        self.life.poll_event()
    }

    pub fn is_soft_expired(&self) -> bool {
        self.life.is_soft_expired()
    }

    pub fn is_hard_expired(&self) -> bool {
        self.life.is_hard_expired()
    }

    /// Test hook: move the window as if `seq` had been received.
    #[cfg(test)]
    pub(crate) fn window_mut(&mut self) -> &mut ReplayWindow {
        &mut self.window
    }

    /// Payload octets received so far (for the byte lifetime).
    pub fn bytes(&self) -> u64 {
        self.life.bytes()
    }
}
