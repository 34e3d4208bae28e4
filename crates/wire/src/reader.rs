//! A bounded, panic-free cursor over untrusted bytes, shared by every parser in the
//! workspace (moved down from ikev2 so mip4 and the rest read the same way).
//!
//! Every read checks the bytes left and returns [`Error::Truncated`] instead of
//! indexing past the end; a sub-reader sees only the bytes it was given, so a length
//! field read from the wire can never widen what a nested parser may touch.

use std::net::Ipv4Addr;

use crate::Error;

/// A cursor over untrusted bytes; every read is bounds-checked.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Octets not yet read.
    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// Octets already read.
    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// The next `n` octets; `what` names the field in the error.
    pub fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], Error> {
        let truncated = Error::Truncated {
            layer: what,
            need: n,
            have: self.remaining(),
        };
        let end = self.pos.checked_add(n).ok_or(truncated)?;
        let s = self.buf.get(self.pos..end).ok_or(truncated)?;
        self.pos = end;
        Ok(s)
    }

    /// Skips `n` octets.
    pub fn skip(&mut self, n: usize, what: &'static str) -> Result<(), Error> {
        self.take(n, what).map(|_| ())
    }

    /// Everything not yet read (possibly empty).
    pub fn rest(&mut self) -> &'a [u8] {
        let s = self.buf.get(self.pos..).unwrap_or(&[]);
        self.pos = self.buf.len();
        s
    }

    pub fn u8(&mut self, what: &'static str) -> Result<u8, Error> {
        self.array::<1>(what).map(|[b]| b)
    }

    pub fn u16(&mut self, what: &'static str) -> Result<u16, Error> {
        self.array(what).map(u16::from_be_bytes)
    }

    pub fn u32(&mut self, what: &'static str) -> Result<u32, Error> {
        self.array(what).map(u32::from_be_bytes)
    }

    pub fn u64(&mut self, what: &'static str) -> Result<u64, Error> {
        self.array(what).map(u64::from_be_bytes)
    }

    /// A 4-octet IPv4 address.
    pub fn ipv4(&mut self, what: &'static str) -> Result<Ipv4Addr, Error> {
        self.array::<4>(what).map(Ipv4Addr::from)
    }

    /// A sub-reader over exactly the next `n` octets.
    pub fn sub(&mut self, n: usize, what: &'static str) -> Result<Reader<'a>, Error> {
        Ok(Reader::new(self.take(n, what)?))
    }

    pub fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], Error> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    /// Succeeds only if every octet was read; otherwise the format has trailing data.
    pub fn finish(&self, what: &'static str) -> Result<(), Error> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(Error::Malformed {
                layer: what,
                field: "trailing octets",
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_big_endian_in_order() {
        let b = [
            1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 192, 0, 2, 1,
        ];
        let mut r = Reader::new(&b);
        assert_eq!(r.u8("a"), Ok(1));
        assert_eq!(r.u16("b"), Ok(0x0203));
        assert_eq!(r.u32("c"), Ok(0x0405_0607));
        assert_eq!(r.u64("d"), Ok(0x0809_0a0b_0c0d_0e0f));
        assert_eq!(r.array::<3>("e"), Ok([16, 17, 18]));
        assert_eq!(r.position(), 18);
        assert_eq!(r.ipv4("f"), Ok(Ipv4Addr::new(192, 0, 2, 1)));
        assert!(r.is_empty());
        assert_eq!(r.finish("msg"), Ok(()));
    }

    type Read = fn(&mut Reader<'_>) -> Result<(), Error>;

    #[test]
    fn every_read_past_the_end_is_an_error_and_consumes_nothing() {
        // For each read kind and each shorter buffer, the read fails with the exact
        // need/have and leaves the cursor where it was.
        let widths: [(usize, Read); 7] = [
            (1, |r| r.u8("x").map(drop)),
            (2, |r| r.u16("x").map(drop)),
            (4, |r| r.u32("x").map(drop)),
            (8, |r| r.u64("x").map(drop)),
            (4, |r| r.ipv4("x").map(drop)),
            (5, |r| r.array::<5>("x").map(drop)),
            (3, |r| r.sub(3, "x").map(drop)),
        ];
        for (need, read) in widths {
            for have in 0..need {
                let b = vec![0xAA; have];
                let mut r = Reader::new(&b);
                assert_eq!(
                    read(&mut r),
                    Err(Error::Truncated {
                        layer: "x",
                        need,
                        have
                    })
                );
                assert_eq!(r.remaining(), have);
            }
        }
        let mut r = Reader::new(&[1, 2]);
        assert!(r.take(usize::MAX, "huge").is_err());
        assert!(r.skip(3, "skip").is_err());
        assert_eq!(r.remaining(), 2);
    }

    #[test]
    fn sub_reader_is_bounded_to_its_length() {
        let b = [0, 3, 1, 2, 3, 9, 9];
        let mut r = Reader::new(&b);
        let n = r.u16("len").map(usize::from).unwrap_or(0);
        let mut s = r.sub(n, "body").expect("3 octets are there");
        assert_eq!(s.take(3, "body"), Ok(&[1u8, 2, 3][..]));
        // The sub-reader cannot reach the parent's trailing 9s.
        assert!(s.u8("beyond").is_err());
        assert_eq!(s.finish("body"), Ok(()));
        assert_eq!(r.remaining(), 2);
        assert_eq!(r.rest(), &[9, 9]);
        assert_eq!(r.rest(), &[] as &[u8]);
    }

    #[test]
    fn finish_rejects_trailing_octets() {
        let mut r = Reader::new(&[1, 2, 3]);
        assert_eq!(r.u16("a"), Ok(0x0102));
        assert_eq!(
            r.finish("msg"),
            Err(Error::Malformed {
                layer: "msg",
                field: "trailing octets"
            })
        );
        assert_eq!(r.u8("b"), Ok(3));
        assert_eq!(r.finish("msg"), Ok(()));
    }
}
