//! Virtual users (passdb = passwd-file) whose entry's uid field names their spool's owner, run as root through the privileged helper.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use nix::unistd::Uid;

use crate::system::{setup_with, tcp, Server, SystemUser};

const MESSAGE: &str = "From a@example.org Mon Jan  1 00:00:00 2024\nSubject: one\n\nhello\n\n";

/// A spool at `mail/NAME`, 0600, owned by `uid`.
fn spool(root: &Path, name: &str, uid: u32) -> std::path::PathBuf {
    let path = root.join("mail").join(name);
    std::fs::write(&path, format!("{MESSAGE}{MESSAGE}")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    nix::unistd::chown(&path, Some(Uid::from_raw(uid)), None).unwrap();
    path
}

#[test]
fn entry_uid_names_the_spool_owner() {
    require_root!();
    let owner = SystemUser::create("unused");
    let users_dir = tempfile::tempdir().unwrap();
    let users = users_dir.path().join("users");
    std::fs::write(
        &users,
        format!(
            "virt:{{PLAIN}}pw:{uid}:{uid}::/nonexistent:\n\
             byname:{{PLAIN}}pw:{name}:\n\
             vmail:{{PLAIN}}pw\n\
             rooted:{{PLAIN}}pw:0:0\n",
            uid = owner.uid,
            name = owner.name,
        ),
    )
    .unwrap();
    let s = setup_with(&owner, &format!("passwd-file:{}", users.display()), "");
    let root = s.dir.path();
    let virt = spool(root, "virt", owner.uid);
    spool(root, "byname", owner.uid);
    // No uid field: the daemon's user (nobody) owns the spool, as before.
    spool(root, "vmail", 65534);
    spool(root, "rooted", 0);
    let server = Server::start(&s.conf);
    let addr = server.addr();
    server.wait_log("uid 0 (root) cannot own a virtual user's spool");

    let mut c = tcp(&addr);
    assert!(c.cmd("USER virt").starts_with("+OK"));
    let ok = c.cmd("PASS pw");
    assert!(ok.starts_with("+OK maildrop has 2 messages"), "{ok}");
    assert!(c.cmd("DELE 1").starts_with("+OK"));
    assert!(c.cmd("QUIT").starts_with("+OK"));
    server.wait_log("logout: user=virt");
    // Compaction wrote through the helper's descriptor: same file, same owner.
    let meta = std::fs::metadata(&virt).unwrap();
    assert_eq!(meta.uid(), owner.uid, "owner kept");
    assert_eq!(meta.mode() & 0o777, 0o600, "mode kept");
    assert_eq!(std::fs::read_to_string(&virt).unwrap(), MESSAGE);

    for user in ["byname", "vmail"] {
        let mut c = tcp(&addr);
        c.cmd(&format!("USER {user}"));
        let ok = c.cmd("PASS pw");
        assert!(
            ok.starts_with("+OK maildrop has 2 messages"),
            "{user}: {ok}"
        );
    }

    // The uid-0 entry was skipped when the file was read: no such account.
    let mut c = tcp(&addr);
    c.cmd("USER rooted");
    assert!(c.cmd("PASS pw").starts_with("-ERR [AUTH]"));
}

#[test]
fn spool_not_owned_by_the_entry_uid_is_refused() {
    require_root!();
    let owner = SystemUser::create("unused");
    let users_dir = tempfile::tempdir().unwrap();
    let users = users_dir.path().join("users");
    std::fs::write(&users, format!("virt:{{PLAIN}}pw:{}:\n", owner.uid)).unwrap();
    let s = setup_with(&owner, &format!("passwd-file:{}", users.display()), "");
    // The daemon's user owns it: right for an entry without a uid, not
    // for this one.
    let virt = spool(s.dir.path(), "virt", 65534);
    let before = std::fs::read(&virt).unwrap();
    let server = Server::start(&s.conf);
    let mut c = tcp(&server.addr());
    c.cmd("USER virt");
    let reply = c.cmd("PASS pw");
    assert!(reply.starts_with("-ERR [SYS/PERM]"), "{reply}");
    server.wait_log(&format!(
        "belongs to uid 65534, not to the account's uid {}",
        owner.uid
    ));
    assert_eq!(std::fs::read(&virt).unwrap(), before, "spool untouched");
}
