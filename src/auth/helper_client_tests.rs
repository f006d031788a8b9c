//! Tests of the helper channel pool against the real helper loop, run in a thread instead of a forked process.

use super::*;
use crate::mailbox::mbox::{MboxOpener, MboxSettings};
use crate::mailbox::MaildropOpener;
use crate::privsep::accounts::AccountBackend;
use crate::privsep::cert_login::CertCheck;
use crate::privsep::helper::{serve, AccountDb};
use crate::privsep::helper_wire::Accepted;
use crate::privsep::passwd_file::PasswdFile;
use crate::test_support::accepted;
use nix::sys::socket::{sendmsg, socketpair, AddressFamily, MsgFlags, SockFlag, SockType};
use std::io::IoSlice;
use std::os::fd::{AsRawFd, RawFd};
use std::thread;
use std::time::Duration;

struct Fixture {
    _dir: tempfile::TempDir,
    mail: std::path::PathBuf,
}

fn fixture() -> (Fixture, Arc<AccountDb>) {
    let dir = tempfile::tempdir().unwrap();
    let mail = dir.path().join("mail");
    std::fs::create_dir(&mail).unwrap();
    let users = dir.path().join("users");
    std::fs::write(&users, "alice:{PLAIN}secret\nbob:{PLAIN}hunter2\n").unwrap();
    std::fs::write(
        mail.join("alice"),
        "From a@b Mon Jan  1 00:00:00 2024\n\nhi\n",
    )
    .unwrap();
    let fx = Fixture { _dir: dir, mail };
    let db = fx.db(users, None);
    (fx, db)
}

impl Fixture {
    /// The passwd file `users` (spools in the fixture's mail directory,
    /// owned by us), with `certs` for AUTH EXTERNAL.
    fn db(&self, users: std::path::PathBuf, certs: Option<CertCheck>) -> Arc<AccountDb> {
        Arc::new(AccountDb::new(
            AccountBackend::PasswdFile {
                db: PasswdFile::new(users, format!("{}/%u", self.mail.display())),
                owner: nix::unistd::getuid(),
            },
            certs,
        ))
    }
}

/// The opener of a daemon with helpers, with session locks and journals
/// under the fixture's own state dir.
fn opener(fx: &Fixture) -> MboxOpener {
    let state = fx.mail.parent().unwrap().join("state");
    let _ = std::fs::create_dir(&state);
    let mut config = crate::config::Config::defaults(std::path::Path::new("/t.conf"));
    config.state_dir = state;
    config.lock_timeout = std::time::Duration::from_secs(2);
    MboxOpener::helper_opened(MboxSettings::from_config(&config))
}

/// The outcome without its spool, to compare.
fn account(outcome: AuthOutcome<Login>) -> AuthOutcome {
    outcome.map(|login| login.principal)
}

fn pair() -> (OwnedFd, OwnedFd) {
    socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .unwrap()
}

/// A pool of `n` channels, each served by the helper loop in a thread.
fn pool(db: &Arc<AccountDb>, n: usize) -> (Arc<HelperPool>, Vec<thread::JoinHandle<i32>>) {
    let mut ours = Vec::new();
    let mut threads = Vec::new();
    for _ in 0..n {
        let (a, b) = pair();
        let db = Arc::clone(db);
        threads.push(thread::spawn(move || serve(&b, &db)));
        ours.push((a, 0));
    }
    (Arc::new(HelperPool::new(ours).unwrap()), threads)
}

#[test]
fn login_opens_the_spool_through_the_helper() {
    let (fx, db) = fixture();
    let (pool, threads) = pool(&db, 1);
    let session = HelperSession::new(Arc::clone(&pool));
    let login = accepted(session.verify_password("alice", b"secret"));
    assert_eq!(login.principal.mailbox, fx.mail.join("alice"));
    assert!(matches!(login.spool, Spool::Opened(Some(_))), "{login:?}");
    let maildrop = opener(&fx).open(login).unwrap();
    assert_eq!(maildrop.messages().len(), 1);

    assert_eq!(
        account(session.verify_password("alice", b"wrong")),
        AuthOutcome::Rejected
    );
    assert_eq!(
        account(session.verify_password("nobody", b"secret")),
        AuthOutcome::Rejected
    );
    // bob has no spool: an empty maildrop.
    let bob = accepted(session.verify_password("bob", b"hunter2"));
    assert!(matches!(bob.spool, Spool::Opened(None)), "{bob:?}");
    assert_eq!(opener(&fx).open(bob).unwrap().messages().len(), 0);
    drop(session);
    drop(pool);
    for t in threads {
        assert_eq!(t.join().unwrap(), 0, "helper ends cleanly at end of file");
    }
}

