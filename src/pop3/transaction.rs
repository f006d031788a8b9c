//! The TRANSACTION state: the commands that read and mark one open maildrop.

use crate::counters::{self, Counter};
use std::io::{self, Write};

use super::command::{self, Command, MsgArg};
use super::reply::{self, RespCode};
use crate::mailbox::{Maildrop, TransferError};

/// How a TRANSACTION command went, for the session's bookkeeping.
pub(super) enum Handled {
    /// Served: resets the bad-command count.
    Done,
    /// Refused for a reason that is not the client misspeaking (no such
    /// message): neither counts nor resets.
    Failed,
    /// Malformed: counts towards the bad-command limit.
    Bad,
    /// The connection must close (a transfer broke after `+OK`).
    Close(&'static str),
}

/// A logged-in session's view of its maildrop.
pub(super) struct Transaction {
    maildrop: Box<dyn Maildrop>,
    user: String,
    /// One flag per message, set by DELE, cleared by RSET.
    deleted: Vec<bool>,
    /// Messages not deleted, and their octets: what STAT reports.
    live: (usize, u64),
    retr: (u64, u64),
    top: u64,
}

impl Transaction {
    pub(super) fn new(maildrop: Box<dyn Maildrop>, user: String) -> Transaction {
        let messages = maildrop.messages();
        let live = (messages.len(), messages.iter().map(|m| m.size).sum());
        Transaction {
            deleted: vec![false; messages.len()],
            maildrop,
            user,
            live,
            retr: (0, 0),
            top: 0,
        }
    }

    pub(super) fn user(&self) -> &str {
        &self.user
    }

    /// Messages and octets not marked deleted.
    pub(super) fn totals(&self) -> (usize, u64) {
        self.live
    }

    pub(super) fn handle(
        &mut self,
        cmd: &Command<'_>,
        peer: &str,
        out: &mut dyn Write,
    ) -> io::Result<Handled> {
        match *cmd {
            Command::Stat => {
                let (count, octets) = self.live;
                reply::ok(out, format_args!("{count} {octets}"))?;
            }
            Command::List(None) => {
                let (count, octets) = self.live;
                reply::ok(out, format_args!("{count} messages ({octets} octets)"))?;
                for (i, m) in self.visible() {
                    write!(out, "{} {}\r\n", i + 1, m.size)?;
                }
                reply::end_multiline(out)?;
            }
            Command::Uidl(None) => {
                reply::ok(out, format_args!("unique-id listing follows"))?;
                for (i, m) in self.visible() {
                    write!(out, "{} {}\r\n", i + 1, m.uid)?;
                }
                reply::end_multiline(out)?;
            }
            Command::List(Some(arg)) => {
                let i = match self.resolve(arg, out)? {
                    Ok(i) => i,
                    Err(step) => return Ok(step),
                };
                let size = self.size(i);
                reply::ok(out, format_args!("{} {size}", i + 1))?;
            }
            Command::Uidl(Some(arg)) => {
                let i = match self.resolve(arg, out)? {
                    Ok(i) => i,
                    Err(step) => return Ok(step),
                };
                let uid = self
                    .maildrop
                    .messages()
                    .get(i)
                    .map_or("", |m| m.uid.as_str());
                reply::ok(out, format_args!("{} {uid}", i + 1))?;
            }
            Command::Retr(arg) => {
                let i = match self.resolve(arg, out)? {
                    Ok(i) => i,
                    Err(step) => return Ok(step),
                };
                if !self.in_place("RETR", i, peer, out)? {
                    return Ok(Handled::Failed);
                }
                let size = self.size(i);
                reply::ok(out, format_args!("{size} octets"))?;
                if let Err(e) = self.maildrop.write_message(i, None, out) {
                    self.log_transfer_error("RETR", i, peer, &e);
                    return Ok(Handled::Close("transfer-error"));
                }
                reply::end_multiline(out)?;
                self.retr.0 += 1;
                self.retr.1 += size;
                counters::bump(Counter::MessagesRetrieved);
                counters::add(Counter::BytesRetrieved, size);
            }
            Command::Top(arg, lines) => {
                let i = match self.resolve(arg, out)? {
                    Ok(i) => i,
                    Err(step) => return Ok(step),
                };
                if !self.in_place("TOP", i, peer, out)? {
                    return Ok(Handled::Failed);
                }
                reply::ok(out, format_args!("top of message follows"))?;
                if let Err(e) = self.maildrop.write_message(i, Some(lines), out) {
                    self.log_transfer_error("TOP", i, peer, &e);
                    return Ok(Handled::Close("transfer-error"));
                }
                reply::end_multiline(out)?;
                self.top += 1;
            }
            Command::Dele(arg) => {
                let i = match self.resolve(arg, out)? {
                    Ok(i) => i,
                    Err(step) => return Ok(step),
                };
                let size = self.size(i);
                if let Some(flag) = self.deleted.get_mut(i) {
                    *flag = true;
                    self.live.0 -= 1;
                    self.live.1 -= size;
                }
                reply::ok(out, format_args!("message {} deleted", i + 1))?;
            }
            Command::Noop => reply::ok(out, format_args!(""))?,
            Command::Rset => {
                self.deleted.iter_mut().for_each(|d| *d = false);
                let messages = self.maildrop.messages();
                self.live = (messages.len(), messages.iter().map(|m| m.size).sum());
                let (count, octets) = self.live;
                reply::ok(
                    out,
                    format_args!("maildrop has {count} messages ({octets} octets)"),
                )?;
            }
            // The session handles the commands valid in both states.
            _ => {
                reply::err(out, "command not valid in this state")?;
                return Ok(Handled::Bad);
            }
        }
        Ok(Handled::Done)
    }

