//! The ESP SAs of the tunnel: every inbound SA still alive (old ones stay until their
//! Delete) and the one outbound SA in use.

use std::time::Instant;

use esp::{InboundSa, OutboundSa, RandomIv, SaConfig, Sad, Suite};
use ikev2::crypto::{Encr, Integ};
use ikev2::ChildSaInfo;
use rand::SeedableRng;

/// Inbound SAs by SPI plus the current outbound SA.
#[derive(Debug)]
pub struct EspSas {
    pub sad: Sad,
    out: Option<OutboundSa>,
    /// The CHILD_SA (inbound SPI) the outbound SA belongs to.
    out_child: u32,
    udp_encap: bool,
    rng: rand::rngs::StdRng,
}

impl EspSas {
    pub fn new(rng: rand::rngs::StdRng) -> Self {
        EspSas {
            sad: Sad::new(),
            out: None,
            out_child: 0,
            udp_encap: true,
            rng,
        }
    }

    /// Forget every SA.
    pub fn clear(&mut self) {
        self.sad = Sad::new();
        self.out = None;
    }

    /// Install both directions of a CHILD_SA. With `make_current` (a new or rekeyed SA) the
    /// outbound SA replaces the one in use; the old inbound SA stays until `remove`.
    pub fn install(
        &mut self,
        now: Instant,
        c: &ChildSaInfo,
        make_current: bool,
    ) -> Result<(), String> {
        let suite = suite_of(c)
            .ok_or_else(|| format!("CHILD_SA {:08x}: unsupported ESP suite", c.spi_in))?;
        let cin = SaConfig::new(c.spi_in, suite).with_esn(c.esn);
        let inbound = InboundSa::new(cin, &c.encr_key_in, &c.integ_key_in, now)
            .map_err(|e| format!("inbound SA {:08x}: {e}", c.spi_in))?;
        self.sad.insert(inbound);
        if !make_current && self.out.is_some() {
            return Ok(());
        }
        let cout = SaConfig::new(c.spi_out, suite).with_esn(c.esn);
        let out = if suite.is_aead() {
            OutboundSa::new(cout, &c.encr_key_out, &c.integ_key_out, now)
        } else {
            let rng = rand::rngs::StdRng::from_rng(&mut self.rng)
                .unwrap_or_else(|_| rand::rngs::StdRng::from_entropy());
            OutboundSa::with_iv_source(
                cout,
                &c.encr_key_out,
                &c.integ_key_out,
                now,
                Box::new(RandomIv(rng)),
            )
        }
        .map_err(|e| format!("outbound SA {:08x}: {e}", c.spi_out))?;
        self.out = Some(out);
        self.out_child = c.spi_in;
        self.udp_encap = c.udp_encap;
        Ok(())
    }

    /// A CHILD_SA was deleted. Returns true when it was the one carrying outbound traffic
    /// (the caller then installs a remaining CHILD_SA, if any).
    pub fn remove(&mut self, spi_in: u32, spi_out: u32) -> bool {
        self.sad.remove(spi_in);
        if self.out.as_ref().is_some_and(|o| o.spi() == spi_out) {
            self.out = None;
            return true;
        }
        false
    }

    pub fn out_mut(&mut self) -> Option<&mut OutboundSa> {
        self.out.as_mut()
    }

    pub fn has_out(&self) -> bool {
        self.out.is_some()
    }

    /// Outbound SPI in use.
    pub fn out_spi(&self) -> Option<u32> {
        self.out.as_ref().map(OutboundSa::spi)
    }

    /// Inbound SPI of the CHILD_SA carrying outbound traffic.
    pub fn out_child(&self) -> u32 {
        self.out_child
    }

    pub fn udp_encap(&self) -> bool {
        self.udp_encap
    }

    /// MOBIKE may switch encapsulation on or off.
    pub fn set_udp_encap(&mut self, on: bool) {
        self.udp_encap = on;
    }
}

