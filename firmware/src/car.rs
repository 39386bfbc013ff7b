//! CAR v1 (Content Addressable aRchive) writing and strict reading.
//!
//! CARv1 spec (<https://ipld.io/specs/transport/car/carv1/>):
//! `varint(len(header)) || header || section*`, where the header is dag-cbor
//! `{"roots": [CID, ...], "version": 1}` and each section is `varint(len(cid) + len(block)) ||
//! cid bytes || block`. Varints are unsigned LEB128 (multiformats unsigned-varint).
//!
//! The header is written by hand in canonical dag-cbor (map keys sorted length-first):
//! ```text
//! a2                      map(2)
//!   65 726f6f7473         text(5) "roots"
//!   8n                    array(n)            (n < 24; larger n uses 0x98 n)
//!     d8 2a               tag(42)             (a CID, dag-cbor spec)
//!     58 LL 00 <cid>      bytes(LL): 0x00 (identity multibase prefix) then the binary CID
//!   67 76657273696f6e     text(7) "version"
//!   01                    unsigned(1)
//! ```
//! Reading decodes exactly this shape (either key order, each key once) and rejects anything
//! else; every block is checked against its CID.

use std::io::{Read, Write};

use cid::Cid;
use thiserror::Error;

use crate::unixfs::dagpb::{get_varint, put_varint};
use crate::unixfs::{VerifyError, verify_block};

/// Largest header accepted when reading (bytes).
pub const MAX_HEADER_LEN: u64 = 64 * 1024;
/// Largest section (CID + block) accepted when reading; 2 MiB is above any IPFS block limit.
pub const MAX_SECTION_LEN: u64 = 2 * 1024 * 1024 + 1024;
/// Most roots accepted in a header.
pub const MAX_ROOTS: u64 = 1024;

