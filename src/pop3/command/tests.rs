//! Unit tests of the command parser and the message-number check.

use super::*;

fn err_text(line: &[u8]) -> String {
    match parse(line) {
        Ok(c) => panic!("{:?} parsed as {c:?}", String::from_utf8_lossy(line)),
        Err(ParseError::Line(e)) => e.to_string(),
        Err(ParseError::Args(e)) => e.to_string(),
    }
}

#[test]
fn keywords_are_case_insensitive() {
    assert_eq!(parse(b"stat"), Ok(Command::Stat));
    assert_eq!(parse(b"StAt"), Ok(Command::Stat));
    assert_eq!(parse(b"uSeR alice"), Ok(Command::User("alice")));
    assert_eq!(parse(b"top 1 0"), Ok(Command::Top(MsgArg(b"1"), 0)));
    for verb in Verb::ALL {
        let lower = verb.name().to_ascii_lowercase();
        assert_eq!(split(lower.as_bytes()).map(|(v, _)| v), Ok(verb));
    }
}

#[test]
fn every_verb_with_its_arguments() {
    assert_eq!(parse(b"QUIT"), Ok(Command::Quit));
    assert_eq!(parse(b"NOOP"), Ok(Command::Noop));
    assert_eq!(parse(b"RSET"), Ok(Command::Rset));
    assert_eq!(parse(b"CAPA"), Ok(Command::Capa));
    assert_eq!(parse(b"STLS"), Ok(Command::Stls));
    assert_eq!(parse(b"LIST"), Ok(Command::List(None)));
    assert_eq!(parse(b"LIST 3"), Ok(Command::List(Some(MsgArg(b"3")))));
    assert_eq!(parse(b"UIDL"), Ok(Command::Uidl(None)));
    assert_eq!(parse(b"UIDL 2"), Ok(Command::Uidl(Some(MsgArg(b"2")))));
    assert_eq!(parse(b"RETR 1"), Ok(Command::Retr(MsgArg(b"1"))));
    assert_eq!(parse(b"DELE 9"), Ok(Command::Dele(MsgArg(b"9"))));
    assert_eq!(parse(b"APOP bob 0123"), Ok(Command::Apop));
    assert_eq!(
        parse(b"AUTH"),
        Ok(Command::Auth {
            mechanism: None,
            initial_response: None
        })
    );
    let long = format!("AUTH PLAIN {}", "A".repeat(100));
    assert_eq!(
        parse(long.as_bytes()),
        Ok(Command::Auth {
            mechanism: Some(b"PLAIN"),
            initial_response: Some("A".repeat(100).as_bytes()),
        })
    );
}

#[test]
fn pass_takes_the_rest_of_the_line_verbatim() {
    assert_eq!(parse(b"PASS a b  c "), Ok(Command::Pass(b"a b  c ")));
    assert_eq!(parse(b"PASS  lead"), Ok(Command::Pass(b" lead")));
    let long = "p".repeat(200);
    assert_eq!(
        parse(format!("PASS {long}").as_bytes()),
        Ok(Command::Pass(long.as_bytes()))
    );
    assert_eq!(err_text(b"PASS"), "PASS needs a password");
    assert_eq!(err_text(b"PASS "), "PASS needs a password");
}

#[test]
fn extra_spaces_between_and_after_arguments_are_tolerated() {
    assert_eq!(parse(b"TOP  1   5 "), Ok(Command::Top(MsgArg(b"1"), 5)));
    assert_eq!(parse(b"STAT "), Ok(Command::Stat));
}

#[test]
fn line_errors_are_distinct() {
    assert_eq!(err_text(b""), "empty command line");
    assert_eq!(err_text(b"ST\0AT"), "NUL byte in command line");
    assert_eq!(err_text(b"\0"), "NUL byte in command line");
    assert_eq!(err_text(b"PASS se\0cret"), "NUL byte in command line");
    assert_eq!(err_text(b" STAT"), "command keyword must be ASCII letters");
    assert_eq!(
        err_text("ST\u{c4}T".as_bytes()),
        "command keyword must be ASCII letters"
    );
    assert_eq!(err_text(b"ST4T"), "command keyword must be ASCII letters");
    assert_eq!(err_text(b"XYZZY"), "unknown command");
    assert_eq!(err_text(b"STATS"), "unknown command");
    assert_eq!(err_text(b"EHLO example.org"), "unknown command");
}

#[test]
fn missing_and_extra_arguments_name_the_command() {
    assert_eq!(err_text(b"USER"), "USER needs a user name");
    assert_eq!(err_text(b"USER a b"), "USER takes one argument");
    assert_eq!(err_text(b"RETR"), "RETR needs a message number");
    assert_eq!(err_text(b"RETR 1 2"), "RETR takes one argument");
    assert_eq!(err_text(b"DELE"), "DELE needs a message number");
    assert_eq!(
        err_text(b"TOP"),
        "TOP needs a message number and a line count"
    );
    assert_eq!(
        err_text(b"TOP 1"),
        "TOP needs a message number and a line count"
    );
    assert_eq!(err_text(b"TOP 1 2 3"), "TOP takes two arguments");
    assert_eq!(err_text(b"LIST 1 2"), "LIST takes at most one argument");
    assert_eq!(err_text(b"UIDL 1 2"), "UIDL takes at most one argument");
    assert_eq!(err_text(b"STAT 1"), "STAT takes no arguments");
    assert_eq!(err_text(b"QUIT now"), "QUIT takes no arguments");
    assert_eq!(err_text(b"NOOP x"), "NOOP takes no arguments");
    assert_eq!(err_text(b"RSET x"), "RSET takes no arguments");
    assert_eq!(err_text(b"CAPA x"), "CAPA takes no arguments");
    assert_eq!(err_text(b"STLS x"), "STLS takes no arguments");
    assert_eq!(err_text(b"APOP bob"), "APOP needs a user name and a digest");
    assert_eq!(err_text(b"AUTH A B C"), "AUTH takes at most two arguments");
}

