//! The control socket's file, made before the privilege drop: mode 0660, owner root, group `ironpop`.
//!
//! Who may use it is decided by the file system: connecting to a Unix
//! socket needs write permission on it. Started as root, the socket is
//! `root:ironpop 0660` — root and the members of group `ironpop` (the
//! package creates the group; `adduser alice ironpop` lets alice in). Not
//! the daemon's `group`: that is `mail`, whose members may write spools,
//! which is no reason to let them end other people's sessions. Without a
//! group `ironpop` the socket is root's alone (0600), and the log says so.
//! Started as an ordinary user, the socket is that user's alone (0600).
//!
//! The file is left in place at exit after a privilege drop (the directory
//! is root's); systemd removes `RuntimeDirectory=` at stop, and the next
//! start replaces a socket nobody listens on.

use std::fs::{self, DirBuilder};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use nix::fcntl::{renameat, AtFlags};
use nix::sys::stat::{fchmodat, umask, FchmodatFlags, Mode};
use nix::unistd::{fchownat, geteuid, mkdtemp, unlinkat, Gid, Group, Uid, UnlinkatFlags};

/// The group whose members may use the control socket, besides root.
pub const CONTROL_GROUP: &str = "ironpop";

/// Why the control socket could not be made.
#[derive(Debug)]
pub struct ControlSocketError(String);

impl std::fmt::Display for ControlSocketError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Binds the control socket at `path` (non-blocking), its directory made
/// (0755) when missing, a stale socket replaced; refuses to replace a file
/// that is not a socket or a socket another process listens on.
pub fn bind(path: &Path) -> Result<UnixListener, ControlSocketError> {
    let fail = |what: &str, e: io::Error| {
        ControlSocketError(format!("cannot {what} {}: {e}", path.display()))
    };
    if let Some(dir) = path.parent() {
        match DirBuilder::new().recursive(true).mode(0o755).create(dir) {
            Ok(()) => {}
            Err(e) => return Err(fail("create the directory of", e)),
        }
    }
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if UnixStream::connect(path).is_ok() {
                return Err(ControlSocketError(format!(
                    "{} is in use by another running ironpop; give this one its own control_socket",
                    path.display()
                )));
            }
            fs::remove_file(path).map_err(|e| fail("replace the stale", e))?;
        }
        Ok(_) => {
            return Err(ControlSocketError(format!(
                "{} exists and is not a socket; move it away or choose another control_socket",
                path.display()
            )))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(fail("inspect", e)),
    }
    // Bound, owned and moded inside a fresh directory only root can enter,
    // then renamed into place: the directory of `path` may belong to the
    // daemon's user (systemd's RuntimeDirectory=), whose processes could
    // otherwise swap the new socket for a symlink between bind and chown
    // and have root hand them any file. They could also rename the fresh
    // directory itself aside and put their own in its place, so after
    // mkdtemp it is reached only through a descriptor, checked to be
    // root's own 0700 directory: bind through /proc/self/fd, chown, chmod
    // and rename relative to it. rename() replaces a name and follows
    // nothing. Created 0600, so nobody can connect before the mode is set;
    // startup is single-threaded here, so the umask change affects no one
    // else.
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let private = mkdtemp(&dir.join(".ironpop-control-XXXXXX"))
        .map_err(|e| fail("create a directory beside", e.into()))?;
    let made = staged_socket(&private, path, &fail);
    // By name, best effort: a directory swapped in meanwhile is not ours
    // to empty, and rmdir removes only an empty one.
    let _ = fs::remove_dir(&private);
    made
}

