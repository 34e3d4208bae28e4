//! The mobile node roaming through the enterprise lab of RFC 5265 Figure 1: a
//! `MipLab` whose home agent is the i-HA of `enterprise.rs`, with the x-HA, the
//! foreign agents and the unmodified strongSwan gateway running, and `mipsec mn`
//! configured for an outside mode (cvc/fvc through the x-HA, or mc with MOBIKE).

use crate::enterprise::{GW_OUTER, MN_XHOME, XHA_ADDR};
use crate::gateway::{self, GwAuth};
use crate::mip::{write_private, MN_KEY, MN_SPI};
use crate::netns::Result;
use crate::topo::{Lab, FA_ADDR, HA_ADDR, MN_HOME, XFA_ADDR};

/// The outside flavour of the mobile node under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outside {
    /// x-MIP with the x-HA, then the VPN from the x-home address (cvc, fvc).
    Xmip,
    /// IKEv2 with MOBIKE from the interface's address (mc).
    Mobike,
}

/// The user's `mipsec vpn` file for the mobile node: the lab's client file without
/// the keys `mipsec mn` sets itself (where the client runs from).
pub fn write_mn_vpn_config(lab: &Lab, auth: GwAuth) -> Result<String> {
    let (p, _) = gateway::vpn_config(lab, auth)?;
    let text = std::fs::read_to_string(&p)?;
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| {
            let k = l.split('=').next().unwrap_or("").trim();
            !matches!(k, "interface" | "tun" | "control")
        })
        .collect();
    let out = lab.dir.join("mn-vpn.toml");
    // The lab writes the ESP keys so that tshark can decrypt the captures.
    let keylog = format!("esp_key_log = \"{}\"", esp_keylog(lab).display());
    write_private(&out, &(kept.join("\n") + "\n" + &keylog + "\n"))?;
    Ok(out.display().to_string())
}

/// Where the MN's VPN client writes its ESP keys (Wireshark's esp_sa format).
pub fn esp_keylog(lab: &Lab) -> std::path::PathBuf {
    lab.dir.join("esp_sa")
}

/// tshark options that decrypt the ESP of the MN's VPN with the key log.
pub fn tshark_esp_opts(lab: &Lab) -> Vec<String> {
    let mut o = vec![
        "-o".to_string(),
        "esp.enable_encryption_decode:TRUE".to_string(),
    ];
    for l in std::fs::read_to_string(esp_keylog(lab))
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
    {
        o.push("-o".into());
        o.push(format!("uat:esp_sa:{l}"));
    }
    o
}

/// mn.toml for an outside mode; returns its path.
pub fn write_mn_config(lab: &Lab, auth: GwAuth, outside: Outside) -> Result<String> {
    let d = lab.dir.display();
    let vpn = write_mn_vpn_config(lab, auth)?;
    let outside = match outside {
        Outside::Xmip => format!(
            "outside = \"xmip\"\nexternal_home_agent = \"{XHA_ADDR}\"\n\
             external_home_address = \"{MN_XHOME}\"\nexternal_spi = {MN_SPI}\nexternal_key = \"{MN_KEY}\"\n"
        ),
        Outside::Mobike => "outside = \"mobike\"\n".to_string(),
    };
    let mn = format!(
        r#"[mn]
home_address = "{MN_HOME}"
home_agent = "{HA_ADDR}"
home_network = "10.10.0.0/24"
interface = "eth0"
tunnel_device = "mip0"
spi = {MN_SPI}
key = "{MN_KEY}"
lifetime = 300
trusted_agents = ["{FA_ADDR}", "{XFA_ADDR}"]
control_socket = "{d}/mn.sock"
vpn_gateway = "{GW_OUTER}"
vpn_config = "{vpn}"
{outside}"#
    );
    let p = lab.dir.join("mn.toml");
    write_private(&p, &mn)?;
    Ok(p.display().to_string())
}
