//! POP3 command parser: one line → a [`Command`] or a typed reason why not.
//!
//! Parsing is split in two so the session can check the state before it
//! looks at arguments: [`split`] finds the keyword ([`Verb`]), then
//! [`parse_args`] reads the arguments. Message numbers stay raw arguments
//! ([`MsgArg`]) until [`message_number`], the one check against the
//! maildrop, with a distinct error for each way they can be wrong.

use std::fmt;

use crate::limits::MAX_ARGUMENT;

/// A recognised command keyword.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    User,
    Pass,
    Apop,
    Auth,
    Stls,
    Capa,
    Quit,
    Stat,
    List,
    Retr,
    Dele,
    Noop,
    Rset,
    Top,
    Uidl,
}

impl Verb {
    /// Every verb, for exhaustive tests and tables.
    pub const ALL: [Verb; 15] = [
        Verb::User,
        Verb::Pass,
        Verb::Apop,
        Verb::Auth,
        Verb::Stls,
        Verb::Capa,
        Verb::Quit,
        Verb::Stat,
        Verb::List,
        Verb::Retr,
        Verb::Dele,
        Verb::Noop,
        Verb::Rset,
        Verb::Top,
        Verb::Uidl,
    ];

    /// The keyword as RFC 1939 spells it.
    pub fn name(self) -> &'static str {
        match self {
            Verb::User => "USER",
            Verb::Pass => "PASS",
            Verb::Apop => "APOP",
            Verb::Auth => "AUTH",
            Verb::Stls => "STLS",
            Verb::Capa => "CAPA",
            Verb::Quit => "QUIT",
            Verb::Stat => "STAT",
            Verb::List => "LIST",
            Verb::Retr => "RETR",
            Verb::Dele => "DELE",
            Verb::Noop => "NOOP",
            Verb::Rset => "RSET",
            Verb::Top => "TOP",
            Verb::Uidl => "UIDL",
        }
    }

    fn from_keyword(keyword: &[u8]) -> Option<Verb> {
        Verb::ALL
            .into_iter()
            .find(|v| v.name().as_bytes().eq_ignore_ascii_case(keyword))
    }
}

/// A message-number argument, checked by [`message_number`] at dispatch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsgArg<'a>(pub &'a [u8]);

/// A parsed command; borrowed from the line it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command<'a> {
    User(&'a str),
    /// The rest of the line after `PASS `: passwords may contain spaces.
    Pass(&'a [u8]),
    Apop,
    Auth {
        mechanism: Option<&'a [u8]>,
        initial_response: Option<&'a [u8]>,
    },
    Stls,
    Capa,
    Quit,
    Stat,
    List(Option<MsgArg<'a>>),
    Retr(MsgArg<'a>),
    Dele(MsgArg<'a>),
    Noop,
    Rset,
    Top(MsgArg<'a>, u64),
    Uidl(Option<MsgArg<'a>>),
}

/// Why a line names no command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineError {
    Empty,
    Nul,
    /// The keyword is not made of ASCII letters (or the line starts with a space).
    BadKeyword,
    Unknown,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LineError::Empty => "empty command line",
            LineError::Nul => "NUL byte in command line",
            LineError::BadKeyword => "command keyword must be ASCII letters",
            LineError::Unknown => "unknown command",
        })
    }
}

/// Why the arguments of a known command are wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgError {
    Missing(Verb),
    TooMany(Verb),
    TooLong(Verb),
    ControlChar(Verb),
    NotUtf8(Verb),
    LineCountNegative,
    LineCountNotNumeric,
    LineCountTooLarge,
}

impl fmt::Display for ArgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArgError::Missing(v) => write!(f, "{} needs {}", v.name(), needs(*v)),
            ArgError::TooMany(v) => write!(f, "{} takes {}", v.name(), takes(*v)),
            ArgError::TooLong(v) => write!(
                f,
                "{} argument is longer than {MAX_ARGUMENT} octets",
                v.name()
            ),
            ArgError::ControlChar(v) => {
                write!(f, "{} argument contains a control character", v.name())
            }
            ArgError::NotUtf8(v) => write!(f, "{} argument is not valid UTF-8", v.name()),
            ArgError::LineCountNegative => f.write_str("TOP line count must not be negative"),
            ArgError::LineCountNotNumeric => f.write_str("TOP line count must be a number"),
            ArgError::LineCountTooLarge => f.write_str("TOP line count is too large"),
        }
    }
}

