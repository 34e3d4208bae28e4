//! Attaches the kernel IP-in-IP encapsulator to a TUN device by hand, for
//! measurements: `ipip_encap TUN INNER_DST SOURCE CARE_OF OUT_DEV` (root; run it in
//! the namespace of the device, e.g. with `ip netns exec`). Prints the counters
//! every second until interrupted.
use netio::ipip_encap::IpipEncap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let [tun, dst, src, coa, out] = a.as_slice() else {
        return Err("usage: ipip_encap TUN INNER_DST SOURCE CARE_OF OUT_DEV".into());
    };
    let idx = |name: &str| -> Result<u32, Box<dyn std::error::Error>> {
        Ok(
            std::fs::read_to_string(format!("/sys/class/net/{name}/ifindex"))?
                .trim()
                .parse()?,
        )
    };
    let enc = IpipEncap::attach(idx(tun)?, 1024)?;
    enc.set(
        dst.parse::<Ipv4Addr>()?,
        src.parse()?,
        coa.parse()?,
        idx(out)?,
        Instant::now() + Duration::from_secs(3600),
    )?;
    loop {
        std::thread::sleep(Duration::from_secs(1));
        println!("{:?}", enc.counters()?);
    }
}
