//! Privilege separation at startup: as root, fork the privileged helpers and drop to `user`/`group`; otherwise serve directly and say so.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use nix::unistd::Pid;

use super::accounts::build_authenticator;
use super::error::PrivsepError;
use super::helper::{self, AccountDb};
use super::privileges;
use crate::auth::helper_client::{HelperPool, HelperSession};
use crate::auth::Authenticator;
use crate::config::Config;
use crate::limits::MAX_HELPERS;
use crate::mailbox::mbox::MboxSettings;
use crate::mailbox::{MaildropOpener, MboxOpener};

/// Where sessions get their account checks and maildrops.
pub enum Accounts {
    /// Not started as root: the daemon reads the account database and
    /// spools itself, with its own rights.
    Direct {
        auth: Arc<dyn Authenticator>,
        maildrops: Arc<dyn MaildropOpener>,
    },
    /// Started as root: everything privileged goes through the helpers.
    Helpers {
        pool: Arc<HelperPool>,
        /// Serves only the spools the helpers opened.
        maildrops: Arc<dyn MaildropOpener>,
        pids: Vec<Pid>,
    },
}

impl Accounts {
    /// The authenticator and opener of one new session.
    pub fn for_session(&self) -> (Arc<dyn Authenticator>, Arc<dyn MaildropOpener>) {
        match self {
            Accounts::Direct { auth, maildrops } => (Arc::clone(auth), Arc::clone(maildrops)),
            Accounts::Helpers {
                pool, maildrops, ..
            } => (
                Arc::new(HelperSession::new(Arc::clone(pool))),
                Arc::clone(maildrops),
            ),
        }
    }

    /// The helper processes (none when not root).
    pub fn helper_pids(&self) -> &[Pid] {
        match self {
            Accounts::Direct { .. } => &[],
            Accounts::Helpers { pids, .. } => pids,
        }
    }
}

/// No separation: the process checks passwords and opens spools with its
/// own rights (`why` says why, for the log).
pub fn direct(config: &Config, why: &str) -> Result<Accounts, PrivsepError> {
    log::info!(
        "running as uid {} ({why}): no privileged helper, no privilege change",
        nix::unistd::geteuid()
    );
    let auth = build_authenticator(config).map_err(PrivsepError::Auth)?;
    let maildrops: Arc<dyn MaildropOpener> = Arc::new(MboxOpener::new(config));
    Ok(Accounts::Direct { auth, maildrops })
}

/// How many helpers: one per core, within [`MAX_HELPERS`].
pub fn helper_count() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, MAX_HELPERS)
}

/// Sets up account access. As root: checks the account database, forks
/// `helpers` helper processes (which must not inherit `close_in_child`),
/// and drops privileges for good. Must run before any thread exists.
pub fn setup(
    config: &Config,
    helpers: usize,
    close_in_child: &[RawFd],
) -> Result<Accounts, PrivsepError> {
    if !nix::unistd::geteuid().is_root() {
        return direct(config, "not started as root");
    }
    let identity = privileges::resolve(&config.user, &config.group)?;
    let db = AccountDb::for_config(config, identity.uid).map_err(PrivsepError::Auth)?;
    let mut channels = Vec::with_capacity(helpers);
    let mut pids = Vec::with_capacity(helpers);
    for _ in 0..helpers.max(1) {
        // A helper must hold neither the listeners nor the other
        // helpers' channels (it would never see their end of file).
        let mut close: Vec<RawFd> = close_in_child.to_vec();
        close.extend(
            channels
                .iter()
                .map(|(fd, _): &(std::os::fd::OwnedFd, i32)| fd.as_raw_fd()),
        );
        let h = helper::spawn(&db, &close)
            .map_err(|e| PrivsepError::system("start the privileged helper", e))?;
        pids.push(h.pid);
        channels.push((h.channel, h.pid.as_raw()));
    }
    // The network process keeps no copy of the account database.
    drop(db);
    let pool = HelperPool::new(channels)
        .map_err(|e| PrivsepError::system("set up the helper channels", e))?;
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
    Ok(Accounts::Helpers {
        pool: Arc::new(pool),
        maildrops: Arc::new(MboxOpener::helper_opened(MboxSettings::from_config(config))),
        pids,
    })
}
