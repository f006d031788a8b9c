//! Small helpers the unit tests of several modules share (test builds only).

use std::net::IpAddr;
use std::path::PathBuf;

use crate::account::AuthOutcome;

/// The account of an accepted login; any other verdict fails the test.
pub(crate) fn accepted<A: std::fmt::Debug>(outcome: AuthOutcome<A>) -> A {
    match outcome {
        AuthOutcome::Accepted(account) => account,
        other => panic!("not accepted: {other:?}"),
    }
}

/// A client address written the way a test reads best.
pub(crate) fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A fresh scratch directory and the path of `name` inside it; the
/// directory (and whatever the test made there) goes when the guard drops.
pub(crate) fn scratch_path(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    (dir, path)
}

/// A fresh scratch directory holding the file `name` with `contents`, and
/// that file's path.
pub(crate) fn scratch_file(name: &str, contents: impl AsRef<[u8]>) -> (tempfile::TempDir, PathBuf) {
    let (dir, path) = scratch_path(name);
    std::fs::write(&path, contents).unwrap();
    (dir, path)
}

/// `data` cut into pieces of `sizes` bytes, the sizes repeated as often as
/// needed; the last piece may be shorter. `sizes` must not be empty (no
/// pieces at all then).
pub(crate) fn chunks<'a>(data: &'a [u8], sizes: &'a [usize]) -> impl Iterator<Item = &'a [u8]> {
    let mut rest = data;
    sizes.iter().cycle().map_while(move |&n| {
        if rest.is_empty() {
            return None;
        }
        let (piece, tail) = rest.split_at(n.clamp(1, rest.len()));
        rest = tail;
        Some(piece)
    })
}

/// proptest's settings for our properties: `cases` runs, and no failure
/// files written into the source tree (a failing seed is in the output).
pub(crate) fn proptest_cases(cases: u32) -> proptest::test_runner::Config {
    proptest::test_runner::Config {
        cases,
        failure_persistence: None,
        ..proptest::test_runner::Config::default()
    }
}
