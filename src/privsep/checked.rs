//! What every account backend answers to a credential check, as the helper needs it: the outcome and the uid that must own the spool.
//!
//! Its own module so that the backends and the database over them
//! (`accounts.rs`) share the type without importing each other.

use nix::unistd::Uid;

use crate::account::AuthOutcome;

/// An outcome and, when accepted, the uid that must own the spool.
pub type Checked = (AuthOutcome, Option<Uid>);
