//! `passdb = system`: passwd (getpwnam) + `/etc/shadow`, verified with libxcrypt; locked and expired accounts refused.
//!
//! Only the privileged helper (root) can read `/etc/shadow`; a daemon
//! started without root cannot use this database and says so at startup.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use nix::unistd::User;

use super::checked::Checked;
use super::crypt;
use super::passwd_file::{accept, unusable_mailbox};
use super::system_decoy::{ShadowDecoy, LOGIN_DEFS};
use crate::account::AuthOutcome;
use crate::limits::MAX_SYSTEM_FILE;

/// Where the shadow database lives.
pub const SHADOW: &str = "/etc/shadow";

/// The fields of one `/etc/shadow` line that decide whether it may log in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShadowEntry {
    pub hash: String,
    /// Days since 1970-01-01 of the last password change; 0 forces a change.
    pub last_change: Option<i64>,
    pub max_days: Option<i64>,
    pub inactive_days: Option<i64>,
    /// Day the account expires.
    pub expire: Option<i64>,
}

/// Why an account with a correct password is still refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unusable {
    Locked,
    AccountExpired,
    PasswordExpired,
    MustChangePassword,
}

impl Unusable {
    fn describe(self) -> &'static str {
        match self {
            Unusable::Locked => "is locked (password field starts with '!' or '*', or is empty)",
            Unusable::AccountExpired => "has expired (shadow expire date)",
            Unusable::PasswordExpired => "has an expired password (shadow max days)",
            Unusable::MustChangePassword => "must change its password first (shadow last change 0)",
        }
    }
}

fn day(field: &str) -> Option<i64> {
    field.trim().parse().ok()
}

/// The entry for `user` in shadow-format text, if any.
pub fn find_entry(text: &str, user: &str) -> Option<ShadowEntry> {
    text.lines()
        .filter_map(parse_line)
        .find_map(|(name, entry)| (name == user).then_some(entry))
}

/// One shadow(5) line: the account name and its entry.
fn parse_line(line: &str) -> Option<(&str, ShadowEntry)> {
    let mut f = line.split(':');
    let name = f.next()?;
    let hash = f.next()?.to_owned();
    let last_change = f.next().and_then(day);
    let _min = f.next();
    let max_days = f.next().and_then(day);
    let _warn = f.next();
    let inactive_days = f.next().and_then(day);
    let expire = f.next().and_then(day);
    Some((
        name,
        ShadowEntry {
            hash,
            last_change,
            max_days,
            inactive_days,
            expire,
        },
    ))
}

/// How many entries of shadow-format `text` could log in on day `today`
/// with a password (usable, and a hash libxcrypt checks).
pub fn count_usable(text: &str, today: i64) -> usize {
    text.lines()
        .filter_map(parse_line)
        .filter(|(_, e)| usable(e, today).is_ok() && crypt::is_supported(&e.hash))
        .count()
}

/// For `ironpop -t` only: the usable entries of the shadow file. This
/// reads every hash, so the daemon never calls it (its startup check only
/// opens the file).
pub fn census() -> Result<usize, String> {
    read_shadow(Path::new(SHADOW)).map(|text| count_usable(&text, today()))
}

/// Whether the entry may log in on day `today` (days since the epoch),
/// following shadow(5) as pam_unix reads it.
pub fn usable(entry: &ShadowEntry, today: i64) -> Result<(), Unusable> {
    if entry.hash.is_empty() || entry.hash.starts_with('!') || entry.hash.starts_with('*') {
        return Err(Unusable::Locked);
    }
    if entry.expire.is_some_and(|e| today >= e) {
        return Err(Unusable::AccountExpired);
    }
    match (entry.last_change, entry.max_days) {
        (Some(0), _) => Err(Unusable::MustChangePassword),
        // max of 99999 (the default) means "never" in practice; the sum
        // saturates instead of overflowing on silly values.
        (Some(last), Some(max)) if max >= 0 && today > last.saturating_add(max) => {
            Err(Unusable::PasswordExpired)
        }
        _ => Ok(()),
    }
}

fn today() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| {
            i64::try_from(d.as_secs() / 86_400).unwrap_or(i64::MAX)
        })
}

