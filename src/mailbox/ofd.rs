//! Whole-file Linux OFD (open file description) write locks, taken without waiting.
//!
//! OFD locks (`F_OFD_SETLK`) conflict with classic POSIX `fcntl` locks
//! (what MDAs take) and with other OFD locks, also within one process, but
//! belong to the open file description: closing some other descriptor of
//! the same file does not drop them (a classic fcntl lock would be lost), and
//! they disappear when the last descriptor of the description is closed,
//! which includes the process dying.

use std::io;
use std::os::fd::AsFd;

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg};
use nix::libc;

fn whole_file(kind: libc::c_int) -> libc::flock {
    libc::flock {
        l_type: kind as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 0, // to the end of the file, however far it grows
        l_pid: 0, // required by F_OFD_*
    }
}

/// Tries to take an exclusive lock on the whole file. `Ok(false)`: someone
/// else holds a conflicting lock.
pub fn try_lock(fd: impl AsFd) -> io::Result<bool> {
    let lock = whole_file(libc::F_WRLCK);
    match fcntl(fd.as_fd(), FcntlArg::F_OFD_SETLK(&lock)) {
        Ok(_) => Ok(true),
        Err(Errno::EAGAIN | Errno::EACCES) => Ok(false),
        Err(Errno::EINTR) => try_lock(fd),
        Err(e) => Err(io::Error::from(e)),
    }
}

/// Whether another open file description holds a lock on the file
/// (`ironpop --who` in inetd mode asks this of session lock files).
pub fn is_locked(fd: impl AsFd) -> io::Result<bool> {
    let mut lock = whole_file(libc::F_WRLCK);
    fcntl(fd.as_fd(), FcntlArg::F_OFD_GETLK(&mut lock)).map_err(io::Error::from)?;
    Ok(lock.l_type != libc::F_UNLCK as libc::c_short)
}

/// Releases the lock taken by [`try_lock`] on the same open file description.
pub fn unlock(fd: impl AsFd) -> io::Result<()> {
    let lock = whole_file(libc::F_UNLCK);
    fcntl(fd.as_fd(), FcntlArg::F_OFD_SETLK(&lock))
        .map(drop)
        .map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;

    #[test]
    fn conflicts_across_descriptions_even_in_one_process() {
        let t = tempfile::NamedTempFile::new().unwrap();
        let a = File::options().write(true).open(t.path()).unwrap();
        let b = File::options().write(true).open(t.path()).unwrap();
        assert!(!is_locked(&b).unwrap());
        assert!(try_lock(&a).unwrap());
        assert!(!try_lock(&b).unwrap());
        assert!(is_locked(&b).unwrap());
        // A duplicate of `a` shares its description, hence the lock.
        let a2 = a.try_clone().unwrap();
        assert!(try_lock(&a2).unwrap());
        // Closing some other descriptor of the file keeps the lock.
        drop(File::open(t.path()).unwrap());
        assert!(!try_lock(&b).unwrap());
        unlock(&a).unwrap();
        assert!(try_lock(&b).unwrap());
        drop(b);
        assert!(
            try_lock(&a).unwrap(),
            "closing the holder releases the lock"
        );
    }

    #[test]
    fn conflicts_with_a_classic_fcntl_lock_of_another_process() {
        let t = tempfile::NamedTempFile::new().unwrap();
        // A classic F_SETLK lock as MDAs take it, held by another process
        // (perl is part of every Debian base system; skipped without it).
        // struct flock on 64-bit Linux: short, short, pad, off_t, off_t, pid_t, pad.
        let Ok(mut child) = std::process::Command::new("perl")
            .arg("-e")
            .arg(
                "use Fcntl; open(my $f, '+<', $ARGV[0]) or die; \
                 my $l = pack('ssx4qqix4', F_WRLCK, 0, 0, 0, 0); \
                 fcntl($f, F_SETLK, $l) or die; print \"locked\\n\"; $|=1; sleep 30;",
            )
            .arg(t.path())
            .stdout(std::process::Stdio::piped())
            .spawn()
        else {
            eprintln!("perl not available: skipped");
            return;
        };
        let mut line = String::new();
        let out = child.stdout.take().unwrap();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut line).unwrap();
        assert_eq!(line, "locked\n");
        let f = File::options().write(true).open(t.path()).unwrap();
        let held = try_lock(&f).unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!held, "an OFD lock must conflict with the MDA's fcntl lock");
        assert!(try_lock(&f).unwrap());
    }
}
