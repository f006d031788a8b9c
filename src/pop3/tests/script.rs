//! A whole session fed through `LineBuffer` + `Session` in chunks of every
//! power-of-two size, as a pipelining client or a slow network delivers it:
//! the output must be byte-identical each time (after Stalwart's tests).

use super::fakes::{messages, session_with, settings, Commits};
use crate::net::line_buffer::{LineBuffer, LineEvent};
use crate::pop3::Control;

fn script() -> Vec<u8> {
    let mut s = Vec::new();
    for line in [
        "CAPA",
        "USER alice",
        "PASS wonder land",
        "STAT",
        "LIST",
        "LIST 2",
        "UIDL",
        "UIDL 3",
        "RETR 2",
        "TOP 2 1",
        "top 1 0",
        "DELE 1",
        "STAT",
        "LIST 1",
        "RETR 1",
        "RSET",
        "DELE 3",
        "NOOP",
        "bogus",
    ] {
        s.extend_from_slice(line.as_bytes());
        s.extend_from_slice(b"\r\n");
    }
    s.extend_from_slice("x".repeat(300).as_bytes());
    s.extend_from_slice(
        b"\r\nNO\0OP\r\n\r\nuser bob\r\nRETR 0\r\nRETR 9\r\nlist\nQUIT\r\nNOOP\r\n",
    );
    s
}

fn expected() -> String {
    let body2 = String::from_utf8(messages()[1].0.clone()).unwrap();
    let deleted = "-ERR message 1 is deleted\r\n";
    [
        "+OK ironpop ready\r\n",
        "+OK capability list follows\r\nTOP\r\nUIDL\r\nUSER\r\nSASL PLAIN\r\nRESP-CODES\r\n",
        "AUTH-RESP-CODE\r\n",
        "PIPELINING\r\nEXPIRE NEVER\r\nIMPLEMENTATION ironpop-",
        env!("CARGO_PKG_VERSION"),
        "\r\n.\r\n",
        "+OK send PASS\r\n",
        "+OK maildrop has 3 messages (115 octets)\r\n",
        "+OK 3 115\r\n",
        "+OK 3 messages (115 octets)\r\n1 28\r\n2 62\r\n3 25\r\n.\r\n",
        "+OK 2 62\r\n",
        "+OK unique-id listing follows\r\n1 uid-1\r\n2 uid-2\r\n3 uid-3\r\n.\r\n",
        "+OK 3 uid-3\r\n",
        "+OK 62 octets\r\n",
        &body2,
        ".\r\n",
        "+OK top of message follows\r\nSubject: two\r\nFrom: x@example.org\r\n\r\nline 1\r\n.\r\n",
        "+OK top of message follows\r\nSubject: one\r\n\r\n.\r\n",
        "+OK message 1 deleted\r\n",
        "+OK 2 87\r\n",
        deleted,
        deleted,
        "+OK maildrop has 3 messages (115 octets)\r\n",
        "+OK message 3 deleted\r\n",
        "+OK\r\n",
        "-ERR unknown command\r\n",
        "-ERR line too long (at most 255 octets including CRLF)\r\n",
        "-ERR NUL byte in command line\r\n",
        "-ERR empty command line\r\n",
        "-ERR USER is not valid in TRANSACTION state\r\n",
        "-ERR message numbers start at 1\r\n",
        "-ERR no message 9, maildrop has 3 messages\r\n",
        "+OK 2 messages (90 octets)\r\n1 28\r\n2 62\r\n.\r\n",
        "+OK ironpop signing off (2 messages left)\r\n",
    ]
    .concat()
}

/// Runs the script as the daemon's driver would: push, then drain.
fn run(input: &[u8], chunk: usize) -> (Vec<u8>, Commits) {
    let (mut session, commits) = session_with(settings(true, false));
    let mut out = Vec::new();
    session.greeting(&mut out).unwrap();
    let mut lines = LineBuffer::new(session.max_line());
    'conn: for piece in input.chunks(chunk) {
        lines.push(piece);
        while let Some(event) = lines.next_line() {
            let control = match event {
                LineEvent::Line(line) => session.handle_line(line, &mut out),
                LineEvent::TooLong => session.handle_too_long(&mut out),
            }
            .unwrap();
            if control == Control::Close {
                break 'conn;
            }
        }
    }
    (out, commits)
}

#[test]
fn whole_session_in_any_chunking_gives_identical_bytes() {
    let input = script();
    let want = expected();
    let mut chunk = 1;
    while chunk <= 512 {
        let (out, commits) = run(&input, chunk);
        assert_eq!(String::from_utf8_lossy(&out), want, "chunk size {chunk}");
        assert_eq!(*commits.lock().unwrap(), vec![vec![false, false, true]]);
        chunk *= 2;
    }
}

#[test]
fn whole_session_pipelined_in_one_write() {
    let input = script();
    let (out, _) = run(&input, input.len());
    assert_eq!(String::from_utf8_lossy(&out), expected());
}
