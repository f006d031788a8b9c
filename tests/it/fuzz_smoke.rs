//! Deterministic smoke run of every fuzz target body (fuzz/src/lib.rs) on a few thousand generated inputs.
//!
//! libFuzzer needs its own build (see README "Performance"); this keeps the
//! same bodies compiled and exercised by `cargo test`. Inputs are spliced
//! from protocol-shaped pieces by proptest with a fixed seed, so a run
//! reproduces and a failure names the smallest input that still fails.

#[path = "../../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod bodies;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestError, TestRng, TestRunner};

/// What one smoke run feeds a target: `cases` inputs of up to
/// `max_pieces` pieces, each a dictionary word or a few random bytes,
/// after one random selector byte (unless `selector` is off).
struct Inputs {
    cases: u32,
    max_pieces: usize,
    dict: Vec<Vec<u8>>,
    selector: bool,
}

fn inputs(cases: u32, max_pieces: usize, dict: &[&[u8]]) -> Inputs {
    Inputs {
        cases,
        max_pieces,
        dict: dict.iter().map(|word| word.to_vec()).collect(),
        selector: true,
    }
}

impl Inputs {
    fn strategy(&self) -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            4 => prop::sample::select(self.dict.clone()),
            1 => prop::collection::vec(any::<u8>(), 1..=4),
        ];
        let selector = usize::from(self.selector);
        (
            prop::collection::vec(any::<u8>(), selector..=selector),
            prop::collection::vec(piece, 0..=self.max_pieces),
        )
            .prop_map(|(mut input, pieces)| {
                input.extend(pieces.concat());
                input
            })
    }

    /// The runner, with a fixed seed so every run sees the same inputs.
    fn runner(&self) -> TestRunner {
        let config = Config {
            cases: self.cases,
            failure_persistence: None,
            ..Config::default()
        };
        TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha))
    }

    /// The inputs a run draws, for tests that check their own coverage.
    fn generate(&self) -> Vec<Vec<u8>> {
        let strategy = self.strategy();
        let mut runner = self.runner();
        (0..self.cases)
            .map(|_| strategy.new_tree(&mut runner).unwrap().current())
            .collect()
    }
}

/// Runs `body` on every input (proptest, with a fixed seed so a run
/// reproduces); a panic fails the test with the smallest input proptest
/// can shrink it to.
fn run(name: &str, body: fn(&[u8]), inputs: Inputs) {
    match inputs.runner().run(&inputs.strategy(), |input| {
        body(&input);
        Ok(())
    }) {
        Ok(()) => {}
        Err(TestError::Fail(why, input)) => panic!(
            "fuzz target {name} failed on input {:?}\n(bytes {input:?}): {why}",
            String::from_utf8_lossy(&input)
        ),
        Err(e) => panic!("fuzz target {name}: {e}"),
    }
}

const POP3: &[&[u8]] = &[
    b"USER ",
    b"PASS ",
    b"STAT",
    b"LIST",
    b"RETR ",
    b"DELE ",
    b"TOP ",
    b"UIDL",
    b"NOOP",
    b"RSET",
    b"QUIT",
    b"CAPA",
    b"AUTH ",
    b"STLS",
    b"APOP ",
    b"alice",
    b"secret",
    b"busy",
    b"x",
    b"down",
    b" ",
    b"  ",
    b"1",
    b"2",
    b"3",
    b"0",
    b"-1",
    b"99999999999999999999",
    b"\r\n",
    b"\n",
    b"\r",
    b"\0",
    b"\t",
    b"user ",
    b"retr",
    b"PLAIN",
    b"=",
    b"*",
];

#[test]
fn command_parser() {
    run("command", bodies::command, inputs(4000, 6, POP3));
}

#[test]
fn line_buffer_chunking() {
    const D: &[&[u8]] = &[
        b"\n",
        b"\r\n",
        b"\r",
        b"a",
        b"abcdefgh",
        b"STAT",
        b"0123456789abcdef",
    ];
    run("line_buffer", bodies::line_buffer, inputs(4000, 24, D));
}

#[test]
fn session_with_fake_backend() {
    run("session", bodies::session, inputs(3000, 30, POP3));
    // Overlong lines and many bad commands in a row.
    let long = [
        &[3u8][..],
        &[b'A'; 600],
        b"\r\nSTAT\r\n",
        &b"BAD\r\n".repeat(30),
    ]
    .concat();
    bodies::session(&long);
}

