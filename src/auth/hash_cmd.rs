//! `ironpop --hash-password`: read a password (no echo on a terminal) and make a yescrypt hash.

use std::io::{BufRead, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};

use zeroize::Zeroizing;

use nix::sys::termios::{
    tcgetattr, tcsetattr, LocalFlags, SetArg, SpecialCharacterIndices, Termios,
};

use crate::account::{constant_time_eq, Password};
use crate::privsep::crypt;

/// What the terminal sends for ^C while ISIG is off.
const CTRL_C: u8 = 0x03;

/// Reads a password from the terminal (asked twice, no echo) or, when
/// stdin is not a terminal, one line of stdin; returns the yescrypt hash
/// to print (for the passwd file's password field).
pub fn hash_password_command() -> Result<String, String> {
    let stdin = std::io::stdin();
    let password = if nix::unistd::isatty(stdin.as_fd()).unwrap_or(false) {
        read_from_tty(stdin.as_fd(), &mut std::io::stderr())?
    } else {
        read_line(&mut stdin.lock())?
    };
    crypt::hash_password(password.as_bytes()).map_err(|e| format!("cannot hash the password: {e}"))
}

/// One line from a pipe or file, without its line end.
fn read_line(input: &mut dyn BufRead) -> Result<Password, String> {
    let mut line = Zeroizing::new(Vec::new());
    // Two bytes beyond the limit leave room for CRLF and show overflow.
    let limit = crate::limits::MAX_PASSWORD as u64 + 2;
    input
        .take(limit + 1)
        .read_until(b'\n', &mut line)
        .map_err(|e| format!("cannot read the password from standard input: {e}"))?;
    if line.is_empty() {
        return Err("no password on standard input".into());
    }
    finish(line)
}

/// Strips the line end and applies the rules every password must meet.
fn finish(mut pw: Zeroizing<Vec<u8>>) -> Result<Password, String> {
    if pw.last() == Some(&b'\n') {
        pw.pop();
        if pw.last() == Some(&b'\r') {
            pw.pop();
        }
    }
    if pw.len() > crate::limits::MAX_PASSWORD {
        return Err(format!(
            "the password is longer than {} bytes",
            crate::limits::MAX_PASSWORD
        ));
    }
    if pw.is_empty() {
        return Err("an empty password is not allowed".into());
    }
    if pw.contains(&0) {
        return Err("the password contains a NUL byte".into());
    }
    // The bytes move (no copy); `pw` is left empty.
    Ok(Password::new(std::mem::take(&mut *pw)))
}

/// Puts the terminal back as it was, also on early returns.
struct RestoreTerminal<'a> {
    fd: BorrowedFd<'a>,
    saved: Termios,
}

impl Drop for RestoreTerminal<'_> {
    fn drop(&mut self) {
        let _ = tcsetattr(self.fd, SetArg::TCSANOW, &self.saved);
    }
}

/// Asks twice on `prompt` with echo off and compares the answers.
fn read_from_tty(fd: BorrowedFd<'_>, prompt: &mut dyn Write) -> Result<Password, String> {
    let saved = tcgetattr(fd).map_err(|e| format!("cannot read terminal settings: {e}"))?;
    let mut quiet = saved.clone();
    // No echo, but echo the newline so the next prompt starts on a fresh
    // line. ISIG off: ^C arrives as a byte instead of killing us with the
    // terminal still silent.
    quiet
        .local_flags
        .remove(LocalFlags::ECHO | LocalFlags::ISIG);
    quiet
        .local_flags
        .insert(LocalFlags::ECHONL | LocalFlags::ICANON);
    // ...and ^C also ends the line, so the read returns at once.
    quiet.control_chars[SpecialCharacterIndices::VEOL as usize] = CTRL_C;
    tcsetattr(fd, SetArg::TCSAFLUSH, &quiet)
        .map_err(|e| format!("cannot turn off terminal echo: {e}"))?;
    let _restore = RestoreTerminal { fd, saved };

    let first = ask(fd, prompt, "Password: ")?;
    let second = ask(fd, prompt, "Retype password: ")?;
    if !constant_time_eq(first.as_bytes(), second.as_bytes()) {
        return Err("the passwords do not match".into());
    }
    Ok(first)
}

