//! Debian packages for comparisons (popa3d, Dovecot's POP3 binaries): `apt-get download` + `dpkg -x` into a per-machine cache, never installed (they conflict with other POP3 servers). Shared by tests/it/popa3d_compat.rs and the load bench.

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// Runs a command to completion; `Err` carries its stderr.
pub fn run(cmd: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {cmd}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The popa3d binary, downloaded and unpacked once per machine.
pub fn popa3d_binary() -> Result<PathBuf, String> {
    unpacked("popa3d", "ironpop-popa3d-1.0.3", "usr/sbin/popa3d")
}

/// `file` (a path inside the package) of Debian's `package` (`name` or
/// `name=version`), downloaded and unpacked once per machine into the
/// temp directory's `cache`.
pub fn unpacked(package: &str, cache: &str, file: &str) -> Result<PathBuf, String> {
    let dir = std::env::temp_dir().join(cache);
    let wanted = dir.join("root").join(file);
    if wanted.is_file() {
        return Ok(wanted);
    }
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let out = Command::new("apt-get")
        .args(["download", package])
        .current_dir(&dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run apt-get: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "apt-get download {package} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let deb = fs::read_dir(&dir)
        .map_err(|e| e.to_string())?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .ok_or_else(|| format!("apt-get download {package} produced no .deb"))?;
    let root = dir.join("root");
    run(
        "dpkg",
        &[
            "-x",
            deb.to_str().unwrap_or_default(),
            root.to_str().unwrap_or_default(),
        ],
    )?;
    if wanted.is_file() {
        Ok(wanted)
    } else {
        Err(format!("the {package} package has no /{file}"))
    }
}
