//! Fuzz target bodies over ironpop's pure parsers and encoders, shared by the libFuzzer targets and tests/it/fuzz_smoke.rs.
//!
//! Each `pub fn` takes arbitrary bytes, must never panic except on a broken
//! invariant (a finding), and checks what it can cheaply: that chunking
//! never changes a result, that sizes agree with the octets sent, that
//! replies are whole lines. The libFuzzer targets in `fuzz_targets/` are
//! one-line wrappers; the main test suite includes this file by path and
//! runs every body on generated inputs, so the bodies stay compiled and
//! exercised without libFuzzer.

mod fakes;

use std::path::Path;

use ironpop::limits::MAX_HELPER_FRAME;
use ironpop::mailbox::index::{self, Index};
use ironpop::mailbox::journal::{self, Header, Progress, TailCheck};
use ironpop::mailbox::plan::Plan;
use ironpop::mailbox::scan::{scan_bytes, Scanner};
use ironpop::mailbox::transfer::Encoder;
use ironpop::net::line_buffer::{LineBuffer, LineEvent};
use ironpop::net::proxy::{self, Parsed};
use ironpop::pop3::command::{self, Command};
use ironpop::pop3::Control;
use ironpop::privsep::helper_wire::{Request, Response};
use ironpop::sasl::{self, Exchange, Mechanism, Step};

/// Chunk sizes taken from the input itself, cycling, each in 1..=64.
struct Chunks<'a> {
    sizes: &'a [u8],
    i: usize,
}

impl Chunks<'_> {
    fn next_size(&mut self) -> usize {
        let s = self.sizes.get(self.i % self.sizes.len().max(1)).copied();
        self.i += 1;
        usize::from(s.unwrap_or(7) % 64) + 1
    }
}

/// Splits `data` as `[selector byte][n chunk-size bytes][payload]`.
fn header(data: &[u8], n: usize) -> (u8, &[u8], &[u8]) {
    let sel = data.first().copied().unwrap_or(0);
    let rest = data.get(1..).unwrap_or_default();
    let n = n.min(rest.len());
    (sel, &rest[..n], &rest[n..])
}

/// `ironpop::pop3::command::parse`, and the message-number check on what
/// it accepts.
pub fn command(data: &[u8]) {
    let deleted = [false, true, false];
    match command::parse(data) {
        Ok(Command::Retr(m) | Command::Dele(m) | Command::Top(m, _))
        | Ok(Command::List(Some(m)) | Command::Uidl(Some(m))) => {
            if let Ok(i) = command::message_number(m, &deleted) {
                assert!(i < deleted.len() && !deleted[i], "message_number {i}");
            }
        }
        Ok(Command::User(u)) => assert!(!u.is_empty() && u.len() <= data.len()),
        Ok(_) | Err(_) => {}
    }
    if let Ok((verb, rest)) = command::split(data) {
        let _ = command::parse_args(verb, rest);
    }
}

/// The events a line buffer must produce for `input` with `max_line`,
/// computed the obvious way from the whole input.
fn expected_lines(input: &[u8], max_line: usize) -> Vec<Option<Vec<u8>>> {
    let mut out = Vec::new();
    let mut rest = input;
    while let Some(lf) = memchr_lf(rest) {
        let line = &rest[..lf];
        if lf + 1 > max_line {
            out.push(None);
        } else {
            out.push(Some(line.strip_suffix(b"\r").unwrap_or(line).to_vec()));
        }
        rest = &rest[lf + 1..];
    }
    if rest.len() >= max_line {
        out.push(None);
    }
    out
}

fn memchr_lf(b: &[u8]) -> Option<usize> {
    b.iter().position(|&c| c == b'\n')
}

/// `LineBuffer` fed in arbitrary chunks, drained after each push as the
/// driver does, must give exactly the whole-input events.
pub fn line_buffer(data: &[u8]) {
    let (sel, sizes, input) = header(data, 8);
    let max_line = usize::from(sel % 32) + 1;
    let mut lb = LineBuffer::new(max_line);
    let mut got = Vec::new();
    let mut chunks = Chunks { sizes, i: 0 };
    let mut rest = input;
    while !rest.is_empty() {
        let n = chunks.next_size().min(rest.len());
        lb.push(&rest[..n]);
        rest = &rest[n..];
        while let Some(ev) = lb.next_line() {
            match ev {
                LineEvent::Line(l) => {
                    assert!(l.len() < max_line, "line of {} > max {max_line}", l.len());
                    got.push(Some(l.to_vec()));
                }
                LineEvent::TooLong => got.push(None),
            }
        }
        assert!(!lb.has_complete_line(), "drained buffer still has a line");
    }
    assert_eq!(got, expected_lines(input, max_line), "max_line {max_line}");
}

