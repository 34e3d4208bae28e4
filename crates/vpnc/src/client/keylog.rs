//! `esp_keylog`: the keys of each CHILD_SA in Wireshark's `esp_sa` table format
//! (lab and debugging only), so that tshark decrypts a capture:
//! `tshark -o esp.enable_encryption_decode:TRUE -o "uat:esp_sa:<line>" ...`.

use ikev2::crypto::{Encr, Integ};
use ikev2::ChildSaInfo;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;

/// Wireshark's names of the algorithms (packet-esp.c).
fn encr_name(e: Encr) -> &'static str {
    match e {
        Encr::AesGcm16 { .. } => "AES-GCM with 16 octet ICV [RFC4106]",
        Encr::AesCbc { .. } => "AES-CBC [RFC3602]",
    }
}

fn integ_name(i: Option<Integ>) -> &'static str {
    match i {
        None => "NULL",
        Some(Integ::HmacSha1_96) => "HMAC-SHA-1-96 [RFC2404]",
        Some(Integ::HmacSha256_128) => "HMAC-SHA-256-128 [RFC4868]",
        Some(Integ::HmacSha384_192) => "HMAC-SHA-384-192 [RFC4868]",
        Some(Integ::HmacSha512_256) => "HMAC-SHA-512-256 [RFC4868]",
    }
}

fn ip(a: SocketAddr) -> String {
    a.ip().to_string()
}

/// One line of the table: `"IPv4","src","dst","0xSPI","encr","0xkey","auth","0xkey"`.
pub fn line(
    src: &str,
    dst: &str,
    spi: u32,
    c: &ChildSaInfo,
    encr_key: &[u8],
    integ_key: &[u8],
) -> String {
    let integ = if integ_key.is_empty() {
        String::new()
    } else {
        format!("0x{}", hex::encode(integ_key))
    };
    format!(
        "\"IPv4\",\"{src}\",\"{dst}\",\"0x{spi:08x}\",\"{}\",\"0x{}\",\"{}\",\"{integ}\"",
        encr_name(c.encr),
        hex::encode(encr_key),
        integ_name(c.integ),
    )
}

/// Appends both directions of a CHILD_SA; a failure is logged, never fatal.
pub fn append(path: &Path, c: &ChildSaInfo) {
    let (l, r) = (ip(c.local), ip(c.remote));
    let out = line(&l, &r, c.spi_out, c, &c.encr_key_out, &c.integ_key_out);
    let inb = line(&r, &l, c.spi_in, c, &c.encr_key_in, &c.integ_key_in);
    use std::os::unix::fs::OpenOptionsExt;
    let res = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| writeln!(f, "{out}\n{inb}"));
    if let Err(e) = res {
        tracing::warn!("esp_keylog {}: {e}", path.display());
    }
}
