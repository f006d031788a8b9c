//! Before the first connection: recover every unfinished update journal in `state_dir`, and remove the dotlocks a dead ironpop of this host left.
//!
//! Runs in the daemon (and in each inetd process) after the privilege
//! drop, before anything is served: a crash never leaves a damaged spool
//! waiting for its owner's next login. With a privileged helper, a
//! journal that names its account (every journal a login wrote) has its
//! spool opened by the helper over the startup channel, with a login's
//! checks and only if it is that account's own spool (`privsep/helper.rs`);
//! the daemon closes that channel when this is done, before its first
//! accept. Otherwise the spool is opened as the daemon's user, which can
//! open every spool of a mail spool directory (group `mail`); a journal
//! whose spool it cannot open keeps waiting for its owner's next login.
//! The recovery itself always runs here, unprivileged, on the descriptor:
//! `state_dir` belongs to the daemon's user, and root must not write the
//! files a journal names.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use super::delivery_lock::DeliveryLocks;
use super::dotlock;
use super::journal::{self, Journal, JournalError};
use super::mbox::{open_spool, MboxSettings};
use super::recovery::{self, OpenedBy};
use super::session_lock::SessionLock;
use super::state::{self, SpoolKey};
use crate::account::{AuthOutcome, Login, Spool};
use crate::config::Config;
use crate::limits::JOURNAL_TAIL_CHECK_MIN;

/// Opens the spool a journal names for the account it names, with a
/// login's checks (the privileged helper's startup channel): `user`,
/// `spool`.
pub type OwnerOpen<'a> = &'a dyn Fn(&str, &Path) -> AuthOutcome<Login>;

/// [`recover_all`] for a configuration: its `state_dir`, lock settings and
/// spool directory.
pub fn recover_for(config: &Config, owner_open: Option<OwnerOpen>) {
    let dirs: Vec<PathBuf> = spool_dir(&config.mailbox).into_iter().collect();
    recover_all(&MboxSettings::from_config(config), &dirs, owner_open);
}

/// Recovers every journal in `state_dir` (spools opened by `owner_open`
/// where a journal names its account), then removes the dotlocks of dead
/// ironpop processes of this host next to the spools `state_dir` knows
/// and in `spool_dirs`. Everything is logged; nothing fails.
pub fn recover_all(settings: &MboxSettings, spool_dirs: &[PathBuf], owner_open: Option<OwnerOpen>) {
    let names = match entries(settings.state.path()) {
        Ok(names) => names,
        Err(e) => {
            log::error!(
                "startup recovery: cannot read {}: {e}",
                settings.state.path().display()
            );
            return;
        }
    };
    let mut spools = Vec::new();
    for name in &names {
        let path = settings.state.path().join(name);
        // A `.journal.new` is left to the next login of its spool, which
        // removes it under the session lock: one could be in the middle
        // of `Journal::create` in a concurrent `-i` process.
        if name.ends_with(".journal") {
            recover_one(settings, &path, owner_open);
        }
        let key = name
            .strip_suffix(".journal")
            .or_else(|| name.strip_suffix(".session"));
        spools.extend(key.and_then(state::spool_of_key));
    }
    for dir in spool_dirs {
        if let Ok(names) = entries(dir) {
            spools.extend(
                names
                    .iter()
                    .filter_map(|n| n.strip_suffix(".lock"))
                    .map(|n| dir.join(n)),
            );
        }
    }
    spools.sort();
    spools.dedup();
    for spool in spools {
        remove_dead_dotlock(&dotlock::lock_path(&spool));
    }
}