/// A session driven like the driver drives it, against in-memory fakes:
/// every reply is whole CRLF lines and a closed session stays closed.
pub fn session(data: &[u8]) {
    let (sel, _, input) = header(data, 0);
    let mut session = fakes::session(sel & 1 == 1);
    let mut out = Vec::new();
    session.greeting(&mut out).expect("greeting");
    let mut script: Vec<u8> = Vec::new();
    if sel & 2 == 2 {
        script.extend_from_slice(b"USER alice\r\nPASS secret\r\n");
    }
    script.extend_from_slice(input);
    let mut lines = LineBuffer::new(session.max_line());
    lines.push(&script);
    let mut closed = false;
    loop {
        out.clear();
        let control = match lines.next_line() {
            None => break,
            Some(LineEvent::Line(l)) => session.handle_line(l, &mut out),
            Some(LineEvent::TooLong) => session.handle_too_long(&mut out),
        };
        let control = control.expect("writing to a Vec cannot fail");
        lines.set_max_line(session.max_line());
        assert!(
            out.is_empty() || out.ends_with(b"\r\n"),
            "partial reply {out:?}"
        );
        if closed {
            assert_eq!(control, Control::Close, "a closed session stays closed");
            assert!(out.is_empty(), "a closed session says nothing");
        }
        closed |= control == Control::Close;
    }
    session.abort("eof");
}

/// mbox scan in arbitrary blocks equals the whole scan; every message's
/// listed size equals its RETR octets before dot-stuffing, whatever the
/// chunking; TOP is a prefix of RETR.
pub fn mbox(data: &[u8]) {
    let (sel, sizes, spool) = header(data, 4);
    let whole = scan_bytes(spool);
    let mut s = Scanner::new();
    let mut chunks = Chunks { sizes, i: 0 };
    let mut rest = spool;
    while !rest.is_empty() {
        let n = chunks.next_size().min(rest.len());
        s.feed(&rest[..n]);
        rest = &rest[n..];
    }
    assert_eq!(s.finish(), whole, "scan depends on block boundaries");
    assert_eq!(whole.scanned_len, spool.len() as u64);
    // Leading blank lines before the first `From ` are no message.
    let leading = spool.iter().take_while(|&&b| b == b'\n').count() as u64;
    let mut prev_end = whole
        .messages
        .first()
        .map_or(0, |m| m.from_offset.min(leading));
    for m in &whole.messages {
        assert_eq!(m.from_offset, prev_end, "raw ranges are contiguous");
        assert!(m.from_offset <= m.content_offset && m.content_offset + m.content_len <= m.end);
        prev_end = m.end;
        let (Ok(start), Ok(len)) = (
            usize::try_from(m.content_offset),
            usize::try_from(m.content_len),
        ) else {
            panic!("offsets out of range")
        };
        let content = &spool[start..start + len];
        let mut enc = Encoder::retr();
        let mut body = Vec::new();
        let mut chunks = Chunks { sizes, i: 3 };
        let mut rest = content;
        while !rest.is_empty() {
            let n = chunks.next_size().min(rest.len());
            enc.encode(&rest[..n], &mut body);
            rest = &rest[n..];
        }
        enc.finish(&mut body);
        assert_eq!(
            m.size,
            body.len() as u64 - enc.stuffed_dots(),
            "LIST size != RETR octets before dot-stuffing"
        );
        assert!(body.is_empty() || body.ends_with(b"\r\n"));
        let top = ironpop::mailbox::transfer::encode_all(content, Some(u64::from(sel % 4)));
        assert!(body.starts_with(&top), "TOP is not a prefix of RETR");
    }
    assert_eq!(
        whole.messages.last().map_or(whole.scanned_len, |m| m.end),
        whole.scanned_len
    );
}

/// `ironpop::config::parse`; an accepted config renders to text that
/// parses back to the same config.
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let source = Path::new("/fuzz/ironpop.conf");
    let Ok(cfg) = ironpop::config::parse(&text, source) else {
        return;
    };
    let _ = cfg.warnings();
    let rendered = cfg.render();
    match ironpop::config::parse(&rendered, source) {
        Ok(again) => assert_eq!(again, cfg, "render/parse round trip:\n{rendered}"),
        Err(e) => panic!("rendered config does not parse: {e}\n{rendered}"),
    }
}

