//! QUIC variable-length integers (RFC 9000 §16).
//!
//! The two most significant bits of the first byte give the length (1, 2, 4 or 8 bytes); the
//! rest is the value in network byte order, so values up to 2^62 − 1 can be encoded.

/// The largest value a varint can carry (2^62 − 1).
pub const MAX: u64 = (1 << 62) - 1;

/// Why a varint could not be read or written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VarIntError {
    /// The buffer ended inside the integer.
    #[error("buffer ends inside a variable-length integer")]
    Truncated,
    /// The value does not fit in 62 bits.
    #[error("value {0} exceeds the varint maximum 2^62-1")]
    TooLarge(u64),
}

/// Number of bytes `v` takes on the wire (RFC 9000 §16, table 4).
///
/// Values above [`MAX`] report 8; [`write()`] rejects them.
pub const fn size(v: u64) -> usize {
    if v < (1 << 6) {
        1
    } else if v < (1 << 14) {
        2
    } else if v < (1 << 30) {
        4
    } else {
        8
    }
}

/// Reads a varint from the start of `buf`, returning the value and the bytes consumed.
pub fn read(buf: &[u8]) -> Result<(u64, usize), VarIntError> {
    let first = *buf.first().ok_or(VarIntError::Truncated)?;
    let len = 1usize << (first >> 6);
    let bytes = buf.get(..len).ok_or(VarIntError::Truncated)?;
    let mut v = u64::from(first & 0x3f);
    for b in &bytes[1..] {
        v = (v << 8) | u64::from(*b);
    }
    Ok((v, len))
}

/// Writes `v` at the start of `buf` in its shortest encoding and returns the bytes written.
///
/// # Errors
/// [`VarIntError::TooLarge`] above [`MAX`]; [`VarIntError::Truncated`] if `buf` is too short.
pub fn write(buf: &mut [u8], v: u64) -> Result<usize, VarIntError> {
    if v > MAX {
        return Err(VarIntError::TooLarge(v));
    }
    let len = size(v);
    let out = buf.get_mut(..len).ok_or(VarIntError::Truncated)?;
    let tag: u8 = match len {
        1 => 0x00,
        2 => 0x40,
        4 => 0x80,
        _ => 0xc0,
    };
    let be = v.to_be_bytes();
    out.copy_from_slice(&be[8 - len..]);
    out[0] |= tag;
    Ok(len)
}

/// A cursor reading varints and byte strings from a buffer, never panicking.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Starts reading at the beginning of `buf`.
    pub const fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }
    /// Bytes consumed so far.
    pub const fn position(&self) -> usize {
        self.pos
    }
    /// Bytes left.
    pub fn remaining(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }
    /// Reads one varint.
    pub fn varint(&mut self) -> Result<u64, VarIntError> {
        let (v, n) = read(self.remaining())?;
        self.pos += n;
        Ok(v)
    }
    /// Reads one byte.
    pub fn u8(&mut self) -> Result<u8, VarIntError> {
        let b = *self.remaining().first().ok_or(VarIntError::Truncated)?;
        self.pos += 1;
        Ok(b)
    }
    /// Reads `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], VarIntError> {
        let rest = self.remaining();
        let out = rest.get(..n).ok_or(VarIntError::Truncated)?;
        self.pos += n;
        Ok(out)
    }
}

/// A cursor writing varints and bytes into a buffer.
#[derive(Debug)]
pub struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl<'a> Writer<'a> {
    /// Starts writing at the beginning of `buf`.
    pub fn new(buf: &'a mut [u8]) -> Self {
        Self { buf, pos: 0 }
    }
    /// Bytes written so far.
    pub const fn position(&self) -> usize {
        self.pos
    }
    /// Writes one varint.
    pub fn varint(&mut self, v: u64) -> Result<(), VarIntError> {
        let n = write(&mut self.buf[self.pos..], v)?;
        self.pos += n;
        Ok(())
    }
    /// Writes one byte.
    pub fn u8(&mut self, b: u8) -> Result<(), VarIntError> {
        let slot = self.buf.get_mut(self.pos).ok_or(VarIntError::Truncated)?;
        *slot = b;
        self.pos += 1;
        Ok(())
    }
    /// Writes a byte string.
    pub fn bytes(&mut self, b: &[u8]) -> Result<(), VarIntError> {
        let out = self
            .buf
            .get_mut(self.pos..self.pos + b.len())
            .ok_or(VarIntError::Truncated)?;
        out.copy_from_slice(b);
        self.pos += b.len();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rfc9000_examples() {
        // RFC 9000 appendix A.1 sample encodings.
        let cases: [(&[u8], u64); 4] = [
            (
                &[0xc2, 0x19, 0x7c, 0x5e, 0xff, 0x14, 0xe8, 0x8c],
                151_288_809_941_952_652,
            ),
            (&[0x9d, 0x7f, 0x3e, 0x7d], 494_878_333),
            (&[0x7b, 0xbd], 15_293),
            (&[0x25], 37),
        ];
        for (bytes, v) in cases {
            assert_eq!(read(bytes), Ok((v, bytes.len())));
            let mut out = [0u8; 8];
            assert_eq!(write(&mut out, v), Ok(bytes.len()));
            assert_eq!(&out[..bytes.len()], bytes);
        }
        // Non-minimal encodings are accepted on read (§16).
        assert_eq!(read(&[0x40, 0x25]), Ok((37, 2)));
    }

    #[test]
    fn errors() {
        assert_eq!(read(&[]), Err(VarIntError::Truncated));
        assert_eq!(read(&[0x80, 1]), Err(VarIntError::Truncated));
        assert_eq!(
            write(&mut [0u8; 8], MAX + 1),
            Err(VarIntError::TooLarge(MAX + 1))
        );
        assert_eq!(write(&mut [0u8; 1], 64), Err(VarIntError::Truncated));
    }

    proptest! {
        #[test]
        fn round_trip(v in 0..=MAX) {
            let mut buf = [0u8; 8];
            let n = write(&mut buf, v).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(n, size(v));
            prop_assert_eq!(read(&buf[..n]), Ok((v, n)));
        }

        #[test]
        fn read_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..10)) {
            let _ = read(&bytes);
        }
    }
}
