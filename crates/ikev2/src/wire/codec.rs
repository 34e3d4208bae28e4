//! The bounded, panic-free reader (from the `wire` crate) and a small writer with
//! length back-patching.

use super::ParseError;

/// The bounded reader shared with every other parser (moved to the `wire` crate);
/// its [`::wire::Error`] converts into [`ParseError`] with `?`.
pub use ::wire::reader::Reader;

impl From<::wire::Error> for ParseError {
    fn from(e: ::wire::Error) -> Self {
        match e {
            ::wire::Error::Truncated { layer, need, have } => ParseError::Truncated {
                what: layer,
                need,
                have,
            },
            ::wire::Error::Malformed { layer, .. } => ParseError::BadValue { what: layer },
            ::wire::Error::TooLong { layer, .. } => ParseError::BadLength { what: layer },
        }
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