/// SASL exchanges: the input is AUTH's initial response and continuation
/// lines; a finished exchange stays finished.
pub fn sasl(data: &[u8]) {
    let (sel, _, input) = header(data, 0);
    let mech = Mechanism::ALL[usize::from(sel) % Mechanism::ALL.len()];
    let ctx = fakes::sasl_context();
    let Some(mut ex) = Exchange::start(mech, &ctx) else {
        panic!("{mech} is offered by the fake context")
    };
    assert_eq!(ex.mechanism(), mech);
    let mut lines = input.split(|&b| b == b'\n');
    let first = lines.next();
    let mut step = ex.initial_response(if sel & 0x80 == 0 { first } else { None });
    for line in lines {
        match &step {
            Step::Challenge(c) => {
                let _ = sasl::challenge_line(c);
            }
            Step::Done(_) | Step::Failed(_) => {
                assert!(ex.is_finished());
                assert!(matches!(ex.continuation(line), Step::Failed(_)));
                return;
            }
        }
        step = ex.continuation(line);
    }
    let _ = ironpop::sasl::ScramSecret::parse(&String::from_utf8_lossy(input));
}

/// The PROXY header parser: read the way the worker reads (only the bytes
/// asked for), a complete header is exactly what was read, every prefix
/// of it asks for more, and no header outgrows the reader's buffer.
pub fn proxy(data: &[u8]) {
    let mut have = 0usize;
    loop {
        match proxy::parse(&data[..have]) {
            Ok(Parsed::Complete { len, .. }) => {
                assert_eq!(len, have, "complete after reading exactly the header");
                for cut in 0..len {
                    assert!(
                        matches!(proxy::parse(&data[..cut]), Ok(Parsed::NeedMore(_))),
                        "prefix of {cut} bytes"
                    );
                }
                break;
            }
            Ok(Parsed::NeedMore(n)) => {
                assert!(n > 0, "asks for nothing");
                assert!(have + n <= proxy::MAX_HEADER, "outgrows the buffer");
                if have + n > data.len() {
                    break;
                }
                have += n;
            }
            Err(e) => {
                assert!(!e.to_string().is_empty());
                break;
            }
        }
    }
    // Whatever the whole input holds, one look never panics and a header
    // found in it is the one found incrementally.
    if let Ok(Parsed::Complete { len, .. }) = proxy::parse(data) {
        assert!(len <= data.len() && len <= proxy::MAX_HEADER);
    }
}