/// The system account database.
pub struct SystemDb {
    shadow: PathBuf,
    mailbox_template: String,
    /// What an unknown user or a locked account costs.
    decoy: ShadowDecoy,
}

impl SystemDb {
    pub fn new(mailbox_template: String) -> SystemDb {
        SystemDb::with_shadow(PathBuf::from(SHADOW), mailbox_template)
    }

    /// For tests: another shadow file.
    pub fn with_shadow(shadow: PathBuf, mailbox_template: String) -> SystemDb {
        SystemDb {
            decoy: ShadowDecoy::new(shadow.clone(), PathBuf::from(LOGIN_DEFS)),
            shadow,
            mailbox_template,
        }
    }

    /// Startup check: the shadow file must be readable (it is root's).
    /// Opened, not read: this runs in the process that later drops
    /// privileges, which must never hold a password hash.
    pub fn check(&self) -> Result<(), String> {
        let cannot = |e: std::io::Error| format!("cannot read {}: {e}", self.shadow.display());
        File::open(&self.shadow)
            .map(drop)
            .map_err(cannot)
            .map_err(|e| {
                if nix::unistd::geteuid().is_root() {
                    e
                } else {
                    format!("{e}; passdb = system needs ironpop to be started as root")
                }
            })
    }

    /// The account and its password entry (shadow, or a hash kept in
    /// passwd itself), or the answer to give when there is none. `Err(None)`
    /// means rejected; `Err(Some(why))` means the backend failed.
    fn account(&self, user: &str) -> Result<(User, ShadowEntry), Option<String>> {
        if user.is_empty() || user.contains([':', '/', '\0', '\n']) {
            return Err(None);
        }
        let account = match User::from_name(user) {
            Ok(Some(a)) => a,
            Ok(None) => return Err(None),
            Err(e) => return Err(Some(format!("cannot look up user {user:?}: {e}"))),
        };
        let stored = account.passwd.to_string_lossy().into_owned();
        let entry = if stored == "x" {
            let text = read_shadow(&self.shadow).map_err(Some)?;
            match find_entry(&text, user) {
                Some(e) => e,
                None => {
                    log::warn!(
                        "login refused: user {user:?} has no entry in {}",
                        self.shadow.display()
                    );
                    return Err(None);
                }
            }
        } else {
            // A hash kept in passwd itself (no shadow): it never expires.
            ShadowEntry {
                hash: stored,
                last_change: None,
                max_days: None,
                inactive_days: None,
                expire: None,
            }
        };
        Ok((account, entry))
    }

    /// Checks `user`'s password; on success also names the spool's owner.
    pub fn verify_account(&self, user: &str, password: &[u8]) -> Checked {
        let (account, entry) = match self.account(user) {
            Ok(found) => found,
            // An unknown user costs what a typical account's wrong
            // password costs; a backend failure is answered [SYS/TEMP]
            // whoever asks, so its timing tells nothing.
            Err(None) => {
                self.decoy.get().spend(password);
                return (AuthOutcome::Rejected, None);
            }
            Err(Some(why)) => return (AuthOutcome::Unavailable(why), None),
        };
        if let Err(why @ Unusable::Locked) = usable(&entry, today()) {
            log::info!("login refused: account {user:?} {}", why.describe());
            self.decoy.get().spend(password);
            return (AuthOutcome::Rejected, None);
        }
        if !crypt::is_supported(&entry.hash) {
            // Costs what a typical account costs, so the account's
            // existence does not show in the timing.
            self.decoy.get().spend(password);
            return (AuthOutcome::Rejected, None);
        }
        if !crypt::verify(&entry.hash, password) {
            return (AuthOutcome::Rejected, None);
        }
        // Only a caller who knows the password learns that the account
        // expired, and only in the log.
        if let Err(why) = usable(&entry, today()) {
            log::warn!("login refused: account {user:?} {}", why.describe());
            return (AuthOutcome::Rejected, None);
        }
        self.accepted(user, &account)
    }

    /// The account without a password check (a verified client
    /// certificate named it); locked and expired accounts are refused, the
    /// same checks as for a password login.
    pub fn lookup_account(&self, user: &str) -> Checked {
        let (account, entry) = match self.account(user) {
            Ok(found) => found,
            Err(failure) => {
                return (
                    failure.map_or(AuthOutcome::Rejected, AuthOutcome::Unavailable),
                    None,
                )
            }
        };
        if let Err(why) = usable(&entry, today()) {
            log::warn!("login refused: account {user:?} {}", why.describe());
            return (AuthOutcome::Rejected, None);
        }
        self.accepted(user, &account)
    }

