//! Dovecot-style passwd-file account database: `user:{SCHEME}secret:uid:gid:gecos:home:shell:extra`.
//!
//! The file is re-read whenever its identity, size, mtime or ctime change,
//! so an admin can edit it while the daemon runs. Malformed lines are logged
//! with `file:line` and skipped. Unknown users, locked and unusable
//! entries cost what a wrong password costs for a typical entry of the
//! file (decoy.rs): a compare in a `{PLAIN}` file, a hash of the same
//! scheme and cost in a hashed one.
//!
//! The uid field, when set, names the owner the account's spool must have
//! (the daemon's user otherwise); the gid field is recorded, not checked.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::checked::Checked;
use super::crypt;
use super::decoy::{Decoy, Tally};
use super::file_stamp::{reread_log_level, Stamp};
use super::passwd_ids::parse_ids;
pub use super::passwd_ids::EntryIds;
use crate::account::{constant_time_eq, AuthOutcome, Principal};
use crate::limits::{MAX_PASSWD_FILE, MAX_PASSWD_LINE};
use crate::sasl::ScramSecret;

/// What an entry's password field holds.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Secret {
    /// A crypt(3) string libxcrypt can check.
    Crypt(String),
    /// `{PLAIN}` / `{CLEAR}`: the password itself (Dovecot compatibility).
    Plain(Vec<u8>),
    /// `{SCRAM-SHA-256}…`, prefix included, checked by `ScramSecret::parse`
    /// when the file was read: serves AUTH SCRAM-SHA-256, and USER/PASS and
    /// AUTH PLAIN by deriving the keys from the password.
    Scram(String),
    /// Empty, `*` or `!`: the account cannot log in with a password.
    Locked,
    /// A scheme ironpop cannot verify; the string says which.
    Unsupported(String),
}

/// An outcome and the entry's ids (default when no entry was accepted).
pub type Found = (AuthOutcome, EntryIds);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Account {
    secret: Secret,
    ids: EntryIds,
    home: Option<String>,
    /// Where the entry is, for log lines.
    line: usize,
}

#[derive(Debug)]
struct Snapshot {
    stamp: Stamp,
    /// The stamp was old enough when read to be trusted (see [`Stamp::settled`]).
    settled: bool,
    accounts: HashMap<String, Account>,
    /// What a login without a secret to check costs (see decoy.rs).
    decoy: Decoy,
}

/// The passwd-file account database.
pub struct PasswdFile {
    path: PathBuf,
    mailbox_template: String,
    cache: Mutex<Option<Arc<Snapshot>>>,
}

impl PasswdFile {
    /// `mailbox_template` is the config's `mailbox` (`%u`, `%h`, `%%`).
    /// The file is read at the first login, and again whenever it changes.
    pub fn new(path: PathBuf, mailbox_template: String) -> PasswdFile {
        PasswdFile {
            path,
            mailbox_template,
            cache: Mutex::new(None),
        }
    }

    /// Reads the file now: the daemon calls this at startup so that a
    /// missing or unreadable file is reported before the first client.
    pub fn check(&self) -> Result<usize, String> {
        self.snapshot().map(|s| s.accounts.len())
    }

    /// Reads the file now (for `ironpop -t`): how many entries it has, and
    /// how many of them can log in (not locked, a scheme ironpop checks).
    pub fn census(&self) -> Result<(usize, usize), String> {
        self.snapshot().map(|s| {
            let usable = s
                .accounts
                .values()
                .filter(|a| !matches!(a.secret, Secret::Locked | Secret::Unsupported(_)))
                .count();
            (s.accounts.len(), usable)
        })
    }

    /// The current accounts, re-read if the file changed.
    fn snapshot(&self) -> Result<Arc<Snapshot>, String> {
        let cannot =
            |e: std::io::Error| format!("cannot read passwd file {}: {}", self.path.display(), e);
        let meta = std::fs::metadata(&self.path).map_err(cannot)?;
        let stamp = Stamp::of(&meta);
        // A poisoned lock only means another login panicked; the cache is
        // a plain value that is either complete or absent.
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(snap) = cache.as_ref() {
            if snap.settled && snap.stamp == stamp {
                return Ok(Arc::clone(snap));
            }
        }
        let file = File::open(&self.path).map_err(cannot)?;
        let stamp = file.metadata().map(|m| Stamp::of(&m)).map_err(cannot)?;
        if stamp.size > MAX_PASSWD_FILE {
            return Err(format!(
                "passwd file {} is larger than {MAX_PASSWD_FILE} bytes",
                self.path.display()
            ));
        }
        let mut bytes = Vec::new();
        file.take(MAX_PASSWD_FILE)
            .read_to_end(&mut bytes)
            .map_err(cannot)?;
        let accounts = parse(&bytes, &self.path);
        let decoy = typical_decoy(&accounts);
        // A file re-read unchanged (see Stamp::settled) is not news.
        let news = cache.as_ref().map_or(true, |old| {
            old.accounts.len() != accounts.len() || old.decoy.class() != decoy.class()
        });
        log::log!(
            reread_log_level(news),
            "passwd file {}: {} accounts; unknown users cost a {} check",
            self.path.display(),
            accounts.len(),
            decoy.class()
        );
        let snap = Arc::new(Snapshot {
            stamp,
            settled: stamp.settled(),
            accounts,
            decoy,
        });
        *cache = Some(Arc::clone(&snap));
        Ok(snap)
    }
}

