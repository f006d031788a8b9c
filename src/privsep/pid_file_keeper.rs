//! The pid file's keeper: a tiny root process that removes `pid_file` once the daemon is gone.
//!
//! The detached daemon writes `pid_file` as root (in `/run`) and then drops
//! privileges, after which it can no longer unlink the file. So before the
//! drop it forks this keeper, which holds the read end of a pipe whose
//! write end only the daemon (and the helpers it forks later) hold. When
//! they have all exited — however: SIGTERM, a crash, SIGKILL — the read
//! returns end of file and the keeper removes the file if it still names
//! the daemon's pid, so a newer instance's file is never touched.

use std::io::{self, Read};
use std::os::fd::{OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::sys::signal::{signal, SigHandler, Signal};
use nix::unistd::{self, ForkResult};

/// Forks the keeper of `pid_file` for the calling process (the daemon).
/// Returns the pipe's write end, which the daemon must keep open until it
/// exits. Must be called while the process is single-threaded.
/// `close_in_child` are descriptors the keeper must not hold (listeners).
pub fn spawn(pid_file: &Path, close_in_child: &[RawFd]) -> io::Result<OwnedFd> {
    // Close-on-exec: a program the daemon or a helper runs (a PAM module's
    // unix_chkpwd, a hash command) must not inherit the write end and keep
    // a dead daemon's pid file alive for as long as it runs.
    let (read_end, write_end) = unistd::pipe2(OFlag::O_CLOEXEC)?;
    let daemon_pid = unistd::getpid().as_raw();
    // SAFETY: the daemon calls this before it starts any thread, so the
    // child cannot inherit a lock held by another thread; the child only
    // waits on its pipe, removes a file and exits.
    match unsafe { unistd::fork() }? {
        ForkResult::Parent { .. } => {
            drop(read_end);
            Ok(write_end)
        }
        ForkResult::Child => {
            drop(write_end);
            for &fd in close_in_child {
                let _ = unistd::close(fd);
            }
            keep(read_end, pid_file.to_path_buf(), daemon_pid);
            std::process::exit(0);
        }
    }
}

/// Waits for the daemon to be gone, then removes its pid file.
fn keep(read_end: OwnedFd, pid_file: PathBuf, daemon_pid: i32) {
    // A signal to the whole process group (Ctrl-C, `kill 0`) must not take
    // the keeper away before it has cleaned up.
    for s in [Signal::SIGHUP, Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: SIG_IGN installs no handler code.
        let _ = unsafe { signal(s, SigHandler::SigIgn) };
    }
    let _ = nix::sys::prctl::set_name(c"ironpop-pidfile");
    let mut pipe = std::fs::File::from(read_end);
    let mut byte = [0u8; 1];
    // Nobody writes: the read ends at end of file (or on an error).
    loop {
        match pipe.read(&mut byte) {
            Ok(0) => break,
            Err(e) if e.kind() != io::ErrorKind::Interrupted => break,
            _ => {}
        }
    }
    remove_if_ours(&pid_file, daemon_pid);
}

/// Removes `path` if it holds exactly `pid`.
pub fn remove_if_ours(path: &Path, pid: i32) {
    let holds_pid = std::fs::read_to_string(path)
        .ok()
        .and_then(|t| t.trim().parse::<i32>().ok())
        == Some(pid);
    if holds_pid {
        let _ = std::fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::scratch_path;

    #[test]
    fn only_a_file_naming_the_pid_is_removed() {
        let (_dir, path) = scratch_path("ironpop.pid");
        std::fs::write(&path, "1234\n").unwrap();
        remove_if_ours(&path, 4321);
        assert!(path.exists(), "another instance's file stays");
        remove_if_ours(&path, 1234);
        assert!(!path.exists());
        remove_if_ours(&path, 1234);
    }
}
