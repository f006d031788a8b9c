//! Tests of the passwd-file parser, verifier, reload and mailbox expansion.

use super::*;
use crate::test_support::accepted;
use nix::unistd::{Gid, Group, Uid, User};
use std::io::Write as _;

const SHA512: &str = "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1";
const BCRYPT: &str = "$2b$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW";

/// A valid `{SCRAM-SHA-256}` field for `password` (4096 iterations).
fn scram_field(password: &str) -> String {
    ScramSecret::derive(password.as_bytes(), b"pepper salt", 4096)
        .unwrap()
        .to_string()
}

fn write(dir: &tempfile::TempDir, text: &str) -> PathBuf {
    let path = dir.path().join("users");
    let mut f = File::create(&path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
    path
}

fn db(text: &str, template: &str) -> (tempfile::TempDir, PasswdFile) {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, text);
    (dir, PasswdFile::new(path, template.to_owned()))
}

#[test]
fn parses_fields_and_schemes() {
    let text = format!(
        "# comment\n\nalice:{{SHA512-CRYPT}}{SHA512}:1000:1000:Alice:/home/alice:/bin/sh:extra\r\n\
         bob:{BCRYPT}\n\
         carol:{{plain}}pa:5678::::/home/carol\n\
         dave:{scram}\n\
         eve:*\n\
         frank:{{MD4}}abcd\n\
         gina:abJnggxhB/yWI\n\
         hal:{{CLEAR}}\n\
         ida:{{SCRAM-SHA-256}}4096,c2FsdA==,a2V5,c2Vy\n",
        scram = scram_field("pw"),
    );
    let a = parse(text.as_bytes(), Path::new("/p"));
    assert_eq!(a.len(), 9);
    let alice = &a["alice"];
    assert_eq!(alice.secret, Secret::Crypt(SHA512.into()));
    assert_eq!(alice.home.as_deref(), Some("/home/alice"));
    assert_eq!(alice.line, 3);
    assert_eq!(
        alice.ids,
        EntryIds {
            uid: Some(Uid::from_raw(1000)),
            gid: Some(Gid::from_raw(1000)),
        }
    );
    assert_eq!(a["bob"].ids, EntryIds::default());
    assert_eq!(a["carol"].ids.uid, Some(Uid::from_raw(5678)));
    assert_eq!(a["carol"].ids.gid, None, "empty field");
    assert_eq!(a["bob"].secret, Secret::Crypt(BCRYPT.into()));
    assert_eq!(a["bob"].home, None);
    // A ':' ends the password field, as in Dovecot.
    assert_eq!(a["carol"].secret, Secret::Plain(b"pa".to_vec()));
    assert!(matches!(a["dave"].secret, Secret::Scram(_)));
    assert_eq!(a["eve"].secret, Secret::Locked);
    assert!(matches!(a["frank"].secret, Secret::Unsupported(_)));
    assert!(matches!(a["gina"].secret, Secret::Unsupported(_)));
    assert_eq!(a["hal"].secret, Secret::Locked);
    // Keys that are not 32 bytes: not a usable SCRAM secret.
    assert!(matches!(a["ida"].secret, Secret::Unsupported(_)));
}

#[test]
fn bad_lines_are_skipped_not_fatal() {
    let long = format!("long:{}\n", "x".repeat(crate::limits::MAX_PASSWD_LINE));
    let mut bytes = format!(
        ":nouser\n../x:{SHA512}\na/b:{SHA512}\nsp ace:{SHA512}\n{long}ok:{SHA512}\nok:{BCRYPT}\n-opt:{SHA512}\n"
    )
    .into_bytes();
    bytes.extend_from_slice(b"bin\xff:x\n");
    let a = parse(&bytes, Path::new("/p"));
    assert_eq!(a.keys().collect::<Vec<_>>(), vec!["ok"]);
    // The first definition of a user wins.
    assert_eq!(a["ok"].secret, Secret::Crypt(SHA512.into()));
}