impl PasswdFile {
    /// The current accounts, or the error already logged.
    fn accounts(&self) -> Result<Arc<Snapshot>, String> {
        self.snapshot().inspect_err(|e| log::error!("{e}"))
    }

    /// The account's principal, and its ids, once its credentials are proven.
    fn principal(&self, user: &str, account: &Account) -> Found {
        match accept(&self.mailbox_template, user, account.home.as_deref()) {
            Ok(accepted) => (accepted, account.ids),
            Err(e) => {
                let msg = format!(
                    "{}:{}: account {:?}: {e}",
                    self.path.display(),
                    account.line,
                    user
                );
                log::error!("{msg}");
                (AuthOutcome::Unavailable(msg), EntryIds::default())
            }
        }
    }

    fn refused(&self, user: &str, account: &Account, why: &str) {
        log::warn!(
            "{}:{}: login refused: account {:?} {why}",
            self.path.display(),
            account.line,
            user
        );
    }
}

impl PasswdFile {
    /// Checks `user`'s password: the account, or why not.
    pub fn verify_password(&self, user: &str, password: &[u8]) -> AuthOutcome {
        self.verify_account(user, password).0
    }

    /// Checks `user`'s password; on success also gives the entry's ids
    /// (whose uid, if set, must own the spool), from the same snapshot.
    pub fn verify_account(&self, user: &str, password: &[u8]) -> Found {
        let rejected = (AuthOutcome::Rejected, EntryIds::default());
        let snap = match self.accounts() {
            Ok(s) => s,
            // Answered [SYS/TEMP] whoever asks: the timing tells nothing
            // the reply does not.
            Err(e) => return (AuthOutcome::Unavailable(e), EntryIds::default()),
        };
        let Some(account) = snap.accounts.get(user) else {
            snap.decoy.spend(password);
            log::debug!(
                "passwd file: no account {:?}",
                user.escape_debug().to_string()
            );
            return rejected;
        };
        // Each entry is checked with its own secret only.
        let ok = match &account.secret {
            Secret::Crypt(hash) => crypt::verify(hash, password),
            Secret::Plain(stored) => constant_time_eq(stored, password),
            // Checked when the file was read; PBKDF2 with the stored
            // iteration count costs about what a crypt hash does.
            Secret::Scram(field) => {
                ScramSecret::parse(field).is_ok_and(|s| s.verify_plain_password(password))
            }
            Secret::Locked => {
                snap.decoy.spend(password);
                self.refused(user, account, "is locked (empty, '*' or '!' password)");
                false
            }
            Secret::Unsupported(s) => {
                snap.decoy.spend(password);
                self.refused(
                    user,
                    account,
                    &format!("has a password ironpop cannot verify ({s})"),
                );
                false
            }
        };
        if !ok {
            return rejected;
        }
        self.principal(user, account)
    }

    /// The account and its ids without a password check, for the passdb's
    /// own use after another credential proved who the client is (a
    /// verified certificate, a SCRAM proof checked against the secret).
    pub fn lookup(&self, user: &str) -> Found {
        let snap = match self.accounts() {
            Ok(s) => s,
            Err(e) => return (AuthOutcome::Unavailable(e), EntryIds::default()),
        };
        match snap.accounts.get(user) {
            None => (AuthOutcome::Rejected, EntryIds::default()),
            Some(account) if account.secret == Secret::Locked => {
                self.refused(user, account, "is locked (empty, '*' or '!' password)");
                (AuthOutcome::Rejected, EntryIds::default())
            }
            Some(account) => self.principal(user, account),
        }
    }

    /// Whether any account has a SCRAM-SHA-256 secret.
    pub fn offers_scram(&self) -> bool {
        self.accounts().is_ok_and(|snap| {
            snap.accounts
                .values()
                .any(|a| matches!(a.secret, Secret::Scram(_)))
        })
    }

