//! Our local address: choosing it, following its changes (on our own, or when the
//! supervisor says `mobike <address>`), binding the sockets to its interface, and the
//! events the supervisor gets about the tunnel.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use ikev2::Initiator;
use netio::{NetEvent, Netlink};

use super::{first_addresses, Io, State};
use crate::supervise::{Command, Event};

/// At most one resend for new routes per this interval (a burst of routes is one).
const ROUTE_RESEND_GAP: Duration = Duration::from_millis(20);

impl State {
    /// The usable address on the most preferred interface: (address, ifindex, name). With
    /// a pinned address (`local_address`, or the last `mobike` command), only that one.
    pub(super) async fn best_address(&self, nl: &Netlink) -> Option<(Ipv4Addr, u32, String)> {
        let links = nl.links().await.ok()?;
        let mut best: Option<(usize, Ipv4Addr, u32, String)> = None;
        for l in links.into_iter().filter(|l| l.is_running()) {
            let Some(rank) = self.cfg.interface_rank(&l.name) else {
                continue;
            };
            if best.as_ref().is_some_and(|b| b.0 <= rank) {
                continue;
            }
            // Keep our current address when it is still on this interface.
            let mut addrs = first_addresses(nl, l.ifindex).await;
            if let Some(p) = self.pinned {
                addrs.retain(|a| *a == p);
            }
            let pick = addrs
                .iter()
                .find(|a| Some(**a) == self.local_ip)
                .or(addrs.first());
            if let Some(a) = pick {
                best = Some((rank, *a, l.ifindex, l.name));
            }
        }
        best.map(|(_, a, i, n)| (a, i, n))
    }

    fn current_rank(&self) -> Option<usize> {
        self.local_if
            .as_ref()
            .and_then(|(_, n)| self.cfg.interface_rank(n))
    }

    pub(super) async fn on_net(&mut self, io: &Io, ev: NetEvent) {
        if let NetEvent::RouteAdded { table, oif, .. } = ev {
            self.on_route_added(table, oif);
            return;
        }
        let lost = match &ev {
            NetEvent::AddrRemoved { addr, .. } => Some(*addr) == self.local_ip,
            NetEvent::LinkDown { ifindex, .. } | NetEvent::LinkRemoved { ifindex, .. } => {
                self.local_if.as_ref().is_some_and(|(i, _)| i == ifindex)
            }
            _ => false,
        };
        let gained = match &ev {
            NetEvent::AddrAdded { ifindex, addr, .. }
                if !addr.is_loopback() && !addr.is_link_local() =>
            {
                Some(*ifindex)
            }
            NetEvent::LinkUp { ifindex, .. } => Some(*ifindex),
            _ => None,
        };
        if lost {
            tracing::info!(
                "our address {:?} on {:?} went away",
                self.local_ip,
                self.local_if.as_ref().map(|(_, n)| n)
            );
            self.local_ip = None;
            self.local_if = None;
            if !self.follow {
                // The supervisor decides where we go (`mobike <address>`).
                return;
            }
        } else if gained.is_none() || gained == Some(io.tun_ifindex) {
            return;
        }
        let established = self.ike.as_ref().is_some_and(Initiator::is_established);
        if !self.follow && (self.local_ip.is_some() || (established && self.pinned.is_none())) {
            // Not following on our own: only an address to start from (or our pinned
            // address coming back) is taken up here.
            return;
        }
        let Some((new, ifindex, name)) = self.best_address(&io.nl).await else {
            tracing::info!("no usable interface with an IPv4 address; waiting");
            return;
        };
        // Move when we have nothing, or when a more preferred interface became usable
        // (make-before-break back to it).
        let better = self
            .cfg
            .interface_rank(&name)
            .is_some_and(|r| self.current_rank().is_none_or(|c| r < c));
        if self.local_ip.is_none() || (better && Some(new) != self.local_ip) {
            let in_use = established
                && self
                    .ike
                    .as_ref()
                    .is_some_and(|i| i.local().ip() == std::net::IpAddr::V4(new));
            if !self.follow && in_use {
                // Supervised, the carrier came back with the address the IKE SA still
                // uses: nothing to update (the supervisor commands a move when the
                // address changes). An UPDATE_SA_ADDRESSES from it here went out just
                // before the address was replaced, and the supervisor's update from
                // the new one then waited for its retransmission (about 1 s).
                tracing::info!("{new} on {name} again: the IKE SA uses it already");
                self.local_ip = Some(new);
                self.bind_to(io, &name);
                self.local_if = Some((ifindex, name));
                return;
            }
            tracing::info!("moving to {new} on {name}");
            self.move_to(io, new, ifindex, name);
        }
    }

