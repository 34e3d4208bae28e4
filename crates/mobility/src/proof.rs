//! The only way to open a gate inside: a [`TncProof`].
//!
//! MN-4: "inside" is inferred only after a successful registration with the
//! i-HA through that interface whose reply carried the Trusted Networks
//! Configured extension, with no status change since. A `TncProof` can only be
//! built in this module, by [`DirectIha`], from an authenticated reply of the
//! plaintext client bound to one interface. The client that registers through
//! the VPN is a different type and cannot produce one, whatever its replies
//! carry (an i-HA that trusts the VPN pool adds TNC to those too).

use mip4::client::{Attachment, ClientConfig, ClientEvent, RegistrationClient};
use mip4::replay::{NtpTime, ReplayMethod, DEFAULT_TOLERANCE};
use mip4::wire::RegistrationReply;
use mip4::Transmit;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant, SystemTime};

use crate::{IfaceId, Mode};

/// Evidence that `iface` was inside at `at`, in status epoch `epoch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TncProof {
    iface: IfaceId,
    epoch: u64,
    at: Instant,
    care_of: Ipv4Addr,
    mode: Mode,
    _private: (),
}

impl TncProof {
    pub fn iface(&self) -> IfaceId {
        self.iface
    }
    pub fn epoch(&self) -> u64 {
        self.epoch
    }
    /// When the reply arrived; T_MONITOR runs from here.
    pub fn at(&self) -> Instant {
        self.at
    }
    pub fn care_of(&self) -> Ipv4Addr {
        self.care_of
    }
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// MN-3, MN-4, MN-5: valid for this interface, in this epoch, less than
    /// `t_monitor` old.
    pub fn holds(&self, iface: IfaceId, epoch: u64, now: Instant, t_monitor: Duration) -> bool {
        self.iface == iface && self.epoch == epoch && now < self.at + t_monitor && now >= self.at
    }

    /// Test-only: the negative control keeps a proof across a status change.
    #[cfg(test)]
    pub(crate) fn carried_to(&self, epoch: u64) -> TncProof {
        TncProof {
            epoch,
            ..self.clone()
        }
    }
}

/// What a direct (plaintext) i-HA reply amounted to.
#[derive(Debug)]
pub(crate) enum DirectOutcome {
    Inside(TncProof),
    /// MN-4: accepted without TNC; never a reason to leave the VPN.
    AcceptedWithoutTnc,
    Failed,
    /// A deregistration we sent for cleanup was answered.
    CleanedUp,
}

/// The plaintext i-HA client of one interface (MN-6, MN-13).
pub(crate) struct DirectIha {
    iface: IfaceId,
    client: RegistrationClient,
    /// Epoch and mode the outstanding request belongs to.
    pending: Option<(u64, Mode, bool)>,
    /// Seconds our clock is off from the i-HA's (from code 133 replies).
    clock_offset: i64,
    /// The last datagram carried a home agent time outside the replay
    /// tolerance: if the client took it, it is a replay and proves nothing.
    last_stale: bool,
    pub(crate) stale_replies: u64,
}

impl DirectIha {
    pub(crate) fn new(iface: IfaceId, cfg: ClientConfig, seed: [u8; 32]) -> Self {
        DirectIha {
            iface,
            client: RegistrationClient::new(cfg, seed),
            pending: None,
            clock_offset: 0,
            last_stale: false,
            stale_replies: 0,
        }
    }

    /// Registers (c, f) or, at home (h), deregisters every binding; either way a
    /// TNC reply proves the interface inside for `epoch`.
    pub(crate) fn probe(
        &mut self,
        now: Instant,
        wall: SystemTime,
        epoch: u64,
        mode: Mode,
        att: Attachment,
    ) {
        self.pending = Some((epoch, mode, false));
        if mode == Mode::H {
            self.client.deregister(now, wall, att);
        } else {
            self.client.register(now, wall, att);
        }
    }

    /// Removes a binding made without TNC (it would draw plaintext to us).
    pub(crate) fn cleanup(&mut self, now: Instant, wall: SystemTime, epoch: u64, att: Attachment) {
        self.pending = Some((epoch, Mode::C, true));
        self.client.deregister(now, wall, att);
    }

    pub(crate) fn stop(&mut self) {
        self.pending = None;
        self.client.reset();
    }

    pub(crate) fn is_pending(&self) -> bool {
        self.client.is_pending()
    }

