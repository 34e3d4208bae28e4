//! The enterprise demo route in CI (issue 12 item 4, issue 13 item 1): `mipsec-lab demo
//! --enterprise` with short stays, in modes cvc and mc, run as a user runs it (the
//! binary), with per-segment captures; every TCP session survives and the captures
//! exist for every segment the route crossed. Root and strongSwan are required.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::process::Command;

use lab::testing::{exe, lab_lock_needing};

fn demo(mode: &str) {
    let test = format!("demo_enterprise_{mode}");
    let Some(_g) = lab_lock_needing(&test, &["/usr/lib/ipsec/charon"]) else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("mipsec-demo-{mode}-{}", std::process::id()));
    let out = Command::new(exe())
        .args([
            "demo",
            "--enterprise",
            "--mode",
            mode,
            "--stay",
            "1.5",
            "--pcap",
        ])
        .arg(&dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!(
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .rev()
            .take(5)
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(out.status.success(), "{test} failed:\n{text}");
    assert!(text.contains("TCP resets/unexpected closes: 0"), "{text}");
    assert!(text.contains("verdict: PASS"), "{text}");
    let route: &[&str] = if mode == "mc" {
        &["int-a", "int-b", "ext-a", "ext-nat", "home"]
    } else {
        &["int-a", "int-b", "ext-a", "ext-b", "ext-nat", "home"]
    };
    for want in route {
        assert!(
            text.contains(&format!("-> {want}")),
            "no move to {want}:\n{text}"
        );
    }
    let outside = if mode == "mc" { "mc" } else { "cvc" };
    assert!(
        text.lines()
            .any(|l| l.contains("-> ext-a") && l.contains(outside)),
        "ext-a not in {outside}:\n{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("-> int-b") && l.split_whitespace().nth(4) == Some("f")),
        "int-b not in f:\n{text}"
    );
    for seg in ["home", "int-a", "int-b", "ext-a", "ext-nat", "core", "dmz"] {
        let p = dir.join(format!("{seg}.pcap"));
        let n = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
        assert!(n > 24, "no capture of {seg} ({})", p.display());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn demo_enterprise_cvc() {
    demo("cvc");
}

#[test]
fn demo_enterprise_mc() {
    demo("mc");
}