#[test]
fn mbox_scan_and_transfer_agree() {
    const D: &[&[u8]] = &[
        b"From ",
        b"From x\n",
        b"\n",
        b"\n\n",
        b"\r\n",
        b"\r",
        b".",
        b"..",
        b"x",
        b"Subject: s",
        b"Message-ID: <a@b>",
        b"Received: r",
        b"Date: d",
        b">From ",
        b"\0",
        b"\tcont",
    ];
    run("mbox", bodies::mbox, inputs(4000, 30, D));
}

#[test]
fn config_parse_render_round_trip() {
    const D: &[&[u8]] = &[
        b"listen = 127.0.0.1:110\n",
        b"listen = [::1]:995\n",
        b"listen_tls = 0.0.0.0:995\n",
        b"max_sessions = 10\n",
        b"max_sessions_per_ip = 0\n",
        b"idle_timeout = 5\n",
        b"auth_timeout = 99999999999\n",
        b"plaintext_auth = localhost\n",
        b"passdb = pam\n",
        b"passdb = passwd-file:/etc/x\n",
        b"mailbox = /var/mail/%u\n",
        b"mailbox = %h/mbox\n",
        b"lock_methods = dotlock\n",
        b"lock_methods = fcntl dotlock\n",
        b"log_level = debug\n",
        b"tls_cert = /c.pem\n",
        b"tls_key = /k.pem\n",
        b"tls_cert_user = email\n",
        b"proxy_protocol_from = 10.0.0.1\n",
        b"user = mail\n",
        b"# c\n",
        b"\n",
        b" = \n",
        b"key",
        b"=",
        b" ",
        b"#",
        b"\"",
        b"\r\n",
        b"state_dir = /s\n",
        b"pid_file = /p\n",
    ];
    run("config", bodies::config, inputs(3000, 8, D));
}

#[test]
fn sasl_exchanges() {
    const D: &[&[u8]] = &[
        b"\n",
        b"=",
        b"*",
        b"AGFsaWNlAHNlY3JldA==",
        b"biwsbj1hbGljZSxyPXJPcHJOR2ZwZ",
        b"n,,n=alice,r=abc",
        b"bixhPWFsaWNlLG49YWxpY2Uscj1hYmM=",
        b"YWxpY2U=",
        b"AAAA",
        b"====",
        b"c=biws,r=",
        b"p=",
        b"y,,n=x,r=y",
        b"!",
        b"\r",
    ];
    run("sasl", bodies::sasl, inputs(3000, 6, D));
}

#[test]
fn proxy_header_parser() {
    const D: &[&[u8]] = &[
        b"PROXY ",
        b"TCP4 ",
        b"TCP6 ",
        b"UNKNOWN",
        b"192.0.2.7 ",
        b"10.0.0.1 ",
        b"2001:db8::1 ",
        b"::ffff:1.2.3.4 ",
        b"65535 ",
        b"110",
        b"0",
        b" ",
        b"\r\n",
        b"\r",
        b"\n",
        b"\r\n\r\n\0\r\nQUIT\n",
        b"\x21\x11\x00\x0c",
        b"\x20\x00\x00\x00",
        b"\x21\x21\x00\x24",
        b"\x21\x31\x00\xd8",
        b"\x21\x11\xff\xff",
        b"\x22",
        b"\xc0\x00\x02\x07",
    ];
    // The selector byte would hide the signature: bodies see the pieces only.
    let inputs = Inputs {
        selector: false,
        ..inputs(4000, 12, D)
    };
    run("proxy", bodies::proxy, inputs);
}

#[test]
fn control_protocol() {
    const D: &[&[u8]] = &[
        b"WHO",
        b"STATS",
        b"KICK",
        b"kick",
        b" ",
        b"alice",
        b"192.0.2.1",
        b"::ffff:10.0.0.1",
        b"2001:db8::1",
        b"\n",
        b"\r\n",
        b"\t",
        b"OK\n",
        b"ERR ",
        b".\n",
        b"-",
        b"110",
        b"TLSv1.3",
        b"TRANSACTION",
        b"1800000000",
        b"uptime_seconds 5\n",
        b"\xff",
        b"\xc3\xa9",
    ];
    run("control", bodies::control, inputs(4000, 16, D));
    // Past the length limit.
    bodies::control(&[[0u8].as_slice(), &[b'W'; 300]].concat());
}

