//! EXPIRE and LOGIN-DELAY end to end, with CAPA, on a clock the test moves (debug builds only).

use crate::harness::{self, ServerBuilder, TestServer, ALICE};

/// A server whose clock reads the file `clock` in its directory.
fn server(expire: &str, delay: &str, clock: &std::path::Path) -> TestServer {
    std::fs::write(clock, "1000000000\n").unwrap();
    ServerBuilder::new()
        .set("expire_days", expire)
        .set("login_delay", delay)
        .env("IRONPOP_TEST_CLOCK_FILE", clock.to_str().unwrap())
        .spool("alice", harness::mbox(&harness::messages(3)))
        .start()
}

fn set_clock(clock: &std::path::Path, t: i64) {
    std::fs::write(clock, format!("{t}\n")).unwrap();
}

fn stat(server: &TestServer) -> usize {
    let mut c = server.login(ALICE);
    let n = c.ok("STAT").split(' ').nth(1).unwrap().parse().unwrap();
    c.quit();
    n
}

#[test]
fn expire_and_login_delay_follow_the_clock() {
    let clock_dir = tempfile::tempdir().unwrap();
    let clock = clock_dir.path().join("clock");
    let server = server("2", "60", &clock);
    let mut c = server.connect();
    c.greeting();
    let capa = c.capa();
    assert!(capa.contains(&"EXPIRE 2".to_string()), "{capa:?}");
    assert!(capa.contains(&"LOGIN-DELAY 60".to_string()), "{capa:?}");
    c.login(ALICE);
    harness::assert_bytes_eq(
        &c.ok_body("RETR 1"),
        &harness::crlf(&harness::message(1)),
        "RETR 1",
    );
    c.quit();
    // Too soon: refused after the password, and not counted as a login.
    let t0 = 1_000_000_000;
    set_clock(&clock, t0 + 59);
    let mut c = server.connect();
    c.greeting();
    c.ok("USER alice");
    let reply = c.cmd(&format!("PASS {}", ALICE.password));
    assert!(reply.starts_with("-ERR [LOGIN-DELAY] "), "{reply}");
    drop(c);
    set_clock(&clock, t0 + 60);
    assert_eq!(stat(&server), 3, "retrieved a minute ago: kept");
    // Two days after the retrieval the message goes at the next QUIT;
    // the session before that QUIT still lists it.
    set_clock(&clock, t0 + 2 * 86_400);
    assert_eq!(stat(&server), 3);
    set_clock(&clock, t0 + 2 * 86_400 + 60);
    assert_eq!(stat(&server), 2);
    let left = harness::split_mbox(&server.read_spool("alice"));
    assert_eq!(left, harness::messages(3)[1..].to_vec());
}

#[test]
fn expire_zero_deletes_at_the_quit_of_the_retrieving_session() {
    let clock_dir = tempfile::tempdir().unwrap();
    let clock = clock_dir.path().join("clock");
    let server = server("0", "0", &clock);
    let mut c = server.login(ALICE);
    let capa = c.capa();
    assert!(capa.contains(&"EXPIRE 0".to_string()), "{capa:?}");
    assert!(
        !capa.iter().any(|l| l.starts_with("LOGIN-DELAY")),
        "{capa:?}"
    );
    c.ok_body("RETR 2");
    c.ok_body("TOP 3 0");
    c.quit();
    let left = harness::split_mbox(&server.read_spool("alice"));
    let all = harness::messages(3);
    assert_eq!(left, vec![all[0].clone(), all[2].clone()]);
    // Without QUIT nothing is deleted.
    let mut c = server.login(ALICE);
    c.ok_body("RETR 1");
    drop(c);
    assert_eq!(stat(&server), 2);
}

#[test]
fn the_defaults_promise_never_and_no_delay() {
    let server = ServerBuilder::new().start();
    let mut c = server.greeted();
    let capa = c.capa();
    assert!(capa.contains(&"EXPIRE NEVER".to_string()), "{capa:?}");
    assert!(
        !capa.iter().any(|l| l.starts_with("LOGIN-DELAY")),
        "{capa:?}"
    );
}
