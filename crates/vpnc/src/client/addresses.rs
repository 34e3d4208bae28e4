//! Our local address: choosing it, following its changes (on our own, or when the
//! supervisor says `mobike <address>`), binding the sockets to its interface, and the
//! events the supervisor gets about the tunnel.

use std::net::Ipv4Addr;
use std::time::Instant;

use netio::{NetEvent, Netlink};

use super::{first_addresses, Io, State};
use crate::supervise::{Command, Event};

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
                .find(|a| Some(**a) == self.eng.local_ip())
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
        if let NetEvent::RouteAdded {
            table,
            oif,
            dst,
            prefix,
        } = ev
        {
            self.on_route_added(table, oif, dst, prefix);
            return;
        }
        let lost = match &ev {
            NetEvent::AddrRemoved { addr, .. } => Some(*addr) == self.eng.local_ip(),
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
                self.eng.local_ip(),
                self.local_if.as_ref().map(|(_, n)| n)
            );
            self.eng.set_local(None);
            self.local_if = None;
            if !self.follow {
                // The supervisor decides where we go (`mobike <address>`).
                return;
            }
        } else if gained.is_none() || gained == Some(io.tun_ifindex) {
            return;
        }
        let established = self.eng.is_established();
        if !self.follow && (self.eng.local_ip().is_some() || (established && self.pinned.is_none()))
        {
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
        let current = self.eng.local_ip();
        if current.is_none() || (better && Some(new) != current) {
            let in_use = established && self.eng.ike_uses(new);
            if !self.follow && in_use {
                // Supervised, the carrier came back with the address the IKE SA still
                // uses: nothing to update (the supervisor commands a move when the
                // address changes). An UPDATE_SA_ADDRESSES from it here went out just
                // before the address was replaced, and the supervisor's update from
                // the new one then waited for its retransmission (about 1 s).
                tracing::info!("{new} on {name} again: the IKE SA uses it already");
                self.eng.set_local(Some(new));
                self.bind_to(io, &name);
                self.local_if = Some((ifindex, name));
                return;
            }
            tracing::info!("moving to {new} on {name}");
            self.move_to(io, new, ifindex, name);
        }
    }

    /// A route appeared: see `Engine::route_added`. Routes in our own table, or through
    /// other interfaces, say nothing about our path.
    fn on_route_added(&mut self, table: u32, oif: Option<u32>, dst: Ipv4Addr, prefix: u8) {
        let ours = self.local_if.as_ref().map(|(i, _)| *i);
        if table == self.cfg.table || (oif.is_some() && oif != ours) {
            return;
        }
        self.eng.route_added(Instant::now(), dst, prefix);
    }

    /// Our address changed to `new` on interface (`ifindex`, `name`): MOBIKE when the IKE
    /// SA is up, else start over from it. Returns true when an UPDATE_SA_ADDRESSES went out.
    pub(super) fn move_to(&mut self, io: &Io, new: Ipv4Addr, ifindex: u32, name: String) -> bool {
        self.bind_to(io, &name);
        self.local_if = Some((ifindex, name));
        self.eng.move_to(Instant::now(), new)
    }

    /// `bind_interface`: IKE and ESP leave and arrive through `name` only. Applied again
    /// even when the name is unchanged: the kernel binds to the interface index, and an
    /// interface of that name may have been deleted and created again (a TUN of the mn's).
    pub(super) fn bind_to(&mut self, io: &Io, name: &str) {
        if !self.cfg.bind_interface {
            return;
        }
        if !io.socks.bind_to(name) {
            return;
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
        let addrs = io.nl.addresses(None).await.unwrap_or_default();
        let Some(ifindex) = addrs.iter().find(|a| a.addr == new).map(|a| a.ifindex) else {
            return self
                .eng
                .refuse_mobike(new, format!("{new} is on none of our interfaces"));
        };
        let links = io.nl.links().await.unwrap_or_default();
        let Some(name) = links
            .into_iter()
            .find(|l| l.ifindex == ifindex)
            .map(|l| l.name)
        else {
            return self
                .eng
                .refuse_mobike(new, format!("interface {ifindex} of {new} is gone"));
        };
        if ifindex == io.tun_ifindex {
            return self
                .eng
                .refuse_mobike(new, format!("{new} is the tunnel's own address"));
        }
        self.pinned = Some(new);
        tracing::info!("supervisor: mobike {new} ({name})");
        self.bind_to(io, &name);
        self.local_if = Some((ifindex, name));
        self.eng.mobike(Instant::now(), new);
    }

    pub(super) fn emit(&self, ev: &Event) {
        if let Some(s) = &self.events {
            s.emit(ev);
        }
    }
}
