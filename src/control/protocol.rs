//! The control socket's line protocol: requests parsed, replies framed — pure, bounded, fuzzed.
//!
//! A client sends one request line and reads one reply; then the daemon
//! closes the connection.
//!
//! ```text
//! request = ("WHO" / "STATS" / "KICK" SP target) LF      ; at most 256 octets
//! reply   = ("OK" / "ERR" SP text) LF *(line LF) "." LF
//! ```
//!
//! A `WHO` reply has one line per session, its fields separated by tabs
//! (see [`WhoRow`]); `STATS` has `name SP value` lines; `KICK` one line,
//! the number of sessions ended. The final `.` line tells a whole reply
//! from one cut short. No body line is `.` by itself: fields never are.

use std::fmt;
use std::net::IpAddr;

use crate::limits::{CONTROL_MAX_REPLY, CONTROL_MAX_REQUEST, CONTROL_MAX_TARGET};

/// The `STATS` lines that are not counters: gauges of the daemon itself.
pub const UPTIME: &str = "uptime_seconds";
pub const SESSIONS: &str = "sessions_now";

/// What a control client asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Who,
    Stats,
    Kick(Target),
}

/// Whose sessions `KICK` ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Sessions whose client has this address (the PROXY-named one).
    Address(IpAddr),
    /// Sessions logged in as this user.
    User(String),
}

impl Target {
    /// An address when `text` is one, a user name otherwise.
    pub fn parse(text: &str) -> Result<Target, RequestError> {
        if text.is_empty() {
            return Err(RequestError::MissingTarget);
        }
        if text.len() > CONTROL_MAX_TARGET || !text.chars().all(is_field_char) {
            return Err(RequestError::BadTarget);
        }
        Ok(match text.parse::<IpAddr>() {
            Ok(ip) => Target::Address(ip.to_canonical()),
            Err(_) => Target::User(text.to_owned()),
        })
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Address(ip) => write!(f, "{ip}"),
            Target::User(user) => f.write_str(user),
        }
    }
}

impl fmt::Display for Request {
    /// The request line, without its LF.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Request::Who => f.write_str("WHO"),
            Request::Stats => f.write_str("STATS"),
            Request::Kick(target) => write!(f, "KICK {target}"),
        }
    }
}

/// Why a request line was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestError {
    TooLong,
    NotText,
    UnknownCommand,
    MissingTarget,
    BadTarget,
    UnexpectedArgument,
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RequestError::TooLong => "request too long (at most 256 octets)",
            RequestError::NotText => "request is not a line of UTF-8 text",
            RequestError::UnknownCommand => "unknown request (WHO, STATS or KICK target)",
            RequestError::MissingTarget => "KICK needs a user name or an address",
            RequestError::BadTarget => "KICK target must be one word of printable characters",
            RequestError::UnexpectedArgument => "WHO and STATS take no argument",
        })
    }
}

/// A field character: printable, not a space, tab or other control.
fn is_field_char(c: char) -> bool {
    !c.is_control() && !c.is_whitespace()
}

/// Parses one request line (with or without its LF, CR LF accepted).
pub fn parse_request(line: &[u8]) -> Result<Request, RequestError> {
    if line.len() > CONTROL_MAX_REQUEST {
        return Err(RequestError::TooLong);
    }
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let text = std::str::from_utf8(line).map_err(|_| RequestError::NotText)?;
    let (command, argument) = match text.split_once(' ') {
        Some((c, a)) => (c, Some(a)),
        None => (text, None),
    };
    match (command.to_ascii_uppercase().as_str(), argument) {
        ("WHO", None) => Ok(Request::Who),
        ("STATS", None) => Ok(Request::Stats),
        ("WHO" | "STATS", Some(_)) => Err(RequestError::UnexpectedArgument),
        ("KICK", None) => Err(RequestError::MissingTarget),
        ("KICK", Some(target)) => Target::parse(target).map(Request::Kick),
        _ => Err(RequestError::UnknownCommand),
    }
}

/// A whole reply: `OK`, the body lines, the final `.`.
pub fn ok_reply(body: &[String]) -> Vec<u8> {
    let mut out = b"OK\n".to_vec();
    for line in body {
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(b".\n");
    out
}

/// A whole error reply.
pub fn err_reply(text: &dyn fmt::Display) -> Vec<u8> {
    format!("ERR {}\n.\n", one_line(&text.to_string())).into_bytes()
}

/// Why a reply could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyError {
    /// The daemon said no, and why.
    Refused(String),
    /// Not a reply of this protocol (cut short, too long, garbled).
    Malformed(&'static str),
}

impl fmt::Display for ReplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplyError::Refused(text) => write!(f, "the daemon refused: {text}"),
            ReplyError::Malformed(what) => write!(f, "garbled reply from the daemon: {what}"),
        }
    }
}