    /// A route appeared. A request sent just before it (a MOBIKE update the moment the
    /// new address came, before the DHCP client added the default route) may have left
    /// without an error and been lost: a socket bound to its interface with no route
    /// makes the kernel take the gateway for on-link and ARP for it in vain. The
    /// outstanding request goes again now instead of at its retransmission (500 ms),
    /// without counting a retry. Routes in our own table, or through other interfaces,
    /// say nothing about our path.
    fn on_route_added(&mut self, table: u32, oif: Option<u32>) {
        let ours = self.local_if.as_ref().map(|(i, _)| *i);
        if table == self.cfg.table || (oif.is_some() && oif != ours) {
            return;
        }
        let now = Instant::now();
        if self
            .route_resent
            .is_some_and(|t| now.duration_since(t) < ROUTE_RESEND_GAP)
        {
            return;
        }
        if let Some(ike) = self.ike.as_mut().filter(|i| i.has_outstanding()) {
            tracing::debug!(
                "a route appeared while an IKE request was outstanding: sending it again"
            );
            ike.resend_outstanding(now);
            self.route_resent = Some(now);
        }
    }

    /// Our address changed to `new` on interface (`ifindex`, `name`): MOBIKE when the IKE
    /// SA is up, else start over from it. Returns true when an UPDATE_SA_ADDRESSES went out.
    pub(super) fn move_to(&mut self, io: &Io, new: Ipv4Addr, ifindex: u32, name: String) -> bool {
        let now = Instant::now();
        self.local_ip = Some(new);
        self.bind_to(io, &name);
        self.local_if = Some((ifindex, name));
        let established = self.ike.as_ref().is_some_and(Initiator::is_established);
        if established {
            if let Some(ike) = self.ike.as_mut() {
                let port = ike.local().port();
                let st = ike.stats();
                if ike.update_addresses(now, SocketAddr::new(new.into(), port), None) {
                    tracing::info!("MOBIKE: moving to {new}");
                    self.move_started = Some((now, st.tx, st.rx));
                    return true;
                }
            }
        }
        tracing::info!("address now {new}: reconnecting from it");
        if self.ike.is_some() {
            self.tunnel_lost(format!("reconnecting from {new}"));
        }
        self.teardown();
        self.connect(io, now);
        false
    }

    /// `bind_interface`: IKE and ESP leave and arrive through `name` only. Applied again
    /// even when the name is unchanged: the kernel binds to the interface index, and an
    /// interface of that name may have been deleted and created again (a TUN of the mn's).
    pub(super) fn bind_to(&mut self, io: &Io, name: &str) {
        if !self.cfg.bind_interface {
            return;
        }
        let socks = [
            Some(socket2::SockRef::from(&io.s500)),
            Some(socket2::SockRef::from(&io.s4500)),
            io.raw.as_ref().map(socket2::SockRef::from),
        ];
        for s in socks.iter().flatten() {
            if let Err(e) = s.bind_device(Some(name.as_bytes())) {
                // Better silent than out through another interface: the sockets stay
                // bound where they were (the interface vanished again since we saw it).
                tracing::warn!("SO_BINDTODEVICE {name}: {e}");
                return;
            }
        }
        if self.bound_if.as_deref() != Some(name) {
            tracing::info!("IKE and ESP sockets bound to {name}");
            self.bound_if = Some(name.to_string());
        }
    }

