//! The versioned binary state format shared by every saved object.
//!
//! ```text
//! offset  size  field
//! 0       8     magic  b"UNISCALE"
//! 8       4     format version (u32 LE), currently FORMAT_VERSION (MIN_FORMAT_VERSION.. read)
//! 12      1     kind (1 = LinUCB, 2 = SharedLinUCB, 3 = Policy)
//! 13      8     payload length in bytes (u64 LE)
//! 21      n     payload (kind-specific; starts with the object's dimensions)
//! 21+n    4     CRC-32 (IEEE) of bytes 0..21+n
//! ```
//! Integers and floats are little-endian. Every read is bounds-checked and every length is
//! validated against what is left, so a truncated or corrupted blob yields `CoreError::State`,
//! never a panic or a huge allocation.

use crate::error::{CoreError, CoreResult};

mod files;
pub use files::{atomic_write, read_file, save_verified, verify_loads};

pub const MAGIC: &[u8; 8] = b"UNISCALE";
pub const FORMAT_VERSION: u32 = 7;
/// Oldest format version this build reads. Version 2 added the pacer's carry-over state to
/// the Policy payload, version 3 the conservative-mode account at its end, version 4 the
/// interaction scale after it, version 5 the interaction prior (`crate::evidence`) after that,
/// version 6 the Policy's cost model in the pooled layout (data statistics without the prior,
/// pooled corrections, per-action observation counts; older cost models are migrated on load by
/// `CostModel::read`), version 7 the Policy's strategy list right after its dimension (the
/// space, cost model and pending decisions index into it; older states load with the four
/// built-in strategies, the list they were written with); the learners' payloads are the same
/// in all seven.
pub const MIN_FORMAT_VERSION: u32 = 1;
const HEADER_LEN: usize = 8 + 4 + 1 + 8;

/// A whole record of `kind` whose payload `write` writes.
pub fn encode(kind: Kind, write: impl FnOnce(&mut Writer)) -> Vec<u8> {
    let mut w = Writer::new();
    write(&mut w);
    w.finish(kind)
}

/// Reads a whole record of `kind` with `read`, which must consume its payload exactly.
pub fn decode<T>(
    bytes: &[u8],
    kind: Kind,
    read: impl FnOnce(&mut Reader<'_>) -> CoreResult<T>,
) -> CoreResult<T> {
    let mut r = Reader::open(bytes, kind)?;
    let v = read(&mut r)?;
    r.finish()?;
    Ok(v)
}

/// An object saved as a whole record of its own kind (the learners; the Policy writes its
/// record itself because its reader depends on the format version). `to_bytes` and
/// `from_bytes` are the same for every such object; only the payload differs.
pub trait Record: Sized {
    const KIND: Kind;

    fn write_payload(&self, w: &mut Writer);

    /// Reads what `write_payload` wrote (also when the object is embedded in a larger record).
    fn read_payload(r: &mut Reader<'_>) -> CoreResult<Self>;

    fn to_bytes(&self) -> Vec<u8> {
        encode(Self::KIND, |w| self.write_payload(w))
    }

    fn from_bytes(bytes: &[u8]) -> CoreResult<Self> {
        decode(bytes, Self::KIND, Self::read_payload)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    LinUcb = 1,
    SharedLinUcb = 2,
    Policy = 3,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::LinUcb => "LinUCB",
            Kind::SharedLinUcb => "SharedLinUCB",
            Kind::Policy => "Policy",
        }
    }
    fn from_u8(v: u8) -> Option<Kind> {
        match v {
            1 => Some(Kind::LinUcb),
            2 => Some(Kind::SharedLinUcb),
            3 => Some(Kind::Policy),
            _ => None,
        }
    }
}

#[derive(Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub fn new() -> Self {
        Writer { buf: Vec::new() }
    }
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    pub fn bool(&mut self, v: bool) {
        self.buf.push(u8::from(v));
    }
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn usize(&mut self, v: usize) {
        self.u64(v as u64);
    }
    pub fn f64(&mut self, v: f64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    /// Length-prefixed float array.
    pub fn f64s(&mut self, v: &[f64]) {
        self.usize(v.len());
        for x in v {
            self.f64(*x);
        }
    }
    pub fn str(&mut self, s: &str) {
        self.usize(s.len());
        self.buf.extend_from_slice(s.as_bytes());
    }
    /// Wraps the payload in the header and checksum.
    pub fn finish(self, kind: Kind) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.buf.len() + 4);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.push(kind as u8);
        out.extend_from_slice(&(self.buf.len() as u64).to_le_bytes());
        out.extend_from_slice(&self.buf);
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }
}

pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Format version of the blob being read.
    pub version: u32,
}

fn bad(msg: impl Into<String>) -> CoreError {
    CoreError::State(msg.into())
}