/// The body lines of a whole reply.
pub fn parse_reply(reply: &[u8]) -> Result<Vec<&str>, ReplyError> {
    if reply.len() > CONTROL_MAX_REPLY {
        return Err(ReplyError::Malformed("too long"));
    }
    let text = std::str::from_utf8(reply).map_err(|_| ReplyError::Malformed("not UTF-8"))?;
    let Some(text) = text.strip_suffix(".\n") else {
        return Err(ReplyError::Malformed("cut short"));
    };
    let mut lines = text.split_terminator('\n');
    let status = lines.next().ok_or(ReplyError::Malformed("empty"))?;
    if !text.is_empty() && !text.ends_with('\n') {
        return Err(ReplyError::Malformed("cut short"));
    }
    if let Some(why) = status.strip_prefix("ERR ") {
        return Err(ReplyError::Refused(why.to_owned()));
    }
    if status != "OK" {
        return Err(ReplyError::Malformed("no status line"));
    }
    let body: Vec<&str> = lines.collect();
    if body.contains(&".") {
        return Err(ReplyError::Malformed("a line after the end"));
    }
    Ok(body)
}

/// Text made safe for one field: controls and whitespace become `?`,
/// an empty text `-`.
pub fn field(text: &str) -> String {
    if text.is_empty() {
        return "-".to_owned();
    }
    text.chars()
        .map(|c| if is_field_char(c) { c } else { '?' })
        .collect()
}

fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// One session in a `WHO` reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WhoRow {
    /// `-` before login.
    pub user: String,
    /// The client's address (the one a trusted PROXY header names).
    pub client: String,
    /// The port the client connected to.
    pub local_port: u16,
    /// `TLSv1.3`, `TLSv1.2`, or `none`.
    pub tls: String,
    /// `AUTHORIZATION` or `TRANSACTION`.
    pub state: String,
    /// Seconds since the Unix epoch of the login; `None` before it.
    pub since: Option<u64>,
    pub bytes_sent: u64,
    pub commands: u64,
}

impl WhoRow {
    const FIELDS: usize = 8;

    /// The reply line: fields separated by tabs.
    pub fn encode(&self) -> String {
        let since = self.since.map_or_else(|| "-".to_owned(), |s| s.to_string());
        [
            field(&self.user),
            field(&self.client),
            self.local_port.to_string(),
            field(&self.tls),
            field(&self.state),
            since,
            self.bytes_sent.to_string(),
            self.commands.to_string(),
        ]
        .join("\t")
    }

    pub fn decode(line: &str) -> Result<WhoRow, ReplyError> {
        let fields: Vec<&str> = line.split('\t').collect();
        let [user, client, port, tls, state, since, sent, commands] = fields.as_slice() else {
            return Err(ReplyError::Malformed("a session line without 8 fields"));
        };
        debug_assert_eq!(fields.len(), Self::FIELDS);
        let number = |s: &str| {
            s.parse::<u64>()
                .map_err(|_| ReplyError::Malformed("a session line with a bad number"))
        };
        Ok(WhoRow {
            user: (*user).to_owned(),
            client: (*client).to_owned(),
            local_port: port
                .parse()
                .map_err(|_| ReplyError::Malformed("a session line with a bad port"))?,
            tls: (*tls).to_owned(),
            state: (*state).to_owned(),
            since: match *since {
                "-" => None,
                s => Some(number(s)?),
            },
            bytes_sent: number(sent)?,
            commands: number(commands)?,
        })
    }
}

/// The first word of the last line of a `WHO` reply that could not hold
/// every session: `more N`. A session line is never like it (it has tabs).
const MORE: &str = "more";

/// The `WHO` reply: one line per session while the whole reply stays
/// within [`CONTROL_MAX_REPLY`], the most a client reads; the sessions left
/// out are counted in a last line `more N`.
pub fn who_reply(rows: &[WhoRow]) -> Vec<u8> {
    who_reply_within(rows, CONTROL_MAX_REPLY)
}

fn who_reply_within(rows: &[WhoRow], limit: usize) -> Vec<u8> {
    // `OK`, the final `.` and the longest `more N` line are always sent.
    let mut size = "OK\n.\n".len() + format!("{MORE} {}\n", u64::MAX).len();
    let mut body = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let line = row.encode();
        size += line.len() + 1;
        if size > limit {
            body.push(format!("{MORE} {}", rows.len() - i));
            break;
        }
        body.push(line);
    }
    ok_reply(&body)
}

/// The sessions of a `WHO` reply's body, and how many it left out.
pub fn decode_who(body: &[&str]) -> Result<(Vec<WhoRow>, u64), ReplyError> {
    let mut rows = body;
    let mut left_out = 0;
    if let Some((last, before)) = body.split_last() {
        if let Some(count) = last.strip_prefix(MORE).and_then(|r| r.strip_prefix(' ')) {
            left_out = count
                .parse()
                .map_err(|_| ReplyError::Malformed("a bad count of sessions left out"))?;
            rows = before;
        }
    }
    let rows = rows
        .iter()
        .map(|l| WhoRow::decode(l))
        .collect::<Result<_, _>>()?;
    Ok((rows, left_out))
}

/// One `name value` line of a `STATS` reply.
pub fn decode_stat(line: &str) -> Result<(&str, u64), ReplyError> {
    let bad = ReplyError::Malformed("a counter line that is not `name value`");
    let (name, value) = line.split_once(' ').ok_or(bad.clone())?;
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(bad);
    }
    Ok((name, value.parse().map_err(|_| bad)?))
}

#[cfg(test)]
mod tests;