    /// A command from the supervisor. `Some(reason)` = stop.
    pub(super) async fn on_command(&mut self, io: &Io, c: Command) -> Option<&'static str> {
        match c {
            Command::Stop(reason) => return Some(reason),
            Command::Mobike(new) => self.mobike_command(io, new).await,
        }
        None
    }

    /// `mobike <new>`: UPDATE_SA_ADDRESSES from `new` now; the answer (`mobike` event) comes
    /// with the gateway's, or at once when no update can be sent.
    async fn mobike_command(&mut self, io: &Io, new: Ipv4Addr) {
        let refuse = |st: &mut State, reason: String| {
            tracing::warn!("mobike {new}: {reason}");
            st.emit(&Event::Mobike {
                ok: false,
                local: new,
                ms: None,
                reason: Some(reason),
            });
        };
        let addrs = io.nl.addresses(None).await.unwrap_or_default();
        let Some(ifindex) = addrs.iter().find(|a| a.addr == new).map(|a| a.ifindex) else {
            return refuse(self, format!("{new} is on none of our interfaces"));
        };
        let links = io.nl.links().await.unwrap_or_default();
        let Some(name) = links
            .into_iter()
            .find(|l| l.ifindex == ifindex)
            .map(|l| l.name)
        else {
            return refuse(self, format!("interface {ifindex} of {new} is gone"));
        };
        if ifindex == io.tun_ifindex {
            return refuse(self, format!("{new} is the tunnel's own address"));
        }
        self.pinned = Some(new);
        if let Some((_, old)) = self.pending_mobike.take() {
            self.emit(&Event::Mobike {
                ok: false,
                local: old,
                ms: None,
                reason: Some(format!("superseded by mobike {new}")),
            });
        }
        tracing::info!("supervisor: mobike {new} ({name})");
        if self.move_to(io, new, ifindex, name) {
            self.pending_mobike = Some((Instant::now(), new));
        } else {
            refuse(
                self,
                "no IKE SA to move (MOBIKE not negotiated or not up): connecting from it".into(),
            );
        }
    }

    /// The first CHILD_SA of this IKE SA is installed: tell the supervisor once.
    pub(super) fn announce_up(&mut self) {
        if self.up_sent {
            return;
        }
        let (Some(tia), Some(ike), Some(local)) = (self.tia, self.ike.as_ref(), self.local_ip)
        else {
            return;
        };
        let (spi_i, _) = ike.spis();
        let ev = Event::Up {
            tia,
            tun: self.cfg.tun.clone(),
            local,
            interface: self
                .local_if
                .as_ref()
                .map_or_else(String::new, |(_, n)| n.clone()),
            gateway: *self.cfg.gateway.0.ip(),
            natt: self.sas.udp_encap(),
            ike_spi: format!("{spi_i:016x}"),
            setup_ms: self.status.child_setup_ms.unwrap_or_default(),
        };
        self.emit(&ev);
        self.up_sent = true;
    }

    /// The IKE SA is gone or going (failed, deleted, dead gateway, starting over): a
    /// pending `mobike` failed, and the tunnel is down.
    pub(super) fn tunnel_lost(&mut self, reason: String) {
        if let Some((_, local)) = self.pending_mobike.take() {
            self.emit(&Event::Mobike {
                ok: false,
                local,
                ms: None,
                reason: Some(reason.clone()),
            });
        }
        self.up_sent = false;
        self.emit(&Event::Down { reason });
    }

    /// An `AddressesUpdated`: answer a pending `mobike` command.
    pub(super) fn mobike_done(&mut self, now: Instant, local: SocketAddr) {
        if let Some((t0, want)) = self.pending_mobike.take() {
            let ok = local.ip() == std::net::IpAddr::V4(want);
            self.emit(&Event::Mobike {
                ok,
                local: want,
                ms: Some(now.duration_since(t0).as_secs_f64() * 1e3),
                reason: (!ok).then(|| format!("moved to {local} instead")),
            });
        }
    }

    pub(super) fn emit(&self, ev: &Event) {
        if let Some(s) = &self.events {
            s.emit(ev);
        }
    }
}
