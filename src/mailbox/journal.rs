//! The journal of an update: its plan, the hash of every round's bytes, the original bytes of the round in progress, and its progress.
//!
//! Format (`state_dir/<spool>.journal`, all integers u64 little-endian):
//!
//! | offset | field |
//! |---|---|
//! | 0 | magic `ironpop-journal2` (16 bytes) |
//! | 16 | spool inode, S, N, R, deleted ranges, rounds, marker length m |
//! | 72 | marker (16 bytes, the first m used) |
//! | 88 | spool path length, then the path (at most 3704 bytes) |
//! | 3800 | 2 when the tail check follows and the plan ends with the deleted pieces' hashes, 1: the tail check only (0: neither; older journals), the check's length t, its XXH3-128 |
//! | 3832 | account name length, then the name (at most 256 bytes; 0: none) |
//! | 4096, 4608 | two progress records (see [`Progress`]) |
//! | 8192 | the deleted ranges (from, to), XXH3-128 of each round's bytes, then of each deleted piece (`Plan::deleted_pieces`) |
//! | then, 4096-aligned | the original bytes of the round in progress (≤ R) |
//!
//! The file is allocated at its full size when it is created, so an
//! update that starts never runs out of `state_dir` space halfway: the
//! space is R + 32 bytes per deleted message and per round + 12 KiB,
//! whatever the spool's size. No device number is stored: on a cluster
//! the same spool has a different `st_dev` on every node.
//!
//! Progress is written alternately to the two record slots with a rising
//! sequence number and a checksum; the valid record with the highest
//! number is the state. A torn record write leaves the previous one, which
//! is still true (see `update.rs`).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use xxhash_rust::xxh3::xxh3_64;

use super::fault::{fault_point, made_durable};
use super::plan::Plan;
use super::state::{SpoolKey, StateDir};
use crate::limits;

const MAGIC: &[u8; 16] = b"ironpop-journal2";
const HEADER_LEN: usize = 4096;
const RECORD_AT: [u64; 2] = [4096, 4608];
const RECORD_LEN: usize = 32;
const PLAN_AT: u64 = 8192;
pub const MAX_MARKER: usize = 16;
const PATH_AT: usize = 96;
const TAIL_AT: usize = 3800;
const ACCOUNT_LEN_AT: usize = 3832;
const ACCOUNT_AT: usize = ACCOUNT_LEN_AT + 8;
const MAX_PATH: usize = TAIL_AT - PATH_AT;
const MAX_ACCOUNT: usize = HEADER_LEN - ACCOUNT_AT;

/// Where an update stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Rounds before `round` are on disk; round `round` has not written
    /// the spool.
    Between { round: u64 },
    /// Round `round` may have written part of its destination; its
    /// original bytes are in the journal.
    InRound { round: u64 },
    /// Every round is on disk and the marker is at W; the truncate to W
    /// may or may not have happened.
    Truncating,
}

/// The hash of the spool's bytes `[N − len, N)` when the update began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TailCheck {
    pub len: u64,
    pub hash: u128,
}

/// What a journal says about one update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub ino: u64,
    pub plan: Plan,
    /// Written at W before the truncate: present there means the truncate
    /// has not happened (an MDA appending after a truncate writes an mbox
    /// message, never a NUL followed by these bytes).
    pub marker: Vec<u8>,
    pub spool: PathBuf,
    /// The login name of the spool's account (`None`: an older journal,
    /// or an update made without a login).
    pub account: Option<String>,
    /// `None`: an older journal, written before the check existed.
    pub tail: Option<TailCheck>,
    /// XXH3-128 of the bytes each round writes.
    pub round_hashes: Vec<u128>,
    /// XXH3-128 of each piece of the deleted bytes when the update began
    /// (`Plan::deleted_pieces` with the marker's length); `None`: an
    /// older journal, written before the check existed.
    pub deleted_hashes: Option<Vec<u128>>,
}

