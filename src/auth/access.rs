//! Where each session gets its `Authenticator` and maildrop opener: the account database in-process, or a session of the privileged helpers' pool.

use std::sync::Arc;

use nix::unistd::Pid;

use super::helper_client::{HelperPool, HelperSession, StartupChannel};
use crate::authenticator::Authenticator;
use crate::config::Config;
use crate::mailbox::mbox::MboxSettings;
use crate::mailbox::{MaildropOpener, MboxOpener};
use crate::privsep::error::PrivsepError;
use crate::privsep::fork::Separation;

/// Where sessions get their account checks and maildrops.
pub enum Access {
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

impl Access {
    /// The network side of what [`crate::privsep::fork`] set up, and, with
    /// helpers, the startup channel for startup recovery (which closes it
    /// by dropping it, before the first accept).
    pub fn new(
        config: &Config,
        separation: Separation,
    ) -> Result<(Access, Option<StartupChannel>), PrivsepError> {
        let channel_error = |e| PrivsepError::system("set up the helper channels", e);
        Ok(match separation {
            Separation::InProcess(auth) => {
                let access = Access::Direct {
                    auth,
                    maildrops: Arc::new(MboxOpener::new(config)),
                };
                (access, None)
            }
            Separation::Helpers {
                channels,
                startup: (startup, pid),
                pids,
            } => {
                let access = Access::Helpers {
                    pool: Arc::new(HelperPool::new(channels).map_err(channel_error)?),
                    maildrops: Arc::new(MboxOpener::helper_opened(MboxSettings::from_config(
                        config,
                    ))),
                    pids,
                };
                let startup = StartupChannel::new(startup, pid).map_err(channel_error)?;
                (access, Some(startup))
            }
        })
    }

    /// The authenticator and opener of one new session.
    pub fn for_session(&self) -> (Arc<dyn Authenticator>, Arc<dyn MaildropOpener>) {
        match self {
            Access::Direct { auth, maildrops } => (Arc::clone(auth), Arc::clone(maildrops)),
            Access::Helpers {
                pool, maildrops, ..
            } => (
                Arc::new(HelperSession::new(Arc::clone(pool))),
                Arc::clone(maildrops),
            ),
        }
    }

    /// Calls `hook` with the reason once no privileged helper answers any
    /// more (never without helpers).
    pub fn when_no_helper_answers(&self, hook: impl FnOnce(String) + Send + 'static) {
        if let Access::Helpers { pool, .. } = self {
            pool.when_none_answers(hook);
        }
    }

    /// The helper processes (none when not root).
    pub fn helper_pids(&self) -> &[Pid] {
        match self {
            Access::Direct { .. } => &[],
            Access::Helpers { pids, .. } => pids,
        }
    }
}