#[test]
fn spool_index_decoder() {
    const D: &[&[u8]] = &[
        b"\0\0\0\0",
        b"\x0d\0\0\0/var/mail/bob",
        b"\x01\0\0\0\0\0\0\0",
        b"\x02\0\0\0\0\0\0\0",
        b"\xff\xff\xff\xff\xff\xff\xff\xff",
        b"\x40\0\0\0\0\0\0\0",
        b"From ",
    ];
    run("index", bodies::index, inputs(3000, 40, D));
}

#[test]
fn update_journal_decoder() {
    // Patches (offset u16 LE, length, bytes) onto the fields of a valid
    // journal: the counts and lengths at 16..72, the marker at 72, the
    // path at 88, the tail check at 3800, the account at 3832, the
    // progress records at 4096 and 4608, the plan at 8192.
    const D: &[&[u8]] = &[
        b"\x20\0\x08",
        b"\x28\0\x08",
        b"\x30\0\x08",
        b"\x38\0\x08",
        b"\x40\0\x08",
        b"\x58\0\x08",
        b"\xd8\x0e\x08",
        b"\xe0\x0e\x08",
        b"\xf8\x0e\x08",
        b"\x00\x10\x20",
        b"\x00\x12\x20",
        b"\x00\x20\x10",
        b"\0\0\0\0\0\0\0\0",
        b"\x01\0\0\0\0\0\0\0",
        b"\x02\0\0\0\0\0\0\0",
        b"\x40\0\0\0\0\0\0\0",
        b"\xff\xff\xff\xff\xff\xff\xff\xff",
    ];
    let inputs = Inputs {
        selector: false,
        ..inputs(2000, 24, D)
    };
    run("journal", bodies::journal, inputs);
}

#[test]
fn helper_wire_round_trip() {
    use ironpop::account::Password;
    use ironpop::privsep::helper_wire::{Accepted, Request, Response, SpoolAnswer};
    let requests = [
        Request::Verify {
            user: "alice".into(),
            password: Password::new(b"pw\0\xff".to_vec()),
        },
        Request::Certificate {
            chain: vec![vec![0x30, 0x82], vec![]],
            authzid: "".into(),
        },
        Request::ScramParams { user: "bob".into() },
        Request::ScramProof {
            user: "carol".into(),
            auth_message: b"n=carol,r=abc".to_vec(),
            proof: [7; ironpop::sasl::KEY_LEN],
        },
        Request::OffersScram,
        Request::StartupSpool {
            user: "dave".into(),
            mailbox: "/home/dave/mbox".into(),
        },
    ];
    let responses = [
        Response::Accepted(Accepted {
            user: "alice".into(),
            mailbox: "/var/mail/alice".into(),
            spool: SpoolAnswer::Open,
            server_signature: None,
        }),
        Response::Accepted(Accepted {
            user: "bob".into(),
            mailbox: "/var/mail/bob".into(),
            spool: SpoolAnswer::Refused("it is a symbolic link".into()),
            server_signature: Some([1; ironpop::sasl::KEY_LEN]),
        }),
        Response::Accepted(Accepted {
            user: "c".into(),
            mailbox: "/m".into(),
            spool: SpoolAnswer::Failed(24),
            server_signature: None,
        }),
        Response::Rejected,
        Response::Unavailable("helper busy".into()),
        Response::ScramParams {
            salt: b"salt".to_vec(),
            iterations: 4096,
        },
        Response::Flag(true),
    ];
    let frames: Vec<Vec<u8>> = requests
        .iter()
        .map(|r| r.encode().unwrap())
        .chain(responses.iter().map(|r| r.encode().unwrap()))
        .collect();
    // Whole frames, pieces of frames and stray bytes, spliced.
    let mut dict: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
    dict.extend(frames.iter().map(|f| &f[..f.len() / 2]));
    dict.extend(frames.iter().map(|f| &f[1..]));
    dict.extend([
        &b"\x00"[..],
        b"\x01",
        b"\x03",
        b"\x00\x05",
        b"\xff\xff",
        b"\x80",
    ]);
    let inputs = Inputs {
        selector: false,
        ..inputs(4000, 3, &dict)
    };
    let decoded = inputs
        .generate()
        .iter()
        .filter(|i| Request::decode(i).is_some() || Response::decode(i).is_some())
        .count();
    assert!(
        decoded > 200,
        "only {decoded} inputs decode: the round trip is hardly exercised"
    );
    run("helper_wire", bodies::helper_wire, inputs);
}
