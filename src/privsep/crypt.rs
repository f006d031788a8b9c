//! crypt(3) password hashes through libxcrypt's `crypt_rn`/`crypt_gensalt_rn`.
//!
//! libxcrypt implements every scheme Debian writes (`$y$` yescrypt is the
//! default since bullseye) and is what PAM and shadow use, so hashes checked
//! here behave exactly as they do for `login`. This file's only `unsafe`
//! code is the two FFI calls below and the reading of `crypt_rn`'s
//! NUL-terminated result (`CStr::from_ptr`); elsewhere, the PAM
//! conversation in `pam.rs`, the forks in `helper.rs`, `pid_file_keeper.rs`
//! and `daemon/detach.rs`, and taking ownership of a received or inherited
//! descriptor in `auth/helper_channel.rs` and `daemon/systemd.rs` have their
//! own, each commented where it stands.

use std::ffi::{c_char, c_int, c_ulong, c_void, CStr, CString};
use std::fmt;
use std::sync::{Condvar, Mutex, OnceLock, PoisonError};

use zeroize::Zeroize;

use crate::account::constant_time_eq;
use crate::limits::MAX_PASSWORD;

/// `sizeof(struct crypt_data)` in `<crypt.h>`: the scratch area `crypt_rn`
/// works in. 32 KiB is too much for a worker's small stack, so it lives on
/// the heap.
const CRYPT_DATA_SIZE: usize = 32768;

/// `CRYPT_GENSALT_OUTPUT_SIZE` in `<crypt.h>`.
const GENSALT_OUTPUT_SIZE: usize = 192;

#[link(name = "crypt")]
extern "C" {
    // char *crypt_rn(const char *phrase, const char *setting, void *data, int size);
    // Returns a pointer into `data` (the `output` field, NUL-terminated) or
    // NULL on any failure (unknown or malformed setting, disabled scheme).
    fn crypt_rn(
        phrase: *const c_char,
        setting: *const c_char,
        data: *mut c_void,
        size: c_int,
    ) -> *mut c_char;

    // char *crypt_gensalt_rn(const char *prefix, unsigned long count,
    //                        const char *rbytes, int nrbytes,
    //                        char *output, int output_size);
    // With rbytes == NULL libxcrypt reads its own random bytes from the OS
    // (getrandom / /dev/urandom). Returns `output` or NULL on failure.
    fn crypt_gensalt_rn(
        prefix: *const c_char,
        count: c_ulong,
        rbytes: *const c_char,
        nrbytes: c_int,
        output: *mut c_char,
        output_size: c_int,
    ) -> *mut c_char;
}

/// Hash prefixes ironpop verifies. Anything else (DES, `*`/`!` locked
/// accounts, empty fields, future schemes) never matches a password.
const KNOWN_PREFIXES: &[&str] = &[
    "$y$", "$gy$", "$7$", "$2b$", "$2y$", "$2a$", "$6$", "$5$", "$1$",
];

/// True for hash strings ironpop is prepared to verify.
pub fn is_supported(hash: &str) -> bool {
    KNOWN_PREFIXES.iter().any(|p| hash.starts_with(p))
}

/// True for schemes that are supported but too weak to recommend
/// (`$1$` md5crypt): callers log a warning when they meet one.
pub fn is_weak(hash: &str) -> bool {
    hash.starts_with("$1$")
}

/// A counting semaphore: at most `limit` holders of a [`Permit`] at once.
struct Gate {
    inside: Mutex<usize>,
    left: Condvar,
    limit: usize,
}

/// One place inside a [`Gate`], given back on drop.
struct Permit<'a>(&'a Gate);

impl Gate {
    fn new(limit: usize) -> Gate {
        Gate {
            inside: Mutex::new(0),
            left: Condvar::new(),
            limit: limit.max(1),
        }
    }

    /// Waits for a free place.
    fn enter(&self) -> Permit<'_> {
        // The counter stays consistent whatever a panicking holder did.
        let mut inside = self.inside.lock().unwrap_or_else(PoisonError::into_inner);
        while *inside >= self.limit {
            inside = self
                .left
                .wait(inside)
                .unwrap_or_else(PoisonError::into_inner);
        }
        *inside += 1;
        Permit(self)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut inside = self.0.inside.lock().unwrap_or_else(PoisonError::into_inner);
        *inside = inside.saturating_sub(1);
        self.0.left.notify_one();
    }
}

/// Hash checks are costly (yescrypt: ~20 ms of CPU and 16 MiB each), and
/// without a bound every worker thread could run one at once: 64 password
/// guessers cost ~1 GiB. More at once than there are CPUs gains nothing,
/// so the others wait their turn, holding no scratch memory.
fn hash_gate() -> &'static Gate {
    static GATE: OnceLock<Gate> = OnceLock::new();
    GATE.get_or_init(|| Gate::new(std::thread::available_parallelism().map_or(1, usize::from)))
}

