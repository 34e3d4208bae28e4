//! The home agent's key file: one mobile node a line, for fleets too large to
//! list as `[[mobile_node]]` tables in `ha.toml`. `key_file` in `[ha]` names a
//! file, or a directory whose `*.keys` files are read in name order. The daemon
//! reads it at start and again on SIGHUP; a reload that fails keeps the nodes
//! in force and logs every bad line.
//!
//! ```text
//! # IDENTITY                       SPI  KEY (hex, >= 128 bits)            [ALGORITHM] [REPLAY]
//! 10.10.0.100                      256  00112233445566778899aabbccddeeff
//! laptop7@corp.example             256  00112233445566778899aabbccddeeff  hmac-md5 nonce
//! 10.10.0.101,laptop8@corp.example 300  0f1e2d3c4b5a69788796a5b4c3d2e1f0  keyed-md5
//! ```
//!
//! IDENTITY is a static home address, a NAI (the node gets a home address from
//! `dynamic_pool`, RFC 2794), or both separated by a comma. KEY is hexadecimal,
//! or `derived`: the first 16 octets of HMAC-SHA256(fleet secret,
//! "mipsec mn-ha key v1:" + the node's NAI, or its home address when it has no
//! NAI), the fleet secret coming from `[ha] key_derivation_secret`; `mipsec
//! derive-key` prints such a key for the node's own configuration. ALGORITHM is
//! `hmac-md5` (default) or `keyed-md5`; REPLAY is `timestamp` (default) or
//! `nonce`. `#` starts a comment; blank lines are ignored.

use crate::config::{AlgorithmName, HaFile, ReplayName};
use mip4::auth::SecurityAssociation;
use mip4::ha::MobileNodeConfig;
use mip4::Ipv4Net;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// Errors are reported at most this many at a time (then a count of the rest).
const MAX_ERRORS: usize = 20;

/// A parsed key file line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyLine {
    pub home_address: Option<Ipv4Addr>,
    pub nai: Option<String>,
    pub spi: u32,
    /// Empty when `derived`.
    pub key: Vec<u8>,
    /// KEY was `derived`: the key comes from the fleet secret.
    pub derived: bool,
    pub algorithm: AlgorithmName,
    pub replay: ReplayName,
}

/// The label that makes derived keys specific to this use.
const DERIVATION_LABEL: &[u8] = b"mipsec mn-ha key v1:";

/// The MN-HA key of the node `identity` (its NAI, or its home address when it
/// has none) derived from the fleet `secret`.
pub fn derive_key(secret: &[u8], identity: &str) -> [u8; 16] {
    use hmac::{Hmac, Mac};
    // HMAC takes a key of any length: new_from_slice cannot fail here.
    let Ok(mut m) = <Hmac<sha2::Sha256> as Mac>::new_from_slice(secret) else {
        return [0; 16];
    };
    m.update(DERIVATION_LABEL);
    m.update(identity.as_bytes());
    let full = m.finalize().into_bytes();
    let mut k = [0u8; 16];
    k.copy_from_slice(&full[..16]);
    k
}

/// Reads a fleet secret file: hexadecimal, at least 32 octets.
pub fn read_secret(path: &Path) -> Result<Vec<u8>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let s = hex::decode(text.trim())
        .map_err(|e| format!("{}: the secret is not hexadecimal: {e}", path.display()))?;
    if s.len() < 32 {
        return Err(format!(
            "{}: the secret has {} octets; at least 32 (64 hex digits) are needed",
            path.display(),
            s.len()
        ));
    }
    Ok(s)
}

/// Where a node was defined, for error messages.
#[derive(Debug, Clone)]
struct Origin(String);

/// Parses one line (without comment); `Ok(None)` for a blank line.
pub fn parse_line(line: &str) -> Result<Option<KeyLine>, String> {
    let line = line.split('#').next().unwrap_or("");
    let mut words = line.split_whitespace();
    let Some(id) = words.next() else {
        return Ok(None);
    };
    let (mut home_address, mut nai) = (None, None);
    for part in id.split(',') {
        if let Ok(a) = part.parse::<Ipv4Addr>() {
            if home_address.replace(a).is_some() {
                return Err(format!("identity {id:?} has two home addresses"));
            }
        } else if part.contains('@') && !part.starts_with('@') && part.len() <= 255 {
            if nai.replace(part.to_string()).is_some() {
                return Err(format!("identity {id:?} has two NAIs"));
            }
        } else {
            return Err(format!(
                "identity {part:?} is neither an IPv4 home address nor a NAI (user@realm)"
            ));
        }
    }
    let spi = words.next().ok_or("missing SPI and key")?;
    let spi: u32 = spi
        .parse()
        .map_err(|_| format!("SPI {spi:?} is not a number (0..4294967295)"))?;
    if spi < 256 {
        return Err(format!(
            "SPI {spi} is reserved (RFC 5944 section 1.10: 0-255 are not for security associations)"
        ));
    }
    let key = words.next().ok_or("missing key")?;
    let derived = key == "derived";
    let key = if derived {
        Vec::new()
    } else {
        hex::decode(key).map_err(|e| format!("key is not hexadecimal (or `derived`): {e}"))?
    };
    if !derived && key.len() < 16 {
        return Err(format!(
            "key has {} octets; RFC 5944 requires at least 128 bits (32 hex digits)",
            key.len()
        ));
    }
    let (mut algorithm, mut replay) = (None, None);
    for w in words {
        let slot_taken = match w {
            "hmac-md5" => algorithm.replace(AlgorithmName::HmacMd5).is_some(),
            "keyed-md5" => algorithm.replace(AlgorithmName::KeyedMd5).is_some(),
            "timestamp" => replay.replace(ReplayName::Timestamp).is_some(),
            "nonce" => replay.replace(ReplayName::Nonce).is_some(),
            other => {
                return Err(format!(
                    "unknown option {other:?} (hmac-md5, keyed-md5, timestamp or nonce)"
                ))
            }
        };
        if slot_taken {
            return Err(format!("option {w:?} conflicts with an earlier one"));
        }
    }
    Ok(Some(KeyLine {
        home_address,
        nai,
        spi,
        key,
        derived,
        algorithm: algorithm.unwrap_or_default(),
        replay: replay.unwrap_or_default(),
    }))
}

