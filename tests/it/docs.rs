//! The shipped documentation agrees with the binary: man pages lint clean and list exactly the keys and options the code has.

use crate::harness::*;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn repo_file(rel: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

fn repo_path(rel: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(rel)
        .display()
        .to_string()
}

/// `ironpop -t` on a config file containing `text`.
fn check_config(text: &str) -> Output {
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = dir.path().join("test.conf");
    std::fs::write(&conf, text).expect("write");
    ironpop(&["-t", "-f", conf.to_str().expect("utf-8 path")])
}

/// Whether `-t` accepted the file's syntax and values: it prints the
/// effective settings only then. The startup checks that follow may
/// still fail here (a documented `/etc/ironpop/passwd`, the `ironpop`
/// user), which exits 2 after printing them.
fn parsed(out: &Output) -> bool {
    out.status.success() || (out.status.code() == Some(2) && !out.stdout.is_empty())
}

fn is_key(word: &str) -> bool {
    !word.is_empty() && word.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
}

/// The keys of `key = value` and `# key is not set` lines of `ironpop -t`.
fn rendered_keys(rendered: &str) -> BTreeSet<String> {
    rendered
        .lines()
        .filter_map(|l| {
            let l = l.trim_start_matches(['#', ' ']);
            let key = l.split([' ', '=']).next()?;
            is_key(key).then(|| key.to_string())
        })
        .collect()
}

/// The keys the code accepts: every key `ironpop -t` prints for the defaults.
fn config_keys() -> BTreeSet<String> {
    let out = check_config("# nothing set\n");
    assert!(parsed(&out), "ironpop -t on an empty config: {out:?}");
    let keys = rendered_keys(&out.stdout_text());
    assert!(keys.len() >= 20, "ironpop -t printed only {keys:?}");
    keys
}

/// The lines of section `name` of a man page (up to the next `.SH`).
fn man_section<'a>(page: &'a str, name: &str) -> Vec<&'a str> {
    let mut lines = page.lines().skip_while(|l| *l != format!(".SH {name}"));
    assert!(lines.next().is_some(), "no section {name}");
    lines.take_while(|l| !l.starts_with(".SH ")).collect()
}

/// Each top-level `.TP` tag line of `section` (the line after `.TP`);
/// lists nested inside `.RS`/`.RE` (a key's allowed values) are skipped.
fn tags<'a>(section: &[&'a str]) -> Vec<&'a str> {
    let mut depth = 0usize;
    let mut out = Vec::new();
    for w in section.windows(2) {
        match w[0] {
            ".RS" => depth += 1,
            ".RE" => depth = depth.saturating_sub(1),
            ".TP" if depth == 0 => out.push(w[1]),
            _ => {}
        }
    }
    out
}

/// The words of a roff line with macros, quotes and escapes removed.
fn roff_words(line: &str) -> Vec<String> {
    line.replace("\\-", "-")
        .replace("\\fR", " ")
        .replace("\\fI", " ")
        .replace("\\fB", " ")
        .split(|c: char| c.is_whitespace() || matches!(c, '"' | ',' | '[' | ']'))
        .filter(|w| !w.is_empty() && !w.starts_with('.'))
        .map(str::to_string)
        .collect()
}

#[test]
fn man_pages_lint_clean() {
    if !require_tool("mandoc", &["-T", "lint", "-W", "unsupp", "/dev/null"]) {
        return;
    }
    for page in ["man/ironpop.8", "man/ironpop.conf.5"] {
        let out = run(
            Command::new("mandoc").args(["-T", "lint", "-W", "warning", &repo_path(page)]),
            b"",
            Duration::from_secs(30),
        );
        assert!(
            out.status.success() && out.all_text().trim().is_empty(),
            "mandoc -T lint -W warning {page}:\n{}",
            out.all_text()
        );
        // And it renders to text that a reader gets: every section heading.
        let text = run(
            Command::new("mandoc").args(["-T", "utf8", &repo_path(page)]),
            b"",
            Duration::from_secs(30),
        );
        assert!(text.status.success(), "mandoc -T utf8 {page}: {text:?}");
        // Bold is "X\bX": keep what follows each backspace.
        let plain: String = text
            .stdout_text()
            .split('\u{8}')
            .enumerate()
            .map(|(i, s)| {
                if i == 0 {
                    s
                } else {
                    s.get(1..).unwrap_or_default()
                }
            })
            .collect();
        assert!(plain.contains("SEE ALSO"), "{page} renders empty: {plain}");
    }
}

#[test]
fn config_keys_are_exactly_those_documented() {
    let man = repo_file("man/ironpop.conf.5");
    let documented: BTreeSet<String> = tags(&man_section(&man, "KEYS"))
        .iter()
        .flat_map(|t| roff_words(t))
        .filter(|w| is_key(w))
        .collect();
    assert_eq!(
        config_keys(),
        documented,
        "keys of `ironpop -t` (left) vs. the KEYS of man/ironpop.conf.5 (right)"
    );
}