/// The two lines (inbound, outbound) of Wireshark's `esp_sa` table for a CHILD_SA,
/// with wildcard addresses (NATs and MOBIKE change them; the SPI tells the SAs apart).
/// None for a suite Wireshark's names are not given here for.
pub fn esp_sa_lines(c: &ChildSaInfo) -> Option<[String; 2]> {
    let (encr, auth) = match (c.encr, c.integ) {
        (Encr::AesGcm16 { .. }, None) => ("AES-GCM with 16 octet ICV [RFC4106]", "NULL"),
        (Encr::AesCbc { .. }, Some(Integ::HmacSha1_96)) => {
            ("AES-CBC [RFC3602]", "HMAC-SHA-1-96 [RFC2404]")
        }
        (Encr::AesCbc { .. }, Some(Integ::HmacSha256_128)) => {
            ("AES-CBC [RFC3602]", "HMAC-SHA-256-128 [RFC4868]")
        }
        _ => return None,
    };
    let line = |spi: u32, ek: &[u8], ik: &[u8]| {
        let ik = if ik.is_empty() {
            String::new()
        } else {
            format!("0x{}", hex::encode(ik))
        };
        format!(
            "\"IPv4\",\"*\",\"*\",\"0x{spi:08x}\",\"{encr}\",\"0x{}\",\"{auth}\",\"{ik}\"",
            hex::encode(ek)
        )
    };
    Some([
        line(c.spi_in, &c.encr_key_in, &c.integ_key_in),
        line(c.spi_out, &c.encr_key_out, &c.integ_key_out),
    ])
}