/// The files `path` names: itself, or a directory's `*.keys` in name order.
fn files(path: &Path) -> Result<Vec<PathBuf>, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut v = Vec::new();
    for e in std::fs::read_dir(path).map_err(|e| format!("{}: {e}", path.display()))? {
        let p = e.map_err(|e| format!("{}: {e}", path.display()))?.path();
        if p.extension().is_some_and(|x| x == "keys") && p.is_file() {
            v.push(p);
        }
    }
    v.sort();
    Ok(v)
}

/// The home address pool: the usable addresses of `dynamic_pool` (without its
/// network and broadcast addresses when it has more than two), as (first, count).
pub fn pool(file: &HaFile) -> Option<(Ipv4Addr, u32)> {
    let net = file.ha.dynamic_pool?.0;
    let size = 1u64 << (32 - u32::from(net.prefix_len()));
    let first = u32::from(net.addr());
    Some(if size > 2 {
        (Ipv4Addr::from(first + 1), (size - 2) as u32)
    } else {
        (Ipv4Addr::from(first), size as u32)
    })
}

/// Resolves a relative `key_file` and `key_derivation_secret` against the
/// directory of `ha.toml`.
pub fn resolve(file: &mut HaFile, config: &Path) {
    let dir = config.parent().unwrap_or(Path::new("."));
    for p in [&mut file.ha.key_file, &mut file.ha.key_derivation_secret] {
        if let Some(k) = p.as_ref().filter(|k| k.is_relative()) {
            *p = Some(dir.join(k));
        }
    }
}

/// Every mobile node of the configuration: the `[[mobile_node]]` tables of
/// `config` then the key file's lines, checked together. The error lists every
/// bad line (up to 20), each with its file and line.
pub fn load_nodes(file: &HaFile, config: &Path) -> Result<Vec<MobileNodeConfig>, String> {
    let h = &file.ha;
    let mut errors: Vec<String> = Vec::new();
    if let Some(p) = h.dynamic_pool {
        if !h.home_network.0.contains(p.0.addr())
            || p.0.prefix_len() < h.home_network.0.prefix_len()
        {
            errors.push(format!(
                "{}: [ha] dynamic_pool {} is not inside home_network {}",
                config.display(),
                p.0,
                h.home_network.0
            ));
        }
    }
    let mut lines: Vec<(Origin, KeyLine)> = file
        .mobile_nodes
        .iter()
        .enumerate()
        .map(|(i, m)| {
            (
                Origin(format!("{}: [[mobile_node]] #{}", config.display(), i + 1)),
                KeyLine {
                    home_address: m.home_address,
                    nai: m.nai.clone(),
                    spi: m.spi,
                    key: m.key.0.clone(),
                    derived: false,
                    algorithm: m.algorithm,
                    replay: m.replay,
                },
            )
        })
        .collect();
    if let Some(path) = &h.key_file {
        match files(path) {
            Err(e) => errors.push(format!("key_file {e}")),
            Ok(fs) => {
                for f in fs {
                    let text = match std::fs::read_to_string(&f) {
                        Ok(t) => t,
                        Err(e) => {
                            errors.push(format!("{}: {e}", f.display()));
                            continue;
                        }
                    };
                    for (n, line) in text.lines().enumerate() {
                        let at = format!("{}:{}", f.display(), n + 1);
                        match parse_line(line) {
                            Ok(Some(k)) => lines.push((Origin(at), k)),
                            Ok(None) => {}
                            Err(e) => errors.push(format!("{at}: {e}")),
                        }
                    }
                }
            }
        }
    }
    if lines.iter().any(|(_, k)| k.derived) {
        match h.key_derivation_secret.as_deref().map(read_secret) {
            Some(Ok(secret)) => {
                for (_, k) in lines.iter_mut().filter(|(_, k)| k.derived) {
                    let id = match (&k.nai, k.home_address) {
                        (Some(n), _) => n.clone(),
                        (None, Some(a)) => a.to_string(),
                        (None, None) => String::new(),
                    };
                    k.key = derive_key(&secret, &id).to_vec();
                }
            }
            Some(Err(e)) => errors.push(format!("key_derivation_secret {e}")),
            None => {
                if let Some((Origin(at), _)) = lines.iter().find(|(_, k)| k.derived) {
                    errors.push(format!(
                        "{at}: key `derived` needs [ha] key_derivation_secret in {}",
                        config.display()
                    ));
                }
            }
        }
    }
    let nodes = check(
        &lines,
        h.address,
        h.home_network.0,
        pool(file).is_some(),
        &mut errors,
    );
    if errors.is_empty() {
        return Ok(nodes);
    }
    let mut msg = String::new();
    for e in errors.iter().take(MAX_ERRORS) {
        let _ = writeln!(msg, "{e}");
    }
    if errors.len() > MAX_ERRORS {
        let _ = writeln!(msg, "... and {} more errors", errors.len() - MAX_ERRORS);
    }
    Err(msg.trim_end().to_string())
}

