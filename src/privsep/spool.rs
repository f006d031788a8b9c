//! Opening a spool as root: the checks that keep a privileged open on the account's own mail file (no symlink, a regular file with one link, the account's owner), and the answer for the wire.
//!
//! The same checks serve a daemon without root (`mailbox::mbox` opens by
//! path through [`open_spool`]); only the owner check is the helper's.

use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use nix::fcntl::OFlag;
use nix::unistd::Uid;

use super::helper_wire::SpoolAnswer;

/// Why a spool was not opened.
#[derive(Debug)]
pub enum SpoolOpenError {
    /// Not something we may serve; the words say why.
    Refused(String),
    /// The open or the check of the opened file failed.
    Io {
        action: &'static str,
        source: io::Error,
    },
}

/// Opens a spool for reading and updating: no symlinks, regular files with
/// one link only (a hard link to another file would let QUIT rewrite that
/// file). `Ok(None)` when it does not exist (an empty maildrop). Used by
/// the privileged helper and, without one, by the session directly.
pub fn open_spool(path: &Path) -> Result<Option<File>, SpoolOpenError> {
    Ok(open_with_metadata(path)?.map(|(file, _)| file))
}

/// [`open_spool`] with the metadata its checks read, so a caller checking
/// more (the owner) does not stat the file again.
fn open_with_metadata(path: &Path) -> Result<Option<(File, Metadata)>, SpoolOpenError> {
    let flags = OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
    let file = match OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(flags.bits())
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => {
            return Err(SpoolOpenError::Refused(
                "it is a symbolic link (refused: a link could point the session at \
                 another user's file)"
                    .into(),
            ))
        }
        Err(e) if e.raw_os_error() == Some(nix::libc::EISDIR) => {
            return Err(SpoolOpenError::Refused("it is a directory".into()))
        }
        Err(source) => {
            return Err(SpoolOpenError::Io {
                action: "opening",
                source,
            })
        }
    };
    let meta = file.metadata().map_err(|source| SpoolOpenError::Io {
        action: "checking",
        source,
    })?;
    if !meta.file_type().is_file() {
        return Err(SpoolOpenError::Refused("it is not a regular file".into()));
    }
    if meta.nlink() != 1 {
        return Err(SpoolOpenError::Refused(format!(
            "it has {} hard links",
            meta.nlink()
        )));
    }
    Ok(Some((file, meta)))
}

/// Opens a spool for its account: `open_spool`'s checks (no symlink, a
/// regular file with one link), owned by `owner`, never created.
pub fn open_checked(path: &Path, owner: Option<Uid>) -> (SpoolAnswer, Option<File>) {
    let (file, meta) = match open_with_metadata(path) {
        Ok(Some(opened)) => opened,
        Ok(None) => return (SpoolAnswer::Missing, None),
        Err(SpoolOpenError::Refused(reason)) => return (SpoolAnswer::Refused(reason), None),
        Err(SpoolOpenError::Io { source, .. }) => {
            return (
                SpoolAnswer::Failed(source.raw_os_error().unwrap_or(nix::libc::EIO)),
                None,
            )
        }
    };
    if let Some(owner) = owner {
        if meta.uid() != owner.as_raw() {
            return (
                SpoolAnswer::Refused(format!(
                    "it belongs to uid {}, not to the account's uid {owner}",
                    meta.uid()
                )),
                None,
            );
        }
    }
    (SpoolAnswer::Open, Some(file))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn open_checked_refuses_what_it_must() {
        let dir = tempfile::tempdir().unwrap();
        let me = nix::unistd::getuid();
        let spool = dir.path().join("alice");
        assert_eq!(open_checked(&spool, Some(me)).0, SpoolAnswer::Missing);
        assert!(!spool.exists(), "never created");

        std::fs::write(&spool, "From a\n\nhi\n").unwrap();
        let (state, file) = open_checked(&spool, Some(me));
        assert_eq!(state, SpoolAnswer::Open);
        assert!(file.is_some());

        let other = Uid::from_raw(me.as_raw().wrapping_add(1));
        match open_checked(&spool, Some(other)).0 {
            SpoolAnswer::Refused(why) => assert!(why.contains("belongs to uid"), "{why}"),
            s => panic!("{s:?}"),
        }

        let link = dir.path().join("bob");
        symlink(&spool, &link).unwrap();
        match open_checked(&link, Some(me)).0 {
            SpoolAnswer::Refused(why) => assert!(why.contains("symbolic link"), "{why}"),
            s => panic!("{s:?}"),
        }

        let hard = dir.path().join("carol");
        std::fs::hard_link(&spool, &hard).unwrap();
        match open_checked(&hard, Some(me)).0 {
            SpoolAnswer::Refused(why) => assert!(why.contains("2 hard links"), "{why}"),
            s => panic!("{s:?}"),
        }

        match open_checked(dir.path(), None).0 {
            SpoolAnswer::Refused(why) => assert!(why.contains("directory"), "{why}"),
            s => panic!("{s:?}"),
        }
    }
}