impl Header {
    fn encode(&self) -> Vec<u8> {
        let mut h = vec![0u8; HEADER_LEN];
        h[..16].copy_from_slice(MAGIC);
        let p = &self.plan;
        let fields = [
            self.ino,
            p.start,
            p.orig_len,
            p.round,
            p.deleted.len() as u64,
            self.round_hashes.len() as u64,
            self.marker.len() as u64,
        ];
        for (i, v) in fields.iter().enumerate() {
            h[16 + 8 * i..24 + 8 * i].copy_from_slice(&v.to_le_bytes());
        }
        h[72..72 + self.marker.len()].copy_from_slice(&self.marker);
        // At most MAX_PATH bytes (`create` refuses longer ones).
        let path = self.spool.as_os_str().as_bytes();
        let path = &path[..path.len().min(MAX_PATH)];
        h[88..PATH_AT].copy_from_slice(&(path.len() as u64).to_le_bytes());
        h[PATH_AT..PATH_AT + path.len()].copy_from_slice(path);
        if let Some(tail) = self.tail {
            let version: u64 = if self.deleted_hashes.is_some() { 2 } else { 1 };
            h[TAIL_AT..TAIL_AT + 8].copy_from_slice(&version.to_le_bytes());
            h[TAIL_AT + 8..TAIL_AT + 16].copy_from_slice(&tail.len.to_le_bytes());
            h[TAIL_AT + 16..ACCOUNT_LEN_AT].copy_from_slice(&tail.hash.to_le_bytes());
        }
        // A name that does not fit is not recorded (recovery then works
        // as for an older journal); a cut name would name someone else.
        if let Some(account) = self.account.as_deref().filter(|a| a.len() <= MAX_ACCOUNT) {
            h[ACCOUNT_LEN_AT..ACCOUNT_AT].copy_from_slice(&(account.len() as u64).to_le_bytes());
            h[ACCOUNT_AT..ACCOUNT_AT + account.len()].copy_from_slice(account.as_bytes());
        }
        h
    }

    fn encode_plan(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for &(a, b) in &self.plan.deleted {
            out.extend_from_slice(&a.to_le_bytes());
            out.extend_from_slice(&b.to_le_bytes());
        }
        let pieces = self.deleted_hashes.iter().flatten();
        for h in self.round_hashes.iter().chain(pieces) {
            out.extend_from_slice(&h.to_le_bytes());
        }
        out
    }

    /// Where the original bytes of the round in progress are kept.
    fn undo_at(&self) -> u64 {
        let pieces = self.deleted_hashes.as_ref().map_or(0, Vec::len);
        let plan_len = 16 * (self.plan.deleted.len() + self.round_hashes.len() + pieces) as u64;
        (PLAN_AT + plan_len).next_multiple_of(4096)
    }

    fn file_len(&self) -> u64 {
        self.undo_at() + self.plan.round
    }
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Why an existing journal could not be used.
#[derive(Debug)]
pub enum JournalError {
    /// Reading it failed (out of descriptors or memory, EIO): temporary;
    /// the journal stays where it is.
    Io(io::Error),
    /// It is there but is no journal of this version, or is damaged: it
    /// can never be applied.
    Unusable(String),
}

/// Fills a buffer with a journal's bytes at an offset; a journal too
/// short for it is `Unusable`.
type ReadAt<'a> = &'a dyn Fn(&mut [u8], u64) -> Result<(), JournalError>;

fn truncated() -> JournalError {
    JournalError::Unusable("it is truncated".into())
}

fn read_file_at(file: &File, buf: &mut [u8], at: u64) -> Result<(), JournalError> {
    match file.read_exact_at(buf, at) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(truncated()),
        Err(e) => Err(JournalError::Io(e)),
    }
}

/// A journal's header and its state (record sequence number, progress),
/// decoded and checked from its bytes alone: `read` reads them, `len` is
/// the file's length. Pure, so that it is fuzzed (`fuzz/fuzz_targets/journal.rs`).
pub fn decode(read: ReadAt, len: u64) -> Result<(Header, u64, Progress), JournalError> {
    let header = decode_header(read, len)?;
    if len < header.file_len() {
        return Err(truncated());
    }
    let (seq, progress) = decode_progress(read, header.plan.rounds())?;
    Ok((header, seq, progress))
}

/// [`decode`] of a journal held in memory.
pub fn decode_bytes(bytes: &[u8]) -> Result<(Header, u64, Progress), JournalError> {
    let read = |buf: &mut [u8], at: u64| {
        let from = usize::try_from(at).map_err(|_| truncated())?;
        let src = bytes
            .get(from..from.saturating_add(buf.len()))
            .ok_or_else(truncated)?;
        buf.copy_from_slice(src);
        Ok(())
    };
    decode(&read, bytes.len() as u64)
}