fn needs(v: Verb) -> &'static str {
    match v {
        Verb::User => "a user name",
        Verb::Pass => "a password",
        Verb::Apop => "a user name and a digest",
        Verb::Top => "a message number and a line count",
        _ => "a message number",
    }
}

fn takes(v: Verb) -> &'static str {
    match v {
        Verb::User | Verb::Pass | Verb::Retr | Verb::Dele => "one argument",
        Verb::List | Verb::Uidl => "at most one argument",
        Verb::Top | Verb::Apop => "two arguments",
        Verb::Auth => "at most two arguments",
        _ => "no arguments",
    }
}

/// Why a message number does not name a message of this maildrop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MsgNumError {
    Zero,
    Negative,
    NotNumeric,
    TooLarge,
    OutOfRange { number: u32, count: usize },
    Deleted(u32),
}

impl MsgNumError {
    /// The argument could never be a message number (vs. not one here).
    pub fn is_syntax(&self) -> bool {
        !matches!(
            self,
            MsgNumError::OutOfRange { .. } | MsgNumError::Deleted(_)
        )
    }
}

impl fmt::Display for MsgNumError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MsgNumError::Zero => f.write_str("message numbers start at 1"),
            MsgNumError::Negative => f.write_str("message numbers cannot be negative"),
            MsgNumError::NotNumeric => f.write_str("message number must be a decimal number"),
            MsgNumError::TooLarge => f.write_str("message number is too large"),
            MsgNumError::OutOfRange { number, count } => write!(
                f,
                "no message {number}, maildrop has {count} message{}",
                if *count == 1 { "" } else { "s" }
            ),
            MsgNumError::Deleted(n) => write!(f, "message {n} is deleted"),
        }
    }
}

/// Splits a line into its verb and the raw rest after the keyword's space.
pub fn split(line: &[u8]) -> Result<(Verb, &[u8]), LineError> {
    if line.is_empty() {
        return Err(LineError::Empty);
    }
    if memchr::memchr(0, line).is_some() {
        return Err(LineError::Nul);
    }
    let (keyword, rest) = match memchr::memchr(b' ', line) {
        Some(sp) => (
            line.get(..sp).unwrap_or_default(),
            line.get(sp + 1..).unwrap_or_default(),
        ),
        None => (line, &b""[..]),
    };
    if keyword.is_empty() || !keyword.iter().all(u8::is_ascii_alphabetic) {
        return Err(LineError::BadKeyword);
    }
    Verb::from_keyword(keyword)
        .map(|v| (v, rest))
        .ok_or(LineError::Unknown)
}