#[test]
fn verifies_crypt_and_expands_user() {
    let (_d, db) = db(
        &format!("bob:{{BLF-CRYPT}}{BCRYPT}\nalice:{SHA512}\n"),
        "/var/mail/%u",
    );
    let p = accepted(db.verify_password("bob", b"U*U"));
    assert_eq!(p.user, "bob");
    assert_eq!(p.mailbox, PathBuf::from("/var/mail/bob"));
    accepted(db.verify_password("alice", b"Hello world!"));
    assert_eq!(db.verify_password("bob", b"U*V"), AuthOutcome::Rejected);
    assert_eq!(db.verify_password("Bob", b"U*U"), AuthOutcome::Rejected);
    assert_eq!(db.verify_password("nobody", b"U*U"), AuthOutcome::Rejected);
    assert_eq!(db.verify_password("", b""), AuthOutcome::Rejected);
    assert_eq!(db.check(), Ok(2));
}

#[test]
fn yescrypt_entries_work() {
    let hash = crypt::hash_password(b"demo").unwrap();
    let (_d, db) = db(&format!("demo:{hash}:::::\n"), "/tmp/spool/%u");
    accepted(db.verify_password("demo", b"demo"));
    assert_eq!(db.verify_password("demo", b"dem"), AuthOutcome::Rejected);
}

#[test]
fn plain_entries_are_accepted() {
    let (_d, db) = db("carol:{PLAIN}secret\ndan:{CLEAR}s3\n", "/m/%u");
    accepted(db.verify_password("carol", b"secret"));
    accepted(db.verify_password("dan", b"s3"));
    assert_eq!(db.verify_password("carol", b"secre"), AuthOutcome::Rejected);
    assert_eq!(
        db.verify_password("carol", b"secret "),
        AuthOutcome::Rejected
    );
}

#[test]
fn scram_entries_serve_user_pass() {
    let (_d, db) = db(&format!("s:{}\n", scram_field("pencil")), "/m/%u");
    accepted(db.verify_password("s", b"pencil"));
    assert_eq!(db.verify_password("s", b"pencil "), AuthOutcome::Rejected);
    assert_eq!(db.verify_password("s", b""), AuthOutcome::Rejected);
}

#[test]
fn scram_secrets_offered_only_when_present() {
    let (_d, mixed) = db(
        &format!("s:{}\nc:{SHA512}\n", scram_field("pencil")),
        "/m/%u",
    );
    assert!(mixed.offers_scram());
    match mixed.scram_secret("s") {
        Ok(Some(secret)) => assert!(secret.verify_plain_password(b"pencil")),
        _ => panic!("no secret for s"),
    }
    for user in ["c", "nobody"] {
        assert!(matches!(mixed.scram_secret(user), Ok(None)), "{user}");
    }
    let (_d, crypt_only) = db(&format!("c:{SHA512}\n"), "/m/%u");
    assert!(!crypt_only.offers_scram());
    let gone = PasswdFile::new("/nonexistent/users".into(), "/m/%u".into());
    assert!(!gone.offers_scram());
    assert!(gone.scram_secret("s").is_err());
}

#[test]
fn lookup_finds_accounts_without_a_password() {
    let (_d, homes) = db(
        &format!("c:{SHA512}\nl:!x\nh:{SHA512}::::rel\n"),
        "/m/%h/%u",
    );
    assert_eq!(homes.lookup("nobody").0, AuthOutcome::Rejected);
    assert_eq!(homes.lookup("l").0, AuthOutcome::Rejected, "locked");
    assert!(
        matches!(homes.lookup("h").0, AuthOutcome::Unavailable(_)),
        "bad home"
    );
    let (_d2, plain) = db(&format!("c:{SHA512}\n"), "/m/%u");
    assert_eq!(accepted(plain.lookup("c").0).mailbox, PathBuf::from("/m/c"));
    let gone = PasswdFile::new("/nonexistent/users".into(), "/m/%u".into());
    assert!(matches!(gone.lookup("c").0, AuthOutcome::Unavailable(_)));
}

#[test]
fn bad_scram_locked_and_unsupported_entries_are_refused() {
    let (_d, db) = db(
        "s:{SCRAM-SHA-256}4096,c2FsdA==,a2V5,c2Vy\nl:!$6$saltstring$x\ne:\nu:{MD5}xyz\n",
        "/m/%u",
    );
    for user in ["s", "l", "e", "u"] {
        assert_eq!(
            db.verify_password(user, b""),
            AuthOutcome::Rejected,
            "{user}"
        );
        assert_eq!(
            db.verify_password(user, b"x"),
            AuthOutcome::Rejected,
            "{user}"
        );
    }
}