/// Binds, owns, modes and renames the socket inside `private` (made by
/// mkdtemp), reached through one descriptor (see [`bind`]).
fn staged_socket(
    private: &Path,
    path: &Path,
    fail: &dyn Fn(&str, io::Error) -> ControlSocketError,
) -> Result<UnixListener, ControlSocketError> {
    let dir = fs::File::options()
        .read(true)
        .custom_flags(nix::libc::O_DIRECTORY | nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(private)
        .map_err(|e| fail("open a directory beside", e))?;
    let meta = dir
        .metadata()
        .map_err(|e| fail("inspect a directory beside", e))?;
    if meta.uid() != geteuid().as_raw() || meta.mode() & 0o077 != 0 {
        return Err(ControlSocketError(format!(
            "{} was replaced while the control socket was made; check who else writes its directory",
            private.display()
        )));
    }
    let staged = PathBuf::from(format!("/proc/self/fd/{}/socket", dir.as_raw_fd()));
    let old = umask(Mode::from_bits_truncate(0o177));
    let bound = UnixListener::bind(&staged);
    umask(old);
    let listener = bound.map_err(|e| fail("listen on", e))?;
    let made = (|| {
        listener
            .set_nonblocking(true)
            .map_err(|e| fail("set up", e))?;
        if geteuid().is_root() {
            share_with_group(&dir, path).map_err(|e| fail("set the owner of", e))?;
        }
        renameat(&dir, "socket", &dir, path).map_err(|e| fail("move the new socket to", e.into()))
    })();
    if let Err(e) = made {
        let _ = unlinkat(&dir, "socket", UnlinkatFlags::NoRemoveDir);
        return Err(e);
    }
    Ok(listener)
}

/// root:ironpop 0660 when the group exists; root's alone otherwise.
/// The socket is `socket` in `dir`; `path` is its final name (for the log).
fn share_with_group(dir: &fs::File, path: &Path) -> io::Result<()> {
    let Ok(Some(group)) = Group::from_name(CONTROL_GROUP) else {
        log::warn!(
            "control socket {}: group {CONTROL_GROUP} does not exist, so only root can use it \
             (addgroup --system {CONTROL_GROUP} to share it)",
            path.display()
        );
        return Ok(());
    };
    fchownat(
        dir,
        "socket",
        Some(Uid::from_raw(0)),
        Some(Gid::from_raw(group.gid.as_raw())),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )?;
    // Nobody but root can write `dir`, so "socket" is still the socket.
    fchmodat(
        dir,
        "socket",
        Mode::from_bits_truncate(0o660),
        FchmodatFlags::FollowSymlink,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::scratch_path;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn made_private_replacing_only_a_stale_socket() {
        let (dir, path) = scratch_path("run/control");
        let first = bind(&path).unwrap();
        let meta = fs::metadata(&path).unwrap();
        let mode = meta.mode() & 0o777;
        match Group::from_name(CONTROL_GROUP) {
            Ok(Some(group)) if geteuid().is_root() => {
                assert_eq!(
                    (mode, meta.uid(), meta.gid()),
                    (0o660, 0, group.gid.as_raw())
                );
            }
            _ => assert_eq!((mode, meta.uid()), (0o600, geteuid().as_raw())),
        }
        let e = bind(&path).unwrap_err().to_string();
        assert!(e.contains("in use by another running ironpop"), "{e}");
        drop(first);
        bind(&path).expect("a socket nobody listens on is replaced");
        let file = dir.path().join("file");
        fs::write(&file, "x").unwrap();
        let e = bind(&file).unwrap_err().to_string();
        assert!(e.contains("is not a socket"), "{e}");
        assert_eq!(fs::read(&file).unwrap(), b"x", "left alone");
        let link = dir.path().join("run/link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let before = fs::metadata(&file).unwrap();
        let e = bind(&link).unwrap_err().to_string();
        assert!(e.contains("is not a socket"), "{e}");
        let after = fs::metadata(&file).unwrap();
        assert_eq!(
            (after.mode(), after.uid(), after.gid()),
            (before.mode(), before.uid(), before.gid()),
            "a symlink's target is never chowned or chmodded"
        );
        let mut left: Vec<_> = fs::read_dir(dir.path().join("run"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            ["control", "link"],
            "no staging directory is left behind"
        );
    }
}