/// Runs `crypt_rn(password, setting)`; `None` when libxcrypt refuses.
fn crypt(password: &[u8], setting: &str) -> Option<Vec<u8>> {
    if password.len() > MAX_PASSWORD {
        return None;
    }
    // A NUL inside either string would silently truncate it on the C side.
    let phrase = CString::new(password).ok()?;
    let setting = CString::new(setting).ok()?;
    let _permit = hash_gate().enter();
    let mut data = vec![0u8; CRYPT_DATA_SIZE];
    let size = c_int::try_from(data.len()).ok()?;
    // SAFETY: `phrase` and `setting` are valid NUL-terminated strings that
    // outlive the call; `data` is a zeroed, writable buffer of exactly
    // `size` bytes (= sizeof(struct crypt_data), which libxcrypt requires as
    // the minimum and treats as untyped memory, so alignment 1 is fine).
    // libxcrypt keeps no pointer to any argument after returning.
    let out = unsafe {
        crypt_rn(
            phrase.as_ptr(),
            setting.as_ptr(),
            data.as_mut_ptr().cast::<c_void>(),
            size,
        )
    };
    if out.is_null() {
        return None;
    }
    // SAFETY: a non-NULL result points at the NUL-terminated `output` field
    // inside `data`, which is still alive and not otherwise borrowed here;
    // the bytes are copied out before `data` is dropped.
    let hashed = unsafe { CStr::from_ptr(out) }.to_bytes().to_vec();
    // The scratch area held intermediate state derived from the password.
    data.as_mut_slice().zeroize();
    Some(hashed)
}

/// Checks `password` against a stored crypt(3) string. Unknown schemes,
/// locked (`*`, `!`) and malformed hashes never match.
pub fn verify(hash: &str, password: &[u8]) -> bool {
    if !is_supported(hash) {
        return false;
    }
    match crypt(password, hash) {
        Some(out) => constant_time_eq(&out, hash.as_bytes()),
        None => false,
    }
}

/// Why a password could not be hashed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashError {
    /// The password contains a NUL byte, which crypt(3) cannot represent.
    ContainsNul,
    /// Longer than libxcrypt accepts.
    TooLong,
    /// libxcrypt failed (no randomness, yescrypt disabled at build time).
    Library(&'static str),
}

impl fmt::Display for HashError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HashError::ContainsNul => f.write_str("the password contains a NUL byte"),
            HashError::TooLong => write!(f, "the password is longer than {MAX_PASSWORD} bytes"),
            HashError::Library(what) => write!(f, "libxcrypt {what}"),
        }
    }
}

impl std::error::Error for HashError {}

/// Asks libxcrypt for a fresh setting string (`prefix` + random salt, cost
/// `count`, 0 meaning the library's recommended default).
pub fn gensalt(prefix: &str, count: c_ulong) -> Result<String, HashError> {
    let prefix = CString::new(prefix).map_err(|_| HashError::Library("bad prefix"))?;
    let mut out = [0u8; GENSALT_OUTPUT_SIZE];
    // SAFETY: `prefix` is a valid NUL-terminated string; rbytes is NULL with
    // nrbytes 0, which tells libxcrypt to fetch OS randomness itself; `out`
    // is a writable buffer of exactly the size passed. The result, when not
    // NULL, is `out` holding a NUL-terminated string.
    let res = unsafe {
        crypt_gensalt_rn(
            prefix.as_ptr(),
            count,
            std::ptr::null(),
            0,
            out.as_mut_ptr().cast::<c_char>(),
            GENSALT_OUTPUT_SIZE as c_int,
        )
    };
    if res.is_null() {
        return Err(HashError::Library(
            "could not generate a salt (no OS randomness?)",
        ));
    }
    let setting = CStr::from_bytes_until_nul(&out)
        .map_err(|_| HashError::Library("returned an unterminated salt"))?;
    setting
        .to_str()
        .map(str::to_owned)
        .map_err(|_| HashError::Library("returned a non-ASCII salt"))
}

/// Hashes a password with a fresh salt in the scheme `prefix` names
/// (`$y$`, `$6$`, ...) at libxcrypt's default cost.
pub fn hash_with_prefix(password: &[u8], prefix: &str) -> Result<String, HashError> {
    if password.contains(&0) {
        return Err(HashError::ContainsNul);
    }
    if password.len() > MAX_PASSWORD {
        return Err(HashError::TooLong);
    }
    let setting = gensalt(prefix, 0)?;
    let out = crypt(password, &setting).ok_or(HashError::Library("refused to hash"))?;
    String::from_utf8(out).map_err(|_| HashError::Library("returned a non-ASCII hash"))
}

/// Hashes a password as yescrypt (`$y$`, libxcrypt's default cost) with a
/// random salt: what `ironpop --hash-password` prints.
pub fn hash_password(password: &[u8]) -> Result<String, HashError> {
    hash_with_prefix(password, "$y$")
}

