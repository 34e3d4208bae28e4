//! SK protection of whole messages, fragmentation (RFC 7383 2.5) and reassembly.

use std::collections::BTreeMap;

use super::{IkeSa, Reassembly, Role, Suite};
use crate::crypto::sk::SkKeys;
use crate::crypto::IkeKeys;
use crate::wire::{emit_chain, ExchangeType, Payload, PayloadType, HEADER_LEN};

impl IkeSa {
    /// (outbound, inbound) SK keys.
    pub(super) fn sk_keys(&self) -> Option<(SkKeys<'_>, SkKeys<'_>)> {
        sk_keys_of(self.role, self.suite.as_ref()?, self.keys.as_ref()?)
    }

    /// Protect `payloads` into one SK message, or SKF fragments when it would exceed the
    /// configured size and both sides support RFC 7383.
    pub(super) fn seal(
        &mut self,
        exchange: ExchangeType,
        msg_id: u32,
        response: bool,
        payloads: &[Payload],
    ) -> Option<Vec<Vec<u8>>> {
        let header = self.header(exchange, msg_id, response);
        let mut inner = Vec::new();
        let first = emit_chain(payloads, &mut inner);
        let marker = if self.natt_path() { 4 } else { 0 };
        let may_fragment =
            self.cfg.fragmentation && self.peer_frag && exchange != ExchangeType::IKE_SA_INIT;
        let frag_size = self.cfg.fragment_size;
        let (out_keys, _) = sk_keys_of(self.role, self.suite.as_ref()?, self.keys.as_ref()?)?;
        let rng = &mut self.rng;
        let whole = HEADER_LEN + out_keys.overhead(inner.len()) + inner.len() + marker;
        if whole <= frag_size || !may_fragment {
            return out_keys
                .seal(&header, first, None, &inner, rng)
                .ok()
                .map(|m| vec![m]);
        }
        // RFC 7383 2.5.1: split the plaintext; only fragment 1 names the first payload.
        let room = frag_size
            .saturating_sub(HEADER_LEN + 4 + marker + out_keys.overhead(0) + 16)
            .max(64);
        let chunks: Vec<&[u8]> = inner.chunks(room).collect();
        let total = u16::try_from(chunks.len()).ok()?;
        let mut msgs = Vec::with_capacity(chunks.len());
        for (i, c) in chunks.iter().enumerate() {
            let n = u16::try_from(i + 1).ok()?;
            let f = if n == 1 { first } else { PayloadType::NONE };
            msgs.push(out_keys.seal(&header, f, Some((n, total)), c, rng).ok()?);
        }
        Some(msgs)
    }

    pub(super) fn open(&mut self, msg: &[u8]) -> Option<crate::crypto::sk::Opened> {
        let (_, in_keys) = self.sk_keys()?;
        match in_keys.open(msg) {
            Ok(o) => Some(o),
            Err(crate::crypto::sk::OpenError::Crypto(_)) => {
                self.stats.dropped_integrity += 1;
                None
            }
            Err(_) => {
                self.stats.dropped_malformed += 1;
                None
            }
        }
    }

    pub(super) fn reassemble(
        &mut self,
        msg_id: u32,
        n: u16,
        total: u16,
        first: PayloadType,
        data: Vec<u8>,
    ) -> Option<(PayloadType, Vec<u8>)> {
        let r = self.reassembly.get_or_insert_with(Reassembly::default);
        if r.msg_id != msg_id || r.total != total {
            *r = Reassembly {
                msg_id,
                first: PayloadType::NONE,
                total,
                parts: BTreeMap::new(),
            };
        }
        if n == 1 {
            r.first = first;
        }
        r.parts.insert(n, data);
        if r.parts.len() != usize::from(total) {
            return None;
        }
        let r = self.reassembly.take()?;
        let mut all = Vec::new();
        for (_, p) in r.parts {
            all.extend_from_slice(&p);
        }
        Some((r.first, all))
    }
}

fn sk_keys_of<'a>(role: Role, s: &Suite, k: &'a IkeKeys) -> Option<(SkKeys<'a>, SkKeys<'a>)> {
    let i = SkKeys {
        encr: s.encr,
        integ: s.integ,
        ke: &k.sk_ei,
        ka: &k.sk_ai,
    };
    let r = SkKeys {
        encr: s.encr,
        integ: s.integ,
        ke: &k.sk_er,
        ka: &k.sk_ar,
    };
    Some(match role {
        Role::Initiator => (i, r),
        Role::Responder => (r, i),
    })
}
