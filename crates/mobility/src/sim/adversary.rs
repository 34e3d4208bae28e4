//! The adversary on outside links: forged replies, replayed i-HA replies
//! with TNC, fake hints and agent advertisements.

use mip4::wire::extension::AuthKind;
use mip4::wire::{Extension, RegistrationReply, RegistrationRequest, ReplyCode};
use rand::Rng;
use std::net::SocketAddrV4;
use std::time::Duration;

use super::scenario::NetKind;
use super::world::{sa, Ev, World, INTERNAL_MAC, I_HA, ROGUE_AGENT, TRUSTED_AGENT};
use crate::{Advertisement, LinkEvent, Via};

impl World {
    pub(super) fn schedule_adversary(&mut self, i: u32, gen: u64) {
        let net = self.ifs[&i].net;
        if let Some(net) = net {
            if matches!(
                self.sc.nets[net].kind,
                NetKind::Outside {
                    adversary: true,
                    ..
                }
            ) {
                let d = Duration::from_millis(self.rng.gen_range(1..3000));
                self.after(d, Ev::Adversary(i, gen));
            }
        }
    }

    /// The adversary on an outside link: replays captured i-HA replies with
    /// TNC, advertises as a rogue agent and as the trusted agent's address.
    pub(super) fn adversary(&mut self, i: u32, gen: u64) {
        if self.ifs[&i].gen != gen {
            return;
        }
        let (now, wall) = (self.now, self.wall());
        if !self.captured.is_empty() {
            let k = self.rng.gen_range(0..self.captured.len());
            let p = self.captured[k].clone();
            let from = SocketAddrV4::new(I_HA, 434);
            self.node
                .handle_datagram(now, wall, i, Via::Plain, from, &p);
        }
        let agent = if self.rng.gen_bool(0.5) {
            ROGUE_AGENT
        } else {
            TRUSTED_AGENT
        };
        self.node.handle_advertisement(
            now,
            wall,
            i,
            Advertisement {
                agent,
                care_of: agent,
                lifetime: 9000,
                sequence: 0,
                nai: Some("fa@corp.example".into()),
            },
        );
        self.node.handle_link(
            now,
            wall,
            i,
            LinkEvent::DhcpHints {
                domain: Some("corp.example".into()),
                gateway_mac: Some(INTERNAL_MAC),
            },
        );
        let d = Duration::from_millis(self.rng.gen_range(500..5000));
        self.after(d, Ev::Adversary(i, gen));
    }

    /// A forged reply to a request seen on an adversary's link: right
    /// Identification, TNC, an authenticator made with the wrong key.
    pub(super) fn forge(&mut self, i: u32, gen: u64, req: &[u8], net: usize) {
        let Ok(r) = RegistrationRequest::parse(req) else {
            return;
        };
        let rep = RegistrationReply {
            code: ReplyCode::ACCEPTED,
            lifetime: r.lifetime,
            home_addr: r.home_addr,
            home_agent: r.home_agent,
            ident: r.ident,
            extensions: vec![Extension::TrustedNetworksConfigured],
        };
        let mut b = Vec::new();
        rep.emit(&mut b);
        sa(b"guessed-key").append(AuthKind::MnHa, &mut b);
        let d = self.sc.nets[net].imp.delay_min / 2;
        self.after(
            d,
            Ev::ToMn {
                iface: i,
                gen,
                via: Via::Plain,
                from: SocketAddrV4::new(r.home_agent, 434),
                payload: b,
                genuine_tnc: false,
                genuine_xha: false,
            },
        );
    }
}
