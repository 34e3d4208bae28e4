//! A minimal pcap (libpcap classic format) writer, so that tests and the lab can
//! hand what mipsec puts on the wire to independent dissectors such as tshark.

/// Link type of the records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkType {
    /// Records are Ethernet frames.
    Ethernet = 1,
    /// Records are bare IPv4/IPv6 packets.
    Raw = 101,
}

/// Accumulates a pcap file in memory.
#[derive(Debug, Clone)]
pub struct PcapWriter {
    buf: Vec<u8>,
    link: LinkType,
}

impl PcapWriter {
    pub fn new(link: LinkType) -> Self {
        let mut buf = Vec::new();
        buf.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        buf.extend_from_slice(&2u16.to_le_bytes());
        buf.extend_from_slice(&4u16.to_le_bytes());
        buf.extend_from_slice(&0i32.to_le_bytes());
        buf.extend_from_slice(&0u32.to_le_bytes());
        buf.extend_from_slice(&65535u32.to_le_bytes());
        buf.extend_from_slice(&(link as u32).to_le_bytes());
        PcapWriter { buf, link }
    }

    /// Appends one record with timestamp `micros` since the epoch.
    pub fn record(&mut self, micros: u64, data: &[u8]) {
        let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
        self.buf
            .extend_from_slice(&((micros / 1_000_000) as u32).to_le_bytes());
        self.buf
            .extend_from_slice(&((micros % 1_000_000) as u32).to_le_bytes());
        self.buf.extend_from_slice(&len.to_le_bytes());
        self.buf.extend_from_slice(&len.to_le_bytes());
        self.buf.extend_from_slice(data);
    }

    /// Appends an IPv4 packet, framed for the writer's link type.
    pub fn ipv4(&mut self, micros: u64, packet: &[u8]) {
        match self.link {
            LinkType::Raw => self.record(micros, packet),
            LinkType::Ethernet => {
                let mut f = Vec::with_capacity(14 + packet.len());
                f.extend_from_slice(&[0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00]);
                f.extend_from_slice(packet);
                self.record(micros, &f);
            }
        }
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }
}
