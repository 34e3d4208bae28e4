//! The leak classifier (issue 17 item 4) on pcaps built by scapy, an encoder
//! independent of the lab's (`tests/data/craft_leak_pcaps.py`): every frame lands in the
//! class the case says, our decoder agrees with tshark's on every frame, and
//! `mipsec-lab classify` exits 1 on leaks, 0 on a clean capture and 2 on nothing to
//! check. Needs python3 with scapy and tshark (scripts/install-deps.sh); no root.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::process::Command;

use lab::leak::{self, Class, Plan};
use lab::leak_xcheck;

const EVIL: &str = "02:00:00:00:00:66";

fn craft(dir: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/craft_leak_pcaps.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "craft_leak_pcaps.py (needs python3-scapy, scripts/install-deps.sh): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("leak-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn plan() -> Plan {
    let mut p = Plan::lab();
    p.injectors.push(leak::parse_mac(EVIL).unwrap());
    p
}

fn classify_cli(dir: &Path, extra: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mipsec-lab"))
        .arg("classify")
        .arg("--pcap")
        .arg(dir)
        .args(extra)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// Every crafted case, including an IP-in-IP layer with the x-HA that hides a plaintext
/// intranet packet (LEAK) and one that carries ESP (encrypted), gets its class.
#[test]
fn crafted_frames_get_their_class() {
    let dir = tmpdir("crafted");
    craft(&dir);
    let frames = leak::read_pcap(&dir.join("crafted.pcap")).unwrap();
    let expected = std::fs::read_to_string(dir.join("expected.txt")).unwrap();
    let expected: Vec<(&str, &str)> = expected
        .lines()
        .map(|l| l.split_once('\t').unwrap())
        .collect();
    assert_eq!(frames.len(), expected.len());
    let got = leak::classify_each(&plan(), &frames);
    let mut wrong = Vec::new();
    for ((want, name), vd) in expected.iter().zip(&got) {
        if vd.class.name() != *want {
            wrong.push(format!("{name}: want {want}, got {vd:?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    for c in [
        Class::Control,
        Class::Encrypted,
        Class::Leak,
        Class::Injected,
    ] {
        assert!(got.iter().any(|v| v.class == c), "no case of {c:?}");
    }
    let n_leaks = expected.iter().filter(|(c, _)| *c == "LEAK").count();
    // The streaming reader (the CLI's and the soak's) comes to the same report.
    let streamed = leak::classify_file(&plan(), "crafted", &dir.join("crafted.pcap")).unwrap();
    let in_memory = leak::classify_frames(&plan(), "crafted", &frames);
    assert_eq!(leak::render_one(&streamed), leak::render_one(&in_memory));
    assert_eq!(streamed.count(Class::Leak), n_leaks as u64);

    // The command line: exit 1, the count, the reasons.
    let (code, out) = classify_cli(&dir, &["--segments", "crafted", "--injector", EVIL]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains(&format!("\nleaks: {n_leaks}\n")), "{out}");
    assert!(
        out.contains("inside ipip: destination 10.40.0.10 in the clear"),
        "{out}"
    );
    eprintln!("{out}");
    // Without --injector the attacker's replayed reply (from 10.10.0.1) is a leak too.
    let (code, out) = classify_cli(&dir, &["--segments", "crafted"]);
    assert_eq!(code, Some(1));
    assert!(
        out.contains(&format!("\nleaks: {}\n", n_leaks + 1)),
        "{out}"
    );
}

/// Our decoder and tshark's agree, frame by frame, on every IP header's addresses
/// (outer, IP-in-IP, RFC 3519 inner packet, ICMP-quoted), ESP SPIs and ARP addresses.
#[test]
fn decoder_agrees_with_tshark() {
    let dir = tmpdir("xcheck");
    craft(&dir);
    let n = leak_xcheck::crosscheck(&dir.join("crafted.pcap")).unwrap();
    assert_eq!(n, 29);
    // And the comparison can fail: a frame whose inner header we would not have
    // walked, or whose SPI we read differently.
    let frames = leak::read_pcap(&dir.join("crafted.pcap")).unwrap();
    let traced = leak::classify_traced(&Plan::lab(), &frames);
    let theirs = leak_xcheck::tshark(&dir.join("crafted.pcap")).unwrap();
    let (vd, ours) = &traced[15]; // IP-in-IP with the x-HA carrying ESP in UDP
    assert_eq!(vd.class, Class::Encrypted);
    assert!(leak_xcheck::compare(vd, ours, &theirs[15]).is_none());
    let mut shallow = ours.clone();
    shallow.ip_addrs.remove(&"100.64.0.100".parse().unwrap());
    assert!(leak_xcheck::compare(vd, &shallow, &theirs[15]).is_some());
    let mut spi = ours.clone();
    spi.esp_spi = Some(1);
    assert!(leak_xcheck::compare(vd, &spi, &theirs[15]).is_some());
    // A leak walked only partly must still not claim what tshark did not see.
    let (lvd, lours) = &traced[17]; // IP-in-IP hiding plaintext to the CN
    assert_eq!(lvd.class, Class::Leak);
    let mut extra = lours.clone();
    extra.ip_addrs.insert("192.0.2.99".parse().unwrap());
    assert!(leak_xcheck::compare(lvd, &extra, &theirs[17]).is_some());
}

/// Exit codes: 0 for a capture with no leak, 2 when there is nothing to classify.
#[test]
fn cli_exit_codes() {
    let dir = tmpdir("clean");
    craft(&dir);
    let frames = leak::read_pcap(&dir.join("crafted.pcap")).unwrap();
    let verdicts = leak::classify_each(&plan(), &frames);
    // Write the clean frames as ext-a.pcap with a minimal pcap writer.
    let mut b = Vec::new();
    b.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    b.extend_from_slice(&[2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    b.extend_from_slice(&65535u32.to_le_bytes());
    b.extend_from_slice(&1u32.to_le_bytes());
    let mut clean = 0;
    for (f, v) in frames.iter().zip(&verdicts) {
        if matches!(v.class, Class::Control | Class::Encrypted) {
            b.extend_from_slice(&[0; 8]);
            b.extend_from_slice(&(f.data.len() as u32).to_le_bytes());
            b.extend_from_slice(&(f.data.len() as u32).to_le_bytes());
            b.extend_from_slice(&f.data);
            clean += 1;
        }
    }
    std::fs::write(dir.join("ext-a.pcap"), &b).unwrap();
    let (code, out) = classify_cli(&dir, &[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(&format!("ext-a: {clean} frames")) && out.ends_with("leaks: 0\n"),
        "{out}"
    );
    let empty = tmpdir("empty");
    let (code, out) = classify_cli(&empty, &[]);
    assert_eq!(code, Some(2), "{out}");
}
