//! Recovery of an interrupted update: prove that the spool is exactly what the update left, then finish it; otherwise leave the spool alone and set the journal aside.
//!
//! Why recovery can tell its own half-done update from someone else's
//! edit: the journal holds a hash of the bytes every round writes, and the
//! original bytes of the round in progress. The file is ours only if it is
//! the same inode, at least as long as the update began with (until the
//! truncate), every finished round's destination hashes to what the round
//! wrote, every byte of the round in progress is either its original or
//! its new value (and the new value is what the hash says), and the
//! sources of every round still to run hash to what they must, and so
//! must the last bytes before N that no round writes (the tail check,
//! which also makes a journal forged without reading the spool fail
//! here, even one whose plan moves nothing). Anything
//! after N is mail appended since and is kept. A program that rewrote,
//! shortened, re-created or replaced the spool fails one of these checks
//! (short of an XXH3-128 collision): the spool is served as it now is, and
//! the journal is moved aside for the administrator. A mailbox is never
//! refused because of a journal.
//!
//! The deleted bytes no round has overwritten yet, outside the tail
//! check and every round's sources, are checked too: the journal holds
//! an XXH3-128 of each piece of the deleted bytes, cut where a round's
//! destination ends, at W and after the marker (`Plan::deleted_pieces`),
//! so the write frontier always falls between pieces. Every piece from
//! the frontier on must hash to what the update began with (the piece
//! where the marker goes may instead hold the marker); every piece before
//! it was overwritten and is checked by the round hashes. Kept bytes a
//! finished round copied down and that still sit at their old place past
//! the write frontier must equal their copy. So every byte of `[S, N)` is
//! either the original or what the update writes there (the marker's few
//! bytes at W may be either). A
//! journal older than these hashes (no flag 2 in its tail check field)
//! has none: for it, a same-length in-place change of such bytes after
//! the crash is still not noticed and goes with the deleted messages.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use xxhash_rust::xxh3::xxh3_128;

use super::journal::{self, Journal, JournalError, Progress};
use super::plan::Plan;
use super::state::{SpoolKey, StateDir};
use super::update;
use super::MailboxError;
use crate::limits;

/// What recovery did, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovered {
    /// The interrupted update was completed (found at `phase`).
    Completed { phase: Progress },
    /// The spool is not what the update left; it was not touched, and the
    /// journal was moved to `aside`.
    SetAside { aside: PathBuf, reason: String },
}

impl Recovered {
    /// The log line for a spool.
    pub fn describe(&self, spool: &Path) -> String {
        match self {
            Recovered::Completed { phase } => format!(
                "mailbox {}: an interrupted update was completed from its journal (found at {}); the deleted messages are gone",
                spool.display(),
                phase_name(*phase)
            ),
            Recovered::SetAside { aside, reason } => format!(
                "mailbox {}: an interrupted update was NOT completed: {reason}; the spool was left as it is and the journal moved to {}",
                spool.display(),
                aside.display()
            ),
        }
    }
}

fn phase_name(p: Progress) -> String {
    match p {
        Progress::Between { round } => format!("before round {round}"),
        Progress::InRound { round } => format!("round {round}"),
        Progress::Truncating => "truncate".into(),
    }
}

enum Verdict {
    /// The update is over (the truncate happened): only the journal goes.
    Done,
    /// Ours: finish, with the original bytes of the round in progress.
    Continue(Option<Vec<u8>>),
    /// Someone else's file now.
    Foreign(String),
}

/// Who opened the spool, which decides what its journal must prove.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenedBy {
    /// The daemon, as its own user: a journal older than the tail check
    /// is still proved the older way (the update may have been cut short
    /// by the upgrade to this version).
    Daemon,
    /// The privileged helper, for a spool the daemon cannot open itself:
    /// only a journal with a tail check is applied (no journal of a
    /// version without it ever updated such a spool).
    Helper,
}

/// Recovers an interrupted update of `spool` (resolved as `key`, open as
/// `file`, `None` if it does not exist, by `by`), with the session and
/// delivery locks held, before anything reads it.
pub fn recover(
    state: &StateDir,
    spool: &Path,
    key: &SpoolKey,
    file: Option<&File>,
    by: OpenedBy,
) -> Result<Option<Recovered>, MailboxError> {
    // A journal that never got its final name: the update never touched
    // the spool.
    let tmp = state.journal_tmp(key);
    match fs::remove_file(&tmp) {
        Ok(()) => log::warn!(
            "mailbox {}: removed an incomplete update journal (the update had not started)",
            spool.display()
        ),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => log::warn!("cannot remove {}: {e}", tmp.display()),
    }
    let jpath = state.journal(key);
    match Journal::open(&jpath) {
        Ok(None) => Ok(None),
        Ok(Some(journal)) => complete(journal, spool, file, by).map(Some),
        // Out of descriptors or memory, or EIO: this login fails, the
        // journal stays for the next.
        Err(JournalError::Io(source)) => Err(MailboxError::Io {
            path: spool.to_path_buf(),
            action: "opening the update journal of",
            source,
        }),
        Err(JournalError::Unusable(reason)) => {
            set_aside(&jpath, spool, format!("the journal is unusable: {reason}")).map(Some)
        }
    }
}

