//! Small helpers the unit tests of several modules share (test builds only).

use std::net::IpAddr;
use std::path::PathBuf;

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
