//! The enterprise lab with every daemon running ([`MipLab::start_enterprise`]) and
//! `mipsec-lab roam-bench`: gate-open time and TCP throughput per access mode.

use std::path::Path;

use crate::gateway::GwAuth;
use crate::mip;
use crate::netns::Result;
use crate::roam::Outside;
use crate::scenario::MipLab;
use crate::topo::MN_HOME;

impl MipLab {
    /// The enterprise lab with every daemon running: the i-HA (as this MipLab's HA),
    /// the x-HA, both foreign agents, the strongSwan gateway (`auth`), the CN server,
    /// and `mipsec mn` in the `outside` flavour, at home. Returns once the MN reaches
    /// the CN from home.
    pub fn start_enterprise(exe: &Path, auth: GwAuth, outside: Outside) -> Result<MipLab> {
        let mut ml =
            crate::transit::start_lab(exe, auth, outside, crate::transit::Start::Home, "")?;
        ml.start_mn()?;
        if !ml.echo_ok(Some(MN_HOME), std::time::Duration::from_secs(10)) {
            return Err(crate::netns::other(format!(
                "MN cannot reach the CN at home after 10 s:\n{}",
                ml.lab.log_tail("mn", 30)
            )));
        }
        Ok(ml)
    }

    /// The x-HA's status.
    pub fn xha_status(&self) -> Result<serde_json::Value> {
        mip::status(&self.lab.exe, &self.lab.dir.join("xha.sock"))
    }
}

/// `mipsec-lab roam-bench`: in one enterprise lab, for each access mode, the time
/// from a move to an open gate and TCP throughput up and down through it (mode c on
/// int-a, cvc on ext-a, fvc on ext-b, cvc behind the hotel NAT), as a table.
pub fn bench(exe: &Path, secs: f64) -> Result<String> {
    use crate::topo::Segment;
    use std::fmt::Write;
    use std::time::Duration;
    let mut ml = MipLab::start_enterprise(exe, GwAuth::Psk, Outside::Xmip)?;
    let mut out =
        String::from("segment   mode  gate open after move   TCP up Mbit/s   TCP down Mbit/s\n");
    for (seg, gate) in [
        (Segment::IntA, "open-inside"),
        (Segment::ExtA, "open-vpn"),
        (Segment::ExtB, "open-vpn"),
        (Segment::ExtNat, "open-vpn"),
    ] {
        ml.lab.move_mn(seg)?;
        let (st, took) = ml.wait_mn(Duration::from_secs(20), |v| {
            v["interfaces"][0]["gate"] == gate
        })?;
        let mode = st["interfaces"][0]["mode"]
            .as_str()
            .unwrap_or("?")
            .to_string();
        std::thread::sleep(Duration::from_millis(300));
        let up = crate::bench::throughput(&ml, true, secs)?;
        let down = crate::bench::throughput(&ml, false, secs)?;
        let _ = writeln!(
            out,
            "{:<9} {:<5} {:>10.1} ms {:>20.0} {:>17.0}",
            seg.name(),
            mode,
            took.as_secs_f64() * 1e3,
            up,
            down
        );
    }
    Ok(out)
}