    /// The verified account with its spool path, and the uid that must own
    /// the spool.
    fn accepted(&self, user: &str, account: &User) -> Checked {
        accept(&self.mailbox_template, user, account.dir.to_str())
            .map(|accepted| (accepted, Some(account.uid)))
            .unwrap_or_else(|e| unusable_mailbox(user, &e))
    }
}

fn read_shadow(path: &Path) -> Result<String, String> {
    let cannot = |e: std::io::Error| format!("cannot read {}: {e}", path.display());
    let file = File::open(path).map_err(cannot)?;
    let mut text = String::new();
    file.take(MAX_SYSTEM_FILE)
        .read_to_string(&mut text)
        .map_err(cannot)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "root:*:19000:0:99999:7:::\n\
        alice:$y$j9T$abc$def:19500:0:99999:7:::\n\
        locked:!$y$j9T$abc$def:19500:0:99999:7:::\n\
        old:$6$salt$hash:19000:0:30:7:5:20000:\n";

    #[test]
    fn counts_the_entries_that_can_log_in() {
        // alice only: root is locked, locked is locked, old has expired.
        assert_eq!(count_usable(TEXT, 19600), 1);
        assert_eq!(count_usable("x:$1$a$b:::::::\ny:$99$z:::::::\n", 19600), 1);
    }

    #[test]
    fn finds_entries_by_exact_name() {
        let a = find_entry(TEXT, "alice").unwrap();
        assert_eq!(a.hash, "$y$j9T$abc$def");
        assert_eq!(a.last_change, Some(19500));
        assert_eq!(a.max_days, Some(99999));
        assert_eq!(a.expire, None);
        assert!(find_entry(TEXT, "alic").is_none());
        assert!(find_entry(TEXT, "").is_none());
        let old = find_entry(TEXT, "old").unwrap();
        assert_eq!((old.inactive_days, old.expire), (Some(5), Some(20000)));
    }

    #[test]
    fn locked_expired_and_stale_accounts_are_unusable() {
        let e = |name| find_entry(TEXT, name).unwrap();
        assert_eq!(usable(&e("alice"), 19600), Ok(()));
        assert_eq!(usable(&e("root"), 19600), Err(Unusable::Locked));
        assert_eq!(usable(&e("locked"), 19600), Err(Unusable::Locked));
        // old: password max 30 days from 19000; account expires on 20000.
        assert_eq!(usable(&e("old"), 19020), Ok(()));
        assert_eq!(usable(&e("old"), 19031), Err(Unusable::PasswordExpired));
        assert_eq!(usable(&e("old"), 20000), Err(Unusable::AccountExpired));
        let mut must_change = e("alice");
        must_change.last_change = Some(0);
        assert_eq!(
            usable(&must_change, 19600),
            Err(Unusable::MustChangePassword)
        );
        let mut empty = e("alice");
        empty.hash.clear();
        assert_eq!(usable(&empty, 19600), Err(Unusable::Locked));
    }

    #[test]
    fn unknown_user_is_rejected() {
        let (_dir, shadow) = crate::test_support::scratch_file("shadow", TEXT);
        let db = SystemDb::with_shadow(shadow, "/var/mail/%u".into());
        db.check().unwrap();
        let (outcome, owner) = db.verify_account("no-such-user-ironpop", b"pw");
        assert_eq!(outcome, AuthOutcome::Rejected);
        assert_eq!(owner, None);
        // What it cost: the shadow file's typical hash (a tie between
        // alice's $y$ and old's $6$ goes to login.defs, or the first).
        assert!(["$y$j9T", "$6$"].contains(&db.decoy.get().class()));
        assert_eq!(db.verify_account("a:b", b"pw").0, AuthOutcome::Rejected);
    }

    #[test]
    fn unreadable_shadow_fails_the_check() {
        let db = SystemDb::with_shadow("/nonexistent/shadow".into(), "/var/mail/%u".into());
        let e = db.check().unwrap_err();
        assert!(e.contains("cannot read /nonexistent/shadow"), "{e}");
    }
}