fn suite_of(c: &ChildSaInfo) -> Option<Suite> {
    Some(match (c.encr, c.integ) {
        (Encr::AesGcm16 { key: 16 }, None) => Suite::AesGcm128,
        (Encr::AesGcm16 { key: 32 }, None) => Suite::AesGcm256,
        (Encr::AesCbc { key: 16 }, Some(Integ::HmacSha1_96)) => Suite::AesCbc128HmacSha1,
        (Encr::AesCbc { key: 32 }, Some(Integ::HmacSha1_96)) => Suite::AesCbc256HmacSha1,
        (Encr::AesCbc { key: 16 }, Some(Integ::HmacSha256_128)) => Suite::AesCbc128HmacSha256,
        (Encr::AesCbc { key: 32 }, Some(Integ::HmacSha256_128)) => Suite::AesCbc256HmacSha256,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    /// A CHILD_SA as the Initiator reports it, and the gateway's mirror image.
    fn child(spi_in: u32, spi_out: u32, seed: u8, encr: Encr, integ: Option<Integ>) -> ChildSaInfo {
        let ek = match encr {
            Encr::AesGcm16 { key } | Encr::AesCbc { key } => {
                key + if integ.is_none() { 4 } else { 0 }
            }
        };
        let ik = if integ.is_some() { 32 } else { 0 };
        let a: SocketAddr = "192.0.2.1:4500".parse().unwrap();
        let b: SocketAddr = "192.0.2.2:4500".parse().unwrap();
        ChildSaInfo {
            spi_in,
            spi_out,
            encr,
            integ,
            esn: false,
            encr_key_in: vec![seed; ek],
            integ_key_in: vec![seed ^ 1; ik],
            encr_key_out: vec![seed ^ 2; ek],
            integ_key_out: vec![seed ^ 3; ik],
            ts_local: vec![],
            ts_remote: vec![],
            tia: None,
            dns: vec![],
            local: a,
            remote: b,
            udp_encap: true,
        }
    }

    fn mirror(c: &ChildSaInfo) -> ChildSaInfo {
        let mut m = c.clone();
        m.spi_in = c.spi_out;
        m.spi_out = c.spi_in;
        m.encr_key_in = c.encr_key_out.clone();
        m.integ_key_in = c.integ_key_out.clone();
        m.encr_key_out = c.encr_key_in.clone();
        m.integ_key_out = c.integ_key_in.clone();
        m
    }

    fn sas() -> EspSas {
        EspSas::new(rand::rngs::StdRng::seed_from_u64(1))
    }

    /// Seal with `from`'s outbound SA and open with `to`'s SAD.
    fn pass(from: &mut EspSas, to: &mut EspSas, now: Instant) -> Result<Vec<u8>, String> {
        let inner: Vec<u8> = (0..60u8).map(|i| if i == 0 { 0x45 } else { i }).collect();
        let mut pkt = Vec::new();
        from.out_mut()
            .ok_or("no outbound SA")?
            .seal(now, esp::NEXT_HEADER_IPV4, &inner, &mut pkt)
            .map_err(|e| e.to_string())?;
        let o = to.sad.open(now, &mut pkt).map_err(|e| e.to_string())?;
        Ok(pkt[o.payload].to_vec())
    }

    /// The key log's lines are Wireshark's esp_sa table: inbound SPI with the inbound
    /// key (salt included for GCM), outbound likewise, wildcard addresses.
    #[test]
    fn esp_sa_lines_are_wiresharks_format() {
        let c = child(
            0x0102_0304,
            0xa0b0_c0d0,
            7,
            Encr::AesGcm16 { key: 32 },
            None,
        );
        let [i, o] = esp_sa_lines(&c).unwrap();
        let k = |b: u8| "0x".to_string() + &hex::encode([b; 36]);
        assert_eq!(
            i,
            format!(
                r#""IPv4","*","*","0x01020304","AES-GCM with 16 octet ICV [RFC4106]","{}","NULL","""#,
                k(7)
            )
        );
        assert!(
            o.starts_with(r#""IPv4","*","*","0xa0b0c0d0","#) && o.contains(&k(5)),
            "{o}"
        );
        let cbc = child(
            1,
            2,
            1,
            Encr::AesCbc { key: 16 },
            Some(Integ::HmacSha256_128),
        );
        let [i, _] = esp_sa_lines(&cbc).unwrap();
        assert!(
            i.ends_with(&format!(
                r#""HMAC-SHA-256-128 [RFC4868]","0x{}""#,
                hex::encode([0u8; 32])
            )),
            "{i}"
        );
    }

    #[test]
    fn rekey_keeps_old_inbound_until_delete() {
        let now = Instant::now();
        let (mut us, mut gw) = (sas(), sas());
        let a = child(0x100, 0x200, 1, Encr::AesGcm16 { key: 32 }, None);
        us.install(now, &a, true).unwrap();
        gw.install(now, &mirror(&a), true).unwrap();
        assert_eq!(pass(&mut us, &mut gw, now).unwrap().len(), 60);
        // The gateway rekeys: we install B; the gateway still sends on A for a while.
        let b = child(0x101, 0x201, 9, Encr::AesGcm16 { key: 32 }, None);
        us.install(now, &b, true).unwrap();
        assert_eq!(us.out_spi(), Some(0x201));
        assert_eq!(us.out_child(), 0x101);
        assert!(
            pass(&mut gw, &mut us, now).is_ok(),
            "old inbound SA still open"
        );
        gw.install(now, &mirror(&b), true).unwrap();
        assert!(pass(&mut us, &mut gw, now).is_ok());
        assert!(pass(&mut gw, &mut us, now).is_ok());
        // Delete of A: its inbound SA goes, outbound is unaffected.
        assert!(!us.remove(0x100, 0x200));
        assert_eq!(us.sad.len(), 1);
        assert!(us.has_out());
        // A late packet on A is now an unknown SPI, counted.
        let mut late = sas();
        late.install(now, &mirror(&a), true).unwrap();
        assert!(pass(&mut late, &mut us, now).unwrap_err().contains("SPI"));
        assert_eq!(us.sad.drops().total(), 1);
        // Delete of B (the one in use): nothing left to send with.
        assert!(us.remove(0x101, 0x201));
        assert!(!us.has_out() && us.sad.is_empty());
    }

    #[test]
    fn fallback_install_does_not_replace_outbound() {
        let now = Instant::now();
        let mut us = sas();
        let a = child(0x1001, 0x1002, 1, Encr::AesGcm16 { key: 16 }, None);
        let b = child(0x1003, 0x1004, 2, Encr::AesGcm16 { key: 16 }, None);
        us.install(now, &a, true).unwrap();
        us.install(now, &b, false).unwrap();
        assert_eq!(us.out_spi(), Some(0x1002));
        assert_eq!(us.sad.len(), 2);
    }

    #[test]
    fn cbc_suite_and_unsupported_suite() {
        let now = Instant::now();
        let (mut us, mut gw) = (sas(), sas());
        let c = child(
            0x1005,
            0x1006,
            3,
            Encr::AesCbc { key: 16 },
            Some(Integ::HmacSha256_128),
        );
        us.install(now, &c, true).unwrap();
        gw.install(now, &mirror(&c), true).unwrap();
        assert!(pass(&mut us, &mut gw, now).is_ok());
        let bad = child(
            0x1007,
            0x1008,
            4,
            Encr::AesCbc { key: 24 },
            Some(Integ::HmacSha256_128),
        );
        assert!(us
            .install(now, &bad, true)
            .unwrap_err()
            .contains("unsupported"));
        assert_eq!(
            us.out_spi(),
            Some(0x1006),
            "a failed install leaves the SA in use"
        );
    }
}
