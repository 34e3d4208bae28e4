//! The binary refuses a bad configuration with a message naming file, line and
//! field, and exits non-zero before touching the system.
#![allow(clippy::unwrap_used)]

use std::process::Command;

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mipsec"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout),
    )
}

#[test]
fn bad_config_is_refused_with_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ha.toml");
    std::fs::write(
        &path,
        "[ha]\naddress = \"10.10.0.1\"\nhome_network = \"10.10.0.0/24\"\n\n[[mobile_node]]\nhome_address = \"10.10.0.100\"\nspi = 256\nkey = \"zz\"\n",
    )
    .unwrap();
    let (code, msg) = run(&["ha", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 1, "{msg}");
    assert!(msg.contains(path.to_str().unwrap()), "{msg}");
    assert!(msg.contains("line 8"), "{msg}");
    assert!(msg.contains("key is not hexadecimal"), "{msg}");

    let mn = dir.path().join("mn.toml");
    std::fs::write(&mn, "[mn]\nhome_address = \"10.10.0.100\"\n").unwrap();
    let (code, msg) = run(&["mn", "--config", mn.to_str().unwrap()]);
    assert_eq!(code, 1, "{msg}");
    assert!(msg.contains("missing field `home_agent`"), "{msg}");

    let (code, msg) = run(&["ha", "--config", "/nonexistent/ha.toml"]);
    assert_eq!(code, 1);
    assert!(msg.contains("cannot read /nonexistent/ha.toml"), "{msg}");
}

#[test]
fn status_without_a_daemon_says_so() {
    let (code, msg) = run(&["status", "--socket", "/nonexistent/mn.sock"]);
    assert_eq!(code, 1);
    assert!(msg.contains("is the daemon running?"), "{msg}");
}

#[test]
fn derive_key_prints_the_fleet_key_of_a_node() {
    let dir = tempfile::tempdir().unwrap();
    let sec = dir.path().join("fleet.secret");
    let secret: Vec<u8> = (0..32).collect();
    std::fs::write(&sec, hex::encode(secret)).unwrap();
    let (code, out) = run(&[
        "derive-key",
        "--secret",
        sec.to_str().unwrap(),
        "laptop7@corp.example",
    ]);
    assert_eq!((code, out.trim()), (0, "8a3e336bcb7bd73202082e9bbd59c59a"));
    std::fs::write(&sec, "zz").unwrap();
    let (code, out) = run(&["derive-key", "--secret", sec.to_str().unwrap(), "x@y"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("not hexadecimal"), "{out}");
}