    /// The request already out (the client's own renewal before the lifetime ends)
    /// is to answer for `epoch` as a probe would: its reply with TNC proves the link
    /// again, its failure fails it. Nothing changes if a probe is already waiting.
    pub(crate) fn adopt_pending(&mut self, epoch: u64, mode: Mode) {
        if self.client.is_pending() && self.pending.is_none() {
            self.pending = Some((epoch, mode, false));
        }
    }

    /// The shell could not send the outstanding request: send it again now.
    pub(crate) fn resend_now(&mut self, now: Instant, wall: SystemTime) -> bool {
        self.client.resend_now(now, wall)
    }

    /// See `RegistrationClient::udp_tunnel`.
    pub(crate) fn udp_tunnel(&self, now: Instant) -> Option<Option<u16>> {
        self.client.udp_tunnel(now)
    }

    pub(crate) fn registered_until(&self) -> Option<Instant> {
        self.client.registered_until()
    }

    pub(crate) fn client_stats(&self) -> &mip4::client::ClientStats {
        self.client.stats()
    }

    pub(crate) fn handle_datagram(
        &mut self,
        now: Instant,
        wall: SystemTime,
        from: SocketAddrV4,
        payload: &[u8],
    ) {
        // MN-4, defence in depth: the client matches a reply on the low 32 bits
        // of the Identification only; the high 32 bits are the i-HA's clock. A
        // captured reply replayed later carries an old time.
        self.last_stale = false;
        if self.client.config().replay == ReplayMethod::Timestamp {
            if let Ok(r) = RegistrationReply::parse(payload) {
                let ha = (r.ident >> 32) as u32;
                let ours = NtpTime::from_system_time(wall).seconds();
                let ours = (i64::from(ours) + self.clock_offset) as u32;
                let skew = i64::from(ha.wrapping_sub(ours) as i32).unsigned_abs();
                self.last_stale = skew > DEFAULT_TOLERANCE.as_secs();
            }
        }
        self.client.handle_datagram(now, wall, from, payload);
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant, wall: SystemTime) {
        if self.client.poll_timeout().is_some_and(|t| t <= now) {
            self.client.handle_timeout(now, wall);
        }
    }

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.client.poll_timeout()
    }

    pub(crate) fn poll_transmit(&mut self) -> Option<Transmit> {
        self.client.poll_transmit()
    }

    /// The next outcome, with the epoch its request was sent in.
    pub(crate) fn poll_outcome(&mut self, now: Instant) -> Option<(u64, DirectOutcome)> {
        loop {
            let ev = self.client.poll_event()?;
            let Some((epoch, mode, cleanup)) = self.pending else {
                continue;
            };
            let out = match ev {
                ClientEvent::Registered { tnc, care_of, .. } if !cleanup => {
                    if tnc {
                        DirectOutcome::Inside(self.proof(epoch, now, care_of, mode))
                    } else {
                        DirectOutcome::AcceptedWithoutTnc
                    }
                }
                ClientEvent::Deregistered if cleanup => DirectOutcome::CleanedUp,
                ClientEvent::Deregistered if mode == Mode::H => {
                    if self.client.last_accepted_tnc() {
                        DirectOutcome::Inside(self.proof(epoch, now, self.client.home_addr(), mode))
                    } else {
                        DirectOutcome::AcceptedWithoutTnc
                    }
                }
                ClientEvent::Denied { .. }
                | ClientEvent::TimedOut { .. }
                | ClientEvent::Expired => DirectOutcome::Failed,
                ClientEvent::Resynchronized { clock_offset } => {
                    self.clock_offset = clock_offset;
                    continue;
                }
                ClientEvent::Registered { .. } | ClientEvent::Deregistered => continue,
            };
            let out = match out {
                DirectOutcome::Inside(_) if self.last_stale => {
                    self.stale_replies += 1;
                    DirectOutcome::Failed
                }
                o => o,
            };
            if !matches!(out, DirectOutcome::Failed) || !self.client.is_pending() {
                self.pending = None;
            }
            return Some((epoch, out));
        }
    }

    fn proof(&self, epoch: u64, at: Instant, care_of: Ipv4Addr, mode: Mode) -> TncProof {
        TncProof {
            iface: self.iface,
            epoch,
            at,
            care_of,
            mode,
            _private: (),
        }
    }
}
