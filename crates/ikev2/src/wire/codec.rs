//! Bounded, panic-free reader and a small writer with length back-patching.

use super::ParseError;

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

    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    pub fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], ParseError> {
        let end = self.pos.checked_add(n).ok_or(ParseError::Truncated {
            what,
            need: n,
            have: self.remaining(),
        })?;
        match self.buf.get(self.pos..end) {
            Some(s) => {
                self.pos = end;
                Ok(s)
            }
            None => Err(ParseError::Truncated {
                what,
                need: n,
                have: self.remaining(),
            }),
        }
    }

    pub fn rest(&mut self) -> &'a [u8] {
        let s = self.buf.get(self.pos..).unwrap_or(&[]);
        self.pos = self.buf.len();
        s
    }

    pub fn u8(&mut self, what: &'static str) -> Result<u8, ParseError> {
        let s = self.take(1, what)?;
        Ok(s.first().copied().unwrap_or(0))
    }

    pub fn u16(&mut self, what: &'static str) -> Result<u16, ParseError> {
        let s = self.take(2, what)?;
        let mut a = [0u8; 2];
        a.copy_from_slice(s);
        Ok(u16::from_be_bytes(a))
    }

    pub fn u32(&mut self, what: &'static str) -> Result<u32, ParseError> {
        let s = self.take(4, what)?;
        let mut a = [0u8; 4];
        a.copy_from_slice(s);
        Ok(u32::from_be_bytes(a))
    }

    pub fn u64(&mut self, what: &'static str) -> Result<u64, ParseError> {
        let s = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(u64::from_be_bytes(a))
    }

    /// A sub-reader over the next `n` bytes.
    pub fn sub(&mut self, n: usize, what: &'static str) -> Result<Reader<'a>, ParseError> {
        Ok(Reader::new(self.take(n, what)?))
    }

    pub fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], ParseError> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
}

/// Append helpers over a `Vec<u8>`.
pub trait Writer {
    fn put_u8(&mut self, v: u8);
    fn put_u16(&mut self, v: u16);
    fn put_u32(&mut self, v: u32);
    fn put_u64(&mut self, v: u64);
    /// Reserve a 16-bit length at `at` (relative position of the field), run `f`, then patch
    /// the length with the number of bytes from `start` to the end.
    fn patch_u16(&mut self, at: usize, len: usize);
}

impl Writer for Vec<u8> {
    fn put_u8(&mut self, v: u8) {
        self.push(v);
    }
    fn put_u16(&mut self, v: u16) {
        self.extend_from_slice(&v.to_be_bytes());
    }
    fn put_u32(&mut self, v: u32) {
        self.extend_from_slice(&v.to_be_bytes());
    }
    fn put_u64(&mut self, v: u64) {
        self.extend_from_slice(&v.to_be_bytes());
    }
    fn patch_u16(&mut self, at: usize, len: usize) {
        let v = u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes();
        if let Some(s) = self.get_mut(at..at + 2) {
            s.copy_from_slice(&v);
        }
    }
}
