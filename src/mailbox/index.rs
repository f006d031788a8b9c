//! The spool index file: what the last session learned about a spool, so the next one scans only new mail.
//!
//! One file per spool, `state_dir/<spool key>.index` (the key of
//! `state::key`: the spool's resolved directory and file name, nothing
//! about the host or the device, so a `state_dir` shared between cluster
//! nodes works). Encoding and decoding here are pure; `index_check` decides
//! whether a decoded index still describes the spool.
//!
//! Layout (integers little-endian):
//!
//! ```text
//! magic "IRONPOPX" | version u32 | path_len u32 | path bytes
//! inode u64 | indexed_len u64 (L: the prefix the entries describe)
//! stat size u64 | mtime s,ns i64 i64 | ctime s,ns i64 i64
//! stat taken_at i64 | full_scan_at i64 | count u64
//! count × entry: from_offset u64 | content_offset u64 | content_len u64
//!                | size u64 | uid digest [16] | raw hash u128
//!                | retrieved_at i64
//! checksum u64 over every byte before it
//! ```
//!
//! A message's end is the next message's `from_offset` (the last one's is
//! L). The checksum is word-wise FNV-1a: every step is a bijection of the
//! state, so any single changed 8-byte word (any flipped bit or byte) is
//! always detected, and random damage with probability 1 − 2⁻⁶⁴. It is not
//! a MAC: whoever can write `state_dir` is trusted anyway (it holds the
//! session locks and journals).

use super::scan::ScannedMessage;

const MAGIC: &[u8; 8] = b"IRONPOPX";
/// 3: the stat is the one taken before the indexed bytes were read (2 took
/// it when the index was written, which could hide an edit made meanwhile).
const VERSION: u32 = 3;
/// Bytes per message entry.
pub const ENTRY_LEN: usize = 4 * 8 + 16 + 16 + 8;

/// A timestamp as seconds and nanoseconds (mtime, ctime).
pub type Stamp = (i64, i64);

/// One message as the index remembers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub message: ScannedMessage,
    /// Unix time of the first complete RETR in a session that ended with
    /// QUIT; 0: never retrieved. EXPIRE counts from here.
    pub retrieved_at: i64,
}

/// What the stat of the spool said just before the bytes the index
/// describes were read (after an update: right after this server wrote
/// them, under the delivery locks). Any write changes mtime and ctime, so
/// a spool that has not grown must still show exactly this stat; a spool
/// that grew says nothing about its old bytes, and gets more samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatHint {
    pub size: u64,
    pub mtime: Stamp,
    pub ctime: Stamp,
    /// Unix time (the real clock) the stat was taken: a change within the
    /// same clock tick may leave mtime and ctime as they were ("racy").
    pub taken_at: i64,
}

impl StatHint {
    /// The same size, mtime and ctime (whenever each was taken).
    pub fn same_file_stat(&self, other: &StatHint) -> bool {
        (self.size, self.mtime, self.ctime) == (other.size, other.mtime, other.ctime)
    }

    /// The spool changed less than a second before the stat was taken.
    pub fn racy(&self) -> bool {
        self.ctime.0.max(self.mtime.0) >= self.taken_at - 1
    }
}

/// A decoded index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Index {
    /// The spool's canonical path (`state::canonical`): an index copied or
    /// renamed to another spool's name is refused.
    pub path: Vec<u8>,
    pub inode: u64,
    /// L: the entries describe exactly the bytes `[0, L)`.
    pub indexed_len: u64,
    pub hint: StatHint,
    /// When the entries were last built by a scan of the whole file.
    pub full_scan_at: i64,
    pub entries: Vec<Entry>,
}

/// Why an index file was not used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    Truncated,
    BadMagic,
    Version(u32),
    Checksum,
    /// Offsets that cannot describe an mbox (overlapping, past L, ...).
    Inconsistent(&'static str),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Truncated => f.write_str("it is truncated"),
            DecodeError::BadMagic => f.write_str("it is not an ironpop index"),
            DecodeError::Version(v) => write!(f, "it has unknown format version {v}"),
            DecodeError::Checksum => f.write_str("its checksum does not match (damaged)"),
            DecodeError::Inconsistent(what) => write!(f, "its entries are inconsistent: {what}"),
        }
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Word-wise FNV-1a (see the module documentation); a short last word is
/// zero-padded and the length is mixed in, so trailing zeros count.
pub fn checksum(data: &[u8]) -> u64 {
    let mut h = FNV_OFFSET;
    let mut words = data.chunks_exact(8);
    for w in &mut words {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        h = (h ^ u64::from_le_bytes(b)).wrapping_mul(FNV_PRIME);
    }
    let rest = words.remainder();
    let mut b = [0u8; 8];
    b[..rest.len()].copy_from_slice(rest);
    h = (h ^ u64::from_le_bytes(b)).wrapping_mul(FNV_PRIME);
    (h ^ data.len() as u64).wrapping_mul(FNV_PRIME)
}

