//! Authentication against an unmodified strongSwan 5.9.8 gateway: failure hygiene (the
//! gateway learns at once that we rejected it) and certificate identities as a gateway
//! admin writes them (subject DNs, PEM files in x509/, x509ca/, private/).
//! Root and network namespaces, like `tests/lab.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use std::time::{Duration, Instant};

use common::*;

/// We do not trust the gateway's certificate (wrong CA): the client sends AUTHENTICATION_FAILED
/// and a Delete of the IKE SA, so charon drops the SA and the address lease at once instead
/// of holding them until its DPD gives up.
#[test]
fn rejected_gateway_auth_frees_its_sa_at_once() {
    if !need_lab("rejected_gateway_auth_frees_its_sa_at_once") {
        return;
    }
    let mut lab = Lab::up(
        "h",
        GwOpts {
            certs: true,
            ..Default::default()
        },
    );
    let d = pki();
    lab.start_client(&format!(
        "cert = \"{d}/client.der\"\nkey = \"{d}/client.key.p8\"\nca = [\"{d}/other-ca.der\"]"
    ));
    // The gateway establishes its side (it trusts us), then hears from us.
    let end = Instant::now() + Duration::from_secs(10);
    while !lab.charon_log().contains("established between") {
        assert!(
            Instant::now() < end,
            "no IKE_AUTH at charon\n{}",
            lab.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let t0 = Instant::now();
    let mut freed = None;
    while t0.elapsed() < Duration::from_secs(3) {
        if !lab.list_sas().contains("ESTABLISHED") {
            freed = Some(t0.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let s = lab.status().unwrap();
    assert_ne!(s["state"], "established", "{s}");
    let freed = freed.unwrap_or_else(|| {
        panic!(
            "charon still holds the SA 3 s later: {}\n{}",
            lab.list_sas(),
            lab.logs()
        )
    });
    eprintln!(
        "gateway freed the rejected SA {} ms after establishing it",
        freed.as_millis()
    );
    let pool = lab.swanctl(&["--list-pools", "--leases"]);
    assert!(!pool.contains("online"), "lease still online: {pool}");
}

/// Run `sh -c script` in `dir`.
fn shell(dir: &std::path::Path, script: &str) {
    let o = std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

const GW_DN: &str = "C=XX, O=Example, CN=gw.example";
const CLIENT_DN: &str = "C=XX, O=Example, CN=laptop.example";

/// A PKI made with strongSwan's own `pki` tool, laid out as swanctl wants it: x509ca/ca.pem,
/// x509/gw.pem, private/gw.key.pem (RSA, PKCS#1 PEM), and client certificates for the DN
/// `C=XX, O=Example, CN=laptop.example` with ECDSA (SEC1 PEM), RSA (PKCS#1 PEM)
/// and Ed25519 (PKCS#8 PEM) keys, and an RSA client in DER files (PKCS#1 key).
fn make_pki(dir: &std::path::Path) {
    for d in ["x509", "x509ca", "private", "client"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    shell(
        dir,
        &format!(
            "pki --gen --type ecdsa --size 256 --outform pem > ca.key.pem && \
             pki --self --ca --lifetime 30 --in ca.key.pem --type ecdsa \
               --dn 'C=XX, O=Example, CN=Example CA' --outform pem > x509ca/ca.pem && \
             pki --gen --type rsa --size 2048 --outform pem > private/gw.key.pem && \
             pki --pub --in private/gw.key.pem --type rsa | pki --issue --lifetime 30 \
               --cacert x509ca/ca.pem --cakey ca.key.pem --dn '{GW_DN}' --san gw.example \
               --flag serverAuth --outform pem > x509/gw.pem"
        ),
    );
    for (name, ty, size) in [
        ("ecdsa", "ecdsa", "256"),
        ("rsa", "rsa", "2048"),
        ("ed25519", "ed25519", "0"),
    ] {
        let size = if size == "0" {
            String::new()
        } else {
            format!("--size {size}")
        };
        shell(
            dir,
            &format!(
                "pki --gen --type {ty} {size} --outform pem > client/{name}.key.pem && \
                 pki --pub --in client/{name}.key.pem --type priv | pki --issue --lifetime 30 \
                   --cacert x509ca/ca.pem --cakey ca.key.pem --dn '{CLIENT_DN}' \
                   --san laptop.example --flag clientAuth --outform pem > client/{name}.pem"
            ),
        );
    }
    // An RSA client in DER files (PKCS#1 key, DER certificate).
    shell(
        dir,
        &format!(
            "pki --gen --type rsa --size 2048 --outform der > client/rsa.key.der && \
             pki --pub --in client/rsa.key.der --type priv | pki --issue --lifetime 30 \
               --cacert x509ca/ca.pem --cakey ca.key.pem --dn '{CLIENT_DN}' \
               --san laptop.example --flag clientAuth --outform der > client/rsa.der"
        ),
    );
}

/// The gateway is configured as an admin would: both sides identified by subject DN,
/// PEM files in swanctl's x509/, x509ca/ and private/. Our client connects with ECDSA,
/// RSA (PEM and DER) and Ed25519 keys, its identity written as a DN string or taken from
/// its certificate, and checks the gateway's DN.
#[test]
fn dn_identities_and_pem_files_with_strongswan() {
    if !need_lab("dn_identities_and_pem_files_with_strongswan") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("vpnc-pki-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    make_pki(&dir);
    let auth = format!(
        "local {{ auth = pubkey\n certs = gw.pem\n id = \"{GW_DN}\" }}\n \
         remote {{ auth = pubkey\n id = \"{CLIENT_DN}\" }}"
    );
    let mut lab = Lab::up(
        "i",
        GwOpts {
            auth: Some(auth),
            swanctl_dir: Some(dir.clone()),
            ..Default::default()
        },
    );
    let d = dir.display();
    let cases = [
        (
            "ecdsa SEC1 PEM, DN from config",
            "ecdsa.pem",
            "ecdsa.key.pem",
            true,
            "ECDSA",
        ),
        (
            "rsa PKCS#1 PEM, DN from certificate",
            "rsa.pem",
            "rsa.key.pem",
            false,
            "RSA",
        ),
        ("rsa DER", "rsa.der", "rsa.key.der", true, "RSA"),
        (
            "ed25519 PKCS#8 PEM",
            "ed25519.pem",
            "ed25519.key.pem",
            false,
            "ED25519",
        ),
    ];
    for (what, cert, key, id_in_config, alg) in cases {
        let local_id = if id_in_config {
            format!("local_id = \"{CLIENT_DN}\"\n")
        } else {
            String::new()
        };
        let text = format!(
            "gateway = \"192.0.2.2\"\ninterface = \"{}\"\n{local_id}remote_id = \"{GW_DN}\"\n\
             cert = \"{d}/client/{cert}\"\nkey = \"{d}/client/{key}\"\nca = [\"{d}/x509ca/ca.pem\"]\n\
             tun = \"{}t\"\ncontrol = \"{}/vpn.sock\"\ndpd_interval = 3\n",
            lab.cl_if(),
            lab.name,
            lab.dir.display()
        );
        let p = lab.dir.join("dn.toml");
        std::fs::write(&p, text).unwrap();
        let seen = lab.charon_log().len();
        lab.spawn_client(&p);
        let s = lab.wait_up();
        assert!(lab.ping(2), "{what}: ping\n{}", lab.logs());
        let log = lab.charon_log().get(seen..).unwrap_or_default().to_string();
        assert!(
            log.contains(&format!("authentication of '{CLIENT_DN}' with {alg}")),
            "{what}: charon authenticated our DN with {alg}\n{}",
            tail(&log, 60)
        );
        eprintln!("{what}: up, TIA {}", s["tia"]);
        lab.stop_client();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// An unloadable certificate or key is a startup error that names the file.
#[test]
fn unloadable_files_name_themselves() {
    let dir = std::env::temp_dir().join(format!("vpnc-badfiles-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let d = pki();
    std::fs::write(
        dir.join("junk.pem"),
        "-----BEGIN CERTIFICATE-----\nnot base64\n",
    )
    .unwrap();
    std::fs::write(dir.join("junk.key"), [0x30, 0x03, 0x02, 0x01, 0x00]).unwrap();
    for (cert, key, culprit) in [
        (
            format!("{}/junk.pem", dir.display()),
            format!("{d}/client.key.p8"),
            "junk.pem",
        ),
        (
            format!("{d}/client.der"),
            format!("{}/junk.key", dir.display()),
            "junk.key",
        ),
        (
            format!("{d}/client.der"),
            format!("{}/missing.key", dir.display()),
            "missing.key",
        ),
    ] {
        let p = dir.join("v.toml");
        std::fs::write(
            &p,
            format!(
                "gateway = \"192.0.2.2\"\ninterface = \"lo\"\ncert = \"{cert}\"\nkey = \"{key}\"\nca = [\"{d}/ca.der\"]\n"
            ),
        )
        .unwrap();
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_mipsec-vpn"))
            .arg("--config")
            .arg(&p)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success() && err.contains(culprit),
            "{culprit}: {err}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
