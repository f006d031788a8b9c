//! The decoy for system accounts (`passdb = system` and `pam`): the typical hash in `/etc/shadow`, or the method `/etc/login.defs` configures when shadow holds none.
//!
//! Derived in the privileged helper (it reads shadow; the network process
//! never does), at the first login that needs it and again whenever the
//! shadow file changes. `login.defs` is read with it.

use std::fs::File;
use std::io::Read;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use super::crypt;
use super::decoy::{Decoy, Tally};
use super::file_stamp::{reread_log_level, Stamp};
use crate::limits::MAX_SYSTEM_FILE;

/// Where shadow(5) says new passwords' hash method is configured.
pub const LOGIN_DEFS: &str = "/etc/login.defs";

/// libxcrypt's default yescrypt cost, for when no setting can be generated
/// (no OS randomness): a hash of "ironpop-dummy-password".
const FALLBACK: &str = "$y$j9T$fw5H6Rhhyvv4mzAzx.8Yd.$f3sGmllg/Yn.Z6hiYOF0esqKWELHdG/b5k/1wlHiok2";

/// The system accounts' decoy, re-derived when shadow changes.
pub struct ShadowDecoy {
    shadow: PathBuf,
    login_defs: PathBuf,
    cache: Mutex<Option<Cached>>,
}

struct Cached {
    stamp: Stamp,
    settled: bool,
    decoy: Arc<Decoy>,
}

impl ShadowDecoy {
    pub fn new(shadow: PathBuf, login_defs: PathBuf) -> ShadowDecoy {
        ShadowDecoy {
            shadow,
            login_defs,
            cache: Mutex::new(None),
        }
    }

    /// What a wrong password costs for a typical system account now.
    pub fn get(&self) -> Arc<Decoy> {
        let stamp = std::fs::metadata(&self.shadow).map(|m| Stamp::of(&m)).ok();
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if let (Some(stamp), Some(c)) = (stamp, cache.as_ref()) {
            if c.settled && c.stamp == stamp {
                return Arc::clone(&c.decoy);
            }
        }
        let configured = read_text(&self.login_defs)
            .map_or_else(|| configured_method(""), |t| configured_method(&t));
        let decoy = Arc::new(typical(read_text(&self.shadow).as_deref(), configured));
        // A file re-read unchanged (see Stamp::settled) is not news.
        let news = cache
            .as_ref()
            .map_or(true, |c| c.decoy.class() != decoy.class());
        log::log!(
            reread_log_level(news),
            "{}: unknown users cost a {} check",
            self.shadow.display(),
            decoy.class()
        );
        if let Some(stamp) = stamp {
            *cache = Some(Cached {
                stamp,
                settled: stamp.settled(),
                decoy: Arc::clone(&decoy),
            });
        }
        decoy
    }
}

