//! The shipped documentation agrees with the binary: README commands, man pages, default config.

use crate::harness::*;
use std::path::Path;

fn repo_file(rel: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// The keys `ironpop -t` prints for the defaults.
fn config_keys() -> Vec<String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = dir.path().join("empty.conf");
    std::fs::write(&conf, "# nothing set\n").expect("write");
    let out = ironpop(&["-t", "-f", conf.to_str().expect("utf-8 path")]);
    assert!(
        out.status.success(),
        "ironpop -t on an empty config: {out:?}"
    );
    let keys: Vec<String> = out
        .stdout_text()
        .lines()
        .filter_map(|l| {
            let l = l.trim_start_matches(['#', ' ']);
            let key = l.split([' ', '=']).next()?;
            (!key.is_empty() && key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
                .then(|| key.to_string())
        })
        .collect();
    assert!(keys.len() >= 20, "ironpop -t printed only {keys:?}");
    keys
}

#[test]
fn every_config_key_is_documented_and_in_the_default_config() {
    let man = repo_file("man/ironpop.conf.5");
    let sample = repo_file("packaging/ironpop.conf");
    for key in config_keys() {
        assert!(
            man.lines().any(|l| l.starts_with(".B") && l.contains(&key)),
            "man/ironpop.conf.5 does not document {key}"
        );
        assert!(
            sample
                .lines()
                .any(|l| l.trim_start_matches('#').starts_with(&format!("{key} ="))),
            "packaging/ironpop.conf lacks {key}"
        );
    }
}

#[test]
fn the_default_config_is_valid_and_is_the_defaults() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/ironpop.conf");
    let shipped = ironpop(&["-t", "-f", path.to_str().expect("utf-8 path")]);
    assert!(
        shipped.status.success(),
        "packaging/ironpop.conf: {shipped:?}"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let empty = dir.path().join("empty.conf");
    std::fs::write(&empty, "").expect("write");
    let defaults = ironpop(&["-t", "-f", empty.to_str().expect("utf-8 path")]);
    assert!(
        defaults
            .stdout_text()
            .lines()
            .any(|l| l == "max_sessions = 512"),
        "ironpop -t does not print the defaults: {defaults:?}"
    );
    assert_eq!(shipped.stdout_text(), defaults.stdout_text());
    // Each commented default line, uncommented alone, is accepted and keeps
    // the effective configuration unchanged.
    for line in repo_file("packaging/ironpop.conf").lines() {
        let Some(setting) = line.strip_prefix('#') else {
            continue;
        };
        let Some((key, value)) = setting.split_once(" = ") else {
            continue;
        };
        if !key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
            continue;
        }
        let listed = defaults.stdout_text().lines().any(|l| l == setting);
        if !listed {
            // Examples of non-default values (a second passdb, a proxy
            // address, TLS paths) and list items split over lines.
            continue;
        }
        std::fs::write(&empty, format!("{key} = {value}\n")).expect("write");
        let out = ironpop(&["-t", "-f", empty.to_str().expect("utf-8 path")]);
        assert!(out.status.success(), "{setting:?} rejected: {out:?}");
        assert_eq!(
            out.stdout_text(),
            defaults.stdout_text(),
            "{setting:?} is not the default"
        );
    }
}

#[test]
fn readme_first_screen_has_the_two_commands() {
    let readme = repo_file("README.md");
    let first_screen: String = readme.lines().take(40).collect::<Vec<_>>().join("\n");
    for cmd in [
        "cargo run --release -- --demo",
        "cargo test",
        "curl pop3://demo:demo@127.0.0.1:1110/1",
    ] {
        assert!(
            first_screen.contains(cmd),
            "README's first screen lacks `{cmd}`"
        );
    }
    // CI runs exactly the README's test command.
    let ci = repo_file(".ci/run");
    assert!(
        ci.lines().any(|l| l.trim() == "cargo test"),
        ".ci/run does not run `cargo test`"
    );
}

#[test]
fn man_page_documents_every_option_of_the_usage() {
    let man = repo_file("man/ironpop.8");
    let out = ironpop(&["-h"]);
    assert!(out.status.success());
    for opt in ["-f", "-F", "-t", "--demo", "--hash-password", "-V", "-h"] {
        let roff = opt.replace('-', "\\-");
        assert!(out.all_text().contains(opt), "-h lacks {opt}");
        assert!(man.contains(&roff), "man/ironpop.8 lacks {opt}");
    }
}