fn check(
    lines: &[(Origin, KeyLine)],
    ha: Ipv4Addr,
    home_network: Ipv4Net,
    have_pool: bool,
    errors: &mut Vec<String>,
) -> Vec<MobileNodeConfig> {
    let mut homes: HashMap<Ipv4Addr, &str> = HashMap::new();
    let mut nais: HashMap<&str, &str> = HashMap::new();
    let mut out = Vec::with_capacity(lines.len());
    for (Origin(at), k) in lines {
        if let Some(a) = k.home_address {
            if !home_network.contains(a) {
                errors.push(format!(
                    "{at}: home address {a} is not inside home_network {home_network}"
                ));
                continue;
            }
            if a == ha {
                errors.push(format!(
                    "{at}: home address {a} is the home agent's own address"
                ));
                continue;
            }
            if let Some(first) = homes.insert(a, at) {
                errors.push(format!(
                    "{at}: home address {a} is already defined at {first}"
                ));
                continue;
            }
        }
        match &k.nai {
            Some(n) => {
                if let Some(first) = nais.insert(n, at) {
                    errors.push(format!("{at}: NAI {n} is already defined at {first}"));
                    continue;
                }
                if k.home_address.is_none() && !have_pool {
                    errors.push(format!(
                        "{at}: NAI {n} has no home address and [ha] dynamic_pool is not set"
                    ));
                    continue;
                }
            }
            None if k.home_address.is_none() => {
                errors.push(format!("{at}: needs a home address or a NAI"));
                continue;
            }
            None => {}
        }
        out.push(MobileNodeConfig {
            home_addr: k.home_address,
            nai: k.nai.clone(),
            sas: vec![SecurityAssociation::new(k.spi, k.algorithm.into(), &k.key)],
            replay: k.replay.into(),
        });
    }
    out
}

/// Re-reads `ha.toml` and its key file on a thread of its own, so that a
/// million-line file (seconds of parsing and key setup) never stalls the event
/// loop; the loop takes the result from [`Reloader::done`].
pub struct Reloader {
    config: PathBuf,
    tx: tokio::sync::mpsc::UnboundedSender<Result<Vec<MobileNodeConfig>, String>>,
    rx: tokio::sync::mpsc::UnboundedReceiver<Result<Vec<MobileNodeConfig>, String>>,
}

impl Reloader {
    pub fn new(config: PathBuf) -> Reloader {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        Reloader { config, tx, rx }
    }

    /// Starts a reload in the background.
    pub fn request(&self) {
        let (config, tx) = (self.config.clone(), self.tx.clone());
        let spawned = std::thread::Builder::new()
            .name("key-reload".into())
            .spawn(move || {
                let r = HaFile::load(&config)
                    .map_err(|e| e.to_string())
                    .and_then(|mut f| {
                        resolve(&mut f, &config);
                        load_nodes(&f, &config)
                    });
                let _ = tx.send(r);
            });
        if let Err(e) = spawned {
            let _ = self.tx.send(Err(format!("cannot start the reload: {e}")));
        }
    }

    /// The next finished reload: the new node set, or every error found.
    pub async fn done(&mut self) -> Result<Vec<MobileNodeConfig>, String> {
        match self.rx.recv().await {
            Some(r) => r,
            // Unreachable while `self.tx` lives; wait forever rather than spin.
            None => std::future::pending().await,
        }
    }
}

/// Gives the memory of a large key file's parse (its text, lines and indexes,
/// a few hundred octets a node) back to the system instead of keeping it in the
/// allocator's free lists for the life of the daemon.
pub fn release_parse_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free heap memory; no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
#[path = "keyfile_tests.rs"]
mod tests;