fn ask(fd: BorrowedFd<'_>, prompt: &mut dyn Write, text: &str) -> Result<Password, String> {
    prompt
        .write_all(text.as_bytes())
        .and_then(|()| prompt.flush())
        .map_err(|e| format!("cannot write the prompt: {e}"))?;
    let mut line = Zeroizing::new(Vec::new());
    let mut buf = Zeroizing::new(vec![0u8; 256]);
    loop {
        let n = match nix::unistd::read(fd, &mut buf) {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(format!("cannot read from the terminal: {e}")),
        };
        let chunk = buf.get(..n).unwrap_or(&[]);
        if chunk.contains(&CTRL_C) {
            return Err("interrupted".into());
        }
        line.extend_from_slice(chunk);
        if n == 0 || chunk.contains(&b'\n') || line.len() > crate::limits::MAX_PASSWORD + 2 {
            break;
        }
    }
    if let Some(end) = line.iter().position(|&b| b == b'\n') {
        line.truncate(end + 1);
    }
    finish(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;
    use std::sync::mpsc;

    fn line(input: &[u8]) -> Result<Vec<u8>, String> {
        read_line(&mut Cursor::new(input.to_vec())).map(|p| p.as_bytes().to_vec())
    }

    #[test]
    fn one_line_from_a_pipe() {
        assert_eq!(line(b"secret\n").unwrap(), b"secret");
        assert_eq!(line(b"secret\r\nmore\n").unwrap(), b"secret");
        assert_eq!(line(b"no newline").unwrap(), b"no newline");
        assert_eq!(line(b" spaces kept \n").unwrap(), b" spaces kept ");
    }

    #[test]
    fn empty_long_and_nul_passwords_are_refused() {
        assert!(line(b"").unwrap_err().contains("no password"));
        assert!(line(b"\n").unwrap_err().contains("empty"));
        assert!(line(b"\r\n").unwrap_err().contains("empty"));
        assert!(line(b"a\0b\n").unwrap_err().contains("NUL"));
        let max = vec![b'x'; crate::limits::MAX_PASSWORD];
        assert_eq!(line(&[max.as_slice(), b"\n"].concat()).unwrap(), max);
        let long = vec![b'x'; crate::limits::MAX_PASSWORD + 1];
        assert!(line(&[long.as_slice(), b"\n"].concat())
            .unwrap_err()
            .contains("longer"));
        assert!(line(&vec![b'x'; 100_000]).unwrap_err().contains("longer"));
    }

    /// Sends each prompt to the test thread so it types only after echo is off.
    struct PromptSpy(mpsc::Sender<String>);

    impl Write for PromptSpy {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            let _ = self.0.send(String::from_utf8_lossy(b).into_owned());
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Types `answers` into a pseudo-terminal and returns the result and
    /// everything the terminal echoed back.
    fn on_pty(answers: &[&[u8]]) -> (Result<Vec<u8>, String>, Vec<u8>, bool) {
        let pty = nix::pty::openpty(None, None).unwrap();
        let (tx, rx) = mpsc::channel();
        let slave = pty.slave;
        let reader = std::thread::spawn(move || {
            let r = read_from_tty(slave.as_fd(), &mut PromptSpy(tx));
            let echo_back = tcgetattr(slave.as_fd())
                .unwrap()
                .local_flags
                .contains(LocalFlags::ECHO);
            (r, echo_back, slave)
        });
        for a in answers {
            if rx.recv_timeout(std::time::Duration::from_secs(10)).is_err() {
                break;
            }
            nix::unistd::write(&pty.master, a).unwrap();
        }
        let (result, echo_restored, _slave) = reader.join().unwrap();
        nix::fcntl::fcntl(
            &pty.master,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )
        .unwrap();
        let mut echoed = vec![0u8; 4096];
        let n = nix::unistd::read(&pty.master, &mut echoed).unwrap_or(0);
        echoed.truncate(n);
        (result.map(|p| p.as_bytes().to_vec()), echoed, echo_restored)
    }

    #[test]
    fn terminal_input_is_not_echoed_and_echo_is_restored() {
        let (r, echoed, restored) = on_pty(&[b"hunter2\n", b"hunter2\n"]);
        assert_eq!(r.unwrap(), b"hunter2");
        assert!(
            !echoed.windows(7).any(|w| w == b"hunter2"),
            "echoed {echoed:?}"
        );
        assert!(echoed.contains(&b'\n'), "ECHONL: {echoed:?}");
        assert!(restored);
    }

    #[test]
    fn terminal_mismatch_and_interrupt() {
        let (r, _, restored) = on_pty(&[b"one\n", b"two\n"]);
        assert_eq!(r.unwrap_err(), "the passwords do not match");
        assert!(restored);
        let (r, _, restored) = on_pty(&[b"ab\x03"]);
        assert_eq!(r.unwrap_err(), "interrupted");
        assert!(restored);
    }
}
