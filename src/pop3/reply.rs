//! Reply lines: `+OK` / `-ERR`, RFC 2449/3206 response codes, multi-line ends.

use std::fmt;
use std::io::{self, Write};

/// Extended response codes (RFC 2449 §8, RFC 3206), sent in brackets after
/// `-ERR` so that clients can tell a wrong password from a broken server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RespCode {
    /// Temporary system problem: retrying later may work.
    SysTemp,
    /// Permanent system problem: retrying will not help; tell the user.
    SysPerm,
    /// The credentials (or their transport) are the problem.
    Auth,
    /// Another session holds the maildrop.
    InUse,
    /// The user logs in more often than the server allows.
    LoginDelay,
}

impl RespCode {
    pub fn as_str(self) -> &'static str {
        match self {
            RespCode::SysTemp => "SYS/TEMP",
            RespCode::SysPerm => "SYS/PERM",
            RespCode::Auth => "AUTH",
            RespCode::InUse => "IN-USE",
            RespCode::LoginDelay => "LOGIN-DELAY",
        }
    }
}

impl fmt::Display for RespCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `+OK text`; `+OK` alone when `text` renders empty.
pub fn ok(out: &mut dyn Write, text: fmt::Arguments<'_>) -> io::Result<()> {
    match text.as_str() {
        Some("") => out.write_all(b"+OK\r\n"),
        _ => write!(out, "+OK {text}\r\n"),
    }
}

/// `-ERR text`.
pub fn err(out: &mut dyn Write, text: impl fmt::Display) -> io::Result<()> {
    write!(out, "-ERR {text}\r\n")
}

/// `-ERR [CODE] text`.
pub fn err_code(out: &mut dyn Write, code: RespCode, text: impl fmt::Display) -> io::Result<()> {
    write!(out, "-ERR [{code}] {text}\r\n")
}

/// The `.` line that ends a multi-line response.
pub fn end_multiline(out: &mut dyn Write) -> io::Result<()> {
    out.write_all(b".\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(f: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> String {
        let mut v = Vec::new();
        f(&mut v).unwrap();
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn reply_lines_are_byte_exact() {
        assert_eq!(render(|o| ok(o, format_args!(""))), "+OK\r\n");
        assert_eq!(
            render(|o| ok(o, format_args!("{} {}", 2, 320))),
            "+OK 2 320\r\n"
        );
        assert_eq!(
            render(|o| err(o, "unknown command")),
            "-ERR unknown command\r\n"
        );
        assert_eq!(
            render(|o| err_code(o, RespCode::InUse, "mailbox is busy")),
            "-ERR [IN-USE] mailbox is busy\r\n"
        );
        assert_eq!(render(end_multiline), ".\r\n");
    }

    #[test]
    fn code_spellings() {
        let all = [
            (RespCode::SysTemp, "SYS/TEMP"),
            (RespCode::SysPerm, "SYS/PERM"),
            (RespCode::Auth, "AUTH"),
            (RespCode::InUse, "IN-USE"),
            (RespCode::LoginDelay, "LOGIN-DELAY"),
        ];
        for (code, text) in all {
            assert_eq!(code.to_string(), text);
        }
    }
}