    /// The SCRAM-SHA-256 secret of `user`; `None` for unknown users and
    /// entries that hold a crypt hash; `Err` when the file is unreadable.
    pub fn scram_secret(&self, user: &str) -> Result<Option<ScramSecret>, String> {
        let snap = self.accounts()?;
        Ok(match snap.accounts.get(user).map(|a| &a.secret) {
            Some(Secret::Scram(field)) => ScramSecret::parse(field).ok(),
            _ => None,
        })
    }
}

/// The accepted account `user`, its spool path made from the mailbox
/// template; `Err` says why the path cannot be made.
pub(crate) fn accept(
    template: &str,
    user: &str,
    home: Option<&str>,
) -> Result<AuthOutcome, String> {
    let mailbox = expand_mailbox(template, user, home)?;
    Ok(AuthOutcome::Accepted(Principal {
        user: user.to_owned(),
        mailbox,
    }))
}

/// A system account whose spool path cannot be made from the template.
pub(crate) fn unusable_mailbox(user: &str, why: &str) -> Checked {
    (
        AuthOutcome::Unavailable(format!("mailbox of {user:?}: {why}")),
        None,
    )
}

/// Expands `%u`, `%h` and `%%` in the mailbox template.
pub(crate) fn expand_mailbox(
    template: &str,
    user: &str,
    home: Option<&str>,
) -> Result<PathBuf, String> {
    let mut out = String::with_capacity(template.len() + user.len());
    let mut chars = template.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('u') => out.push_str(user),
            Some('h') => {
                match home {
                    Some(h) if h.starts_with('/') => out.push_str(h.trim_end_matches('/')),
                    Some(_) => return Err(
                        "home directory is not an absolute path, but the mailbox template uses %h"
                            .into(),
                    ),
                    None => return Err(
                        "no home directory in the passwd file, but the mailbox template uses %h"
                            .into(),
                    ),
                }
            }
            Some('%') => out.push('%'),
            _ => return Err(format!("mailbox template {template:?} has a bad % escape")),
        }
    }
    Ok(PathBuf::from(out))
}

/// Parses passwd-file bytes; bad lines are logged and skipped.
fn parse(bytes: &[u8], path: &Path) -> HashMap<String, Account> {
    let (accounts, warnings) = read_entries(bytes, path);
    for w in warnings {
        log::warn!("{w}");
    }
    accounts
}

/// How many line numbers a summary warning names before "...".
const LINES_NAMED: usize = 5;

/// The entries of a passwd file and the warnings about it, each naming
/// the file and line. Entries that share a weakness (clear-text or
/// md5crypt passwords) get one warning with their count, however many
/// there are, so a large file does not flood the log at every re-read.
fn read_entries(bytes: &[u8], path: &Path) -> (HashMap<String, Account>, Vec<String>) {
    let mut accounts: HashMap<String, Account> = HashMap::new();
    let mut warnings = Vec::new();
    let mut clear_text = Vec::new();
    let mut md5crypt = Vec::new();
    for (index, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = index + 1;
        let skipped = |why: &str| format!("{}:{line}: {why}; line skipped", path.display());
        if raw.len() > MAX_PASSWD_LINE {
            warnings.push(skipped(&format!(
                "line longer than {MAX_PASSWD_LINE} bytes"
            )));
            continue;
        }
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let Ok(text) = std::str::from_utf8(raw) else {
            warnings.push(skipped("not valid UTF-8"));
            continue;
        };
        if text.trim().is_empty() || text.starts_with('#') {
            continue;
        }
        let mut fields = text.split(':');
        let user = fields.next().unwrap_or("");
        if let Err(why) = check_user(user) {
            warnings.push(skipped(&why));
            continue;
        }
        let secret = match parse_secret(fields.next().unwrap_or("")) {
            Ok(secret) => secret,
            Err((secret, why)) => {
                warnings.push(format!(
                    "{}:{line}: account {user:?}: {why}",
                    path.display()
                ));
                secret
            }
        };
        match &secret {
            Secret::Plain(_) => clear_text.push(line),
            Secret::Crypt(hash) if crypt::is_weak(hash) => md5crypt.push(line),
            _ => {}
        }
        let ids = match parse_ids(fields.next().unwrap_or(""), fields.next().unwrap_or("")) {
            Ok(ids) => ids,
            Err(why) => {
                warnings.push(skipped(&format!("account {user:?}: {why}")));
                continue;
            }
        };
        // gecos, then home.
        let home = fields.nth(1).filter(|h| !h.is_empty()).map(str::to_owned);
        if let Some(first) = accounts.get(user) {
            warnings.push(format!(
                "{}:{line}: account {user:?} is already defined on line {}; this entry is ignored",
                path.display(),
                first.line
            ));
            continue;
        }
        accounts.insert(
            user.to_owned(),
            Account {
                secret,
                ids,
                home,
                line,
            },
        );
    }
    let summaries = [
        (
            clear_text,
            "{PLAIN} password stored in clear text: accepted, but store hashes (ironpop --hash-password)",
        ),
        (
            md5crypt,
            "weak md5crypt ($1$) password: replace it with ironpop --hash-password",
        ),
    ];
    for (lines, what) in summaries {
        if let Some(summary) = lines_summary(path, &lines, what) {
            warnings.push(summary);
        }
    }
    (accounts, warnings)
}