#[test]
fn options_are_exactly_those_of_the_usage() {
    let out = ironpop(&["-h"]);
    assert!(out.status.success(), "ironpop -h: {out:?}");
    let help = out.stdout_text();
    let in_help: BTreeSet<String> = help
        .lines()
        .skip_while(|l| l.trim() != "options:")
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .flat_map(|l| {
            l.split("  ")
                .find(|s| !s.is_empty())
                .unwrap_or_default()
                .split([',', ' '])
                .filter(|w| w.starts_with('-'))
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(in_help.len() >= 7, "ironpop -h lists only {in_help:?}");
    let man = repo_file("man/ironpop.8");
    let in_man: BTreeSet<String> = tags(&man_section(&man, "OPTIONS"))
        .iter()
        .flat_map(|t| roff_words(t))
        .filter(|w| w.starts_with('-'))
        .collect();
    assert_eq!(
        in_help, in_man,
        "options of `ironpop -h` (left) vs. OPTIONS of man/ironpop.8 (right)"
    );
    // The synopsis shows every mode's option too.
    let synopsis = man_section(&man, "SYNOPSIS").join(" ").replace("\\-", "-");
    for opt in in_help
        .iter()
        .filter(|o| !matches!(o.as_str(), "--version" | "--help"))
    {
        assert!(synopsis.contains(opt.as_str()), "SYNOPSIS lacks {opt}");
    }
}

#[test]
fn every_config_key_is_in_the_installed_config() {
    let sample = repo_file("packaging/ironpop.conf");
    for key in config_keys() {
        assert!(
            sample
                .lines()
                .any(|l| l.trim_start_matches('#').starts_with(&format!("{key} ="))),
            "packaging/ironpop.conf lacks {key}"
        );
    }
}

/// The installed config is the defaults plus the snakeoil pair: TLS-first.
#[test]
fn installed_config_is_tls_first_and_otherwise_the_defaults() {
    let shipped = check_config(&repo_file("packaging/ironpop.conf"));
    assert!(parsed(&shipped), "packaging/ironpop.conf: {shipped:?}");
    let defaults = check_config("");
    assert!(
        defaults
            .stdout_text()
            .lines()
            .any(|l| l == "max_sessions = 1024"),
        "ironpop -t does not print the defaults: {defaults:?}"
    );
    let tls_lines = [
        "listen_tls = 0.0.0.0:995 [::]:995",
        "tls_cert = /etc/ssl/certs/ssl-cert-snakeoil.pem",
        "tls_key = /etc/ssl/private/ssl-cert-snakeoil.key",
    ];
    let shipped_text = shipped.stdout_text();
    for l in tls_lines.iter().chain(&["plaintext_auth = tls-only"]) {
        assert!(
            shipped_text.lines().any(|s| s == *l),
            "installed config lacks {l:?}:\n{shipped_text}"
        );
    }
    let tls_keys = ["listen_tls", "tls_cert", "tls_key"];
    let strip = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| !tls_keys.iter().any(|k| rendered_keys(l).contains(*k)))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(strip(&shipped_text), strip(&defaults.stdout_text()));
    // Each commented default line, uncommented alone, is accepted and keeps
    // the effective configuration unchanged.
    for line in repo_file("packaging/ironpop.conf").lines() {
        let Some(setting) = line.strip_prefix('#') else {
            continue;
        };
        let Some((key, value)) = setting.split_once(" = ") else {
            continue;
        };
        if !is_key(key) {
            // Prose.
            continue;
        }
        if !defaults.stdout_text().lines().any(|l| l == setting) {
            // Not the default line itself: one item of a default list, or
            // one of the examples of other values the file offers. Anything
            // else is a commented "default" that is not the default.
            const EXAMPLES: &[&str] = &[
                "tls_client_ca = /etc/ironpop/client-ca.pem",
                "passdb = passwd-file:/etc/ironpop/passwd",
                "proxy_protocol_from = 192.0.2.10",
            ];
            // (listen_tls defaults to 995 only with a certificate, as in
            // the shipped file.)
            let rendered = format!("{}{}", defaults.stdout_text(), shipped_text);
            let list_item = rendered.lines().any(|l| {
                l.strip_prefix(key)
                    .and_then(|rest| rest.strip_prefix(" = "))
                    .is_some_and(|items| items.split_whitespace().any(|i| i == value))
            });
            assert!(
                list_item || EXAMPLES.contains(&setting),
                "{setting:?} in packaging/ironpop.conf is commented like a default but is not one"
            );
            continue;
        }
        let out = check_config(&format!("{key} = {value}\n"));
        assert!(parsed(&out), "{setting:?} rejected: {out:?}");
        assert_eq!(
            out.stdout_text(),
            defaults.stdout_text(),
            "{setting:?} is not the default"
        );
    }
}

/// The complete example of ironpop.conf(5) is valid and sets every key.
#[test]
fn the_man_page_example_file_is_complete_and_valid() {
    let man = repo_file("man/ironpop.conf.5");
    let examples = man_section(&man, "EXAMPLES");
    let start = examples
        .iter()
        .position(|l| *l == "# /etc/ironpop/ironpop.conf")
        .expect("ironpop.conf.5 EXAMPLES has a complete file");
    let file: String = examples[start..]
        .iter()
        .take_while(|l| **l != ".fi")
        .map(|l| format!("{}\n", l.replace("\\-", "-")))
        .collect();
    let out = check_config(&file);
    assert!(parsed(&out), "example rejected: {out:?}\n{file}");
    let set: BTreeSet<String> = file
        .lines()
        .filter_map(|l| l.split(" = ").next())
        .filter(|k| is_key(k))
        .map(str::to_string)
        .collect();
    assert_eq!(set, config_keys(), "the example does not set every key");
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