/// Completes the update `journal` describes, if `file` is provably what
/// it left; otherwise sets the journal aside. `journal` is the open file
/// its caller read and checked: it is never opened again by name, so a
/// file renamed into its place meanwhile is never what gets applied.
pub fn complete(
    journal: Journal,
    spool: &Path,
    file: Option<&File>,
    by: OpenedBy,
) -> Result<Recovered, MailboxError> {
    let io_err = update::io_error(spool, RECOVERING);
    let Some(file) = file else {
        return set_aside(journal.path(), spool, "the spool no longer exists".into());
    };
    if by == OpenedBy::Helper && journal.header.tail.is_none() {
        return set_aside(
            journal.path(),
            spool,
            "the journal has no tail check, which a spool the privileged helper opened needs"
                .into(),
        );
    }
    let phase = journal.progress;
    match prove(&journal, file).map_err(&io_err)? {
        Verdict::Foreign(reason) => set_aside(journal.path(), spool, reason),
        Verdict::Done => {
            journal.remove().map_err(&io_err)?;
            crate::counters::bump(crate::counters::Counter::JournalsRecovered);
            Ok(Recovered::Completed { phase })
        }
        Verdict::Continue(original) => {
            update::run(journal, file, spool, original)?;
            crate::counters::bump(crate::counters::Counter::JournalsRecovered);
            Ok(Recovered::Completed { phase })
        }
    }
}

/// Moves the journal at `jpath` aside for `reason`, leaving `spool` as it is.
fn set_aside(jpath: &Path, spool: &Path, reason: String) -> Result<Recovered, MailboxError> {
    let aside = journal::set_aside(jpath).map_err(update::io_error(spool, RECOVERING))?;
    Ok(Recovered::SetAside { aside, reason })
}

/// What recovery's I/O errors say it was doing.
const RECOVERING: &str = "recovering an interrupted update of";

/// The first finished round (of `0..finished`) some of whose kept bytes,
/// still at their old place at or past `written_to`, differ from their
/// copy in its destination (which the round hash proved).
fn copied_but_changed(
    file: &File,
    plan: &Plan,
    finished: u64,
    written_to: u64,
    buf: &mut [u8],
) -> io::Result<Option<u64>> {
    let half = buf.len() / 2;
    let (old, copy) = buf.split_at_mut(half);
    for k in 0..finished {
        let mut dst = plan.destination(k).0;
        for (src, len) in plan.sources(k) {
            let mut at = src.max(written_to);
            while at < src + len {
                let n = usize::try_from(src + len - at).map_or(half, |n| n.min(half));
                file.read_exact_at(&mut old[..n], at)?;
                file.read_exact_at(&mut copy[..n], dst + (at - src))?;
                if old[..n] != copy[..n] {
                    return Ok(Some(k));
                }
                at += n as u64;
            }
            dst += len;
        }
    }
    Ok(None)
}

