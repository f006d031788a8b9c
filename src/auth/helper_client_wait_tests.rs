//! Tests of how long the helper pool waits: for a reply (a late one is discarded and the channel kept), for a reply that never comes, for a free helper.

use super::*;

/// Waits for tests: a short reply timeout, long enough otherwise.
fn quick(reply_ms: u64, late_ms: u64) -> Waits {
    Waits {
        reply: Duration::from_millis(reply_ms),
        free_helper: Duration::from_secs(10),
        late_reply: Duration::from_millis(late_ms),
    }
}

#[test]
fn a_late_reply_is_discarded_and_the_helper_serves_again() {
    // The late reply carries a spool, which must be closed.
    first_answer_fails_and_leaks_nothing(
        quick(150, 10_000),
        Duration::from_millis(600),
        1,
        "no reply in time",
    );
}

#[test]
fn a_reply_that_never_comes_costs_the_channel_after_the_longer_wait() {
    let (_fx, _db) = fixture();
    let (a, b) = pair();
    let pool = Arc::new(HelperPool::with_waits(vec![(a, 0)], quick(100, 300)).unwrap());
    let (told, none_answers) = std::sync::mpsc::channel::<String>();
    pool.when_none_answers(move |why| told.send(why).unwrap());
    let (hang_up, hung) = std::sync::mpsc::channel::<()>();
    let fake = thread::spawn(move || {
        let mut buf = [0u8; 512];
        let _ = nix::sys::socket::recv(b.as_raw_fd(), &mut buf, MsgFlags::empty());
        let _ = hung.recv();
        b
    });
    assert!(pool.verify("alice", b"secret").is_err());
    assert_eq!(pool.alive(), 1, "kept while the late reply may come");
    assert!(none_answers.try_recv().is_err(), "not while it may answer");
    let deadline = Instant::now() + Duration::from_secs(10);
    while pool.alive() == 1 {
        assert!(Instant::now() < deadline, "the channel is never given up");
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(pool.alive(), 0);
    // The daemon is told, once, so that it stops.
    let why = none_answers
        .recv_timeout(Duration::from_secs(10))
        .expect("told that no helper answers");
    assert!(
        why.contains("no privileged helper answers any more"),
        "{why}"
    );
    match pool.verify("alice", b"secret") {
        Err(why) => assert!(why.contains("no privileged helper"), "{why}"),
        Ok(v) => panic!("{v:?}"),
    }
    drop(hang_up);
    drop(fake.join().unwrap());
}

#[test]
fn a_login_waits_a_bounded_time_for_a_free_helper() {
    let (_fx, db) = fixture();
    let (a, b) = pair();
    let helper = thread::spawn(move || serve(&b, &db));
    let waits = Waits {
        free_helper: Duration::from_millis(200),
        ..Waits::standard()
    };
    let pool = HelperPool::with_waits(vec![(a, 0)], waits).unwrap();
    let busy = pool.take().unwrap();
    let started = Instant::now();
    match pool.verify("alice", b"secret") {
        Err(why) => assert!(why.contains("busy"), "{why}"),
        Ok(v) => panic!("{v:?}"),
    }
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(200), "{waited:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    // Free again, the helper answers.
    pool.shared.give_back(busy);
    assert!(matches!(
        pool.verify("alice", b"secret"),
        Ok(Verdict {
            response: Response::Accepted(_),
            ..
        })
    ));
    drop(pool);
    assert_eq!(helper.join().unwrap(), 0);
}
