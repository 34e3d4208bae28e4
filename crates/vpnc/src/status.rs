//! What the control socket reports (one JSON object per connection).

use std::net::Ipv4Addr;

use serde::Serialize;

/// Client state and counters.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
    pub state: &'static str,
    pub tia: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub ike_spi_i: String,
    pub ike_spi_r: String,
    pub local: Option<String>,
    pub remote: Option<String>,
    pub behind_nat: bool,
    pub udp_encap: bool,
    pub spi_in: u32,
    pub spi_out: u32,
    pub child_sas: usize,
    pub inbound_sas: usize,
    /// Connection attempts and IKE SAs lost (each followed by a reconnect).
    pub attempts: u64,
    pub reconnects: u64,
    pub child_rekeys: u64,
    pub ike_rekeys: u64,
    pub mobike_moves: u64,
    /// UPDATE_SA_ADDRESSES sent from an unchanged address after a suspected NAT rebinding.
    pub nat_probes: u64,
    /// Last IKE setup: first IKE_SA_INIT to IKE SA / CHILD_SA up.
    pub ike_setup_ms: Option<f64>,
    pub child_setup_ms: Option<f64>,
    /// Last MOBIKE move: address change noticed to UPDATE_SA_ADDRESSES answered, and the
    /// IKE datagrams sent/received meanwhile.
    pub last_move_ms: Option<f64>,
    pub last_move_ike_tx: u64,
    pub last_move_ike_rx: u64,
    pub esp_tx_packets: u64,
    pub esp_tx_bytes: u64,
    pub esp_rx_packets: u64,
    pub esp_rx_bytes: u64,
    pub esp_drops: u64,
    pub tun_dropped: u64,
    pub rx_dropped: u64,
    pub tx_errors: u64,
    pub ike_stats: String,
}

impl Status {
    pub fn to_json(&self) -> String {
        let mut s =
            serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
        s.push('\n');
        s
    }
}
