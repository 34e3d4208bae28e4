//! `[mn] interface` / `interfaces` (MN-2: several physical interfaces).

use super::{MnSection, OutsideMode};

impl MnSection {
    /// The physical interfaces in order of preference: `interfaces`, or the one
    /// `interface`.
    pub fn interface_names(&self) -> Vec<String> {
        if self.interfaces.is_empty() {
            vec![self.interface.clone()]
        } else {
            self.interfaces.clone()
        }
    }

    pub(super) fn check_interfaces(&self) -> Result<(), String> {
        let names = self.interface_names();
        if names.iter().any(|n| n.is_empty() || n.len() > 15) {
            return Err(
                "needs interface = \"eth0\" or interfaces = [\"eth0\", \"wlan0\"] \
                 (names of 1 to 15 characters)"
                    .into(),
            );
        }
        if !self.interface.is_empty() && self.interface != names[0] {
            return Err("interface and interfaces are both set: use interfaces only".into());
        }
        if (1..names.len()).any(|i| names[..i].contains(&names[i])) {
            return Err("an interface is listed twice".into());
        }
        if names.len() > 1 && self.outside == OutsideMode::Mobike {
            return Err(
                "several interfaces with outside = \"mobike\" are not supported yet \
                 (one MOBIKE client would have to move between them); use \"xmip\""
                    .into(),
            );
        }
        Ok(())
    }
}
