//! The decoy check: what a login without a password to check (unknown user, locked or unusable entry) spends — a wrong password for a typical account of the same passdb, and no more.
//!
//! A passdb's "typical account" is the most common cost class among its
//! entries: the scheme with its cost parameters (`$y$j9T`, `$6$`,
//! `$6$rounds=656000`, `$2b$12`, `{PLAIN}`, SCRAM-SHA-256 with 4096
//! iterations). A file of `{PLAIN}` entries answers unknown users after a
//! constant-time compare; a file of yescrypt entries after a yescrypt hash
//! of the same cost. An entry is always checked with its own secret only:
//! no login pays for a hash its entry does not have.
//!
//! What this leaves visible, and why it is acceptable: in a passdb that
//! mixes costs, an account whose hash is cheaper or dearer than the typical
//! one answers a wrong password faster or slower than an unknown user
//! would. The alternative — every login paying for the dearest hash —
//! is what made `{PLAIN}` logins cost a yescrypt hash each; an
//! administrator who cares re-hashes the odd accounts (`ironpop
//! --hash-password`).

use super::crypt;
use crate::account::constant_time_eq;
use crate::sasl::ScramSecret;

/// What a failed check costs for a typical account of one passdb.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoy {
    check: Check,
    /// The cost class, for log lines: `$y$j9T`, `{PLAIN}`, ...
    class: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Check {
    /// `{PLAIN}` entries: one constant-time compare.
    Compare,
    /// A crypt(3) hash (or bare setting) of the typical scheme and cost;
    /// the answer is discarded.
    Crypt(String),
    /// A `{SCRAM-SHA-256}` field with the typical iteration count: PBKDF2
    /// over the password, as a USER/PASS check of such an entry does.
    Scram(String),
}

/// Compared against by [`Decoy::compare`]; never anyone's password, and
/// the result is discarded anyway.
const COMPARED: &[u8] = b"ironpop-decoy-password";

impl Decoy {
    /// A constant-time compare: for passdbs whose entries are `{PLAIN}`,
    /// and for those with no checkable entry at all.
    pub fn compare() -> Decoy {
        Decoy {
            check: Check::Compare,
            class: "{PLAIN}".into(),
        }
    }

    /// A crypt(3) check against `hash` (a hash or a setting such as
    /// `crypt_gensalt` makes): costs what that scheme and cost cost.
    pub fn crypt(hash: &str) -> Decoy {
        Decoy {
            class: cost_class(hash),
            check: Check::Crypt(hash.to_owned()),
        }
    }

    /// A SCRAM-SHA-256 entry's field (prefix included) with the typical
    /// iteration count; `None` if it does not parse.
    pub fn scram(field: &str) -> Option<Decoy> {
        let secret = ScramSecret::parse(field).ok()?;
        Some(Decoy {
            class: scram_class(&secret),
            check: Check::Scram(field.to_owned()),
        })
    }

    /// Spends what checking `password` against a typical entry spends,
    /// and fails.
    pub fn spend(&self, password: &[u8]) -> bool {
        let matched = match &self.check {
            Check::Compare => constant_time_eq(COMPARED, password),
            Check::Crypt(hash) => crypt::verify(hash, password),
            Check::Scram(field) => {
                ScramSecret::parse(field).is_ok_and(|s| s.verify_plain_password(password))
            }
        };
        // Whatever the password was, it belongs to no account asked for.
        std::hint::black_box(matched);
        false
    }

    /// The cost class, for the log: `$y$j9T`, `$6$`, `{PLAIN}`, ...
    pub fn class(&self) -> &str {
        &self.class
    }
}

fn scram_class(secret: &ScramSecret) -> String {
    format!("{{SCRAM-SHA-256}} {} iterations", secret.iterations())
}

/// The cost class of a crypt(3) string: its scheme and the parameters that
/// set its cost, without salt or hash (`$y$j9T$salt$hash` → `$y$j9T`).
pub fn cost_class(hash: &str) -> String {
    let mut fields = hash.split('$').skip(1);
    let scheme = fields.next().unwrap_or("");
    let params = fields.next().unwrap_or("");
    match scheme {
        // yescrypt and gost-yescrypt: N, r, p (and flags) in one field.
        "y" | "gy" => format!("${scheme}${params}"),
        // SHA-crypt: `rounds=N` is optional; 5000 is the default.
        "5" | "6" => match params.strip_prefix("rounds=") {
            Some(n) if n != "5000" => format!("${scheme}$rounds={n}"),
            _ => format!("${scheme}$"),
        },
        // bcrypt: two decimal digits of log2 rounds.
        "2a" | "2b" | "2y" => format!("${scheme}${params}"),
        // scrypt: N (one character), r and p (five each) lead the field.
        "7" => format!("$7${}", params.get(..11).unwrap_or(params)),
        // md5crypt and anything else: fixed cost.
        _ => format!("${scheme}$"),
    }
}

/// Counts the cost classes of a passdb's entries and picks the typical one.
#[derive(Default)]
pub struct Tally {
    /// (class, entries seen, the first entry's decoy), in order of appearance.
    classes: Vec<(String, usize, Decoy)>,
}

