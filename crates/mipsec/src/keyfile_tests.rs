use super::*;
use crate::config::parse;

const HA: &str = r#"
[ha]
address = "10.10.0.1"
home_network = "10.10.0.0/16"
dynamic_pool = "10.10.128.0/24"

[[mobile_node]]
home_address = "10.10.0.100"
spi = 256
key = "00112233445566778899aabbccddeeff"
"#;

const K: &str = "00112233445566778899aabbccddeeff";

fn ha_with(keys: &Path, extra: &str) -> HaFile {
    let text = HA.replace(
        "[ha]\n",
        &format!("[ha]\nkey_file = {:?}\n{extra}", keys.display().to_string()),
    );
    parse(Path::new("ha.toml"), &text).unwrap()
}

#[test]
fn lines_parse_with_defaults_and_options() {
    assert_eq!(parse_line("  # only a comment").unwrap(), None);
    assert_eq!(parse_line("").unwrap(), None);
    let k = parse_line(&format!("10.10.0.5 300 {K}  # laptop"))
        .unwrap()
        .unwrap();
    assert_eq!(k.home_address, Some(Ipv4Addr::new(10, 10, 0, 5)));
    assert_eq!((k.nai, k.spi, k.key.len()), (None, 300, 16));
    assert_eq!(
        (k.algorithm, k.replay),
        (AlgorithmName::HmacMd5, ReplayName::Timestamp)
    );
    let k = parse_line(&format!("10.10.0.6,a@corp.example 256 {K} nonce keyed-md5"))
        .unwrap()
        .unwrap();
    assert_eq!(k.nai.as_deref(), Some("a@corp.example"));
    assert_eq!(
        (k.algorithm, k.replay),
        (AlgorithmName::KeyedMd5, ReplayName::Nonce)
    );
}

#[test]
fn every_bad_line_is_named_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("nodes.keys");
    let body = [
        format!("10.10.0.5 256 {K}"),            // 1 good
        "10.10.0.6 256".to_string(),             // 2 missing key
        format!("10.10.0.7 1 {K}"),              // 3 reserved SPI
        format!("10.10.0.8 256 {}", &K[..30]),   // 4 short key
        format!("nobody 256 {K}"),               // 5 not an identity
        format!("10.10.0.5 256 {K}"),            // 6 duplicate of 1
        format!("10.99.0.9 256 {K}"),            // 7 outside the home network
        format!("10.10.0.10 256 {K} sha1"),      // 8 unknown option
        String::new(),                           // 9 blank
        format!("b@corp.example 256 {K}"),       // 10 good (pool)
        format!("b@corp.example 257 {K}"),       // 11 duplicate NAI
        format!("10.10.0.100 256 {K}"),          // 12 duplicate of the inline node
        format!("10.10.0.1 256 {K}"),            // 13 the HA itself
        format!("10.10.0.11 x {K}"),             // 14 bad SPI
        format!("10.10.0.12 256 zz{}", &K[2..]), // 15 not hex
    ]
    .join("\n");
    std::fs::write(&f, body).unwrap();
    let e = load_nodes(&ha_with(&f, ""), Path::new("ha.toml")).unwrap_err();
    let at = |n: usize| format!("{}:{n}: ", f.display());
    for n in [2, 3, 4, 5, 6, 7, 8, 11, 12, 13, 14, 15] {
        assert!(e.contains(&at(n)), "line {n} not named in:\n{e}");
    }
    for n in [1, 9, 10] {
        assert!(!e.contains(&at(n)), "good line {n} named in:\n{e}");
    }
    assert!(
        e.contains("already defined at ha.toml: [[mobile_node]] #1"),
        "{e}"
    );
    assert!(
        e.contains(&format!(
            "already defined at {}",
            at(1).trim_end_matches(": ")
        )),
        "{e}"
    );
    assert!(e.contains("128 bits") && e.contains("reserved"), "{e}");
}

