//! The home agent's answer to `status`: counters and a bounded selection of
//! bindings, so that a million bindings never make a reply of hundreds of
//! megabytes nor stall registrations while it is built.
//!
//! Parameters (the JSON object after `status`; `mipsec status --bindings ...`):
//! * none: the summary and the first page of bindings (`DEFAULT_LIMIT` nodes);
//! * `"summary": true`: no bindings at all;
//! * `"limit": N` (1..=`MAX_LIMIT`) and `"after": "ADDR"`: the bindings of the next N
//!   home addresses above ADDR; the reply's `page.next_after` continues the walk
//!   (null at the end);
//! * `"node": "ADDR"` or `"node": "NAI"`: that node's bindings only.

use super::Daemon;
use mip4::ha::Binding;
use serde_json::{json, Value};
use std::net::Ipv4Addr;

/// Nodes whose bindings a plain `status` lists.
pub const DEFAULT_LIMIT: usize = 100;
/// The largest page a request may ask for.
pub const MAX_LIMIT: usize = 10_000;

/// What a status request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    Summary,
    Page {
        after: Option<Ipv4Addr>,
        limit: usize,
    },
    Node(String),
}

/// Reads the parameters of a status request.
pub fn selection(q: &Value) -> Result<Selection, String> {
    let Some(m) = q.as_object() else {
        return Err("parameters must be a JSON object".into());
    };
    for k in m.keys() {
        if !matches!(k.as_str(), "summary" | "limit" | "after" | "node") {
            return Err(format!(
                "unknown parameter {k:?} (summary, limit, after, node)"
            ));
        }
    }
    if m.get("summary").and_then(Value::as_bool) == Some(true) {
        return Ok(Selection::Summary);
    }
    if let Some(n) = m.get("node") {
        let n = n.as_str().ok_or("node must be a string")?;
        return Ok(Selection::Node(n.to_string()));
    }
    let limit = match m.get("limit") {
        None => DEFAULT_LIMIT,
        Some(v) => match v.as_u64() {
            Some(n) if (1..=MAX_LIMIT as u64).contains(&n) => n as usize,
            _ => return Err(format!("limit must be 1..={MAX_LIMIT}")),
        },
    };
    let after = match m.get("after") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_str()
                .and_then(|s| s.parse().ok())
                .ok_or("after must be an IPv4 address")?,
        ),
    };
    Ok(Selection::Page { after, limit })
}

impl Daemon {
    /// The bindings a request selects, and the paging part of the reply.
    pub(super) fn select_bindings(&self, q: &Value) -> Result<(Vec<Binding>, Value), String> {
        let total = self.shards.binding_count();
        Ok(match selection(q)? {
            Selection::Summary => (Vec::new(), json!({ "bindings_total": total })),
            Selection::Node(n) => {
                let bs = match n.parse::<Ipv4Addr>() {
                    Ok(a) => self.shards.bindings_of(a),
                    Err(_) => self.shards.bindings_of_nai(&n),
                };
                (bs, json!({ "bindings_total": total, "node": n }))
            }
            Selection::Page { after, limit } => {
                let (bs, more) = self.shards.bindings_page(after, limit);
                let next = more
                    .then(|| bs.last().map(|b| b.home_addr.to_string()))
                    .flatten();
                (
                    bs,
                    json!({
                        "bindings_total": total,
                        "page": { "limit": limit, "after": after.map(|a| a.to_string()), "next_after": next },
                    }),
                )
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters() {
        let p = |s: &str| selection(&serde_json::from_str(s).unwrap());
        assert_eq!(
            p("{}"),
            Ok(Selection::Page {
                after: None,
                limit: DEFAULT_LIMIT
            })
        );
        assert_eq!(p(r#"{"summary":true}"#), Ok(Selection::Summary));
        assert_eq!(
            p(r#"{"limit":5,"after":"10.0.0.9"}"#),
            Ok(Selection::Page {
                after: Some(Ipv4Addr::new(10, 0, 0, 9)),
                limit: 5
            })
        );
        assert_eq!(
            p(r#"{"node":"a@corp.example"}"#),
            Ok(Selection::Node("a@corp.example".into()))
        );
        assert!(p(r#"{"limit":0}"#).is_err());
        assert!(p(r#"{"limit":100001}"#).is_err());
        assert!(p(r#"{"after":"x"}"#).is_err());
        assert!(p(r#"{"bogus":1}"#).unwrap_err().contains("bogus"));
    }
}
