//! `[mn] interfaces` (MN-2): several physical interfaces, the old single
//! `interface` still accepted.

use super::*;

const BASE: &str = r#"[mn]
home_address = "10.10.0.100"
home_agent = "10.10.0.1"
home_network = "10.10.0.0/24"
spi = 256
key = "00112233445566778899aabbccddeeff"
"#;

fn load(extra: &str) -> Result<MnFile, String> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("mn.toml");
    std::fs::write(&p, format!("{BASE}{extra}")).unwrap();
    MnFile::load(&p).map_err(|e| e.to_string())
}

#[test]
fn mn_one_or_several_interfaces() {
    let f = load("interface = \"eth0\"\n").unwrap();
    assert_eq!(f.mn.interface_names(), vec!["eth0"]);
    let f = load("interfaces = [\"eth0\", \"wlan0\"]\n").unwrap();
    assert_eq!(f.mn.interface_names(), vec!["eth0", "wlan0"]);
    // A file that names the first one in `interface` too is consistent.
    let f = load("interface = \"eth0\"\ninterfaces = [\"eth0\", \"wlan0\"]\n").unwrap();
    assert_eq!(f.mn.interface_names(), vec!["eth0", "wlan0"]);
    crate::mn::core_config(&f).unwrap();
}

#[test]
fn mn_bad_interface_lists_are_refused() {
    let e = load("").unwrap_err();
    assert!(e.contains("[mn] interface: needs interface"), "{e}");
    let e = load("interfaces = [\"eth0\", \"eth0\"]\n").unwrap_err();
    assert!(
        e.contains("line 7: [mn] interfaces: an interface is listed twice"),
        "{e}"
    );
    let e = load("interface = \"eth1\"\ninterfaces = [\"eth0\", \"wlan0\"]\n").unwrap_err();
    assert!(e.contains("both set"), "{e}");
    let e = load("interfaces = [\"eth0\", \"\"]\n").unwrap_err();
    assert!(e.contains("needs interface"), "{e}");
    let e = load(
        "interfaces = [\"eth0\", \"wlan0\"]\noutside = \"mobike\"\nvpn_gateway = \"192.0.2.1\"\n\
         vpn_config = \"/etc/vpn.toml\"\n",
    )
    .unwrap_err();
    assert!(e.contains("mobike"), "{e}");
}

#[test]
fn mn_start_errors_are_typed() {
    let e = crate::mn::run(std::path::Path::new("/nonexistent/mn.toml")).unwrap_err();
    assert!(matches!(e, crate::mn::Error::Config(_)), "{e:?}");
    let e = load("interface = \"eth0\"\nt_monitor_s = 0\n").unwrap_err();
    assert!(e.contains("t_monitor"), "{e}");
}
