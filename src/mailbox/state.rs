//! Names of ironpop's per-mailbox files under `state_dir` (session locks, update journals, indexes, last logins).
//!
//! Both are keyed by the spool path, not the login name: what must be
//! exclusive is the spool, and two logins that share one spool must share
//! its lock and its journal. The name is the path with every byte outside
//! `[A-Za-z0-9._-]` written as `%XX` (so `/var/mail/bob` becomes
//! `%2Fvar%2Fmail%2Fbob`), readable by an administrator and unambiguous;
//! paths too long for one file name use the MD5 of the path instead.

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use md5::{Digest, Md5};

use crate::limits;

/// The state directory and the file names in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    pub fn new(dir: impl Into<PathBuf>) -> StateDir {
        StateDir { dir: dir.into() }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Creates the directory (mode 0700) if it does not exist yet, durably:
    /// a journal in a directory whose own entry a power loss could take
    /// back would be no journal.
    pub fn ensure(&self) -> io::Result<()> {
        if self.dir.is_dir() {
            return Ok(());
        }
        match fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
        {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
            Err(e) => return Err(e),
        }
        // Best effort: a parent we may not read (mode 0711) still works.
        if let Some(parent) = self.dir.parent() {
            let _ = fs::File::open(parent).and_then(|d| d.sync_all());
        }
        Ok(())
    }

    /// The session lock file of a spool.
    pub fn session_lock(&self, spool: &SpoolKey) -> PathBuf {
        self.dir.join(format!("{}.session", spool.name))
    }

    /// The update journal of a spool (present only while an update runs or
    /// after one was interrupted).
    pub fn journal(&self, spool: &SpoolKey) -> PathBuf {
        self.dir.join(format!("{}.journal", spool.name))
    }

    /// Where a journal is written before it is complete and renamed into place.
    pub fn journal_tmp(&self, spool: &SpoolKey) -> PathBuf {
        self.dir.join(format!("{}.journal.new", spool.name))
    }

    /// The spool index (`index`): what the last session learned about
    /// the spool.
    pub fn index(&self, spool: &SpoolKey) -> PathBuf {
        self.dir.join(format!("{}.index", spool.name))
    }

    /// Where an index is written before it is renamed into place.
    pub fn index_tmp(&self, spool: &SpoolKey) -> PathBuf {
        self.dir.join(format!("{}.index.new", spool.name))
    }

    /// The time of the last login to the spool (for `login_delay`).
    pub fn last_login(&self, spool: &SpoolKey) -> PathBuf {
        self.dir.join(format!("{}.login", spool.name))
    }

    /// Where the last-login time is written before it is renamed into place.
    pub fn last_login_tmp(&self, spool: &SpoolKey) -> PathBuf {
        self.dir.join(format!("{}.login.new", spool.name))
    }
}

/// Replaces `path` by a file holding `data` (mode 0600): written to `tmp`
/// first and renamed, so a reader sees the old content or the new, never
/// a mix. Not synced: the files written this way (index, last login) are
/// checked when read, and a torn one is simply not used. `tmp` is removed
/// when anything fails.
pub fn replace_file(tmp: &Path, path: &Path, data: &[u8]) -> io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    let written = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(tmp)
        .and_then(|mut f| f.write_all(data))
        .and_then(|()| fs::rename(tmp, path));
    if written.is_err() {
        let _ = fs::remove_file(tmp);
    }
    written
}

/// One spelling per spool: its directory resolved (`/var/spool/mail` as a
/// link to `/var/mail`, `//`, `..`), its file name as given — the file
/// itself is never followed (`O_NOFOLLOW`). The path as given when the
/// directory cannot be resolved.
pub fn canonical(spool: &Path) -> PathBuf {
    match (spool.parent(), spool.file_name()) {
        (Some(dir), Some(name)) => dir
            .canonicalize()
            .map_or_else(|_| spool.to_path_buf(), |dir| dir.join(name)),
        _ => spool.to_path_buf(),
    }
}

/// A spool as its state files know it: its one spelling (`canonical`) and
/// the file-name key made of it. Resolving costs a `readlink` per path
/// component, so a session resolves its spool once and hands this value to
/// the session lock, the journal, the index and `login_delay`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolKey {
    canonical: PathBuf,
    name: String,
}

impl SpoolKey {
    /// Resolves `spool` (see [`canonical`]).
    pub fn of(spool: &Path) -> SpoolKey {
        let canonical = canonical(spool);
        let name = key(&canonical);
        SpoolKey { canonical, name }
    }

    /// The spool's one spelling, as the session registry and the index
    /// record it.
    pub fn canonical(&self) -> &Path {
        &self.canonical
    }

    /// The file-name key, `<key>.session`, `<key>.journal`, … in `state_dir`.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// A file-name-safe, injective name for the canonical path of a spool, so
/// the same for every spelling of its path: two logins that reach one
/// spool share its session lock and its journal.
fn key(canonical: &Path) -> String {
    let bytes = canonical.as_os_str().as_bytes();
    let mut out = String::with_capacity(bytes.len() + 16);
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    if out.len() <= limits::MAX_READABLE_STATE_KEY && !out.starts_with('.') {
        return out;
    }
    let digest = Md5::digest(bytes);
    let mut hashed = String::from("md5-");
    for b in digest {
        let _ = write!(hashed, "{b:02x}");
    }
    hashed
}

/// The spool a key names (the inverse of [`key`]); `None` for a hashed
/// key or anything that is not one.
pub fn spool_of_key(key: &str) -> Option<PathBuf> {
    let bytes = key.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    let path = PathBuf::from(std::ffi::OsStr::from_bytes(&out));
    path.is_absolute().then_some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(spool: &Path) -> String {
        SpoolKey::of(spool).name
    }

    #[test]
    fn keys_are_readable_distinct_and_safe() {
        assert_eq!(key(Path::new("/var/mail/bob")), "%2Fvar%2Fmail%2Fbob");
        assert_ne!(key(Path::new("/a/b_c")), key(Path::new("/a_b/c")));
        assert_ne!(key(Path::new("/a%2Fb")), key(Path::new("/a/b")));
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("mail");
        std::fs::create_dir(&real).unwrap();
        std::os::unix::fs::symlink(&real, dir.path().join("spool")).unwrap();
        let via_link = dir.path().join("spool/bob");
        let doubled = PathBuf::from(format!("{}//bob", real.display()));
        assert_eq!(key(&via_link), key(&real.join("bob")));
        assert_eq!(key(&doubled), key(&real.join("bob")));
        let long = format!("/{}", "x".repeat(300));
        let k = key(Path::new(&long));
        assert!(k.starts_with("md5-") && k.len() == 36, "{k}");
        assert!(key(Path::new("..")).starts_with("md5-"));
        let odd = Path::new("/home/b ob/m%x.box");
        assert_eq!(spool_of_key(&key(odd)).as_deref(), Some(odd));
        assert_eq!(spool_of_key(&k), None);
        for k in [key(Path::new("/home/b ob/mbox")), key(Path::new("ü"))] {
            assert!(!k.contains('/') && !k.contains(' '), "{k}");
        }
    }

    #[test]
    fn names_live_in_the_state_dir() {
        let s = StateDir::new("/var/lib/ironpop");
        let spool = &SpoolKey::of(Path::new("/var/mail/bob"));
        assert_eq!(
            s.session_lock(spool),
            Path::new("/var/lib/ironpop/%2Fvar%2Fmail%2Fbob.session")
        );
        assert_eq!(
            s.journal(spool),
            Path::new("/var/lib/ironpop/%2Fvar%2Fmail%2Fbob.journal")
        );
    }
}