#[test]
fn a_directory_of_key_files_and_nai_nodes_need_a_pool() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.keys"), format!("10.10.0.5 256 {K}\n")).unwrap();
    std::fs::write(
        dir.path().join("b.keys"),
        format!("c@corp.example 256 {K}\n"),
    )
    .unwrap();
    std::fs::write(dir.path().join("README"), "not a key file").unwrap();
    let f = ha_with(dir.path(), "");
    let nodes = load_nodes(&f, Path::new("ha.toml")).unwrap();
    assert_eq!(nodes.len(), 3);
    assert_eq!(nodes[2].nai.as_deref(), Some("c@corp.example"));
    assert_eq!(pool(&f), Some((Ipv4Addr::new(10, 10, 128, 1), 254)));

    // Without a pool, the NAI-only line is refused, naming its place.
    let text = HA
        .replace("dynamic_pool = \"10.10.128.0/24\"\n", "")
        .replace(
            "[ha]\n",
            &format!("[ha]\nkey_file = {:?}\n", dir.path().display().to_string()),
        );
    let f: HaFile = parse(Path::new("ha.toml"), &text).unwrap();
    let e = load_nodes(&f, Path::new("ha.toml")).unwrap_err();
    assert!(
        e.contains("b.keys:1: NAI c@corp.example has no home address and [ha] dynamic_pool"),
        "{e}"
    );

    // A pool outside the home network and a missing key file are errors.
    let text = HA
        .replace("10.10.128.0/24", "10.20.0.0/24")
        .replace("[ha]\n", "[ha]\nkey_file = \"/nonexistent/keys\"\n");
    let f: HaFile = parse(Path::new("ha.toml"), &text).unwrap();
    let e = load_nodes(&f, Path::new("ha.toml")).unwrap_err();
    assert!(e.contains("dynamic_pool 10.20.0.0/24 is not inside"), "{e}");
    assert!(e.contains("/nonexistent/keys"), "{e}");
}

#[test]
fn relative_key_file_is_next_to_ha_toml() {
    let mut f: HaFile = parse(
        Path::new("ha.toml"),
        &HA.replace("[ha]\n", "[ha]\nkey_file = \"nodes.keys\"\n"),
    )
    .unwrap();
    resolve(&mut f, Path::new("/etc/mipsec/ha.toml"));
    assert_eq!(
        f.ha.key_file.as_deref(),
        Some(Path::new("/etc/mipsec/nodes.keys"))
    );
}

/// Vectors computed with Python's hmac/hashlib (an independent implementation):
/// hmac.new(bytes(range(32)), b"mipsec mn-ha key v1:" + id, sha256).hexdigest()[:32]
#[test]
fn derived_keys_match_the_documented_scheme() {
    let secret: Vec<u8> = (0..32).collect();
    assert_eq!(
        hex::encode(derive_key(&secret, "laptop7@corp.example")),
        "8a3e336bcb7bd73202082e9bbd59c59a"
    );
    assert_eq!(
        hex::encode(derive_key(&secret, "10.10.0.5")),
        "c55988d8343b37d5d804cbb484b96ed0"
    );
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("nodes.keys");
    std::fs::write(
        &keys,
        "10.10.0.5 256 derived\nlaptop7@corp.example 256 derived nonce\n",
    )
    .unwrap();
    // Without a secret: refused, naming the first derived line.
    let e = load_nodes(&ha_with(&keys, ""), Path::new("ha.toml")).unwrap_err();
    assert!(
        e.contains(&format!(
            "{}:1: key `derived` needs [ha] key_derivation_secret",
            keys.display()
        )),
        "{e}"
    );
    // A short secret is refused too.
    let sec = dir.path().join("fleet.secret");
    std::fs::write(&sec, "00112233").unwrap();
    let extra = format!("key_derivation_secret = {:?}\n", sec.display().to_string());
    let e = load_nodes(&ha_with(&keys, &extra), Path::new("ha.toml")).unwrap_err();
    assert!(e.contains("at least 32"), "{e}");
    // With it, the derived keys are the ones a node computes with `mipsec derive-key`.
    std::fs::write(&sec, hex::encode(&secret) + "\n").unwrap();
    let nodes = load_nodes(&ha_with(&keys, &extra), Path::new("ha.toml")).unwrap();
    let want = SecurityAssociation::new(
        256,
        mip4::auth::Algorithm::HmacMd5,
        &derive_key(&secret, "laptop7@corp.example"),
    );
    let msg = b"registration";
    let got = nodes
        .iter()
        .find(|n| n.nai.as_deref() == Some("laptop7@corp.example"))
        .unwrap();
    assert_eq!(got.sas[0].compute(msg), want.compute(msg));
}
