//! Detaching from the terminal (double fork, setsid, chdir /, stdio to /dev/null) and the pid file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{self, ForkResult, Pid};

use crate::daemon::error::DaemonError;

/// The pid file of the running daemon; removed on drop if it still names us.
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
    pid: i32,
}

impl Drop for PidFile {
    fn drop(&mut self) {
        // A newer instance may have replaced a file we thought stale. (A
        // daemon that dropped root cannot remove it: its keeper does.)
        crate::privsep::pid_file_keeper::remove_if_ours(&self.path, self.pid);
    }
}

/// The pid in `path`: `Ok(None)` when there is no file or it holds no
/// number.
fn read_pid(path: &Path) -> io::Result<Option<i32>> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(text.trim().parse().ok()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn process_exists(pid: i32) -> bool {
    // EPERM: it exists but belongs to someone else.
    pid > 0 && matches!(kill(Pid::from_raw(pid), None), Ok(()) | Err(Errno::EPERM))
}

/// Whether the directory `path` (a pid file) is to be written in exists;
/// the error names it. Also `ironpop -t`'s check.
pub fn pid_file_directory(path: &Path) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    match fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(io::Error::other(format!(
            "its directory {} is not a directory",
            dir.display()
        ))),
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("its directory {}: {e}", dir.display()),
        )),
    }
}

/// Refuses to start when the pid file names a live process other than
/// us; removes a stale file (crash, reboot) so it can be created anew.
pub fn check_pid_file(path: &Path) -> Result<(), DaemonError> {
    let err = |source| DaemonError::PidFile {
        path: path.to_path_buf(),
        source,
    };
    if !path.exists() {
        // Its directory must be there when the pid file is written, which
        // is after binding: say so now, before "listening on".
        return pid_file_directory(path).map_err(err);
    }
    match read_pid(path).map_err(err)? {
        Some(pid) if pid != std::process::id() as i32 && process_exists(pid) => {
            Err(DaemonError::AlreadyRunning {
                pid_file: path.to_path_buf(),
                pid,
            })
        }
        stale => {
            log::info!(
                "removing stale pid file {} (pid {})",
                path.display(),
                stale.map_or_else(|| "unreadable".to_string(), |p| p.to_string())
            );
            match fs::remove_file(path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(err(e)),
                _ => Ok(()),
            }
        }
    }
}

/// Creates the pid file exclusively: two daemons started at once cannot
/// both win.
pub fn write_pid_file(path: &Path, pid: i32) -> Result<PidFile, DaemonError> {
    let err = |source| DaemonError::PidFile {
        path: path.to_path_buf(),
        source,
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)
        .map_err(err)?;
    file.write_all(format!("{pid}\n").as_bytes()).map_err(err)?;
    Ok(PidFile {
        path: path.to_path_buf(),
        pid,
    })
}

/// Becomes a daemon: the original process exits 0 once the pid file is
/// written (1 if that fails, with the reason on its stderr), and the
/// grandchild returns — no controlling terminal, cwd `/`, stdio on
/// /dev/null. Must be called before any thread exists.
pub fn detach(pid_file: &Path) -> Result<PidFile, DaemonError> {
    check_pid_file(pid_file)?;
    let devnull = File::options()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|e| DaemonError::system("open /dev/null", e))?;

    match fork()? {
        ForkResult::Parent { child } => {
            // The intermediate child reports whether the pid file is in place.
            let code = match waitpid(child, None) {
                Ok(WaitStatus::Exited(_, code)) => code,
                _ => 1,
            };
            std::process::exit(code);
        }
        ForkResult::Child => {}
    }
    // A new session: no controlling terminal to send us SIGHUP.
    unistd::setsid().map_err(|e| DaemonError::system("start a new session (setsid)", e))?;
    match fork()? {
        ForkResult::Parent { child } => {
            // Not a session leader any more, so no terminal can be
            // acquired; this process only records the daemon's pid.
            match write_pid_file(pid_file, child.as_raw()) {
                Ok(file) => {
                    // The daemon removes the file, not this process.
                    std::mem::forget(file);
                    std::process::exit(0);
                }
                Err(e) => {
                    let _ = kill(child, Signal::SIGKILL);
                    eprintln!("ironpop: {e}");
                    std::process::exit(1);
                }
            }
        }
        ForkResult::Child => {}
    }
    unistd::chdir("/").map_err(|e| DaemonError::system("change directory to /", e))?;
    for redirect in [
        unistd::dup2_stdin::<&File>,
        unistd::dup2_stdout::<&File>,
        unistd::dup2_stderr::<&File>,
    ] {
        redirect(&devnull).map_err(|e| DaemonError::system("redirect stdio to /dev/null", e))?;
    }
    Ok(PidFile {
        path: pid_file.to_path_buf(),
        pid: std::process::id() as i32,
    })
}

fn fork() -> Result<ForkResult, DaemonError> {
    // SAFETY: called only from `detach`, which the daemon runs before it
    // spawns any thread, so the child cannot inherit a lock held by
    // another thread; both sides continue in ordinary Rust code.
    unsafe { unistd::fork() }.map_err(|e| DaemonError::system("fork", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::scratch_path;

    #[test]
    fn pid_file_lifecycle() {
        let (_dir, path) = scratch_path("ironpop.pid");
        check_pid_file(&path).unwrap();
        let me = std::process::id() as i32;
        let file = write_pid_file(&path, me).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), format!("{me}\n"));
        assert!(
            matches!(write_pid_file(&path, me), Err(DaemonError::PidFile { .. })),
            "second writer loses"
        );
        drop(file);
        assert!(!path.exists(), "removed on drop");
    }

    #[test]
    fn live_pid_refuses_stale_pid_is_removed() {
        let (_dir, path) = scratch_path("ironpop.pid");
        // pid 1 always exists.
        fs::write(&path, "1\n").unwrap();
        let err = check_pid_file(&path).unwrap_err();
        assert!(
            err.to_string().contains("already running as pid 1"),
            "{err}"
        );
        assert!(path.exists());

        // A pid beyond pid_max cannot be alive.
        fs::write(&path, "2147483000\n").unwrap();
        check_pid_file(&path).unwrap();
        assert!(!path.exists());

        fs::write(&path, "garbage").unwrap();
        check_pid_file(&path).unwrap();
        assert!(!path.exists());
    }

    #[test]
    fn pid_file_of_someone_else_is_left_alone() {
        let (_dir, path) = scratch_path("ironpop.pid");
        let file = write_pid_file(&path, std::process::id() as i32).unwrap();
        fs::write(&path, "1\n").unwrap();
        drop(file);
        assert_eq!(fs::read_to_string(&path).unwrap(), "1\n");
    }
}
