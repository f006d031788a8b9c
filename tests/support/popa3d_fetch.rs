//! Debian's popa3d for comparisons: `apt-get download` + `dpkg -x` into a per-machine cache, never installed (it conflicts with other POP3 servers). Shared by tests/it/popa3d_compat.rs and benches/loadgen/popa3d.rs.

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};

const POPA3D_CACHE: &str = "ironpop-popa3d-1.0.3";

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
    let dir = std::env::temp_dir().join(POPA3D_CACHE);
    let bin = dir.join("root/usr/sbin/popa3d");
    if bin.is_file() {
        return Ok(bin);
    }
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let out = Command::new("apt-get")
        .args(["download", "popa3d"])
        .current_dir(&dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run apt-get: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "apt-get download popa3d failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let deb = fs::read_dir(&dir)
        .map_err(|e| e.to_string())?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .ok_or("apt-get download popa3d produced no .deb")?;
    let root = dir.join("root");
    run(
        "dpkg",
        &[
            "-x",
            deb.to_str().unwrap_or_default(),
            root.to_str().unwrap_or_default(),
        ],
    )?;
    if bin.is_file() {
        Ok(bin)
    } else {
        Err("the popa3d package has no /usr/sbin/popa3d".into())
    }
}