impl Index {
    /// The end of entry `i`: the next entry's start, or L for the last.
    pub fn end_of(&self, i: usize) -> u64 {
        self.entries
            .get(i + 1)
            .map_or(self.indexed_len, |e| e.message.from_offset)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(96 + self.path.len() + self.entries.len() * ENTRY_LEN);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&(self.path.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.path);
        for v in [self.inode, self.indexed_len, self.hint.size] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        let (m, c) = (self.hint.mtime, self.hint.ctime);
        for v in [m.0, m.1, c.0, c.1, self.hint.taken_at, self.full_scan_at] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&(self.entries.len() as u64).to_le_bytes());
        for e in &self.entries {
            let m = &e.message;
            for v in [m.from_offset, m.content_offset, m.content_len, m.size] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(&m.digest);
            out.extend_from_slice(&m.raw_hash.to_le_bytes());
            out.extend_from_slice(&e.retrieved_at.to_le_bytes());
        }
        let sum = checksum(&out);
        out.extend_from_slice(&sum.to_le_bytes());
        out
    }

    /// Decodes and checks an index file's bytes: checksum first, then that
    /// the entries are in order, contiguous and within L.
    pub fn decode(data: &[u8]) -> Result<Index, DecodeError> {
        let body_len = data.len().checked_sub(8).ok_or(DecodeError::Truncated)?;
        let (body, sum) = data.split_at(body_len);
        let mut r = Reader(body);
        if r.bytes(8)? != MAGIC {
            return Err(DecodeError::BadMagic);
        }
        let version = r.u32()?;
        if version != VERSION {
            return Err(DecodeError::Version(version));
        }
        if u64::from_le_bytes(sum.try_into().map_err(|_| DecodeError::Truncated)?) != checksum(body)
        {
            return Err(DecodeError::Checksum);
        }
        let path_len = r.u32()? as usize;
        let path = r.bytes(path_len)?.to_vec();
        let inode = r.u64()?;
        let indexed_len = r.u64()?;
        let size = r.u64()?;
        let mtime = (r.i64()?, r.i64()?);
        let ctime = (r.i64()?, r.i64()?);
        let taken_at = r.i64()?;
        let full_scan_at = r.i64()?;
        let count = r.u64()?;
        if Some(r.0.len() as u64) != count.checked_mul(ENTRY_LEN as u64) {
            return Err(DecodeError::Inconsistent(
                "entry count and file length differ",
            ));
        }
        let mut entries = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let from_offset = r.u64()?;
            let content_offset = r.u64()?;
            let content_len = r.u64()?;
            let size = r.u64()?;
            let mut digest = [0u8; 16];
            digest.copy_from_slice(r.bytes(16)?);
            let mut raw = [0u8; 16];
            raw.copy_from_slice(r.bytes(16)?);
            let retrieved_at = r.i64()?;
            entries.push(Entry {
                message: ScannedMessage {
                    from_offset,
                    content_offset,
                    content_len,
                    end: 0,
                    size,
                    digest,
                    raw_hash: u128::from_le_bytes(raw),
                },
                retrieved_at,
            });
        }
        let mut index = Index {
            path,
            inode,
            indexed_len,
            hint: StatHint {
                size,
                mtime,
                ctime,
                taken_at,
            },
            full_scan_at,
            entries,
        };
        index.fill_ends()?;
        Ok(index)
    }

    /// Sets each entry's end and checks the framing: every message lies
    /// after the previous one, its content inside its own range, all of
    /// it below L.
    fn fill_ends(&mut self) -> Result<(), DecodeError> {
        let ends: Vec<u64> = (0..self.entries.len()).map(|i| self.end_of(i)).collect();
        let mut prev_end = 0;
        for (e, end) in self.entries.iter_mut().zip(ends) {
            let m = &mut e.message;
            m.end = end;
            let content_end = m.content_offset.checked_add(m.content_len);
            let ok = m.from_offset >= prev_end
                && m.content_offset >= m.from_offset
                && content_end.is_some_and(|c| c <= end)
                && end <= self.indexed_len
                && m.size >= m.content_len;
            if !ok {
                return Err(DecodeError::Inconsistent("message ranges out of order"));
            }
            prev_end = end;
        }
        Ok(())
    }
}

/// A cursor over the index bytes.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.bytes(4)?);
        Ok(u32::from_le_bytes(b))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.bytes(8)?);
        Ok(u64::from_le_bytes(b))
    }

    fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(self.u64()? as i64)
    }
}

#[cfg(test)]
#[path = "index_tests.rs"]
mod tests;