#[cfg(test)]
mod tests {
    use super::*;

    // Test vectors computed by independent implementations, not libxcrypt:
    // yescrypt's reference TESTS-OK, Drepper's SHA-crypt spec (also what
    // `openssl passwd -5/-6 -salt saltstring 'Hello world!'` prints) and
    // crypt_blowfish's own test vector.
    const YESCRYPT: &str =
        "$y$jD5.7$LdJMENpBABJJ3hIHjB1Bi.$HboGM6qPrsK.StKYGt6KErmUYtioHreJd98oIugoNB6";
    const SHA512: &str = "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1";
    const SHA256: &str = "$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5";
    const BCRYPT_2A: &str = "$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW";
    // $2b$ differs from $2a$ only for passwords of 256+ bytes.
    const BCRYPT_2B: &str = "$2b$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW";

    #[test]
    fn known_vectors_verify() {
        assert!(verify(YESCRYPT, b"pleaseletmein"));
        assert!(verify(SHA512, b"Hello world!"));
        assert!(verify(SHA256, b"Hello world!"));
        assert!(verify(BCRYPT_2A, b"U*U"));
        assert!(verify(BCRYPT_2B, b"U*U"));
    }

    #[test]
    fn wrong_passwords_fail() {
        assert!(!verify(YESCRYPT, b"pleaseletmeIn"));
        assert!(!verify(SHA512, b"Hello world"));
        assert!(!verify(SHA256, b""));
        assert!(!verify(BCRYPT_2B, b"U*V"));
    }

    #[test]
    fn tampered_hash_fails() {
        let mut h = SHA512.to_owned();
        h.pop();
        h.push('2');
        assert!(!verify(&h, b"Hello world!"));
        // Truncated hash: crypt output is longer than the stored string.
        assert!(!verify(&SHA512[..40], b"Hello world!"));
    }

    #[test]
    fn locked_unknown_and_empty_hashes_never_match() {
        for h in [
            "",
            "*",
            "!",
            "!$6$saltstring$x",
            "*LK*",
            "abJnggxhB/yWI",
            "$9$x$y",
        ] {
            assert!(!verify(h, b""), "{h:?}");
            assert!(!verify(h, b"Hello world!"), "{h:?}");
        }
        // DES crypt of "test" with salt "ab" is refused even though it is right.
        assert!(!verify("abJnggxhB/yWI", b"test"));
    }

    #[test]
    fn nul_and_overlong_passwords_never_match() {
        assert!(!verify(SHA256, b"Hello world!\0extra"));
        assert!(!verify(SHA256, &[b'a'; MAX_PASSWORD + 1]));
    }

    #[test]
    fn hash_password_makes_salted_yescrypt() {
        let a = hash_password(b"demo").unwrap();
        let b = hash_password(b"demo").unwrap();
        assert!(a.starts_with("$y$"), "{a}");
        assert_ne!(a, b, "salts must differ");
        assert!(verify(&a, b"demo"));
        assert!(verify(&b, b"demo"));
        assert!(!verify(&a, b"Demo"));
    }

    #[test]
    fn generated_sha_and_bcrypt_round_trip() {
        for prefix in ["$6$", "$5$", "$2b$"] {
            let h = hash_with_prefix(b"s3cret", prefix).unwrap();
            assert!(h.starts_with(prefix), "{h}");
            assert!(verify(&h, b"s3cret"));
            assert!(!verify(&h, b"s3cret "));
        }
    }

    #[test]
    fn hash_password_refuses_unrepresentable_input() {
        assert_eq!(hash_password(b"a\0b"), Err(HashError::ContainsNul));
        assert_eq!(
            hash_password(&[b'x'; MAX_PASSWORD + 1]),
            Err(HashError::TooLong)
        );
    }

    #[test]
    fn gate_bounds_concurrent_holders() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        use std::time::Duration;

        let gate = Arc::new(Gate::new(2));
        let inside = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (gate, inside, most) = (gate.clone(), inside.clone(), most.clone());
                std::thread::spawn(move || {
                    for _ in 0..3 {
                        let _permit = gate.enter();
                        let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(5));
                        inside.fetch_sub(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let most = most.load(Ordering::SeqCst);
        assert!(most <= 2, "{most} holders at once, limit 2");
        assert_eq!(*gate.inside.lock().unwrap(), 0, "every permit given back");
    }

    #[test]
    fn hash_checks_are_bounded_by_the_cpu_count() {
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        assert_eq!(hash_gate().limit, cpus);
        // More concurrent checks than places: all complete, correctly.
        let threads: Vec<_> = (0..cpus * 3)
            .map(|_| {
                std::thread::spawn(|| verify(SHA256, b"Hello world!") && !verify(SHA256, b"x"))
            })
            .collect();
        for t in threads {
            assert!(t.join().unwrap());
        }
    }
}
