//! The demo's self-signed certificate: made once in DIR with `openssl req`, so the demo can serve POP3S.
//!
//! Why the openssl command and not a crate: the certificate is needed only
//! by `--demo`, on a developer's machine where openssl is all but always
//! installed (curl's `--cacert` and `openssl s_client` are how one tries
//! the demo anyway). Generating X.509 in-process would put a certificate
//! generator (rcgen and its dependencies) into every production binary for
//! a convenience feature. Without openssl the demo still runs, plain only,
//! and says why.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The demo's implicit-TLS address: unprivileged, 995 + 1000.
pub const TLS_ADDRESS: &str = "127.0.0.1:1995";

/// Long enough that a demo directory does not go stale, short enough for
/// clients that cap leaf lifetimes (825 days, the CA/B Forum's old limit).
const DAYS: &str = "825";

/// The certificate and key files in DIR.
pub fn cert_paths(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join("tls.crt"), dir.join("tls.key"))
}

/// Makes sure DIR holds a certificate and key for localhost/127.0.0.1;
/// returns their paths, or why there are none (the demo then runs
/// without TLS).
pub fn ensure_certificate(dir: &Path) -> Result<(PathBuf, PathBuf), String> {
    let (cert, key) = cert_paths(dir);
    if cert.exists() && key.exists() {
        return Ok((cert, key));
    }
    let status = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .arg("ec_paramgen_curve:prime256v1")
        .args(["-nodes", "-days", DAYS, "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output();
    let output = match status {
        Ok(output) => output,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err("the openssl command is not installed".into())
        }
        Err(e) => return Err(format!("cannot run openssl: {e}")),
    };
    if !output.status.success() {
        let _ = fs::remove_file(&key);
        let _ = fs::remove_file(&cert);
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(format!(
            "openssl req failed: {}",
            stderr.lines().next().unwrap_or("no message")
        ));
    }
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("cannot make {} private: {e}", key.display()))?;
    println!("created {} (self-signed, for localhost)", cert.display());
    Ok((cert, key))
}

/// The config lines for implicit TLS with the demo certificate.
pub fn config_lines(cert: &Path, key: &Path) -> String {
    format!(
        "# Implicit TLS (POP3S) with a self-signed certificate made for the demo.\n\
         listen_tls = {TLS_ADDRESS}\n\
         tls_cert = {}\n\
         tls_key = {}\n",
        cert.display(),
        key.display()
    )
}

/// How to connect over TLS, for the terminal.
pub fn instructions(
    config: &crate::config::Config,
    addr: Option<std::net::SocketAddr>,
    user: &str,
    password: &str,
) -> String {
    let (Some(addr), Some(cert)) = (addr, config.tls_cert.as_ref()) else {
        return String::new();
    };
    format!(
        "Over TLS (POP3S), trusting the demo's self-signed certificate:\n\
         \x20 curl --cacert {cert} pop3s://{user}:{password}@{addr}/\n\
         \x20 openssl s_client -connect {addr} -CAfile {cert}\n\n",
        cert = cert.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn have_openssl() -> bool {
        Command::new("openssl")
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success())
    }

    #[test]
    fn certificate_is_made_once_and_loads() {
        if !have_openssl() {
            // CI installs openssl: there a missing one is a failure.
            assert!(
                std::env::var_os("CI").is_none(),
                "openssl is required for this test under CI"
            );
            eprintln!("openssl not installed; skipping");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = ensure_certificate(dir.path()).unwrap();
        let mode = fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        crate::net::tls::load_tls(&cert, &key, None).expect("rustls accepts the demo pair");
        let before = fs::read(&cert).unwrap();
        ensure_certificate(dir.path()).unwrap();
        assert_eq!(fs::read(&cert).unwrap(), before, "kept, not remade");
        let lines = config_lines(&cert, &key);
        assert!(lines.contains("listen_tls = 127.0.0.1:1995\n"), "{lines}");
    }
}
