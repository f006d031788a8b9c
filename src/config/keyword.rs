//! Settings whose value is one word of a fixed list: each list spelled once, for parsing, for the error that names the choices, and for `--print-config`.

use super::{CertUserField, LockMethod, PlaintextAuth};

/// A value spelled as one word of [`Keyword::WORDS`].
pub trait Keyword: Copy + PartialEq + 'static {
    /// Every value with its word, in the order the manual lists them.
    const WORDS: &'static [(&'static str, Self)];

    /// The value `word` names.
    fn from_word(word: &str) -> Option<Self> {
        Self::WORDS
            .iter()
            .find(|(w, _)| *w == word)
            .map(|&(_, v)| v)
    }

    /// This value's word.
    fn word(self) -> &'static str {
        Self::WORDS
            .iter()
            .find(|(_, v)| *v == self)
            .map_or("", |(w, _)| w)
    }

    /// The choices as an error names them: "a, b or c".
    fn choices() -> String {
        let words: Vec<&str> = Self::WORDS.iter().map(|(w, _)| *w).collect();
        match words.split_last() {
            Some((last, [])) => (*last).to_owned(),
            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
            None => String::new(),
        }
    }
}

impl Keyword for PlaintextAuth {
    const WORDS: &'static [(&'static str, Self)] = &[
        ("tls-only", Self::TlsOnly),
        ("localhost", Self::Localhost),
        ("always", Self::Always),
    ];
}

impl Keyword for LockMethod {
    const WORDS: &'static [(&'static str, Self)] = &[
        ("fcntl", Self::Fcntl),
        ("dotlock", Self::Dotlock),
        ("flock", Self::Flock),
    ];
}

impl Keyword for CertUserField {
    const WORDS: &'static [(&'static str, Self)] = &[
        ("cn", Self::Cn),
        ("email", Self::Email),
        ("san-email", Self::SanEmail),
    ];
}

impl Keyword for log::LevelFilter {
    const WORDS: &'static [(&'static str, Self)] = &[
        ("off", Self::Off),
        ("error", Self::Error),
        ("warn", Self::Warn),
        ("info", Self::Info),
        ("debug", Self::Debug),
        ("trace", Self::Trace),
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every word names its value and back, and no word is listed twice.
    fn round_trips<T: Keyword + std::fmt::Debug>() {
        for (i, &(word, value)) in T::WORDS.iter().enumerate() {
            assert_eq!(T::from_word(word), Some(value), "{word}");
            assert_eq!(value.word(), word);
            assert!(T::WORDS[..i].iter().all(|&(w, v)| w != word && v != value));
        }
        assert_eq!(T::from_word("no-such-word"), None);
    }

    #[test]
    fn each_list_round_trips() {
        round_trips::<PlaintextAuth>();
        round_trips::<LockMethod>();
        round_trips::<CertUserField>();
        round_trips::<log::LevelFilter>();
    }

    #[test]
    fn choices_read_as_a_list() {
        assert_eq!(LockMethod::choices(), "fcntl, dotlock or flock");
        assert_eq!(
            log::LevelFilter::choices(),
            "off, error, warn, info, debug or trace"
        );
    }
}
