//! Low-level byte encoding: little-endian fixed-width integers, LEB128 varints, zigzag and
//! truncated BLAKE3 checksums. Decoding never panics: every read is bounds-checked and reports a
//! [`DecodeError`], which callers turn into a [`crate::PlogError`] with file, chunk and offset.

use std::fmt;

/// Why a byte slice could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// Needed `need` bytes at position `at`, but the buffer ends first.
    Short { at: usize, need: usize },
    /// A varint longer than 10 bytes or overflowing u64.
    BadVarint { at: usize },
    /// Anything else, with a description.
    Invalid { at: usize, detail: String },
}

impl DecodeError {
    pub(crate) fn invalid(at: usize, detail: impl Into<String>) -> Self {
        Self::Invalid { at, detail: detail.into() }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Short { at, need } => write!(f, "data ends at byte {at} where {need} more bytes were expected"),
            Self::BadVarint { at } => write!(f, "malformed varint at byte {at}"),
            Self::Invalid { at, detail } => write!(f, "{detail} (at byte {at})"),
        }
    }
}

/// Append-only encoder into a `Vec<u8>`.
pub(crate) trait Put {
    fn put_u8(&mut self, v: u8);
    fn put_u32(&mut self, v: u32);
    fn put_u64(&mut self, v: u64);
    fn put_var(&mut self, v: u64);
    fn put_bytes(&mut self, b: &[u8]);
    /// `u32` length followed by the bytes (lengths are checked by the callers).
    fn put_str32(&mut self, s: &str) {
        self.put_u32(s.len() as u32);
        self.put_bytes(s.as_bytes());
    }
}

impl Put for Vec<u8> {
    fn put_u8(&mut self, v: u8) {
        self.push(v);
    }
    fn put_u32(&mut self, v: u32) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn put_u64(&mut self, v: u64) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    /// Unsigned LEB128: 7 bits per byte, low bits first, high bit set on all but the last byte.
    #[inline]
    fn put_var(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.push(v as u8);
    }
    fn put_bytes(&mut self, b: &[u8]) {
        self.extend_from_slice(b);
    }
}

/// Zigzag mapping of signed to unsigned (0, -1, 1, -2, ... → 0, 1, 2, 3, ...).
pub(crate) fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// Inverse of [`zigzag`].
pub(crate) fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Bounds-checked cursor over a byte slice.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError::Short { at: self.pos, need: n });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.bytes(N)?);
        Ok(a)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.bytes(1)?[0])
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// Unsigned LEB128, at most 10 bytes, rejecting bits beyond 64.
    #[inline]
    pub(crate) fn var(&mut self) -> Result<u64, DecodeError> {
        let start = self.pos;
        let mut v: u64 = 0;
        for i in 0..10 {
            let b = self.u8()?;
            if i == 9 && b > 1 {
                return Err(DecodeError::BadVarint { at: start });
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError::BadVarint { at: start })
    }

    /// A varint used as a length or count: it must not exceed the bytes left (every counted item
    /// takes at least one byte), so a damaged count can never cause a huge allocation.
    pub(crate) fn var_len(&mut self, what: &str) -> Result<usize, DecodeError> {
        let at = self.pos;
        let v = self.var()?;
        if v > self.remaining() as u64 {
            return Err(DecodeError::invalid(at, format!("{what} {v} exceeds the {} bytes left", self.remaining())));
        }
        Ok(v as usize)
    }

    /// `u32` length followed by that many bytes of UTF-8, at most `max` bytes.
    pub(crate) fn str32(&mut self, what: &str, max: usize) -> Result<String, DecodeError> {
        let at = self.pos;
        let n = self.u32()? as usize;
        if n > max {
            return Err(DecodeError::invalid(at, format!("{what} of {n} bytes exceeds the limit of {max}")));
        }
        let b = self.bytes(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| DecodeError::invalid(at, format!("{what} is not UTF-8")))
    }
}

/// BLAKE3 of the concatenation of `parts`, truncated to `N` bytes (N <= 32).
pub(crate) fn checksum<const N: usize>(parts: &[&[u8]]) -> [u8; N] {
    let mut h = blake3::Hasher::new();
    for p in parts {
        h.update(p);
    }
    let mut out = [0u8; N];
    out.copy_from_slice(&h.finalize().as_bytes()[..N]);
    out
}

/// Printable rendering of a magic found in a file, for error messages.
pub(crate) fn show_magic(b: &[u8]) -> String {
    b.iter().map(|&c| if c.is_ascii_graphic() { (c as char).to_string() } else { format!("\\x{c:02x}") }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_round_trip_and_limits() {
        for v in [0u64, 1, 127, 128, 300, u32::MAX as u64, u64::MAX - 1, u64::MAX] {
            let mut b = Vec::new();
            b.put_var(v);
            let mut r = Reader::new(&b);
            assert_eq!(r.var().unwrap(), v);
            assert_eq!(r.remaining(), 0);
        }
        assert!(Reader::new(&[0xff; 11]).var().is_err());
        let mut over = vec![0xff; 9];
        over.push(0x02);
        assert!(Reader::new(&over).var().is_err());
        assert!(matches!(Reader::new(&[0x80]).var(), Err(DecodeError::Short { .. })));
    }

    #[test]
    fn zigzag_round_trip() {
        for v in [0i64, -1, 1, -2, 63, -64, i64::MIN, i64::MAX] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
        assert_eq!(zigzag(-1), 1);
        assert_eq!(zigzag(1), 2);
    }

    #[test]
    fn lengths_are_checked_against_the_buffer() {
        let mut b = Vec::new();
        b.put_var(5);
        b.put_bytes(b"abc");
        assert!(Reader::new(&b).var_len("length").is_err());
        let mut b = Vec::new();
        b.put_u32(3);
        b.put_bytes(&[0xff, 0xfe, 0xfd]);
        assert!(Reader::new(&b).str32("name", 10).is_err());
        assert!(Reader::new(&b).str32("name", 2).is_err());
    }
}
