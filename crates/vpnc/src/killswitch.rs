//! The kill switch: state in the kernel that blocks clear-text traffic to the protected
//! networks whether or not the daemon is running.
//!
//! It lives in the client's own routing table (`table`, consulted through the policy rule
//! `from all lookup table` at `rule_priority`, before main):
//!
//! - `unreachable <net> metric 4278190080` for each blocked network (`kill_switch`, or by
//!   default everything until the first CHILD_SA, then its remote selectors): the tunnel's own
//!   routes (`dev TUN`, metric 0) win while the TUN exists; when it does not (connecting,
//!   authentication failed, gateway dead, reconnecting, or the daemon killed, which removes
//!   the TUN with it), the lookup ends at `unreachable`, so nothing falls through to main.
//! - `throw <gateway>/32`: traffic to the gateway itself (IKE, ESP) leaves the table and goes
//!   on to main, so the tunnel can be (re)built even when `kill_switch` covers the gateway.
//!
//! None of this is removed when the process dies (kill -9, panic): only a clean stop
//! (SIGTERM, SIGINT) removes it. A new start flushes the table and installs it again, so a
//! restart needs no manual cleanup.

use std::net::Ipv4Addr;

use futures::TryStreamExt;
use netio::netlink::Rule;
use netio::Netlink;
use netlink_packet_route::route::{RouteAttribute, RouteMessage, RouteType};
use rtnetlink::RouteMessageBuilder;

/// The metric of the blocking routes: above any route we or a user would put in the table.
pub const BLOCK_METRIC: u32 = 0xff00_0000;

/// What the kill switch installs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KillSwitch {
    pub table: u32,
    pub rule_priority: u32,
    /// The networks that must never leave in the clear.
    pub block: Vec<(Ipv4Addr, u8)>,
    /// The gateway: its traffic goes on to main.
    pub gateway: Ipv4Addr,
}

impl KillSwitch {
    pub fn rule(&self) -> Rule {
        Rule {
            from: Some((Ipv4Addr::UNSPECIFIED, 0)),
            fwmark: None,
            table: self.table,
            priority: Some(self.rule_priority),
        }
    }

    fn block_route(&self, net: Ipv4Addr, len: u8) -> RouteMessage {
        RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(net, len)
            .table_id(self.table)
            .priority(BLOCK_METRIC)
            .kind(RouteType::Unreachable)
            .build()
    }

    fn throw_route(&self) -> RouteMessage {
        RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(self.gateway, 32)
            .table_id(self.table)
            .kind(RouteType::Throw)
            .build()
    }

    /// Replace whatever a previous run left in our table with the blocking routes, then
    /// make sure our policy rule exists (exactly once).
    pub async fn install(&self, nl: &Netlink) -> Result<(), String> {
        flush_table(nl, self.table).await?;
        let h = nl.handle().route();
        h.add(self.throw_route())
            .replace()
            .execute()
            .await
            .map_err(|e| {
                format!(
                    "kill switch: throw route for the gateway {}: {e}",
                    self.gateway
                )
            })?;
        for &(net, len) in &self.block {
            h.add(self.block_route(net, len))
                .replace()
                .execute()
                .await
                .map_err(|e| {
                    format!(
                        "kill switch: unreachable {net}/{len} in table {}: {e}",
                        self.table
                    )
                })?;
        }
        let rule = self.rule();
        // A stale one (or several) from a killed run.
        while nl.del_rule(&rule).await.is_ok() {}
        nl.add_rule(&rule)
            .await
            .map_err(|e| format!("kill switch: policy rule for table {}: {e}", self.table))
    }

    /// Block `nets` instead of what is blocked now: the new routes go in before the old
    /// ones go, so there is no moment with neither.
    pub async fn replace_block(&mut self, nl: &Netlink, nets: Vec<(Ipv4Addr, u8)>) {
        if nets == self.block {
            return;
        }
        let h = nl.handle().route();
        for &(net, len) in &nets {
            if let Err(e) = h.add(self.block_route(net, len)).replace().execute().await {
                tracing::warn!("kill switch: unreachable {net}/{len}: {e}");
            }
        }
        for &(net, len) in self.block.iter().filter(|b| !nets.contains(b)) {
            let _ = h.del(self.block_route(net, len)).execute().await;
        }
        tracing::info!("kill switch now blocks {:?} unless tunnelled", show(&nets));
        self.block = nets;
    }

    /// Clean stop: remove the rule and everything in our table.
    pub async fn remove(&self, nl: &Netlink) {
        while nl.del_rule(&self.rule()).await.is_ok() {}
        if let Err(e) = flush_table(nl, self.table).await {
            tracing::warn!("{e}");
        }
    }
}

/// `a.b.c.d/len` strings.
pub fn show(nets: &[(Ipv4Addr, u8)]) -> Vec<String> {
    nets.iter().map(|(a, l)| format!("{a}/{l}")).collect()
}

/// Delete every IPv4 route in `table`.
pub async fn flush_table(nl: &Netlink, table: u32) -> Result<(), String> {
    flush_table_where(nl, table, |_| true).await
}

/// Delete the IPv4 routes in `table` for which `doomed` is true (the others stay in
/// place, with no moment where they are missing).
pub async fn flush_table_where(
    nl: &Netlink,
    table: u32,
    doomed: impl Fn(&RouteMessage) -> bool,
) -> Result<(), String> {
    let all: Vec<RouteMessage> = nl
        .handle()
        .route()
        .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute()
        .try_collect()
        .await
        .map_err(|e| format!("listing routes: {e}"))?;
    for m in all {
        let t = m
            .attributes
            .iter()
            .find_map(|a| match a {
                RouteAttribute::Table(t) => Some(*t),
                _ => None,
            })
            .unwrap_or(u32::from(m.header.table));
        if t == table && doomed(&m) {
            let _ = nl.handle().route().del(m).execute().await;
        }
    }
    Ok(())
}