impl<'a> Reader<'a> {
    /// Validates header, length and checksum, and returns a reader over the payload.
    pub fn open(bytes: &'a [u8], want: Kind) -> CoreResult<Reader<'a>> {
        if bytes.len() < HEADER_LEN + 4 {
            return Err(bad(format!(
                "blob is {} bytes, shorter than the {}-byte header and checksum (truncated?)",
                bytes.len(),
                HEADER_LEN + 4
            )));
        }
        if &bytes[..8] != MAGIC {
            return Err(bad("bad magic: not a UniScale state file"));
        }
        let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        if !(MIN_FORMAT_VERSION..=FORMAT_VERSION).contains(&version) {
            return Err(bad(format!(
                "unsupported format version {version} (this build reads versions \
                 {MIN_FORMAT_VERSION} to {FORMAT_VERSION})"
            )));
        }
        let kind =
            Kind::from_u8(bytes[12]).ok_or_else(|| bad(format!("unknown kind {}", bytes[12])))?;
        if kind != want {
            return Err(bad(format!(
                "blob holds a {} state, not a {}",
                kind.name(),
                want.name()
            )));
        }
        let mut len_bytes = [0u8; 8];
        len_bytes.copy_from_slice(&bytes[13..21]);
        let len = u64::from_le_bytes(len_bytes);
        let expected_total = (HEADER_LEN as u64)
            .checked_add(len)
            .and_then(|v| v.checked_add(4));
        if expected_total != Some(bytes.len() as u64) {
            return Err(bad(format!(
                "header announces a {len}-byte payload but the blob is {} bytes (truncated or padded)",
                bytes.len()
            )));
        }
        let body_end = bytes.len() - 4;
        let stored = u32::from_le_bytes([
            bytes[body_end],
            bytes[body_end + 1],
            bytes[body_end + 2],
            bytes[body_end + 3],
        ]);
        let actual = crc32fast::hash(&bytes[..body_end]);
        if stored != actual {
            return Err(bad(format!(
                "checksum mismatch (stored {stored:#010x}, computed {actual:#010x}): the file is corrupted"
            )));
        }
        Ok(Reader {
            buf: &bytes[HEADER_LEN..body_end],
            pos: 0,
            version,
        })
    }

    fn take(&mut self, n: usize) -> CoreResult<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or_else(|| bad("payload ends early"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    pub fn u8(&mut self) -> CoreResult<u8> {
        Ok(self.take(1)?[0])
    }
    pub fn bool(&mut self) -> CoreResult<bool> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(bad(format!("invalid boolean byte {v}"))),
        }
    }
    pub fn u32(&mut self) -> CoreResult<u32> {
        let s = self.take(4)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    pub fn u64(&mut self) -> CoreResult<u64> {
        let s = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(u64::from_le_bytes(a))
    }
    pub fn usize(&mut self) -> CoreResult<usize> {
        usize::try_from(self.u64()?).map_err(|_| bad("length does not fit in usize"))
    }
    /// A dimension bounded by `max` (guards against absurd allocations from corrupt headers).
    pub fn dim(&mut self, what: &str, max: usize) -> CoreResult<usize> {
        let v = self.usize()?;
        if v > max {
            return Err(bad(format!("{what} = {v} exceeds the limit {max}")));
        }
        Ok(v)
    }
    pub fn f64(&mut self) -> CoreResult<f64> {
        Ok(f64::from_bits(self.u64()?))
    }
    pub fn finite_f64(&mut self, what: &str) -> CoreResult<f64> {
        let v = self.f64()?;
        if v.is_finite() {
            Ok(v)
        } else {
            Err(bad(format!("{what} is not finite")))
        }
    }
    /// Length-prefixed float array of exactly `expect` finite values.
    pub fn f64s(&mut self, what: &str, expect: usize) -> CoreResult<Vec<f64>> {
        let n = self.usize()?;
        if n != expect {
            return Err(bad(format!("{what} has {n} values, expected {expect}")));
        }
        let bytes = self.take(n.checked_mul(8).ok_or_else(|| bad("length overflow"))?)?;
        let mut out = Vec::with_capacity(n);
        for c in bytes.chunks_exact(8) {
            let mut a = [0u8; 8];
            a.copy_from_slice(c);
            let v = f64::from_le_bytes(a);
            if !v.is_finite() {
                return Err(bad(format!("{what} contains a non-finite value")));
            }
            out.push(v);
        }
        Ok(out)
    }
    pub fn str(&mut self) -> CoreResult<String> {
        let n = self.usize()?;
        let s = self.take(n)?;
        String::from_utf8(s.to_vec()).map_err(|_| bad("string is not UTF-8"))
    }
    /// Fails unless at least `bytes` payload bytes remain: lets a reader reject a header that
    /// announces more data than the blob holds *before* allocating for it.
    pub fn expect_at_least(&self, what: &str, bytes: u128) -> CoreResult<()> {
        let left = (self.buf.len() - self.pos) as u128;
        if bytes <= left {
            Ok(())
        } else {
            Err(bad(format!(
                "{what} needs {bytes} more bytes but only {left} remain (corrupt dimensions?)"
            )))
        }
    }

    pub fn finish(&self) -> CoreResult<()> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(bad(format!(
                "{} unexpected trailing payload bytes",
                self.buf.len() - self.pos
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_corruption() {
        let mut w = Writer::new();
        w.usize(3);
        w.f64s(&[1.0, 2.0, 3.0]);
        w.str("hi");
        let bytes = w.finish(Kind::LinUcb);
        let mut r = Reader::open(&bytes, Kind::LinUcb).unwrap();
        assert_eq!(r.usize().unwrap(), 3);
        assert_eq!(r.f64s("v", 3).unwrap(), vec![1.0, 2.0, 3.0]);
        assert_eq!(r.str().unwrap(), "hi");
        r.finish().unwrap();
        // every truncation and every single-byte flip is caught
        for cut in 0..bytes.len() {
            assert!(Reader::open(&bytes[..cut], Kind::LinUcb).is_err());
        }
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x40;
            assert!(
                Reader::open(&b, Kind::LinUcb).is_err(),
                "flip at {i} not caught"
            );
        }
        assert!(Reader::open(&bytes, Kind::Policy).is_err());
    }
}
