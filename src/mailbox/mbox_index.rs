//! The mbox maildrop's side of the spool index: RETR/TOP boundary checks, retrieval times, EXPIRE, saving.

use super::{MboxMaildrop, ScanKind};
use crate::limits;
use crate::mailbox::index::StatHint;
use crate::mailbox::index_check::{self, Contents};
use crate::mailbox::indexed_scan;
use crate::mailbox::{index_store, MailboxError};

impl MboxMaildrop {
    /// How the messages were found at login (`None`: no spool file).
    pub fn scan_kind(&self) -> Option<ScanKind> {
        self.scan_kind
    }

    /// Message `index` still scans as it did at login: its `From ` line
    /// after a blank line, the next `From ` line where it ends, and, up to
    /// [`limits::RETR_CHECK_MAX_BYTES`] long, the same content range, size and UID
    /// digest (a message shifted into another's place has another digest).
    pub(super) fn message_in_place(&self, index: usize) -> Result<(), MailboxError> {
        let changed = || MailboxError::Changed {
            path: self.path.clone(),
        };
        let (Some(m), Some(spool)) = (self.contents.messages.get(index), self.spool.as_ref())
        else {
            return Err(changed());
        };
        let last = m.end >= spool.scanned_len;
        match index_check::message_matches(&spool.file, m, last, limits::RETR_CHECK_MAX_BYTES) {
            Ok(true) => Ok(()),
            Ok(false) => Err(changed()),
            Err(source) => Err(MailboxError::Io {
                path: self.path.clone(),
                action: "reading",
                source,
            }),
        }
    }

    /// Forgets the stored index: the spool is not what it says.
    pub(super) fn drop_index(&mut self) {
        self.index_stale = false;
        self.index_doubted = true;
        self.remove_stored_index();
    }

    /// Removes the index file (the maildrop may write a new one later).
    pub(super) fn remove_stored_index(&self) {
        if let (Some(settings), Some(key)) = (&self.settings, &self.key) {
            if let Err(e) = index_store::remove(&settings.state, key) {
                log::warn!(
                    "mailbox {}: cannot remove its index: {e}",
                    self.path.display()
                );
            }
        }
    }

    /// Writes the index if this session learned something (new mail, a
    /// full scan, retrievals, an update). Only sessions write it, and only
    /// under their session lock.
    pub(super) fn save_index(&mut self) {
        let (Some(settings), Some(key), Some(spool)) = (&self.settings, &self.key, &self.spool)
        else {
            return;
        };
        if !self.index_stale || self.index_doubted {
            return;
        }
        self.index_stale = false;
        let saved = spool.file.metadata().and_then(|meta| {
            let path = indexed_scan::index_path(key);
            let index = index_check::build(&path, &meta, &self.contents);
            index_store::store(&settings.state, key, &index)
        });
        if let Err(e) = saved {
            log::warn!(
                "mailbox {}: cannot write its index: {e}",
                self.path.display()
            );
        }
    }

    /// At QUIT: records this session's retrievals and returns the deletion
    /// flags with the messages EXPIRE removes added.
    pub(super) fn with_expired(&mut self, deleted: &[bool], now: i64) -> Vec<bool> {
        let expire = self.settings.as_ref().map(|s| s.policy.expire);
        let contents = &mut self.contents;
        for (t, &now_retrieved) in contents.retrieved.iter_mut().zip(&self.retrieved_now) {
            if now_retrieved && *t == 0 {
                *t = now;
                self.index_stale = true;
            }
        }
        (0..self.messages.len())
            .map(|i| {
                deleted.get(i).copied().unwrap_or(false)
                    || expire.is_some_and(|e| e.is_due(contents.retrieved[i], now))
            })
            .collect()
    }
}

/// The contents after the update removed the deleted messages' raw
/// ranges: the kept ones move down by the bytes removed before them.
/// `stat`: the spool's, taken right after the update under its locks.
pub(super) fn compacted(contents: &Contents, deleted: &[bool], stat: StatHint) -> Contents {
    let mut removed = 0;
    let mut out = Contents {
        messages: Vec::new(),
        retrieved: Vec::new(),
        scanned_len: 0,
        full_scan_at: contents.full_scan_at,
        stat,
    };
    for (i, (m, &t)) in contents
        .messages
        .iter()
        .zip(&contents.retrieved)
        .enumerate()
    {
        if deleted.get(i).copied().unwrap_or(false) {
            removed += m.end - m.from_offset;
            continue;
        }
        let mut m = m.clone();
        m.from_offset -= removed;
        m.content_offset -= removed;
        m.end -= removed;
        out.messages.push(m);
        out.retrieved.push(t);
    }
    out.scanned_len = contents.scanned_len - removed;
    out
}

#[cfg(test)]
#[path = "mbox_index_tests.rs"]
mod tests;
