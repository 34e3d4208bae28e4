//! Traffic selector ranges as routes.

use std::net::Ipv4Addr;

/// The smallest set of CIDR prefixes covering `start..=end`.
pub fn range_to_prefixes(start: Ipv4Addr, end: Ipv4Addr) -> Vec<(Ipv4Addr, u8)> {
    let (mut a, b) = (u64::from(u32::from(start)), u64::from(u32::from(end)));
    let mut out = Vec::new();
    while a <= b {
        // Largest block aligned at `a` that does not pass `b`.
        let mut size: u64 = if a == 0 {
            1 << 32
        } else {
            1 << a.trailing_zeros().min(32)
        };
        while a + size - 1 > b {
            size >>= 1;
        }
        let len = 32 - size.trailing_zeros();
        out.push((Ipv4Addr::from(a as u32), len as u8));
        a += size;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        let p = |a: &str, b: &str| range_to_prefixes(a.parse().unwrap(), b.parse().unwrap());
        assert_eq!(
            p("10.1.0.0", "10.1.255.255"),
            vec![(Ipv4Addr::new(10, 1, 0, 0), 16)]
        );
        assert_eq!(
            p("0.0.0.0", "255.255.255.255"),
            vec![(Ipv4Addr::UNSPECIFIED, 0)]
        );
        assert_eq!(
            p("10.0.0.1", "10.0.0.1"),
            vec![(Ipv4Addr::new(10, 0, 0, 1), 32)]
        );
        assert_eq!(
            p("10.0.0.1", "10.0.0.6"),
            vec![
                (Ipv4Addr::new(10, 0, 0, 1), 32),
                (Ipv4Addr::new(10, 0, 0, 2), 31),
                (Ipv4Addr::new(10, 0, 0, 4), 31),
                (Ipv4Addr::new(10, 0, 0, 6), 32)
            ]
        );
        assert!(p("10.0.0.9", "10.0.0.1").is_empty());
    }
}
