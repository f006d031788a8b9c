//! Byte-exact tests of the control protocol's requests and replies.

use super::*;

#[test]
fn requests_parse_with_any_line_end_and_case() {
    assert_eq!(parse_request(b"WHO\n"), Ok(Request::Who));
    assert_eq!(parse_request(b"who\r\n"), Ok(Request::Who));
    assert_eq!(parse_request(b"STATS"), Ok(Request::Stats));
    assert_eq!(
        parse_request(b"KICK alice\n"),
        Ok(Request::Kick(Target::User("alice".into())))
    );
    assert_eq!(
        parse_request(b"kick ::ffff:192.0.2.7\n"),
        Ok(Request::Kick(Target::Address("192.0.2.7".parse().unwrap()))),
        "a mapped IPv4 address is the IPv4 address"
    );
    assert_eq!(
        parse_request(b"KICK 2001:db8::1\n"),
        Ok(Request::Kick(Target::Address(
            "2001:db8::1".parse().unwrap()
        )))
    );
}

#[test]
fn bad_requests_say_why() {
    let long = [b'A'; CONTROL_MAX_REQUEST + 1];
    assert_eq!(parse_request(&long), Err(RequestError::TooLong));
    assert_eq!(parse_request(b"WHO \xff\n"), Err(RequestError::NotText));
    assert_eq!(parse_request(b"LIST\n"), Err(RequestError::UnknownCommand));
    assert_eq!(parse_request(b"\n"), Err(RequestError::UnknownCommand));
    assert_eq!(
        parse_request(b"WHO x\n"),
        Err(RequestError::UnexpectedArgument)
    );
    assert_eq!(parse_request(b"KICK\n"), Err(RequestError::MissingTarget));
    assert_eq!(parse_request(b"KICK \n"), Err(RequestError::MissingTarget));
    assert_eq!(parse_request(b"KICK a b\n"), Err(RequestError::BadTarget));
    assert_eq!(parse_request(b"KICK a\tb\n"), Err(RequestError::BadTarget));
    assert_eq!(
        RequestError::TooLong.to_string(),
        "request too long (at most 256 octets)"
    );
}

#[test]
fn requests_print_as_they_parse() {
    for r in [
        Request::Who,
        Request::Stats,
        Request::Kick(Target::User("bob".into())),
        Request::Kick(Target::Address("192.0.2.1".parse().unwrap())),
    ] {
        assert_eq!(parse_request(format!("{r}\n").as_bytes()), Ok(r));
    }
}

#[test]
fn replies_are_framed_and_read_back() {
    let reply = ok_reply(&["a 1".to_owned(), "b 2".to_owned()]);
    assert_eq!(reply, b"OK\na 1\nb 2\n.\n");
    assert_eq!(parse_reply(&reply), Ok(vec!["a 1", "b 2"]));
    assert_eq!(parse_reply(b"OK\n.\n"), Ok(vec![]));
    let err = err_reply(&"no\nsuch thing");
    assert_eq!(err, b"ERR no such thing\n.\n");
    assert_eq!(
        parse_reply(&err),
        Err(ReplyError::Refused("no such thing".into()))
    );
}

#[test]
fn broken_replies_are_not_taken_for_whole_ones() {
    for (reply, what) in [
        (&b"OK\na 1\n"[..], "cut short"),
        (b"OK\na 1", "cut short"),
        (b"", "cut short"),
        (b".\n", "empty"),
        (b"HELLO\n.\n", "no status line"),
        (b"OK\n.\n.\n", "a line after the end"),
        (b"OK\n\xff\n.\n", "not UTF-8"),
    ] {
        assert_eq!(
            parse_reply(reply),
            Err(ReplyError::Malformed(what)),
            "{reply:?}"
        );
    }
}

#[test]
fn who_rows_round_trip_and_fields_are_made_safe() {
    let row = WhoRow {
        user: "al ice\t".into(),
        client: "192.0.2.1".into(),
        local_port: 995,
        tls: "TLSv1.3".into(),
        state: "TRANSACTION".into(),
        since: Some(1_800_000_000),
        bytes_sent: 1234,
        commands: 7,
    };
    let line = row.encode();
    assert_eq!(
        line,
        "al?ice?\t192.0.2.1\t995\tTLSv1.3\tTRANSACTION\t1800000000\t1234\t7"
    );
    let back = WhoRow::decode(&line).unwrap();
    assert_eq!(back.user, "al?ice?");
    assert_eq!(back.since, Some(1_800_000_000));
    let before_login = WhoRow {
        user: String::new(),
        since: None,
        ..row
    };
    assert_eq!(
        WhoRow::decode(&before_login.encode()).unwrap().user,
        "-",
        "an empty field is never an empty string on the wire"
    );
    assert!(WhoRow::decode("a\tb").is_err());
    assert!(WhoRow::decode("a\tb\tx\tnone\tS\t-\t0\t0").is_err());
}

#[test]
fn stat_lines() {
    assert_eq!(decode_stat("uptime_seconds 12"), Ok(("uptime_seconds", 12)));
    assert!(decode_stat("uptime_seconds").is_err());
    assert!(decode_stat("a b 1").is_err());
    assert!(decode_stat("a -1").is_err());
}

fn longest_row() -> WhoRow {
    WhoRow {
        user: "u".repeat(255),
        client: "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".into(),
        local_port: u16::MAX,
        tls: "TLSv1.3".into(),
        state: "AUTHORIZATION".into(),
        since: Some(u64::MAX),
        bytes_sent: u64::MAX,
        commands: u64::MAX,
    }
}

#[test]
fn a_who_reply_counts_the_sessions_that_do_not_fit() {
    let rows = vec![longest_row(); 3];
    let one_row =
        "OK\n.\n".len() + "more 18446744073709551615\n".len() + rows[0].encode().len() + 1;
    let reply = who_reply_within(&rows, one_row);
    assert_eq!(
        String::from_utf8(reply.clone()).unwrap(),
        format!("OK\n{}\nmore 2\n.\n", rows[0].encode())
    );
    let body = parse_reply(&reply).unwrap();
    assert_eq!(decode_who(&body), Ok((vec![longest_row()], 2)));

    let all = who_reply_within(&rows, one_row * 3);
    assert_eq!(decode_who(&parse_reply(&all).unwrap()), Ok((rows, 0)));
    assert_eq!(decode_who(&[]), Ok((vec![], 0)));
    assert!(decode_who(&["more x"]).is_err());
}

#[test]
fn a_who_reply_of_the_most_sessions_a_config_allows_is_read_whole() {
    let most = usize::try_from(crate::limits::MAX_SESSIONS_LIMIT).unwrap();
    let rows = vec![longest_row(); most];
    let reply = who_reply(&rows);
    assert!(reply.len() <= CONTROL_MAX_REPLY, "{}", reply.len());
    let body = parse_reply(&reply).expect("a client reads it");
    let (shown, left_out) = decode_who(&body).unwrap();
    assert!(left_out > 0);
    assert_eq!(shown.len() + usize::try_from(left_out).unwrap(), most);
    assert_eq!(shown[0], longest_row());
}