#[test]
fn with_helpers_only_a_spool_the_helper_opened_is_served() {
    let (fx, _db) = fixture();
    let forged = Principal {
        user: "alice".into(),
        mailbox: fx.mail.join("alice"),
    };
    let err = opener(&fx).open(Login::by_path(forged)).err().unwrap();
    assert!(err.is_permanent(), "{err}");
}

#[test]
fn a_dead_helper_never_lets_a_login_through() {
    let (_fx, _db) = fixture();
    let (a, b) = pair();
    let pool = Arc::new(HelperPool::new(vec![(a, 0)]).unwrap());
    drop(b);
    let session = HelperSession::new(Arc::clone(&pool));
    match session.verify_password("alice", b"secret") {
        AuthOutcome::Unavailable(why) => assert!(why.contains("helper"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(pool.alive(), 0);
    match session.verify_password("alice", b"secret") {
        AuthOutcome::Unavailable(why) => assert!(why.contains("no privileged helper"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_garbled_reply_is_not_trusted() {
    let (_fx, _db) = fixture();
    let (a, b) = pair();
    let pool = Arc::new(HelperPool::new(vec![(a, 0)]).unwrap());
    let fake = thread::spawn(move || {
        let mut buf = [0u8; 64];
        let _ = nix::sys::socket::recv(b.as_raw_fd(), &mut buf, MsgFlags::empty());
        // "Accepted" with the spool open, but no descriptor attached.
        let frame = Response::Accepted(Accepted {
            user: "alice".into(),
            mailbox: "/etc/shadow".into(),
            spool: SpoolAnswer::Open,
            server_signature: None,
        })
        .encode()
        .unwrap();
        nix::sys::socket::send(b.as_raw_fd(), &frame, MsgFlags::empty()).unwrap();
        b
    });
    let session = HelperSession::new(pool);
    assert!(matches!(
        session.verify_password("alice", b"x"),
        AuthOutcome::Unavailable(_)
    ));
    drop(fake.join());
}

#[test]
fn a_malformed_request_is_refused_and_the_helper_goes_on() {
    let (_fx, db) = fixture();
    let (a, b) = pair();
    let helper = thread::spawn(move || serve(&b, &db));
    nix::sys::socket::send(a.as_raw_fd(), &[99, 0, 1], MsgFlags::empty()).unwrap();
    let mut buf = [0u8; 256];
    let n = nix::sys::socket::recv(a.as_raw_fd(), &mut buf, MsgFlags::empty()).unwrap();
    assert_eq!(
        Response::decode(&buf[..n]),
        Some(Response::Unavailable("malformed request".into()))
    );
    // The same helper then serves a login.
    let pool = Arc::new(HelperPool::new(vec![(a, 0)]).unwrap());
    let session = HelperSession::new(Arc::clone(&pool));
    assert!(matches!(
        session.verify_password("alice", b"secret"),
        AuthOutcome::Accepted(_)
    ));
    drop((session, pool));
    assert_eq!(helper.join().unwrap(), 0, "ends only at end of file");
}

/// A fake helper that answers each request with `replies` in turn, each
/// after its delay and with the descriptors given; returns its end when
/// done.
fn fake_helper(
    b: OwnedFd,
    replies: Vec<(Duration, Response, Vec<RawFd>)>,
) -> thread::JoinHandle<OwnedFd> {
    thread::spawn(move || {
        for (delay, response, fds) in replies {
            let mut buf = [0u8; 512];
            let _ = nix::sys::socket::recv(b.as_raw_fd(), &mut buf, MsgFlags::empty());
            thread::sleep(delay);
            let frame = response.encode().unwrap();
            let rights = [nix::sys::socket::ControlMessage::ScmRights(&fds)];
            let cmsgs: &[nix::sys::socket::ControlMessage] =
                if fds.is_empty() { &[] } else { &rights };
            sendmsg::<()>(
                b.as_raw_fd(),
                &[IoSlice::new(&frame)],
                cmsgs,
                MsgFlags::empty(),
                None,
            )
            .unwrap();
        }
        b
    })
}

/// A fake helper answers a first login "accepted" with `copies` copies of
/// a pipe's write end attached, after `delay`, then rejects a second. The
/// first login fails with an error saying `why`; the channel stays and
/// answers the second; no received copy of the write end stays open.
fn first_answer_fails_and_leaks_nothing(waits: Waits, delay: Duration, copies: usize, why: &str) {
    let (fx, _db) = fixture();
    let (a, b) = pair();
    let pool = Arc::new(HelperPool::with_waits(vec![(a, 0)], waits).unwrap());
    // When every copy is closed, the read end sees end of file.
    let (read_end, write_end) = nix::unistd::pipe().unwrap();
    let accepted = Response::Accepted(Accepted {
        user: "alice".into(),
        mailbox: fx.mail.join("alice"),
        spool: SpoolAnswer::Open,
        server_signature: None,
    });
    let fake = fake_helper(
        b,
        vec![
            (delay, accepted, vec![write_end.as_raw_fd(); copies]),
            (Duration::ZERO, Response::Rejected, Vec::new()),
        ],
    );
    let session = HelperSession::new(Arc::clone(&pool));
    match session.verify_password("alice", b"secret") {
        AuthOutcome::Unavailable(e) => assert!(e.contains(why), "{e}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(pool.alive(), 1, "the channel is kept");
    // The next request gets its own answer (after a late one, once the
    // late one is in and discarded).
    assert_eq!(
        account(session.verify_password("alice", b"x")),
        AuthOutcome::Rejected,
        "and answers the next request"
    );
    assert_eq!(pool.alive(), 1);
    drop(fake.join().unwrap());
    drop(write_end);
    let mut byte = [0u8; 1];
    assert_eq!(
        nix::unistd::read(&read_end, &mut byte).unwrap(),
        0,
        "no received copy of the write end is left open"
    );
}

#[test]
fn a_truncated_descriptor_list_leaks_nothing_and_keeps_the_channel() {
    // Two descriptors where one is expected: the list arrives truncated.
    first_answer_fails_and_leaks_nothing(Waits::standard(), Duration::ZERO, 2, "descriptor");
}

#[test]
fn concurrent_logins_share_few_helpers() {
    let (_fx, db) = fixture();
    let (pool, _threads) = pool(&db, 2);
    let logins: Vec<_> = (0..8)
        .map(|i| {
            let pool = Arc::clone(&pool);
            thread::spawn(move || {
                let s = HelperSession::new(pool);
                let pw: &[u8] = if i % 2 == 0 { b"secret" } else { b"nope" };
                matches!(s.verify_password("alice", pw), AuthOutcome::Accepted(_))
            })
        })
        .collect();
    let ok: Vec<bool> = logins.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(ok, (0..8).map(|i| i % 2 == 0).collect::<Vec<_>>());
    assert_eq!(pool.alive(), 2);
}

#[test]
fn certificate_login_is_verified_by_the_helper() {
    let (fx, _) = fixture();
    let (_pki, config, alice_cert, selfsigned) = crate::privsep::cert_login::test_pki::pki("alice");
    let users = fx.mail.parent().unwrap().join("users");
    let db = fx.db(users, CertCheck::from_config(&config).unwrap());
    let (pool, _threads) = pool(&db, 1);
    let session = HelperSession::new(pool);
    let login = accepted(session.verify_certificate(std::slice::from_ref(&alice_cert), ""));
    assert_eq!(login.principal.user, "alice");
    assert_eq!(opener(&fx).open(login).unwrap().messages().len(), 1);
    // A chain the CA did not sign, another authzid, no chain at all.
    for (chain, authzid) in [
        (vec![selfsigned], ""),
        (vec![alice_cert.clone()], "bob"),
        (vec![], ""),
    ] {
        assert_eq!(
            account(session.verify_certificate(&chain, authzid)),
            AuthOutcome::Rejected,
            "{authzid:?}"
        );
    }
}

/// A users file (named `name`, next to the fixture's mail) holding one
/// user with a SCRAM secret for the password "pencil" and `salt`.
fn scram_users_file(fx: &Fixture, name: &str, user: &str, salt: &[u8]) -> std::path::PathBuf {
    let secret = crate::sasl::ScramSecret::derive(b"pencil", salt, 4096).unwrap();
    let users = fx.mail.parent().unwrap().join(name);
    std::fs::write(&users, format!("{user}:{secret}\n")).unwrap();
    users
}

#[test]
fn scram_login_is_verified_by_the_helper() {
    let (fx, _) = fixture();
    let users = scram_users_file(&fx, "users", "carol", b"carol's salt");
    let db = fx.db(users, None);
    let (pool, _threads) = pool(&db, 1);
    let session = HelperSession::new(pool);
    assert!(session.offers_scram());
    match session.scram_params("carol") {
        SecretLookup::Found(p) => {
            assert_eq!(p.salt, b"carol's salt");
            assert_eq!(p.iterations, 4096);
        }
        _ => panic!("no SCRAM parameters"),
    }
    assert!(matches!(
        session.scram_params("nobody"),
        SecretLookup::NoSecret
    ));
    // Only the helper can tell a right proof from a wrong one: the
    // network side never sees StoredKey.
    let message = b"n=carol,r=x,r=xy,s=Y2Fyb2wncyBzYWx0,i=4096,c=biws,r=xy";
    let login = session.scram_login("carol", message, &[0; KEY_LEN]);
    assert_eq!(
        login.map(|l| l.principal),
        ScramLogin::<Principal>::rejected()
    );
}

#[test]
fn the_password_less_lookup_request_is_gone() {
    let (_fx, db) = fixture();
    let (a, b) = pair();
    let helper = thread::spawn(move || serve(&b, &db));
    // Tag 2 was "lookup user, open the spool": now a malformed frame.
    let mut frame = vec![2, 0, 5];
    frame.extend_from_slice(b"alice");
    nix::sys::socket::send(a.as_raw_fd(), &frame, MsgFlags::empty()).unwrap();
    let mut buf = [0u8; 256];
    let n = nix::sys::socket::recv(a.as_raw_fd(), &mut buf, MsgFlags::empty()).unwrap();
    assert_eq!(
        Response::decode(&buf[..n]),
        Some(Response::Unavailable("malformed request".into())),
        "refused, and no spool comes with the refusal"
    );
    drop(a);
    assert_eq!(helper.join().unwrap(), 0);
}

#[test]
fn offers_scram_is_asked_once_per_ttl() {
    let (fx, _) = fixture();
    let users = scram_users_file(&fx, "users-ttl", "dave", b"dave's salt!");
    let db = fx.db(users.clone(), None);
    let (pool, _threads) = pool(&db, 1);
    let session = HelperSession::new(pool);
    assert!(session.offers_scram());
    // The helper would now say no; CAPA keeps the cached answer rather
    // than asking a helper every time.
    std::fs::write(&users, "dave:{PLAIN}x\n").unwrap();
    assert!(!db.offers_scram(), "the helper's own answer changed");
    assert!(session.offers_scram(), "answered from the cache");
}

#[test]
fn the_startup_channel_opens_only_an_accounts_own_spool_and_only_until_it_is_closed() {
    let (fx, db) = fixture();
    let (a, b) = pair();
    let (sa, sb) = pair();
    let helper = thread::spawn(move || crate::privsep::helper::run(b, Some(sb), &db));
    // The startup channel answers nothing but startup recovery's request.
    let frame = Request::Verify {
        user: "alice".into(),
        password: Password::new(b"secret".to_vec()),
    }
    .encode()
    .unwrap();
    nix::sys::socket::send(sa.as_raw_fd(), &frame, MsgFlags::empty()).unwrap();
    let mut buf = [0u8; 256];
    let n = nix::sys::socket::recv(sa.as_raw_fd(), &mut buf, MsgFlags::empty()).unwrap();
    assert!(matches!(
        Response::decode(&buf[..n]),
        Some(Response::Unavailable(_))
    ));
    let startup = StartupChannel::new(sa, 0).unwrap();
    let alice = fx.mail.join("alice");
    let login = accepted(startup.open("alice", &alice));
    assert_eq!(login.principal.mailbox, alice);
    assert!(matches!(login.spool, Spool::Opened(Some(_))), "{login:?}");
    // Any other path, account or unknown name: refused, nothing opened.
    for (user, path) in [
        ("alice", fx.mail.join("bob")),
        ("bob", alice.clone()),
        ("mallory", fx.mail.join("mallory")),
        ("alice", fx.mail.join("../mail/alice")),
    ] {
        assert_eq!(
            account(startup.open(user, &path)),
            AuthOutcome::Rejected,
            "{user} {}",
            path.display()
        );
    }
    // The daemon closes it before its first accept: from then on the
    // helper serves the ordinary channel, where the request is refused.
    drop(startup);
    let pool = Arc::new(HelperPool::new(vec![(a, 0)]).unwrap());
    let late = pool
        .ask(&Request::StartupSpool {
            user: "alice".into(),
            mailbox: alice.clone(),
        })
        .unwrap();
    assert_eq!(
        late.response,
        Response::Unavailable("startup recovery is over".into())
    );
    assert!(late.spool.is_none());
    let session = HelperSession::new(Arc::clone(&pool));
    assert!(matches!(
        session.verify_password("alice", b"secret"),
        AuthOutcome::Accepted(_)
    ));
    drop((session, pool));
    assert_eq!(helper.join().unwrap(), 0);
}

#[test]
fn without_a_startup_channel_the_request_is_always_refused() {
    let (fx, db) = fixture();
    let (a, b) = pair();
    let helper = thread::spawn(move || crate::privsep::helper::run(b, None, &db));
    let pool = HelperPool::new(vec![(a, 0)]).unwrap();
    let answer = pool
        .ask(&Request::StartupSpool {
            user: "alice".into(),
            mailbox: fx.mail.join("alice"),
        })
        .unwrap();
    assert_eq!(
        answer.response,
        Response::Unavailable("startup recovery is over".into())
    );
    assert!(answer.spool.is_none());
    drop(pool);
    assert_eq!(helper.join().unwrap(), 0);
}

#[path = "helper_client_wait_tests.rs"]
mod waits;
