//! Tests of the startup checks: each broken setting is an error naming its key.

use super::*;
use std::path::Path;

fn config(dir: &Path, extra: &str) -> Config {
    let text = format!(
        "listen = 127.0.0.1:0\npassdb = passwd-file:{d}/passwd\nmailbox = {d}/mail/%u\n\
         state_dir = {d}/state\n{extra}",
        d = dir.display()
    );
    crate::config::parse(&text, &dir.join("ironpop.conf")).unwrap()
}

fn errors(config: &Config, purpose: Purpose) -> Vec<(&'static str, String)> {
    run(config, purpose)
        .into_iter()
        .filter(Finding::is_error)
        .map(|f| (f.key, describe(config, &f)))
        .collect()
}

fn usable_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("mail")).unwrap();
    std::fs::create_dir(dir.path().join("state")).unwrap();
    std::fs::write(dir.path().join("passwd"), "a:{PLAIN}x\nb:*\n").unwrap();
    dir
}

#[test]
fn a_usable_setup_passes_and_counts_entries() {
    let dir = usable_dir();
    let c = config(dir.path(), "");
    assert_eq!(errors(&c, Purpose::UnprivilegedStart), vec![]);
    let found = run(&c, Purpose::UnprivilegedStart);
    assert!(
        found.iter().any(|f| f.key == "state_dir"),
        "state_dir is checked: {found:?}"
    );
    let census = run(&c, Purpose::CheckCommand)
        .into_iter()
        .find(|f| f.key == "passdb")
        .unwrap();
    assert_eq!(
        census.verdict,
        Verdict::Ok(format!(
            "{}: 2 entries, 1 usable",
            dir.path().join("passwd").display()
        ))
    );
}

#[test]
fn each_missing_piece_names_its_key_and_file() {
    let dir = usable_dir();
    let d = dir.path();
    std::fs::remove_dir(d.join("state")).unwrap();
    std::fs::remove_dir(d.join("mail")).unwrap();
    std::fs::remove_file(d.join("passwd")).unwrap();
    let c = config(d, "");
    let e = errors(&c, Purpose::UnprivilegedStart);
    let keys: Vec<&str> = e.iter().map(|(k, _)| *k).collect();
    assert_eq!(keys, ["passdb", "state_dir", "mailbox"], "{e:?}");
    let conf = d.join("ironpop.conf");
    assert_eq!(
        e[1].1,
        format!(
            "{}: state_dir: {}: No such file or directory",
            conf.display(),
            d.join("state").display()
        )
    );
    assert!(
        e[0].1.contains(&format!(
            "cannot read passwd file {}",
            d.join("passwd").display()
        )),
        "{}",
        e[0].1
    );
    assert!(e[2]
        .1
        .contains(&format!("{} (from ", d.join("mail").display())));
}

#[test]
fn missing_tls_files_name_their_key() {
    let dir = usable_dir();
    let d = dir.path();
    let c = config(
        d,
        &format!(
            "listen_tls = none\ntls_cert = {d}/none.crt\ntls_key = {d}/none.key\n",
            d = d.display()
        ),
    );
    let e = errors(&c, Purpose::UnprivilegedStart);
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].0, "tls_cert");
    assert!(e[0].1.contains("none.crt: No such file"), "{}", e[0].1);
}

#[test]
fn unknown_user_and_group_are_errors_for_a_root_start() {
    let dir = usable_dir();
    let c = config(dir.path(), "user = nosuchuser-ironpop\n");
    let e = errors(&c, Purpose::CheckCommand);
    assert_eq!(e[0].0, "user", "{e:?}");
    assert!(e[0].1.contains("\"nosuchuser-ironpop\" does not exist"));
    // Not root: no privilege change, so the user is not needed.
    assert!(errors(&c, Purpose::UnprivilegedStart).is_empty());
    let c = config(dir.path(), "user = nobody\ngroup = nosuchgroup-ironpop\n");
    let e = errors(&c, Purpose::CheckCommand);
    assert_eq!(e[0].0, "group", "{e:?}");
}

#[test]
fn state_dir_must_be_writable_by_the_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let meta = std::fs::metadata(dir.path()).unwrap();
    let owner = Runner {
        uid: Uid::from_raw(meta.uid()),
        groups: vec![],
        name: "owner".into(),
    };
    let stranger = Runner {
        uid: Uid::from_raw(meta.uid() + 1),
        groups: vec![Gid::from_raw(meta.gid())],
        name: "stranger".into(),
    };
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o750)).unwrap();
    let meta = std::fs::metadata(dir.path()).unwrap();
    assert!(may_write(&meta, &owner));
    assert!(!may_write(&meta, &stranger), "group r-x only");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o770)).unwrap();
    let meta = std::fs::metadata(dir.path()).unwrap();
    assert!(may_write(&meta, &stranger), "group rwx");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
}

#[test]
fn the_fixed_directory_of_a_mailbox_template() {
    let d = |t: &str| fixed_directory(t).map(|p| p.display().to_string());
    assert_eq!(d("/var/mail/%u").as_deref(), Some("/var/mail"));
    assert_eq!(d("/srv/%u/mbox").as_deref(), Some("/srv"));
    assert_eq!(d("/srv/mail/x%u").as_deref(), Some("/srv/mail"));
    assert_eq!(d("/%u").as_deref(), Some("/"));
    assert_eq!(d("%h/mbox"), None);
}