/// Parses the arguments of `verb` from the rest of its line.
pub fn parse_args(verb: Verb, rest: &[u8]) -> Result<Command<'_>, ArgError> {
    if verb == Verb::Pass {
        // RFC 1939 §7: the password is everything after the one space.
        return if rest.is_empty() {
            Err(ArgError::Missing(verb))
        } else {
            Ok(Command::Pass(rest))
        };
    }
    let mut words = rest.split(|&b| b == b' ').filter(|w| !w.is_empty());
    let mut next = |max: usize| -> Result<Option<&[u8]>, ArgError> {
        let Some(w) = words.next() else {
            return Ok(None);
        };
        if w.len() > max {
            return Err(ArgError::TooLong(verb));
        }
        if w.iter().any(|&b| b < 0x20 || b == 0x7f) {
            return Err(ArgError::ControlChar(verb));
        }
        Ok(Some(w))
    };
    let cmd = match verb {
        Verb::User => {
            let name = next(MAX_ARGUMENT)?.ok_or(ArgError::Missing(verb))?;
            Command::User(std::str::from_utf8(name).map_err(|_| ArgError::NotUtf8(verb))?)
        }
        Verb::Apop => {
            next(MAX_ARGUMENT)?
                .and(next(MAX_ARGUMENT)?)
                .ok_or(ArgError::Missing(verb))?;
            Command::Apop
        }
        Verb::Auth => Command::Auth {
            mechanism: next(MAX_ARGUMENT)?,
            // An initial response is base64 and may exceed 40 octets.
            initial_response: next(usize::MAX)?,
        },
        Verb::List => Command::List(next(MAX_ARGUMENT)?.map(MsgArg)),
        Verb::Uidl => Command::Uidl(next(MAX_ARGUMENT)?.map(MsgArg)),
        Verb::Retr | Verb::Dele => {
            let msg = MsgArg(next(MAX_ARGUMENT)?.ok_or(ArgError::Missing(verb))?);
            if verb == Verb::Retr {
                Command::Retr(msg)
            } else {
                Command::Dele(msg)
            }
        }
        Verb::Top => {
            let msg = next(MAX_ARGUMENT)?.ok_or(ArgError::Missing(verb))?;
            let lines = next(MAX_ARGUMENT)?.ok_or(ArgError::Missing(verb))?;
            Command::Top(MsgArg(msg), line_count(lines)?)
        }
        Verb::Stls => Command::Stls,
        Verb::Capa => Command::Capa,
        Verb::Quit => Command::Quit,
        Verb::Stat => Command::Stat,
        Verb::Noop => Command::Noop,
        Verb::Rset => Command::Rset,
        Verb::Pass => return Err(ArgError::Missing(verb)),
    };
    match next(usize::MAX)? {
        Some(_) => Err(ArgError::TooMany(verb)),
        None => Ok(cmd),
    }
}

/// Why a whole line is not a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    Line(LineError),
    Args(ArgError),
}

/// Both steps at once, for callers that need no state check in between.
pub fn parse(line: &[u8]) -> Result<Command<'_>, ParseError> {
    let (verb, rest) = split(line).map_err(ParseError::Line)?;
    parse_args(verb, rest).map_err(ParseError::Args)
}

/// Digits only, as `u64`; distinct errors for a sign, junk and overflow.
fn decimal<E>(arg: &[u8], negative: E, junk: E, too_large: E) -> Result<u64, E> {
    let (digits, neg) = match arg.split_first() {
        Some((b'-', d)) => (d, true),
        _ => (arg, false),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(junk);
    }
    if neg {
        return Err(negative);
    }
    let mut n = 0u64;
    for &d in digits {
        match n
            .checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(d - b'0')))
        {
            Some(next) => n = next,
            None => return Err(too_large),
        }
    }
    Ok(n)
}

fn line_count(arg: &[u8]) -> Result<u64, ArgError> {
    decimal(
        arg,
        ArgError::LineCountNegative,
        ArgError::LineCountNotNumeric,
        ArgError::LineCountTooLarge,
    )
}

/// The one check of a message number against the maildrop: `deleted` has
/// one flag per message. Returns the 0-based index.
pub fn message_number(arg: MsgArg<'_>, deleted: &[bool]) -> Result<usize, MsgNumError> {
    let n = decimal(
        arg.0,
        MsgNumError::Negative,
        MsgNumError::NotNumeric,
        MsgNumError::TooLarge,
    )?;
    let number = u32::try_from(n).map_err(|_| MsgNumError::TooLarge)?;
    if number == 0 {
        return Err(MsgNumError::Zero);
    }
    let out_of_range = MsgNumError::OutOfRange {
        number,
        count: deleted.len(),
    };
    let index = usize::try_from(number - 1).map_err(|_| out_of_range.clone())?;
    match deleted.get(index) {
        None => Err(out_of_range),
        Some(true) => Err(MsgNumError::Deleted(number)),
        Some(false) => Ok(index),
    }
}

#[cfg(test)]
mod tests;