/// Decides, reading only, whether `file` is what the journal's update
/// left (see the module documentation).
fn prove(j: &Journal, file: &File) -> io::Result<Verdict> {
    let h = &j.header;
    let plan = &h.plan;
    let meta = file.metadata()?;
    if meta.ino() != h.ino {
        return Ok(Verdict::Foreign(format!(
            "the spool is another file now (inode {}, the journal's was {}): it was re-created or replaced",
            meta.ino(),
            h.ino
        )));
    }
    let (len, w, n) = (meta.len(), plan.new_len(), plan.orig_len);
    let m = h.marker.len() as u64;
    let (finished, in_round) = match j.progress {
        Progress::Between { round } => (round, None),
        Progress::InRound { round } => (round, Some(round)),
        Progress::Truncating => {
            let mut at_w = vec![0u8; h.marker.len()];
            // A read error is not "marker absent": deciding so would leave
            // [W, N) in the mailbox for good. It fails this attempt instead.
            let present = len >= w + at_w.len() as u64 && {
                file.read_exact_at(&mut at_w, w)?;
                at_w == h.marker
            };
            if !present {
                // Truncated to W; anything after it was appended since.
                return Ok(if len < w {
                    Verdict::Foreign(format!(
                        "the spool is shorter ({len} bytes) than the update left it ({w})"
                    ))
                } else {
                    Verdict::Done
                });
            }
            (plan.rounds(), None)
        }
    };
    if len < n {
        return Ok(Verdict::Foreign(format!(
            "the spool is shorter ({len} bytes) than when the update began ({n}): another program rewrote it"
        )));
    }
    // One buffer for the tail, the finished rounds and the deleted pieces
    // (up to a whole message); the round in progress and those still to
    // run are read whole (a round is at most `limits::JOURNAL_ROUND`).
    let mut buf = vec![0u8; limits::SCAN_BLOCK];
    // Bytes no round writes, which whoever made the journal must have read.
    if let Some(tail) = h.tail {
        if update::hash_bytes(file, n - tail.len, n, &mut buf)? != tail.hash {
            return Ok(Verdict::Foreign(format!(
                "the {} bytes before offset {n} differ from when the update began: \
                 another program changed the spool, or the journal is not its own",
                tail.len
            )));
        }
    }
    let changed = |what: &str, k: u64| {
        Verdict::Foreign(format!(
            "{what} (round {k} of {}): another program changed the spool",
            plan.rounds()
        ))
    };
    for k in 0..finished {
        let (from, to) = plan.destination(k);
        if update::hash_bytes(file, from, to, &mut buf)? != h.round_hashes[k as usize] {
            return Ok(changed("bytes the update had written differ", k));
        }
    }
    // Past everything written so far, the kept bytes of finished rounds
    // are still at their old place too: they must equal their copies.
    // After the last round the marker may already be at W, whatever the
    // progress record says yet.
    let written_to = match (in_round, finished) {
        (Some(k), _) => plan.destination(k).1,
        (None, f) if f == plan.rounds() => w + m,
        (None, 0) => plan.start,
        (None, f) => plan.destination(f - 1).1,
    };
    if let Some(k) = copied_but_changed(file, plan, finished, written_to, &mut buf)? {
        return Ok(changed(
            "mail the update had copied differs from its copy",
            k,
        ));
    }
    let mut original = None;
    let mut next = finished;
    if let Some(k) = in_round {
        let (from, to) = plan.destination(k);
        let orig = j.original((to - from) as usize)?;
        let new = update::round_bytes(file, plan, k, Some(&orig))?;
        if xxh3_128(&new) != h.round_hashes[k as usize] {
            return Ok(changed("the bytes the update was moving differ", k));
        }
        let mut now = vec![0u8; (to - from) as usize];
        file.read_exact_at(&mut now, from)?;
        let ours = now
            .iter()
            .zip(&orig)
            .zip(&new)
            .all(|((b, o), n)| b == o || b == n);
        if !ours {
            return Ok(changed(
                "the round in progress holds bytes that are neither the original nor the update's",
                k,
            ));
        }
        original = Some(orig);
        next = k + 1;
    }
    for k in next..plan.rounds() {
        let new = update::round_bytes(file, plan, k, None)?;
        if xxh3_128(&new) != h.round_hashes[k as usize] {
            return Ok(changed("mail the update was to move differs", k));
        }
    }
    // The deleted bytes no round has written yet: all of them from the
    // write frontier on (a piece boundary), except the marker once it is
    // known to be there.
    let frontier = match j.progress {
        Progress::Truncating => w + m,
        _ if next == 0 => plan.start,
        _ => plan.destination(next - 1).1,
    };
    if let Some(hashes) = &h.deleted_hashes {
        for ((from, to), hash) in plan.deleted_pieces(m).into_iter().zip(hashes) {
            if from < frontier || update::hash_bytes(file, from, to, &mut buf)? == *hash {
                continue;
            }
            // The marker may be written at W before "truncating" is; only
            // a piece inside its m bytes is read again (a piece elsewhere
            // may be a whole message).
            let marker = (from >= w && to <= w + m) && {
                let mut now = vec![0u8; (to - from) as usize];
                file.read_exact_at(&mut now, from)?;
                now[..] == h.marker[(from - w) as usize..(to - w) as usize]
            };
            if !marker {
                return Ok(Verdict::Foreign(format!(
                    "bytes {from}..{to} of the deleted messages, which the update had not \
                     written yet, differ from when the update began: another program changed the spool"
                )));
            }
        }
    }
    Ok(Verdict::Continue(original))
}