/// One warning for `lines` (ascending), or none when it is empty:
/// `FILE:LINE: what` for one line, else the count and the first few lines.
fn lines_summary(path: &Path, lines: &[usize], what: &str) -> Option<String> {
    let (&first, rest) = lines.split_first()?;
    if rest.is_empty() {
        return Some(format!("{}:{first}: an entry has a {what}", path.display()));
    }
    let named: Vec<String> = lines
        .iter()
        .take(LINES_NAMED)
        .map(|l| l.to_string())
        .collect();
    let more = if lines.len() > LINES_NAMED {
        ", ..."
    } else {
        ""
    };
    Some(format!(
        "{}: {} entries (lines {}{more}) have a {what}",
        path.display(),
        lines.len(),
        named.join(", ")
    ))
}

/// What a typical entry's check costs: the most common cost class among
/// the entries that can be checked; a compare when there are none.
fn typical_decoy(accounts: &HashMap<String, Account>) -> Decoy {
    // In file order, so that ties go to the class seen first.
    let mut entries: Vec<&Account> = accounts.values().collect();
    entries.sort_by_key(|a| a.line);
    let mut tally = Tally::default();
    for account in entries {
        match &account.secret {
            Secret::Crypt(hash) => tally.add(Decoy::crypt(hash)),
            Secret::Plain(_) => tally.add(Decoy::compare()),
            Secret::Scram(field) => {
                if let Some(decoy) = Decoy::scram(field) {
                    tally.add(decoy);
                }
            }
            Secret::Locked | Secret::Unsupported(_) => {}
        }
    }
    tally.typical(None).unwrap_or_else(Decoy::compare)
}

/// A user name becomes part of a path (`%u`): no separators, no tricks.
fn check_user(user: &str) -> Result<(), String> {
    if user.is_empty() {
        return Err("empty user name".into());
    }
    if user == "." || user == ".." || user.starts_with('-') {
        return Err(format!("user name {user:?} is not allowed"));
    }
    if let Some(c) = user
        .chars()
        .find(|c| c.is_control() || c.is_whitespace() || *c == '/' || *c == '%')
    {
        return Err(format!(
            "user name {:?} contains {:?}, which is not allowed",
            user.escape_debug().to_string(),
            c
        ));
    }
    Ok(())
}

/// The password field as a [`Secret`]; `Err` carries the secret to store
/// anyway (unusable) and why. Clear-text and md5crypt entries are usable
/// and summarised by the caller.
fn parse_secret(field: &str) -> Result<Secret, (Secret, String)> {
    let (scheme, body) = match field.strip_prefix('{').and_then(|r| r.split_once('}')) {
        Some((scheme, body)) => (Some(scheme.to_ascii_uppercase()), body),
        None => (None, field),
    };
    let crypt_secret = |body: &str| {
        if body.is_empty() || body.starts_with('*') || body.starts_with('!') {
            Ok(Secret::Locked)
        } else if crypt::is_supported(body) {
            Ok(Secret::Crypt(body.to_owned()))
        } else {
            Err((
                Secret::Unsupported("unrecognised crypt format".into()),
                "password is not a crypt hash ironpop supports ($y$, $6$, $5$, $2b$, ...)".into(),
            ))
        }
    };
    match scheme.as_deref() {
        None | Some("CRYPT" | "BLF-CRYPT" | "SHA512-CRYPT" | "SHA256-CRYPT" | "MD5-CRYPT") => {
            crypt_secret(body)
        }
        Some("PLAIN" | "CLEAR") if body.is_empty() => Ok(Secret::Locked),
        Some("PLAIN" | "CLEAR") => Ok(Secret::Plain(body.as_bytes().to_vec())),
        Some("SCRAM-SHA-256") => match ScramSecret::parse(field) {
            Ok(_) => Ok(Secret::Scram(field.to_owned())),
            Err(e) => Err((
                Secret::Unsupported(format!("malformed {{SCRAM-SHA-256}} secret: {e}")),
                format!("password {e}"),
            )),
        },
        Some(other) => Err((
            Secret::Unsupported(format!("{{{other}}}")),
            format!("password scheme {{{other}}} is not supported"),
        )),
    }
}

#[cfg(test)]
#[path = "passwd_file_tests.rs"]
mod tests;
