//! The mbox maildrop's side of the spool index: RETR/TOP boundary checks, retrieval times, EXPIRE, saving.

use std::io;
use std::os::unix::fs::FileExt;

use super::{MboxMaildrop, ScanKind};
use crate::mailbox::index_check::{self, Contents};
use crate::mailbox::indexed_scan;
use crate::mailbox::{index_store, policy, MailboxError};

impl MboxMaildrop {
    /// How the messages were found at login (`None`: no spool file).
    pub fn scan_kind(&self) -> Option<ScanKind> {
        self.scan_kind
    }

    /// Message `index` still starts with its `From ` line after a blank
    /// line, and ends where the next one starts (or, for the last, the
    /// file still reaches its end).
    pub(super) fn message_in_place(&self, index: usize) -> Result<(), MailboxError> {
        let changed = || MailboxError::Changed {
            path: self.path.clone(),
        };
        let (Some(span), Some(spool)) = (self.spans.get(index), self.spool.as_ref()) else {
            return Err(changed());
        };
        let read = |at: u64, want: &[u8]| -> Result<(), MailboxError> {
            let mut buf = vec![0u8; want.len()];
            match spool.file.read_exact_at(&mut buf, at) {
                Ok(()) if buf == want => Ok(()),
                Ok(()) => Err(changed()),
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(changed()),
                Err(source) => Err(MailboxError::Io {
                    path: self.path.clone(),
                    action: "reading",
                    source,
                }),
            }
        };
        if span.has_from_line() {
            match span.from_offset.checked_sub(1) {
                Some(before) => read(before, b"\nFrom ")?,
                None => read(0, b"From ")?,
            }
        }
        let content_end = span.content_offset + span.content_len;
        if span.end > content_end {
            // The blank line that separates it from the next message.
            read(span.end - 1, b"\n")?;
        }
        if span.end < spool.scanned_len {
            read(span.end, b"From ")?;
        } else if span.end > 0 {
            // The last message: the file must still reach its end.
            let mut last = [0u8; 1];
            match spool.file.read_exact_at(&mut last, span.end - 1) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(changed()),
                Err(source) => {
                    return Err(MailboxError::Io {
                        path: self.path.clone(),
                        action: "reading",
                        source,
                    })
                }
            }
        }
        Ok(())
    }

    /// Forgets the stored index: the spool is not what it says.
    pub(super) fn drop_index(&mut self) {
        self.index_stale = false;
        self.index_doubted = true;
        self.remove_stored_index();
    }

    /// Removes the index file (the maildrop may write a new one later).
    pub(super) fn remove_stored_index(&self) {
        if let Some(settings) = &self.settings {
            if let Err(e) = index_store::remove(&settings.state, &self.path) {
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
        let (Some(settings), Some(spool)) = (&self.settings, &self.spool) else {
            return;
        };
        if !self.index_stale || self.index_doubted {
            return;
        }
        self.index_stale = false;
        let saved = spool.file.metadata().and_then(|meta| {
            let path = indexed_scan::index_path(&self.path);
            let index = index_check::build(&path, &meta, &self.contents, policy::now());
            index_store::store(&settings.state, &self.path, &index)
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
pub(super) fn compacted(contents: &Contents, deleted: &[bool]) -> Contents {
    let mut removed = 0;
    let mut out = Contents {
        messages: Vec::new(),
        retrieved: Vec::new(),
        scanned_len: 0,
        full_scan_at: contents.full_scan_at,
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
