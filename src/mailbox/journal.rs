//! The undo journal of an update: the original bytes that compaction overwrites, and recovery from it.
//!
//! Format (`state_dir/<spool>.journal`): a 4096-byte header, then the data.
//!
//! | offset | field |
//! |---|---|
//! | 0 | magic `ironpop-journal1` (16 bytes) |
//! | 16 | phase: 0 = UNDO, 1 = COMPACTED (one byte, so its write is atomic) |
//! | 24 | spool dev, ino, start S, original length N, new length W, marker length m (u64 LE) |
//! | 72 | marker (16 bytes, the first m used) |
//! | 88 | spool path length, then the path (for the administrator) |
//! | 4096 | the original bytes `[S, W + m)` of the spool |
//!
//! Compaction writes only inside `[S, W + m)`: kept bytes are copied down
//! into `[S, W)` and the marker into `[W, W + m)`; it never changes the
//! length before phase COMPACTED is durable. See `update.rs` for the
//! write/fsync order and the argument that every crash point recovers.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;

use super::fault::fault_point;
use super::state::StateDir;
use super::MailboxError;
use crate::exhaustion::is_exhaustion;
use crate::limits;

const MAGIC: &[u8; 16] = b"ironpop-journal1";
pub const HEADER_LEN: u64 = 4096;
const PHASE_AT: u64 = 16;
pub const MAX_MARKER: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The spool may be partly compacted; its length is still ≥ N.
    Undo = 0,
    /// `[0, W)` is final and durable and `[W, W + m)` holds the marker;
    /// the truncate to W may or may not have happened.
    Compacted = 1,
}

/// What a journal says about one update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub phase: Phase,
    pub dev: u64,
    pub ino: u64,
    pub start: u64,
    pub orig_len: u64,
    pub new_len: u64,
    pub marker: Vec<u8>,
    pub spool: PathBuf,
}

impl Header {
    /// Length of the saved region `[S, W + m)`.
    pub fn data_len(&self) -> u64 {
        self.new_len + self.marker.len() as u64 - self.start
    }

    fn encode(&self) -> Vec<u8> {
        let mut h = vec![0u8; HEADER_LEN as usize];
        h[..16].copy_from_slice(MAGIC);
        h[16] = self.phase as u8;
        let fields = [
            self.dev,
            self.ino,
            self.start,
            self.orig_len,
            self.new_len,
            self.marker.len() as u64,
        ];
        for (i, v) in fields.iter().enumerate() {
            h[24 + 8 * i..32 + 8 * i].copy_from_slice(&v.to_le_bytes());
        }
        h[72..72 + self.marker.len()].copy_from_slice(&self.marker);
        let path = self.spool.as_os_str().as_bytes();
        let path = &path[..path.len().min(HEADER_LEN as usize - 96)];
        h[88..96].copy_from_slice(&(path.len() as u64).to_le_bytes());
        h[96..96 + path.len()].copy_from_slice(path);
        h
    }

    fn decode(h: &[u8]) -> Option<Header> {
        if h.len() != HEADER_LEN as usize || h.get(..16)? != MAGIC {
            return None;
        }
        let phase = match h[16] {
            0 => Phase::Undo,
            1 => Phase::Compacted,
            _ => return None,
        };
        let u = |i: usize| -> Option<u64> {
            Some(u64::from_le_bytes(
                h.get(24 + 8 * i..32 + 8 * i)?.try_into().ok()?,
            ))
        };
        let m = usize::try_from(u(5)?).ok()?;
        let path_len = usize::try_from(u64::from_le_bytes(h.get(88..96)?.try_into().ok()?)).ok()?;
        let header = Header {
            phase,
            dev: u(0)?,
            ino: u(1)?,
            start: u(2)?,
            orig_len: u(3)?,
            new_len: u(4)?,
            marker: h.get(72..72 + m.min(MAX_MARKER + 1))?.to_vec(),
            spool: PathBuf::from(std::ffi::OsStr::from_bytes(h.get(96..96 + path_len)?)),
        };
        let sane = m <= MAX_MARKER
            && header.start <= header.new_len
            && header.new_len + m as u64 <= header.orig_len;
        sane.then_some(header)
    }
}

