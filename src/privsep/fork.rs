//! Privilege separation at startup: as root, fork the privileged helpers and drop to `user`/`group`; otherwise serve directly and say so.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use nix::unistd::Pid;

use super::accounts::build_authenticator;
use super::error::PrivsepError;
use super::helper::{self, AccountDb};
use super::privileges;
use crate::authenticator::Authenticator;
use crate::config::Config;
use crate::limits::{MAX_HELPERS, MIN_HELPERS};

/// What privilege separation left the network process.
pub enum Separation {
    /// Not started as root: the account database in this process, which
    /// reads it and the spools with its own rights.
    InProcess(Arc<dyn Authenticator>),
    /// Started as root: the helpers run and root is dropped. `channels`:
    /// the network side's end of each helper's channel, with its pid;
    /// `startup`: the first helper's startup channel (`helper.rs`), for
    /// startup recovery only, to be closed before the first accept.
    Helpers {
        channels: Vec<(OwnedFd, i32)>,
        startup: (OwnedFd, i32),
        pids: Vec<Pid>,
    },
}

/// No separation: the process checks passwords and opens spools with its
/// own rights (`why` says why, for the log).
pub fn direct(config: &Config, why: &str) -> Result<Separation, PrivsepError> {
    log::info!(
        "running as uid {} ({why}): no privileged helper, no privilege change",
        nix::unistd::geteuid()
    );
    let auth = build_authenticator(config).map_err(PrivsepError::Auth)?;
    Ok(Separation::InProcess(auth))
}

/// How many helpers: one per core, within [`MIN_HELPERS`] and
/// [`MAX_HELPERS`].
pub fn helper_count() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(MIN_HELPERS, MAX_HELPERS)
}

/// Sets up account access. As root: checks the account database, forks
/// `helpers` helper processes (which must not inherit `close_in_child`),
/// and drops privileges for good. Must run before any thread exists.
/// Only the first helper gets a startup channel.
pub fn setup(
    config: &Config,
    helpers: usize,
    close_in_child: &[RawFd],
) -> Result<Separation, PrivsepError> {
    if !nix::unistd::geteuid().is_root() {
        return direct(config, "not started as root");
    }
    let identity = privileges::resolve(&config.user, &config.group)?;
    let db = AccountDb::for_config(config, identity.uid).map_err(PrivsepError::Auth)?;
    let mut channels = Vec::with_capacity(helpers);
    let mut pids = Vec::with_capacity(helpers);
    let mut startup = None;
    for _ in 0..helpers.max(1) {
        // A helper must hold neither the listeners nor the other
        // helpers' channels, startup channel included (it would never see
        // their end of file).
        let mut close: Vec<RawFd> = close_in_child.to_vec();
        close.extend(
            channels
                .iter()
                .chain(&startup)
                .map(|(fd, _): &(OwnedFd, i32)| fd.as_raw_fd()),
        );
        let h = helper::spawn(&db, &close, channels.is_empty())
            .map_err(|e| PrivsepError::system("start the privileged helper", e))?;
        pids.push(h.pid);
        startup = startup.or(h.startup.map(|fd| (fd, h.pid.as_raw())));
        channels.push((h.channel, h.pid.as_raw()));
    }
    let startup = startup.ok_or_else(|| {
        PrivsepError::system(
            "start the privileged helper",
            std::io::Error::other("the first helper has no startup channel"),
        )
    })?;
    // The network process keeps no copy of the account database.
    drop(db);
    privileges::drop_to(&identity)?;
    log::info!(
        "privileges dropped to user={}({}) group={}({}) groups={}; {} privileged helper process(es): pid {}",
        identity.user,
        identity.uid,
        identity.group,
        identity.gid,
        identity
            .groups
            .iter()
            .map(|g| g.to_string())
            .collect::<Vec<_>>()
            .join(","),
        pids.len(),
        pids.iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    Ok(Separation::Helpers {
        channels,
        startup,
        pids,
    })
}