#[test]
fn home_expansion() {
    let (_d, db) = db(
        &format!("h:{SHA512}::::/home/h/:\nn:{SHA512}\nr:{SHA512}::::rel/home\n"),
        "%h/Mail/%u%%",
    );
    let p = accepted(db.verify_password("h", b"Hello world!"));
    assert_eq!(p.mailbox, PathBuf::from("/home/h/Mail/h%"));
    for user in ["n", "r"] {
        match db.verify_password(user, b"Hello world!") {
            AuthOutcome::Unavailable(msg) => assert!(msg.contains("%h"), "{msg}"),
            other => panic!("{other:?}"),
        }
    }
    // A wrong password is still just Rejected, even without a home.
    assert_eq!(db.verify_password("n", b"nope"), AuthOutcome::Rejected);
}

#[test]
fn missing_file_is_unavailable() {
    let db = PasswdFile::new("/nonexistent/ironpop-users".into(), "/m/%u".into());
    match db.verify_password("bob", b"x") {
        AuthOutcome::Unavailable(msg) => {
            assert!(
                msg.contains("cannot read passwd file /nonexistent/ironpop-users"),
                "{msg}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert!(db.check().is_err());
}

#[test]
fn edits_are_picked_up() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "carol:{PLAIN}one\n");
    let db = PasswdFile::new(path.clone(), "/m/%u".into());
    accepted(db.verify_password("carol", b"one"));
    // Same size, same second: the nanosecond mtime/ctime still differ.
    write(&dir, "carol:{PLAIN}two\n");
    accepted(db.verify_password("carol", b"two"));
    assert_eq!(db.verify_password("carol", b"one"), AuthOutcome::Rejected);
    // Replaced by rename (what editors and useradd-style tools do).
    let tmp = dir.path().join("users.new");
    std::fs::write(&tmp, "carol:{PLAIN}three\nzed:{PLAIN}z\n").unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    accepted(db.verify_password("carol", b"three"));
    accepted(db.verify_password("zed", b"z"));
    assert_eq!(db.check(), Ok(2));
    // Removed: a temporary failure, not a rejected password.
    std::fs::remove_file(&path).unwrap();
    assert!(matches!(
        db.verify_password("zed", b"z"),
        AuthOutcome::Unavailable(_)
    ));
}

#[test]
fn expand_mailbox_rules() {
    assert_eq!(
        expand_mailbox("/var/mail/%u", "bob", None),
        Ok("/var/mail/bob".into())
    );
    assert_eq!(
        expand_mailbox("%h/mbox", "bob", Some("/home/bob")),
        Ok("/home/bob/mbox".into())
    );
    assert!(expand_mailbox("%h/mbox", "bob", None).is_err());
    assert!(expand_mailbox("/m/%x", "bob", None).is_err());
    assert!(expand_mailbox("/m/%", "bob", None).is_err());
}

#[test]
fn uid_and_gid_fields_are_numbers_or_names() {
    let nobody = User::from_name("nobody").unwrap().unwrap();
    let root_group = Group::from_name("root").unwrap().unwrap();
    let text = format!(
        "n:{SHA512}:5000:\ng:{SHA512}::6000\nnames:{SHA512}:nobody:root\nboth:{SHA512}:7000:7001::/h\n"
    );
    let a = parse(text.as_bytes(), Path::new("/p"));
    assert_eq!(a["n"].ids.uid, Some(Uid::from_raw(5000)));
    assert_eq!(a["n"].ids.gid, None);
    assert_eq!(a["g"].ids.uid, None, "the daemon's user");
    assert_eq!(a["g"].ids.gid, Some(Gid::from_raw(6000)));
    assert_eq!(a["names"].ids.uid, Some(nobody.uid));
    // Group root is fine: the group is recorded, not checked.
    assert_eq!(a["names"].ids.gid, Some(root_group.gid));
    assert_eq!(
        a["both"].home.as_deref(),
        Some("/h"),
        "fields stay in place"
    );
}

#[test]
fn root_and_malformed_uids_skip_the_entry() {
    let text = [
        "zero:{PLAIN}x:0:",
        "root:{PLAIN}x:root:",
        "padded:{PLAIN}x:000:",
        "mixed:{PLAIN}x:12ab:",
        "neg:{PLAIN}x:-1:",
        "nochown:{PLAIN}x:4294967295:",
        "huge:{PLAIN}x:99999999999:",
        "space:{PLAIN}x: 1000:",
        "unknown:{PLAIN}x:no-such-user-ironpop:",
        "badgid:{PLAIN}x:1000:x y",
        "nogroup:{PLAIN}x:1000:no-such-group-ironpop",
        "ok:{PLAIN}x:1000:1000",
    ]
    .join("\n");
    let a = parse(text.as_bytes(), Path::new("/p"));
    assert_eq!(a.keys().collect::<Vec<_>>(), vec!["ok"]);
    let refused = parse_ids("0", "").unwrap_err();
    assert_eq!(
        refused,
        "uid 0 (root) cannot own a virtual user's spool; name the mail owner's uid, \
         or leave the field empty for the daemon's user"
    );
    let unknown = parse_ids("no-such-user-ironpop", "").unwrap_err();
    assert_eq!(
        unknown,
        "uid field \"no-such-user-ironpop\" names no system user"
    );
    let no_group = parse_ids("", "no-such-group-ironpop").unwrap_err();
    assert_eq!(
        no_group,
        "gid field \"no-such-group-ironpop\" names no system group"
    );
    let mixed = parse_ids("12ab", "").unwrap_err();
    assert!(mixed.contains("not a number or a name"), "{mixed}");
}

#[test]
fn accepted_logins_carry_the_entry_ids() {
    let (_d, db) = db("own:{PLAIN}pw:5000:5001\nvmail:{PLAIN}pw\n", "/m/%u");
    let (outcome, ids) = db.verify_account("own", b"pw");
    assert_eq!(accepted(outcome).user, "own");
    assert_eq!(ids.uid, Some(Uid::from_raw(5000)));
    assert_eq!(ids.gid, Some(Gid::from_raw(5001)));
    assert_eq!(db.lookup("own").1.uid, Some(Uid::from_raw(5000)));
    assert_eq!(db.verify_account("vmail", b"pw").1, EntryIds::default());
    // No ids come with a refusal.
    assert_eq!(
        db.verify_account("own", b"wrong"),
        (AuthOutcome::Rejected, EntryIds::default())
    );
}

#[test]
fn clear_text_entries_are_summarised_in_one_warning() {
    let text: String = (1..=10_500)
        .map(|i| format!("u{i}:{{PLAIN}}pw{i}\n"))
        .collect();
    let (accounts, warnings) = read_entries(text.as_bytes(), Path::new("/p"));
    assert_eq!(accounts.len(), 10_500);
    assert_eq!(
        warnings,
        vec![
            "/p: 10500 entries (lines 1, 2, 3, 4, 5, ...) have a {PLAIN} password stored \
             in clear text: accepted, but store hashes (ironpop --hash-password)"
                .to_string()
        ]
    );
    let (_, warnings) = read_entries(b"# one\nx:{CLEAR}y\n", Path::new("/p"));
    assert_eq!(
        warnings,
        vec![
            "/p:2: an entry has a {PLAIN} password stored in clear text: accepted, \
             but store hashes (ironpop --hash-password)"
                .to_string()
        ]
    );
    let (_, warnings) = read_entries(b"a:$1$salt$hash\nb:{BOGUS}x\n", Path::new("/p"));
    assert_eq!(
        warnings,
        vec![
            "/p:2: account \"b\": password scheme {BOGUS} is not supported".to_string(),
            "/p:1: an entry has a weak md5crypt ($1$) password: replace it with \
             ironpop --hash-password"
                .to_string(),
        ]
    );
}

#[test]
fn census_counts_usable_entries() {
    let (_d, db) = db("a:{PLAIN}x\nb:*\nc:{BOGUS}y\nd:{PLAIN}z\n", "/m/%u");
    assert_eq!(db.census(), Ok((4, 2)));
}