/// A complete, durable journal.
#[derive(Debug)]
pub struct Journal {
    file: File,
    path: PathBuf,
    pub header: Header,
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Journal {
    /// Writes the journal of an update of `spool` described by `header`,
    /// saving the spool's current bytes `[S, W + m)`. When this returns,
    /// the journal is complete and durable under its final name; the spool
    /// has not been written. On error nothing is left behind.
    pub fn create(
        state: &StateDir,
        spool: &File,
        header: Header,
        tick: &mut dyn FnMut(),
    ) -> io::Result<Journal> {
        state.ensure()?;
        let tmp = state.journal_tmp(&header.spool);
        let path = state.journal(&header.spool);
        let result = (|| {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC).bits())
                .open(&tmp)?;
            file.write_all_at(&header.encode(), 0)?;
            let mut buf = vec![0u8; limits::SCAN_BLOCK];
            let (mut done, total) = (0u64, header.data_len());
            while done < total {
                let n = usize::try_from(total - done).map_or(buf.len(), |n| n.min(buf.len()));
                spool.read_exact_at(&mut buf[..n], header.start + done)?;
                file.write_all_at(&buf[..n], HEADER_LEN + done)?;
                done += n as u64;
                tick();
                fault_point()?;
            }
            // (1) journal data durable before its name appears ...
            file.sync_all()?;
            fault_point()?;
            fs::rename(&tmp, &path)?;
            fault_point()?;
            // (2) ... and the name durable before the spool is touched.
            sync_dir(state.path())?;
            fault_point()?;
            Ok(file)
        })();
        match result {
            Ok(file) => Ok(Journal { file, path, header }),
            Err(e) => {
                // The spool has not been written yet, so a journal under its
                // final name (the directory sync after the rename failed)
                // would only let a later login "undo" an update that never
                // happened over whatever the spool holds by then.
                let _ = fs::remove_file(&tmp);
                let _ = fs::remove_file(&path);
                Err(e)
            }
        }
    }

    /// Opens an existing journal; `Ok(None)` when there is none.
    pub fn open(state: &StateDir, spool: &Path) -> Result<Option<Journal>, JournalError> {
        let path = state.journal(spool);
        let file = match OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC).bits())
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) if is_exhaustion(&e) => return Err(JournalError::Exhausted(e)),
            Err(e) => {
                return Err(JournalError::Unusable(format!(
                    "cannot open journal {}: {e}",
                    path.display()
                )))
            }
        };
        let bad =
            |what: &str| JournalError::Unusable(format!("journal {} is {what}", path.display()));
        let mut h = vec![0u8; HEADER_LEN as usize];
        file.read_exact_at(&mut h, 0)
            .map_err(|e| bad(&format!("unreadable ({e})")))?;
        let header = Header::decode(&h).ok_or_else(|| bad("not a valid ironpop journal"))?;
        let len = file.metadata().map_err(|e| bad(&e.to_string()))?.len();
        if len != HEADER_LEN + header.data_len() {
            return Err(bad("truncated"));
        }
        Ok(Some(Journal { file, path, header }))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Durably records the phase.
    pub fn set_phase(&mut self, phase: Phase) -> io::Result<()> {
        self.file.write_all_at(&[phase as u8], PHASE_AT)?;
        fault_point()?;
        self.file.sync_data()?;
        fault_point()?;
        self.header.phase = phase;
        Ok(())
    }

    /// Writes the saved bytes back to `[S, W + m)` of the spool and fsyncs
    /// it. Only valid in phase UNDO (spool length ≥ N). Idempotent.
    pub fn undo(&self, spool: &File, tick: &mut dyn FnMut()) -> io::Result<()> {
        let mut buf = vec![0u8; limits::SCAN_BLOCK];
        let (mut done, total) = (0u64, self.header.data_len());
        while done < total {
            let n = usize::try_from(total - done).map_or(buf.len(), |n| n.min(buf.len()));
            self.file.read_exact_at(&mut buf[..n], HEADER_LEN + done)?;
            spool.write_all_at(&buf[..n], self.header.start + done)?;
            fault_point()?;
            done += n as u64;
            tick();
        }
        spool.sync_all()?;
        fault_point()
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

/// Why an existing journal could not be read.
#[derive(Debug)]
pub enum JournalError {
    /// A resource ran out (descriptors, memory): temporary.
    Exhausted(io::Error),
    /// The journal is there but unusable: the administrator must look.
    Unusable(String),
}

/// What recovery did, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovered {
    /// The interrupted update was undone: the deleted messages are back.
    Undone,
    /// The interrupted update had compacted everything; it was completed.
    Finished,
}

