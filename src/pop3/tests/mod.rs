//! Byte-exact session tests over in-test fakes of the account database and
//! the maildrop.

mod authorization;
mod fakes;
mod script;
mod tls_sasl;
mod transaction;

use crate::pop3::{Control, Session};

/// Sends one line; returns the bytes written and the control.
fn talk(s: &mut Session, line: &str) -> (String, Control) {
    let mut out = Vec::new();
    let control = s.handle_line(line.as_bytes(), &mut out).unwrap();
    (String::from_utf8(out).unwrap(), control)
}

/// Sends one line that must leave the session going; returns the reply.
fn say(s: &mut Session, line: &str) -> String {
    let (reply, control) = talk(s, line);
    assert_eq!(
        control,
        Control::Continue,
        "after {line:?} replied {reply:?}"
    );
    reply
}

/// Sends one line that must get exactly `reply` and close the session
/// (`""`: a closed session answers nothing).
fn closes_with(s: &mut Session, line: &str, reply: &str) {
    assert_eq!(
        talk(s, line),
        (reply.to_owned(), Control::Close),
        "after {line:?}"
    );
}

/// Sends each line in turn; each reply must be exactly the one given.
fn converse(s: &mut Session, exchange: &[(&str, &str)]) {
    for (line, want) in exchange {
        assert_eq!(say(s, line), *want, "reply to {line:?}");
    }
}

/// A session logged in as alice (three messages, 115 octets).
fn logged_in() -> (Session, fakes::Commits) {
    let (mut s, commits) = fakes::session_with(fakes::settings(true, false));
    assert_eq!(say(&mut s, "USER alice"), "+OK send PASS\r\n");
    assert_eq!(
        say(&mut s, "PASS wonder land"),
        "+OK maildrop has 3 messages (115 octets)\r\n"
    );
    (s, commits)
}
