//! Hand-written dag-pb (`PBNode`/`PBLink`) and UnixFS `Data` protobuf codecs.
//!
//! Why hand-written rather than a crate such as `ipld-dagpb`: the two messages are tiny, kubo's
//! exact bytes depend on details (link fields always written, `Name` present even when empty, no
//! packed `blocksizes`) that are easiest to guarantee by writing them out, and the decoder must be
//! strict and panic-free on hostile input with typed errors, which a serde-based codec does not give.
//!
//! Specs:
//! * dag-pb: <https://ipld.io/specs/codecs/dag-pb/spec/> — `PBNode { Links (2) repeated PBLink;
//!   Data (1) optional bytes }`, **encoded Links first, then Data**; `PBLink { Hash (1) bytes;
//!   Name (2) string; Tsize (3) uint64 }` encoded in field order. Decoders reject out-of-order
//!   or duplicate fields, unknown fields and wrong wire types.
//! * UnixFS v1: <https://github.com/ipfs/specs/blob/main/UNIXFS.md> — `Data { Type (1) DataType;
//!   Data (2) bytes; filesize (3) uint64; blocksizes (4) repeated uint64; hashType (5);
//!   fanout (6); mode (7); mtime (8) }` (proto2, so `blocksizes` is not packed on the wire; both
//!   forms are accepted when decoding).
//! * boxo `merkledag` `ProtoNode` serialisation (the bytes kubo produces): every link carries
//!   `Hash`, `Name` (possibly `""`) and `Tsize`.

use cid::Cid;
use thiserror::Error;

/// Largest accepted varint: 10 bytes (64 bits), per the protobuf encoding.
const MAX_VARINT_LEN: usize = 10;

/// Protobuf wire type 0 (varint).
const WT_VARINT: u8 = 0;
/// Protobuf wire type 1 (64-bit).
const WT_I64: u8 = 1;
/// Protobuf wire type 2 (length-delimited).
const WT_LEN: u8 = 2;
/// Protobuf wire type 5 (32-bit).
const WT_I32: u8 = 5;

/// A dag-pb or UnixFS decoding failure.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// A varint ran past the end of the input or past 64 bits.
    #[error("bad varint")]
    BadVarint,
    /// A length-delimited field claimed more bytes than are left.
    #[error("truncated field")]
    Truncated,
    /// A field number / wire type pair the schema does not allow.
    #[error("unexpected field {field} with wire type {wire_type}")]
    UnexpectedField {
        /// Protobuf field number.
        field: u64,
        /// Protobuf wire type.
        wire_type: u8,
    },
    /// Fields out of the order the dag-pb spec requires, or repeated where they must not be.
    #[error("field {0} out of order or duplicated")]
    FieldOrder(u64),
    /// A `PBLink` without its required `Hash`.
    #[error("link without a Hash")]
    MissingHash,
    /// A `PBLink` `Hash` that is not a CID.
    #[error("link Hash is not a valid CID")]
    BadCid,
    /// A `PBLink` `Name` that is not UTF-8.
    #[error("link Name is not UTF-8")]
    BadName,
    /// UnixFS `Data` without its required `Type`.
    #[error("UnixFS Data without a Type")]
    MissingType,
    /// A UnixFS `Type` value outside the enum.
    #[error("unknown UnixFS Type {0}")]
    UnknownType(u64),
}

// ---------------------------------------------------------------------------------------------
// Varints and tags
// ---------------------------------------------------------------------------------------------

/// Appends `v` as an unsigned LEB128 varint (protobuf, multiformats unsigned-varint, CAR).
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads an unsigned LEB128 varint from the front of `buf`, returning the value and its length.
pub fn get_varint(buf: &[u8]) -> Result<(u64, usize), DecodeError> {
    let mut v: u64 = 0;
    for (i, &b) in buf.iter().enumerate().take(MAX_VARINT_LEN) {
        let part = u64::from(b & 0x7f);
        if i == MAX_VARINT_LEN - 1 && part > 1 {
            return Err(DecodeError::BadVarint);
        }
        v |= part << (7 * i);
        if b & 0x80 == 0 {
            return Ok((v, i + 1));
        }
    }
    Err(DecodeError::BadVarint)
}

fn put_tag(out: &mut Vec<u8>, field: u64, wire_type: u8) {
    put_varint(out, (field << 3) | u64::from(wire_type));
}