impl Tally {
    /// One entry whose check costs what `decoy` costs.
    pub fn add(&mut self, decoy: Decoy) {
        match self.classes.iter_mut().find(|(c, _, _)| *c == decoy.class) {
            Some((_, n, _)) => *n += 1,
            None => self.classes.push((decoy.class.clone(), 1, decoy)),
        }
    }

    /// The most common class; on a tie the class `prefer` names (the
    /// system's configured method), else the one seen first. `None` when
    /// no entry was added.
    pub fn typical(self, prefer: Option<&str>) -> Option<Decoy> {
        let most = self.classes.iter().map(|(_, n, _)| *n).max()?;
        let tied: Vec<_> = self
            .classes
            .into_iter()
            .filter(|(_, n, _)| *n == most)
            .collect();
        let pick = tied
            .iter()
            .position(|(c, _, _)| Some(c.as_str()) == prefer)
            .unwrap_or(0);
        tied.into_iter().nth(pick).map(|(_, _, decoy)| decoy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const YESCRYPT: &str =
        "$y$jD5.7$LdJMENpBABJJ3hIHjB1Bi.$HboGM6qPrsK.StKYGt6KErmUYtioHreJd98oIugoNB6";
    const SHA512: &str = "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1";

    #[test]
    fn cost_classes_keep_scheme_and_cost_only() {
        assert_eq!(cost_class(YESCRYPT), "$y$jD5.7");
        assert_eq!(cost_class("$gy$j9T$s$h"), "$gy$j9T");
        assert_eq!(cost_class(SHA512), "$6$");
        assert_eq!(cost_class("$6$rounds=5000$s$h"), "$6$");
        assert_eq!(cost_class("$5$rounds=1000$s$h"), "$5$rounds=1000");
        assert_eq!(cost_class("$2b$12$abcdefghijklmnopqrstuv"), "$2b$12");
        assert_eq!(cost_class("$7$CU..../....salt$hash"), "$7$CU..../....");
        assert_eq!(cost_class("$1$salt$hash"), "$1$");
        assert_eq!(cost_class(""), "$$");
    }

    #[test]
    fn the_most_common_class_is_typical() {
        let mut t = Tally::default();
        t.add(Decoy::compare());
        t.add(Decoy::crypt(SHA512));
        t.add(Decoy::crypt("$6$other$x"));
        t.add(Decoy::crypt(YESCRYPT));
        let d = t.typical(None).unwrap();
        assert_eq!(d.class(), "$6$");
        // The first entry of the class stands for it.
        assert_eq!(d.check, Check::Crypt(SHA512.into()));
        assert_eq!(Tally::default().typical(None), None);
    }

    #[test]
    fn ties_go_to_the_preferred_class_then_the_first() {
        let tally = || {
            let mut t = Tally::default();
            t.add(Decoy::crypt(YESCRYPT));
            t.add(Decoy::crypt(SHA512));
            t
        };
        assert_eq!(tally().typical(None).unwrap().class(), "$y$jD5.7");
        assert_eq!(tally().typical(Some("$6$")).unwrap().class(), "$6$");
        assert_eq!(
            tally().typical(Some("$y$jD5.7")).unwrap().class(),
            "$y$jD5.7"
        );
        assert_eq!(tally().typical(Some("$2b$05")).unwrap().class(), "$y$jD5.7");
    }

    #[test]
    fn every_decoy_fails_even_for_the_entry_password() {
        assert!(!Decoy::compare().spend(COMPARED));
        assert!(crypt::verify(SHA512, b"Hello world!"));
        assert!(!Decoy::crypt(SHA512).spend(b"Hello world!"));
        let field = ScramSecret::derive(b"pw", b"salt", 4096)
            .unwrap()
            .to_string();
        let scram = Decoy::scram(&field).unwrap();
        assert_eq!(scram.class(), "{SCRAM-SHA-256} 4096 iterations");
        assert!(!scram.spend(b"pw"));
        assert_eq!(Decoy::scram("{SCRAM-SHA-256}x"), None);
    }

    /// CPU time of the calling thread: unaffected by other processes, so
    /// the comparisons below are not wall-clock timings.
    fn thread_cpu(f: impl Fn()) -> std::time::Duration {
        use nix::time::{clock_gettime, ClockId};
        let now = || {
            std::time::Duration::from(
                clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).expect("thread CPU clock"),
            )
        };
        let start = now();
        f();
        now() - start
    }

    #[test]
    fn a_crypt_decoy_costs_its_scheme_and_a_compare_costs_nothing() {
        // sha512-crypt with 50 000 rounds: tens of ms of CPU.
        let dear = "$6$rounds=50000$decoysalt$";
        let hashed = thread_cpu(|| {
            Decoy::crypt(dear).spend(b"guess");
        });
        let real = thread_cpu(|| {
            crypt::verify(dear, b"guess");
        });
        let compared = thread_cpu(|| {
            for _ in 0..1000 {
                Decoy::compare().spend(b"guess");
            }
        });
        assert!(
            hashed * 2 >= real && real * 2 >= hashed,
            "decoy {hashed:?}, real check {real:?}"
        );
        assert!(
            compared * 20 < real,
            "1000 compares {compared:?}, one hash {real:?}"
        );
    }
}
