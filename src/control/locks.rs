//! `--who` in inetd mode: every session is its own process, so the sessions are found by the mailbox locks they hold in `state_dir`.
//!
//! A session lock file holds `SECONDS PID SPOOL` while it is locked (see
//! `mailbox::session_lock`); a lock file nobody holds is an old session's.
//! The user is the one the `mailbox` template puts in the spool's path
//! (`%u`), or else the spool's owner.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use nix::fcntl::OFlag;

use super::protocol::field;
use super::render::{aligned, utc};
use crate::limits::LOCK_FILE_MAX_LINE;
use crate::mailbox::{ofd, session_lock};

/// One locked mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub user: String,
    pub since: Option<u64>,
    pub spool: String,
}

/// The mailboxes locked in `state_dir` now, sorted by user.
pub fn held(state_dir: &Path, template: &str) -> io::Result<Vec<Held>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(state_dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if !name.as_encoded_bytes().ends_with(b".session") {
            continue;
        }
        let Ok(file) = OpenOptions::new()
            .read(true)
            .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK).bits())
            .open(entry.path())
        else {
            continue;
        };
        if !ofd::is_locked(&file).unwrap_or(false) {
            continue;
        }
        found.push(describe(file, template));
    }
    found.sort_by(|a, b| (&a.user, &a.spool).cmp(&(&b.user, &b.spool)));
    Ok(found)
}

fn describe(file: File, template: &str) -> Held {
    let mut text = String::new();
    let _ = file.take(LOCK_FILE_MAX_LINE).read_to_string(&mut text);
    match session_lock::read_holder(&text) {
        // The lock file is written by the unprivileged session process:
        // its text reaches an administrator's terminal only as plain
        // characters (no escape sequences).
        Some((since, spool)) => Held {
            user: user_of(template, spool).map_or_else(|| "?".into(), |u| field(&u)),
            since: Some(since),
            spool: field(spool),
        },
        // Locked by a version that did not note its holder.
        None => Held {
            user: "?".into(),
            since: None,
            spool: "?".into(),
        },
    }
}

/// The user whose name the template's `%u` put in `spool`; else the
/// spool's owner.
pub fn user_of(template: &str, spool: &str) -> Option<String> {
    if let Some(user) = from_template(template, spool) {
        return Some(user);
    }
    let uid = fs::symlink_metadata(spool).ok()?.uid();
    let user = nix::unistd::User::from_uid(uid.into()).ok()??;
    Some(user.name)
}

fn from_template(template: &str, spool: &str) -> Option<String> {
    if template.contains("%h") || template.matches("%u").count() != 1 {
        return None;
    }
    let (prefix, suffix) = template.split_once("%u")?;
    let (prefix, suffix) = (prefix.replace("%%", "%"), suffix.replace("%%", "%"));
    let user = spool.strip_prefix(&prefix)?.strip_suffix(&suffix)?;
    (!user.is_empty() && !user.contains('/')).then(|| user.to_owned())
}

/// The `--who` table of inetd mode.
pub fn who_table(held: &[Held]) -> String {
    let mut table = vec![["USER", "SINCE (UTC)", "MAILBOX"].map(str::to_owned)];
    table.extend(held.iter().map(|h| {
        [
            h.user.clone(),
            h.since.map_or_else(|| "?".into(), utc),
            h.spool.clone(),
        ]
    }));
    aligned(&table)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailbox::session_lock::SessionLock;
    use crate::mailbox::state::{SpoolKey, StateDir};

    #[test]
    fn a_lock_file_cannot_send_escape_sequences_to_the_terminal() {
        let (_dir, path) = crate::test_support::scratch_file(
            "x.session",
            "1700000000 42 /var/mail/\u{1b}[2J\u{7}eve\n",
        );
        let held = describe(File::open(&path).unwrap(), "/var/mail/%u");
        assert_eq!(held.spool, "/var/mail/?[2J?eve");
        assert_eq!(held.user, "?[2J?eve");
        assert!(!who_table(&[held]).contains('\u{1b}'));
    }

    #[test]
    fn users_from_the_template() {
        assert_eq!(
            from_template("/var/mail/%u", "/var/mail/alice"),
            Some("alice".into())
        );
        assert_eq!(
            from_template("/srv/%u.mbox", "/srv/bob.mbox"),
            Some("bob".into())
        );
        assert_eq!(from_template("/var/mail/%u", "/var/mail/a/b"), None);
        assert_eq!(from_template("%h/mbox", "/home/c/mbox"), None);
        assert_eq!(from_template("/m/%%/%u", "/m/%/dave"), Some("dave".into()));
    }

    #[test]
    fn only_held_locks_are_listed() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path().join("state"));
        let mail = dir.path().join("mail");
        fs::create_dir(&mail).unwrap();
        let template = format!("{}/%u", mail.canonicalize().unwrap().display());
        let acquire = |spool: &std::path::Path| {
            SessionLock::acquire(&state, spool, &SpoolKey::of(spool)).unwrap()
        };
        let alice = acquire(&mail.join("alice"));
        drop(acquire(&mail.join("bob")));
        let held = held(state.path(), &template).unwrap();
        assert_eq!(held.len(), 1, "{held:?}");
        assert_eq!(held[0].user, "alice");
        assert!(held[0].since.is_some());
        let table = who_table(&held);
        assert!(table.starts_with("USER   SINCE (UTC)"), "{table}");
        drop(alice);
        assert!(super::held(state.path(), &template).unwrap().is_empty());
    }
}