/// The bytes a new journal of `header` starts with (header, the first
/// progress record: sequence 1, before round 0, and the plan), up to
/// where the original bytes of a round go: what [`decode`] reads.
pub fn image(header: &Header) -> Vec<u8> {
    let mut out = header.encode();
    out.resize(PLAN_AT as usize, 0);
    let record = RECORD_AT[1] as usize;
    out[record..record + RECORD_LEN]
        .copy_from_slice(&encode_record(1, Progress::Between { round: 0 }));
    out.extend_from_slice(&header.encode_plan());
    out.resize(header.undo_at() as usize, 0);
    out
}

/// Reads and checks a header and its plan.
fn decode_header(read: ReadAt, len: u64) -> Result<Header, JournalError> {
    let mut h = vec![0u8; HEADER_LEN];
    read(&mut h, 0)?;
    if &h[..16] != MAGIC {
        return Err(JournalError::Unusable(
            "not an ironpop journal of this version".into(),
        ));
    }
    let bad = || JournalError::Unusable("not a valid ironpop journal".to_string());
    let f = |i: usize| u64_at(&h, 16 + 8 * i).ok_or_else(bad);
    let (ino, start, orig_len, round) = (f(0)?, f(1)?, f(2)?, f(3)?);
    let (n_deleted, n_rounds, m) = (f(4)?, f(5)?, f(6)?);
    // The round size is bounded too, so that offsets of the form
    // S + k * round cannot overflow whatever the header says.
    if n_deleted > limits::MAX_JOURNAL_ENTRIES
        || n_rounds > limits::MAX_JOURNAL_ENTRIES
        || m as usize > MAX_MARKER
        || round > limits::JOURNAL_ROUND
    {
        return Err(bad());
    }
    let path_len = u64_at(&h, 88).ok_or_else(bad)? as usize;
    let spool = PathBuf::from(std::ffi::OsStr::from_bytes(
        h.get(PATH_AT..PATH_AT.saturating_add(path_len))
            .ok_or_else(bad)?,
    ));
    // An older journal whose path reached this far has neither field.
    let ((tail, has_pieces), account) = match path_len <= MAX_PATH {
        true => (decode_tail(&h).ok_or_else(bad)?, decode_account(&h)),
        false => ((None, false), None),
    };
    // Every writer that records the account records the tail check too:
    // an account without one is a forgery that would have the privileged
    // helper open the spool for an older journal's weaker proof.
    if account.is_some() && tail.is_none() {
        return Err(bad());
    }
    // Checked before the allocation: a damaged count costs no memory.
    let plan_len = 16 * (n_deleted + n_rounds);
    if len < PLAN_AT + plan_len {
        return Err(truncated());
    }
    let mut raw = vec![0u8; plan_len as usize];
    read(&mut raw, PLAN_AT)?;
    let deleted = (0..n_deleted as usize)
        .map(|i| Some((u64_at(&raw, 16 * i)?, u64_at(&raw, 16 * i + 8)?)))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(bad)?;
    let hashes_at = 16 * n_deleted as usize;
    let round_hashes = raw[hashes_at..]
        .chunks_exact(16)
        .map(|c| u128::from_le_bytes(c.try_into().unwrap_or_default()))
        .collect();
    let plan = Plan::new(orig_len, deleted, round).ok_or_else(bad)?;
    if plan.start != start || plan.rounds() != n_rounds {
        return Err(bad());
    }
    // The checked bytes are the last ones of [W + m, N), which the update
    // never writes, as many as the writer hashes: a shorter check would
    // let a journal made without reading the spool through.
    let tail_len = plan
        .deleted_bytes()
        .saturating_sub(m)
        .min(limits::JOURNAL_TAIL_CHECK);
    if tail.is_some_and(|t| t.len != tail_len) {
        return Err(bad());
    }
    // At most n_deleted + n_rounds + 2 pieces, each cut point being used
    // once: bounded like the rest of the plan.
    let deleted_hashes = match has_pieces {
        false => None,
        true => {
            let n = plan.deleted_pieces(m).len() as u64;
            if len < PLAN_AT + plan_len + 16 * n {
                return Err(truncated());
            }
            let mut raw = vec![0u8; 16 * n as usize];
            read(&mut raw, PLAN_AT + plan_len)?;
            Some(
                raw.chunks_exact(16)
                    .map(|c| u128::from_le_bytes(c.try_into().unwrap_or_default()))
                    .collect(),
            )
        }
    };
    Ok(Header {
        ino,
        plan,
        marker: h[72..72 + m as usize].to_vec(),
        spool,
        account,
        tail,
        round_hashes,
        deleted_hashes,
    })
}