/// A CAR reading or writing failure.
#[derive(Debug, Error)]
pub enum CarError {
    /// I/O failure of the underlying reader or writer.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A length varint is malformed or over 64 bits.
    #[error("bad varint")]
    BadVarint,
    /// The header length is zero or above [`MAX_HEADER_LEN`].
    #[error("header length {0} out of bounds")]
    HeaderLength(u64),
    /// The header is not the dag-cbor `{roots, version}` map.
    #[error("header is not valid dag-cbor: {0}")]
    HeaderNotDagCbor(&'static str),
    /// The header's version is not 1.
    #[error("unsupported CAR version {0}")]
    Version(u64),
    /// The header lists no roots.
    #[error("header has no roots")]
    NoRoots,
    /// A section length is zero or above [`MAX_SECTION_LEN`].
    #[error("section length {0} out of bounds")]
    SectionLength(u64),
    /// The input ends inside the header or a section.
    #[error("truncated {0}")]
    Truncated(&'static str),
    /// A section's CID does not parse.
    #[error("section CID does not parse")]
    Cid,
    /// A section's block does not match its CID.
    #[error("block {cid} does not match its CID: {source}")]
    BlockMismatch {
        /// The section's CID.
        cid: Cid,
        /// Why.
        #[source]
        source: VerifyError,
    },
}

// ---------------------------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------------------------

/// Encodes the dag-cbor CARv1 header for `roots` (see the module docs for the bytes).
pub fn encode_header(roots: &[Cid]) -> Vec<u8> {
    let mut h = vec![0xa2, 0x65];
    h.extend_from_slice(b"roots");
    cbor_head(&mut h, 4, roots.len() as u64);
    for root in roots {
        h.extend_from_slice(&[0xd8, 0x2a]);
        let bytes = root.to_bytes();
        cbor_head(&mut h, 2, bytes.len() as u64 + 1);
        h.push(0x00);
        h.extend_from_slice(&bytes);
    }
    h.push(0x67);
    h.extend_from_slice(b"version");
    h.push(0x01);
    h
}

/// A CBOR initial byte plus argument, in the shortest form (as dag-cbor requires).
fn cbor_head(out: &mut Vec<u8>, major: u8, v: u64) {
    let m = major << 5;
    if v < 24 {
        out.push(m | v as u8);
    } else if v <= 0xff {
        out.extend_from_slice(&[m | 24, v as u8]);
    } else if v <= 0xffff {
        out.push(m | 25);
        out.extend_from_slice(&(v as u16).to_be_bytes());
    } else if v <= 0xffff_ffff {
        out.push(m | 26);
        out.extend_from_slice(&(v as u32).to_be_bytes());
    } else {
        out.push(m | 27);
        out.extend_from_slice(&v.to_be_bytes());
    }
}

/// Streams a CARv1: the header on creation, then one section per [`CarWriter::write_block`].
#[derive(Debug)]
pub struct CarWriter<W: Write> {
    out: W,
}

impl<W: Write> CarWriter<W> {
    /// Writes the header naming `roots`.
    pub fn new(mut out: W, roots: &[Cid]) -> Result<Self, CarError> {
        let header = encode_header(roots);
        let mut len = Vec::new();
        put_varint(&mut len, header.len() as u64);
        out.write_all(&len)?;
        out.write_all(&header)?;
        Ok(CarWriter { out })
    }

    /// Appends a section `varint(len) || cid || data`.
    pub fn write_block(&mut self, cid: &Cid, data: &[u8]) -> Result<(), CarError> {
        let cid_bytes = cid.to_bytes();
        let mut len = Vec::new();
        put_varint(&mut len, (cid_bytes.len() + data.len()) as u64);
        self.out.write_all(&len)?;
        self.out.write_all(&cid_bytes)?;
        self.out.write_all(data)?;
        Ok(())
    }

    /// Flushes and returns the writer.
    pub fn finish(mut self) -> Result<W, CarError> {
        self.out.flush()?;
        Ok(self.out)
    }
}

impl<W: Write> crate::unixfs::BlockSink for CarWriter<W> {
    fn put_block(&mut self, cid: &Cid, data: &[u8]) -> std::io::Result<()> {
        self.write_block(cid, data).map_err(|e| match e {
            CarError::Io(io) => io,
            other => std::io::Error::other(other.to_string()),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------------------------

/// Reads a CARv1 strictly: bounded lengths, verified blocks.
#[derive(Debug)]
pub struct CarReader<R: Read> {
    input: R,
    roots: Vec<Cid>,
}

/// Reads a varint byte by byte; `Ok(None)` on a clean end of input before the first byte.
fn read_varint<R: Read>(r: &mut R, what: &'static str) -> Result<Option<u64>, CarError> {
    let mut buf = [0u8; 10];
    for i in 0..buf.len() {
        let mut b = [0u8; 1];
        if read_full(r, &mut b)? == 0 {
            return if i == 0 {
                Ok(None)
            } else {
                Err(CarError::Truncated(what))
            };
        }
        if let Some(slot) = buf.get_mut(i) {
            *slot = b[0];
        }
        if b[0] & 0x80 == 0 {
            let (v, _) =
                get_varint(buf.get(..=i).unwrap_or_default()).map_err(|_| CarError::BadVarint)?;
            return Ok(Some(v));
        }
    }
    Err(CarError::BadVarint)
}

/// Fills `buf` as far as the input allows; returns the bytes read.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> Result<usize, CarError> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(buf.get_mut(n..).unwrap_or_default()) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(CarError::Io(e)),
        }
    }
    Ok(n)
}

fn read_exact_len<R: Read>(r: &mut R, len: u64, what: &'static str) -> Result<Vec<u8>, CarError> {
    let len = usize::try_from(len).map_err(|_| CarError::Truncated(what))?;
    let mut buf = vec![0u8; len];
    if read_full(r, &mut buf)? != len {
        return Err(CarError::Truncated(what));
    }
    Ok(buf)
}

impl<R: Read> CarReader<R> {
    /// Reads and validates the header.
    pub fn new(mut input: R) -> Result<Self, CarError> {
        let len = read_varint(&mut input, "header length")?
            .ok_or(CarError::Truncated("header length"))?;
        if len == 0 || len > MAX_HEADER_LEN {
            return Err(CarError::HeaderLength(len));
        }
        let header = read_exact_len(&mut input, len, "header")?;
        let roots = decode_header(&header)?;
        Ok(CarReader { input, roots })
    }

    /// The header's roots.
    pub fn roots(&self) -> &[Cid] {
        &self.roots
    }

    /// The next verified block, or `None` at a clean end of input.
    pub fn next_block(&mut self) -> Result<Option<(Cid, Vec<u8>)>, CarError> {
        let Some(len) = read_varint(&mut self.input, "section length")? else {
            return Ok(None);
        };
        if len == 0 || len > MAX_SECTION_LEN {
            return Err(CarError::SectionLength(len));
        }
        let section = read_exact_len(&mut self.input, len, "section")?;
        let mut cursor = std::io::Cursor::new(section.as_slice());
        let cid = Cid::read_bytes(&mut cursor).map_err(|_| CarError::Cid)?;
        let start = usize::try_from(cursor.position()).map_err(|_| CarError::Cid)?;
        let block = section.get(start..).ok_or(CarError::Cid)?.to_vec();
        verify_block(&cid, &block).map_err(|source| CarError::BlockMismatch { cid, source })?;
        Ok(Some((cid, block)))
    }
}

impl<R: Read> Iterator for CarReader<R> {
    type Item = Result<(Cid, Vec<u8>), CarError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_block().transpose()
    }
}

/// A cursor over the header bytes for the tiny dag-cbor subset the header uses.
struct Cbor<'a> {
    buf: &'a [u8],
}

impl<'a> Cbor<'a> {
    fn byte(&mut self) -> Result<u8, CarError> {
        let (&b, rest) = self
            .buf
            .split_first()
            .ok_or(CarError::HeaderNotDagCbor("truncated"))?;
        self.buf = rest;
        Ok(b)
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8], CarError> {
        let n = usize::try_from(n).map_err(|_| CarError::HeaderNotDagCbor("truncated"))?;
        if n > self.buf.len() {
            return Err(CarError::HeaderNotDagCbor("truncated"));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    /// Reads an initial byte and its argument: `(major type, value)`, shortest form only.
    fn head(&mut self) -> Result<(u8, u64), CarError> {
        let ib = self.byte()?;
        let major = ib >> 5;
        let info = ib & 0x1f;
        let v = match info {
            0..=23 => u64::from(info),
            24..=27 => {
                let n = 1u64 << (info - 24);
                let mut v = 0u64;
                for &b in self.take(n)? {
                    v = (v << 8) | u64::from(b);
                }
                let min = match info {
                    24 => 24,
                    25 => 0x100,
                    26 => 0x1_0000,
                    _ => 0x1_0000_0000,
                };
                if v < min {
                    return Err(CarError::HeaderNotDagCbor("non-minimal integer"));
                }
                v
            }
            _ => return Err(CarError::HeaderNotDagCbor("indefinite or reserved length")),
        };
        Ok((major, v))
    }

    fn text(&mut self) -> Result<&'a [u8], CarError> {
        match self.head()? {
            (3, n) => self.take(n),
            _ => Err(CarError::HeaderNotDagCbor("map key is not a string")),
        }
    }
}

/// Decodes the CARv1 header, returning its roots.
pub fn decode_header(buf: &[u8]) -> Result<Vec<Cid>, CarError> {
    let mut c = Cbor { buf };
    let (major, entries) = c.head()?;
    if major != 5 || entries != 2 {
        return Err(CarError::HeaderNotDagCbor("not a map of two entries"));
    }
    let mut roots = None;
    let mut version = None;
    for _ in 0..2 {
        match c.text()? {
            b"roots" if roots.is_none() => roots = Some(decode_roots(&mut c)?),
            b"version" if version.is_none() => match c.head()? {
                (0, v) => version = Some(v),
                _ => {
                    return Err(CarError::HeaderNotDagCbor(
                        "version is not an unsigned integer",
                    ));
                }
            },
            _ => return Err(CarError::HeaderNotDagCbor("unexpected or repeated key")),
        }
    }
    if !c.buf.is_empty() {
        return Err(CarError::HeaderNotDagCbor("trailing bytes"));
    }
    let version = version.ok_or(CarError::HeaderNotDagCbor("no version"))?;
    if version != 1 {
        return Err(CarError::Version(version));
    }
    let roots = roots.ok_or(CarError::HeaderNotDagCbor("no roots"))?;
    if roots.is_empty() {
        return Err(CarError::NoRoots);
    }
    Ok(roots)
}

fn decode_roots(c: &mut Cbor<'_>) -> Result<Vec<Cid>, CarError> {
    let (major, n) = c.head()?;
    if major != 4 {
        return Err(CarError::HeaderNotDagCbor("roots is not an array"));
    }
    if n > MAX_ROOTS {
        return Err(CarError::HeaderNotDagCbor("too many roots"));
    }
    let mut roots = Vec::new();
    for _ in 0..n {
        if c.head()? != (6, 42) {
            return Err(CarError::HeaderNotDagCbor("root is not tag 42"));
        }
        let bytes = match c.head()? {
            (2, len) => c.take(len)?,
            _ => return Err(CarError::HeaderNotDagCbor("tag 42 is not over bytes")),
        };
        let Some((&0, cid_bytes)) = bytes.split_first() else {
            return Err(CarError::HeaderNotDagCbor(
                "CID lacks the 0x00 multibase prefix",
            ));
        };
        let mut cursor = std::io::Cursor::new(cid_bytes);
        let cid = Cid::read_bytes(&mut cursor).map_err(|_| CarError::Cid)?;
        if cursor.position() != cid_bytes.len() as u64 {
            return Err(CarError::Cid);
        }
        roots.push(cid);
    }
    Ok(roots)
}

/// Writes a CARv1 with one `root` and `blocks` in the given order.
pub fn write_car<'a, W: Write, I>(out: W, root: &Cid, blocks: I) -> Result<W, CarError>
where
    I: IntoIterator<Item = (&'a Cid, &'a [u8])>,
{
    let mut w = CarWriter::new(out, std::slice::from_ref(root))?;
    for (cid, data) in blocks {
        w.write_block(cid, data)?;
    }
    w.finish()
}