/// Recovers an interrupted update of `spool` (open as `file`, delivery
/// locks held) from its journal, if there is one. Must run before anything
/// reads the spool.
pub fn recover(
    state: &StateDir,
    spool: &Path,
    file: Option<&File>,
    tick: &mut dyn FnMut(),
) -> Result<Option<Recovered>, MailboxError> {
    let refuse = |reason: String| MailboxError::Refused {
        path: spool.to_path_buf(),
        reason,
    };
    // A journal that never got its final name: the update never touched
    // the spool.
    match fs::remove_file(state.journal_tmp(spool)) {
        Ok(()) => log::warn!(
            "mailbox {}: removed an incomplete update journal (the update had not started)",
            spool.display()
        ),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => log::warn!("cannot remove {}: {e}", state.journal_tmp(spool).display()),
    }
    let mut journal = match Journal::open(state, spool) {
        Ok(Some(j)) => j,
        Ok(None) => return Ok(None),
        // Out of descriptors or memory: this login fails, the next may not.
        Err(JournalError::Exhausted(source)) => {
            return Err(MailboxError::Io {
                path: spool.to_path_buf(),
                action: "opening the update journal of",
                source,
            })
        }
        Err(JournalError::Unusable(reason)) => return Err(refuse(format!("{reason}; an update was interrupted and cannot be undone automatically: check the spool, then move the journal away"))),
    };
    let jpath = journal.path().display().to_string();
    let Some(file) = file else {
        return Err(refuse(format!(
            "the spool is missing but the unfinished update journal {jpath} exists; restore the spool or move the journal away"
        )));
    };
    let io_err = |source: io::Error| MailboxError::Io {
        path: spool.to_path_buf(),
        action: "recovering an interrupted update of",
        source,
    };
    let meta = file.metadata().map_err(io_err)?;
    let h = journal.header.clone();
    // dev numbers may change across reboots; the inode may not.
    if meta.ino() != h.ino {
        return Err(refuse(format!(
            "the unfinished update journal {jpath} belongs to another file (inode {}, spool is inode {}); check the spool, then move the journal away",
            h.ino,
            meta.ino()
        )));
    }
    let len = meta.len();
    let outcome = match h.phase {
        Phase::Undo => {
            if len < h.orig_len {
                return Err(refuse(format!(
                    "the spool is shorter ({len}) than when the update journal {jpath} was written ({}); another program truncated it",
                    h.orig_len
                )));
            }
            journal.undo(file, tick).map_err(io_err)?;
            Recovered::Undone
        }
        Phase::Compacted => {
            let m = h.marker.len() as u64;
            let mut at_w = vec![0u8; h.marker.len()];
            let marker_present = len >= h.new_len + m
                && file.read_exact_at(&mut at_w, h.new_len).is_ok()
                && at_w == h.marker;
            if marker_present && len < h.orig_len {
                return Err(refuse(format!(
                    "the spool is shorter ({len}) than when the update journal {jpath} was written ({}); another program truncated it",
                    h.orig_len
                )));
            }
            if !marker_present {
                // The truncate to W happened: the spool is final, and
                // whatever lies after W was appended later.
                if len < h.new_len {
                    return Err(refuse(format!(
                        "the spool is shorter ({len}) than the update journal {jpath} left it ({}); another program truncated it",
                        h.new_len
                    )));
                }
                Recovered::Finished
            } else if len == h.orig_len {
                // Nothing appended since: finish with the truncate.
                file.set_len(h.new_len)
                    .and_then(|()| fault_point())
                    .map_err(io_err)?;
                file.sync_all()
                    .and_then(|()| fault_point())
                    .map_err(io_err)?;
                Recovered::Finished
            } else {
                // Mail was appended at N after the crash: undo instead, which
                // leaves it in place. Back to phase UNDO first, so that a crash
                // during the undo is again undone (the marker is overwritten).
                journal.set_phase(Phase::Undo).map_err(io_err)?;
                journal.undo(file, tick).map_err(io_err)?;
                Recovered::Undone
            }
        }
    };
    journal.remove().map_err(io_err)?;
    crate::counters::bump(crate::counters::Counter::JournalsRecovered);
    Ok(Some(outcome))
}