/// The tail check, and whether the deleted pieces' hashes follow the
/// plan: `Some((None, false))` in an older journal (zeros), `None` when
/// the field is damaged.
fn decode_tail(h: &[u8]) -> Option<(Option<TailCheck>, bool)> {
    let hash = u128::from_le_bytes(h.get(TAIL_AT + 16..ACCOUNT_LEN_AT)?.try_into().ok()?);
    match (u64_at(h, TAIL_AT)?, u64_at(h, TAIL_AT + 8)?) {
        (0, _) => Some((None, false)),
        (v @ (1 | 2), len) if len <= limits::JOURNAL_TAIL_CHECK => {
            Some((Some(TailCheck { len, hash }), v == 2))
        }
        _ => None,
    }
}

/// The recorded account name; `None` when there is none, or when the
/// bytes are not one.
fn decode_account(h: &[u8]) -> Option<String> {
    let len = usize::try_from(u64_at(h, ACCOUNT_LEN_AT)?).ok()?;
    let name = h.get(ACCOUNT_AT..ACCOUNT_AT.checked_add(len)?)?;
    (len > 0)
        .then(|| String::from_utf8(name.to_vec()).ok())
        .flatten()
}

fn encode_record(seq: u64, p: Progress) -> [u8; RECORD_LEN] {
    let (kind, round) = match p {
        Progress::Between { round } => (1u64, round),
        Progress::InRound { round } => (2, round),
        Progress::Truncating => (3, 0),
    };
    let mut r = [0u8; RECORD_LEN];
    r[..8].copy_from_slice(&seq.to_le_bytes());
    r[8..16].copy_from_slice(&kind.to_le_bytes());
    r[16..24].copy_from_slice(&round.to_le_bytes());
    let sum = xxh3_64(&r[..24]);
    r[24..].copy_from_slice(&sum.to_le_bytes());
    r
}

fn decode_record(r: &[u8]) -> Option<(u64, Progress)> {
    if u64_at(r, 24)? != xxh3_64(r.get(..24)?) {
        return None;
    }
    let round = u64_at(r, 16)?;
    let p = match u64_at(r, 8)? {
        1 => Progress::Between { round },
        2 => Progress::InRound { round },
        3 => Progress::Truncating,
        _ => return None,
    };
    Some((u64_at(r, 0)?, p))
}

/// The valid progress record with the highest sequence number, checked
/// against a plan of `rounds` rounds.
fn decode_progress(read: ReadAt, rounds: u64) -> Result<(u64, Progress), JournalError> {
    let mut best: Option<(u64, Progress)> = None;
    for at in RECORD_AT {
        let mut r = [0u8; RECORD_LEN];
        // The file is long enough (checked): only EIO fails here, which is
        // temporary and must not get a journal set aside while its spool
        // is half updated.
        read(&mut r, at)?;
        if let Some((seq, p)) = decode_record(&r) {
            if best.map_or(true, |(s, _)| seq > s) {
                best = Some((seq, p));
            }
        }
    }
    let (seq, progress) =
        best.ok_or_else(|| JournalError::Unusable("it has no valid progress record".into()))?;
    // A record whose checksum holds but whose round the plan does not
    // have (a bug, or a hand-made file) is damage, not a reason to panic.
    let in_plan = match progress {
        Progress::Between { round } => round <= rounds,
        Progress::InRound { round } => round < rounds,
        Progress::Truncating => true,
    };
    if !in_plan {
        return Err(JournalError::Unusable(
            "its progress record names a round the update does not have".into(),
        ));
    }
    Ok((seq, progress))
}

/// A complete, durable journal.
#[derive(Debug)]
pub struct Journal {
    file: File,
    path: PathBuf,
    pub header: Header,
    seq: u64,
    pub progress: Progress,
}

pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Journal {
    /// Writes the journal of an update described by `header`, at progress
    /// "before round 0", allocated at its full size. When this returns it
    /// is complete and durable under its final name; the spool has not
    /// been written. `replacing`: it takes the place of the spool's
    /// current journal (recovery's second pass, which must never be left
    /// without one). On error a first journal leaves nothing behind (its
    /// update never happened), a replacing one leaves whichever is in
    /// place, both being valid.
    pub fn create(state: &StateDir, header: Header, replacing: bool) -> io::Result<Journal> {
        // A cut path would name another file: after a crash the journal
        // would be set aside and the spool left half compacted.
        if header.spool.as_os_str().len() > MAX_PATH {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("the spool's path is longer than an update journal can record ({MAX_PATH} bytes)"),
            ));
        }
        state.ensure()?;
        let key = SpoolKey::of(&header.spool);
        let (tmp, path) = (state.journal_tmp(&key), state.journal(&key));
        let result = (|| {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC).bits())
                .open(&tmp)?;
            // Every block now, so that no later write can meet ENOSPC.
            nix::fcntl::posix_fallocate(&file, 0, header.file_len() as i64)?;
            fault_point()?;
            file.write_all_at(&image(&header), 0)?;
            fault_point()?;
            // (1) data durable before its name appears ...
            file.sync_all()?;
            made_durable(&file);
            fault_point()?;
            fs::rename(&tmp, &path)?;
            fault_point()?;
            // (2) ... and the name durable before the spool is touched.
            sync_dir(state.path())?;
            fault_point()?;
            Ok(file)
        })();
        match result {
            Ok(file) => Ok(Journal {
                file,
                path,
                header,
                seq: 1,
                progress: Progress::Between { round: 0 },
            }),
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                if !replacing {
                    // Renamed but not durably: the spool is untouched, so
                    // no later recovery may complete this update. The
                    // removal is made durable too (best effort: this is
                    // already an error path).
                    let _ = fs::remove_file(&path);
                    if let Some(dir) = path.parent() {
                        let _ = File::open(dir).and_then(|d| d.sync_all());
                    }
                }
                Err(e)
            }
        }
    }

    /// Opens the journal at `path`: `Ok(None)` when there is none.
    pub fn open(path: &Path) -> Result<Option<Journal>, JournalError> {
        let file = match OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC).bits())
            .open(path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(JournalError::Io(e)),
        };
        let len = file.metadata().map_err(JournalError::Io)?.len();
        let (header, seq, progress) = decode(&|buf, at| read_file_at(&file, buf, at), len)?;
        Ok(Some(Journal {
            file,
            path: path.to_path_buf(),
            header,
            seq,
            progress,
        }))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Durably records new progress (in the slot the current record is
    /// not in, so a torn write leaves the current one).
    pub fn record(&mut self, progress: Progress) -> io::Result<()> {
        let seq = self.seq + 1;
        let slot = RECORD_AT[(seq % 2) as usize];
        self.file
            .write_all_at(&encode_record(seq, progress), slot)?;
        fault_point()?;
        self.file.sync_data()?;
        made_durable(&self.file);
        fault_point()?;
        self.seq = seq;
        self.progress = progress;
        Ok(())
    }

    /// Keeps the original bytes of round `round` and then records that the
    /// round is in progress, both durably.
    pub fn begin_round(&mut self, round: u64, original: &[u8]) -> io::Result<()> {
        self.file.write_all_at(original, self.header.undo_at())?;
        fault_point()?;
        self.file.sync_data()?;
        made_durable(&self.file);
        fault_point()?;
        self.record(Progress::InRound { round })
    }

    /// The original bytes of the round in progress.
    pub fn original(&self, len: usize) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        self.file.read_exact_at(&mut buf, self.header.undo_at())?;
        Ok(buf)
    }

    /// Removes the journal durably: the update is over.
    pub fn remove(self) -> io::Result<()> {
        fs::remove_file(&self.path)?;
        fault_point()?;
        match self.path.parent() {
            Some(dir) => sync_dir(dir),
            None => Ok(()),
        }
    }
}

/// Moves a journal that must not be applied out of the way, keeping it
/// for the administrator: `<name>.set-aside-<unix time>.<ns>`. Returns the
/// new name.
pub fn set_aside(path: &Path) -> io::Result<PathBuf> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mut name = path.as_os_str().to_os_string();
    name.push(format!(
        ".set-aside-{}.{:09}",
        now.as_secs(),
        now.subsec_nanos()
    ));
    let aside = PathBuf::from(name);
    fs::rename(path, &aside)?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(aside)
}