#[test]
fn argument_length_limit_is_40_octets() {
    let ok = "u".repeat(40);
    assert_eq!(
        parse(format!("USER {ok}").as_bytes()),
        Ok(Command::User(ok.as_str()))
    );
    let long = "u".repeat(41);
    assert_eq!(
        err_text(format!("USER {long}").as_bytes()),
        "USER argument is longer than 40 octets"
    );
    assert_eq!(
        err_text(format!("LIST {long}").as_bytes()),
        "LIST argument is longer than 40 octets"
    );
}

#[test]
fn control_characters_and_bad_utf8_in_arguments() {
    assert_eq!(
        err_text(b"USER a\rb"),
        "USER argument contains a control character"
    );
    assert_eq!(
        err_text(b"USER a\tb"),
        "USER argument contains a control character"
    );
    assert_eq!(
        err_text(b"USER \xff\xfe"),
        "USER argument is not valid UTF-8"
    );
    assert_eq!(
        parse("USER j\u{f6}rg".as_bytes()),
        Ok(Command::User("j\u{f6}rg"))
    );
}

#[test]
fn top_line_count() {
    assert_eq!(
        parse(b"TOP 1 18446744073709551615"),
        Ok(Command::Top(MsgArg(b"1"), u64::MAX))
    );
    assert_eq!(
        err_text(b"TOP 1 18446744073709551616"),
        "TOP line count is too large"
    );
    assert_eq!(err_text(b"TOP 1 -1"), "TOP line count must not be negative");
    assert_eq!(err_text(b"TOP 1 x"), "TOP line count must be a number");
    assert_eq!(err_text(b"TOP 1 +3"), "TOP line count must be a number");
    assert_eq!(err_text(b"TOP 1 -"), "TOP line count must be a number");
}

fn msg(arg: &str, deleted: &[bool]) -> Result<usize, String> {
    message_number(MsgArg(arg.as_bytes()), deleted).map_err(|e| e.to_string())
}

#[test]
fn message_numbers_each_error_distinct() {
    let five = [false, false, true, false, false];
    assert_eq!(msg("1", &five), Ok(0));
    assert_eq!(msg("5", &five), Ok(4));
    assert_eq!(msg("0005", &five), Ok(4));
    assert_eq!(msg("0", &five).unwrap_err(), "message numbers start at 1");
    assert_eq!(
        msg("-1", &five).unwrap_err(),
        "message numbers cannot be negative"
    );
    assert_eq!(
        msg("abc", &five).unwrap_err(),
        "message number must be a decimal number"
    );
    assert_eq!(
        msg("1x", &five).unwrap_err(),
        "message number must be a decimal number"
    );
    assert_eq!(
        msg("+1", &five).unwrap_err(),
        "message number must be a decimal number"
    );
    assert_eq!(
        msg("4294967296", &five).unwrap_err(),
        "message number is too large"
    );
    assert_eq!(
        msg("99999999999999999999999", &five).unwrap_err(),
        "message number is too large"
    );
    assert_eq!(
        msg("7", &five).unwrap_err(),
        "no message 7, maildrop has 5 messages"
    );
    assert_eq!(
        msg("4294967295", &five).unwrap_err(),
        "no message 4294967295, maildrop has 5 messages"
    );
    assert_eq!(
        msg("2", &[false]).unwrap_err(),
        "no message 2, maildrop has 1 message"
    );
    assert_eq!(
        msg("1", &[]).unwrap_err(),
        "no message 1, maildrop has 0 messages"
    );
    assert_eq!(msg("3", &five).unwrap_err(), "message 3 is deleted");
}

#[test]
fn syntax_errors_are_told_apart_from_missing_messages() {
    let e = |a: &str| message_number(MsgArg(a.as_bytes()), &[true]).unwrap_err();
    assert!(e("0").is_syntax());
    assert!(e("-2").is_syntax());
    assert!(e("x").is_syntax());
    assert!(e("4294967296").is_syntax());
    assert!(!e("1").is_syntax());
    assert!(!e("2").is_syntax());
}

#[test]
fn no_input_panics() {
    // Every short byte string over an alphabet of interesting bytes.
    let alphabet = b" \0\r\t-+09aTOPLISTquit\xff";
    let mut line = Vec::new();
    for a in alphabet {
        for b in alphabet {
            for c in alphabet {
                line.clear();
                line.extend_from_slice(b"TOP ");
                line.extend_from_slice(&[*a, *b, b' ', *c]);
                let _ = parse(&line);
                let _ = parse(&line[4..]);
                let _ = message_number(MsgArg(&line[4..]), &[false; 3]);
            }
        }
    }
}