fn put_bytes_field(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    put_tag(out, field, WT_LEN);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn put_varint_field(out: &mut Vec<u8>, field: u64, v: u64) {
    put_tag(out, field, WT_VARINT);
    put_varint(out, v);
}

/// A cursor over protobuf fields.
struct Fields<'a> {
    buf: &'a [u8],
}

/// One decoded field value.
enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

impl<'a> Fields<'a> {
    fn next_field(&mut self) -> Option<Result<(u64, u8, Value<'a>), DecodeError>> {
        if self.buf.is_empty() {
            return None;
        }
        Some(self.read())
    }

    fn take_varint(&mut self) -> Result<u64, DecodeError> {
        let (v, n) = get_varint(self.buf)?;
        self.buf = self.buf.get(n..).ok_or(DecodeError::Truncated)?;
        Ok(v)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.buf.len() {
            return Err(DecodeError::Truncated);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn read(&mut self) -> Result<(u64, u8, Value<'a>), DecodeError> {
        let key = self.take_varint()?;
        let field = key >> 3;
        let wire_type = (key & 7) as u8;
        if field == 0 {
            return Err(DecodeError::UnexpectedField { field, wire_type });
        }
        let value = match wire_type {
            WT_VARINT => Value::Varint(self.take_varint()?),
            WT_LEN => {
                let len = self.take_varint()?;
                let len = usize::try_from(len).map_err(|_| DecodeError::Truncated)?;
                Value::Bytes(self.take(len)?)
            }
            WT_I64 => {
                self.take(8)?;
                Value::Fixed
            }
            WT_I32 => {
                self.take(4)?;
                Value::Fixed
            }
            _ => return Err(DecodeError::UnexpectedField { field, wire_type }),
        };
        Ok((field, wire_type, value))
    }
}

// ---------------------------------------------------------------------------------------------
// dag-pb
// ---------------------------------------------------------------------------------------------

/// A dag-pb `PBLink`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PbLink {
    /// `Hash` (field 1): the linked block's CID.
    pub hash: Cid,
    /// `Name` (field 2); kubo writes `Some("")` for file chunks.
    pub name: Option<String>,
    /// `Tsize` (field 3): cumulative size of the linked subtree's encoded blocks.
    pub tsize: Option<u64>,
}

/// A dag-pb `PBNode`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PbNode {
    /// `Links` (field 2), in order.
    pub links: Vec<PbLink>,
    /// `Data` (field 1), usually a UnixFS `Data` message.
    pub data: Option<Vec<u8>>,
}

impl PbNode {
    /// Encodes the node canonically: all `Links` first, then `Data` (dag-pb spec, "Encoding").
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut link_buf = Vec::new();
        for link in &self.links {
            link_buf.clear();
            put_bytes_field(&mut link_buf, 1, &link.hash.to_bytes());
            if let Some(name) = &link.name {
                put_bytes_field(&mut link_buf, 2, name.as_bytes());
            }
            if let Some(tsize) = link.tsize {
                put_varint_field(&mut link_buf, 3, tsize);
            }
            put_bytes_field(&mut out, 2, &link_buf);
        }
        if let Some(data) = &self.data {
            put_bytes_field(&mut out, 1, data);
        }
        out
    }

    /// Decodes a dag-pb block strictly (dag-pb spec, "Decoding": only fields 1 and 2, Links
    /// before Data, at most one Data; links with Hash, Name, Tsize in that order).
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut node = PbNode::default();
        let mut fields = Fields { buf };
        while let Some(f) = fields.next_field() {
            match f? {
                (2, _, Value::Bytes(b)) => {
                    if node.data.is_some() {
                        return Err(DecodeError::FieldOrder(2));
                    }
                    node.links.push(decode_link(b)?);
                }
                (1, _, Value::Bytes(b)) => {
                    if node.data.is_some() {
                        return Err(DecodeError::FieldOrder(1));
                    }
                    node.data = Some(b.to_vec());
                }
                (field, wire_type, _) => {
                    return Err(DecodeError::UnexpectedField { field, wire_type });
                }
            }
        }
        Ok(node)
    }
}