    /// QUIT: UPDATE state. Applies the deletions and says goodbye.
    pub(super) fn quit(self, peer: &str, out: &mut dyn Write) -> io::Result<()> {
        let Transaction {
            maildrop,
            user,
            deleted,
            retr,
            top,
            live,
        } = self;
        let all = maildrop.messages();
        let everything = (all.len(), all.iter().map(|m| m.size).sum());
        let marked = (everything.0 - live.0, everything.1 - live.1);
        let stats = |dele: (usize, u64), kept: (usize, u64), reason: &str| {
            log_logout(&user, peer, retr, top, dele, kept, reason)
        };
        match maildrop.commit(&deleted) {
            Ok(report) => {
                counters::bump(Counter::UpdatesCommitted);
                counters::add(Counter::MessagesDeleted, report.deleted as u64);
                stats(
                    (report.deleted, report.deleted_bytes),
                    (report.kept, report.kept_bytes),
                    "quit",
                );
                reply::ok(
                    out,
                    format_args!("ironpop signing off ({} messages left)", report.kept),
                )
            }
            Err(e) => {
                counters::bump(Counter::UpdatesFailed);
                log::warn!("update failed: user={user} rip={peer}: {e}");
                stats(marked, everything, "update-failed");
                let text = if e.update_pending() {
                    "could not finish updating the mailbox; the deletions are completed at the next login"
                } else {
                    "could not update the mailbox; no messages were deleted"
                };
                reply::err_code(out, RespCode::SysTemp, text)
            }
        }
    }

    /// The session ends without QUIT: the maildrop is dropped unchanged.
    pub(super) fn abort(self, peer: &str, reason: &str) {
        let all = self.maildrop.messages();
        let everything = (all.len(), all.iter().map(|m| m.size).sum::<u64>());
        let marked = (everything.0 - self.live.0, everything.1 - self.live.1);
        log_logout(
            &self.user, peer, self.retr, self.top, marked, everything, reason,
        );
    }

    /// The messages not marked deleted, with their 0-based index.
    fn visible(&self) -> impl Iterator<Item = (usize, &crate::mailbox::MessageInfo)> {
        self.maildrop
            .messages()
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.deleted.get(*i).copied().unwrap_or(true))
    }

    fn size(&self, index: usize) -> u64 {
        self.maildrop.messages().get(index).map_or(0, |m| m.size)
    }

    /// The index of the message `arg` names, or, after replying why there
    /// is none, how that counts.
    fn resolve(&self, arg: MsgArg<'_>, out: &mut dyn Write) -> io::Result<Result<usize, Handled>> {
        match command::message_number(arg, &self.deleted) {
            Ok(i) => Ok(Ok(i)),
            Err(e) => {
                reply::err(out, &e)?;
                Ok(Err(if e.is_syntax() {
                    Handled::Bad
                } else {
                    Handled::Failed
                }))
            }
        }
    }

    /// Before `+OK` to RETR or TOP: message `index` is still where the scan
    /// found it; if not, says so with `-ERR [SYS/TEMP]` and returns false.
    fn in_place(
        &mut self,
        verb: &str,
        index: usize,
        peer: &str,
        out: &mut dyn Write,
    ) -> io::Result<bool> {
        let Err(e) = self.maildrop.check_message(index) else {
            return Ok(true);
        };
        let (user, n) = (&self.user, index + 1);
        log::warn!("{verb} {n} refused: user={user} rip={peer}: {e}");
        reply::err_code(
            out,
            RespCode::SysTemp,
            "the mailbox was changed by another program; log in again",
        )?;
        Ok(false)
    }

    fn log_transfer_error(&self, verb: &str, index: usize, peer: &str, e: &TransferError) {
        let (user, n) = (&self.user, index + 1);
        match e {
            TransferError::Mailbox(e) => {
                log::warn!("{verb} {n} failed: user={user} rip={peer}: {e}")
            }
            TransferError::Client(e) => {
                log::info!("{verb} {n} aborted: user={user} rip={peer}: client connection: {e}")
            }
        }
    }
}

/// The one summary line per logged-in session (also for fail2ban and
/// accounting); `dele` are the messages marked (or, after QUIT, removed).
fn log_logout(
    user: &str,
    peer: &str,
    retr: (u64, u64),
    top: u64,
    dele: (usize, u64),
    kept: (usize, u64),
    reason: &str,
) {
    log::info!(
        "logout: user={user} rip={peer} retr={}/{} top={top} dele={}/{} kept={}/{} reason={reason}",
        retr.0,
        retr.1,
        dele.0,
        dele.1,
        kept.0,
        kept.1
    );
}
