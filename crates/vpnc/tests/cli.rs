//! The `mipsec-vpn` binary refuses a bad configuration with file, line and field (no root).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use std::process::Command;

fn run_with(text: &str) -> (bool, String) {
    let dir = std::env::temp_dir().join(format!("vpnc-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("vpn.toml");
    std::fs::write(&p, text).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_mipsec-vpn"))
        .arg("--config")
        .arg(&p)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn bad_config_names_file_line_and_field() {
    let (ok, err) = run_with(
        "gateway = \"192.0.2.2\"\ninterface = \"eth0\"\nlocal_id = \"c.example\"\npsk = \"x\"\ngroups = [31, 2]\n",
    );
    assert!(!ok);
    assert!(
        err.contains("vpn.toml") && err.contains("line 5") && err.contains("groups"),
        "{err}"
    );
    let (ok, err) = run_with("gateway = \"192.0.2.2\"\ninterface = \"eth0\"\nlocal_id = \"c\"\n");
    assert!(!ok);
    assert!(err.contains("psk"), "{err}");
}

#[test]
fn missing_file_is_named() {
    let o = Command::new(env!("CARGO_BIN_EXE_mipsec-vpn"))
        .args(["--config", "/nonexistent/vpn.toml"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/vpn.toml"));
}