/// The names in `dir`; none when it does not exist.
fn entries(dir: &Path) -> io::Result<Vec<String>> {
    let list = match fs::read_dir(dir) {
        Ok(list) => list,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut names = Vec::new();
    for entry in list {
        names.push(entry?.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}

fn recover_one(settings: &MboxSettings, jpath: &Path, owner_open: Option<OwnerOpen>) {
    let state = &settings.state;
    // Which spool, for its session lock: the journal is read again under
    // the lock, and only that reading is checked and applied. (Reading it
    // whole twice costs one journal's decode per crash, at startup only.)
    let Some(named) = read(jpath).map(|j| j.header.spool) else {
        return;
    };
    let key = SpoolKey::of(&named);
    if state.journal(&key) != jpath {
        return set_aside(
            jpath,
            &format!(
                "it names the spool {}, whose journal has another name",
                named.display()
            ),
        );
    }
    let _session = match SessionLock::acquire(state, &named, &key) {
        Ok(lock) => lock,
        Err(e) => return skip(&named, &e),
    };
    // Read once under the lock: what is checked here is what recovery
    // applies, whatever is renamed into the journal's place meanwhile.
    let Some(journal) = read(jpath) else { return };
    let spool = journal.header.spool.clone();
    if SpoolKey::of(&spool) != key {
        return set_aside(
            jpath,
            "it was replaced by a journal of another spool while its session lock was taken",
        );
    }
    // The helper opens a spool only for a journal whose proof includes
    // bytes its maker must have read (older journals have no tail check:
    // the daemon opens their spools itself, as before).
    let checked = journal
        .header
        .tail
        .is_some_and(|t| t.len >= JOURNAL_TAIL_CHECK_MIN);
    let account = journal.header.account.as_deref().filter(|_| checked);
    let (opened, by) = match (owner_open, account) {
        (Some(open), Some(user)) => (
            opened_for(user, &spool, open(user, &spool)),
            OpenedBy::Helper,
        ),
        _ => (
            open_spool(&spool).map_err(|e| e.to_string()),
            OpenedBy::Daemon,
        ),
    };
    let file = match opened {
        Ok(file) => file,
        Err(e) => return skip(&spool, &e),
    };
    let _locks = match &file {
        Some(f) => match DeliveryLocks::acquire(f, &spool, &settings.locks) {
            Ok(locks) => Some(locks),
            Err(e) => return skip(&spool, &e),
        },
        None => None,
    };
    match recovery::complete(journal, &spool, file.as_ref(), by) {
        Ok(done) => log::warn!("startup recovery: {}", done.describe(&spool)),
        Err(e) => skip(&spool, &e),
    }
}

fn skip(spool: &Path, why: &dyn std::fmt::Display) {
    log::warn!(
        "startup recovery: spool={} outcome=left-for-next-login ({why})",
        spool.display()
    )
}

/// The journal at `jpath`; `None` when there is none any more, or it
/// cannot be read now (logged) or ever (set aside).
fn read(jpath: &Path) -> Option<Journal> {
    match Journal::open(jpath) {
        Ok(journal) => journal,
        Err(JournalError::Io(e)) => {
            log::warn!(
                "startup recovery: journal {} outcome=left-for-next-login (cannot read it: {e})",
                jpath.display()
            );
            None
        }
        Err(JournalError::Unusable(reason)) => {
            set_aside(jpath, &format!("the journal is unusable: {reason}"));
            None
        }
    }
}

/// The spool the privileged helper opened for `user`, if it is the one
/// the journal names (`spool`); otherwise why not.
fn opened_for(
    user: &str,
    spool: &Path,
    answer: AuthOutcome<Login>,
) -> Result<Option<File>, String> {
    let login = match answer {
        AuthOutcome::Accepted(login) => login,
        AuthOutcome::Rejected => {
            return Err(format!(
                "the privileged helper would not open it: it is not the spool of a usable account {user:?}"
            ))
        }
        AuthOutcome::Unavailable(why) => {
            return Err(format!("the privileged helper could not open it: {why}"))
        }
    };
    let p = &login.principal;
    if p.user != user || p.mailbox.as_os_str() != spool.as_os_str() {
        return Err(format!(
            "the privileged helper opened {} of {:?} instead",
            p.mailbox.display(),
            p.user
        ));
    }
    match login.spool {
        Spool::Opened(file) => Ok(file),
        Spool::Refused(why) => Err(format!("the privileged helper refused it: {why}")),
        Spool::Failed(errno) => Err(format!(
            "the privileged helper could not open it: {}",
            io::Error::from_raw_os_error(errno)
        )),
        Spool::ByPath => Err("the privileged helper did not open it".into()),
    }
}

fn set_aside(jpath: &Path, reason: &str) {
    match journal::set_aside(jpath) {
        Ok(aside) => log::error!(
            "startup recovery: journal {} set aside as {}: {reason}",
            jpath.display(),
            aside.display()
        ),
        Err(e) => log::error!(
            "startup recovery: journal {} ({reason}) cannot be set aside: {e}",
            jpath.display()
        ),
    }
}

/// Removes `lock` if a dead ironpop of this host left it.
fn remove_dead_dotlock(lock: &Path) {
    let Ok(meta) = fs::symlink_metadata(lock) else {
        return;
    };
    if !dotlock::left_by_dead_ironpop(lock) {
        return;
    }
    match dotlock::remove_if_same(lock, &meta) {
        Ok(true) => log::warn!(
            "startup recovery: removed dotlock {} left by an ironpop process of this host that no longer exists",
            lock.display()
        ),
        Ok(false) => {}
        Err(e) => log::warn!("cannot remove dotlock {}: {e}", lock.display()),
    }
}

/// The spools whose update journals wait for recovery (for `ironpop -t`).
pub fn waiting(state_dir: &Path) -> io::Result<Vec<String>> {
    Ok(entries(state_dir)?
        .into_iter()
        .filter(|n| n.ends_with(".journal"))
        .map(|n| {
            let path = state_dir.join(&n);
            match Journal::open(&path) {
                Ok(Some(j)) => format!("{} (journal {})", j.header.spool.display(), path.display()),
                _ => format!("{} (unusable; it will be set aside)", path.display()),
            }
        })
        .collect())
}

/// The directory of the spools when the `mailbox` template puts them all
/// in one (`/var/mail/%u`); none for per-home spools.
pub fn spool_dir(template: &str) -> Option<PathBuf> {
    let dir = Path::new(template).parent()?;
    (!dir.as_os_str().is_empty() && !dir.to_string_lossy().contains('%')).then(|| dir.to_path_buf())
}