/// The control socket's protocol: the daemon's request parser (selector
/// even) and the command line's reply parser (odd). A request prints back
/// to a line that parses to the same request; an error reply of any text
/// is read back as a refusal; no body line holds a line end.
pub fn control(data: &[u8]) {
    use ironpop::control::protocol::{
        decode_stat, decode_who, err_reply, parse_reply, parse_request, ReplyError, WhoRow,
    };
    use ironpop::limits::CONTROL_MAX_REQUEST;
    let (sel, _, payload) = header(data, 0);
    if sel % 2 == 0 {
        match parse_request(payload) {
            Ok(request) => {
                assert!(payload.len() <= CONTROL_MAX_REQUEST);
                let line = format!("{request}\n");
                assert_eq!(parse_request(line.as_bytes()), Ok(request), "{line:?}");
            }
            Err(e) => assert!(!e.to_string().is_empty()),
        }
        return;
    }
    match parse_reply(payload) {
        Ok(body) => {
            if let Ok((rows, _)) = decode_who(&body) {
                assert!(body.len() - rows.len() <= 1, "only the last line counts");
            }
            for line in body {
                assert!(!line.contains('\n') && line != ".");
                if let Ok(row) = WhoRow::decode(line) {
                    assert_eq!(WhoRow::decode(&row.encode()), Ok(row));
                }
                let _ = decode_stat(line);
            }
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
    let text = String::from_utf8_lossy(payload);
    assert!(matches!(
        parse_reply(&err_reply(&text)),
        Err(ReplyError::Refused(_))
    ));
}

/// Spool index decoder: arbitrary bytes never panic; bytes that carry a
/// correct checksum (so the structure parser runs) decode either to an
/// error or to an index that encodes back to exactly those bytes and whose
/// messages lie in order inside the indexed length.
pub fn index(data: &[u8]) {
    let _ = Index::decode(data);
    let mut framed = b"IRONPOPX\x02\0\0\0".to_vec();
    framed.extend_from_slice(data);
    let sum = index::checksum(&framed);
    framed.extend_from_slice(&sum.to_le_bytes());
    if let Ok(decoded) = Index::decode(&framed) {
        assert_eq!(decoded.encode(), framed, "decode/encode round trip");
        let mut prev = 0;
        for e in &decoded.entries {
            assert!(e.message.from_offset >= prev);
            assert!(e.message.end <= decoded.indexed_len);
            prev = e.message.end;
        }
    }
}

/// The privileged helper's wire format, both directions: a frame either
/// decoder accepts is canonical (encoding the value gives the frame back,
/// byte for byte, and decoding that gives the value), and stays within
/// [`MAX_HELPER_FRAME`]; a startup-recovery request always names an
/// absolute path. The request decoder is the one parser that runs as root
/// on input from the network-facing process.
pub fn helper_wire(data: &[u8]) {
    if let Some(request) = Request::decode(data) {
        if let Request::StartupSpool { mailbox, .. } = &request {
            assert!(mailbox.is_absolute(), "a startup spool is an absolute path");
        }
        let frame = request.encode().expect("a decoded request encodes");
        assert_eq!(frame, data, "request encoding is canonical");
        assert!(frame.len() <= MAX_HELPER_FRAME);
        assert_eq!(Request::decode(&frame), Some(request), "round trip");
    }
    if let Some(response) = Response::decode(data) {
        let frame = response.encode().expect("a decoded response encodes");
        assert_eq!(frame, data, "response encoding is canonical");
        assert!(frame.len() <= MAX_HELPER_FRAME);
        assert_eq!(Response::decode(&frame), Some(response), "round trip");
    }
}

/// Update journal decoder (what startup recovery reads before the
/// privileged helper opens a spool): arbitrary bytes never panic; then a
/// valid journal patched by the input (`offset` u16 LE, `length` u8,
/// bytes; repeated) so every field is reached: what decodes is
/// consistent (hashes per round, rounds inside the spool, tail check
/// inside N, an account only with a tail check, progress inside the plan)
/// and encodes to a journal that decodes to the same header.
pub fn journal(data: &[u8]) {
    let _ = journal::decode_bytes(data);
    let plan = Plan::new(300, vec![(10, 50), (100, 120)], 64).expect("a plan");
    let marker = b"0123456789abcdef".to_vec();
    let header = Header {
        ino: 7,
        tail: Some(TailCheck {
            len: plan.deleted_bytes() - marker.len() as u64,
            hash: 1,
        }),
        round_hashes: vec![2; plan.rounds() as usize],
        deleted_hashes: Some(vec![3; plan.deleted_pieces(marker.len() as u64).len()]),
        plan,
        marker,
        spool: "/var/mail/bob".into(),
        account: Some("bob".into()),
    };
    let with_undo = |h: &Header| {
        let mut image = journal::image(h);
        image.resize(image.len() + h.plan.round as usize, 0);
        image
    };
    let mut image = with_undo(&header);
    let valid = journal::decode_bytes(&image);
    assert!(
        matches!(&valid, Ok((h, 1, Progress::Between { round: 0 })) if *h == header),
        "the unpatched journal decodes to its header"
    );
    let mut rest = data;
    while let [a, b, n, tail @ ..] = rest {
        let at = usize::from(u16::from_le_bytes([*a, *b])) % image.len();
        let n = usize::from(*n).min(tail.len()).min(image.len() - at);
        image[at..at + n].copy_from_slice(&tail[..n]);
        rest = &tail[n..];
    }
    let Ok((h, _, progress)) = journal::decode_bytes(&image) else {
        return;
    };
    let plan = &h.plan;
    assert_eq!(h.round_hashes.len() as u64, plan.rounds());
    if let Some(pieces) = &h.deleted_hashes {
        let cut = plan.deleted_pieces(h.marker.len() as u64);
        assert_eq!(pieces.len(), cut.len(), "a hash per deleted piece");
        assert!(cut.len() as u64 <= plan.deleted.len() as u64 + plan.rounds() + 2);
        assert!(h.tail.is_some(), "deleted pieces only with a tail check");
    }
    assert!(h.marker.len() <= journal::MAX_MARKER);
    for k in 0..plan.rounds() {
        let (from, to) = plan.destination(k);
        assert!(
            from <= to && to <= plan.orig_len,
            "round {k} inside the spool"
        );
    }
    if let Some(tail) = h.tail {
        assert!(tail.len <= plan.orig_len, "the tail check lies before N");
    }
    assert!(
        h.account.is_none() || h.tail.is_some(),
        "an account only with a tail check"
    );
    match progress {
        Progress::Between { round } => assert!(round <= plan.rounds()),
        Progress::InRound { round } => assert!(round < plan.rounds()),
        Progress::Truncating => {}
    }
    let again = journal::decode_bytes(&with_undo(&h)).map(|(again, _, _)| again);
    assert!(
        matches!(again, Ok(again) if again == h),
        "encode/decode round trip"
    );
}