fn decode_link(buf: &[u8]) -> Result<PbLink, DecodeError> {
    let mut fields = Fields { buf };
    let mut hash = None;
    let mut name = None;
    let mut tsize = None;
    let mut last = 0u64;
    while let Some(f) = fields.next_field() {
        let (field, wire_type, value) = f?;
        if field <= last {
            return Err(DecodeError::FieldOrder(field));
        }
        last = field;
        match (field, value) {
            (1, Value::Bytes(b)) => {
                let mut cursor = std::io::Cursor::new(b);
                let cid = Cid::read_bytes(&mut cursor).map_err(|_| DecodeError::BadCid)?;
                if cursor.position() != b.len() as u64 {
                    return Err(DecodeError::BadCid);
                }
                hash = Some(cid);
            }
            (2, Value::Bytes(b)) => {
                name = Some(String::from_utf8(b.to_vec()).map_err(|_| DecodeError::BadName)?);
            }
            (3, Value::Varint(v)) => tsize = Some(v),
            (field, _) => return Err(DecodeError::UnexpectedField { field, wire_type }),
        }
    }
    Ok(PbLink {
        hash: hash.ok_or(DecodeError::MissingHash)?,
        name,
        tsize,
    })
}

// ---------------------------------------------------------------------------------------------
// UnixFS Data
// ---------------------------------------------------------------------------------------------

/// UnixFS `DataType` (UNIXFS.md, "Data Format").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataType {
    /// `Raw = 0`: a leaf holding bytes (legacy non-raw-leaf importers).
    Raw,
    /// `Directory = 1`.
    Directory,
    /// `File = 2`.
    File,
    /// `Metadata = 3`.
    Metadata,
    /// `Symlink = 4`.
    Symlink,
    /// `HAMTShard = 5`.
    HamtShard,
}

impl DataType {
    /// The protobuf enum value.
    pub fn code(self) -> u64 {
        match self {
            DataType::Raw => 0,
            DataType::Directory => 1,
            DataType::File => 2,
            DataType::Metadata => 3,
            DataType::Symlink => 4,
            DataType::HamtShard => 5,
        }
    }

    fn from_code(v: u64) -> Result<Self, DecodeError> {
        Ok(match v {
            0 => DataType::Raw,
            1 => DataType::Directory,
            2 => DataType::File,
            3 => DataType::Metadata,
            4 => DataType::Symlink,
            5 => DataType::HamtShard,
            other => return Err(DecodeError::UnknownType(other)),
        })
    }
}

/// The UnixFS `Data` message (the fields this crate uses; `hashType`, `fanout`, `mode` and
/// `mtime` are skipped when decoding and never written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixFsData {
    /// `Type` (field 1).
    pub data_type: DataType,
    /// `Data` (field 2): inline file bytes.
    pub data: Option<Vec<u8>>,
    /// `filesize` (field 3): total file bytes below this node.
    pub filesize: Option<u64>,
    /// `blocksizes` (field 4): file bytes below each link, in link order.
    pub blocksizes: Vec<u64>,
}

impl UnixFsData {
    /// Encodes in field-number order, `blocksizes` unpacked (proto2), as boxo does.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        put_varint_field(&mut out, 1, self.data_type.code());
        if let Some(data) = &self.data {
            put_bytes_field(&mut out, 2, data);
        }
        if let Some(fs) = self.filesize {
            put_varint_field(&mut out, 3, fs);
        }
        for &b in &self.blocksizes {
            put_varint_field(&mut out, 4, b);
        }
        out
    }

    /// Decodes a UnixFS `Data` message; unknown fields with valid wire types are skipped.
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut fields = Fields { buf };
        let mut data_type = None;
        let mut data = None;
        let mut filesize = None;
        let mut blocksizes = Vec::new();
        while let Some(f) = fields.next_field() {
            match f? {
                (1, _, Value::Varint(v)) => data_type = Some(DataType::from_code(v)?),
                (2, _, Value::Bytes(b)) => data = Some(b.to_vec()),
                (3, _, Value::Varint(v)) => filesize = Some(v),
                (4, _, Value::Varint(v)) => blocksizes.push(v),
                (4, _, Value::Bytes(packed)) => {
                    let mut rest = packed;
                    while !rest.is_empty() {
                        let (v, n) = get_varint(rest)?;
                        blocksizes.push(v);
                        rest = rest.get(n..).ok_or(DecodeError::Truncated)?;
                    }
                }
                (field @ 1..=4, wire_type, _) => {
                    return Err(DecodeError::UnexpectedField { field, wire_type });
                }
                _ => {}
            }
        }
        Ok(UnixFsData {
            data_type: data_type.ok_or(DecodeError::MissingType)?,
            data,
            filesize,
            blocksizes,
        })
    }
}