/// The file's text, or `None` if it cannot be read.
fn read_text(path: &std::path::Path) -> Option<String> {
    let mut text = String::new();
    File::open(path)
        .ok()?
        .take(MAX_SYSTEM_FILE)
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

/// The most common cost class among shadow's usable hashes; on a tie, or
/// when there is none, the configured method.
pub fn typical(shadow: Option<&str>, configured: Decoy) -> Decoy {
    let mut tally = Tally::default();
    for line in shadow.unwrap_or("").lines() {
        let hash = line.split(':').nth(1).unwrap_or("");
        // Locked ('!', '*') and unsupported fields never reach a hash check.
        if crypt::is_supported(hash) {
            tally.add(Decoy::crypt(hash));
        }
    }
    tally
        .typical(Some(configured.class()))
        .unwrap_or(configured)
}

/// The method login.defs(5) configures for new passwords
/// (`ENCRYPT_METHOD` with `SHA_CRYPT_*_ROUNDS`, `YESCRYPT_COST_FACTOR` or
/// `BCRYPT_*_ROUNDS`), as a setting with a fresh salt. DES (unsupported)
/// and an unset method mean libxcrypt's default, yescrypt.
pub fn configured_method(login_defs: &str) -> Decoy {
    let value = |key: &str| {
        login_defs.lines().find_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some(key)).then(|| words.next()).flatten()
        })
    };
    let number = |key: &str| value(key).and_then(|v| v.parse::<u64>().ok());
    // shadow picks a count between MIN and MAX; the larger is the safe side.
    let larger = |min: &str, max: &str| number(min).max(number(max)).unwrap_or(0);
    let method = value("ENCRYPT_METHOD").map(str::to_ascii_uppercase);
    let (prefix, count) = match method.as_deref() {
        Some("SHA512") => (
            "$6$",
            larger("SHA_CRYPT_MIN_ROUNDS", "SHA_CRYPT_MAX_ROUNDS"),
        ),
        Some("SHA256") => (
            "$5$",
            larger("SHA_CRYPT_MIN_ROUNDS", "SHA_CRYPT_MAX_ROUNDS"),
        ),
        Some("BCRYPT") => ("$2b$", larger("BCRYPT_MIN_ROUNDS", "BCRYPT_MAX_ROUNDS")),
        Some("MD5") => ("$1$", 0),
        Some("YESCRYPT") => ("$y$", number("YESCRYPT_COST_FACTOR").unwrap_or(0)),
        _ => ("$y$", 0),
    };
    crypt::gensalt(prefix, count)
        .or_else(|_| crypt::gensalt(prefix, 0))
        .map_or_else(|_| Decoy::crypt(FALLBACK), |setting| Decoy::crypt(&setting))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_defs_names_the_method_and_its_cost() {
        let d = configured_method("# comment\nENCRYPT_METHOD SHA512\nSHA_CRYPT_MIN_ROUNDS 6000\n");
        assert_eq!(d.class(), "$6$rounds=6000");
        let d = configured_method("ENCRYPT_METHOD SHA512\n");
        assert_eq!(d.class(), "$6$");
        let d = configured_method("ENCRYPT_METHOD YESCRYPT\nYESCRYPT_COST_FACTOR 5\n");
        assert_eq!(d.class(), "$y$j9T");
        let d = configured_method("ENCRYPT_METHOD BCRYPT\nBCRYPT_MIN_ROUNDS 8\n");
        assert_eq!(d.class(), "$2b$08");
        // Unset or DES: libxcrypt's default.
        assert_eq!(configured_method("").class(), "$y$j9T");
        assert_eq!(configured_method("ENCRYPT_METHOD DES").class(), "$y$j9T");
    }

    #[test]
    fn the_fallback_is_a_working_hash() {
        assert!(crypt::verify(FALLBACK, b"ironpop-dummy-password"));
    }

    #[test]
    fn shadow_hashes_win_over_the_configured_method() {
        let sha = configured_method("ENCRYPT_METHOD SHA512\n");
        let text = "root:*:1::::::\n\
                    daemon:!:1::::::\n\
                    a:$y$j9T$abcdefgh$x:1::::::\n\
                    b:$y$j9T$abcdefgi$x:1::::::\n\
                    c:$6$salt$x:1::::::\n";
        assert_eq!(typical(Some(text), sha.clone()).class(), "$y$j9T");
        // A tie goes to the configured method.
        let tie = "a:$y$j9T$abcdefgh$x:1::::::\nc:$6$salt$x:1::::::\n";
        assert_eq!(typical(Some(tie), sha.clone()).class(), "$6$");
        // Only locked accounts, or no readable shadow: the configured method.
        assert_eq!(
            typical(Some("root:*:1::::::\n"), sha.clone()).class(),
            "$6$"
        );
        assert_eq!(typical(None, sha).class(), "$6$");
    }

    #[test]
    fn shadow_changes_are_picked_up() {
        let dir = tempfile::tempdir().unwrap();
        let shadow = dir.path().join("shadow");
        let defs = dir.path().join("login.defs");
        std::fs::write(&defs, "ENCRYPT_METHOD SHA256\n").unwrap();
        let d = ShadowDecoy::new(shadow.clone(), defs);
        assert_eq!(d.get().class(), "$5$");
        std::fs::write(&shadow, "a:$6$rounds=9000$s$x:1::::::\n").unwrap();
        assert_eq!(d.get().class(), "$6$rounds=9000");
        std::fs::write(&shadow, "a:$2b$06$abcdefghijklmnopqrstuv:1::::::\n").unwrap();
        assert_eq!(d.get().class(), "$2b$06");
    }
}
